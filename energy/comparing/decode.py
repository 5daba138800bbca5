"""Decode mode: the energy of generating one token at position t, batch 1, as a deployed model does.

A causal transformer generating token t reads a K/V cache of t positions: Q K^T and P V over t keys, a
softmax over t scores, and the cache itself (2 x t x width values per layer), which the memory scenario
keeps on chip while it fits the SRAM budget and reads from DRAM beyond. Its per-token cost grows with t.
SpikeGPT and its twin carry a fixed-size state (WKV sums, token-shift inputs, membranes): their cost per
token does not depend on t, and is the average measured over the profiled text.

The transformer's counts come from its profile over a sequence of T tokens, where attention was counted
over the causal triangle, (T + 1) / 2 keys per query on average: at position t every attention count
(and the K/V cache read per token) is that average x 2t / (T + 1), and the cache holds t positions.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from energy.pricing.costs import CostTable
from energy.pricing.estimate import Accounting, account, memory_rows


def _scale_attention(layers: pd.DataFrame, f: float, kv: float, scores_f: float | None) -> pd.DataFrame:
    """``layers`` with its attention rows (kind ``matmul``) scaled: MACs and synaptic ops x ``f``, the K/V cache
    (``weight_elems``) x ``kv``; inputs and outputs change by the scores' part, ``x - scores x (1 - f)`` (decode,
    ``scores_f`` None) or ``x + scores x (f - 1)`` with the scores x ``scores_f`` (prefill, ``_layers_at_context``).

    Column by column on numpy arrays, the same float operations on the same rows as ``lay.loc[att, col] *= f``
    (issue 24: the ``.loc`` updates were most of the decode curves' time, 92 positions per transformer)."""
    att = (layers.kind == "matmul").to_numpy()
    new = {}

    def scaled(col, by):
        x = layers[col].to_numpy(dtype=np.float64, copy=True)
        x[att] *= by
        return x

    for col in ("mac", "synaptic_ops_per_token"):
        new[col] = scaled(col, f)
    new["weight_elems"] = scaled("weight_elems", kv)
    for col, scores in (("in_per_token", "scores_in_per_token"), ("out_per_token", "scores_out_per_token")):
        if scores in layers:
            x = layers[col].to_numpy(dtype=np.float64, copy=True)
            s = layers[scores].to_numpy(dtype=np.float64)[att]
            x[att] = x[att] - s * (1 - f) if scores_f is None else x[att] + s * (f - 1)
            new[col] = x
            if scores_f is not None:
                new[scores] = scaled(scores, scores_f)
    return layers.assign(**new)


def _layers_at(baseline, t: int) -> pd.DataFrame:
    """The transformer's per-token layers table when generating token t (1-based)."""
    T = baseline.context
    return _scale_attention(baseline.layers, 2 * t / (T + 1), t / T, None)


def _at_position(baseline, t: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The transformer's per-token ops and layers when generating token t (1-based)."""
    f = 2 * t / (baseline.context + 1)
    ops = baseline.ops.copy()
    on_scores = ops.stage.str.startswith("attention.")
    ops.loc[on_scores, "per_token"] *= f
    ops.loc[on_scores, "count"] *= f
    return ops, _layers_at(baseline, t)


def transformer_energy(
    baseline, t: int, costs: CostTable, precision: str, memory: bool, zero_skipping: bool = True
) -> float:
    """pJ to generate token t at batch 1 (as executed, with or without memory traffic)."""
    ops, lay = _at_position(baseline, t)
    acc = Accounting(memory="sram" if memory else None, zero_skipping=zero_skipping)
    return float(account(ops, lay, costs, precision, acc, spiking=False, batch=1).pj.sum())


def energy_by_position(baseline, costs: CostTable, precision: str, zero_skipping: bool = True):
    """``cost(t, memory)``: ``transformer_energy`` for every position, computed faster.

    Compute is priced row by row, linearly in each row's count, and only the attention rows scale with t:
    priced once, compute(t) = rest + (2t / (T + 1)) x attention. Memory traffic is not linear in t (the
    K/V cache moves between SRAM and DRAM, an SRAM's energy per byte depends on its size): its terms are
    priced again at each position, on the layers at that position."""
    rows = account(baseline.ops, baseline.layers, costs, precision, Accounting(zero_skipping=zero_skipping),
                   spiking=False, batch=1)  # fmt: skip
    on_scores = rows.stage.str.startswith("attention.").to_numpy()
    pj = rows.pj.to_numpy()
    rest, attention = float(pj[~on_scores].sum()), float(pj[on_scores].sum())

    @functools.cache  # the curves and each model's bisection ask for the same positions
    def cost(t: int, memory: bool) -> float:
        e = rest + 2 * t / (baseline.context + 1) * attention
        if memory:
            lay = _layers_at(baseline, t)
            e += float(memory_rows(lay, costs, precision, 1, dram=False, zero_skipping=zero_skipping).pj.sum())
        return e

    return cost


def positions(T: int, n: int = 48) -> list[int]:
    return sorted({int(round(x)) for x in np.geomspace(1, T, n)} | {1, T})


def crossover(cost, T: int, flat_pj: float, memory: bool) -> dict:
    """The first position t at which generating a token costs the transformer more than ``flat_pj``;
    ``cost(t)``: its pJ at position t (with memory traffic if ``memory``), ``T``: its context.

    Within 1..T by bisection (the cost does not decrease with t); beyond T, for compute alone, the linear
    extrapolation of the attention term, labelled as such."""

    if cost(1) >= flat_pj:
        return {"position": 1, "within_context": True, "note": "from the first token on"}
    if cost(T) < flat_pj:
        e1, e2 = cost(1), cost(2)
        slope = e2 - e1
        if memory or slope <= 0:
            return {"position": None, "within_context": False, "note": f"no crossover within {T} positions"}
        t = 1 + math.ceil((flat_pj - e1) / slope)
        return {"position": t, "within_context": False,
                "note": f"beyond the profiled {T} positions: extrapolated linearly (compute only)"}  # fmt: skip
    lo, hi = 1, T  # cost(lo) < flat <= cost(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cost(mid) < flat_pj else (lo, mid)
    return {"position": hi, "within_context": True, "note": f"within the profiled {T} positions"}


def decode_mode(
    flat: dict[str, dict[str, float]], transformers: dict, costs: CostTable, precision: str, zero_skipping: bool = True
) -> dict:
    """Energy per generated token by position for each transformer, against the flat per-token energy of
    SpikeGPT and its twin (``flat``: model -> {"as_executed", "as_executed_memory"} pJ per token), and the
    crossover positions."""
    out = {"curves": {}, "flat": flat, "crossover": {}, "batch": 1}
    for name, b in transformers.items():
        pos = positions(b.context)

        cost = energy_by_position(b, costs, precision, zero_skipping)
        out["curves"][name] = {
            "positions": pos,
            "as_executed": [cost(t, False) for t in pos],
            "as_executed_memory": [cost(t, True) for t in pos],
        }
        out["crossover"][name] = {
            model: {s: crossover(lambda t, m=s == "as_executed_memory", c=cost: c(t, m), b.context, e[s],
                                 s == "as_executed_memory") for s in e}
            for model, e in flat.items()
        }  # fmt: skip
    return out


# ---------------------------------------------------------------------------------
# The comparator at another context (prefill): attention is the only part that depends on it
# ---------------------------------------------------------------------------------


def keys_per_query(lengths) -> float:
    """Attention keys per query over documents of ``lengths`` tokens, each its own causal sequence:
    sum_d T_d (T_d + 1) / 2 / sum_d T_d (token-weighted; not (mean T + 1) / 2)."""
    lengths = [int(n) for n in lengths if n and n > 0]
    total = sum(lengths)
    return sum(n * (n + 1) / 2 for n in lengths) / total if total else 0.0


def at_context(baseline, context: float, keys: float | None = None):
    """The causal transformer's per-token counts on sequences of ``context`` tokens, from its counts at its own
    context T (closed form: attention over the causal triangle reads (T + 1) / 2 keys per query, so every
    attention count scales by (context + 1) / (T + 1); the K/V cache holds ``context`` positions; nothing
    else depends on the context). ``keys``: keys per query to scale to instead (documents of several
    lengths, ``keys_per_query``); the K/V cache then holds 2 keys - 1 positions. The full-square counts
    (``eager_ops``) do not survive the change and are dropped.

    The other way to a count at another context, ``baselines.derive_baseline``, answers another question: the
    transformer *built* for that context (a position table of that many rows), exact from its polynomials in T.
    Both give the same per-token counts except the position table's size and a row counted once per sequence
    (GPT-2's one scalar ``sub``), which this closed form takes per token (``tests/test_cache.py``)."""
    import dataclasses

    T = baseline.context
    k = keys if keys is not None else (context + 1) / 2
    f = 2 * k / (T + 1)
    held = 2 * k - 1
    ops = baseline.ops.copy()
    on_scores = ops.stage.str.startswith("attention.")
    ops.loc[on_scores, "per_token"] *= f
    ops["count"] = ops["per_token"] * held  # one sequence of `held` tokens
    lay = _layers_at_context(baseline, f, held)
    return dataclasses.replace(baseline, ops=ops, layers=lay, context=int(round(held)), eager_ops=None)


def _layers_at_context(baseline, f: float, held: float) -> pd.DataFrame:
    """``at_context``'s layers table: attention counts x ``f``, a K/V cache of ``held`` positions."""
    return _scale_attention(baseline.layers, f, held / baseline.context, f)


def context_curve(baseline, spikegpt_pj: dict[str, float], costs: CostTable, precision: str, zero_skipping=True,
                  contexts=None, batch: int = 1, marks=()) -> dict:  # fmt: skip
    """Prefill: the comparator's energy per token on sequences of each context, and its ratio to SpikeGPT's
    (which does not depend on the context), as executed and with memory traffic. ``marks``: contexts the curve
    must pass through besides its own (e.g. the checkpoint's training context, marked in the report).

    ``at_context`` at every context, priced in one pass: compute is priced row by row, linearly in each row's
    count, and only the attention rows scale with the context, so compute(c) = rest + f(c) x attention (f as
    ``at_context`` scales them; equal to pricing ``at_context(baseline, c)`` within float rounding, 1e-15
    relative). The memory terms are not linear in the context (the K/V cache moves between SRAM and DRAM):
    they are priced on ``at_context``'s layers table at each context."""
    T = baseline.context
    marked = {int(m) for m in marks if m and m > 0}
    contexts = contexts or sorted({int(round(x)) for x in np.geomspace(1, max(T, 2) * 2, 24)} | {T} | marked)
    rows = account(baseline.ops, baseline.layers, costs, precision, Accounting(zero_skipping=zero_skipping),
                   spiking=False, batch=batch)  # fmt: skip
    on_scores = rows.stage.str.startswith("attention.").to_numpy()
    pj = rows.pj.to_numpy()
    rest, attention = float(pj[~on_scores].sum()), float(pj[on_scores].sum())
    e = {"as_executed": [], "as_executed_memory": []}
    for c in contexts:
        k = (c + 1) / 2
        f, held = 2 * k / (T + 1), 2 * k - 1
        compute = rest + f * attention
        memory = memory_rows(_layers_at_context(baseline, f, held), costs, precision, batch, dram=False,
                             zero_skipping=zero_skipping)  # fmt: skip
        e["as_executed"].append(compute)
        e["as_executed_memory"].append(compute + float(memory.pj.sum()))
    out = {"contexts": contexts, "energy_pj": e, "ratio": {}}
    for scen, x in e.items():
        out["ratio"][scen] = [v / spikegpt_pj[scen] if spikegpt_pj.get(scen) else None for v in x]
    return out
