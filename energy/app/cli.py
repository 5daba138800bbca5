"""``spike-energy``: profile, audit, train, bench, compare, eval.

Each subcommand makes one library call. Results go to files and stdout; errors go to
stderr as one line naming the problem and the fix, with exit code 2 for bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import NoReturn

from spikegpt.errors import SpikeEnergyError
from spikegpt.safeio import (
    atomic_write_text,
    check_output_dir,
    check_output_file,
    json_safe,
    load_json,
    one_line,
    shown_path,
    strict_dumps,
)

logger = logging.getLogger("spike-energy")

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
MAX_BENCH_BYTES = 16 * 2**20  # a bench JSON is a few KB


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every ``finally`` cleans up."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and text")
    g.add_argument("--checkpoint", help="SpikeGPT .pth or .safetensors (default: the bundled demo model)")
    g.add_argument(
        "--tokenizer", help="tokenizer.json (BPE) or char vocabulary JSON (default: found next to the checkpoint)"
    )
    g.add_argument(
        "--text",
        help="UTF-8 text to run on: a file, a directory of *.txt files, a glob, a .jsonl file "
        '({"text", "source", "domain"} per line) or - for stdin (default: the bundled sample)',
    )
    g.add_argument(
        "--tokens", type=int, default=2048, help="--concat runs: tokens per sequence to profile (default 2048)"
    )
    g.add_argument("--batch", type=int, default=1, help="--concat runs: sequences run side by side (default 1)")
    g.add_argument("--max-tokens", type=int, help="document runs: stop after this many scored tokens (corpus order)")
    g.add_argument("--concat", action="store_true",
                   help="one sequence of the first --tokens x --batch tokens of the text, as for a single file "
                        "(default for one text file without --max-tokens); otherwise each document runs on its "
                        "own, with the state reset")  # fmt: skip
    g.add_argument("--mode", choices=["parallel", "streaming"], default="parallel",
                   help="parallel: whole chunks (default); streaming: one token at a time with an explicit state "
                        "(same counts)")  # fmt: skip
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    g.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="memory budget, e.g. 16G (default 16G): sizes a checkpoint, a sidecar or an option declare are "
                        "checked against it before anything is allocated")  # fmt: skip
    g.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"],
                   help="arithmetic of the run itself (default float32)")  # fmt: skip
    g.add_argument("--binary-embedding", choices=["on", "off"], help="override the checkpoint's default")
    g.add_argument("--lif-threshold", type=float, help="LIF firing threshold (default 1; BookCorpus may need 0.1)")
    g.add_argument("--lif-tau", type=float, help="LIF time constant (default 2)")
    g.add_argument("--unknown-chars", default="error",
                   help="characters missing from a char vocabulary: error (default), skip, or X=Y mappings "
                        "separated by commas ('*=Y' maps all)")  # fmt: skip
    e = p.add_argument_group("energy")
    e.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32", help="cost preset for all models")
    e.add_argument("--costs", help="your own cost table CSV (columns op,dtype,pj,status,source,table,note)")
    e.add_argument("--baselines", default=",".join(_default_baselines()),
                   help="comma-separated transformer baselines or 'none' (the RWKV twin is always in)")  # fmt: skip
    e.add_argument("--context", type=int,
                   help="sequence length of the transformer baselines (default: SpikeGPT's tokens per sequence, "
                        "so that both see the same sequences)")  # fmt: skip
    e.add_argument(
        "--zero-skipping",
        choices=["on", "off"],
        default="on",
        help="skip MACs whose input is zero, for SpikeGPT and every baseline alike (default on)",
    )
    e.add_argument("--twin", dest="twin_checkpoint", metavar="PATH",
                   help="a trained non-spiking twin (no LIF; e.g. spikegpt/demo/twin.pth) run on the same tokens: "
                        "the headline compares against it (default: the bundled one with the demo)")  # fmt: skip
    e.add_argument("--relu-zero-fraction", type=float, metavar="F",
                   help="activation sparsity credited to the ReLU^2 transformer (default: SpikeGPT's own "
                        "feed-forward sparsity, measured)")  # fmt: skip
    e.add_argument("--sram-budget-mb", type=float, metavar="MB",
                   help="on-chip SRAM for weights and K/V caches in the memory scenario (default 24 MiB, the TPU "
                        "v1 Unified Buffer; energy/pricing/data/parameters.csv)")  # fmt: skip
    e.add_argument("--memory-model", choices=("horowitz-log", "lemaire-linear"), default="horowitz-log",
                   help="SRAM access energy: horowitz-log (per byte, Horowitz's points in log2 size; default) or "
                        "lemaire-linear (Lemaire et al.'s own fit, 1.09e-5 pJ/bit x size + 13.2 pJ per access); the "
                        "chips section shows both")  # fmt: skip
    e.add_argument(
        "--census-tokens",
        type=int,
        default=1,
        help="tokens for the coverage census (slow; default 1: every arithmetic op runs at one token)",
    )
    e.add_argument("--platform", action="append", metavar="NAME",
                   help="price on a chip preset (loihi, loihi2, truenorth, spinnaker, spinnaker2, tianjic, h100, "
                        "horowitz) or a platform CSV; repeatable; 'all' (default) or 'none'")  # fmt: skip
    e.add_argument(
        "--node",
        action="append",
        metavar="NM",
        help="process node of the digital reference: 45, 28, 16, 7, 5 (nm); repeatable; 'all' (default)",
    )
    e.add_argument("--no-cache", action="store_true",
                   help="rebuild the transformer baselines (and the bundled comparison models' profiles and the "
                        "report's figures) instead of reading (and writing) the on-disk cache in the user cache "
                        "directory")  # fmt: skip


def _run_options(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("long and distributed runs")
    r.add_argument("--workers", type=int, default=1,
                   help="processes on this machine (starts torchrun --standalone --nproc_per_node N; one thread "
                        "each); across hosts, start torchrun yourself (see the README)")  # fmt: skip
    r.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help="every N tokens (corpus order) write the merged partial state to <out>.partial/",
    )
    r.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from <out>.partial/ (same options); the result is the same "
                        "as an uninterrupted run")  # fmt: skip


def _default_baselines():
    from energy.comparing.baseline_names import BASELINE_NAMES  # no torch import on the --help path

    return BASELINE_NAMES


def _bench_presets() -> str:
    from spikegpt.config import PRESETS

    listed = "; ".join(f"{n}: {c.n_layer} x {c.n_embd}, vocab {c.vocab_size}" for n, c in PRESETS.items())
    return (f"model configuration, random weights: {listed}; auto (default): {BENCH_DEFAULTS['cuda']['preset']} on "
            f"a GPU, {BENCH_DEFAULTS['cpu']['preset']} on CPU")  # fmt: skip


# What `spike-energy bench` runs when an option is not given: the 216M at full size on a GPU; on
# CPU a configuration that finishes in well under a minute (the 216M takes many minutes there).
BENCH_DEFAULTS = {
    "cuda": dict(preset="216m", batch=8, tokens=1024, modes="eager,fused,compiled", decode_batches="1,64", repeats=5),
    "cpu": dict(preset="46m-enwik8", batch=1, tokens=128, modes="eager", decode_batches="1", repeats=3),
}


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spike-energy",
        description="Measure what a spiking language model (SpikeGPT) computes and what it would cost in energy.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error")
    # the same two flags after the command name (SUPPRESS: they do not override the ones given before it)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log progress details to stderr")  # fmt: skip
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an unexpected error")  # fmt: skip
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    prof = sub.add_parser("profile", parents=[common],
                          help="measure a checkpoint on text; write report.html, summary.json, CSVs")  # fmt: skip
    _model_options(prof)
    prof.add_argument("--model", metavar="PKG.MODULE:FACTORY",
                      help="profile any model: a factory returning {'model', 'inputs'} "
                      "(energy.app.model_cli)")  # fmt: skip
    prof.add_argument("--out", default="spike-energy-report", help="output directory (default spike-energy-report/)")
    prof.add_argument("--bench", help="a bench JSON (spike-energy bench --out) to show in the report")
    prof.add_argument(
        "--redact-paths",
        action="store_true",
        help="leave local paths out of summary.json (file names and sha256 stay), for sharing",
    )
    _run_options(prof)

    aud = sub.add_parser(
        "audit", parents=[common],
        help="the audit of the 32.2x claim: waterfall, break-even, sensitivity",
        description="Print the audit of the 32.2x claim (waterfall, break-even and sensitivity tables). Given a "
        "summary.json, read it (seconds); without one, profile as `spike-energy profile` does and write audit.json "
        "into --out.",
    )  # fmt: skip
    aud.add_argument("summary", nargs="?", help="a summary.json (or its directory) from spike-energy profile: "
                     "print its audit without profiling again")  # fmt: skip
    _model_options(aud)
    aud.add_argument("--out", default="spike-energy-report",
                     help="output directory for audit.json when profiling (default spike-energy-report/)")  # fmt: skip
    aud.add_argument("--json", help="where to write the audit (default: OUT/audit.json when profiling; "
                     "nothing when reading a summary)")  # fmt: skip
    _run_options(aud)

    ev = sub.add_parser("eval", parents=[common],
                        help="bits per character / token and perplexity of a checkpoint on a text")  # fmt: skip
    ev.add_argument("--checkpoint", help="SpikeGPT .pth or .safetensors (default: the bundled demo model)")
    ev.add_argument("--tokenizer", help="tokenizer.json (BPE) or char vocabulary JSON (default: found next to the "
                    "checkpoint)")  # fmt: skip
    ev.add_argument("--text", help="UTF-8 text to score, or - for standard input (default: the bundled held-out "
                    "sample)")  # fmt: skip
    ev.add_argument("--tokens", type=int, help="score only the first N tokens (default: the whole text)")
    ev.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    ev.add_argument("--kernels", choices=["auto", "eager", "fused"], default="auto",
                    help="fused Triton kernels (default on CUDA with Triton) or eager modules")  # fmt: skip
    ev.add_argument("--unknown-chars", default="error",
                    help="characters missing from a char vocabulary: error (default), skip, or X=Y "
                         "mappings")  # fmt: skip
    ev.add_argument("--max-memory", default=None, metavar="SIZE", help="memory budget, e.g. 16G (default 16G)")
    ev.add_argument("--json", help="also write the result as JSON to this file")

    tr = sub.add_parser("train", parents=[common],
                        help="train a small SpikeGPT on text (checkpoint in the reference key format)")  # fmt: skip
    from spikegpt.train_settings import add_arguments

    add_arguments(tr)
    tr.add_argument("--max-memory", default=None, metavar="SIZE", help="memory budget, e.g. 16G (default 16G)")

    be = sub.add_parser(
        "bench", parents=[common],
        help="timing: eager vs fused vs torch.compile, decode speed, matmul floor (GPU, or a small CPU default)",
        description="Time a random SpikeGPT: parallel forward per mode, streaming decode, the matmuls alone. On a "
        "GPU the defaults time the 216M; without one, a smaller configuration that finishes in under a minute.",
    )  # fmt: skip
    be.add_argument("--preset", default="auto", help=_bench_presets())
    be.add_argument("--batch", type=int, help="sequences per forward (default 8 on GPU, 1 on CPU)")
    be.add_argument("--tokens", type=int, help="tokens per sequence (default 1024 on GPU, 128 on CPU)")
    be.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    be.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="arithmetic (default float32)")  # fmt: skip
    be.add_argument("--modes", help="forward modes to time: eager, fused, compiled (default all three on GPU, "
                    "eager on CPU)")  # fmt: skip
    be.add_argument("--decode-batches", help="batch sizes of the streaming decode (default 1,64 on GPU, 1 on CPU)")
    be.add_argument("--repeats", type=int, help="timed repeats per item, the median is reported (default 5 / 3)")
    be.add_argument("--out", default="bench.json", help="where to write the results (default bench.json)")

    pa = sub.add_parser(
        "pareto", parents=[common],
        help="several checkpoints on the same text: bits per character against energy per character",
        description="Profile several checkpoints on the same tokens of one text and set their quality (bits per "
        "character) against their energy per character in each scenario: a table, pareto.json and a figure. "
        "Without --checkpoint: the three bundled models (released, twin, spike-input).",
    )  # fmt: skip
    pa.add_argument(
        "--checkpoint",
        action="append",
        metavar="FILE",
        help="a checkpoint to compare (repeat for each; default: the bundled demo, twin and spike-input)",
    )
    pa.add_argument("--text", help="UTF-8 text, the same for every model (default: the bundled held-out sample)")
    pa.add_argument("--tokens", type=int, default=2048, help="tokens of the text to run each model on (default 2048)")
    pa.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32", help="cost preset (default fp32)")
    pa.add_argument("--costs", help="your own cost table CSV")
    pa.add_argument("--zero-skipping", choices=["on", "off"], default="on", help="skip MACs with a zero input (on)")
    pa.add_argument(
        "--platform",
        action="append",
        metavar="NAME",
        help="chip presets for the best-platform column ('all' default, 'none')",
    )
    pa.add_argument("--out", default="spike-energy-pareto", help="output directory (default spike-energy-pareto/)")
    pa.add_argument("--no-cache", action="store_true",
                    help="profile every checkpoint again instead of reading (and writing) the on-disk profile cache "
                         "(keyed by each checkpoint's SHA-256, the token ids and the profiling code)")  # fmt: skip
    cmp_ = sub.add_parser("compare", parents=[common], help="two runs side by side (summary.json files)")
    cmp_.add_argument("a", help="first summary.json")
    cmp_.add_argument("b", help="second summary.json")
    return p


def _parse_unknown(spec: str):
    if spec in ("error", "skip"):
        return spec
    mapping = {}
    for part in spec.split(","):
        if "=" not in part or len(part.split("=", 1)[0]) != 1 or len(part.split("=", 1)[1]) != 1:
            raise SpikeEnergyError(f"--unknown-chars: {part!r} is not X=Y with single characters (e.g. 'é=e,*= ')")
        k, v = part.split("=", 1)
        mapping[k] = v
    return mapping


def _max_memory(a) -> int | None:
    from spikegpt.limits import parse_size

    return None if a.max_memory is None else parse_size(a.max_memory)


def _job(a: argparse.Namespace):
    from energy.app.pipeline import Job
    from spikegpt.limits import check_device

    check_device(a.device)

    baselines = () if a.baselines.strip().lower() == "none" else tuple(b.strip() for b in a.baselines.split(",") if b)
    from energy.comparing.baselines import BASELINE_NAMES

    unknown = [b for b in baselines if b not in BASELINE_NAMES]
    if unknown:
        raise SpikeEnergyError(f"--baselines: unknown {unknown}; choose from {', '.join(BASELINE_NAMES)} or none")
    if a.relu_zero_fraction is not None and not 0 <= a.relu_zero_fraction < 1:
        raise SpikeEnergyError(f"--relu-zero-fraction must be in [0, 1), got {a.relu_zero_fraction}")
    if a.sram_budget_mb is not None and not (0 <= a.sram_budget_mb < 1e9):
        raise SpikeEnergyError(f"--sram-budget-mb must be a size in MiB >= 0, got {a.sram_budget_mb}")
    if a.context is not None and a.context < 1:
        raise SpikeEnergyError("--context must be a positive integer")
    for name in ("tokens", "batch", "census_tokens", "max_tokens", "checkpoint_every", "workers"):
        if getattr(a, name, None) is not None and getattr(a, name) < 1:
            raise SpikeEnergyError(f"--{name.replace('_', '-')} must be a positive integer")
    from energy.pricing.platforms import resolve_nodes, resolve_platforms

    platforms = resolve_platforms(a.platform or ("all",))
    nodes = resolve_nodes(a.node or ("all",))
    if a.node:
        _check_node_applies(a.node, platforms)
    return Job(
        checkpoint=a.checkpoint,
        tokenizer=a.tokenizer,
        text=a.text,
        tokens=a.tokens,
        batch=a.batch,
        mode=a.mode,
        device=a.device,
        dtype=a.dtype,
        precision=a.precision,
        costs=a.costs,
        binary_embedding=None if a.binary_embedding is None else a.binary_embedding == "on",
        lif_threshold=a.lif_threshold,
        lif_tau=a.lif_tau,
        unknown_chars=_parse_unknown(a.unknown_chars),
        census_tokens=a.census_tokens,
        baselines=baselines,
        context=a.context,
        zero_skipping=a.zero_skipping == "on",
        relu_zero_fraction=a.relu_zero_fraction,
        twin_checkpoint=getattr(a, "twin_checkpoint", None),
        sram_budget_mb=a.sram_budget_mb,
        memory_model=a.memory_model,
        redact_paths=getattr(a, "redact_paths", False),
        platforms=platforms or ("none",),
        nodes=nodes,
        command_line=["spike-energy", *sys.argv[1:]],
        max_memory=_max_memory(a),
        cache=not a.no_cache,
        max_tokens=a.max_tokens,
        concat=True if a.concat else None,
        checkpoint_every=getattr(a, "checkpoint_every", None),
        resume=getattr(a, "resume", False),
    )


class _Bars:
    """Rich progress bars on stderr, drawn from the first stage on (never an empty bar: a run that fails
    before its first stage prints nothing but its error line).

    ``cb(name, done, total, what=None, unit=None, tokens=None)``: ``what`` names the item being worked on
    (the baseline being counted); ``unit`` "bytes" counts a corpus by the bytes read (its total is known
    from the file sizes, so it never moves), with ``tokens`` the tokens scored so far (for tok/s)."""

    def __init__(self):
        self.bar = None
        self.tasks: dict[str, int] = {}

    def _make(self):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Count(ProgressColumn):
            def render(self, task):
                if task.fields.get("unit") == "bytes":  # both in the unit that suits the total
                    total = task.total or 0
                    unit, scale = next((u, f) for u, f in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10), ("B", 1))
                                       if total >= 10 * f or f == 1)  # fmt: skip
                    digits = ",.0f" if scale == 1 else ",.1f"
                    return Text(f"{task.completed / scale:{digits}}/{total / scale:{digits}} {unit}")
                total = "?" if task.total is None else f"{int(task.total):,}"
                return Text(f"{int(task.completed):,}/{total}")

        class Speed(ProgressColumn):
            def render(self, task):
                tokens = task.fields.get("tokens")
                if tokens is not None and task.elapsed:
                    return Text(f"{tokens / task.elapsed:,.0f} tok/s")
                if task.description.strip() != "profile" or not task.speed:
                    return Text("")
                return Text(f"{task.speed:,.0f} tok/s")

        class Remaining(TimeRemainingColumn):
            """rich's estimate where the steps are alike (tokens, bytes, models of one size); unknown (-:--:--)
            for a stage of uneven steps, whose average step says nothing about the next."""

            def render(self, task):
                if not task.fields.get("eta", True) and not task.finished:
                    return Text("-:--:--", style="progress.remaining")
                return super().render(task)

        return Progress(
            TextColumn("{task.description:>10}"), BarColumn(bar_width=30), Count(), Speed(), TimeElapsedColumn(),
            TextColumn("ETA"), Remaining(), TextColumn("{task.fields[what]}"),
            console=Console(stderr=True), transient=False,
        )  # fmt: skip

    early = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self._end_early()
        if self.bar is not None:
            if exc_type is not None:  # a failed or interrupted run: its error line stands alone
                _erase(self.bar)
            else:
                self.bar.stop()
        return False

    def start(self, what: str) -> None:
        """A first line at once, while the command imports its libraries and checks its options (seconds); it
        is erased by the first stage's bar, or by an error (which then stands alone)."""
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.early = Progress(TextColumn("{task.description:>10}"), SpinnerColumn(), TimeElapsedColumn(),
                              TextColumn(what), console=Console(stderr=True), transient=True)  # fmt: skip
        self.early.add_task("start", total=None)
        self.early.start()

    def _end_early(self):
        if self.early is not None:
            _erase(self.early)
            self.early = None

    def cb(self, name, done, total, what=None, unit=None, tokens=None, eta=True):
        self._end_early()
        if self.bar is None:
            self.bar = self._make()
            self.bar.start()
        fields = {"what": what or "", "unit": unit, "eta": eta}
        if tokens is not None:
            fields["tokens"] = tokens
        if name not in self.tasks:
            self.tasks[name] = self.bar.add_task(name, total=total, **fields)
        self.bar.update(self.tasks[name], completed=done, total=total, **fields)


