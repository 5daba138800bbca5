"""The op-cost registry: what each kind of operation costs, declared once.

Units (stated once, used everywhere):

- ``mac``: one multiply + one add (fvcore's "flop"; ``torch.utils.flop_counter``
  counts 2 FLOPs per MAC). ``mac`` is the dense count: every (input, weight) pair.
- ``effective_mac``: MACs whose input is nonzero, for inputs that are not spikes.
- ``ac``: one accumulate (an add) per weight touched by a nonzero spike input
  (binary {0,1} or ternary {-1,0,1}); a zero costs nothing.
- elementwise primitives: ``add`` (add/sub), ``mul``, ``div``, ``exp``, ``sigmoid``,
  ``max`` (max / compare / select), ``rsqrt``, ``lookup`` (one embedding row read).

A *kind* (``linear``, ``layernorm``, ``lif``, ``wkv``, ``softmax``...) is a pure function
from shapes and operand classes to ``{stage: Counter(primitive -> count)}``. Module
bindings (``MODULE_RULES``, used by the forward hooks on SpikeGPT) and aten bindings
(``ATEN_RULES``, used by fvcore handles for the baselines) both call these kinds, so
a LayerNorm costs the same in SpikeGPT and in GPT-2.

Counts that depend only on parameters (``1 - time_mix``, ``-exp(time_decay)``) are
"setup": computed once per call here but foldable at load time, so reported apart
and never per token.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch.nn as nn

from energy.pricing.memory import SPIKE_CLASSES  # operand classes that are spikes (one definition)
from spikegpt import model as sg

PRIMITIVES = ("mac", "effective_mac", "ac", "add", "mul", "div", "exp", "sigmoid", "max", "rsqrt", "lookup")


@dataclass(frozen=True)
class Operand:
    """What a tensor seen at run time was: class and zero count (from its values)."""

    cls: str  # "binary" {0,1}, "ternary" {-1,0,1}, "integer", "float"
    numel: int
    nnz: int
    shape: tuple[int, ...]

    @property
    def is_spike(self) -> bool:
        return self.cls in SPIKE_CLASSES


@dataclass
class Cost:
    """Counts for one call: ``ops[stage][primitive]`` per call, and parameter-only ``setup``."""

    ops: dict[str, Counter] = field(default_factory=dict)
    setup: dict[str, Counter] = field(default_factory=dict)


Kind = Callable[..., Cost]
KINDS: dict[str, Kind] = {}


def register_cost(name: str):
    """Register a kind's cost formula; a duplicate name raises."""

    def deco(fn: Kind) -> Kind:
        if name in KINDS:
            raise ValueError(f"cost kind {name!r} is registered twice")
        KINDS[name] = fn
        return fn

    return deco


def _c(**kw) -> Counter:
    return Counter({k: int(v) for k, v in kw.items() if v})


# ---------------------------------------------------------------------------------
# Kinds
# ---------------------------------------------------------------------------------


@register_cost("linear")
def linear_cost(rows: int, in_features: int, out_features: int, x: Operand | None = None, bias: bool = False) -> Cost:
    """y = x W^T (+ b). Dense: rows*in*out MACs. A nonzero input element touches ``out`` weights."""
    dense = rows * in_features * out_features
    nnz = x.nnz if x is not None else rows * in_features
    counts = _c(mac=dense)
    if x is not None and x.is_spike:
        counts["ac"] = nnz * out_features
    else:
        counts["effective_mac"] = nnz * out_features
    if bias:
        counts["add"] += rows * out_features
    return Cost({"linear": counts})


@register_cost("matmul")
def matmul_cost(
    batch: int, m: int, k: int, n: int, a: Operand | None = None, b: Operand | None = None, pairs: int | None = None
) -> Cost:
    """(batch x m x k) @ (k x n): attention scores and mixing in the baselines.

    With a spike operand the product is accumulates: a spike ``a`` touches ``n`` entries of ``b`` per
    nonzero, a spike ``b`` (``a`` not a spike) ``m`` entries of ``a`` per nonzero; with both spikes
    (spiking self-attention, Q K^T) one accumulate per ``pairs``: the (a, b) products whose factors are
    both nonzero (spikingjelly's SynOp definition). Otherwise the MACs whose ``a`` is nonzero are effective."""
    dense = batch * m * k * n
    nnz = a.nnz if a is not None else batch * m * k
    counts = _c(mac=dense)
    if a is not None and a.is_spike and b is not None and b.is_spike and pairs is not None:
        counts["ac"] = pairs
    elif a is not None and a.is_spike:
        counts["ac"] = nnz * n
    elif b is not None and b.is_spike:
        counts["ac"] = b.nnz * m
    else:
        counts["effective_mac"] = nnz * n
    return Cost({"matmul": counts})


