"""The self-contained HTML report, rendered from a summary dict (summary.json) alone.

``render_report(summary)`` validates the summary, draws the figures (``reports.plots``),
inlines them as data URIs and renders ``templates/report.html.j2`` with autoescape on:
every string that came from the user (paths, the text excerpt, the command line, layer
names) is escaped. The page loads nothing: no scripts, no external styles, fonts or images.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, Undefined, select_autoescape

from reports.corpus import corpus_context
from reports.labels import beyond, model_name, workload_name
from reports.schema import finite, validate_summary
from spikegpt.safeio import without_dirs

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
PAPER_RATE = 0.15
NA = "—"

# ---------------------------------------------------------------------------- formatting


def _finite(x) -> float | None:
    return None if isinstance(x, Undefined) else finite(x)


_PREFIXES = ((1e24, "Y"), (1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"),
             (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f"))  # fmt: skip


def si(x, unit: str = "", digits: int = 3) -> str:
    """A number with an SI prefix and ``digits`` significant digits: si(17909.8, 'pJ') -> '17.9 kpJ'."""
    v = _finite(x)
    if v is None:
        return NA
    if v == 0:
        return f"0 {unit}".strip()
    for scale, prefix in _PREFIXES:
        if abs(v) >= scale * 0.9995:
            s = f"{v / scale:.{digits}g}"
            if "e" in s:  # rounding reached the next prefix (999.96 -> 1e+03)
                continue
            return f"{s} {prefix}{unit}".strip()
    return f"{v:.{digits}g} {unit}".strip()


def energy(pj) -> str:
    """Picojoules as joules with an SI prefix: 17909.8 -> '17.9 nJ'."""
    v = _finite(pj)
    return NA if v is None else si(v * 1e-12, "J")


def pj(x) -> str:
    """Picojoules with thousands separators: 489934.5 -> '489,935 pJ'."""
    v = _finite(x)
    if v is None:
        return NA
    return f"{v:,.0f} pJ" if abs(v) >= 100 else f"{v:.3g} pJ"


def num(x, decimals: int | None = None) -> str:
    """A count or measure: thousands separators, integers without decimals, small values to 3 digits."""
    v = _finite(x)
    if v is None:
        return NA
    if decimals is not None:
        return f"{v:,.{decimals}f}"
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def ratio(x) -> str:
    """An energy ratio to 2 decimals with a times sign: 1320.298 -> '1,320.30×'."""
    v = _finite(x)
    return NA if v is None else f"{v:,.2f}×"


def ratio_short(x) -> str:
    """A ratio for the large summary cards: 3 significant digits at most ('1,320×', '27.6×', '0.99×')."""
    v = _finite(x)
    if v is None:
        return NA
    if abs(v) >= 100:
        return f"{v:,.0f}×"
    if 0.99 < abs(v) < 1.01:  # 1.005×, not a bare 1.00×
        return f"{v:.3f}×"
    return f"{v:.1f}×" if abs(v) >= 10 else f"{v:.2f}×"


def pct(x, decimals: int = 1) -> str:
    v = _finite(x)
    return NA if v is None else f"{v * 100:.{decimals}f}%"


def rate(x) -> str:
    v = _finite(x)
    return NA if v is None else f"{v:.3f}"


def seconds(x) -> str:
    v = _finite(x)
    if v is None:
        return NA
    if v >= 1:
        return f"{v:.2f} s"
    return si(v, "s")


def basename(path) -> str:
    """A file's name without its local directories (reports show names and hashes; summary.json keeps paths)."""
    if path is None:
        return ""
    text = str(path)
    return text.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or text


def basenames(text) -> str:
    """Every absolute path inside a string replaced by its file name."""
    return without_dirs(text)


def iec(x) -> str:
    """Bytes in binary units: 25165824 -> '24 MiB'."""
    v = _finite(x)
    if v is None:
        return NA
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.0f} B"


FILTERS: dict[str, Callable] = {
    "si": si,
    "energy": energy,
    "pj": pj,
    "num": num,
    "ratio": ratio,
    "ratio_short": ratio_short,
    "pct": pct,
    "rate": rate,
    "seconds": seconds,
    "basename": basename,
    "iec": iec,
    "basenames": basenames,
}

# ---------------------------------------------------------------------------- figures


FIGURE_SPECS = (  # key, title, format, the ``reports.plots`` function that draws it
    ("firing_by_layer", "Firing rate per LIF layer", "svg", "firing_rate_by_layer"),
    ("neuron_hist", "Per-neuron firing rates", "svg", "neuron_rate_histogram"),
    ("raster", "Spike raster", "png", "spike_raster"),
    ("by_position", "Firing rate by token position", "png", "firing_rate_by_position"),
    ("relu_sq", "ReLU² sparsity by block", "svg", "relu_sq_sparsity"),
    ("ops_by_layer", "Ops per token by block", "svg", "ops_by_layer"),
    ("energy_by_scenario", "Energy per token by scenario", "svg", "energy_by_scenario"),
    ("baselines", "SpikeGPT and the baselines", "svg", "baseline_comparison"),
    ("decode", "Decode mode", "svg", "decode_curves"),
    ("prefill", "Prefill ratio by context", "svg", "prefill_ratio"),
    ("pareto", "Quality against energy", "svg", "pareto"),
    ("waterfall", "Audit waterfall", "svg", "audit_waterfall"),
    ("sensitivity", "Sensitivity to the firing rate", "svg", "sensitivity_curves"),
    ("platforms", "Energy per token on each platform", "svg", "platform_energy"),
)


# the scale chart shows the ANNs in the paper's accounting too: say what it is for each side
SCALE_LABELS = {"paper": "paper's accounting: SpikeGPT ACs at R = 0.15, ANNs MACs"}


