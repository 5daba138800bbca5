"""The README's main command, cold (empty baselines cache) and warm (filled cache), side by side.

    python benchmarks/bench_cli.py [--repeats 3] [--threads 2] [-- EXTRA PROFILE OPTIONS]

Each run is ``spike-energy profile`` (the bundled demo, as the README's first command runs
it) in a fresh subprocess, with the whole process timed from start to exit (imports
included, as a user waits for it) and the pipeline's own timings read from its
summary.json (``load_s``, ``profile_s``, ``baselines_s``). Cold and warm runs alternate:
cold = an empty cache directory (``XDG_CACHE_HOME`` pointed at a new folder), warm = a
cache filled by a previous run. Take the numbers on an otherwise idle machine: these
machines are shared, and the profiled pass suffers from a busy core (issue 15).
Target (issue 15): at most 8 s warm on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(cache_home: Path, out: Path, threads: int, extra: list[str]) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home), "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}  # fmt: skip
    cmd = [sys.executable, "-m", "energy.cli", "profile", "--out", str(out), *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"spike-energy profile failed ({r.returncode}):\n{r.stderr[-3000:]}")
    timings = json.loads((out / "summary.json").read_text())["timings_s"]
    return {"wall_s": wall, **{k: v for k, v in timings.items() if isinstance(v, (int, float))}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="cold/warm pairs (median reported; default 3)")
    p.add_argument("--threads", type=int, default=2, help="OMP/MKL threads of the runs (default 2)")
    p.add_argument("extra", nargs="*", help="extra options for spike-energy profile (after --)")
    a = p.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average before: {load:.2f} on {os.cpu_count()} cores (take final numbers on an idle machine)")
    cold, warm = [], []
    with tempfile.TemporaryDirectory(prefix="spike-energy-bench-cli-") as tmp:
        tmp = Path(tmp)
        for i in range(a.repeats):
            cache = tmp / f"cache-{i}"  # empty: cold
            cold.append(run_once(cache, tmp / f"cold-{i}", a.threads, a.extra))
            warm.append(run_once(cache, tmp / f"warm-{i}", a.threads, a.extra))  # the cache the cold run filled
            print(f"  pair {i + 1}: cold {cold[-1]['wall_s']:.1f} s, warm {warm[-1]['wall_s']:.1f} s", flush=True)
    keys = [k for k in cold[0] if k in warm[0]]
    print(f"\nspike-energy profile {' '.join(a.extra)} (median of {a.repeats}, {a.threads} threads)")
    print(f"{'seconds':<18}{'cold':>10}{'warm':>10}{'cold - warm':>14}")
    for k in keys:
        c, w = statistics.median(r[k] for r in cold), statistics.median(r[k] for r in warm)
        print(f"{k:<18}{c:>10.2f}{w:>10.2f}{c - w:>14.2f}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average after: {load:.2f}")


if __name__ == "__main__":
    main()
