"""Bits per character / token and perplexity of a model on a token sequence.

The sequence runs through ``SpikeGPT.run`` in chunks of ``ctx_len`` with the state
carried over, the way a long text is read in parallel mode. BPC is total cross-entropy
in bits divided by the number of characters of the text that was scored (for char and
byte vocabularies that is the number of predicted tokens; for BPE it is the length of
the decoded text), so BPE and char models are comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from spikegpt.model import SpikeGPT


@dataclass
class Evaluation:
    tokens: int  # predicted tokens
    chars: int  # characters (or bytes) those tokens decode to
    nats: float  # total cross-entropy
    unit: str  # "char", "byte" or "token"

    @property
    def bits_per_token(self) -> float:
        return self.nats / math.log(2) / self.tokens

    @property
    def bpc(self) -> float:
        return self.nats / math.log(2) / self.chars

    @property
    def ppl(self) -> float | None:
        """Perplexity per token, for BPE only: for char and byte vocabularies BPC is the measure."""
        return math.exp(self.nats / self.tokens) if self.unit == "token" else None

    def to_dict(self) -> dict:
        return {
            "tokens": self.tokens,
            "chars": self.chars,
            "unit": self.unit,
            "bits_per_token": self.bits_per_token,
            "bpc": self.bpc,
            "ppl": self.ppl,
        }


@torch.no_grad()
@torch.no_grad()
def cross_entropy_nats(model: SpikeGPT, ids: torch.Tensor, chunk_len: int | None = None, progress=None) -> float:
    """Sum over t of -log p(ids[t+1] | ids[:t+1]) for a 1-D tensor of ids.

    Without autograd: with it, a 40,000-character text built a graph over every chunk (the bundled
    models' card test ran for minutes) and the WKV loop could not run compiled.

    Chunks of ``chunk_len`` (default ``ctx_len``) with the state carried, each scored as it
    comes; ``progress(done, total)`` is called after each chunk with tokens scored so far.
    """
    if ids.numel() < 2:
        raise ValueError("need at least 2 tokens to evaluate")
    device = next(model.parameters()).device
    ids = ids.to(device)
    inputs, targets = ids[None, :-1], ids[1:]
    total = targets.numel()
    nats = 0.0
    for start, out in model.chunks(inputs, chunk_len=chunk_len):
        n = out.logits.shape[1]
        nats += float(F.cross_entropy(out.logits[0].float(), targets[start : start + n], reduction="sum"))
        if progress:
            progress(start + n, total)
    return nats


def evaluate(
    model: SpikeGPT,
    tokenizer,
    text: str | None = None,
    max_tokens: int | None = None,
    chunk_len: int | None = None,
    progress=None,
    ids: list[int] | None = None,
) -> Evaluation:
    """BPC / bits per token / perplexity of ``model`` on ``text`` (or on token ``ids`` already encoded)."""
    if ids is None:
        ids = tokenizer.encode(text)
    if max_tokens is not None:
        ids = ids[: max_tokens + 1]
    if len(ids) < 2:
        raise ValueError("the text is too short to evaluate (needs at least 2 tokens)")
    nats = cross_entropy_nats(model, torch.tensor(ids), chunk_len, progress)
    chars = len(ids) - 1 if tokenizer.kind in ("char", "byte") else len(tokenizer.decode(ids[1:]))
    return Evaluation(tokens=len(ids) - 1, chars=max(chars, 1), nats=nats, unit=tokenizer.unit)


def unigram_entropy_bits(ids) -> float:
    """Entropy in bits of the empirical token distribution (what a frequency-only model achieves)."""
    counts = torch.bincount(torch.as_tensor(ids)).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log2()).sum())
