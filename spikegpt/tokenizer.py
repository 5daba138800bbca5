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
import json
import logging
from collections import Counter
from pathlib import Path

from spikegpt.errors import TextError, TokenizerError

logger = logging.getLogger(__name__)

NEOX_VOCAB_SIZE = 50277
NEOX_TOKENIZER = "20B_tokenizer.json"
NEOX_SOURCE = "https://github.com/ridgerchu/SpikeGPT/blob/master/20B_tokenizer.json"
BOOK_VOCAB = "vocab_book.json"
BOOK_SOURCE = "https://github.com/ridgerchu/SpikeGPT/blob/master/vocab_book.json"

# Texts longer than this are refused unless the caller raises the limit: profiling
# reads only the first --tokens tokens anyway.
MAX_TEXT_BYTES = 64 * 1024 * 1024


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
    if not isinstance(obj, dict) or not obj:
        raise TokenizerError(f'{path}: a char vocabulary must be a non-empty JSON object {{"id": "char"}}')
    itos = {}
    for k, v in obj.items():
        try:
            i = int(k)
        except ValueError:
            raise TokenizerError(f'{path}: key {k!r} is not an integer id; expected {{"id": "char"}}') from None
        if not isinstance(v, str) or len(v) != 1:
            raise TokenizerError(f"{path}: id {k} maps to {v!r}, not a single character")
        itos[i] = v
    if sorted(itos) != list(range(len(itos))):
        raise TokenizerError(f"{path}: ids must be 0..{len(itos) - 1} without gaps")
    if len(set(itos.values())) != len(itos):
        raise TokenizerError(f"{path}: a character appears twice")
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


class HFTokenizer:
    """A Hugging Face ``tokenizer.json`` (BPE), through the ``tokenizers`` library."""

    kind = "bpe"
    unit = "token"

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer

        self.path = str(path)
        try:
            self.tok = Tokenizer.from_file(self.path)
        except Exception as e:  # tokenizers raises plain Exception subclasses
            raise TokenizerError(f"{path}: not a Hugging Face tokenizer.json ({str(e).splitlines()[0]})") from None
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])

    def describe(self) -> str:
        return f"Hugging Face tokenizer, {self.vocab_size} tokens ({self.path})"


Tokenizer = CharTokenizer | ByteTokenizer | HFTokenizer


def load_tokenizer(path: str | Path, unknown: str | dict = "error") -> Tokenizer:
    """A char vocabulary or a Hugging Face tokenizer.json, told apart by content."""
    path = Path(path)
    if path.is_dir():
        raise TokenizerError(f"{path} is a directory; --tokenizer needs a tokenizer.json or vocabulary file")
    if not path.is_file():
        raise TokenizerError(f"tokenizer file {path} does not exist; check --tokenizer")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TokenizerError(f"cannot read {path} ({e.strerror}); check its permissions") from None
    try:
        obj = json.loads(decode_json_bytes(raw, path))
    except json.JSONDecodeError as e:
        raise TokenizerError(
            f"{path}: not valid JSON ({e.msg}); expected a tokenizer.json or a char vocabulary"
        ) from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        return HFTokenizer(path)
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
                tok = HFTokenizer(neox)
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
    if tok.kind == "char" and tok.vocab_size != vocab_size:
        raise TokenizerError(
            f"char vocabulary {tok.path} has {tok.vocab_size} characters but the model has {vocab_size} "
            "embeddings; it is not this checkpoint's vocabulary"
        )
    return tok


def read_text(path: str | Path, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A UTF-8 text file, with errors that say what is wrong and what to do."""
    path = Path(path)
    if not path.exists():
        raise TextError(f"text file {path} does not exist; check --text")
    if path.is_dir():
        raise TextError(f"{path} is a directory; --text needs a text file")
    size = path.stat().st_size
    if size > max_bytes:
        raise TextError(
            f"{path} is {size / 2**20:.0f} MiB, over the {max_bytes / 2**20:.0f} MiB limit; "
            "cut it (e.g. head -c 10M) — profiling uses only the first --tokens tokens"
        )
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TextError(f"cannot read {path} ({e.strerror}); check its permissions") from None
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
