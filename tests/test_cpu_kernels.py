"""The compiled CPU loops (spikegpt/cpu_kernels.py) against the model's torch loops.

Same spikes, spike for spike, in float64 and float32, parallel and streaming, for the released
and the spike-input variants; the LIF scan bit for bit, WKV to a few units in the last place;
the serial and the parallel (threaded) kernels; autograd where the trainer needs it; and the
fallback when numba is missing.
"""

import pytest
import torch

from spikegpt import LIF, WKV, SpikeGPT, cpu_kernels, preset

pytestmark = pytest.mark.skipif(not cpu_kernels.available(), reason="numba is not installed")


@pytest.fixture(params=["serial", "parallel"])
def threading_mode(request, monkeypatch):
    """Run the kernels serially (one thread) or on two threads with every chunk big enough."""
    if request.param == "parallel":
        monkeypatch.setattr(cpu_kernels, "PARALLEL_MIN_STEPS", 0)
        monkeypatch.setattr(cpu_kernels, "PARALLEL_MIN_CHEAP_STEPS", 0)
        old = torch.get_num_threads()
        torch.set_num_threads(2)
        yield request.param
        torch.set_num_threads(old)
    else:
        monkeypatch.setattr(cpu_kernels, "PARALLEL_MIN_STEPS", 1 << 62)
        monkeypatch.setattr(cpu_kernels, "PARALLEL_MIN_CHEAP_STEPS", 1 << 62)
        yield request.param


def _both(model, idx, mode):
    with torch.no_grad():
        fast = model.run(idx, mode=mode, return_spikes=True)
        with cpu_kernels.disabled():
            eager = model.run(idx, mode=mode, return_spikes=True)
    return fast, eager


@pytest.mark.parametrize("variant", ["released", "spike-input"])
@pytest.mark.parametrize(
    "mode, threads", [("parallel", "serial"), ("parallel", "parallel"), ("streaming", "serial")]
)  # one token at a time never pays for a parallel region
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_and_eager_models_fire_identically(variant, mode, threads, dtype, monkeypatch):
    monkeypatch.setattr(cpu_kernels, "PARALLEL_MIN_STEPS", 0 if threads == "parallel" else 1 << 62)
    monkeypatch.setattr(cpu_kernels, "PARALLEL_MIN_CHEAP_STEPS", 0 if threads == "parallel" else 1 << 62)
    monkeypatch.setattr(cpu_kernels, "ELEMENTWISE_MIN_NUMEL", 0)  # the tiny model's mixes go through the loops
    old = torch.get_num_threads()
    torch.set_num_threads(2 if threads == "parallel" else old)
    torch.manual_seed(0)
    model = SpikeGPT(preset("tiny", variant=variant, n_layer=2)).eval().to(dtype)
    idx = torch.randint(0, model.config.vocab_size, (2, 24 if mode == "parallel" else 8))
    try:
        _compare(model, idx, mode, dtype)
    finally:
        torch.set_num_threads(old)


