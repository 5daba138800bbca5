"""The accounting priced in one numpy pass per call (issue 24, target 5) against its definitional form: the
per-part pandas accounting it replaced (kept here as the reference), for every accounting setting, on a tiny
SpikeGPT and a tiny transformer; and the prefill curve against ``at_context`` priced context by context."""

import itertools
from dataclasses import replace

import pandas as pd
import pytest
import torch

import energy
from energy.comparing.decode import at_context, context_curve
from energy.pricing.costs import load_costs
from energy.pricing.estimate import (
    COLUMNS,
    MATRIX_KINDS,
    PAPER_WKV_OPS,
    SCENARIO_ACCOUNTING,
    Accounting,
    account,
    compute_rows,
    counterfactual_inputs,
    counterfactual_layers,
    memory_rows,
    source_rates,
)


def _frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS[1:])


def _projection_rows_reference(ops, layers, pj, acc, spiking, cf=None):
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
            rows.append((layer, block, "projection as AC", "ac", per_token * rr * pj["ac"]))
        elif acc.projections == "counterfactual" and pd.notna(src):
            rr = (acc.rate if acc.rate is not None else src) * vectors[layer]
            rows.append((layer, block, "projection on spikes (counterfactual)", "ac", per_token * rr * pj["ac"]))
        else:
            rows.append((layer, block, "projection as MAC", "mac", per_token * pj["mac"]))
    return _frame(rows)


def account_reference(ops, layers, costs, precision, acc, *, spiking=True, batch=1):
    """The accounting as it was written before the one-pass pricing (one pandas frame per part, priced as
    it is filtered): the definition the fast path must reproduce."""
    pj = costs.primitives(precision)
    inside = ops.block.notna()
    keep = ops if acc.outside_blocks else ops[inside]
    matrix = keep.kind.isin(MATRIX_KINDS)
    parts = []
    cf = counterfactual_inputs(layers).set_index("layer") if acc.projections == "counterfactual" else None
    if acc.projections == "executed":
        parts.append(compute_rows(keep[matrix], pj, acc.zero_skipping))
    else:
        priced = matrix
        if cf is not None:
            fed = keep.layer.map(cf.rate).notna()
            parts.append(compute_rows(keep[matrix & ~fed], pj, acc.zero_skipping))
            priced = matrix & fed
        parts.append(_projection_rows_reference(keep[priced], layers, pj, acc, spiking, cf))
        if acc.projections != "paper":
            extra = keep[priced & ~keep.primitive.isin(["mac", "effective_mac", "ac"])]
            parts.append(compute_rows(extra, pj, acc.zero_skipping))
    rest = keep[~matrix]
    if acc.elementwise:
        parts.append(compute_rows(rest, pj, acc.zero_skipping))
    else:
        lay = layers[layers.kind == "wkv"]
        lay = lay if acc.outside_blocks else lay[lay.block.notna()]
        wkv = "wkv (paper: 6 MACs)"
        parts.append(_frame([(r.layer, r.block, wkv, "mac", PAPER_WKV_OPS * r.out_per_token * pj["mac"])
                             for _, r in lay.iterrows()]))  # fmt: skip
    if acc.memory:
        mem_layers = layers if acc.outside_blocks else layers[layers.block.notna()]
        if acc.projections == "counterfactual":
            mem_layers = counterfactual_layers(mem_layers, acc.rate, cf)
        parts.append(memory_rows(mem_layers, costs, precision, batch, acc.memory == "dram", acc.zero_skipping))
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else _frame([])


@pytest.fixture(scope="module")
def models():
    from energy.comparing.baselines import count_gpt2
    from spikegpt import SpikeGPT, preset

    torch.manual_seed(0)
    snn = SpikeGPT(preset("tiny")).eval()
    ids = torch.randint(0, 64, (1, 33), generator=torch.Generator().manual_seed(3))
    prof = energy.profile(snn, ids, census_tokens=2)
    cfg = snn.config
    ann = count_gpt2("transformer-same-dims", 16, n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=2,
                     vocab_size=cfg.vocab_size)  # fmt: skip
    return {"snn": (prof.ops, prof.layers, True), "ann": (ann.ops, ann.layers, False), "ann_baseline": ann}


