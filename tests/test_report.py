"""The HTML report and ``compare``, rendered from a real summary of a tiny random model."""

import copy
import json
import re
import shutil
import subprocess
import sys
import time

import pytest
import torch

from energy import pipeline
from reports.compare import compare_table, load_summary
from reports.html import energy, ratio, render_report, si, write_report
from reports.schema import REQUIRED_KEYS, validate_summary
from spikegpt import SpikeGPT, SpikeGPTConfig
from spikegpt.checkpoint import save_checkpoint
from spikegpt.errors import SpikeEnergyError
from spikegpt.tokenizer import CharTokenizer

SECTIONS = (
    "summary", "firing", "operands", "ops", "energy", "baselines", "audit", "uncounted", "costs", "timing", "metadata",
)  # fmt: skip
SENTENCES = (
    "The quick brown fox jumps over the lazy dog. ",
    "A <script>alert(1)</script> tag &amp; <b>bold</b> words should stay text. ",
    "Spiking neurons fire rarely, or so the paper says. ",
    "Energy per token is what we measure here.\n",
)
# scripts, stylesheets, fonts or images the page would load from elsewhere
REMOTE = ('src="http', "src='http", 'href="http', "href='http", "@import", "url(http", "url(//", "<link", "<iframe")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("report")


@pytest.fixture(scope="module")
def summary(workdir):
    """A summary.json of a 2-layer random model on a few KB of text, as the CLI writes it."""
    text = "".join(SENTENCES[i % len(SENTENCES)] for i in range(64))
    tok = CharTokenizer.from_text(text)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SpikeGPT(SpikeGPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_embd=32, ctx_len=32))
    ckpt = workdir / "m<x>.pth"  # a file name that must be escaped in HTML
    save_checkpoint(model, ckpt)
    (workdir / "m<x>.vocab.json").write_text(tok.to_json())
    (workdir / "t.txt").write_text(text)
    job = pipeline.Job(checkpoint=str(ckpt), text=str(workdir / "t.txt"), tokens=128,
                       baselines=("transformer-same-dims",))  # fmt: skip
    s = pipeline.summary(pipeline.run(job))
    return json.loads(json.dumps(s))  # what summary.json holds: plain JSON types only


@pytest.fixture(scope="module")
def report(summary):
    return render_report(summary)


@pytest.fixture(scope="module")
def bench():
    """A real (tiny, CPU) ``spike-energy bench`` result: eager timed, fused skipped."""
    from energy.timing import run_bench

    cfg = SpikeGPTConfig(vocab_size=40, n_layer=1, n_embd=16, ctx_len=8)
    return run_bench(cfg, batch=1, tokens=4, device="cpu", modes=("eager", "fused"), decode_batches=(1,),
                     decode_tokens=2, repeats=1, warmup=1)  # fmt: skip


def _imgs(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', html)


def test_every_section_is_there(report):
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in report, sid
    assert "<footer>" in report


def test_figures_are_inlined(report):
    imgs = _imgs(report)
    assert len(imgs) >= 9
    assert all(re.fullmatch(r"data:image/(svg\+xml|png);base64,[A-Za-z0-9+/=]+", src) for src in imgs)
    assert 'class="note"' not in report.split('id="timing"')[0]  # every figure drawn, none replaced by a note


def test_figures_drawn_with_a_helper_process_are_the_serial_ones(summary, monkeypatch):
    """Shared with a forked helper, the figures are byte for byte those drawn in one process, in the same order;
    a helper that dies leaves its figures to this process."""
    from concurrent.futures.process import BrokenProcessPool

    from reports import html

    serial = html._figures(summary, parallel=False)
    assert html._figures(summary, parallel=True) == serial
    assert list(serial) == [key for key, *_ in html.FIGURE_SPECS]

    class Dead:  # a pool whose worker has died: nothing can be cancelled, every result raises
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, *a, **k):
            class F:
                cancel = staticmethod(lambda: False)

                def result(self):
                    raise BrokenProcessPool("the helper died")

            return F()

    monkeypatch.setattr(html, "figure_helper", lambda: Dead())
    assert html._figures(summary, parallel=True) == serial


