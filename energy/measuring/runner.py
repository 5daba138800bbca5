"""Profiling a corpus: documents streamed through the model with the meter attached.

Each document is its own sequence: the recurrent state starts empty, as at inference, and a
document longer than a block (``chunk_len``, default the model's ``ctx_len``) runs block by
block with the state carried over. ``concat`` runs today's single sequence instead (the first
``tokens x batch`` tokens of the text, ``batch`` rows side by side).

Everything measured is kept as exact, mergeable sums (``RunState``): integer counts (``Tally``)
for the whole run, per bootstrap unit and per document, and per-document float64 sums
(nats) that are only ever added in document order. So a run split over documents A and B
merges to the run over A + B: counts exactly, floats to rounding, whatever the split.

Across processes (``torch.distributed``): every rank reads the whole corpus in the same
order and tokenizes it (that is cheap, and it is how each rank knows the global token
budget and where checkpoints fall), runs the model on the documents it owns (index mod
world size), and rank 0 gathers the states and merges them (its own as it is, the others' as bytes). The
raster, census tokens and excerpt come from the first document that scores tokens: only its owner
records them (every rank knows which document that is, having read the ones before it).

Long runs: ``checkpoint_every`` tokens (counted in corpus order) the ranks merge what they
have into ``<checkpoint_dir>/state.npz`` (atomically). On an interrupt (SIGINT, or SIGTERM
turned into an exception by the CLI) or an error, each rank writes what it did since the
last checkpoint as ``delta-*.npz``; ``resume`` loads both and skips the documents done. The
files are ``.npz`` (numbers, and a JSON header as bytes), read with ``allow_pickle=False``.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import json
import logging
import math
import os
import time
import uuid
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from energy.measuring.corpus import Corpus, Document
from energy.measuring.dist import Dist, ProgressSync
from energy.measuring.hooks import Meter, Tally
from spikegpt.errors import SpikeEnergyError, TextError

logger = logging.getLogger(__name__)

UNITS = 128  # most bootstrap units kept; the runner pools documents (or blocks) into this many

STATE_VERSION = 1
MAX_STATE_BYTES = 4 * 2**30


# ---------------------------------------------------------------------------------
# What a run measured: exact, mergeable
# ---------------------------------------------------------------------------------


@contextlib.contextmanager
def collector_paused():
    """Python's cyclic garbage collector paused for one block: what a block allocates is freed by reference
    counting, and the collector's passes over the objects of the model, its hooks and the spike raster's lists
    (57 collections, 0.05-0.1 s for 256 tokens of the 216M model, none in the plain forward) were a quarter of
    the profiled pass's overhead. It runs again between blocks. A context manager or a decorator."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@dataclass
class DocResult:
    """One document: tokens scored, characters they stand for, nats (float64), spikes per spiking layer."""

    index: int
    name: str
    source: str
    domain: str
    tokens: int
    chars: int
    nats: float
    crc: int  # crc32 of the token ids read (to check, on resume, that the corpus is unchanged)
    spikes: dict[str, int] = field(default_factory=dict)


@dataclass
class TrackState:
    """One model's sums: the whole run, and per bootstrap unit (documents and blocks)."""

    total: Tally = field(default_factory=Tally)
    doc_units: dict[int, Tally] = field(default_factory=dict)
    block_units: dict[int, Tally] = field(default_factory=dict)
    static: dict = field(default_factory=dict)  # order, kinds, module_types, unruled

    def merge(self, other: TrackState) -> TrackState:
        self.total.add(other.total)
        for mine, theirs in ((self.doc_units, other.doc_units), (self.block_units, other.block_units)):
            for u, t in theirs.items():
                mine.setdefault(u, Tally()).add(t, detail=False)
        if not self.static.get("order") and other.static.get("order"):
            self.static = dict(other.static)
        return self


