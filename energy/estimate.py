"""Energy accounting: measured op counts x the cost table -> pJ per token.

Every accounting returns long-form rows (layer, block, stage, primitive, pj) so that
the breakdown by layer and by op kind is one groupby away. One function, ``account``,
prices both SpikeGPT (a ``Profile``) and the baselines; the scenarios and the audit's
waterfall steps are settings of it.

Scenarios:

1. ``paper``: the paper's accounting. Every projection inside the blocks is an AC at
   one uniform rate R (0.15): dense MACs x R x E_AC; the WKV's 6 ops per channel per
   token at E_MAC; nothing else priced (no head, LayerNorm, exp, sigmoid, LIF...). For a
   non-spiking model every projection is a MAC.
2. ``paper_measured_rates``: the same, with R = the measured rate of the spiking layer
   that runs just before each projection (a projection with no spiking layer before
   it, e.g. after a float embedding, is priced as MACs).
3. ``as_executed``: operand classes as measured: float inputs are MACs (zeros skipped:
   effective MACs, unless ``zero_skipping=False``), spike inputs ACs; every elementwise
   op priced (exp, div, sigmoid, LayerNorm, ReLU^2, LIF, WKV...), the LM head included.
4. ``as_executed_memory``: 3 plus memory traffic, Lemaire et al. 2022 style: one weight
   read per synaptic op from an SRAM sized by the layer's weights; a read + write of
   every membrane potential per neuron step and of the other recurrent state (WKV
   sums, token-shift inputs); one embedding row read per token.
   ``as_executed_memory_dram``: the same but weights stream from DRAM once per step,
   amortised over the batch.
5. ``spike_input_counterfactual``: 3, but as if every projection inside the blocks read
   the spikes of the spiking layer before it, at its measured rate (the placement that
   would make the ACs real). The feed-forward value projection keeps reading ReLU^2
   (effective MACs) and the LM head stays as executed (``counterfactual_rates``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from energy.costs import BYTES_PER_VALUE, CostTable
from energy.rules import SPIKE_CLASSES

COLUMNS = ["scenario", "layer", "block", "stage", "primitive", "pj"]
PAPER_RATE = 0.15
PAPER_WKV_OPS = 6  # per channel per token (paper, section 3.7: WKV 6*T*d)
MATRIX_KINDS = ("linear", "matmul")


@dataclass(frozen=True)
class Accounting:
    """What is priced, and how."""

    projections: str = "executed"  # "paper": spike-fed projections as ACs at a rate; "executed": as measured;
    # "counterfactual": every projection reads the preceding spiking layer's spikes
    rate: float | None = None  # uniform rate for "paper"/"counterfactual" projections; None: measured per layer
    elementwise: bool = True  # price every elementwise op (else only the paper's 6 WKV MACs)
    outside_blocks: bool = True  # the LM head, embedding, final LayerNorm
    memory: str | None = None  # None, "sram" or "dram"
    zero_skipping: bool = True  # float MACs with a zero input are skipped (effective MACs)


SCENARIO_ACCOUNTING = {
    "paper": Accounting("paper", PAPER_RATE, elementwise=False, outside_blocks=False),
    "paper_measured_rates": Accounting("paper", None, elementwise=False, outside_blocks=False),
    "as_executed": Accounting(),
    "as_executed_memory": Accounting(memory="sram"),
    "as_executed_memory_dram": Accounting(memory="dram"),
    "spike_input_counterfactual": Accounting("counterfactual"),
}
SCENARIOS = tuple(SCENARIO_ACCOUNTING)
ANN_SCENARIOS = ("paper", "as_executed", "as_executed_memory", "as_executed_memory_dram")

SCENARIO_LABELS = {
    "paper": "paper (R = 0.15, projections as AC)",
    "paper_measured_rates": "paper, measured rates",
    "as_executed": "as executed",
    "as_executed_memory": "as executed + memory (SRAM)",
    "as_executed_memory_dram": "as executed + memory (DRAM weights)",
    "spike_input_counterfactual": "spike-input counterfactual",
}


def _frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS[1:])


def compute_rows(ops: pd.DataFrame, pj: dict[str, float], zero_skipping: bool = True) -> pd.DataFrame:
    """Every counted op priced at its primitive's cost (MACs, ACs, elementwise)."""
    spike = ops.operand.isin(SPIKE_CLASSES)
    if zero_skipping:
        priced = ops[ops.primitive != "mac"]
    else:
        priced = ops[(ops.primitive != "effective_mac") & ~((ops.primitive == "mac") & spike)]
    out = priced[["layer", "block", "stage", "primitive"]].copy()
    out["pj"] = priced.per_token.values * priced.primitive.map(pj).values
    return out.reset_index(drop=True)


def source_rates(layers: pd.DataFrame) -> pd.Series:
    """layer -> measured rate of the spiking layer that runs before it (NaN: none)."""
    if "spike_source_rate" not in layers:
        return pd.Series(dtype=float)
    return layers.set_index("layer").spike_source_rate


def counterfactual_rates(layers: pd.DataFrame) -> pd.Series:
    """The projections the counterfactual feeds with spikes: inside the blocks, with a spiking layer
    before them, and not reading ReLU^2 (the feed-forward value projection reads that activation,
    whatever the neurons' placement). The LM head stays as executed, as in the paper's accounting."""
    if "spike_source_rate" not in layers:
        return pd.Series(dtype=float)
    lay = layers.set_index("layer")
    fed = lay.block.notna() & lay.spike_source_rate.notna() & (lay.get("input_from", "") != "relu_sq")
    return lay.spike_source_rate.where(fed)


