"""Limits checked before anything is allocated: a memory budget, and the device.

A file can declare a model far larger than itself (a stride-0 view with n_embd 10^6, a
key ``blocks.100000000.*``), and an option can ask for a context of 10^8. Sizes are
checked against the file and against a **memory budget** before allocating: by default
``DEFAULT_MEMORY_BUDGET``; the user raises it with ``--max-memory`` (e.g. ``--max-memory 64G``).
The estimates are rough (they count the large tensors, not every temporary): their job is
to refuse what cannot possibly run, with a line that names the size and the limit.
"""

from __future__ import annotations

import math
import re

import torch

from spikegpt.errors import SpikeEnergyError

GiB = 2**30
DEFAULT_MEMORY_BUDGET = 16 * GiB
DEVICE_TYPES = ("cpu", "cuda")  # what SpikeGPT's code paths are written and tested for

_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str | int) -> int:
    """``"16G"``, ``"512MiB"``, ``"1.5g"`` or a plain number of bytes."""
    if isinstance(text, int):
        n = text
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", str(text).lower())
        if not m:
            raise SpikeEnergyError(f"--max-memory {text!r} is not a size; write e.g. 16G, 512M or 1.5T")
        n = int(float(m.group(1)) * _UNITS[m.group(2)])
    if n < 1:
        raise SpikeEnergyError("--max-memory must be positive")
    return n


def human(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} bytes"


def check_memory(what: str, need_bytes: float, budget_bytes: int | None, fix: str = "lower the sizes") -> None:
    """Refuse ``what`` if it needs more than the budget; the line names both and the fix (``fix``, or raising
    the budget)."""
    budget = DEFAULT_MEMORY_BUDGET if budget_bytes is None else budget_bytes
    if not math.isfinite(need_bytes) or need_bytes > budget:
        raise SpikeEnergyError(
            f"{what} needs about {human(need_bytes)}, over the memory budget of {human(budget)}; "
            f"{fix}, or raise the budget with --max-memory {_suggest(need_bytes)} if this machine has it"
        )


def _suggest(n: float) -> str:
    if not math.isfinite(n):
        return "SIZE"
    return f"{max(1, math.ceil(n * 1.25 / GiB))}G"


def spikegpt_run_bytes(config, batch: int, tokens: int, weight_bytes: int = 4) -> float:
    """Peak memory of one forward of a SpikeGPT over (batch, tokens), roughly.

    Weights; the logits and their log-softmax (batch x tokens x vocab, float32); one
    block's working set (about a dozen batch x tokens x ffn_hidden tensors); the spikes
    the profiler keeps (a byte per neuron and token, two LIF layers per block).
    """
    c, v, h, n = config.n_embd, config.vocab_size, config.ffn_mult * config.n_embd, config.n_layer
    params = v * c * 2 + n * (4 * c * c + 2 * c * h + c * c + 10 * c)
    bt = batch * tokens
    return params * weight_bytes + 2 * bt * v * 4 + 12 * bt * h * 4 + 2 * n * bt * c


def transformer_bytes(n_layer: int, n_embd: int, n_head: int, vocab_size: int, context: int) -> float:
    """Peak memory of counting a GPT-2-style transformer at ``context`` tokens, roughly.

    Weights (12 d^2 per layer, token and position embeddings); the attention scores,
    their softmax and the mask of one layer (3 x heads x T^2, float32); the logits.
    """
    params = 12 * n_layer * n_embd**2 + (vocab_size + context) * n_embd
    return 4 * (params + 3 * n_head * context**2 + 2 * context * vocab_size + 8 * context * 4 * n_embd)


def check_device(spec: str, option: str = "--device") -> torch.device:
    """A device this PyTorch build has and this tool runs on, or one line saying what is possible."""
    available = ["cpu"] + (
        [f"cuda (cuda:0..cuda:{torch.cuda.device_count() - 1})"] if torch.cuda.is_available() else []
    )
    choices = ", ".join(available)
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise SpikeEnergyError(f"{option} {spec!r} is not a device; this machine has: {choices}") from None
    if dev.type not in DEVICE_TYPES:
        raise SpikeEnergyError(
            f"{option} {spec!r}: spike-energy runs on cpu or cuda, not {dev.type}; this machine has: {choices}"
        )
    if dev.type == "cpu" and dev.index not in (None, 0):
        raise SpikeEnergyError(f"{option} {spec!r}: there is one CPU device; use --device cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SpikeEnergyError(f"{option} {spec} was asked for but no CUDA device is available; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SpikeEnergyError(f"{option} {spec}: this machine has CUDA devices 0..{torch.cuda.device_count() - 1}")
    return dev
