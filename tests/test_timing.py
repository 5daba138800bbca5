"""energy.app.timing.run_bench on CPU, and the fused kernels in the model against eager (Triton interpreter on CPU)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from energy.app import timing
from spikegpt import kernels, preset

REPO = Path(__file__).resolve().parents[1]
TINY = preset("tiny")
needs_triton = pytest.mark.skipif(not kernels.TRITON_AVAILABLE, reason="Triton is not installed")


def _bench(**overrides):
    args = dict(
        batch=2,
        tokens=8,
        device="cpu",
        modes=("eager", "fused", "compiled"),
        decode_batches=(1, 2),
        decode_tokens=3,
        repeats=2,
        warmup=1,
        max_compile_steps=0,  # compiling on CPU takes minutes: the tests check it is skipped with a reason
    )
    return timing.run_bench(TINY, **{**args, **overrides})


def test_run_bench_on_cpu():
    result = _bench()
    json.dumps(result, allow_nan=False)  # JSON-able, no NaN or inf

    assert result["device_type"] == "cpu" and result["device"]
    assert result["versions"]["torch"] == torch.__version__
    assert result["settings"]["dtype"] == "float32" and result["settings"]["config"] == TINY.to_dict()

    eager = result["forward"]["eager"]
    assert eager["status"] == "ok" and len(eager["samples_s"]) == 2
    assert 0 < eager["min_s"] <= eager["median_s"] <= eager["max_s"] and eager["first_call_s"] > 0
    assert eager["tokens_per_s"] == pytest.approx(2 * 8 / eager["median_s"])

    fused = result["forward"]["fused"]
    assert fused["status"] == "skipped" and ("CUDA" in fused["reason"] or "Triton" in fused["reason"])
    compiled = result["forward"]["compiled"]
    assert compiled["status"] == "skipped" and "max_compile_steps=0" in compiled["reason"]
    for mode in ("fused", "compiled"):
        assert [d["status"] for d in result["decode"][mode]] == ["skipped", "skipped"]
        assert result["decode"][mode][0]["reason"] == result["forward"][mode]["reason"].replace("8 = 16", "1 = 2")

    decode = result["decode"]["eager"]
    assert [d["batch"] for d in decode] == [1, 2]
    for d in decode:
        assert d["status"] == "ok" and d["median_s"] > 0
        assert d["tokens_per_s"] == pytest.approx(d["batch"] * 3 / d["median_s"])

    matmul = result["matmul"]
    C, H, V, L = TINY.n_embd, TINY.ffn_hidden, TINY.vocab_size, TINY.n_layer
    # per block: key, value, receptance, output (C x C), ffn key (C x H), value (H x C), receptance (C x C); head
    assert matmul["n_linear"] == 7 * L + 1
    assert matmul["n_mac"] == 2 * 8 * (L * (5 * C * C + 2 * C * H) + C * V)
    assert matmul["median_s"] > 0 and matmul["flop_per_s"] > 0

    derived = result["derived"]
    assert derived["nonmatmul_s"]["eager"] == pytest.approx(eager["median_s"] - matmul["median_s"])
    assert derived["forward_over_matmul"]["eager"] == pytest.approx(eager["median_s"] / matmul["median_s"])
    assert derived["eager_over_fused_nonmatmul"] is None and derived["fused_over_matmul"] is None
    assert derived["notes"], "undefined ratios must say why"


def test_run_bench_reports_a_failing_compile(monkeypatch):
    def broken_compile(model, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("backend exploded")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    result = _bench(modes=("eager", "compiled"), decode_batches=(1,), max_compile_steps=10**6)
    for entry in (result["forward"]["compiled"], *result["decode"]["compiled"]):
        assert entry["status"] == "skipped" and "backend exploded" in entry["reason"]
    assert set(result["derived"]["forward_over_matmul"]) == {"eager"}


def test_run_bench_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown modes"):
        _bench(modes=("eager", "turbo"))
    with pytest.raises(ValueError, match="tokens must be >= 1"):
        _bench(tokens=0)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA device"):
            _bench(device="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script would benchmark the 216M model")
def test_bench_gpu_script_without_cuda(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in proc.stderr and not out.exists()


# ---------------------------------------------------------------------------------
# kernels="fused" against the eager model (needs Triton; runs under its interpreter on CPU)
# ---------------------------------------------------------------------------------


def fused_forward(model, idx, state=None):
    model.kernels = "fused"
    try:
        with torch.no_grad():
            return model(idx, state)
    finally:
        model.kernels = "eager"


def _compare(model, idx, record_property):
    """Per-layer eager spikes vs fused counts: rates, per-channel count mismatch, logits."""
    eager = model(idx, return_spikes=True)
    fused = fused_forward(model, idx)
    assert set(fused.spike_counts) == set(eager.spikes)
    report = {}
    for name, spikes in eager.spikes.items():
        n = spikes.numel()
        want = spikes.sum(dim=(0, 1))
        got = fused.spike_counts[name]
        assert got.shape == want.shape and got.dtype == torch.int32
        report[name] = {
            "rate_eager": spikes.mean().item(),
            "rate_fused": got.sum().item() / n,
            # a lower bound on the fraction of spikes that differ
            "count_mismatch_fraction": (got - want).abs().sum().item() / n,
        }
    record_property("spike_comparison", report)
    print(json.dumps(report, indent=1))  # shown with pytest -s
    return eager, fused, report


@needs_triton
def test_fused_forward_float32_rates(tiny32, record_property):
    idx = torch.randint(TINY.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    eager, fused, report = _compare(tiny32, idx, record_property)
    for name, r in report.items():
        assert 0.02 < r["rate_eager"] < 0.6, f"{name}: the test needs neurons that fire, rate {r['rate_eager']}"
        assert r["rate_fused"] == pytest.approx(r["rate_eager"], rel=0.01), f"{name}: {r}"
    assert fused.logits.dtype == torch.float32
    torch.testing.assert_close(fused.logits, eager.logits, rtol=1e-4, atol=1e-4)


@needs_triton
def test_fused_forward_float64_identical(tiny64, record_property):
    idx = torch.randint(TINY.vocab_size, (2, 16), generator=torch.Generator().manual_seed(2))
    eager, fused, report = _compare(tiny64, idx, record_property)
    for name, spikes in eager.spikes.items():
        assert torch.equal(fused.spike_counts[name], spikes.sum(dim=(0, 1)).int()), f"{name}: {report[name]}"
    torch.testing.assert_close(fused.logits, eager.logits, rtol=1e-12, atol=1e-12)
    # the state matches eager's: a following chunk gives the same result
    nxt = torch.randint(TINY.vocab_size, (2, 5), generator=torch.Generator().manual_seed(3))
    eager2 = tiny64(nxt, eager.state, return_spikes=True)
    fused2 = fused_forward(tiny64, nxt, fused.state)
    torch.testing.assert_close(fused2.logits, eager2.logits, rtol=1e-12, atol=1e-12)
    for name, spikes in eager2.spikes.items():
        assert torch.equal(fused2.spike_counts[name], spikes.sum(dim=(0, 1)).int()), name


@needs_triton
def test_fused_forward_streaming_equals_parallel(tiny64):
    idx = torch.randint(TINY.vocab_size, (2, 6), generator=torch.Generator().manual_seed(4))
    whole = fused_forward(tiny64, idx)
    state, logits, counts = None, [], {}
    for t in range(idx.shape[1]):
        out = fused_forward(tiny64, idx[:, t : t + 1], state)
        state = out.state
        logits.append(out.logits)
        for name, c in out.spike_counts.items():
            counts[name] = counts.get(name, 0) + c
    torch.testing.assert_close(torch.cat(logits, dim=1), whole.logits, rtol=1e-12, atol=1e-12)
    for name, c in whole.spike_counts.items():
        assert torch.equal(counts[name], c), name


@needs_triton
def test_fused_forward_rejects_bad_idx(tiny32):
    with pytest.raises(ValueError, match="idx must have shape"):
        fused_forward(tiny32, torch.zeros(3, dtype=torch.long))
