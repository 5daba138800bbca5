"""Fused Triton kernels for SpikeGPT inference: the two sequential scans of the model.

The eager model (``spikegpt/model.py``) walks the token axis in Python twice per
sublayer, launching a handful of small kernels per token. Two kernels replace those
loops, each making one pass over the tokens per (batch row, block of channels):

* ``wkv_gate``: the RWKV-4 WKV recurrence fused with the receptance gate,
  ``r * WKV(w=-exp(time_decay), u=time_first, k, v)``, same stable recurrence and
  operation order as ``WKV.forward``, accumulated in float32 (float64 for float64).
* ``lif_residual``: the multi-step LIF scan fused with the residual add ``x + s``,
  same arithmetic order as ``LIF.forward``, also counting spikes per channel inside
  the kernel (so firing rates need no read-back of the spike tensor).

``SpikeGPT(config, kernels="fused")`` (or ``"auto"`` on CUDA) calls them from
``TimeMix.forward`` and ``Block.forward`` in place of the eager modules; the output then
carries ``spike_counts`` instead of spikes.

Forward only: the kernels have no backward. Training and the counting hooks of
``energy/`` use the eager model.

Where the kernels run
---------------------
CUDA tensors run compiled kernels. CPU tensors run under Triton's interpreter (slow:
for tests only). Setting ``TRITON_INTERPRET=1`` sends CUDA tensors to the interpreter
too. Triton reads that variable when ``triton.jit`` decorates a function (not when
``triton`` is imported), so this module decorates lazily, once per (kernel, mode),
choosing the mode per call from the tensors' device. The kernels use only Triton
builtins (no ``tl.sum``, ``tl.zeros``...: those are ``triton.jit`` functions of
Triton's standard library, fixed to one mode when ``triton.language`` is imported), so
the interpreter works whether or not ``TRITON_INTERPRET`` was set before ``triton``
was imported.

Numerics
--------
Both kernels read tokens in tiles of ``CHUNK_T`` x ``BLOCK_C`` and pick one token at a
time out of the tile with ``tl.gather``, which moves values without changing them.

* LIF: the same operations as the eager loop, rounded as PyTorch rounds them on the
  same device: ``x / tau`` is an IEEE division on CPU and ``x * (1/tau)`` on CUDA
  (where PyTorch divides by a Python scalar that way). For float16/bfloat16 inputs
  every operation is computed in float32, with float32 constants, and rounded to the
  input dtype, as PyTorch on CUDA does (PyTorch on CPU first rounds the constant of an
  addition or subtraction to the input dtype, so a threshold or reset that the half
  dtype cannot represent, such as 0.1, may differ there in the last bit). Given
  identical inputs the spikes are identical (checked under the interpreter in float32,
  float64 and float16; the bfloat16 tests run only on a GPU, as the interpreter
  truncates float32 to bfloat16 instead of rounding).
* WKV: same operations in the same order, but ``exp`` is Triton's (NumPy's in the
  interpreter; on NVIDIA GPUs a fast ``ex2``-based approximation, a few ulp) and the
  GPU compiler may fuse multiply-adds, so float32 outputs are not bit for bit those of
  the eager module: the tests hold them to 1e-5 (relative, plus 1e-5 absolute where
  the output nears zero). Half-precision inputs are computed in float32, like the
  eager module (the output is rounded to ``k.dtype`` before the gate multiply, as
  eager does). float64 runs in float64: identical to eager under the interpreter;
  on GPUs it compiles to float64 arithmetic but has not been run.
"""

import functools

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the eager model needs no Triton; only these kernels do
    triton = None
    tl = None

# triton.knobs (to pick interpreter or compiled mode) and tl.gather: Triton 3.4 and later
TRITON_AVAILABLE = triton is not None and hasattr(triton, "knobs") and hasattr(tl, "gather")


# Launch geometry: one program per (batch row, BLOCK_C channels), one warp each; tokens
# are loaded CHUNK_T at a time. Powers of two. Chosen for the 216M shapes (B=8, C=768
# gives 192 programs), not tuned on hardware.
BLOCK_C = 32
CHUNK_T = 16
NUM_WARPS = 1

