"""``spike-energy``: profile, audit, train, bench, compare, eval.

Each subcommand makes one library call. Results go to files and stdout; errors go to
stderr as one line naming the problem and the fix, with exit code 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from spikegpt.errors import SpikeEnergyError

logger = logging.getLogger("spike-energy")

EXIT_BAD_INPUT = 2


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
    g.add_argument("--mode", choices=["parallel", "streaming"], default="parallel")
    g.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
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
    e.add_argument("--context", type=int, help="context length of the transformer baselines (default: ctx_len)")
    e.add_argument("--census-tokens", type=int, default=2, help="tokens for the coverage census (slow; default 2)")


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
    from energy.pipeline import DEFAULT_BASELINES

    return DEFAULT_BASELINES


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spike-energy",
        description="Measure what a spiking language model (SpikeGPT) computes and what it would cost in energy.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    prof = sub.add_parser("profile", help="measure a checkpoint on text; write report.html, summary.json, CSVs")
    _model_options(prof)
    prof.add_argument("--out", default="spike-energy-report", help="output directory (default spike-energy-report/)")
    prof.add_argument("--bench", help="a bench JSON (spike-energy bench --out) to show in the report")
    _run_options(prof)

    aud = sub.add_parser("audit", help="the audit of the 32.2x claim: waterfall, break-even, sensitivity")
    _model_options(aud)
    aud.add_argument("--json", default="audit.json", help="where to write the audit (default audit.json)")
    _run_options(aud)

    ev = sub.add_parser("eval", help="bits per character / token and perplexity of a checkpoint on a text")
    for opt in ("--checkpoint", "--tokenizer", "--text"):
        ev.add_argument(opt)
    ev.add_argument("--tokens", type=int, help="score only the first N tokens")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--kernels", choices=["auto", "eager", "fused"], default="auto",
                    help="fused Triton kernels (default on CUDA with Triton) or eager modules")  # fmt: skip
    ev.add_argument("--unknown-chars", default="error")

    tr = sub.add_parser("train", help="train a small SpikeGPT on text (checkpoint in the reference key format)")
    from spikegpt.train import add_arguments

    add_arguments(tr)

    be = sub.add_parser("bench", help="GPU timing: eager vs fused vs torch.compile, decode speed, matmul floor")
    be.add_argument("--preset", default="216m", help="model configuration (default 216m, random weights)")
    be.add_argument("--batch", type=int, default=8)
    be.add_argument("--tokens", type=int, default=1024)
    be.add_argument("--device", default="cuda")
    be.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    be.add_argument("--modes", default="eager,fused,compiled", help="forward modes to time (default all three)")
    be.add_argument("--decode-batches", default="1,64", help="batch sizes of the streaming decode (default 1,64)")
    be.add_argument("--repeats", type=int, default=5)
    be.add_argument("--out", default="bench.json", help="where to write the results (default bench.json)")

    cmp_ = sub.add_parser("compare", help="two runs side by side (summary.json files)")
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


def _job(a: argparse.Namespace):
    from energy.pipeline import Job

    baselines = () if a.baselines.strip().lower() == "none" else tuple(b.strip() for b in a.baselines.split(",") if b)
    from energy.baselines import GPT2_PRESETS

    unknown = [b for b in baselines if b not in GPT2_PRESETS and b != "transformer-same-dims"]
    if unknown:
        raise SpikeEnergyError(
            f"--baselines: unknown {unknown}; choose from {', '.join([*GPT2_PRESETS, 'transformer-same-dims'])} or none"
        )
    if a.context is not None and a.context < 1:
        raise SpikeEnergyError("--context must be a positive integer")
    for name in ("tokens", "batch", "census_tokens", "max_tokens", "checkpoint_every", "workers"):
        if getattr(a, name, None) is not None and getattr(a, name) < 1:
            raise SpikeEnergyError(f"--{name.replace('_', '-')} must be a positive integer")
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
        command_line=["spike-energy", *sys.argv[1:]],
        max_tokens=a.max_tokens,
        concat=True if a.concat else None,
        checkpoint_every=getattr(a, "checkpoint_every", None),
        resume=getattr(a, "resume", False),
    )


def _progress():
    """A rich progress bar on stderr; returns (context manager, callback)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Speed(ProgressColumn):
        def render(self, task):
            if task.description.strip() != "profile" or not task.speed:
                return Text("")
            return Text(f"{task.speed:,.0f} tok/s")

    bar = Progress(
        TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), Speed(), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True), transient=False,
    )  # fmt: skip
    tasks = {}

    def cb(name, done, total):
        if name not in tasks:
            tasks[name] = bar.add_task(name, total=total)
        bar.update(tasks[name], completed=done, total=total)

    return bar, cb


