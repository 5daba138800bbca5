"""Reading and writing user files safely: one place for every check.

- ``check_regular_file``: a user file must be a regular file (not a directory, FIFO,
  device or socket) under a size limit, and readable; ``read_bytes`` reads it bounded.
- ``read_stdin``: standard input (``-``) as an explicit, bounded source.
- ``load_json``: JSON with a size limit, no ``NaN``/``Infinity``, no duplicate keys, no
  5000-digit integers, no nesting deeper than Python can parse, then validated against a
  declared schema (a pydantic model or type).
- ``shown``: names that come from files (state-dict keys, characters, ids) escaped
  repr-style and truncated, so that a key holding a newline or an ANSI escape cannot forge
  a line or retitle the terminal, and a 1 MB key does not make a 1 MB message.
- ``check_output_dir`` / ``check_output_file``: fail before a long run if the result
  cannot be written; ``atomic_write_text``: nothing half-written is ever left behind.
- ``write_csv``: text cells that a spreadsheet would read as a formula are neutralised
  (OWASP, "CSV Injection": prefix a cell that begins with ``= + - @``, tab or CR with ``'``).

Every failure raises ``SpikeEnergyError`` (or the subclass the caller names) with one line.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
import sys
import tempfile
from pathlib import Path

from spikegpt.errors import SpikeEnergyError

MiB = 2**20
MAX_JSON_BYTES = 64 * MiB  # default for JSON inputs; each format passes its own
MAX_STDIN_BYTES = 64 * MiB
MAX_INT_DIGITS = 30  # no count or id in our inputs needs more (2^64 has 20 digits)
NAME_LIMIT = 80  # characters of a name from a file shown in a message


def shown(name: object, limit: int = NAME_LIMIT) -> str:
    """A name from a file, safe to print: repr-escaped (quotes, ``\\n``, ``\\x1b``) and truncated."""
    if not isinstance(name, str):  # a key that is not a string: its repr, escaped and truncated the same way
        try:
            text = repr(name)
        except Exception:  # a hostile __repr__: fall back to the type
            text = f"<{type(name).__name__}>"
        return one_line(text[:limit]) + ("..." if len(text) > limit else "")
    if len(name) > limit:
        return repr(name[:limit]) + f"... ({len(name):,} characters)"
    return repr(name)


def shown_path(path: object, limit: int = 200) -> str:
    """A path as typed when it is printable, else escaped like ``shown``."""
    s = str(path)
    if s.isprintable() and len(s) <= limit:
        return s
    return shown(s, limit)


def one_line(text: str, limit: int = 2000) -> str:
    """Any message as a single printable line (control characters escaped), truncated."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return out if len(out) <= limit else out[:limit] + f"... ({len(out):,} characters)"


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", MiB), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} bytes"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def check_regular_file(
    path: str | Path, what: str, max_bytes: int | None = None, error: type[SpikeEnergyError] = SpikeEnergyError
) -> Path:
    """The resolved path of a readable regular file of at most ``max_bytes``, or one-line error.

    ``what`` names the file for the user, e.g. ``"--text"`` or ``"tokenizer"``. Never opens
    the file, so a FIFO cannot block and ``/dev/zero`` is never read.
    """
    p = Path(path)
    name = shown_path(p)
    try:
        st = os.stat(p)  # follows symlinks: a link to /dev/zero is a character device
    except FileNotFoundError:
        if p.is_symlink():
            raise error(f"{what} {name} is a symlink to {shown_path(os.readlink(p))}, which does not exist") from None
        raise error(f"{what} {name} does not exist; check the path") from None
    except OSError as e:
        raise error(f"{what} {name} cannot be read ({e.strerror}); check the path and its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {name} is a directory; give a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {name} is {_kind(st.st_mode)}, not a regular file; save its content to a file first")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{what} {name} is {_size(st.st_size)}, over the {_size(max_bytes)} limit for it; "
                    "check that it is the right file")  # fmt: skip
    if not os.access(p, os.R_OK):
        raise error(f"{what} {name} is not readable; check its permissions")
    return p.resolve()


