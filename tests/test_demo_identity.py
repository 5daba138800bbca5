"""Issue 25: the reorganisation of ``energy/`` into stages moved code without changing behaviour. The demo's
``summary.json`` (the README's main command, ``spike-energy profile --no-cache``) equals a copy made before the
move, key by key, except the timings, the environment (versions, dates, command line), the checkout's absolute
paths, and the keys changed on purpose since (``CHANGED_SINCE``, each with its reason).
The files that the summary's sources and notes cite moved with the code: ``energy/pricing/data/x.csv`` and
``energy.pricing.estimate`` are read as ``energy/data/x.csv`` and ``energy.estimate``, the addresses before.

The stored copy (``tests/data/demo_summary_before_reorg.json.gz``, 89 KB) is the whole summary as the code
before the move wrote it (commit 1d260db: main with the other branches of that session merged), timings and
environment left out, paths made relative. Numbers are compared to 1e-9 relative, not bit for bit: a GEMM
kernel of another CPU or thread count may round the last bit differently, which is not a change of behaviour.
A difference names its key. Made with ``python tests/test_demo_identity.py SUMMARY.json``."""

from __future__ import annotations

import gzip
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORED = ROOT / "tests" / "data" / "demo_summary_before_reorg.json.gz"
LEFT_OUT = ("timings_s", "environment")  # seconds, versions, dates and the command line: not behaviour
STAGE = re.compile(r"\benergy([./])(?:pricing|measuring|comparing|app)[./]")  # a cited file's address, by stage
REL = 1e-9
# Keys changed on purpose after the move, and why. Anything else that differs is a regression.
CHANGED_SINCE = {
    "headline/verdict/sentences": "the verdict taken like for like, at the paper figure's context, and the factor "
    "sentence's shares said to be averages over every order (second hostile review, after the move)",
    "headline/paper_metric/measured_paper_metric_at_paper_context": "new: the verdict's like-for-like figure",
    "audit/decomposition/measured_paper_metric_at_paper_context": "new: the verdict's like-for-like figure",
}


def _relative(o, root: str):
    """Every string with the checkout's absolute path has it replaced by ``<repo>``, and a cited file's address
    read as it was before the stage folders."""
    if isinstance(o, dict):
        return {k: _relative(v, root) for k, v in o.items()}
    if isinstance(o, list):
        return [_relative(v, root) for v in o]
    return STAGE.sub(r"energy\1", o.replace(root, "<repo>")) if isinstance(o, str) else o


def comparable(summary: dict, root: Path = ROOT) -> dict:
    """The summary without timings and environment, its paths relative and its cited addresses as before."""
    return _relative({k: v for k, v in summary.items() if k not in LEFT_OUT}, str(root))


def differences(before, after, path: str = "") -> list[str]:
    """Every key whose value differs (numbers beyond ``REL``), skipping ``CHANGED_SINCE``."""
    if path in CHANGED_SINCE:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for k in dict.fromkeys([*before, *after]):
            p = f"{path}/{k}" if path else k
            if p in CHANGED_SINCE:
                continue
            if k not in after or k not in before:
                out.append(f"{p}: {'missing after' if k not in after else 'new after'}")
            else:
                out += differences(before[k], after[k], p)
        return out
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return [f"{path}: {len(before)} items -> {len(after)}"]
        return [d for i, (a, b) in enumerate(zip(before, after)) for d in differences(a, b, f"{path}[{i}]")]
    if isinstance(before, float) and isinstance(after, (int, float)) and not isinstance(after, bool):
        same = (math.isnan(before) and math.isnan(after)) or math.isclose(before, after, rel_tol=REL, abs_tol=1e-12)
        return [] if same else [f"{path}: {before!r} -> {after!r}"]
    return [] if before == after else [f"{path}: {str(before)[:80]!r} -> {str(after)[:80]!r}"]


def test_the_comparison_names_a_changed_key():
    s = {"a": {"x": 1.0, "y": [1, 2]}, "b": 3, "timings_s": {"load_s": 1.0}, "p": f"{ROOT}/spikegpt/demo/demo.pth",
         "c": "energy/pricing/data/parameters.csv (energy.pricing.memory)"}  # fmt: skip
    d = comparable(s)
    assert d == {"a": {"x": 1.0, "y": [1, 2]}, "b": 3, "p": "<repo>/spikegpt/demo/demo.pth",
                 "c": "energy/data/parameters.csv (energy.memory)"}  # fmt: skip
    assert differences(d, comparable({**s, "timings_s": {"load_s": 2.0}})) == []
    assert differences(d, comparable({**s, "a": {"x": 1.0 + 1e-13, "y": [1, 2]}})) == []  # the last bits: same
    assert differences(d, comparable({**s, "a": {"x": 1.0000001, "y": [1, 2]}})) == ["a/x: 1.0 -> 1.0000001"]
    assert differences(d, comparable({**s, "b": 4})) == ["b: '3' -> '4'"]
    assert differences(d, comparable({**s, "a": {"x": 1.0, "y": [1]}})) == ["a/y: 2 items -> 1"]
    assert differences({"headline": {"verdict": {"sentences": ["x"]}}},
                       {"headline": {"verdict": {"sentences": ["y"]}}}) == []  # fmt: skip


@pytest.mark.slow
def test_the_demo_summary_is_unchanged_by_the_reorganisation(tmp_path):
    """The README's main command, cold (``--no-cache``; about 1 minute on 2 quiet cores)."""
    r = subprocess.run([sys.executable, "-m", "energy.cli", "profile", "--no-cache", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    after = comparable(json.loads((tmp_path / "summary.json").read_text()))
    with gzip.open(STORED, "rt") as f:
        before = json.load(f)
    assert differences(before, after) == []


if __name__ == "__main__":  # python tests/test_demo_identity.py SUMMARY.json: (re)make the stored copy
    STORED.parent.mkdir(exist_ok=True)
    with gzip.open(STORED, "wt") as f:
        json.dump(comparable(json.loads(Path(sys.argv[1]).read_text())), f, sort_keys=True, allow_nan=True)
    print(STORED, STORED.stat().st_size, "bytes")
