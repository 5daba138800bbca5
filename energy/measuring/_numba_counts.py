"""The numba passes behind ``energy.measuring.hooks.classify`` (imported only there, and only when used).

Each function reads a 1-D float array once and returns counts; the decisions stay in ``hooks`` and
are the ones of the numpy tests they replace (``hooks._classify_numpy_passes``):

- ``zeros_first``: the exact zeros (0.0 and -0.0; NaN is nonzero) and the index of the first nonzero value
  (-1 if none), the count of ``a == 0`` and ``argmax(a != 0)`` in one pass with no boolean temporary;
- ``ones_integral``: the values equal to 1 and to -1, and whether every value equals its floor (NaN does
  not; +-inf does, as it equals ``np.round`` of itself).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def zeros_first(a):
    first = -1
    for i in range(a.size):  # the leading zeros, up to the first nonzero value
        if a[i] != 0:  # NaN != 0
            first = i
            break
    if first < 0:
        return a.size, -1
    return _zeros(a), first


@njit(cache=True, nogil=True)
def _zeros(a):
    z = 0
    for i in range(a.size):  # a plain counting loop over the whole array: vectorised
        z += a[i] == 0
    return z


@njit(cache=True, nogil=True)
def ones_integral(a):
    ones = 0
    minus = 0
    integral = True
    for i in range(a.size):
        x = a[i]
        ones += x == 1
        minus += x == -1
        integral &= np.floor(x) == x  # False for NaN (np.floor keeps the float type: inf stays inf)
    return ones, minus, integral