def _compare(model, idx, mode, dtype):
    fast, eager = _both(model, idx, mode)
    assert fast.spikes.keys() == eager.spikes.keys() and fast.spikes
    fired = 0
    for name in eager.spikes:
        assert torch.equal(fast.spikes[name], eager.spikes[name]), name
        fired += int(eager.spikes[name].sum())
    assert fired > 0  # the comparison means something only if neurons fire
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(fast.logits, eager.logits, rtol=tol, atol=tol)
    for a, b in zip(fast.state.blocks, eager.state.blocks):
        for name in b.membranes:  # their inputs differ by WKV's last-place differences
            torch.testing.assert_close(a.membranes[name], b.membranes[name], rtol=tol, atol=tol)
        for x, y in zip(a.wkv, b.wkv):
            torch.testing.assert_close(x, y, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tau", [2.0, 3.0])
def test_lif_scan_bit_for_bit(dtype, tau, threading_mode):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(3, 40, 37, generator=g) * 2).to(dtype)
    v0 = torch.randn(3, 37, generator=g).to(dtype)
    lif = LIF(tau=tau, threshold=0.7, reset=-0.1)
    s_fast, v_fast = lif(x, v0)
    with cpu_kernels.disabled():
        s_eager, v_eager = lif(x, v0)
    assert 0 < float(s_eager.mean()) < 1
    assert torch.equal(s_fast, s_eager) and torch.equal(v_fast, v_eager)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_wkv_scan_matches_eager_with_state(dtype, threading_mode):
    g = torch.Generator().manual_seed(2)
    B, T, C = 2, 30, 19
    decay, first = torch.randn(C, generator=g).to(dtype), torch.randn(C, generator=g).to(dtype)
    k, v = (torch.randn(B, T, C, generator=g) * 3).to(dtype), torch.randn(B, T, C, generator=g).to(dtype)
    wkv = WKV()
    y1, st = wkv(decay, first, k[:, :11], v[:, :11])
    y2, st = wkv(decay, first, k[:, 11:], v[:, 11:], st)
    with cpu_kernels.disabled():
        e1, est = wkv(decay, first, k[:, :11], v[:, :11])
        e2, est = wkv(decay, first, k[:, 11:], v[:, 11:], est)
    tol = 1e-13 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(torch.cat([y1, y2], 1), torch.cat([e1, e2], 1), rtol=tol, atol=tol)
    for a, b in zip(st, est):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_lif_gradient_through_the_compiled_forward():
    """The trainer's path: the compiled LIF forward keeps the hand-written surrogate backward."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, 20, 9, generator=g, dtype=torch.float64) * 2
    grads = []
    for compiled in (True, False):
        x = x0.clone().requires_grad_(True)
        with cpu_kernels.disabled() if not compiled else torch.enable_grad():
            s, v = LIF()(x)
            (s * torch.arange(9.0, dtype=torch.float64)).sum().add(v.sum()).backward()
        grads.append(x.grad)
    assert grads[0].abs().sum() > 0
    assert torch.equal(grads[0], grads[1])


def test_model_with_autograd_trains_and_matches_eager():
    """With gradients WKV runs its differentiable torch loop; the loss and gradients equal the eager ones."""
    torch.manual_seed(0)
    model = SpikeGPT(preset("tiny", n_layer=2)).double().train()
    idx = torch.randint(0, model.config.vocab_size, (2, 12))
    out = []
    for compiled in (True, False):
        model.zero_grad()
        with cpu_kernels.disabled() if not compiled else torch.enable_grad():
            logits = model(idx[:, :-1]).logits
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten())
            loss.backward()
        out.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert out[0][0] == out[1][0]
    for a, b in zip(out[0][1], out[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_without_numba_the_model_falls_back_to_its_torch_loops(monkeypatch):
    torch.manual_seed(0)
    model = SpikeGPT(preset("tiny", n_layer=2)).double().eval()
    idx = torch.randint(0, model.config.vocab_size, (1, 16))
    with torch.no_grad():
        fast = model(idx, return_spikes=True)
        monkeypatch.setattr(cpu_kernels, "_numba", False)  # as if `import numba` had failed
        assert not cpu_kernels.available() and not cpu_kernels.usable(idx.double())
        called = []
        monkeypatch.setattr(cpu_kernels, "lif_scan", lambda *a: called.append(a))
        slow = model(idx, return_spikes=True)
    assert not called
    assert all(torch.equal(fast.spikes[n], slow.spikes[n]) for n in fast.spikes)


def test_the_switch_in_the_environment_selects_the_torch_loops(monkeypatch):
    monkeypatch.setenv(cpu_kernels.ENV, "0")
    assert not cpu_kernels.enabled()
    monkeypatch.setenv(cpu_kernels.ENV, "1")
    assert cpu_kernels.enabled()
    with cpu_kernels.disabled():
        assert not cpu_kernels.enabled()
    assert cpu_kernels.enabled()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_elementwise_loops_bit_for_bit(dtype, threading_mode, monkeypatch):
    """Token-shift mixing and ReLU^2 in one compiled pass give the torch expressions' values exactly
    (no fused multiply-add, the arithmetic in the tensors' dtype), NaN and infinities included."""
    monkeypatch.setattr(cpu_kernels, "ELEMENTWISE_MIN_NUMEL", 0)
    from spikegpt.model import Lerp, SquaredReLU

    g = torch.Generator().manual_seed(4)
    x, xx = (torch.randn(2, 33, 29, generator=g) * 3).to(dtype), (torch.randn(2, 33, 29, generator=g) * 3).to(dtype)
    x[0, 0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)
    mix = torch.rand(1, 1, 29, generator=g).to(dtype)
    lerp, relu_sq = Lerp(), SquaredReLU()
    with torch.no_grad():
        fast = lerp(x, xx, mix), relu_sq(x)
        with cpu_kernels.disabled():
            eager = lerp(x, xx, mix), relu_sq(x)
    assert cpu_kernels.lerp(x, xx, mix) is not None and cpu_kernels.squared_relu(x) is not None  # the loops ran
    for a, b in zip(fast, eager):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a.nan_to_num(), b.nan_to_num()) and torch.equal(a.isnan(), b.isnan())
    assert not torch.equal(eager[0][1], (xx + mix * (x - xx))[1])  # a different rounding would show (row 1: no NaN)


def test_elementwise_loops_leave_autograd_and_mixed_dtypes_to_torch(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "ELEMENTWISE_MIN_NUMEL", 0)
    x = torch.randn(1, 4, 8, requires_grad=True)
    mix = torch.nn.Parameter(torch.rand(1, 1, 8))
    assert cpu_kernels.lerp(x, x.detach(), mix) is None and cpu_kernels.squared_relu(x) is None
    with torch.no_grad():
        assert cpu_kernels.lerp(x, x.detach(), mix) is not None
        assert cpu_kernels.lerp(x.double(), x.double(), mix) is None  # float64 with a float32 mix: torch promotes


def test_elementwise_loops_leave_one_token_to_torch():
    """A single token's mix (streaming) is cheaper as torch's few ops than as a compiled call."""
    x = torch.randn(1, 1, 768)
    with torch.no_grad():
        assert cpu_kernels.lerp(x, x, torch.rand(1, 1, 768)) is None and cpu_kernels.squared_relu(x) is None
        assert cpu_kernels.squared_relu(torch.randn(1, 256, 768)) is not None
