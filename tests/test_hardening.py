"""Hostile and unusual inputs, one test per class (issue 15). Each test writes its hostile file
itself, runs under a time cap and a memory cap (``bounded``), and expects one line on stderr
naming the problem and exit 2, or, for inputs that are legal, a correct result."""

import contextlib
import io
import json
import math
import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from energy.app.cli import main
from spikegpt import SpikeGPT, SpikeGPTConfig

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. " * 12
ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def bounded(seconds: int = 20, extra_bytes: int = 2 * 2**30):
    """Fail (not hang, not swap) if the code under test runs longer than ``seconds`` or maps more than
    ``extra_bytes`` of address space beyond what the test process already holds (Linux)."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    old_limit = resource.getrlimit(resource.RLIMIT_AS)
    vm = None
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        vm = int(next(line for line in status if line.startswith("VmSize:")).split()[1]) * 1024
    if vm is not None:
        resource.setrlimit(resource.RLIMIT_AS, (vm + extra_bytes, old_limit[1]))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_handler)
        if vm is not None:
            resource.setrlimit(resource.RLIMIT_AS, old_limit)


@pytest.fixture(scope="module")
def files(tmp_path_factory, write_model_files):
    return write_model_files(tmp_path_factory.mktemp("hostile"), TEXT)


def kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def run(argv, capsys, seconds: int = 30):
    with bounded(seconds):
        code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def profile_args(files, out, *extra, checkpoint=None):
    return ["profile", "--checkpoint", checkpoint or files / "m.pth", "--text", files / "text.txt", "--tokens", 32,
            "--census-tokens", 2, "--baselines", "none", "--out", out, *extra]  # fmt: skip


def one_error_line(err: str, match: str) -> str:
    """Exactly one error line, containing ``match``; no traceback, no control characters."""
    lines = [line for line in err.splitlines() if line.startswith("spike-energy: error:")]
    assert len(lines) == 1, err[-2000:]
    assert match in lines[0], lines[0][:2000]
    assert "Traceback" not in err and "\x1b" not in err
    return lines[0]


def with_vocab(files, d: Path, name: str, sd: dict) -> Path:
    """A checkpoint ``name.pth`` with state dict ``sd`` and the tiny model's vocabulary beside it."""
    torch.save(sd, d / f"{name}.pth")
    (d / f"{name}.vocab.json").write_text((files / "m.vocab.json").read_text())
    return d / f"{name}.pth"


def tiny_sd(files) -> dict:
    return torch.load(files / "m.pth", weights_only=True)


# ---------------------------------------------------------------------------------
# Sizes that a file (or an option) declares
# ---------------------------------------------------------------------------------


def _stride0(files, d):
    """A few bytes on disk standing for n_embd = 10^6 (every tensor a stride-0 view of one value)."""
    v = len(json.loads((files / "m.vocab.json").read_text()))
    with torch.device("meta"):
        m = SpikeGPT(SpikeGPTConfig(vocab_size=v, n_layer=1, n_embd=10**6, ctx_len=32))
    sd = {k: torch.zeros(1).expand(t.shape) for k, t in m.state_dict().items()}
    return ["--checkpoint", with_vocab(files, d, "stride0", sd)], "stride-0 view"


def _block_1e8(files, d):
    sd = tiny_sd(files)
    sd["blocks.100000000.att.key.weight"] = sd["blocks.0.att.key.weight"]
    return ["--checkpoint", with_vocab(files, d, "blocks", sd)], "block 2 is the first missing one"


def _sidecar_ctx(files, d):
    p = with_vocab(files, d, "side", tiny_sd(files))
    (d / "side.config.json").write_text(json.dumps({"ctx_len": 10**8}))
    return ["--checkpoint", p, "--baselines", "transformer-same-dims"], "context of 100,000,000 tokens"


def test_a_huge_declared_context_is_refused_before_anything_is_built(files, tmp_path, capsys):
    """A sidecar's ctx_len of 10^8 is a size the file declares (a document runs in blocks of ctx_len tokens): it is
    checked against the memory budget when the checkpoint is read, before the model or a baseline is built
    (issue 23; it used to run and write a report)."""
    extra, _ = _sidecar_ctx(files, tmp_path)
    with bounded():
        code, _, err = run([*profile_args(files, tmp_path / "out"), *extra], capsys)
    assert code == 2
    one_error_line(err, "declares ctx_len 100,000,000: one block of that many tokens needs about")
    assert not (tmp_path / "out").exists()