def _check_node_applies(node: list, platforms: tuple) -> None:
    """``--node`` sets the process node of the digital platforms (``horowitz``, digital platform files); refuse
    it, with the reason, when none of the chosen platforms is digital (it would change nothing)."""
    from energy.pricing.platforms import load_platform

    if any(load_platform(p).kind == "digital" for p in platforms):
        return
    chosen = ", ".join(platforms) if platforms else "none"
    raise SpikeEnergyError(f"--node {' '.join(map(str, node))} prices the digital reference (horowitz) at that "
                           f"node, but --platform {chosen} includes no digital platform (a chip's fallback runs at "
                           "the chip's own node); add --platform horowitz, or drop --node")  # fmt: skip


def _erase(progress) -> None:
    """Stop rich bars leaving nothing behind: erased on a terminal; elsewhere (a log, a pipe), where rich would
    print their last state or an empty line at stop, nothing is printed."""
    import io

    progress.live.transient = True
    if not progress.console.is_terminal:
        progress.console.file = io.StringIO()
    progress.stop()


def _progress():
    """(context manager, callback): progress bars on stderr, started by the first callback."""
    bars = _Bars()
    return bars, bars.cb


def _blocked_signals():
    """Hold SIGINT and SIGTERM while a finished report is moved into place (milliseconds):
    an interruption then comes after the move, never half-way through it."""
    import contextlib

    @contextlib.contextmanager
    def held():
        sigs = {signal.SIGINT, signal.SIGTERM}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    return held()


