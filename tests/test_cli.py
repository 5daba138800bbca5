"""The command line: every command, the files it writes, bad inputs and their exit codes."""

import json
import subprocess
import sys

import pytest
import torch

from energy.app.cli import main
from spikegpt import SpikeGPT, SpikeGPTConfig
from spikegpt.checkpoint import save_checkpoint

TEXT = (
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
    "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles. "
    "<script>alert(1)</script>\n"
) * 12


@pytest.fixture(scope="module")
def files(tmp_path_factory, write_model_files):
    return write_model_files(tmp_path_factory.mktemp("cli"), TEXT)


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def common(files):
    return ["--checkpoint", files / "m.pth", "--text", files / "text.txt", "--tokens", 64, "--census-tokens", 4]


def test_profile_writes_everything(files, tmp_path, capsys):
    out = tmp_path / "report"
    code, stdout, err = run(["profile", *common(files), "--baselines", "transformer-same-dims", "--out", out], capsys)
    assert code == 0, err
    for name in ("report.html", "summary.json", "layers.csv", "ops.csv", "energy.csv", "census.csv"):
        assert (out / name).stat().st_size > 0, name
    s = json.loads((out / "summary.json").read_text())
    for key in ("model", "tokens", "bpc", "firing_rate", "ops_per_token", "energy_pj_per_token", "baselines",
                "audit", "uncounted_ops", "assumptions", "environment"):  # fmt: skip
        assert key in s, key
    m = s["model"]
    assert (m["n_layer"], m["n_embd"], m["binary_embedding"]) == (2, 32, True)
    assert len(m["sha256"]) == 64 and m["params"] > 0
    assert "blocks.0.lif1" in s["firing_rate"] and "overall" in s["firing_rate"]
    assert {"mac", "effective_mac", "ac", "exp", "div", "sigmoid"} <= set(s["ops_per_token"])
    assert set(s["energy_pj_per_token"]) >= {"paper", "as_executed", "as_executed_memory"}
    # the int8 ANN is the same-size transformer's counts priced at int8 (32-bit accumulation)
    assert set(s["baselines"]) == {"rwkv-twin", "transformer-same-dims", "transformer-same-dims-int8"}
    assert s["baselines"]["transformer-same-dims-int8"]["precision"] == "int8"
    assert s["uncounted_ops"] == [] and s["tokens"] == 64
    assert {a["op"] for a in s["assumptions"]} >= {"exp", "div", "sigmoid"}
    assert s["environment"]["command_line"][0] == "spike-energy"
    assert "report:" in stdout and "pJ/token" in stdout and "pJ/character" in stdout
    html = (out / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_profile_streaming_mode_and_options(files, tmp_path, capsys):
    out = tmp_path / "r2"
    code, _, err = run(
        ["profile", *common(files), "--mode", "streaming", "--batch", 2, "--precision", "int8",
         "--lif-threshold", 0.5, "--binary-embedding", "off", "--baselines", "none", "--out", out], capsys,
    )  # fmt: skip
    assert code == 0, err
    s = json.loads((out / "summary.json").read_text())
    assert s["mode"] == "streaming" and s["batch"] == 2 and s["precision"] == "int8"
    assert s["model"]["lif_threshold"] == 0.5 and s["model"]["binary_embedding"] is False
    assert set(s["baselines"]) == {"rwkv-twin"}


def test_audit_and_eval(files, tmp_path, capsys):
    code, stdout, err = run(["audit", *common(files), "--baselines", "none", "--json", tmp_path / "a.json"], capsys)
    assert code == 0, err
    a = json.loads((tmp_path / "a.json").read_text())
    assert [w["step"] for w in a["waterfall"]][0] == "paper" and "memory" in stdout
    code, stdout, err = run(["eval", "--checkpoint", files / "m.pth", "--text", files / "text.txt",
                             "--json", tmp_path / "ev.json"], capsys)  # fmt: skip
    assert code == 0, err
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["bpc"] > 0 and ev["unigram_entropy_bits_per_token"] > 0 and ev["tokens"] == len(TEXT) - 1
    assert f"scored {len(TEXT) - 1:,} tokens" in stdout and f"BPC {ev['bpc']:.4f}" in stdout
    assert ev["ppl"] is None and "perplexity" not in stdout  # a char model: BPC, no perplexity


def test_train_and_compare(files, tmp_path, capsys):
    code, stdout, err = run(
        ["train", "--text", files / "text.txt", "--out", tmp_path / "run", "--n-layer", 1, "--n-embd", 16,
         "--ctx-len", 16, "--batch-size", 2, "--steps", 3, "--eval-every", 3, "--eval-tokens", 64], capsys,
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "run" / "model.pth").exists() and (tmp_path / "run" / "model.vocab.json").exists()
    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    assert log["curve"][-1]["step"] == 3
    # resume continues from the saved step
    code, _, err = run(
        ["train", "--text", files / "text.txt", "--out", tmp_path / "run", "--n-layer", 1, "--n-embd", 16,
         "--ctx-len", 16, "--batch-size", 2, "--steps", 5, "--eval-every", 1, "--eval-tokens", 64, "--resume"], capsys,
    )  # fmt: skip
    assert code == 0, err
    steps = [c["step"] for c in json.loads((tmp_path / "run" / "train_log.json").read_text())["curve"]]
    assert steps == [3, 4, 5]
    # compare two profiles
    for name, prec in (("a", "fp32"), ("b", "fp16")):
        code, _, err = run(["profile", *common(files), "--baselines", "none", "--precision", prec,
                            "--out", tmp_path / name], capsys)  # fmt: skip
        assert code == 0, err
    code, stdout, err = run(["compare", tmp_path / "a" / "summary.json", tmp_path / "b" / "summary.json"], capsys)
    assert code == 0, err
    assert "as_executed" in stdout or "as executed" in stdout


def test_bench_on_cpu(tmp_path, capsys):
    code, stdout, err = run(["bench", "--preset", "tiny", "--device", "cpu", "--batch", 1, "--tokens", 4,
                             "--modes", "eager", "--decode-batches", "1", "--repeats", 1,
                             "--out", tmp_path / "b.json"], capsys)  # fmt: skip
    assert code == 0, err
    res = json.loads((tmp_path / "b.json").read_text())
    assert res["forward"]["eager"]["status"] == "ok" and res["forward"]["eager"]["median_s"] > 0


@pytest.mark.parametrize(
    "make,args,match",
    [
        (None, ["--checkpoint", "{d}/nope.pth"], "does not exist"),
        (lambda d: (d / "bad.pth").write_text("garbage"), ["--checkpoint", "{d}/bad.pth"], "not a checkpoint"),
        (lambda d: (d / "e.txt").write_text(""), ["--text", "{d}/e.txt"], "empty"),
        (lambda d: (d / "l.txt").write_bytes(b"caf\xe9 " * 50), ["--text", "{d}/l.txt"], "not UTF-8"),
        (lambda d: (d / "u.txt").write_text("QQQ zzz " * 40), ["--text", "{d}/u.txt"], "not in the vocabulary"),
        (None, ["--baselines", "gpt5"], "unknown"),
        (lambda d: (d / "c.csv").write_text("op,pj\n"), ["--costs", "{d}/c.csv"], "lacks columns"),
        (None, ["--device", "cuda"], "CUDA"),
        (None, ["--tokens", "0"], "positive"),
        (None, ["--context", "0"], "--context"),
        (None, ["--lif-tau", "0.5"], "lif_tau must be >= 1"),
        (None, ["--device", "foo"], "not a device"),
        (lambda d: (d / "f").write_text("x"), ["--out", "{d}/f"], "is a file"),
        (None, ["--tokenizer", "{d}"], "is a directory"),
    ],
)
def test_bad_input_exit_2(files, tmp_path, capsys, make, args, match):
    if make:
        make(tmp_path)
    args = [a.format(d=tmp_path) for a in args]
    base = ["profile", "--checkpoint", files / "m.pth", "--text", files / "text.txt", "--tokens", 16,
            "--baselines", "none", "--out", tmp_path / "out"]  # fmt: skip
    if torch.cuda.is_available() and "cuda" in args:
        pytest.skip("a CUDA device is present")
    code, _, err = run([*base, *args], capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("spike-energy: error:")]
    assert len(lines) == 1 and match in lines[0], err
    assert not (tmp_path / "out" / "report.html").exists()  # no partial report


def test_bpe_checkpoint_without_tokenizer(tmp_path, capsys):
    model = SpikeGPT(SpikeGPTConfig(vocab_size=50277, n_layer=1, n_embd=8, ctx_len=16))
    save_checkpoint(model, tmp_path / "SpikeGPT-216M.pth")
    (tmp_path / "t.txt").write_text("hello world " * 20)
    code, _, err = run(["profile", "--checkpoint", tmp_path / "SpikeGPT-216M.pth", "--text", tmp_path / "t.txt",
                        "--baselines", "none", "--out", tmp_path / "o"], capsys)  # fmt: skip
    assert code == 2 and "20B_tokenizer.json" in err


def test_help_on_every_command():
    for cmd in ("profile", "audit", "eval", "train", "bench", "compare"):
        r = subprocess.run([sys.executable, "-m", "energy.cli", cmd, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage:" in r.stdout, cmd
    r = subprocess.run([sys.executable, "-m", "energy.cli", "compare", "x.json"], capture_output=True, text=True)
    assert r.returncode == 2 and "error" in r.stderr


def test_compare_bad_file(tmp_path, capsys):
    (tmp_path / "x.json").write_text("{}")
    code, _, err = run(["compare", tmp_path / "x.json", tmp_path / "missing.json"], capsys)
    assert code == 2 and "spike-energy: error:" in err