@register_cost("conv")
def conv_cost(dense: int, reach: int, x: Operand | None = None, bias_numel: int = 0) -> Cost:
    """A convolution: ``dense`` MACs are every (output position, kernel tap) pair as executed, padded taps
    included (torch's, fvcore's and spikingjelly's convention); ``reach``: the pairs whose input element is
    nonzero and inside the input (padding reads no input), which are ACs for a spike input, else the
    effective MACs. ``bias_numel``: one add per output element with a bias."""
    counts = _c(mac=dense)
    counts["ac" if x is not None and x.is_spike else "effective_mac"] = reach
    counts["add"] += bias_numel
    return Cost({"conv": counts})


@register_cost("attention")
def attention_cost(batch: int, tq: int, tk: int, d: int, dv: int, q: Operand | None = None,
                   causal: bool = False) -> Cost:  # fmt: skip
    """Fused scaled-dot-product attention (one aten op): Q K^T, the scale, a softmax per row and P V, as
    the baselines' ``h_sdpa`` composes them. Effective MACs: Q K^T skips zeros of Q; a causal P V skips the
    masked upper triangle of P (row i reads min(i + 1, tk) keys, for tq == tk)."""
    qk = KINDS["matmul"](batch, tq, d, tk, q).ops["matmul"]
    pv = KINDS["matmul"](batch, tq, tk, dv).ops["matmul"]
    if causal and tq == tk:
        pv["effective_mac"] = batch * dv * tq * (tq + 1) // 2
    ops = {"attention.matmul": qk + pv, "attention.scale": _c(mul=batch * tq * tk)}
    ops["attention.softmax"] = KINDS["softmax"](batch * tq, tk).ops["softmax"]
    return Cost(ops)


@register_cost("batchnorm")
def batchnorm_cost(numel: int, channels: int, affine: bool = True) -> Cost:
    """Inference batch norm, as executed: (x - mean) * rsqrt(var + eps) (1 add, 1 mul per element), then
    gamma, beta (1 mul, 1 add per element). Setup (parameters only, foldable at load time): var + eps and
    its rsqrt per channel."""
    ops = {"batchnorm.normalize": _c(add=numel, mul=numel)}
    if affine:
        ops["batchnorm.affine"] = _c(add=numel, mul=numel)
    return Cost(ops, setup={"batchnorm.rsqrt": _c(add=channels, rsqrt=channels)})


@register_cost("reduction")
def reduction_cost(numel_in: int, numel_out: int, mean: bool = False) -> Cost:
    """A sum (or mean) of ``numel_in`` elements into ``numel_out``: one add per element folded in
    (numel_in - numel_out), and for a mean one multiply per output."""
    return Cost({"reduction": _c(add=numel_in - numel_out, mul=numel_out if mean else 0)})


@register_cost("layernorm")
def layernorm_cost(rows: int, width: int, affine: bool = True) -> Cost:
    """Per row of ``width``: mean (width adds, 1 mul by 1/width), variance (width subs x - mean,
    width muls, width adds, 1 mul), rsqrt of (var + eps) (1 add, 1 rsqrt), normalize (width
    muls; the centred x - mean is reused from the variance), scale (width muls), shift (width adds)."""
    n, C = rows, width
    ops = {
        "layernorm.mean": _c(add=n * C, mul=n),
        "layernorm.variance": _c(add=2 * n * C, mul=n * C + n),
        "layernorm.rsqrt": _c(add=n, rsqrt=n),
        "layernorm.normalize": _c(mul=n * C),
    }
    if affine:
        ops["layernorm.scale"] = _c(mul=n * C)
        ops["layernorm.shift"] = _c(add=n * C)
    return Cost(ops)


