"""Sampling text from a SpikeGPT in streaming mode (one token at a time, state carried)."""

from __future__ import annotations

import torch

from spikegpt.model import SpikeGPT


@torch.no_grad()
def generate(
    model: SpikeGPT,
    prompt_ids: list[int],
    n_new: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """``n_new`` tokens sampled after ``prompt_ids`` (the prompt is read in parallel mode)."""
    if not prompt_ids:
        raise ValueError("the prompt must hold at least one token")
    device = next(model.parameters()).device
    out = model.run(torch.tensor([prompt_ids], device=device))
    logits, state = out.logits[0, -1], out.state
    new = []
    for _ in range(n_new):
        logits = logits.float() / max(temperature, 1e-6)
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        nxt = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
        new.append(nxt)
        out = model(torch.tensor([[nxt]], device=device), state)
        logits, state = out.logits[0, -1], out.state
    return new
