"""Issue 22: our Loihi preset against SANA-FE on the same events (skipped without sanafe).

Tolerance: on the same mapped layer both sides count the same events, so SANA-FE's energy must equal its own
per-event figures times the events we count from the spike trains (synaptic events = spikes x fan-out, one packet
and one hop per spike, one update per output compartment per step) to float rounding (1e-9 relative); and the
ratio Y/X must equal the closed form of the two presets' figures on those events, to the same rounding. Any
larger gap would mean that the event model differs, not the constants."""

import numpy as np
import pytest

pytest.importorskip("sanafe")

from energy.comparing import sanafe_check  # noqa: E402
from energy.pricing.platforms import load_platform  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    trains = rng.random((20, 16)) < 0.25  # 20 steps x 16 inputs
    weights = rng.normal(size=(8, 16))  # 8 outputs
    return {"layer": "tiny", "trains": trains, "weights": weights, "tokens": 20, "n_in": 16, "n_out": 8,
            "rate": float(trains.mean())}  # fmt: skip


def test_sanafe_counts_and_prices_the_events_we_count(tiny):
    sim = sanafe_check.simulate_loihi(tiny["trains"], tiny["weights"])
    f = sanafe_check.arch_figures("loihi")
    spikes, n_out, steps = int(tiny["trains"].sum()), 8, 20
    assert sim["spikes"] == spikes * n_out  # synaptic events: every spike through every synapse of the layer
    assert sim["packets"] == spikes and sim["hops"] == spikes  # one packet, one hop per spike
    e = sim["energy_j"]
    assert e["synapse"] == pytest.approx(spikes * n_out * f["loihi_dense_synapse.energy_process_spike"], rel=1e-9)
    update = f["loihi_lif.energy_access_neuron"] + f["loihi_lif.energy_update_neuron"]
    assert e["soma"] == pytest.approx(n_out * steps * update, rel=1e-9)
    hop = {f["loihi_tile[0..31].energy_east_hop"], f["loihi_tile[0..31].energy_north_hop"]}
    assert any(e["network"] == pytest.approx(spikes * (f["loihi_out.energy_message_out"] + h), rel=1e-9) for h in hop)


def test_ours_against_sanafe_closed_form_and_the_terms_that_explain_it(tiny):
    sim = sanafe_check.simulate_loihi(tiny["trains"], tiny["weights"])
    r = sanafe_check.compare_loihi(tiny, sim)
    p = load_platform("loihi")
    s, n_out, t = int(tiny["trains"].sum()), 8, 20
    hop = (sim["energy_j"]["network"] * 1e12 - s * 111.0) / s
    x = (s * n_out * p.value("synaptic_op") + s * (p.value("spike_tile") + p.value("spike_hop"))) / t
    y = (s * n_out * 35.5 + s * (111.0 + hop) + n_out * t * 72.8) / t
    assert r["ours_pj_per_token"] == pytest.approx(x, rel=1e-9)
    assert r["sanafe_pj_per_token"] == pytest.approx(y, rel=1e-9)
    assert r["ratio"] == pytest.approx(y / x, rel=1e-9)
    assert sum(term["difference_pj_per_token"] for term in r["terms"]) == pytest.approx(y - x, rel=1e-9)
    assert {term["term"] for term in r["terms"]} == {"synaptic events", "spike routing", "compartment updates"}
    assert r["counts_agree"]
    assert f"ratio Y/X = {y / x:.2f}" in r["sentence"]


def test_without_sanafe_the_section_says_it_was_not_run(monkeypatch):
    monkeypatch.setattr(sanafe_check, "available", lambda: False)
    r = sanafe_check.check()
    assert r["run"] is False and "not run" in r["why"]


def test_truenorth_description_has_no_energy_so_no_ratio():
    r = sanafe_check.truenorth_note()
    assert r["ratio"] is None and "0.0" in r["sentence"]
