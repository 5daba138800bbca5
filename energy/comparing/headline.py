"""The headline: what this model is, what it costs against the paper's comparator, and whether the paper's
32.2x holds, in sentences generated from the numbers (never written by hand).

The paper's comparator is a transformer of the same size, vocabulary and context. Its 32.2 comes out only when
operations are weighted by their energy (E_MAC against E_AC), so the verdict compares like with like: the
paper's accounting put through this checkpoint's own sizes (the paper's figure for this model) against the
measured figure in that same metric (``energy.comparing.audit.gap_decomposition``), and names the largest factors
between them with their multiplicative (Shapley) shares. The plain operation ratio is kept, labelled. The
ratio is given at the run's length and at the checkpoint's training context. Two twins, two names: the
stripped twin (the released weights, every LIF replaced by identity, not trained) and the trained twin (a
non-spiking model trained alike); the headline uses the trained one when there is one, and neither is named
without its bits per character. Models of other sizes and vocabularies are compared per character, apart,
in the scale panel, on the same characters.
"""

from __future__ import annotations

import math

import pandas as pd

from energy.pricing.estimate import SPIKE_CLASSES

PAPER_WKV_OPS = 6  # the paper counts the WKV as 6 MACs per channel per token (section 3.7)

# what a projection reads, in words, by the kind of module that produced it (seen in the dataflow)
INPUT_WORDS = {
    "lerp < layernorm": "a token-shift mix of a LayerNorm output",
    "layernorm": "a LayerNorm output",
    "gate": "a gated product (r · WKV)",
    "relu_sq": "ReLU² activations",
    "lif": "LIF spikes",
    "heaviside": "binary-embedding spikes",
}


def times(r: float | None, more: str = "more", fewer: str = "fewer") -> str:
    """'2.5× fewer' for a ratio above 1, '1.3× more' below it (ANN / SpikeGPT)."""
    if r is None or r != r:
        return "—"
    x = r if r >= 1 else 1 / r
    digits = 3 if x < 1.1 else 2  # 1.003× or 1.045×, not a bare 1.00× or a rounded 1.04×
    return f"{x:,.{digits}f}× {fewer if r >= 1 else more}"


def projection_inputs(layers: pd.DataFrame) -> dict:
    """The projections (Linear layers) by what they read, from the operand classes and dataflow measured."""
    lin = layers[layers.kind == "linear"]
    spike = lin.operand_class.isin(SPIKE_CLASSES)
    chain = lin.get("input_chain", lin.get("input_from", pd.Series("", index=lin.index))).fillna("")
    by_input = chain[~spike].map(lambda c: INPUT_WORDS.get(c, c or "an unknown input")).value_counts()
    return {
        "total": int(len(lin)),
        "spike": int(spike.sum()),
        "float_by_input": {k: int(v) for k, v in by_input.items()},
        "spike_layers": lin.layer[spike].tolist(),
    }


def cause_phrase(p: dict) -> str:
    """'no projection reads spikes: all 29 read floats (20 a token-shift mix of a LayerNorm output, ...)'."""
    parts = ", ".join(f"{n} {what}" for what, n in p["float_by_input"].items())
    n_float = p["total"] - p["spike"]
    if p["spike"] == 0:
        return f"no projection reads spikes: all {p['total']} read floats ({parts})"
    if n_float == 0:
        return f"all {p['total']} projections read binary spikes"
    return f"{p['spike']} of {p['total']} projections read binary spikes; {n_float} read floats ({parts})"


