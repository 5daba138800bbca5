"""Loading and saving SpikeGPT checkpoints in the reference key format.

The config travels with the weights: ``n_layer``, ``n_embd``, ``vocab_size`` and the
ChannelMix width are inferred from the keys and shapes (facts page, section 2).
Checkpoints are untrusted: ``.pth`` files load only with ``torch.load(...,
weights_only=True)``, which refuses any pickle that would run code, and
``.safetensors`` hold no code at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spikegpt.config import SpikeGPTConfig
from spikegpt.errors import CheckpointError
from spikegpt.model import SpikeGPT
from spikegpt.tokenizer import NEOX_VOCAB_SIZE

logger = logging.getLogger(__name__)

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_WRAPPER_KEYS = ("state_dict", "model", "module")
_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class CheckpointInfo:
    path: str
    sha256: str
    file_dtypes: list[str]
    config: SpikeGPTConfig
    warnings: list[str] = field(default_factory=list)
    config_source: str = "inferred from the keys"  # or the sidecar file that gave ctx_len and the LIF settings


# What the keys cannot tell. A sidecar ``<stem>.config.json`` (written by the trainer) may
# give them; otherwise the published models' values are assumed (ctx_len 1024).
SIDECAR_FIELDS = ("ctx_len", "lif_tau", "lif_threshold", "lif_reset", "surrogate_alpha", "binary_embedding",
                  "layer_norm_eps", "variant")  # fmt: skip


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".config.json")


def read_sidecar(path: str | Path) -> dict:
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        d = json.loads(side.read_text(encoding="utf-8"))
    except OSError as e:
        raise CheckpointError(f"{side}: cannot read it ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{side}: not valid JSON ({e}); fix or delete it") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{side}: expected a JSON object of SpikeGPTConfig fields")
    return d


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.pth`` (weights_only) or ``.safetensors`` file, unwrapped."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; check --checkpoint")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; --checkpoint needs a .pth or .safetensors file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); download it again")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{path} is not a readable .safetensors file ({e}); it may be truncated: download it again"
            ) from None
    else:
        obj = _torch_load(path)
    return _unwrap(obj, path)


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, KeyError... for bad files
        msg = str(e)
        found = re.search(
            r"GLOBAL ([\w.]+) was not an allowed global|Unsupported global: GLOBAL ([\w.]+)"
            r"|unsupported GLOBAL ([\w.]+)",
            msg,
        )
        if found:
            what = next(g for g in found.groups() if g)
            raise CheckpointError(
                f"refused to load {path}: it is a pickle that asks to run Python code ({what}), which a "
                "weights-only load does not allow. It may be malicious. Get the checkpoint from a trusted source, "
                "or convert it to .safetensors on a machine where running its code is safe"
            ) from None
        if "Weights only load failed" in msg:
            op = re.search(r"Unsupported operand (\d+)", msg)
            raise CheckpointError(
                f"{path} cannot be loaded safely (the weights-only unpickler stops at "
                f"{'pickle opcode ' + op.group(1) if op else 'an unsupported instruction'}): it is corrupt, not a "
                "PyTorch checkpoint, or an old raw pickle. Re-save it with torch.save from a trusted copy, or convert "
                "it to .safetensors"
            ) from None
        first = msg.splitlines()[0][:160] if msg else ""
        raise CheckpointError(
            f"{path} is truncated, corrupt or not a PyTorch checkpoint ({type(e).__name__}: {first}); "
            "download it again, or check --checkpoint"
        ) from None


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(2):  # {"state_dict": {...}} or {"model": {"state_dict": ...}}
        if isinstance(obj, dict) and "emb.weight" not in obj:
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is not None:
                obj = inner
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f"{path} does not hold a state dict (found {type(obj).__name__}); is it a model checkpoint?"
        )
    for prefix in _PREFIXES:
        if all(isinstance(k, str) and k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items()}
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: entries {not_tensors[:5]} are not tensors; expected a SpikeGPT state dict")
    return obj


def infer_config(sd: dict[str, torch.Tensor], path: str | Path = "checkpoint", **overrides) -> SpikeGPTConfig:
    """n_layer, n_embd, vocab_size, ffn width from the keys; binary embedding by the model."""
    if "emb.weight" not in sd:
        raise CheckpointError(
            f"{path}: no 'emb.weight' key, so this is not a SpikeGPT/RWKV-4 checkpoint (first keys: {list(sd)[:5]})"
        )
    emb = sd["emb.weight"]
    if emb.dim() != 2:
        raise CheckpointError(f"{path}: emb.weight has shape {tuple(emb.shape)}, expected [vocab, n_embd]")
    vocab_size, n_embd = emb.shape
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not layers:
        raise CheckpointError(f"{path}: no 'blocks.N.' keys; expected a SpikeGPT state dict")
    n_layer = max(layers) + 1
    ffn_key = sd.get("blocks.0.ffn.key.weight")
    ffn_mult = 4
    if ffn_key is not None and ffn_key.dim() == 2 and ffn_key.shape[0] % n_embd == 0:
        ffn_mult = ffn_key.shape[0] // n_embd
    # The 216M (BPE) runs with a float embedding; char/byte models binarise (facts page, section 3.2)
    settings = dict(
        vocab_size=int(vocab_size),
        n_layer=n_layer,
        n_embd=int(n_embd),
        ffn_mult=ffn_mult,
        ctx_len=1024,
        binary_embedding=vocab_size != NEOX_VOCAB_SIZE,
    )
    settings.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return SpikeGPTConfig(**settings)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: {e}; check the neuron options or the checkpoint's .config.json") from None


def _squeezed(shape) -> tuple[int, ...]:
    """A shape without its size-1 dimensions: time_mix may be stored as [C] or [1, 1, C]."""
    return tuple(d for d in shape if d != 1)


def check_state_dict(sd: dict[str, torch.Tensor], model: SpikeGPT, path: str | Path) -> list[str]:
    """Raise on missing/unexpected keys and wrong shapes; return warnings (NaN/inf)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(
                f"unexpected {len(unexpected)} keys: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}"
            )
        raise CheckpointError(
            f"{path} does not match a SpikeGPT with {model.config.n_layer} layers x {model.config.n_embd}: "
            + "; ".join(parts)
            + ". Is it a SpikeGPT/RWKV-4 checkpoint in the reference key format, and complete?"
        )
    bad = [
        f"{k} is {tuple(sd[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if _squeezed(sd[k].shape) != _squeezed(v.shape)
    ]
    if bad:
        raise CheckpointError(f"{path}: wrong shapes: {'; '.join(bad[:6])}. The file is inconsistent or not SpikeGPT")
    wrong_dtype = [f"{k} ({sd[k].dtype})" for k in expected if sd[k].dtype not in FLOAT_DTYPES]
    if wrong_dtype:
        raise CheckpointError(f"{path}: tensors are not floating point: {', '.join(wrong_dtype[:6])}")
    warnings = []
    for k in expected:
        t = sd[k]
        n_bad = int((~torch.isfinite(t)).sum())
        if n_bad:
            warnings.append(f"{k} has {n_bad} NaN/inf values of {t.numel()}")
    for w in warnings:
        logger.warning("%s: %s; results that depend on it are meaningless", path, w)
    return warnings


