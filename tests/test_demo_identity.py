"""Issue 25: the reorganisation of ``energy/`` into stages moved code without changing behaviour. The demo's
``summary.json`` (the README's main command, ``spike-energy profile``) equals a copy made before the move, key by
key, except the timings, the environment (versions, dates, command line) and the checkout's absolute paths.
The files that the summary's sources and notes cite moved with the code: ``energy/pricing/data/x.csv`` and
``energy.pricing.estimate`` are read as ``energy/data/x.csv`` and ``energy.estimate``, the addresses before.

The stored copy (``tests/data/demo_summary_before_reorg.json``) holds a SHA-256 of the canonical JSON of every
top-level key and of every key one level below (the summary is 1 MB), and the scalar values themselves, so
that a difference names its key. Made with ``python tests/test_demo_identity.py SUMMARY.json`` on the code
before the move (commit 1d260db, main with the other branches of that session merged)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORED = ROOT / "tests" / "data" / "demo_summary_before_reorg.json"
LEFT_OUT = ("timings_s", "environment")  # seconds, versions, dates and the command line: not behaviour
STAGE = re.compile(r"\benergy([./])(?:pricing|measuring|comparing|app)[./]")  # a cited file's address, by stage


def _relative(o, root: str):
    """Every string with the checkout's absolute path has it replaced by ``<repo>``, and a cited file's address
    read as it was before the stage folders."""
    if isinstance(o, dict):
        return {k: _relative(v, root) for k, v in o.items()}
    if isinstance(o, list):
        return [_relative(v, root) for v in o]
    return STAGE.sub(r"energy\1", o.replace(root, "<repo>")) if isinstance(o, str) else o


def _sha(o) -> str:
    return hashlib.sha256(json.dumps(o, sort_keys=True, allow_nan=True).encode()).hexdigest()


def digest(summary: dict, root: Path = ROOT) -> dict:
    """``{key: sha256}`` and ``{key/sub: sha256}`` of the canonical JSON, and the scalar values of the top level."""
    s = _relative({k: v for k, v in summary.items() if k not in LEFT_OUT}, str(root))
    hashes, scalars = {}, {}
    for k, v in s.items():
        hashes[k] = _sha(v)
        if isinstance(v, dict):
            hashes.update({f"{k}/{sub}": _sha(w) for sub, w in v.items()})
        elif not isinstance(v, list):
            scalars[k] = v
    return {"left_out": list(LEFT_OUT), "sha256": hashes, "scalars": scalars}


def differences(before: dict, after: dict) -> list[str]:
    a, b = before["sha256"], after["sha256"]
    out = [f"{k}: missing after" for k in a if k not in b] + [f"{k}: new after" for k in b if k not in a]
    out += [f"{k}: differs" for k in a if k in b and a[k] != b[k]]
    out += [f"{k}: {before['scalars'][k]!r} -> {after['scalars'].get(k)!r}" for k in before["scalars"]
            if before["scalars"][k] != after["scalars"].get(k)]  # fmt: skip
    return out


def test_the_comparison_names_a_changed_key():
    s = {"a": {"x": 1.0, "y": [1, 2]}, "b": 3, "timings_s": {"load_s": 1.0}, "p": f"{ROOT}/spikegpt/demo/demo.pth",
         "c": "energy/pricing/data/parameters.csv (energy.pricing.memory)"}  # fmt: skip
    d = digest(s)
    assert d["scalars"] == {"b": 3, "p": "<repo>/spikegpt/demo/demo.pth",
                            "c": "energy/data/parameters.csv (energy.memory)"}  # fmt: skip
    assert differences(d, digest({**s, "timings_s": {"load_s": 2.0}})) == []
    assert differences(d, digest({**s, "a": {"x": 1.0000000001, "y": [1, 2]}})) == ["a: differs", "a/x: differs"]
    assert differences(d, digest({**s, "b": 4})) == ["b: differs", "b: 3 -> 4"]


@pytest.mark.slow
def test_the_demo_summary_is_unchanged_by_the_reorganisation(tmp_path):
    """The README's main command, cold (``--no-cache``; about 4 minutes on 2 shared cores)."""
    r = subprocess.run([sys.executable, "-m", "energy.cli", "profile", "--no-cache", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    after = digest(json.loads((tmp_path / "summary.json").read_text()))
    assert differences(json.loads(STORED.read_text()), after) == []


if __name__ == "__main__":  # python tests/test_demo_identity.py SUMMARY.json: (re)make the stored copy
    STORED.parent.mkdir(exist_ok=True)
    STORED.write_text(json.dumps(digest(json.loads(Path(sys.argv[1]).read_text())), indent=1) + "\n")
    print(STORED, STORED.stat().st_size, "bytes")
