"""A small SpikeGPT trainer: text in, checkpoint in the reference key format out.

    python -m spikegpt.train --text a.txt b.txt --out runs/demo --n-layer 4 --n-embd 192

AdamW with linear warmup and cosine decay, gradient clipping, a held-out split (the
last ``--val-fraction`` of the text) with bits-per-character evaluation, a progress
bar, resumable (``--resume``), bf16 autocast on CUDA. Writes

    OUT/model.pth          weights, reference key format (loads like the published models)
    OUT/model.config.json  what the keys cannot tell: ctx_len, LIF settings (read by the loader)
    OUT/model.vocab.json   the char vocabulary {"id": "char"} (char vocab only)
    OUT/model.train.pt     optimizer, step and settings, for --resume (weights_only-safe)
    OUT/train_log.json     the loss / BPC curve, settings, wall time, device
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from spikegpt.checkpoint import load_checkpoint, save_checkpoint
from spikegpt.config import SpikeGPTConfig
from spikegpt.errors import SpikeEnergyError
from spikegpt.evaluate import cross_entropy_nats
from spikegpt.model import SpikeGPT
from spikegpt.tokenizer import ByteTokenizer, CharTokenizer, read_text
from spikegpt.train_settings import TrainSettings, add_arguments, settings_from_args

logger = logging.getLogger(__name__)


def lr_at(step: int, s: TrainSettings) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``min_lr`` at ``steps``."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = min(1.0, (step - s.warmup) / max(1, s.steps - s.warmup))
    return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1 + math.cos(math.pi * progress))


def load_corpus(paths: list[str], vocab: str):
    text = "\n".join(read_text(p) for p in paths)
    if vocab == "char":
        tok = CharTokenizer.from_text(text)
    elif vocab == "byte":
        tok = ByteTokenizer()
    else:
        raise SpikeEnergyError(f"--vocab must be 'char' or 'byte', got {vocab!r}")
    return text, tok


def split(ids: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    n_val = max(int(len(ids) * val_fraction), 2)
    return ids[:-n_val], ids[-n_val:]


def get_batch(data: torch.Tensor, s: TrainSettings, gen: torch.Generator):
    ix = torch.randint(len(data) - s.ctx_len - 1, (s.batch_size,), generator=gen)
    x = torch.stack([data[i : i + s.ctx_len] for i in ix])
    y = torch.stack([data[i + 1 : i + 1 + s.ctx_len] for i in ix])
    return x, y


def evaluate_bpc(model: SpikeGPT, val: torch.Tensor, s: TrainSettings) -> float:
    """Bits per token on the first ``eval_tokens`` of the held-out split (chunks of ctx_len, state carried)."""
    model.eval()
    ids = val[: s.eval_tokens + 1]
    nats = cross_entropy_nats(model, ids, chunk_len=s.ctx_len)
    model.train()
    return nats / math.log(2) / (len(ids) - 1)


def train(s: TrainSettings, progress: bool = True) -> dict:
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    if s.threads:
        torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    text, tok = load_corpus(s.text, s.vocab)
    ids = torch.tensor(tok.encode(text), dtype=torch.long)
    train_ids, val_ids = split(ids, s.val_fraction)
    if len(train_ids) <= s.ctx_len + 1:
        raise SpikeEnergyError(f"the training text has {len(train_ids)} tokens, fewer than ctx_len+1; give more text")

    log = {"settings": asdict(s), "curve": [], "train_tokens": len(train_ids), "val_tokens": len(val_ids)}
    ckpt_path = out / "model.pth"
    state_path = out / "model.train.pt"
    start_step, elapsed = 0, 0.0
    if s.resume and ckpt_path.exists() and state_path.exists():
        model, _ = load_checkpoint(ckpt_path, dropout=s.dropout)
        resume = torch.load(state_path, map_location="cpu", weights_only=True)
        start_step, elapsed = int(resume["step"]), float(resume["elapsed_s"])
        log = json.loads((out / "train_log.json").read_text())
        gen.set_state(resume["rng"])
    else:
        config = SpikeGPTConfig(
            vocab_size=tok.vocab_size,
            n_layer=s.n_layer,
            n_embd=s.n_embd,
            ctx_len=s.ctx_len,
            dropout=s.dropout,
            binary_embedding=True,
            variant=s.variant,
        )
        model = SpikeGPT(config)
        resume = None
    model.to(s.device).train()
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "emb" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "emb" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=s.lr,
        betas=(0.9, 0.99),
    )
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
    if tok.kind == "char":
        (out / "model.vocab.json").write_text(tok.to_json(), encoding="utf-8")

    use_bf16 = str(s.device).startswith("cuda")
    bar = _progress(progress)
    t0 = time.perf_counter() - elapsed
    with bar:
        task = bar.add_task("training", total=s.steps, completed=start_step, loss=float("nan"))
        for step in range(start_step, s.steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, s)
            x, y = get_batch(train_ids, s, gen)
            x, y = x.to(s.device), y.to(s.device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(x).logits
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            opt.step()
            bar.update(task, advance=1, loss=loss.item())
            last = step + 1 == s.steps
            if (step + 1) % s.eval_every == 0 or last:
                bpc = evaluate_bpc(model, val_ids, s)
                entry = {
                    "step": step + 1,
                    "train_loss_nats": loss.item(),
                    "val_bits_per_token": bpc,
                    "lr": lr_at(step, s),
                    "elapsed_s": time.perf_counter() - t0,
                }
                log["curve"].append(entry)
                logger.info("step %d: train loss %.3f nats, held-out %.3f bits/token", step + 1, loss.item(), bpc)
                save_checkpoint(model, ckpt_path, sidecar=True)
                torch.save(
                    {
                        "step": step + 1,
                        "elapsed_s": entry["elapsed_s"],
                        "optimizer": opt.state_dict(),
                        "rng": gen.get_state(),
                    },
                    state_path,
                )
                log.update(
                    wall_time_s=entry["elapsed_s"],
                    device=_device_name(s.device),
                    torch=torch.__version__,
                    python=platform.python_version(),
                    config=model.config.to_dict(),
                    params=model.num_params(),
                )
                (out / "train_log.json").write_text(json.dumps(log, indent=1))
    return log


def _device_name(device: str) -> str:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m spikegpt.train", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = train(settings_from_args(a))
    last = log["curve"][-1]
    print(f"held-out {last['val_bits_per_token']:.3f} bits/token after {last['step']} steps; wrote {a.out}/model.pth")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