def _figure_arguments(s: Mapping) -> dict[str, tuple[tuple, dict]]:
    """key -> (args, kwargs) of the figure's ``reports.plots`` function, taken from the summary."""
    neurons = s.get("neurons") or {}
    audit = s.get("audit") or {}
    firing = s.get("firing_rate") or {}
    baselines = s.get("baselines") or {}
    base_per_char = {k: (v or {}).get("energy_pj_per_char") or {} for k, v in baselines.items()}
    claim = audit.get("claim")
    if not claim:  # matplotlib is imported only where a figure is drawn (a kept figure needs none)
        from reports import plots

        claim = plots.PAPER_CLAIM
    by_rate = (audit.get("sensitivity") or {}).get("by_rate") or []
    return {
        "firing_by_layer": ((firing,), {}),
        "neuron_hist": ((neurons.get("histograms") or {}, neurons.get("dead_fraction"),
                         neurons.get("saturated_fraction"), neurons.get("saturated_rate")), {}),
        "raster": ((s.get("raster") or {},), {}),
        "by_position": ((s.get("firing_rate_by_position") or {},), {}),
        "relu_sq": ((s.get("relu_sq_zero_fraction") or {},), {}),
        "ops_by_layer": ((s.get("ops_per_token_by_layer") or {},), {}),
        "energy_by_scenario": ((s.get("energy_breakdown") or {}, s.get("scenarios") or {}), {}),
        "baselines": ((s.get("energy_pj_per_char") or {}, base_per_char,
                       {**(s.get("scenarios") or {}), **SCALE_LABELS}), {"unit": "character"}),
        "decode": ((s.get("decode") or {},), {}),
        "prefill": (((s.get("decode") or {}).get("prefill") or {},
                     ((s.get("headline") or {}).get("context") or {}).get("comparator"),
                     (s.get("model") or {}).get("ctx_len"), claim), {}),
        "pareto": ((s.get("variants") or {},), {}),
        "waterfall": ((audit.get("waterfall") or [], claim), {}),
        "sensitivity": ((by_rate, claim, firing.get("overall")), {}),
        "platforms": ((_platform_bars(s.get("platforms")), _platform_workloads(s.get("platforms"))), {}),
    }  # fmt: skip


def _draw(title: str, fmt: str, function: str, args: tuple, kwargs: dict) -> dict:
    """One figure as {"title", "uri" or "note"}: a figure with no data gets a note in its place, and one
    that fails to draw says so (and logs the traceback)."""
    from reports import plots

    try:
        fig = getattr(plots, function)(*args, **kwargs)
        return {"title": title, "uri": plots.figure_to_data_uri(fig, fmt), "note": None}
    except plots.NoData as e:
        return {"title": title, "uri": None, "note": f"{title}: not drawn, {e}."}
    except Exception as e:  # a broken figure must not take the report down; it is shown and logged
        logger.warning("figure %s failed", function, exc_info=True)
        return {"title": title, "uri": None, "note": f"{title}: drawing failed ({type(e).__name__}: {e})."}


def _helper_init() -> None:
    """In the helper: Ctrl-C is the parent's to handle (it shuts the helper down), SIGTERM ends it quietly,
    and it is terminated when the process that forked it dies, however it dies (Linux
    ``prctl(PR_SET_PDEATHSIG)``), so that a killed run leaves no idle helper behind."""
    import ctypes
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG


def _warm_up() -> None:
    """Load matplotlib and its fonts (the first figure of a process pays for both)."""
    from reports import plots

    plots.figure_to_data_uri(plots.warm_up_figure(), "svg")


def figure_helper():
    """A process that draws figures beside this one, or None where that would not be faster: fewer than two
    cores for this process, or no ``fork`` (a forked child starts at once; a spawned one would spend longer
    importing than drawing). Only Linux: elsewhere fork is unsafe or absent. It starts at once and loads
    matplotlib and its fonts while this process goes on."""
    import multiprocessing
    import os
    import sys
    from concurrent.futures import ProcessPoolExecutor

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores < 2 or not sys.platform.startswith("linux") or os.environ.get("SPIKE_ENERGY_SERIAL_FIGURES"):
        return None
    # matplotlib is not imported here: the helper loads it (``_warm_up``) while this process makes the summary,
    # and this process loads it only if it draws (a run whose figures are all kept draws none)
    for stream in (sys.stdout, sys.stderr):  # a forked child must not write this process's buffered output again
        stream.flush()
    try:
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_helper_init)  # fmt: skip
        pool.submit(_warm_up)
        return pool
    except (OSError, ValueError):
        return None