# every switch of the non-memory part; the memory part (the same ``memory_rows`` on both sides) with each
# projection setting, inside the blocks or not; the named scenarios on two cost tables, two precisions, two batches
ACCOUNTINGS = [
    Accounting(p, r, e, o, None, z)
    for p, r, e, o, z in itertools.product(("paper", "executed", "counterfactual"), (None, 0.15), (True, False),
                                           (True, False), (True, False))  # fmt: skip
    if (p, r) != ("executed", 0.15)  # the rate does not enter the executed accounting
] + [Accounting(p, None, True, o, m) for p, o, m in itertools.product(("paper", "executed", "counterfactual"),
                                                                      (True, False), ("sram", "dram"))]  # fmt: skip


@pytest.mark.parametrize("model", ["snn", "ann"])
def test_one_pass_pricing_matches_the_per_part_accounting(models, model):
    """The same rows, in the same order and dtypes, and the same pJ (to 1e-12 relative; in practice bit for
    bit) as the per-part accounting."""
    ops, layers, spiking = models[model]
    tables = [load_costs(), load_costs(memory_model="lemaire-linear", sram_budget_bytes=4096)]
    cases = [(acc, tables[0], "fp32", 1) for acc in ACCOUNTINGS]
    cases += [(acc, costs, precision, batch) for acc, costs, precision, batch in
              itertools.product(SCENARIO_ACCOUNTING.values(), tables, ("fp32", "int8"), (1, 4))
              if batch == 1 or acc.memory]  # fmt: skip
    n = 0
    for acc, costs, precision, batch in cases:
        if acc.projections == "counterfactual" and not spiking:
            continue  # a model without spiking layers has no counterfactual
        got = account(ops, layers, costs, precision, acc, spiking=spiking, batch=batch)
        want = account_reference(ops, layers, costs, precision, acc, spiking=spiking, batch=batch)
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12, atol=0)
        n += 1
    assert n >= 40


def test_a_table_changed_in_place_is_planned_again(models):
    """The plan is kept by the tables' identity: a count changed in place afterwards must not be priced from
    the stale plan."""
    ops, layers, spiking = models["snn"]
    ops, layers = ops.copy(), layers.copy()
    costs, acc = load_costs(), Accounting(memory="sram")
    before = float(account(ops, layers, costs, "fp32", acc, spiking=spiking).pj.sum())
    ops["per_token"] *= 2
    layers["out_per_token"] *= 3
    after = account(ops, layers, costs, "fp32", acc, spiking=spiking)
    pd.testing.assert_frame_equal(after, account_reference(ops, layers, costs, "fp32", acc, spiking=spiking))
    assert float(after.pj.sum()) > before


def test_prefill_curve_matches_at_context_priced_one_by_one(models):
    """``context_curve`` prices every context in one pass; each point must equal the comparator rebuilt at that
    context (``at_context``) and priced from scratch, with and without memory traffic."""
    b = models["ann_baseline"]
    costs = load_costs(sram_budget_bytes=2048)  # small: the K/V cache leaves the SRAM at long contexts
    snn = {"as_executed": 1000.0, "as_executed_memory": 2000.0}
    curve = context_curve(b, snn, costs, "fp32", contexts=[1, 2, 5, 16, 17, 40, 200], batch=2)
    for i, c in enumerate(curve["contexts"]):
        at = at_context(b, c)
        for scen, acc in (("as_executed", Accounting()), ("as_executed_memory", Accounting(memory="sram"))):
            want = float(account_reference(at.ops, at.layers, costs, "fp32", acc, spiking=False, batch=2).pj.sum())
            assert curve["energy_pj"][scen][i] == pytest.approx(want, rel=1e-12, abs=0), (c, scen)
            assert curve["ratio"][scen][i] == pytest.approx(want / snn[scen], rel=1e-12, abs=0)