def read_bytes(path: str | Path, what: str, max_bytes: int, error: type[SpikeEnergyError] = SpikeEnergyError) -> bytes:
    """A regular file's bytes, refusing it (before reading) if it is over ``max_bytes``."""
    p = check_regular_file(path, what, max_bytes, error)
    try:
        with open(p, "rb") as f:
            raw = f.read(max_bytes + 1)  # a file that grows after the check is still bounded
    except OSError as e:
        raise error(f"{what} {shown_path(path)} cannot be read ({e.strerror}); check its permissions") from None
    if len(raw) > max_bytes:
        raise error(f"{what} {shown_path(path)} is over the {_size(max_bytes)} limit for it")
    return raw


def describe_content(head: bytes) -> str:
    """What the first bytes of a file say it is, for a message ("a text file (UTF-8) that starts 'To be, or'"):
    names the common formats a user may pass by mistake; never runs or unpickles anything."""
    if not head:
        return "empty"
    magic = (
        (b"PK\x03\x04", "a zip archive"),
        (b"\x1f\x8b", "a gzip-compressed file"),
        (b"\x89HDF", "an HDF5 file"),
        (b"\x89PNG", "a PNG image"),
        (b"%PDF", "a PDF document"),
        (b"\x7fELF", "an executable (ELF)"),
        (b"\x93NUMPY", "a NumPy .npy array"),
        (b"version https://git-lfs", "a Git LFS pointer (the file itself was not downloaded: run git lfs pull)"),
    )
    for prefix, name in magic:
        if head.startswith(prefix):
            return name
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return f"a Python pickle (protocol {head[1]})"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100 * MiB:
        return "a .safetensors file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:  # a multi-byte character cut at the end of the head is still text
        text = head[: e.start].decode("utf-8") if e.start >= len(head) - 3 else None
    if text is not None and sum(c.isprintable() or c in "\n\r\t" for c in text) >= 0.95 * max(len(text), 1):
        start = text.lstrip("\ufeff \n\r\t")
        low = start[:200].lower()
        if low.startswith(("<!doctype html", "<html")) or "<html" in low:
            return "an HTML page (a download that saved a web page instead of the file?)"
        kind = "a JSON file" if start[:1] in "{[" else "a text file"
        return f"{kind} (UTF-8) that starts {shown(start[:40].splitlines()[0] if start else '', 40)}"
    return f"binary data of an unknown format (starts {head[:8].hex(' ')})"


def read_head(path: str | Path, n: int = 512) -> bytes:
    """The first ``n`` bytes of a regular file (checked by ``check_regular_file`` before), or b"" if unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def read_stdin(what: str = "stdin", max_bytes: int = MAX_STDIN_BYTES, stream=None) -> bytes:
    """Standard input, bounded: refuses a terminal (nothing was piped) and more than ``max_bytes``."""
    stream = stream if stream is not None else sys.stdin.buffer
    with contextlib.suppress(AttributeError, ValueError, OSError):
        if stream.isatty():
            raise SpikeEnergyError(f"{what}: standard input is a terminal; pipe the text in (e.g. cat FILE | ...)")
    raw = stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise SpikeEnergyError(f"{what}: standard input gave more than {_size(max_bytes)}; cut it (e.g. head -c 10M)")
    return raw


# ---------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------


class _JSONRefused(ValueError):
    pass


def _no_constant(name: str):
    raise _JSONRefused(f"{name} is not a number JSON allows")


def _int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise _JSONRefused(f"an integer of {len(s.lstrip('-'))} digits (more than {MAX_INT_DIGITS})")
    return int(s)


def _float(s: str) -> float:
    v = float(s)
    if v in (float("inf"), float("-inf")):
        raise _JSONRefused(f"the number {s[:40]} overflows a float")
    return v


def _pairs(pairs: list) -> dict:
    d = {}
    for k, v in pairs:
        if k in d:
            raise _JSONRefused(f"the key {shown(k)} appears twice in one object")
        d[k] = v
    return d


def parse_json(text: str, source: str, error: type[SpikeEnergyError] = SpikeEnergyError, fix: str = ""):
    """Strict JSON: no NaN/Infinity, no duplicate keys, no huge integers, bounded nesting."""
    tail = f"; {fix}" if fix else ""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_int=_int, parse_float=_float,
                          object_pairs_hook=_pairs)  # fmt: skip
    except _JSONRefused as e:
        raise error(f"{source}: refused: {e}{tail}") from None
    except json.JSONDecodeError as e:
        raise error(f"{source}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}){tail}") from None
    except RecursionError:
        raise error(f"{source}: refused: nested deeper than JSON inputs may be{tail}") from None
    except ValueError as e:  # anything else the decoder refuses
        raise error(f"{source}: not valid JSON ({one_line(e, 200)}){tail}") from None


def validate(obj, schema, source: str, error: type[SpikeEnergyError] = SpikeEnergyError, fix: str = ""):
    """``obj`` checked against a pydantic model or type; returns what pydantic returns."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(schema).validate_python(obj)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(_loc_part(p) for p in first["loc"]) or "top level"
        more = f" (and {e.error_count() - 1} more problems)" if e.error_count() > 1 else ""
        msg = re.sub(r" or instance of \w+$", "", first["msg"])  # pydantic names its own classes
        raise error(f"{source}: at {loc}: {one_line(msg, 200)}{more}{'; ' + fix if fix else ''}") from None


