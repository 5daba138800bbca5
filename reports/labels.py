"""The words the report and the command line show for models, scenarios and rates: one place, so that
the HTML and the terminal say the same thing the same way.

- Two different models are both called a twin in the code: ``rwkv-twin`` is the released checkpoint with
  every LIF replaced by the identity (not retrained), ``twin`` is the non-spiking model trained alike.
- "As executed" alone is the ops as executed without memory traffic; priced with the memory traffic it is
  "as executed + memory (SRAM)". The chips price the memory traffic, so their figures carry that name.
- A break-even rate outside [0, 1] cannot happen: it is said as "none" or "every".
"""

from __future__ import annotations

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