# Differences between the two sides of a comparison that are kept on purpose, named (the report's assumptions).
ASYMMETRIES = (
    ("state", "SpikeGPT's recurrent state (membranes, WKV sums, token-shift inputs) is read and written in an SRAM "
     "sized by itself, outside the weights' SRAM budget; the transformer's K/V cache competes for that budget with "
     "the weights and spills to DRAM. Kept: the state is a fixed few values per channel, the cache grows with T."),
    ("context", "SpikeGPT's cost per token does not depend on the context; the transformer's attention does. Both "
     "read the same sequences; the ratio at the checkpoint's training context is shown beside the run's."),
    ("sparsity", "The same-size GELU transformer has random weights: its activations have almost no zeros to "
     "skip, while SpikeGPT's are measured on trained weights. The ReLU² transformer is credited SpikeGPT's own "
     "feed-forward sparsity (an assumption)."),
)  # fmt: skip
COMPARATOR_WORDS = {
    "transformer-same-dims": "the same-size transformer",
    "transformer-same-dims-relu": "the ReLU² same-size transformer",
}
TWIN_WORDS = {
    "stripped": "stripped twin",  # the released weights with every LIF replaced by identity, not trained
    "trained": "trained twin",  # a non-spiking model trained alike (the bundled spikegpt/demo/twin.pth, or --twin)
}


def less(r: float | None) -> str:
    """'2.24× less' (ratio = other / SpikeGPT above 1) or '1.045× more'."""
    return times(r, "more", "less")


def model_words(model: dict) -> str:
    """Which model this is, from its parameters and the demo flag."""
    params = model.get("params")
    size = f"{params / 1e6:.3g}M-parameter" if params else f"{model['n_layer']}-layer"
    if model.get("demo"):
        return f"the {size} demo trained by this tool, not the published 216M"
    return f"a {size} SpikeGPT, {model['n_layer']} layers × {model['n_embd']}"


def twin_words(t: dict) -> str:
    """'the trained twin (2.51 bits/char)': a twin is never named without its quality beside it."""
    bpc = t.get("bpc")
    return f"the {t['label']}" + (f" ({bpc:.2f} bits/char)" if bpc is not None else " (bits/char not measured)")