HELPER_THEN_KILLED = """
import multiprocessing, os, signal, sys
from reports.html import figure_helper
helper = figure_helper()
if helper is None:
    print("none")
    sys.exit(0)
helper.submit(int).result()
print(multiprocessing.active_children()[0].pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_figure_helper_ends_when_its_parent_is_killed():
    """A run killed outright (SIGKILL: no handler runs) leaves no idle figure helper behind."""
    r = subprocess.run([sys.executable, "-c", HELPER_THEN_KILLED], capture_output=True, text=True, timeout=60)
    if r.stdout.strip() == "none":
        pytest.skip("no figure helper here (fewer than two cores, or not Linux)")
    pid = int(r.stdout.strip())
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid)


def test_no_scripts_and_nothing_loaded_from_elsewhere(report):
    low = report.lower()
    assert "<script" not in low
    for pattern in REMOTE:
        assert pattern not in low, pattern
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", low)


def test_user_text_is_escaped(report, summary):
    assert "<script>alert(1)</script>" in summary["text"]["excerpt"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report
    assert "<script>" not in report
    assert "&lt;b&gt;bold&lt;/b&gt;" in report and "<b>bold</b>" not in report
    assert "&amp;amp;" in report  # the literal "&amp;" of the text, escaped once


def test_checkpoint_path_is_escaped(report, summary):
    assert summary["model"]["checkpoint"].endswith("m<x>.pth")
    assert "m&lt;x&gt;.pth" in report
    assert "m<x>" not in report


def test_summary_states_the_answer(report, summary):
    answer = re.search(r'<p class="answer"[^>]*>(.*?)</p>', report, re.S).group(1).replace("&#39;", "'")
    h = summary["headline"]
    assert answer == h["sentence"].replace("'", "'")
    assert answer.startswith("This is ") and "same-size transformer" in answer  # the verdict's first sentence
    assert "The cause, measured" not in answer  # a cause comes from the decomposition (issue 20)
    for label in summary["scenarios"].values():
        assert f"<td>{label}</td>" in report.replace("&#39;", "'")
    assert "No GPU timing was run" in report


def test_report_file_is_small_and_utf8(summary, workdir):
    out = workdir / "report.html"
    write_report(summary, out)
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert out.stat().st_size < 3_000_000


def test_report_without_baselines(summary):
    s = copy.deepcopy(summary)
    s["baselines"] = {}
    s["baseline_descriptions"] = {}
    s["headline"]["ratio_as_executed"] = {}
    s["headline"]["ratio_as_executed_memory"] = {}
    s["headline"]["reference"] = s["headline"]["comparator"] = s["headline"]["twin"] = None
    for k in ("sentence", "op_ratio", "energy_ratio", "twin_ratio", "decode_sentence"):
        s["headline"].pop(k, None)
    a = s["audit"]
    a["reference"] = a["twin"] = None
    for step in a["waterfall"]:
        step["ratio"], step["baseline_pj_per_token"] = {}, {}
    a["sensitivity"]["by_rate"] = [
        {"rate": r["rate"], "spikegpt_pj": r["spikegpt_pj"]} for r in a["sensitivity"]["by_rate"]
    ]
    a["sensitivity"]["by_precision"] = []
    a["break_even"] = {p: {m: {"energy_at_rate_0_pj": 1.0, "energy_per_unit_rate_pj": 2.0} for m in v}
                       for p, v in a["break_even"].items()}  # fmt: skip
    html = render_report(s)
    assert "No baselines were run" in html
    assert "No measured comparison was made" in html  # the summary sentence says so
    assert "Sensitivity to the firing rate: not drawn, no firing-rate sensitivity" in html
    assert len(_imgs(html)) >= 8  # the rest still drawn
    assert "drawing failed" not in html
    for sid in SECTIONS:
        assert f'id="{sid}"' in html


def test_report_with_bench(summary, bench):
    s = copy.deepcopy(summary)
    s["bench"] = json.loads(json.dumps(bench))
    html = render_report(s)
    timing = html.split('<section id="timing">')[1].split("</section>")[0]
    assert "No GPU timing was run" not in timing
    assert bench["device"] in timing
    assert "st-ok" in timing and "st-skipped" in timing  # eager ran, fused was skipped on CPU
    assert "Matmuls alone" in timing


def test_report_with_unknown_bench_shape(summary):
    s = copy.deepcopy(summary)
    s["bench"] = {"note": "<i>hand-written</i>"}
    html = render_report(s)
    assert "&lt;i&gt;hand-written&lt;/i&gt;" in html and "<i>hand-written" not in html


def test_report_with_nulls_and_missing_optional_parts(summary):
    s = copy.deepcopy(summary)
    s["firing_rate"] = {k: None for k in s["firing_rate"]}
    s["energy_pj_per_token"]["as_executed"] = None
    s["ppl"] = None
    for k in ("neurons", "raster", "firing_rate_by_position", "relu_sq_zero_fraction", "layers",
              "ops_per_token_by_layer", "energy_breakdown", "costs", "census"):  # fmt: skip
        s.pop(k, None)
    html = render_report(s)
    for sid in SECTIONS:
        assert f'id="{sid}"' in html
    assert "not drawn" in html
    assert "drawing failed" not in html


def test_report_of_only_the_required_keys():
    s = {k: {} for k in REQUIRED_KEYS}
    s.update(schema_version=1, tokens=0, uncounted_ops=[], assumptions=[])
    html = render_report(s)
    for sid in SECTIONS:
        assert f'id="{sid}"' in html
    assert "drawing failed" not in html


def test_uncounted_ops_are_listed(summary):
    s = copy.deepcopy(summary)
    s["uncounted_ops"] = [{"op": "aten::<weird>", "module": "blocks.0.att", "calls": 3, "status": "uncounted"}]
    html = render_report(s)
    section = html.split('<section id="uncounted">')[1].split("</section>")[0]
    assert "aten::&lt;weird&gt;" in section and "1 aten op ran without a cost rule" in section


def test_validate_summary_errors(summary):
    validate_summary(summary, "ok.json")
    with pytest.raises(SpikeEnergyError, match=r"x\.json: not a spike-energy summary \(a JSON object"):
        validate_summary([1, 2], "x.json")
    broken = {k: v for k, v in summary.items() if k not in ("audit", "tokens")}
    with pytest.raises(SpikeEnergyError, match=r"x\.json: .*missing keys: tokens, audit\).*spike-energy profile"):
        validate_summary(broken, "x.json")
    with pytest.raises(SpikeEnergyError, match="upgrade spike-energy"):
        validate_summary({**summary, "schema_version": 99}, "x.json")
    with pytest.raises(SpikeEnergyError, match=r"wrong type for: baselines"):
        validate_summary({**summary, "baselines": []}, "x.json")
    with pytest.raises(SpikeEnergyError, match="missing keys"):
        render_report({"model": {}})


def test_load_summary_errors(tmp_path, summary):
    with pytest.raises(SpikeEnergyError, match=r"nope\.json: no such file; pass the summary\.json"):
        load_summary(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpikeEnergyError, match=r"bad\.json: not (valid )?JSON \(.*line 1"):
        load_summary(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema_version": 1, "model": {}}))
    with pytest.raises(SpikeEnergyError, match=r"other\.json: not a spike-energy summary \(missing keys: tokens"):
        load_summary(other)
    good = tmp_path / "run" / "summary.json"
    good.parent.mkdir()
    good.write_text(json.dumps(summary))
    assert load_summary(good)["tokens"] == summary["tokens"]
    assert load_summary(good.parent)["tokens"] == summary["tokens"]  # a run directory works too


def test_compare_table(summary):
    b = copy.deepcopy(summary)
    b["energy_pj_per_token"]["as_executed"] *= 2
    out = compare_table(summary, b, "first-run", "second-run")
    lines = out.splitlines()
    assert "first-run" in lines[0] and "second-run" in lines[0] and "B/A" in lines[0]
    for label in summary["scenarios"].values():
        assert any(line.strip().startswith(label) for line in lines), label
    executed = next(line for line in lines if line.strip().startswith("as executed  ") or line.strip() == "as executed")
    assert executed.rstrip().endswith("2.00x")
    assert any("blocks.1.lif2" in line for line in lines)
    assert any(line.strip().startswith("vs rwkv-twin") for line in lines)
    assert any(line.strip().startswith("effective_mac") for line in lines)


def test_formatters():
    assert si(17909.76, "pJ") == "17.9 kpJ"
    assert si(999.96) == "1 k"
    assert si(0.00123, "s") == "1.23 ms"
    assert si(None) == "—" and si(float("nan")) == "—"
    assert energy(17909.76) == "17.9 nJ"
    assert energy(72550094.5) == "72.6 µJ"
    assert ratio(1320.2977) == "1,320.30×"
    assert ratio(None) == "—"


def test_rendered_by_chromium(report, tmp_path):
    """A real browser renders the page: a non-trivial screenshot, every section in the DOM, no console errors."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium binary")
    page = tmp_path / "report.html"
    page.write_text(report, encoding="utf-8")
    flags = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
    ]  # fmt: skip
    shot = tmp_path / "shot.png"
    r1 = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,4000", page.as_uri()],
                        capture_output=True, text=True, timeout=60)  # fmt: skip
    r2 = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=60)
    assert shot.is_file(), r1.stderr[-2000:]
    assert shot.stat().st_size > 20_000
    dom = r2.stdout
    for sid in SECTIONS:
        assert f'id="{sid}"' in dom, sid
    log = (r1.stderr + r2.stderr).splitlines()
    errors = [line for line in log if "Uncaught" in line or "ERROR:CONSOLE" in line or ":CONSOLE(" in line]
    assert not errors, errors
