"""Loading and saving SpikeGPT checkpoints in the reference key format.

The config travels with the weights: ``n_layer``, ``n_embd``, ``vocab_size`` and the
ChannelMix width are inferred from the keys and shapes (facts page, section 2).
Checkpoints are untrusted: ``.pth`` files load only with ``torch.load(...,
weights_only=True)``, which refuses any pickle that would run code, and
``.safetensors`` hold no code at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

from spikegpt.config import VARIANTS, SpikeGPTConfig
from spikegpt.errors import CheckpointError
from spikegpt.limits import DEFAULT_MEMORY_BUDGET, check_memory, spikegpt_run_bytes
from spikegpt.model import SpikeGPT
from spikegpt.safeio import check_regular_file, describe_content, load_json, read_head, shown, shown_path, validate
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


MAX_SIDECAR_BYTES = 1 << 20  # a sidecar is a dozen numbers


class Sidecar(BaseModel):
    """``<stem>.config.json``: SpikeGPTConfig fields (the trainer writes them all); others are ignored."""

    model_config = ConfigDict(extra="allow")
    vocab_size: StrictInt | None = Field(None, ge=1)
    n_layer: StrictInt | None = Field(None, ge=1)
    n_embd: StrictInt | None = Field(None, ge=1)
    ffn_mult: StrictInt | None = Field(None, ge=1)
    ctx_len: StrictInt | None = Field(None, ge=1)
    lif_tau: StrictFloat | StrictInt | None = None
    lif_threshold: StrictFloat | StrictInt | None = None
    lif_reset: StrictFloat | StrictInt | None = None
    surrogate_alpha: StrictFloat | StrictInt | None = None
    dropout: StrictFloat | StrictInt | None = None
    layer_norm_eps: StrictFloat | StrictInt | None = None
    binary_embedding: StrictBool | None = None
    variant: str | None = Field(None, pattern="^(" + "|".join(VARIANTS) + ")$")


def read_sidecar(path: str | Path) -> dict:
    """The sidecar's fields that are set (validated against ``Sidecar``), or {} if there is none."""
    side = sidecar_path(path)
    if not os.path.lexists(side):
        return {}
    fix = "fix or delete it"
    d = load_json(side, "sidecar", None, MAX_SIDECAR_BYTES, CheckpointError, fix)
    checked = validate(d, Sidecar, f"sidecar {shown_path(side)}", CheckpointError, fix)
    return {k: v for k, v in d.items() if k in checked.model_fields_set}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | Path, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """Tensors from a ``.pth`` (weights_only) or ``.safetensors`` file, unwrapped and checked.

    ``max_bytes``: the memory budget; a larger file is refused before it is read.
    """
    path = Path(path)
    check_regular_file(path, "--checkpoint", error=CheckpointError)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"--checkpoint {shown_path(path)} is empty (0 bytes); download it again")
    if max_bytes is not None and size > max_bytes:
        check_memory(f"reading checkpoint {shown_path(path)}", size, max_bytes)
    _check_format(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{shown_path(path)} is not a readable .safetensors file ({str(e)[:200]}); it may be truncated: "
                "download it again"
            ) from None
    else:
        obj = _torch_load(path)
    sd = _unwrap(obj, path)
    _check_tensors(sd, path)
    return sd


_EXPECTED = (
    "--checkpoint expects a SpikeGPT state dict saved by torch.save (.pth: a zip archive, or an older "
    "pickle) or a .safetensors file"
)


def _check_format(path: Path) -> None:
    """Refuse, before any loader reads it, a file whose first bytes say that it is no checkpoint at all (a text,
    a JSON tokenizer, an HTML page saved instead of the download), naming what it is and what was expected."""
    head = read_head(path)
    what = describe_content(head)
    if path.suffix == ".safetensors":
        ok = what == "a .safetensors file"
    else:  # torch.save's zip archive; the legacy format and raw state dicts are pickles
        ok = what == "a zip archive" or what.startswith("a Python pickle")
    if not ok:
        raise CheckpointError(f"--checkpoint {shown_path(path)} is {what}, not a checkpoint; {_EXPECTED}")


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
            f"{shown_path(path)} is a {describe_content(read_head(path, 8))[2:]} that torch.load cannot read "
            f"({type(e).__name__}: {first}): it is truncated or corrupt; download it again"
        ) from None


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(2):  # {"state_dict": {...}} or {"model": {"state_dict": ...}}
        if isinstance(obj, dict) and "emb.weight" not in obj:
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is not None:
                obj = inner
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f"{shown_path(path)} does not hold a state dict (found {type(obj).__name__}); is it a model checkpoint?"
        )
    not_str = [k for k in obj if not isinstance(k, str)]
    if not_str:
        raise CheckpointError(
            f"{shown_path(path)}: keys {', '.join(shown(k) + f' ({type(k).__name__})' for k in not_str[:5])} are not "
            "strings; a state dict maps parameter names to tensors"
        )
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items()}
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{shown_path(path)}: entries {', '.join(shown(k) for k in not_tensors[:5])} are not tensors; "
            "expected a SpikeGPT state dict"
        )
    return obj