def _figures(s: Mapping, parallel: bool = True, helper=None, cache: Path | None = None) -> dict[str, dict]:
    """{key: {"title", "uri" or "note"}} for every figure (``FIGURE_SPECS``).

    ``cache``: a folder of figures kept from earlier runs (``reports.figure_cache``): a figure whose input data,
    drawing code and libraries are those of a kept one is read, not drawn; the ones drawn are kept (None: no
    cache). ``parallel``: share the drawing with one helper process (``helper``, one the caller started early with
    ``figure_helper()`` and shuts down; else one started here, if anything is left to draw), which takes figures
    from the front of the list while this process takes them from the back; the figures are the same either
    way."""
    from concurrent.futures.process import BrokenProcessPool

    from reports import figure_cache

    args = _figure_arguments(s)
    jobs = {key: (title, fmt, fn, *args[key]) for key, title, fmt, fn in FIGURE_SPECS}
    keys = {key: figure_cache.figure_key(key, *job) for key, job in jobs.items()} if cache is not None else {}
    out = {}
    for key, job in jobs.items():
        hit = figure_cache.read(cache, keys[key], job[0], job[1]) if keys.get(key) else None
        if hit is not None:
            out[key] = hit
    todo = {key: job for key, job in jobs.items() if key not in out}
    pool = (helper or figure_helper()) if parallel and todo else None
    if pool is None:
        out.update({key: _draw(*job) for key, job in todo.items()})
    else:
        with pool if helper is None else contextlib.nullcontext():
            futures = {key: pool.submit(_draw, *job) for key, job in todo.items()}
            for key in reversed(todo):  # what the helper has not started yet is drawn here
                if futures[key].cancel():
                    out[key] = _draw(*todo[key])
            for key, fut in futures.items():
                if key not in out:
                    try:
                        out[key] = fut.result()
                    except BrokenProcessPool:  # the helper died: draw what it owed here
                        out[key] = _draw(*todo[key])
    for key in todo:  # a figure, or a figure with nothing to draw; never one that failed
        fig = out[key]
        if keys.get(key) and (fig["uri"] is not None or fig["note"].startswith(f"{fig['title']}: not drawn, ")):
            figure_cache.write(cache, keys[key], fig)
    return {key: out[key] for key in jobs}


# ---------------------------------------------------------------------------- context


def _block_sort_key(name: str):
    parts = str(name).split(".")
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


def _twin(s: Mapping) -> str | None:
    audit = s.get("audit") or {}
    twin = audit.get("twin")
    if twin:
        return twin
    return "rwkv-twin" if "rwkv-twin" in (s.get("baselines") or {}) else None


def _twin_label(h: Mapping) -> str | None:
    """'trained twin (2.51 bits/char)': the headline's twin, never without its quality (issue 20)."""
    used = h.get("twin_used")
    t = (h.get("twins") or {}).get("trained" if used == "trained twin" else "stripped") if used else None
    bpc = _finite((t or {}).get("bpc"))
    return f"{used} ({bpc:.2f} bits/char)" if used and bpc is not None else used


def headline(s: Mapping) -> dict:
    """The answer in plain sentences (generated from the numbers when the summary was made), and the
    numbers the summary cards show."""
    h = s.get("headline") or {}
    claim = _finite(h.get("claim")) or _finite((s.get("audit") or {}).get("claim")) or 32.2
    energy = h.get("energy_ratio") or {}
    twin = h.get("twin_ratio") or {}
    sentence = h.get("sentence") or (
        f"No measured comparison was made, so there is no ratio to set against the paper's {claim:g}×."
    )
    return {
        "sentence": sentence,
        "decode_sentence": h.get("decode_sentence"),
        "claim": claim,
        "comparator": h.get("comparator") or h.get("reference"),
        "twin": h.get("twin") or _twin(s),
        "op_ratio": h.get("op_ratio"),
        # the measured ratio in the paper's metric (energy-weighted operations) at the run's length, and the
        # verdict's figure: the same with the transformer at the paper figure's context (like for like)
        "weighted_ratio": (h.get("paper_metric") or {}).get("measured_paper_metric"),
        "weighted_like": _finite((h.get("paper_metric") or {}).get("measured_paper_metric_at_paper_context")),
        "paper_context": _finite((h.get("paper_metric") or {}).get("paper_figure_context")),
        "run_context": _finite((h.get("context") or {}).get("comparator")),
        "energy_ex": energy.get("as_executed"),
        "energy_mem": energy.get("as_executed_memory"),
        "twin_label": _twin_label(h),
        "twin_what": (
            (h.get("twins") or {}).get(h.get("twin_used") == "trained twin" and "trained" or "stripped") or {}
        ).get("what"),
        "stripped_bpc": _finite(((h.get("twins") or {}).get("stripped") or {}).get("bpc")),
        "twin_ex": twin.get("as_executed"),
        "twin_mem": twin.get("as_executed_memory"),
        "zero_skipping": h.get("zero_skipping", True),
        "scale": h.get("scale") or {},
    }


FORWARD_NOTE = "the released training forward{emb}"
RESCALE_NOTE = (
    ". For a BPE checkpoint this equals the released RNN inference path (src/model_run.py) without its fp16 "
    "rescale, which halves x after every 6th block and so changes the LIF inputs and the spikes from block 6 on: "
    "rates from the two paths are not comparable"
)


def forward_note(s: Mapping) -> str:
    """How the model was run; the note on the released RNN path's fp16 rescale only where it changes anything:
    a BPE (token-level) checkpoint with more than 6 blocks (the rescale halves x after every 6th block)."""
    model = s.get("model") or {}
    text = FORWARD_NOTE.format(emb=", binary embedding" if model.get("binary_embedding") else ", float embedding")
    n_layer = _finite(model.get("n_layer"))
    if (s.get("unit") or "token") == "token" and n_layer is not None and n_layer > 6:
        text += RESCALE_NOTE
    return text


def verdict(s: Mapping) -> dict:
    """The verdict box: the generated sentences and the decomposition of the gap (``headline.verdict``, made
    with the summary); a summary without them shows its headline sentence instead."""
    h = s.get("headline") or {}
    v = h.get("verdict") if isinstance(h.get("verdict"), Mapping) else {}
    sentences = [str(x) for x in (v.get("sentences") or []) if x]
    rows = [r for r in (v.get("decomposition") or []) if isinstance(r, Mapping)]
    return {"sentences": sentences, "decomposition": rows, "generated": bool(sentences)}