def _context_option(files, d):
    return ["--context", 10**8, "--baselines", "transformer-same-dims"], "over the memory budget"


@pytest.mark.parametrize("make", [_stride0, _block_1e8, _context_option])
def test_declared_sizes_are_checked_before_allocating(files, tmp_path, capsys, make):
    extra, match = make(files, tmp_path)
    code, _, err = run([*profile_args(files, tmp_path / "out"), *extra], capsys)
    assert code == 2
    line = one_error_line(err, match)
    if "budget" in line:
        assert "--max-memory" in line  # the limit can be raised, and the line says how
    assert not (tmp_path / "out").exists()


def test_memory_budget_names_size_and_limit_and_can_be_raised(files, tmp_path, capsys):
    sd = {k: t.half() for k, t in tiny_sd(files).items()}  # a float16 file: half the bytes of the float32 run
    ckpt = with_vocab(files, tmp_path, "half", sd)
    file_bytes = ckpt.stat().st_size
    weights = sum(t.numel() for t in sd.values()) * 4  # float32 weights, computed here
    assert file_bytes < 100 * 1024 < weights
    code, _, err = run([*profile_args(files, tmp_path / "o", checkpoint=ckpt), "--max-memory", "100K"], capsys)
    assert code == 2
    one_error_line(err, f"in float32 needs about {kib(weights)}, over the memory budget of 100.0 KiB")
    code, _, err = run([*profile_args(files, tmp_path / "o", checkpoint=ckpt), "--max-memory", "20K"], capsys)
    assert code == 2
    one_error_line(err, f"needs about {kib(file_bytes)}, over the memory budget of 20.0 KiB; lower the sizes, "
                   "or raise the budget with --max-memory 1G")  # fmt: skip
    code, _, err = run([*profile_args(files, tmp_path / "o", checkpoint=ckpt), "--max-memory", "1G"], capsys)
    assert code == 0, err
    code, _, err = run([*profile_args(files, tmp_path / "o"), "--max-memory", "lots"], capsys)
    assert code == 2 and "is not a size" in err


# ---------------------------------------------------------------------------------
# Tensor kinds and keys
# ---------------------------------------------------------------------------------


def _replace(key, value_fn):
    def make(sd):
        sd[key] = value_fn(sd[key])
        return sd

    return make


def _add(key, value):
    def make(sd):
        sd[key] = value
        return sd

    return make


@pytest.mark.parametrize(
    "make,match",
    [
        (_replace("emb.weight", lambda t: torch.empty(t.shape, device="meta")), "'emb.weight' is a meta tensor"),
        (_replace("emb.weight", lambda t: t.to_sparse()), "'emb.weight' is sparse_coo, not dense"),
        (_replace("head.weight", lambda t: t.to(torch.int32)), "'head.weight' is int32, not floating point"),
        (_replace("head.weight", lambda t: t.to(torch.complex64)), "'head.weight' is complex64, not floating point"),
        (_add(7, torch.zeros(3)), "keys 7 (int) are not strings"),
        (_add(("blocks", 0), torch.zeros(3)), "keys ('blocks', 0) (tuple) are not strings"),
        (_add("blocks.0.note", "not a tensor"), "entries 'blocks.0.note' are not tensors"),
    ],
)
def test_tensor_kinds_and_keys_are_refused(files, tmp_path, capsys, make, match):
    ckpt = with_vocab(files, tmp_path, "kind", make(tiny_sd(files)))
    code, _, err = run(profile_args(files, tmp_path / "out", checkpoint=ckpt), capsys)
    assert code == 2
    one_error_line(err, match)


# ---------------------------------------------------------------------------------
# NaN / inf weights flow through every formatter and through strict JSON
# ---------------------------------------------------------------------------------


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"bare {name} in JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_inf_weights_warn_and_flow_through(files, tmp_path, capsys, value):
    sd = {k: torch.full_like(t, value) for k, t in tiny_sd(files).items()}
    ckpt = with_vocab(files, tmp_path, "nan", sd)
    out = tmp_path / "out"
    code, stdout, err = run([*profile_args(files, out, checkpoint=ckpt), "--baselines", "transformer-same-dims"],
                            capsys, seconds=60)  # fmt: skip
    assert code == 0, err
    s = _strict((out / "summary.json").read_text())  # strict JSON: NaN written as null
    assert any(w.startswith("blocks.0.att.key.weight has") for w in s["model"]["warnings"])  # the layers are named
    assert "n/a" in stdout and "warning: blocks.0" in stdout
    assert (out / "report.html").stat().st_size > 0
    for name in ("layers.csv", "energy.csv"):
        assert (out / name).exists()
    # and every reader of that summary copes
    code, stdout, err = run(["audit", out / "summary.json"], capsys)
    assert code == 0 and "waterfall" in stdout, err
    code, stdout, err = run(["compare", out, out], capsys)
    assert code == 0, err