def _load_bench(path):
    """A ``spike-energy bench --out`` file, validated whole (every nested level) against ``reports.schema``."""
    from reports.schema import BenchFile
    from spikegpt.safeio import validate

    fix = "pass a file written by spike-energy bench --out"
    d = load_json(path, "--bench", None, MAX_BENCH_BYTES, fix=fix)
    validate(d, BenchFile, f"--bench {shown_path(path)}", fix=fix)
    return d


def _partial_dir(out: Path) -> Path:
    """Where a long run keeps its partial state: next to the report folder, never inside it."""
    return out.with_name(out.name + ".partial")


def _launch_workers(n: int, argv: list[str]) -> int:
    """``--workers N``: the same command under ``torchrun --standalone --nproc_per_node N``."""
    import signal
    import subprocess

    rest, skip = [], False
    for x in argv:
        if skip:
            skip = False
        elif x == "--workers":
            skip = True
        elif not x.startswith("--workers="):
            rest.append(x)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "energy.cli", *rest]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    logger.info("starting %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except BaseException:  # interrupted: torchrun passes SIGTERM on to the workers, which flush their state
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        raise


def _distributed_checks(a) -> None:

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if (world > 1 or a.workers > 1) and a.text == "-":
        raise SpikeEnergyError("--text - (stdin) cannot be shared by several processes; save it to a file")


def cmd_profile(a) -> int:
    if getattr(a, "model", None):
        from energy.app import model_cli

        return model_cli.run(a)

    _distributed_checks(a)
    if a.workers > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_workers(a.workers, a.argv)
    bar, cb = _progress()
    helper = None
    try:
        with bar:
            if int(os.environ.get("RANK", "0") or 0) == 0:
                bar.start("importing torch and pandas, checking the options")
            t_imports = time.perf_counter()
            from energy.app import pipeline
            from reports.html import figure_helper

            t_imports = time.perf_counter() - t_imports
            job = _job(a)
            out = check_output_dir(a.out, "--out")  # before the long run, not after it
            job.checkpoint_dir = str(_partial_dir(out))
            bench = _load_bench(a.bench) if a.bench else None
            result = _run_with_partial(pipeline.run, job, cb)
            if result is None:  # another rank of a torchrun job: rank 0 writes the report
                return 0
            cb("report", 0, 3, "summary.json", eta=False)
            helper = figure_helper()  # loads matplotlib beside this process while the summary is made
            summary = pipeline.summary(result)
            summary["timings_s"]["imports_s"] = t_imports
            if bench is not None:
                summary["bench"] = bench
            _write_profile(out, summary, result, helper, cb)
            cb("report", 3, 3, eta=False)
    finally:
        if helper is not None:
            helper.shutdown(cancel_futures=True)
    shutil.rmtree(_partial_dir(out), ignore_errors=True)  # the report is complete: the partial state is spent
    _print_summary(summary)
    _print_platforms(summary.get("platforms"))
    print(f"report: {out / 'report.html'}")
    return 0


def _write_profile(out: Path, summary: dict, result, helper, cb=None) -> None:
    """summary.json, the CSVs and the report into ``out``, all or nothing."""
    from reports.html import write_report

    # write everything into a temporary folder first: a failed or interrupted run leaves neither a report that
    # looks complete nor the temporary folder
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".spike-energy-", dir=out.parent))
    try:
        timings = summary.get("timings_s")
        t0 = time.perf_counter()
        if cb:
            cb("report", 1, 3, "CSV files", eta=False)
        result.profile.to_csv(tmp)  # layers, ops, neurons, census, energy
        if result.documents is not None:
            from spikegpt.safeio import write_csv

            write_csv(result.documents, tmp / "documents.csv")
        csv_s = time.perf_counter() - t0
        if cb:
            cb("report", 2, 3, "figures and report.html", eta=False)
        t0 = time.perf_counter()
        figures = None
        if getattr(result.job, "cache", True):  # figures kept from earlier runs (reports.figure_cache)
            from energy.comparing.cache import cache_dir

            figures = cache_dir().parent / "figures"
        write_report(summary, tmp / "report.html", helper=helper, figure_cache=figures)
        if isinstance(timings, dict):  # written last, so that it holds the writing's own times
            timings.update(write_csv_s=csv_s, write_report_s=time.perf_counter() - t0)
        (tmp / "summary.json").write_text(strict_dumps(summary, indent=1))
        with _blocked_signals():
            out.mkdir(exist_ok=True)
            for f in tmp.iterdir():
                os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _print_platforms(p: dict | None) -> None:
    """SpikeGPT per token on each platform, as executed + memory (SRAM) and in the counterfactual (+ memory),
    with the native fractions and the chips the 216M's int8 weights need; 80 columns."""
    if not p:
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"SpikeGPT as executed + memory (SRAM) on real chips ({p['precision']}): energy per token "
              "(native share)", box=box.SIMPLE_HEAD,
              title_justify="left", caption="both columns include the memory traffic (SRAM), as the chips price it",
              caption_justify="left")  # fmt: skip
    for col in ("platform", "node", "as executed + memory (SRAM)", "spike-input counterfactual + memory (SRAM)",
                "chips, 216M int8"):  # fmt: skip
        t.add_column(col, justify="left" if col == "platform" else "right", min_width=8 if "memory" in col else None)
    chips = {c["platform"]: c["chips"] for c in p["capacity"] if c["model"] == "216m" and c["precision"] == "int8"}

    def cell(r):
        if r is None or r.get("pj_per_token") is None:
            return "not published"
        frac = r.get("native_fraction")
        return _energy(r["pj_per_token"]) + (f" ({frac:.1%})" if frac is not None else "")

    for name in p["presets"]:
        res = [r for r in p["results"] if r["platform"] == name]
        for node in dict.fromkeys(r.get("node_nm") for r in res):
            by = {r["workload"]: r for r in res if r.get("node_nm") == node}
            t.add_row(name, "-" if node is None else f"{node:g} nm", cell(by.get("spikegpt")),
                      cell(by.get("spikegpt-counterfactual")), str(chips.get(name) or "-"))  # fmt: skip
    Console(width=80).print(t)


