"""Tokenizers for SpikeGPT checkpoints, and reading text files safely.

Three kinds, one interface (``encode``, ``decode``, ``vocab_size``, ``unit``):

- ``CharTokenizer``: a JSON object ``{"id": "char"}`` (UTF-8 or UTF-16 with a BOM,
  like the BookCorpus ``vocab_book.json``);
- ``ByteTokenizer``: UTF-8 bytes, V = 256 (the enwik8 convention);
- ``HFTokenizer``: a Hugging Face ``tokenizer.json`` through the ``tokenizers``
  library (the 216M uses GPT-NeoX ``20B_tokenizer.json``).

``resolve_tokenizer`` picks one for a checkpoint, or says which file is missing.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from spikegpt.errors import TextError, TokenizerError
from spikegpt.safeio import (
    one_line,
    parse_json,
    read_bytes,
    read_stdin,
    shown,
    shown_path,
    validate,
)

logger = logging.getLogger(__name__)

NEOX_VOCAB_SIZE = 50277
NEOX_TOKENIZER = "20B_tokenizer.json"
NEOX_SOURCE = "https://github.com/ridgerchu/SpikeGPT/blob/master/20B_tokenizer.json"
BOOK_VOCAB = "vocab_book.json"
BOOK_SOURCE = "https://github.com/ridgerchu/SpikeGPT/blob/master/vocab_book.json"

# Texts longer than this are refused unless the caller raises the limit: profiling
# reads only the first --tokens tokens anyway.
MAX_TEXT_BYTES = 64 * 1024 * 1024
# Tokenizer files are capped like texts: the GPT-NeoX 20B tokenizer.json is 2.1 MB, the largest
# common ones (multilingual SentencePiece conversions) about 35 MB.
MAX_TOKENIZER_BYTES = 64 * 1024 * 1024


def decode_json_bytes(raw: bytes, path: Path) -> str:
    """UTF-8 (with or without BOM) or UTF-16 (with BOM, or detected from NUL bytes)."""
    for bom, enc in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if raw.startswith(bom):
            return raw.decode(enc)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if len(raw) >= 2 and (raw[1] == 0 or raw[0] == 0):
        try:
            return raw.decode("utf-16-le" if raw[1] == 0 else "utf-16-be")
        except UnicodeDecodeError:
            pass
    raise TokenizerError(f"{path}: not UTF-8 or UTF-16 text; save the vocabulary as UTF-8 JSON")


class CharTokenizer:
    """Character vocabulary ``{"0": "\\n", "1": " ", ...}``.

    ``unknown`` decides what happens to characters not in the vocabulary: ``"error"``
    (default: a ``TokenizerError`` listing them), ``"skip"``, or a dict mapping each
    unknown character to a known one (a ``"*"`` key maps every other unknown one).
    """

    kind = "char"
    unit = "char"

    def __init__(self, itos: dict[int, str], path: str | None = None, unknown: str | dict = "error"):
        self.itos = dict(itos)
        self.stoi = {ch: i for i, ch in self.itos.items()}
        self.path = path
        self.vocab_size = len(self.itos)
        if isinstance(unknown, dict):
            bad = {k: v for k, v in unknown.items() if v not in self.stoi}
            if bad:
                raise TokenizerError(
                    f"unknown-character mapping targets {sorted(bad.values())!r} are not in the vocabulary"
                )
        elif unknown not in ("error", "skip"):
            raise TokenizerError(f"unknown must be 'error', 'skip' or a mapping, got {unknown!r}")
        self.unknown = unknown

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """A vocabulary of the characters of ``text``, sorted (like nanoGPT's char models)."""
        return cls(dict(enumerate(sorted(set(text)))))

    def to_json(self) -> str:
        return json.dumps({str(i): ch for i, ch in sorted(self.itos.items())}, ensure_ascii=False, indent=0)

    def encode(self, text: str) -> list[int]:
        stoi = self.stoi
        missing = Counter(ch for ch in set(text) if ch not in stoi)
        if not missing:
            return [stoi[ch] for ch in text]
        if self.unknown == "error":
            counts = Counter(ch for ch in text if ch not in stoi)
            shown = ", ".join(f"{ch!r} x{n}" for ch, n in counts.most_common(20))
            more = f" and {len(counts) - 20} more" if len(counts) > 20 else ""
            raise TokenizerError(
                f"the text has {sum(counts.values())} character(s) that are not in the vocabulary"
                f"{' ' + self.path if self.path else ''}: {shown}{more}; clean the text, or pass "
                "--unknown-chars skip, or map them with --unknown-chars 'X=Y' (e.g. '*= ' maps all to space)"
            )
        if self.unknown == "skip":
            return [stoi[ch] for ch in text if ch in stoi]
        default = self.unknown.get("*")
        out = []
        for ch in text:
            if ch not in stoi:
                repl = self.unknown.get(ch, default)
                if repl is None:
                    raise TokenizerError(f"character {ch!r} is not in the vocabulary and has no mapping")
                ch = repl
            out.append(stoi[ch])
        return out

    def decode(self, ids) -> str:
        return "".join(self.itos[int(i)] for i in ids)

    def describe(self) -> str:
        return f"char vocabulary of {self.vocab_size} ({self.path or 'built from text'})"


def parse_char_vocab(obj, path) -> dict[int, str]:
    """``{"0": "\\n", "1": " ", ...}``: ids 0..V-1, each once, each to one character, each character once."""
    if not isinstance(obj, dict) or not obj:
        raise TokenizerError(f'{path}: a char vocabulary must be a non-empty JSON object {{"id": "char"}}')
    obj = validate(obj, dict[str, StrictStr], str(path), TokenizerError, 'expected {"id": "char"}')
    itos: dict[int, str] = {}
    for k, v in obj.items():
        if not (k.isascii() and k.isdigit() and len(k) <= 9):
            raise TokenizerError(f'{path}: key {shown(k)} is not an integer id; expected {{"id": "char"}}')
        i = int(k)
        if len(v) != 1:
            raise TokenizerError(f"{path}: id {i} maps to {shown(v)}, not a single character")
        if i in itos:  # "1" and "01"
            raise TokenizerError(f"{path}: id {i} appears twice ({shown(itos[i])} and {shown(v)}); give each id once")
        itos[i] = v
    if sorted(itos) != list(range(len(itos))):
        missing = next(i for i in range(len(itos)) if i not in itos)
        raise TokenizerError(f"{path}: ids must be 0..{len(itos) - 1} without gaps (id {missing} is missing)")
    seen: dict[str, int] = {}
    for i, ch in sorted(itos.items()):
        if ch in seen:
            raise TokenizerError(f"{path}: ids {seen[ch]} and {i} both map to {ch!r}; each character needs one id")
        seen[ch] = i
    return itos


class ByteTokenizer:
    """UTF-8 bytes as tokens (V = 256); BPC here is bits per byte, the enwik8 convention."""

    kind = "byte"
    unit = "byte"
    vocab_size = 256
    path = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def describe(self) -> str:
        return "UTF-8 bytes (V = 256)"


_Id = Annotated[StrictInt, Field(ge=0, lt=2**31)]


class _HFAddedToken(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: _Id
    content: StrictStr


class _HFModel(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: StrictStr | None = None
    vocab: dict[str, _Id] | list[tuple[StrictStr, float]] | None = None  # BPE/WordLevel/WordPiece | Unigram


class HFTokenizerFile(BaseModel):
    """What we rely on in a Hugging Face ``tokenizer.json``; the ``tokenizers`` library checks the rest."""

    model_config = ConfigDict(extra="allow")
    model: _HFModel
    added_tokens: list[_HFAddedToken] | None = None


def check_hf_ids(spec: HFTokenizerFile, path) -> None:
    """Each id names one token: refuse two vocabulary entries (or added tokens) with one id."""
    by_id: dict[int, str] = {}
    clashes = []
    if isinstance(spec.model.vocab, dict):
        for token, i in spec.model.vocab.items():
            if i in by_id:
                clashes.append((i, by_id[i], token))
            by_id.setdefault(i, token)
    for a in spec.added_tokens or []:  # an added token may repeat its own vocabulary entry, not another's
        if a.id in by_id and by_id[a.id] != a.content:
            clashes.append((a.id, by_id[a.id], a.content))
        by_id.setdefault(a.id, a.content)
    if clashes:
        shown_clashes = ", ".join(f"id {i} ({shown(a, 30)} and {shown(b, 30)})" for i, a, b in clashes[:5])
        more = f" and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        raise TokenizerError(f"{path}: duplicate ids: {shown_clashes}{more}; each id must name one token")


@contextlib.contextmanager
def _stderr_captured():
    """Send file descriptor 2 to a temporary file (a Rust panic prints its backtrace there);
    yields that file. The caller replays it if nothing went wrong."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield tmp
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


class HFTokenizer:
    """A Hugging Face ``tokenizer.json`` (BPE), through the ``tokenizers`` library."""

    kind = "bpe"
    unit = "token"

    def __init__(self, path: str | Path, text: str | None = None):
        """``text``: the file's content, already read and validated by ``load_tokenizer``."""
        from tokenizers import Tokenizer

        self.path = str(path)
        if text is None:
            raw = read_bytes(path, "tokenizer", MAX_TOKENIZER_BYTES, TokenizerError)
            text = decode_json_bytes(raw, Path(path))
            check_hf_ids(_validated_hf(parse_json(text, shown_path(path), TokenizerError), path), path)
        try:
            self.tok = self._guarded(Tokenizer.from_str, text)
        except TokenizerError as e:
            raise TokenizerError(f"{path}: not a Hugging Face tokenizer.json ({e})") from None
        vocab = self.tok.get_vocab(with_added_tokens=True)
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        self.max_id = max(vocab.values(), default=-1)
        self.ids = vocab

    def _guarded(self, fn, *args):
        """Call into the Rust library; a panic (a ``BaseException``, e.g. the regex engine's
        retry limit on a catastrophically backtracking pre-tokenizer pattern) becomes one line."""
        with _stderr_captured() as captured:
            try:
                out = fn(*args)
            except (KeyboardInterrupt, SystemExit, GeneratorExit):
                raise
            except BaseException as e:  # noqa: B036 - pyo3's PanicException derives from BaseException
                first = (str(e).splitlines() or [""])[0]
                raise TokenizerError(f"{type(e).__name__}: {one_line(first, 200)}") from None
            captured.seek(0)
            noise = captured.read()
        if noise:
            sys.stderr.write(noise.decode(errors="replace"))
        return out

    def encode(self, text: str) -> list[int]:
        try:
            return self._guarded(self.tok.encode, text).ids
        except TokenizerError as e:
            raise TokenizerError(
                f"tokenizer {shown_path(self.path)} failed on this text ({e}); its pre-tokenizer's regular "
                "expression may backtrack catastrophically: use the tokenizer the model was trained with"
            ) from None

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])

    def describe(self) -> str:
        return f"Hugging Face tokenizer, {self.vocab_size} tokens ({self.path})"


def _validated_hf(obj, path) -> HFTokenizerFile:
    return validate(obj, HFTokenizerFile, str(path), TokenizerError, "expected a Hugging Face tokenizer.json")


Tokenizer = CharTokenizer | ByteTokenizer | HFTokenizer


def load_tokenizer(path: str | Path, unknown: str | dict = "error") -> Tokenizer:
    """A char vocabulary or a Hugging Face tokenizer.json, told apart by content.

    The file must be a regular file of at most ``MAX_TOKENIZER_BYTES``; its JSON is strict
    (no NaN, no duplicate keys, no huge integers, bounded nesting) and validated against
    ``HFTokenizerFile`` or the char vocabulary's schema.
    """
    path = Path(path)
    try:
        raw = read_bytes(path, "tokenizer", MAX_TOKENIZER_BYTES, TokenizerError)
    except TokenizerError as e:
        raise TokenizerError(f"{e}; check --tokenizer") from None
    text = decode_json_bytes(raw, path)
    obj = parse_json(text, str(path), TokenizerError, "expected a tokenizer.json or a char vocabulary")
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        check_hf_ids(_validated_hf(obj, path), path)
        return HFTokenizer(path, text)
    return CharTokenizer(parse_char_vocab(obj, path), path=str(path), unknown=unknown)


def resolve_tokenizer(
    vocab_size: int,
    tokenizer_path: str | Path | None = None,
    checkpoint_path: str | Path | None = None,
    unknown: str | dict = "error",
) -> Tokenizer:
    """The tokenizer for a model of ``vocab_size``, or an error saying which file is needed.

    Order: an explicit file; V = 256 -> bytes; beside the checkpoint, ``<stem>.vocab.json``
    or ``vocab.json`` (char vocabularies), ``20B_tokenizer.json`` when V = 50277.
    """
    if tokenizer_path is not None:
        tok = load_tokenizer(tokenizer_path, unknown=unknown)
    elif vocab_size == 256:
        return ByteTokenizer()
    else:
        tok = None
        if checkpoint_path is not None:
            ckpt = Path(checkpoint_path)
            for cand in (ckpt.with_suffix(".vocab.json"), ckpt.parent / "vocab.json", ckpt.parent / BOOK_VOCAB):
                if vocab_size < 1024 and cand.is_file():
                    tok = load_tokenizer(cand, unknown=unknown)
                    break
            neox = ckpt.parent / NEOX_TOKENIZER
            if tok is None and vocab_size == NEOX_VOCAB_SIZE and neox.is_file():
                tok = load_tokenizer(neox)
        if tok is None:
            if vocab_size == NEOX_VOCAB_SIZE:
                raise TokenizerError(
                    f"this checkpoint has a {vocab_size}-token BPE vocabulary and needs {NEOX_TOKENIZER} "
                    f"(the GPT-NeoX 20B tokenizer, from {NEOX_SOURCE}); put it next to the checkpoint "
                    "or pass --tokenizer PATH"
                )
            if vocab_size == 77:
                raise TokenizerError(
                    f"this checkpoint has a 77-character vocabulary (BookCorpus SpikeGPT) and needs "
                    f"{BOOK_VOCAB} (from {BOOK_SOURCE}); put it next to the checkpoint or pass --tokenizer PATH"
                )
            what = "BPE tokenizer.json" if vocab_size > 1024 else 'character vocabulary JSON {"id": "char"}'
            raise TokenizerError(
                f"no tokenizer for a vocabulary of {vocab_size}: pass --tokenizer PATH to the {what} "
                "the checkpoint was trained with"
            )
    if tok.vocab_size > vocab_size:
        raise TokenizerError(
            f"tokenizer {tok.path} has {tok.vocab_size} tokens but the model only {vocab_size}; "
            "it is not this checkpoint's tokenizer"
        )
    if tok.kind == "bpe" and tok.max_id >= vocab_size:
        beyond = sorted((i, t) for t, i in tok.ids.items() if i >= vocab_size)
        listed = ", ".join(f"{i} ({shown(t, 30)})" for i, t in beyond[:5])
        raise TokenizerError(
            f"tokenizer {tok.path} has ids up to {tok.max_id} but the model has only {vocab_size} embeddings "
            f"(ids {listed}{' ...' if len(beyond) > 5 else ''} are beyond it); it is not this checkpoint's tokenizer"
        )
    if tok.kind == "char" and tok.vocab_size != vocab_size:
        raise TokenizerError(
            f"char vocabulary {tok.path} has {tok.vocab_size} characters but the model has {vocab_size} "
            "embeddings; it is not this checkpoint's vocabulary"
        )
    return tok


def read_text(path: str | Path, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A UTF-8 text file, or standard input for ``-``, with errors that say what is wrong and what to do.

    Only regular files are read (a FIFO would block, ``/dev/zero`` never ends); both are
    capped at ``max_bytes``.
    """
    if str(path) == "-":
        raw = read_stdin("--text -", max_bytes)
        path = "<stdin>"
    else:
        path = Path(path)
        try:
            raw = read_bytes(path, "text file", max_bytes, TextError)
        except TextError as e:
            raise TextError(f"{e}; profiling uses only the first --tokens tokens (check --text)") from None
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TextError(
            f"{path} is not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "convert it, e.g. iconv -f latin1 -t utf-8"
        ) from None
    if not text.strip():
        raise TextError(f"{path} is empty; give a file with some text")
    return text