# ---------------------------------------------------------------------------------
# JSON inputs: validated against a schema, size-limited
# ---------------------------------------------------------------------------------

HOSTILE_JSON = {
    "deep": ("[" * 100_000 + "]" * 100_000, "nested deeper"),
    "bigint": ('{"a": ' + "9" * 5000 + "}", "an integer of 5000 digits"),
    "list": ("[1, 2, 3]", "at top level"),
    "nan": ('{"a": NaN}', "NaN is not a number JSON allows"),
    "infinity": ('{"a": -Infinity}', "-Infinity is not a number JSON allows"),
    "overflow": ('{"a": 1e400}', "overflows a float"),
    "dupkey": ('{"a": 1, "a": 2}', "the key 'a' appears twice"),
    "huge": (None, "over the"),  # a 150 MB file (sparse: no disk, refused before it is read)
}


def _write(path: Path, content):
    if content is None:
        with open(path, "wb") as f:
            f.truncate(150 * 2**20)
    else:
        path.write_text(content)
    return path


def _as_vocab(files, d, content):
    ckpt = with_vocab(files, d, "v", tiny_sd(files))
    _write(d / "v.vocab.json", content)
    return profile_args(files, d / "out", checkpoint=ckpt)


def _as_tokenizer(files, d, content):
    return [*profile_args(files, d / "out"), "--tokenizer", _write(d / "tokenizer.json", content)]


def _as_sidecar(files, d, content):
    ckpt = with_vocab(files, d, "s", tiny_sd(files))
    _write(d / "s.config.json", content)
    return profile_args(files, d / "out", checkpoint=ckpt)


def _as_bench(files, d, content):
    return [*profile_args(files, d / "out"), "--bench", _write(d / "bench.json", content)]


def _as_compare(files, d, content):
    p = _write(d / "summary.json", content)
    return ["compare", p, p]


def _as_audit(files, d, content):
    return ["audit", _write(d / "summary.json", content)]


@pytest.mark.parametrize("kind", list(HOSTILE_JSON))
@pytest.mark.parametrize("fmt", [_as_vocab, _as_tokenizer, _as_sidecar, _as_bench, _as_compare, _as_audit])
def test_hostile_json_inputs(files, tmp_path, capsys, fmt, kind):
    content, match = HOSTILE_JSON[kind]
    if kind == "list" and fmt in (_as_vocab, _as_tokenizer):
        match = "non-empty JSON object"  # a char vocabulary must be an object
    if kind == "list" and fmt in (_as_compare, _as_audit):
        match = "a JSON object was expected"
    code, _, err = run(fmt(files, tmp_path, content), capsys)
    assert code == 2
    one_error_line(err, match)
    assert not (tmp_path / "out").exists()


def test_json_with_wrong_inner_types_is_refused(files, tmp_path, capsys):
    """Valid JSON of the right outer shape, with wrong types inside: the schema names the place."""
    s = {"schema_version": 1, "model": {}, "tokens": 5, "firing_rate": {"overall": "high"}, "ops_per_token": {},
         "energy_pj_per_token": {}, "baselines": {}, "audit": {}, "uncounted_ops": [], "assumptions": [],
         "environment": {}}  # fmt: skip
    p = tmp_path / "s.json"
    p.write_text(json.dumps(s))
    code, _, err = run(["compare", p, p], capsys)
    assert code == 2
    one_error_line(err, "wrong type for: firing_rate.overall")
    p.write_text(json.dumps({**s, "firing_rate": {}, "audit": {"waterfall": {"step": 1}}}))
    code, _, err = run(["audit", p], capsys)
    assert code == 2
    one_error_line(err, "audit.waterfall")
    ckpt = with_vocab(files, tmp_path, "w", tiny_sd(files))
    (tmp_path / "w.config.json").write_text(json.dumps({"ctx_len": "1024"}))
    code, _, err = run(profile_args(files, tmp_path / "out", checkpoint=ckpt), capsys)
    assert code == 2
    one_error_line(err, "at ctx_len: Input should be a valid integer")


# ---------------------------------------------------------------------------------
# Tokenizers: duplicate ids, ids beyond the model, regexes that panic
# ---------------------------------------------------------------------------------