# words the generated sentences and the tables use, explained where they appear
GLOSSARY = {
    "like-for-like": "the paper's formula counts the same terms for both models (projections and attention against "
    "projections and WKV), not a full block on one side and projections only on the other",
    "fed projection": "a projection that, in the spike-input counterfactual, reads the spikes of the LIF layer "
    "before it instead of what it reads as executed",
    "E(0)": "the counterfactual's energy per token with no spikes at all (firing rate r = 0): the costs that do "
    "not scale with spikes",
    "dE/dr": "how much the counterfactual's energy per token grows per unit of firing rate (from r = 0 to r = 1)",
    "token-shift mix": "what an RWKV projection reads: a per-channel blend of this token's and the previous "
    "token's normalised residual stream, x_t·μ + x_(t−1)·(1 − μ), a float",
    "r · WKV": "the time mix's output gate: the receptance σ(R·x) times the WKV recurrence's output, a float",
    "aten": "PyTorch's operator library: every tensor operation the model runs is an aten call",
    "Shapley": "a factor's Shapley share is its multiplicative part of the gap: exp of its Shapley value of the log "
    "ratio, its effect averaged over every order in which the steps can be taken; the shares multiply to the whole "
    "gap, whatever the order",
}


def glossary(*texts) -> list[tuple[str, str]]:
    """The glossary entries whose term occurs in any of ``texts`` (case-insensitive; 'fed projections' matches
    'fed projection'), in glossary order."""
    blob = " ".join(str(t) for t in texts if t).lower().replace("like for like", "like-for-like")
    return [(term, text) for term, text in GLOSSARY.items() if term.lower() in blob]


def _quality(s: Mapping) -> dict:
    unit = s.get("unit") or "token"
    if unit == "token":
        return {"label": "bits / token", "value": s.get("bits_per_token"), "unit": unit}
    label = "BPC" if unit == "char" else f"bits / {unit}"
    return {"label": label, "value": s.get("bpc"), "unit": unit}


def same_per_char(s: Mapping) -> bool:
    """True when a token is one character (a character model): per-character figures equal per-token ones."""
    cpt = _finite(s.get("chars_per_token"))
    return cpt is not None and abs(cpt - 1.0) < 1e-9


def _scenario_rows(s: Mapping) -> list[dict]:
    labels = s.get("scenarios") or {}
    per_seq = s.get("energy_pj_per_sequence") or {}
    per_char = s.get("energy_pj_per_char") or {}
    return [
        {"key": k, "label": labels.get(k, k), "pj": v, "per_sequence": per_seq.get(k), "per_char": per_char.get(k)}
        for k, v in (s.get("energy_pj_per_token") or {}).items()
    ]


def _layers(s: Mapping, kinds: tuple[str, ...]) -> list[dict]:
    return [r for r in (s.get("layers") or []) if isinstance(r, Mapping) and r.get("kind") in kinds]


def _lif_rows(s: Mapping) -> list[dict]:
    rows = _layers(s, ("lif", "heaviside"))
    if rows:
        return rows
    firing = s.get("firing_rate") or {}
    n = s.get("neurons") or {}
    return [
        {"layer": k, "kind": "lif", "firing_rate": v, "dead_fraction": (n.get("dead_fraction") or {}).get(k),
         "saturated_fraction": (n.get("saturated_fraction") or {}).get(k)}
        for k, v in firing.items() if k != "overall"
    ]  # fmt: skip


OP_NOTES = {
    "mac": "multiply-accumulates, dense (MAC = multiply + add; 1 FLOP = 1/2 MAC)",
    "effective_mac": "MACs whose input operand is not zero (what zero-skipping hardware executes)",
    "ac": "accumulates: a weight added when the input is a spike",
    "add": "additions and subtractions",
    "mul": "multiplications",
    "div": "divisions",
    "exp": "exponentials",
    "sigmoid": "sigmoids",
    "max": "max / compare / select",
    "rsqrt": "reciprocal square roots (LayerNorm)",
    "lookup": "embedding row reads",
    "lif_updates": "neuron updates (a count of neurons, not of ops)",
    "wkv_steps": "WKV channel steps (a count, not ops)",
    "layernorm_elements": "elements normalised (a count, not ops)",
}


def _ops_table(s: Mapping) -> list[dict]:
    tokens_per_seq = _finite(s.get("tokens_per_sequence"))
    rows = []
    for k, v in (s.get("ops_per_token") or {}).items():
        fv = _finite(v)
        rows.append({"kind": k, "per_token": v, "per_sequence": fv * tokens_per_seq if fv is not None and
                     tokens_per_seq else None, "note": OP_NOTES.get(k, "")})  # fmt: skip
    return rows


def _ops_by_layer_table(s: Mapping) -> dict:
    by_layer = s.get("ops_per_token_by_layer") or {}
    totals: dict[str, float] = {}
    for ops in by_layer.values():
        for k, v in (ops or {}).items():
            totals[k] = totals.get(k, 0.0) + (_finite(v) or 0.0)
    cols = sorted(totals, key=lambda k: -totals[k])
    rows = [{"layer": layer, "ops": {c: (ops or {}).get(c) for c in cols}} for layer, ops in by_layer.items()]
    return {"columns": cols, "rows": rows}


