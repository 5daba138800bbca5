"""Corpus runs through the command line: torchrun with gloo, kill and resume, bounded memory, the report.

Each test makes a tiny char model whose vocabulary covers the bundled sample corpus, and
its own corpus files, so that a run takes seconds.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from energy.app.cli import main
from spikegpt import SpikeGPT, SpikeGPTConfig
from spikegpt.checkpoint import save_checkpoint
from spikegpt.tokenizer import CharTokenizer

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "spikegpt" / "demo" / "corpus.jsonl"


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus-cli")
    docs = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    tok = CharTokenizer.from_text("".join(x["text"] for x in docs) + "xyz")
    torch.manual_seed(0)
    save_checkpoint(SpikeGPT(SpikeGPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_embd=32, ctx_len=32)), d / "m.pth")
    (d / "m.vocab.json").write_text(tok.to_json())
    # the bundled corpus, each document cut to its first 150-400 characters (uneven shards)
    small = [dict(x, text=x["text"][: 150 + 25 * (i % 11)]) for i, x in enumerate(docs[:9])]
    (d / "sample.jsonl").write_text("".join(json.dumps(x) + "\n" for x in small))
    return d


def env():
    e = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    e["OMP_NUM_THREADS"] = "1"  # the same arithmetic in every process: spikes are compared exactly
    return e


def cli(*args):
    return [sys.executable, "-m", "energy.cli", "profile", *map(str, args)]


def base_args(d, text, out):
    return ["--checkpoint", d / "m.pth", "--text", text, "--out", out, "--baselines", "none", "--census-tokens", 2]


COMPARED = ("firing_rate", "ops_per_token", "energy_pj_per_token", "bits_per_token", "bpc", "tokens", "uncertainty",
            "documents", "relu_sq_zero_fraction", "raster", "firing_rate_by_position", "headline")  # fmt: skip


def same_results(a: Path, b: Path) -> None:
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    for k in COMPARED:
        assert sa[k] == sb[k], k
    assert sa["corpus"]["groups"] == sb["corpus"]["groups"]
    assert (a / "documents.csv").read_text() == (b / "documents.csv").read_text()
    assert (a / "ops.csv").read_text() == (b / "ops.csv").read_text()
    assert (a / "neurons.csv").read_text() == (b / "neurons.csv").read_text()


@pytest.mark.slow  # about 15 s quiet; the fast suite keeps two processes in test_workers_option_launches_the_same
def test_two_gloo_processes_equal_one_process(model_files, tmp_path):
    d = model_files
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = subprocess.run(cli(*base_args(d, d / "sample.jsonl", one)), env=env(), capture_output=True, text=True)
    assert r1.returncode == 0, r1.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "energy.cli"]
    r2 = subprocess.run([*torchrun, "profile", *map(str, base_args(d, d / "sample.jsonl", two))], env=env(),
                        capture_output=True, text=True)  # fmt: skip
    assert r2.returncode == 0, r2.stderr[-3000:]
    s2 = json.loads((two / "summary.json").read_text())
    assert s2["corpus"]["processes"] == 2 and s2["corpus"]["documents"] == 9  # 5 documents on rank 0, 4 on rank 1
    same_results(one, two)
    assert "report:" in r2.stdout and r2.stdout.count("report:") == 1  # rank 0 alone writes and prints
    # progress: the ranks' position in the corpus (bytes read), ending at its size; tokens/s summed over the ranks
    assert re.search(r" (\S+)/\1 (B|KiB|MiB) ", r2.stderr) and "tok/s" in r2.stderr, r2.stderr[-2000:]


def test_workers_option_launches_the_same(model_files, tmp_path):
    d = model_files
    r = subprocess.run(cli(*base_args(d, d / "sample.jsonl", tmp_path / "w"), "--workers", 2, "--max-tokens", 700),
                       env=env(), capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert s["corpus"]["processes"] == 2 and s["tokens"] == 700


# Three CLI runs each (about 30 s on 2 quiet cores): in the slow run, which CI runs too
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_resume_after_a_kill_equals_an_uninterrupted_run(model_files, tmp_path, sig):
    d = model_files
    docs = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(dict(x, text=x["text"][:500])) + "\n" for x in docs))
    args = [*base_args(d, tmp_path / "c.jsonl", tmp_path / "out"), "--checkpoint-every", 600]
    # a shell's background job ignores SIGINT, and a child inherits that: give the run the default handling
    p = subprocess.Popen(cli(*args), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    state = tmp_path / "out.partial" / "state.npz"
    deadline = time.monotonic() + 120
    while not state.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert state.exists(), "no checkpoint was written"
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0, "the run ended before it could be interrupted"
    assert not (tmp_path / "out" / "report.html").exists() and not (tmp_path / "out" / "summary.json").exists()
    if sig == signal.SIGINT:
        assert "--resume" in err and p.returncode == 130
    r = subprocess.run(cli(*args, "--resume"), env=env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (tmp_path / "out.partial").exists()  # spent once the report is written
    whole = subprocess.run(cli(*base_args(d, tmp_path / "c.jsonl", tmp_path / "whole")), env=env(),
                           capture_output=True, text=True)  # fmt: skip
    assert whole.returncode == 0, whole.stderr[-3000:]
    same_results(tmp_path / "out", tmp_path / "whole")


MEMORY_SCRIPT = """
import sys
from pathlib import Path
from energy.app.cli import main
code = main(sys.argv[1:])
for line in Path('/proc/self/status').read_text().splitlines():
    if line.startswith('VmHWM:'):
        print('PEAK_KB', int(line.split()[1]))
