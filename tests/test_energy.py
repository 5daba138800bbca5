"""Op counting, operand classes, coverage and energy, against hand-worked numbers and torch's counters."""

import math

import pandas as pd
import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import energy
from energy.measuring.census import census
from energy.measuring.hooks import Meter, classify
from energy.measuring.rules import KINDS, register_cost
from energy.pricing.costs import load_costs
from spikegpt import LIF, WKV
from spikegpt import model as sg


def counts_of(meter, layer):
    """primitive -> count for one layer, summed over stages and operand classes."""
    out = {}
    for (name, _kind, _stage, prim, _op), n in meter.counts.items():
        if name == layer:
            out[prim] = out.get(prim, 0) + n
    return out


# --------------------------------------------------------------------------------------
# Operand classes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values,cls,nnz",
    [
        ([0.0, 1.0, 1.0, 0.0], "binary", 2),
        ([0.0, 0.0], "binary", 0),
        ([-1.0, 0.0, 1.0], "ternary", 2),
        ([0.0, 2.0, -3.0, 1.0], "integer", 3),
        ([0.0, 0.5, 1.0], "float", 2),
    ],
)
def test_classify_small(values, cls, nnz):
    op = classify(torch.tensor(values))
    assert (op.cls, op.nnz, op.numel) == (cls, nnz, len(values))


def test_classify_non_float_dtypes_and_late_floats():
    assert classify(torch.tensor([True, False])).cls == "binary"
    assert classify(torch.tensor([0, 3, -2])).cls == "integer"
    x = torch.zeros(10_000)
    x[9_000] = 0.25  # a float far past the quick look at the first values
    assert classify(x).cls == "float"
    x[9_000] = 1.0
    assert classify(x).cls == "binary"


# --------------------------------------------------------------------------------------
# Hand-worked counts
# --------------------------------------------------------------------------------------


def test_linear_fed_spikes_is_ac():
    lin = nn.Linear(6, 4, bias=False)
    x = torch.tensor([[1.0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 0]])  # 4 spikes
    with Meter(lin) as m:
        lin(x)
    c = counts_of(m, "")
    assert c == {"mac": 2 * 6 * 4, "ac": 4 * 4}  # dense 48 MACs; 4 spikes x 4 weights each = 16 ACs


def test_linear_fed_floats_with_zeros():
    lin = nn.Linear(3, 5, bias=True)
    x = torch.tensor([[0.5, 0.0, -2.0], [0.0, 0.0, 0.3]])  # 3 nonzero floats
    with Meter(lin) as m:
        lin(x)
    assert counts_of(m, "") == {"mac": 2 * 3 * 5, "effective_mac": 3 * 5, "add": 2 * 5}  # + bias adds
    assert m.operand_class("", 0) == "float"


def test_lif_counts_and_spikes():
    lif = LIF()
    x = torch.tensor([2.0, 1.0, 1.0, 3.0, 0.5, -1.0]).view(1, 6, 1).repeat(2, 1, 3)  # B=2, T=6, C=3
    with Meter(lif) as m:
        lif(x)
    n = 2 * 6 * 3  # neuron steps
    # charge: 2 add + 1 mul; fire: 1 compare; reset: 1 select
    assert counts_of(m, "") == {"add": 2 * n, "mul": n, "max": 2 * n}
    st = m.spikes[""]
    assert st.per_neuron.tolist() == [4.0, 4.0, 4.0]  # 2 spikes per sequence (t=0, t=3) x B=2
    assert st.per_position.tolist() == [6.0, 0, 0, 6.0, 0, 0]


def test_wkv_step_counts():
    wkv = WKV()
    B, T, C = 2, 5, 3
    k, v = torch.randn(B, T, C), torch.randn(B, T, C)
    decay, first = torch.randn(C), torch.randn(C)
    with Meter(wkv) as m:
        wkv(decay, first, k, v)
    n = B * T * C
    assert counts_of(m, "") == {"max": 2 * n, "exp": 4 * n, "div": n, "mul": 6 * n, "add": 10 * n}
    assert dict(m.setup) == {("", "wkv", "wkv.decay", "exp"): C}


