"""Agreement with the field's reference counters, on the same models: NeuroBench 2.3 and spikingjelly 2.0's
``op_counter``. Exact where the definitions coincide; where they differ, the test names the difference."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from energy.measuring.generic import MATMULS, profile_model


def _neurobench(model, x, samples):
    """NeuroBench's own Benchmark on one batch: static Footprint, ConnectionSparsity; workload ActivationSparsity,
    SynapticOperations, MembraneUpdates (a model that loops over time itself: ``custom_forward``)."""
    pytest.importorskip("neurobench")
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint
    from neurobench.metrics.workload import ActivationSparsity, MembraneUpdates, SynapticOperations
    from neurobench.models import SNNTorchModel

    class Loader(list):
        dataset = range(samples)

    loader = Loader([(x, torch.zeros(samples))])
    metrics = [[Footprint, ConnectionSparsity], [ActivationSparsity, SynapticOperations, MembraneUpdates]]
    bench = Benchmark(SNNTorchModel(model, custom_forward=True), loader, [], [], metrics)
    return bench.run(quiet=True)


class ConvSNN(nn.Module):
    """A small convolutional snntorch Leaky network (as NeuroBench's DVS examples): padding, stride, two
    convolutions and a linear read-out, over T steps."""

    def __init__(self):
        super().__init__()
        import snntorch as snn

        self.c1, self.l1 = nn.Conv2d(2, 4, 3, padding=1), snn.Leaky(beta=0.9)
        self.c2, self.l2 = nn.Conv2d(4, 4, 3, stride=2, padding=1), snn.Leaky(beta=0.9)
        self.fc, self.l3 = nn.Linear(4 * 4 * 4, 5), snn.Leaky(beta=0.9)

    def forward(self, x):  # (B, T, 2, 8, 8)
        m1, m2, m3 = self.l1.init_leaky(), self.l2.init_leaky(), self.l3.init_leaky()
        out = []
        for t in range(x.shape[1]):
            s1, m1 = self.l1(self.c1(x[:, t]), m1)
            s2, m2 = self.l2(self.c2(s1), m2)
            s3, m3 = self.l3(self.fc(s2.flatten(1)), m3)
            out.append(s3)
        return torch.stack(out, 1)


def _nb_keys(d: dict) -> dict:
    return {k: d[k] for k in ("Footprint", "ConnectionSparsity", "ActivationSparsity", "MembraneUpdates",
                              "SynapticOperations")}  # fmt: skip


@pytest.mark.parametrize("which", ["example", "conv"])
def test_neurobench_equal_on_snntorch_leaky(which):
    """Every metric equals NeuroBench's exactly (same floats), on the example network and a convolutional one
    (Dense of a convolution counts only taps inside the input, as NeuroBench's binary-copy convolution does)."""
    pytest.importorskip("snntorch")
    pytest.importorskip("neurobench")
    if which == "example":
        from examples import snntorch_net

        d = snntorch_net.make()
        model, x, samples = d["model"], d["inputs"], d["samples"]
    else:
        torch.manual_seed(1)
        model, samples = ConvSNN().eval(), 3
        x = (torch.rand(samples, 5, 2, 8, 8) < 0.4).float() * 3.0  # integer input: the first conv does MACs
    ours = _nb_keys(profile_model(model, x, samples=samples).neurobench(model))
    theirs = _nb_keys(_neurobench(model, x, samples))
    # NeuroBench's manager averages a per-batch metric over batches as result * batch_size / dataset_len: with
    # one batch that is the same ratio, up to that float multiplication and division, applied here too
    ours["ActivationSparsity"] = ours["ActivationSparsity"] * samples / samples
    assert ours == theirs
    assert theirs["SynapticOperations"]["Effective_ACs"] > 0 and theirs["SynapticOperations"]["Effective_MACs"] > 0


def test_neurobench_differs_by_definition_on_pruned_weights():
    """NeuroBench skips zero weights in its effective counts (a binary copy of the layer); we do not (a zero
    weight is still read and accumulated). The difference is exactly the (nonzero input, zero weight) pairs."""
    pytest.importorskip("snntorch")
    pytest.importorskip("neurobench")
    from examples import snntorch_net

    d = snntorch_net.make()
    model, x = d["model"], d["inputs"]
    with torch.no_grad():
        model.fc1.weight[:, :5] = 0.0  # prune 5 of the 20 inputs of fc1
    ours = profile_model(model, x, samples=d["samples"]).neurobench(model)
    theirs = _neurobench(model, x, d["samples"])
    zero_pairs = int((x[..., :5] != 0).sum()) * 32 / d["samples"]
    assert ours["SynapticOperations"]["Effective_MACs"] - theirs["SynapticOperations"]["Effective_MACs"] == zero_pairs
    assert ours["ConnectionSparsity"] == theirs["ConnectionSparsity"] > 0


def _sj_counts(model, inputs):
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based.op_counter import ACCounter, DispatchCounterMode, MACCounter, SynOpCounter

    counters = [MACCounter(), ACCounter(), SynOpCounter()]
    with torch.no_grad(), DispatchCounterMode(counters):
        model(inputs)
    return [{str(k).split(".")[1]: v for k, v in c.records["Global"].items()} for c in counters]


def _ours_by_op(p, primitive, operand_not=()):
    o = p.ops[(p.ops.primitive == primitive) & ~p.ops.operand.isin(list(operand_not))]
    return o.groupby("aten_op")["count"].sum().to_dict()


@pytest.mark.parametrize("name", ["spikformer_ssa", "sdt_block", "snntorch_net"])
def test_spikingjelly_op_counter_equal_on_binary_models(name):
    """SynOpCounter == our ACs, op by op. MACCounter (mm, addmm, bmm, convolution) == our dense MACs of the
    products with no binary operand (it counts no MAC when either operand is binary: so do we, they are ACs).
    ACCounter's matrix products are its SynOps, equal to ours; its other entries are elementwise adds, where
    the definitions differ (below)."""
    pytest.importorskip("spikingjelly")
    if name == "snntorch_net":
        pytest.importorskip("snntorch")
    import importlib

    d = importlib.import_module(f"examples.{name}").make()
    model, x = d["model"], d["inputs"]
    sj_mac, sj_ac, sj_synop = _sj_counts(model, x)
    p = profile_model(model, x, samples=d["samples"])
    ours_ac = _ours_by_op(p, "ac")
    assert {k: v for k, v in sj_synop.items() if v} == ours_ac
    assert sum(ours_ac.values()) == p.totals()["ac"] > 0
    ours_mac = _ours_by_op(p, "mac", operand_not=("binary",))
    products = set(MATMULS) | {"convolution"}
    assert {k: v for k, v in sj_mac.items() if k in products and v} == ours_mac
    assert {k: sj_ac[k] for k in products if k in sj_ac and sj_ac[k]} == ours_ac
    # batch norm: spikingjelly counts x_hat * gamma + beta as one MAC per element; we count the same products
    # and sums as elementwise mul and add (and x - mean, * rsqrt as a second mul and add)
    bn = p.ops[p.ops.stage == "batchnorm.affine"]
    assert sj_mac.get("native_batch_norm", 0) == int(bn[bn.primitive == "mul"]["count"].sum())


def test_spikingjelly_op_counter_differs_by_definition_on_ternary_spikes():
    """spikingjelly's spike test accepts {0, 1} only: a ternary {-1, 0, 1} input makes MACs there, ACs here
    (an add or a subtract per nonzero). Its op_counter has no rule for the fused CPU attention op: those MACs
    are missing from its totals, and present in ours."""
    pytest.importorskip("spikingjelly")
    from examples import ternary_lm

    d = ternary_lm.make()
    model, x = d["model"], d["inputs"]
    sj_mac, _, sj_synop = _sj_counts(model, x)
    p = profile_model(model, x, samples=d["samples"])
    ternary_dense = _ours_by_op(p, "mac")["mm"]
    assert sj_mac["mm"] == ternary_dense and sum(sj_synop.values()) == 0
    assert set(p.ops[p.ops.aten_op == "mm"].operand) == {"ternary"}
    sdpa = [k for k in _ours_by_op(p, "mac") if "scaled_dot_product" in k]
    assert sdpa and not any("scaled_dot_product" in k for k in sj_mac)