@register_cost("elementwise")
def elementwise_cost(primitive: str, numel: int, stage: str | None = None) -> Cost:
    """``numel`` applications of one primitive (add, mul, div, exp, sigmoid, max)."""
    if primitive not in PRIMITIVES:
        raise ValueError(f"unknown primitive {primitive!r}")
    return Cost({stage or primitive: _c(**{primitive: numel})})


@register_cost("spike_add")
def spike_add_cost(numel: int, addend: Operand, stage: str = "residual") -> Cost:
    """x + y: with a spike addend only the nonzero ones cost an add (event-driven)."""
    n = addend.nnz if addend.is_spike else numel
    return Cost({stage: _c(add=n)})


@register_cost("gate")
def gate_cost(numel: int, a: Operand, b: Operand, stage: str = "gate") -> Cost:
    """a * b; with a binary operand it is a select, not a multiply."""
    if a.cls == "binary" or b.cls == "binary":
        return Cost({stage: _c(max=numel)})
    return Cost({stage: _c(mul=numel)})


@register_cost("lerp")
def lerp_cost(numel: int, width: int) -> Cost:
    """x * mix + xx * (1 - mix): 2 mul + 1 add per element; (1 - mix) is setup."""
    return Cost({"token_mix": _c(mul=2 * numel, add=numel)}, setup={"token_mix.one_minus": _c(add=width)})


@register_cost("relu_sq")
def relu_sq_cost(numel: int) -> Cost:
    """relu(x)^2: one max, one multiply."""
    return Cost({"relu_sq": _c(max=numel, mul=numel)})


@register_cost("lif")
def lif_cost(neuron_steps: int, reset: float = 0.0) -> Cost:
    """One LIF update per neuron per step, as a neuron implements it:
    charge h = v + (x - v)/tau (2 adds, 1 multiply by 1/tau; +1 add if v_reset != 0),
    fire s = h >= threshold (1 compare), reset v = s ? v_reset : h (1 select).
    (The eager PyTorch code executes 9 elementwise aten ops for this; see the census.)"""
    n = neuron_steps
    return Cost(
        {
            "lif.charge": _c(add=n * (2 + (reset != 0.0)), mul=n),
            "lif.fire": _c(max=n),
            "lif.reset": _c(max=n),
        }
    )


@register_cost("wkv")
def wkv_cost(channel_steps: int, width: int) -> Cost:
    """The reference kernel's stable recurrence, per channel per step: 2 max, 4 exp,
    1 div, 6 mul, 10 add/sub (counted from ``WKV.forward``). Setup: w = -exp(time_decay)."""
    n = channel_steps
    return Cost({"wkv": _c(max=2 * n, exp=4 * n, div=n, mul=6 * n, add=10 * n)}, setup={"wkv.decay": _c(exp=width)})


@register_cost("sigmoid")
def sigmoid_cost(numel: int) -> Cost:
    return Cost({"sigmoid": _c(sigmoid=numel)})


@register_cost("heaviside")
def heaviside_cost(numel: int) -> Cost:
    """x >= 0: one compare."""
    return Cost({"heaviside": _c(max=numel)})


@register_cost("embedding")
def embedding_cost(rows: int) -> Cost:
    """One row read per token; its energy is memory traffic (priced in the memory scenarios)."""
    return Cost({"embedding": _c(lookup=rows)})


@register_cost("softmax")
def softmax_cost(rows: int, width: int) -> Cost:
    """Stable softmax per row: max (width), subtract (width), exp (width), sum (width), divide (width)."""
    n = rows * width
    return Cost({"softmax": _c(max=n, add=2 * n, exp=n, div=n)})


@register_cost("tanh")
def tanh_cost(numel: int, stage: str = "tanh") -> Cost:
    """tanh(z) = 2 sigmoid(2z) - 1: one sigmoid, 2 mul, 1 add."""
    n = numel
    return Cost({stage: _c(sigmoid=n, mul=2 * n, add=n)})


@register_cost("gelu")
def gelu_cost(numel: int) -> Cost:
    """GPT-2's tanh GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): x^3 (2 mul), 3 more mul,
    2 add, and a tanh. The same total as the traced ``NewGELUActivation`` op by op."""
    n = numel
    tanh = KINDS["tanh"](n, "gelu").ops["gelu"]
    return Cost({"gelu": tanh + _c(mul=6 * n, add=2 * n)})


@register_cost("free")
def free_cost() -> Cost:
    """Data movement only (token shift, views, dropout in eval): no arithmetic."""
    return Cost({})