@dataclass
class RunState:
    """Everything a (partial) run measured; ``merge`` adds two runs over disjoint documents."""

    fingerprint: dict = field(default_factory=dict)
    tracks: dict[str, TrackState] = field(default_factory=dict)
    docs: list[DocResult] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # documents with fewer than 2 tokens
    block_nats: dict[int, float] = field(default_factory=dict)  # per block unit (used when there is one sequence)
    block_chars: dict[int, int] = field(default_factory=dict)
    raster: dict[str, list] = field(default_factory=dict)  # from the first document only
    raster_doc: int = -1
    census_ids: list = field(default_factory=list)  # the first tokens of the first document (B rows)
    excerpt: str = ""  # the start of the first document
    checkpoint_seq: int = 0  # merged checkpoints written so far
    since_seq: int = 0  # a delta: what was done after checkpoint ``since_seq``
    delta_id: str = ""

    # ---------------------------------------------------------------- merging
    def done(self) -> set[int]:
        return {d.index for d in self.docs} | set(self.skipped)

    def merge(self, other: RunState) -> RunState:
        """Add ``other`` (disjoint documents) into this state."""
        if self.fingerprint and other.fingerprint and self.fingerprint != other.fingerprint:
            raise SpikeEnergyError("the partial states come from different runs (settings differ); "
                                   "delete the checkpoint folder or rerun without --resume")  # fmt: skip
        self.fingerprint = self.fingerprint or other.fingerprint
        overlap = self.done() & other.done()
        if overlap:
            raise ValueError(f"states overlap on {len(overlap)} documents (e.g. {min(overlap)})")
        for name, tr in other.tracks.items():
            self.tracks.setdefault(name, TrackState()).merge(tr)
        self.docs = sorted(self.docs + other.docs, key=lambda d: d.index)
        self.skipped = sorted(self.skipped + other.skipped)
        for u, v in other.block_nats.items():
            self.block_nats[u] = self.block_nats.get(u, 0.0) + v
        for u, v in other.block_chars.items():
            self.block_chars[u] = self.block_chars.get(u, 0) + v
        if other.raster_doc >= 0 and (self.raster_doc < 0 or other.raster_doc < self.raster_doc):
            self.raster, self.raster_doc = other.raster, other.raster_doc
            self.census_ids, self.excerpt = other.census_ids, other.excerpt
        self.checkpoint_seq = max(self.checkpoint_seq, other.checkpoint_seq)
        return self

    # ---------------------------------------------------------------- totals (in document order)
    @property
    def tokens(self) -> int:
        return sum(d.tokens for d in self.docs)

    @property
    def nats(self) -> float:
        return math.fsum(d.nats for d in self.docs)  # exactly rounded: independent of order and split

    @property
    def chars(self) -> int:
        return sum(d.chars for d in self.docs)

    # ---------------------------------------------------------------- serialisation (.npz, no pickle)
    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {}
        tracks = {}
        for name, tr in self.tracks.items():
            tracks[name] = {
                "static": tr.static,
                "total": tr.total.to_state(f"{name}/total", arrays),
                "doc_units": {str(u): t.to_state(f"{name}/doc/{u}", arrays) for u, t in tr.doc_units.items()},
                "block_units": {str(u): t.to_state(f"{name}/block/{u}", arrays) for u, t in tr.block_units.items()},
            }
        layers = sorted({k for d in self.docs for k in d.spikes})
        arrays["docs/tokens"] = np.array([d.tokens for d in self.docs], dtype=np.int64)
        arrays["docs/chars"] = np.array([d.chars for d in self.docs], dtype=np.int64)
        arrays["docs/crc"] = np.array([d.crc for d in self.docs], dtype=np.int64)
        arrays["docs/nats"] = np.array([d.nats for d in self.docs], dtype=np.float64)
        arrays["docs/spikes"] = np.array([[d.spikes.get(k, 0) for k in layers] for d in self.docs],
                                         dtype=np.int64).reshape(len(self.docs), len(layers))  # fmt: skip
        units = sorted(self.block_nats)
        arrays["block/nats"] = np.array([self.block_nats[u] for u in units], dtype=np.float64)
        arrays["block/chars"] = np.array([self.block_chars.get(u, 0) for u in units], dtype=np.int64)
        header = {
            "format": "spike-energy run state",
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "tracks": tracks,
            "docs": {
                "index": [d.index for d in self.docs],
                "name": [d.name for d in self.docs],
                "source": [d.source for d in self.docs],
                "domain": [d.domain for d in self.docs],
                "layers": layers,
            },
            "skipped": self.skipped,
            "block_units": units,
            "raster": self.raster,
            "raster_doc": self.raster_doc,
            "census_ids": self.census_ids,
            "excerpt": self.excerpt,
            "checkpoint_seq": self.checkpoint_seq,
            "since_seq": self.since_seq,
            "delta_id": self.delta_id,
        }
        arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "run state") -> RunState:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            h = json.loads(bytes(arrays["header"]).decode("utf-8"))
            if h.get("format") != "spike-energy run state" or h.get("version") != STATE_VERSION:
                raise ValueError(f"not a version-{STATE_VERSION} spike-energy run state")
            s = cls(fingerprint=h["fingerprint"], skipped=[int(i) for i in h["skipped"]], raster=h["raster"],
                    raster_doc=int(h["raster_doc"]), census_ids=h["census_ids"], excerpt=str(h["excerpt"]),
                    checkpoint_seq=int(h["checkpoint_seq"]), since_seq=int(h["since_seq"]),
                    delta_id=str(h["delta_id"]))  # fmt: skip
            for name, tr in h["tracks"].items():
                s.tracks[name] = TrackState(
                    Tally.from_state(tr["total"], f"{name}/total", arrays),
                    {int(u): Tally.from_state(t, f"{name}/doc/{u}", arrays) for u, t in tr["doc_units"].items()},
                    {int(u): Tally.from_state(t, f"{name}/block/{u}", arrays) for u, t in tr["block_units"].items()},
                    tr["static"],
                )
            d, layers = h["docs"], h["docs"]["layers"]
            spikes = arrays["docs/spikes"]
            for i, idx in enumerate(d["index"]):
                s.docs.append(DocResult(int(idx), d["name"][i], d["source"][i], d["domain"][i],
                                        int(arrays["docs/tokens"][i]), int(arrays["docs/chars"][i]),
                                        float(arrays["docs/nats"][i]), int(arrays["docs/crc"][i]),
                                        {k: int(v) for k, v in zip(layers, spikes[i])}))  # fmt: skip
            for u, n, c in zip(h["block_units"], arrays["block/nats"].tolist(), arrays["block/chars"].tolist()):
                s.block_nats[int(u)], s.block_chars[int(u)] = float(n), int(c)
            return s
        except (KeyError, ValueError, TypeError, IndexError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise SpikeEnergyError(f"{source} is not a readable spike-energy run state ({e}); "
                                   "delete it or rerun without --resume") from None  # fmt: skip


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either the old file or the complete new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_state(path: Path) -> RunState:
    from spikegpt.safeio import check_regular_file

    p = check_regular_file(path, "checkpoint", MAX_STATE_BYTES)
    return RunState.from_bytes(p.read_bytes(), str(path))


# ---------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------


@dataclass
class RunSettings:
    mode: str = "parallel"
    chunk_len: int | None = None  # tokens per block (default: the model's ctx_len)
    concat: bool = False  # today's single sequence: the first tokens x batch tokens
    tokens: int = 2048  # concat: tokens per row
    batch: int = 1  # concat: rows side by side
    max_tokens: int | None = None  # corpus: cap on scored tokens, in corpus order
    units: int = UNITS
    raster_neurons: int = 64
    raster_tokens: int = 256
    census_tokens: int = 1  # every arithmetic op of the forward runs at one token (tests/test_energy.py)
    checkpoint_every: int | None = None  # tokens (corpus order) between merged checkpoints
    checkpoint_dir: Path | None = None
    resume: bool = False
    fingerprint: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------


class _Track:
    """One model on the corpus: its meter, the running state of the current document."""

    def __init__(self, name: str, model: nn.Module, settings: RunSettings, scored: bool):
        self.name, self.model, self.scored = name, model, scored
        self.meter = Meter(model, raster_neurons=settings.raster_neurons, raster_tokens=settings.raster_tokens)
        self.state = None
        self.doc = Tally()

    def static(self) -> dict:
        m = self.meter
        return {"order": list(m.order), "kinds": dict(m.kinds), "module_types": dict(m.module_types),
                "unruled": list(m.unruled), "producers": {k: list(v) for k, v in m.producers.items()}}  # fmt: skip


class CorpusRun:
    """``CorpusRun(models, tokenizer, corpus, settings, dist).run()`` -> merged ``RunState`` (rank 0)."""

    def __init__(self, models: dict[str, nn.Module], tokenizer, corpus: Corpus, settings: RunSettings,
                 d: Dist | None = None, progress: Callable[[int, int | None], None] | None = None,
                 rows: torch.Tensor | None = None, byte_progress: bool = False):  # fmt: skip
        self.models, self.tok, self.corpus, self.s = models, tokenizer, corpus, settings
        # a document run without a token cap reports the corpus bytes read against the corpus size (known from
        # the start, so the total never moves), as progress(done, total, unit="bytes", tokens=scored tokens)
        self.byte_progress = bool(byte_progress and not settings.concat and settings.max_tokens is None
                                  and corpus is not None and corpus.total_bytes and rows is None)  # fmt: skip
        self.rows = rows  # (batch, T + 1) token ids given directly (``energy.measuring.profile``), instead of a corpus
        self.d = d or Dist()
        self.progress = progress
        self.block = settings.chunk_len or next(iter(models.values())).config.ctx_len
        self.sha = hashlib.sha256()
        self.chars_read = 0
        self.done_tokens = 0  # scored tokens this rank ran (this session)
        self.corpus_tokens = 0  # scored tokens of the corpus so far, in corpus order (all ranks agree)
        self.wall_s = 0.0
        self.base: RunState | None = None  # merged state on rank 0 (checkpoints and resume)
        self.skip: dict[int, DocResult | None] = {}  # documents already done (resume)
        self._sync: ProgressSync | None = None
        self._last_report = 0.0
        self._resumed_tokens = 0
        self._known_total: int | None = None
        self._recording = False  # this document gives the raster, the census tokens and the excerpt
        # whether a document before this one (in corpus order, whichever rank owns it, done in this session or an
        # earlier one) scored tokens: the merged state keeps the raster of the first document that did, so only
        # its owner records one (every rank reads every document, so every rank knows which one that is)
        self._scored_before = False
        self._first_piece = ""
        # seconds this rank spent in each part of ``run()`` (perf_counter): ``documents`` (reading every
        # document, running its own), ``blocks`` (of which: the model's blocks with the meter on, scoring),
        # ``wait`` (for the other ranks to finish their documents), ``merge`` (the states gathered and merged)
        self.phase_s: dict[str, float] = {"documents": 0.0, "blocks": 0.0, "wait": 0.0, "merge": 0.0}

    # ---------------------------------------------------------------- public
    def run(self) -> RunState | None:
        t0 = time.perf_counter()
        self.delta = self._new_state(0)
        if self.s.resume:
            self._resume()
        tracks = {name: _Track(name, m, self.s, scored=(i == 0)) for i, (name, m) in enumerate(self.models.items())}
        self.tracks = tracks
        was = {name: (m.training, getattr(m, "kernels", None)) for name, m in self.models.items()}
        for m in self.models.values():
            m.eval()
            if getattr(m, "kernels", None) is not None:
                m.kernels = "eager"  # the hooks must see every module; fused kernels hide them
        if self.d.active:
            self._sync = ProgressSync(self.d, self.progress, bytes_mode=self.byte_progress)
        completed, failure = False, None
        try:
            for tr in tracks.values():
                tr.meter.__enter__()
            t_docs = time.perf_counter()
            with torch.no_grad():
                if self.s.concat:
                    self._run_concat()
                else:
                    self._run_documents()
            self.phase_s["documents"] = time.perf_counter() - t_docs
            completed = True
        except BaseException as e:
            failure = e
            raise
        finally:
            for tr in tracks.values():
                tr.meter.__exit__(None, None, None)
            for name, m in self.models.items():
                m.train(was[name][0])
                if was[name][1] is not None:
                    m.kernels = was[name][1]
            if not completed:
                kept = self._flush_delta()
                if kept and failure is not None:  # for the one line the CLI prints about the stop
                    with contextlib.suppress(AttributeError, TypeError):
                        failure.partial_documents = kept
                if self._sync is not None:
                    self._sync.stop(wait=False)
        t_wait = time.perf_counter()
        if self._sync is not None:
            self._sync.stop()
        t_merge = time.perf_counter()
        self.phase_s["wait"] = t_merge - t_wait
        self.wall_s = t_merge - t0
        merged = self._merge_all()
        self.phase_s["merge"] = time.perf_counter() - t_merge
        if merged is not None:
            merged.tracks = {name: merged.tracks.get(name, TrackState()) for name in self.models}
            for name, tr in tracks.items():  # every rank knows the modules; a rank that ran nothing did not record them
                if not merged.tracks[name].static.get("order") and tr.meter.order:
                    merged.tracks[name].static = tr.static()
        return merged

    @property
    def text_sha256(self) -> str:
        return self.sha.hexdigest()

    # ---------------------------------------------------------------- documents
    def _new_state(self, since: int) -> RunState:
        return RunState(fingerprint=self.s.fingerprint, since_seq=since, delta_id=uuid.uuid4().hex)

    def _tokens(self, doc: Document) -> Iterator[list[int]]:
        first = True
        for piece in doc.pieces():
            self.sha.update(piece.encode("utf-8"))
            self.chars_read += len(piece)
            if first:
                self._first_piece = piece[:600]
            first = False
            ids = self.tok.encode(piece)
            if ids:
                yield ids

    def _run_documents(self) -> None:
        cap = self.s.max_tokens
        every = self.s.checkpoint_every
        n_docs = 0
        for doc in self.corpus.documents():
            n_docs += 1
            if cap is not None and self.corpus_tokens >= cap:
                break
            budget = None if cap is None else cap - self.corpus_tokens + 1  # ids (scored + 1) this document may use
            mine = self.d.owns(doc.index) and doc.index not in self.skip
            pieces = _capped(self._tokens(doc), budget)
            if mine:
                scored = self._run_document(doc, pieces, record_raster=not self._scored_before)
            else:
                n, crc = 0, 0
                for ids in pieces:
                    n += len(ids)
                    crc = zlib.crc32(np.asarray(ids, dtype=np.int64).tobytes(), crc)
                scored = max(n - 1, 0)
                self._check_done(doc, scored, crc)
            before = self.corpus_tokens
            self.corpus_tokens += scored
            self._scored_before = self._scored_before or scored > 0
            if every and self.corpus_tokens // every > before // every:
                self._checkpoint()
            self._report()
        self._known_total = self.corpus_tokens  # everything is read: the total is no longer an estimate
        self._report(final=True)
        if n_docs == 0:
            raise TextError(f"--text {self.corpus.spec} holds no documents; give some text")

    def _check_done(self, doc: Document, scored: int, crc: int) -> None:
        rec = self.skip.get(doc.index, 0)
        if rec is None:  # skipped (too short) in the earlier run
            return
        if isinstance(rec, DocResult) and (rec.tokens != scored or rec.crc != crc):
            raise SpikeEnergyError(f"document {doc.index} ({doc.name}) differs from the one in the checkpoint: the "
                                   "corpus changed; delete the checkpoint folder or restore the corpus")  # fmt: skip

    def _run_document(self, doc: Document, pieces: Iterator[list[int]], record_raster: bool) -> int:
        """Run one document (batch 1) block by block; returns its scored tokens. ``record_raster``: no earlier
        document scored tokens, so this one (if it scores any) gives the raster, census tokens and excerpt."""
        buf: list[int] = []
        crc, pos, chars, nats = 0, 0, 0, 0.0
        self._begin(record_raster=record_raster)
        for ids in pieces:
            crc = zlib.crc32(np.asarray(ids, dtype=np.int64).tobytes(), crc)
            buf.extend(ids)
            while len(buf) > self.block:
                n, c = self._step(torch.tensor([buf[: self.block + 1]]), pos)
                nats, chars, pos = nats + n, chars + c, pos + self.block
                del buf[: self.block]
        if len(buf) >= 2:
            n, c = self._step(torch.tensor([buf]), pos)
            nats, chars, pos = nats + n, chars + c, pos + len(buf) - 1
        if pos == 0:
            self.delta.skipped.append(doc.index)
            return 0
        self._end(doc, pos, chars, nats, crc)
        return pos

    def _run_concat(self) -> None:
        """Today's single sequence: the first ``tokens x batch`` tokens of the text, in ``batch`` rows."""
        if self.rows is not None:
            rows = torch.as_tensor(self.rows, dtype=torch.long)
            self._run_rows(rows, Document(0, "tokens", "tokens", "", iter(())))
            return
        s = self.s
        need = s.batch * s.tokens + 1
        ids: list[int] = []
        first_piece = ""
        for doc in self.corpus.documents():
            for piece_ids in _capped(self._tokens(doc), need - len(ids)):
                ids.extend(piece_ids)
                first_piece = first_piece or self._first_piece
            if len(ids) >= need:
                break
        if len(ids) < s.batch * 2 + 1:
            raise TextError(f"{self.corpus.spec} gives only {len(ids)} tokens; give a longer text or lower "
                            "--tokens/--batch")  # fmt: skip
        if len(ids) < need:
            logger.warning("%s has %d tokens, fewer than --tokens x --batch = %d; using all of them",
                           self.corpus.spec, len(ids), need - 1)  # fmt: skip
        t = torch.tensor(ids[:need])
        per_row = (len(t) - 1) // s.batch
        rows = torch.stack([t[i * per_row : i * per_row + per_row + 1] for i in range(s.batch)])
        self._first_piece = first_piece
        self._run_rows(rows, Document(0, self.corpus.describe(), Path(self.corpus.spec).name, "", iter(())))

    def _run_rows(self, rows: torch.Tensor, doc: Document) -> None:
        if 0 in self.skip or not self.d.owns(0):
            return
        self._begin(record_raster=True)
        nats, chars = 0.0, 0
        T = rows.shape[1] - 1
        for start in range(0, T, self.block):
            n, c = self._step(rows[:, start : start + self.block + 1], start)
            nats, chars = nats + n, chars + c
        crc = zlib.crc32(rows.numpy().astype(np.int64).tobytes())
        self.corpus_tokens = self._known_total = rows.shape[0] * T
        self._end(doc, rows.shape[0] * T, chars, nats, crc)
        self._report(final=True)

    # ---------------------------------------------------------------- one block
    def _begin(self, record_raster: bool) -> None:
        for tr in self.tracks.values():
            tr.state = None
            tr.doc = Tally()
            tr.meter.begin_sequence(record_raster=record_raster)
        self._block_index = 0
        self._recording = record_raster

    @collector_paused()
    def _step(self, ids: torch.Tensor, pos: int) -> tuple[float, int]:
        """Run ``ids[:, :-1]`` (one block) through every model, scored on ``ids[:, 1:]``."""
        t0 = time.perf_counter()
        main = next(iter(self.tracks.values()))
        device = next(main.model.parameters()).device
        ids = ids.to(device)
        x, y = ids[:, :-1], ids[:, 1:]
        if pos == 0 and self._recording:
            self.delta.census_ids = x[:, : self.s.census_tokens].tolist()
        nats = 0.0
        for tr in self.tracks.values():
            for start, out in tr.model.chunks(x, tr.state, mode=self.s.mode, chunk_len=self.block):
                tr.state = out.state
                if tr.scored:
                    logits = out.logits if out.logits.dtype == torch.float64 else out.logits.float()
                    n = logits.shape[1]
                    nats += float(F.cross_entropy(logits.flatten(0, 1), y[:, start : start + n].flatten(),
                                                  reduction="sum"))  # fmt: skip
            delta = tr.meter.take()
            delta.tokens = x.numel()
            tr.doc.add(delta)
            unit = self._block_index % self.s.units
            self.delta.tracks.setdefault(tr.name, TrackState()).block_units.setdefault(unit, Tally()).add(
                delta, detail=False
            )
        if self.tok is None or self.tok.kind != "bpe":
            chars = x.numel()
        else:
            chars = sum(len(self.tok.decode(r)) for r in y.tolist())
        unit = self._block_index % self.s.units
        self.delta.block_nats[unit] = self.delta.block_nats.get(unit, 0.0) + nats
        self.delta.block_chars[unit] = self.delta.block_chars.get(unit, 0) + chars
        self._block_index += 1
        self.done_tokens += x.numel()
        self._report()
        self.phase_s["blocks"] += time.perf_counter() - t0
        return nats, chars

    @collector_paused()  # the raster's lists are millions of small objects: 13 collections, 0.1 s
    def _end(self, doc: Document, tokens: int, chars: int, nats: float, crc: int) -> None:
        main = None
        for tr in self.tracks.values():
            st = self.delta.tracks.setdefault(tr.name, TrackState())
            st.total.add(tr.doc)
            st.doc_units.setdefault(doc.index % self.s.units, Tally()).add(tr.doc, detail=False)
            if not st.static.get("order"):
                st.static = tr.static()
            main = main or tr
        if self._recording:
            self.delta.raster = {n: main.meter.raster(n).int().tolist() for n in main.meter.spike_stats}
            self.delta.raster_doc = doc.index
            self.delta.excerpt = self._first_piece
            for tr in self.tracks.values():
                for st in tr.meter.spike_stats.values():
                    st.raster, st.raster_tokens = [], 0
        spikes = {k: int(v) for k, v in main.doc.spikes.items()}
        self.delta.docs.append(DocResult(doc.index, doc.name, doc.source, doc.domain, tokens, chars, nats, crc,
                                         spikes))  # fmt: skip

    # ---------------------------------------------------------------- progress
    def estimated_total(self) -> int | None:
        if self._known_total is not None:
            return self._known_total
        if self.s.concat:
            return self.s.tokens * self.s.batch
        if self.corpus is None:
            return None
        est = None
        if self.corpus.total_bytes and self.chars_read:
            frac = min(1.0, self.chars_read / self.corpus.total_bytes)
            est = int(self.corpus_tokens / frac) if frac > 0 and self.corpus_tokens else None
        if self.s.max_tokens is not None:
            est = min(est, self.s.max_tokens) if est else self.s.max_tokens
        return est

    def _report(self, final: bool = False) -> None:
        tokens = self.done_tokens + self._resumed_tokens
        if self._sync is not None:
            self._sync.tokens = tokens
            if self.byte_progress:
                self._sync.done, self._sync.total = self.corpus.bytes_read, self.corpus.total_bytes
            else:
                self._sync.done, self._sync.total = tokens, self.estimated_total() or 0
            return
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self._last_report < 0.2 and not final:
            return
        self._last_report = now
        if self.byte_progress:
            total = self.corpus.total_bytes
            done = total if final else min(self.corpus.bytes_read, total)
            self.progress(done, total, unit="bytes", tokens=tokens)
        else:
            self.progress(tokens, self.estimated_total())

    # ---------------------------------------------------------------- merging, checkpoints, resume
    def _merge_all(self) -> RunState | None:
        """Gather every rank's delta on rank 0 and add them to the merged state (rank order)."""
        if self.d.active:
            # rank 0 keeps its own delta as it is (as one process does: the bytes round trip is exact and only
            # costs time, some 0.3 s for a raster of the 216M) and sends nothing; the others send theirs
            parts = self.d.gather_bytes(b"" if self.d.is_main else self.delta.to_bytes())
            if not self.d.is_main:
                self.delta = self._new_state(self.delta.since_seq)
                return None
            deltas = [self.delta] + [RunState.from_bytes(b, f"rank {i}'s state") for i, b in enumerate(parts) if i]
        else:  # one process: its delta as it is (the bytes round trip is exact, and only costs time)
            deltas = [self.delta]
        merged = self.base or RunState(fingerprint=self.s.fingerprint)
        for delta in deltas:
            merged.merge(delta)
        self.base = merged
        self.delta = self._new_state(merged.checkpoint_seq)
        return merged

    def _checkpoint(self) -> None:
        """Merge on rank 0 and write ``state.npz`` atomically; every rank then starts a new delta."""
        merged = self._merge_all()
        seq = None
        if merged is not None and self.s.checkpoint_dir is not None:
            merged.checkpoint_seq += 1
            self.s.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.s.checkpoint_dir / "state.npz", merged.to_bytes())
            seq = merged.checkpoint_seq
            logger.info("checkpoint %d: %d documents, %d tokens", seq, len(merged.docs), merged.tokens)
        self.delta.since_seq = int(self.d.broadcast_bytes(str(seq or 0).encode()).decode() or 0)

    def _flush_delta(self) -> int:
        """After an interrupt or error: this rank's work since the last checkpoint, to ``delta-*.npz``. Nothing
        is written when nothing was done (an error before the first document leaves no partial state). Returns
        the documents the partial state now holds (the merged checkpoint's and this delta's), 0 if none."""
        held = len(self.base.docs) if self.base is not None else 0
        if self.s.checkpoint_dir is None or (not self.delta.docs and not self.delta.skipped):
            return held
        try:
            self.s.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            path = self.s.checkpoint_dir / f"delta-rank{self.d.rank}-{self.delta.delta_id}.npz"
            write_atomic(path, self.delta.to_bytes())
            logger.info("partial state of %d documents written to %s", len(self.delta.docs), path)
            return held + len(self.delta.docs)
        except Exception:  # already failing: keep the original error
            logger.exception("could not write the partial state")
            return held

    def _resume(self) -> None:
        """Load the merged checkpoint and every rank's deltas; all ranks learn which documents are done."""
        d = self.s.checkpoint_dir
        if d is None:
            raise SpikeEnergyError("--resume needs the checkpoint folder of the interrupted run")
        local = sorted(d.glob("delta-*.npz")) if d.is_dir() else []
        blobs = [p.read_bytes() for p in local]
        packed = _pack(blobs)
        gathered = self.d.gather_bytes(packed)
        done_bytes = None
        if self.d.is_main:
            base = read_state(d / "state.npz") if (d / "state.npz").exists() else None
            if base is None and not local and not any(_unpack(g) for g in gathered):
                raise SpikeEnergyError(f"--resume: {d} holds no partial state (state.npz or delta-*.npz); "
                                       "run without --resume")  # fmt: skip
            merged = base or RunState(fingerprint=self.s.fingerprint)
            _check_fingerprint(merged.fingerprint, self.s.fingerprint, d)
            seen = set()
            for g in gathered:
                for b in _unpack(g):
                    delta = RunState.from_bytes(b, f"{d}/delta")
                    _check_fingerprint(delta.fingerprint, self.s.fingerprint, d)
                    if delta.delta_id in seen or delta.since_seq < merged.checkpoint_seq:
                        continue  # already merged (a shared folder seen by two ranks, or a later checkpoint)
                    seen.add(delta.delta_id)
                    merged.merge(delta)
            self.base = merged
            if d.is_dir():  # the merged state replaces the deltas it holds
                merged.checkpoint_seq += 1
                write_atomic(d / "state.npz", merged.to_bytes())
            done = {"docs": [[x.index, x.tokens, x.crc] for x in merged.docs], "skipped": merged.skipped,
                    "tokens": merged.tokens, "seq": merged.checkpoint_seq}  # fmt: skip
            done_bytes = json.dumps(done).encode()
        done = json.loads(self.d.broadcast_bytes(done_bytes).decode())
        for idx, tokens, crc in done["docs"]:
            self.skip[int(idx)] = DocResult(int(idx), "", "", "", int(tokens), 0, 0.0, int(crc))
        for idx in done["skipped"]:
            self.skip[int(idx)] = None
        self._resumed_tokens = int(done["tokens"])
        self.d.barrier()
        for p in local:  # merged into state.npz now
            p.unlink(missing_ok=True)
        self.delta.since_seq = int(done["seq"])
        logger.info("resuming: %d documents already done", len(self.skip))


def _check_fingerprint(have: dict, want: dict, where: Path) -> None:
    if have and have != want:
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise SpikeEnergyError(f"--resume: the partial state in {where} was made with different settings "
                               f"({', '.join(diff)}); rerun with the same options, or delete {where}")  # fmt: skip


def _pack(blobs: list[bytes]) -> bytes:
    out = io.BytesIO()
    for b in blobs:
        out.write(len(b).to_bytes(8, "little"))
        out.write(b)
    return out.getvalue()


def _unpack(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = int.from_bytes(data[i : i + 8], "little")
        out.append(data[i + 8 : i + 8 + n])
        i += 8 + n
    return out


def _capped(pieces: Iterator[list[int]], budget: int | None) -> Iterator[list[int]]:
    """At most ``budget`` ids in total (all of them when None); stops reading once it is reached."""
    if budget is None:
        yield from pieces
        return
    left = budget
    for ids in pieces:
        if left <= 0:
            return
        yield ids[:left]
        left -= len(ids)


def doc_counter(docs: list[DocResult], key: str) -> Counter:
    """Documents and tokens per value of ``key`` ("domain" or "source")."""
    c = Counter()
    for d in docs:
        c[getattr(d, key)] += d.tokens
    return c
