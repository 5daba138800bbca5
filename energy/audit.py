"""The audit of "32.2x fewer operations": paper mode, waterfall, break-even, sensitivity.

Ratios are ANN energy / SpikeGPT energy per token ("x fewer"): above 1 SpikeGPT is
cheaper.

Paper mode rebuilds the paper's accounting from its stated assumptions (section 3.7,
Table 1). The table itself did not survive text extraction, so the per-block formula
below is a reconstruction from the terms the paper names: Q,K,V vs R,K,V projections
3*T*d^2 (MACs vs ACs at rate R), attention 2*T^2*d vs WKV 6*T*d, plus the output
projection (T*d^2) and the feed-forward layers (GPT 8*T*d^2; SRFFN key 4*T*d^2,
value 4*T*d^2, receptance T*d^2), E_MAC = 4.6 pJ, E_AC = 0.9 pJ, R = 0.15.
"""

from __future__ import annotations

import pandas as pd

from energy.costs import PRECISIONS, CostTable
from energy.estimate import PAPER_RATE, SCENARIO_ACCOUNTING, Accounting, account, counterfactual_rates

PAPER_CLAIM = 32.2
E_MAC_PAPER, E_AC_PAPER = 4.6, 0.9
PAPER_SETTINGS = (
    ("46M, T=1024", 12, 512, 1024),
    ("46M, T=3072", 12, 512, 3072),
    ("216M, T=1024", 18, 768, 1024),
)

WATERFALL = (
    ("paper", "the paper's accounting: block projections as ACs at R = 0.15, WKV as 6 MACs, nothing else priced",
     SCENARIO_ACCOUNTING["paper"]),
    ("measured rates", "R replaced by the measured rate of the spiking layer before each projection",
     SCENARIO_ACCOUNTING["paper_measured_rates"]),
    ("operands as executed", "operand classes as measured: projections read LayerNorm floats, so they are MACs "
     "(zeros skipped)", Accounting("executed", elementwise=False, outside_blocks=False)),
    ("elementwise priced", "exp, division, sigmoid, LayerNorm, ReLU^2, the LIF update and the WKV's real ops priced",
     Accounting("executed", elementwise=True, outside_blocks=False)),
    ("LM head", "the LM head, the embedding and the final LayerNorm included",
     Accounting("executed", elementwise=True, outside_blocks=True)),
    ("memory", "memory traffic: a weight read per synaptic op, membranes and state read + written (SRAM)",
     SCENARIO_ACCOUNTING["as_executed_memory"]),
)  # fmt: skip


def paper_block_terms(T: int, d: int, R: float = PAPER_RATE, e_mac: float = E_MAC_PAPER, e_ac: float = E_AC_PAPER):
    """pJ per block for a vanilla GPT and for SpikeGPT under the paper's assumptions."""
    gpt = {
        "Q,K,V projections 3Td^2 (MAC)": 3 * T * d * d * e_mac,
        "attention 2T^2d (MAC)": 2 * T * T * d * e_mac,
        "output projection Td^2 (MAC)": T * d * d * e_mac,
        "feed-forward 8Td^2 (MAC)": 8 * T * d * d * e_mac,
    }
    snn = {
        "R,K,V projections 3Td^2 (AC x R)": 3 * T * d * d * R * e_ac,
        "WKV 6Td (MAC)": 6 * T * d * e_mac,
        "output projection Td^2 (AC x R)": T * d * d * R * e_ac,
        "SRFFN 9Td^2 (AC x R)": 9 * T * d * d * R * e_ac,
    }
    return gpt, snn


