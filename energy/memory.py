"""Memory traffic of the memory scenarios: the terms of Lemaire et al. (ICONIP 2022), an on-chip SRAM
budget, and DRAM beyond it, applied to SpikeGPT and to every baseline alike.

Lemaire, Cordone, Castagnetti, Novac, Courtois, Miramond, "An Analytical Estimation of Spiking Neural
Networks Energy Efficiency", ICONIP 2022 (arXiv 2210.13107). Their equation numbers are given with each
term (as quoted by the authors' own implementation, LEAT-EDGE qualia-plugin-snn
``EnergyEstimationMetric``; the paper's printed text was not available to us). A fully-connected layer
(and an attention product, read as one) pays:

- inputs: a formal layer reads every input (Eq. 4); a spiking layer reads each input spike, an
  address event (Eq. 5);
- weights: one weight read per synaptic op: per effective MAC (Eq. 6.2f) or per AC (Eq. 8f);
- biases: one read per output (Eq. 6.2s, 8s);
- outputs: a formal layer writes every output (Eq. 12); a spiking layer writes each output spike
  (Eq. 13);
- potentials: a layer driven by spike events reads and writes its target's potential on every
  synaptic op, and every potential once per step (Eq. 10, 15); a LIF layer reads and writes each
  membrane once per step (their per-step terms);
- addressing: one 32-bit add per synaptic op to find the target (Eq. 16-17; the formal FC form as
  the authors' implementation counts it, Nin x Nout).

A memory access costs Horowitz's SRAM read energy for a memory of that size (write = read, as the paper
assumes), interpolated as ``CostTable.sram_pj_per_byte`` does. Weights and K/V caches share an on-chip
SRAM budget (``CostTable.sram_budget_bytes``), filled greedily by bytes read per byte stored; what does
not fit comes from DRAM: per synaptic op, or the whole matrix once per step shared by the batch,
whichever moves fewer bytes. Membranes, recurrent state and activations stay on chip. Spike events are
addresses of ceil(log2(width) / 8) bytes.
"""

from __future__ import annotations

import functools
import math

import pandas as pd

from energy.costs import BYTES_PER_VALUE, CostTable

MATRIX_KINDS = ("linear", "matmul")
SPIKE_CLASSES = ("binary", "ternary")
SPIKING_KINDS = ("lif", "heaviside")

TERMS = (
    ("memory.inputs", "Eq. 4 (formal), 5 (spiking)", "every input read (formal), every input spike read (spiking)"),
    ("memory.weights", "Eq. 6.2f (formal), 8f (spiking)", "one weight read per synaptic op, SRAM or DRAM"),
    ("memory.kv-cache", "Eq. 6.2f, with K/V as the weights", "one K or V read per attention MAC"),
    ("memory.bias", "Eq. 6.2s, 8s", "one bias read per output"),
    ("memory.outputs", "Eq. 12 (formal), 13 (spiking)", "every output written (formal), every spike written"),
    ("memory.potentials", "Eq. 10, 15", "read + write of the target potential per synaptic op, and of every "
     "potential per step, in layers driven by spike events"),
    ("memory.membrane", "Eq. 10, 15 (per-step terms)", "read + write of every LIF membrane per step"),
    ("memory.addressing", "Eq. 16-17", "one 32-bit add per synaptic op to address the target"),
    ("memory.state", "not in Lemaire et al.", "RWKV's recurrent state (WKV sums, token-shift inputs) read + "
     "written per step"),
    ("memory.embedding", "not in Lemaire et al.", "one embedding row read per token"),
)  # fmt: skip

LEFT_OUT = (
    ("activation traffic of elementwise modules (LayerNorm, token-shift mix, sigmoid, gates, WKV inputs, "
     "softmax, GELU)", "Lemaire et al. model convolution, fully-connected and pooling layers only; left out for "
     "every model alike"),
    ("per-element parameter reads (LayerNorm scale and shift, time_mix, time_first, time_decay)",
     "about 1/width of the weight traffic; left out for every model alike"),
    ("static and idle power", "needs a time base that op counts do not give"),
)  # fmt: skip


# what a layer row means when a model's table lacks the column (e.g. a transformer has no membranes)
LAYER_DEFAULTS = {"bias_elems": 0, "mac": float("nan"), "operand_class": "float", "zero_fraction": 0.0,
                  "in_per_token": 0.0, "firing_rate": float("nan"), "membrane_rw_per_token": 0.0,
                  "state_rw_per_token": 0.0, "in_events_per_token": float("nan")}  # fmt: skip


MEMORY_COLUMNS = ["layer", "block", "kind", "operand_class", "mac", "synaptic_ops_per_token", "weight_elems",
                  "params", "bias_elems", "in_events_per_token", "in_per_token", "zero_fraction", "firing_rate",
                  "membrane_rw_per_token", "state_rw_per_token", "out_per_token"]  # fmt: skip