def _si(x) -> str:
    """A count with an SI prefix ('1.23 M'), as the report writes it."""
    from reports.html import si

    return si(x)


def _energy(pj) -> str:
    """Picojoules as joules with an SI prefix, as the report writes them ('63.3 µJ')."""
    from reports.html import energy

    return energy(pj)


def _num(x, spec: str, na: str = "n/a") -> str:
    """A number formatted with ``spec``, or ``na`` for None / NaN / inf (NaN weights give them)."""
    from reports.schema import finite

    v = finite(x)
    return na if v is None else format(v, spec)


def _partial_files(d: Path | None) -> dict:
    if d is None or not d.is_dir():
        return {}
    out = {}
    for f in d.glob("*.npz"):
        with contextlib.suppress(OSError):
            st = f.stat()
            out[f.name] = (st.st_mtime_ns, st.st_size)
    return out


def _run_with_partial(run, job, cb):
    """``run(job, progress=cb)``. If it stops early having written partial state (``<out>.partial/``) in this
    run, the exception carries where it is (``spike_energy_partial``), for the one line ``main`` prints; files
    left by an earlier run are not this run's news. An error before any work writes nothing."""
    d = Path(job.checkpoint_dir) if job.checkpoint_dir else None
    before = _partial_files(d)
    try:
        return run(job, progress=cb)
    except BaseException as e:
        after = _partial_files(d)
        if after and after != before:
            with contextlib.suppress(AttributeError, TypeError):
                e.spike_energy_partial = str(d)
        raise


