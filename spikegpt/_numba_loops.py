"""The numba functions behind ``spikegpt.cpu_kernels`` (imported only there, and only when used).

Each loop is the eager one of ``spikegpt.model`` written per element, in the same order of
operations and in the arrays' dtype (the scalars come in as that dtype). A row of the batch is
split into channel blocks; ``*_parallel`` runs the blocks on numba's threads, ``*_serial`` in
order (short chunks, one thread, streaming).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _lif_block(x, v0, tau, threshold, reset, s, h, v, b, c0, c1):
    T = x.shape[1]
    for c in range(c0, c1):
        v[b, c] = v0[b, c]
    for t in range(T):
        for c in range(c0, c1):
            vc = v[b, c]
            hc = vc + (x[b, t, c] - (vc - reset)) / tau  # charge
            s[b, t, c] = 1.0 if hc - threshold >= 0 else 0.0  # fire
            sc = s[b, t, c]
            h[b, t, c] = hc
            v[b, c] = hc * (1 - sc) + reset * sc  # hard reset (sc is exactly 0 or 1)


@njit(cache=True, inline="always")
def _wkv_block(w, u, k, v, aa, bb, pp, y, b, c0, c1):
    T = k.shape[1]
    for t in range(T):
        for c in range(c0, c1):
            kt, vt = k[b, t, c], v[b, t, c]
            a, bv, p0 = aa[b, c], bb[b, c], pp[b, c]
            ww = u[c] + kt
            p = max(p0, ww)
            e1 = np.exp(p0 - p)
            e2 = np.exp(ww - p)
            y[b, t, c] = (e1 * a + e2 * vt) / (e1 * bv + e2)
            ww = w[c] + p0
            p = max(ww, kt)
            e1 = np.exp(ww - p)
            e2 = np.exp(kt - p)
            aa[b, c] = e1 * a + e2 * vt
            bb[b, c] = e1 * bv + e2
            pp[b, c] = p


@njit(cache=True, parallel=True, nogil=True)
def lif_parallel(x, v0, tau, threshold, reset, s, h, v, nblk):
    B, C = x.shape[0], x.shape[2]
    bs = (C + nblk - 1) // nblk
    for j in prange(B * nblk):
        b, c0 = j // nblk, (j % nblk) * bs
        _lif_block(x, v0, tau, threshold, reset, s, h, v, b, c0, min(C, c0 + bs))


@njit(cache=True, nogil=True)
def lif_serial(x, v0, tau, threshold, reset, s, h, v, nblk):
    for b in range(x.shape[0]):
        _lif_block(x, v0, tau, threshold, reset, s, h, v, b, 0, x.shape[2])


@njit(cache=True, parallel=True, nogil=True)
def wkv_parallel(w, u, k, v, aa, bb, pp, y, nblk):
    B, C = k.shape[0], k.shape[2]
    bs = (C + nblk - 1) // nblk
    for j in prange(B * nblk):
        b, c0 = j // nblk, (j % nblk) * bs
        _wkv_block(w, u, k, v, aa, bb, pp, y, b, c0, min(C, c0 + bs))


@njit(cache=True, nogil=True)
def wkv_serial(w, u, k, v, aa, bb, pp, y, nblk):
    for b in range(k.shape[0]):
        _wkv_block(w, u, k, v, aa, bb, pp, y, b, 0, k.shape[2])


__all__ = ["lif_parallel", "lif_serial", "numba", "wkv_parallel", "wkv_serial"]
