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

from spikegpt import cpu_kernels
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


class _LIFScan(torch.autograd.Function):
    """The LIF recurrence over T with a hand-written backward: the same values as stepping the
    equations under autograd, with the same surrogate gradient (detach_reset=False), in a
    fraction of the time (one saved tensor instead of a graph of 6 ops per step). On the CPU
    the same loop runs compiled when it can (``spikegpt.cpu_kernels``: identical spikes)."""

    @staticmethod
    def forward(ctx, x, v, tau: float, threshold: float, reset: float, alpha: float):
        if cpu_kernels.usable(x, v):
            s, h, v = cpu_kernels.lif_scan(x, v, tau, threshold, reset)
        else:
            spikes, charges = [], []
            for t in range(x.shape[1]):
                h = v + (x[:, t] - (v - reset)) / tau  # charge
                s = (h - threshold >= 0).to(x.dtype)  # fire
                v = h * (1 - s) + reset * s  # hard reset
                spikes.append(s)
                charges.append(h)
            s, h = torch.stack(spikes, dim=1), torch.stack(charges, dim=1)
        ctx.save_for_backward(s, h)
        ctx.constants = (tau, threshold, reset, alpha)
        return s, v

    @staticmethod
    def backward(ctx, g_s, g_v):
        s, h = ctx.saved_tensors
        tau, threshold, reset, alpha = ctx.constants
        surrogate = alpha / 2 / (1 + (math.pi / 2 * alpha * (h - threshold)) ** 2)  # ds/dh (ATan)
        g_x = torch.empty_like(h)
        g_v = torch.zeros_like(h[:, 0]) if g_v is None else g_v
        g_s = torch.zeros_like(h) if g_s is None else g_s
        for t in reversed(range(h.shape[1])):
            st, ht, sg = s[:, t], h[:, t], surrogate[:, t]
            g_h = g_s[:, t] * sg + g_v * ((1 - st) + (reset - ht) * sg)  # through s and through v = h(1-s) + r s
            g_x[:, t] = g_h / tau
            g_v = g_h * (1 - 1 / tau)  # dh/dv of the previous step
        return g_x, g_v, None, None, None, None


class LIF(nn.Module):
    """Multi-step leaky integrate-and-fire neuron over the token axis, hard reset.

    spikingjelly ``MultiStepLIFNode(tau, v_threshold, v_reset, decay_input=True,
    detach_reset=False)``, per element, v starting at ``v0`` (0 for a new sequence):

        h = v + (x - (v - v_reset)) / tau        # charge
        s = heaviside(h - v_threshold)           # fire (ATan surrogate gradient)
        v = h * (1 - s) + v_reset * s            # hard reset

    (stepped in ``_LIFScan``, which also carries the surrogate backward).
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
        if cpu_kernels.usable(x, v) and cpu_kernels.no_grad(x, v):  # no backward to prepare: the compiled loop
            s, _, v = cpu_kernels.lif_scan(x, v, self.tau, self.threshold, self.reset, charges=False)
            return s, v
        return _LIFScan.apply(x, v, self.tau, self.threshold, self.reset, self.alpha)  # (B, T, C), (B, C)

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
        out = cpu_kernels.lerp(x, xx, mix)  # the same arithmetic in one compiled pass, where it applies
        return x * mix + xx * (1 - mix) if out is None else out


class Sigmoid(nn.Sigmoid):
    pass


class SquaredReLU(nn.Module):
    """relu(x) ** 2, the ChannelMix activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = cpu_kernels.squared_relu(x)  # the same arithmetic in one compiled pass, where it applies
        return torch.square(torch.relu(x)) if out is None else out


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
    the reference kernel. On the CPU without autograd the same loop runs compiled when it
    can (``spikegpt.cpu_kernels``).
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
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (k, v, w, u, aa, bb, pp))
        if not grad and cpu_kernels.usable(k, v, w, u, aa, bb, pp):
            y, state = cpu_kernels.wkv_scan(w, u, k, v, aa, bb, pp)
            return y.to(out_dtype), state
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
    membranes: dict[str, torch.Tensor]  # LIF name within the block ("lif1", "att.lif_k"...) -> (B, width)


