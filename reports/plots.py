"""The report's figures: one function per figure, plain data in, a matplotlib ``Figure`` out.

Every function takes plain data from summary.json (dicts, lists, numbers; ``None`` where
the producer wrote NaN) and returns a ``Figure``. When there is nothing to draw (no LIF
layers, no baselines, every value null) it raises ``NoData`` with a short reason, which
the report shows in place of the figure. ``figure_to_data_uri`` inlines a figure as an
SVG (text as paths, so it looks the same in every browser) or PNG data URI.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot global state) under the
Agg backend, inside one ``rc_context`` so the caller's matplotlib settings are untouched.
"""

from __future__ import annotations

import base64
import functools
import io
import math
import re
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from reports.labels import ENERGY_CATEGORIES, energy_categories, model_name, stage_category  # noqa: E402, F401
from reports.schema import finite  # noqa: E402

PAPER_RATE = 0.15
PAPER_CLAIM = 32.2

INK = "#1f2937"
MUTED = "#6b7280"
GRID = "#e5e7eb"
CLAIM = "#dc2626"  # the paper's numbers are drawn in red, dashed
LIF1 = "#2563eb"
LIF2 = "#f59e0b"
SPIKEGPT = "#2563eb"
# baselines get fixed colours in this order; SpikeGPT is always blue; no red (the paper's numbers are red)
SERIES = ("#f59e0b", "#10b981", "#8b5cf6", "#14b8a6", "#ec4899", "#64748b", "#84cc16", "#0ea5e9", "#a16207")
# each known model keeps its colour in every figure
MODEL_COLORS = {
    "SpikeGPT": SPIKEGPT,
    "rwkv-twin": "#f59e0b",
    "transformer-same-dims": "#10b981",
    "transformer-same-dims-relu": "#a16207",
    "transformer-same-dims-int8": "#84cc16",
    "gpt2-small": "#8b5cf6",
    "gpt2-medium": "#ec4899",
    "transformer-paper-table2": "#64748b",
}


def model_color(name: str, k: int = 0) -> str:
    """A model's colour: fixed for the known ones, else from SERIES by position."""
    return MODEL_COLORS.get(name) or SERIES[k % len(SERIES)]


KIND_COLORS = {
    "effective_mac": "#2563eb",
    "mac": "#1e40af",
    "ac": "#10b981",
    "add": "#93c5fd",
    "mul": "#f59e0b",
    "max": "#a78bfa",
    "exp": "#ef4444",
    "div": "#be123c",
    "sigmoid": "#ec4899",
    "rsqrt": "#14b8a6",
    "lookup": "#64748b",
}
KIND_LABELS = {
    "effective_mac": "MAC, float input (zero operands skipped)",
    "mac": "MAC, float input",
    "ac": "AC, spike input",
}
SMALL = 0.01  # a kind under 1% of its panel is too small to see: listed under the legend, not drawn
EXTRA_COLORS = ("#84cc16", "#0ea5e9", "#f97316", "#6366f1", "#a3a3a3", "#d946ef")

STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.titlepad": 8,
    "axes.labelsize": 9.5,
    "axes.labelcolor": INK,
    "axes.edgecolor": "#9ca3af",
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": GRID,
    "grid.linewidth": 0.7,
    "xtick.color": "#4b5563",
    "ytick.color": "#4b5563",
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "legend.frameon": False,
    "legend.fontsize": 8.5,
    "text.color": INK,
    "svg.fonttype": "path",
    "svg.hashsalt": "spike-energy",  # reproducible ids in the SVG
    "figure.dpi": 110,
    "savefig.dpi": 110,
}

WIDTH = 8.0  # inches; the report scales figures to its column width
_BLOCK_LIF = re.compile(r"^blocks\.(\d+)\.(lif\d+)$")


class NoData(ValueError):
    """Nothing to draw; the message says why (shown in the report instead of the figure)."""


