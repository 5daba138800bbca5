"""Profiled vs plain forward: wall time and peak memory, side by side in one run.

    python benchmarks/bench_profile.py [--tokens 256] [--repeats 3] [--preset 216m]

The 216M configuration with random weights (timing does not depend on the weights,
only the firing rates do). Time: plain and profiled passes alternate in one process,
median of ``--repeats``. Memory: each variant runs in a fresh subprocess and reports
its peak resident set size (VmHWM), model included, and the peak above the
model-loaded baseline (VmHWM, reset after the model is built). Targets (issue 4):
profiled/plain time <= 1.3, peak memory <= 1.5x.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from common import peak_rss_mb, reset_peak_rss

from energy import profile
from spikegpt import SpikeGPT, preset


def build(name: str) -> SpikeGPT:
    torch.manual_seed(0)
    return SpikeGPT(preset(name)).eval()


def plain(model, ids, mode):
    with torch.no_grad():
        for _ in model.chunks(ids[None, :-1], mode=mode):
            pass


def profiled(model, ids, mode):
    return profile(model, ids, mode=mode)


def child(args) -> None:
    """One variant in a fresh process: print JSON with the peak RSS."""
    model = build(args.preset)
    ids = torch.randint(0, model.config.vocab_size, (args.tokens + 1,), generator=torch.Generator().manual_seed(1))
    reset_peak_rss()
    base = peak_rss_mb()
    (plain if args.child == "plain" else profiled)(model, ids, args.mode)
    print(json.dumps({"peak_mb": peak_rss_mb(), "base_mb": base}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="216m")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--streaming-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mode", default="parallel")
    p.add_argument("--child", choices=["plain", "profiled"], help=argparse.SUPPRESS)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    if args.child:
        return child(args)

    model = build(args.preset)
    results = {"preset": args.preset, "threads": torch.get_num_threads(), "torch": torch.__version__}
    for mode, n in (("parallel", args.tokens), ("streaming", args.streaming_tokens)):
        ids = torch.randint(0, model.config.vocab_size, (n + 1,), generator=torch.Generator().manual_seed(1))
        plain(model, ids[:9], mode)  # warm-up
        t_plain, t_prof = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            plain(model, ids, mode)
            t_plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            prof = profiled(model, ids, mode)
            t_prof.append(time.perf_counter() - t0)
        mp, mq = statistics.median(t_plain), statistics.median(t_prof)
        results[mode] = {
            "tokens": n,
            "plain_s": mp,
            "profiled_s": mq,
            "time_ratio": mq / mp,
            "main_pass_s": prof.meta["wall_time_s"],
            "census_tokens": prof.meta["census_tokens"],
        }
        print(
            f"{mode:9s} {n:5d} tokens: plain {mp:7.2f} s  profiled {mq:7.2f} s  ratio {mq / mp:5.2f}  (target <= 1.3)"
        )
    mem = {}
    for variant in ("plain", "profiled"):
        cmd = [sys.executable, __file__, "--child", variant, "--preset", args.preset, "--tokens", str(args.tokens)]
        mem[variant] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    ratio = mem["profiled"]["peak_mb"] / mem["plain"]["peak_mb"]
    results["memory"] = {**mem, "peak_ratio": ratio}
    print(
        f"peak RSS ({args.tokens} tokens, parallel): plain {mem['plain']['peak_mb']:.0f} MB, "
        f"profiled {mem['profiled']['peak_mb']:.0f} MB, ratio {ratio:.2f} (target <= 1.5); "
        f"above the loaded model: {mem['plain']['peak_mb'] - mem['plain']['base_mb']:.0f} MB vs "
        f"{mem['profiled']['peak_mb'] - mem['profiled']['base_mb']:.0f} MB"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
