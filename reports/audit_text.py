"""The audit as terminal tables (``spike-energy audit``): waterfall, break-even, sensitivity.

Rendered from the ``audit`` dict of a summary.json (or of a fresh run), never from live
objects, so ``spike-energy audit summary.json`` prints in seconds. Every number passes
through ``finite``: None, NaN and inf print as ``n/a``.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.markup import escape
from rich.table import Table

from reports.schema import finite

NA = "n/a"


def _ratio(x) -> str:
    v = finite(x)
    return NA if v is None else f"{v:,.2f}x"


def _pj(x) -> str:
    v = finite(x)
    return NA if v is None else f"{v:,.0f}"


def _rate(x) -> str:
    v = finite(x)
    return NA if v is None else f"{v:.3g}"


def _text(x) -> str:
    return escape(str(x)) if x is not None else ""


def _ratio_columns(rows) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r or {}:
            if str(k).startswith("ratio_vs_") and k not in cols:
                cols.append(k)
    return cols


def waterfall_table(audit: Mapping) -> Table:
    steps = audit.get("waterfall") or []
    names: list[str] = []
    for s in steps:
        for b in s.get("ratio") or {}:
            if b not in names:
                names.append(b)
    t = Table(title=f"audit waterfall ({audit.get('precision', '?')}): SpikeGPT pJ per token, and ANN energy / "
              "SpikeGPT energy")  # fmt: skip
    t.add_column("step")
    t.add_column("SpikeGPT pJ/token", justify="right")
    for b in names:
        t.add_column(_text(b), justify="right")
    for s in steps:
        ratio = s.get("ratio") or {}
        t.add_row(_text(s.get("step")), _pj(s.get("spikegpt_pj_per_token")), *[_ratio(ratio.get(b)) for b in names])
    return t


def break_even_table(audit: Mapping) -> Table:
    """Per precision and accounting: the uniform firing rate at which the spike-input
    counterfactual reaches the claim against the reference ANN, and parity with the twin."""
    claim = audit.get("claim", 32.2)
    t = Table(title=f"break-even firing rates (spike-input counterfactual): {claim}x vs the reference ANN, and "
              "parity with the non-spiking twin")  # fmt: skip
    for col in ("precision", "accounting", "pJ/token at rate 0", "pJ per unit rate"):
        t.add_column(col, justify="right" if col.startswith("pJ") else "left")
    t.add_column(f"rate for {claim}x", justify="right")
    t.add_column("meaning")
    t.add_column("rate for twin parity", justify="right")
    t.add_column("meaning")
    for prec, by_acc in (audit.get("break_even") or {}).items():
        for acc, r in (by_acc or {}).items():
            key32 = next((k for k in r if str(k).startswith("rate_for_")), None)
            label = key32.removeprefix("rate_for_").replace("_vs_", " vs ") if key32 else ""
            t.add_row(
                _text(prec), _text(acc), _pj(r.get("energy_at_rate_0_pj")), _pj(r.get("energy_per_unit_rate_pj")),
                _rate(r.get(key32)) if key32 else NA, _text(f"{label}: {r.get('note_32x', '')}" if key32 else ""),
                _rate(r.get("rate_twin_parity")), _text(r.get("note_twin", "")),
            )  # fmt: skip
    return t


def sensitivity_tables(audit: Mapping) -> list[Table]:
    sens = audit.get("sensitivity") or {}
    out = []
    by_rate = sens.get("by_rate") or []
    cols = _ratio_columns(by_rate)
    prec = sens.get("counterfactual_precision", audit.get("precision", "?"))
    t = Table(title=f"sensitivity to a uniform firing rate (spike-input counterfactual, {prec}): ANN / SpikeGPT energy")
    t.add_column("rate", justify="right")
    t.add_column("SpikeGPT pJ/token", justify="right")
    for c in cols:
        t.add_column(_text(c.removeprefix("ratio_vs_")), justify="right")
    for r in by_rate:
        t.add_row(_rate(r.get("rate")), _pj(r.get("spikegpt_pj")), *[_ratio(r.get(c)) for c in cols])
    out.append(t)
    by_prec = sens.get("by_precision") or []
    cols = _ratio_columns(by_prec)
    t = Table(title="sensitivity to the ANN's precision (SpikeGPT as executed): ANN / SpikeGPT energy")
    t.add_column("ANN precision")
    t.add_column("SpikeGPT precision")
    t.add_column("SpikeGPT pJ/token", justify="right")
    for c in cols:
        t.add_column(_text(c.removeprefix("ratio_vs_")), justify="right")
    for r in by_prec:
        t.add_row(_text(r.get("ann_precision")), _text(r.get("spikegpt_precision")), _pj(r.get("spikegpt_pj")),
                  *[_ratio(r.get(c)) for c in cols])  # fmt: skip
    out.append(t)
    return out


def paper_mode_lines(audit: Mapping) -> list[str]:
    lines = []
    for p in audit.get("paper_mode") or []:
        lines.append(f"paper mode {p.get('setting', '?')}: {_ratio(p.get('ratio'))} "
                     f"(projection-only variant {_ratio(p.get('projection_only_ratio'))})")  # fmt: skip
    return lines


def decomposition_table(audit: Mapping) -> Table | None:
    """The gap from the paper's figure for this model to the measured one, factor by factor (Shapley shares,
    independent of the order of the steps; the range is the factor's effect over every order)."""
    d = audit.get("decomposition")
    if not d:
        return None
    t = Table(title=f"from the paper's figure to the measured one ({d.get('precision', '?')}): comparator / SpikeGPT "
              "energy, multiplicative shares (Shapley)")  # fmt: skip
    for col in ("factor", "share", "range over every order", "in the paper's metric", "what"):
        t.add_column(col, justify="right" if col in ("share", "range over every order") else "left")
    ctx = finite(d.get("paper_figure_context"))
    t.add_row(f"paper's accounting for this model (at {f'{ctx:,.0f}' if ctx else NA} tokens)",
              _ratio(d.get("paper_figure")), "", "", _text(d.get("metric")))  # fmt: skip
    for r in d.get("factors") or []:
        lo, hi = (r.get("range") or [None, None])[:2]
        t.add_row(_text(r.get("factor")), _ratio(r.get("share")), f"{_ratio(lo)} to {_ratio(hi)}",
                  "yes" if r.get("in_paper_metric") else "no", _text(r.get("description")))  # fmt: skip
    t.add_row("measured in the paper's metric", _ratio(d.get("measured_paper_metric")), "", "", "")
    t.add_row("measured as executed", _ratio(d.get("measured_as_executed")), "", "", "")
    t.add_row("measured with memory traffic", _ratio(d.get("measured_as_executed_memory")), "", "", "")
    return t


def print_audit(audit: Mapping, console) -> None:
    """Everything ``spike-energy audit`` prints, from an audit dict."""
    dec = decomposition_table(audit)
    if dec is not None:
        console.print(dec)
    console.print(waterfall_table(audit))
    console.print(break_even_table(audit))
    for t in sensitivity_tables(audit):
        console.print(t)
    for line in paper_mode_lines(audit):
        console.print(escape(line))
