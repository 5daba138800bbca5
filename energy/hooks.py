"""Forward hooks that measure a model while it runs on real text.

``Meter`` attaches one hook to every module that has a cost rule (``rules.MODULE_RULES``)
and, per call: classifies the operands whose values matter from the tensors actually
seen, evaluates the rule, and keeps running sums (never activation tensors): op counts,
operand statistics, spike counts per neuron and per token position, a small sampled
raster, ReLU^2 zeros, activation sizes. The hooks are removed on exit.

The model knows nothing of this: it only has to run its operations inside modules.
"""

from __future__ import annotations

import weakref
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from energy.rules import MODULE_RULES, Operand
from spikegpt import model as sg

SPIKING_TYPES = (sg.LIF, sg.Heaviside)


@torch.no_grad()
def classify(x: torch.Tensor) -> Operand:
    """binary {0,1} / ternary {-1,0,1} / integer / float, and the zero count, from the values."""
    shape = tuple(x.shape)
    numel = x.numel()
    nnz = int(torch.count_nonzero(x))
    if numel == 0:
        return Operand("binary", 0, 0, shape)
    if x.dtype == torch.bool:
        return Operand("binary", numel, nnz, shape)
    flat = x.reshape(-1)
    head = flat[:4096]
    if x.is_floating_point() and not bool((head == torch.round(head)).all()):
        return Operand("float", numel, nnz, shape)  # a non-integer value settles it
    ones = int((flat == 1).sum())
    if ones == nnz:
        return Operand("binary", numel, nnz, shape)
    if ones + int((flat == -1).sum()) == nnz:
        return Operand("ternary", numel, nnz, shape)
    if not x.is_floating_point() or bool((flat == torch.round(flat)).all()):
        return Operand("integer", numel, nnz, shape)
    return Operand("float", numel, nnz, shape)


CLASS_ORDER = ("binary", "ternary", "integer", "float")


@dataclass
class SpikeStats:
    """Running sums for one spiking layer (LIF or the binary-embedding encoder)."""

    width: int
    per_neuron: torch.Tensor  # (C,) spikes summed over batch and time, float64
    per_position: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    rows_per_position: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    steps: int = 0  # neuron steps per neuron (batch x tokens)
    offset: int = 0  # next token position (per sequence)
    raster: list[torch.Tensor] = field(default_factory=list)  # (t, n_raster) bool, batch row 0

    def add(self, s: torch.Tensor, raster_neurons: torch.Tensor, raster_tokens: int) -> None:
        B, T, C = s.shape
        s = s.detach()
        self.per_neuron += s.sum(dim=(0, 1), dtype=torch.float64).cpu()
        end = self.offset + T
        if end > len(self.per_position):
            grow = torch.zeros(end - len(self.per_position), dtype=torch.float64)
            self.per_position = torch.cat([self.per_position, grow])
            self.rows_per_position = torch.cat([self.rows_per_position, grow])
        self.per_position[self.offset : end] += s.sum(dim=(0, 2), dtype=torch.float64).cpu()
        self.rows_per_position[self.offset : end] += B
        self.offset = end
        self.steps += B * T
        have = sum(r.shape[0] for r in self.raster)
        if have < raster_tokens:
            self.raster.append(s[0, : raster_tokens - have][:, raster_neurons.to(s.device)].bool().cpu())


