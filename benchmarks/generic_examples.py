"""The example models (examples/) profiled by energy.measuring.generic, beside NeuroBench 2.3 and spikingjelly 2.0's
op_counter on the same inputs: a markdown table per model (python benchmarks/generic_examples.py).

NeuroBench runs its own Benchmark: SNNTorchModel for the snntorch network, TorchModel (Linear/Conv hooks,
ReLU/Sigmoid activations only) for the others. NeuroBench divides by the first input dimension, which is
the time steps T for the (T, B, ...) models: its per-sample figures are rescaled by T / B to per sample.
Timings use one thread (``torch.set_num_threads(1)``): on the shared 2-core machines two threads per process
spin against the other processes (0.65 s against 0.003 s for the snntorch network's plain forward); both
sides are the best of several runs.
"""

from __future__ import annotations

import importlib
import time

import torch

from energy.measuring.generic import profile_model

MODELS = ["snntorch_net", "spikformer_ssa", "sdt_block", "ternary_lm"]


def neurobench(name, model, x):
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint
    from neurobench.metrics.workload import ActivationSparsity, MembraneUpdates, SynapticOperations
    from neurobench.models import SNNTorchModel, TorchModel

    class Loader(list):
        dataset = range(x.shape[0])

    wrapped = SNNTorchModel(model, custom_forward=True) if name == "snntorch_net" else TorchModel(model)
    metrics = [[Footprint, ConnectionSparsity], [ActivationSparsity, SynapticOperations, MembraneUpdates]]
    return Benchmark(wrapped, Loader([(x, torch.zeros(x.shape[0]))]), [], [], metrics).run(quiet=True)


def spikingjelly(model, x):
    from spikingjelly.activation_based.op_counter import ACCounter, DispatchCounterMode, MACCounter, SynOpCounter

    cs = [MACCounter(), ACCounter(), SynOpCounter()]
    with torch.no_grad(), DispatchCounterMode(cs):
        model(x)
    bn = sum(v for k, v in cs[0].records["Global"].items() if "batch_norm" in str(k))
    return [c.get_total() for c in cs] + [bn]


def plain_seconds(model, x, n=20):
    best = float("inf")
    with torch.no_grad():
        for _ in range(n):
            t0 = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - t0)
    return best


def main():
    torch.set_num_threads(1)
    for name in MODELS:
        d = importlib.import_module(f"examples.{name}").make()
        model, x, B = d["model"], d["inputs"], d["samples"]
        plain = plain_seconds(model, x)
        prof = min((profile_model(model, x, samples=B) for _ in range(5)), key=lambda p: p.meta["profiled_seconds"])
        ps = prof.per_sample()
        e = prof.energy()
        nb = neurobench(name, model, x)
        scale = x.shape[0] / B  # NeuroBench's samples are the first input dimension
        syn = {k: v * scale for k, v in nb["SynapticOperations"].items()}
        mac, ac, synop, bn = (v / B for v in spikingjelly(model, x))
        o = prof.ops
        products = o[o.aten_op.isin(["mm", "addmm", "bmm", "baddbmm", "convolution"]) | o.aten_op.str.contains("dot")]
        nonspike = products[(products.primitive == "mac") & ~products.operand.isin(["binary", "ternary"])]
        ours_nonspike = nonspike["count"].sum() / B
        rates = prof.firing_rates()
        print(f"\n### {name} ({B} samples, per sample)\n")
        print("| | spike-energy | NeuroBench 2.3 | spikingjelly 2.0 op_counter |\n|---|---|---|---|")
        print(f"| firing rate (overall) | {rates['overall']:.4f} | sparsity {nb['ActivationSparsity']:.4f} | - |")
        print(f"| dense MACs | {ps['mac']:,.0f} | Dense {syn['Dense']:,.0f} | - |")
        print(
            f"| MACs of products with no spike operand, dense | {ours_nonspike:,.0f} | - | MACCounter "
            f"{mac - bn:,.0f} (+ {bn:,.0f} batch norm) |"
        )
        print(
            f"| the same, zeros skipped (effective) | {ps['effective_mac']:,.0f} | "
            f"Effective_MACs {syn['Effective_MACs']:,.0f} | - |"
        )
        print(
            f"| ACs | {ps['ac']:,.0f} | Effective_ACs {syn['Effective_ACs']:,.0f} | SynOp {synop:,.0f}; "
            f"ACCounter {ac:,.0f} |"
        )
        print(f"| energy, compute only (pJ, fp32, 45 nm) | {e['zero_skipping_pj_per_sample']:,.0f} | - | - |")
        print(
            f"| membrane updates | {prof.neurons.neuron_steps.sum() / B:,.0f} neuron steps | "
            f"MembraneUpdates {nb['MembraneUpdates'] * scale:,.0f} | - |"
        )
        print(
            f"| profiled / plain time | {prof.meta['profiled_seconds']:.3f} s / {plain:.4f} s = "
            f"{prof.meta['profiled_seconds'] / plain:.0f}x | | |"
        )
        per_layer = ", ".join(f"{k} {v:.3f}" for k, v in rates.items() if k != "overall")
        print(f"\nfiring rates by layer: {per_layer}")
        missed = prof.neurobench(model)["missed_by_neurobench"]
        if missed:
            print(
                "outside NeuroBench's Linear/Conv hooks: "
                + ", ".join(f"{r['layer']} {r['aten_op']} {r['primitive']} {r['per_sample']:,.0f}" for r in missed)
            )


if __name__ == "__main__":
    main()
