"""The benchmark scripts run (issue 24's figures come from them): each on the tiny preset, in a subprocess, as the
commands at the top of each script are given. They print the ratio lines that benchmarks/RESULTS.md quotes.
Slow (matmul speed is measured at 1 and 2 threads each time, and the interpreter starts torch): CI runs them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(*args: str) -> str:
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_bench_profile_prints_the_ratio_with_the_census_run_each_time():
    out = _run("benchmarks/bench_profile.py", "--preset", "tiny", "--tokens", "16", "--streaming-tokens", "4",
               "--repeats", "1", "--no-busy")  # fmt: skip
    assert "census run before each profiled pass" in out and "GFLOP/s" in out
    assert re.search(r"quiet +parallel +16 .* <= 1\.1", out) and re.search(r"quiet +streaming +4 ", out)
    assert "peak RSS" in out


def test_bench_model_prints_the_forward_to_gemm_ratio():
    out = _run("benchmarks/bench_model.py", "--gemm-ratio", "--preset", "tiny", "--tokens", "16", "--repeats", "1")
    assert re.search(r"forward/GEMMs median [\d.]+, best [\d.]+", out) and "GFLOP/s" in out