def test_layernorm_counts():
    ln = nn.LayerNorm(4)
    with Meter(ln) as m:
        ln(torch.randn(3, 4))
    rows, C = 3, 4
    # mean: C add + 1 mul; variance: C sub + C add + C mul + 1 mul; rsqrt: 1 add + 1 rsqrt;
    # normalize: C mul (x - mean reused); scale: C mul; shift: C add  (per row)
    assert counts_of(m, "") == {"add": rows * (4 * C + 1), "mul": rows * (3 * C + 2), "rsqrt": rows}


def test_residual_with_spikes_costs_one_add_per_spike():
    res = sg.Residual()
    x, s = torch.randn(2, 3, 4), torch.zeros(2, 3, 4)
    s[0, 0, :2] = 1
    s[1, 2, 3] = 1
    with Meter(res) as m:
        res(x, s)
    assert counts_of(m, "") == {"add": 3}


def test_duplicate_cost_rule_raises():
    with pytest.raises(ValueError, match="registered twice"):
        register_cost("linear")(lambda: None)
    assert "linear" in KINDS


# --------------------------------------------------------------------------------------
# The whole model
# --------------------------------------------------------------------------------------


def test_matmul_macs_equal_flop_counter(tiny32):
    ids = torch.randint(0, 64, (2, 33))
    prof = energy.profile(tiny32, ids)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        tiny32.run(ids[:, :-1])
    total_mac = prof.ops[prof.ops.primitive == "mac"]["count"].sum()
    assert total_mac == fc.get_total_flops() / 2


def test_per_layer_sums_equal_totals(tiny32):
    prof = energy.profile(tiny32, torch.randint(0, 64, (65,)))
    totals = prof.ops_per_token()
    for col in ("mac", "effective_mac", "ac"):
        assert prof.layers[col].sum() == pytest.approx(totals[col])
    by_layer = prof.by_layer().sum()
    for prim, v in by_layer.items():
        assert v == pytest.approx(totals[prim])
    e = prof.energy("as_executed")
    assert e.groupby("layer").pj.sum().sum() == pytest.approx(prof.energy_per_token()["as_executed"])


def test_parallel_and_streaming_give_same_counts(tiny64):
    ids = torch.randint(0, 64, (2, 21))
    par = energy.profile(tiny64, ids, mode="parallel", census_tokens=4)
    st = energy.profile(tiny64, ids, mode="streaming", census_tokens=4)
    a, b = par.ops_per_token(), st.ops_per_token()
    assert a == pytest.approx(b, rel=1e-12)
    assert par.firing_rates == pytest.approx(st.firing_rates, rel=1e-12)
    assert par.meta["nats"] == pytest.approx(st.meta["nats"], rel=1e-9)


def test_deterministic(tiny32):
    ids = torch.randint(0, 64, (50,))
    a, b = energy.profile(tiny32, ids), energy.profile(tiny32, ids)
    pd.testing.assert_frame_equal(a.ops, b.ops)
    assert a.firing_rates == b.firing_rates
    assert a.rasters == b.rasters


def test_released_placement_linear_inputs_are_floats(tiny32):
    """Every projection reads a LayerNorm output: the tool must find floats there, not spikes."""
    prof = energy.profile(tiny32, torch.randint(0, 64, (40,)))
    lin = prof.layers[prof.layers.kind == "linear"]
    assert set(lin.operand_class) == {"float"}
    assert prof.ops_per_token()["ac"] == 0
    res = prof.layers[prof.layers.kind == "spike_add"]
    assert set(res.operand_class) == {"binary"}  # the spikes only reach the residual adds