WKV_INIT_O = -1e38  # initial running max, as WKV_INIT_O in model.py

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ---------------------------------------------------------------------------------
# Kernels (plain functions; decorated on first use by ``_kernel``)
# ---------------------------------------------------------------------------------

if TRITON_AVAILABLE:
    _PP_INIT = tl.constexpr(WKV_INIT_O)  # kernels read only constexpr globals

    def _wkv_gate_kernel(
        time_decay_ptr,  # (C,)
        time_first_ptr,  # (C,)
        k_ptr,  # (B, T, C) contiguous, like v, r and y
        v_ptr,
        r_ptr,  # receptance after the sigmoid
        y_ptr,  # output r * wkv, dtype of k
        aa_ptr,  # (B, C) state in COMPUTE dtype: read if HAS_STATE, always written at the end
        bb_ptr,
        pp_ptr,
        T,
        C,
        HAS_STATE: tl.constexpr,
        COMPUTE: tl.constexpr,
        BLOCK_C: tl.constexpr,
        CHUNK_T: tl.constexpr,
    ):
        b = tl.program_id(0).to(tl.int64)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]  # (BLOCK_C, 1)
        c_ok = c < C
        tt = tl.arange(0, CHUNK_T)[None, :]  # (1, CHUNK_T)
        out_dtype = y_ptr.dtype.element_ty

        w = -tl.exp(tl.load(time_decay_ptr + c, mask=c_ok, other=0.0).to(COMPUTE))
        u = tl.load(time_first_ptr + c, mask=c_ok, other=0.0).to(COMPUTE)
        s_off = b * C + c
        if HAS_STATE:
            aa = tl.load(aa_ptr + s_off, mask=c_ok, other=0.0)
            bb = tl.load(bb_ptr + s_off, mask=c_ok, other=0.0)
            pp = tl.load(pp_ptr + s_off, mask=c_ok, other=0.0)
        else:
            aa = tl.full([BLOCK_C, 1], 0.0, COMPUTE)
            bb = tl.full([BLOCK_C, 1], 0.0, COMPUTE)
            pp = tl.full([BLOCK_C, 1], _PP_INIT, COMPUTE)

        for t0 in range(0, T, CHUNK_T):
            t = t0 + tt
            off = b * T * C + t * C + c  # (BLOCK_C, CHUNK_T)
            ok = c_ok & (t < T)
            k_tile = tl.load(k_ptr + off, mask=ok, other=0.0).to(COMPUTE)
            v_tile = tl.load(v_ptr + off, mask=ok, other=0.0).to(COMPUTE)
            y_tile = tl.full([BLOCK_C, CHUNK_T], 0.0, COMPUTE)
            for i in tl.static_range(CHUNK_T):
                col = tl.full([BLOCK_C, 1], i, tl.int32)
                kt = tl.gather(k_tile, col, axis=1)  # (BLOCK_C, 1): token t0 + i
                vt = tl.gather(v_tile, col, axis=1)
                # output, with the bonus u for the current token
                ww = u + kt
                p = tl.maximum(pp, ww)
                e1 = tl.exp(pp - p)
                e2 = tl.exp(ww - p)
                if COMPUTE == tl.float32:  # noqa: SIM300 (a constexpr, not a constant)
                    y = tl.math.div_rn(e1 * aa + e2 * vt, e1 * bb + e2)
                else:
                    y = (e1 * aa + e2 * vt) / (e1 * bb + e2)
                y_tile = tl.where(tt == i, y, y_tile)
                # decay the state by w and add the current token
                ww = w + pp
                p = tl.maximum(ww, kt)
                e1 = tl.exp(ww - p)
                e2 = tl.exp(kt - p)
                live = t0 + i < T  # the last tile may run past T
                aa = tl.where(live, e1 * aa + e2 * vt, aa)
                bb = tl.where(live, e1 * bb + e2, bb)
                pp = tl.where(live, p, pp)
            r_tile = tl.load(r_ptr + off, mask=ok, other=0.0).to(COMPUTE)
            # eager rounds wkv to k.dtype, then multiplies (in float32 for half dtypes)
            out = r_tile * y_tile.to(out_dtype).to(COMPUTE)
            tl.store(y_ptr + off, out.to(out_dtype), mask=ok)

        tl.store(aa_ptr + s_off, aa, mask=c_ok)
        tl.store(bb_ptr + s_off, bb, mask=c_ok)
        tl.store(pp_ptr + s_off, pp, mask=c_ok)

    def _lif_residual_kernel(
        x_ptr,  # (B, T, C) contiguous residual stream, like inp and out
        inp_ptr,  # LIF input current
        out_ptr,  # x + spikes
        v_ptr,  # (B, C) membrane potential: read if HAS_V0, always written at the end
        count_ptr,  # (C,) int32 spike counts, accumulated atomically over batch rows
        params_ptr,  # (4,) tau, threshold, reset, 1/tau in COMPUTE dtype
        T,
        C,
        HAS_V0: tl.constexpr,
        RECIPROCAL: tl.constexpr,  # divide by tau as x * (1/tau), like torch on CUDA
        COMPUTE: tl.constexpr,
        BLOCK_C: tl.constexpr,
        CHUNK_T: tl.constexpr,
    ):
        b = tl.program_id(0).to(tl.int64)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]  # (BLOCK_C, 1)
        c_ok = c < C
        tt = tl.arange(0, CHUNK_T)[None, :]  # (1, CHUNK_T)
        io = inp_ptr.dtype.element_ty  # eager rounds every step to this dtype

        tau = tl.load(params_ptr)
        threshold = tl.load(params_ptr + 1)
        reset = tl.load(params_ptr + 2)
        inv_tau = tl.load(params_ptr + 3)
        s_off = b * C + c
        if HAS_V0:
            v = tl.load(v_ptr + s_off, mask=c_ok, other=0.0).to(COMPUTE)
        else:
            v = (tl.full([BLOCK_C, 1], 0.0, COMPUTE) + reset).to(io).to(COMPUTE)
        count = tl.full([BLOCK_C, 1], 0, tl.int32)

        for t0 in range(0, T, CHUNK_T):
            t = t0 + tt
            off = b * T * C + t * C + c  # (BLOCK_C, CHUNK_T)
            ok = c_ok & (t < T)
            inp_tile = tl.load(inp_ptr + off, mask=ok, other=0.0).to(COMPUTE)
            s_tile = tl.full([BLOCK_C, CHUNK_T], 0.0, COMPUTE)
            for i in tl.static_range(CHUNK_T):
                xt = tl.gather(inp_tile, tl.full([BLOCK_C, 1], i, tl.int32), axis=1)
                # h = v + (x - (v - reset)) / tau, rounded after each operation
                d = (v - reset).to(io).to(COMPUTE)
                d = (xt - d).to(io).to(COMPUTE)
                if RECIPROCAL:
                    d = (d * inv_tau).to(io).to(COMPUTE)
                elif COMPUTE == tl.float32:  # noqa: SIM300 (a constexpr, not a constant)
                    d = tl.math.div_rn(d, tau).to(io).to(COMPUTE)
                else:
                    d = d / tau
                h = (v + d).to(io).to(COMPUTE)
                fire = (h - threshold).to(io).to(COMPUTE) >= 0
                s = fire.to(COMPUTE)
                live = t0 + i < T  # the last tile may run past T
                v = tl.where(live, (h * (1 - s) + reset * s).to(io).to(COMPUTE), v)
                count += (fire & live).to(tl.int32)
                s_tile = tl.where(tt == i, s, s_tile)
            x_tile = tl.load(x_ptr + off, mask=ok, other=0.0).to(COMPUTE)
            tl.store(out_ptr + off, (x_tile + s_tile).to(out_ptr.dtype.element_ty), mask=ok)

        tl.store(v_ptr + s_off, v.to(v_ptr.dtype.element_ty), mask=c_ok)
        tl.atomic_add(count_ptr + c, count, mask=c_ok)


