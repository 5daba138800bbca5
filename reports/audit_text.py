"""The audit as terminal tables (``spike-energy audit``): waterfall, break-even, sensitivity.

Rendered from the ``audit`` dict of a summary.json (or of a fresh run), never from live
objects, so ``spike-energy audit summary.json`` prints in seconds. Every number passes
through ``finite``: None, NaN and inf print as ``n/a``.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich import box
from rich.markup import escape
from rich.table import Table

from reports.labels import beyond, model_name
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


WIDTH = 80  # the terminal tables fit 80 columns: numbers are never cut, long names wrap


def _table(title: str) -> Table:
    return Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False,
                 title_justify="left", expand=False)  # fmt: skip


def _short(name) -> str:
    """A baseline's column header: the stripped twin named as the report names it, long names kept whole
    (they wrap at hyphens, never cut)."""
    return _text(model_name(name, short=True))


def waterfall_table(audit: Mapping) -> Table:
    steps = audit.get("waterfall") or []
    names: list[str] = []
    for s in steps:
        for b in s.get("ratio") or {}:
            if b not in names:
                names.append(b)
    t = _table(f"audit waterfall ({audit.get('precision', '?')}): SpikeGPT pJ/token; ANN energy / SpikeGPT energy")
    t.add_column("step", ratio=1, min_width=14)
    t.add_column("SpikeGPT pJ/token", justify="right", no_wrap=True)
    for b in names:
        t.add_column(_short(b), justify="right", no_wrap=False, min_width=7)
    for s in steps:
        ratio = s.get("ratio") or {}
        t.add_row(_text(s.get("step")), _pj(s.get("spikegpt_pj_per_token")), *[_ratio(ratio.get(b)) for b in names])
    return t


def _beyond(x) -> str:
    """A break-even rate as the report says it: 'none (< 0)', 'every (> 1)' or the rate."""
    return beyond(x, na=NA)


def break_even_table(audit: Mapping) -> Table:
    """Per precision and accounting: the uniform firing rate at which the spike-input counterfactual reaches
    the claim against the reference ANN, parity with the stripped twin and with the int8 ANN. A rate below 0
    or above 1 cannot happen: "none" (no rate reaches it) or "every" (even r = 1 does)."""
    claim = audit.get("claim", 32.2)
    t = _table(f"break-even firing rates of the spike-input counterfactual, at a uniform rate r from 0 to 1: "
               f"{claim}x against the reference ANN, parity with the stripped twin and with the int8 ANN")  # fmt: skip
    t.add_column("priced", min_width=10)
    t.add_column("pJ/token at r = 0", justify="right", min_width=7)
    t.add_column("pJ per unit of r", justify="right", min_width=7)
    t.add_column(f"r for {claim}x", justify="right", min_width=11)
    t.add_column("r for twin parity", justify="right", min_width=11)
    t.add_column("r for int8 ANN parity", justify="right", min_width=11)
    for prec, by_acc in (audit.get("break_even") or {}).items():
        for acc, r in (by_acc or {}).items():
            key32 = next((k for k in r if str(k).startswith("rate_for_")), None)
            t.add_row(
                _text(f"{prec}, {acc}"), _pj(r.get("energy_at_rate_0_pj")), _pj(r.get("energy_per_unit_rate_pj")),
                _beyond(r.get(key32)) if key32 else NA, _beyond(r.get("rate_twin_parity")),
                _beyond(r.get("rate_int8_ann_parity")),
            )  # fmt: skip
    t.caption = ('"none (< 0)": no rate reaches it (the rate would be below 0); "every (> 1)": even r = 1 does '
                 "(the rate would be above 1)")  # fmt: skip
    t.caption_justify = "left"
    return t


def break_even_notes(audit: Mapping) -> list[str]:
    """What the rates mean, one line each (wrapped by the console), at the audit's own precision."""
    claim = audit.get("claim", 32.2)
    prec = audit.get("precision")
    out = []
    for p, by_acc in (audit.get("break_even") or {}).items():
        if prec is not None and p != prec:
            continue
        for acc, r in (by_acc or {}).items():
            key32 = next((k for k in r if str(k).startswith("rate_for_")), None)
            vs = f" vs {key32.split('_vs_', 1)[-1]}" if key32 else ""
            notes = ((f"{claim}x{vs}", r.get("note_32x")), ("twin parity", r.get("note_twin")),
                     ("int8 ANN parity", r.get("note_int8_ann")))  # fmt: skip
            for what, note in notes:
                if note:
                    out.append(f"{p}, {acc}, {what}: {note}.")
    return out