def _writable(path: Path, option: str) -> None:
    """Fail before a long run, not after it, if the result cannot be written."""
    if path.is_dir():
        raise SpikeEnergyError(f"{option} {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise SpikeEnergyError(f"{option} {path}: the folder {path.parent} does not exist; create it first")


def _partial_dir(out: Path) -> Path:
    """Where a long run keeps its partial state: next to the report folder, never inside it."""
    return out.with_name(out.name + ".partial")


def _launch_workers(n: int, argv: list[str]) -> int:
    """``--workers N``: the same command under ``torchrun --standalone --nproc_per_node N``."""
    import os
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
    import os

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if (world > 1 or a.workers > 1) and a.text == "-":
        raise SpikeEnergyError("--text - (stdin) cannot be shared by several processes; save it to a file")


def cmd_profile(a) -> int:
    import os

    from energy import pipeline
    from reports.html import write_report

    _distributed_checks(a)
    if a.workers > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_workers(a.workers, a.argv)
    job = _job(a)
    out = Path(a.out)
    job.checkpoint_dir = str(_partial_dir(out))
    if out.exists() and not out.is_dir():
        raise SpikeEnergyError(f"--out {out} is a file; give a directory for the report")
    bench = None
    if a.bench:
        try:
            bench = json.loads(Path(a.bench).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SpikeEnergyError(f"--bench {a.bench}: not a readable JSON file ({e})") from None
    bar, cb = _progress()
    with bar:
        result = _run_with_partial(pipeline.run, job, cb)
        if result is None:  # another rank of a torchrun job: rank 0 writes the report
            return 0
        summary = pipeline.summary(result)
    if bench is not None:
        summary["bench"] = bench
    # write everything into a temporary folder first: a failed run never leaves a report that looks complete
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".spike-energy-", dir=out.parent))
    try:
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1))
        result.profile.to_csv(tmp)  # layers, ops, neurons, census, energy
        if result.documents is not None:
            result.documents.to_csv(tmp / "documents.csv", index=False)
        write_report(summary, tmp / "report.html")
        out.mkdir(exist_ok=True)
        for f in tmp.iterdir():
            shutil.move(str(f), out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(_partial_dir(out), ignore_errors=True)  # the report is complete: the partial state is spent
    _print_summary(summary)
    print(f"report: {out / 'report.html'}")
    return 0


def _run_with_partial(run, job, cb):
    """``run(job, progress=cb)``; if it stops early, say where the partial state is and how to go on."""
    try:
        return run(job, progress=cb)
    except BaseException:
        d = Path(job.checkpoint_dir) if job.checkpoint_dir else None
        if d is not None and d.is_dir() and any(d.glob("*.npz")):
            print(f"spike-energy: partial state kept in {d} (no report was written); rerun the same command "
                  "with --resume to continue", file=sys.stderr)  # fmt: skip
        raise


def _print_summary(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from energy.estimate import SCENARIO_LABELS

    c = Console()
    m = s["model"]
    c.print(
        f"[bold]SpikeGPT[/] {m['n_layer']} x {m['n_embd']}, vocab {m['vocab_size']}, {m['params'] / 1e6:.2f}M params"
        f"{' (bundled demo)' if m['demo'] else ''}; {s['tokens']} tokens; "
        f"{'BPC' if s['unit'] != 'token' else 'bits/token'} "
        f"{s['bpc'] if s['unit'] != 'token' else s['bits_per_token']:.3f}; "
        f"firing rate {s['firing_rate']['overall']:.3f}{_ci((s.get('uncertainty') or {}).get('firing_rate'))}"
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
    t = Table(title=f"energy per token ({s['precision']}, 45 nm)")
    t.add_column("scenario")
    t.add_column("pJ/token", justify="right")
    for name, pj in s["energy_pj_per_token"].items():
        t.add_row(SCENARIO_LABELS[name], f"{pj:,.0f}")
    c.print(t)
    h = s["headline"]
    ratios = ", ".join(f"{k} {v:.2f}x" for k, v in h["ratio_as_executed"].items() if v is not None)
    c.print(f"as executed, ANN energy / SpikeGPT energy: {ratios}  (paper: {h['claim']}x)")
    if s["uncounted_ops"]:
        c.print(f"[yellow]{len(s['uncounted_ops'])} aten ops are not counted; see the report[/]")


def _ci(d) -> str:
    """`` [lo, hi]`` of an interval (the overall rate), or nothing."""
    iv = (d or {}).get("overall") or {}
    if iv.get("lo") is None or iv.get("hi") is None:
        return ""
    return f" [{iv['lo']:.3f}, {iv['hi']:.3f}]"


def cmd_audit(a) -> int:
    import os

    from energy import pipeline
    from energy.audit import waterfall_table

    _distributed_checks(a)
    if a.workers > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_workers(a.workers, a.argv)
    job = _job(a)
    _writable(Path(a.json), "--json")
    bar, cb = _progress()
    with bar:
        result = pipeline.run(job, progress=cb)
        if result is None:
            return 0
    table = waterfall_table(result.audit)
    from rich.console import Console
    from rich.table import Table

    from reports.html import si

    t = Table(title=f"audit waterfall ({job.precision}): SpikeGPT energy per token, and ANN energy / SpikeGPT energy")
    t.add_column("step")
    t.add_column("SpikeGPT", justify="right")
    ratio_cols = [c for c in table.columns if c.startswith("ratio_vs_")]
    for col in ratio_cols:
        t.add_column(col.removeprefix("ratio_vs_"), justify="right")
    for _, row in table.iterrows():
        t.add_row(row.step, si(row.spikegpt_pj_per_token * 1e-12, "J"), *[f"{row[c]:.2f}x" for c in ratio_cols])
    Console(width=max(120, shutil.get_terminal_size().columns)).print(t)
    for p in result.audit["paper_mode"]:
        print(
            f"paper mode {p['setting']}: {p['ratio']:.1f}x (projection-only variant {p['projection_only_ratio']:.1f}x)"
        )
    from energy.pipeline import _clean

    Path(a.json).write_text(json.dumps(_clean(result.audit), indent=1))
    print(f"audit: {a.json}")
    return 0


def cmd_eval(a) -> int:
    import torch

    from energy.pipeline import demo_paths
    from spikegpt.checkpoint import load_checkpoint
    from spikegpt.evaluate import evaluate, unigram_entropy_bits
    from spikegpt.tokenizer import read_text, resolve_tokenizer

    if a.tokens is not None and a.tokens < 1:
        raise SpikeEnergyError("--tokens must be a positive integer")
    ckpt = a.checkpoint or demo_paths()[0]
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SpikeEnergyError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    model, info = load_checkpoint(ckpt, device=a.device)
    model.kernels = a.kernels
    tok = resolve_tokenizer(info.config.vocab_size, a.tokenizer, ckpt, unknown=_parse_unknown(a.unknown_chars))
    text = read_text(a.text or demo_paths()[1])
    ev = evaluate(model, tok, text, max_tokens=a.tokens)
    ids = tok.encode(text)[: (a.tokens or 10**12) + 1]
    out = {**ev.to_dict(), "unigram_entropy_bits_per_token": unigram_entropy_bits(ids), "checkpoint": str(ckpt)}
    print(json.dumps(out, indent=1))
    return 0


def cmd_train(a) -> int:
    from spikegpt.train import settings_from_args, train

    log = train(settings_from_args(a))
    last = log["curve"][-1]
    print(f"held-out {last['val_bits_per_token']:.3f} bits/token after {last['step']} steps; wrote {a.out}/model.pth")
    return 0


def cmd_bench(a) -> int:
    import torch

    from energy.timing import run_bench
    from spikegpt import preset

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SpikeEnergyError("no CUDA device is available here; run on a GPU machine or pass --device cpu")
    try:
        config = preset(a.preset)
        modes = tuple(m for m in a.modes.split(",") if m)
        batches = tuple(int(b) for b in a.decode_batches.split(",") if b)
        res = run_bench(config, batch=a.batch, tokens=a.tokens, device=a.device, dtype=getattr(torch, a.dtype),
                        modes=modes, decode_batches=batches, repeats=a.repeats)  # fmt: skip
    except ValueError as e:
        raise SpikeEnergyError(f"bench: {e}") from None
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    print(f"bench: {a.out}")
    return 0


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
    try:
        return COMMANDS[args.command](args)
    except SpikeEnergyError as e:
        print(f"spike-energy: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("spike-energy: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
