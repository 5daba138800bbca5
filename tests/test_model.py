"""The model computes what the released SpikeGPT training forward computes.

The reference below is written independently from the equations (facts page,
section 1): functional calls on the state dict, the *direct* (non-stable) WKV sum and
an element-by-element LIF, all in float64.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from spikegpt import LIF, WKV, SpikeGPT, preset
from spikegpt.checkpoint import load_checkpoint, save_checkpoint

# --------------------------------------------------------------------------------------
# Independent float64 reference of the training forward
# --------------------------------------------------------------------------------------


def wkv_direct(w, u, k, v):
    """y_t = (sum_{i<t} e^{(t-1-i)w + k_i} v_i + e^{u+k_t} v_t) / (same with v = 1), float64."""
    B, T, C = k.shape
    y = torch.empty_like(k)
    for t in range(T):
        num = torch.exp(u + k[:, t]) * v[:, t]
        den = torch.exp(u + k[:, t])
        for i in range(t):
            e = torch.exp((t - 1 - i) * w + k[:, i])
            num = num + e * v[:, i]
            den = den + e
        y[:, t] = num / den
    return y


def lif_reference(x, tau=2.0, th=1.0):
    B, T, C = x.shape
    s = torch.zeros_like(x)
    for b in range(B):
        for c in range(C):
            v = 0.0
            for t in range(T):
                h = v + (float(x[b, t, c]) - v) / tau
                fire = h >= th
                s[b, t, c] = float(fire)
                v = 0.0 if fire else h
    return s


def reference_forward(sd, idx, n_layer, binary_embedding=True):
    C = sd["emb.weight"].shape[1]

    def ln(x, name):
        return F.layer_norm(x, (C,), sd[name + ".weight"], sd[name + ".bias"], 1e-5)

    def shift(x):
        return F.pad(x, (0, 0, 1, -1))

    x = F.embedding(idx, sd["emb.weight"])
    if binary_embedding:
        x = (x >= 0).double()
    spikes = {}
    for i in range(n_layer):
        p = f"blocks.{i}."
        if i == 0:
            x = ln(x, p + "ln0")
        h = ln(x, p + "ln1")
        xx = shift(h)
        a = p + "att."
        xk = h * sd[a + "time_mix_k"] + xx * (1 - sd[a + "time_mix_k"])
        xv = h * sd[a + "time_mix_v"] + xx * (1 - sd[a + "time_mix_v"])
        xr = h * sd[a + "time_mix_r"] + xx * (1 - sd[a + "time_mix_r"])
        k, v = F.linear(xk, sd[a + "key.weight"]), F.linear(xv, sd[a + "value.weight"])
        r = torch.sigmoid(F.linear(xr, sd[a + "receptance.weight"]))
        y = wkv_direct(-torch.exp(sd[a + "time_decay"]), sd[a + "time_first"], k, v)
        s1 = lif_reference(F.linear(r * y, sd[a + "output.weight"]))
        x = x + s1
        h = ln(x, p + "ln2")
        xx = shift(h)
        f = p + "ffn."
        xk = h * sd[f + "time_mix_k"] + xx * (1 - sd[f + "time_mix_k"])
        xr = h * sd[f + "time_mix_r"] + xx * (1 - sd[f + "time_mix_r"])
        kk = torch.square(torch.relu(F.linear(xk, sd[f + "key.weight"])))
        out = torch.sigmoid(F.linear(xr, sd[f + "receptance.weight"])) * F.linear(kk, sd[f + "value.weight"])
        s2 = lif_reference(out)
        x = x + s2
        spikes[p + "lif1"], spikes[p + "lif2"] = s1, s2
    return F.linear(ln(x, "ln_out"), sd["head.weight"]), spikes


@pytest.mark.parametrize("binary_embedding", [True, False])
def test_parallel_forward_reproduces_reference_float64(binary_embedding):
    torch.manual_seed(1)
    model = SpikeGPT(preset("tiny", n_embd=16, binary_embedding=binary_embedding)).double().eval()
    sd = model.state_dict()
    idx = torch.randint(0, 64, (2, 24))
    with torch.no_grad():
        out = model(idx, return_spikes=True)
    ref_logits, ref_spikes = reference_forward(sd, idx, 2, binary_embedding)
    rates = [out.spikes[k].mean().item() for k in ref_spikes]
    assert min(rates) > 0.02, f"test is weak: rates {rates}"
    for name, s in ref_spikes.items():
        assert torch.equal(out.spikes[name], s), name
    torch.testing.assert_close(out.logits, ref_logits, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------
# WKV and LIF
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("k_scale", [1.0, 30.0, 200.0])
def test_stable_wkv_equals_direct_formula(k_scale):
    torch.manual_seed(2)
    B, T, C = 2, 12, 7
    k = torch.randn(B, T, C, dtype=torch.float64) * k_scale
    v = torch.randn(B, T, C, dtype=torch.float64)
    decay = torch.randn(C, dtype=torch.float64)
    first = torch.randn(C, dtype=torch.float64)
    y, _ = WKV()(decay, first, k, v)
    ref = wkv_direct(-torch.exp(decay), first, k, v)
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)


def test_stable_wkv_no_overflow_in_float32():
    torch.manual_seed(3)
    k = torch.randn(1, 10, 5) * 150  # exp(150) overflows float32
    v = torch.randn(1, 10, 5)
    decay, first = torch.randn(5), torch.randn(5)
    y32, _ = WKV()(decay, first, k, v)
    ref = wkv_direct(-torch.exp(decay.double()), first.double(), k.double(), v.double())
    assert torch.isfinite(y32).all()
    torch.testing.assert_close(y32.double(), ref, rtol=1e-4, atol=1e-5)


def test_wkv_state_carries_over_chunks():
    torch.manual_seed(4)
    k, v = torch.randn(2, 20, 6, dtype=torch.float64), torch.randn(2, 20, 6, dtype=torch.float64)
    d, f = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    wkv = WKV()
    full, _ = wkv(d, f, k, v)
    a, st = wkv(d, f, k[:, :7], v[:, :7])
    b, _ = wkv(d, f, k[:, 7:], v[:, 7:], st)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=0, atol=1e-14)


def test_lif_hand_worked_sequence():
    # tau 2, threshold 1, hard reset to 0:  h = v + (x - v)/2
    # x:  2.0 -> h 1.0 fire | 1.0 -> h 0.5 | 1.0 -> h 0.75 | 3.0 -> h 1.875 fire | 0.5 -> h 0.25 | -1 -> h -0.375
    x = torch.tensor([2.0, 1.0, 1.0, 3.0, 0.5, -1.0]).view(1, 6, 1)
    s, v = LIF()(x)
    assert s.flatten().tolist() == [1, 0, 0, 1, 0, 0]
    assert v.item() == pytest.approx(-0.375)
    # threshold 0.1 (the BookCorpus setting): 0.3 -> h 0.15 fire; 0.1 -> h 0.05; 0.1 -> h 0.075; 0.2 -> 0.1375 fire
    s, _ = LIF(threshold=0.1)(torch.tensor([0.3, 0.1, 0.1, 0.2]).view(1, 4, 1))
    assert s.flatten().tolist() == [1, 0, 0, 1]
    # tau 4: h = v + (x - v)/4; x = 2 twice -> 0.5, then 0.875
    s, v = LIF(tau=4.0)(torch.tensor([2.0, 2.0, 4.0]).view(1, 3, 1))
    assert s.flatten().tolist() == [0, 0, 1] and v.item() == 0.0


def test_lif_surrogate_gradient_is_atan():
    x = torch.tensor([[[2.0], [0.5]]], requires_grad=True)  # h - th = 0 at t=0
    s, _ = LIF()(x)
    s[0, 0, 0].backward()
    # d s0 / d x0 = surrogate'(0) * dh/dx = alpha/2 * 1/tau = 1 * 0.5
    assert x.grad[0, 0, 0].item() == pytest.approx(0.5)
    alpha, z = 2.0, -0.75
    expected = alpha / 2 / (1 + (math.pi / 2 * alpha * z) ** 2) * 0.5
    x2 = torch.tensor([[[0.5]]], requires_grad=True)
    LIF()(x2)[0].sum().backward()
    assert x2.grad.item() == pytest.approx(expected)


# --------------------------------------------------------------------------------------
# Streaming = parallel, chunking = one long pass
# --------------------------------------------------------------------------------------


def _assert_modes_identical_float64(model, idx):
    with torch.no_grad():
        par = model.run(idx, mode="parallel", return_spikes=True)
        st = model.run(idx, mode="streaming", return_spikes=True)
    for name in par.spikes:
        assert torch.equal(par.spikes[name], st.spikes[name]), name
    assert (par.logits - st.logits).abs().max().item() < 1e-9


def test_streaming_equals_parallel_float64_random(tiny64):
    _assert_modes_identical_float64(tiny64, torch.randint(0, 64, (3, 40)))


def test_streaming_equals_parallel_float64_from_checkpoint(tmp_path):
    torch.manual_seed(5)
    save_checkpoint(SpikeGPT(preset("tiny", n_layer=3)), tmp_path / "m.pth")
    model, info = load_checkpoint(tmp_path / "m.pth", dtype=torch.float64)
    assert info.config.n_layer == 3
    _assert_modes_identical_float64(model, torch.randint(0, 64, (2, 30)))


def test_streaming_vs_parallel_float32_rates(tiny32):
    idx = torch.randint(0, 64, (4, 64))
    with torch.no_grad():
        par = tiny32.run(idx, return_spikes=True)
        st = tiny32.run(idx, mode="streaming", return_spikes=True)
    for name in par.spikes:
        r_par, r_st = par.spikes[name].mean().item(), st.spikes[name].mean().item()
        mismatch = (par.spikes[name] != st.spikes[name]).double().mean().item()
        print(f"{name}: rate {r_par:.4f} vs {r_st:.4f}, spike mismatch fraction {mismatch:.2e}")
        assert abs(r_par - r_st) <= 0.01 * r_par


def test_chunked_equals_one_pass(tiny64):
    idx = torch.randint(0, 64, (2, 50))
    with torch.no_grad():
        one = tiny64.run(idx, chunk_len=50, return_spikes=True)
        chunked = tiny64.run(idx, chunk_len=16, return_spikes=True)
        default = tiny64.run(torch.randint(0, 64, (1, 150)))  # ctx_len 64 -> 3 chunks
    assert default.logits.shape == (1, 150, 64)
    for name in one.spikes:
        assert torch.equal(one.spikes[name], chunked.spikes[name])
    assert (one.logits - chunked.logits).abs().max().item() < 1e-9


def test_state_carries_membranes(tiny64):
    """Splitting a sequence and passing the state gives the same as one pass (membranes included)."""
    idx = torch.randint(0, 64, (1, 30))
    with torch.no_grad():
        full = tiny64(idx, return_spikes=True)
        a = tiny64(idx[:, :13], return_spikes=True)
        b = tiny64(idx[:, 13:], a.state, return_spikes=True)
        fresh = tiny64(idx[:, 13:], return_spikes=True)
    for name in full.spikes:
        assert torch.equal(torch.cat([a.spikes[name], b.spikes[name]], 1), full.spikes[name])
    assert any(not torch.equal(fresh.spikes[n], b.spikes[n]) for n in full.spikes)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_runs(tiny32, dtype):
    model = tiny32.to(dtype)
    with torch.no_grad():
        out = model(torch.randint(0, 64, (1, 12)), return_spikes=True)
    assert out.logits.dtype == dtype and torch.isfinite(out.logits).all()


def test_model_trains():
    """Autograd through WKV, LIF and the binary embedding: the loss goes down."""
    torch.manual_seed(6)
    model = SpikeGPT(preset("tiny", vocab_size=8, n_embd=16, n_layer=1)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx = torch.arange(8).repeat(2, 3)  # a periodic sequence
    losses = []
    for _ in range(40):
        logits = model(idx[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, 8), idx[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert losses[-1] < 0.5 * losses[0]


def test_216m_preset_parameter_count():
    with torch.device("meta"):
        model = SpikeGPT(preset("216m"))
    assert model.num_params() == 215_399_424  # the published SpikeGPT-216M
