"""The report's figures kept on disk: a run whose figure would get the same input data, drawn by the same code
with the same libraries, reads the figure instead of drawing it again (issue 24: drawing the demo's 14 figures
took 3.5 s of its 16 s warm run).

An entry is keyed by a SHA-256 of everything the figure's bytes depend on:

- the figure (its key, title, format and ``reports.plots`` function) and its input data, exactly as the
  function receives it (canonical JSON in the data's own order; an input that is not plain JSON data is not
  kept, it is drawn every time);
- the source of the drawing code (``DRAWING_MODULES``) and the versions of matplotlib, numpy and Pillow;
- the user's matplotlib settings files, which the figures' own style does not override (``$MATPLOTLIBRC``,
  ``./matplotlibrc``, the user's matplotlib config folder).

Entries live beside the baselines cache (``<user cache dir>/spike-energy/figures``), one JSON file each, never
a pickle. On reading, a file is size-limited, parsed as strict JSON, and checked field by field: its key, its
checksum, its title, and a data URI of the figure's own format in base64 (nothing else can reach the report's
``src``); an entry that fails is logged, deleted and drawn again. A figure that failed to draw is never kept.
``--no-cache`` neither reads nor writes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
import sys
from pathlib import Path

from spikegpt.errors import SpikeEnergyError
from spikegpt.safeio import atomic_write_text, load_json, prune_oldest, touch

logger = logging.getLogger(__name__)

FORMAT = 1
# every project module the drawing code imports (a test walks their imports): reports.corpus and spikegpt.safeio
# shape labels and names that figures show
DRAWING_MODULES = ("reports.plots", "reports.labels", "reports.schema", "reports.html", "reports.figure_cache",
                   "reports.corpus", "spikegpt.safeio")  # fmt: skip
MAX_ENTRY_BYTES = 16 * 2**20
CAP_BYTES = 256 * 2**20  # the folder is kept under this, least recently used figures deleted first (the demo's: 1.6 MB)
MIME = {"svg": "image/svg+xml", "png": "image/png"}
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


@functools.cache
def _code_and_libraries() -> str:
    """SHA-256 of the drawing code's sources and the versions of the libraries that draw."""
    from importlib.metadata import PackageNotFoundError, requires, version

    h = hashlib.sha256()
    for name in DRAWING_MODULES:
        h.update(name.encode() + b"\0" + Path(importlib.util.find_spec(name).origin).read_bytes() + b"\0")
    h.update(f"python={sys.version}\0".encode())
    # matplotlib and everything it declares it needs (kiwisolver places the constrained layouts, fonttools and
    # pyparsing the text), read from the installed metadata without importing them
    try:
        deps = [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in requires("matplotlib") or () if "extra ==" not in r]
    except PackageNotFoundError:
        deps = []
    for dist in sorted({"matplotlib", "numpy", "pillow", *(d.lower() for d in deps)}):
        try:
            h.update(f"{dist}={version(dist)}\0".encode())
        except PackageNotFoundError:
            h.update(f"{dist}=none\0".encode())
    return h.hexdigest()


def _config_dir() -> Path | None:
    """matplotlib's configuration folder (``matplotlib.get_configdir``: its branches, without importing it)."""
    if os.environ.get("MPLCONFIGDIR"):
        return Path(os.environ["MPLCONFIGDIR"])
    try:
        if sys.platform.startswith(("linux", "freebsd")):
            return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "matplotlib"
        old = Path.home() / ".matplotlib"
        if sys.platform == "win32" and not old.is_dir() and os.environ.get("LOCALAPPDATA"):
            return Path(os.environ["LOCALAPPDATA"]) / "matplotlib"
        return old
    except RuntimeError:  # no home folder
        return Path(os.environ["LOCALAPPDATA"]) / "matplotlib" if os.environ.get("LOCALAPPDATA") else None


def _settings_files() -> list[Path]:
    """The matplotlibrc files matplotlib would read before its own (``matplotlib.matplotlib_fname``'s candidates,
    in its order), found without importing matplotlib."""
    out = [Path("matplotlibrc")]
    if os.environ.get("MATPLOTLIBRC"):
        p = Path(os.environ["MATPLOTLIBRC"])
        out += [p, p / "matplotlibrc"]
    config = _config_dir()
    if config is not None:
        out.append(config / "matplotlibrc")
    return out


