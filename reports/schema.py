"""What a summary.json must hold for the report and ``spike-energy compare`` to read it."""

from __future__ import annotations

import math
from collections.abc import Mapping

from spikegpt.errors import SpikeEnergyError

SCHEMA_VERSION = 1  # the newest summary layout this code reads

REQUIRED_KEYS = (
    "schema_version",
    "model",
    "tokens",
    "firing_rate",
    "ops_per_token",
    "energy_pj_per_token",
    "baselines",
    "audit",
    "uncounted_ops",
    "assumptions",
    "environment",
)

# keys whose value must be a JSON object (dict) or a JSON array (list)
_OBJECTS = ("model", "firing_rate", "ops_per_token", "energy_pj_per_token", "baselines", "audit", "environment")
_ARRAYS = ("uncounted_ops", "assumptions")
_FIX = "pass the summary.json that `spike-energy profile` writes"


def validate_summary(d: object, source: str = "summary") -> None:
    """Raise ``SpikeEnergyError`` (one line: the source, the problem, the fix) unless ``d``
    looks like a spike-energy summary this version can read."""
    if not isinstance(d, Mapping):
        raise SpikeEnergyError(f"{source}: not a spike-energy summary (a JSON object was expected, got "
                               f"{type(d).__name__}); {_FIX}")  # fmt: skip
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise SpikeEnergyError(f"{source}: not a spike-energy summary (missing keys: {', '.join(missing)}); {_FIX}")
    version = d["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise SpikeEnergyError(f"{source}: schema_version must be an integer, got {version!r}; {_FIX}")
    if version > SCHEMA_VERSION:
        raise SpikeEnergyError(
            f"{source}: written with summary schema {version}, this spike-energy reads up to {SCHEMA_VERSION}; "
            "upgrade spike-energy"
        )
    wrong = [k for k in _OBJECTS if not isinstance(d[k], Mapping)]
    wrong += [k for k in _ARRAYS if not isinstance(d[k], list)]
    if wrong:
        raise SpikeEnergyError(f"{source}: not a spike-energy summary (wrong type for: {', '.join(wrong)}); {_FIX}")


def finite(x) -> float | None:
    """A finite float, or None (summary.json writes NaN as null; missing values are None)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
