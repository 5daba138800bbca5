"""Hostile inputs and untrue messages, round two (issue 23): one test per class, each writing its own hostile
input. Helpers (time and memory caps, the tiny model files) come from test_hardening."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
from test_hardening import ROOT, TEXT, bounded, one_error_line, profile_args, tiny_sd, with_vocab
from test_hardening import run as run_capped

import energy.app.cli as cli
from spikegpt.safeio import without_dirs


@pytest.fixture(scope="module")
def files(tmp_path_factory, write_model_files):
    return write_model_files(tmp_path_factory.mktemp("hostile2"), TEXT + '\n{}":,')


@pytest.fixture(scope="module")
def summary(files, tmp_path_factory):
    """A real summary.json of the tiny model (what `profile` writes), made once."""
    out = tmp_path_factory.mktemp("summary") / "out"
    with bounded(180):
        code = cli.main([str(a) for a in profile_args(files, out)])
    assert code == 0
    return json.loads((out / "summary.json").read_text())


def run(argv, capsys, seconds: int = 180):
    """``main(argv)`` under a time cap (generous: the test machines are shared) and a memory cap."""
    return run_capped(argv, capsys, seconds)


def nothing_written(d: Path) -> bool:
    return not (d / "out").exists() and not (d / "out.partial").exists()


# ---------------------------------------------------------------------------------
# Sizes a sidecar declares: checked against the memory budget before anything is built
# ---------------------------------------------------------------------------------


def test_sidecar_sizes_are_checked_before_anything_is_built(files, tmp_path, capsys, monkeypatch):
    built = []
    monkeypatch.setattr("energy.comparing.cache.baselines", lambda *a, **k: built.append(a) or {})
    monkeypatch.setattr("spikegpt.checkpoint.build_uninitialised", lambda *a: built.append(a))
    ckpt = with_vocab(files, tmp_path, "side", tiny_sd(files))
    (tmp_path / "side.config.json").write_text(json.dumps({"ctx_len": 10**8}))
    code, _, err = run([*profile_args(files, tmp_path / "out", checkpoint=ckpt), "--baselines",
                        "transformer-same-dims"], capsys)  # fmt: skip
    assert code == 2
    line = one_error_line(err, "side.config.json declares ctx_len 100,000,000: one block of that many tokens")
    assert "over the memory budget of 16.0 GiB; fix ctx_len in the sidecar" in line and "--max-memory" in line
    assert built == [] and nothing_written(tmp_path)
    monkeypatch.undo()
    (tmp_path / "side.config.json").write_text(json.dumps({"ctx_len": 64}))  # a size that fits still runs
    code, _, err = run(profile_args(files, tmp_path / "out", checkpoint=ckpt), capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["model"]["ctx_len"] == 64


# ---------------------------------------------------------------------------------
# --tokens larger than the text: a warning, and the whole text (the memory check sized by what the text has)
# ---------------------------------------------------------------------------------


def test_tokens_beyond_the_text_warn_and_use_the_whole_text(files, tmp_path, capsys, caplog):
    text = tmp_path / "short.txt"
    text.write_text(TEXT[:200])
    args = profile_args(files, tmp_path / "out")
    args[args.index("--text") + 1] = text
    args[args.index("--tokens") + 1] = 10**9  # 5.9 TiB if the check were sized by --tokens
    code, _, err = run([*args, "--max-memory", "1G"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["tokens"] == 199  # every token scored
    assert "fewer than --tokens x --batch = 1000000000; using all of them" in caplog.text


# ---------------------------------------------------------------------------------
# --bench: the whole file against its schema, nested levels included
# ---------------------------------------------------------------------------------


def _bench():
    import torch

    from energy.app.timing import run_bench
    from spikegpt import preset

    return run_bench(preset("tiny"), batch=1, tokens=8, device=torch.device("cpu"), modes=("eager",),
                     decode_batches=(1,), repeats=1)  # fmt: skip


@pytest.mark.parametrize(
    "where,value,match",
    [
        (("forward", "eager"), [1, 2], "at forward.eager: Input should be a valid dictionary"),
        (("decode", "eager"), {"batch": 1}, "at decode.eager: Input should be a valid list"),
        (("decode", "eager", 0), [1], "at decode.eager.[0]: Input should be a valid dictionary"),
        (("settings", "config"), [1], "at settings.config: Input should be a valid dictionary"),
        (("derived", "nonmatmul_s"), [1, 2], "at derived.nonmatmul_s: Input should be a valid dictionary"),
        (("derived", "notes"), {"a": 1}, "at derived.notes: Input should be a valid list"),
        (("matmul",), [0.1], "at matmul: Input should be a valid dictionary"),
        (("forward", "eager", "median_s"), "fast", "at forward.eager.median_s"),
    ],
)
def test_bench_files_are_validated_whole(files, tmp_path, capsys, where, value, match):
    bench = _bench()
    from reports.schema import BenchFile

    BenchFile.model_validate(bench)  # what `spike-energy bench` writes is valid
    node = bench
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = value
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    code, _, err = run([*profile_args(files, tmp_path / "out"), "--bench", tmp_path / "bench.json"], capsys)
    assert code == 2
    one_error_line(err, match)
    assert nothing_written(tmp_path)


# ---------------------------------------------------------------------------------
# compare / audit: the whole summary.json with the models that write it; a newer schema refused
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,value",
    [
        (("text",), ["a"]),
        (("scenarios",), [1]),
        (("model",), []),
        (("headline", "ratio_as_executed"), [1, 2]),
        (("baselines", "rwkv-twin", "energy_pj_per_token"), [1.0]),
        (("audit", "break_even", "fp32"), [1]),
        (("firing_rate",), ["x"]),
        (("energy_breakdown", "paper", "by_layer"), []),
        (("uncounted_ops",), {"a": 1}),
    ],
)
def test_summaries_are_validated_whole(summary, tmp_path, capsys, path, value):
    s = json.loads(json.dumps(summary))
    node = s
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    p = tmp_path / "summary.json"
    p.write_text(json.dumps(s))
    for argv in (["compare", p, p], ["audit", p]):
        code, _, err = run(argv, capsys)
        assert code == 2, err
        one_error_line(err, f"not a spike-energy summary (wrong type for: {'.'.join(path)}")


@pytest.mark.parametrize("version", [3, 99, 0])
def test_summary_versions_this_release_cannot_read_are_refused(summary, tmp_path, capsys, version):
    p = tmp_path / "summary.json"
    p.write_text(json.dumps({**summary, "schema_version": version}))
    code, _, err = run(["compare", p, p], capsys)
    assert code == 2
    line = one_error_line(err, f"written with summary schema version {version}")
    assert "this spike-energy reads summary schema versions 1 and 2" in line
    p.write_text(json.dumps(summary))  # the summary as written reads
    code, out, err = run(["compare", p, p], capsys)
    assert code == 0 and "firing rate" in out, err


# ---------------------------------------------------------------------------------
# train: options validated as profile validates its own
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "opt,value,match",
    [
        ("--n-layer", "0", "--n-layer must be a positive integer, got 0"),
        ("--n-embd", "-4", "--n-embd must be a positive integer, got -4"),
        ("--ctx-len", "0", "--ctx-len must be a positive integer"),
        ("--batch-size", "0", "--batch-size must be a positive integer"),
        ("--steps", "0", "--steps must be a positive integer, got 0"),
        ("--eval-every", "0", "--eval-every must be a positive integer"),
        ("--warmup", "-1", "--warmup must be 0 or more"),
        ("--lr", "-1", "--lr must be positive"),
        ("--lr", "nan", "--lr must be a finite number"),
        ("--min-lr", "1", "--min-lr must be between 0 and --lr"),
        ("--dropout", "1", "--dropout must be in [0, 1)"),
        ("--val-fraction", "0", "--val-fraction must be in (0, 1)"),
        ("--grad-clip", "0", "--grad-clip must be positive"),
        ("--n-embd", "100000", "over the memory budget"),
    ],
)
def test_train_options_are_validated(files, tmp_path, capsys, opt, value, match):
    code, _, err = run(["train", "--text", files / "text.txt", "--out", tmp_path / "out", opt, value], capsys)
    assert code == 2
    one_error_line(err, match)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------
# Partial state: kept and advised only when it can help; nothing for an error before any work
# ---------------------------------------------------------------------------------


def _jsonl(d: Path, lines: list) -> Path:
    p = d / "corpus.jsonl"
    p.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return p


def _corpus_args(files, d, text, *extra):
    return ["profile", "--checkpoint", files / "m.pth", "--text", text, "--census-tokens", 2, "--baselines", "none",
            "--platform", "none", "--out", d / "out", *extra]  # fmt: skip


def test_partial_state_is_advised_only_when_resuming_can_help(files, tmp_path, capsys):
    docs = [{"text": TEXT[i * 30 : i * 30 + 90]} for i in range(4)]
    # an error before any work: no partial state, no advice
    for first in ("{not json", json.dumps({"txt": "x"})):
        code, _, err = run(_corpus_args(files, tmp_path, _jsonl(tmp_path, [first, *docs])), capsys)
        assert code == 2 and "--resume" not in err and "kept" not in err
        assert nothing_written(tmp_path)
        assert err.startswith("spike-energy: error:")  # no blank line before it
    # an error after four documents: they are kept, and the line says how to use them
    bad = _jsonl(tmp_path, [*docs, json.dumps({"txt": "x"})])
    code, _, err = run(_corpus_args(files, tmp_path, bad), capsys)
    assert code == 2
    line = one_error_line(err, 'corpus.jsonl:5 has no "text" string')
    assert "(the 4 documents done so far are kept in" in line and "fix the text, then rerun the same command with " \
        "--resume to skip them)" in line  # fmt: skip
    assert "WARNING" not in err and len(list((tmp_path / "out.partial").glob("delta-*.npz"))) == 1
    # an unrelated error now: the old partial state is not this run's news
    code, _, err = run(_corpus_args(files, tmp_path, bad, "--context", 10**6, "--baselines",
                                    "transformer-same-dims"), capsys)  # fmt: skip
    assert code == 2 and "--resume" not in err and "kept" not in err
    # fixed, then resumed: the result of an uninterrupted run
    fixed = _jsonl(tmp_path, [*docs, {"text": "the fifth"}])
    code, _, err = run(_corpus_args(files, tmp_path, fixed, "--resume"), capsys)
    assert code == 0, err
    resumed = json.loads((tmp_path / "out" / "summary.json").read_text())
    code, _, err = run(_corpus_args(files, tmp_path, fixed, "--out", tmp_path / "whole"), capsys)
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert resumed["tokens"] == whole["tokens"] and resumed["ops_per_token"] == whole["ops_per_token"]


@pytest.mark.slow  # a CLI run per signal (11-13 s on 2 quiet cores); CI runs the slow checks too
def test_sigterm_says_once_what_was_kept(files, tmp_path):
    """SIGTERM after two documents: one line, which says what was kept and that --resume continues (it used to
    say "partial state ... written" and then "nothing was written"). A subprocess: the signal is real."""
    corpus = _jsonl(tmp_path, [{"text": TEXT[i : i + 80]} for i in range(6)])
    script = textwrap.dedent("""
        import os, signal, sys
        import energy.measuring.runner as runner
        from energy.app.cli import main
        end = runner.CorpusRun._end
        def _end(self, *a, **k):
            end(self, *a, **k)
            if len(self.delta.docs) == 2:
                os.kill(os.getpid(), signal.SIGTERM)
        runner.CorpusRun._end = _end
        sys.exit(main(sys.argv[1:]))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    args = [str(a) for a in _corpus_args(files, tmp_path, corpus)[:-2]] + ["--out", str(tmp_path / "out")]
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 143, r.stderr[-2000:]
    lines = [x for x in r.stderr.splitlines() if x.startswith("spike-energy:")]
    assert lines == [
        f"spike-energy: terminated; no report was written; the 2 documents done so far are kept in "
        f"{tmp_path / 'out.partial'}: rerun the same command with --resume to continue"
    ], r.stderr
    assert "nothing was written" not in r.stderr and "WARNING" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "energy.cli", *args, "--resume"], capture_output=True, text=True,
                       timeout=120, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["corpus"]["documents"] == 6


