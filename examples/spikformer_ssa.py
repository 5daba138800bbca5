"""A Spikformer encoder block (Zhou et al., "Spikformer: When Spiking Neural Network Meets Transformer",
ICLR 2023, eqs. 7-13) on spikingjelly 2.0 ``activation_based`` LIF neurons (multi-step mode).

    Q = SN_Q(BN(X W_Q)),  K = SN_K(BN(X W_K)),  V = SN_V(BN(X W_V))          (eq. 10)
    SSA'(Q, K, V) = SN(Q K^T V * s)                                             (eq. 11)
    SSA(Q, K, V) = SN(BN(Linear(SSA'(Q, K, V))))                                (eq. 12)
    X' = X + SSA(X),  X'' = X' + MLP(X'),  MLP = SN(BN(Linear(SN(BN(Linear)))))   (eqs. 7-8)

X is spikes of shape (T, B, N, D). s = 0.125 and the attention neuron's threshold 0.5, as in the authors'
code. The residual of spikes makes X' integer valued (0, 1, 2): the MLP's first layer then multiplies.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, neuron


def _lif(threshold: float = 1.0) -> nn.Module:
    return neuron.LIFNode(tau=2.0, v_threshold=threshold, detach_reset=True, step_mode="m")


class LinearBN(nn.Module):
    """Linear then BatchNorm1d over the feature dimension of (T, B, N, D)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear, self.bn = nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out)

    def forward(self, x):
        y = self.linear(x)  # (T, B, N, d_out)
        T, B, N, D = y.shape
        return self.bn(y.reshape(T * B * N, D)).reshape(T, B, N, D)


class SSA(nn.Module):
    def __init__(self, dim: int, heads: int, scale: float = 0.125):
        super().__init__()
        self.heads, self.scale = heads, scale
        self.q, self.k, self.v = LinearBN(dim, dim), LinearBN(dim, dim), LinearBN(dim, dim)
        self.q_lif, self.k_lif, self.v_lif = _lif(), _lif(), _lif()
        self.attn_lif = _lif(0.5)
        self.proj, self.proj_lif = LinearBN(dim, dim), _lif()

    def _heads(self, x):  # (T, B, N, D) -> (T, B, H, N, D/H)
        T, B, N, D = x.shape
        return x.reshape(T, B, N, self.heads, D // self.heads).transpose(2, 3)

    def forward(self, x):
        q = self._heads(self.q_lif(self.q(x)))
        k = self._heads(self.k_lif(self.k(x)))
        v = self._heads(self.v_lif(self.v(x)))
        attn = q @ k.transpose(-2, -1)  # (T, B, H, N, N): spike x spike, integer counts
        y = (attn @ v) * self.scale  # (T, B, H, N, D/H)
        y = self.attn_lif(y.transpose(2, 3).reshape(x.shape))
        return self.proj_lif(self.proj(y))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.lif1 = LinearBN(dim, hidden), _lif()
        self.fc2, self.lif2 = LinearBN(hidden, dim), _lif()

    def forward(self, x):
        return self.lif2(self.fc2(self.lif1(self.fc1(x))))


class SpikformerBlock(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, mlp_ratio: int = 4):
        super().__init__()
        self.attn, self.mlp = SSA(dim, heads), MLP(dim, dim * mlp_ratio)

    def forward(self, x):  # x: spikes (T, B, N, D)
        functional.reset_net(self)  # each call is a new sample: no membrane state carried over
        x = x + self.attn(x)
        return x + self.mlp(x)


def make(steps: int = 4, batch: int = 2, tokens: int = 16, dim: int = 32, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = SpikformerBlock(dim).eval()
    for m in model.modules():  # random inference statistics and affine parameters
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(3.0, 6.0)  # gains that make the LIFs fire at rates like the papers' (5-30%)
            m.bias.data.uniform_(0.0, 0.5)
    inputs = (torch.rand(steps, batch, tokens, dim) < 0.3).float()  # input spikes
    return {"model": model, "inputs": inputs, "samples": batch}