def _hf(vocab: dict, pattern: str | None = None) -> str:
    pre = {"type": "Split", "pattern": {"Regex": pattern} if pattern else {"String": " "}, "behavior": "Isolated",
           "invert": False}  # fmt: skip
    return json.dumps({"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
                       "pre_tokenizer": pre, "post_processor": None, "decoder": None,
                       "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "?"}})  # fmt: skip


def test_char_vocabulary_with_a_duplicate_id_is_refused(files, tmp_path, capsys):
    chars = json.loads((files / "m.vocab.json").read_text())
    # same count of entries as the model's vocabulary: id 1 given twice, so one character silently vanished
    body = ", ".join(f'"{i}": {json.dumps(c)}' for i, c in chars.items())
    (tmp_path / "dup.json").write_text("{" + body + ', "1": "Z"}')
    code, _, err = run([*profile_args(files, tmp_path / "out"), "--tokenizer", tmp_path / "dup.json"], capsys)
    assert code == 2
    one_error_line(err, "the key '1' appears twice")


def test_hf_tokenizer_with_duplicate_ids_is_refused(files, tmp_path, capsys):
    v = len(json.loads((files / "m.vocab.json").read_text()))
    vocab = {f"w{i}": i for i in range(v - 1)} | {"?": 3}  # "w3" and "?" share id 3; v entries, max id v - 2
    (tmp_path / "t.json").write_text(_hf(vocab))
    code, _, err = run([*profile_args(files, tmp_path / "out"), "--tokenizer", tmp_path / "t.json"], capsys)
    assert code == 2
    one_error_line(err, "duplicate ids: id 3 ('w3' and '?')")


def test_hf_tokenizer_ids_beyond_the_model_are_refused(files, tmp_path, capsys):
    v = len(json.loads((files / "m.vocab.json").read_text()))
    vocab = {f"w{i}": i for i in range(5)} | {"?": 5000, "be,": v + 3}  # 7 tokens, ids up to 5000
    (tmp_path / "t.json").write_text(_hf(vocab))
    code, _, err = run([*profile_args(files, tmp_path / "out"), "--tokenizer", tmp_path / "t.json"], capsys)
    assert code == 2
    one_error_line(err, f"has ids up to 5000 but the model has only {v} embeddings (ids {v + 3} ('be,'), 5000 ('?')")


def test_tokenizer_regex_that_backtracks_is_one_line(files, tmp_path, capfd):
    v = len(json.loads((files / "m.vocab.json").read_text()))
    (tmp_path / "t.json").write_text(_hf({f"w{i}": i for i in range(v - 1)} | {"?": v - 1}, "(x+x+)+y"))
    (tmp_path / "x.txt").write_text("x" * 3000 + " z")
    args = profile_args(files, tmp_path / "out")
    args[args.index("--text") + 1] = tmp_path / "x.txt"
    with bounded(30):
        code = main([str(a) for a in [*args, "--tokenizer", tmp_path / "t.json"]])
    err = capfd.readouterr().err  # file-descriptor level: the Rust library writes its panic there
    assert code == 2
    one_error_line(err, "may backtrack catastrophically")
    assert "panicked" not in err and "stack backtrace" not in err


# ---------------------------------------------------------------------------------
# Text (and every user file) must be a regular file; stdin is explicit and bounded
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--text", "--tokenizer", "--checkpoint", "--costs", "--bench"])
@pytest.mark.parametrize("source", ["fifo", "dev-zero", "link-to-dev-zero"])
def test_user_files_that_are_not_regular_files(files, tmp_path, capsys, option, source):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    path = {"fifo": tmp_path / "fifo", "dev-zero": Path("/dev/zero"), "link-to-dev-zero": tmp_path / "link"}[source]
    if source == "fifo":
        os.mkfifo(path)
    elif source == "link-to-dev-zero":
        path.symlink_to("/dev/zero")
    args = profile_args(files, tmp_path / "out")
    if option in args:
        args[args.index(option) + 1] = path
    else:
        args += [option, path]
    code, _, err = run(args, capsys, seconds=15)
    assert code == 2
    one_error_line(err, "FIFO (named pipe), not a regular file" if source == "fifo" else "a character device")


def test_text_from_stdin_is_explicit_and_bounded(files, tmp_path, capsys, monkeypatch):
    from spikegpt.errors import SpikeEnergyError
    from spikegpt.tokenizer import read_text

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(TEXT.encode())))
    args = profile_args(files, tmp_path / "out")
    args[args.index("--text") + 1] = "-"
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["text"]["chars"] == len(TEXT)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"x" * 2000)))
    with pytest.raises(SpikeEnergyError, match="standard input gave more than 1000 bytes"):
        read_text("-", max_bytes=1000)


