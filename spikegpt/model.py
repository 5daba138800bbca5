"""SpikeGPT (Zhu et al., TMLR 2024): RWKV-4 with leaky integrate-and-fire neurons.

Reads top to bottom as the equations of the released training forward
(``src/model.py`` of ridgerchu/SpikeGPT, restated in SPIKEGPT-FACTS.md section 1):

    x = heaviside(emb(idx))                      # binary embedding (switchable)
    for block i:
        if i == 0: x = ln0(x)
        x = x + LIF1(TimeMix(ln1(x)))            # spikes added to a float residual
        x = x + LIF2(ChannelMix(ln2(x)))
    logits = head(ln_out(x))

Every operation runs inside a small named module (``Lerp``, ``Sigmoid``,
``SquaredReLU``, ``WKV``, ``Gate``, ``LIF``, ``Residual``...) so that a forward hook
sees its inputs and outputs. The model knows nothing about counting.

One model, two modes: ``forward`` takes any [B, T] and an optional ``State``;
parallel mode feeds whole chunks, streaming mode feeds one token at a time
(``run(..., mode="streaming")``). Both execute the same per-step arithmetic in the
WKV and LIF loops, so in float64 they give identical spikes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn as nn

from spikegpt.config import SpikeGPTConfig

# ---------------------------------------------------------------------------------
# Spiking nonlinearity: Heaviside forward, ATan surrogate backward
# ---------------------------------------------------------------------------------


class _ATanHeaviside(torch.autograd.Function):
    """forward: (x >= 0); backward: alpha/2 / (1 + (pi/2 * alpha * x)^2) (spikingjelly ATan)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (x,) = ctx.saved_tensors
        alpha = ctx.alpha
        grad = alpha / 2 / (1 + (math.pi / 2 * alpha * x) ** 2)
        return grad_output * grad, None