def _loc_part(p) -> str:
    if isinstance(p, int):
        return f"[{p}]"
    s = str(p)
    return s if s.isprintable() and 0 < len(s) <= 40 and " " not in s else shown(s, 40)


def decode_text(raw: bytes, source: str, error: type[SpikeEnergyError] = SpikeEnergyError) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{source}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})") from None


def load_json(
    path: str | Path,
    what: str,
    schema=None,
    max_bytes: int = MAX_JSON_BYTES,
    error: type[SpikeEnergyError] = SpikeEnergyError,
    fix: str = "",
    decode=None,
):
    """Read, parse and validate one JSON input. ``decode(raw, source) -> str`` overrides UTF-8."""
    raw = read_bytes(path, what, max_bytes, error)
    source = f"{what} {shown_path(path)}"
    text = decode(raw, source) if decode else decode_text(raw, source, error)
    obj = parse_json(text, source, error, fix)
    return obj if schema is None else validate(obj, schema, source, error, fix)


# ---------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------


def _probe_writable(folder: Path, option: str, target: Path) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".spike-energy-probe-", dir=folder)
    except OSError as e:
        raise SpikeEnergyError(f"{option} {shown_path(target)}: cannot write in {shown_path(folder)} "
                               f"({e.strerror}); choose another place") from None  # fmt: skip
    os.close(fd)
    os.unlink(probe)


def _existing_ancestor(p: Path, option: str, target: Path) -> Path:
    """The nearest ancestor that exists; refuse if it is not a directory."""
    q = p
    while not os.path.lexists(q):
        q = q.parent
    if q.is_symlink() and not q.exists():
        raise SpikeEnergyError(f"{option} {shown_path(target)}: {shown_path(q)} is a symlink to "
                               f"{shown_path(os.readlink(q))}, which does not exist")  # fmt: skip
    if not q.is_dir():
        raise SpikeEnergyError(f"{option} {shown_path(target)}: {shown_path(q)} is a file, so nothing can be "
                               "created below it; choose another place")  # fmt: skip
    return q


def check_output_dir(path: str | Path, option: str = "--out") -> Path:
    """A directory we can create (or that exists) and write in; checked before any long run."""
    p = Path(path)
    if p.is_symlink() and not p.exists():
        raise SpikeEnergyError(f"{option} {shown_path(p)} is a symlink to {shown_path(os.readlink(p))}, which does "
                               "not exist; remove the link or give another directory")  # fmt: skip
    if p.exists() and not p.is_dir():
        raise SpikeEnergyError(f"{option} {shown_path(p)} is a file; give a directory for the report")
    _probe_writable(_existing_ancestor(p, option, p), option, p)
    return p