class Meter:
    """Context manager: ``with Meter(model) as m: model.run(...)``; results in ``m``."""

    def __init__(self, model: nn.Module, raster_neurons: int = 64, raster_tokens: int = 256, seed: int = 0):
        self.model = model
        self.raster_n = raster_neurons
        self.raster_tokens = raster_tokens
        self.gen = torch.Generator().manual_seed(seed)
        self.counts: Counter = Counter()  # (layer, kind, stage, primitive, operand) -> count
        self.setup: Counter = Counter()  # (layer, kind, stage, primitive) -> count, summed over calls
        self.calls: Counter = Counter()  # layer -> calls
        self.operands: dict = {}  # (layer, input index) -> dict of sums
        self.activation_elems: Counter = Counter()  # (layer, "in"/"out") -> elements
        self.spikes: dict[str, SpikeStats] = {}
        self.relu: Counter = Counter()  # (layer, "numel"/"zeros") -> elements
        self.order: list[str] = []  # modules in order of first call
        self.module_types: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        self.unruled: list[str] = []  # leaf modules without a rule (their ops show in the census)
        self.producers: dict[str, tuple[str, ...]] = {}  # layer -> the layers that produced its tensor inputs
        self._producer: dict[int, tuple] = {}  # id(tensor) -> (weak reference, layer)
        self._raster_idx: dict[str, torch.Tensor] = {}
        self._seen: dict[int, tuple] = {}
        self._handles = []

    def __enter__(self) -> Meter:
        for name, mod in self.model.named_modules():
            rule = MODULE_RULES.get(type(mod))
            if rule is None:
                if not list(mod.children()) and name:
                    self.unruled.append(name)
                continue
            self.module_types[name] = type(mod).__name__
            self.kinds[name] = rule.kind
            self._handles.append(mod.register_forward_hook(self._hook(name, rule)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._seen.clear()
        self._producer.clear()

    def _hook(self, name: str, rule):
        def hook(mod, args, output):
            out = output[0] if isinstance(output, tuple) else output
            ops = []
            for i, a in enumerate(args):
                if not isinstance(a, torch.Tensor):
                    ops.append(None)
                    continue
                op = self._classify(a) if i in rule.classify else Operand("float", a.numel(), a.numel(), tuple(a.shape))
                ops.append(op)
                self.activation_elems[(name, "in")] += a.numel()
                if i in rule.classify:
                    self._record_operand(name, i, op)
            self.activation_elems[(name, "out")] += out.numel()
            cost = rule.cost(mod, ops, tuple(out.shape))
            opclass = next((o.cls for i, o in enumerate(ops) if o is not None and i in rule.classify), "-")
            for stage, counter in cost.ops.items():
                for prim, n in counter.items():
                    self.counts[(name, rule.kind, stage, prim, opclass)] += n
            for stage, counter in cost.setup.items():
                for prim, n in counter.items():
                    self.setup[(name, rule.kind, stage, prim)] += n
            if name not in self.calls:
                self.order.append(name)
                self._record_dataflow(name, args, out)
            self.calls[name] += 1
            if isinstance(mod, SPIKING_TYPES):
                self._record_spikes(name, out)
            elif isinstance(mod, sg.SquaredReLU):
                self.relu[(name, "numel")] += out.numel()
                self.relu[(name, "zeros")] += out.numel() - self._classify(out).nnz

        return hook

    def _record_dataflow(self, name: str, args, out) -> None:
        """On a module's first call: which modules produced its tensor inputs (matched by identity, through
        weak references, so no activation is kept alive), and that it produced its output."""
        found = []
        for a in args:
            if isinstance(a, torch.Tensor):
                ref = self._producer.get(id(a))
                found.append(ref[1] if ref is not None and ref[0]() is a else "")
        self.producers[name] = tuple(found)
        self._producer[id(out)] = (weakref.ref(out), name)

    def _classify(self, t: torch.Tensor) -> Operand:
        """``classify``, remembered for the few most recent tensors: one module's output is often
        the next one's input (ReLU^2 -> value projection), and is then read once, not twice."""
        key = id(t)
        hit = self._seen.get(key)
        if hit is not None and hit[0] is t and hit[1] == t._version:
            return hit[2]
        op = classify(t)
        if len(self._seen) >= 8:
            self._seen.pop(next(iter(self._seen)))
        self._seen[key] = (t, t._version, op)  # the reference keeps id(t) from being reused
        return op

    def _record_operand(self, name: str, i: int, op: Operand) -> None:
        rec = self.operands.setdefault((name, i), {"calls": 0, "numel": 0, "nnz": 0, "classes": Counter()})
        rec["calls"] += 1
        rec["numel"] += op.numel
        rec["nnz"] += op.nnz
        rec["classes"][op.cls] += 1

    def _record_spikes(self, name: str, s: torch.Tensor) -> None:
        if s.dim() != 3:
            s = s.reshape(s.shape[0], -1, s.shape[-1])
        C = s.shape[-1]
        st = self.spikes.get(name)
        if st is None:
            st = self.spikes[name] = SpikeStats(C, torch.zeros(C, dtype=torch.float64))
            k = min(self.raster_n, C)
            self._raster_idx[name] = torch.randperm(C, generator=self.gen)[:k].sort().values
        st.add(s, self._raster_idx[name], self.raster_tokens)

    # ------------------------------------------------------------------ views

    def operand_class(self, name: str, i: int) -> str:
        """The widest class seen over all calls (one float call makes the layer float)."""
        rec = self.operands.get((name, i))
        if rec is None:
            return "-"
        return max(rec["classes"], key=CLASS_ORDER.index)

    def firing_rates(self) -> dict[str, float]:
        return {n: float(st.per_neuron.sum()) / (st.steps * st.width) for n, st in self.spikes.items() if st.steps}

    def raster(self, name: str) -> torch.Tensor:
        st = self.spikes[name]
        return torch.cat(st.raster, 0) if st.raster else torch.zeros(0, 0, dtype=torch.bool)


def preceding_spike_source(order: list[str], kinds: dict[str, str]) -> dict[str, str | None]:
    """For each layer, the spiking layer (LIF or encoder) executed most recently before it.

    This is the placement the paper's accounting assumes: the projection reads that
    layer's spikes. Derived from the execution order, not from names.
    """
    last, out = None, {}
    for name in order:
        out[name] = last
        if kinds.get(name) in ("lif", "heaviside"):
            last = name
    return out


def block_index(name: str) -> float:
    """The block a module belongs to, from its path (``blocks.3.att.key`` -> 3.0, GPT-2's ``h.3``), else NaN."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("h", "blocks", "layers", "layer") and parts[i + 1].isdigit():
            return float(parts[i + 1])
    return float("nan")
