"""Both sides alike (issue 20): for every switch a comparison depends on, flipping it moves SpikeGPT and every
baseline under the same rule; an asymmetry kept on purpose is named in the report's assumptions."""

import types

import pytest

from energy.comparing import baselines as bl
from energy.pricing.costs import PRECISIONS, load_costs
from energy.pricing.estimate import MATRIX_KINDS, SPIKE_CLASSES, scenario_energy

L, D = 2, 32


@pytest.fixture(scope="module")
def sides(tiny_profile):
    model, ids, prof = tiny_profile(33, seed=1, census_tokens=2)
    twin, _ = bl.twin_baseline(model, ids, census_tokens=2)
    ann = bl.count_gpt2("transformer-same-dims", 32, n_layer=L, n_embd=D, n_head=1, vocab_size=64)
    return {"spikegpt": (prof, True), "rwkv-twin": (twin, False), "transformer": (ann, False)}


def _rows(model, spiking, scen="as_executed", costs=None, precision="fp32", zero_skipping=True):
    return scenario_energy(scen, model.ops, model.layers, costs or load_costs(), precision, spiking=spiking,
                           zero_skipping=zero_skipping)  # fmt: skip


def _price_per_op(model, spiking, primitive, precision):
    """pJ per op of every row of a primitive, as priced as executed."""
    e = _rows(model, spiking, precision=precision)
    e = e[e.primitive == primitive].groupby(["layer", "stage"]).pj.sum()
    n = model.ops[model.ops.primitive == primitive].groupby(["layer", "stage"]).per_token.sum()
    return set((e / n.reindex(e.index)).round(12).dropna())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_precision_and_accumulator_width_are_the_same_on_both_sides(sides, precision):
    """Precision and accumulator width: every side's MAC costs the preset's operand multiply + accumulator add,
    every AC the accumulator add, from one table."""
    pj = load_costs().primitives(precision)
    for name, (model, spiking) in sides.items():
        assert _price_per_op(model, spiking, "effective_mac", precision) <= {round(pj["mac"], 12)}, name
        assert _price_per_op(model, spiking, "ac", precision) <= {round(pj["ac"], 12)}, name
    assert pj["mac"] - pj["ac"] == pytest.approx(load_costs().pj("mul", {"fp32": "fp32", "fp16": "fp16",
                                                                          "int8": "int8"}[precision]))  # fmt: skip


def test_zero_skipping_moves_every_side_alike(sides):
    """Zero skipping off: every float-operand matrix product of every side is priced dense, on; effective."""
    costs = load_costs()
    mac = costs.primitives("fp32")["mac"]
    for name, (model, spiking) in sides.items():
        ops = model.ops[model.ops.kind.isin(MATRIX_KINDS) & ~model.ops.operand.isin(SPIKE_CLASSES)]
        skipped = ops[ops.primitive == "mac"].per_token.sum() - ops[ops.primitive == "effective_mac"].per_token.sum()
        on = _rows(model, spiking, zero_skipping=True).pj.sum()
        off = _rows(model, spiking, zero_skipping=False).pj.sum()
        assert off - on == pytest.approx(skipped * mac, rel=1e-9, abs=1e-6), name


def test_sram_budget_moves_every_sides_weights_alike(sides):
    """An SRAM budget of 0 sends every weight of every side (and the transformer's K/V cache) to DRAM; the
    recurrent state stays in its own SRAM, an asymmetry named in the assumptions."""
    from energy.app.pipeline import _assumptions
    from energy.comparing.headline import ASYMMETRIES

    none = load_costs(sram_budget_bytes=0)
    for name, (model, spiking) in sides.items():
        e = _rows(model, spiking, "as_executed_memory", costs=none)
        weights = e[e.stage.str.startswith(("memory.weights", "memory.kv-cache"))]
        assert len(weights) and (weights.primitive == "dram").all(), name
    assert any(what == "state" for what, _ in ASYMMETRIES)
    rows = _assumptions(types.SimpleNamespace(costs=load_costs()), {})
    assert any(r["op"] == "asymmetry: state" for r in rows)


def test_state_is_priced_on_both_sides_in_the_memory_scenario_only(sides):
    """Where state lives: SpikeGPT's membranes and WKV sums and the transformer's K/V cache are both priced
    with memory traffic, and neither without it."""
    stages = {"spikegpt": ("memory.membrane", "memory.state"), "transformer": ("memory.kv-cache",)}
    for name, kinds in stages.items():
        model, spiking = sides[name]
        mem = _rows(model, spiking, "as_executed_memory")
        assert mem[mem.stage.str.startswith(kinds)].pj.sum() > 0, name
        ex = _rows(model, spiking, "as_executed")
        assert not ex.stage.str.startswith("memory.").any(), name


def test_context_every_baseline_reads_the_same_characters():
    """Context: the same-vocabulary baselines run SpikeGPT's tokens per sequence; a baseline with another
    tokenizer runs the same characters (its context x its characters per token = SpikeGPT's)."""
    from energy.app.pipeline import Job, baseline_contexts

    text = "Hello world, this is the same text for every model. " * 40
    job = Job(baselines=("transformer-same-dims", "gpt2-small", "transformer-paper-table2"))
    snn_cpt, T = 1.0, 512
    ctx = baseline_contexts(job, T, text, snn_cpt)
    assert ctx["transformer-same-dims"][0] == T
    for name in ("gpt2-small", "transformer-paper-table2"):
        cpt = bl.chars_per_token(name, text, snn_cpt)[0]
        assert ctx[name][0] * cpt == pytest.approx(T * snn_cpt, rel=0.01), name


def test_context_changes_only_the_attention(sides):
    """Context: moving the transformer to another context changes only its attention (and K/V cache), as
    SpikeGPT's per-token cost does not depend on it (the named asymmetry)."""
    from energy.comparing.decode import at_context

    ann = sides["transformer"][0]
    longer = at_context(ann, 128)
    a = _rows(ann, False).assign(att=lambda d: d.stage.str.startswith("attention."))
    b = _rows(longer, False).assign(att=lambda d: d.stage.str.startswith("attention."))
    assert a[~a.att].pj.sum() == pytest.approx(b[~b.att].pj.sum(), rel=1e-12)
    assert b[b.att].pj.sum() == pytest.approx(a[a.att].pj.sum() * 129 / 33, rel=1e-12)


def test_tokenizer_per_character_divides_each_side_by_its_own(sides):
    """Tokenizer: per character, each side's energy per token is divided by its own characters per token."""
    import pandas as pd

    from energy.comparing.headline import headline

    base = {"gpt2-small": {"energy_pj_per_token": {"as_executed": 300.0, "as_executed_memory": 600.0},
                           "chars_per_token": 3.0, "context": 10}}  # fmt: skip
    h = headline(claim=32.2, snn_ops=1.0, snn_energy={"as_executed": 10.0, "as_executed_memory": 20.0},
                 snn_chars_per_token=1.25, baselines=base, comparator=None, twin=None, scale=("gpt2-small",),
                 layers=pd.DataFrame({"layer": [], "kind": [], "operand_class": []}),
                 model={"n_layer": 1, "n_embd": 8, "vocab_size": 9}, tokens_per_sequence=24,
                 context_set_by_user=False, zero_skipping=True)  # fmt: skip
    assert h["scale"]["gpt2-small"]["ratio_per_char"]["as_executed"] == pytest.approx((300 / 3) / (10 / 1.25))