def test_spike_statistics(tiny32):
    prof = energy.profile(tiny32, torch.randint(0, 64, (2, 41)), batch=2)
    lif = prof.layers[prof.layers.kind == "lif"]
    assert len(lif) == 4 and (lif.firing_rate > 0).all() and (lif.firing_rate < 1).all()
    for _, row in lif.iterrows():
        n = prof.neurons[prof.neurons.layer == row.layer]
        assert n.rate.mean() == pytest.approx(row.firing_rate)  # per-neuron rates average to the layer rate
        assert row.dead_fraction == pytest.approx((n.spikes == 0).mean())
        pos = prof.positions[prof.positions.layer == row.layer]
        assert len(pos) == 40 and pos.rate.mean() == pytest.approx(row.firing_rate)
        raster = prof.rasters[row.layer]
        assert len(raster) == 40 and len(raster[0]) == 32
    relu = prof.layers[prof.layers.kind == "relu_sq"]
    assert ((relu.relu_sq_zero_fraction > 0.2) & (relu.relu_sq_zero_fraction < 0.9)).all()


def test_census_covers_the_model(tiny32):
    prof = energy.profile(tiny32, torch.randint(0, 64, (30,)), census_tokens=8)
    assert prof.uncounted().empty
    assert set(prof.census.status) == {"attributed", "free"}
    assert "first 8 tokens" in prof.meta["census_note"]


@pytest.mark.parametrize("variant", ["released", "twin", "spike-input"])
@pytest.mark.parametrize("mode", ["parallel", "streaming"])
def test_one_census_token_sees_every_arithmetic_op(variant, mode):
    """The census's default of one token is enough: the (module, aten op, status) of every op that is not
    data movement is the same at 1, 2 and 3 tokens (more tokens only add views, e.g. the carried state's)."""
    from spikegpt import SpikeGPT, preset

    torch.manual_seed(0)
    model = SpikeGPT(preset("tiny", variant=variant)).eval()
    x = torch.randint(0, 64, (1, 3))
    seen = []
    for n in (1, 2, 3):
        with torch.no_grad():
            c = census(model, lambda n=n: model.run(x[:, :n], mode=mode))
        seen.append({(r.module, r.aten_op, r.status) for r in c.itertuples() if r.status != "free"})
    assert seen[0] == seen[1] == seen[2] and len(seen[0]) > 20


def test_census_reports_what_no_rule_covers(tiny32):
    class Odd(nn.Module):
        def forward(self, x):
            return torch.tanh(x) * 2

    tiny32.blocks[0].att.odd = Odd()
    orig = tiny32.blocks[0].att.forward

    def forward(x, shift=None, wkv_state=None, fused=False):
        y, last, st = orig(x, shift, wkv_state, fused)
        return tiny32.blocks[0].att.odd(y), last, st

    tiny32.blocks[0].att.forward = forward
    prof = energy.profile(tiny32, torch.randint(0, 64, (12,)), census_tokens=4)
    un = prof.uncounted()
    assert set(un.module) == {"blocks.0.att.odd"}
    assert {"aten::tanh", "aten::mul.Tensor"} <= set(un.aten_op)
    assert (un.calls > 0).all()


def test_census_agrees_with_rules_where_rules_count_what_runs(tiny32):
    """Independent check: elementwise aten ops seen by the dispatcher vs the rules' counts."""
    ids = torch.randint(0, 64, (1, 9))
    df = census(tiny32, lambda: tiny32.run(ids))
    with Meter(tiny32) as m, torch.no_grad():
        tiny32.run(ids)
    aten_to_prim = {"exp": "exp", "maximum": "max", "div": "div", "mul": "mul", "add": "add", "sub": "add"}
    wkv = df[df.module == "blocks.0.att.wkv"].copy()
    wkv["prim"] = wkv.aten_op.str.split("::").str[1].str.split(".").str[0].map(aten_to_prim)
    seen = wkv.dropna(subset=["prim"]).groupby("prim").elements.sum().to_dict()
    seen["exp"] -= 32  # -exp(time_decay): setup, once per call, C = 32
    assert seen == counts_of(m, "blocks.0.att.wkv")
    sig = df[(df.module == "blocks.0.att.sigmoid") & (df.aten_op == "aten::sigmoid")].elements.sum()
    assert sig == counts_of(m, "blocks.0.att.sigmoid")["sigmoid"]


# --------------------------------------------------------------------------------------
# Energy
# --------------------------------------------------------------------------------------


