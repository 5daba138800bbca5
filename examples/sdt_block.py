"""A Spike-driven Transformer encoder block (Yao et al., "Spike-driven Transformer", NeurIPS 2023, eqs. 16-20
and the SDSA of eq. 21, version 1), with the membrane shortcut:

    U' = U + SDSA(SN(U))                                   (eq. 17, membrane shortcut)
    U'' = U' + MLP(SN(U'))                                 (eq. 18)
    Q, K, V = SN(BN(Linear(S)))                            (eq. 19)
    SDSA(Q, K, V) = Q (x) SN(SUM_c(K (x) V))              (eq. 21: Hadamard products and a column sum, no matmul)
    SDSA output = BN(Linear(.))                            (the projection)
    MLP(S) = BN(Linear(SN(BN(Linear(S)))))

U is a membrane potential (float) of shape (T, B, N, D). The neuron is a multi-step LIF written like the
``clock_driven.MultiStepLIFNode`` that the authors' code (and SpikeGPT's) vendors from spikingjelly 0.0.0.0.14:
it is recognised by that class name and its ``v_threshold``, not by its library. The SUM_c neuron's threshold
is 0.5, as in the authors' code.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class MultiStepLIFNode(nn.Module):
    """H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau; S[t] = H[t] >= V_th; V[t] = H[t] (1 - S[t]) + V_reset S[t]."""

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0, v_reset: float = 0.0):
        super().__init__()
        self.tau, self.v_threshold, self.v_reset = tau, v_threshold, v_reset
        self.v = torch.zeros(())

    def forward(self, x):  # (T, ...) -> spikes (T, ...)
        v = torch.full_like(x[0], self.v_reset)
        out = []
        for t in range(x.shape[0]):
            h = v + (x[t] - (v - self.v_reset)) / self.tau
            s = (h >= self.v_threshold).to(x.dtype)
            v = h * (1 - s) + self.v_reset * s
            out.append(s)
        self.v = v
        return torch.stack(out)


class LinearBN(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear, self.bn = nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out)

    def forward(self, x):
        y = self.linear(x)
        T, B, N, D = y.shape
        return self.bn(y.reshape(T * B * N, D)).reshape(T, B, N, D)


class SDSA(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = LinearBN(dim, dim), LinearBN(dim, dim), LinearBN(dim, dim)
        self.q_lif, self.k_lif, self.v_lif = MultiStepLIFNode(), MultiStepLIFNode(), MultiStepLIFNode()
        self.kv_lif = MultiStepLIFNode(v_threshold=0.5)
        self.proj = LinearBN(dim, dim)

    def forward(self, s):  # s: spikes (T, B, N, D)
        q, k, v = self.q_lif(self.q(s)), self.k_lif(self.k(s)), self.v_lif(self.v(s))
        kv = (k * v).sum(dim=2, keepdim=True)  # SUM_c over the tokens: (T, B, 1, D)
        return self.proj(q * self.kv_lif(kv))  # Q (x) SN(.) is a mask: no multiplication


class SDTBlock(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, mlp_ratio: int = 4):
        super().__init__()
        self.sn1, self.attn = MultiStepLIFNode(), SDSA(dim, heads)
        self.sn2, self.fc1 = MultiStepLIFNode(), LinearBN(dim, dim * mlp_ratio)
        self.sn3, self.fc2 = MultiStepLIFNode(), LinearBN(dim * mlp_ratio, dim)

    def forward(self, u):  # u: membrane potential (T, B, N, D)
        u = u + self.attn(self.sn1(u))
        return u + self.fc2(self.sn3(self.fc1(self.sn2(u))))


def make(steps: int = 4, batch: int = 2, tokens: int = 16, dim: int = 32, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = SDTBlock(dim).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(3.0, 6.0)  # gains that make the LIFs fire at rates like the papers' (5-30%)
            m.bias.data.uniform_(0.0, 0.5)
    inputs = torch.randn(steps, batch, tokens, dim) * 1.5  # membrane potential
    return {"model": model, "inputs": inputs, "samples": batch}