def test_a_text_column_changed_in_place_is_planned_again(models):
    """The plan also depends on text columns (which projection reads spikes, its operand class): the
    counterfactual with every projection's input source changed in place is priced anew, not from the plan of
    the table as it was (the review reproduced 72,473 pJ stale against 140,802 pJ fresh)."""
    ops, layers, spiking = models["snn"]
    ops, layers = ops.copy(), layers.copy()
    costs, acc = load_costs(), Accounting("counterfactual")
    account(ops, layers, costs, "fp32", acc, spiking=spiking)
    fed = layers.input_from.notna() & (layers.input_from != "")
    assert fed.any()
    layers.loc[fed, "input_from"] = None  # no projection reads spikes any more
    after = account(ops, layers, costs, "fp32", acc, spiking=spiking)
    pd.testing.assert_frame_equal(after, account_reference(ops, layers, costs, "fp32", acc, spiking=spiking))
    for col, value in (("operand", "float"), ("primitive", "mac")):  # an ops text column likewise
        ops2 = ops.copy()
        account(ops2, layers, costs, "fp32", Accounting(), spiking=spiking)
        ops2[col] = value
        pd.testing.assert_frame_equal(
            account(ops2, layers, costs, "fp32", Accounting(), spiking=spiking),
            account_reference(ops2, layers, costs, "fp32", Accounting(), spiking=spiking),
        )


def test_the_fingerprint_sees_every_change_in_place_and_nothing_else():
    """Issue 24: the plan cache's fingerprint, taken column by column: equal for an equal copy, different after
    any cell of any dtype changes in place (float, int, bool, text, a NaN, a list cell) or a column's dtype."""
    import pandas as pd

    from energy.pricing.estimate import _fingerprint

    def table():
        return pd.DataFrame({"f": [1.0, float("nan"), 3.0], "i": [1, 2, 3], "b": [True, False, True],
                             "s": pd.Series(["a", "b", None], dtype="string"), "o": [["x"], ["y"], []],
                             "m": pd.Series(["a", -1, "c"], dtype=object)})  # fmt: skip

    base = _fingerprint(table())
    assert _fingerprint(table()) == base
    # -1 -> -2 in an object column (review: hash(-1) == hash(-2)), and 1 -> "1"
    for col, value in (("f", 2.0), ("i", 5), ("b", True), ("s", "c"), ("o", ["z"]), ("m", -2), ("m", "-1")):
        df = table()
        df.at[1, col] = value
        assert _fingerprint(df) != base, col
    df = table()
    df["i"] = df["i"].astype("float64")  # the same numbers, another dtype
    assert _fingerprint(df) != base


def test_the_memory_rows_are_the_values_itertuples_gives():
    """Issue 24: ``memory_terms`` reads a table's rows through ``energy.pricing.memory._rows``: the same Python
    values (and types) as ``itertuples``, NaN and text cells included."""
    import pandas as pd

    from energy.pricing.memory import _rows

    df = pd.DataFrame({"layer": pd.Series(["a", "b", None], dtype="string"), "block": [0.0, float("nan"), 2.0],
                       "n": [1, 2, 3], "flag": [True, False, True], "x": [0.1, 0.2, 1e300]})  # fmt: skip
    cols = ["x", "layer", "n", "block", "flag"]
    got = [tuple(r) for r in _rows(df, cols)]
    want = [tuple(r)[1:] for r in df[cols].itertuples()]
    assert [tuple(map(type, r)) for r in got] == [tuple(map(type, r)) for r in want]
    assert repr(got) == repr(want)  # NaN == NaN in text
    assert [r.n for r in _rows(df, cols)] == [1, 2, 3]  # by name, as itertuples' rows


def _layers_at_reference(baseline, t):
    """decode's ``_layers_at`` before issue 24f: ``.loc`` updates on a copy of the table."""
    T = baseline.context
    f = 2 * t / (T + 1)
    lay = baseline.layers.copy()
    att = lay.kind == "matmul"
    for col in ("mac", "synaptic_ops_per_token"):
        lay.loc[att, col] *= f
    lay.loc[att, "weight_elems"] *= t / T
    for col, scores in (("in_per_token", "scores_in_per_token"), ("out_per_token", "scores_out_per_token")):
        if scores in lay:
            lay.loc[att, col] = lay.loc[att, col] - lay.loc[att, scores] * (1 - f)
    return lay