sys.exit(code)
"""


@pytest.mark.slow  # writes and reads two 200 MB corpora
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_memory_stays_bounded_on_a_200_mb_corpus(model_files, tmp_path, kind):
    """A 200 MB corpus with a small --max-tokens peaks within 1.2x of a 2 KB corpus (nothing is read whole)."""
    d = model_files
    line = "the quick brown fox jumps over the lazy dog and keeps running. " * 15  # ~1 KB
    small, big = tmp_path / f"small.{kind}", tmp_path / f"big.{kind}"
    with open(small, "w") as f, open(big, "w") as g:
        if kind == "txt":
            f.write((line + "\n") * 2)
            chunk = (line + "\n") * 1024
            for _ in range(210):
                g.write(chunk)
        else:
            f.write(json.dumps({"text": line * 2}) + "\n")
            chunk = (json.dumps({"text": line * 64, "domain": "x"}) + "\n") * 16
            for _ in range(210):
                g.write(chunk)
    assert big.stat().st_size > 200 * 10**6
    peaks = {}
    for name, path in (("small", small), ("big", big)):
        r = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, "profile",
                            *map(str, base_args(d, path, tmp_path / name)), "--max-tokens", "1000"],
                           env=env(), capture_output=True, text=True, timeout=300)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        peaks[name] = int(r.stdout.split("PEAK_KB")[1].split()[0])
    assert peaks["big"] <= 1.2 * peaks["small"], peaks


def test_profile_on_a_corpus_reports_domains_and_intervals(model_files, tmp_path, capsys):
    d = model_files
    out = tmp_path / "r"
    code = main(["profile", *[str(a) for a in base_args(d, d / "sample.jsonl", out)]])
    stdout = capsys.readouterr().out
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["corpus"]["run"] == "documents" and s["corpus"]["documents"] == 9
    groups = s["corpus"]["groups"]
    assert groups["by"] == "domain" and {g["group"] for g in groups["rows"]} == {"drama", "epic verse", "prose"}
    assert sum(g["tokens"] for g in groups["rows"]) == s["tokens"]
    u = s["uncertainty"]
    assert "over the 9 documents" in u["method"]
    for k, iv in u["firing_rate"].items():
        assert iv["lo"] <= iv["value"] <= iv["hi"], k
        assert iv["value"] == pytest.approx(s["firing_rate"][k], rel=1e-12)
    assert set(u["energy_pj_per_token"]) == set(s["energy_pj_per_token"])
    assert "rwkv-twin" in u["headline"]["ratio_as_executed"]
    import csv

    docs = list(csv.reader((out / "documents.csv").open()))  # text cells quoted, as against CSV injection
    assert len(docs) == 10 and docs[0][:5] == ["index", "name", "source", "domain", "tokens"]
    html = (out / "report.html").read_text()
    assert 'id="corpus"' in html and "Firing rate and bits per char by domain" in html
    assert f"{s['tokens']:,} tokens (9 documents, {s['tokens_per_sequence']:,} tokens each on average)" in html
    for scen, iv in u["energy_pj_per_token"].items():  # each unit priced as the whole model
        assert iv["lo"] <= iv["value"] <= iv["hi"], scen
    assert "<script" not in html.split('id="corpus"')[1].split("</section>")[0]
    assert "domain drama" in stdout


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--batch", "2"], "--batch applies to --concat"),
        (["--concat", "--max-tokens", "10"], "--max-tokens applies to document runs"),
        (["--max-tokens", "0"], "--max-tokens must be a positive integer"),
        (["--resume"], "holds no partial state"),
    ],
)
def test_corpus_options_are_checked(model_files, tmp_path, capsys, extra, message):
    d = model_files
    code = main(["profile", *[str(a) for a in [*base_args(d, d / "sample.jsonl", tmp_path / "x"), *extra]]])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
