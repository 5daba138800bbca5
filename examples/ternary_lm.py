"""A ternary-spike language-model block in the style of SpikeLM (Xing et al., "SpikeLM: Towards General
Spike-Driven Language Modeling via Elastic Bi-Spiking Mechanisms", ICML 2024): bidirectional spikes
s = sign(u) [|u| >= theta] in {-1, 0, 1} before every projection, so every projection is accumulates
(an add or a subtract per nonzero); attention scores and softmax stay in floating point (fused SDPA).
The spike amplitude (SpikeLM's elastic alpha) is taken as 1: an assumption, foldable into the weights.

    x = Embedding(tokens)
    x = x + W_o S(SDPA(W_q S(LN(x)), W_k S(LN(x)), W_v S(LN(x)); causal))
    x = x + W_2 S(W_1 S(LN(x)))
    logits = W_head S(LN(x))

The spike function is a custom ``torch.autograd.Function`` (straight-through gradient), as SpikeLM
writes it: no neuron library knows it, so spike-energy finds it from its ternary output.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class TernarySpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, theta: float = 0.5):
        return torch.sign(u) * (u.abs() >= theta).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def spike(u):
    return TernarySpike.apply(u)


class TernaryBlock(nn.Module):
    def __init__(self, vocab: int = 64, dim: int = 32, heads: int = 4, hidden: int = 128):
        super().__init__()
        self.heads = heads
        self.embed = nn.Embedding(vocab, dim)
        self.ln1, self.ln2, self.ln_f = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.w1, self.w2 = nn.Linear(dim, hidden, bias=False), nn.Linear(hidden, dim, bias=False)
        self.head = nn.Linear(dim, vocab, bias=False)

    def _split(self, x):  # (B, T, D) -> (B, H, T, D/H)
        B, T, D = x.shape
        return x.reshape(B, T, self.heads, D // self.heads).transpose(1, 2)

    def forward(self, tokens):  # (B, T) token ids -> logits (B, T, vocab)
        x = self.embed(tokens)
        s = spike(self.ln1(x))
        q, k, v = self._split(self.wq(s)), self._split(self.wk(s)), self._split(self.wv(s))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(x.shape)
        x = x + self.wo(spike(a))
        x = x + self.w2(spike(self.w1(spike(self.ln2(x)))))
        return self.head(spike(self.ln_f(x)))


def make(batch: int = 2, tokens: int = 16, vocab: int = 64, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = TernaryBlock(vocab).eval()
    inputs = torch.randint(0, vocab, (batch, tokens))
    return {"model": model, "inputs": inputs, "samples": batch}
