"""``energy.measuring.generic.profile_model(model, inputs)``: profile any ``nn.Module``, unchanged.

Every aten op the forward executes is seen at the dispatch level (a ``TorchDispatchMode``), charged to the
innermost running module (forward pre-/post-hooks keep the stack), and priced by the cost kinds of
``energy.measuring.rules`` (each op's cost is declared there once):

- matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``; ``linear`` and ``matmul`` reach them), every
  convolution and the fused scaled-dot-product attention, whether a module or a functional call made them;
  their operands are classified from the values seen (binary, ternary, integer, float; zeros), so a spike
  operand makes accumulates (ACs) and anything else MACs (dense, and effective: zeros skipped);
- elementwise ops, reductions, softmax, layer and batch norm, embeddings (``rules.DISPATCH_ELEMENTWISE`` and
  the kinds); data movement is free (``rules.DISPATCH_FREE``); any other op is listed as uncounted.

Neurons are found by class (``energy.measuring.spiking_neurons``) with their state: per neuron layer the spikes, the
firing rate, the neuron steps (one membrane update per neuron per step) and NeuroBench's count of membrane
updates (state elements that changed). A module or a custom ``torch.autograd.Function`` whose output is
spikes (binary or ternary) while its input is not is reported as spiking but "not recognised as a neuron";
its ops are counted like all others.

Counts are totals over the call; ``samples`` (default: the first dimension of the first input) turns them
into per-sample figures, as NeuroBench reports them.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten

from energy.measuring.adapters import Adapter, adapter_for
from energy.measuring.hooks import classify
from energy.measuring.rules import (
    DISPATCH_ELEMENTWISE,
    DISPATCH_FREE,
    KINDS,
    PRIMITIVES,
    Cost,
    Operand,
    aten_base_name,
    attention_stage,
)
from energy.measuring.spiking_neurons import NeuronInfo
from energy.pricing.costs import CostTable, load_costs

MATMULS = {"mm": (0, 1, None), "addmm": (1, 2, 0), "bmm": (0, 1, None), "baddbmm": (1, 2, 0)}
SDPA = {
    "_scaled_dot_product_flash_attention_for_cpu": 4,  # index of is_causal in the positional arguments
    "_scaled_dot_product_flash_attention": 4,
    "_scaled_dot_product_efficient_attention": 6,
    "_scaled_dot_product_cudnn_attention": 6,
    "_scaled_dot_product_fused_attention_overrideable": 5,
}
CONNECTION_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # NeuroBench's STATELESS_LAYERS
NEUROBENCH_ACTIVATIONS = (nn.ReLU, nn.Sigmoid)  # NeuroBench's SUPPORTED_ACTIVATIONS, besides the neurons


def _first_tensor(x):
    for t in tree_flatten(x)[0]:
        if isinstance(t, torch.Tensor):
            return t
    return None


def _operand(t: torch.Tensor) -> Operand:
    return classify(t.detach())


def _nonzero_count(t: torch.Tensor) -> int:
    return int(torch.count_nonzero(t))


@dataclass
class _Record:
    """What the dispatch mode and the hooks collected (plain counters, no tensors kept)."""

    ops: Counter = field(default_factory=Counter)  # (layer, aten op, stage, primitive, operand) -> count
    setup: Counter = field(default_factory=Counter)  # (layer, stage, primitive) -> count
    calls: Counter = field(default_factory=Counter)  # (layer, aten op, status) -> calls
    operands: Counter = field(default_factory=Counter)  # (layer, aten op, arg, class) -> elements
    nonzero: Counter = field(default_factory=Counter)  # (layer, aten op, arg) -> nonzero elements
    dense_in_bounds: Counter = field(default_factory=Counter)  # layer -> conv taps reading real input
    neuron_steps: Counter = field(default_factory=Counter)
    spikes: Counter = field(default_factory=Counter)
    spike_classes: dict = field(default_factory=dict)  # layer -> set of output classes
    nonzero_out: Counter = field(default_factory=Counter)  # activation layers -> nonzero outputs
    numel_out: Counter = field(default_factory=Counter)
    changed: Counter = field(default_factory=Counter)  # neuron -> NeuroBench membrane updates
    changed_known: dict = field(default_factory=dict)  # neuron -> bool (state readable per step)
    unrecognised: dict = field(default_factory=dict)  # layer -> "module" / "autograd.Function"
    module_types: dict = field(default_factory=dict)
    order: dict = field(default_factory=dict)  # module -> None, in the order of first call


class _Mode(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # never under torch.compile (see energy.measuring.census)

    def __init__(self, stack: list[str], rec: _Record, params: list[torch.Tensor]):
        super().__init__()
        self.stack = stack
        self.rec = rec
        # storages of the parameters, and of what ops on them alone made (kept alive while the
        # mode runs, so that no activation can reuse their memory)
        self.param_storages = {t.untyped_storage().data_ptr() for t in params}
        self.kept: list[torch.Tensor] = []

    def _parameter_only(self, args, kwargs, out) -> bool:
        """Every tensor operand is a parameter, or was computed from parameters alone: a cost that depends
        only on the weights (``1 - mix``, ``-exp(decay)``), foldable at load time, so "setup", never per call."""
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if not tensors or not all(t.untyped_storage().data_ptr() in self.param_storages for t in tensors):
            return False
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.param_storages.add(t.untyped_storage().data_ptr())
                self.kept.append(t)
        return True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        layer = self.stack[-1] if self.stack else ""
        op = aten_base_name(func)
        base = op[:-1] if op.endswith("_") and not op.startswith("_") else op
        setup = self._parameter_only(args, kwargs, out)
        cost = self._cost(base, layer, args, kwargs, out)
        free = base in DISPATCH_FREE or op in DISPATCH_FREE
        status = ("setup" if setup else "counted") if cost is not None else ("free" if free else "uncounted")
        self.rec.calls[(layer, base, status)] += 1
        if cost is not None:
            for stage, c in cost.ops.items():
                for prim, n in c.items():
                    if setup:
                        self.rec.setup[(layer, stage, prim)] += n
                    else:
                        self.rec.ops[(layer, base, stage, prim, self._cls)] += n
            for stage, c in cost.setup.items():
                for prim, n in c.items():
                    self.rec.setup[(layer, stage, prim)] += n
        return out

    def _note(self, layer: str, base: str, arg: str, t: torch.Tensor) -> Operand:
        o = _operand(t)
        self.rec.operands[(layer, base, arg, o.cls)] += o.numel
        self.rec.nonzero[(layer, base, arg)] += o.nnz
        return o

    def _cost(self, base: str, layer: str, args, kwargs, out) -> Cost | None:
        self._cls = ""
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        numel = first.numel() if isinstance(first, torch.Tensor) else 0
        if base in MATMULS:
            ia, ib, ibias = MATMULS[base]
            a, b = args[ia], args[ib]
            oa, ob = self._note(layer, base, "a", a), self._note(layer, base, "b", b)
            pairs = None
            if oa.is_spike and ob.is_spike:  # both spikes: only the (1, 1) pairs accumulate
                pairs = int(((a != 0).double() @ (b != 0).double()).sum())
            batch = a.shape[0] if a.dim() == 3 else 1
            cost = KINDS["matmul"](batch, a.shape[-2], a.shape[-1], b.shape[-1], oa, ob, pairs)
            stage = attention_stage(True, [tuple(a.shape), tuple(b.shape)], tuple(first.shape)) or "matmul"
            cost = Cost({stage: cost.ops["matmul"]})
            if ibias is not None and float(kwargs.get("beta", 1)) != 0:
                cost.ops[stage]["add"] += numel  # the bias (or the added matrix): one add per output
            self._cls = oa.cls if oa.is_spike or not ob.is_spike else ob.cls
            return cost
        if base == "convolution":
            return self._conv(layer, args, first)
        if base in SDPA:
            q, k, v = args[:3]
            i = SDPA[base]
            causal = bool(kwargs.get("is_causal", args[i] if len(args) > i else False))
            oq = self._note(layer, base, "q", q)
            self._cls = oq.cls
            batch = math.prod(q.shape[:-2])
            return KINDS["attention"](batch, q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1], oq, causal)
        if base in ("add", "sub", "rsub") and len(args) > 1 and all(isinstance(t, torch.Tensor) for t in args[:2]):
            a, b = args[0], args[1]
            if a.numel() == numel and b.numel() == numel:
                oa, ob = _operand(a), _operand(b)
                spikes = [o for o in (oa, ob) if o.is_spike]
                if spikes:  # event-driven: the sparser spike operand is added into the other
                    addend = min(spikes, key=lambda o: o.nnz)
                    self._cls = addend.cls
                    return KINDS["spike_add"](numel, addend, base)
        if base == "mul" and len(args) > 1 and all(isinstance(t, torch.Tensor) for t in args[:2]):
            a, b = args[0], args[1]
            if a.numel() == numel and b.numel() == numel:
                oa, ob = _operand(a), _operand(b)
                if oa.cls == "binary" or ob.cls == "binary":
                    self._cls = "binary"
                    return KINDS["gate"](numel, oa, ob, "mul (mask)")
        if base == "pow" and len(args) > 1 and not isinstance(args[1], torch.Tensor):
            e = float(args[1])
            if e.is_integer() and 1 <= e <= 4:
                return KINDS["elementwise"]("mul", numel * (int(e) - 1), "pow")
            return Cost({"pow": Counter({"exp": numel, "mul": numel})})
        if base in DISPATCH_ELEMENTWISE:
            prim, stage = DISPATCH_ELEMENTWISE[base]
            return KINDS["elementwise"](prim, numel, stage)
        if base in ("sum", "mean"):
            return KINDS["reduction"](args[0].numel(), max(numel, 1), base == "mean")
        if base in ("_softmax", "softmax", "_safe_softmax", "_log_softmax"):
            x = args[0]
            dim = args[1] % x.dim()
            return KINDS["softmax"](x.numel() // x.shape[dim], x.shape[dim])
        if base == "native_layer_norm":
            width = math.prod(args[1])
            return KINDS["layernorm"](args[0].numel() // width, width, args[2] is not None)
        if base in ("_native_batch_norm_legit_no_training", "native_batch_norm", "_native_batch_norm_legit"):
            x = args[0]
            return KINDS["batchnorm"](x.numel(), x.shape[1], args[1] is not None)
        if base == "embedding":
            return KINDS["embedding"](args[1].numel())
        if base == "tanh":
            return KINDS["tanh"](numel)
        if base == "gelu":
            return KINDS["gelu"](numel)
        return None

    def _conv(self, layer: str, args, out: torch.Tensor) -> Cost:
        x, w, bias, stride, padding, dilation, transposed, output_padding, groups = args[:9]
        ox = self._note(layer, "convolution", "a", x)
        self._cls = ox.cls
        # every (position, tap) pair as executed: output positions (input positions when transposed) x
        # weights; w is (c_out, c_in / groups, k...), or (c_in, c_out / groups, k...) when transposed
        dense = x.shape[0] * math.prod((x if transposed else out).shape[2:]) * w.numel()

        def reach(inp: torch.Tensor) -> int:
            """(output, tap) pairs reading a nonzero, in-bounds input element: a convolution of the nonzero
            pattern with a kernel of ones (padding reads zeros), as spikingjelly's SynOp and NeuroBench do."""
            if transposed:
                ones = torch.ones_like(w, dtype=torch.float64)
                r = torch.ops.aten.convolution.default(inp.double(), ones, None, stride, padding, dilation,
                                                       True, output_padding, groups)  # fmt: skip
                return int(r.sum())
            kernel = torch.ones((groups, w.shape[1], *w.shape[2:]), dtype=torch.float64, device=inp.device)
            r = torch.ops.aten.convolution.default(inp.double(), kernel, None, stride, padding, dilation,
                                                   False, [0] * len(stride), groups)  # fmt: skip
            return int(r.sum()) * (w.shape[0] // groups)

        nz = (x != 0).double()
        self.rec.dense_in_bounds[layer] += reach(torch.ones_like(nz))
        return KINDS["conv"](dense, reach(nz), ox, out.numel() if bias is not None else 0)


@contextmanager
def _function_watch(stack: list[str], rec: _Record, neuron_names: set[str]):
    """Watch custom ``torch.autograd.Function`` calls (``Function.apply``, restored on exit): their ops are
    charged to ``<module>/<Function>@<file>:<line>:<column>``, the call in the innermost ``forward`` that called it (so
    that each call site is one layer, its time steps merged), and one whose output is spikes while its input
    is not is recorded as spiking but not recognised as a neuron. Inside a recognised neuron (a surrogate
    gradient) it is part of the neuron."""
    original = torch.autograd.Function.apply.__func__

    def apply(cls, *args, **kwargs):
        parent = stack[-1] if stack else ""
        if any(parent == n or parent.startswith(n + ".") for n in neuron_names):
            return original(cls, *args, **kwargs)
        name = f"{parent}/{cls.__name__}" if parent else cls.__name__
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_name != "forward":
            frame = frame.f_back
        if frame is not None:
            name += f"@{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
            if hasattr(frame.f_code, "co_positions"):  # Python 3.11+: the column tells two calls on a line apart
                col = list(frame.f_code.co_positions())[frame.f_lasti // 2][2]
                name += f":{col}"
        stack.append(name)
        try:
            out = original(cls, *args, **kwargs)
        finally:
            stack.pop()
        with _disable_current_modes():
            _record_spiking(rec, name, args, out, "autograd.Function")
        return out

    torch.autograd.Function.apply = classmethod(apply)
    try:
        yield
    finally:
        torch.autograd.Function.apply = classmethod(original)


def _record_spiking(rec: _Record, name: str, inputs, out, what: str) -> bool:
    """If ``out`` is spikes and no input is, count them under ``name`` as an unrecognised spiking layer."""
    s = _first_tensor(out)
    if s is None or not s.is_floating_point() and s.dtype != torch.bool:
        return False
    o = _operand(s)
    if not o.is_spike or o.nnz == 0:  # all zeros is no evidence of spikes (a ReLU of negatives is all zeros)
        return False
    ins = [t for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not ins or any(_operand(t).is_spike for t in ins):
        return False
    rec.unrecognised[name] = what
    _count_spikes(rec, name, s, o)
    return True


def _count_spikes(rec: _Record, name: str, s: torch.Tensor, o: Operand) -> None:
    rec.neuron_steps[name] += o.numel
    rec.spikes[name] += o.nnz if o.is_spike else int(s.detach().abs().sum())  # integer outputs: spike counts
    rec.spike_classes.setdefault(name, set()).add(o.cls)
    rec.nonzero_out[name] += o.nnz
    rec.numel_out[name] += o.numel


def _call(model: nn.Module, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _samples(inputs) -> int:
    t = _first_tensor(inputs)
    return int(t.shape[0]) if t is not None and t.dim() else 1


def measure(model: nn.Module, inputs, adapter: Adapter | None = None) -> tuple[_Record, dict[str, NeuronInfo]]:
    """One forward of ``model`` on ``inputs`` under the dispatch mode and the hooks (all removed on exit);
    the neurons are the adapter's (default: ``energy.measuring.adapters.adapter_for(model)``)."""
    rec = _Record()
    adapter = adapter or adapter_for(model)
    neurons = adapter.neurons(model)
    stack: list[str] = []
    handles = []
    modules = dict(model.named_modules())
    has_neuron = {n for n in modules if any(k == n or k.startswith(n + ".") or n == "" for k in neurons)}
    first_call: set[str] = set()
    pre_state: dict[str, object] = {}

    def push(name):
        def pre(mod, args):
            stack.append(name)
            rec.order.setdefault(name)
            info = neurons.get(name)
            if info is not None and info.state:
                pre_state[name] = getattr(mod, info.state, None)

        return pre

    def pop(name):
        def post(mod, args, out):
            stack.pop()
            with _disable_current_modes():
                _post(name, mod, args, out)

        return post

    def _post(name, mod, args, out):
        rec.module_types[name] = type(mod).__name__
        info = neurons.get(name)
        if info is not None:
            s = _first_tensor(out)
            if s is None:
                return
            _count_spikes(rec, name, s, _operand(s))
            _membrane_updates(name, mod, info, s, out)
        elif isinstance(mod, NEUROBENCH_ACTIVATIONS):
            s = _first_tensor(out)
            rec.nonzero_out[name] += _nonzero_count(s)
            rec.numel_out[name] += s.numel()
        elif (
            name not in has_neuron
            and not list(mod.children())
            and not any(k.startswith(name + "/") for k in rec.unrecognised)
        ):  # a spiking module not recognised (unless a spiking Function inside it was already found)
            _record_spiking(rec, name, args, out, "module")

    def _membrane_updates(name, mod, info: NeuronInfo, s, out):
        """NeuroBench's MembraneUpdates: the first call counts every state element, later calls the elements
        whose state changed (the state read before and after the call, as NeuroBench's hooks read it)."""
        state_out = out[1] if isinstance(out, tuple) and len(out) > 1 else None
        after = getattr(mod, info.state, None) if info.state else getattr(state_out, "v", None)
        before = pre_state.pop(name, None)
        if not isinstance(after, torch.Tensor) or after.numel() != s.numel():
            rec.changed_known[name] = False  # a multi-step call: the state after it is the last step's only
            return
        rec.changed_known.setdefault(name, True)
        if name not in first_call:
            first_call.add(name)
            rec.changed[name] += after.numel()
        elif isinstance(before, torch.Tensor) and before.shape == after.shape:
            rec.changed[name] += _nonzero_count(before - after)
        else:
            rec.changed[name] += after.numel()

    for name, mod in modules.items():
        handles.append(mod.register_forward_pre_hook(push(name)))
        handles.append(mod.register_forward_hook(pop(name)))
    # parameters only: neuron libraries keep their membrane state in buffers (snntorch's ``mem``)
    mode = _Mode(stack, rec, list(model.parameters()))
    try:
        with torch.no_grad(), _function_watch(stack, rec, set(neurons)), mode:
            _call(model, inputs)
    finally:
        for h in handles:
            h.remove()
    for name, info in neurons.items():
        rec.module_types.setdefault(name, info.cls)
    return rec, neurons


@dataclass
class ModelProfile:
    """What ``profile_model`` measured: long-form tables and per-sample totals."""

    ops: pd.DataFrame  # layer, module_type, aten_op, stage, primitive, operand, count
    setup: pd.DataFrame  # layer, stage, primitive, count (parameter-only)
    calls: pd.DataFrame  # layer, module_type, aten_op, status (counted / free / uncounted), calls
    operands: pd.DataFrame  # layer, aten_op, arg, class, elements, nonzero
    neurons: pd.DataFrame  # layer, library, recognised, neuron_steps, spikes, firing_rate, classes, ...
    samples: int
    meta: dict
    record: _Record = field(repr=False)
    costs: CostTable = field(repr=False)
    precision: str = "fp32"

    def totals(self) -> dict[str, int]:
        """Op counts by primitive over the whole call."""
        by = self.ops.groupby("primitive")["count"].sum()
        return {p: int(by.get(p, 0)) for p in PRIMITIVES}

    def per_sample(self) -> dict[str, float]:
        return {k: v / self.samples for k, v in self.totals().items()}

    def by_layer(self) -> pd.DataFrame:
        return self.ops.pivot_table(index="layer", columns="primitive", values="count", aggfunc="sum", sort=False)

    def by_op(self) -> pd.DataFrame:
        return self.ops.groupby(["aten_op", "primitive"], sort=False)["count"].sum().reset_index()

    def uncounted(self) -> pd.DataFrame:
        return self.calls[self.calls.status == "uncounted"].reset_index(drop=True)

    def firing_rates(self) -> dict[str, float]:
        n = self.neurons
        rates = dict(zip(n.layer, n.firing_rate.astype(float)))
        steps = int(n.neuron_steps.sum())
        rates["overall"] = float(n.spikes.sum()) / steps if steps else float("nan")
        return rates

    def energy(self) -> dict:
        """pJ by primitive and in all, for the whole call and per sample: the compute ops only (no memory
        traffic), at ``precision`` on the cost table (``energy/pricing/data/horowitz_45nm.csv`` unless replaced)."""
        pj = self.costs.primitives(self.precision)
        t = self.totals()
        executed = {p: t[p] * pj[p] for p in PRIMITIVES if p != "mac"}  # effective MACs and ACs, not dense
        dense = {p: t[p] * pj[p] for p in PRIMITIVES if p not in ("effective_mac", "ac")}
        return {
            "precision": self.precision,
            "scope": "compute only: arithmetic ops; memory traffic is not included (an omission, labelled)",
            "zero_skipping_pj_per_sample": sum(executed.values()) / self.samples,
            "dense_pj_per_sample": sum(dense.values()) / self.samples,
            "by_primitive_pj_per_sample": {p: v / self.samples for p, v in executed.items() if v},
            "pj_per_op": pj,
            "cost_table": self.costs.path,
        }

    # ---------------------------------------------------------------- NeuroBench, by its definitions
    def neurobench(self, model: nn.Module) -> dict:
        """NeuroBench 2.3's metrics under its names, computed by its definitions from what we measured
        (``neurobench.json``). Its scope: SynapticOperations counts only Linear and Conv modules, so ops
        outside them (functional matmuls, attention) are listed in ``missed_by_neurobench``."""
        rec = self.record
        conn = {n for n, m in model.named_modules() if isinstance(m, CONNECTION_TYPES)}
        ops = self.ops
        mine = ops[ops.layer.isin(conn) & ops.aten_op.isin(list(MATMULS) + ["convolution"])]
        eff_mac = int(mine[mine.primitive == "effective_mac"]["count"].sum())
        ac = int(mine[mine.primitive == "ac"]["count"].sum())
        dense_linear = int(mine[(mine.primitive == "mac") & (mine.aten_op != "convolution")]["count"].sum())
        dense_conv = sum(v for k, v in rec.dense_in_bounds.items() if k in conn)
        act = [n for n in rec.numel_out]
        nz, numel = sum(rec.nonzero_out[n] for n in act), sum(rec.numel_out[n] for n in act)
        zeros, weights = 0, 0
        for _, m in model.named_modules():
            if isinstance(m, CONNECTION_TYPES):
                zeros += int((m.weight == 0).sum())
                weights += m.weight.numel()
        footprint = sum(p.numel() * p.element_size() for p in model.parameters())
        footprint += sum(b.numel() * b.element_size() for b in model.buffers())
        missed = ops[~ops.layer.isin(conn) & ops.primitive.isin(["mac", "ac"])]
        missed = missed.groupby(["layer", "aten_op", "primitive"])["count"].sum().reset_index()
        s = self.samples
        return {
            "Footprint": footprint,
            "ConnectionSparsity": round(zeros / weights, 4) if weights else None,
            "ActivationSparsity": (numel - nz) / numel if numel else 0.0,
            "MembraneUpdates": sum(rec.changed.values()) / s if all(rec.changed_known.values()) else None,
            "SynapticOperations": {
                "Effective_MACs": eff_mac / s,
                "Effective_ACs": ac / s,
                "Dense": (dense_linear + dense_conv) / s,
            },  # fmt: skip
            "missed_by_neurobench": [
                {"layer": r.layer, "aten_op": r.aten_op, "primitive": r.primitive, "per_sample": r.count / s}
                for r in missed.itertuples()
            ],
            "notes": [
                "NeuroBench's definitions, applied to what spike-energy measured: SynapticOperations over "
                "Linear/Conv modules only (bias excluded; Dense of a convolution counts only taps inside the "
                "input); ActivationSparsity over the neurons found plus ReLU/Sigmoid modules; MembraneUpdates "
                "counts state elements that changed (the first call: all).",
                "NeuroBench skips zero weights in its effective counts; spike-energy does not (a zero weight "
                "is still read and added): the two agree when ConnectionSparsity is 0.",
            ],
        }

    def summary(self, model: nn.Module) -> dict:
        t = self.totals()
        un = self.uncounted()
        n = self.neurons
        return {
            "model": self.meta,
            "samples": self.samples,
            "units": "counts per sample unless named total; MAC = multiply + add; AC = one add",
            "ops_per_sample": {k: v / self.samples for k, v in t.items()},
            "ops_total": t,
            "firing_rates": self.firing_rates(),
            "neurons": n.to_dict(orient="records"),
            "not_recognised_as_neurons": n[~n.recognised].layer.tolist(),
            "membrane_updates_per_sample": float(n.neuron_steps[n.recognised].sum()) / self.samples,
            "by_layer_per_sample": {
                layer: {p: float(v) / self.samples for p, v in row.items() if v == v and v}
                for layer, row in self.by_layer().iterrows()
            },
            "operand_classes": self.operands.to_dict(orient="records"),
            "uncounted": un.to_dict(orient="records"),
            "energy": self.energy(),
            "neurobench": self.neurobench(model),
        }


def profile_model(
    model: nn.Module,
    inputs,
    *,
    samples: int | None = None,
    precision: str = "fp32",
    costs: CostTable | None = None,
    name: str = "",
    adapter: Adapter | None = None,
) -> ModelProfile:
    """Profile one forward of any ``model`` on ``inputs`` (a tensor, a tuple of positional arguments or a
    dict of keyword arguments). The model must be in eval mode: dropout or batch statistics would change
    what is measured."""
    if model.training:
        raise ValueError("profile a model in eval mode (model.eval()): training-mode layers change the counts")
    t0 = time.perf_counter()
    adapter = adapter or adapter_for(model)
    rec, neurons = measure(model, inputs, adapter)
    elapsed = time.perf_counter() - t0
    types = rec.module_types
    rows = [
        {"layer": k[0] or "<top level>", "module_type": types.get(k[0].split("/")[0], ""), "aten_op": k[1],
         "stage": k[2], "primitive": k[3], "operand": k[4], "count": v}
        for k, v in rec.ops.items() if v
    ]  # fmt: skip
    ops = pd.DataFrame(rows, columns=["layer", "module_type", "aten_op", "stage", "primitive", "operand", "count"])
    setup = pd.DataFrame([{"layer": k[0], "stage": k[1], "primitive": k[2], "count": v} for k, v in rec.setup.items()],
                         columns=["layer", "stage", "primitive", "count"])  # fmt: skip
    calls = pd.DataFrame(
        [{"layer": k[0] or "<top level>", "module_type": types.get(k[0].split("/")[0], ""), "aten_op": k[1],
          "status": k[2], "calls": v} for k, v in rec.calls.items()],
        columns=["layer", "module_type", "aten_op", "status", "calls"],
    )  # fmt: skip
    operands = pd.DataFrame(
        [{"layer": k[0], "aten_op": k[1], "arg": k[2], "class": k[3], "elements": v,
          "nonzero": rec.nonzero[k[:3]]} for k, v in rec.operands.items()],
        columns=["layer", "aten_op", "arg", "class", "elements", "nonzero"],
    )  # fmt: skip
    layers = [*neurons, *(k for k in rec.unrecognised if k not in neurons)]
    nrows = []
    for layer in layers:
        info = neurons.get(layer)
        steps = rec.neuron_steps[layer]
        nrows.append({
            "layer": layer,
            "type": info.cls if info else rec.module_types.get(layer, layer.rsplit("/", 1)[-1]),
            "library": info.library if info else "",
            "recognised": info is not None,
            "how_found": "class" if info else f"values ({rec.unrecognised[layer]} with spike output)",
            "neuron_steps": steps,
            "spikes": rec.spikes[layer],
            "firing_rate": rec.spikes[layer] / steps if steps else float("nan"),
            "output_classes": ",".join(sorted(rec.spike_classes.get(layer, ()))),
            "membrane_updates_neurobench": rec.changed[layer] if rec.changed_known.get(layer) else None,
        })  # fmt: skip
    neuron_df = pd.DataFrame(nrows, columns=["layer", "type", "library", "recognised", "how_found", "neuron_steps",
                                             "spikes", "firing_rate", "output_classes",
                                             "membrane_updates_neurobench"])  # fmt: skip
    meta = {"name": name or type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
            "profiled_seconds": elapsed, "torch": torch.__version__, "adapter": adapter.name,
            "counterfactual": adapter.counterfactual}  # fmt: skip
    # the adapter's dataflow facts: which spike source each projection reads, which modules shift tokens
    spiking = {n: "lif" for n in neuron_df.layer}
    order = [n for n in rec.order if n]
    source = adapter.projections(order, spiking)
    modules = dict(model.named_modules())
    meta["projections"] = {n: source.get(n) or "" for n in order if isinstance(modules.get(n), CONNECTION_TYPES)}
    meta["token_shift"] = [n for n in order if adapter.token_shift and isinstance(modules.get(n), adapter.token_shift)]
    return ModelProfile(ops, setup, calls, operands, neuron_df, samples or _samples(inputs), meta, rec,
                        costs or load_costs(), precision)  # fmt: skip