# ---------------------------------------------------------------------------------
# Module bindings (forward hooks on SpikeGPT and the plain-RWKV twin)
# ---------------------------------------------------------------------------------


def _rows(shape, last: int) -> int:
    return math.prod(shape) // last if last else 0


@dataclass(frozen=True)
class ModuleRule:
    kind: str
    cost: Callable  # (module, operands: list[Operand | None], out_shape) -> Cost
    aten: frozenset[str]  # aten ops (overload-free names) this rule accounts for
    classify: tuple[int, ...] = ()  # which positional inputs to classify (values matter)
    membrane_rw: int = 0  # membrane-potential reads + writes per output element (per neuron step)
    state_rw: int = 0  # other recurrent-state reads + writes per output element


MODULE_RULES: dict[type, ModuleRule] = {}


def bind_module(
    module_type: type, kind: str, aten: tuple[str, ...], classify: tuple[int, ...] = (), membrane_rw=0, state_rw=0
):
    if kind not in KINDS:
        raise ValueError(f"unknown cost kind {kind!r}")

    def deco(fn):
        if module_type in MODULE_RULES:
            raise ValueError(f"{module_type.__name__} has two cost rules")
        MODULE_RULES[module_type] = ModuleRule(kind, fn, frozenset(aten), classify, membrane_rw, state_rw)
        return fn

    return deco


@bind_module(nn.Linear, "linear", ("mm", "addmm", "linear", "matmul", "bmm"), classify=(0,))
def _linear(m: nn.Linear, ops, out_shape):
    x = ops[0]
    return KINDS["linear"](_rows(x.shape, m.in_features), m.in_features, m.out_features, x, m.bias is not None)


@bind_module(nn.LayerNorm, "layernorm", ("native_layer_norm", "layer_norm"))
def _layernorm(m: nn.LayerNorm, ops, out_shape):
    width = math.prod(m.normalized_shape)
    return KINDS["layernorm"](_rows(out_shape, width), width, m.elementwise_affine)


@bind_module(nn.Embedding, "embedding", ("embedding",))
def _embedding(m: nn.Embedding, ops, out_shape):
    return KINDS["embedding"](_rows(out_shape, m.embedding_dim))


@bind_module(sg.Heaviside, "heaviside", ("ge",))
def _heaviside(m, ops, out_shape):
    return KINDS["heaviside"](math.prod(out_shape))


@bind_module(sg.LIF, "lif", ("add", "sub", "rsub", "div", "mul", "ge"), membrane_rw=2)
def _lif(m: sg.LIF, ops, out_shape):
    return KINDS["lif"](math.prod(out_shape), m.reset)


@bind_module(sg.Passthrough, "free", ("zeros_like",))
def _passthrough(m, ops, out_shape):
    return KINDS["free"]()


@bind_module(sg.TokenShift, "free", (), state_rw=2)  # the previous token's input: read + write
def _token_shift(m, ops, out_shape):
    return KINDS["free"]()


@bind_module(sg.Lerp, "lerp", ("mul", "add", "rsub"))
def _lerp(m, ops, out_shape):
    return KINDS["lerp"](math.prod(out_shape), out_shape[-1])


@bind_module(sg.Sigmoid, "sigmoid", ("sigmoid",))
def _sigmoid(m, ops, out_shape):
    return KINDS["sigmoid"](math.prod(out_shape))


@bind_module(sg.SquaredReLU, "relu_sq", ("relu", "pow", "square", "mul"))
def _relu_sq(m, ops, out_shape):
    return KINDS["relu_sq"](math.prod(out_shape))


@bind_module(sg.Gate, "gate", ("mul",), classify=(0, 1))
def _gate(m, ops, out_shape):
    return KINDS["gate"](math.prod(out_shape), ops[0], ops[1])


@bind_module(sg.Residual, "spike_add", ("add",), classify=(1,))
def _residual(m, ops, out_shape):
    return KINDS["spike_add"](math.prod(out_shape), ops[1])


@bind_module(sg.WKV, "wkv", ("exp", "neg", "maximum", "sub", "add", "mul", "div"), state_rw=6)  # aa, bb, pp
def _wkv(m, ops, out_shape):
    return KINDS["wkv"](math.prod(out_shape), out_shape[-1])


