"""Wall-clock benchmark of SpikeGPT: eager, fused Triton kernels, torch.compile, matmuls alone.

The library behind ``spike-energy bench``. ``run_bench`` builds a random SpikeGPT of the
given config (timing does not depend on the weights: every operation is dense) and times

* the parallel forward of one (batch, tokens) chunk, per mode:
  ``eager`` (the model's modules), ``fused`` (``kernels="fused"``: WKV + gate and
  LIF + residual as Triton kernels), ``compiled`` (``torch.compile`` of the eager model);
* streaming decode per mode: ``decode_tokens`` calls of one token each, the state carried,
  starting from an empty state, at each batch size in ``decode_batches``;
* the model's matmuls alone: for every ``nn.Linear`` (head included), ``F.linear`` on a
  (batch * tokens, in_features) input: the same GEMMs with the same shapes, nothing else.

From these: non-matmul time = forward time - matmul time, per mode, and the ratios
(eager non-matmul) / (fused non-matmul) and (fused forward) / (matmuls alone).

Units: seconds (``*_s``), tokens per second (``tokens_per_s``), multiply-accumulates
(``n_mac``; one FLOP = 2 MAC). Each timing is the median of ``repeats`` timed calls that
follow ``warmup`` untimed ones (the first untimed call, which includes any compilation,
is reported as ``first_call_s``). CUDA calls are timed with CUDA events (which include
any time the GPU waits for the host to launch kernels), CPU calls with
``time.perf_counter``.

A mode that cannot run on the device is reported as ``{"status": "skipped", "reason": ...}``,
never dropped or given a zero. Errors in the eager and fused modes propagate.

``torch.compile`` unrolls the per-token Python loops of ``WKV`` and ``LIF``, so its
compile time grows with n_layer x tokens (on 2 CPU cores, 1 layer x 16 tokens took about
100 s and 1 x 64 about 340 s); above ``max_compile_steps`` the compiled mode is skipped
with that reason instead of compiling for hours.
"""

import functools
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from spikegpt import SpikeGPT, SpikeGPTConfig, kernels

log = logging.getLogger(__name__)