def headline(
    *,
    claim: float,
    snn_ops: float,
    snn_energy: dict[str, float],
    snn_chars_per_token: float,
    baselines: dict[str, dict],
    comparator: str | None,
    twin: str | None,
    scale: tuple[str, ...],
    layers: pd.DataFrame,
    model: dict,
    tokens_per_sequence: int,
    context_set_by_user: bool,
    zero_skipping: bool,
    documents: int = 1,
    decomposition: dict | None = None,
    context_ratios: dict | None = None,
    twins: dict | None = None,
    int8: dict | None = None,
    bpc: float | None = None,
) -> dict:
    """All headline numbers and the sentences made from them. ``baselines``: name -> the baseline summary
    (``energy_pj_per_token``, ``synaptic_ops_per_token``, ``chars_per_token``, ``context``, ``params``).
    ``decomposition``: ``energy.comparing.audit.gap_decomposition`` (the paper's figure for this model, the measured one
    in the same metric, and the factors between them); ``context_ratios``: the comparator's energy ratio at
    the checkpoint's training context and at the run's ({"ctx_len": {...}, "run": {...}}, by scenario);
    ``twins``: {"stripped": {...}, "trained": {...}}, each with ``bpc`` and ``ratio`` (by scenario, twin /
    SpikeGPT per character); ``int8``: SpikeGPT and the comparator both at int8 (``spikegpt_pj``,
    ``comparator_pj`` per token as executed)."""
    proj = projection_inputs(layers)
    cause = cause_phrase(proj)

    def ratio(name, scen, per_char=False):
        b = baselines.get(name) or {}
        e = (b.get("energy_pj_per_token") or {}).get(scen)
        mine = snn_energy.get(scen)
        if e is None or not mine:
            return None
        if per_char:
            cpt = b.get("chars_per_token")
            if not cpt or not snn_chars_per_token:
                return None
            return (e / cpt) / (mine / snn_chars_per_token)
        return e / mine

    out = {
        "claim": claim,
        "comparator": comparator,
        "twin": twin,
        "zero_skipping": zero_skipping,
        "projections": proj,
        "cause": cause,
        "reference": comparator,
        # ANN energy / SpikeGPT energy per character of the text (for the same vocabulary, per token too)
        "ratio_as_executed": {n: ratio(n, "as_executed", True) for n in baselines},
        "ratio_as_executed_memory": {n: ratio(n, "as_executed_memory", True) for n in baselines},
        "per": "character",
        "bpc": bpc,
    }
    if comparator in baselines:
        b = baselines[comparator]
        ops = b.get("synaptic_ops_per_token")
        # the plain operation count (MACs + ACs, unweighted): shown, labelled, but not what the verdict tests
        out["op_ratio"] = ops / snn_ops if ops and snn_ops else None
        out["op_ratio_metric"] = "plain operation count: MACs + ACs, unweighted (not the paper's 32.2x metric)"
        out["energy_ratio"] = {s: ratio(comparator, s) for s in ("as_executed", "as_executed_memory")}
        out["context"] = {"spikegpt_tokens": tokens_per_sequence, "comparator": b.get("context"),
                          "set_by_user": context_set_by_user, "documents": documents,
                          "ctx_len": model.get("ctx_len")}  # fmt: skip
        if context_ratios:
            out["context_ratios"] = context_ratios
    if decomposition:
        out["paper_metric"] = {k: decomposition[k] for k in ("metric", "paper_figure", "paper_figure_context",
                                                             "measured_paper_metric", "measured_as_executed",
                                                             "measured_as_executed_memory", "matches")}  # fmt: skip
        out["paper_metric"]["measured_paper_metric_at_paper_context"] = decomposition.get(
            "measured_paper_metric_at_paper_context", decomposition["measured_paper_metric"]
        )
        out["holds"] = bool(decomposition["holds"])
    elif comparator in baselines:
        out["holds"] = None  # nothing to compare in the paper's metric
    if twin in baselines:
        out["twin_ratio"] = {s: ratio(twin, s) for s in ("as_executed", "as_executed_memory")}
    if twins:
        out["twins"] = {k: {**v, "label": TWIN_WORDS[k]} for k, v in twins.items() if v}
        used = out["twins"].get("trained") or out["twins"].get("stripped")
        if used:  # the headline's twin: the trained one when there is one
            out["twin_used"] = used["label"]
            out["twin_ratio"] = used["ratio"]
    if int8:
        out["int8"] = {**int8, "ratio": int8["comparator_pj"] / int8["spikegpt_pj"] if int8.get("spikegpt_pj")
                       else None, "label": "int8 against int8: both priced with int8 weights and activations, "
                       "int32 accumulation"}  # fmt: skip
    out["scale"] = {
        n: {"params": baselines[n].get("params"), "context": baselines[n].get("context"),
            "chars_per_token": baselines[n].get("chars_per_token"),
            "chars_per_sequence": (baselines[n].get("context") or 0) * (baselines[n].get("chars_per_token") or 0),
            "ratio_per_char": {s: ratio(n, s, True) for s in ("as_executed", "as_executed_memory")}}
        for n in scale if n in baselines
    }  # fmt: skip
    sentences = verdict_sentences(out, model, claim, comparator, decomposition) or [_no_comparator(out, claim)]
    out["verdict"] = {
        "sentences": sentences,
        "decomposition": decomposition_table(decomposition) if decomposition else [],
    }
    out["sentence"] = sentences[0]
    return out


def decomposition_table(d: dict) -> list[dict]:
    """The verdict's table: one row per factor, its multiplicative share of the gap, and what it is."""
    rows = [{"factor": "paper's accounting for this model", "share": d["paper_figure"],
             "description": f"the paper's assumptions through this checkpoint's sizes at {d['paper_figure_context']:,} "
             "tokens: the ratio the gap starts from"}]  # fmt: skip
    for r in d["factors"]:
        rows.append({"factor": r["factor"], "share": r["share"], "range": r["range"], "description": r["description"],
                     "in_paper_metric": r["in_paper_metric"]})  # fmt: skip
    rows.append({"factor": "measured, with memory traffic", "share": d["measured_as_executed_memory"],
                 "description": "the product of all rows: the measured energy ratio as executed with memory "
                 "traffic"})  # fmt: skip
    return rows


