"""Everyday commands (issue 15): `audit SUMMARY` in seconds, `audit` writing into --out, `bench`
with CPU defaults, progress and a table, `eval` that says what it scored and agrees with `profile`."""

import json
import math
import subprocess
import sys

import pytest
import torch

from energy.app.cli import BENCH_DEFAULTS, main, make_parser
from spikegpt import SpikeGPT, SpikeGPTConfig
from spikegpt.checkpoint import save_checkpoint

TEXT = "All the world's a stage, and all the men and women merely players; they have their exits. " * 10


@pytest.fixture(scope="module")
def files(tmp_path_factory, write_model_files):
    return write_model_files(tmp_path_factory.mktemp("everyday"), TEXT, seed=1, ctx_len=16)


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def summary_path(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "report"
    code = main(
        [
            str(a)
            for a in [
                "profile",
                "--checkpoint",
                files / "m.pth",
                "--text",
                files / "text.txt",
                "--tokens",
                48,
                "--census-tokens",
                2,
                "--baselines",
                "transformer-same-dims",
                "--out",
                out,
            ]
        ]
    )
    assert code == 0
    return out / "summary.json"


def test_audit_of_an_existing_summary_prints_every_table(summary_path, capsys, monkeypatch):
    def no_profiling(*a, **k):
        raise AssertionError("audit SUMMARY must not profile again")

    monkeypatch.setattr("energy.app.pipeline.run", no_profiling)
    code, out, err = run(["audit", summary_path], capsys)
    assert code == 0, err
    a = json.loads(summary_path.read_text())["audit"]
    assert "audit waterfall" in out and "break-even firing rates" in out and "sensitivity to a uniform" in out
    assert "sensitivity to the ANN's precision" in out
    waterfall = out.split("audit waterfall")[1].split("break-even firing rates")[0].splitlines()
    for step in a["waterfall"]:  # every step with its energy, as the summary holds it
        line = next(x for x in waterfall if x.strip("│ ").startswith(step["step"]))
        assert f"{step['spikegpt_pj_per_token']:,.0f}" in line
    for prec in ("fp32", "fp16", "int8"):
        r = a["break_even"][prec]["compute"]["rate_twin_parity"]
        if r is not None:  # a rate outside [0, 1] cannot happen: said in words, as the report says it
            assert (f"{r:.3f}" if 0 <= r <= 1 else "every (> 1)" if r > 1 else "none (< 0)") in out
    row = next(r for r in a["sensitivity"]["by_rate"] if r["rate"] == 0.15)
    assert f"{row['ratio_vs_rwkv-twin']:,.2f}x" in out
    # a directory works too, and --json writes the audit
    code, _, err = run(["audit", summary_path.parent, "--json", summary_path.parent / "a.json"], capsys)
    assert code == 0, err
    assert json.loads((summary_path.parent / "a.json").read_text()) == a


def test_audit_without_a_summary_writes_into_out_not_the_current_folder(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "elsewhere"
    code, stdout, err = run(["audit", "--checkpoint", files / "m.pth", "--text", files / "text.txt", "--tokens", 32,
                             "--census-tokens", 2, "--baselines", "none", "--out", out], capsys)  # fmt: skip
    assert code == 0, err
    assert (out / "audit.json").exists() and not (tmp_path / "audit.json").exists()
    assert json.loads((out / "audit.json").read_text())["waterfall"][0]["step"] == "paper"
    assert "break-even" in stdout
    code, _, err = run(["audit", files / "x.json", "--checkpoint", files / "m.pth"], capsys)
    assert code == 2 and "not both" in err


def test_eval_says_what_it_scored_and_agrees_with_profile(files, summary_path, tmp_path, capsys):
    s = json.loads(summary_path.read_text())
    assert s["tokens"] == 48
    code, out, err = run(["eval", "--checkpoint", files / "m.pth", "--text", files / "text.txt", "--tokens", 48,
                          "--json", tmp_path / "ev.json"], capsys)  # fmt: skip
    assert code == 0, err
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["tokens"] == 48 and "scored 48 tokens" in out
    # the same 48 tokens: profile runs them in one parallel pass, eval in chunks of ctx_len = 16 with the state carried
    assert ev["bpc"] == pytest.approx(s["bpc"], rel=1e-5)
    assert ev["bits_per_token"] == pytest.approx(s["bits_per_token"], rel=1e-5)
    assert "eval" in err  # the progress bar
    assert ev["ppl"] is None and "perplexity" not in out  # char model: no perplexity


def test_profile_says_how_many_tokens_were_scored(files, tmp_path, capsys):
    code, out, err = run(["profile", "--checkpoint", files / "m.pth", "--text", files / "text.txt", "--tokens", 40,
                          "--census-tokens", 2, "--baselines", "none", "--out", tmp_path / "r"], capsys)  # fmt: skip
    assert code == 0, err
    assert "40 tokens scored" in out


def test_eval_perplexity_for_bpe_only(tmp_path, capsys):
    words = sorted(set(TEXT.replace(";", " ").replace(",", " ").replace(".", " ").split()))
    vocab = {"[UNK]": 0} | {w: i + 1 for i, w in enumerate(words)}
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
           "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
           "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}}  # fmt: skip
    (tmp_path / "tokenizer.json").write_text(json.dumps(tok))
    torch.manual_seed(0)
    save_checkpoint(SpikeGPT(SpikeGPTConfig(vocab_size=len(vocab), n_layer=1, n_embd=16, ctx_len=16)),
                    tmp_path / "w.pth")  # fmt: skip
    (tmp_path / "t.txt").write_text(TEXT)
    args = ["eval", "--checkpoint", tmp_path / "w.pth", "--tokenizer", tmp_path / "tokenizer.json", "--text",
            tmp_path / "t.txt", "--tokens", 30, "--json", tmp_path / "e.json"]  # fmt: skip
    code, out, err = run(args, capsys)
    assert code == 0, err
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["ppl"] == pytest.approx(2 ** ev["bits_per_token"], rel=1e-9)  # perplexity = 2^(bits per token)
    assert f"perplexity {ev['ppl']:,.2f} per token" in out and "scored 30 tokens" in out


def test_every_eval_and_bench_option_has_help():
    p = make_parser()
    subs = next(a for a in p._actions if a.dest == "command").choices
    for name in ("eval", "bench", "audit", "profile"):
        for action in subs[name]._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"


def test_bench_help_lists_the_presets():
    r = subprocess.run([sys.executable, "-m", "energy.cli", "bench", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    help_text = " ".join(r.stdout.split())
    for preset in ("216m", "46m-enwik8", "tiny"):
        assert preset in help_text
    assert "12 x 512" in help_text  # with their sizes


def test_bench_without_gpu_picks_the_cpu_defaults(tmp_path, capsys, monkeypatch):
    seen = {}

    def fake_run_bench(config, **kw):
        seen.update(config=config, **kw)
        raise KeyboardInterrupt  # stop here: only the choice is under test

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("energy.app.timing.run_bench", fake_run_bench)
    code, _, _ = run(["bench", "--out", tmp_path / "b.json"], capsys)
    assert code == 130
    cpu = BENCH_DEFAULTS["cpu"]
    assert (seen["config"].n_layer, seen["config"].n_embd) == (12, 512)  # 46m-enwik8
    assert (seen["batch"], seen["tokens"], seen["modes"], seen["repeats"]) == (
        cpu["batch"], cpu["tokens"], ("eager",), cpu["repeats"])  # fmt: skip
    assert seen["device"].type == "cpu"


def test_bench_shows_progress_and_ends_with_a_table(tmp_path, capsys):
    code, out, err = run(["bench", "--preset", "tiny", "--device", "cpu", "--batch", 1, "--tokens", 4, "--modes",
                          "eager,fused", "--decode-batches", "1", "--repeats", 1, "--out", tmp_path / "b.json"],
                         capsys)  # fmt: skip
    assert code == 0, err
    res = json.loads((tmp_path / "b.json").read_text())
    assert "bench" in err and "5/5" in err  # progress: 2 forward modes, 2 decode items, the matmuls
    assert "forward, 4 tokens" in out and "matmuls alone" in out
    assert not out.lstrip().startswith("{")  # a table, not raw JSON
    med = res["forward"]["eager"]["median_s"] * 1e3
    assert f"{med:,.1f} ms" in out
    assert res["forward"]["fused"]["status"] == "skipped"


@pytest.mark.slow
def test_bench_cpu_default_finishes_in_under_a_minute(tmp_path):
    import time

    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "energy.cli", "bench", "--device", "cpu", "--out", tmp_path / "b.json"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert time.perf_counter() - t0 < 60
    assert math.isfinite(json.loads((tmp_path / "b.json").read_text())["forward"]["eager"]["median_s"])