def _partial_note(e: BaseException, interrupted: bool) -> str:
    """What the line about a stopped run adds when it kept partial state: where, and whether --resume helps."""
    d = getattr(e, "spike_energy_partial", None)
    if not d:
        return ""
    n = getattr(e, "partial_documents", None)
    if n == 1:
        what = "the 1 document done so far is"
    else:
        what = f"the {n:,} documents done so far are" if n else "the partial state is"
    if interrupted:
        return f"; {what} kept in {shown_path(d)}: rerun the same command with --resume to continue"
    from spikegpt.errors import TextError, TokenizerError

    if isinstance(e, (TextError, TokenizerError)):  # the same documents would fail again until the text is fixed
        return (f" ({what} kept in {shown_path(d)}: fix the text, then rerun the same command with --resume "
                "to skip them)")  # fmt: skip
    return f" ({what} kept in {shown_path(d)}: once the cause is fixed, rerun with --resume to skip them)"


def _print_summary(s: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from energy.pricing.estimate import SCENARIO_LABELS

    c = Console()
    m = s["model"]
    bits = s["bpc"] if s["unit"] != "token" else s["bits_per_token"]
    unc = s.get("uncertainty") or {}
    c.print(
        f"[bold]SpikeGPT[/] {m['n_layer']} x {m['n_embd']}, vocab {m['vocab_size']}, "
        f"{_num(m['params'] / 1e6, '.2f')}M params{' (bundled demo)' if m['demo'] else ''}; "
        f"{s['tokens']} tokens scored; {'BPC' if s['unit'] != 'token' else 'bits/token'} {_num(bits, '.3f')}; "
        f"firing rate {_num(s['firing_rate'].get('overall'), '.3f')}{_ci(unc.get('firing_rate'))}"
    )
    corpus = s.get("corpus") or {}
    if corpus.get("run") == "documents":
        c.print(f"{corpus['documents']} documents of {corpus['spec']}; "
                f"{(s.get('uncertainty') or {}).get('method', '')}")  # fmt: skip
        groups = corpus.get("groups") or {}
        for g in groups.get("rows") or []:
            fr = g["firing_rate"]["overall"]
            c.print(f"  {groups['by']} {g['group']}: {g['documents']} documents, {g['tokens']} tokens, firing rate "
                    f"{fr['value']:.3f}{_ci({'overall': fr})}, bits/{s['unit']} "
                    f"{g['bpc']['value']:.3f}{_ci({'overall': g['bpc']})}")  # fmt: skip
    for w in m.get("warnings") or []:
        c.print(f"[yellow]warning: {escape(one_line(w, 300))}[/]")
    from reports.html import same_per_char

    one = same_per_char(s)  # a character model: per character is per token, shown once
    t = Table(title=f"energy ({s['precision']}, 45 nm)" + (", pJ/token = pJ/character: a token is one character" if one
                                                            else ""))  # fmt: skip
    t.add_column("scenario")
    t.add_column("pJ/token", justify="right")
    if not one:
        t.add_column("pJ/character", justify="right")
    per_char = s.get("energy_pj_per_char") or {}
    for name, pj in s["energy_pj_per_token"].items():
        cells = [_num(pj, ",.0f")] + ([] if one else [_num(per_char.get(name), ",.0f")])
        t.add_row(SCENARIO_LABELS.get(name, name), *cells)
    c.print(t)
    h = s["headline"]
    for line in (h.get("verdict") or {}).get("sentences") or [h.get("sentence")] if h.get("sentence") else []:
        c.print(escape(line))  # the verdict's generated sentences, as the report's box and the notebook show them
    if h.get("decode_sentence"):
        c.print(escape(h["decode_sentence"]))
    from reports.labels import model_name

    int8 = (h.get("int8") or {}).get("comparator")
    stripped_bpc = ((h.get("twins") or {}).get("stripped") or {}).get("bpc")
    ratios = ", ".join(
        f"{model_name(k, short=True)}"
        + (f" ({stripped_bpc:.2f} bits/char)" if k == "rwkv-twin" and stripped_bpc is not None else "")
        + f" {_num(v, '.2f')}x"
        + (" (int8 against fp32 SpikeGPT: cross-precision)" if k == int8 else "")
        for k, v in (h.get("ratio_as_executed") or {}).items()
    )
    # the paper's figure is in another metric (energy-weighted operations): named, not set beside these as a peer
    c.print(f"energy per character in pJ, baseline / SpikeGPT, as executed (no memory traffic): {ratios}; the "
            f"paper's {h['claim']}x is in energy-weighted operations, compared in the verdict above")  # fmt: skip
    if s["uncounted_ops"]:
        c.print(f"[yellow]{len(s['uncounted_ops'])} aten ops are not counted; see the report[/]")


def _ci(d) -> str:
    """`` [lo, hi]`` of an interval (the overall rate), or nothing."""
    iv = (d or {}).get("overall") or {}
    if iv.get("lo") is None or iv.get("hi") is None:
        return ""
    return f" [{iv['lo']:.3f}, {iv['hi']:.3f}]"


def cmd_audit(a) -> int:

    from rich.console import Console

    from reports.audit_text import print_audit

    console = Console(width=80)  # the tables fit 80 columns; notes wrap
    if a.summary:  # an existing run: read its summary, print, done
        from reports.compare import load_summary

        given = [o for o in ("checkpoint", "tokenizer", "text") if getattr(a, o)]
        if given:
            raise SpikeEnergyError(f"audit: give a summary.json or --{given[0]}, not both (the summary already "
                                   "says what was profiled)")  # fmt: skip
        json_path = check_output_file(a.json, "--json") if a.json else None
        s = load_summary(a.summary)
        print_audit(s["audit"], console)
        if json_path:
            atomic_write_text(json_path, strict_dumps(s["audit"], indent=1))
            print(f"audit: {json_path}")
        return 0

    from energy.app import pipeline

    _distributed_checks(a)
    if a.workers > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_workers(a.workers, a.argv)
    job = _job(a)
    if a.json:
        json_path = check_output_file(a.json, "--json")
    else:
        json_path = check_output_dir(a.out, "--out") / "audit.json"
    bar, cb = _progress()
    with bar:
        result = pipeline.run(job, progress=cb)
        if result is None:  # another rank of a torchrun job
            return 0
    text = strict_dumps(result.audit, indent=1)
    print_audit(json_safe(result.audit), console)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, text)
    print(f"audit: {json_path}")
    return 0