def test_readme_and_partial_state_agree():
    readme = " ".join((ROOT / "README.md").read_text().split())
    i = readme.index("Interrupted runs")
    sentence = readme[i : readme.index(". ", i)]  # the sentence that says what an interrupted run leaves
    assert ".partial/" in sentence and "--resume" in sentence, sentence


# ---------------------------------------------------------------------------------
# Messages: what a wrong file is; no repeats; no leading blank lines; --node applied or refused
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("notes.pth", "To be, or not to be\n", "is a text file (UTF-8) that starts 'To be, or not to be', not a "
         "checkpoint; --checkpoint expects a SpikeGPT state dict saved by torch.save"),
        ("vocab.pth", '{"a": 1}', "is a JSON file (UTF-8) that starts '{\"a\": 1}', not a checkpoint"),
        ("page.pth", "<!DOCTYPE html><html><body>404</body></html>", "is an HTML page"),
        ("model.safetensors", "To be", "is a text file (UTF-8) that starts 'To be', not a checkpoint"),
        ("blob.pth", b"\x00\x01\x02\x03" * 64, "is binary data of an unknown format (starts 00 01 02 03"),
    ],
)  # fmt: skip
def test_a_file_that_is_not_a_checkpoint_says_what_it_is(files, tmp_path, capsys, name, content, match):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, _, err = run(profile_args(files, tmp_path / "out", checkpoint=p), capsys)
    assert code == 2
    one_error_line(err, match)
    assert "KeyError" not in err and nothing_written(tmp_path)


