"""The README's set-up lines, run as a new user would: in a copy of the clone, in a new virtual environment
(no system site packages), with whatever pip is configured to read. Marked slow (a few minutes: it installs
torch and every dependency); CI runs it (``.ci/run``).

Every line of the README's set-up block runs as written, except the last two, which would take the time of
the whole suite: ``spike-energy profile`` runs on a shorter text (``--tokens 256``) with one transformer
baseline (so that the GPT-2 code path of ``transformers`` is exercised in the new environment), and
``python -m pytest -q`` collects every test module (every import the suite needs must resolve) and runs one
quick file."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def setup_lines() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Set-up") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_setup_block_is_what_this_test_runs():
    lines = setup_lines()
    assert lines[0] == "cd spike-energy" and lines[-2].startswith("spike-energy profile")
    assert any(x.startswith("python3 -m venv") for x in lines) and any(x.startswith("pip install") for x in lines)
    assert lines[-1] == "python -m pytest -q"


@pytest.mark.slow
def test_readme_setup_in_a_new_venv(tmp_path):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()  # fmt: skip
    clone = tmp_path / "spike-energy"
    for f in files:
        if (ROOT / f).is_file():
            (clone / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, clone / f)
    lines = setup_lines()
    script = ["set -euo pipefail", f"cd {tmp_path}"]
    for line in lines:
        if line.startswith("spike-energy profile"):
            line += f" --tokens 256 --baselines transformer-same-dims --platform horowitz --out {tmp_path}/report"
        elif line == "python -m pytest -q":
            line = (
                "python -m pytest -q --co >/dev/null && python -m pytest -q -x tests/test_hardening_round2.py "
                "-k 'packaging or shared or readme or failed_run'"
            )
        script += [f"echo '+ {line}' >&2", "t0=$SECONDS", line, 'echo "  ($((SECONDS - t0)) s)" >&2']
    script.append("python -c 'import sys; print(sys.prefix)'")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PIP_NO_CACHE_DIR": "1"}  # fmt: skip
    for key in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT", "PIP_CERT", "LANG"):
        if key in os.environ:
            env[key] = os.environ[key]
    t0 = time.time()
    log = tmp_path / "setup.log"  # what the lines print, as they run (read it when the test fails)
    with open(log, "w") as f:
        try:
            r = subprocess.run(["bash", "-c", "\n".join(script)], stdout=subprocess.PIPE, stderr=f, text=True,
                               env=env, timeout=int(os.environ.get("SPIKE_ENERGY_SETUP_TIMEOUT", "1800")))  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.fail(f"the set-up lines ran out of time; the last lines they printed:\n{log.read_text()[-3000:]}")
    took = time.time() - t0
    err = log.read_text()
    assert r.returncode == 0, (r.stdout[-3000:], err[-5000:])
    assert Path(r.stdout.strip().splitlines()[-1]) == clone / ".venv"  # the new venv, not the one running pytest
    assert (tmp_path / "report" / "report.html").exists()
    size = subprocess.run(["du", "-sm", str(clone / ".venv")], capture_output=True, text=True).stdout.split()[0]
    print(f"\nset-up lines: {took:.0f} s; the venv: {int(size) / 1024:.2f} GiB; python {sys.version.split()[0]}")
    print("\n".join(x for x in err.splitlines() if x.startswith(("+ ", "  ("))))