def _energy_tables(s: Mapping) -> dict:
    from reports.labels import ENERGY_CATEGORIES, energy_categories

    labels = s.get("scenarios") or {}
    breakdown = s.get("energy_breakdown") or {}
    cat_rows, prim_cols, prim_rows = [], [], []
    cats_present: list[str] = []
    for scen, b in breakdown.items():
        cats = energy_categories((b or {}).get("by_stage") or {})
        cat_rows.append({"key": scen, "label": labels.get(scen, scen), "cats": cats, "total": sum(cats.values())})
        for c in cats:
            if c not in cats_present:
                cats_present.append(c)
        prims = (b or {}).get("by_primitive") or {}
        for p in prims:
            if p not in prim_cols:
                prim_cols.append(p)
        prim_rows.append({"label": labels.get(scen, scen), "prims": prims})
    order = [c for c, _ in ENERGY_CATEGORIES]
    cats_present.sort(key=lambda c: order.index(c) if c in order else len(order))
    top_layers = []
    ex = (breakdown.get("as_executed") or {}).get("by_layer") or {}
    total = sum(_finite(v) or 0.0 for v in ex.values())
    for layer, v in sorted(ex.items(), key=lambda kv: -(_finite(kv[1]) or 0.0))[:12]:
        top_layers.append({"layer": layer, "pj": v, "share": (_finite(v) or 0.0) / total if total else None})
    stages = {}
    for scen, b in breakdown.items():
        stages[labels.get(scen, scen)] = sorted(
            ((b or {}).get("by_stage") or {}).items(), key=lambda kv: -(_finite(kv[1]) or 0)
        )
    return {
        "categories": cats_present,
        "category_rows": cat_rows,
        "primitive_columns": prim_cols,
        "primitive_rows": prim_rows,
        "top_layers": top_layers,
        "stages": stages,
    }


def _baseline_rows(s: Mapping) -> list[dict]:
    """One row per baseline: same-size models (ratios per token; the same vocabulary) first, then the scale
    panel (ratios per character). Ratios are the baseline's figure over SpikeGPT's."""
    h = s.get("headline") or {}
    ex, mem = h.get("ratio_as_executed") or {}, h.get("ratio_as_executed_memory") or {}
    scale = set(h.get("scale") or {})
    desc = s.get("baseline_descriptions") or {}
    snn_ops = _finite((s.get("operations_per_token") or {}).get("spikegpt"))
    tokens = s.get("tokens_per_sequence")
    rows = []
    for name, b in sorted((s.get("baselines") or {}).items(), key=lambda kv: (kv[0] != _twin(s), kv[0])):
        b = b or {}
        ops = _finite(b.get("synaptic_ops_per_token"))
        against = b.get("against") or {}  # the int8 ANN: set against SpikeGPT at int8 (issue 20)
        cross = _finite(ex.get(name))
        like = (f"; ratio against SpikeGPT at int8 ({against['spikegpt_int8_pj_per_token'] / 1e3:,.1f} nJ per token), "
                f"like for like" + (f"; against fp32 SpikeGPT it would be {cross:.2f}× (cross-precision)"
                                    if cross is not None else "")) if against else ""  # fmt: skip
        rows.append({
            "name": name,
            "display": model_name(name),
            "bpc": _finite(b.get("bpc")),  # quality, where the summary measured it (the stripped twin's)
            "scale": name in scale,
            "description": (desc.get(name) or b.get("description", "")) + like,
            "assumptions": b.get("assumptions") or [],
            "params": b.get("params"),
            "context": b.get("context"),
            "context_differs": b.get("context") is not None and tokens is not None and b.get("context") != tokens,
            "ops": ops,
            "ops_ratio": ops / snn_ops if ops is not None and snn_ops else None,
            "chars_per_token": b.get("chars_per_token"),
            "chars_source": b.get("chars_per_token_source", ""),
            "energy": b.get("energy_pj_per_token") or {},
            "energy_per_char": b.get("energy_pj_per_char") or {},
            "ratio_ex": against.get("ratio", ex.get(name)),
            "ratio_mem": None if against else mem.get(name),
            "uncounted": len(b.get("uncounted_ops") or []),
        })  # fmt: skip
    return rows


def _baseline_scenarios(s: Mapping) -> list[tuple[str, str]]:
    labels = s.get("scenarios") or {}
    seen = []
    for b in (s.get("baselines") or {}).values():
        for k in (b or {}).get("energy_pj_per_token") or {}:
            if k not in seen:
                seen.append(k)
    order = list(labels)
    seen.sort(key=lambda k: order.index(k) if k in order else len(order))
    return [(k, labels.get(k, k)) for k in seen]


def _break_even_rows(audit: Mapping) -> list[dict]:
    rows = []
    for prec, modes in (audit.get("break_even") or {}).items():
        for mode, r in (modes or {}).items():
            r = r or {}
            key32 = next((k for k in r if k.startswith("rate_for_")), None)
            rows.append({
                "precision": prec,
                "mode": mode,
                "e0": r.get("energy_at_rate_0_pj"),
                "slope": r.get("energy_per_unit_rate_pj"),
                "rate_32": r.get(key32) if key32 else None,
                "label_32": key32[len("rate_for_"):].replace("_vs_", " vs ") if key32 else None,
                "note_32": r.get("note_32x", ""),
                "rate_twin": r.get("rate_twin_parity"),
                "note_twin": r.get("note_twin", ""),
                "rate_int8": r.get("rate_int8_ann_parity"),
                "note_int8": r.get("note_int8_ann", ""),
            })  # fmt: skip
    return rows


def _ratio_columns(rows: list[Mapping]) -> list[str]:
    cols = []
    for r in rows:
        for k in r:
            if k.startswith("ratio_vs_") and k[len("ratio_vs_") :] not in cols:
                cols.append(k[len("ratio_vs_") :])
    return sorted(cols, key=lambda b: (b != "rwkv-twin", b))


def _waterfall_baselines(audit: Mapping) -> list[str]:
    names = []
    for step in audit.get("waterfall") or []:
        for b in (step or {}).get("ratio") or {}:
            if b not in names:
                names.append(b)
    return sorted(names, key=lambda b: (b != "rwkv-twin", b))