def _settings() -> str:
    h = hashlib.sha256()
    for p in _settings_files():
        with contextlib.suppress(OSError):
            h.update(str(p).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _plain(x, depth: int = 0) -> bool:
    """JSON data whose JSON form is itself: dicts with string keys, lists, and scalars (no tuples)."""
    if depth > 64:
        return False
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in x.items())
    if isinstance(x, list):
        return all(_plain(v, depth + 1) for v in x)
    return x is None or isinstance(x, (str, int, float, bool))


def figure_key(key: str, title: str, fmt: str, function: str, args: tuple, kwargs: dict) -> str | None:
    """SHA-256 of everything the figure depends on, or None when its input is not plain JSON data."""
    if not _plain(list(args)) or not _plain(kwargs):  # JSON would take 1 for "1" and a tuple for a list
        return None
    try:
        data = json.dumps([args, kwargs], allow_nan=False)  # the data's own order: it can be the figure's order
    except (TypeError, ValueError):
        return None
    spec = {"format": FORMAT, "figure": [key, title, fmt, function], "data": hashlib.sha256(data.encode()).hexdigest(),
            "code": _code_and_libraries(), "settings": _settings()}  # fmt: skip
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _checksum(figure: dict) -> str:
    return hashlib.sha256(json.dumps(figure, sort_keys=True).encode()).hexdigest()


def _check(d, key: str, title: str, fmt: str) -> dict:
    """The figure of a parsed entry, or ValueError saying what does not fit."""
    if not isinstance(d, dict) or set(d) != {"format", "key", "sha256", "figure"}:
        raise ValueError("not a figure entry")
    if d["format"] != FORMAT or d["key"] != key:
        raise ValueError("its format or key does not match its file name")
    fig = d["figure"]
    if not isinstance(fig, dict) or set(fig) != {"title", "uri", "note"} or fig["title"] != title:
        raise ValueError("not this figure")
    if d["sha256"] != _checksum(fig):
        raise ValueError("its checksum does not match its content")
    uri, note = fig["uri"], fig["note"]
    if uri is None:  # only a figure with no data is kept as a note (a failed drawing is drawn again)
        if not isinstance(note, str) or not note.startswith(f"{title}: not drawn, ") or len(note) > 2000:
            raise ValueError("neither a figure nor a note of a figure with no data")
    else:
        prefix = f"data:{MIME[fmt]};base64,"
        if note is not None or not isinstance(uri, str) or not uri.startswith(prefix):
            raise ValueError(f"not a {fmt} data URI")
        if not _BASE64.fullmatch(uri, len(prefix)):
            raise ValueError("not base64")
    return fig


def read(folder: Path, key: str, title: str, fmt: str) -> dict | None:
    """The kept figure, or None (none kept, or a bad entry: then it is deleted)."""
    path = folder / f"{key}.json"
    if not os.path.lexists(path):
        return None
    try:
        fig = _check(load_json(path, "figure cache entry", None, MAX_ENTRY_BYTES), key, title, fmt)
        touch(path)
        return fig
    except (SpikeEnergyError, ValueError, TypeError, KeyError) as e:
        logger.warning("ignoring the corrupt figure cache entry %s (%s); it will be drawn again", path,
                       str(e).splitlines()[0][:200])  # fmt: skip
        with contextlib.suppress(OSError):
            path.unlink()
        return None


def write(folder: Path, key: str, figure: dict) -> None:
    """Keep a figure; a cache that cannot be written is logged, not an error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        entry = {"format": FORMAT, "key": key, "sha256": _checksum(figure), "figure": figure}
        text = json.dumps(entry, allow_nan=False)
        if len(text.encode()) > MAX_ENTRY_BYTES:  # it would be refused on reading: drawn every time instead
            return
        atomic_write_text(folder / f"{key}.json", text)
        prune_oldest(folder, CAP_BYTES, keep=f"{key}.json")
    except (OSError, ValueError) as e:
        logger.warning("could not write the figure cache %s (%s); the next run draws it again", folder, e)
