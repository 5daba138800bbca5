"""Corpus input: what ``--text`` names, read as a stream of documents with bounded memory.

``--text`` may be

- a text file: one document;
- a directory: its ``*.txt`` files, sorted by name, one document each;
- a glob (``'texts/**/*.txt'``): the matching files, sorted, one document each;
- a JSONL file (``.jsonl``): one document per line, ``{"text": ..., "source": ..., "domain": ...}``
  (``source`` and ``domain`` optional; blank lines are skipped);
- ``-``: standard input, one document, bounded (``safeio.read_stdin``).

Files are read in pieces of ``PIECE_BYTES`` and decoded incrementally, so a 1 GB file is
never in memory; a JSONL line (one document) is bounded by ``MAX_LINE_BYTES``. Every file is
checked to be a regular file before it is opened (a FIFO would block, ``/dev/zero`` never
ends). Documents are numbered in reading order (0, 1, ...); that order is the corpus order
used for ``--max-tokens``, for assigning documents to processes and for merging.
"""

from __future__ import annotations

import codecs
import glob
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from spikegpt.errors import TextError
from spikegpt.safeio import MAX_STDIN_BYTES, check_regular_file, read_stdin

logger = logging.getLogger(__name__)

PIECE_BYTES = 256 * 1024  # a long file is read, decoded and tokenized this much at a time
MAX_LINE_BYTES = 64 * 2**20  # one JSONL document
GLOB_CHARS = set("*?[")


@dataclass
class Document:
    """One document: ``pieces()`` yields its text in order (consume it before the next document)."""

    index: int
    name: str  # file name, or file:line for JSONL
    source: str  # JSONL "source", else the file name
    domain: str  # JSONL "domain", else ""
    _pieces: Iterator[str]

    def pieces(self) -> Iterator[str]:
        return self._pieces


@dataclass
class Corpus:
    """A parsed ``--text``: ``kind`` is file, directory, glob, jsonl or stdin."""

    spec: str
    kind: str
    files: list[Path]
    total_bytes: int | None  # for progress (the files' sizes; the size of what stdin gave)
    stdin_bytes: bytes | None = None
    bytes_read: int = 0  # of the files, by the latest ``documents()`` pass: progress against ``total_bytes``

    @property
    def single_document(self) -> bool:
        return self.kind in ("file", "stdin")

    def describe(self) -> str:
        if self.kind in ("directory", "glob"):
            return f"{self.spec} ({len(self.files)} files)"
        return self.spec

    def documents(self) -> Iterator[Document]:
        """The documents in corpus order (each one's pieces must be consumed before asking for the next)."""
        index = 0
        self.bytes_read = 0
        if self.kind == "stdin":
            text = _decode_all(self.stdin_bytes or b"", "standard input")
            self.bytes_read = len(self.stdin_bytes or b"")
            yield Document(0, "<stdin>", "<stdin>", "", iter([text] if text else []))
            return
        for path in self.files:
            if self.kind == "jsonl":
                for doc in _jsonl_documents(path, index, self):
                    yield doc
                    index = doc.index + 1
            else:
                name = path.name if self.kind != "glob" else str(path)
                yield Document(index, name, name, "", _file_pieces(path, counter=self))
                index += 1


def open_corpus(spec: str | Path, stdin=None, max_stdin_bytes: int = MAX_STDIN_BYTES) -> Corpus:
    """Parse and check ``--text`` (paths exist, are regular files, a directory or glob is not empty)."""
    spec = str(spec)
    if spec == "-":
        raw = read_stdin("--text -", max_stdin_bytes, stdin)
        return Corpus(spec, "stdin", [], len(raw), raw)
    p = Path(spec)
    if p.is_dir():
        files = sorted(f for f in p.glob("*.txt"))
        if not files:
            raise TextError(f"--text {spec} is a directory with no *.txt files; give a file, a directory of .txt "
                            "files, a glob or a .jsonl file")  # fmt: skip
        files = [check_regular_file(f, "--text") for f in files]
        return Corpus(spec, "directory", files, sum(f.stat().st_size for f in files))
    if not p.exists() and GLOB_CHARS & set(spec):
        files = sorted(Path(f) for f in glob.glob(spec, recursive=True) if not Path(f).is_dir())
        if not files:
            raise TextError(f"--text {spec}: the glob matches no files; check the pattern (quote it in the shell)")
        files = [check_regular_file(f, "--text") for f in files]
        return Corpus(spec, "glob", files, sum(f.stat().st_size for f in files))
    if not p.exists() and not p.is_symlink():
        raise TextError(f"text file {spec} does not exist; check --text")
    path = check_regular_file(p, "--text")
    size = path.stat().st_size
    if size == 0:
        raise TextError(f"{spec} is empty; give a file with some text")
    kind = "jsonl" if path.suffix.lower() == ".jsonl" else "file"
    return Corpus(spec, kind, [path], size)