@dataclass
class State:
    """Everything a SpikeGPT carries from one token to the next."""

    blocks: list[BlockState] = field(default_factory=list)

    def detach(self) -> State:
        return State(
            [
                BlockState(
                    b.att_shift.detach(),
                    b.ffn_shift.detach(),
                    tuple(t.detach() for t in b.wkv),
                    {k: v.detach() for k, v in b.membranes.items()},
                )
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
    """The released SpikeGPT block: x + LIF(TimeMix(ln1(x))), then x + LIF(ChannelMix(ln2(x))).

    The ``twin`` variant is the same block with each LIF replaced by identity (plain RWKV-4)."""

    def __init__(self, config: SpikeGPTConfig, layer_id: int):
        super().__init__()
        C = config.n_embd
        neuron = (lambda: LIF(**config.lif_kwargs())) if config.variant == "released" else Passthrough
        self.ln0 = nn.LayerNorm(C, eps=config.layer_norm_eps) if layer_id == 0 else None
        self.ln1 = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.att = TimeMix(config, layer_id)
        self.lif1 = neuron()
        self.residual1 = Residual()
        self.ln2 = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.ffn = ChannelMix(config, layer_id)
        self.lif2 = neuron()
        self.residual2 = Residual()
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, state: BlockState | None = None, fused: bool = False):
        """-> x, the block's state, and its spike tensors (eager) or spike counts per channel (fused), by name."""
        st = state
        v0 = st.membranes if st is not None else {}
        if self.ln0 is not None:
            x = self.ln0(x)
        a, att_shift, wkv = self.att(self.ln1(x), st and st.att_shift, st and st.wkv, fused)
        x, lif1_v, s1 = self._fire(self.lif1, self.residual1, x, a, v0.get("lif1"), fused)
        f, ffn_shift = self.ffn(self.ln2(x), st and st.ffn_shift)
        x, lif2_v, s2 = self._fire(self.lif2, self.residual2, x, f, v0.get("lif2"), fused)
        x = self.dropout(x)
        spikes = {"lif1": s1, "lif2": s2} if isinstance(self.lif1, LIF) else {}
        return x, BlockState(att_shift, ffn_shift, wkv, {"lif1": lif1_v, "lif2": lif2_v}), spikes

    @staticmethod
    def _fire(lif: LIF, residual: Residual, x, a, v0, fused: bool):
        """x + LIF(a): eager modules, or one Triton kernel that also counts the spikes."""
        if fused:
            from spikegpt.kernels import lif_residual

            return lif_residual(x, a, v0, tau=lif.tau, threshold=lif.threshold, reset=lif.reset)
        s, v = lif(a, v0)
        return residual(x, s), v, s


# ---------------------------------------------------------------------------------
# The spike-input variant: a LIF before every block projection
# ---------------------------------------------------------------------------------
#
# Token-shift mixing of spikes, s_t * mix + s_{t-1} * (1 - mix), is not binary, so each
# LIF sits after its mix: key, value and receptance read the spikes of their own LIF. The
# output projection reads a LIF on the gated WKV output r * WKV(k, v) (a float in the
# released model), and the feed-forward value projection reads a LIF that replaces ReLU^2
# as the hidden activation (C -> 4C -> spikes -> C). The blocks' outputs go into the
# residual as floats, as in plain RWKV-4. The keys are the reference ones: no LIF has
# parameters.


class SpikeInputTimeMix(TimeMix):
    """TimeMix whose key, value, receptance and output projections all read binary spikes."""

    def __init__(self, config: SpikeGPTConfig, layer_id: int):
        super().__init__(config, layer_id)
        self.lif_k, self.lif_v, self.lif_r, self.lif_o = (LIF(**config.lif_kwargs()) for _ in range(4))

    def forward(self, x: torch.Tensor, shift=None, wkv_state=None, v0: dict | None = None):
        v0 = v0 or {}
        xx = self.time_shift(x, shift)
        sk, vk = self.lif_k(self.mix_k(x, xx, self.time_mix_k), v0.get("lif_k"))
        sv, vv = self.lif_v(self.mix_v(x, xx, self.time_mix_v), v0.get("lif_v"))
        sr, vr = self.lif_r(self.mix_r(x, xx, self.time_mix_r), v0.get("lif_r"))
        k, v, r = self.key(sk), self.value(sv), self.sigmoid(self.receptance(sr))
        y, wkv_state = self.wkv(self.time_decay, self.time_first, k, v, wkv_state)
        so, vo = self.lif_o(self.gate(r, y), v0.get("lif_o"))
        spikes = {"lif_k": sk, "lif_v": sv, "lif_r": sr, "lif_o": so}
        return self.output(so), x[:, -1], wkv_state, {"lif_k": vk, "lif_v": vv, "lif_r": vr, "lif_o": vo}, spikes


class SpikeInputChannelMix(ChannelMix):
    """ChannelMix whose key, receptance and value projections all read binary spikes (a LIF
    replaces ReLU^2 as the hidden activation)."""

    def __init__(self, config: SpikeGPTConfig, layer_id: int):
        super().__init__(config, layer_id)
        del self.relu_sq
        self.lif_k, self.lif_r, self.lif_h = (LIF(**config.lif_kwargs()) for _ in range(3))

    def forward(self, x: torch.Tensor, shift=None, v0: dict | None = None):
        v0 = v0 or {}
        xx = self.time_shift(x, shift)
        sk, vk = self.lif_k(self.mix_k(x, xx, self.time_mix_k), v0.get("lif_k"))
        sh, vh = self.lif_h(self.key(sk), v0.get("lif_h"))
        kv = self.value(sh)
        sr, vr = self.lif_r(self.mix_r(x, xx, self.time_mix_r), v0.get("lif_r"))
        r = self.sigmoid(self.receptance(sr))
        spikes = {"lif_k": sk, "lif_h": sh, "lif_r": sr}
        return self.gate(r, kv), x[:, -1], {"lif_k": vk, "lif_h": vh, "lif_r": vr}, spikes


class SpikeInputBlock(nn.Module):
    """x + TimeMix(ln1(x)), then x + ChannelMix(ln2(x)), every projection fed by its own LIF."""

    def __init__(self, config: SpikeGPTConfig, layer_id: int):
        super().__init__()
        C = config.n_embd
        self.ln0 = nn.LayerNorm(C, eps=config.layer_norm_eps) if layer_id == 0 else None
        self.ln1 = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.att = SpikeInputTimeMix(config, layer_id)
        self.residual1 = Residual()
        self.ln2 = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.ffn = SpikeInputChannelMix(config, layer_id)
        self.residual2 = Residual()
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, state: BlockState | None = None, fused: bool = False):
        st = state
        v0 = st.membranes if st is not None else {}
        if self.ln0 is not None:
            x = self.ln0(x)
        a, att_shift, wkv, v_att, s_att = self.att(
            self.ln1(x), st and st.att_shift, st and st.wkv, {k[4:]: v for k, v in v0.items() if k[:4] == "att."}
        )
        x = self.residual1(x, a)
        f, ffn_shift, v_ffn, s_ffn = self.ffn(
            self.ln2(x), st and st.ffn_shift, {k[4:]: v for k, v in v0.items() if k[:4] == "ffn."}
        )
        x = self.dropout(self.residual2(x, f))
        membranes = {**{f"att.{k}": v for k, v in v_att.items()}, **{f"ffn.{k}": v for k, v in v_ffn.items()}}
        spikes = {**{f"att.{k}": s for k, s in s_att.items()}, **{f"ffn.{k}": s for k, s in s_ffn.items()}}
        return x, BlockState(att_shift, ffn_shift, wkv, membranes), spikes