def test_paper_scenario_by_hand(tiny32):
    prof = energy.profile(tiny32, torch.randint(0, 64, (33,)))
    C, H, L = 32, 128, 2
    block_macs = 4 * C * C + C * H + H * C + C * C  # att k,v,r,o + ffn key, value, receptance
    expected = L * (block_macs * 0.15 * 0.9 + 6 * C * 4.6)
    assert prof.energy_per_token()["paper"] == pytest.approx(expected)


def test_as_executed_prices_every_counted_op(tiny32):
    prof = energy.profile(tiny32, torch.randint(0, 64, (33,)))
    pj = load_costs().primitives("fp32")
    ops = prof.ops_per_token()
    expected = sum(ops[p] * pj[p] for p in pj if p != "mac")  # zero skipping: effective MACs priced
    assert prof.energy_per_token()["as_executed"] == pytest.approx(expected)
    e = prof.energy_per_token()
    assert e["as_executed_memory"] > e["as_executed"] > e["paper"]


def test_precision_and_user_costs(tiny32, tmp_path):
    prof = energy.profile(tiny32, torch.randint(0, 64, (33,)))
    e32 = prof.energy_per_token()["as_executed"]
    e8 = prof.energy_per_token(precision="int8")["as_executed"]
    assert e8 < e32 / 10
    table = load_costs().df.copy()
    table.loc[(table.op == "exp"), "pj"] *= 2
    path = tmp_path / "costs.csv"
    table.to_csv(path, index=False)
    e_user = prof.energy_per_token(costs=load_costs(path))["as_executed"]
    exp_pj = prof.ops_per_token()["exp"] * load_costs().pj("exp", "fp32")
    assert e_user == pytest.approx(e32 + exp_pj)


def test_assumptions_are_labelled():
    a = load_costs().assumptions()
    assert {"exp", "div", "sigmoid", "rsqrt", "max"} <= set(a.op)
    assert (a.source.str.len() > 0).all()


@pytest.mark.parametrize(
    "content,match",
    [
        ("op,dtype\nadd,fp32\n", "lacks columns"),
        ("op,dtype,pj,status,source,table,note\nadd,fp32,abc,published,x,,\n", "not a number"),
        ("op,dtype,pj,status,source,table,note\nadd,fp32,1,guess,x,,\n", "unknown status"),
        ("op,dtype,pj,status,source,table,note\nadd,fp32,1,published,,,\n", "needs a source"),
        ("op,dtype,pj,status,source,table,note\nadd,fp32,1,published,x,,\n", "no row for"),
    ],
)
def test_bad_cost_tables(tmp_path, content, match):
    p = tmp_path / "c.csv"
    p.write_text(content)
    with pytest.raises(energy.pricing.costs.SpikeEnergyError, match=match):
        load_costs(p)


def test_sram_interpolation():
    c = load_costs()
    assert c.sram_pj_per_byte(1024) == 10 / 8
    assert c.sram_pj_per_byte(32 * 1024) == 20 / 8
    assert c.sram_pj_per_byte(16 * 1024) == pytest.approx(15 / 8)  # halfway in log2 size
    assert c.sram_pj_per_byte(2**21) == pytest.approx((100 + 16) / 8)  # 32KB->1MB slope, one more doubling
    assert math.isclose(c.dram_pj_per_byte(), 1300 / 8)


@pytest.mark.slow
def test_216m_profile_counts_and_coverage():
    """The 216M configuration (random weights): every op covered, matmul MACs = FlopCounterMode / 2."""
    from spikegpt import SpikeGPT, preset

    torch.manual_seed(0)
    model = SpikeGPT(preset("216m")).eval()
    ids = torch.randint(0, 50277, (1, 33))
    prof = energy.profile(model, ids, census_tokens=4)
    assert prof.uncounted().empty
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model.run(ids[:, :-1])
    assert prof.ops[prof.ops.primitive == "mac"]["count"].sum() == fc.get_total_flops() / 2
    per_token = prof.ops_per_token()["mac"]
    assert per_token == 18 * 13 * 768 * 768 + 768 * 50277  # 176.6M MACs per token, the head 38.6M of them