@pytest.mark.parametrize("case", ["missing-checkpoint", "missing-text", "checkpoint-is-a-directory", "tokens-zero"])
def test_error_lines_neither_repeat_nor_start_blank(files, tmp_path, capsys, case):
    args = profile_args(files, tmp_path / "out")
    if case == "missing-checkpoint":
        args[args.index("--checkpoint") + 1] = tmp_path / "nope.pth"
    elif case == "missing-text":
        args[args.index("--text") + 1] = tmp_path / "nope.txt"
    elif case == "checkpoint-is-a-directory":
        args[args.index("--checkpoint") + 1] = tmp_path
    else:
        args[args.index("--tokens") + 1] = 0
    code, _, err = run(args, capsys)
    assert code == 2
    assert err.splitlines() == [err.strip()] and err.startswith("spike-energy: error:"), repr(err)
    clauses = [c.strip() for c in err.strip().split(";")]
    assert len(clauses) == len(set(clauses)) and err.count("check ") <= 1, err


def test_node_is_applied_or_refused_with_a_reason(files, tmp_path, capsys):
    code, _, err = run([*profile_args(files, tmp_path / "out"), "--platform", "loihi", "--node", "7"], capsys)
    assert code == 2
    one_error_line(err, "--node 7 prices the digital reference (horowitz) at that node, but --platform loihi "
                   "includes no digital platform")  # fmt: skip
    assert nothing_written(tmp_path)
    cli._check_node_applies(["7"], ("loihi", "horowitz"))  # with the digital reference it applies
    code, _, err = run([*profile_args(files, tmp_path / "out"), "--platform", "none", "--node", "7"], capsys)
    assert code == 2 and "--platform none includes no digital platform" in err


