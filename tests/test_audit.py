"""Baselines (fvcore + the registry) and the audit of the 32.2x claim."""

import pytest
import torch

import energy
from energy import baselines as bl
from energy.audit import WATERFALL, audit, paper_mode
from energy.costs import load_costs


@pytest.fixture(scope="module")
def tiny_setup():
    from spikegpt import SpikeGPT, preset

    torch.manual_seed(0)
    model = SpikeGPT(preset("tiny")).eval()
    ids = torch.randint(0, 64, (1, 97), generator=torch.Generator().manual_seed(1))
    prof = energy.profile(model, ids, census_tokens=4)
    twin, _ = bl.twin_baseline(model, ids, census_tokens=4)
    same = bl.count_gpt2("transformer-same-dims", 32, n_layer=2, n_embd=32, n_head=1, vocab_size=64)
    return model, ids, prof, {"rwkv-twin": twin, "gpt2-small": same}


def test_paper_mode_by_hand():
    T, d, R, L = 1024, 512, 0.15, 12
    p = paper_mode(L, d, T, R)
    gpt = (3 * T * d * d + 2 * T * T * d + T * d * d + 8 * T * d * d) * 4.6 * L
    snn = ((3 + 1 + 9) * T * d * d * R * 0.9 + 6 * T * d * 4.6) * L
    assert p["gpt_pj"] == pytest.approx(gpt) and p["spikegpt_pj"] == pytest.approx(snn)
    assert p["ratio"] == pytest.approx(40.688, abs=1e-3)
    # the projection-only variant reproduces the 33.2x printed for the 46M model
    assert p["projection_only_ratio"] == pytest.approx(4.6 * 3 * d / (0.135 * 3 * d + 6 * 0.9))
    assert round(p["projection_only_ratio"], 1) == 33.2
    assert paper_mode(18, 768, 1024)["ratio"] == pytest.approx(
        (12 * 768 + 2 * 1024) * 4.6 / (13 * 768 * 0.135 + 6 * 4.6), rel=1e-12
    )


def test_gpt2_small_fvcore_matches_closed_form():
    T = 32
    b = bl.count_gpt2("gpt2-small", T)
    L, d, V, H = 12, 768, 50257, 12
    # matmul weights (head tied) + Q K^T and P V over the causal triangle: (T + 1) / 2 keys per query
    closed_mac = L * 12 * d * d + V * d + (T + 1) * d * L
    ops = b.ops_per_token()
    assert ops["mac"] == closed_mac
    assert b.uncounted == {}
    # elementwise ops are there and priced like SpikeGPT's: softmax exps over the causal triangle per head
    assert ops["exp"] == pytest.approx(L * H * (T + 1) / 2, rel=1e-12)
    assert ops["div"] == pytest.approx(L * H * (T + 1) / 2, rel=1e-12)
    assert ops["rsqrt"] == pytest.approx(2 * L + 1)  # one per LayerNorm row
    # the full square, as eager PyTorch executes it, is kept apart
    eager = b.ops_per_token(eager=True)
    assert eager["mac"] == L * 12 * d * d + V * d + 2 * T * d * L and eager["exp"] == L * H * T
    # causal masking leaves exact zeros in P: eager's effective MACs of P V are the triangle's
    assert ops["effective_mac"] <= ops["mac"] and eager["effective_mac"] < eager["mac"]


@pytest.mark.slow
def test_gpt2_small_at_context_1024_closed_form():
    """Issue 10, item 3: 12 L d^2 + V d + (T + 1) d L dense MACs and L H (T + 1) / 2 divisions per token."""
    T, L, d, V, H = 1024, 12, 768, 50257, 12
    ops = bl.count_gpt2("gpt2-small", T).ops_per_token()
    assert ops["mac"] == 12 * L * d * d + V * d + (T + 1) * d * L == 132_978_432
    assert ops["div"] == L * H * (T + 1) / 2 == 73_800