def address_bytes(width: float) -> int:
    """Bytes of one spike event: the address of one of ``width`` neurons."""
    return max(1, math.ceil(math.log2(max(width, 2)) / 8))


def placement(layers: pd.DataFrame, bytes_per_value: int, budget_bytes: float) -> set[str]:
    """The layers whose weights (or K/V cache, or embedding table) the on-chip SRAM budget holds:
    filled greedily by bytes read per token per byte stored, most reused first."""
    items = []
    cols = ["layer", "kind", "weight_elems", "synaptic_ops_per_token", "params", "out_per_token"]
    for r in layers[cols].itertuples():
        if r.kind in MATRIX_KINDS and r.weight_elems:
            stored, read = r.weight_elems * bytes_per_value, r.synaptic_ops_per_token * bytes_per_value
        elif r.kind == "embedding" and r.params:
            stored, read = r.params * bytes_per_value, r.out_per_token * bytes_per_value
        else:
            continue
        items.append((read / stored if stored else 0.0, r.layer, stored))
    placed, used = set(), 0.0
    for _, layer, stored in sorted(items, key=lambda t: (-t[0], t[1])):
        if used + stored <= budget_bytes:
            placed.add(layer)
            used += stored
    return placed


def memory_terms(
    layers: pd.DataFrame,
    costs: CostTable,
    precision: str,
    *,
    batch: int = 1,
    budget_bytes: float | None = None,
    zero_skipping: bool = True,
) -> pd.DataFrame:
    """Bytes (or adds) and pJ per token of every memory term, per layer.

    Columns: layer, block, stage, primitive ("sram", "dram" or "add"), amount (bytes, or adds for
    addressing), pj. ``budget_bytes``: on-chip SRAM for weights and K/V caches (default: the cost
    table's); 0 puts every weight in DRAM.
    """
    b = BYTES_PER_VALUE[precision]
    layers = layers.assign(**{k: v for k, v in LAYER_DEFAULTS.items() if k not in layers})
    budget = costs.sram_budget_bytes if budget_bytes is None else budget_bytes
    on_chip = placement(layers, b, budget)
    sram, dram, add32 = functools.cache(costs.sram_pj_per_byte), costs.dram_pj_per_byte(), costs.pj("add", "int32")
    rows = []

    def put(r, stage, amount, where, size=None):
        if amount:
            pj = amount * (dram if where == "dram" else add32 if where == "add" else sram(size))
            rows.append((r.layer, r.block, stage, where, float(amount), float(pj)))

    for r in layers[MEMORY_COLUMNS].itertuples():  # only the columns read: a wide table iterates slowly
        width = r.out_per_token  # elements per token = neurons / channels
        if r.kind in MATRIX_KINDS:
            spike_in = r.operand_class in SPIKE_CLASSES
            dense = r.mac if pd.notna(r.mac) else r.synaptic_ops_per_token
            syn = r.synaptic_ops_per_token if (zero_skipping or spike_in) else dense
            stored = r.weight_elems * b
            what = "memory.weights" if r.params else "memory.kv-cache"
            if r.layer in on_chip:
                put(r, f"{what} (SRAM)", syn * b, "sram", stored)
            else:
                put(r, f"{what} (DRAM)", min(syn * b, stored / batch), "dram")
            put(r, "memory.bias", width * b if r.bias_elems else 0, "sram", r.bias_elems * b)
            if spike_in:
                events = r.in_events_per_token
                if pd.isna(events):
                    events = r.in_per_token * (1 - r.zero_fraction)
                put(r, "memory.inputs", events * address_bytes(r.in_per_token), "sram", r.in_per_token * b)
                put(r, "memory.potentials", 2 * (syn + width) * b, "sram", width * b * batch)
            else:
                put(r, "memory.inputs", r.in_per_token * b, "sram", r.in_per_token * b)
            put(r, "memory.outputs", width * b, "sram", width * b)
            put(r, "memory.addressing", syn, "add")
        elif r.kind == "embedding" and r.params:
            where = "sram" if r.layer in on_chip else "dram"
            put(r, f"memory.embedding ({where.upper()})", width * b, where, r.params * b)
        if r.kind in SPIKING_KINDS and pd.notna(r.firing_rate):
            put(r, "memory.outputs", width * r.firing_rate * address_bytes(width), "sram", width * b)
        if r.membrane_rw_per_token:
            put(r, "memory.membrane", r.membrane_rw_per_token * b, "sram", width * batch * b)
        if r.state_rw_per_token:
            put(r, "memory.state", r.state_rw_per_token * b, "sram", r.state_rw_per_token / 2 * batch * b)
    return pd.DataFrame(rows, columns=["layer", "block", "stage", "primitive", "amount", "pj"])