# ---------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("device,match", [
    ("mps", "runs on cpu or cuda, not mps"), ("meta", "runs on cpu or cuda, not meta"),
    ("xla", "runs on cpu or cuda, not xla"), ("cpu:3", "there is one CPU device"), ("foo", "is not a device"),
])  # fmt: skip
@pytest.mark.parametrize("command", ["profile", "eval", "bench"])
def test_devices_are_validated(files, tmp_path, capsys, device, match, command):
    if command == "profile":
        args = [*profile_args(files, tmp_path / "out"), "--device", device]
    elif command == "eval":
        args = ["eval", "--checkpoint", files / "m.pth", "--text", files / "text.txt", "--device", device]
    else:
        args = ["bench", "--preset", "tiny", "--device", device, "--out", tmp_path / "b.json"]
    code, _, err = run(args, capsys)
    assert code == 2
    one_error_line(err, match)


# ---------------------------------------------------------------------------------
# Output paths: checked before the run
# ---------------------------------------------------------------------------------


def _never_run(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("the run started before the output path was checked")

    monkeypatch.setattr("energy.app.pipeline.run", fail)
    monkeypatch.setattr("energy.app.timing.run_bench", fail)


@pytest.mark.parametrize("case", ["below-a-file", "dangling-symlink", "not-writable"])
def test_out_that_cannot_be_written(files, tmp_path, capsys, monkeypatch, case):
    _never_run(monkeypatch)
    (tmp_path / "afile").write_text("x")
    if case == "below-a-file":
        out, match = tmp_path / "afile" / "report", "is a file, so nothing can be created below it"
    elif case == "dangling-symlink":
        out, match = tmp_path / "link", "which does not exist"
        out.symlink_to(tmp_path / "nowhere" / "dir")
    else:
        if not Path("/proc/self").exists():
            pytest.skip("needs /proc as an unwritable place")
        out, match = Path("/proc/spike-energy-report"), "cannot write in /proc"
    code, _, err = run(profile_args(files, out), capsys)
    assert code == 2
    one_error_line(err, match)


@pytest.mark.parametrize("command", ["audit", "bench", "eval"])
def test_json_output_that_cannot_be_written(files, tmp_path, capsys, monkeypatch, command):
    _never_run(monkeypatch)
    target = tmp_path / "afile" / "x.json"
    (tmp_path / "afile").write_text("x")
    if command == "audit":
        args = [*profile_args(files, tmp_path / "out"), "--json", target]
        args[0] = "audit"
        args = [a for i, a in enumerate(args) if not (a == "--out" or (i > 0 and args[i - 1] == "--out"))]
    elif command == "bench":
        args = ["bench", "--preset", "tiny", "--device", "cpu", "--out", target]
    else:
        args = ["eval", "--checkpoint", files / "m.pth", "--text", files / "text.txt", "--json", target]
    code, _, err = run(args, capsys)
    assert code == 2
    one_error_line(err, "is a file")


# ---------------------------------------------------------------------------------
# Cost tables
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "1e308", "-1", "nan", "1e400", "2e9"])
def test_cost_values_must_be_finite_and_bounded(files, tmp_path, capsys, value):
    rows = (ROOT / "energy" / "pricing" / "data" / "horowitz_45nm.csv").read_text().splitlines()
    header = rows[0].split(",")
    cells = rows[1].split(",")
    cells[header.index("pj")] = value
    (tmp_path / "c.csv").write_text("\n".join([rows[0], ",".join(cells), *rows[2:]]) + "\n")
    code, _, err = run([*profile_args(files, tmp_path / "out"), "--costs", tmp_path / "c.csv"], capsys)
    assert code == 2
    one_error_line(err, f"row 2: pj '{value}' is not a number between 0 and 1e+09 pJ")


# ---------------------------------------------------------------------------------
# CSV injection
# ---------------------------------------------------------------------------------