@bind_module(nn.Dropout, "free", ())
def _dropout(m: nn.Dropout, ops, out_shape):
    if m.training and m.p > 0:
        raise RuntimeError("profile a model in eval mode: dropout is active")
    return KINDS["free"]()


# aten ops that move or reshape data, allocate, or copy: no arithmetic anywhere.
FREE_ATEN = frozenset(
    {
        "view", "_unsafe_view", "reshape", "expand", "t", "transpose", "permute", "unsqueeze", "squeeze",
        "select", "slice", "stack", "cat", "clone", "copy_", "contiguous", "detach", "alias", "zeros", "zeros_like",
        "empty", "empty_like", "new_zeros", "new_empty", "lift_fresh", "split", "unbind", "as_strided", "_to_copy",
        "to", "constant_pad_nd", "full", "full_like", "fill_", "ones", "ones_like", "squeeze_", "unsqueeze_",
        "_reshape_alias", "narrow", "lift_fresh_copy", "scalar_tensor", "arange",
    }
)  # fmt: skip


def _score_shaped(shape, dims: tuple[int, ...]) -> bool:
    return shape is not None and len(shape) in dims and shape[-1] == shape[-2]


def attention_stage(matmul: bool, in_shapes: list, out_shape) -> str | None:
    """Whether an op works on self-attention scores, from shapes alone: scores are (batch, heads, T, T)
    (a batched product may see them as (batch x heads, T, T)). A batched matrix product that makes them
    (Q K^T) or reads them (P V) is "attention.matmul"; an elementwise op or softmax whose output is
    score-shaped (scale, mask, softmax; also the mask built once per forward, (1, 1, T, T)) is
    "attention.scores". ``None``: not attention."""
    if matmul:
        a = in_shapes[0] if in_shapes else None
        return "attention.matmul" if _score_shaped(out_shape, (3, 4)) or _score_shaped(a, (3, 4)) else None
    return "attention.scores" if _score_shaped(out_shape, (4,)) else None


def aten_base_name(op) -> str:
    """'aten::add.Tensor' / torch.ops.aten.add.Tensor -> 'add'."""
    name = op if isinstance(op, str) else op.name()
    name = name.split("::")[-1]
    return name.split(".")[0]


# ---------------------------------------------------------------------------------
# Dispatch bindings of the model-agnostic profiler (``energy.measuring.generic``): aten ops by base name
# ---------------------------------------------------------------------------------

# elementwise aten ops -> (primitive, stage), one primitive per output element. Judgement calls: a compare,
# select, clamp, relu, sign or abs is one ``max`` (compare / select); ``rsub`` and ``sub`` are adds.
DISPATCH_ELEMENTWISE: dict[str, tuple[str, str]] = {
    **{op: ("add", op) for op in ("add", "sub", "rsub")},
    **{op: ("mul", op) for op in ("mul", "square")},
    "neg": ("add", "neg"),  # as the baselines' fvcore handles count it
    "div": ("div", "div"),
    "exp": ("exp", "exp"),
    "sigmoid": ("sigmoid", "sigmoid"),
    **{op: ("rsqrt", op) for op in ("rsqrt", "sqrt")},
    **{op: ("max", op) for op in ("ge", "gt", "le", "lt", "eq", "ne", "where", "maximum", "minimum", "relu",
                                  "clamp", "clamp_min", "clamp_max", "heaviside", "sign", "abs",
                                  "masked_fill", "logical_and", "logical_or", "logical_not", "bitwise_and",
                                  "bitwise_or", "__and__", "__or__", "tril", "triu")},
}  # fmt: skip

# aten ops the dispatch profiler treats as data movement, beyond ``FREE_ATEN`` (kept apart so that the
# SpikeGPT census's statuses do not change)
DISPATCH_FREE = FREE_ATEN | frozenset(
    {
        "index_select", "gather", "repeat", "roll", "flip", "new_ones", "new_full", "_unsafe_index", "index",
        "flatten", "unflatten", "movedim", "detach_", "resize_", "set_", "_local_scalar_dense", "item",
        "result_type", "empty_strided", "bernoulli_", "native_dropout", "dropout", "split_with_sizes", "chunk",
        "_has_compatible_shallow_copy_type", "is_nonzero", "unsafe_split", "squeeze_copy", "view_copy",
    }
)  # fmt: skip
