"""Corpus profiling across processes: tokens/s with 1 and 2 processes, scaling, peak memory.

    python benchmarks/bench_corpus.py [--preset 216m] [--tokens 4096] [--doc-tokens 512] [--twin]
    python benchmarks/bench_corpus.py --preset tiny --tokens 2000      # a quick check that it runs
    python benchmarks/bench_corpus.py --tokens 1024 --doc-tokens 256 --procs 1,2   # issue 24 target 3, short

The 216M configuration with random weights (the speed does not depend on the weights), a
synthetic corpus of documents of ``--doc-tokens`` tokens, ``--tokens`` in all. For each
process count (``--procs``, default 1,2) the script starts ``torchrun --standalone
--nproc_per_node=N`` on itself with one thread per process (``OMP_NUM_THREADS=1``); each
rank builds the model, runs ``energy.measuring.runner.CorpusRun`` (documents assigned round-robin,
merged on rank 0 with gloo), and reports its wall time and peak resident memory (VmHWM reset at its start,
model included). Profiled tokens/s = all scored tokens / the slowest rank's time of the run
(model building excluded); scaling efficiency = tokens/s with N / (N x tokens/s with 1).

The GEMM floor (issue 24, target 3: profiled tokens/s >= 0.7x "the tokens per second that its GEMMs
alone allow on the same cores"): every ``nn.Linear`` of the model applied to an input of its forward's
shape, one thread per process. Two figures, both printed with the ratio to each:

- the target's: **N processes at once** (``concurrent``): each rank times the projections alone while the
  other ranks do the same (a barrier before each of 3 repetitions, best per rank), right before its run and
  again right after it, on its own copy of the model; the floor is the sum over the ranks of each rank's
  best. It is what the GEMMs allow when every core runs them, sharing memory bandwidth, caches and the
  clock the chip gives with all cores busy, as the N-process run does (on the 2-core machine one process's
  matmul goes 94 -> 166 GFLOP/s from 1 to 2 threads, 0.88x linear);
- the earlier one, kept beside it: **N x one thread alone** (measured by this script before the runs,
  best of 5, one process, the other cores idle but for the load), which assumes N cores each as fast as
  one alone.

For N = 1 both are one thread's GEMMs; they differ only by when they were measured.

Timing of a run: every rank builds its model, runs one short forward twice (64 tokens, no meter: the
first loads numba's compiled loops from its disk cache, about 0.5-1 s a process, a fixed cost a
million-token run pays once; printed per rank as ``kernel load``, and the tokens/s with it added printed
too), measures the floor, waits at a barrier, then runs ``CorpusRun`` (the timed part). Per rank the
script prints the parts of the run (``CorpusRun.phase_s``): documents (blocks = the model with the meter,
the rest = reading and tokenising every document), waiting for the other ranks, and the merge.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import gemm_inputs, load_average, matmul_gflops, peak_rss_mb, reset_peak_rss, run_gemms

ROOT = Path(__file__).resolve().parents[1]


class ModTokenizer:
    """Characters to ids (code point mod the vocabulary): enough to drive the model for timing."""

    kind, unit, path = "char", "char", None

    def __init__(self, vocab: int):
        self.vocab_size = vocab

    def encode(self, text: str) -> list[int]:
        return [ord(c) % self.vocab_size for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(97 + int(i) % 26) for i in ids)

    def describe(self) -> str:
        return f"code point mod {self.vocab_size}"


def make_corpus(path: Path, tokens: int, doc_tokens: int) -> None:
    g = torch.Generator().manual_seed(0)
    with open(path, "w") as f:
        left = tokens + tokens // doc_tokens + 1  # each document scores one token fewer than it has
        while left > 0:
            n = min(doc_tokens + 1, left)
            text = "".join(chr(97 + int(i)) for i in torch.randint(0, 26, (n,), generator=g))
            f.write(json.dumps({"text": text}) + "\n")
            left -= n


def child(a) -> None:
    """One rank under torchrun: build, load kernels, floor, run, floor (rank 0 prints every rank's numbers)."""
    from energy.measuring.corpus import open_corpus
    from energy.measuring.dist import from_env
    from energy.measuring.runner import CorpusRun, RunSettings
    from spikegpt import SpikeGPT, preset

    torch.set_num_threads(1)
    d = from_env("cpu")
    torch.manual_seed(0)
    model = SpikeGPT(preset(a.preset)).eval()
    models = {"spikegpt": model}
    if a.twin:
        from energy.comparing.baselines import rwkv_twin

        models["rwkv-twin"] = rwkv_twin(model)
    kernel_load = load_kernels(models)
    tokens = min(a.doc_tokens, 256)
    before = concurrent_floor(d, gemm_inputs(model, 1, tokens), tokens)  # its inputs freed before the run
    reset_peak_rss()  # the peak of the run alone (model included), not of the floor's inputs
    settings = RunSettings(max_tokens=a.tokens, mode=a.mode)
    run = CorpusRun(models, ModTokenizer(model.config.vocab_size), open_corpus(a.corpus), settings, d)
    d.barrier()  # every rank starts its run at once: a rank that waits at the end waits only for the run
    t0 = time.perf_counter()
    state = run.run()
    wall = time.perf_counter() - t0
    peak = peak_rss_mb()
    after = concurrent_floor(d, gemm_inputs(model, 1, tokens), tokens)
    mine = json.dumps({"rank": d.rank, "wall_s": wall, "peak_mb": peak, "tokens_run": run.done_tokens,
                       "kernel_load_s": kernel_load, "phase_s": getattr(run, "phase_s", None),
                       "floor_before": before, "floor_after": after})  # fmt: skip
    parts = [json.loads(b) for b in d.gather_bytes(mine.encode())]
    d.close()
    if state is not None:
        print("RESULT " + json.dumps({"tokens": state.tokens, "ranks": parts}))


def load_kernels(models: dict, tokens: int = 64) -> float:
    """Seconds the first forward of a process takes beyond the second (numba's loops loaded from its disk cache,
    first allocations): a short forward of every model, twice, as ``CorpusRun`` runs them (eager modules)."""
    x = torch.arange(tokens).remainder(97).unsqueeze(0)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        with torch.no_grad():
            for m in models.values():
                was = getattr(m, "kernels", None)
                if was is not None:
                    m.kernels = "eager"
                try:
                    m(x)
                finally:
                    if was is not None:
                        m.kernels = was
        times.append(time.perf_counter() - t0)
    return max(0.0, times[0] - times[1])


def concurrent_floor(d, pairs, tokens: int, repeats: int = 3) -> float:
    """Tokens per second of this rank's projections alone while every rank runs them at the same time (a barrier
    before each repetition; best of ``repeats``): one term of the N-process GEMM floor."""
    run_gemms(pairs)
    best = float("inf")
    for _ in range(repeats):
        d.barrier()
        t0 = time.perf_counter()
        run_gemms(pairs)
        best = min(best, time.perf_counter() - t0)
    return tokens / best


def measure(a, procs: int, corpus: Path) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", __file__,
           "--child", "--corpus", str(corpus), "--preset", a.preset, "--tokens", str(a.tokens),
           "--mode", a.mode]  # fmt: skip
    if a.twin:
        cmd.append("--twin")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{procs} processes failed:\n{r.stderr[-4000:]}")
    res = json.loads(r.stdout.split("RESULT ", 1)[1].splitlines()[0])
    ranks = sorted(res["ranks"], key=lambda p: p["rank"])
    wall = max(p["wall_s"] for p in ranks)
    load = max(p["kernel_load_s"] for p in ranks)
    return {"processes": procs, "tokens": res["tokens"], "wall_s": wall, "tokens_per_s": res["tokens"] / wall,
            "kernel_load_s": load, "tokens_per_s_with_kernel_load": res["tokens"] / (wall + load),
            "peak_mb_per_process": [p["peak_mb"] for p in ranks], "tokens_per_rank": [p["tokens_run"] for p in ranks],
            "ranks": ranks, "load_after": load_average(),
            "gemm_floor_concurrent_before": sum(p["floor_before"] for p in ranks),
            "gemm_floor_concurrent_after": sum(p["floor_after"] for p in ranks),
            "gemm_floor_concurrent": sum(max(p["floor_before"], p["floor_after"]) for p in ranks)}  # fmt: skip