def paper_mode(n_layer: int, d: int, T: int, R: float = PAPER_RATE, e_mac=E_MAC_PAPER, e_ac=E_AC_PAPER) -> dict:
    """The reconstructed paper accounting for one setting, whole model (n_layer blocks)."""
    gpt, snn = paper_block_terms(T, d, R, e_mac, e_ac)
    g, s = sum(gpt.values()) * n_layer, sum(snn.values()) * n_layer
    # The one combination of the named terms that reproduces a number printed in the paper
    # (33.2x, the 46M energy claim of the introduction): Q,K,V at E_MAC against R,K,V at R*E_AC
    # plus the WKV's 6Td at E_AC. It does not depend on T.
    proj_g = 3 * T * d * d * e_mac
    proj_s = 3 * T * d * d * R * e_ac + 6 * T * d * e_ac
    return {
        "n_layer": n_layer,
        "d": d,
        "T": T,
        "R": R,
        "e_mac_pj": e_mac,
        "e_ac_pj": e_ac,
        "gpt_pj": g,
        "spikegpt_pj": s,
        "ratio": g / s,
        "gpt_terms_pj_per_block": gpt,
        "spikegpt_terms_pj_per_block": snn,
        "projection_only_ratio": proj_g / proj_s,
    }


def paper_modes(R: float = PAPER_RATE) -> list[dict]:
    return [{"setting": name, **paper_mode(L, d, T, R)} for name, L, d, T in PAPER_SETTINGS]


def waterfall(profile, baselines: dict, costs: CostTable, precision: str = "fp32") -> list[dict]:
    """Replace the paper's assumptions one at a time with what was measured."""
    steps = []
    batch = profile.meta["batch"]
    for name, description, acc in WATERFALL:
        snn = float(account(profile.ops, profile.layers, costs, precision, acc, spiking=True, batch=batch).pj.sum())
        ann = {
            b: float(account(bl.ops, bl.layers, costs, precision, acc, spiking=False, batch=batch).pj.sum())
            for b, bl in baselines.items()
        }
        steps.append(
            {
                "step": name,
                "description": description,
                "spikegpt_pj_per_token": snn,
                "baseline_pj_per_token": ann,
                "ratio": {b: e / snn if snn else float("nan") for b, e in ann.items()},
            }
        )
    return steps


def _counterfactual_line(profile, costs, precision, memory: bool):
    """Energy of the spike-input counterfactual at a uniform rate r: E(r) = E0 + r * A."""
    batch = profile.meta["batch"]

    def at(rate):
        acc = Accounting("counterfactual", rate, memory="sram" if memory else None)
        layers = profile.layers
        if memory:  # a projection fed spikes at rate r reads r x dense weights per token
            fed = counterfactual_rates(layers).reindex(layers.layer).notna().to_numpy()
            layers = layers.assign(synaptic_ops_per_token=layers.synaptic_ops_per_token.where(~fed, layers.mac * rate))
        return float(account(profile.ops, layers, costs, precision, acc, spiking=True, batch=batch).pj.sum())

    e0 = at(0.0)
    return e0, at(1.0) - e0


def _rate_for(target: float, e0: float, slope: float, above_one: str):
    """The uniform rate r with E(r) = target (a linear extrapolation outside [0, 1]), and what it means."""
    if slope <= 0:
        return None, "energy does not depend on the rate"
    r = (target - e0) / slope
    if r < 0:
        return r, "unreachable at any rate: the costs that do not scale with spikes already exceed the target"
    if r > 1:
        return r, above_one
    return r, f"below a uniform rate of {r:.3g}"


def break_even(profile, baselines: dict, twin: str | None, reference: str | None, costs: CostTable) -> dict:
    """Per precision: the uniform rate at which the counterfactual reaches 32.2x against the
    reference ANN, and the rate at which it stops beating the non-spiking twin."""
    out = {}
    batch = profile.meta["batch"]
    for prec in PRECISIONS:
        out[prec] = {}
        for memory in (False, True):
            e0, slope = _counterfactual_line(profile, costs, prec, memory)
            acc = Accounting(memory="sram" if memory else None)
            key = "compute + memory" if memory else "compute"
            res = {"energy_at_rate_0_pj": e0, "energy_per_unit_rate_pj": slope}
            if reference in baselines:
                ann = float(account(baselines[reference].ops, baselines[reference].layers, costs, prec, acc,
                                    spiking=False, batch=batch).pj.sum())  # fmt: skip
                every = f"reached at every rate (even r = 1 gives {PAPER_CLAIM}x)"
                r, why = _rate_for(ann / PAPER_CLAIM, e0, slope, every)
                res.update({f"rate_for_{PAPER_CLAIM}x_vs_{reference}": r, "note_32x": why})
            if twin in baselines:
                ann = float(account(baselines[twin].ops, baselines[twin].layers, costs, prec, acc,
                                    spiking=False, batch=batch).pj.sum())  # fmt: skip
                r, why = _rate_for(ann, e0, slope, "beats the twin at every rate, even r = 1")
                res.update({"rate_twin_parity": r, "note_twin": why})
            out[prec][key] = res
    return out