def load_checkpoint(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    **config_overrides,
) -> tuple[SpikeGPT, CheckpointInfo]:
    """A SpikeGPT in eval mode with the checkpoint's weights, and what was learnt about the file.

    ``config_overrides`` (e.g. ``lif_threshold=0.1``, ``binary_embedding=False``) change
    what the checkpoint does not store; ``None`` values are ignored.
    """
    sd = read_state_dict(path)
    side = read_sidecar(path)
    known = {k: side[k] for k in SIDECAR_FIELDS if k in side}
    config = infer_config(sd, path, **{**known, **{k: v for k, v in config_overrides.items() if v is not None}})
    for k in ("n_layer", "n_embd", "vocab_size"):
        if k in side and side[k] != getattr(config, k):
            raise CheckpointError(
                f"{sidecar_path(path)} says {k}={side[k]} but the weights have {getattr(config, k)}; "
                "it belongs to another checkpoint: fix or delete it"
            )
    with torch.device("meta"):
        model = SpikeGPT(config)
    warnings = check_state_dict(sd, model, path)
    expected = model.state_dict()
    file_dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in sd.values()})
    sd = {k: v.reshape(expected[k].shape).to(dtype) for k, v in sd.items()}
    model.load_state_dict(sd, assign=True)
    model.to(device=device).eval()
    info = CheckpointInfo(
        path=str(path),
        sha256=sha256_file(path),
        file_dtypes=file_dtypes,
        config=config,
        warnings=warnings,
        config_source=str(sidecar_path(path)) if side else "inferred from the keys (ctx_len 1024 assumed)",
    )
    return model, info


def save_checkpoint(model: SpikeGPT, path: str | Path, dtype=torch.float32, sidecar: bool = False) -> None:
    """The reference key format (loads wherever the published checkpoints load).

    ``sidecar``: also write ``<stem>.config.json`` with what the keys cannot tell (ctx_len, LIF settings).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if sidecar:
        sidecar_path(path).write_text(json.dumps(model.config.to_dict(), indent=1))
    sd = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, path)