def cmd_eval(a) -> int:
    from energy.app.pipeline import demo_paths
    from spikegpt.checkpoint import load_checkpoint
    from spikegpt.evaluate import evaluate, unigram_entropy_bits
    from spikegpt.limits import check_device, check_memory, spikegpt_run_bytes
    from spikegpt.tokenizer import read_text, resolve_tokenizer

    if a.tokens is not None and a.tokens < 1:
        raise SpikeEnergyError("--tokens must be a positive integer")
    check_device(a.device)
    budget = _max_memory(a)
    json_path = check_output_file(a.json, "--json") if a.json else None
    ckpt = a.checkpoint or demo_paths()[0]
    model, info = load_checkpoint(ckpt, device=a.device, max_memory=budget)
    model.kernels = a.kernels
    tok = resolve_tokenizer(info.config.vocab_size, a.tokenizer, ckpt, unknown=_parse_unknown(a.unknown_chars))
    text_path = a.text or demo_paths()[1]
    text = read_text(text_path)
    if a.tokens is None:
        ids = tok.encode(text)
    else:  # tokenize what is scored (plus margin), not a whole 64 MB text
        need = a.tokens + 1
        ids = tok.encode(text[: max(need * 16, 4096)])
        if len(ids) < need:
            ids = tok.encode(text)
        ids = ids[:need]
    if len(ids) < 2:
        raise SpikeEnergyError(f"{shown_path(text_path)} gives {len(ids)} token(s); at least 2 are needed to score one")
    cfg = info.config
    check_memory(f"scoring chunks of {min(len(ids), cfg.ctx_len)} tokens", spikegpt_run_bytes(cfg, 1, min(len(ids),
                 cfg.ctx_len)), budget)  # fmt: skip
    bar, cb = _progress()
    with bar:
        ev = evaluate(model, tok, ids=ids, progress=lambda done, total: cb("eval", done, total))
    out = {**ev.to_dict(), "unigram_entropy_bits_per_token": unigram_entropy_bits(ids), "checkpoint": str(ckpt),
           "text": str(text_path)}  # fmt: skip
    what = "bytes" if ev.unit == "byte" else "characters"
    line = f"scored {ev.tokens:,} tokens ({ev.chars:,} {what} of text): BPC {_num(ev.bpc, '.4f')} (bits per "
    line += f"{what[:-1]}), {_num(ev.bits_per_token, '.4f')} bits per token"
    line += f", perplexity {_num(ev.ppl, ',.2f')} per token" if ev.ppl is not None else ""
    print(line)
    print(f"unigram entropy of these tokens: {_num(out['unigram_entropy_bits_per_token'], '.4f')} bits per token "
          "(a model that knows only token frequencies)")  # fmt: skip
    if json_path:
        atomic_write_text(json_path, strict_dumps(out, indent=1))
        print(f"eval: {json_path}")
    return 0


TRAIN_POSITIVE = ("n_layer", "n_embd", "ctx_len", "batch_size", "steps", "eval_every", "eval_tokens")