def _projection_rows(ops, layers, pj, acc: Accounting, spiking: bool) -> pd.DataFrame:
    """Projections (Linear layers and attention products) priced from their dense MACs."""
    rate = counterfactual_rates(layers) if acc.projections == "counterfactual" else source_rates(layers)
    dense = ops[ops.kind.isin(MATRIX_KINDS) & (ops.primitive == "mac")]
    dense = dense.groupby("layer", sort=False).agg(per_token=("per_token", "sum"), block=("block", "first"))
    rows = []
    for layer, r in dense.iterrows():
        src = rate.get(layer, float("nan"))
        if acc.projections == "paper" and spiking and (acc.rate is not None or pd.notna(src)):
            rr = acc.rate if acc.rate is not None else src
            rows.append((layer, r.block, "projection as AC", "ac", r.per_token * rr * pj["ac"]))
        elif acc.projections == "counterfactual" and pd.notna(src):
            rr = acc.rate if acc.rate is not None else src
            rows.append((layer, r.block, "projection on spikes (counterfactual)", "ac", r.per_token * rr * pj["ac"]))
        else:
            rows.append((layer, r.block, "projection as MAC", "mac", r.per_token * pj["mac"]))
    return _frame(rows)


def memory_rows(layers: pd.DataFrame, costs: CostTable, precision: str, batch: int, dram: bool) -> pd.DataFrame:
    """Weight (or K/V cache), embedding, membrane and state traffic in pJ per token."""
    b = BYTES_PER_VALUE[precision]
    rows = []
    for _, r in layers.iterrows():
        weight_bytes = r.weight_elems * b
        if r.kind in MATRIX_KINDS and r.weight_elems:
            if dram and r.params:
                pj = weight_bytes * costs.dram_pj_per_byte() / batch
                rows.append((r.layer, r.block, "memory.weights (DRAM)", "dram", pj))
            else:
                pj = r.synaptic_ops_per_token * b * costs.sram_pj_per_byte(weight_bytes)
                what = "memory.weights (SRAM)" if r.params else "memory.kv-cache (SRAM)"
                rows.append((r.layer, r.block, what, "sram", pj))
        elif r.kind == "embedding":
            per_byte = costs.dram_pj_per_byte() if dram else costs.sram_pj_per_byte(weight_bytes)
            rows.append(
                (r.layer, r.block, "memory.embedding", "dram" if dram else "sram", r.out_per_token * b * per_byte)
            )
        width = r.out_per_token  # elements per token = neurons / channels
        if r.membrane_rw_per_token:
            pj = r.membrane_rw_per_token * b * costs.sram_pj_per_byte(width * batch * b)
            rows.append((r.layer, r.block, "memory.membrane", "sram", pj))
        if r.state_rw_per_token:
            pj = r.state_rw_per_token * b * costs.sram_pj_per_byte(r.state_rw_per_token / 2 * batch * b)
            rows.append((r.layer, r.block, "memory.state", "sram", pj))
    return _frame(rows)


def account(
    ops: pd.DataFrame,
    layers: pd.DataFrame,
    costs: CostTable,
    precision: str,
    acc: Accounting,
    *,
    spiking: bool = True,
    batch: int = 1,
) -> pd.DataFrame:
    """pJ per token under one accounting, long form (layer, block, stage, primitive, pj)."""
    pj = costs.primitives(precision)
    inside = ops.block.notna()
    keep = ops if acc.outside_blocks else ops[inside]
    matrix = keep.kind.isin(MATRIX_KINDS)
    parts = []
    if acc.projections == "executed":
        parts.append(compute_rows(keep[matrix], pj, acc.zero_skipping))
    else:
        if acc.projections == "counterfactual":  # projections with no spiking layer before them stay as executed
            fed = keep.layer.map(counterfactual_rates(layers)).notna()
            parts.append(compute_rows(keep[matrix & ~fed], pj, acc.zero_skipping))
            matrix = matrix & fed
        parts.append(_projection_rows(keep[matrix], layers, pj, acc, spiking))
        extra = keep[matrix & ~keep.primitive.isin(["mac", "effective_mac", "ac"])]  # bias adds
        parts.append(compute_rows(extra, pj, acc.zero_skipping))
    rest = keep[~matrix]
    if acc.elementwise:
        parts.append(compute_rows(rest, pj, acc.zero_skipping))
    else:
        lay = layers[layers.kind == "wkv"]
        lay = lay if acc.outside_blocks else lay[lay.block.notna()]
        parts.append(
            _frame(
                [
                    (r.layer, r.block, "wkv (paper: 6 MACs)", "mac", PAPER_WKV_OPS * r.out_per_token * pj["mac"])
                    for _, r in lay.iterrows()
                ]
            )
        )
    if acc.memory:
        mem_layers = layers if acc.outside_blocks else layers[layers.block.notna()]
        parts.append(memory_rows(mem_layers, costs, precision, batch, dram=acc.memory == "dram"))
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else _frame([])


def scenario_energy(
    name: str,
    ops: pd.DataFrame,
    layers: pd.DataFrame,
    costs: CostTable,
    precision: str = "fp32",
    *,
    spiking: bool = True,
    batch: int = 1,
    paper_rate: float = PAPER_RATE,
    zero_skipping: bool = True,
) -> pd.DataFrame:
    """pJ per token for one named scenario (see the module docstring)."""
    if name not in SCENARIO_ACCOUNTING:
        raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    acc = SCENARIO_ACCOUNTING[name]
    acc = replace(acc, zero_skipping=zero_skipping, rate=paper_rate if acc.rate is not None else None)
    df = account(ops, layers, costs, precision, acc, spiking=spiking, batch=batch)
    df.insert(0, "scenario", name)
    return df[COLUMNS]
