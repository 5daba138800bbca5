"""Compiled CPU loops for the two recurrences of the model (the LIF scan and the WKV scan) and for two
elementwise modules (token-shift mixing, ReLU^2), each run in one pass instead of several torch ops.

``spikegpt.model`` states the equations with torch ops, one token at a time (``_LIFScan``
and ``WKV``). Stepped from Python, each token costs a dozen small tensor ops of a few
microseconds: for the 216M model at 256 tokens, some 200,000 calls, more time than its
matrix products. Here the same loops run as numba functions over the whole chunk, with the
same arithmetic in the same order and in the tensor's own dtype (float32 or float64), so the
LIF spikes and membranes are bit for bit the eager ones given the same input. WKV uses the
C library's ``exp`` where torch uses its own vectorised one: its outputs agree to a few
units in the last place (``tests/test_model.py`` checks both, and that whole models fire
identically).

Nothing here changes which modules run: the ``LIF``, ``WKV``, ``Lerp`` and ``SquaredReLU`` modules
keep their inputs and outputs (the meter's hooks see the same tensors), only the loop inside them is
compiled. ``Lerp`` and ``SquaredReLU`` give the torch expressions' values bit for bit (same operations,
same order, the tensors' dtype, no fused multiply-add); they run without autograd and on chunks of at
least ``ELEMENTWISE_MIN_NUMEL`` values.

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
# ... for the cheap loops (the LIF scan, the elementwise ones: about 1 ns a step against WKV's 14 ns): the
# model's torch ops and these loops run on two OpenMP thread pools (torch's and numba's), and each switch of
# pool can wait for the other's spinning threads, so a loop of 256 x 768 steps (0.1 ms) runs on one thread
PARALLEL_MIN_CHEAP_STEPS = 1 << 22
# below this many elements the elementwise loops (``lerp``, ``squared_relu``) leave the work to torch: a
# compiled call costs some 20 us of Python and dispatch, more than torch's few ops on one token's values
# (streaming), while on a chunk (256 x 768 values) one pass saves the temporaries of the torch expression
ELEMENTWISE_MIN_NUMEL = 1 << 14


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


def _threads(steps: int, minimum: int | None = None) -> int:
    """Threads for a loop of ``steps`` element steps: torch's intra-op threads (numba's set to match) when the
    work pays for a parallel region, else 1."""
    threads = torch.get_num_threads()
    if threads < 2 or steps < (PARALLEL_MIN_STEPS if minimum is None else minimum):
        return 1
    nb = _numba.numba
    n = min(threads, nb.config.NUMBA_NUM_THREADS)
    if nb.get_num_threads() != n:
        nb.set_num_threads(n)
    return n


def _blocks(batch: int, channels: int, steps: int, minimum: int | None = None) -> tuple[bool, int]:
    """(parallel?, channel blocks per row): one block per thread when the work pays for a parallel region."""
    n = _threads(batch * channels * steps, minimum)
    return (False, 1) if n == 1 else (True, max(1, -(-n // batch)))


def no_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd would record nothing here (the elementwise loops have no backward)."""
    return not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors)


def lif_scan(x: torch.Tensor, v0: torch.Tensor, tau: float, threshold: float, reset: float, charges: bool = True):
    """(spikes, charges h or None, last membrane) of the LIF recurrence over x (B, T, C) from v0 (B, C);
    ``charges=False`` skips writing h (no backward will need it)."""
    B, T, C = x.shape
    xn = x.detach().contiguous().numpy()
    s, v = torch.empty(B, T, C, dtype=x.dtype), torch.empty(B, C, dtype=x.dtype)
    h = torch.empty(B, T, C, dtype=x.dtype) if charges else torch.empty(1, 1, 1, dtype=x.dtype)
    par, nblk = _blocks(B, C, T, PARALLEL_MIN_CHEAP_STEPS)
    ty = xn.dtype.type
    (_numba.lif_parallel if par else _numba.lif_serial)(
        xn, v0.detach().contiguous().numpy(), ty(tau), ty(threshold), ty(reset), s.numpy(), h.numpy(), v.numpy(),
        charges, nblk,
    )  # fmt: skip
    return s, (h if charges else None), v


def wkv_scan(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, aa, bb, pp):
    """y (B, T, C) and the final (aa, bb, pp) of the WKV recurrence (``spikegpt.model.WKV``)."""
    B, T, C = k.shape
    y = torch.empty(B, T, C, dtype=k.dtype)
    aa, bb, pp = (t.detach().clone(memory_format=torch.contiguous_format) for t in (aa, bb, pp))
    par, nblk = _blocks(B, C, T)
    kn = k.detach().contiguous().numpy()
    (_numba.wkv_parallel if par else _numba.wkv_serial)(
        w.detach().contiguous().numpy(), u.detach().contiguous().numpy(), kn,
        v.detach().contiguous().numpy(), aa.numpy(), bb.numpy(), pp.numpy(), y.numpy(), kn.dtype.type(1), nblk,
    )  # fmt: skip
    return y, (aa, bb, pp)


def _rows(x: torch.Tensor):
    """x as a contiguous (rows, last dim) numpy array."""
    return x.detach().contiguous().numpy().reshape(-1, x.shape[-1])


def lerp(x: torch.Tensor, xx: torch.Tensor, mix: torch.Tensor) -> torch.Tensor | None:
    """``x * mix + xx * (1 - mix)`` in one pass, bit for bit (``spikegpt.model.Lerp``), or None where the
    loop does not apply (then the caller runs the torch ops): ``mix`` one value per channel, x and xx of one
    shape, no gradient asked for."""
    C = x.shape[-1]
    if not (x.dim() >= 2 and x.numel() >= max(ELEMENTWISE_MIN_NUMEL, 1) and xx.shape == x.shape
            and mix.numel() == C and mix.shape[-1] == C and mix.dim() <= x.dim()
            and usable(x, xx, mix) and no_grad(x, xx, mix)):  # fmt: skip
        return None
    m = mix.detach().reshape(C)
    om = 1 - m  # as the torch expression computes it
    out = torch.empty(x.shape, dtype=x.dtype)
    xr = _rows(x)
    n = _threads(xr.size, PARALLEL_MIN_CHEAP_STEPS)
    (_numba.lerp_parallel if n > 1 else _numba.lerp_serial)(
        xr, _rows(xx), m.contiguous().numpy(), om.numpy(), out.numpy().reshape(xr.shape), n
    )
    return out


def squared_relu(x: torch.Tensor) -> torch.Tensor | None:
    """``relu(x) ** 2`` in one pass, bit for bit (``spikegpt.model.SquaredReLU``), or None where the loop does
    not apply (no gradient asked for)."""
    if not (x.dim() >= 1 and x.numel() >= max(ELEMENTWISE_MIN_NUMEL, 1) and usable(x) and no_grad(x)):
        return None
    out = torch.empty(x.shape, dtype=x.dtype)
    xr = _rows(x)
    n = _threads(xr.size, PARALLEL_MIN_CHEAP_STEPS)
    (_numba.relu_sq_parallel if n > 1 else _numba.relu_sq_serial)(
        xr, out.numpy().reshape(xr.shape), xr.dtype.type(0), n
    )
    return out