def check_train_options(a) -> None:
    """``train``'s options, checked before anything is read or written, as ``profile`` checks its own."""
    import math

    for name in TRAIN_POSITIVE:
        v = getattr(a, name)
        if v < 1:
            raise SpikeEnergyError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
    for name in ("warmup", "threads"):
        if getattr(a, name) < 0:
            raise SpikeEnergyError(f"--{name} must be 0 or more, got {getattr(a, name)}")
    for name in ("lr", "min_lr", "weight_decay", "grad_clip", "dropout", "val_fraction"):
        if not math.isfinite(getattr(a, name)):
            raise SpikeEnergyError(f"--{name.replace('_', '-')} must be a finite number, got {getattr(a, name)}")
    if a.lr <= 0:
        raise SpikeEnergyError(f"--lr must be positive, got {a.lr}")
    if not 0 <= a.min_lr <= a.lr:
        raise SpikeEnergyError(f"--min-lr must be between 0 and --lr ({a.lr}), got {a.min_lr}")
    if a.weight_decay < 0:
        raise SpikeEnergyError(f"--weight-decay must be 0 or more, got {a.weight_decay}")
    if a.grad_clip <= 0:
        raise SpikeEnergyError(f"--grad-clip must be positive, got {a.grad_clip}")
    if not 0 <= a.dropout < 1:
        raise SpikeEnergyError(f"--dropout must be in [0, 1), got {a.dropout}")
    if not 0 < a.val_fraction < 1:
        raise SpikeEnergyError(f"--val-fraction must be in (0, 1), got {a.val_fraction}")
    from spikegpt.config import SpikeGPTConfig
    from spikegpt.limits import check_memory, spikegpt_run_bytes

    # the weights, their gradients and two Adam moments (4 copies), and one batch forward and backward (about
    # 3 forwards); a char vocabulary is sized at 256 here (it is built from the text later)
    cfg = SpikeGPTConfig(vocab_size=256, n_layer=a.n_layer, n_embd=a.n_embd, ctx_len=a.ctx_len)
    weights = spikegpt_run_bytes(cfg, 0, 0)
    check_memory(f"training {a.n_layer} layers x {a.n_embd} at {a.batch_size} x {a.ctx_len} tokens",
                 3 * weights + 3 * spikegpt_run_bytes(cfg, a.batch_size, a.ctx_len), _max_memory(a))  # fmt: skip


def cmd_train(a) -> int:
    from spikegpt.train import settings_from_args, train

    check_train_options(a)
    log = train(settings_from_args(a))
    last = log["curve"][-1]
    print(f"held-out {last['val_bits_per_token']:.3f} bits/token after {last['step']} steps; wrote {a.out}/model.pth")
    return 0


def cmd_bench(a) -> int:
    import torch

    from energy.app.timing import run_bench
    from spikegpt import preset
    from spikegpt.limits import check_device, check_memory, spikegpt_run_bytes

    device = "cuda" if a.device == "auto" and torch.cuda.is_available() else "cpu" if a.device == "auto" else a.device
    dev = check_device(device)
    d = BENCH_DEFAULTS["cuda" if dev.type == "cuda" else "cpu"]
    name = d["preset"] if a.preset == "auto" else a.preset
    batch, tokens = a.batch or d["batch"], a.tokens or d["tokens"]
    repeats = a.repeats or d["repeats"]
    out = check_output_file(a.out, "--out")
    try:
        config = preset(name)
        modes = tuple(m for m in (a.modes or d["modes"]).split(",") if m)
        batches = tuple(int(b) for b in (a.decode_batches or d["decode_batches"]).split(",") if b)
    except ValueError as e:
        raise SpikeEnergyError(f"bench: {e}") from None
    for opt, v in (("--batch", batch), ("--tokens", tokens), ("--repeats", repeats), *(("--decode-batches", b)
                   for b in batches)):  # fmt: skip
        if v < 1:
            raise SpikeEnergyError(f"bench: {opt} must be a positive integer, got {v}")
    elem = torch.empty((), dtype=getattr(torch, a.dtype)).element_size()
    check_memory(f"timing {name} at {batch} x {tokens} tokens", spikegpt_run_bytes(config, batch, tokens, elem), None)
    print(f"bench: {name} ({config.n_layer} x {config.n_embd}, vocab {config.vocab_size}, random weights) on "
          f"{dev}, {batch} x {tokens} tokens, modes {','.join(modes)}, decode batches {','.join(map(str, batches))}, "
          f"median of {repeats}", file=sys.stderr)  # fmt: skip
    bar, cb = _progress()
    try:
        with bar:
            res = run_bench(config, batch=batch, tokens=tokens, device=dev, dtype=getattr(torch, a.dtype),
                            modes=modes, decode_batches=batches, repeats=repeats,
                            progress=lambda i, n: cb("bench", i, n))  # fmt: skip
    except ValueError as e:
        raise SpikeEnergyError(f"bench: {e}") from None
    atomic_write_text(out, strict_dumps(res, indent=1))
    _print_bench(res)
    print(f"bench: {out}")
    return 0