# ---------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------


def _decode_error(where: str, raw: bytes, e: UnicodeDecodeError, offset: int) -> TextError:
    return TextError(
        f"{where} is not UTF-8 (byte 0x{raw[e.start]:02x} at offset {offset + e.start}); "
        "convert it, e.g. iconv -f latin1 -t utf-8"
    )


def _decode_all(raw: bytes, where: str) -> str:
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _decode_error(where, raw, e, 0) from None


def _file_pieces(path: Path, piece_bytes: int = PIECE_BYTES, counter: Corpus | None = None) -> Iterator[str]:
    """The file's text in pieces of about ``piece_bytes``, cut after a newline where there is one
    (so that a BPE tokenizer sees whole lines; a char or byte tokenizer gives the same ids anyway)."""
    check_regular_file(path, "--text")  # again: the file may have been replaced since the corpus was opened
    dec = codecs.getincrementaldecoder("utf-8")()
    carry, offset, first, told = "", 0, True, 0
    with open(path, "rb") as f:
        while True:
            raw = f.read(piece_bytes)
            if first and raw.startswith(codecs.BOM_UTF8):
                raw, offset = raw[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
            first = False
            try:
                text = carry + dec.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                raise _decode_error(str(path), raw, e, offset) from None
            offset += len(raw)
            if counter is not None:  # the file's bytes consumed so far (the BOM included)
                counter.bytes_read += f.tell() - told
                told = f.tell()
            if not raw:
                if text:
                    yield text
                return
            cut = text.rfind("\n") + 1
            if cut == 0:  # one very long line: cut it anyway
                cut = len(text)
            carry = text[cut:]
            if cut:
                yield text[:cut]


def _jsonl_documents(path: Path, first_index: int, counter: Corpus | None = None) -> Iterator[Document]:
    check_regular_file(path, "--text")
    index = first_index
    with open(path, "rb") as f:
        for lineno, raw in enumerate(_bounded_lines(f, path), start=1):
            if counter is not None:
                counter.bytes_read += len(raw)
            if not raw.strip():
                continue
            where = f"{path.name}:{lineno}"
            try:
                obj = json.loads(_decode_all(raw, where), parse_constant=_no_constant)
            except (json.JSONDecodeError, ValueError, RecursionError) as e:
                raise TextError(f"{where} is not a JSON object ({_first_line(e)}); each line of a .jsonl corpus "
                                'must be {"text": ...}') from None  # fmt: skip
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise TextError(f'{where} has no "text" string; each line of a .jsonl corpus must be {{"text": ...}}')
            for key in ("source", "domain"):
                if key in obj and not isinstance(obj[key], str):
                    raise TextError(f'{where}: "{key}" must be a string, got {type(obj[key]).__name__}')
            text = obj["text"]
            source, domain = obj.get("source", path.name), obj.get("domain", "")
            yield Document(index, where, source, domain, iter([text] if text else []))
            index += 1


def _bounded_lines(f: io.BufferedReader, path: Path) -> Iterator[bytes]:
    while True:
        line = f.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            raise TextError(f"{path}: a line is longer than {MAX_LINE_BYTES // 2**20} MiB; split the document")
        yield line


def _no_constant(name: str):
    raise ValueError(f"{name} is not allowed in JSON")


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__
