"""Helpers shared by the CPU benchmarks: peak resident memory of a code region."""

from __future__ import annotations

import resource
from pathlib import Path


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process (Linux: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size since the last reset (VmHWM), or the lifetime peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_average() -> float:
    import os

    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def matmul_gflops(threads: int, n: int = 1024, repeats: int = 5) -> float:
    """The machine's float32 matmul speed (GFLOP/s) at ``threads`` intra-op threads: best of ``repeats``
    n x n @ n x n products (2 n^3 flops each), printed beside every ratio so that two machines compare."""
    import time

    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return 2 * n**3 / best / 1e9


def gemm_inputs(model, batch: int, tokens: int) -> list:
    """(linear, input) for every projection of the model (nn.Linear), with inputs of the forward's shapes."""
    import torch

    g = torch.Generator().manual_seed(0)
    return [(m, torch.randn(batch, tokens, m.in_features, generator=g)) for m in model.modules()
            if isinstance(m, torch.nn.Linear)]  # fmt: skip


def run_gemms(pairs) -> None:
    """The model's projections alone, applied to inputs of the same shapes as in its forward: the floor."""
    import torch

    with torch.no_grad():
        for m, x in pairs:
            torch.nn.functional.linear(x, m.weight, m.bias)
