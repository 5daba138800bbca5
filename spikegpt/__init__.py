"""SpikeGPT in plain PyTorch: the model that spike-energy measures.

The names below are loaded on first use (PEP 562), so that ``import spikegpt.errors`` (the
CLI's first import, and all that ``--help`` needs) does not import torch.
"""

from __future__ import annotations

import importlib
import importlib.util

_NAMES = {
    "PRESETS": "spikegpt.config",
    "SpikeGPTConfig": "spikegpt.config",
    "preset": "spikegpt.config",
    "LIF": "spikegpt.model",
    "WKV": "spikegpt.model",
    "Output": "spikegpt.model",
    "SpikeGPT": "spikegpt.model",
    "State": "spikegpt.model",
}

__all__ = ["PRESETS", "LIF", "WKV", "Output", "SpikeGPT", "SpikeGPTConfig", "State", "preset"]


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    if importlib.util.find_spec(f"spikegpt.{name}") is not None:  # a submodule, as the eager imports made them
        return importlib.import_module(f"spikegpt.{name}")
    raise AttributeError(f"module 'spikegpt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES])
