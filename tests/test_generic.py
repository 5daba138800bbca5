"""The model-agnostic profiler (energy.measuring.generic): closed-form counts of the example models, neurons found
without code changes, the cost kinds it adds, and ``spike-energy profile --model``."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from energy.measuring.generic import profile_model
from energy.measuring.rules import KINDS, Operand


def _nnz(t) -> int:
    return int(torch.count_nonzero(t))


def _capture(model: nn.Module, names: list[str]) -> dict[str, list[torch.Tensor]]:
    """Outputs (first tensor) of the named modules in a plain forward: independent of the dispatch counting."""
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    mods = dict(model.named_modules())

    def keep(name):
        return lambda m, a, o: seen[name].append((o[0] if isinstance(o, tuple) else o).clone())

    for n in names:
        mods[n].register_forward_hook(keep(n))
    return seen


# ------------------------------------------------------------------------ cost kinds (hand-worked)


def test_matmul_kind_spike_operands_hand_worked():
    a = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # (2 x 3), binary, 3 nonzeros
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # (3 x 2), binary, 4 nonzeros
    # (1, 1) pairs by hand: row 0 meets column 0 at k=0 and column 1 at k=2; row 1 meets column 1 at k=2
    pairs = 3
    assert int(((a != 0).double() @ (b != 0).double()).sum()) == pairs
    spike_a, spike_b = Operand("binary", 6, 3, (2, 3)), Operand("binary", 6, 4, (3, 2))
    flt = Operand("float", 6, 6, (2, 3))
    assert KINDS["matmul"](1, 2, 3, 2, spike_a, spike_b, pairs).ops["matmul"] == {"mac": 12, "ac": 3}
    assert KINDS["matmul"](1, 2, 3, 2, spike_a).ops["matmul"] == {"mac": 12, "ac": 3 * 2}  # nnz(a) x n
    assert KINDS["matmul"](1, 2, 3, 2, flt, spike_b).ops["matmul"] == {"mac": 12, "ac": 4 * 2}  # nnz(b) x m
    assert KINDS["matmul"](1, 2, 3, 2, flt, flt).ops["matmul"] == {"mac": 12, "effective_mac": 12}


def test_conv_counts_padding_apart():
    """3x3 conv, padding 1, on a 4x4 input: every tap as executed (16 x 9 = 144 per channel pair), and the taps
    inside the input (NeuroBench's Dense, spikingjelly's SynOp reach): corners 4, edges 6, inside 9 -> 100."""
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False).eval()
    x = torch.ones(1, 1, 4, 4)
    p = profile_model(conv, x)
    t = p.totals()
    assert t["mac"] == 144 * 2
    assert t["effective_mac"] == 0 and t["ac"] == 100 * 2  # an all-ones input is binary: spikes
    assert p.record.dense_in_bounds[""] == 100 * 2
    x[0, 0, 0, 0] = 0.0  # a corner reaches 4 outputs
    assert profile_model(conv, x).totals()["ac"] == (100 - 4) * 2


def test_sdpa_decomposed_counted_closed_form():
    """At these sizes torch runs SDPA's math path (bmm, mask, softmax, bmm); the fused CPU kernel (one aten op)
    is counted in the ternary LM test. The causal mask leaves exact zeros in P: 15 of 25 scores per head."""
    q = torch.randn(2, 3, 5, 4)
    v = torch.randn(2, 3, 5, 6)

    class Attn(nn.Module):
        def forward(self, q, v):
            return torch.nn.functional.scaled_dot_product_attention(q, q, v, is_causal=True)

    p = profile_model(Attn().eval(), (q, v))
    t = p.totals()
    assert t["mac"] == 2 * 3 * (5 * 4 * 5 + 5 * 5 * 6)  # Q K^T and P V
    assert t["effective_mac"] == 2 * 3 * (5 * 4 * 5 + 6 * 5 * 6 // 2)  # causal P: 15 of 25 scores nonzero
    assert t["exp"] == 2 * 3 * 5 * 5  # the softmax
    assert p.uncounted().empty


# ------------------------------------------------------------------------ the example models (closed forms)


def test_snntorch_net_closed_form():
    pytest.importorskip("snntorch")
    from examples import snntorch_net

    d = snntorch_net.make()
    model, x = d["model"], d["inputs"]
    B, T, F = x.shape
    seen = _capture(model, ["lif1", "lif2"])
    model(x)
    s1, s2 = sum(_nnz(s) for s in seen["lif1"]), sum(_nnz(s) for s in seen["lif2"])
    t = profile_model(model, x).totals()
    assert t["mac"] == B * T * (F * 32 + 32 * 32 + 32 * 10)
    assert t["effective_mac"] == _nnz(x) * 32  # the float input current
    assert t["ac"] == s1 * 32 + s2 * 10


def test_spikformer_closed_form():
    pytest.importorskip("spikingjelly")
    from examples import spikformer_ssa

    d = spikformer_ssa.make()
    model, x = d["model"], d["inputs"]
    T, B, N, D = x.shape
    H, dh = 4, D // 4
    names = ["attn.q_lif", "attn.k_lif", "attn.v_lif", "attn.attn_lif", "attn", "mlp.lif1"]
    seen = _capture(model, names)
    model(x)
    q, k, v, a, attn_out, h1 = (seen[n][0] for n in names)
    heads = lambda t: t.reshape(T, B, N, H, dh).transpose(2, 3)  # noqa: E731
    qk_pairs = int((heads(q) @ heads(k).transpose(-2, -1)).sum())  # both spikes: (1, 1) pairs
    x1 = x + attn_out  # integer valued: the MLP's first layer does MACs
    p = profile_model(model, x, samples=B)
    t = p.totals()
    assert t["mac"] == T * B * N * (4 * D * D + 2 * D * 4 * D) + 2 * T * B * H * N * N * dh
    assert t["ac"] == 3 * _nnz(x) * D + qk_pairs + _nnz(v) * N + _nnz(a) * D + _nnz(h1) * D
    assert t["effective_mac"] == _nnz(x1) * 4 * D
    assert set(p.neurons.library) == {"spikingjelly"} and p.neurons.recognised.all()
    missed = p.neurobench(model)["missed_by_neurobench"]
    assert {(r["layer"], r["aten_op"]) for r in missed} == {("attn", "bmm")}  # functional matmuls


def test_sdt_closed_form():
    from examples import sdt_block

    d = sdt_block.make()
    model, u = d["model"], d["inputs"]
    T, B, N, D = u.shape
    names = ["sn1", "attn.q_lif", "attn.kv_lif", "sn2", "sn3"]
    seen = _capture(model, names)
    model(u)
    s1, q, kv, s2, s3 = (seen[n][0] for n in names)
    p = profile_model(model, u, samples=B)
    t = p.totals()
    assert t["mac"] == T * B * N * (4 * D * D + 2 * D * 4 * D)  # no matmul between activations at all
    assert t["ac"] == 3 * _nnz(s1) * D + _nnz(q * kv) * D + _nnz(s2) * 4 * D + _nnz(s3) * D
    assert t["effective_mac"] == 0
    assert p.neurons.library.str.contains("legacy").all()  # the vendored MultiStepLIFNode, by class name


def test_ternary_lm_closed_form():
    from examples import ternary_lm

    d = ternary_lm.make()
    model, tokens = d["model"], d["inputs"]
    B, T = tokens.shape
    D, V, Hd = 32, 64, 128
    sp = ternary_lm.spike
    with torch.no_grad():  # the block by hand: the spikes before each projection
        x = model.embed(tokens)
        s_in = sp(model.ln1(x))
        q, k, v = (model._split(w(s_in)) for w in (model.wq, model.wk, model.wv))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(x.shape)
        s_a = sp(a)
        x = x + model.wo(s_a)
        s_2 = sp(model.ln2(x))
        s_h = sp(model.w1(s_2))
        x = x + model.w2(s_h)
        s_f = sp(model.ln_f(x))
    assert set(torch.unique(s_in).tolist()) == {-1.0, 0.0, 1.0}
    p = profile_model(model, tokens, samples=B)
    t = p.totals()
    assert t["mac"] == B * T * (4 * D * D + 2 * D * Hd + D * V) + 2 * B * T * T * D
    assert t["ac"] == _nnz(s_in) * 3 * D + _nnz(s_a) * D + _nnz(s_2) * Hd + _nnz(s_h) * D + _nnz(s_f) * V
    assert t["effective_mac"] == B * 4 * (T * T * (D // 4) + (D // 4) * T * (T + 1) // 2)  # Q dense, causal P
    rows = p.neurons
    assert rows.layer.str.startswith("TernarySpike@ternary_lm.py:").all() and len(rows) == 5  # one per call site
    assert not rows.recognised.any() and set(rows.output_classes) == {"ternary"}
    assert sorted(rows.spikes) == sorted(_nnz(s) for s in (s_in, s_a, s_2, s_h, s_f))


# ------------------------------------------------------------------------ neurons found without code changes


class _Net(nn.Module):
    """Linear -> neuron, one step per call of the neuron, over 3 steps."""

    def __init__(self, neuron: nn.Module, call):
        super().__init__()
        self.fc, self.neuron, self.call = nn.Linear(6, 5), neuron, call

    def forward(self, x):
        state = None
        outs = []
        for t in range(x.shape[0]):
            s, state = self.call(self.neuron, self.fc(x[t]), state)
            outs.append(s)
        return torch.stack(outs)


def _snn(cls, **kw):
    return lambda: (cls(**kw), lambda n, x, st: (n(x)[0], None))


NEURONS = {
    "snntorch.Leaky": ("snntorch", lambda snn: (snn.Leaky(beta=0.8, init_hidden=True), lambda n, x, st: (n(x), None))),
    "snntorch.Synaptic": ("snntorch", lambda snn: (snn.Synaptic(alpha=0.8, beta=0.8, init_hidden=True),
                                                     lambda n, x, st: (n(x), None))),
    "snntorch.Alpha": ("snntorch", lambda snn: (snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True),
                                                lambda n, x, st: (n(x), None))),
    "snntorch.Lapicque": ("snntorch", lambda snn: (snn.Lapicque(beta=0.8, init_hidden=True),
                                                   lambda n, x, st: (n(x), None))),
    "snntorch.RLeaky": ("snntorch", lambda snn: (snn.RLeaky(beta=0.8, linear_features=5, init_hidden=True),
                                                 lambda n, x, st: (n(x), None))),
    "norse.LIFCell": ("norse.torch", lambda nt: (nt.LIFCell(), lambda n, x, st: n(x, st))),
    "norse.LIFBoxCell": ("norse.torch", lambda nt: (nt.LIFBoxCell(), lambda n, x, st: n(x, st))),
    "sinabs.IAF": ("sinabs.layers", lambda sl: (sl.IAF(), lambda n, x, st: (n(x[:, None])[:, 0], None))),
    "sinabs.LIF": ("sinabs.layers", lambda sl: (sl.LIF(tau_mem=5.0), lambda n, x, st: (n(x[:, None])[:, 0], None))),
    "spikingjelly.LIFNode": ("spikingjelly.activation_based.neuron",
                             lambda nm: (nm.LIFNode(), lambda n, x, st: (n(x), None))),
    "spikingjelly.IFNode": ("spikingjelly.activation_based.neuron",
                            lambda nm: (nm.IFNode(), lambda n, x, st: (n(x), None))),
    "spikingjelly.ParametricLIFNode": ("spikingjelly.activation_based.neuron",
                                       lambda nm: (nm.ParametricLIFNode(), lambda n, x, st: (n(x), None))),
}  # fmt: skip


@pytest.mark.parametrize("which", sorted(NEURONS))
def test_library_neurons_found_with_state(which):
    pkg, build = NEURONS[which]
    lib = pytest.importorskip(pkg)
    torch.manual_seed(0)
    neuron, call = build(lib)
    net = _Net(neuron, call).eval()
    x = torch.rand(3, 4, 6) * 4
    p = profile_model(net, x)
    rows = p.neurons.set_index("layer")
    assert rows.loc["neuron", "recognised"] and rows.loc["neuron", "library"] == which.split(".")[0]
    assert rows.loc["neuron", "neuron_steps"] == 3 * 4 * 5  # one membrane update per neuron per step
    assert rows.loc["neuron", "membrane_updates_neurobench"] is not None  # the state was read at every step
    assert 0 <= rows.loc["neuron", "firing_rate"] <= 1 or which.startswith("sinabs")  # sinabs: spike counts


class _BinarySpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u):
        return (u >= 0.5).to(u.dtype)

    @staticmethod
    def backward(ctx, g):
        return g


class _PlainHeaviside(nn.Module):
    def forward(self, u):
        return (u > 0.0).float()


def test_custom_spikes_reported_not_recognised():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.step = nn.Linear(6, 5), nn.Linear(5, 4), _PlainHeaviside()

        def forward(self, x):
            s = _BinarySpike.apply(self.fc1(x))  # a custom autograd Function, called functionally
            return self.step(self.fc2(s))  # a custom module made of plain ops

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.rand(7, 6)
    p = profile_model(net, x)
    rows = p.neurons.set_index("layer")
    fn = [k for k in rows.index if k.startswith("_BinarySpike@test_generic.py:")]
    assert len(fn) == 1 and set(rows.index) == {fn[0], "step"}
    assert not rows.recognised.any() and set(rows.output_classes) == {"binary"}
    with torch.no_grad():
        s = _BinarySpike.apply(net.fc1(x))
    assert rows.loc[fn[0], "spikes"] == _nnz(s)
    with torch.no_grad():
        assert rows.loc["step", "spikes"] == _nnz(net.step(net.fc2(s))) > 0
    assert p.totals()["ac"] == _nnz(s) * 4  # its output drives fc2 as spikes
    assert p.ops[p.ops.layer == fn[0]].primitive.tolist() == ["max"]  # its compare is counted


def test_training_mode_refused():
    with pytest.raises(ValueError, match="eval"):
        profile_model(nn.Linear(2, 2).train(), torch.ones(1, 2))


# ------------------------------------------------------------------------ the command line


@pytest.mark.parametrize("name", ["snntorch_net", "spikformer_ssa", "sdt_block", "ternary_lm"])
def test_cli_profiles_example(name, tmp_path, capsys):
    if name in ("snntorch_net",):
        pytest.importorskip("snntorch")
    if name == "spikformer_ssa":
        pytest.importorskip("spikingjelly")
    from energy.app.cli import main

    out = tmp_path / "out"
    assert main(["profile", "--model", f"examples.{name}:make", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    nb = json.loads((out / "neurobench.json").read_text())
    assert set(nb) == {"Footprint", "ConnectionSparsity", "ActivationSparsity", "MembraneUpdates",
                       "SynapticOperations"}  # fmt: skip
    assert set(nb["SynapticOperations"]) == {"Effective_MACs", "Effective_ACs", "Dense"}
    import importlib

    d = importlib.import_module(f"examples.{name}").make()
    p = profile_model(d["model"], d["inputs"], samples=d["samples"])
    assert summary["ops_total"] == p.totals()
    assert summary["uncounted"] == []
    assert math.isclose(summary["energy"]["zero_skipping_pj_per_sample"], p.energy()["zero_skipping_pj_per_sample"])
    assert "pJ per sample" in capsys.readouterr().out


@pytest.mark.parametrize(
    "spec, message",
    [("nodots", "expected PKG.MODULE:FACTORY"), ("examples.nope:make", "cannot import"),
     ("examples.sdt_block:nothing", "no callable")],
)  # fmt: skip
def test_cli_model_bad_input(spec, message, tmp_path, capsys):
    from energy.app.cli import main

    out = tmp_path / "out"
    assert main(["profile", "--model", spec, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# ------------------------------------------------------------------------ the core against the SpikeGPT path


def test_generic_core_equals_spikegpt_path(tiny64):
    """The model-agnostic core on SpikeGPT (through its adapter) equals the SpikeGPT-specific path (module rules)
    on firing rates and on every module kind priced the same way, parameter-only ops (Lerp's 1 - mix) being
    setup in both. By definition apart: the LIF (the rule counts the update as a neuron implements it, 5 ops
    per step; the core counts the 9 aten ops the eager code executes) and the WKV (the rule counts the reference
    kernel's recurrence; the core the eager code's ops: 46,848 against 47,104 here)."""
    from energy.measuring.profile import profile

    torch.manual_seed(1)
    ids = torch.randint(0, tiny64.config.vocab_size, (1, 25))
    old = profile(tiny64, ids[0], census_tokens=1)
    new = profile_model(tiny64, ids[:, :24])
    lerp_setup = old.setup[old.setup.kind == "lerp"]["count"].sum()
    assert new.meta["adapter"] == "spikegpt" and new.neurons.recognised.all()
    rates = new.firing_rates()
    layers = [k for k in old.firing_rates if k != "overall"]  # SpikeGPT's overall leaves the encoder out
    assert {k: rates[k] for k in layers} == {k: old.firing_rates[k] for k in layers}
    kind_of = {"Linear": "linear", "Embedding": "embedding", "Gate": "gate", "Heaviside": "heaviside",
               "LayerNorm": "layernorm", "Sigmoid": "sigmoid", "SquaredReLU": "relu_sq",
               "Residual": "spike_add", "Lerp": "lerp"}  # fmt: skip
    for module_type, kind in kind_of.items():
        a = old.ops[old.ops.kind == kind].groupby("primitive")["count"].sum().to_dict()
        b = new.ops[new.ops.module_type == module_type].groupby("primitive")["count"].sum().to_dict()
        assert a == b, module_type
    assert new.uncounted().empty
    assert new.setup[new.setup.layer.str.contains("mix_")]["count"].sum() == lerp_setup > 0
    # the adapter's dataflow: each projection reads the spike source the SpikeGPT path names
    linear = old.layers[old.layers.kind == "linear"]
    assert new.meta["projections"] == dict(zip(linear.layer, linear.spike_source))
    assert new.meta["token_shift"] == [n for n, m in tiny64.named_modules() if type(m).__name__ == "TokenShift"]


def test_spikegpt_adapter_counterfactual_is_the_twin(tiny64):
    """The adapter's counterfactual: the same weights with every LIF replaced by identity; the same dense MACs,
    no neurons left, and the outputs of the twin built by the model itself (``variant="twin"``)."""
    from dataclasses import replace

    from energy.measuring.adapters import SPIKEGPT
    from spikegpt import SpikeGPT

    twin = SPIKEGPT.make_counterfactual(tiny64)
    ref = SpikeGPT(replace(tiny64.config, variant="twin")).double().eval()
    ref.load_state_dict(tiny64.state_dict(), strict=False)
    ids = torch.randint(0, tiny64.config.vocab_size, (1, 12))
    with torch.no_grad():
        assert torch.equal(twin(ids).logits, ref(ids).logits)
    a, b = profile_model(tiny64, ids), profile_model(twin, ids)
    assert a.totals()["mac"] == b.totals()["mac"]
    assert set(b.neurons.layer) == {"encode"}  # only the embedding's encoder is left spiking
    assert b.meta["counterfactual"].startswith("the plain RWKV-4 twin")


def test_factory_with_text_and_tokenizer(tmp_path, monkeypatch, capsys):
    """A language model's factory may return text and its tokenizer; a factory module in the current folder
    imports (as with ``python -m``)."""
    (tmp_path / "my_lm.py").write_text(
        "import torch\n"
        "from examples.ternary_lm import TernaryBlock\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return {'model': TernaryBlock(vocab=64), 'text': 'hello spikes',\n"
        "            'tokenizer': lambda s: [ord(c) % 64 for c in s]}\n"
    )
    monkeypatch.chdir(tmp_path)
    from energy.app.cli import main

    assert main(["profile", "--model", "my_lm:make", "--out", "out"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["samples"] == 1 and summary["ops_total"]["lookup"] == len("hello spikes")


def test_all_zero_output_is_no_spike_source_and_unknown_ops_are_listed():
    """An output of zeros only is no evidence of spikes (a ReLU-like module on negatives); an aten op that no
    rule prices (``threshold``) is listed as uncounted, with its module, never dropped."""
    net = nn.Sequential(nn.Linear(4, 3), nn.Threshold(100.0, 0.0)).eval()
    p = profile_model(net, torch.rand(2, 4))
    assert p.neurons.empty
    un = p.uncounted()
    assert un[["layer", "module_type", "aten_op"]].values.tolist() == [["1", "Threshold", "threshold"]]