def gemm_floor_tokens_per_s(preset_name: str, tokens: int = 256, repeats: int = 5, model=None) -> float:
    """Tokens per second of one thread running only the model's projections on ``tokens``-token chunks."""
    from spikegpt import SpikeGPT, preset

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        pairs = gemm_inputs(model if model is not None else SpikeGPT(preset(preset_name)).eval(), 1, tokens)
        run_gemms(pairs)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            run_gemms(pairs)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return tokens / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="216m")
    p.add_argument("--tokens", type=int, default=4096, help="scored tokens in all (default 4096)")
    p.add_argument("--doc-tokens", type=int, default=512, help="tokens per document (default 512)")
    p.add_argument("--procs", default="1,2", help="process counts to compare (default 1,2)")
    p.add_argument("--mode", default="parallel", choices=["parallel", "streaming"])
    p.add_argument("--twin", action="store_true", help="also profile the RWKV twin on every document (as the CLI does)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a)
    results = {"preset": a.preset, "tokens": a.tokens, "doc_tokens": a.doc_tokens, "mode": a.mode, "twin": a.twin,
               "threads_per_process": 1, "torch": torch.__version__, "cpus": os.cpu_count(), "runs": []}  # fmt: skip
    floor = gemm_floor_tokens_per_s(a.preset, min(a.doc_tokens, 256))
    results.update(gemm_floor_tokens_per_s_1_thread=floor, matmul_gflops_1_thread=matmul_gflops(1),
                   matmul_gflops_2_threads=matmul_gflops(2), load_before=load_average())  # fmt: skip
    print(
        f"GEMM floor, one thread alone: {floor:.1f} tokens/s; matmul {results['matmul_gflops_1_thread']:.0f} "
        f"GFLOP/s at 1 thread, {results['matmul_gflops_2_threads']:.0f} at 2; load average {results['load_before']:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        make_corpus(corpus, a.tokens, a.doc_tokens)
        for n in (int(x) for x in a.procs.split(",")):
            r = measure(a, n, corpus)
            r["gemm_floor_n_alone"] = floor * n
            r["ratio_to_gemm_floor_n_alone"] = r["tokens_per_s"] / (floor * n)
            r["ratio_to_gemm_floor_concurrent"] = r["tokens_per_s"] / r["gemm_floor_concurrent"]
            results["runs"].append(r)
            s = "es" if n > 1 else ""
            print(f"{n} process{s}: {r['tokens']} tokens in {r['wall_s']:.2f} s = {r['tokens_per_s']:.1f} tokens/s "
                  f"({r['tokens_per_s_with_kernel_load']:.1f} with the kernel load, {r['kernel_load_s']:.2f} s); peak "
                  f"RSS per process {', '.join(f'{m:.0f}' for m in r['peak_mb_per_process'])} MB; tokens per rank "
                  f"{r['tokens_per_rank']}; load average {r['load_after']:.2f}")  # fmt: skip
            for p in r["ranks"]:
                ph = p["phase_s"] or dict.fromkeys(("documents", "blocks", "wait", "merge"), float("nan"))
                print(f"  rank {p['rank']}: run {p['wall_s']:.2f} s = documents {ph['documents']:.2f} (blocks "
                      f"{ph['blocks']:.2f}, reading {ph['documents'] - ph['blocks']:.2f}) + wait {ph['wait']:.2f} + "
                      f"merge {ph['merge']:.2f}; kernel load {p['kernel_load_s']:.2f} s; GEMM floor "
                      f"{p['floor_before']:.1f} before / {p['floor_after']:.1f} after tokens/s")  # fmt: skip
            print(f"  GEMM floor, {n} process{s} at once (target's; best of before/after per rank, summed): "
                  f"{r['gemm_floor_concurrent']:.1f} tokens/s (before {r['gemm_floor_concurrent_before']:.1f}, after "
                  f"{r['gemm_floor_concurrent_after']:.1f}): profiled / floor {r['ratio_to_gemm_floor_concurrent']:.2f}"
                  " (target >= 0.7)")  # fmt: skip
            print(f"  GEMM floor, {n} x one thread alone ({n} x {floor:.1f} tokens/s, earlier definition): "
                  f"profiled / floor {r['ratio_to_gemm_floor_n_alone']:.2f}")  # fmt: skip
    base = results["runs"][0]
    for r in results["runs"][1:]:
        r["scaling_efficiency"] = r["tokens_per_s"] / (r["processes"] / base["processes"] * base["tokens_per_s"])
        one = base["gemm_floor_concurrent"] / base["processes"]
        r["floor_scaling"] = r["gemm_floor_concurrent"] / (r["processes"] * one)
        print(
            f"scaling efficiency {base['processes']} -> {r['processes']} processes: {r['scaling_efficiency']:.2f} "
            f"(the GEMM floor's at once: {r['floor_scaling']:.2f})"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