def _print_bench(res: dict) -> None:
    """A summary table of a bench result (the JSON file has every sample)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"spike-energy bench on {escape(str(res.get('device')))} (median of {res['settings']['repeats']})")
    for col in ("what", "mode", "batch", "median", "tokens/s", "first call", "note"):
        t.add_column(col, justify="right" if col not in ("what", "mode", "note") else "left")

    def row(what, mode, batch, r):
        if r.get("status") != "ok":
            t.add_row(what, mode, str(batch), "-", "-", "-", escape(str(r.get("reason", r.get("status")))))
            return
        t.add_row(what, mode, str(batch), f"{r['median_s'] * 1e3:,.1f} ms", _num(r.get("tokens_per_s"), ",.0f"),
                  f"{r['first_call_s']:,.2f} s", "")  # fmt: skip

    batch = res["settings"]["batch"]
    for mode, r in res["forward"].items():
        row(f"forward, {res['settings']['tokens']} tokens", mode, batch, r)
    for mode, rs in res["decode"].items():
        for r in rs:
            row(f"decode, {res['settings']['decode_tokens']} steps", mode, r["batch"], r)
    m = res["matmul"]
    t.add_row("matmuls alone", "F.linear", str(batch), f"{m['median_s'] * 1e3:,.1f} ms", "-",
              f"{m['first_call_s']:,.2f} s", f"{_num(m.get('flop_per_s', 0) / 1e9, ',.1f')} GFLOP/s")  # fmt: skip
    Console(width=max(120, shutil.get_terminal_size().columns)).print(t)
    for note in res["derived"].get("notes") or []:
        print(f"note: {note}")


def cmd_pareto(a) -> int:
    from energy.comparing.variants import bundled_models, compare
    from energy.pricing.costs import load_costs
    from energy.pricing.platforms import resolve_platforms
    from reports.plots import figure_to_data_uri, pareto
    from spikegpt.safeio import check_regular_file, strict_dumps
    from spikegpt.tokenizer import read_text

    if a.tokens < 2:
        raise SpikeEnergyError(f"--tokens must be at least 2, got {a.tokens}")
    if a.checkpoint:
        paths = [check_regular_file(p, "--checkpoint") for p in a.checkpoint]
        names = [p.stem for p in paths]
        if len(set(names)) < len(names):
            names = [f"{i}:{n}" for i, n in enumerate(names)]
        models = dict(zip(names, paths))
    else:
        models = bundled_models()
    if len(models) < 2:
        raise SpikeEnergyError("pareto compares at least two checkpoints: pass --checkpoint twice or more")
    platforms = resolve_platforms(a.platform or ("all",))
    out = check_output_dir(a.out, "--out")
    from energy.app.pipeline import demo_paths

    text = read_text(a.text or demo_paths()[1])
    costs = load_costs(a.costs)
    bar, cb = _progress()
    with bar:
        res = compare(models, text, a.tokens, costs, a.precision, a.zero_skipping == "on",
                      platforms=platforms or ("none",), progress=lambda d, t: cb("models", d, t),
                      use_cache=not a.no_cache)  # fmt: skip

    out.mkdir(parents=True, exist_ok=True)
    (out / "pareto.json").write_text(strict_dumps(json_safe(res), indent=1))
    uri = figure_to_data_uri(pareto(res), "svg")
    import base64

    (out / "pareto.svg").write_bytes(base64.b64decode(uri.split(",", 1)[1]))
    _print_pareto(res)
    print(f"pareto: {out / 'pareto.json'}, {out / 'pareto.svg'}")
    return 0


def _print_pareto(res: dict) -> None:
    """Quality against energy per character, 80 columns: the best platform on a line of its own under the
    table, so that no cell is cut."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from reports.labels import model_name

    t = Table(title=f"quality against energy per character ({res['precision']}, the same {res['tokens']} tokens)",
              box=box.SIMPLE_HEAD, title_justify="left", collapse_padding=True, pad_edge=False)  # fmt: skip
    # fixed widths (rich would shrink the names to share the room): a long name wraps, a number is never cut
    t.add_column("model", width=22, overflow="fold")
    for col, width in (("bits/ char", 6), ("firing rate", 6), ("spiking proj.", 7), ("AC/ token", 8),
                       ("as executed", 8), ("+ memory (SRAM)", 8)):  # fmt: skip
        t.add_column(col, justify="right", width=width)
    best = []
    for m in res["models"]:
        e, b = m["energy_pj_per_char"], m.get("best_platform") or {}
        kind = model_name(m["variant"], short=True)
        if m["name"] == m["variant"]:
            name = kind
        else:
            name = m["name"] if m["variant"] == "released" else f"{m['name']} ({kind})"
        if b:
            node = f" {b['node_nm']:g} nm" if b.get("node_nm") is not None else ""
            best.append(f"{name}: {b['platform']}{node}, {_energy(b.get('pj_per_char'))} per character")
        t.add_row(escape(name), _num(m["bpc"], ".3f"),
                  _num(m["firing_rate_overall"], ".3f"), f"{m['projections']['spike']}/{m['projections']['total']}",
                  _si(m["ops_per_token"]["ac"]), _energy(e["as_executed"]),
                  _energy(e["as_executed_memory"]))  # fmt: skip
    c = Console(width=80)
    c.print(t)
    if best:
        c.print(escape("lowest energy on a chip (as executed + memory, SRAM): " + "; ".join(best) + "."))
    if res.get("verdict"):
        c.print(escape(res["verdict"]))


def cmd_compare(a) -> int:
    from reports.compare import compare_table, load_summary

    sa, sb = load_summary(a.a), load_summary(a.b)
    print(compare_table(sa, sb, a.a, a.b))
    return 0


COMMANDS = {
    "profile": cmd_profile,
    "audit": cmd_audit,
    "eval": cmd_eval,
    "train": cmd_train,
    "bench": cmd_bench,
    "compare": cmd_compare,
    "pareto": cmd_pareto,
}


def main(argv=None) -> int:
    parser = make_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.command is None:  # plain `spike-energy`: profile the bundled demo
        argv = [*argv, "profile"]
        args = parser.parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)  # cleans up like Ctrl-C (only possible in the main thread)
    except ValueError:
        previous = None
    try:
        return COMMANDS[args.command](args)
    except SpikeEnergyError as e:
        print(f"spike-energy: error: {one_line(e)}{_partial_note(e, False)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as e:
        print(f"spike-energy: interrupted; no report was written{_partial_note(e, True)}", file=sys.stderr)
        return 130
    except Terminated as e:
        print(f"spike-energy: terminated; no report was written{_partial_note(e, True)}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # noqa: B036 - anything else (incl. a Rust panic) is one line, not a traceback
        if args.debug:
            traceback.print_exc()
        else:
            msg = one_line((str(e).strip().splitlines() or [""])[0], 300)
            print(f"spike-energy: internal error: {type(e).__name__}{': ' + msg if msg else ''} "
                  "(a bug, or an input we do not check yet); rerun with --debug for the traceback"
                  f"{_partial_note(e, False)}", file=sys.stderr)  # fmt: skip
        return EXIT_INTERNAL
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def entry() -> NoReturn:
    """The console script (and ``python -m energy.cli``): ``main``, then a fast exit.

    When ``main`` returns, every output is written and closed. What is left is the interpreter's teardown of
    torch, pandas and matplotlib, measured at 0.8 s (a tenth of the demo's warm run): it is skipped with
    ``os._exit`` once the output streams and the log handlers are flushed.

    The cyclic garbage collector runs less often than Python's default (a first generation of 20,000
    allocations instead of 700): the pandas work of a run allocates millions of short-lived objects, and the
    default cost 0.64 s of collections in the demo's warm run, 0.25 s with this threshold (a CLI process of
    bounded life: what cyclic garbage waits longer is small)."""
    gc.set_threshold(20_000, 10, 10)
    try:
        code = main()
    except SystemExit as e:  # argparse: --help, a bad option
        code = e.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (| head) or a closed stream
            stream.flush()
    logging.shutdown()
    os._exit(code or 0)


if __name__ == "__main__":
    entry()
