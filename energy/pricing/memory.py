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
  membrane once per step (their per-step terms). A potential and a membrane are accumulators: they
  are stored at the precision preset's accumulator width (4 bytes: int32 for int8 operands, fp32 for
  fp16 and fp32), the width the ACs that update them are priced at, not at the operand width;
- addressing: one 32-bit add per synaptic op to find the target (Eq. 16-17; the formal FC form as
  the authors' implementation counts it, Nin x Nout).

A memory access costs an SRAM read for a memory of that size (write = read, as the paper assumes), priced
by the selected memory model (``CostTable.sram_access_pj``): today's per-byte model (Horowitz's points,
piecewise in log2 size, a byte = 1/8 of a 64-bit access) or the authors' own linear fit per access
(``lemaire-linear``). Placement is one rule for every model: weights, K/V caches and the recurrent state
(membranes, WKV sums, token-shift inputs) share an on-chip SRAM budget (``CostTable.sram_budget_bytes``),
filled greedily by bytes read per byte stored; what does not fit comes from DRAM: a weight matrix per
synaptic op, or whole once per step shared by the batch, whichever moves fewer bytes; state read and
written per step. The "DRAM weights" scenario (``weights_dram``) takes the weights out of the budget and
leaves state (a transformer's K/V cache and SpikeGPT's recurrent state alike) where the budget puts it.
Activations stay on chip. Spike events are addresses of ceil(log2(width) / 8) bytes.
"""

from __future__ import annotations

import collections
import functools
import math

import pandas as pd

from energy.pricing.costs import BYTES_PER_VALUE, PRESETS, CostTable

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
     "potential per step, in layers driven by spike events; at the accumulator width (4 bytes)"),
    ("memory.membrane", "Eq. 10, 15 (per-step terms)", "read + write of every LIF membrane per step, at the "
     "accumulator width (4 bytes)"),
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


def accumulator_bytes(precision: str) -> int:
    """Bytes of one potential or membrane: the precision preset's accumulator width (int32, fp32: 4)."""
    acc = str(PRESETS.loc[precision, "accumulator"])
    return int("".join(ch for ch in acc if ch.isdigit())) // 8


@functools.cache
def _row_type(columns: tuple[str, ...]):
    return collections.namedtuple("Row", columns)


def _rows(df: pd.DataFrame, columns: list[str]):
    """The rows of ``df``'s ``columns`` as named tuples of the same Python values ``itertuples`` gives (a column's
    ``tolist``), without its per-call indexing and named-tuple class (issue 24: half of ``memory_terms``' time,
    which the demo calls 350 times)."""
    return map(_row_type(tuple(columns))._make, zip(*(df[c].tolist() for c in columns)))


def _items(layers: pd.DataFrame, b: int, acc: int, batch: int, weights: bool, state: bool) -> list[tuple]:
    """(bytes read per byte stored, ("kind", layer), bytes stored) of every placeable item: weight matrices and
    embedding tables (``weights``); K/V caches, membranes and recurrent state (``state``)."""
    items = []
    cols = ["layer", "kind", "weight_elems", "synaptic_ops_per_token", "params", "out_per_token",
            "membrane_rw_per_token", "state_rw_per_token"]  # fmt: skip
    for r in _rows(layers, cols):
        found = []
        if r.kind in MATRIX_KINDS and r.weight_elems:
            if r.params and weights:
                found.append(("weights", r.weight_elems * b, r.synaptic_ops_per_token * b))
            elif not r.params and state:  # a K/V cache: state of the sequence, one per sequence of the batch
                found.append(("kv", r.weight_elems * b * batch, r.synaptic_ops_per_token * b * batch))
        elif r.kind == "embedding" and r.params and weights:
            found.append(("weights", r.params * b, r.out_per_token * b))
        if state and r.membrane_rw_per_token:
            found.append(("membrane", r.out_per_token * acc * batch, r.membrane_rw_per_token * acc * batch))
        if state and r.state_rw_per_token:
            found.append(("state", r.state_rw_per_token / 2 * b * batch, r.state_rw_per_token * b * batch))
        for what, stored, read in found:
            items.append((read / stored if stored else 0.0, (what, r.layer), stored))
    return items


