"""spike-energy: measure what a spiking language model computes and what it would cost.

The names below are loaded on first use (PEP 562): ``spike-energy --help`` imports no torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

_NAMES = {
    "CostTable": "energy.costs",
    "load_costs": "energy.costs",
    "SCENARIOS": "energy.estimate",
    "Profile": "energy.profile",
    "profile": "energy.profile",
}

__all__ = ["SCENARIOS", "CostTable", "Profile", "load_costs", "profile"]


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    if importlib.util.find_spec(f"energy.{name}") is not None:  # a submodule, as the eager imports made them
        return importlib.import_module(f"energy.{name}")
    raise AttributeError(f"module 'energy' has no attribute {name!r}")


class _Package(types.ModuleType):
    """Keeps ``energy.profile`` the function (as the eager imports did), not the submodule of that name
    that the import system sets on the package when ``energy.profile`` is imported."""

    def __setattr__(self, name, value):
        if name in _NAMES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES])