def _no_comparator(h: dict, claim: float) -> str:
    base = "No transformer of the same size was run, so there is no measured ratio to set against the paper's "
    base += f"{claim:g}×"
    t = (h.get("twins") or {}).get("trained") or (h.get("twins") or {}).get("stripped")
    if t:
        base += f"; against {twin_words(t)}, SpikeGPT uses {less(t['ratio']['as_executed'])} energy per character"
    return base + "."


def _share(x: float) -> str:
    return f"×{x:.2f}" if x >= 0.1 else f"×{x:.3f}"


def verdict_sentences(h: dict, model: dict, claim: float, comparator: str | None, d: dict | None) -> list[str]:
    """Three or four short sentences, every figure and every cause taken from the numbers."""
    if comparator is None or not h.get("energy_ratio"):
        return []
    ctx = h["context"]
    e = h["energy_ratio"]
    who = model_words(model)
    cr = h.get("context_ratios") or {}
    at_ctx = (cr.get("ctx_len") or {}).get("as_executed")
    run_T = ctx["comparator"]
    ctx_len = ctx.get("ctx_len")
    docs = ctx.get("documents", 1)
    where = f"at {run_T:,} tokens" + (f", the token-weighted length of {docs:,} documents" if docs > 1 else "")
    # every figure names its metric and its context (issue 20, second review)
    s1 = (f"This is {who}; it uses {less(e['as_executed'])} energy per token (pJ as executed, without memory "
          f"traffic) than a same-size transformer {where}")  # fmt: skip
    if at_ctx is not None and ctx_len and ctx_len != run_T:
        s1 += f", {less(at_ctx)} with the transformer at the checkpoint's {ctx_len:,}-token training context"
    elif ctx_len and ctx_len == run_T:
        s1 += ", the checkpoint's training context"
    out = [s1 + "."]
    if d:
        verdict = "holds" if d["holds"] else "does not hold"
        pc = d.get("paper_figure_context")
        like = d.get("measured_paper_metric_at_paper_context", d["measured_paper_metric"])
        if pc and pc != run_T:  # the verdict compares both at the paper figure's context; the run's length beside
            out.append(
                f"The paper's {claim:g}× {verdict} here: in its own metric, energy-weighted operations, with the "
                f"transformer at the checkpoint's {pc:,}-token training context, its accounting predicts "
                f"{d['paper_figure']:.1f}× for this model and {like:.2f}× is measured "
                f"({d['measured_paper_metric']:.2f}× with the transformer at {run_T:,} tokens)."
            )
        else:
            out.append(
                f"The paper's {claim:g}× {verdict} here: in its own metric, energy-weighted operations, its "
                f"accounting predicts {d['paper_figure']:.1f}× for this model and {d['measured_paper_metric']:.2f}× "
                f"is measured at {run_T:,} tokens."
            )
        out.extend(factor_sentence(d, run_T))
    fair = []
    i8 = h.get("int8")
    if i8 and i8.get("ratio"):
        fair.append(f"with both at int8, SpikeGPT uses {less(i8['ratio'])} energy per token than the same-size "
                    f"transformer at {run_T:,} tokens")  # fmt: skip
    t = (h.get("twins") or {}).get("trained")
    mine = f" against SpikeGPT's {h['bpc']:.2f}" if h.get("bpc") is not None else ""
    if t and t.get("ratio"):
        fair.append(f"it uses {less(t['ratio']['as_executed'])} energy per character than the trained twin, which "
                    f"reaches {t['bpc']:.2f} bits/char{mine}")  # fmt: skip
    elif (h.get("twins") or {}).get("stripped"):
        s = h["twins"]["stripped"]
        bpc = f"{s['bpc']:.2f} bits/char{mine}" if s.get("bpc") is not None else "bits/char not measured"
        fair.append(f"it uses {less(s['ratio']['as_executed'])} energy per character than the stripped twin, which "
                    f"is untrained and reaches {bpc}")  # fmt: skip
    if fair:
        out.append("Other comparisons, in pJ as executed (without memory traffic): " + "; ".join(fair) + ".")
    return out