def test_twin_has_spikegpt_dense_macs(tiny_setup):
    _, _, prof, bases = tiny_setup
    twin = bases["rwkv-twin"]
    assert twin.ops_per_token()["mac"] == prof.ops_per_token()["mac"]
    assert "lif" not in set(twin.ops.kind)
    assert set(twin.ops[twin.ops.kind == "spike_add"].operand) == {"float"}


def test_waterfall_ends_match_scenarios(tiny_setup):
    _, _, prof, bases = tiny_setup
    a = audit(prof, bases)
    steps = a["waterfall"]
    assert [s["step"] for s in steps] == [w[0] for w in WATERFALL]
    e = prof.energy_per_token()
    assert steps[0]["spikegpt_pj_per_token"] == pytest.approx(e["paper"])
    assert steps[-1]["spikegpt_pj_per_token"] == pytest.approx(e["as_executed_memory"])
    costs = load_costs()
    for name, b in bases.items():
        assert steps[-1]["baseline_pj_per_token"][name] == pytest.approx(
            float(b.energy("as_executed_memory", costs).pj.sum())
        )
        assert steps[0]["ratio"][name] == pytest.approx(steps[0]["baseline_pj_per_token"][name] / e["paper"])


def test_paper_step_of_the_twin_is_all_macs(tiny_setup):
    _, _, prof, bases = tiny_setup
    twin = bases["rwkv-twin"]
    a = audit(prof, bases)
    C, H, L = 32, 128, 2
    block_macs = 4 * C * C + 2 * C * H + C * C
    assert a["waterfall"][0]["baseline_pj_per_token"]["rwkv-twin"] == pytest.approx(L * (block_macs + 6 * C) * 4.6)
    assert twin.params == prof.meta["params"]


def test_break_even_is_consistent(tiny_setup):
    _, _, prof, bases = tiny_setup
    a = audit(prof, bases)
    for prec, res in a["break_even"].items():
        c = res["compute"]
        r = c["rate_twin_parity"]
        twin_pj = float(bases["rwkv-twin"].energy("as_executed", load_costs(), prec).pj.sum())
        assert c["energy_at_rate_0_pj"] + r * c["energy_per_unit_rate_pj"] == pytest.approx(twin_pj)
    rates = [row["rate"] for row in a["sensitivity"]["by_rate"]]
    ratios = [row["ratio_vs_rwkv-twin"] for row in a["sensitivity"]["by_rate"]]
    assert rates[0] == 0 and rates[-1] == 1
    assert all(x > y for x, y in zip(ratios, ratios[1:]))  # more spikes, more energy


def test_counterfactual_at_measured_rates_equals_scenario(tiny_setup):
    _, _, prof, _ = tiny_setup
    cf = prof.energy("spike_input_counterfactual")
    assert set(cf[cf.stage == "projection on spikes (counterfactual)"].primitive) == {"ac"}
    lin = prof.layers[(prof.layers.kind == "linear")].set_index("layer")
    # head, ReLU^2 readers (ffn.value) and r * WKV readers (att.output) excluded; token-shifted: 2 spike vectors
    fed = lin.index[lin.block.notna() & ~lin.index.str.endswith(("ffn.value", "att.output"))]
    expected = 2 * (lin.mac * lin.spike_source_rate)[fed].sum() * 0.9
    assert cf[cf.stage == "projection on spikes (counterfactual)"].pj.sum() == pytest.approx(expected)
    assert set(cf[cf.layer.isin(["head", "blocks.0.ffn.value", "blocks.1.att.output"])].primitive) == {"effective_mac"}


def test_count_any_module():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 8)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, idx):
            return torch.relu(self.fc(self.emb(idx))).exp()

    b = bl.count_module(Tiny(), torch.randint(0, 10, (1, 5)), "tiny")
    ops = b.ops_per_token()
    assert ops["mac"] == 8 * 4 and ops["add"] == 4 and ops["max"] == 4 and ops["exp"] == 4
    assert b.uncounted == {}
