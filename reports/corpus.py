"""The report's "Corpus and uncertainty" section: intervals, rates by domain, from summary.json alone.

Every sentence is generated from the numbers in ``summary["corpus"]`` and
``summary["uncertainty"]``; ``corpus_context`` returns None for a summary without them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from reports.schema import finite

logger = logging.getLogger(__name__)


def _iv(d) -> tuple[float | None, float | None, float | None]:
    d = d if isinstance(d, Mapping) else {}
    return finite(d.get("value")), finite(d.get("lo")), finite(d.get("hi"))


def _row(label: str, d, kind: str) -> dict:
    v, lo, hi = _iv(d)
    half = (hi - lo) / 2 / abs(v) if None not in (v, lo, hi) and v else None
    return {"label": label, "value": v, "lo": lo, "hi": hi, "half": half, "kind": kind}


def _figure(groups: Mapping, unit: str) -> dict:
    from reports import plots

    title = f"Firing rate and bits per {unit} by {groups.get('by')}"
    try:
        fig = plots.rates_by_group(groups.get("rows") or [], str(groups.get("by")), unit)
        return {"title": title, "uri": plots.figure_to_data_uri(fig, "svg"), "note": None}
    except plots.NoData as e:
        return {"title": title, "uri": None, "note": f"{title}: not drawn, {e}."}
    except Exception as e:  # a broken figure must not take the report down; it is shown and logged
        logger.warning("figure rates_by_group failed", exc_info=True)
        return {"title": title, "uri": None, "note": f"{title}: drawing failed ({type(e).__name__}: {e})."}


def _spread(rows: list[dict], key, what: str, fmt: str) -> str | None:
    """'<what> ranges from X (group a) to Y (group b); their 95% intervals [do not] overlap.'"""
    vals = [(g, *_iv(key(g))) for g in rows]
    vals = [v for v in vals if v[1] is not None]
    if len(vals) < 2:
        return None
    lo_g, hi_g = min(vals, key=lambda v: v[1]), max(vals, key=lambda v: v[1])
    mean = sum(v[1] for v in vals) / len(vals)
    text = (f"{what} ranges from {lo_g[1]:{fmt}} ({lo_g[0]['group']}) to {hi_g[1]:{fmt}} ({hi_g[0]['group']}), "
            f"a spread of {(hi_g[1] - lo_g[1]) / mean:.1%} of the mean")  # fmt: skip
    if None not in (lo_g[3], hi_g[2]):
        text += "; their 95% intervals " + ("overlap" if lo_g[3] >= hi_g[2] else "do not overlap")
    return text + "."


def corpus_context(s: Mapping) -> dict | None:
    corpus = s.get("corpus") if isinstance(s.get("corpus"), Mapping) else {}
    unc = s.get("uncertainty") if isinstance(s.get("uncertainty"), Mapping) else {}
    if not corpus and not unc:
        return None
    unit = s.get("unit") or "char"
    rows = []
    fr = unc.get("firing_rate") or {}
    if "overall" in fr:
        rows.append(_row("firing rate, overall (LIF layers)", fr["overall"], "rate"))
    rows += [_row(f"firing rate, {k}", v, "rate") for k, v in fr.items() if k != "overall"]
    rows.append(_row("bits per token", unc.get("bits_per_token"), "num"))
    if unit != "token":
        rows.append(_row(f"bits per {unit}", unc.get("bpc"), "num"))
    labels = s.get("scenarios") or {}
    for k, v in (unc.get("energy_pj_per_token") or {}).items():
        rows.append(_row(f"energy per token, {labels.get(k, k)}", v, "energy"))
    head = unc.get("headline") or {}
    for key, label in (("ratio_as_executed", "as executed"), ("ratio_as_executed_memory", "as executed + memory")):
        for name, v in (head.get(key) or {}).items():
            rows.append(_row(f"{name} / SpikeGPT energy, {label}", v, "ratio"))
    groups = corpus.get("groups") or {}
    group_rows = [g for g in groups.get("rows") or [] if isinstance(g, Mapping)]
    lif = [k for k in (group_rows[0].get("firing_rate") or {}) if k.startswith("blocks.")] if group_rows else []
    sentences = [
        _spread(group_rows, lambda g: (g.get("firing_rate") or {}).get("overall"), "The overall firing rate", ".3f"),
        _spread(group_rows, lambda g: g.get("bpc"), f"Bits per {unit}", ".3f"),
    ]
    return {
        "corpus": corpus,
        "unc": unc,
        "rows": rows,
        "unit": unit,
        "by": groups.get("by"),
        "group_note": groups.get("note"),
        "groups": group_rows,
        "group_layers": lif,
        "sentences": [x for x in sentences if x],
        "fig": _figure(groups, unit) if group_rows else None,
    }
