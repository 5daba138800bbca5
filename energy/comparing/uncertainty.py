"""Confidence intervals: a percentile bootstrap over independent units of text.

Every statistic here is a ratio of sums over units (spikes / neuron steps, bits /
characters, pJ / tokens, ANN pJ / SpikeGPT pJ), so a resample is a vector of unit
multiplicities ``w`` and the statistic is ``(w @ num) / (w @ den)``. All statistics of one
run share the same resamples, which pairs them (the twin ratio is a paired bootstrap).

Units are documents when there are several (pooled into at most ``UNITS`` groups, document
``i`` in group ``i mod UNITS``), or blocks of consecutive tokens when there is one document
or one concatenated sequence (a block bootstrap: the correlation between nearby tokens
stays inside a block).
"""

from __future__ import annotations

import numpy as np

from energy.measuring.runner import UNITS

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
MIN_UNITS = 10  # below this many units the report says the interval is rough
MAX_GROUPS = 40  # domains (or sources) compared in the report at most


def resample_weights(n_units: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, n_units) multiplicities: each row draws ``n_units`` units with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=resamples).astype(np.float64)


def ratio_interval(weights: np.ndarray, num, den, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of ``sum(num) / sum(den)``; ``num``, ``den`` are (units,) or (units, k)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = (weights @ num) / (weights @ den)
    a = (1 - confidence) / 2 * 100
    lo, hi = np.nanpercentile(stat, [a, 100 - a], axis=0) if np.isfinite(stat).any() else (np.nan, np.nan)
    return np.asarray(lo), np.asarray(hi)


def interval(value: float, lo, hi) -> dict:
    """``{"value", "lo", "hi"}`` with plain floats (None where undefined)."""

    def f(x):
        x = float(x)
        return x if np.isfinite(x) else None

    return {"value": f(value), "lo": f(lo), "hi": f(hi)}


def method_text(unit: str, n_units: int, n_docs: int, blocks: tuple[int, int], resamples: int, seed: int,
                confidence: float = CONFIDENCE) -> str:  # fmt: skip
    """The method as one sentence, from the numbers of this run. ``blocks``: (tokens per block, blocks)."""
    head = f"{confidence:.0%} percentile bootstrap intervals, {resamples:,} resamples (seed {seed}), over "
    if unit == "documents":
        if n_units == n_docs:
            return head + f"the {n_docs:,} documents (each document resampled whole)."
        return head + (f"{n_units} groups of the {n_docs:,} documents (document i in group i mod {n_units}), "
                       "each group resampled whole.")  # fmt: skip
    size, count = blocks
    if count <= n_units:
        return head + (f"the {count} blocks of {size} consecutive tokens of the single sequence (a block "
                       "bootstrap: nearby tokens stay together).")  # fmt: skip
    return head + (f"{n_units} groups of the {count} blocks of {size} consecutive tokens of the single sequence "
                   f"(block b in group b mod {n_units}; a block bootstrap: nearby tokens stay together).")  # fmt: skip


# ---------------------------------------------------------------------------------
# A run's intervals (from a merged ``runner.RunState``)
# ---------------------------------------------------------------------------------


def _units(state, settings):
    """(kind, keys, {track: [Tally]}, tokens, nats, chars) of the bootstrap units of this run."""
    import math

    several = len(state.docs) >= 2 and not settings.concat
    first = next(iter(state.tracks.values()))
    if several:
        keys = sorted(first.doc_units)
        nats = {u: [] for u in keys}
        chars = dict.fromkeys(keys, 0)
        for d in state.docs:  # document order: the float sums do not depend on how the run was split
            nats[d.index % settings.units].append(d.nats)
            chars[d.index % settings.units] += d.chars
        nats = {u: math.fsum(v) for u, v in nats.items()}
        tallies = {name: [tr.doc_units[u] for u in keys] for name, tr in state.tracks.items()}
        kind = "documents"
    else:
        keys = sorted(first.block_units)
        nats, chars = state.block_nats, state.block_chars
        tallies = {name: [tr.block_units[u] for u in keys] for name, tr in state.tracks.items()}
        kind = "blocks"
    tokens = np.array([tallies[next(iter(tallies))][i].tokens for i in range(len(keys))], dtype=np.float64)
    return (kind, keys, tallies, tokens, np.array([nats.get(u, 0.0) for u in keys]),
            np.array([chars.get(u, 0) for u in keys], dtype=np.float64))  # fmt: skip


def unit_energy(model, tallies, static: dict, scenarios, costs, precision: str, *, spiking: bool = True,
                batch: int = 1) -> dict[str, np.ndarray]:  # fmt: skip
    """pJ of each unit (not per token) by scenario: each unit priced on its own, as a whole run would be.

    One call per unit, not one call over all units renamed apart: the accounting is not row by row (the
    weights that fit the SRAM budget are placed over the whole model, and the counterfactual looks up each
    projection's producer by name), so a single call would place ``units`` copies of the model.
    """
    from energy.measuring.profile import frames
    from energy.pricing.estimate import scenario_energy

    out = {s: np.zeros(len(tallies)) for s in scenarios}
    for i, t in enumerate(tallies):
        ops, lays = frames(model, t, static)
        for s in scenarios:
            out[s][i] = float(scenario_energy(s, ops, lays, costs, precision, spiking=spiking, batch=batch).pj.sum())
            out[s][i] *= t.tokens
    return out


def run_intervals(state, settings, models: dict, profiles: dict, baselines: dict, costs, precision: str,
                  unit_label: str = "character", resamples: int = RESAMPLES, seed: int = SEED) -> dict:  # fmt: skip
    """Intervals for every layer's rate, the overall rate, bits per token and character, energy per
    token by scenario and every headline ratio (``summary.json["uncertainty"]``)."""
    import math

    from energy.pricing.estimate import ANN_SCENARIOS, SCENARIOS

    main = next(iter(models))
    kind, keys, tallies, tokens, nats, chars = _units(state, settings)
    n = len(keys)
    out = {
        "confidence": CONFIDENCE, "resamples": resamples, "seed": seed, "unit": kind, "units": n,
        "documents": len(state.docs), "block_tokens": settings.chunk_len or models[main].config.ctx_len,
    }  # fmt: skip
    blocks = (out["block_tokens"], _n_blocks(state, settings, out["block_tokens"]))
    out["method"] = method_text(kind, n, len(state.docs), blocks, resamples, seed)
    prof = profiles[main]
    if n < 2:
        out["note"] = f"one {kind[:-1]} only: no interval can be drawn; give more text"
    elif n < MIN_UNITS:
        out["note"] = (f"only {n} {kind}: a bootstrap over so few units understates the uncertainty; "
                       f"give at least {MIN_UNITS}")  # fmt: skip
    w = resample_weights(max(n, 1), resamples, seed)

    def iv(value, num, den):
        if n < 2:
            return interval(value, np.nan, np.nan)
        lo, hi = ratio_interval(w, num, den)
        return interval(value, lo, hi)

    spk = tallies[main]
    static = state.tracks[main].static
    rates = prof.firing_rates
    fr = {}
    lif = [k for k, v in static["kinds"].items() if v == "lif"]
    widths = state.tracks[main].total.widths
    for layer in [k for k in rates if k != "overall"]:
        num = np.array([t.spikes[layer] for t in spk], dtype=np.float64)
        den = np.array([t.steps[layer] * widths[layer] for t in spk], dtype=np.float64)
        fr[layer] = iv(rates[layer], num, den)
    num = np.array([sum(t.spikes[k] for k in lif) for t in spk], dtype=np.float64)
    den = np.array([sum(t.steps[k] * widths[k] for k in lif) for t in spk], dtype=np.float64)
    fr["overall"] = iv(rates["overall"], num, den)
    out["firing_rate"] = fr
    bits = nats / math.log(2)
    total_bits = state.nats / math.log(2)
    out["bits_per_token"] = iv(total_bits / max(state.tokens, 1), bits, tokens)
    out[f"bits_per_{unit_label}"] = iv(total_bits / max(state.chars, 1), bits, chars)
    out["bpc"] = out[f"bits_per_{unit_label}"]

    batch = prof.meta["batch"]
    e_spk = unit_energy(models[main], spk, static, SCENARIOS, costs, precision, batch=batch)
    point = prof.energy_per_token()
    out["energy_pj_per_token"] = {s: iv(point[s], e_spk[s], tokens) for s in SCENARIOS}
    out["energy_check"] = _linearity(point, e_spk, tokens)
    headline: dict[str, dict] = {"ratio_as_executed": {}, "ratio_as_executed_memory": {}}
    twin_e = None
    twin = next((k for k in models if k != main), None)
    if twin is not None:
        twin_e = unit_energy(models[twin], tallies[twin], state.tracks[twin].static, ANN_SCENARIOS, costs, precision,
                             spiking=False, batch=batch)  # fmt: skip
    for key, scen in (("ratio_as_executed", "as_executed"), ("ratio_as_executed_memory", "as_executed_memory")):
        for name, b in baselines.items():
            e_b = float(b.energy(scen, costs, precision, batch).pj.sum())
            if name == twin and twin_e is not None:  # paired: the twin ran on the same units
                headline[key][name] = iv(e_b / point[scen], twin_e[scen], e_spk[scen])
            else:  # a transformer's count does not depend on the text
                headline[key][name] = iv(e_b / point[scen], e_b * tokens, e_spk[scen])
    out["headline"] = headline
    return out


def _n_blocks(state, settings, block: int) -> int:
    if len(state.docs) != 1:
        return 0
    per_row = state.docs[0].tokens // (settings.batch if settings.concat else 1)
    return -(-per_row // block)


def _linearity(point: dict, unit_e: dict, tokens: np.ndarray) -> float:
    """Largest relative gap between the run's energy per token and the units' sum (0 when the
    accounting is linear in the counts, as the bootstrap of energy assumes)."""
    gaps = []
    for s, v in point.items():
        if s in unit_e and v:
            gaps.append(abs(unit_e[s].sum() / tokens.sum() - v) / abs(v))
    return float(max(gaps)) if gaps else 0.0


def group_table(state, settings, widths: dict, lif: list[str], resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Rates and bits per character by domain (or by source), each with its bootstrap interval over
    the group's documents (``summary.json["corpus"]["groups"]``)."""
    import math

    docs = state.docs
    if settings.concat or len(docs) < 2:
        return {"by": None, "rows": []}
    by = "domain" if any(d.domain for d in docs) else "source"
    names = list(dict.fromkeys(getattr(d, by) or "(none)" for d in docs))
    if len(names) < 2 or (by == "source" and len(names) == len(docs)):
        return {"by": by, "rows": [], "note": f"no two documents share a {by}" if len(names) > 1 else None}
    if len(names) > MAX_GROUPS:
        return {"by": by, "rows": [], "note": f"{len(names)} values of {by}: more than {MAX_GROUPS} to compare"}
    layers = [k for k in widths if any(k in d.spikes for d in docs)]
    rows = []
    for gi, g in enumerate(names):
        members = [d for d in docs if (getattr(d, by) or "(none)") == g]
        n = min(len(members), UNITS)
        spikes = np.zeros((n, len(layers)))
        tokens, bits, chars = np.zeros(n), np.zeros(n), np.zeros(n)
        for j, d in enumerate(members):
            u = j % n
            spikes[u] += [d.spikes.get(k, 0) for k in layers]
            tokens[u] += d.tokens
            chars[u] += d.chars
        for u in range(n):
            bits[u] = math.fsum(d.nats for j, d in enumerate(members) if j % n == u) / math.log(2)
        width = np.array([widths[k] for k in layers], dtype=np.float64)
        steps = tokens[:, None] * width[None, :]
        w = resample_weights(n, resamples, seed + gi + 1) if n >= 2 else None

        def iv(num, den, w=w):
            value = float(np.sum(num, axis=0) / np.sum(den, axis=0)) if np.sum(den) else float("nan")
            if w is None:
                return interval(value, np.nan, np.nan)
            lo, hi = ratio_interval(w, num, den)
            return interval(value, lo, hi)

        is_lif = np.array([k in lif for k in layers])
        rows.append({
            "group": g,
            "documents": len(members),
            "tokens": int(tokens.sum()),
            "chars": int(chars.sum()),
            "bits_per_token": iv(bits, tokens),
            "bpc": iv(bits, chars),
            "firing_rate": {k: iv(spikes[:, i], steps[:, i]) for i, k in enumerate(layers)}
            | {"overall": iv(spikes[:, is_lif].sum(1), steps[:, is_lif].sum(1))},
        })  # fmt: skip
    return {"by": by, "rows": rows}


def documents_frame(state, widths: dict, lif: list[str], layer_order: list[str] = ()):
    """One row per document: tokens, characters, bits, rates (overall over the LIF layers, and per layer).

    The per-layer columns follow ``layer_order`` (the model's), then any other layer by name, so the file is the
    same whichever way the counts were gathered (one process, several, or a resumed state)."""
    import math

    import pandas as pd

    rows = []
    for d in state.docs:
        steps = {k: d.tokens * widths.get(k, 0) for k in d.spikes}
        lif_steps = sum(steps[k] for k in lif if k in steps)
        row = {"index": d.index, "name": d.name, "source": d.source, "domain": d.domain, "tokens": d.tokens,
               "chars": d.chars, "bits_per_token": d.nats / math.log(2) / d.tokens if d.tokens else None,
               "bpc": d.nats / math.log(2) / d.chars if d.chars else None,
               "firing_rate": sum(d.spikes.get(k, 0) for k in lif) / lif_steps if lif_steps else None}  # fmt: skip
        order = [k for k in layer_order if k in d.spikes] + sorted(k for k in d.spikes if k not in layer_order)
        row.update({f"rate:{k}": d.spikes[k] / steps[k] if steps[k] else None for k in order})
        rows.append(row)
    return pd.DataFrame(rows)
