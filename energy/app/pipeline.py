"""The whole job behind ``spike-energy profile`` and ``audit``, as library calls.

load the model and its tokenizer -> read and tokenize the text -> profile -> baselines ->
audit -> ``summary`` (a plain dict, written as summary.json; the report renders from it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from energy.comparing import cache, sanafe_check
from energy.comparing.audit import audit
from energy.comparing.baselines import (
    BASELINE_NAMES,
    DESCRIPTIONS,
    SCALE_BASELINES,
    Baseline,
    assume_activation_zeros,
    baseline_from_profile,
    rwkv_twin,
    synaptic_ops,
)
from energy.comparing.baselines import chars_per_token as chars_per_token_of
from energy.comparing.cache import _version
from energy.comparing.decode import at_context, context_curve, decode_mode, keys_per_query
from energy.comparing.headline import ASYMMETRIES, PAPER_WKV_OPS, decode_sentence, decode_sentences, headline
from energy.comparing.uncertainty import documents_frame, group_table, run_intervals
from energy.comparing.variants import bundled_models
from energy.comparing.variants import compare as compare_models
from energy.measuring.corpus import Corpus, open_corpus
from energy.measuring.dist import from_env as dist_from_env
from energy.measuring.profile import Profile, build_profile
from energy.measuring.runner import CorpusRun, RunSettings, RunState
from energy.pricing.costs import BYTES_PER_VALUE, CostTable, load_costs
from energy.pricing.estimate import SCENARIO_LABELS, SCENARIOS
from energy.pricing.memory import LEFT_OUT, TERMS
from energy.pricing.platforms import CHOICES as _CHOICES
from energy.pricing.platforms import resolve_nodes, resolve_platforms
from energy.pricing.platforms import section as platform_section
from spikegpt.checkpoint import CheckpointInfo, load_checkpoint
from spikegpt.errors import SpikeEnergyError
from spikegpt.limits import check_device, check_memory, spikegpt_run_bytes
from spikegpt.model import SpikeGPT
from spikegpt.safeio import json_safe, without_dirs
from spikegpt.tokenizer import resolve_tokenizer

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: headline, memory, decode, variants (summary.json section of the README)
DEFAULT_BASELINES = BASELINE_NAMES
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def demo_paths() -> tuple[Path, Path]:
    """The bundled demo checkpoint and the held-out sample text."""
    root = Path(str(resources.files("spikegpt") / "demo"))
    return root / "demo.pth", root / "sample.txt"


@dataclass
class Job:
    """Inputs of one run (the CLI's options)."""

    checkpoint: str | None = None
    tokenizer: str | None = None
    text: str | None = None
    tokens: int = 2048
    batch: int = 1
    mode: str = "parallel"
    device: str = "cpu"
    dtype: str = "float32"
    precision: str = "fp32"
    costs: str | None = None
    binary_embedding: bool | None = None
    lif_threshold: float | None = None
    lif_tau: float | None = None
    unknown_chars: str | dict = "error"
    census_tokens: int = 1  # every arithmetic op of the forward runs at one token (tests/test_energy.py)
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    twin: bool = True
    twin_checkpoint: str | None = None  # a trained non-spiking twin (--twin): the headline's twin
    context: int | None = None  # transformer baselines' sequence length (default: SpikeGPT's tokens per sequence)
    zero_skipping: bool = True  # MACs with a zero input are skipped, for SpikeGPT and every baseline alike
    relu_zero_fraction: float | None = None  # the ReLU^2 transformer's assumed sparsity (default: SpikeGPT's)
    sram_budget_mb: float | None = None  # on-chip SRAM budget (default: energy/pricing/data/parameters.csv)
    memory_model: str = "horowitz-log"  # SRAM access model (energy.pricing.costs.MEMORY_MODELS)
    redact_paths: bool = False  # summary.json without local paths, for sharing
    variants: bool = True  # the bundled demo: also profile the bundled twin and spike-input models
    platforms: tuple[str, ...] = ("all",)  # energy/pricing/platforms.py presets, "all", "none" or platform CSV files
    nodes: tuple = ("all",)  # process nodes (nm) of the digital reference: 45, 28, 16, 7, 5
    command_line: list[str] = field(default_factory=list)
    max_memory: int | None = None  # memory budget in bytes (default: spikegpt.limits.DEFAULT_MEMORY_BUDGET)
    cache: bool = True  # read and write the on-disk baselines cache (energy/comparing/cache.py)
    # corpora (energy.measuring.corpus, energy.measuring.runner)
    max_tokens: int | None = None  # cap on the scored tokens of a corpus run
    concat: bool | None = None  # one sequence of the first tokens x batch tokens; None: for a single text file
    checkpoint_every: int | None = None  # tokens between merged checkpoints
    checkpoint_dir: str | None = None  # where partial state goes (the CLI: <out>/partial)
    resume: bool = False


@dataclass
class Result:
    job: Job
    model: SpikeGPT
    info: CheckpointInfo
    tokenizer: object
    profile: Profile
    baselines: dict[str, Baseline]
    audit: dict
    text: str  # the start of the first document
    text_path: str
    costs: CostTable
    timings: dict
    scored_chars: int  # characters (bytes) of text the scored tokens stand for
    text_sha256: str = ""  # of the text read
    text_chars: int = 0
    state: RunState | None = None  # the exact, merged sums of the run
    corpus: dict = field(default_factory=dict)  # summary.json["corpus"]
    uncertainty: dict = field(default_factory=dict)  # summary.json["uncertainty"]
    documents: pd.DataFrame | None = None  # one row per document (documents.csv)
    scored_text: str = ""  # the text the scored tokens stand for, up to SAMPLE_CHARS (baselines' tokenizers read it)
    variants: dict | None = None  # energy.comparing.variants.compare: the bundled models side by side
    stripped_twin: dict | None = None  # the stripped twin's bits per character (twin_quality)
    trained_twin: dict | None = None  # --twin: the user's trained twin, measured (variants.measure_model)


def load(job: Job) -> tuple[SpikeGPT, CheckpointInfo, object, Corpus]:
    ckpt = Path(job.checkpoint) if job.checkpoint else demo_paths()[0]
    if job.dtype not in DTYPES:
        raise SpikeEnergyError(f"--dtype must be one of {', '.join(DTYPES)}, got {job.dtype!r}")
    check_device(job.device)
    if job.twin_checkpoint is not None and not Path(job.twin_checkpoint).is_file():
        raise SpikeEnergyError(f"--twin: {without_dirs(str(job.twin_checkpoint))} is not a checkpoint file; give the "
                               "path of a trained non-spiking twin (.pth or .safetensors)")  # fmt: skip
    corpus = open_corpus(job.text if job.text else demo_paths()[1])  # checked before the model is loaded
    check_corpus_options(job, corpus)
    model, info = load_checkpoint(
        ckpt,
        dtype=DTYPES[job.dtype],
        device=job.device,
        max_memory=job.max_memory,
        binary_embedding=job.binary_embedding,
        lif_threshold=job.lif_threshold,
        lif_tau=job.lif_tau,
    )
    tok = resolve_tokenizer(info.config.vocab_size, job.tokenizer, ckpt, unknown=job.unknown_chars)
    return model, info, tok, corpus


def is_concat(job: Job, corpus: Corpus) -> bool:
    """A single text file (and the bundled sample) runs as one sequence of its first ``--tokens``
    tokens, as before, unless ``--max-tokens`` asks for the document run."""
    return job.concat if job.concat is not None else (corpus.single_document and job.max_tokens is None)


def check_corpus_options(job: Job, corpus: Corpus) -> None:
    """The run's options, checked before anything is loaded."""
    if job.tokens < 2:
        raise SpikeEnergyError(f"--tokens must be at least 2, got {job.tokens}")
    if job.batch < 1:
        raise SpikeEnergyError(f"--batch must be at least 1, got {job.batch}")
    concat = is_concat(job, corpus)
    if not concat and job.batch != 1:
        raise SpikeEnergyError("--batch applies to --concat runs (one sequence in rows); corpus documents run one "
                               "at a time: drop --batch or add --concat")  # fmt: skip
    if concat and job.max_tokens is not None:
        raise SpikeEnergyError("--max-tokens applies to document runs; with --concat, set --tokens (per row)")
    if job.max_tokens is not None and job.max_tokens < 1:
        raise SpikeEnergyError(f"--max-tokens must be a positive integer, got {job.max_tokens}")
    if job.checkpoint_every is not None and job.checkpoint_every < 1:
        raise SpikeEnergyError(f"--checkpoint-every must be a positive number of tokens, got {job.checkpoint_every}")
    if job.resume and int(os.environ.get("RANK", "0") or 0) == 0:  # other hosts may hold no partial state
        d = Path(job.checkpoint_dir) if job.checkpoint_dir else None
        if d is None or not d.is_dir() or not any(d.glob("*.npz")):
            raise SpikeEnergyError(f"--resume: {d} holds no partial state (state.npz or delta-*.npz); run without "
                                   "--resume")  # fmt: skip


def settings_for(job: Job, corpus: Corpus, info: CheckpointInfo, tok) -> RunSettings:
    """How the corpus runs (``check_corpus_options`` has checked the options)."""
    concat = is_concat(job, corpus)
    fingerprint = {
        "checkpoint_sha256": info.sha256,
        "tokenizer": tok.describe(),
        "text": corpus.spec,
        "files": [str(f) for f in corpus.files][:1000],
        "concat": concat,
        "tokens": job.tokens if concat else None,
        "batch": job.batch,
        "max_tokens": job.max_tokens,
        "mode": job.mode,
        "dtype": job.dtype,
        "binary_embedding": job.binary_embedding,
        "lif_threshold": job.lif_threshold,
        "lif_tau": job.lif_tau,
        "twin": job.twin,
        "census_tokens": job.census_tokens,
    }
    return RunSettings(
        mode=job.mode, concat=concat, tokens=job.tokens, batch=job.batch, max_tokens=job.max_tokens,
        census_tokens=job.census_tokens, checkpoint_every=job.checkpoint_every,
        checkpoint_dir=Path(job.checkpoint_dir) if job.checkpoint_dir else None, resume=job.resume,
        fingerprint=fingerprint,
    )  # fmt: skip


def run(job: Job, progress=None) -> Result | None:
    """``progress(description, done, total)``: optional callback for progress bars.

    Under ``torchrun`` every rank calls this; rank 0 gets the ``Result``, the others ``None``.
    """
    timings = {}

    main_rank = int(os.environ.get("RANK", "0") or 0) == 0  # under torchrun, rank 0 alone draws the bars

    def stage(name, done, total, what=""):  # a stage of uneven steps: named, its ETA shown as unknown
        if progress and main_rank:
            progress(name, done, total, what=what, eta=False)

    stage("load", 0, 4, "checkpoint, tokenizer and text")
    resolve_platforms(job.platforms), resolve_nodes(job.nodes)  # bad names fail before anything runs
    t0 = time.perf_counter()
    d = dist_from_env(job.device)
    if d.active and d.device != job.device:
        job.device = d.device  # one GPU per rank
    model, info, tok, corpus = load(job)
    stage("load", 1, 4, "cost table")
    budget = None if job.sram_budget_mb is None else job.sram_budget_mb * 2**20
    costs = load_costs(job.costs, sram_budget_bytes=budget, memory_model=job.memory_model)
    settings = settings_for(job, corpus, info, tok)
    stage("load", 2, 4, "memory checks")
    # sizes against the memory budget before anything runs: the run (+ the twin's copy of the weights), the baselines
    elem = torch.empty((), dtype=DTYPES[job.dtype]).element_size()
    block = min(model.config.ctx_len, job.max_tokens or model.config.ctx_len)  # a document runs in blocks of ctx_len
    rows, per_row = (job.batch, job.tokens) if settings.concat else (1, block)
    if settings.concat:  # sized by the tokens the text has: a --tokens beyond it runs the whole text (with a warning)
        per_row = min(per_row, concat_tokens_per_row(corpus, tok, job.batch, job.tokens))
    need = spikegpt_run_bytes(model.config, rows, per_row, elem) + (model.num_params() * elem if job.twin else 0)
    check_memory(f"profiling {rows} x {per_row} tokens", need, job.max_memory)
    longest = job.context if job.context is not None else per_row  # the baselines' sequences are no longer
    cache.check_memory(model.config, longest, job.baselines, job.max_memory)
    stage("load", 3, 4, "RWKV twin")
    models = {"spikegpt": model}
    if job.twin:
        models["rwkv-twin"] = rwkv_twin(model)
    stage("load", 4, 4)
    timings["load_s"] = time.perf_counter() - t0

    def tick(name):
        return (lambda done, total, **kw: progress(name, done, total, **kw)) if progress else None

    t0 = time.perf_counter()
    runner = CorpusRun(models, tok, corpus, settings, d, progress=tick("profile") if d.is_main else None,
                       byte_progress=True)  # fmt: skip
    try:
        state = runner.run()
    finally:
        d.close()
    if state is None:
        return None
    stage("count", 0, 1, "operations and energy of the run")
    prof = build_profile(model, state, "spikegpt", settings, costs=costs, precision=job.precision,
                         wall_s=runner.wall_s)  # fmt: skip
    stage("count", 1, 1)
    timings["profile_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    bases: dict[str, Baseline] = {}
    n_bases = len(job.baselines) + int(job.twin)
    if job.twin:
        stage("baselines", 0, n_bases, "rwkv-twin")
        twin_prof = build_profile(models["rwkv-twin"], state, "rwkv-twin", settings, wall_s=runner.wall_s)
        bases["rwkv-twin"] = baseline_from_profile(twin_prof)
    context = job.context if job.context is not None else prof.meta["tokens_per_sequence"]  # the same sequences
    cache.check_memory(model.config, context, job.baselines, job.max_memory)  # before any baseline is built
    sample = sample_text(corpus, state.chars)
    contexts = baseline_contexts(job, context, sample, state.chars / max(prof.tokens, 1))
    for i, name in enumerate(job.baselines):
        stage("baselines", i + int(job.twin), n_bases, f"{name} at {contexts[name][0]:,} tokens")
        cache.check_memory(model.config, contexts[name][0], (name,), job.max_memory)
        bases.update(cache.baselines(model.config, contexts[name][0], include=(name,), use_cache=job.cache))
    if n_bases:
        stage("baselines", n_bases, n_bases)
    if not settings.concat and job.context is None:  # documents: attention over each document's own length
        for name in job.baselines:
            lengths = [d.tokens * contexts[name][1] for d in state.docs]
            k = keys_per_query(lengths)
            bases[name] = dataclasses.replace(at_context(bases[name], None, keys=k), assumptions=[
                *bases[name].assumptions, f"attention over {k:,.1f} keys per query: sum_d T_d (T_d + 1) / 2 / sum_d "
                f"T_d over the {len(lengths):,} documents (token-weighted, not the mean length)"])  # fmt: skip
    if "transformer-same-dims-relu" in bases:
        zf, source = relu_assumption(prof, job.relu_zero_fraction)
        bases["transformer-same-dims-relu"] = assume_activation_zeros(bases["transformer-same-dims-relu"], zf, source)
    timings["baselines_s"] = time.perf_counter() - t0
    # The paper compares per block with a vanilla GPT of the same size: the same-size transformer (the
    # checkpoint's layers, width, vocabulary, at the same sequence length) is the reference of the headline
    # and of the break-even analysis; models of other sizes go to the scale panel, per character.
    order = ("transformer-same-dims", "transformer-same-dims-relu", *SCALE_BASELINES)
    reference = next((b for b in order if b in bases), "")
    same_vocab = {n: b for n, b in bases.items() if n not in SCALE_BASELINES}  # per token; others go per character
    stage("analysis", 0, 2, "audit")
    t0 = time.perf_counter()
    stripped = None
    if job.twin:  # the stripped twin's quality on the same first tokens (it is never shown without it)
        stripped = twin_quality(models["rwkv-twin"], tok, sample_text(corpus, state.chars + 64),
                                prof.meta["tokens_per_sequence"])  # fmt: skip
    label = f"the stripped twin ({stripped['bpc']:.2f} bits/char)" if stripped else "the stripped twin"
    timings["stripped_twin_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    aud = audit(prof, same_vocab, costs, job.precision, reference=reference, twin="rwkv-twin",
                zero_skipping=job.zero_skipping, ctx_len=model.config.ctx_len, twin_label=label)  # fmt: skip
    timings["audit_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    profiles = {"spikegpt": prof}
    static = state.tracks["spikegpt"].static
    lif = [k for k, v in static["kinds"].items() if v == "lif"]
    widths = state.tracks["spikegpt"].total.widths
    stage("analysis", 1, 2, "bootstrap intervals")
    unc = run_intervals(state, settings, models, profiles, same_vocab, costs, job.precision, unit_label=tok.unit)
    stage("analysis", 2, 2)
    if unc.get("energy_check", 0) > 1e-6:
        logger.warning("energy per unit does not add up to the run's energy (relative gap %.2g); the energy "
                       "intervals assume an accounting linear in the counts", unc["energy_check"])  # fmt: skip
    corpus_info = {
        "spec": corpus.spec,
        "kind": corpus.kind,
        "run": "concat" if settings.concat else "documents",
        "documents": len(state.docs),
        "skipped_documents": len(state.skipped),
        "tokens": state.tokens,
        "chars": state.chars,
        "max_tokens": job.max_tokens,
        "block_tokens": runner.block,
        "processes": d.world,
        "twin": f"the RWKV twin ran on the same {'tokens' if settings.concat else 'documents'}; its ratio's "
        "interval is a paired bootstrap" if job.twin else None,
        "groups": group_table(state, settings, widths, lif),
    }  # fmt: skip
    timings["intervals_s"] = time.perf_counter() - t0
    variants = None
    if job.variants and job.checkpoint is None and len(bundled_models()) > 1:  # the three bundled models, compared
        t0 = time.perf_counter()
        # the same tokens as the main run: its input starts one token before the scored characters
        lead = sample_text(corpus, state.chars + 64)
        names = list(bundled_models())

        def models_tick(done, total):  # the bar names the model being profiled next
            if progress:
                progress("models", done, total, what=names[done] if done < total else "")

        models_tick(0, len(names))
        variants = compare_models(bundled_models(), lead, prof.meta["tokens_per_sequence"], costs, job.precision,
                                  job.zero_skipping, job.mode, job.platforms, models_tick,
                                  use_cache=job.cache)  # fmt: skip
        timings["variants_s"] = time.perf_counter() - t0
    trained = None
    if job.twin_checkpoint:  # the user's trained twin, on the same tokens as the variants section reads them
        from energy.comparing.variants import measure_model

        trained = measure_model("twin", Path(job.twin_checkpoint), sample_text(corpus, state.chars + 64),
                                prof.meta["tokens_per_sequence"], costs, job.precision, job.zero_skipping, job.mode,
                                use_cache=job.cache)  # fmt: skip
        if (trained.pop("_profile").layers.kind == "lif").any():
            name = without_dirs(str(job.twin_checkpoint))
            raise SpikeEnergyError(f"--twin: {name} has LIF layers, so it is not a non-spiking twin; give a model "
                                   "trained without them (variant 'twin')")  # fmt: skip
    return Result(
        job, model, info, tok, prof, bases, aud, state.excerpt, corpus.spec, costs, timings, state.chars,
        text_sha256=runner.text_sha256, text_chars=runner.chars_read, state=state, corpus=corpus_info,
        uncertainty=unc, documents=documents_frame(state, widths, lif, list(static["kinds"])), scored_text=sample,
        variants=variants, stripped_twin=stripped, trained_twin=trained,
    )  # fmt: skip


def concat_tokens_per_row(corpus: Corpus, tok, batch: int, tokens: int) -> int:
    """Tokens per row that a ``--concat`` run of ``batch`` x ``tokens`` gets from this text: ``tokens``, or fewer
    when the text is shorter (the run then uses all of it, with a warning). Tokenizes at most what the run
    reads (``batch x tokens + 1`` ids)."""
    need, have = batch * tokens + 1, 0
    for doc in corpus.documents():
        for piece in doc.pieces():
            have += len(tok.encode(piece))
            if have >= need:
                return tokens
    return max((have - 1) // batch, 1)


def baseline_contexts(job: Job, context: int, sample: str, snn_chars_per_token: float) -> dict[str, tuple[int, float]]:
    """Each baseline's context in its own tokens, and its tokens per SpikeGPT token: a model with another
    tokenizer (the scale panel) reads the same characters, so its context is SpikeGPT's characters per
    sequence / its own characters per token (``--context`` sets the same-vocabulary ones only)."""
    out = {}
    for name in job.baselines:
        cpt = chars_per_token_of(name, sample, snn_chars_per_token)[0] if name in SCALE_BASELINES else None
        if cpt:
            per = snn_chars_per_token / cpt  # its tokens per SpikeGPT token
            out[name] = (max(2, round(context * per)), per)
        else:
            out[name] = (context, 1.0)
    return out


def twin_quality(twin, tok, text: str, tokens: int) -> dict:
    """Bits per character of a model on the first ``tokens`` tokens of ``text`` (the run's own, as the variants
    section reads them)."""
    from spikegpt.evaluate import evaluate

    ids = tok.encode(text[: (tokens + 1) * (16 if tok.kind == "bpe" else 1)])[: tokens + 1]
    ev = evaluate(twin, tok, ids=ids, chunk_len=twin.config.ctx_len)
    return {"bpc": ev.nats / math.log(2) / ev.chars, "tokens": ev.tokens,
            "what": "the released weights with every LIF replaced by identity, not trained"}  # fmt: skip


SAMPLE_CHARS = 2**20  # characters of the run's text that the baselines' own tokenizers read (chars per token)


def sample_text(corpus: Corpus, chars: int, limit: int = SAMPLE_CHARS) -> str:
    """The first ``min(chars, limit)`` characters of the corpus, documents in order (what the run read first)."""
    want, out = min(chars, limit), []
    for doc in corpus.documents():
        for piece in doc.pieces():
            out.append(piece)
            want -= len(piece)
            if want <= 0:
                return "".join(out)[: min(chars, limit)]
    return "".join(out)


def relu_assumption(prof: Profile, user: float | None) -> tuple[float, str]:
    """The activation sparsity credited to the ReLU^2 transformer, and where it comes from: the user's, or
    SpikeGPT's own feed-forward activation (the input of every ffn.value: ReLU^2 in the released model)."""
    if user is not None:
        return user, "set by the user (--relu-zero-fraction)"
    lay = prof.layers[prof.layers.layer.str.endswith("ffn.value") & prof.layers.zero_fraction.notna()]
    if lay.empty:
        raise SpikeEnergyError(
            "this model has no feed-forward value projection to take a sparsity from: set --relu-zero-fraction "
            "for the ReLU^2 transformer, or leave it out of --baselines"
        )
    zf = float((lay.zero_fraction * lay.in_per_token).sum() / lay.in_per_token.sum())
    return zf, "SpikeGPT's own feed-forward activation sparsity (the input of ffn.value), measured on this text"


# ---------------------------------------------------------------------------------
# summary.json
# ---------------------------------------------------------------------------------


def _hist(rates: np.ndarray, bins: int = 20) -> dict:
    counts, edges = np.histogram(rates, bins=bins, range=(0.0, 1.0))
    return {"counts": counts.tolist(), "edges": edges.tolist()}


def environment(device: str, command_line: list[str]) -> dict:
    env = {
        "spike_energy": _version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else f"CPU ({platform.machine()})",
        "threads": torch.get_num_threads(),
        "command_line": command_line,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    from importlib.metadata import PackageNotFoundError, version

    for mod in ("fvcore", "transformers", "tokenizers", "pandas", "matplotlib", "triton"):
        try:  # the installed version, without importing the package (transformers alone takes ~2 s)
            env[mod] = version(mod)
        except PackageNotFoundError:  # optional packages may be absent (triton on CPU machines)
            env[mod] = None
    return env


def redact_paths(o):
    """summary.json for sharing: every absolute path in every string reduced to its file name (the sha256 of
    the checkpoint and the text stay)."""
    if isinstance(o, dict):
        return {k: redact_paths(v) for k, v in o.items()}
    if isinstance(o, list):
        return [redact_paths(v) for v in o]
    return without_dirs(o) if isinstance(o, str) else o


def _memory_summary(p: Profile, zero_skipping: bool) -> dict:
    """The memory scenario's traffic by term, with Lemaire et al.'s equation for each and what is left out."""
    t = p.memory(zero_skipping=zero_skipping)
    t = t.assign(term=t.stage.str.replace(r" \((SRAM|DRAM)\)", "", regex=True))
    eq = {stage: (equation, what) for stage, equation, what in TERMS}
    rows = []
    for (term, where), g in t.groupby(["term", "primitive"], sort=False):
        equation, what = eq.get(term, ("", ""))
        rows.append({"term": term, "where": {"sram": "SRAM", "dram": "DRAM", "add": "32-bit adds"}[where],
                     "equation": equation, "what": what, "amount_per_token": float(g.amount.sum()),
                     "unit": "adds" if where == "add" else "bytes", "pj_per_token": float(g.pj.sum())})  # fmt: skip
    return {
        "terms": rows,
        "left_out": [{"what": what, "why": why} for what, why in LEFT_OUT],
        "sram_budget_bytes": p.costs.sram_budget_bytes,
        "bytes_per_value": BYTES_PER_VALUE[p.precision],
        "model": "Lemaire et al., ICONIP 2022 (energy/pricing/memory.py)",
    }


def platform_choices() -> list[dict]:
    return [{"op": op, "dtype": "-", "pj": None, "unit": "", "status": "assumption", "source": src, "table": "",
             "note": note} for op, src, note in _CHOICES]  # fmt: skip


def _assumptions(r: Result, base: dict) -> list[dict]:
    """Every figure that is not a published one: cost-table assumptions, model parameters, and what the
    baselines assume, in one list (same keys as the cost table's rows, ``unit`` saying what ``pj`` holds)."""
    rows = r.costs.assumptions().to_dict("records")
    for prm in r.costs.parameters():
        rows.append({"op": prm["name"], "dtype": "-", "pj": prm["value"], "unit": prm["unit"], "status": prm["status"],
                     "source": prm["source"], "table": "", "note": prm["note"]})  # fmt: skip
    rows += platform_choices()  # issue 22: every choice of the memory model and the chip presets
    for what, note in ASYMMETRIES:  # differences between the two sides kept on purpose, named
        rows.append({"op": f"asymmetry: {what}", "dtype": "-", "pj": None, "unit": "", "status": "assumption",
                     "source": note, "table": "", "note": "both sides alike, except"})  # fmt: skip
    for name, b in base.items():
        for note in b.get("assumptions") or []:
            rows.append({"op": name, "dtype": "-", "pj": None, "unit": "", "status": "assumption", "source": note,
                         "table": "", "note": "baseline"})  # fmt: skip
    return rows


def _decode(r: Result, e_tot: dict) -> dict:
    """Decode mode: per generated token by position for the same-size transformers, against SpikeGPT and its
    twin at batch 1 (their cost per token does not depend on the position)."""
    p, job = r.profile, r.job
    flat = {"spikegpt": {s: float(p.energy(s, zero_skipping=job.zero_skipping, batch=1).pj.sum())
                         for s in ("as_executed", "as_executed_memory")}}  # fmt: skip
    twin = r.baselines.get("rwkv-twin")
    if twin is not None:
        flat["rwkv-twin"] = {s: float(twin.energy(s, r.costs, job.precision, 1, job.zero_skipping).pj.sum())
                             for s in ("as_executed", "as_executed_memory")}  # fmt: skip
    same = {n: b for n, b in r.baselines.items() if n.startswith("transformer-same-dims")}
    return decode_mode(flat, same, r.costs, job.precision, zero_skipping=job.zero_skipping)


def _twins(r: Result, base: dict, e_tot: dict, cpt: float) -> dict:
    """The stripped twin (the released weights, every LIF replaced by identity, not trained) and, when there is
    one, the trained twin (the bundled twin.pth, profiled on the same tokens): bits per character and the energy
    ratio twin / SpikeGPT per character."""
    out = {}
    st = base.get("rwkv-twin")
    if st:
        out["stripped"] = {"bpc": (r.stripped_twin or {}).get("bpc"),
                           "ratio": {s: st["energy_pj_per_token"][s] / e_tot[s] for s in ("as_executed",
                                                                                         "as_executed_memory")},
                           "what": "the released weights with every LIF replaced by identity, not trained"}  # fmt: skip
    trained = r.trained_twin or next((m for m in (r.variants or {}).get("models", []) if m.get("variant") == "twin"),
                                     None)  # fmt: skip
    if trained:
        mine = {s: e_tot[s] / cpt for s in ("as_executed", "as_executed_memory")}
        out["trained"] = {"bpc": trained["bpc"], "checkpoint": trained.get("checkpoint"),
                          "energy_pj_per_char": {s: trained["energy_pj_per_char"][s] for s in mine},
                          "ratio": {s: trained["energy_pj_per_char"][s] / mine[s] for s in mine},
                          "what": "a non-spiking RWKV trained alike on the same data"
                          + (" (--twin)" if r.trained_twin else " (bundled)")}  # fmt: skip
    return out


def _platforms(r: Result, base: dict) -> dict | None:
    """The chips section (``energy.pricing.platforms.section``), with the SANA-FE check of the Loihi preset
    (``energy.comparing.sanafe_check``) when Loihi is among the chips."""
    out = platform_section(r, base)
    if out is not None and "loihi" in resolve_platforms(r.job.platforms):
        out["sanafe"] = sanafe_check.cached_check(use_cache=r.job.cache)
    return out


def summary(r: Result, raster_layers: int = 4, raster_tokens: int = 128) -> dict:
    """Everything the report, compare and the user's own scripts need, as plain data."""
    p, cfg, job = r.profile, r.model.config, r.job
    t_start = time.perf_counter()
    ev_bits = p.meta["nats"] / math.log(2)
    energy = p.energy(zero_skipping=job.zero_skipping)
    e_tot = {s: float(energy[energy.scenario == s].pj.sum()) for s in SCENARIOS}
    chars_per_token = r.scored_chars / p.tokens
    breakdown = {
        s: {
            "by_primitive": energy[energy.scenario == s].groupby("primitive").pj.sum().to_dict(),
            "by_stage": energy[energy.scenario == s].groupby("stage").pj.sum().to_dict(),
            "by_layer": energy[energy.scenario == s].groupby("layer", sort=False).pj.sum().to_dict(),
        }
        for s in SCENARIOS
    }
    lif = p.layers[p.layers.kind == "lif"]
    hist = {name: _hist(p.neurons[p.neurons.layer == name].rate.to_numpy()) for name in lif.layer}
    chosen = list(lif.layer)
    step = max(1, len(chosen) // raster_layers)
    rasters = {name: p.rasters[name][:raster_tokens] for name in chosen[::step][:raster_layers]}
    positions = {
        name: p.positions[p.positions.layer == name].sort_values("position").rate.tolist() for name in lif.layer
    }
    relu = p.layers[p.layers.kind == "relu_sq"]
    census_df = p.census
    ops_by_layer = p.ops.groupby(["layer", "primitive"], sort=False).per_token.sum()
    layer_ops = {}
    for (layer, prim), v in ops_by_layer.items():
        layer_ops.setdefault(layer, {})[prim] = v
    t0 = time.perf_counter()
    base = {}
    for name, b in r.baselines.items():
        base[name] = b.summary(r.costs, job.precision, p.meta["batch"], job.zero_skipping)
        cpt, source = chars_per_token_of(name, r.scored_text, chars_per_token)
        base[name].update(chars_per_token=cpt, chars_per_token_source=source,
                          energy_pj_per_char={k: v / cpt for k, v in base[name]["energy_pj_per_token"].items()}
                          if cpt else None)  # fmt: skip
    if r.audit.get("int8_ann") in r.baselines:  # the quantized ANN: the same-size transformer priced at int8
        name = r.audit["int8_ann"]
        int8 = r.baselines[name].summary(r.costs, "int8", p.meta["batch"], job.zero_skipping)
        cpt = base[name]["chars_per_token"]
        base[f"{name}-int8"] = {**int8, "description": f"{name} at int8: int8 weights and activations, int32 "
                                "accumulation (energy/pricing/data/precisions.csv)", "chars_per_token": cpt,
                                "chars_per_token_source": base[name]["chars_per_token_source"],
                                "energy_pj_per_char": {k: v / cpt for k, v in int8["energy_pj_per_token"].items()}
                                if cpt else None}  # fmt: skip
    snn_ops = synaptic_ops(p.ops, job.zero_skipping) + PAPER_WKV_OPS * p.ops_per_token()["wkv_steps"]
    bpc = ev_bits / max(r.scored_chars, 1)
    ref = r.audit["reference"]
    r.timings["summary_baselines_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    decode = _decode(r, e_tot)
    context_ratios, int8 = None, None
    if ref in r.baselines:
        b = r.baselines[ref]
        curve = context_curve(b, e_tot, r.costs, job.precision, job.zero_skipping, contexts=[cfg.ctx_len, b.context],
                              batch=p.meta["batch"])  # fmt: skip
        context_ratios = {k: {s: curve["ratio"][s][i] for s in curve["ratio"]} | {"context": curve["contexts"][i]}
                          for i, k in enumerate(("ctx_len", "run"))}  # fmt: skip
        decode["prefill"] = {**context_curve(b, e_tot, r.costs, job.precision, job.zero_skipping,
                                             batch=p.meta["batch"], marks=(cfg.ctx_len,)), "comparator": ref,
                             "what": "prefill: the comparator's energy per token over sequences of each length (its "
                             "attention in closed form), against SpikeGPT's, which does not depend on it"}  # fmt: skip
        if f"{ref}-int8" in base:
            snn8 = float(p.energy("as_executed", precision="int8", zero_skipping=job.zero_skipping).pj.sum())
            int8 = {"spikegpt_pj": snn8, "comparator_pj": base[f"{ref}-int8"]["energy_pj_per_token"]["as_executed"],
                    "comparator": f"{ref}-int8"}  # fmt: skip
            base[f"{ref}-int8"]["against"] = {"spikegpt_int8_pj_per_token": snn8, "ratio": int8["comparator_pj"] / snn8,
                                             "label": "int8 against SpikeGPT at int8 (like for like)"}  # fmt: skip
    r.timings["summary_decode_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    platforms = _platforms(r, base)
    r.timings["summary_platforms_s"] = time.perf_counter() - t0
    head = headline(
        claim=r.audit["claim"], snn_ops=snn_ops, snn_energy=e_tot, snn_chars_per_token=chars_per_token,
        baselines=base, comparator=ref, twin=r.audit["twin"], scale=SCALE_BASELINES,
        layers=p.layers, model={"n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "vocab_size": cfg.vocab_size,
                                "params": r.model.num_params(), "demo": job.checkpoint is None,
                                "ctx_len": cfg.ctx_len},
        tokens_per_sequence=p.meta["tokens_per_sequence"], context_set_by_user=job.context is not None,
        zero_skipping=job.zero_skipping,
        documents=r.corpus.get("documents", 1) if r.corpus.get("run") == "documents" else 1,
        decomposition=r.audit.get("decomposition"), context_ratios=context_ratios, twins=_twins(r, base, e_tot,
        chars_per_token), int8=int8, bpc=bpc,
    )  # fmt: skip
    head["decode_sentence"] = decode_sentence(decode, ref)
    head["decode_sentences"] = decode_sentences(decode)
    text_excerpt = r.text[:600]
    out = {
        "schema_version": SCHEMA_VERSION,
        "model": {
            "n_layer": cfg.n_layer,
            "n_embd": cfg.n_embd,
            "vocab_size": cfg.vocab_size,
            "ctx_len": cfg.ctx_len,
            "config_source": r.info.config_source,
            "params": r.model.num_params(),
            "checkpoint": r.info.path,
            "sha256": r.info.sha256,
            "file_dtypes": r.info.file_dtypes,
            "binary_embedding": cfg.binary_embedding,
            "lif_tau": cfg.lif_tau,
            "lif_threshold": cfg.lif_threshold,
            "lif_reset": cfg.lif_reset,
            "demo": r.job.checkpoint is None,
            "warnings": r.info.warnings,
            "tokenizer": r.tokenizer.describe(),
        },
        "text": {
            "path": r.text_path,
            "sha256": r.text_sha256 or hashlib.sha256(r.text.encode("utf-8")).hexdigest(),  # of the text read
            "chars": r.text_chars or len(r.text),
            "excerpt": text_excerpt,
            "demo": r.job.text is None,
        },
        "tokens": p.tokens,
        "batch": p.meta["batch"],
        "tokens_per_sequence": p.meta["tokens_per_sequence"],
        "mode": p.meta["mode"],
        "dtype": p.meta["dtype"],
        "precision": r.job.precision,
        "unit": r.tokenizer.unit,
        "bits_per_token": ev_bits / p.tokens,
        "bpc": bpc,  # bits per character (per byte for a byte vocab)
        "ppl": math.exp(p.meta["nats"] / p.tokens) if r.tokenizer.kind == "bpe" else None,
        "firing_rate": p.firing_rates,
        "ops_per_token": p.ops_per_token(),
        "ops_per_token_by_layer": layer_ops,
        "setup_ops_per_call": p.setup.groupby(["stage", "primitive"])["count"].sum().reset_index().to_dict("records")
        if not p.setup.empty
        else [],
        "energy_pj_per_token": e_tot,
        "energy_pj_per_sequence": {k: v * p.meta["tokens_per_sequence"] for k, v in e_tot.items()},
        "energy_breakdown": breakdown,
        "scenarios": {s: SCENARIO_LABELS[s] for s in SCENARIOS},
        "headline": head,
        "operations_per_token": {
            "spikegpt": snn_ops,
            "definition": "MACs + ACs of every projection and attention "
            f"product (effective MACs when zeros are skipped), plus {PAPER_WKV_OPS} per WKV "
            "channel step, as the paper counts operations",
        },
        "chars_per_token": chars_per_token,
        "energy_pj_per_char": {k: v / chars_per_token for k, v in e_tot.items()},
        "decode": decode,
        "variants": r.variants,
        "zero_skipping": job.zero_skipping,
        "precision_preset": r.costs.preset(job.precision),
        "parameters": r.costs.parameters(),
        "baselines": base,
        "baseline_descriptions": {k: DESCRIPTIONS.get(k, v["description"]) for k, v in base.items()},
        "audit": r.audit,
        "uncounted_ops": p.uncounted().to_dict("records"),
        "census": {
            "tokens": p.meta["census_tokens"],
            "note": p.meta["census_note"],
            "aten_calls": int(census_df.calls.sum()),
            "by_status": census_df.groupby("status").calls.sum().to_dict(),
            "modules_without_rule": p.meta["modules_without_rule"],
        },
        "memory": _memory_summary(p, job.zero_skipping),
        "platforms": platforms,
        "assumptions": _assumptions(r, base),
        "costs": {"path": r.costs.path, "table": r.costs.df.to_dict("records")},
        "layers": [
            {**row, "block": None if row["block"] != row["block"] else int(row["block"])}
            for row in p.layers.to_dict("records")
        ],
        "neurons": {
            "histograms": hist,
            "saturated_rate": p.meta["saturated_rate"],
            "dead_fraction": dict(zip(lif.layer, lif.dead_fraction)),
            "saturated_fraction": dict(zip(lif.layer, lif.saturated_fraction)),
        },
        "raster": rasters,
        "firing_rate_by_position": positions,
        "relu_sq_zero_fraction": dict(zip(relu.layer, relu.relu_sq_zero_fraction)),
        "timings_s": {**r.timings, "profile_pass_s": p.meta["wall_time_s"], "summary_s": time.perf_counter() - t_start},
        "environment": environment(r.job.device, r.job.command_line or sys.argv),
    }
    out.update(corpus_summary(r))
    out = json_safe(out)
    return redact_paths(out) if job.redact_paths else out


def corpus_summary(r: Result, max_documents: int = 1000) -> dict:
    """``corpus``, ``uncertainty`` and ``documents`` (the first ``max_documents``; all in documents.csv)."""
    docs = r.documents.head(max_documents).to_dict("records") if r.documents is not None else []
    return {"corpus": r.corpus, "uncertainty": r.uncertainty, "documents": docs}
