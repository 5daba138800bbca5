"""The headline: does the paper's 32.2x hold for this model on this text? Numbers first, then sentences
generated from them (never written by hand).

The paper's comparator is a transformer of the same size, vocabulary and context; the comparison that
isolates spiking is the non-spiking twin. The paper claims fewer *operations*: the operation ratio counts
what the paper counts (MACs + ACs of the projections and attention, 6 per WKV channel step); the energy
ratio prices everything as executed. Models of other sizes and vocabularies are compared per character,
apart, in the scale panel.
"""

from __future__ import annotations

import pandas as pd

from energy.estimate import SPIKE_CLASSES

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
    digits = 3 if x < 1.01 else 2  # 1.003×, not a bare 1.00×
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
) -> dict:
    """All headline numbers and the sentences made from them. ``baselines``: name -> the baseline summary
    (``energy_pj_per_token``, ``synaptic_ops_per_token``, ``chars_per_token``, ``context``, ``params``)."""
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
    }
    if comparator in baselines:
        b = baselines[comparator]
        ops = b.get("synaptic_ops_per_token")
        out["op_ratio"] = ops / snn_ops if ops and snn_ops else None
        out["energy_ratio"] = {s: ratio(comparator, s) for s in ("as_executed", "as_executed_memory")}
        out["holds"] = bool(out["op_ratio"] is not None and out["op_ratio"] >= claim)
        out["context"] = {"spikegpt_tokens": tokens_per_sequence, "comparator": b.get("context"),
                          "set_by_user": context_set_by_user, "documents": documents}  # fmt: skip
    if twin in baselines:
        out["twin_ratio"] = {s: ratio(twin, s) for s in ("as_executed", "as_executed_memory")}
    out["scale"] = {
        n: {"params": baselines[n].get("params"), "context": baselines[n].get("context"),
            "chars_per_token": baselines[n].get("chars_per_token"),
            "ratio_per_char": {s: ratio(n, s, True) for s in ("as_executed", "as_executed_memory")}}
        for n in scale if n in baselines
    }  # fmt: skip
    out["sentence"] = _sentence(out, model, claim, comparator, twin)
    return out


def _sentence(h: dict, model: dict, claim: float, comparator: str | None, twin: str | None) -> str:
    if comparator is None or h.get("op_ratio") is None:
        base = "No transformer of the same size was run, so there is no measured ratio to set against the paper's "
        base += f"{claim:g}×"
        if h.get("twin_ratio"):
            twin_e = times(h["twin_ratio"]["as_executed"], "more", "less")
            base += f"; against its own non-spiking twin SpikeGPT uses {twin_e} energy per token"
        return base + f". The cause, measured: {h['cause']}."
    verdict = "holds" if h["holds"] else "does not hold"
    ctx = h["context"]
    docs = ctx.get("documents", 1)
    if ctx["comparator"] == ctx["spikegpt_tokens"] and docs > 1:
        seq = f"sequences of {ctx['spikegpt_tokens']:,} tokens, the mean length of the {docs:,} documents"
    elif ctx["comparator"] == ctx["spikegpt_tokens"]:
        seq = f"the same {ctx['spikegpt_tokens']:,}-token sequences"
    else:
        why = "set with --context" if ctx["set_by_user"] else "its context"
        seq = f"{ctx['comparator']:,}-token sequences ({why}) against SpikeGPT's {ctx['spikegpt_tokens']:,}"
    e = h["energy_ratio"]
    zeros = "zeros skipped" if h["zero_skipping"] else "no zero skipping"
    s = (
        f"On this text the paper's {claim:g}× fewer operations {verdict}: against a transformer of the same size "
        f"({model['n_layer']} layers × {model['n_embd']}, the same {model['vocab_size']:,}-token vocabulary, {seq}; "
        f"{zeros} for both), SpikeGPT as executed needs {times(h['op_ratio'])} operations (MACs + ACs, as the paper "
        f"counts them) and {times(e['as_executed'], 'more', 'less')} energy per token "
        f"({times(e['as_executed_memory'], 'more', 'less')} counting memory traffic)"
    )
    if twin and h.get("twin_ratio"):
        s += f"; against its own non-spiking twin, {times(h['twin_ratio']['as_executed'], 'more', 'less')} energy"
    return s + f". The cause, measured: {h['cause']}."


def decode_sentence(decode: dict, comparator: str | None) -> str | None:
    """The crossover of decode mode, in words, from its numbers."""
    cross = (decode.get("crossover") or {}).get(comparator) if comparator else None
    if not cross or "spikegpt" not in cross:
        return None

    def when(c: dict) -> str:
        pos = c.get("position")
        if pos is None:
            return f"never ({c.get('note', 'no crossover')})"
        if pos == 1:
            return "from the first position on"
        extra = "" if c.get("within_context") else f" ({c.get('note')})"
        return f"from position {pos:,} on{extra}"

    c = cross["spikegpt"]
    ex, mem = when(c.get("as_executed") or {}), when(c.get("as_executed_memory") or {})
    verdict = (
        f"costs more than SpikeGPT per generated token {ex}, as executed and with memory traffic alike"
        if ex == mem
        else f"overtakes SpikeGPT's cost per generated token {ex} as executed, and {mem} with memory traffic"
    )
    return (
        "Generating one token at a time (batch 1), the same-size transformer reads a K/V cache that grows with the "
        f"position while SpikeGPT carries a fixed state: the transformer {verdict}."
    )
