"""What a summary.json must hold for the report, ``compare`` and ``audit SUMMARY`` to read it.

``Summary`` is the declared schema (pydantic): the keys every reader relies on, with the
types they format (numbers are finite or null: summary.json is strict JSON). Other keys
are allowed, so that newer summaries with more content still read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from spikegpt.errors import SpikeEnergyError
from spikegpt.safeio import shown, validate

SCHEMA_VERSION = 2  # the newest summary layout this code reads
READABLE_VERSIONS = (1, 2)  # every summary layout this code reads

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
Scalar = StrictInt | StrictFloat | StrictStr | StrictBool | None
Row = dict[str, object]  # one table row: a mapping (its values are formatted through ``finite`` or ``str``)
PerName = dict[str, Num]  # scenario, layer, primitive or baseline -> a number


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------------------------
# spike-energy bench --out (also summary.json["bench"])
# ---------------------------------------------------------------------------------


class Timing(_Open):
    """One timed item: ``status`` ok (with the times) or skipped / failed (with a reason)."""

    status: StrictStr
    reason: StrictStr | None = None
    median_s: Num = None
    min_s: Num = None
    max_s: Num = None
    samples_s: list[Num] = []
    first_call_s: Num = None
    tokens_per_s: Num = None


class DecodeTiming(Timing):
    batch: StrictInt | None = None


class MatmulTiming(Timing):
    n_linear: Num = None
    n_mac: Num = None
    flop_per_s: Num = None


class BenchDerived(_Open):
    nonmatmul_s: PerName = {}
    forward_over_matmul: PerName = {}
    eager_over_fused_nonmatmul: Num = None
    fused_over_matmul: Num = None
    notes: list[StrictStr] = []


class BenchSettings(_Open):
    batch: StrictInt | None = None
    tokens: StrictInt | None = None
    dtype: StrictStr | None = None
    decode_batches: list[StrictInt] = []
    decode_tokens: StrictInt | None = None
    repeats: StrictInt | None = None
    config: dict[str, Scalar] = {}


class BenchFile(_Open):
    """What ``spike-energy bench --out`` writes, every level that the report and the summary read."""

    device: StrictStr | None = None
    device_type: StrictStr | None = None
    versions: dict[str, Scalar] = {}
    settings: BenchSettings = Field(default_factory=BenchSettings)
    forward: dict[str, Timing]
    decode: dict[str, list[DecodeTiming]] = {}
    matmul: MatmulTiming | None = None
    derived: BenchDerived | None = None


# ---------------------------------------------------------------------------------
# summary.json
# ---------------------------------------------------------------------------------


class Headline(_Open):
    claim: Num = None
    sentence: StrictStr | None = None
    decode_sentence: StrictStr | None = None
    ratio_as_executed: PerName = {}
    ratio_as_executed_memory: PerName = {}
    reference: StrictStr | None = None


class WaterfallStep(_Open):
    step: StrictStr
    description: StrictStr = ""
    spikegpt_pj_per_token: Num = None
    ratio: PerName = {}


class Sensitivity(_Open):
    by_rate: list[Row] = []
    by_precision: list[Row] = []


class Audit(_Open):
    claim: Num = None
    precision: StrictStr | None = None
    reference: StrictStr | None = None
    waterfall: list[WaterfallStep] = []
    # precision -> "compute" / "compute + memory" -> rates, energies and notes
    break_even: dict[str, dict[str, Row]] = {}
    sensitivity: Sensitivity = Field(default_factory=Sensitivity)
    paper_mode: list[Row] = []


class ModelInfo(_Open):
    n_layer: StrictInt | None = None
    n_embd: StrictInt | None = None
    vocab_size: StrictInt | None = None
    ctx_len: StrictInt | None = None
    params: Num = None
    checkpoint: StrictStr | None = None
    sha256: StrictStr | None = None
    file_dtypes: list[StrictStr] = []
    warnings: list[StrictStr] = []
    tokenizer: Row | StrictStr | None = None


class TextInfo(_Open):
    path: StrictStr | None = None
    sha256: StrictStr | None = None
    chars: StrictInt | None = None
    excerpt: StrictStr | None = None


class BaselineSummary(_Open):
    description: StrictStr | None = None
    params: Num = None
    context: StrictInt | None = None
    precision: StrictStr | None = None
    ops_per_token: PerName = {}
    energy_pj_per_token: PerName = {}
    energy_pj_per_char: PerName | None = None
    chars_per_token: Num = None
    chars_per_token_source: StrictStr | None = None
    assumptions: list[StrictStr] = []
    uncounted_ops: Row | list[Row] | None = None  # aten op -> calls


class Breakdown(_Open):
    by_primitive: PerName = {}
    by_stage: PerName = {}
    by_layer: PerName = {}


class Summary(_Open):
    """Every section of summary.json, to the depth its readers (the report, ``compare``, ``audit SUMMARY``)
    take it apart: a mapping where a mapping is read, a list where a list is iterated, a number or null where a
    number is formatted. ``pipeline.summary`` writes it and the report validates what it renders with it."""

    schema_version: StrictInt
    model: ModelInfo
    text: TextInfo | None = None
    tokens: StrictInt
    batch: StrictInt | None = None
    tokens_per_sequence: StrictInt | None = None
    mode: StrictStr | None = None
    dtype: StrictStr | None = None
    precision: StrictStr | None = None
    unit: StrictStr | None = None
    bits_per_token: Num = None
    bpc: Num = None
    ppl: Num = None
    firing_rate: PerName
    ops_per_token: PerName
    ops_per_token_by_layer: dict[str, PerName] = {}
    setup_ops_per_call: list[Row] = []
    energy_pj_per_token: PerName
    energy_pj_per_sequence: PerName = {}
    energy_breakdown: dict[str, Breakdown] = {}
    scenarios: dict[str, StrictStr] = {}
    headline: Headline | None = None
    operations_per_token: Row | None = None
    chars_per_token: Num = None
    energy_pj_per_char: PerName = {}
    decode: Row | None = None
    variants: Row | None = None
    zero_skipping: StrictBool | None = None
    precision_preset: Row | None = None
    parameters: list[Row] = []
    baselines: dict[str, BaselineSummary]
    baseline_descriptions: dict[str, StrictStr] = {}
    audit: Audit
    uncounted_ops: list[Row]
    census: Row | None = None
    memory: Row | None = None
    platforms: Row | None = None
    assumptions: list[Row]
    costs: Row | None = None
    layers: list[Row] = []
    neurons: Row | None = None
    raster: dict[str, list[list[StrictInt]]] = {}
    firing_rate_by_position: dict[str, list[Num]] = {}
    relu_sq_zero_fraction: PerName = {}
    timings_s: PerName = {}
    environment: Row
    corpus: Row | None = None
    uncertainty: Row | None = None
    documents: list[Row] = []
    # `--bench` files are validated whole as BenchFile when read; a summary's bench of another shape (written by
    # hand, or by another version) is shown raw by the report, never taken apart
    bench: BenchFile | Row | None = None


def _versions() -> str:
    listed = [str(v) for v in READABLE_VERSIONS]
    return listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]


def validate_summary(d: object, source: str = "summary") -> None:
    """Raise ``SpikeEnergyError`` (one line: the source, the problem, the fix) unless ``d``
    is a spike-energy summary this version can read, every level of it."""
    if not isinstance(d, Mapping):
        raise SpikeEnergyError(f"{source}: not a spike-energy summary (a JSON object was expected, got "
                               f"{type(d).__name__}); {_FIX}")  # fmt: skip
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise SpikeEnergyError(f"{source}: not a spike-energy summary (missing keys: {', '.join(missing)}); {_FIX}")
    version = d["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise SpikeEnergyError(f"{source}: schema_version must be an integer, got {shown(version)}; {_FIX}")
    if version not in READABLE_VERSIONS:
        newer = version > max(READABLE_VERSIONS)
        raise SpikeEnergyError(
            f"{source}: written with summary schema version {version}, "
            f"{'newer than this release' if newer else 'which no release wrote'}; this spike-energy reads summary "
            f"schema versions {_versions()}: "
            + ("upgrade spike-energy, or profile again with this one" if newer else _FIX)
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
