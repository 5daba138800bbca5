"""The trainer's settings and command-line options, apart from the trainer (no torch import):
``spike-energy train --help`` builds its parser from these alone."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from spikegpt.config import VARIANTS


@dataclass
class TrainSettings:
    text: list[str]
    out: str
    vocab: str = "char"  # "char" (built from the text) or "byte"
    variant: str = "released"  # where the neurons sit: released, twin (no LIF) or spike-input (config.VARIANTS)
    n_layer: int = 4
    n_embd: int = 192
    ctx_len: int = 128
    batch_size: int = 16
    steps: int = 2000
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    dropout: float = 0.0
    val_fraction: float = 0.05
    eval_every: int = 250
    eval_tokens: int = 16384
    seed: int = 1337
    device: str = "cpu"
    threads: int = 0  # CPU threads (0: torch's default)
    resume: bool = False
    extra: dict = field(default_factory=dict)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainSettings(text=[], out="")
    p.add_argument("--text", nargs="+", required=True, help="UTF-8 training text file(s)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--vocab", choices=["char", "byte"], default=d.vocab)
    p.add_argument("--variant", choices=VARIANTS, default=d.variant,
                   help="where the LIF neurons sit: released (after each block output, the paper's model), "
                        "twin (no LIF: plain RWKV-4) or spike-input (before every block projection)")  # fmt: skip
    ints = (
        "n_layer",
        "n_embd",
        "ctx_len",
        "batch_size",
        "steps",
        "warmup",
        "eval_every",
        "eval_tokens",
        "seed",
        "threads",
    )
    for name in ints:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("lr", "min_lr", "weight_decay", "grad_clip", "dropout", "val_fraction"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--device", default=d.device)
    p.add_argument("--resume", action="store_true", help="continue from OUT/model.pth and OUT/model.train.pt")


def settings_from_args(a: argparse.Namespace) -> TrainSettings:
    names = TrainSettings.__dataclass_fields__
    return TrainSettings(**{k: v for k, v in vars(a).items() if k in names})