# ---------------------------------------------------------------------------------
# Progress: named stages from the start, a stable total for corpora, the baseline being counted named
# ---------------------------------------------------------------------------------


def test_progress_stages_are_named_and_corpus_totals_stable(files, tmp_path, capsys, monkeypatch):
    calls = []

    class Recorder(cli._Bars):
        def start(self, what):
            calls.append(("start", None, None, {"what": what}))

        def cb(self, name, done, total, what=None, **kw):
            calls.append((name, done, total, {"what": what, **kw}))

    monkeypatch.setattr(cli, "_progress", lambda: (lambda r: (r, r.cb))(Recorder()))
    corpus = _jsonl(tmp_path, [{"text": TEXT[i : i + 150 + 10 * i]} for i in range(8)])
    code, _, err = run(_corpus_args(files, tmp_path, corpus), capsys)
    assert code == 0, err
    assert calls[0][0] == "start"  # a first line before the imports and checks
    stages = list(dict.fromkeys(c[0] for c in calls))
    assert stages == ["start", "load", "profile", "count", "baselines", "analysis", "report"]
    prof = [c for c in calls if c[0] == "profile"]
    assert {c[2] for c in prof} == {corpus.stat().st_size}  # one total, from the start: the corpus bytes
    assert all(c[3]["unit"] == "bytes" for c in prof) and prof[-1][1] == corpus.stat().st_size
    done = [c[1] for c in prof]
    assert done == sorted(done)
    assert prof[-1][3]["tokens"] == json.loads((tmp_path / "out" / "summary.json").read_text())["tokens"]
    assert [c[3]["what"] for c in calls if c[0] == "baselines"][0] == "rwkv-twin"
    for name in ("load", "count", "baselines", "analysis", "report"):  # uneven steps: the ETA is shown as unknown
        assert all(c[3].get("eta") is False for c in calls if c[0] == name)


