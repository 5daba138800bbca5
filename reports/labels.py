"""The words the report and the command line show for models, scenarios and rates: one place, so that
the HTML and the terminal say the same thing the same way.

- Two different models are both called a twin in the code: ``rwkv-twin`` is the released checkpoint with
  every LIF replaced by the identity (not retrained), ``twin`` is the non-spiking model trained alike.
- "As executed" alone is the ops as executed without memory traffic; priced with the memory traffic it is
  "as executed + memory (SRAM)". The chips price the memory traffic, so their figures carry that name.
- A break-even rate outside [0, 1] cannot happen: it is said as "none" or "every".
"""

from __future__ import annotations

from collections.abc import Mapping

from reports.schema import finite

MODEL_NAMES = {
    "rwkv-twin": "stripped twin (released weights, LIF removed, untrained)",
    "twin": "trained twin",
    "spikegpt": "SpikeGPT",
}
MODEL_SHORT = {  # for narrow columns (the terminal's 80): words that wrap at spaces, never cut
    "rwkv-twin": "stripped twin",
    "twin": "trained twin",
    "spikegpt": "SpikeGPT",
    "transformer-same-dims": "same-size transformer",
    "transformer-same-dims-relu": "same-size transformer ReLU²",
    "transformer-same-dims-int8": "same-size transformer int8",
    "transformer-paper-table2": "paper's Table 2 transformer",
    "gpt2-small": "GPT-2 small",
    "gpt2-medium": "GPT-2 medium",
}

# what each platform workload is priced as (energy.pricing.platforms prices the SRAM memory traffic too)
WORKLOAD_NAMES = {
    "spikegpt": "SpikeGPT as executed + memory (SRAM)",
    "spikegpt-counterfactual": "SpikeGPT, spike-input counterfactual + memory (SRAM)",
    "rwkv-twin": "stripped twin as executed + memory (SRAM)",
    "transformer-same-dims": "same-size transformer as executed + memory (SRAM)",
}


def model_name(key, short: bool = False) -> str:
    """A model's display name: the two twins get names that cannot be confused; others keep their key."""
    names = MODEL_SHORT if short else MODEL_NAMES
    return names.get(str(key), str(key))


def workload_name(key, label=None) -> str:
    """A chip workload's name, with the scenario it is priced in."""
    return WORKLOAD_NAMES.get(str(key)) or str(label or key)


def beyond(r, digits: int = 3, na: str = "—") -> str:
    """A break-even rate: rates outside [0, 1] cannot happen, so say which side they fall on."""
    v = finite(r)
    if v is None:
        return na
    if v > 1:
        return "every (> 1)"
    if v < 0:
        return "none (< 0)"
    return f"{v:.{digits}f}"


# the energy breakdown's categories and their colours (the report's table and its figure): here, not in
# reports.plots, so that the table needs no matplotlib
ENERGY_CATEGORIES = (
    ("projections as MAC", "#1e40af"),
    ("projections as AC", "#10b981"),
    ("WKV", "#8b5cf6"),
    ("LIF / spike encoding", "#f59e0b"),
    ("LayerNorm", "#14b8a6"),
    ("sigmoid gates", "#ec4899"),
    ("other elementwise", "#94a3b8"),
    ("memory: weights, K/V cache", "#dc2626"),
    ("memory: activations, potentials, addressing", "#f97316"),
    ("memory: state, membranes, embedding", "#fca5a5"),
)


def stage_category(stage: str) -> str:
    """One of ``ENERGY_CATEGORIES`` for a ``by_stage`` key."""
    s = stage.lower()
    if s.startswith("memory"):
        if "weight" in s or "kv-cache" in s:
            return "memory: weights, K/V cache"
        if any(k in s for k in ("inputs", "outputs", "potentials", "addressing", "bias")):
            return "memory: activations, potentials, addressing"
        return "memory: state, membranes, embedding"
    if "projection" in s and (" ac" in s or "spikes" in s):
        return "projections as AC"
    if s in ("linear", "head") or "projection" in s or s == "mac":
        return "projections as MAC"
    if s.startswith("wkv"):
        return "WKV"
    if s.startswith("lif") or s in ("heaviside", "encode"):
        return "LIF / spike encoding"
    if s.startswith("layernorm"):
        return "LayerNorm"
    if s.startswith("sigmoid") or s == "gate":
        return "sigmoid gates"
    return "other elementwise"


def energy_categories(by_stage: Mapping[str, object]) -> dict[str, float]:
    """pJ by category (``ENERGY_CATEGORIES``) from a ``by_stage`` breakdown (the report's table and figure)."""
    out: dict[str, float] = {}
    for stage, pj in by_stage.items():
        v = finite(pj)
        if v:
            c = stage_category(str(stage))
            out[c] = out.get(c, 0.0) + v
    return out
