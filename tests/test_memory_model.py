"""Issue 22, memory model (items 1-4): each test computes the expected figure itself, and failed on the code
before the fix (accumulator width, duplicated weights, one placement rule for state, Lemaire's linear fit)."""

import math

import pytest

import energy
from energy.pricing.costs import load_costs
from energy.pricing.estimate import counterfactual_layers
from energy.pricing.memory import memory_terms

FED = "blocks.1.att.key"  # a projection the counterfactual feeds with spikes (two spike vectors)


@pytest.fixture(scope="module")
def prof(tiny_profile):
    return tiny_profile(33, seed=3, census_tokens=1)[2]


def _stage(terms, layer, stage, col="amount"):
    t = terms[(terms.layer == layer) & (terms.stage == stage)]
    assert len(t) == 1, (layer, stage, sorted(terms[terms.layer == layer].stage))
    return float(t[col].iloc[0])


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_potentials_and_membranes_are_stored_at_the_accumulator_width(prof, precision):
    """Item 1: ACs accumulate at 32 bits (int32 / fp32), so a potential is 4 bytes whatever the operand width:
    potential bytes = 2 (read + write) x (synaptic ops + width) x 4; a LIF membrane 2 x width x 4."""
    costs = load_costs()
    cf = counterfactual_layers(prof.layers)
    r = cf.set_index("layer").loc[FED]
    terms = memory_terms(cf, costs, precision)
    assert _stage(terms, FED, "memory.potentials") == pytest.approx(
        2 * (r.synaptic_ops_per_token + r.out_per_token) * 4
    )
    # priced at the SRAM of width x 4 bytes (the potentials' own bank)
    want = 2 * (r.synaptic_ops_per_token + r.out_per_token) * 4 * costs.sram_pj_per_byte(r.out_per_token * 4)
    assert _stage(terms, FED, "memory.potentials", "pj") == pytest.approx(want)
    lif = prof.layers.set_index("layer").loc["blocks.1.lif1"]
    assert _stage(memory_terms(prof.layers, costs, precision), "blocks.1.lif1", "memory.membrane") == pytest.approx(
        2 * lif.out_per_token * 4
    )


def test_the_counterfactual_stores_both_weight_matrices(prof):
    """Item 2: two spike vectors (s_t, s_t-1) need W diag(m) and W diag(1 - m): a fed layer stores twice the
    weights, and its weight reads are priced at the SRAM of the doubled size."""
    costs = load_costs()
    lay = prof.layers.set_index("layer")
    cf = counterfactual_layers(prof.layers).set_index("layer")
    assert cf.weight_elems[FED] == 2 * lay.weight_elems[FED]
    assert cf.weight_elems["head"] == lay.weight_elems["head"]  # not fed: unchanged
    terms = memory_terms(cf.reset_index(), costs, "fp32")
    syn = cf.synaptic_ops_per_token[FED]
    want = syn * 4 * costs.sram_pj_per_byte(2 * lay.weight_elems[FED] * 4)
    assert _stage(terms, FED, "memory.weights (SRAM)", "pj") == pytest.approx(want)


def test_state_is_placed_by_one_rule_for_spikegpt_and_the_transformer(prof):
    """Item 3: weights in DRAM, state where the budget puts it, for both models. With the budget at 0 every
    state (K/V cache; membranes, WKV sums, token-shift inputs) is in DRAM; with the default budget and the
    weights in DRAM, every state of these tiny models is in SRAM, for both alike."""
    from energy.comparing.baselines import count_gpt2

    costs = load_costs()
    gpt = count_gpt2("transformer-same-dims", 16, n_layer=1, n_embd=32, n_head=1, vocab_size=64)
    for layers, state in ((prof.layers, ("memory.membrane", "memory.state")), (gpt.layers, ("memory.kv-cache",))):
        none = memory_terms(layers, costs, "fp32", budget_bytes=0)
        stages = set(none.stage)
        for s in state:
            assert any(x.startswith(s) and "DRAM" in x for x in stages), (s, stages)
            assert not any(x.startswith(s) and "DRAM" not in x for x in stages), (s, stages)
        dram_weights = memory_terms(layers, costs, "fp32", weights_dram=True)
        stages = set(dram_weights.stage)
        assert any(x.startswith("memory.weights (DRAM)") for x in stages)
        assert not any(x.startswith("memory.weights (SRAM)") for x in stages)
        for s in state:
            assert any(x.startswith(s) and "DRAM" not in x for x in stages), (s, stages)
            assert not any(x.startswith(s) and "DRAM" in x for x in stages), (s, stages)
    # the scenario uses that rule: the transformer's K/V cache stays in SRAM in "DRAM weights"
    e = gpt.energy("as_executed_memory_dram", costs, "fp32")
    assert not e.stage.str.startswith("memory.kv-cache (DRAM)").any()


def test_lemaire_linear_memory_model_as_published(prof):
    """Item 4: the authors' implementation prices one access per value at e = 1.09e-5 x size_bits + 13.2 pJ
    (qualia-plugin-snn EnergyEstimationMetric._e_ram); selectable beside today's per-byte model."""
    lin = load_costs(memory_model="lemaire-linear")
    log = load_costs()
    assert log.memory_model == "horowitz-log"
    assert lin.sram_access_pj(8192, 1) == pytest.approx(1.09e-5 * 8192 * 8 + 13.2)
    assert lin.sram_access_pj(8192, 4) == lin.sram_access_pj(8192, 1)  # per access, whatever the width
    assert log.sram_access_pj(8192, 4) == pytest.approx(4 * 10 / 8)  # Horowitz 8 KB: 10 pJ per 64 bits
    lay = prof.layers.set_index("layer")
    r = lay.loc["head"]
    for prec, b in (("fp32", 4), ("int8", 1)):
        t = memory_terms(prof.layers, lin, prec)
        want = r.synaptic_ops_per_token * (1.09e-5 * r.weight_elems * b * 8 + 13.2)
        assert _stage(t, "head", "memory.weights (SRAM)", "pj") == pytest.approx(want)
    with pytest.raises(energy.pricing.costs.SpikeEnergyError, match="memory model"):
        load_costs(memory_model="cacti")
    assert not any("interpolate between the same points" in (f.__doc__ or "") for f in (log.sram_pj_per_byte,))
    # the node scaling keeps the model (and the SRAM budget) of the table it scales
    from energy.pricing.nodes import scale_costs

    s7 = scale_costs(load_costs(sram_budget_bytes=1e6, memory_model="lemaire-linear"), 7)
    assert s7.memory_model == "lemaire-linear" and s7.sram_budget_bytes == 1e6
    assert math.isclose(s7.sram_access_pj(8192, 1), lin.sram_access_pj(8192, 1) * 7.5 / 10)  # Jouppi 8 KB factor
