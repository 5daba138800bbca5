"""On-disk cache of the baselines' counts (and of the bundled comparison models' profiles): a second run
does not rebuild them.

The counts of a transformer baseline (``energy.comparing.baselines.default_baselines``) depend only
on its architecture, its context length, and the code and libraries that count them; the
cost table and the precision are applied afterwards, to the cached counts. An entry is
keyed by a SHA-256 of all of that:

- the baseline's name and its dimensions (a preset's spec, or for any other baseline the
  whole SpikeGPT config, which is what it may be derived from) and the context;
- the package version and a hash of the **source** of the counting code
  (``COUNTING_MODULES``), so that any change to the counting invalidates every entry;
- the versions of torch, transformers and fvcore (they build and trace the models).

Entries live in the platform's user cache directory (``platformdirs``: ``~/.cache/spike-energy``
on Linux), one JSON file each: never a pickle. A Baseline is stored generically (every
dataclass field; DataFrames as columns with their dtypes), with a SHA-256 of the payload.
On load the file is size-limited, parsed as strict JSON, validated against ``CacheEntry``
and its checksum and key compared; an entry that fails is logged, deleted and rebuilt.

A baseline derived at a new context from its counted contexts (``baselines``) is kept in ``derived/`` beside
``baselines/``, keyed as a counted entry with the contexts it comes from, and read back exactly.

The RWKV twin is not cached: it runs in the same pass as SpikeGPT, on the same documents
(``energy.measuring.runner``), which its paired bootstrap needs. The profiles of the models that the demo
report and ``spike-energy pareto`` compare (``energy.comparing.variants``) are cached in ``profiles/`` beside
``baselines/``, keyed by the checkpoint's SHA-256, the token ids, the run settings, the source of
the profiling and model code, and the library versions; the cost table is applied after loading.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Literal

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr

from energy.comparing.baselines import (
    CLOSED_FORM_CONTEXTS,
    GPT2_PRESETS,
    OPS_COLUMNS,
    Baseline,
    NotClosedForm,
    default_baselines,
    derive_baseline,
)
from spikegpt.errors import SpikeEnergyError
from spikegpt.safeio import atomic_write_text, load_json, prune_oldest, strict_dumps, touch

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
COUNTING_MODULES = (
    "energy.comparing.baselines",
    "energy.measuring.rules",
    "energy.measuring.census",
    "energy.measuring.hooks",
    "energy.comparing.cache",  # how an entry is written and read back, and which one (counted or derived) is used
)
MAX_ENTRY_BYTES = 64 * 2**20
_DTYPES = {"int64", "float64", "bool", "object", "str", "string"}


def cache_dir() -> Path:
    """``<user cache dir>/spike-energy/baselines`` (honours ``XDG_CACHE_HOME`` on Linux)."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("spike-energy", appauthor=False)) / "baselines"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("spike-energy")
    except Exception:  # running from a source tree that is not installed
        return "unknown"


@functools.cache
def code_hash(modules: tuple[str, ...] = COUNTING_MODULES) -> str:
    """SHA-256 of the source files of the counting code."""
    h = hashlib.sha256()
    for name in modules:
        origin = importlib.util.find_spec(name).origin
        h.update(name.encode() + b"\0" + Path(origin).read_bytes() + b"\0")
    return h.hexdigest()


