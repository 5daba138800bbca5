"""spike-energy: measure what a spiking language model computes and what it would cost.

The package is four stages, one folder each, lowest first (a stage imports only from itself and below;
``tests/test_layout.py`` checks it):

- ``energy.pricing``: energy per op and per memory access (the cost tables of ``pricing/data``), the memory
  model, process nodes and chips; it knows no model;
- ``energy.measuring``: runs a model, counts its ops at the dispatch level, classifies operands from the
  values, finds neurons (model adapters in ``measuring/adapters.py``) and prices the counts into a ``Profile``;
- ``energy.comparing``: baselines, bundled variants, decode, the audit, the headline and its intervals;
- ``energy.app``: the command line (``energy.cli`` is ``energy.app.cli``), the pipeline and timing; the only
  stage that reaches ``reports/``.

The names below are loaded on first use (PEP 562): ``spike-energy --help`` imports no torch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

_NAMES = {
    "CostTable": "energy.pricing.costs",
    "load_costs": "energy.pricing.costs",
    "SCENARIOS": "energy.pricing.estimate",
    "Profile": "energy.measuring.profile",
    "profile": "energy.measuring.profile",
}
STAGES = ("pricing", "measuring", "comparing", "app")  # lowest first

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
    that the import system sets on the package when ``energy.measuring.profile`` is imported."""

    def __setattr__(self, name, value):
        if name in _NAMES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``energy.cli`` is ``energy.app.cli``, the same module object: the command line's address
    (``python -m energy.cli``, ``from energy.cli import main``) kept when the module moved into its stage."""

    ALIASES = {"energy.cli": "energy.app.cli"}

    def find_spec(self, name, path=None, target=None):
        if name not in self.ALIASES:
            return None
        return importlib.util.spec_from_loader(name, self, origin=importlib.util.find_spec(self.ALIASES[name]).origin)

    def create_module(self, spec):
        return importlib.import_module(self.ALIASES[spec.name])

    def exec_module(self, module):
        pass

    def get_code(self, name):  # python -m energy.cli runs the real module's code as __main__
        real = importlib.util.find_spec(self.ALIASES[name])
        return real.loader.get_code(real.name)


if not any(isinstance(f, _Alias) for f in sys.meta_path):
    sys.meta_path.insert(0, _Alias())  # before any other finder (an editable install's maps the old path)


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES])