def _bench(bench) -> dict | None:
    if bench is None:
        return None
    out = {"raw": json.dumps(bench, indent=1, default=str), "known": False}
    if not isinstance(bench, Mapping):
        return out
    fwd = bench.get("forward")
    if isinstance(fwd, Mapping):
        out["known"] = True
        out["forward"] = [{"mode": m, **(r if isinstance(r, Mapping) else {"status": str(r)})} for m, r in fwd.items()]
        dec = []
        for m, rs in (bench.get("decode") or {}).items():
            for r in rs or []:
                if isinstance(r, Mapping):
                    dec.append({"mode": m, **r})
        out["decode"] = dec
        out["matmul"] = bench.get("matmul") if isinstance(bench.get("matmul"), Mapping) else None
        out["derived"] = bench.get("derived") if isinstance(bench.get("derived"), Mapping) else {}
    out["device"] = bench.get("device")
    out["settings"] = bench.get("settings") if isinstance(bench.get("settings"), Mapping) else {}
    return out


def _command_line(env: Mapping) -> str:
    cl = env.get("command_line")
    if isinstance(cl, list):
        return basenames(shlex.join(str(a) for a in cl))
    return "" if cl is None else basenames(str(cl))


def value_with_unit(r: Mapping) -> str:
    """A cost-table or parameter row's value with its unit: '0.9 pJ', '25,165,824 bytes (24 MiB)'."""
    unit = (r.get("unit") or "pJ") if isinstance(r, Mapping) else "pJ"
    v = _finite(r.get("pj"))
    if v is None:
        return NA
    if unit == "bytes":
        return f"{num(v)} bytes ({iec(v)})"
    return f"{num(v)} {unit}".strip()


CENSUS_WORDS = {
    "attributed": "priced by a cost rule",
    "counted": "priced by a cost rule",
    "free": "free (shape and memory ops, which cost nothing)",
    "uncounted": "without a cost rule",
}


def _rest_of_cost_table(s: Mapping) -> list[Mapping]:
    """The cost-table rows that the table of assumptions and parameters does not already show."""
    used = {(r.get("op"), r.get("dtype")) for r in s.get("assumptions") or [] if isinstance(r, Mapping)}
    return [r for r in (s.get("costs") or {}).get("table") or [] if (r.get("op"), r.get("dtype")) not in used]


def _cost_sources(s: Mapping) -> list[str]:
    out = []
    for r in (s.get("costs") or {}).get("table") or s.get("assumptions") or []:
        src = (r or {}).get("source")
        if src and (r or {}).get("status") in ("published", "derived") and src not in out:
            out.append(src)
    return out


TIMING_LABELS = {  # short labels (a long one once squeezed the values to one character per line)
    "load_s": "time: load",
    "profile_s": "time: profile",
    "profile_pass_s": "time: measured pass",
    "baselines_s": "time: baselines",
    "intervals_s": "time: confidence intervals",
    "variants_s": "time: trained variants",
    "platforms_s": "time: chips",
    "census_s": "time: coverage census",
}
TIMING_NOTES = {
    "load_s": "checkpoint, tokenizer, text",
    "profile_s": "the measured pass and the coverage census",
    "profile_pass_s": "part of the profile time",
    "baselines_s": "the stripped twin and the transformers; cached ones are read, not rebuilt",
    "intervals_s": "bootstrap intervals over sequences or documents",
    "variants_s": "the trained models compared in quality against energy",
}


def key_label(key) -> str:
    """A summary key as words: 'intervals_s' -> 'intervals (s)', 'chars_per_token' -> 'chars per token'."""
    k = str(key)
    unit = ""
    for suffix, u in (("_s", " (s)"), ("_pj", " (pJ)"), ("_bytes", " (bytes)")):
        if k.endswith(suffix):
            k, unit = k[: -len(suffix)], u
            break
    return k.replace("_", " ") + unit


def _timings(s: Mapping) -> list[tuple[str, object, str]]:
    return [(TIMING_LABELS.get(k) or "time: " + key_label(k).removesuffix(" (s)"), v, TIMING_NOTES.get(k, ""))
            for k, v in (s.get("timings_s") or {}).items()]  # fmt: skip


def _preset_text(s: Mapping) -> str:
    p = s.get("precision_preset") or {}
    if not p:
        return f"{s.get('precision', 'fp32')}"
    return (f"{p.get('precision')}: MAC = {p.get('mac')} = {num(p.get('mac_pj'))} pJ, AC = {p.get('ac')} = "
            f"{num(p.get('ac_pj'))} pJ")  # fmt: skip