def test_a_failed_run_draws_no_empty_bar(files, tmp_path, capsys):
    code, _, err = run([*profile_args(files, tmp_path / "out"), "--max-memory", "1K"], capsys)
    assert code == 2 and err.startswith("spike-energy: error:"), repr(err[:200])


# ---------------------------------------------------------------------------------
# Packaging and first contact
# ---------------------------------------------------------------------------------


def test_packaging_states_what_it_installs():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = next(d for d in meta["dependencies"] if d.replace(" ", "").startswith("torch"))
    assert "<" in torch_req and ">=" in torch_req  # a tested range, not an open one
    extras = meta["optional-dependencies"]
    assert not any("triton" in d for d in extras["test"]) and any("triton" in d for d in extras["gpu"])
    readme = (ROOT / "README.md").read_text()
    setup = readme[readme.index("## Set-up") : readme.index("## Profiling a published checkpoint")]
    for needle in ("python3 -m venv", "cd spike-energy", torch_req.split(",")[0].replace("torch", "").strip(),
                   "chromium", "skip", "pip install ."):  # fmt: skip
        assert needle in setup, needle
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "/spike-energy-pareto/" in ignored and "/spike-energy-report.partial/" in ignored


def test_shared_paths_keep_relative_names_whole():
    """Issue 21, item 6: the bundled corpus (a relative path) was shown as "spikegptcorpus.jsonl"."""
    assert without_dirs("spikegpt/demo/corpus.jsonl") == "spikegpt/demo/corpus.jsonl"
    assert without_dirs("36 documents of spikegpt/demo/corpus.jsonl") == "36 documents of spikegpt/demo/corpus.jsonl"
    assert without_dirs("/home/me/data/corpus.jsonl") == "corpus.jsonl"
    assert without_dirs("--text /home/me/a.txt --checkpoint C:\\Users\\me\\m.pth") == "--text a.txt --checkpoint m.pth"
    assert without_dirs("(in ~/data/x.txt)") == "(in x.txt)"