def _check_tensors(sd: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse tensors that hold no data (meta), are not dense (sparse, quantized), are not floating
    point, or declare more elements than their storage holds (a stride-0 view: a few bytes in the
    file standing for a huge tensor)."""
    problems = []
    for k, t in sd.items():
        if t.is_meta:
            problems.append(f"{shown(k)} is a meta tensor (it holds no data)")
        elif t.layout != torch.strided:
            layout = str(t.layout).removeprefix("torch.")
            problems.append(f"{shown(k)} is {layout}, not dense; save it with .to_dense()")
        elif t.is_quantized:
            problems.append(f"{shown(k)} is quantized ({t.dtype}); save the float weights")
        elif t.dtype not in FLOAT_DTYPES:
            problems.append(f"{shown(k)} is {str(t.dtype).removeprefix('torch.')}, not floating point")
        else:
            held = t.untyped_storage().nbytes() - t.storage_offset() * t.element_size()
            if t.numel() * t.element_size() > held:
                problems.append(
                    f"{shown(k)} declares shape {tuple(t.shape)} ({t.numel():,} values) but its data in the file "
                    f"holds only {max(held, 0) // t.element_size():,} (a stride-0 view)"
                )
        if len(problems) >= 3:
            break
    if problems:
        raise CheckpointError(f"{shown_path(path)}: {'; '.join(problems)}. Re-save the checkpoint from the model's "
                              "float weights (torch.save(model.state_dict()))")  # fmt: skip


def infer_config(sd: dict[str, torch.Tensor], path: str | Path = "checkpoint", **overrides) -> SpikeGPTConfig:
    """n_layer, n_embd, vocab_size, ffn width from the keys; binary embedding by the model."""
    name = shown_path(path)
    if "emb.weight" not in sd:
        raise CheckpointError(
            f"{name}: no 'emb.weight' key, so this is not a SpikeGPT/RWKV-4 checkpoint "
            f"(first keys: {', '.join(shown(k) for k in list(sd)[:5])})"
        )
    emb = sd["emb.weight"]
    if emb.dim() != 2:
        raise CheckpointError(f"{name}: emb.weight has shape {tuple(emb.shape)}, expected [vocab, n_embd]")
    vocab_size, n_embd = emb.shape
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d{1,9})\.", k))}
    if not layers:
        raise CheckpointError(f"{name}: no 'blocks.N.' keys; expected a SpikeGPT state dict")
    n_layer = max(layers) + 1
    if len(layers) != n_layer:  # declared by one key, e.g. blocks.100000000.*: never build what is not there
        gap = next(i for i in range(n_layer) if i not in layers)
        raise CheckpointError(
            f"{name}: the keys name blocks up to {n_layer - 1} but only {len(layers)} blocks have weights "
            f"(block {gap} is the first missing one); the file is incomplete or not SpikeGPT"
        )
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
                f"unexpected {len(unexpected)} keys: {', '.join(shown(k) for k in unexpected[:8])}"
                f"{' ...' if len(unexpected) > 8 else ''}"
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
        logger.warning("%s: %s; results that depend on it are meaningless", shown_path(path), w)
    return warnings


def load_checkpoint(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    max_memory: int | None = None,
    **config_overrides,
) -> tuple[SpikeGPT, CheckpointInfo]:
    """A SpikeGPT in eval mode with the checkpoint's weights, and what was learnt about the file.

    ``config_overrides`` (e.g. ``lif_threshold=0.1``, ``binary_embedding=False``) change
    what the checkpoint does not store; ``None`` values are ignored. ``max_memory``: the
    memory budget in bytes (default ``limits.DEFAULT_MEMORY_BUDGET``); a file whose weights
    would need more is refused before anything is allocated.
    """
    budget = DEFAULT_MEMORY_BUDGET if max_memory is None else max_memory
    sd = read_state_dict(path, max_bytes=budget)
    elem = torch.empty((), dtype=dtype).element_size()
    check_memory(f"the weights of {shown_path(path)} in {str(dtype).removeprefix('torch.')}",
                 sum(v.numel() for v in sd.values()) * elem, budget)  # fmt: skip
    side = read_sidecar(path)
    known = {k: side[k] for k in SIDECAR_FIELDS if k in side}
    config = infer_config(sd, path, **{**known, **{k: v for k, v in config_overrides.items() if v is not None}})
    for k in ("n_layer", "n_embd", "vocab_size"):
        if k in side and side[k] != getattr(config, k):
            raise CheckpointError(
                f"{shown_path(sidecar_path(path))} says {k}={side[k]} but the weights have {getattr(config, k)}; "
                "it belongs to another checkpoint: fix or delete it"
            )
    if "ctx_len" in side:  # a size the sidecar declares: a document runs in blocks of ctx_len tokens
        check_memory(f"the sidecar {shown_path(sidecar_path(path))} declares ctx_len {side['ctx_len']:,}: one block "
                     "of that many tokens", spikegpt_run_bytes(config, 1, side["ctx_len"], elem), budget,
                     fix="fix ctx_len in the sidecar (the length the model was trained at)")  # fmt: skip
    model = build_uninitialised(config)
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


@contextlib.contextmanager
def _init_skipped():
    """``torch.nn.init``'s in-place initialisers do nothing inside (the weights are replaced right after, as
    ``transformers``' ``no_init_weights`` does)."""
    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)


def build_uninitialised(config: SpikeGPTConfig) -> SpikeGPT:
    """The model's modules with their weights allocated but not initialised (``torch.empty``: pages that nothing
    writes are not resident), for weights that are loaded right after. Not on the meta device: its factory
    functions import ``torch._dynamo`` (over a second, the largest part of loading the demo)."""
    with _init_skipped():
        return SpikeGPT(config)


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
