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

from energy.app import pipeline
from reports.compare import compare_table, load_summary
from reports.html import energy, ratio, render_report, si, write_report
from reports.schema import REQUIRED_KEYS, validate_summary
from spikegpt import SpikeGPT, SpikeGPTConfig
from spikegpt.checkpoint import save_checkpoint
from spikegpt.errors import SpikeEnergyError
from spikegpt.tokenizer import CharTokenizer

SECTIONS = (
    "verdict", "summary", "firing", "operands", "ops", "energy", "baselines", "audit", "uncounted", "costs", "timing",
    "metadata",
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
    from energy.app.timing import run_bench

    cfg = SpikeGPTConfig(vocab_size=40, n_layer=1, n_embd=16, ctx_len=8)
    return run_bench(cfg, batch=1, tokens=4, device="cpu", modes=("eager", "fused"), decode_batches=(1,),
                     decode_tokens=2, repeats=1, warmup=1)  # fmt: skip


def _imgs(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', html)


def test_every_section_is_there(report):
    for sid in SECTIONS:
        assert re.search(f'<section id="{sid}"[ >]', report), sid
    assert "<footer>" in report


def test_figures_are_inlined(report):
    imgs = _imgs(report)
    assert len(imgs) >= 9
    assert all(re.fullmatch(r"data:image/(svg\+xml|png);base64,[A-Za-z0-9+/=]+", src) for src in imgs)
    assert 'class="note"' not in report.split('id="timing"')[0]  # every figure drawn, none replaced by a note


@pytest.mark.slow  # draws every figure three times (about 15 s quiet); CI's slow run keeps it
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
    energy_section = report.split('<section id="energy"')[1].split("</section>")[0].replace("&#39;", "'")
    for key, label in summary["scenarios"].items():
        if key in summary["energy_breakdown"]:
            assert f'<th class="n">{label}</th>' in energy_section
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
    timing = html.split('<section id="timing"')[1].split("</section>")[0]
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
    section = html.split('<section id="uncounted"')[1].split("</section>")[0]
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


@pytest.mark.slow  # headless Chromium
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


# ---------------------------------------------------------------------------- issue 21: a report read to the end


def _section(html: str, sid: str) -> str:
    return html.split(f'<section id="{sid}"')[1].split("</section>")[0]


VERDICT = {
    "sentences": ["This is the 30.1k-parameter model <tested>.", "The paper claims 32.2x; measured: 1.4x.",
                  "The largest cause: no projection reads spikes.", "The int8 ANN costs 0.09x SpikeGPT at int8."],
    "decomposition": [{"factor": "projections read floats", "share": 12.5, "description": "MACs, not ACs"},
                      {"factor": "elementwise ops", "share": 1.8, "description": "exp, sigmoid, LayerNorm"}],
}  # fmt: skip


def test_verdict_box_comes_first_with_the_generated_sentences(summary):
    """The verdict box is the first section, shows the generated sentences (escaped) as a short list and the
    decomposition as a table; the long headline sentence moves into the model section."""
    s = copy.deepcopy(summary)
    s["headline"]["verdict"] = VERDICT
    html = render_report(s)
    main = html.split("<main")[1]
    assert re.search(r'<section id="(\w+)"', main).group(1) == "verdict"
    box = _section(html, "verdict")
    assert "&lt;tested&gt;" in box and "<tested>" not in box
    positions = [box.index(x.replace("<", "&lt;").replace(">", "&gt;")) for x in VERDICT["sentences"]]
    assert positions == sorted(positions) and box.count("<li>") == 4
    assert "projections read floats" in box and "12.50×" in box and "exp, sigmoid, LayerNorm" in box
    assert s["headline"]["sentence"].replace("'", "&#39;") not in box
    assert 'id="headline"' in _section(html, "summary")


def test_verdict_box_falls_back_to_the_headline_sentence(report, summary):
    """A summary made before the verdict existed: the box shows its headline sentence."""
    old = copy.deepcopy(summary)
    old["headline"].pop("verdict", None)
    box = _section(render_report(old), "verdict")
    assert summary["headline"]["sentence"].replace("'", "&#39;") in box and 'id="headline"' in box


def test_every_section_below_the_verdict_is_closed_with_a_line(report):
    for sid in SECTIONS[1:]:
        sec = _section(report, sid)
        assert re.match(r'\s*class="fold">\s*<details>\s*<summary><h2>[^<]+</h2><span class="line">[^<]{20,}</span>',
                        sec), sid  # fmt: skip


def test_chip_figures_are_named_by_their_scenario(report, summary, capsys):
    """Issue 21.2: the chips price memory traffic, so their SpikeGPT figure is 'as executed + memory (SRAM)', in the
    report and in the CLI's chip table; 'as executed' alone never names it."""
    from energy.app.cli import _print_platforms

    chips = _section(report, "platforms")
    assert "SpikeGPT as executed + memory (SRAM)" in chips
    assert "SpikeGPT as executed<" not in chips and ">as executed<" not in chips
    _print_platforms(summary["platforms"])
    out = capsys.readouterr().out
    assert "as executed + memory (SRAM)" in out
    assert max(len(line) for line in out.splitlines()) <= 80 and "…" not in out


def test_sram_budget_is_shown_with_its_unit(report, summary):
    """Issue 21.3: the SRAM budget is a number of bytes, not picojoules: the unit is in the row."""
    row = next(r for r in summary["assumptions"] if r["op"] == "sram_budget")
    costs = _section(report, "costs")
    assert f"{row['pj']:,.0f} bytes (24 MiB)" in costs
    assert '<th class="n">pJ</th>' not in costs


def test_cost_table_rows_are_shown_once(report, summary):
    """The cost table's rows in use are not repeated in the whole table below them."""
    costs = _section(report, "costs")
    table = {(r["op"], r["dtype"]) for r in summary["costs"]["table"]}
    both = [r for r in summary["assumptions"] if (r["op"], r["dtype"]) in table]
    assert len(both) >= 10  # rows that the two tables once both showed
    for r in both:
        cell = f'<td class="name">{r["op"]}</td><td>{r["dtype"]}</td>'
        assert costs.count(cell) == 1, cell
    assert costs.count('<td class="name">') == len(table | {(r["op"], r["dtype"]) for r in summary["assumptions"]})


def test_per_character_figures_are_not_repeated_for_a_character_model(report, summary):
    """A token is one character here: the chip table shows one figure per cell and says why, not every cell
    twice ('/ char')."""
    assert summary["chars_per_token"] == 1.0
    assert "/ char</span>" not in report
    assert "a token is one character" in _section(report, "platforms")
    assert "a token is one character" in _section(report, "energy")


def test_notes_that_do_not_apply_are_not_shown(summary):
    """The released RNN path's fp16 rescale (after every 6th block of a BPE model) is not mentioned for a 2-block
    character model; it is for an 18-block BPE one."""
    assert "fp16 rescale" not in render_report(summary)
    s = copy.deepcopy(summary)
    s["unit"], s["model"]["n_layer"] = "token", 18
    from reports.html import forward_note

    assert "fp16 rescale" in forward_note(s)


def test_jargon_is_explained_where_it_appears(report):
    audit = _section(report, "audit")
    assert "E(0) is its energy with no" in audit and "dE/dr what each unit of rate adds" in audit
    assert "like for like" not in audit
    unc = _section(report, "uncounted")
    assert "PyTorch operators (aten ops)" in unc and "priced by a cost rule" in unc and "(attributed" not in unc
    from reports.html import glossary

    assert [t for t, _ in glossary("20 a token-shift mix, 4 a gated product (r · WKV); 0 of them like-for-like")] == [
        "like-for-like", "token-shift mix", "r · WKV"]  # fmt: skip


def test_raw_keys_are_not_labels(report):
    """Issue 21.1: timings and environment entries are labelled in words, not with summary keys."""
    meta = _section(report, "metadata")
    labels = re.findall(r"<dt>([^<]*)</dt>", meta)
    assert labels and not [k for k in labels if re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", k)], labels
    assert all(len(k) <= 30 for k in labels), labels


def test_the_two_twins_have_two_names(report):
    from reports.labels import model_name
    from reports.plots import pareto

    assert "stripped twin (released weights, LIF removed, untrained)" in _section(report, "baselines")
    fig = pareto({"models": [
        {"name": "twin", "variant": "twin", "bpc": 2.5, "energy_pj_per_char": {"as_executed": 7e6}},
        {"name": "demo", "variant": "released", "bpc": 2.8, "energy_pj_per_char": {"as_executed": 7.5e6}},
    ]})  # fmt: skip
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "trained twin, as executed" in labels and not any("twin (twin)" in t for t in labels)
    assert model_name("rwkv-twin") != model_name("twin")


def test_ops_figure_names_macs_and_leaves_out_what_cannot_be_seen():
    """Issue 21.8: float MACs are not 'synaptic ops'; ops under 1% of their panel are not in the legend."""
    from reports.plots import ops_by_layer

    fig = ops_by_layer({"blocks.0.att": {"effective_mac": 1e6, "add": 5e3, "mul": 4e3, "rsqrt": 2, "lookup": 1}})
    texts = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
    assert "MAC, float input (zero operands skipped)" in texts
    assert "rsqrt" not in texts and "lookup" not in texts
    assert "rsqrt, lookup" in fig.axes[1].get_legend().get_title().get_text()
    assert not any("synaptic" in ax.get_ylabel() for ax in fig.axes)


def test_chip_chart_has_the_report_style_and_no_hatching_on_a_log_axis():
    from reports.plots import STYLE, platform_energy

    rows = [{"label": "loihi · 14 nm", "workload": "spikegpt", "pj_per_token": 1.5e7, "native_pj": 1e5,
             "native_fraction": 0.011},
            {"label": "digital · 45 nm", "workload": "spikegpt", "pj_per_token": 6.3e7}]  # fmt: skip
    fig = platform_energy(rows, {"spikegpt": "SpikeGPT as executed + memory (SRAM)"})
    log_ax, share_ax = fig.axes[:2]
    assert log_ax.get_xscale() == "log" and share_ax.get_xscale() == "linear"
    assert not any(p.get_hatch() for ax in fig.axes for p in ax.patches)
    assert log_ax.title.get_fontweight() == STYLE["axes.titleweight"]
    widths = sorted(p.get_width() for p in share_ax.patches if p.get_width() == p.get_width())
    assert widths[-1] == pytest.approx(0.011)


def test_scale_chart_says_what_the_papers_accounting_is_for_an_ann(summary):
    from reports.html import _figure_arguments

    args, _ = _figure_arguments(summary)["baselines"]
    assert "ANNs MACs" in args[2]["paper"]


def test_audit_in_80_columns_says_impossible_rates_in_words(summary):
    """Issue 21: the audit's tables fit 80 columns without cutting a cell, and a break-even rate below 0 or above 1
    is printed as the report prints it ('none (< 0)', 'every (> 1)'), never as a number such as -0.734."""
    from rich.console import Console

    from reports.audit_text import print_audit
    from reports.html import _break_even_rows
    from reports.labels import beyond

    c = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    print_audit(summary["audit"], c)
    out = c.export_text()
    assert max(len(line) for line in out.splitlines()) <= 80 and "…" not in out
    rates = [r[k] for r in _break_even_rows(summary["audit"]) for k in ("rate_32", "rate_twin", "rate_int8")]
    outside = [r for r in rates if r is not None and not 0 <= r <= 1]
    assert outside  # the tiny model has such rates: the check below is not empty
    for r in outside:
        assert f"{r:.3g}" not in out.split("break-even")[1].split("sensitivity")[0]
    assert out.count("none (< 0)") + out.count("every (> 1)") >= len(outside)
    assert {beyond(r) for r in outside} <= {"none (< 0)", "every (> 1)"}


def test_pareto_table_fits_80_columns(capsys):
    from energy.app.cli import _print_pareto

    m = {"variant": "spike-input", "bpc": 2.91, "firing_rate_overall": 0.2, "projections": {"spike": 29, "total": 29},
         "ops_per_token": {"ac": 1234567.0}, "energy_pj_per_char": {"as_executed": 7.5e6, "as_executed_memory": 6.3e7},
         "best_platform": {"platform": "loihi", "node_nm": 14, "pj_per_char": 1.5e7}}  # fmt: skip
    kinds = (("demo", "released"), ("twin", "twin"), ("spike-input", "spike-input"))
    models = [{**m, "name": n, "variant": v} for n, v in kinds]
    res = {"precision": "fp32", "tokens": 2048, "models": models}
    _print_pareto(res)
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80 and "…" not in out
    assert "1.23 M" in out and "7.5 µJ" in out and "63 µJ" in out and "loihi 14 nm" in out
    assert "trained twin" in out and "twin (twin)" not in out


# ---------------------------------------------------------------------------- issue 20: the second review


def test_prefill_figure_draws_the_summarys_ratios_beside_the_decode_curves(report, summary):
    """Item D: the prefill ratio (comparator / SpikeGPT energy per token against the comparator's context) is a
    figure, inlined next to the decode curves; the lines it draws are summary["decode"]["prefill"] point for
    point, with the run's context and the checkpoint's training context as vertical lines and parity at 1."""
    from reports.plots import prefill_ratio, prefill_series

    pre = summary["decode"]["prefill"]
    run_T = summary["headline"]["context"]["comparator"]
    ctx_len = summary["model"]["ctx_len"]
    series = prefill_series(pre)
    assert {s["scenario"] for s in series.values()} == {"as_executed", "as_executed_memory"}
    for s in series.values():
        assert s["comparator"] == pre["comparator"]
        assert s["contexts"] == pre["contexts"] and s["ratio"] == pre["ratio"][s["scenario"]]
    fig = prefill_ratio(pre, run_T, ctx_len, 32.2)
    ax = fig.axes[0]
    drawn = {line.get_label(): line for line in ax.get_lines()}
    for label, s in series.items():
        assert list(drawn[label].get_xdata()) == pre["contexts"]
        assert list(drawn[label].get_ydata()) == pytest.approx(pre["ratio"][s["scenario"]], rel=1e-12)
    for mark, key in ((ctx_len, "ctx_len"), (run_T, "run")):  # the curve passes through the marked contexts,
        i = pre["contexts"].index(mark)  # where it equals the ratios the verdict's first sentence states
        for scen in ("as_executed", "as_executed_memory"):
            assert pre["ratio"][scen][i] == pytest.approx(summary["headline"]["context_ratios"][key][scen], rel=1e-9)
    vertical = {float(line.get_xdata()[0]) for line in ax.get_lines() if line.get_label().endswith(" tokens")}
    assert vertical == {float(run_T), float(ctx_len)}
    assert any(line.get_label().startswith("1×") and line.get_ydata()[0] == 1 for line in ax.get_lines())
    assert ax.get_xscale() == "log" and "pJ / pJ" in ax.get_ylabel() and "context" in ax.get_xlabel()
    sec = _section(report, "baselines")
    decode_at, prefill_at = sec.index('alt="Decode mode"'), sec.index('alt="Prefill ratio by context"')
    assert decode_at < prefill_at  # beside the decode curves, in the same section
    img = re.search(r'<img src="([^"]+)" alt="Prefill ratio by context"', sec).group(1)
    assert img.startswith("data:image/svg+xml;base64,")  # inlined: the report stays self-contained
    prefill = sec[sec.index('id="prefill"') :]
    assert "same-size transformer / SpikeGPT energy per token (pJ / pJ)" in prefill  # the caption, not a raw key


def test_prefill_figure_marks_the_claim_only_within_its_range():
    from reports.plots import prefill_ratio

    pre = {"comparator": "transformer-same-dims", "contexts": [1, 10, 100], "ratio": {"as_executed": [1.1, 2, 40]}}
    labels = [line.get_label() for line in prefill_ratio(pre, 100, 10).axes[0].get_lines()]
    # the claim is in another metric than the axis (energy-weighted ops, not pJ as executed): said on the line
    assert "paper: 32.2× (energy-weighted ops, other metric)" in labels
    pre["ratio"]["as_executed"] = [1.1, 1.5, 2.0]
    ax = prefill_ratio(pre, 100, 10).axes[0]
    assert not any(str(line.get_label()).startswith("paper: 32.2×") for line in ax.get_lines())
    assert any("32.2× (energy-weighted ops) lies above this range" in t.get_text() for t in ax.texts)


def test_comparator_card_shows_the_verdicts_metric(report, summary):
    """The same-size transformer's card shows the verdict's figure (energy-weighted operations, the paper's
    metric) as its main number, named; the plain operation ratio and the energy ratios are secondary, each
    labelled with its metric, so that no two numbers of different metrics read as the same claim."""
    from reports.html import ratio_short

    h = summary["headline"]
    weighted = h["paper_metric"]["measured_paper_metric"]
    card = re.search(r'id="card-comparator">(.*?)</div></div>', report, re.S).group(1)
    main = re.search(r'<div class="v">(.*?)</div>', card, re.S).group(1)
    assert main == f"{ratio_short(weighted)} <small>energy-weighted ops</small>"
    sub = re.search(r'<div class="sub">(.*)', card, re.S).group(1)
    assert f"plain ops (MACs + ACs, unweighted): {ratio(h['op_ratio'])}" in sub
    assert f"energy (pJ): {ratio(h['energy_ratio']['as_executed'])} as executed" in sub
    assert f"at {h['context']['comparator']:,} tokens" in sub
    like, pc = h["paper_metric"]["measured_paper_metric_at_paper_context"], h["paper_metric"]["paper_figure_context"]
    if pc != h["context"]["comparator"]:  # the verdict's own figure is the like-for-like one, named as such
        assert f"at the checkpoint's {pc:,}-token training context: {ratio(like)}, the verdict's figure" in sub
    else:
        assert ": the verdict's figure" in sub
    assert "Operations are MACs + ACs as the paper counts them" not in _section(report, "verdict")


def test_baselines_line_names_the_twin_the_headline_uses(summary):
    """The closed line of the baselines section named the headline's twin ratio 'the stripped twin' even when
    it was the trained twin's."""
    from reports.html import context

    s = copy.deepcopy(summary)
    s["headline"]["twin_used"] = "trained twin"
    s["headline"]["twins"] = {"trained": {"bpc": 2.506, "ratio": {"as_executed": 0.9567}},
                              "stripped": {"bpc": 7.13, "ratio": {"as_executed": 1.01}}}  # fmt: skip
    s["headline"]["twin_ratio"] = {"as_executed": 0.9567, "as_executed_memory": 0.95}
    line = context(s)["lines"]["baselines"]
    assert "the trained twin (2.51 bits/char) 0.96×" in line and "stripped" not in line


def test_cli_summary_names_the_metric_and_the_stripped_twins_quality(summary, capsys, monkeypatch):
    """The CLI's per-character line set the paper's "32.2x fewer ops" beside energy ratios as if one metric, and
    named the stripped twin without its bits per character."""
    from energy.app.cli import _print_summary

    monkeypatch.setenv("COLUMNS", "400")  # one line per paragraph, so the phrases can be found whole
    s = copy.deepcopy(summary)
    s["headline"]["twins"] = {"stripped": {"bpc": 7.13, "ratio": {"as_executed": 1.01}}}
    s["headline"]["ratio_as_executed"] = {"rwkv-twin": 1.01, "transformer-same-dims": 2.24}
    _print_summary(s)
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("energy per character"))
    assert "stripped twin (7.13 bits/char) 1.01x" in line
    assert "in pJ" in line and "fewer ops" not in line and "energy-weighted operations" in line


def test_shapley_is_explained_where_the_verdict_uses_it():
    from reports.html import glossary

    terms = dict(glossary("the largest factors (Shapley shares) are projections read floats (×0.32)"))
    assert "Shapley" in terms and "multiply to the whole gap" in terms["Shapley"]


def test_kept_figures_are_the_drawn_ones_and_any_change_draws_again(summary, tmp_path, monkeypatch, caplog):
    """Issue 24: figures kept on disk (``reports.figure_cache``) are read back equal to a fresh drawing; a
    change of a figure's input data draws that figure again (and only it), a change of the drawing code draws
    all; an entry whose data URI is not the figure's own format is refused (even with a correct checksum)."""
    from reports import figure_cache, html

    specs = [s for s in html.FIGURE_SPECS if s[0] in ("firing_by_layer", "raster", "pareto")]
    monkeypatch.setattr(html, "FIGURE_SPECS", tuple(specs))  # an svg, a png, one with nothing to draw
    fresh = html._figures(summary, parallel=False)
    assert fresh["pareto"]["uri"] is None and fresh["raster"]["uri"].startswith("data:image/png")
    drawn = []
    real_draw = html._draw
    monkeypatch.setattr(html, "_draw", lambda *job: drawn.append(job[2]) or real_draw(*job))
    assert html._figures(summary, parallel=False, cache=tmp_path) == fresh and len(drawn) == 3
    assert len(list(tmp_path.glob("*.json"))) == 3  # the note of a figure with no data is kept too
    assert html._figures(summary, parallel=True, cache=tmp_path) == fresh and len(drawn) == 3  # nothing drawn

    changed = copy.deepcopy(summary)
    changed["firing_rate"]["blocks.0.lif1"] = changed["firing_rate"]["blocks.0.lif1"] / 2 + 0.01
    again = html._figures(changed, parallel=False, cache=tmp_path)
    assert drawn[3:] == ["firing_rate_by_layer"]  # only the figure whose data changed
    assert again["firing_by_layer"] == html._figures(changed, parallel=False)["firing_by_layer"] != fresh[
        "firing_by_layer"]  # fmt: skip

    with monkeypatch.context() as m:
        m.setattr(figure_cache, "_code_and_libraries", lambda: "another version of the drawing code")
        n = len(drawn)
        assert html._figures(summary, parallel=False, cache=tmp_path) == fresh and len(drawn) == n + 3

    key = figure_cache.figure_key("raster", *next((t, f, fn) for k, t, f, fn in specs if k == "raster"),
                                  *html._figure_arguments(summary)["raster"])  # fmt: skip
    bad = {"title": fresh["raster"]["title"], "uri": "javascript:alert(1)//", "note": None}
    (tmp_path / f"{key}.json").write_text(json.dumps({"format": 1, "key": key, "sha256": figure_cache._checksum(bad),
                                                      "figure": bad}))  # fmt: skip
    n = len(drawn)
    assert html._figures(summary, parallel=False, cache=tmp_path) == fresh and drawn[n:] == ["spike_raster"]
    assert "ignoring the corrupt figure cache entry" in caplog.text
    assert figure_cache.figure_key("x", "t", "svg", "f", (float("nan"),), {}) is None  # not plain data: never kept


def test_a_report_whose_figures_are_all_kept_imports_no_matplotlib(summary, tmp_path):
    """Issue 24: matplotlib (0.5-1 s to import) is loaded only where a figure is drawn."""
    from reports import html

    html._figures(summary, parallel=False, cache=tmp_path / "figures")  # fills the cache
    (tmp_path / "s.json").write_text(json.dumps(summary))
    script = ("import json, sys; from pathlib import Path; from reports.html import render_report; "
              f"out = render_report(json.load(open({str(tmp_path / 's.json')!r})), "
              f"figure_cache=Path({str(tmp_path / 'figures')!r})); "
              "print('matplotlib' in sys.modules, out.count('data:image/'))")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", str(len(_imgs(render_report(summary))))]


def test_the_figure_key_follows_matplotlibrc_the_libraries_and_refuses_ambiguous_data(
    summary, tmp_path, monkeypatch, caplog
):
    """Review of issue 24: a user's matplotlibrc (where matplotlib itself would find it) and the version of any
    library matplotlib draws with are in the key; data whose JSON form is ambiguous is never kept; a kept note
    must be one of a figure with no data; every project module the drawing code imports is hashed."""
    import ast
    import importlib.util
    from importlib import metadata
    from pathlib import Path

    from reports import figure_cache, html

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MATPLOTLIBRC", raising=False)
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mplconfig"))
    spec = next(s for s in html.FIGURE_SPECS if s[0] == "firing_by_layer")
    monkeypatch.setattr(html, "FIGURE_SPECS", (spec,))
    args = html._figure_arguments(summary)["firing_by_layer"]
    key = figure_cache.figure_key(spec[0], *spec[1:], *args)
    assert key is not None
    for where in (tmp_path / "matplotlibrc", tmp_path / "mplconfig" / "matplotlibrc"):
        where.parent.mkdir(exist_ok=True)
        where.write_text("lines.linewidth: 3\n")
        assert figure_cache.figure_key(spec[0], *spec[1:], *args) != key, where
        where.unlink()
    rc = tmp_path / "elsewhere.rc"
    rc.write_text("lines.linewidth: 3\n")
    monkeypatch.setenv("MATPLOTLIBRC", str(rc))
    assert figure_cache.figure_key(spec[0], *spec[1:], *args) != key
    monkeypatch.delenv("MATPLOTLIBRC")
    assert figure_cache.figure_key(spec[0], *spec[1:], *args) == key

    real = metadata.version
    for dist in ("kiwisolver", "fonttools", "pyparsing"):
        figure_cache._code_and_libraries.cache_clear()
        monkeypatch.setattr(metadata, "version", lambda d, dist=dist: "0.0.0" if d.lower() == dist else real(d))
        assert figure_cache.figure_key(spec[0], *spec[1:], *args) != key, dist
    monkeypatch.setattr(metadata, "version", real)
    figure_cache._code_and_libraries.cache_clear()
    assert figure_cache.figure_key(spec[0], *spec[1:], *args) == key

    assert figure_cache.figure_key("x", "t", "svg", "f", ({1: 2},), {}) is None  # 1 and "1" are one JSON key
    assert figure_cache.figure_key("x", "t", "svg", "f", ([(1, 2)],), {}) is None  # a tuple reads as a list
    assert figure_cache.figure_key("x", "t", "svg", "f", ({"a": [1, 2.5, None]},), {}) is not None

    title = spec[1]
    forged = {"title": title, "uri": None, "note": "the figure shows SpikeGPT wins"}
    (tmp_path / f"{key}.json").write_text(json.dumps({"format": 1, "key": key, "sha256": figure_cache._checksum(
        forged), "figure": forged}))  # fmt: skip
    assert html._figures(summary, parallel=False, cache=tmp_path)["firing_by_layer"]["uri"] is not None
    assert "ignoring the corrupt figure cache entry" in caplog.text

    ours = {"reports", "energy", "spikegpt"}
    for name in figure_cache.DRAWING_MODULES:
        tree = ast.parse(Path(importlib.util.find_spec(name).origin).read_text())
        for node in ast.walk(tree):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])  # fmt: skip
            if isinstance(node, ast.ImportFrom) and node.module == "reports":
                mods = [f"reports.{a.name}" for a in node.names]
            for m in mods:
                if m.split(".")[0] == "reports":
                    assert m in figure_cache.DRAWING_MODULES, f"{name} imports {m}, which the key does not hash"
                assert m.split(".")[0] not in ours - {"reports"} or m in ("spikegpt.errors", "spikegpt.safeio"), (
                    f"{name} imports {m}: a project module the figure key does not hash"
                )