def placement(
    layers: pd.DataFrame,
    bytes_per_value: int,
    budget_bytes: float,
    *,
    acc_bytes: int | None = None,
    batch: int = 1,
    weights: bool = True,
    state: bool = False,
) -> set:
    """What the on-chip SRAM budget holds, filled greedily by bytes read per token per byte stored, most
    reused first. With ``state=False`` (the old call): the layers whose weights, K/V cache or embedding table
    it holds. With ``state=True``: (kind, layer) pairs, kind in weights, kv, membrane, state; ``weights=False``
    leaves weights out (they are in DRAM) and gives the whole budget to state, for every model alike."""
    acc = bytes_per_value if acc_bytes is None else acc_bytes
    if not state:  # the weights and K/V caches alone, by layer name (as before)
        items = _items(layers, bytes_per_value, acc, 1, True, True)
        items = [(ratio, key[1], stored) for ratio, key, stored in items if key[0] in ("weights", "kv")]
    else:
        items = _items(layers, bytes_per_value, acc, batch, weights, True)
    placed, used = set(), 0.0
    for _, key, stored in sorted(items, key=lambda t: (-t[0], str(t[1]))):
        if used + stored <= budget_bytes:
            placed.add(key)
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
    weights_dram: bool = False,
) -> pd.DataFrame:
    """Bytes (or adds) and pJ per token of every memory term, per layer.

    Columns: layer, block, stage, primitive ("sram", "dram" or "add"), amount (bytes, or adds for
    addressing), pj. ``budget_bytes``: on-chip SRAM for weights, K/V caches and recurrent state (default:
    the cost table's); 0 puts all of them in DRAM. ``weights_dram``: every weight in DRAM, and state (K/V
    caches, membranes, WKV sums, token-shift inputs) where the budget puts it, for every model alike.
    """
    b = BYTES_PER_VALUE[precision]
    acc = accumulator_bytes(precision)
    missing = {k: v for k, v in LAYER_DEFAULTS.items() if k not in layers}
    layers = layers.assign(**missing) if missing else layers  # read only below: no copy needed
    budget = costs.sram_budget_bytes if budget_bytes is None else budget_bytes
    on_chip = placement(layers, b, budget, acc_bytes=acc, batch=batch, weights=not weights_dram, state=True)
    access = functools.cache(costs.sram_access_pj)
    dram, add32 = costs.dram_pj_per_byte(), costs.pj("add", "int32")
    rows = []

    def put(r, stage, amount, where, size=None, value=None):
        """``amount`` bytes (adds for addressing) from ``where``; SRAM: a memory of ``size`` bytes read in
        values of ``value`` bytes (one access per value, as the selected memory model prices it)."""
        if amount:
            if where == "dram":
                pj = amount * dram
            elif where == "add":
                pj = amount * add32
            else:
                pj = amount / value * access(size, value)
            rows.append((r.layer, r.block, stage, where, float(amount), float(pj)))

    for r in _rows(layers, MEMORY_COLUMNS):  # only the columns read
        width = r.out_per_token  # elements per token = neurons / channels
        if r.kind in MATRIX_KINDS:
            spike_in = r.operand_class in SPIKE_CLASSES
            dense = r.mac if pd.notna(r.mac) else r.synaptic_ops_per_token
            syn = r.synaptic_ops_per_token if (zero_skipping or spike_in) else dense
            what = "memory.weights" if r.params else "memory.kv-cache"
            key = ("weights", r.layer) if r.params else ("kv", r.layer)
            stored = r.weight_elems * b * (1 if r.params else batch)
            if key in on_chip:
                put(r, f"{what} (SRAM)", syn * b, "sram", stored, b)
            elif r.params:  # a weight matrix: per synaptic op, or whole once per step shared by the batch
                put(r, f"{what} (DRAM)", min(syn * b, stored / batch), "dram")
            else:  # a K/V cache is read per attention MAC
                put(r, f"{what} (DRAM)", syn * b, "dram")
            put(r, "memory.bias", width * b if r.bias_elems else 0, "sram", r.bias_elems * b, b)
            if spike_in:
                events = r.in_events_per_token
                if pd.isna(events):
                    events = r.in_per_token * (1 - r.zero_fraction)
                ab = address_bytes(r.in_per_token)
                put(r, "memory.inputs", events * ab, "sram", r.in_per_token * b, ab)
                put(r, "memory.potentials", 2 * (syn + width) * acc, "sram", width * acc * batch, acc)
            else:
                put(r, "memory.inputs", r.in_per_token * b, "sram", r.in_per_token * b, b)
            put(r, "memory.outputs", width * b, "sram", width * b, b)
            put(r, "memory.addressing", syn, "add")
        elif r.kind == "embedding" and r.params:
            where = "sram" if ("weights", r.layer) in on_chip else "dram"
            put(r, f"memory.embedding ({where.upper()})", width * b, where, r.params * b, b)
        if r.kind in SPIKING_KINDS and pd.notna(r.firing_rate):
            ab = address_bytes(width)
            put(r, "memory.outputs", width * r.firing_rate * ab, "sram", width * b, ab)
        if r.membrane_rw_per_token:
            where = "sram" if ("membrane", r.layer) in on_chip else "dram"
            stage = "memory.membrane" + ("" if where == "sram" else " (DRAM)")
            put(r, stage, r.membrane_rw_per_token * acc, where, width * batch * acc, acc)
        if r.state_rw_per_token:
            where = "sram" if ("state", r.layer) in on_chip else "dram"
            stage = "memory.state" + ("" if where == "sram" else " (DRAM)")
            put(r, stage, r.state_rw_per_token * b, where, r.state_rw_per_token / 2 * batch * b, b)
    return pd.DataFrame(rows, columns=["layer", "block", "stage", "primitive", "amount", "pj"])