def _versions() -> dict:
    """Versions of what builds and traces the baselines (read from the installed metadata:
    importing transformers only for its version would cost seconds on every warm run)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"spike_energy": _version(), "torch": torch.__version__, "python": list(sys.version_info[:2])}
    # pandas and numpy: the derived entries are the result of pandas code (``derive_baseline``), kept on disk
    for dist in ("transformers", "fvcore", "pandas", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def cache_key(name: str, config, context: int, derived_from: tuple[int, ...] | None = None) -> str:
    """SHA-256 of everything the cached counts of baseline ``name`` depend on (``derived_from``: the counted
    contexts a derived entry comes from, ``derive_baseline``; its code is among the hashed sources)."""
    dims = GPT2_PRESETS[name] if name in GPT2_PRESETS else config.to_dict()
    spec = {"format": CACHE_FORMAT, "name": name, "dims": dims, "context": context, "code": code_hash(),
            **_versions()}  # fmt: skip
    if derived_from is not None:
        spec["derived_from"] = list(derived_from)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------
# A Baseline as JSON, and back
# ---------------------------------------------------------------------------------

Cell = StrictInt | StrictFloat | StrictStr | StrictBool | None


class Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dtypes: dict[str, StrictStr]  # column -> dtype, in column order
    data: dict[str, list[Cell]]  # column -> values


class CacheEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal[1]
    key: StrictStr
    sha256: StrictStr  # of the canonical JSON of {"fields": ..., "frames": ...}
    fields: dict[str, object]  # the Baseline's fields that are not DataFrames
    frames: dict[str, Frame]


def _payload_hash(fields: dict, frames: dict) -> str:
    """SHA-256 of the canonical JSON of a payload that is plain JSON data already (parsed from strict JSON, or
    passed through ``strict_dumps``): no ``json_safe`` pass is needed, and a NaN still cannot get through."""
    text = json.dumps({"fields": fields, "frames": frames}, sort_keys=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def to_entry(b, key: str, skip: tuple[str, ...] = ()) -> dict:
    """A dataclass (a Baseline, a Profile) as a cache entry: DataFrames as typed columns, the rest as JSON;
    the fields in ``skip`` are left out (the caller supplies them again on load)."""
    fields, frames = {}, {}
    for f in dataclasses.fields(b):
        if f.name in skip:
            continue
        v = getattr(b, f.name)
        if isinstance(v, pd.DataFrame):
            frames[f.name] = {
                "dtypes": {str(c): str(v[c].dtype) for c in v.columns},
                "data": {str(c): v[c].tolist() for c in v.columns},
            }
        else:
            fields[f.name] = v
    # NaN -> null here, so that the hash is of exactly what is written
    fields, frames = json.loads(strict_dumps(fields)), json.loads(strict_dumps(frames))
    return {"format": CACHE_FORMAT, "key": key, "sha256": _payload_hash(fields, frames), "fields": fields,
            "frames": frames}  # fmt: skip


class CorruptEntry(ValueError):
    pass


# The columns an entry's tables must have, by table name: exactly these (``=``), or at least these (``>=``: the
# layers tables, whose columns differ between a Baseline and a Profile). A checksum is no protection against a
# file written by hand: an entry that lacks a column the pricing reads would otherwise fail far away, with a
# traceback, instead of being rebuilt.
_OPS = frozenset(OPS_COLUMNS)
REQUIRED_COLUMNS = {
    "ops": ("=", _OPS), "eager_ops": ("=", _OPS),
    "setup": ("=", frozenset({"layer", "kind", "stage", "primitive", "count"})),
    "neurons": ("=", frozenset({"layer", "neuron", "spikes", "rate"})),
    "positions": ("=", frozenset({"layer", "position", "rate"})),
    "census": ("=", frozenset({"module", "module_type", "aten_op", "calls", "elements", "status", "kind"})),
    # the columns a Baseline's and a Profile's layers tables share (the pricing fills the others in)
    "layers": (">=", frozenset({"layer", "block", "kind", "params", "weight_elems", "mac", "synaptic_ops_per_token",
                                "operand_class", "zero_fraction", "in_per_token", "out_per_token",
                                "membrane_rw_per_token", "state_rw_per_token"})),
}  # fmt: skip
_SCALARS = {"str": (str,), "int": (int,), "bool": (bool,), "float": (int, float), "dict": (dict,), "list": (list,)}


def _check_columns(cls, name: str, columns: set) -> None:
    frame_fields = {f.name for f in dataclasses.fields(cls) if "DataFrame" in str(f.type)}
    if name not in frame_fields or name not in REQUIRED_COLUMNS:
        raise CorruptEntry(f"a {cls.__name__} has no table {name!r}")
    how, need = REQUIRED_COLUMNS[name]
    if (columns != need) if how == "=" else not need <= columns:
        missing, extra = sorted(need - columns), sorted(columns - need) if how == "=" else []
        raise CorruptEntry(f"table {name!r} lacks columns {missing} or has unknown ones {extra}")


def _check_fields(cls, fields: dict) -> None:
    """The plain fields have the types their dataclass declares (str, int, bool, float, dict, list; ``| None``)."""
    for f in dataclasses.fields(cls):
        if f.name not in fields:
            continue
        spec = str(f.type).replace(" ", "")
        optional = spec.endswith("|None")
        base = spec.removesuffix("|None").split("[")[0]
        v = fields[f.name]
        if "DataFrame" in base and v is not None:  # a table that is absent is stored as a null field
            raise CorruptEntry(f"field {f.name!r} is neither a table nor null")
        if base not in _SCALARS or (v is None and optional):
            continue
        if not isinstance(v, _SCALARS[base]) or (base in ("int", "float") and isinstance(v, bool)):
            raise CorruptEntry(f"field {f.name!r} is not a {base}")
        if spec == "list[str]" and not all(isinstance(x, str) for x in v):
            raise CorruptEntry(f"field {f.name!r} is not a list of strings")


def from_entry(d: dict, key: str, cls=Baseline, extra: dict | None = None):
    """A ``cls`` (a Baseline by default) from a validated entry dict, with the fields in ``extra`` added;
    ``CorruptEntry`` if anything does not fit."""
    entry = CacheEntry.model_validate(d)
    if entry.key != key:
        raise CorruptEntry("its key does not match its file name")
    frames_raw = {k: v.model_dump() for k, v in entry.frames.items()}
    if _payload_hash(entry.fields, frames_raw) != entry.sha256:
        raise CorruptEntry("its checksum does not match its content")
    frames = {}
    for name, fr in entry.frames.items():
        if set(fr.dtypes) != set(fr.data) or not set(fr.dtypes.values()) <= _DTYPES:
            raise CorruptEntry(f"frame {name!r} has unknown columns or dtypes")
        lengths = {len(col) for col in fr.data.values()}
        if len(lengths) > 1:
            raise CorruptEntry(f"frame {name!r} has columns of different lengths")
        _check_columns(cls, name, set(fr.dtypes))
        frames[name] = pd.DataFrame({c: pd.Series(fr.data[c], dtype=dt) for c, dt in fr.dtypes.items()})
    _check_fields(cls, entry.fields)
    try:
        return cls(**entry.fields, **frames, **(extra or {}))
    except TypeError as e:
        raise CorruptEntry(f"it does not hold a {cls.__name__} ({e})") from None


# ---------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------


WHAT = {"baselines": "baseline", "derived": "derived baseline", "profiles": "profile"}  # folder -> its entries
# each folder is kept under this size, the least recently used entries deleted first (a demo run writes about
# 2.9 MB of baselines, 0.6 MB of derived ones and 0.7 MB of profiles)
CAP_BYTES = {"baselines": 256 * 2**20, "derived": 256 * 2**20, "profiles": 1024 * 2**20}


def _path(key: str, folder: str = "baselines") -> Path:
    """Baselines in ``cache_dir()``, derived baselines and profiles in the folders beside it."""
    return (cache_dir() if folder == "baselines" else cache_dir().parent / folder) / f"{key}.json"


def read(key: str, folder: str = "baselines", cls=Baseline, extra: dict | None = None):
    """The cached entry (a Baseline by default), or None if there is none or it is corrupt (then it is deleted)."""
    path = _path(key, folder)
    if not os.path.lexists(path):
        return None
    try:
        d = load_json(path, f"{folder} cache entry", None, MAX_ENTRY_BYTES)
        out = from_entry(d, key, cls, extra)
        touch(path)
        return out
    except (SpikeEnergyError, ValueError, TypeError, KeyError) as e:  # ValidationError is a ValueError
        logger.warning("ignoring the corrupt %s cache entry %s (%s); it will be rebuilt",
                       WHAT[folder], path, str(e).splitlines()[0][:200])  # fmt: skip
        with contextlib.suppress(OSError):
            path.unlink()
        return None


def write(key: str, b, folder: str = "baselines", skip: tuple[str, ...] = ()) -> None:
    """Store a Baseline (or a Profile, in ``folder``); a cache that cannot be written is logged, not an error."""
    path = _path(key, folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, strict_dumps(to_entry(b, key, skip)))
        prune_oldest(path.parent, CAP_BYTES[folder], keep=path)
    except OSError as e:
        logger.warning("could not write the %s cache %s (%s); the next run rebuilds it", WHAT[folder], path,
                       e.strerror)  # fmt: skip


def _counted(name: str, config, context: int, use_cache: bool) -> Baseline:
    """The baseline counted at ``context``: from the cache, or counted (and cached)."""
    key = cache_key(name, config, context) if use_cache else None
    cached = read(key) if use_cache else None
    if cached is not None:
        logger.info("baseline %s at context %d: from the cache (%s)", name, context, _path(key))
        return cached
    b = default_baselines(config, context, include=(name,))[name]
    if use_cache:
        write(key, b)
    return b


def baselines(config, context: int, include, use_cache: bool = True) -> dict[str, Baseline]:
    """``energy.comparing.baselines.default_baselines`` through the cache (``use_cache=False``: no reading, no writing).

    Each architecture is counted once, at the small contexts ``CLOSED_FORM_CONTEXTS`` (a second each), and
    any other context is derived from them exactly (``energy.comparing.baselines.derive_baseline``): a new corpus or
    ``--max-tokens`` never recounts. A context at or below the largest of them is counted directly, as is a
    baseline whose counts turn out not to be a polynomial in T (logged), and any context without the cache.

    The derived baseline is kept too, in ``derived/`` beside ``baselines/`` (keyed like a counted entry, with the
    contexts it comes from): a warm run reads one entry per baseline instead of reading five and deriving
    (issue 24: 2.2 s of the demo's warm run). It is the derivation's own result, bit for bit (JSON floats
    round-trip exactly), validated on reading like every entry."""
    out = {}
    for name in include:
        if context <= max(CLOSED_FORM_CONTEXTS) or not use_cache:
            out[name] = _counted(name, config, context, use_cache)
            continue
        key = cache_key(name, config, context, derived_from=CLOSED_FORM_CONTEXTS)
        hit = read(key, "derived")
        if hit is not None:
            logger.info("baseline %s at context %d: derived, from the cache (%s)", name, context,
                        _path(key, "derived"))  # fmt: skip
            out[name] = hit
            continue
        samples = {t: _counted(name, config, t, use_cache) for t in CLOSED_FORM_CONTEXTS}
        try:
            out[name] = derive_baseline(samples, context)
        except NotClosedForm as e:
            logger.warning("baseline %s: counted at context %d (%s)", name, context, e)
            out[name] = _counted(name, config, context, use_cache)
            continue
        write(key, out[name], "derived")
    return out


def check_memory(config, context: int, include, budget: int | None) -> None:
    """Refuse, before anything runs, a baseline whose counting cannot fit the memory budget
    (e.g. a context of 10^8 from ``--context`` or a checkpoint's sidecar)."""
    from energy.comparing.baselines import _heads_for
    from spikegpt.limits import check_memory as check
    from spikegpt.limits import transformer_bytes

    for name in include:
        if name in GPT2_PRESETS:
            d = GPT2_PRESETS[name]
        else:  # transformer-same-dims, and any baseline shaped like the checkpoint
            d = dict(n_layer=config.n_layer, n_embd=config.n_embd, n_head=_heads_for(config.n_embd),
                     vocab_size=config.vocab_size)  # fmt: skip
        need = transformer_bytes(**d, context=context)
        check(f"the {name} baseline at a context of {context:,} tokens", need, budget)


# ---------------------------------------------------------------------------------
# Profiles of the bundled comparison models
# ---------------------------------------------------------------------------------

PROFILING_MODULES = ("energy.measuring.profile", "energy.measuring.runner", "energy.measuring.hooks",
                     "energy.measuring._numba_counts", "energy.measuring.rules", "energy.measuring.census",
                     "spikegpt.model", "spikegpt.config", "spikegpt.checkpoint", "spikegpt.cpu_kernels",
                     "spikegpt._numba_loops")  # fmt: skip
PROFILE_SKIP = ("costs", "precision")  # applied after loading, like a baseline's cost table


def profile_key(checkpoint_sha256: str, ids: list[int], **settings) -> str:
    """SHA-256 of everything a profile depends on: the checkpoint's bytes, the token ids, the run's settings,
    the source of the profiling and model code, and the library versions."""
    code = code_hash(PROFILING_MODULES)  # every name must exist: a module renamed away fails here, not silently
    spec = {"format": CACHE_FORMAT, "checkpoint": checkpoint_sha256,
            "ids": hashlib.sha256(json.dumps(ids).encode()).hexdigest(), "settings": settings, "code": code,
            **_versions()}  # fmt: skip
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def cached_profile(key: str | None, build, costs, precision: str, without: tuple[str, ...] = ()):
    """The profile under ``key`` from the cache, else ``build()`` (then stored); ``key`` None: no cache.

    ``without``: tables the caller never reads (``positions``, ``rasters``: 4 of the 4.5 MB of the demo model's
    entry), neither stored nor returned (None in their place, built or read alike); the key must say so
    (``profile_key(..., without=...)``), so that an entry without them is never taken for a whole one."""
    import dataclasses

    from energy.measuring.profile import Profile

    absent = dict.fromkeys(without)
    if key is not None:
        hit = read(key, "profiles", Profile, {"costs": costs, "precision": precision, **absent})
        if hit is not None:
            logger.info("profile from the cache (%s)", _path(key, "profiles"))
            return hit
    prof = build()
    if key is not None:
        write(key, prof, "profiles", PROFILE_SKIP + tuple(without))
    return dataclasses.replace(prof, **absent) if absent else prof
