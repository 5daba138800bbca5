"""Compiled CPU loops for the two recurrences of the model: the LIF scan and the WKV scan.

``spikegpt.model`` states the equations with torch ops, one token at a time (``_LIFScan``
and ``WKV``). Stepped from Python, each token costs a dozen small tensor ops of a few
microseconds: for the 216M model at 256 tokens, some 200,000 calls, more time than its
matrix products. Here the same loops run as numba functions over the whole chunk, with the
same arithmetic in the same order and in the tensor's own dtype (float32 or float64), so the
LIF spikes and membranes are bit for bit the eager ones given the same input. WKV uses the
C library's ``exp`` where torch uses its own vectorised one: its outputs agree to a few
units in the last place (``tests/test_model.py`` checks both, and that whole models fire
identically).

Nothing here changes which modules run: the ``LIF`` and ``WKV`` modules keep their inputs
and outputs (the meter's hooks see the same tensors), only the loop inside them is compiled.

Used when numba can be imported, the tensors are on the CPU in float32 or float64, and (for
WKV) no gradient is asked for (the LIF scan keeps its hand-written backward; WKV with autograd
runs the eager loop, which training uses). Otherwise, or within ``disabled()``, or with
``SPIKEGPT_CPU_KERNELS=0`` in the environment, the model runs its torch loops: the same
results. numba ships wheels for Linux, macOS and Windows, so no compiler is needed; its
functions are compiled on the first call of a process and cached on disk (``cache=True``).
"""

from __future__ import annotations

import contextlib
import os
import threading

import torch

_state = threading.local()
_numba = None  # the loaded kernels, or False when numba is missing or failed
ENV = "SPIKEGPT_CPU_KERNELS"
# below this many (batch x channel x token) steps a parallel region costs more than it saves
PARALLEL_MIN_STEPS = 1 << 16


def enabled() -> bool:
    """Whether the compiled loops may be used now (not within ``disabled()``, not switched off)."""
    return getattr(_state, "on", True) and os.environ.get(ENV, "1") != "0"


@contextlib.contextmanager
def disabled():
    """Run the model's torch loops within this block (the coverage census needs to see their aten ops)."""
    was = getattr(_state, "on", True)
    _state.on = False
    try:
        yield
    finally:
        _state.on = was


def available() -> bool:
    """Whether numba is importable and its kernels were built (loaded on the first call)."""
    return _load() is not False


def usable(*tensors: torch.Tensor) -> bool:
    t = tensors[0]
    return (
        enabled()
        and t.device.type == "cpu"
        and t.dtype in (torch.float32, torch.float64)
        and all(x.dtype == t.dtype and x.device.type == "cpu" for x in tensors)
        and available()
    )


def _load():
    global _numba
    if _numba is None:
        try:
            from spikegpt import _numba_loops

            _numba = _numba_loops
        except Exception:  # no numba, or it cannot compile here: the torch loops give the same results
            _numba = False
    return _numba


def _blocks(batch: int, channels: int, steps: int) -> tuple[bool, int]:
    """(parallel?, channel blocks per row): one block per thread when the work pays for a parallel region."""
    threads = torch.get_num_threads()
    if threads < 2 or batch * channels * steps < PARALLEL_MIN_STEPS:
        return False, 1
    nb = _numba.numba
    n = min(threads, nb.config.NUMBA_NUM_THREADS)
    if nb.get_num_threads() != n:
        nb.set_num_threads(n)
    return True, max(1, -(-n // batch))


def lif_scan(x: torch.Tensor, v0: torch.Tensor, tau: float, threshold: float, reset: float):
    """(spikes, charges h, last membrane) of the LIF recurrence over x (B, T, C) from v0 (B, C)."""
    B, T, C = x.shape
    xn = x.detach().contiguous().numpy()
    s, h, v = torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(x), torch.empty_like(v0)
    par, nblk = _blocks(B, C, T)
    ty = xn.dtype.type
    (_numba.lif_parallel if par else _numba.lif_serial)(
        xn, v0.detach().contiguous().numpy(), ty(tau), ty(threshold), ty(reset), s.numpy(), h.numpy(), v.numpy(), nblk
    )
    return s, h, v


def wkv_scan(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, aa, bb, pp):
    """y (B, T, C) and the final (aa, bb, pp) of the WKV recurrence (``spikegpt.model.WKV``)."""
    B, T, C = k.shape
    y = torch.empty(B, T, C, dtype=k.dtype)
    aa, bb, pp = (t.detach().clone(memory_format=torch.contiguous_format) for t in (aa, bb, pp))
    par, nblk = _blocks(B, C, T)
    (_numba.wkv_parallel if par else _numba.wkv_serial)(
        w.detach().contiguous().numpy(), u.detach().contiguous().numpy(), k.detach().contiguous().numpy(),
        v.detach().contiguous().numpy(), aa.numpy(), bb.numpy(), pp.numpy(), y.numpy(), nblk,
    )  # fmt: skip
    return y, (aa, bb, pp)