def sensitivity_tables(audit: Mapping) -> list[Table]:
    sens = audit.get("sensitivity") or {}
    out = []
    by_rate = sens.get("by_rate") or []
    cols = _ratio_columns(by_rate)
    prec = sens.get("counterfactual_precision", audit.get("precision", "?"))
    t = _table(f"sensitivity to a uniform firing rate (spike-input counterfactual, {prec}): ANN / SpikeGPT energy")
    t.add_column("rate", justify="right", no_wrap=True)
    t.add_column("SpikeGPT pJ/token", justify="right", min_width=9)
    for c in cols:
        t.add_column(_short(c.removeprefix("ratio_vs_")), justify="right", min_width=7)
    for r in by_rate:
        t.add_row(_rate(r.get("rate")), _pj(r.get("spikegpt_pj")), *[_ratio(r.get(c)) for c in cols])
    out.append(t)
    by_prec = sens.get("by_precision") or []
    cols = _ratio_columns(by_prec)
    t = _table("sensitivity to the ANN's precision (SpikeGPT as executed): ANN / SpikeGPT energy")
    t.add_column("ANN precision", no_wrap=True)
    t.add_column("SpikeGPT precision", min_width=5)
    t.add_column("SpikeGPT pJ/token", justify="right", min_width=9)
    for c in cols:
        t.add_column(_short(c.removeprefix("ratio_vs_")), justify="right", min_width=7)
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
    t = _table(f"from the paper's figure to the measured one ({d.get('precision', '?')}): comparator / SpikeGPT "
               "energy, multiplicative shares (Shapley; the range is over every order of the steps; * in the "
               "paper's metric)")  # fmt: skip
    t.add_column("factor", ratio=2, min_width=14, overflow="fold")
    t.add_column("share", justify="right", no_wrap=True)
    t.add_column("range", justify="right", min_width=9, overflow="fold")
    t.add_column("what", ratio=3, min_width=14, overflow="fold")
    ctx = finite(d.get("paper_figure_context"))
    t.add_row(f"paper's accounting for this model (at {f'{ctx:,.0f}' if ctx else NA} tokens)",
              _ratio(d.get("paper_figure")), "", _text(d.get("metric")))  # fmt: skip
    for r in d.get("factors") or []:
        lo, hi = (r.get("range") or [None, None])[:2]
        star = " *" if r.get("in_paper_metric") else ""
        t.add_row(_text(r.get("factor")) + star, _ratio(r.get("share")), f"{_ratio(lo)} to {_ratio(hi)}",
                  _text(r.get("description")))  # fmt: skip
    t.add_row("measured in the paper's metric", _ratio(d.get("measured_paper_metric")), "", "")
    t.add_row("measured as executed", _ratio(d.get("measured_as_executed")), "", "")
    t.add_row("measured as executed + memory (SRAM)", _ratio(d.get("measured_as_executed_memory")), "", "")
    return t


def print_audit(audit: Mapping, console) -> None:
    """Everything ``spike-energy audit`` prints, from an audit dict."""
    dec = decomposition_table(audit)
    if dec is not None:
        console.print(dec)
    console.print(waterfall_table(audit))
    console.print(break_even_table(audit))
    for line in break_even_notes(audit):
        console.print(escape(line))
    for t in sensitivity_tables(audit):
        console.print(t)
    for line in paper_mode_lines(audit):
        console.print(escape(line))