def check_output_file(path: str | Path, option: str) -> Path:
    """A file we can write (its folder must exist); checked before any long run."""
    p = Path(path)
    if p.is_dir():
        raise SpikeEnergyError(f"{option} {shown_path(p)} is a directory; give a file name")
    if p.is_symlink() and not p.exists():
        raise SpikeEnergyError(f"{option} {shown_path(p)} is a symlink to {shown_path(os.readlink(p))}, which does "
                               "not exist; remove the link or give another file name")  # fmt: skip
    if not p.parent.is_dir():
        anc = _existing_ancestor(p.parent, option, p)
        raise SpikeEnergyError(f"{option} {shown_path(p)}: the folder {shown_path(p.parent)} does not exist "
                               f"(the nearest existing one is {shown_path(anc)}); create it first")  # fmt: skip
    _probe_writable(p.parent, option, p)
    return p


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file so that it is either complete or absent: a temporary file, then a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def prune_oldest(folder: str | Path, cap_bytes: int, keep: str | Path | None = None, pattern: str = "*.json") -> int:
    """Delete the least recently used entries of a cache folder (oldest modification time first; a hit touches
    its entry) until the folder's ``pattern`` files take at most ``cap_bytes``, never ``keep`` (the entry just
    written); returns how many were deleted.
    Anything that cannot be read or deleted is left as it is: a cache that cannot be pruned is not an error."""
    entries = []
    for p in Path(folder).glob(pattern):
        with contextlib.suppress(OSError):
            st = p.lstat()
            if stat.S_ISREG(st.st_mode):
                entries.append((st.st_mtime, st.st_size, p))
    total, deleted = sum(e[1] for e in entries), 0
    entries = [e for e in entries if keep is None or e[2].name != Path(keep).name]
    for _, size, p in sorted(entries, key=lambda e: e[0]):
        if total <= cap_bytes:
            break
        with contextlib.suppress(OSError):
            p.unlink()
            total -= size
            deleted += 1
    return deleted


def touch(path: str | Path) -> None:
    """Mark a cache entry as just used (its modification time), for ``prune_oldest``."""
    with contextlib.suppress(OSError):
        os.utime(path)


# OWASP "CSV Injection": cells beginning with these are formulas to a spreadsheet
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value):
    """A text cell a spreadsheet would evaluate, prefixed with ``'``; anything else unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_csv(df, path: str | Path) -> None:
    """``df.to_csv(path, index=False)`` as OWASP advises: text cells neutralised and every text
    cell quoted (so a CR inside a name cannot split a row); numbers are written as numbers."""
    import csv

    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or str(out[col].dtype) in ("string", "str"):
            out[col] = out[col].map(neutralise_cell)
    out.columns = [neutralise_cell(str(c)) for c in out.columns]
    out.to_csv(path, index=False, quoting=csv.QUOTE_NONNUMERIC)


def json_safe(o):
    """Plain JSON data: NaN/inf -> None (strict JSON has no NaN), numpy/torch scalars -> Python,
    tuples -> lists, keys -> str."""
    t = type(o)
    if t is float:  # the common cases first: a summary holds hundreds of thousands of values
        return o if math.isfinite(o) else None
    if t is str or t is int or t is bool or o is None:
        return o
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def strict_dumps(obj, **kwargs) -> str:
    """``json.dumps`` of ``json_safe(obj)`` that can never write a bare NaN or Infinity."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


# An absolute path (``/a/b/c``, ``C:\\a\\c``, ``~/a/c``) that starts a word: at the start of the text or after a space,
# a quote, a bracket, ``,;:=``. The lookbehind keeps a relative path (``spikegpt/demo/corpus.jsonl``) whole: its
# ``/demo/corpus.jsonl`` is not a path of its own.
_PATH = re.compile(r"(?<![^\s()\[\]{}<>'\",;:=])(?:[A-Za-z]:|~)?(?:[/\\][^\s/\\()'\",;]+)+[/\\]([^\s/\\()'\",;]+)")


def without_dirs(text) -> str:
    """Every absolute path inside a string replaced by its file name: reports and shared summaries show
    names (with their sha256), not where the files sit on someone's machine. Relative paths stay as written
    (they tell nothing of the machine)."""
    return _PATH.sub(r"\1", "" if text is None else str(text))