def factor_sentence(d: dict, run_T: int) -> list[str]:
    """The largest factors of the gap, from its Shapley decomposition: the two ends named with their metrics,
    each factor with its multiplicative share and the direction it moves the ratio, and what removing one
    factor alone would give (the largest ratio without any one of them)."""
    big = [r for r in d["factors"] if abs(math.log(r["share"])) >= math.log(1.05)][:3]
    if not big:
        return []
    down = [f"{r['factor']} ({_share(r['share'])})" for r in big if r["share"] < 1]
    up = [f"{r['factor']} ({_share(r['share'])})" for r in big if r["share"] > 1]
    moves = [f"{_and(down)}, which lower{'s' if len(down) == 1 else ''} it on average" if down else "",
             f"{_and(up)}, which raise{'s' if len(up) == 1 else ''} it on average" if up else ""]  # fmt: skip
    s = (f"From the paper's {d['paper_figure']:.1f}× to the measured {d['measured_as_executed_memory']:.2f}× (energy "
         f"per token in pJ as executed with memory traffic, at {run_T:,} tokens), the largest factors (Shapley "
         f"shares: each factor's effect averaged over every order of the steps) are "
         f"{', and '.join(m for m in moves if m)}")  # fmt: skip
    # a factor whose effect lowers the ratio in some orders and raises it in others: its direction is not a fact
    both = [r for r in big if len(r.get("range") or ()) == 2 and r["range"][0] < 1 < r["range"][1]]
    for r in both:
        s += (f"; {r['factor']} lowers or raises it depending on the order (from {_share(r['range'][0])} to "
              f"{_share(r['range'][1])})")  # fmt: skip
    if not d["holds"]:
        alone = [r for r in d["factors"] if r["alone_restores_paper_figure"]]
        if alone:
            r = alone[0]
            s += (f"; removing {r['factor']} alone would restore the paper's figure "
                  f"({r['ratio_without_it']:.2f}× without it)")  # fmt: skip
        elif d["factors"] and all("ratio_without_it" in r for r in d["factors"]):
            best = max(d["factors"], key=lambda r: r["ratio_without_it"])
            s += (f"; removing any one factor alone leaves at most {best['ratio_without_it']:.2f}× (without "
                  f"{best['factor']}), short of {d['paper_figure']:.1f}×")  # fmt: skip
        else:
            s += "; no single factor alone restores the paper's figure"
    return [s + "."]


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _comparator_words(name: str) -> str:
    return COMPARATOR_WORDS.get(name, name)


def decode_sentences(decode: dict) -> dict[str, str]:
    """For every comparator, the crossover of decode mode in words, from its numbers."""
    out = {}
    for name, by_model in (decode.get("crossover") or {}).items():
        c = (by_model or {}).get("spikegpt")
        if not c:
            continue
        said = {}
        for scen in ("as_executed", "as_executed_memory"):
            x = c.get(scen) or {}
            pos = x.get("position")
            if pos is None:
                said[scen] = f"is cheaper at every position up to {decode['curves'][name]['positions'][-1]:,}"
            elif pos == 1:
                said[scen] = "costs more from the first position on"
            else:
                extra = "" if x.get("within_context") else f", {x.get('note')}"
                said[scen] = f"is cheaper up to position {pos - 1:,} and costs more from {pos:,} on{extra}"
        if said["as_executed"] == said["as_executed_memory"]:
            what = f"{said['as_executed']}, as executed and with memory traffic alike"
        else:
            what = f"{said['as_executed']} as executed; with memory traffic it {said['as_executed_memory']}"
        out[name] = (f"Generating one token at a time (batch 1, energy per generated token in pJ) against "
                     f"SpikeGPT's fixed cost per token, {_comparator_words(name)} {what}.")  # fmt: skip
    return out


def decode_sentence(decode: dict, comparator: str | None = None) -> str | None:
    """Every comparator's decode crossover, the headline's comparator first, as one paragraph."""
    s = decode_sentences(decode)
    if not s:
        return None
    order = sorted(s, key=lambda n: n != comparator)
    return " ".join(s[n] for n in order)
