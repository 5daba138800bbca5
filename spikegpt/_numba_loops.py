"""The numba functions behind ``spikegpt.cpu_kernels`` (imported only there, and only when used).

Each loop is the eager one of ``spikegpt.model`` written per element, in the same order of
operations and in the arrays' dtype (the scalars come in as that dtype). The scans split a row
of the batch into channel blocks, the elementwise loops (``lerp``, ``relu_sq``) split the rows
(batch x tokens); ``*_parallel`` runs the blocks on numba's threads, ``*_serial`` in order
(short chunks, one thread, streaming).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _lif_block(x, v0, tau, threshold, reset, s, h, v, keep, b, c0, c1):
    T = x.shape[1]
    for c in range(c0, c1):
        v[b, c] = v0[b, c]
    for t in range(T):
        for c in range(c0, c1):
            vc = v[b, c]
            hc = vc + (x[b, t, c] - (vc - reset)) / tau  # charge
            s[b, t, c] = 1.0 if hc - threshold >= 0 else 0.0  # fire
            sc = s[b, t, c]
            if keep:  # the charges, for the surrogate backward
                h[b, t, c] = hc
            v[b, c] = hc * (1 - sc) + reset * sc  # hard reset (sc is exactly 0 or 1)


@njit(cache=True, inline="always")
def _wkv_block(w, u, k, v, aa, bb, pp, y, one, b, c0, c1):
    # with p = max(a, b), one of exp(a - p) and exp(b - p) is exp(0) = 1 exactly (``one``, of the
    # arrays' dtype): only the other is computed, two exponentials per step instead of four
    T = k.shape[1]
    for t in range(T):
        for c in range(c0, c1):
            kt, vt = k[b, t, c], v[b, t, c]
            a, bv, p0 = aa[b, c], bb[b, c], pp[b, c]
            ww = u[c] + kt
            if p0 >= ww:  # p = p0
                e1, e2 = one, np.exp(ww - p0)
            else:  # p = ww
                e1, e2 = np.exp(p0 - ww), one
            y[b, t, c] = (e1 * a + e2 * vt) / (e1 * bv + e2)
            ww = w[c] + p0
            if ww >= kt:  # p = ww
                e1, e2, p = one, np.exp(kt - ww), ww
            else:  # p = kt
                e1, e2, p = np.exp(ww - kt), one, kt
            aa[b, c] = e1 * a + e2 * vt
            bb[b, c] = e1 * bv + e2
            pp[b, c] = p


@njit(cache=True, parallel=True, nogil=True)
def lif_parallel(x, v0, tau, threshold, reset, s, h, v, keep, nblk):
    B, C = x.shape[0], x.shape[2]
    bs = (C + nblk - 1) // nblk
    for j in prange(B * nblk):
        b, c0 = j // nblk, (j % nblk) * bs
        _lif_block(x, v0, tau, threshold, reset, s, h, v, keep, b, c0, min(C, c0 + bs))


@njit(cache=True, nogil=True)
def lif_serial(x, v0, tau, threshold, reset, s, h, v, keep, nblk):
    for b in range(x.shape[0]):
        _lif_block(x, v0, tau, threshold, reset, s, h, v, keep, b, 0, x.shape[2])


@njit(cache=True, parallel=True, nogil=True)
def wkv_parallel(w, u, k, v, aa, bb, pp, y, one, nblk):
    B, C = k.shape[0], k.shape[2]
    bs = (C + nblk - 1) // nblk
    for j in prange(B * nblk):
        b, c0 = j // nblk, (j % nblk) * bs
        _wkv_block(w, u, k, v, aa, bb, pp, y, one, b, c0, min(C, c0 + bs))


@njit(cache=True, nogil=True)
def wkv_serial(w, u, k, v, aa, bb, pp, y, one, nblk):
    for b in range(k.shape[0]):
        _wkv_block(w, u, k, v, aa, bb, pp, y, one, b, 0, k.shape[2])


@njit(cache=True, inline="always")
def _lerp_rows(x, xx, m, om, out, r0, r1):
    for r in range(r0, r1):
        for c in range(x.shape[1]):
            out[r, c] = x[r, c] * m[c] + xx[r, c] * om[c]


@njit(cache=True, nogil=True)
def lerp_serial(x, xx, m, om, out, nblk):
    _lerp_rows(x, xx, m, om, out, 0, x.shape[0])


@njit(cache=True, parallel=True, nogil=True)
def lerp_parallel(x, xx, m, om, out, nblk):
    """out = x * m + xx * om over rows (B*T, C), ``om`` = 1 - m computed by the caller as in torch."""
    R = x.shape[0]
    bs = (R + nblk - 1) // nblk
    for j in prange(nblk):
        _lerp_rows(x, xx, m, om, out, j * bs, min(R, (j + 1) * bs))


@njit(cache=True, inline="always")
def _relu_sq_rows(x, out, zero, r0, r1):
    for r in range(r0, r1):
        for c in range(x.shape[1]):
            a = x[r, c]
            if a <= zero:  # relu (NaN passes, as in torch)
                a = zero
            out[r, c] = a * a


@njit(cache=True, nogil=True)
def relu_sq_serial(x, out, zero, nblk):
    _relu_sq_rows(x, out, zero, 0, x.shape[0])


@njit(cache=True, parallel=True, nogil=True)
def relu_sq_parallel(x, out, zero, nblk):
    """out = relu(x) ** 2 over rows (N, C)."""
    R = x.shape[0]
    bs = (R + nblk - 1) // nblk
    for j in prange(nblk):
        _relu_sq_rows(x, out, zero, j * bs, min(R, (j + 1) * bs))


__all__ = [
    "lerp_parallel", "lerp_serial", "lif_parallel", "lif_serial", "numba", "relu_sq_parallel", "relu_sq_serial",
    "wkv_parallel", "wkv_serial",
]  # fmt: skip