def atan_heaviside(x: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    return _ATanHeaviside.apply(x, alpha)


class Heaviside(nn.Module):
    """Binary embedding: x -> (x >= 0), trainable through the ATan surrogate."""

    def __init__(self, alpha: float = 2.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return atan_heaviside(x, self.alpha)


class LIF(nn.Module):
    """Multi-step leaky integrate-and-fire neuron over the token axis, hard reset.

    spikingjelly ``MultiStepLIFNode(tau, v_threshold, v_reset, decay_input=True,
    detach_reset=False)``, per element, v starting at ``v0`` (0 for a new sequence):

        h = v + (x - (v - v_reset)) / tau        # charge
        s = heaviside(h - v_threshold)           # fire
        v = h * (1 - s) + v_reset * s            # hard reset
    """

    def __init__(self, tau: float = 2.0, threshold: float = 1.0, reset: float = 0.0, alpha: float = 2.0):
        super().__init__()
        self.tau = tau
        self.threshold = threshold
        self.reset = reset
        self.alpha = alpha

    def forward(self, x: torch.Tensor, v0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        v = torch.full((B, C), self.reset, dtype=x.dtype, device=x.device) if v0 is None else v0
        spikes = []
        for t in range(T):
            h = v + (x[:, t] - (v - self.reset)) / self.tau
            s = atan_heaviside(h - self.threshold, self.alpha)
            v = h * (1 - s) + self.reset * s
            spikes.append(s)
        return torch.stack(spikes, dim=1), v  # (B, T, C), (B, C)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, threshold={self.threshold}, reset={self.reset}"


class Passthrough(nn.Module):
    """Stands in for a LIF to make the non-spiking twin (plain RWKV-4): same call, no spikes."""

    def forward(self, x: torch.Tensor, v0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return x, torch.zeros_like(x[:, -1]) if v0 is None else v0


# ---------------------------------------------------------------------------------
# Elementwise building blocks (each one a module so hooks can see it)
# ---------------------------------------------------------------------------------


class TokenShift(nn.Module):
    """xx[t] = x[t-1]; xx[0] = previous chunk's last input (zero at the start)."""

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        first = torch.zeros_like(x[:, :1]) if prev is None else prev[:, None].to(x.dtype)
        return torch.cat([first, x[:, :-1]], dim=1)


class Lerp(nn.Module):
    """Token-shift mixing: x * mix + xx * (1 - mix)."""

    def forward(self, x: torch.Tensor, xx: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        return x * mix + xx * (1 - mix)


class Sigmoid(nn.Sigmoid):
    pass


class SquaredReLU(nn.Module):
    """relu(x) ** 2, the ChannelMix activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.square(torch.relu(x))


class Gate(nn.Module):
    """Elementwise product a * b (receptance gate)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b


class Residual(nn.Module):
    """x + y."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


WKV_INIT_O = -1e38  # the reference kernel's initial running max


class WKV(nn.Module):
    """RWKV-4 weighted key-value, numerically stable form of the reference CUDA kernel.

    With w = -exp(time_decay), u = time_first, per channel:

        y_t = (sum_{i<t} e^{(t-1-i)w + k_i} v_i + e^{u+k_t} v_t) / (same with v_i = 1)

    computed with running sums (aa, bb) scaled by exp(-pp). Loops over T, batched
    over B and C, differentiable. Half-precision inputs are computed in float32, like
    the reference kernel.
    """

    def forward(
        self,
        time_decay: torch.Tensor,
        time_first: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        out_dtype = k.dtype
        dtype = torch.float32 if k.dtype in (torch.float16, torch.bfloat16) else k.dtype
        k, v = k.to(dtype), v.to(dtype)
        w = -torch.exp(time_decay.to(dtype))
        u = time_first.to(dtype)
        B, T, C = k.shape
        if state is None:
            aa = torch.zeros(B, C, dtype=dtype, device=k.device)
            bb = torch.zeros(B, C, dtype=dtype, device=k.device)
            pp = torch.full((B, C), WKV_INIT_O, dtype=dtype, device=k.device)
        else:
            aa, bb, pp = (s.to(dtype) for s in state)
        ys = []
        for t in range(T):
            kt, vt = k[:, t], v[:, t]
            ww = u + kt
            p = torch.maximum(pp, ww)
            e1 = torch.exp(pp - p)
            e2 = torch.exp(ww - p)
            ys.append((e1 * aa + e2 * vt) / (e1 * bb + e2))
            ww = w + pp
            p = torch.maximum(ww, kt)
            e1 = torch.exp(ww - p)
            e2 = torch.exp(kt - p)
            aa = e1 * aa + e2 * vt
            bb = e1 * bb + e2
            pp = p
        return torch.stack(ys, dim=1).to(out_dtype), (aa, bb, pp)


# ---------------------------------------------------------------------------------
# State for streaming and chunked inference
# ---------------------------------------------------------------------------------


@dataclass
class BlockState:
    att_shift: torch.Tensor  # (B, C) last input of TimeMix (after ln1)
    ffn_shift: torch.Tensor  # (B, C) last input of ChannelMix (after ln2)
    wkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # aa, bb, pp, each (B, C)
    lif1_v: torch.Tensor  # (B, C) membrane potentials
    lif2_v: torch.Tensor


@dataclass
class State:
    """Everything a SpikeGPT carries from one token to the next."""

    blocks: list[BlockState] = field(default_factory=list)

    def detach(self) -> State:
        def d(t):
            return t.detach()

        return State(
            [
                BlockState(d(b.att_shift), d(b.ffn_shift), tuple(d(t) for t in b.wkv), d(b.lif1_v), d(b.lif2_v))
                for b in self.blocks
            ]
        )


class Output(NamedTuple):
    logits: torch.Tensor  # (B, T, vocab_size)
    state: State
    spikes: dict[str, torch.Tensor] | None  # name -> (B, T, C), only if asked (eager kernels)
    spike_counts: dict[str, torch.Tensor] | None = None  # name -> (C,) spikes summed over B, T (fused kernels)


# ---------------------------------------------------------------------------------
# TimeMix, ChannelMix, Block
# ---------------------------------------------------------------------------------


def _ramp(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float32) / n


class TimeMix(nn.Module):
    """The spiking-RWKV 'attention': r, k, v projections and the WKV recurrence."""

    def __init__(self, config: SpikeGPTConfig, layer_id: int):
        super().__init__()
        C = config.n_embd
        # RWKV-4 "fancy" init of the time parameters (reference RWKV_TimeMix.__init__)
        ratio_0_to_1 = layer_id / max(config.n_layer - 1, 1)
        ratio_1_to_almost0 = 1.0 - layer_id / config.n_layer
        h = torch.arange(C, dtype=torch.float32) / max(C - 1, 1)
        self.time_decay = nn.Parameter(-5 + 8 * h ** (0.7 + 1.3 * ratio_0_to_1))
        zigzag = torch.tensor([(i + 1) % 3 - 1 for i in range(C)], dtype=torch.float32) * 0.5
        self.time_first = nn.Parameter(torch.ones(C) * math.log(0.3) + zigzag)
        x = _ramp(C).view(1, 1, C)
        self.time_mix_k = nn.Parameter(x**ratio_1_to_almost0)
        self.time_mix_v = nn.Parameter(x**ratio_1_to_almost0 + 0.3 * ratio_0_to_1)
        self.time_mix_r = nn.Parameter(x ** (0.5 * ratio_1_to_almost0))

        self.time_shift = TokenShift()
        self.mix_k, self.mix_v, self.mix_r = Lerp(), Lerp(), Lerp()
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.sigmoid = Sigmoid()
        self.wkv = WKV()
        self.gate = Gate()
        self.output = nn.Linear(C, C, bias=False)

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None = None, wkv_state=None, fused: bool = False):
        xx = self.time_shift(x, shift)
        k = self.key(self.mix_k(x, xx, self.time_mix_k))
        v = self.value(self.mix_v(x, xx, self.time_mix_v))
        r = self.sigmoid(self.receptance(self.mix_r(x, xx, self.time_mix_r)))
        if fused:  # one Triton kernel for r * WKV(...) (spikegpt/kernels.py)
            from spikegpt.kernels import wkv_gate

            y, wkv_state = wkv_gate(self.time_decay, self.time_first, k, v, r, wkv_state)
        else:
            y, wkv_state = self.wkv(self.time_decay, self.time_first, k, v, wkv_state)
            y = self.gate(r, y)
        return self.output(y), x[:, -1], wkv_state


class ChannelMix(nn.Module):
    """The spiking receptance feed-forward network (SRFFN)."""

    def __init__(self, config: SpikeGPTConfig, layer_id: int):
        super().__init__()
        C, H = config.n_embd, config.ffn_hidden
        ratio_1_to_almost0 = 1.0 - layer_id / config.n_layer
        x = _ramp(C).view(1, 1, C)
        self.time_mix_k = nn.Parameter(x**ratio_1_to_almost0)
        self.time_mix_r = nn.Parameter(x**ratio_1_to_almost0)

        self.time_shift = TokenShift()
        self.mix_k, self.mix_r = Lerp(), Lerp()
        self.key = nn.Linear(C, H, bias=False)
        self.relu_sq = SquaredReLU()
        self.value = nn.Linear(H, C, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.sigmoid = Sigmoid()
        self.gate = Gate()

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None = None):
        xx = self.time_shift(x, shift)
        k = self.relu_sq(self.key(self.mix_k(x, xx, self.time_mix_k)))
        kv = self.value(k)
        r = self.sigmoid(self.receptance(self.mix_r(x, xx, self.time_mix_r)))
        return self.gate(r, kv), x[:, -1]


class Block(nn.Module):
    def __init__(self, config: SpikeGPTConfig, layer_id: int):
        super().__init__()
        C = config.n_embd
        lif = dict(
            tau=config.lif_tau, threshold=config.lif_threshold, reset=config.lif_reset, alpha=config.surrogate_alpha
        )
        self.ln0 = nn.LayerNorm(C, eps=config.layer_norm_eps) if layer_id == 0 else None
        self.ln1 = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.att = TimeMix(config, layer_id)
        self.lif1 = LIF(**lif)
        self.residual1 = Residual()
        self.ln2 = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.ffn = ChannelMix(config, layer_id)
        self.lif2 = LIF(**lif)
        self.residual2 = Residual()
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, state: BlockState | None = None, fused: bool = False):
        """-> x, the block's state, and its two spike tensors (eager) or spike counts per channel (fused)."""
        st = state
        if self.ln0 is not None:
            x = self.ln0(x)
        a, att_shift, wkv = self.att(self.ln1(x), st and st.att_shift, st and st.wkv, fused)
        x, lif1_v, s1 = self._fire(self.lif1, self.residual1, x, a, st and st.lif1_v, fused)
        f, ffn_shift = self.ffn(self.ln2(x), st and st.ffn_shift)
        x, lif2_v, s2 = self._fire(self.lif2, self.residual2, x, f, st and st.lif2_v, fused)
        x = self.dropout(x)
        return x, BlockState(att_shift, ffn_shift, wkv, lif1_v, lif2_v), (s1, s2)

    @staticmethod
    def _fire(lif: LIF, residual: Residual, x, a, v0, fused: bool):
        """x + LIF(a): eager modules, or one Triton kernel that also counts the spikes."""
        if fused:
            from spikegpt.kernels import lif_residual

            return lif_residual(x, a, v0, tau=lif.tau, threshold=lif.threshold, reset=lif.reset)
        s, v = lif(a, v0)
        return residual(x, s), v, s


# ---------------------------------------------------------------------------------
# SpikeGPT
# ---------------------------------------------------------------------------------


# Measured on random models (tiny and 4 x 768): with gain 1 the LIF inputs have std
# about 0.28 (TimeMix) and 0.42 (ChannelMix).
LIF_INPUT_GAIN = {"att.output": 7.0, "ffn.value": 5.0}


class SpikeGPT(nn.Module):
    def __init__(self, config: SpikeGPTConfig, kernels: str = "auto"):
        super().__init__()
        self.config = config
        # "eager": the modules below; "fused": Triton kernels for WKV + gate and LIF + residual
        # (spikegpt/kernels.py, forward only); "auto": fused on CUDA without autograd when Triton is there
        self.kernels = kernels
        self.emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.encode = Heaviside(config.surrogate_alpha) if config.binary_embedding else None
        self.blocks = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_out = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Random weights for analysis and training from scratch.

        Linear weights ~ N(0, gain^2/fan_in), the embedding ~ N(0, 1); the time
        parameters keep the RWKV-4 init of ``TimeMix``/``ChannelMix``. The layers that
        feed a LIF (``att.output``, ``ffn.value``) get the gains in ``LIF_INPUT_GAIN``,
        chosen so that the LIF inputs have a standard deviation of about 2 (from rest a
        neuron with tau 2, threshold 1 fires at an input >= 2). The reference zero-inits
        these projections, which gives neurons that never fire: useless for profiling.
        A trained checkpoint replaces all of this.
        """
        nn.init.normal_(self.emb.weight, std=1.0, generator=generator)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                gain = LIF_INPUT_GAIN.get(name.split(".", 2)[-1], 1.0) if name.startswith("blocks.") else 1.0
                nn.init.normal_(m.weight, std=gain * m.in_features**-0.5, generator=generator)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def lif_layers(self) -> dict[str, LIF]:
        return {name: m for name, m in self.named_modules() if isinstance(m, LIF)}

    def forward(self, idx: torch.Tensor, state: State | None = None, *, return_spikes: bool = False) -> Output:
        """idx (B, T) token ids -> logits (B, T, V), the state after the last token."""
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (batch, tokens), got {tuple(idx.shape)}")
        fused = self.use_fused(idx)
        if fused and return_spikes:
            raise ValueError("fused kernels count spikes but do not keep them: use kernels='eager' for spikes")
        x = self.emb(idx)
        if self.encode is not None:
            x = self.encode(x)
        new_blocks, spikes = [], {}
        for i, block in enumerate(self.blocks):
            x, bs, (s1, s2) = block(x, state.blocks[i] if state is not None else None, fused)
            new_blocks.append(bs)
            spikes[f"blocks.{i}.lif1"], spikes[f"blocks.{i}.lif2"] = s1, s2
        logits = self.head(self.ln_out(x))
        if fused:
            return Output(logits, State(new_blocks), None, spikes)
        return Output(logits, State(new_blocks), spikes if return_spikes else None)

    def use_fused(self, idx: torch.Tensor) -> bool:
        if self.kernels not in ("auto", "eager", "fused"):
            raise ValueError(f"kernels must be 'auto', 'eager' or 'fused', got {self.kernels!r}")
        if self.kernels == "eager" or (self.kernels == "auto" and (not idx.is_cuda or torch.is_grad_enabled())):
            return False
        from spikegpt import kernels

        if self.kernels == "auto":
            return kernels.TRITON_AVAILABLE
        if not kernels.TRITON_AVAILABLE:
            raise RuntimeError("kernels='fused' needs Triton 3.4 or later (pip install 'spike-energy[gpu]')")
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            raise RuntimeError("the fused kernels have no backward: train with kernels='eager'")
        return True

    def chunks(
        self,
        idx: torch.Tensor,
        state: State | None = None,
        *,
        mode: str = "parallel",
        chunk_len: int | None = None,
        return_spikes: bool = False,
    ):
        """Yield (start, Output) per chunk of a sequence of any length, carrying the state.

        ``parallel``: chunks of ``chunk_len`` tokens (default ``ctx_len``);
        ``streaming``: one token at a time, like an RNN.
        """
        if mode == "parallel":
            step = chunk_len or self.config.ctx_len
        elif mode == "streaming":
            step = 1
        else:
            raise ValueError(f"mode must be 'parallel' or 'streaming', got {mode!r}")
        for start in range(0, idx.shape[1], step):
            out = self(idx[:, start : start + step], state, return_spikes=return_spikes)
            state = out.state
            yield start, out

    def run(self, idx: torch.Tensor, state: State | None = None, **kwargs) -> Output:
        """The whole sequence through ``chunks`` (same arguments); outputs concatenated."""
        outs = [out for _, out in self.chunks(idx, state, **kwargs)]
        spikes = counts = None
        if outs[0].spikes is not None:
            spikes = {name: torch.cat([o.spikes[name] for o in outs], dim=1) for name in outs[0].spikes}
        if outs[0].spike_counts is not None:
            counts = {name: sum(o.spike_counts[name] for o in outs) for name in outs[0].spike_counts}
        return Output(torch.cat([o.logits for o in outs], dim=1), outs[-1].state, spikes, counts)