# ---------------------------------------------------------------------------------
# SpikeGPT
# ---------------------------------------------------------------------------------


# Measured on random models (tiny and 4 x 768): with gain 1 the LIF inputs have std
# about 0.28 (TimeMix) and 0.42 (ChannelMix).
LIF_INPUT_GAIN = {"att.output": 7.0, "ffn.value": 5.0}
# The spike-input variant's LIFs read the token-shift mixes of ln1/ln2 (LayerNorm gain 2), the
# gated WKV output (att.value gain 8) and the feed-forward key (gain 5): measured on a random
# 4 x 192 model, every LIF then fires at 0.06-0.18 at init, like the released model's 0.15-0.18.
SPIKE_INPUT_GAIN = {"att.value": 8.0, "ffn.key": 5.0, "ln1": 2.0, "ln2": 2.0}
INIT_GAINS = {"released": LIF_INPUT_GAIN, "twin": {}, "spike-input": SPIKE_INPUT_GAIN}
BLOCKS = {"released": Block, "twin": Block, "spike-input": SpikeInputBlock}


class SpikeGPT(nn.Module):
    def __init__(self, config: SpikeGPTConfig, kernels: str = "auto"):
        super().__init__()
        self.config = config
        # "eager": the modules below; "fused": Triton kernels for WKV + gate and LIF + residual
        # (spikegpt/kernels.py, forward only); "auto": fused on CUDA without autograd when Triton is there
        self.kernels = kernels
        self.emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.encode = Heaviside(config.surrogate_alpha) if config.binary_embedding else None
        self.blocks = nn.ModuleList([BLOCKS[config.variant](config, i) for i in range(config.n_layer)])
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
        The spike-input variant's gains are in ``SPIKE_INPUT_GAIN``; the twin's are all 1.
        A trained checkpoint replaces all of this.
        """
        nn.init.normal_(self.emb.weight, std=1.0, generator=generator)
        for name, m in self.named_modules():
            gains = INIT_GAINS[self.config.variant] if name.startswith("blocks.") else {}
            gain = gains.get(name.split(".", 2)[-1], 1.0)
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=gain * m.in_features**-0.5, generator=generator)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.weight, gain)
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
            x, bs, block_spikes = block(x, state.blocks[i] if state is not None else None, fused)
            new_blocks.append(bs)
            spikes.update({f"blocks.{i}.{name}": s for name, s in block_spikes.items()})
        logits = self.head(self.ln_out(x))
        if fused:
            return Output(logits, State(new_blocks), None, spikes)
        return Output(logits, State(new_blocks), spikes if return_spikes else None)

    def use_fused(self, idx: torch.Tensor) -> bool:
        if self.kernels not in ("auto", "eager", "fused"):
            raise ValueError(f"kernels must be 'auto', 'eager' or 'fused', got {self.kernels!r}")
        if self.kernels == "eager" or (self.kernels == "auto" and (not idx.is_cuda or torch.is_grad_enabled())):
            return False
        if self.config.variant != "released":  # the kernels fuse the released placement (LIF + residual)
            if self.kernels == "fused":
                raise RuntimeError(f"the fused kernels implement the released model, not {self.config.variant!r}")
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
