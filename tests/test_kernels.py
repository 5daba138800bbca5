"""The fused Triton kernels against the eager modules of spikegpt.model, on identical inputs.

On CPU the kernels run under Triton's interpreter. ``spikegpt.kernels`` decorates its
kernels per call, in interpreter mode for CPU tensors, and uses only Triton builtins, so
these tests need no ``TRITON_INTERPRET`` and pass whichever module imported ``triton``
first in this process. ``test_triton_interpret_env_var`` checks the documented route
(``TRITON_INTERPRET=1`` set before anything imports Triton) in a fresh process. With a
CUDA device the same tests also run compiled, at a bigger size.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from spikegpt import kernels  # noqa: E402
from spikegpt.model import LIF, WKV, Gate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# (device, (B, T, C)): C not a multiple of kernels.BLOCK_C, T not a multiple of kernels.CHUNK_T
SHAPES = [pytest.param("cpu", (2, 21, 40), id="cpu")]
if torch.cuda.is_available():
    SHAPES.append(pytest.param("cuda", (4, 300, 200), id="cuda"))


def _wkv_inputs(shape, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, T, C = shape

    def rand(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64)

    k = (rand(B, T, C) * 20).clamp(-60, 60)
    k[0, : T // 2, 0] = 60.0  # large keys: the stable form must not overflow
    k[-1, T // 2 :, -1] = -60.0
    inputs = dict(
        time_decay=rand(C),
        time_first=rand(C),
        k=k,
        v=rand(B, T, C),
        r=torch.sigmoid(rand(B, T, C)),
    )
    return {name: t.to(device=device, dtype=dtype) for name, t in inputs.items()}


def _eager_wkv_gate(time_decay, time_first, k, v, r, state=None):
    y, state = WKV()(time_decay, time_first, k, v, state)
    return Gate()(r, y), state


def _assert_states_close(got, want, **tol):
    for name, a, b in zip(("aa", "bb", "pp"), got, want):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"state {name}: {m}", **tol)


# ---------------------------------------------------------------------------------
# WKV + gate
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("device,shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_wkv_gate_matches_eager(device, shape, dtype, tol):
    inputs = _wkv_inputs(shape, device, dtype)
    y, state = kernels.wkv_gate(**inputs)
    y_ref, state_ref = _eager_wkv_gate(**inputs)
    assert y.dtype == dtype and y.shape == shape
    assert all(s.dtype == dtype and s.shape == (shape[0], shape[2]) for s in state)
    torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol)
    _assert_states_close(state, state_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("device,shape", SHAPES)
def test_wkv_gate_incoming_state_and_chunks(device, shape):
    """A nonzero incoming state gives eager's result; two chunks with the state carried give one pass."""
    B, T, C = shape
    warm = _wkv_inputs((B, 5, C), device, torch.float32, seed=1)
    _, state0 = _eager_wkv_gate(**warm)  # a realistic nonzero state
    inputs = _wkv_inputs(shape, device, torch.float32)

    y, state = kernels.wkv_gate(**inputs, state=state0)
    y_ref, state_ref = _eager_wkv_gate(**inputs, state=state0)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    _assert_states_close(state, state_ref, rtol=1e-5, atol=1e-5)

    cut = T // 3
    params = dict(time_decay=inputs["time_decay"], time_first=inputs["time_first"])
    first = {n: inputs[n][:, :cut] for n in ("k", "v", "r")}
    second = {n: inputs[n][:, cut:] for n in ("k", "v", "r")}
    y1, mid = kernels.wkv_gate(**params, **first, state=state0)
    y2, end = kernels.wkv_gate(**params, **second, state=mid)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y, rtol=1e-6, atol=1e-7)
    _assert_states_close(end, state, rtol=1e-6, atol=1e-7)
    assert torch.equal(state0[0], _eager_wkv_gate(**warm)[1][0]), "the caller's state must not be modified"