SENSITIVITY_RATES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)


def sensitivity(profile, baselines: dict, costs: CostTable, precision: str = "fp32") -> dict:
    """Ratio vs uniform firing rate (spike-input counterfactual, compute), and vs precision."""
    e0, slope = _counterfactual_line(profile, costs, precision, memory=False)
    batch = profile.meta["batch"]
    ann = {
        b: float(account(bl.ops, bl.layers, costs, precision, Accounting(), spiking=False, batch=batch).pj.sum())
        for b, bl in baselines.items()
    }
    by_rate = [
        {"rate": r, "spikegpt_pj": e0 + r * slope, **{f"ratio_vs_{b}": e / (e0 + r * slope) for b, e in ann.items()}}
        for r in SENSITIVITY_RATES
    ]
    snn32 = float(
        account(profile.ops, profile.layers, costs, precision, Accounting(), spiking=True, batch=batch).pj.sum()
    )
    by_precision = []
    for prec in PRECISIONS:
        row = {"ann_precision": prec, "spikegpt_precision": precision, "spikegpt_pj": snn32}
        for b, bl in baselines.items():
            e = float(account(bl.ops, bl.layers, costs, prec, Accounting(), spiking=False, batch=batch).pj.sum())
            row[f"ratio_vs_{b}"] = e / snn32
        by_precision.append(row)
    return {"by_rate": by_rate, "by_precision": by_precision, "counterfactual_precision": precision}


def audit(profile, baselines: dict, costs: CostTable | None = None, precision: str = "fp32",
          reference: str = "gpt2-small", twin: str = "rwkv-twin") -> dict:  # fmt: skip
    """Everything the audit reports, as plain data."""
    costs = costs or profile.costs
    measured_overall = profile.firing_rates.get("overall")
    return {
        "claim": PAPER_CLAIM,
        "precision": precision,
        "reference": reference if reference in baselines else None,
        "twin": twin if twin in baselines else None,
        "paper_mode": paper_modes(),
        "paper_mode_measured_rate": [
            {"setting": n, **paper_mode(L, d, T, measured_overall)} for n, L, d, T in PAPER_SETTINGS
        ]
        if measured_overall
        else [],
        "paper_mode_note": (
            "Reconstructed: the paper's Table 1 is not recoverable from the text. The full-block formula "
            "(projections, attention vs WKV, output projection, feed-forward) gives the ratios above; "
            "no combination of the stated terms gives 32.2 exactly. The projection-only variant "
            "(Q,K,V at E_MAC vs R,K,V at R*E_AC plus the WKV's 6Td at E_AC) reproduces the 33.2x the "
            "introduction claims for the 46M model."
        ),
        "waterfall": waterfall(profile, baselines, costs, precision),
        "break_even": break_even(profile, baselines, twin, reference, costs),
        "sensitivity": sensitivity(profile, baselines, costs, precision),
    }


def waterfall_table(a: dict) -> pd.DataFrame:
    rows = []
    for s in a["waterfall"]:
        row = {"step": s["step"], "spikegpt_pj_per_token": s["spikegpt_pj_per_token"]}
        row.update({f"ratio_vs_{b}": r for b, r in s["ratio"].items()})
        rows.append(row)
    return pd.DataFrame(rows)
