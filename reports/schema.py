"""What a summary.json must hold for the report, ``compare`` and ``audit SUMMARY`` to read it.

``Summary`` is the declared schema (pydantic): the keys every reader relies on, with the
types they format (numbers are finite or null: summary.json is strict JSON). Other keys
are allowed, so that newer summaries with more content still read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from spikegpt.errors import SpikeEnergyError
from spikegpt.safeio import shown, validate

SCHEMA_VERSION = 2  # the newest summary layout this code reads (1 still reads)

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

_FIX = "pass the summary.json that `spike-energy profile` writes"
MAX_SUMMARY_BYTES = 64 * 2**20  # a 216M run at 2048 tokens writes a few MB

Num = StrictInt | StrictFloat | None  # a finite number, or null for NaN / missing


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Headline(_Open):
    claim: Num = None
    ratio_as_executed: dict[str, Num] = {}
    ratio_as_executed_memory: dict[str, Num] = {}
    reference: StrictStr | None = None


class WaterfallStep(_Open):
    step: StrictStr
    description: StrictStr = ""
    spikegpt_pj_per_token: Num = None
    ratio: dict[str, Num] = {}


class Sensitivity(_Open):
    by_rate: list[dict[str, object]] = []
    by_precision: list[dict[str, object]] = []


class Audit(_Open):
    claim: Num = None
    precision: StrictStr | None = None
    reference: StrictStr | None = None
    waterfall: list[WaterfallStep] = []
    # precision -> "compute" / "compute + memory" -> rates, energies and notes
    break_even: dict[str, dict[str, dict[str, object]]] = {}
    sensitivity: Sensitivity = Field(default_factory=Sensitivity)
    paper_mode: list[dict[str, object]] = []


class Summary(_Open):
    schema_version: StrictInt
    model: dict[str, object]
    tokens: StrictInt
    firing_rate: dict[str, Num]
    ops_per_token: dict[str, Num]
    energy_pj_per_token: dict[str, Num]
    baselines: dict[str, dict[str, object]]
    audit: Audit
    uncounted_ops: list[dict[str, object]]
    assumptions: list[dict[str, object]]
    environment: dict[str, object]
    headline: Headline | None = None


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
        raise SpikeEnergyError(f"{source}: schema_version must be an integer, got {shown(version)}; {_FIX}")
    if version > SCHEMA_VERSION:
        raise SpikeEnergyError(
            f"{source}: written with summary schema {version}, this spike-energy reads up to {SCHEMA_VERSION}; "
            "upgrade spike-energy"
        )
    try:
        validate(d, Summary, source)
    except SpikeEnergyError as e:  # "SOURCE: at firing_rate.'x': Input should be ..."
        raise SpikeEnergyError(f"{source}: not a spike-energy summary (wrong type for: "
                               f"{str(e).removeprefix(source + ': at ')}); {_FIX}") from None  # fmt: skip


def validate_audit(d: object, source: str = "audit") -> Audit:
    """The audit part of a summary (or an audit.json), validated."""
    return validate(d, Audit, source, fix=_FIX)


def finite(x) -> float | None:
    """A finite float, or None (summary.json writes NaN as null; missing values are None)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