def test_csv_cells_that_are_formulas_are_neutralised(tmp_path, tiny32):
    """OWASP: a text cell beginning with = + - @ tab or CR is prefixed with ' ; numbers stay numbers."""
    import csv

    import energy

    ids = torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(0))
    prof = energy.profile(tiny32, ids, census_tokens=2)
    hostile = ['=HYPERLINK("http://x")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "plain"]
    layers = prof.layers.copy()
    layers.loc[: len(hostile) - 1, "layer"] = hostile
    layers.loc[0, "params"] = -5  # a negative number is data, not a formula
    prof.layers = layers
    prof.to_csv(tmp_path)
    with open(tmp_path / "layers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["layer"] for r in rows[: len(hostile)]] == ["'" + h for h in hostile[:-1]] + ["plain"]
    assert rows[0]["params"] == "-5"


# ---------------------------------------------------------------------------------
# Signals: neither a partial report nor temporary files
# ---------------------------------------------------------------------------------


@pytest.mark.slow  # a CLI run per signal (11-13 s on 2 quiet cores); CI runs the slow checks too
def test_sigint_and_sigterm_leave_nothing_behind(files, tmp_path):
    """SIGINT and SIGTERM while the report is being written (the default SIGTERM action would kill
    the process without cleaning up). A subprocess, so that a test failure cannot kill pytest."""
    script = textwrap.dedent(f"""
        import json, os, signal, sys
        import reports.html
        from energy.app.cli import main
        results = {{}}
        for name in ("SIGINT", "SIGTERM"):
            def write_report(summary, path, helper=None, figure_cache=None, sig=getattr(signal, name)):
                os.kill(os.getpid(), sig)
            reports.html.write_report = write_report
            out = {str(tmp_path)!r} + "/out-" + name
            code = main(["profile", "--checkpoint", {str(files / "m.pth")!r}, "--text", {str(files / "text.txt")!r},
                         "--tokens", "32", "--census-tokens", "2", "--baselines", "none", "--out", out])
            results[name] = code
            print(json.dumps(results), flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    # SIGINT as a terminal sends it: a suite started in the background (`pytest &`) ignores SIGINT, and a child
    # that starts with it ignored never raises KeyboardInterrupt
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    last = (r.stdout.strip().splitlines() or ["{}"])[-1]
    results = json.loads(last)
    assert results == {"SIGINT": 130, "SIGTERM": 143}, (r.returncode, r.stderr[-2000:])
    assert not list(tmp_path.glob(".spike-energy-*"))  # no temporary folder
    for name in ("SIGINT", "SIGTERM"):
        assert not (tmp_path / f"out-{name}").exists()  # no partial report
    assert "terminated; no report was written" in r.stderr and "interrupted; no report was written" in r.stderr


# ---------------------------------------------------------------------------------
# Names from files: escaped and truncated
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "blocks.0.x\nspike-energy: everything is fine\x1b]0;pwned\x07\x1b[31m",
        "k" * 2**20,
    ],
    ids=["newline-and-ansi", "1MB"],
)
def test_names_from_files_are_escaped_and_truncated(files, tmp_path, capsys, key):
    sd = tiny_sd(files)
    sd[key] = torch.zeros(3)
    code, _, err = run(profile_args(files, tmp_path / "out", checkpoint=with_vocab(files, tmp_path, "k", sd)), capsys)
    assert code == 2
    line = one_error_line(err, "unexpected 1 keys:")
    assert len([x for x in err.splitlines() if x.strip()]) == 1 and len(line) < 1000
    assert "everything is fine" not in err or "\\n" in line  # the forged line stays inside the escaped name
    assert "\x07" not in err and "\x1b" not in err


# ---------------------------------------------------------------------------------
# The top level: anything unexpected is one line, exit 1, and a hint
# ---------------------------------------------------------------------------------


def test_unexpected_errors_are_one_line_with_a_hint(files, tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise ZeroDivisionError("float division by zero\nsecond line")

    monkeypatch.setattr("energy.app.pipeline.run", boom)
    code, _, err = run(profile_args(files, tmp_path / "out"), capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "ZeroDivisionError: float division by zero" in lines[0] and "--debug" in lines[0]
    code, _, err = run(["--debug", *profile_args(files, tmp_path / "out")], capsys)
    assert code == 1 and "Traceback" in err and "ZeroDivisionError" in err
    code, _, err = run([*profile_args(files, tmp_path / "out"), "--debug"], capsys)  # after the command too
    assert code == 1 and "Traceback" in err


def test_limits_helpers():
    from spikegpt.limits import parse_size

    assert parse_size("16G") == 16 * 2**30 and parse_size("512MiB") == 512 * 2**20 and parse_size("1.5k") == 1536
    assert parse_size("4096") == 4096
    assert not math.isinf(parse_size("1T"))