def _styled(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


_num = finite


def _si_tick(x: float, _pos=None) -> str:
    if x == 0:
        return "0"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m")):
        if abs(x) >= scale:
            v = x / scale
            return f"{v:.0f}{prefix}" if abs(v - round(v)) < 1e-9 else f"{v:.3g}{prefix}"
    return f"{x:.2g}"


def _energy_tick(pj: float, _pos=None) -> str:
    """pJ as joules with an SI prefix: 17909 -> '17.9 nJ'."""
    if pj == 0:
        return "0 J"
    for scale, unit in ((1e12, "J"), (1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ"), (1, "pJ"), (1e-3, "fJ")):
        if abs(pj) >= scale or unit == "fJ":
            v = pj / scale
            return f"{v:.0f} {unit}" if abs(v - round(v)) < 1e-9 else f"{v:.3g} {unit}"
    return f"{pj:.3g} pJ"


def _times_tick(x: float, _pos=None) -> str:
    if x >= 1:
        return f"{x:,.0f}×"
    return f"{x:.3g}×"


def _log_axis(axis, formatter=_si_tick):
    axis.set_major_formatter(mticker.FuncFormatter(formatter))
    axis.set_minor_formatter(mticker.NullFormatter())


def _dense_log_ticks(axis, lo: float, hi: float):
    """Under ~2 decades a log axis shows one or two labels; label 1-2-5 steps instead."""
    if lo > 0 and hi / lo < 300:
        axis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))


def figure_to_data_uri(fig: Figure, fmt: str = "svg") -> str:
    """The figure as a base64 data URI: ``svg`` (text as paths) or ``png`` (144 dpi, sharp when scaled up)."""
    buf = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        if fmt == "svg":
            fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight", pad_inches=0.08)
            mime = "image/svg+xml"
        elif fmt == "png":
            fig.savefig(buf, format="png", dpi=144, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.08)
            mime = "image/png"
        else:
            raise ValueError(f"fmt must be 'svg' or 'png', got {fmt!r}")
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


@_styled
def warm_up_figure() -> Figure:
    """A small figure with a title, labels, a legend and log ticks: drawing it loads what every report figure
    needs (fonts, glyph caches), e.g. in a helper process before the real figures arrive."""
    fig = Figure(figsize=(2, 1.5))
    ax = fig.subplots()
    ax.plot([1, 10, 100], [1, 2, 3], label="warm-up")
    ax.set_xscale("log")
    ax.set_title("Warm-up")
    ax.set_xlabel("pJ per token")
    ax.legend()
    return fig


def _block_lif(rates: Mapping[str, object]) -> dict[str, dict[int, float | None]]:
    """{'lif1': {block: rate}, 'lif2': {...}} from ``blocks.{i}.lif{j}`` keys."""
    out: dict[str, dict[int, float | None]] = {}
    for name, v in rates.items():
        m = _BLOCK_LIF.match(str(name))
        if m:
            out.setdefault(m.group(2), {})[int(m.group(1))] = _num(v)
    return dict(sorted(out.items()))


def _thin_ticks(ax, n: int, max_labels: int = 24):
    step = max(1, math.ceil(n / max_labels))
    ax.set_xticks(range(0, n, step))


@_styled
def firing_rate_by_layer(rates: Mapping[str, object], paper_rate: float = PAPER_RATE) -> Figure:
    """Per-block firing rate of lif1 (after time mixing) and lif2 (after channel mixing),
    with the paper's assumed R as a dashed line. ``rates``: summary['firing_rate']."""
    by_kind = _block_lif(rates)
    if not any(v is not None for d in by_kind.values() for v in d.values()):
        raise NoData("no firing rates of LIF layers (blocks.{i}.lif1 / lif2) in this summary")
    blocks = sorted({b for d in by_kind.values() for b in d})
    n = len(blocks)
    fig = Figure(figsize=(WIDTH, 3.0), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(len(by_kind), 1)
    labels = {"lif1": "lif1 (after time mixing)", "lif2": "lif2 (after channel mixing)"}
    colors = {"lif1": LIF1, "lif2": LIF2}
    top = paper_rate
    for k, (kind, d) in enumerate(by_kind.items()):
        ys = np.array([np.nan if d.get(b) is None else d[b] for b in blocks], dtype=float)
        xs = np.arange(n) + (k - (len(by_kind) - 1) / 2) * width
        ax.bar(
            xs, ys, width=width * 0.92, color=colors.get(kind, SERIES[k % len(SERIES)]), label=labels.get(kind, kind)
        )
        if np.isfinite(ys).any():
            top = max(top, float(np.nanmax(ys)))
    overall = _num(rates.get("overall"))
    ax.axhline(paper_rate, color=CLAIM, ls="--", lw=1.3, label=f"paper's assumed R = {paper_rate:g}")
    if overall is not None:
        ax.axhline(overall, color=INK, ls=":", lw=1.1, label=f"measured overall = {overall:.3f}")
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(0, top * 1.22)
    ax.set_xticks(range(n))
    ax.set_xticklabels([str(b) for b in blocks])
    if n > 24:
        _thin_ticks(ax, n)
        ax.set_xticklabels([str(blocks[i]) for i in ax.get_xticks()])
    ax.set_xlabel("block")
    ax.set_ylabel("firing rate (spikes / neuron / token)")
    ax.set_title("Firing rate per LIF layer")
    ax.grid(axis="x", visible=False)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=8)
    return fig


@_styled
def neuron_rate_histogram(
    histograms: Mapping[str, Mapping[str, Sequence]],
    dead_fraction: Mapping[str, object] | None = None,
    saturated_fraction: Mapping[str, object] | None = None,
    saturated_rate: float | None = 0.5,
) -> Figure:
    """Per-neuron firing rates pooled over blocks (lif1 and lif2 apart), with dead
    (rate 0) and saturated (rate > saturated_rate) neurons marked by their fractions."""
    groups: dict[str, np.ndarray] = {}
    edges = None
    n_by_layer: dict[str, float] = {}
    for name, h in histograms.items():
        counts, e = h.get("counts") or [], h.get("edges") or []
        if not counts or len(e) != len(counts) + 1:
            continue
        c = np.array([_num(v) or 0.0 for v in counts], dtype=float)
        if edges is None:
            edges = np.array(e, dtype=float)
        elif len(e) != len(edges) or not np.allclose(e, edges):
            continue  # a layer binned differently cannot be pooled
        m = _BLOCK_LIF.match(str(name))
        kind = m.group(2) if m else "other"
        groups[kind] = groups.get(kind, 0) + c
        n_by_layer[name] = float(c.sum())
    if edges is None or not groups or sum(n_by_layer.values()) == 0:
        raise NoData("no per-neuron firing-rate histograms in this summary")

    def pooled(frac: Mapping[str, object] | None) -> float | None:
        vals = [(_num(frac.get(k)), n) for k, n in n_by_layer.items()] if frac else []
        vals = [(v, n) for v, n in vals if v is not None]
        total = sum(n for _, n in vals)
        return sum(v * n for v, n in vals) / total if total else None

    dead, sat = pooled(dead_fraction), pooled(saturated_fraction)
    fig = Figure(figsize=(WIDTH, 3.0), layout="constrained")
    ax = fig.add_subplot()
    total = sum(n_by_layer.values())
    colors = {"lif1": LIF1, "lif2": LIF2, "other": MUTED}
    labels = {"lif1": "lif1, all blocks", "lif2": "lif2, all blocks", "other": "other spiking layers"}
    widths = np.diff(edges)
    kinds = sorted(groups)
    w = 1.0 / len(kinds)
    for k, kind in enumerate(kinds):
        ax.bar(
            edges[:-1] + widths * k * w,
            groups[kind] / total,
            width=widths * w * 0.92,
            align="edge",
            color=colors.get(kind, SERIES[k % len(SERIES)]),
            label=labels.get(kind, kind),
        )
    top = max(float((g / total).max()) for g in groups.values())
    sr = _num(saturated_rate)
    notes = []
    if sr is not None:
        ax.axvspan(sr, edges[-1], color=CLAIM, alpha=0.06, lw=0)
        ax.axvline(sr, color=CLAIM, lw=1, ls="--")
        notes.append(f"saturated (rate > {sr:g}): {sat:.1%} of neurons" if sat is not None else "")
    ax.axvline(PAPER_RATE, color=MUTED, lw=1, ls=":", label=f"paper's R = {PAPER_RATE:g}")
    if dead is not None:
        notes.insert(0, f"dead (rate 0): {dead:.1%} of neurons")
    text = "\n".join(t for t in notes if t)
    if text:
        ax.text(0.99, 0.95, text, transform=ax.transAxes, ha="right", va="top", fontsize=9,
                bbox={"boxstyle": "round,pad=0.4", "fc": "white", "ec": GRID})  # fmt: skip
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(0, top * 1.15)
    ax.yaxis.set_major_formatter(mticker.PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("firing rate of one neuron over the text")
    ax.set_ylabel("share of neurons")
    ax.set_title("Per-neuron firing rates")
    ax.grid(axis="x", visible=False)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=8)
    return fig


@_styled
def spike_raster(rasters: Mapping[str, Sequence[Sequence[int]]], max_panels: int = 4) -> Figure:
    """Spikes of sampled neurons over tokens, one panel per layer (tokens x neurons, 0/1)."""
    panels = []
    for name, r in rasters.items():
        a = np.array(r if r is not None else [], dtype=float)
        if a.ndim == 2 and a.size:
            panels.append((name, np.nan_to_num(a)))
    if not panels:
        raise NoData("no spike rasters in this summary")
    panels = panels[:max_panels]
    fig = Figure(figsize=(WIDTH, 0.55 + 1.45 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, a) in zip(axes, panels):
        ax.imshow(a.T, aspect="auto", cmap="Blues", vmin=0, vmax=1.15, interpolation="nearest", origin="lower")
        ax.grid(False)
        for s in ("left", "bottom"):
            ax.spines[s].set_visible(False)
        ax.set_ylabel("neuron", fontsize=8)
        ax.set_title(f"{name}   (rate in this window {a.mean():.3f})", fontsize=9, fontweight="normal")
        ax.tick_params(length=2)
    axes[-1].set_xlabel("token")
    fig.suptitle("Spike raster: sampled neurons over the first tokens", x=0.01, ha="left",
                 fontsize=10.5, fontweight="bold")  # fmt: skip
    return fig


@_styled
def firing_rate_by_position(positions: Mapping[str, Sequence], window: int = 16) -> Figure:
    """Firing rate over token position (a rolling mean), lif1 and lif2 averaged over blocks."""
    series: dict[str, list[np.ndarray]] = {}
    for name, v in positions.items():
        a = np.array([np.nan if _num(x) is None else _num(x) for x in (v or [])], dtype=float)
        if not np.isfinite(a).any():
            continue
        m = _BLOCK_LIF.match(str(name))
        series.setdefault(m.group(2) if m else "other", []).append(a)
    if not series:
        raise NoData("no firing rates by token position in this summary")
    fig = Figure(figsize=(WIDTH, 2.8), layout="constrained")
    ax = fig.add_subplot()
    colors = {"lif1": LIF1, "lif2": LIF2, "other": MUTED}
    shown = w = 0
    for kind, arrs in sorted(series.items()):
        n = min(len(a) for a in arrs)
        shown = max(shown, n)
        stack = np.vstack([a[:n] for a in arrs])
        w = max(1, min(window, n // 4 or 1))
        kernel = np.ones(w) / w
        x = np.arange(n - w + 1) + (w - 1) / 2  # each rolling mean at the centre of its window
        for a in stack:
            ax.plot(x, np.convolve(np.nan_to_num(a), kernel, mode="valid"), color=colors.get(kind, MUTED), lw=0.6,
                    alpha=0.25)  # fmt: skip
        mean = np.convolve(np.nan_to_num(np.nanmean(stack, axis=0)), kernel, mode="valid")
        ax.plot(x, mean, color=colors.get(kind, MUTED), lw=2, label=f"{kind}, mean of {len(arrs)} layers")
    ax.axhline(PAPER_RATE, color=CLAIM, ls="--", lw=1.2, label=f"paper's R = {PAPER_RATE:g}")
    ax.set_ylim(bottom=0)
    ax.set_xlim(0, shown)
    ax.set_xlabel(f"token position in the sequence: all {shown:,} positions (rolling mean over {w} tokens)")
    ax.set_ylabel("firing rate")
    ax.set_title("Firing rate by token position")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=8)
    return fig


@_styled
def relu_sq_sparsity(zero_fraction: Mapping[str, object]) -> Figure:
    """Share of exact zeros after ReLU^2 in each block's channel mix (the value projection's input)."""
    items = []
    for name, v in zero_fraction.items():
        m = re.match(r"^blocks\.(\d+)\.", str(name))
        items.append((int(m.group(1)) if m else len(items), _num(v)))
    items = [(b, v) for b, v in sorted(items) if v is not None]
    if not items:
        raise NoData("no ReLU² layers measured in this summary")
    fig = Figure(figsize=(WIDTH, 2.6), layout="constrained")
    ax = fig.add_subplot()
    xs = np.arange(len(items))
    ys = [v for _, v in items]
    ax.bar(xs, ys, color="#10b981", width=0.7)
    if len(items) <= 24:
        for x, y in zip(xs, ys):
            ax.text(x, y + 0.02, f"{y:.0%}", ha="center", va="bottom", fontsize=8, color=INK)
    ax.set_xticks(xs)
    ax.set_xticklabels([str(b) for b, _ in items])
    if len(items) > 24:
        _thin_ticks(ax, len(items))
        ax.set_xticklabels([str(items[i][0]) for i in ax.get_xticks()])
    ax.set_ylim(0, 1.12)
    ax.yaxis.set_major_formatter(mticker.PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("block")
    ax.set_ylabel("zeros after ReLU²")
    ax.set_title("ReLU² sparsity: zeros the channel-mix value projection can skip")
    ax.grid(axis="x", visible=False)
    return fig


def _layer_group(name: str) -> str:
    m = re.match(r"^blocks\.(\d+)\.", name)
    return m.group(1) if m else name


@_styled
def ops_by_layer(ops_by_layer: Mapping[str, Mapping[str, object]]) -> Figure:
    """Ops per token by block, stacked by kind: synaptic ops (MAC / AC) on top, the
    elementwise primitives below (they are two orders of magnitude smaller)."""
    groups: dict[str, dict[str, float]] = {}
    for layer, ops in ops_by_layer.items():
        g = groups.setdefault(_layer_group(str(layer)), {})
        for kind, v in (ops or {}).items():
            v = _num(v)
            if v:
                g[kind] = g.get(kind, 0.0) + v
    kinds = {k for g in groups.values() for k in g}
    if not groups or not kinds:
        raise NoData("no ops per layer in this summary")
    synaptic = [k for k in ("effective_mac", "ac") if k in kinds]
    if "mac" in kinds and "effective_mac" not in kinds:
        synaptic.insert(0, "mac")
    elementwise = sorted(
        (k for k in kinds if k not in {"mac", "effective_mac", "ac"}),
        key=lambda k: -sum(g.get(k, 0.0) for g in groups.values()),
    )
    names = list(groups)
    xs = np.arange(len(names))
    panels = [(synaptic, "projections: MACs and ACs / token"), (elementwise, "elementwise ops / token")]
    panels = [p for p in panels if p[0]]
    fig = Figure(figsize=(WIDTH, 1.2 + 2.2 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    extra = iter(EXTRA_COLORS * 4)
    for ax, (ks, ylabel) in zip(axes, panels):
        totals = {k: sum(groups[n].get(k, 0.0) for n in names) for k in ks}
        whole = sum(totals.values())
        small = [k for k in ks if whole and totals[k] < SMALL * whole]
        bottom = np.zeros(len(names))
        for k in ks:
            if k in small:
                continue
            ys = np.array([groups[n].get(k, 0.0) for n in names])
            color = KIND_COLORS.get(k) or next(extra)
            ax.bar(xs, ys, bottom=bottom, width=0.72, color=color, label=KIND_LABELS.get(k, k))
            bottom += ys
        ax.set_ylabel(ylabel)
        ax.yaxis.set_major_formatter(mticker.FuncFormatter(_si_tick))
        ax.grid(axis="x", visible=False)
        legend = ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        if small:
            legend.set_title(f"not drawn (< {SMALL:.0%}):\n" + textwrap.fill(", ".join(small), 22), prop={"size": 7.5})
            legend._legend_box.align = "left"
    axes[0].set_title("Ops per token by block, stacked by kind (MAC: a multiply-accumulate on a float input)")
    axes[-1].set_xticks(xs)
    axes[-1].set_xticklabels(names, fontsize=8)
    if len(names) > 14:  # block numbers stay upright; the names outside the blocks lean
        for label in axes[-1].get_xticklabels():
            if not label.get_text().isdigit():
                label.set_rotation(40)
                label.set_horizontalalignment("right")
                label.set_rotation_mode("anchor")
    axes[-1].set_xlabel("block (numbers) and the layers outside the blocks")
    return fig


@_styled
def energy_by_scenario(
    breakdown: Mapping[str, Mapping[str, Mapping]], labels: Mapping[str, str] | None = None
) -> Figure:
    """Energy per token in each scenario: the total (log scale) and what it is made of
    (``by_stage`` grouped into a handful of categories, as shares of the total)."""
    labels = labels or {}
    rows = []
    for scen, b in breakdown.items():
        cats = energy_categories((b or {}).get("by_stage") or {})
        total = sum(cats.values())
        if total > 0:
            rows.append((labels.get(scen, scen), cats, total))
    if not rows:
        raise NoData("no energy breakdown in this summary")
    rows = rows[::-1]  # first scenario on top
    ys = np.arange(len(rows))
    fig = Figure(figsize=(WIDTH, 0.9 + 0.5 * len(rows) + 0.5), layout="constrained")
    gs = fig.add_gridspec(1, 2, width_ratios=[1, 1.35])
    ax_tot, ax_mix = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
    names = [textwrap.fill(r[0], 24) for r in rows]
    totals = np.array([r[2] for r in rows])
    ax_tot.barh(ys, totals, color=SPIKEGPT, height=0.6)
    ax_tot.set_xscale("log")
    _log_axis(ax_tot.xaxis, _energy_tick)
    ax_tot.set_xlim(totals.min() / 3, totals.max() * 20)
    for y, t in zip(ys, totals):
        ax_tot.text(t * 1.15, y, _energy_tick(t), va="center", fontsize=8)
    ax_tot.set_yticks(ys)
    ax_tot.set_yticklabels(names, fontsize=8.5)
    ax_tot.set_xlabel("energy / token (log scale)")
    ax_tot.set_title("Energy per token")
    ax_tot.grid(axis="y", visible=False)
    present = [c for c, _ in ENERGY_CATEGORIES if any(c in r[1] for r in rows)]
    color = dict(ENERGY_CATEGORIES)
    left = np.zeros(len(rows))
    for c in present:
        share = np.array([r[1].get(c, 0.0) / r[2] for r in rows])
        ax_mix.barh(ys, share, left=left, color=color[c], height=0.6, label=c)
        for y, lft, s in zip(ys, left, share):
            if s >= 0.08:
                ax_mix.text(lft + s / 2, y, f"{s:.0%}", ha="center", va="center", fontsize=7.5,
                            color="white" if c not in ("memory: state, membranes, embedding",) else INK)  # fmt: skip
        left += share
    ax_mix.set_xlim(0, 1)
    ax_mix.set_yticks(ys)
    ax_mix.set_yticklabels([])
    ax_mix.xaxis.set_major_formatter(mticker.PercentFormatter(1.0, decimals=0))
    ax_mix.set_title("What it is made of")
    ax_mix.grid(axis="y", visible=False)
    fig.legend(*ax_mix.get_legend_handles_labels(), loc="outside lower center", ncols=min(len(present), 4), fontsize=8)
    return fig


@_styled
def audit_waterfall(waterfall: Sequence[Mapping], claim: float = PAPER_CLAIM) -> Figure:
    """From the paper's accounting to the measured one, step by step: SpikeGPT's pJ/token
    (top) and the ANN/SpikeGPT energy ratio against each baseline (bottom, log scale)."""
    steps = [s for s in waterfall or [] if _num(s.get("spikegpt_pj_per_token")) is not None]
    if not steps:
        raise NoData("no audit waterfall in this summary")
    xs = np.arange(len(steps))
    fig = Figure(figsize=(WIDTH, 5.6), layout="constrained")
    ax_e, ax_r = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1.3])
    pj = np.array([_num(s["spikegpt_pj_per_token"]) for s in steps])
    ax_e.bar(xs, pj, color=SPIKEGPT, width=0.6)
    ax_e.set_yscale("log")
    _log_axis(ax_e.yaxis, _energy_tick)
    ax_e.set_ylim(pj.min() / 2.5, pj.max() * 6)
    for x, v in zip(xs, pj):
        ax_e.text(x, v * 1.25, _energy_tick(v), ha="center", va="bottom", fontsize=8)
    ax_e.set_ylabel("SpikeGPT energy / token")
    ax_e.set_title("Audit waterfall: from the paper's accounting to the measured one")
    ax_e.grid(axis="x", visible=False)
    names = sorted({b for s in steps for b in (s.get("ratio") or {})}, key=lambda b: (b != "rwkv-twin", b))
    lo, hi = claim, claim
    for k, b in enumerate(names):
        r = np.array([np.nan if _num((s.get("ratio") or {}).get(b)) is None else s["ratio"][b] for s in steps])
        if not np.isfinite(r).any():
            continue
        lo, hi = min(lo, np.nanmin(r)), max(hi, np.nanmax(r))
        ax_r.plot(xs, r, marker="o", ms=5, lw=1.8, color=model_color(b, k), label=f"vs {model_name(b, short=True)}")
    ax_r.axhline(claim, color=CLAIM, ls="--", lw=1.3, label=f"paper: {claim:g}× (energy-weighted ops)")
    ax_r.axhline(1.0, color=INK, ls="-", lw=0.9, label="1× (break-even)")
    ax_r.set_yscale("log")
    _log_axis(ax_r.yaxis, _times_tick)
    ax_r.set_ylim(min(lo, 1.0) / 2.5, max(hi, claim) * 2.5)
    _dense_log_ticks(ax_r.yaxis, min(lo, 1.0) / 2.5, max(hi, claim) * 2.5)
    ax_r.set_ylabel("ANN energy / SpikeGPT energy")
    ax_r.grid(axis="x", visible=False)
    ax_r.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax_r.set_xticks(xs)
    ax_r.set_xticklabels([textwrap.fill(f"{i + 1}. {s.get('step', '')}", 11) for i, s in enumerate(steps)],
                         fontsize=8)  # fmt: skip
    return fig


@_styled
def sensitivity_curves(
    by_rate: Sequence[Mapping], claim: float = PAPER_CLAIM, measured_rate: float | None = None
) -> Figure:
    """ANN/SpikeGPT energy ratio against each baseline as the uniform firing rate varies
    (spike-input counterfactual: every projection fed spikes at that rate)."""
    rows = [r for r in by_rate or [] if _num(r.get("rate")) is not None]
    names = sorted({k[len("ratio_vs_") :] for r in rows for k in r if k.startswith("ratio_vs_")},
                   key=lambda b: (b != "rwkv-twin", b))  # fmt: skip
    if not rows or not names:
        raise NoData("no firing-rate sensitivity in this summary (it needs at least one baseline)")
    rates = np.array([_num(r["rate"]) for r in rows])
    fig = Figure(figsize=(WIDTH, 3.6), layout="constrained")
    ax = fig.add_subplot()
    lo, hi = 1.0, claim
    for k, b in enumerate(names):
        ys = np.array([np.nan if _num(r.get(f"ratio_vs_{b}")) is None else r[f"ratio_vs_{b}"] for r in rows])
        ok = np.isfinite(ys) & (ys > 0)
        if not ok.any():
            continue
        lo, hi = min(lo, ys[ok].min()), max(hi, ys[ok].max())
        ax.plot(rates[ok], ys[ok], marker="o", ms=3.5, lw=1.8, color=model_color(b, k),
                label=f"vs {model_name(b, short=True)}")  # fmt: skip
    ax.axhline(claim, color=CLAIM, ls="--", lw=1.3, label=f"paper: {claim:g}× (energy-weighted ops)")
    ax.axhline(1.0, color=INK, lw=0.9, label="1× (break-even)")
    ax.axvline(PAPER_RATE, color=MUTED, ls=":", lw=1.1, label=f"paper's R = {PAPER_RATE:g}")
    m = _num(measured_rate)
    if m is not None:
        ax.axvline(m, color=SPIKEGPT, ls="-.", lw=1.2, label=f"measured overall rate {m:.3f}")
    ax.set_yscale("log")
    _log_axis(ax.yaxis, _times_tick)
    ax.set_ylim(lo / 2.5, hi * 2.5)
    _dense_log_ticks(ax.yaxis, lo / 2.5, hi * 2.5)
    ax.set_xlim(rates.min(), rates.max())
    ax.set_xlabel("uniform firing rate of every spiking layer")
    ax.set_ylabel("ANN energy / SpikeGPT energy")
    ax.set_title("Sensitivity to the firing rate (spike-input counterfactual, compute only)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return fig


@_styled
def baseline_comparison(
    spikegpt: Mapping[str, object],
    baselines: Mapping[str, Mapping[str, object]],
    labels: Mapping[str, str] | None = None,
    unit: str = "token",
) -> Figure:
    """Energy per ``unit`` (token or character) per scenario for SpikeGPT and each baseline (log scale).
    ``spikegpt``: {scenario: pJ}; ``baselines``: {name: {scenario: pJ}}."""
    labels = labels or {}
    if not baselines:
        raise NoData("no baselines were run")
    scenarios = [s for s in spikegpt if any(_num((b or {}).get(s)) for b in baselines.values())]
    if not scenarios:
        raise NoData("the baselines have no energy in any of SpikeGPT's scenarios")
    models = [("SpikeGPT", spikegpt)] + sorted(baselines.items(), key=lambda kv: (kv[0] != "rwkv-twin", kv[0]))
    n = len(models)
    width = 0.82 / n
    xs = np.arange(len(scenarios))
    fig = Figure(figsize=(WIDTH, 3.8), layout="constrained")
    ax = fig.add_subplot()
    vals = []
    for k, (name, e) in enumerate(models):
        ys = np.array([np.nan if _num((e or {}).get(s)) is None else float(e[s]) for s in scenarios])
        vals.extend(ys[np.isfinite(ys) & (ys > 0)])
        ax.bar(xs + (k - (n - 1) / 2) * width, ys, width=width * 0.92, color=model_color(name, k),
               label=model_name(name, short=True))  # fmt: skip
    ax.set_yscale("log")
    _log_axis(ax.yaxis, _energy_tick)
    if vals:
        ax.set_ylim(min(vals) / 3, max(vals) * 3)
    ax.set_xticks(xs)
    ax.set_xticklabels([textwrap.fill(labels.get(s, s), 18) for s in scenarios], fontsize=8)
    ax.set_ylabel(f"energy / {unit} (log scale)")
    ax.set_title(f"Energy per {unit}: SpikeGPT and the baselines")
    ax.grid(axis="x", visible=False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return fig


@_styled
def pareto(variants: Mapping) -> Figure:
    """Bits per character against energy per character (log) for each model: as executed (filled) and with
    memory traffic (open); lower left is better."""
    models = [m for m in variants.get("models") or [] if _num(m.get("bpc")) is not None]
    if not models:
        raise NoData("no models to compare")
    fig = Figure(figsize=(WIDTH, 3.8), layout="constrained")
    ax = fig.add_subplot()
    colors = {"released": SPIKEGPT, "twin": MODEL_COLORS["rwkv-twin"], "spike-input": "#10b981"}
    for k, m in enumerate(models):
        color = colors.get(m.get("variant"), SERIES[k % len(SERIES)])
        kind = model_name(m.get("variant") or m["name"])
        name = kind if m["name"] in (m.get("variant"), kind) else f"{m['name']} ({kind})"  # not "twin (twin)"
        e = m.get("energy_pj_per_char") or {}
        for scen, face, mark in (("as_executed", color, "o"), ("as_executed_memory", "white", "s")):
            x = _num(e.get(scen))
            if x:
                what = "as executed" if face != "white" else "as executed + memory (SRAM)"
                ax.scatter([x * 1e-12], [m["bpc"]], s=70, marker=mark, facecolors=face, edgecolors=color, lw=1.8,
                           zorder=3, label=f"{name}, {what}")  # fmt: skip
        xs = [_num(e.get(s)) for s in ("as_executed", "as_executed_memory")]
        if all(xs):
            ax.plot([x * 1e-12 for x in xs], [m["bpc"]] * 2, color=color, lw=0.8, alpha=0.5)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _p: _energy_tick(v * 1e12)))
    ax.set_xlabel("energy / character (log scale)")
    ax.set_ylabel("bits / character (lower is better)")
    ax.set_title("Quality against energy: the same text, trained alike")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7.5)
    return fig


@_styled
def decode_curves(decode: Mapping) -> Figure:
    """Energy to generate the token at each position, batch 1: each transformer's curve (growing with its
    K/V cache) against the flat cost of SpikeGPT and its twin, as executed and with memory traffic."""
    curves = decode.get("curves") or {}
    flat = decode.get("flat") or {}
    if not curves:
        raise NoData("no decode-mode curve in this summary")
    fig = Figure(figsize=(WIDTH, 4.0), layout="constrained")
    axes = fig.subplots(1, 2, sharey=False)
    scenarios = (("as_executed", "as executed"), ("as_executed_memory", "as executed + memory (SRAM; DRAM beyond it)"))
    for ax, (scen, title) in zip(axes, scenarios):
        vals = []
        for k, (name, c) in enumerate(curves.items()):
            pos, ys = np.array(c.get("positions") or [], float), np.array(c.get(scen) or [], float)
            if len(pos) and len(ys) == len(pos):
                ax.plot(pos, ys, lw=1.8, color=model_color(name, k), label=model_name(name, short=True))
                vals.extend(ys[np.isfinite(ys)])
        for k, (name, e) in enumerate(flat.items()):
            v = _num((e or {}).get(scen))
            if v:
                ax.axhline(v, lw=1.6, ls="-" if name == "spikegpt" else "--",
                           color=SPIKEGPT if name == "spikegpt" else model_color(name, k + 1),
                           label=f"{model_name(name, short=True)} (flat)")  # fmt: skip
                vals.append(v)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_axis(ax.yaxis, _energy_tick)
        if vals:
            ax.set_ylim(min(vals) / 1.5, max(vals) * 1.5)
            _dense_log_ticks(ax.yaxis, min(vals) / 1.5, max(vals) * 1.5)  # 1-2-5 labels under ~2 decades
        ax.set_xlabel("position of the generated token")
        ax.set_title(title)
    axes[0].set_ylabel("energy / generated token")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=8)
    return fig


PREFILL_SCENARIOS = (("as_executed", "as executed", "-"), ("as_executed_memory", "as executed + memory (SRAM)", "--"))


def prefill_series(prefill: Mapping) -> dict[str, dict[str, list]]:
    """The prefill ratio curves to draw: ``"<comparator>, <scenario label>"`` -> {"contexts", "ratio"}, the
    points with a finite ratio, in the summary's order. ``prefill``: summary["decode"]["prefill"], either one
    comparator's curve ({"comparator", "contexts", "ratio": {scenario: [...]}}) or {name: such a curve}."""
    curves = {prefill.get("comparator") or "comparator": prefill} if "contexts" in prefill else dict(prefill)
    out = {}
    for name, c in curves.items():
        if not isinstance(c, Mapping):
            continue
        contexts = list(c.get("contexts") or [])
        for scen, label, _ls in PREFILL_SCENARIOS:
            ys = list((c.get("ratio") or {}).get(scen) or [])
            pts = [(x, _num(y)) for x, y in zip(contexts, ys) if _num(x) and _num(y) is not None and _num(y) > 0]
            if pts:
                out[f"{model_name(name, short=True)}, {label}"] = {
                    "comparator": name,
                    "scenario": scen,
                    "contexts": [p[0] for p in pts],
                    "ratio": [p[1] for p in pts],
                }
    return out


@_styled
def prefill_ratio(
    prefill: Mapping, run_context: float | None = None, ctx_len: float | None = None, claim: float = PAPER_CLAIM
) -> Figure:
    """Prefill: each comparator's energy per token over whole sequences of T tokens, over SpikeGPT's (which
    does not depend on T), against T (log-log), as executed and with memory traffic; the run's context and
    the checkpoint's training context as vertical lines, parity (1×) and the paper's claim as horizontal ones
    (the claim only when it falls within the curves' range; otherwise a note says where it lies)."""
    series = prefill_series(prefill or {})
    if not series:
        raise NoData("no prefill ratio in this summary")
    fig = Figure(figsize=(WIDTH, 4.2), layout="constrained")
    ax = fig.add_subplot()
    names = list(dict.fromkeys(s["comparator"] for s in series.values()))
    ys, xs = [], []
    for label, s in series.items():
        ls = dict((k, v) for k, _l, v in PREFILL_SCENARIOS)[s["scenario"]]
        ax.plot(s["contexts"], s["ratio"], lw=1.8, ls=ls, marker="o", ms=2.5, label=label,
                color=model_color(s["comparator"], names.index(s["comparator"])))  # fmt: skip
        ys.extend(s["ratio"])
        xs.extend(s["contexts"])
    lo, hi = min(ys + [1.0]), max(ys + [1.0])
    ax.axhline(1.0, color=INK, lw=0.9, label="1× (parity: equal energy per token)")
    note = None
    if lo / 1.3 <= claim <= hi * 1.3:
        ax.axhline(claim, color=CLAIM, ls="--", lw=1.3, label=f"paper: {claim:g}× (energy-weighted ops, other metric)")
        hi = max(hi, claim)
    else:
        note = f"the paper's {claim:g}× (energy-weighted ops) lies {'above' if claim > hi else 'below'} this range"
    marks = ((ctx_len, "checkpoint's training context", "training", MUTED),
             (run_context, "this run's context", "this run", INK))  # fmt: skip
    for x, what, short, color in marks:
        if _num(x):
            ax.axvline(float(x), color=color, lw=1.1, ls=":", label=f"{what}: {float(x):,.0f} tokens")
            ax.text(float(x), 0.97, f" T = {float(x):,.0f}\n ({short})", transform=ax.get_xaxis_transform(),
                    ha="left", va="top", fontsize=7.5, color=color)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    _log_axis(ax.xaxis)
    _log_axis(ax.yaxis, _times_tick)
    ax.set_ylim(lo / 1.3, hi * 1.3)
    _dense_log_ticks(ax.yaxis, lo / 1.3, hi * 1.3)
    ax.set_xlabel("comparator's context T: tokens per sequence (log scale)")
    who = model_name(names[0], short=True) if len(names) == 1 else "comparator"
    ax.set_ylabel(f"{who} / SpikeGPT\nenergy per token (pJ / pJ, log scale)")
    ax.set_title("Prefill: the energy ratio against the comparator's context")
    if note:
        ax.text(0.01, 0.98, note, transform=ax.transAxes, ha="left", va="top", fontsize=8, color=CLAIM)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8)
    return fig


@_styled
def platform_energy(rows: Sequence[Mapping], labels: Mapping[str, str]) -> Figure:
    """Energy per token of each workload on each platform (and node), log scale, and beside it, on a linear
    axis, the share of the dynamic energy that the neuromorphic cores run natively (none on a digital one).
    ``rows``: {"label", "workload", "pj_per_token", "native_pj", "native_fraction"}; ``labels``: workload ->
    legend label."""
    rows = [r for r in rows if _num(r.get("pj_per_token"))]
    if not rows:
        raise NoData("no platform could be priced")
    groups = list(dict.fromkeys(r["label"] for r in rows))
    workloads = [w for w in labels if any(r["workload"] == w for r in rows)]
    n = len(workloads)
    height = 0.84 / n
    fig = Figure(figsize=(WIDTH, 1.6 + 0.1 * n * len(groups)), layout="constrained")
    gs = fig.add_gridspec(1, 2, width_ratios=[2.2, 1])
    ax, ax_nat = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
    ys = np.arange(len(groups))[::-1]
    vals = []
    for k, w in enumerate(workloads):
        color = SPIKEGPT if k == 0 else SERIES[(k - 1) % len(SERIES)]
        by = {r["label"]: r for r in rows if r["workload"] == w}
        total = np.array([float(by[g]["pj_per_token"]) if g in by else np.nan for g in groups])
        share = []
        for g in groups:
            r = by.get(g) or {}
            f = _num(r.get("native_fraction"))
            if f is None and _num(r.get("native_pj")) is not None and _num(r.get("pj_per_token")):
                f = min(float(r["native_pj"]) / float(r["pj_per_token"]), 1.0)
            share.append(np.nan if f is None else f)
        y = ys + ((n - 1) / 2 - k) * height
        vals.extend(total[np.isfinite(total)])
        ax.barh(y, total, height=height * 0.9, color=color, label=labels[w])
        ax_nat.barh(y, np.array(share), height=height * 0.9, color=color)
    ax.set_xscale("log")
    _log_axis(ax.xaxis, _energy_tick)
    ax.set_xlim(min(vals) / 3, max(vals) * 3)
    for a in (ax, ax_nat):
        a.set_ylim(-0.6, len(groups) - 0.4)
        a.set_yticks(ys)
        a.grid(axis="y", visible=False)
    ax.set_yticklabels(groups, fontsize=8.5)
    ax_nat.set_yticklabels([])
    ax_nat.set_xlim(0, 1)
    ax_nat.xaxis.set_major_formatter(mticker.PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("energy / token (log scale)")
    ax_nat.set_xlabel("share run natively on the cores")
    ax.set_title("Energy per token on each platform")
    ax_nat.set_title("Native share")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=min(n, 2), fontsize=8)
    return fig


def rates_by_group(groups: Sequence[Mapping], by: str, unit: str = "char") -> Figure:
    """Per-LIF-layer firing rate by text domain (or source), and bits per ``unit``, each with its
    95% interval. ``groups``: summary['corpus']['groups']['rows']."""
    rows = [g for g in groups if isinstance(g, Mapping)]
    layers = [k for k in (rows[0].get("firing_rate") or {}) if _BLOCK_LIF.match(str(k))] if rows else []
    if len(rows) < 2 or not layers:
        raise NoData(f"fewer than two {by} groups with LIF rates in this summary")

    def val(iv):
        iv = iv or {}
        v, lo, hi = _num(iv.get("value")), _num(iv.get("lo")), _num(iv.get("hi"))
        if v is None:
            return np.nan, 0.0, 0.0
        return v, (v - lo) if lo is not None else 0.0, (hi - v) if hi is not None else 0.0

    fig = Figure(figsize=(WIDTH, 3.4), layout="constrained")
    gs = fig.add_gridspec(1, 4)
    ax, ax_b = fig.add_subplot(gs[0, :3]), fig.add_subplot(gs[0, 3])
    n, k = len(layers), len(rows)
    step = 0.8 / k
    for i, g in enumerate(rows):
        v = np.array([val((g.get("firing_rate") or {}).get(layer)) for layer in layers], dtype=float)
        xs = np.arange(n) + (i - (k - 1) / 2) * step
        label = textwrap.shorten(str(g.get("group")), 28, placeholder="…")
        ax.errorbar(xs, v[:, 0], yerr=v[:, 1:].T, fmt="o", ms=4, capsize=2, lw=1, color=SERIES[i % len(SERIES)],
                    label=f"{label} ({g.get('documents')} doc{'s' if g.get('documents') != 1 else ''})")  # fmt: skip
        b = val(g.get("bpc"))
        ax_b.errorbar([i], [b[0]], yerr=[[b[1]], [b[2]]], fmt="o", ms=5, capsize=3, color=SERIES[i % len(SERIES)])
    ax.set_xticks(range(n))
    ax.set_xticklabels([layer.removeprefix("blocks.") for layer in layers], rotation=45 if n > 8 else 0,
                       ha="right" if n > 8 else "center")  # fmt: skip
    if n > 24:
        _thin_ticks(ax, n)
    ax.set_ylabel("firing rate (spikes / neuron / token)")
    ax.set_title(f"Firing rate per LIF layer, by {by}")
    ax.grid(axis="x", visible=False)
    ax_b.set_xticks(range(k))
    ax_b.set_xticklabels([textwrap.shorten(str(g.get("group")), 12, placeholder="…") for g in rows], rotation=45,
                         ha="right")  # fmt: skip
    ax_b.set_xlim(-0.6, k - 0.4)
    ax_b.set_title(f"Bits per {unit}")
    ax_b.grid(axis="x", visible=False)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=min(k, 4), fontsize=8)
    return fig