def _layers_at_context_reference(baseline, f, held):
    """decode's ``_layers_at_context`` before issue 24f."""
    T = baseline.context
    lay = baseline.layers.copy()
    att = lay.kind == "matmul"
    for col in ("mac", "synaptic_ops_per_token"):
        lay.loc[att, col] *= f
    lay.loc[att, "weight_elems"] *= held / T
    for col, scores in (("in_per_token", "scores_in_per_token"), ("out_per_token", "scores_out_per_token")):
        if scores in lay:
            lay.loc[att, col] = lay.loc[att, col] + lay.loc[att, scores] * (f - 1)
            lay.loc[att, scores] *= f
    return lay


def test_the_position_and_context_tables_are_the_loc_updates_bit_for_bit(models):
    """Decode's table at position t and prefill's at another context, built column by column on numpy arrays,
    equal the ``.loc`` updates they replace exactly (values, dtypes, column order), and leave the baseline's
    table unchanged; the decode curve's memory terms are then the same numbers."""
    from energy.comparing.decode import _layers_at, _layers_at_context, energy_by_position
    from energy.pricing.estimate import memory_rows

    b = models["ann_baseline"]
    before = b.layers.copy()
    assert (b.layers.kind == "matmul").any() and "scores_in_per_token" in b.layers
    for t in (1, 2, 7, b.context - 1, b.context):
        pd.testing.assert_frame_equal(_layers_at(b, t), _layers_at_reference(b, t), check_exact=True)
    for c in (1, 3, 16, 40, 200):
        k = (c + 1) / 2
        f, held = 2 * k / (b.context + 1), 2 * k - 1
        got, want = _layers_at_context(b, f, held), _layers_at_context_reference(b, f, held)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    pd.testing.assert_frame_equal(b.layers, before, check_exact=True)
    costs = load_costs(sram_budget_bytes=2048)  # small: the K/V cache leaves the SRAM at long positions
    cost = energy_by_position(b, costs, "fp32")
    for t in (1, 5, b.context):
        mem = memory_rows(_layers_at_reference(b, t), costs, "fp32", 1, dram=False)
        assert cost(t, True) - cost(t, False) == pytest.approx(float(mem.pj.sum()), rel=1e-12, abs=0)


@pytest.mark.parametrize("model", ["snn", "ann"])
def test_a_plan_with_memory_shares_the_rows_of_the_plan_without(models, model):
    """An accounting with memory traffic takes its priced rows from the same accounting without (issue 24f):
    the plan equals one built from scratch, rows, quantities, primitives and memory layers, whichever of the
    two is asked for first, and the priced rows are the same exactly."""
    from energy.pricing import estimate

    ops, layers, spiking = models[model]
    n = 0
    for proj, outside, memory, first in itertools.product(("paper", "executed", "counterfactual"), (True, False),
                                                          ("sram", "dram"), ("with", "without")):  # fmt: skip
        if proj == "counterfactual" and not spiking:
            continue
        o, lay = ops.copy(), layers.copy()  # new tables: nothing kept from another case
        acc = Accounting(proj, None, True, outside, memory)
        if first == "without":
            estimate._plan(o, lay, replace(acc, memory=None), spiking)
        got = estimate._plan(o, lay, acc, spiking)
        want = estimate._build_plan(o, lay, acc, spiking)
        pd.testing.assert_frame_equal(got.rows, want.rows, check_exact=True)
        assert got.quantity.tobytes() == want.quantity.tobytes() and got.primitive == want.primitive
        pd.testing.assert_frame_equal(got.memory_layers, want.memory_layers, check_exact=True)
        costs = load_costs(sram_budget_bytes=2048)
        pd.testing.assert_frame_equal(account(o, lay, costs, "fp32", acc, spiking=spiking),
                                      account_reference(o, lay, costs, "fp32", acc, spiking=spiking),
                                      check_exact=True)  # fmt: skip
        n += 1
    assert n >= 8
