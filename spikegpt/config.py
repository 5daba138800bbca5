"""SpikeGPT configuration: architecture, LIF neuron and presets.

The checkpoint stores no config (section 2 of the facts page): ``checkpoint.py``
infers ``n_layer``, ``n_embd`` and ``vocab_size`` from the keys; ``ctx_len`` is 1024
for both published models.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

VARIANTS = ("released", "twin", "spike-input")


@dataclass
class SpikeGPTConfig:
    vocab_size: int = 256
    n_layer: int = 2
    n_embd: int = 64
    ctx_len: int = 1024
    ffn_mult: int = 4  # ChannelMix hidden width = ffn_mult * n_embd (4 in SpikeGPT/RWKV-4)
    # LIF neuron (spikingjelly MultiStepLIFNode as vendored by SpikeGPT)
    lif_tau: float = 2.0
    lif_threshold: float = 1.0  # the BookCorpus checkpoint may have been trained with 0.1
    lif_reset: float = 0.0  # hard reset to this value
    surrogate_alpha: float = 2.0  # ATan surrogate width (training only)
    # The training code always binarises the embedding; the 216M runs without it
    # (facts page, section 3.2). Default chosen by the loader from the checkpoint.
    binary_embedding: bool = True
    dropout: float = 0.0  # after each block; the 46M used 0.03 in training
    layer_norm_eps: float = 1e-5
    # Where the neurons sit (model.py): "released" (the paper's model: a LIF after each block
    # output), "twin" (plain RWKV-4: no LIF) or "spike-input" (a LIF before every block
    # projection, so that they all read binary spikes). The keys cannot tell them apart:
    # the sidecar records it.
    variant: str = "released"

    def __post_init__(self) -> None:
        if not isinstance(self.binary_embedding, bool):
            raise ValueError(f"SpikeGPTConfig.binary_embedding must be true or false, got {self.binary_embedding!r}")
        for name in ("lif_tau", "lif_threshold", "lif_reset", "surrogate_alpha", "dropout", "layer_norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"SpikeGPTConfig.{name} must be a finite number, got {value!r}")
        for name in ("vocab_size", "n_layer", "n_embd", "ctx_len", "ffn_mult"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SpikeGPTConfig.{name} must be a positive integer, got {value!r}")
        if not self.lif_tau >= 1.0:
            raise ValueError(f"SpikeGPTConfig.lif_tau must be >= 1, got {self.lif_tau!r}")
        if not self.lif_threshold > self.lif_reset:
            raise ValueError(
                f"SpikeGPTConfig.lif_threshold ({self.lif_threshold!r}) must exceed lif_reset ({self.lif_reset!r})"
            )
        if self.variant not in VARIANTS:
            raise ValueError(f"SpikeGPTConfig.variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SpikeGPTConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def ffn_hidden(self) -> int:
        return self.ffn_mult * self.n_embd

    def lif_kwargs(self) -> dict:
        return dict(tau=self.lif_tau, threshold=self.lif_threshold, reset=self.lif_reset, alpha=self.surrogate_alpha)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SpikeGPTConfig:
        """Rebuild a config, rejecting unknown keys (like nanoGPT's configurator)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SpikeGPTConfig keys: {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> SpikeGPTConfig:
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, SpikeGPTConfig] = {
    # SpikeGPT-216M (ridger/SpikeGPT-OpenWebText-216M): GPT-NeoX 20B BPE, float embedding
    "216m": SpikeGPTConfig(vocab_size=50277, n_layer=18, n_embd=768, ctx_len=1024, binary_embedding=False),
    # The paper's 46M enwik8 model (unpublished): byte vocab, binary embedding
    "46m-enwik8": SpikeGPTConfig(vocab_size=256, n_layer=12, n_embd=512, ctx_len=1024, binary_embedding=True),
    # Tests
    "tiny": SpikeGPTConfig(vocab_size=64, n_layer=2, n_embd=32, ctx_len=64, binary_embedding=True),
}


def preset(name: str, **overrides) -> SpikeGPTConfig:
    try:
        base = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    return base.replace(**overrides)