def _require_triton() -> None:
    if not TRITON_AVAILABLE:
        found = "it is not installed" if triton is None else f"found {triton.__version__}"
        raise RuntimeError(
            f"spikegpt.kernels needs Triton 3.4 or later and {found}: `pip install 'triton>=3.4'` "
            "(Linux x86_64; on CPU the kernels run under Triton's interpreter). "
            "The eager model in spikegpt.model needs no Triton."
        )


def _interpret_requested() -> bool:
    """True when the user set TRITON_INTERPRET=1 (read live, as ``triton.jit`` does)."""
    return bool(triton.knobs.runtime.interpret)


@functools.cache
def _kernel(fn, interpret: bool):
    """``fn`` decorated by ``triton.jit`` in interpreter mode or compiled mode, once."""
    with triton.knobs.runtime.scope():  # restores the knob and TRITON_INTERPRET afterwards
        triton.knobs.runtime.interpret = interpret
        return triton.jit(fn)


def uses_interpreter(device: torch.device | str) -> bool:
    """Whether kernels on ``device`` run under Triton's interpreter (True) or compiled (False).

    CPU tensors always use the interpreter; CUDA tensors too if ``TRITON_INTERPRET=1``.
    Interpreted kernels are for testing: never time them.
    """
    _require_triton()
    return torch.device(device).type != "cuda" or _interpret_requested()