@pytest.mark.parametrize("device,shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_wkv_gate_half_precision(device, shape, dtype):
    if dtype == torch.bfloat16 and kernels.uses_interpreter(device):
        pytest.skip("Triton's interpreter truncates float32 to bfloat16 instead of rounding to nearest")
    inputs = _wkv_inputs(shape, device, dtype)
    inputs["time_decay"] = inputs["time_decay"].float()  # parameters stay float32 in a half model
    inputs["time_first"] = inputs["time_first"].float()
    y, state = kernels.wkv_gate(**inputs)
    y_ref, state_ref = _eager_wkv_gate(**inputs)
    assert y.dtype == dtype and state[0].dtype == torch.float32
    # both compute in float32 and round the output once: at most one rounding step apart
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(y, y_ref, rtol=eps, atol=eps)
    _assert_states_close(state, state_ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------
# LIF + residual
# ---------------------------------------------------------------------------------


def _lif_inputs(shape, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, T, C = shape
    x = torch.randn(B, T, C, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    inp = (2 * torch.randn(B, T, C, generator=g, dtype=torch.float64)).to(device=device, dtype=dtype)
    v0 = torch.rand(B, C, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    return x, inp, v0


LIF_CASES = [
    pytest.param(dict(), id="default"),
    # 1/tau inexact, so the rounding of the division shows; constants exact in half precision
    pytest.param(dict(tau=1.7, threshold=0.875, reset=0.125), id="tau1.7"),
    # constants inexact in half precision, where torch on CPU and on CUDA round differently
    pytest.param(dict(tau=1.7, threshold=0.9, reset=0.1), id="reset0.1"),
]
HALF = (torch.float16, torch.bfloat16)


@pytest.mark.parametrize("device,shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("neuron", LIF_CASES)
@pytest.mark.parametrize("with_v0", [False, True], ids=["rest", "v0"])
def test_lif_residual_matches_eager(device, shape, dtype, neuron, with_v0):
    if dtype == torch.bfloat16 and kernels.uses_interpreter(device):
        pytest.skip("Triton's interpreter truncates float32 to bfloat16 instead of rounding to nearest")
    if dtype in HALF and device == "cpu" and neuron.get("reset") == 0.1:
        pytest.skip("torch on CPU rounds the constant of x - 0.1 to half precision first; the kernel does as CUDA")
    x, inp, v0 = _lif_inputs(shape, device, dtype)
    v0 = v0 if with_v0 else None
    spikes, v_ref = LIF(**neuron)(inp, v0)
    rate = spikes.float().mean().item()
    assert 0.05 < rate < 0.6, f"inputs should make neurons fire sometimes, rate {rate}"

    x_out, v_last, count = kernels.lif_residual(x, inp, v0, **neuron)
    assert x_out.dtype == dtype and v_last.dtype == dtype and count.dtype == torch.int32
    assert torch.equal(x_out, x + spikes), "x_out must be exactly x + eager spikes"
    assert torch.equal(v_last, v_ref), "final membrane potentials must equal eager's"
    assert torch.equal(count, spikes.sum(dim=(0, 1)).to(torch.int32)), "spike counts must equal eager's"

    # with x = 0 the output is the spike train itself
    zero_out, _, _ = kernels.lif_residual(torch.zeros_like(x), inp, v0, **neuron)
    assert torch.equal(zero_out, spikes)


@pytest.mark.parametrize("device,shape", SHAPES)
def test_lif_residual_fires_at_threshold(device, shape):
    """From rest, tau 2: an input of exactly 2 charges h to exactly 1 = threshold, which fires (>=)."""
    inp = torch.full(shape, 2.0, device=device)
    out, v_last, count = kernels.lif_residual(torch.zeros_like(inp), inp)
    assert torch.equal(out, LIF()(inp)[0]) and bool((out == 1).all())
    assert bool((v_last == 0).all()) and bool((count == shape[0] * shape[1]).all())


@pytest.mark.parametrize("device,shape", SHAPES)
def test_lif_residual_ignores_padding_tokens(device, shape):
    """With threshold < reset a neuron at reset fires on zero input, so the zero-padded tokens past T
    in the last tile would fire too if they were not masked."""
    x, inp, v0 = _lif_inputs(shape, device, torch.float32)
    assert shape[1] % kernels.CHUNK_T != 0
    spikes, v_ref = LIF(threshold=-0.5, reset=0.0)(inp, v0)
    out, v_last, count = kernels.lif_residual(x, inp, v0, threshold=-0.5, reset=0.0)
    assert torch.equal(out, x + spikes) and torch.equal(v_last, v_ref)
    assert torch.equal(count, spikes.sum(dim=(0, 1)).to(torch.int32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_lif_residual_cuda_rounding_path(dtype):
    """The CUDA rounding (x * (1/tau), as torch on CUDA) checked on CPU against an explicit reference."""
    tau, threshold, reset = 1.7, 0.875, 0.125
    x, inp, v0 = _lif_inputs((2, 21, 40), "cpu", dtype)
    inv_tau = 1 / torch.tensor(tau, dtype=torch.float32)  # float32 opmath, as torch's CUDA kernel
    v, spikes = v0, []
    for t in range(inp.shape[1]):
        d = ((inp[:, t] - (v - reset)).float() * inv_tau).to(dtype)
        h = v + d
        s = (h - threshold >= 0).to(dtype)
        v = h * (1 - s) + reset * s
        spikes.append(s)
    spikes = torch.stack(spikes, dim=1)
    x_out, v_last, count = kernels._lif_residual(x, inp, v0, tau, threshold, reset, reciprocal=True)
    assert torch.equal(x_out, x + spikes) and torch.equal(v_last, v)
    assert torch.equal(count, spikes.sum(dim=(0, 1)).to(torch.int32))
    if dtype == torch.float32:  # true division rounds differently somewhere, or this test would test nothing
        _, v_div, _ = kernels._lif_residual(x, inp, v0, tau, threshold, reset, reciprocal=False)
        assert not torch.equal(v_div, v_last)


@pytest.mark.parametrize("device,shape", SHAPES)
def test_lif_residual_chunks(device, shape):
    x, inp, _ = _lif_inputs(shape, device, torch.float32)
    whole, v_whole, n_whole = kernels.lif_residual(x, inp)
    cut = shape[1] // 3
    a, v_mid, n_a = kernels.lif_residual(x[:, :cut], inp[:, :cut])
    b, v_end, n_b = kernels.lif_residual(x[:, cut:], inp[:, cut:], v_mid)
    assert torch.equal(torch.cat([a, b], dim=1), whole)
    assert torch.equal(v_end, v_whole) and torch.equal(n_a + n_b, n_whole)


# ---------------------------------------------------------------------------------
# Errors and environments
# ---------------------------------------------------------------------------------


def test_wkv_gate_rejects_bad_inputs():
    inputs = _wkv_inputs((2, 4, 8), "cpu", torch.float32)
    bad = [
        (dict(k=inputs["k"][0]), "shape \\(batch, tokens, channels\\)"),
        (dict(v=inputs["v"][:, :3]), "v must have shape \\(2, 4, 8\\)"),
        (dict(r=inputs["r"].double()), "r has dtype torch.float64"),
        (dict(time_decay=inputs["time_decay"][:5]), "time_decay must have 8 elements"),
        (dict(k=inputs["k"].long(), v=inputs["v"].long(), r=inputs["r"].long()), "must be float16"),
        (dict(state=(torch.zeros(2, 8),) * 2), "state must be a tuple \\(aa, bb, pp\\)"),
        (dict(state=(torch.zeros(2, 7),) * 3), "state aa must have shape \\(2, 8\\)"),
    ]
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            kernels.wkv_gate(**{**inputs, **change})


def test_lif_residual_rejects_bad_inputs():
    x, inp, v0 = _lif_inputs((2, 4, 8), "cpu", torch.float32)
    with pytest.raises(ValueError, match="x must have shape \\(2, 4, 8\\)"):
        kernels.lif_residual(x[:, :2], inp)
    with pytest.raises(ValueError, match="x has dtype torch.float64"):
        kernels.lif_residual(x.double(), inp)
    with pytest.raises(ValueError, match="v0 must have shape \\(2, 8\\)"):
        kernels.lif_residual(x, inp, v0[:, :3])
    with pytest.raises(ValueError, match="no empty axis"):
        kernels.lif_residual(x[:, :0], inp[:, :0])
    with pytest.raises(ValueError, match="tau must be positive"):
        kernels.lif_residual(x, inp, tau=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rejects_mixed_devices():
    inputs = _wkv_inputs((2, 4, 8), "cuda", torch.float32)
    with pytest.raises(ValueError, match="is on cpu"):
        kernels.wkv_gate(**{**inputs, "v": inputs["v"].cpu()})


def test_without_triton_the_wrappers_raise(monkeypatch):
    """A fresh copy of the module, imported as if Triton were missing (sys.modules entry None)."""
    monkeypatch.setitem(sys.modules, "triton", None)
    monkeypatch.setitem(sys.modules, "triton.language", None)
    spec = importlib.util.spec_from_file_location("kernels_without_triton", REPO / "spikegpt" / "kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.TRITON_AVAILABLE is False
    inputs = _wkv_inputs((1, 2, 4), "cpu", torch.float32)
    with pytest.raises(RuntimeError, match="needs Triton 3.4 or later and it is not installed"):
        module.wkv_gate(**inputs)
    with pytest.raises(RuntimeError, match="needs Triton 3.4 or later and it is not installed"):
        module.lif_residual(inputs["k"], inputs["v"])


def test_cpu_uses_the_interpreter():
    assert kernels.uses_interpreter("cpu")


def test_triton_interpret_env_var():
    """The documented route: TRITON_INTERPRET=1 before Triton is imported, in a fresh process."""
    script = textwrap.dedent(
        """
        import triton  # imported first, in interpreter mode
        import torch
        from spikegpt import kernels
        from spikegpt.model import LIF

        assert triton.knobs.runtime.interpret
        inp = 2 * torch.randn(2, 9, 5, generator=torch.Generator().manual_seed(0))
        spikes, _ = LIF()(inp)
        out, _, count = kernels.lif_residual(torch.zeros_like(inp), inp)
        assert torch.equal(out, spikes) and torch.equal(count, spikes.sum((0, 1)).int())
        print("ok", int(count.sum()))
        """
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok ")