def context(s: Mapping, helper=None, figure_cache: Path | None = None) -> dict:
    """Everything the template shows, from the summary alone (``helper``, ``figure_cache``: see ``_figures``)."""
    model = s.get("model") or {}
    env = s.get("environment") or {}
    audit = s.get("audit") or {}
    firing = s.get("firing_rate") or {}
    linears = _layers(s, ("linear",))
    n_binary = sum(1 for r in linears if r.get("operand_class") == "binary")
    by_prec = (audit.get("sensitivity") or {}).get("by_precision") or []
    assumptions = s.get("assumptions") or []
    out = {
        "s": s,
        "model": model,
        "text": s.get("text") or {},
        "env": env,
        "audit": audit,
        "quality": _quality(s),
        "overall_rate": firing.get("overall"),
        "paper_rate": PAPER_RATE,
        "scenario_rows": _scenario_rows(s),
        "as_executed": (s.get("energy_pj_per_token") or {}).get("as_executed"),
        "head": headline(s),
        "per_char_ex": (s.get("energy_pj_per_char") or {}).get("as_executed"),
        "preset_text": _preset_text(s),
        "forward_note": forward_note(s),
        "figs": _figures(s, helper=helper, cache=figure_cache),
        "lif_rows": _lif_rows(s),
        "neurons": s.get("neurons") or {},
        "linears": linears,
        "n_binary": n_binary,
        "relu_rows": sorted((s.get("relu_sq_zero_fraction") or {}).items(), key=lambda kv: _block_sort_key(kv[0])),
        "ops_rows": _ops_table(s),
        "ops_layers": _ops_by_layer_table(s),
        "setup_ops": s.get("setup_ops_per_call") or [],
        "memory": s.get("memory") or {},
        "attribution_rows": [r for r in (audit.get("attribution") or []) if _finite((r or {}).get("delta_pj"))][:60],
        "decode": s.get("decode") or {},
        "variants": s.get("variants") or {},
        "energy_tables": _energy_tables(s),
        "baseline_rows": _baseline_rows(s),
        "baseline_scenarios": _baseline_scenarios(s),
        "waterfall_baselines": _waterfall_baselines(audit),
        "break_even": (be := _break_even_rows(audit)),
        "break_even_text": " ".join(str(r.get(k) or "") for r in be for k in ("note_32", "note_twin", "note_int8")),
        "precision_cols": _ratio_columns(by_prec),
        "by_precision": by_prec,
        "uncounted": s.get("uncounted_ops") or [],
        "uncounted_cols": list(dict.fromkeys(k for r in (s.get("uncounted_ops") or []) for k in (r or {}))),
        "census": s.get("census") or {},
        "assumptions": assumptions,
        "n_assumed": sum(1 for r in assumptions if (r or {}).get("status") == "assumption"),
        "costs": s.get("costs") or {},
        "cost_rest": _rest_of_cost_table(s),
        "census_words": CENSUS_WORDS,
        "verdict": verdict(s),
        "per_char_same": same_per_char(s),
        "cost_sources": _cost_sources(s),
        "platforms": _platforms(s.get("platforms")),
        "bench": _bench(s.get("bench")),
        "command_line": _command_line(env),
        "env_rows": [(key_label(k), v) for k, v in env.items() if k != "command_line"],
        "timings": _timings(s),
        "version": env.get("spike_energy") or "unknown",
        "cx": (cx := corpus_context(s)),
        "corpus": cx is not None,
    }
    c = out
    c["lines"] = section_lines(s, c)
    v = c["verdict"]
    shown = [*v["sentences"], *[f"{r.get('factor')} {r.get('description')}" for r in v["decomposition"]]] if (
        v["generated"]) else [c["head"]["sentence"], c["head"]["decode_sentence"]]  # fmt: skip
    c["terms"] = glossary(*shown)  # the words of what the verdict box shows
    return c


def _one(parts) -> str:
    return "; ".join(p for p in parts if p) + "."


def section_lines(s: Mapping, c: Mapping) -> dict[str, str]:
    """One line per section, shown while it is closed: what is inside, with its main numbers."""
    model, text = s.get("model") or {}, s.get("text") or {}
    q = c["quality"]
    rate = _finite(c["overall_rate"])
    n = s.get("neurons") or {}
    dead = [_finite(v) for v in (n.get("dead_fraction") or {}).values()]
    dead = [v for v in dead if v is not None]
    e = s.get("energy_pj_per_token") or {}
    labels = s.get("scenarios") or {}
    ops = s.get("ops_per_token") or {}
    h = s.get("headline") or {}
    out = {
        "summary": _one([
            f"SpikeGPT {model.get('n_layer')} × {model.get('n_embd')}, {si(model.get('params'))} parameters",
            f"{num(s.get('tokens'))} tokens of {basename(text.get('path'))}",
            f"{num(q['value'], 3)} {q['label']}" if _finite(q["value"]) is not None else "",
            "energy per token in every scenario",
        ]),
        "firing": _one([
            f"mean firing rate {rate:.3f} against the paper's assumed {PAPER_RATE}" if rate is not None else "",
            f"dead neurons {pct(min(dead))} to {pct(max(dead))} by layer" if dead else "",
            "per layer, per neuron, raster, by position",
        ]),
        "operands": _one([
            f"{c['n_binary']} of {len(c['linears'])} projections read binary spikes (accumulates); the others read "
            "floats (multiply-accumulates)",
            "ReLU² sparsity",
        ]),
        "ops": _one([
            f"{num(ops.get('mac'))} MACs per token, {num(ops.get('effective_mac'))} with zero operands skipped, "
            f"{num(ops.get('ac'))} ACs" if ops else "",
            "elementwise ops, memory traffic",
        ]),
        "energy": _one([f"{energy(v)} {labels.get(k, k)}" for k, v in e.items() if k in (
            "paper", "as_executed", "as_executed_memory")] + ["per token, and what each is made of"]),
        "baselines": _one([
            f"the same-size transformer costs {ratio(h.get('energy_ratio', {}).get('as_executed'))} SpikeGPT's "
            "energy as executed" if (h.get("energy_ratio") or {}).get("as_executed") is not None else "",
            f"the {_twin_label(h) or 'stripped twin'} {ratio(h.get('twin_ratio', {}).get('as_executed'))}"
            if (h.get("twin_ratio") or {}).get("as_executed") is not None else "",
            "models of other sizes per character; decode" if c["baseline_rows"] else "no baselines were run",
        ]),
        "variants": _one([
            ", ".join(f"{model_name(m.get('variant'), short=True)} {num(m.get('bpc'), 3)} bits/char at "
                      f"{energy((m.get('energy_pj_per_char') or {}).get('as_executed'))}/char"
                      for m in (c["variants"].get("models") or [])),
            "as executed",
        ]),
        "audit": _one([
            "the paper's accounting rebuilt, then replaced step by step with measurements",
            "where SpikeGPT's energy differs from the stripped twin's",
            "the firing rates at which spikes would pay",
        ]),
        "uncounted": _one([
            f"{len(c['uncounted'])} aten ops ran without a cost rule" if c["uncounted"]
            else "none: every operation the model ran is priced or free",
        ]),
        "costs": _one([
            f"{c['n_assumed']} assumptions of this tool and {len(c['assumptions']) - c['n_assumed']} other entries",
            f"{len(c['cost_rest'])} published and derived costs" if c["cost_rest"] else "",
            "every entry's source",
        ]),
        "timing": "Wall-clock GPU benchmark." if c["bench"] else "No GPU timing was run for this report.",
        "metadata": "Command line, file hashes, run times and software versions.",
    }  # fmt: skip
    p = c["platforms"]
    if p:
        ex = [r for r in (s.get("platforms") or {}).get("results") or [] if r.get("workload") == "spikegpt"
              and _finite(r.get("pj_per_token")) is not None]  # fmt: skip
        lo = min((r["pj_per_token"] for r in ex), default=None)
        hi = max((r["pj_per_token"] for r in ex), default=None)
        out["platforms"] = _one([
            f"{workload_name('spikegpt')}: {energy(lo)} to {energy(hi)} per token across {len(ex)} chips and nodes"
            if ex else "",
            "what runs natively, chips needed, every figure's source",
        ])  # fmt: skip
    if c["corpus"]:
        cp = s.get("corpus") if isinstance(s.get("corpus"), Mapping) else {}
        out["corpus"] = _one(
            [
                f"{num(cp.get('documents'))} documents, {num(cp.get('tokens'))} tokens, each document its own sequence"
                if cp.get("run") == "documents"
                else f"one sequence of {num(cp.get('tokens') or s.get('tokens'))} tokens",
                "confidence intervals of the firing rate, quality and energy",
            ]
        )
    return out