MODES = ("eager", "fused", "compiled")
MAX_COMPILE_STEPS = 256  # n_layer * tokens above which torch.compile is not attempted


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _wall(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call of ``fn``, host clock, device synchronised before and after."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def time_call(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> dict:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    Returns ``{"status": "ok", "median_s", "min_s", "max_s", "samples_s", "first_call_s"}``,
    all in seconds; ``first_call_s`` is the wall time of the first warmup call.
    """
    if repeats < 1 or warmup < 1:
        raise ValueError(f"repeats and warmup must be >= 1, got {repeats} and {warmup}")
    first_call_s = _wall(fn, device)
    for _ in range(warmup - 1):
        fn()
    _sync(device)
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1e3)  # elapsed_time is in ms
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return {
        "status": "ok",
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "samples_s": samples,
        "first_call_s": first_call_s,
    }


def _skipped(reason: str) -> dict:
    log.info("skipped: %s", reason)
    return {"status": "skipped", "reason": reason}


def _with_rate(result: dict, n_tokens: int) -> dict:
    if result["status"] == "ok":
        result["tokens_per_s"] = n_tokens / result["median_s"]
    return result


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} logical cores)"


def _versions() -> dict:
    triton_version = kernels.triton.__version__ if kernels.triton is not None else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
    }


def _fused_unavailable(device: torch.device) -> str | None:
    if not kernels.TRITON_AVAILABLE:
        return "Triton 3.4 or later is not installed (pip install 'triton>=3.4')"
    if device.type != "cuda":
        return "the fused kernels run compiled only on CUDA; elsewhere they run under Triton's interpreter (for tests)"
    if kernels.uses_interpreter(device):
        return "TRITON_INTERPRET=1 is set: the kernels would run under Triton's interpreter, which is not timed"
    return None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# One step of each mode: (idx (B, T), state or None) -> (logits, state)
Step = Callable[[torch.Tensor, object], tuple[torch.Tensor, object]]


def _step(model: SpikeGPT, mode: str, device: torch.device) -> Step | str:
    """One mode's forward, or the reason it cannot run here."""
    if mode == "fused":
        reason = _fused_unavailable(device)
        if reason is not None:
            return reason
        forward = model
    elif mode == "eager":
        forward = model
    else:
        compiled = functools.cache(lambda: torch.compile(model, dynamic=False))  # compiled on first use

        def forward(idx, state):
            return compiled()(idx, state)

    kind = "fused" if mode == "fused" else "eager"

    def step(idx, state):
        model.kernels = kind
        out = forward(idx, state)
        return out.logits, out.state

    return step


def _compile_too_big(mode: str, n_layer: int, tokens: int, max_compile_steps: int) -> str | None:
    if mode == "compiled" and n_layer * tokens > max_compile_steps:
        return (
            f"torch.compile unrolls the per-token loops of WKV and LIF: n_layer x tokens = {n_layer} x {tokens} "
            f"= {n_layer * tokens} steps to trace, above max_compile_steps={max_compile_steps} "
            "(compile time grows linearly with it)"
        )
    return None


def _run_mode(mode: str, fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> dict:
    """Time one mode; a failure of torch.compile marks the compiled mode skipped, other errors propagate."""
    if mode != "compiled":
        return time_call(fn, device, repeats, warmup)
    try:
        return time_call(fn, device, repeats, warmup)
    except Exception as e:  # reported in the results, the traceback in the log
        log.warning("torch.compile failed", exc_info=True)
        first_line = str(e).splitlines()[0] if str(e) else ""
        return _skipped(f"torch.compile failed: {type(e).__name__}: {first_line}")


def time_matmuls(model: nn.Module, n_rows: int, device: torch.device, dtype: torch.dtype, repeats: int, warmup: int):
    """The model's GEMMs alone: ``F.linear`` of a (n_rows, in) input through each ``nn.Linear``.

    Returns ``time_call``'s result plus ``n_linear``, ``n_mac`` (multiply-accumulates per
    call) and ``flop_per_s`` (2 * n_mac / median_s).
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    gen = torch.Generator(device=device).manual_seed(0)
    inputs = {
        n: torch.randn(n_rows, n, device=device, dtype=dtype, generator=gen) for n in {m.in_features for m in linears}
    }

    def matmuls():
        for m in linears:
            F.linear(inputs[m.in_features], m.weight, m.bias)

    with torch.no_grad():
        result = time_call(matmuls, device, repeats, warmup)
    result["n_linear"] = len(linears)
    result["n_mac"] = sum(n_rows * m.in_features * m.out_features for m in linears)
    result["flop_per_s"] = 2 * result["n_mac"] / result["median_s"]
    return result


def _derived(forward: dict, matmul_s: float) -> dict:
    """Non-matmul time per mode and the two target ratios, each None with a note if undefined."""
    ok = {mode: r["median_s"] for mode, r in forward.items() if r["status"] == "ok"}
    nonmatmul_s = {mode: t - matmul_s for mode, t in ok.items()}
    notes = []
    eager_over_fused = None
    if "eager" in nonmatmul_s and "fused" in nonmatmul_s:
        if nonmatmul_s["fused"] > 0:
            eager_over_fused = nonmatmul_s["eager"] / nonmatmul_s["fused"]
        else:
            notes.append("fused forward not slower than the matmuls alone: its non-matmul time is not resolved")
    else:
        notes.append("eager/fused non-matmul ratio needs both modes timed")
    fused_over_matmul = ok["fused"] / matmul_s if "fused" in ok else None
    if fused_over_matmul is None:
        notes.append("fused/matmul ratio needs the fused mode timed")
    return {
        "nonmatmul_s": nonmatmul_s,
        "forward_over_matmul": {mode: t / matmul_s for mode, t in ok.items()},
        "eager_over_fused_nonmatmul": eager_over_fused,
        "fused_over_matmul": fused_over_matmul,
        "notes": notes,
    }


def run_bench(
    config: SpikeGPTConfig,
    batch: int = 8,
    tokens: int = 1024,
    device: str | torch.device = "cuda",
    dtype: torch.dtype = torch.float32,
    modes: Sequence[str] = MODES,
    decode_batches: Sequence[int] = (1, 64),
    decode_tokens: int = 64,
    repeats: int = 5,
    warmup: int = 1,
    *,
    seed: int = 0,
    max_compile_steps: int = MAX_COMPILE_STEPS,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Time a random SpikeGPT of ``config``; returns a JSON-able dict (see the module docstring).

    Keys: ``device``, ``device_type``, ``versions``, ``settings`` (shapes, dtype, repeats,
    matmul precision, config), ``forward`` {mode: timing + tokens_per_s}, ``decode``
    {mode: [{batch, timing + tokens_per_s}, one per decode batch]}, ``matmul`` (timing +
    n_linear, n_mac, flop_per_s), ``derived`` (non-matmul seconds per mode, forward/matmul
    per mode, the two ratios, notes). A timing is ``time_call``'s dict or, for a mode that
    could not run, ``{"status": "skipped", "reason": ...}``. ``progress(done, total)`` is
    called after each timed item (forward per mode, decode per mode and batch, matmuls).
    """
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown modes {unknown}; choose from {', '.join(MODES)}")
    for name, value in (("batch", batch), ("tokens", tokens), ("decode_tokens", decode_tokens)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run_bench(device='cuda') needs a CUDA device; none is available")

    with torch.random.fork_rng(devices=[]):  # seeded weights, the caller's RNG state untouched
        torch.manual_seed(seed)
        model = SpikeGPT(config).to(device=device, dtype=dtype).eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    idx = torch.randint(config.vocab_size, (batch, tokens), generator=gen).to(device)
    steps = {mode: _step(model, mode, device) for mode in modes}
    total, done = len(modes) * (1 + len(decode_batches)) + 1, 0

    def tick():
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    forward = {}
    for mode, step in steps.items():
        reason = step if isinstance(step, str) else _compile_too_big(mode, config.n_layer, tokens, max_compile_steps)
        if reason is not None:
            forward[mode] = _skipped(reason)
            tick()
            continue
        log.info("timing %s forward, %d x %d tokens", mode, batch, tokens)
        with torch.no_grad():
            forward[mode] = _with_rate(
                _run_mode(mode, lambda s=step: s(idx, None), device, repeats, warmup), idx.numel()
            )
        tick()

    decode = {}
    for mode, step in steps.items():
        reason = step if isinstance(step, str) else _compile_too_big(mode, config.n_layer, 1, max_compile_steps)
        decode[mode] = []
        for b in decode_batches:
            if reason is not None:
                decode[mode].append({"batch": b, **_skipped(reason)})
                tick()
                continue
            prompt = torch.randint(config.vocab_size, (b, decode_tokens), generator=gen).to(device)

            def run_decode(s=step, prompt=prompt):
                state = None
                for t in range(prompt.shape[1]):
                    _, state = s(prompt[:, t : t + 1], state)

            log.info("timing %s decode, batch %d, %d tokens", mode, b, decode_tokens)
            with torch.no_grad():
                result = _run_mode(mode, run_decode, device, repeats, warmup)
            decode[mode].append({"batch": b, **_with_rate(result, b * decode_tokens)})
            tick()

    log.info("timing matmuls alone")
    matmul = time_matmuls(model, batch * tokens, device, dtype, repeats, warmup)
    tick()
    return {
        "device": _device_name(device),
        "device_type": device.type,
        "versions": _versions(),
        "settings": {
            "batch": batch,
            "tokens": tokens,
            "dtype": _dtype_name(dtype),
            "decode_batches": list(decode_batches),
            "decode_tokens": decode_tokens,
            "repeats": repeats,
            "warmup": warmup,
            "seed": seed,
            "max_compile_steps": max_compile_steps,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32 if device.type == "cuda" else None,
            "config": config.to_dict(),
        },
        "forward": forward,
        "decode": decode,
        "matmul": matmul,
        "derived": _derived(forward, matmul["median_s"]),
    }