def _launch(fn, device: torch.device, grid: tuple[int, ...], *args, **kwargs) -> None:
    _kernel(fn, uses_interpreter(device))[grid](*args, num_warps=NUM_WARPS, **kwargs)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


@functools.lru_cache(maxsize=64)
def _lif_params(tau: float, threshold: float, reset: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(tau, threshold, reset, 1/tau) as a device tensor, so float64 runs get float64 constants.

    1/tau is rounded in ``dtype`` on the host, as torch on CUDA does for ``x / tau``.
    """
    params = torch.tensor([tau, threshold, reset], dtype=dtype)
    return torch.cat([params, 1 / params[:1]]).to(device)


# ---------------------------------------------------------------------------------
# Wrappers
# ---------------------------------------------------------------------------------


def _check_tensor(name: str, t: torch.Tensor, shape: tuple[int, ...] | None, like: torch.Tensor | None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if shape is not None and tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if like is not None and t.device != like.device:
        raise ValueError(f"{name} is on {t.device}, expected {like.device} like the other inputs")


def _check_input(name: str, t: torch.Tensor) -> tuple[int, int, int]:
    _check_tensor(name, t, None, None)
    if t.dim() != 3 or t.numel() == 0:
        raise ValueError(f"{name} must have shape (batch, tokens, channels) with no empty axis, got {tuple(t.shape)}")
    if t.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    return tuple(t.shape)


def wkv_gate(
    time_decay: torch.Tensor,
    time_first: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    r: torch.Tensor,
    state: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``r * WKV(w=-exp(time_decay), u=time_first, k, v)`` in one pass over the tokens.

    Args:
        time_decay, time_first: (C,) per-channel parameters (raw ``time_decay``, as stored).
        k, v: (B, T, C) keys and values; r: (B, T, C) receptance, already through the sigmoid.
            All three share dtype (float16/bfloat16/float32/float64) and device.
        state: optional (aa, bb, pp), each (B, C), from a previous chunk (``WKV``'s state).

    Returns:
        y: (B, T, C) in ``k.dtype``; the final state (aa, bb, pp), each (B, C), in float32
        (float64 for float64 inputs), ready to pass to the next chunk.
    """
    _require_triton()
    B, T, C = _check_input("k", k)
    for name, t in (("v", v), ("r", r)):
        _check_tensor(name, t, (B, T, C), k)
        if t.dtype != k.dtype:
            raise ValueError(f"{name} has dtype {t.dtype}, expected {k.dtype} like k")
    for name, t in (("time_decay", time_decay), ("time_first", time_first)):
        _check_tensor(name, t, None, k)
        if t.numel() != C or t.shape[-1] != C:
            raise ValueError(f"{name} must have {C} elements along its last axis (C), got shape {tuple(t.shape)}")
    compute = _compute_dtype(k.dtype)
    if state is None:
        aa, bb, pp = (torch.empty(B, C, dtype=compute, device=k.device) for _ in range(3))
    else:
        if len(state) != 3:
            raise ValueError(f"state must be a tuple (aa, bb, pp), got {len(state)} elements")
        for name, t in zip(("aa", "bb", "pp"), state):
            _check_tensor(f"state {name}", t, (B, C), k)
        # copies: the kernel updates the state in place and the caller keeps theirs
        aa, bb, pp = (t.to(dtype=compute, memory_format=torch.contiguous_format, copy=True) for t in state)
    y = torch.empty_like(k, memory_format=torch.contiguous_format)
    _launch(
        _wkv_gate_kernel,
        k.device,
        (B, triton.cdiv(C, BLOCK_C)),
        time_decay.reshape(-1).contiguous(),
        time_first.reshape(-1).contiguous(),
        k.contiguous(),
        v.contiguous(),
        r.contiguous(),
        y,
        aa,
        bb,
        pp,
        T,
        C,
        HAS_STATE=state is not None,
        COMPUTE=_tl_dtype(compute),
        BLOCK_C=BLOCK_C,
        CHUNK_T=CHUNK_T,
    )
    return y, (aa, bb, pp)


def lif_residual(
    x: torch.Tensor,
    inp: torch.Tensor,
    v0: torch.Tensor | None = None,
    tau: float = 2.0,
    threshold: float = 1.0,
    reset: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x + LIF(inp)`` in one pass over the tokens, counting the spikes.

    Per element, with v starting at ``v0`` (``reset`` if None), for each token t:
    ``h = v + (inp_t - (v - reset)) / tau; s = (h - threshold >= 0); v = h*(1-s) + reset*s``.

    Args:
        x: (B, T, C) residual stream; inp: (B, T, C) LIF input, same dtype and device.
        v0: optional (B, C) membrane potentials from a previous chunk.
        tau, threshold, reset: the neuron's constants (``LIF.tau`` etc.).

    Returns:
        x_out: (B, T, C) ``x + s`` in ``x.dtype``; v_last: (B, C) potentials after the last
        token, in ``inp.dtype``; spike_count: (C,) int32, spikes summed over batch and tokens.
    """
    return _lif_residual(x, inp, v0, tau, threshold, reset, reciprocal=inp.device.type == "cuda")


def _lif_residual(x, inp, v0, tau, threshold, reset, *, reciprocal: bool):
    """``lif_residual`` with the division rounding chosen (``reciprocal``: as torch on CUDA)."""
    _require_triton()
    B, T, C = _check_input("inp", inp)
    _check_tensor("x", x, (B, T, C), inp)
    if x.dtype != inp.dtype:
        raise ValueError(f"x has dtype {x.dtype}, expected {inp.dtype} like inp")
    if v0 is not None:
        _check_tensor("v0", v0, (B, C), inp)
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau!r}")
    compute = _compute_dtype(inp.dtype)
    if v0 is None:
        v = torch.empty(B, C, dtype=inp.dtype, device=inp.device)
    else:  # a copy: the kernel updates it in place
        v = v0.to(dtype=inp.dtype, memory_format=torch.contiguous_format, copy=True)
    x_out = torch.empty_like(x, memory_format=torch.contiguous_format)
    count = torch.zeros(C, dtype=torch.int32, device=inp.device)
    params = _lif_params(float(tau), float(threshold), float(reset), compute, inp.device)
    _launch(
        _lif_residual_kernel,
        inp.device,
        (B, triton.cdiv(C, BLOCK_C)),
        x.contiguous(),
        inp.contiguous(),
        x_out,
        v,
        count,
        params,
        T,
        C,
        HAS_V0=v0 is not None,
        RECIPROCAL=reciprocal,
        COMPUTE=_tl_dtype(compute),
        BLOCK_C=BLOCK_C,
        CHUNK_T=CHUNK_T,
    )
    return x_out, v, count
