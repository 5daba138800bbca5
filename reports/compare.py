"""``spike-energy compare A B``: two summary.json files side by side, as plain text."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from reports.schema import MAX_SUMMARY_BYTES, finite, validate_summary
from spikegpt.errors import SpikeEnergyError
from spikegpt.safeio import load_json, shown_path

_FIX = "pass the summary.json that `spike-energy profile --out DIR` writes (DIR/summary.json)"


def load_summary(path) -> dict:
    """Read and validate a summary.json; a directory means its summary.json.

    The file must be a regular file under ``MAX_SUMMARY_BYTES``, strict JSON (no NaN, no
    duplicate keys, bounded nesting and integers), and valid against ``schema.Summary``.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "summary.json"
    if not os.path.lexists(p):
        raise SpikeEnergyError(f"{shown_path(p)}: no such file; {_FIX}")
    d = load_json(p, "summary", None, MAX_SUMMARY_BYTES, fix=_FIX)
    validate_summary(d, str(p))
    return d


_f = finite


def _fmt(x, kind: str = "num") -> str:
    if isinstance(x, str):
        return _tail(x)
    v = _f(x)
    if v is None:
        return "-"
    if kind == "rate":
        return f"{v:.4f}"
    if kind == "ratio":
        return f"{v:,.2f}x"
    if kind == "bits":
        return f"{v:.4f}"
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4g}"


def _tail(text: str, width: int = 40) -> str:
    """Long strings (paths) keep their end, which tells them apart."""
    return text if len(text) <= width else "..." + text[-(width - 3) :]


def _b_over_a(a, b) -> str:
    va, vb = _f(a), _f(b)
    if va is None or vb is None or isinstance(a, str) or isinstance(b, str):
        return ""
    if va == 0:
        return "same" if vb == 0 else ""
    return f"{vb / va:.2f}x"


def _union(*dicts: Mapping) -> list[str]:
    keys: list[str] = []
    for d in dicts:
        for k in d or {}:
            if k not in keys:
                keys.append(k)
    return keys


def _model_line(s: Mapping) -> str:
    m = s.get("model") or {}
    params = _f(m.get("params"))
    p = f", {params / 1e6:.2f}M params" if params is not None else ""
    return f"{m.get('n_layer', '?')} x {m.get('n_embd', '?')}, vocab {m.get('vocab_size', '?')}{p}"


def compare_table(a: Mapping, b: Mapping, name_a: str = "A", name_b: str = "B") -> str:
    """A plain-text table of two summaries: one row per quantity, a column each and B/A."""
    rows: list[tuple[str, ...]] = []  # (label, a, b, b/a) or (section,)

    def section(title: str):
        rows.append((title,))

    def row(label: str, va, vb, kind: str = "num", ratio: bool = True):
        rows.append((label, _fmt(va, kind), _fmt(vb, kind), _b_over_a(va, vb) if ratio else ""))

    ma, mb = a.get("model") or {}, b.get("model") or {}
    section("model")
    row("SpikeGPT", _model_line(a), _model_line(b))
    row("checkpoint sha256", str(ma.get("sha256") or "-")[:12], str(mb.get("sha256") or "-")[:12])
    row("text", str((a.get("text") or {}).get("path") or "-"), str((b.get("text") or {}).get("path") or "-"))
    row("tokens", a.get("tokens"), b.get("tokens"))
    row("precision", str(a.get("precision", "-")), str(b.get("precision", "-")))
    unit_a, unit_b = a.get("unit", "token"), b.get("unit", "token")
    row("bits / token", a.get("bits_per_token"), b.get("bits_per_token"), "bits")
    if unit_a != "token" or unit_b != "token":
        row(f"bits / {unit_a if unit_a == unit_b else 'char'} (BPC)", a.get("bpc"), b.get("bpc"), "bits")
    if a.get("ppl") is not None or b.get("ppl") is not None:
        row("perplexity", a.get("ppl"), b.get("ppl"), "bits")

    fa, fb = a.get("firing_rate") or {}, b.get("firing_rate") or {}
    section("firing rate")
    row("overall (LIF mean)", fa.get("overall"), fb.get("overall"), "rate")
    for k in _union(fa, fb):
        if k != "overall":
            row(k, fa.get(k), fb.get(k), "rate")

    oa, ob = a.get("ops_per_token") or {}, b.get("ops_per_token") or {}
    section("ops per token")
    for k in _union(oa, ob):
        row(k, oa.get(k), ob.get(k))

    ea, eb = a.get("energy_pj_per_token") or {}, b.get("energy_pj_per_token") or {}
    labels = {**(b.get("scenarios") or {}), **(a.get("scenarios") or {})}
    section(f"energy per token, pJ ({a.get('precision', '?')} / {b.get('precision', '?')})")
    for k in _union(ea, eb):
        row(labels.get(k, k), ea.get(k), eb.get(k))

    ha, hb = a.get("headline") or {}, b.get("headline") or {}
    for key, title in (("ratio_as_executed", "as executed"), ("ratio_as_executed_memory", "as executed + memory")):
        ra, rb = ha.get(key) or {}, hb.get(key) or {}
        names = _union(ra, rb)
        if names:
            section(f"ANN / SpikeGPT energy, {title} (paper: {ha.get('claim', hb.get('claim', 32.2))}x)")
            for n in names:
                row(f"vs {n}", ra.get(n), rb.get(n), "ratio")
    ua, ub = a.get("uncounted_ops") or [], b.get("uncounted_ops") or []
    section("coverage")
    row("uncounted aten ops", len(ua), len(ub), ratio=False)

    header = ("", _tail(str(name_a)), _tail(str(name_b)), "B/A")
    body = [(f"  {r[0]}", *r[1:]) for r in rows if len(r) == 4]
    w = [max(len(r[i]) for r in [header, *body]) for i in range(4)]

    def line(r) -> str:
        return f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]:>{w[3]}}".rstrip()

    out = [line(header), "-" * (sum(w) + 6)]
    for r in rows:
        if len(r) == 1:
            out += ["", r[0]]
        else:
            out.append(line((f"  {r[0]}", *r[1:])))
    return "\n".join(out)
