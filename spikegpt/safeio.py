"""Reading user files safely (minimal version for corpus input; issue 15 owns the full module).

- ``check_regular_file``: a user file must be a regular file (not a directory, FIFO,
  device or socket), readable, and under a size limit when one is given. It never opens
  the file, so a FIFO cannot block and ``/dev/zero`` is never read.
- ``read_stdin``: standard input (``-``) as an explicit, bounded source.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path

from spikegpt.errors import SpikeEnergyError

MiB = 2**20
MAX_STDIN_BYTES = 64 * MiB


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", MiB), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} bytes"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def check_regular_file(path: str | Path, what: str, max_bytes: int | None = None) -> Path:
    """The resolved path of a readable regular file of at most ``max_bytes``, or a one-line error."""
    p = Path(path)
    try:
        st = os.stat(p)  # follows symlinks: a link to /dev/zero is a character device
    except FileNotFoundError:
        raise SpikeEnergyError(f"{what} {p} does not exist; check the path") from None
    except OSError as e:
        raise SpikeEnergyError(f"{what} {p} cannot be read ({e.strerror}); check the path and permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise SpikeEnergyError(f"{what} {p} is a directory; give a file")
    if not stat.S_ISREG(st.st_mode):
        raise SpikeEnergyError(f"{what} {p} is {_kind(st.st_mode)}, not a regular file; save its content to a file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise SpikeEnergyError(f"{what} {p} is {_size(st.st_size)}, over the {_size(max_bytes)} limit for it")
    if not os.access(p, os.R_OK):
        raise SpikeEnergyError(f"{what} {p} is not readable; check its permissions")
    return p.resolve()


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
