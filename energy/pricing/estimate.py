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
5. ``spike_input_counterfactual``: 3, but every block projection that reads a token-shift
   mix of the residual stream (att key/value/receptance, ffn key/receptance) reads instead
   the spikes of the spiking layer run before it, at that layer's measured rate, as two
   spike vectors (s_t and s_{t-1}: a mix of spikes is not binary), so 2 x dense x rate ACs.
   The output projection (reads r * WKV, a float), the feed-forward value projection (reads
   ReLU^2) and the LM head stay as executed (``counterfactual_inputs`` says why, per layer).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

from energy.pricing.costs import CostTable
from energy.pricing.memory import SPIKE_CLASSES, memory_terms

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


TOKEN_SHIFT_VECTORS = 2  # a token-shift mix s_t * mix + s_{t-1} * (1 - mix) of spikes needs both spike vectors


def counterfactual_inputs(layers: pd.DataFrame) -> pd.DataFrame:
    """The spike-input counterfactual, projection by projection, decided from what was measured.

    A projection is fed spikes when it sits inside a block, reads a token-shift mix (the module run
    just before it is a ``lerp``) of the residual stream, and has a spiking layer before it: it then
    reads that layer's spikes at its measured rate. A mix of spikes, ``s_t * mix + s_{t-1} * (1 - mix)``,
    is not binary, so real ACs need both spike vectors (or duplicated weights): ``vectors`` = 2, twice
    the ACs. Every other projection keeps what it reads as executed, and the reason is stated.
    Columns: layer, block, reads_as_executed, operand_class, fed, spike_source, rate, vectors, reads, reason.
    """
    cols = ["layer", "block", "reads_as_executed", "operand_class", "fed", "spike_source", "rate", "vectors",
            "reads", "reason"]  # fmt: skip
    if "spike_source_rate" not in layers:
        return pd.DataFrame(columns=cols)
    rows = []
    for r in layers[layers.kind == "linear"].itertuples():
        src, rate, came = r.spike_source or "", r.spike_source_rate, r.input_from or "?"
        already = r.operand_class in SPIKE_CLASSES
        if pd.isna(r.block):
            reason = "outside the blocks: stays as executed (as in the paper's accounting)"
        elif already:
            reason = f"already reads {r.operand_class} spikes: as executed"
        elif came != "lerp":
            reason = f"reads the output of a {came} ({r.operand_class}), not the residual stream: as executed"
        elif not src or pd.isna(rate):
            reason = "no spiking layer runs before it: as executed"
        else:
            reason = ""
        fed = reason == ""
        reads = (
            f"spikes of {src} at rate {rate:.4g}, as {TOKEN_SHIFT_VECTORS} spike vectors (s_t and s_t-1: "
            "the token-shift mix of spikes is not binary)"
            if fed
            else f"{came} output ({r.operand_class})"
        )
        rows.append((r.layer, r.block, came, r.operand_class, fed, src, rate if fed else float("nan"),
                     TOKEN_SHIFT_VECTORS if fed else 0, reads, reason))  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def counterfactual_layers(
    layers: pd.DataFrame, rate: float | None = None, cf: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The layers table as the counterfactual would run: each fed projection reads binary spikes, at its
    measured source rate (or a uniform ``rate``), from ``vectors`` spike vectors (synaptic ops and input
    events for the memory model). Two spike vectors need two weight matrices, W diag(m) and W diag(1 - m) (the
    token-shift mix folded into the weights): a fed projection stores ``vectors`` x its weights, which the SRAM
    banks and the budget see. ``cf``: ``counterfactual_inputs(layers)`` indexed by layer, if at hand."""
    cf = counterfactual_inputs(layers).set_index("layer") if cf is None else cf
    fed = cf.index[cf.fed]
    out = layers.copy()
    idx = out.layer.isin(fed)
    lay = out[idx].set_index("layer")
    r = pd.Series(rate, index=lay.index) if rate is not None else cf.rate.reindex(lay.index)  # in the table's order
    vec = cf.vectors.reindex(lay.index)
    out.loc[idx, "synaptic_ops_per_token"] = (lay.mac * r * vec).to_numpy()
    out.loc[idx, "in_events_per_token"] = (lay.in_per_token * r * vec).to_numpy()
    out.loc[idx, "weight_elems"] = (lay.weight_elems * vec).to_numpy()
    out.loc[idx, "operand_class"] = "binary"
    return out


def counterfactual_rates(layers: pd.DataFrame) -> pd.Series:
    """layer -> the rate a projection would read in the counterfactual (NaN: not fed; see ``counterfactual_inputs``)."""
    cf = counterfactual_inputs(layers)
    return cf.set_index("layer").rate if not cf.empty else pd.Series(dtype=float)


def _projection_quantities(ops, layers, acc: Accounting, spiking: bool, cf: pd.DataFrame | None = None) -> list:
    """Projections (Linear layers and attention products) from their dense MACs, before prices: (layer, block,
    stage, primitive, quantity per token) rows (``cf``: the counterfactual's inputs indexed by layer, for that
    accounting). An AC row's quantity is dense MACs x rate (x spike vectors), priced at E_AC."""
    if acc.projections == "counterfactual":
        cf = counterfactual_inputs(layers).set_index("layer") if cf is None else cf
        rate, vectors = cf.rate.to_dict(), cf.vectors.to_dict()
    else:
        rate, vectors = source_rates(layers).to_dict(), {}
    dense = ops[ops.kind.isin(MATRIX_KINDS) & (ops.primitive == "mac")]
    dense = dense.groupby("layer", sort=False).agg(per_token=("per_token", "sum"), block=("block", "first"))
    rows = []
    for layer, per_token, block in zip(dense.index, dense.per_token.tolist(), dense.block.tolist(), strict=True):
        src = rate.get(layer, float("nan"))
        if acc.projections == "paper" and spiking and (acc.rate is not None or pd.notna(src)):
            rr = acc.rate if acc.rate is not None else src
            rows.append((layer, block, "projection as AC", "ac", per_token * rr))
        elif acc.projections == "counterfactual" and pd.notna(src):
            rr = (acc.rate if acc.rate is not None else src) * vectors[layer]
            rows.append((layer, block, "projection on spikes (counterfactual)", "ac", per_token * rr))
        else:
            rows.append((layer, block, "projection as MAC", "mac", per_token))
    return rows


def memory_rows(
    layers: pd.DataFrame, costs: CostTable, precision: str, batch: int, dram: bool, zero_skipping: bool = True
) -> pd.DataFrame:
    """Memory traffic in pJ per token (``energy.pricing.memory``): weights and state within the SRAM budget from SRAM,
    the rest from DRAM (``dram``: every weight from DRAM, state where the budget puts it, for every model)."""
    terms = memory_terms(layers, costs, precision, batch=batch, weights_dram=dram, zero_skipping=zero_skipping)
    return terms[["layer", "block", "stage", "primitive", "pj"]]


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
    """pJ per token under one accounting, long form (layer, block, stage, primitive, pj).

    Two steps: ``_plan`` decides which rows are priced and their quantities (counts per token, at a rate where
    a projection is priced as ACs); it depends on the counts and the accounting alone, so it is built once per
    (ops, layers, accounting) and kept. Here every row's quantity is multiplied by its primitive's price, in
    one numpy product, and the memory terms, which depend on the cost table, are added."""
    plan = _plan(ops, layers, acc, spiking)
    frames = []
    if plan.rows is not None:
        pj = costs.primitives(precision)
        df = plan.rows.copy()
        df["pj"] = plan.quantity * np.array([pj.get(k, np.nan) for k in plan.primitive], dtype=np.float64)
        frames.append(df)
    if plan.memory_layers is not None:
        mem = memory_rows(plan.memory_layers, costs, precision, batch, acc.memory == "dram", acc.zero_skipping)
        if not mem.empty:
            frames.append(mem)
    if not frames:
        return _frame([])
    if len(frames) == 1 and plan.memory_layers is None:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class _Plan:
    """What ``account`` prices, before prices: ``rows`` (layer, block, stage, primitive; None: none) with each
    row's ``quantity`` (per token) and the ``primitive`` whose price multiplies it; ``memory_layers``: the
    layers table the memory terms are computed from (None: no memory traffic)."""

    rows: pd.DataFrame | None
    quantity: np.ndarray
    primitive: tuple
    memory_layers: pd.DataFrame | None


_PLANS: dict[tuple, tuple] = {}


def _fingerprint(df: pd.DataFrame) -> tuple:
    """A cheap check that a table kept by identity was not changed in place since: its columns and dtypes, its
    numbers (each column's bytes) and its text (operand classes, primitives, ``input_from``: the plan depends on
    them too). Column by column, without converting to float (issue 24: it is taken twice per priced
    accounting, 900 times in the demo)."""
    out = []
    for _, col in df.items():
        values = np.asarray(col.array)
        if col.dtype.kind in "fiub":
            out.append(hash(values.tobytes()))
            continue
        if infer_dtype(values, skipna=False) == "string":  # text only: str hashes tell any two strings apart
            out.append(hash(tuple(values)))
        else:  # anything else by its text and types (hash(-1) == hash(-2) in CPython; lists are unhashable)
            out.append(hash(repr([(type(v).__name__, v) for v in values.tolist()])))
    return df.shape, tuple(df.columns), tuple(str(t) for t in df.dtypes), tuple(out)


def _plan(ops: pd.DataFrame, layers: pd.DataFrame, acc: Accounting, spiking: bool) -> _Plan:
    """``account``'s rows before prices, built once per (ops, layers, accounting): kept by the tables' identity
    with the tables themselves (a new table is never confused with a collected one) and their fingerprints
    (a table changed in place is planned again)."""
    return _kept_plan(ops, layers, acc, spiking, (_fingerprint(ops), _fingerprint(layers)))


def _kept_plan(ops: pd.DataFrame, layers: pd.DataFrame, acc: Accounting, spiking: bool, prints: tuple) -> _Plan:
    """``_plan`` with the tables' fingerprints at hand. The priced rows do not depend on the memory traffic: an
    accounting with memory shares them with the same accounting without (issue 24: the intervals price every
    bootstrap unit's new tables as executed, with SRAM and with DRAM weights), and adds its memory layers."""
    key = (id(ops), id(layers), acc, spiking)
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is ops and hit[1] is layers and hit[2] == prints:
        return hit[3]
    if acc.memory:
        rows = _kept_plan(ops, layers, replace(acc, memory=None), spiking, prints)
        plan = replace(rows, memory_layers=_memory_layers(layers, acc))
    else:
        plan = _build_plan(ops, layers, acc, spiking)
    if len(_PLANS) >= 256:
        _PLANS.clear()
    _PLANS[key] = (ops, layers, prints, plan)
    return plan


def _compute_plan(ops: pd.DataFrame, zero_skipping: bool):
    """``compute_rows`` before prices: (rows without pj, quantities, primitives)."""
    spike = ops.operand.isin(SPIKE_CLASSES)
    if zero_skipping:
        priced = ops[ops.primitive != "mac"]
    else:
        priced = ops[(ops.primitive != "effective_mac") & ~((ops.primitive == "mac") & spike)]
    rows = priced[["layer", "block", "stage", "primitive"]].reset_index(drop=True)
    return rows, priced.per_token.to_numpy(), tuple(priced.primitive.tolist())


def _rows_plan(rows: list[tuple]):
    """(layer, block, stage, primitive, quantity) tuples -> (rows without pj, quantities, primitives)."""
    df = pd.DataFrame([r[:4] for r in rows], columns=COLUMNS[1:5])
    return df, np.array([r[4] for r in rows], dtype=np.float64), tuple(r[3] for r in rows)


def _memory_layers(layers: pd.DataFrame, acc: Accounting, cf: pd.DataFrame | None = None) -> pd.DataFrame:
    """The layers table the memory terms of ``acc`` are computed from (``cf``: the counterfactual's inputs
    indexed by layer, if at hand)."""
    mem_layers = layers if acc.outside_blocks else layers[layers.block.notna()]
    if acc.projections == "counterfactual":
        cf = counterfactual_inputs(layers).set_index("layer") if cf is None else cf  # of the whole table
        mem_layers = counterfactual_layers(mem_layers, acc.rate, cf)
    return mem_layers


def _build_plan(ops: pd.DataFrame, layers: pd.DataFrame, acc: Accounting, spiking: bool) -> _Plan:
    inside = ops.block.notna()
    keep = ops if acc.outside_blocks else ops[inside]
    matrix = keep.kind.isin(MATRIX_KINDS)
    parts = []
    cf = counterfactual_inputs(layers).set_index("layer") if acc.projections == "counterfactual" else None
    if acc.projections == "executed":
        parts.append(_compute_plan(keep[matrix], acc.zero_skipping))
    else:
        priced = matrix
        if cf is not None:  # projections the counterfactual does not feed stay as executed
            fed = keep.layer.map(cf.rate).notna()
            parts.append(_compute_plan(keep[matrix & ~fed], acc.zero_skipping))
            priced = matrix & fed
        parts.append(_rows_plan(_projection_quantities(keep[priced], layers, acc, spiking, cf)))
        if acc.projections != "paper":  # the paper's accounting counts MACs and ACs only, no bias adds
            extra = keep[priced & ~keep.primitive.isin(["mac", "effective_mac", "ac"])]  # bias adds
            parts.append(_compute_plan(extra, acc.zero_skipping))
    rest = keep[~matrix]
    if acc.elementwise:
        parts.append(_compute_plan(rest, acc.zero_skipping))
    else:
        lay = layers[layers.kind == "wkv"]
        lay = lay if acc.outside_blocks else lay[lay.block.notna()]
        parts.append(_rows_plan([(r.layer, r.block, "wkv (paper: 6 MACs)", "mac", PAPER_WKV_OPS * r.out_per_token)
                                 for _, r in lay.iterrows()]))  # fmt: skip
    parts = [p for p in parts if not p[0].empty]
    mem_layers = _memory_layers(layers, acc, cf) if acc.memory else None
    if not parts:
        return _Plan(None, np.zeros(0), (), mem_layers)
    rows = parts[0][0] if len(parts) == 1 else pd.concat([p[0] for p in parts], ignore_index=True)
    return _Plan(rows, np.concatenate([p[1] for p in parts]), sum((p[2] for p in parts), ()), mem_layers)


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