# ---------------------------------------------------------------------------- platforms


def _platform_label(presets: Mapping, r: Mapping) -> str:
    title = ((presets.get(r.get("platform")) or {}).get("title")) or str(r.get("platform"))
    node = _finite(r.get("node_nm"))
    return f"{title} · {node:g} nm" if node is not None else title


def _platform_workloads(p: Mapping | None) -> dict:
    """Workload -> its name with the scenario it is priced in (the chips price the memory traffic)."""
    return {k: workload_name(k, (v or {}).get("label")) for k, v in ((p or {}).get("workloads") or {}).items()}


def _platform_bars(p: Mapping | None) -> list[dict]:
    """Short labels for the figure: the preset name and the node."""
    out = []
    for r in (p or {}).get("results") or []:
        name = "digital (Horowitz)" if r.get("platform") == "horowitz" else str(r.get("platform"))
        node = _finite(r.get("node_nm"))
        out.append({**r, "label": f"{name} · {node:g} nm" if node is not None else name})
    return out


def _chars_note(workloads: Mapping) -> str:
    """'1.00 for A and B (how); 4.1 for C (how)': characters per token, grouped."""
    groups: dict[tuple, list[str]] = {}
    for w in workloads.values():
        w = w or {}
        groups.setdefault((num(w.get("chars_per_token"), 2), w.get("chars_note") or ""), []).append(
            workload_name(w.get("name"), w.get("label"))
        )
    return "; ".join(f"{v} for {', '.join(names)} ({how})" for (v, how), names in groups.items())


def _platforms(p: Mapping | None) -> dict | None:
    """The platforms section: energy table, native split, capacity, node factors, every source."""
    if not p:
        return None
    presets = p.get("presets") or {}
    workloads = _platform_workloads(p)
    rows: dict[str, dict] = {}
    for r in p.get("results") or []:
        label = _platform_label(presets, r)
        row = rows.setdefault(label, {"label": label, "name": r.get("platform"), "by": {}})
        row["by"][r.get("workload")] = r
    caps: dict[str, dict] = {}
    for c in p.get("capacity") or []:
        caps.setdefault(c.get("platform"), {"title": (presets.get(c.get("platform")) or {}).get("title"), "cells": {}})
        caps[c.get("platform")]["cells"][f"{c.get('model')}-{c.get('precision')}"] = c
    cpts = [_finite((w or {}).get("chars_per_token")) for w in (p.get("workloads") or {}).values()]
    return {
        "precision": p.get("precision"),
        "batch": p.get("batch"),
        "workloads": workloads,
        "per_char_same": bool(cpts) and all(v is not None and abs(v - 1.0) < 1e-9 for v in cpts),
        "chars": _chars_note(p.get("workloads") or {}),
        "rows": list(rows.values()),
        "capacity": list(caps.values()),
        "node_factors": p.get("node_factors") or [],
        "node_basis": p.get("node_basis") or {},
        "presets": presets,
        "notes": p.get("notes") or [],
        "sanafe": p.get("sanafe"),  # issue 22: the check against SANA-FE
        "memory_models": p.get("memory_models"),
        "counterfactual_notes": p.get("counterfactual_notes") or [],
    }


# ---------------------------------------------------------------------------- rendering


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(enabled_extensions=("html", "j2"), default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    env.filters["with_unit"] = value_with_unit
    env.globals["finite"] = _finite
    env.globals["beyond"] = beyond
    env.globals["model_name"] = model_name
    env.globals["glossary"] = glossary
    return env


def render_report(summary: dict, helper=None, figure_cache: Path | None = None) -> str:
    """The report as one self-contained HTML string (``helper``: a figure process from ``figure_helper()``;
    ``figure_cache``: a folder of kept figures, ``reports.figure_cache``)."""
    validate_summary(summary, "summary")
    return _env().get_template("report.html.j2").render(**context(summary, helper, figure_cache))


def write_report(summary: dict, path, helper=None, figure_cache: Path | None = None) -> None:
    Path(path).write_text(render_report(summary, helper, figure_cache), encoding="utf-8")
