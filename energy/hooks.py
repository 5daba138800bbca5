"""Forward hooks that measure a model while it runs on real text.

``Meter`` attaches one hook to every module that has a cost rule (``rules.MODULE_RULES``)
and, per call: classifies the operands whose values matter from the tensors actually
seen, evaluates the rule, and keeps running sums (never activation tensors): op counts,
operand statistics, spike counts per neuron and per token position, a small sampled
raster, ReLU^2 zeros, activation sizes. The hooks are removed on exit.

The model knows nothing of this: it only has to run its operations inside modules.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
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


POSITION_CAP = 4096  # rates by token position are kept for the first positions of each sequence


class Tally:
    """Exact, mergeable sums of what the hooks saw: integers only (Python ints, int64 arrays).

    ``a + b`` equals the tally of the two runs together, whatever the order: the corpus
    runner keeps one per document, per bootstrap unit and for the whole run, and merges
    them across processes. Per-neuron and per-position spike counts (``detail``) are kept
    only where asked (the whole run), not per unit.
    """

    COUNTERS = ("counts", "setup", "calls", "activation", "operands", "relu", "spikes", "steps")

    def __init__(self) -> None:
        self.counts: Counter = Counter()  # (layer, kind, stage, primitive, operand class) -> ops
        self.setup: Counter = Counter()  # (layer, kind, stage, primitive) -> ops, summed over calls
        self.calls: Counter = Counter()  # layer -> calls
        self.activation: Counter = Counter()  # (layer, "in"/"out") -> elements
        self.operands: Counter = Counter()  # (layer, arg index, "calls"/"numel"/"nnz"/class) -> n
        self.relu: Counter = Counter()  # (layer, "numel"/"zeros") -> elements
        self.spikes: Counter = Counter()  # spiking layer -> spikes (all neurons)
        self.steps: Counter = Counter()  # spiking layer -> steps per neuron (batch x tokens)
        self.tokens = 0
        self.neurons: dict[str, np.ndarray] = {}  # layer -> spikes per neuron (int64)
        self.positions: dict[str, np.ndarray] = {}  # layer -> spikes per token position (int64)
        self.position_rows: dict[str, np.ndarray] = {}  # layer -> sequences that reached each position
        self.widths: dict[str, int] = {}  # spiking layer -> neurons

    def add(self, other: Tally, detail: bool = True) -> Tally:
        for name in self.COUNTERS:
            mine = getattr(self, name)
            for k, v in getattr(other, name).items():
                mine[k] += v
        self.tokens += other.tokens
        self.widths.update(other.widths)
        if detail:
            for mine, theirs in ((self.neurons, other.neurons), (self.positions, other.positions),
                                 (self.position_rows, other.position_rows)):  # fmt: skip
                for k, v in theirs.items():
                    mine[k] = _add_arrays(mine.get(k), v)
        return self

    def __eq__(self, other) -> bool:
        if not isinstance(other, Tally):
            return NotImplemented
        same = all(+getattr(self, n) == +getattr(other, n) for n in self.COUNTERS)
        same = same and self.tokens == other.tokens and self.widths == other.widths
        for a, b in ((self.neurons, other.neurons), (self.positions, other.positions),
                     (self.position_rows, other.position_rows)):  # fmt: skip
            same = same and a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        return same

    def empty(self) -> bool:
        return self.tokens == 0 and not self.calls

    def firing_rates(self) -> dict[str, float]:
        """Spikes / (steps x width) per spiking layer; width from the per-neuron counts or ``widths``."""
        return {n: self.spikes[n] / self.neuron_steps(n) for n in self.steps if self.neuron_steps(n)}

    def neuron_steps(self, layer: str) -> int:
        return self.steps[layer] * self.widths.get(layer, 0)

    # ---------------------------------------------------------------- serialisation
    def to_state(self, prefix: str, arrays: dict) -> dict:
        """JSON-able description; int64 arrays go into ``arrays`` under ``prefix``."""
        out = {"tokens": self.tokens, "widths": dict(self.widths)}
        for name in self.COUNTERS:
            c = getattr(self, name)
            keys = list(c)
            out[name] = [list(k) if isinstance(k, tuple) else k for k in keys]
            arrays[f"{prefix}/{name}"] = np.array([c[k] for k in keys], dtype=np.int64)
        for name in ("neurons", "positions", "position_rows"):
            d = getattr(self, name)
            out[name] = list(d)
            for k, v in d.items():
                arrays[f"{prefix}/{name}/{k}"] = np.asarray(v, dtype=np.int64)
        return out

    @classmethod
    def from_state(cls, d: dict, prefix: str, arrays) -> Tally:
        t = cls()
        t.tokens = int(d["tokens"])
        t.widths = {str(k): int(v) for k, v in d.get("widths", {}).items()}
        for name in cls.COUNTERS:
            values = arrays[f"{prefix}/{name}"]
            if len(values) != len(d[name]):
                raise ValueError(f"{prefix}/{name}: {len(d[name])} keys but {len(values)} values")
            c = getattr(t, name)
            for k, v in zip(d[name], values.tolist()):
                c[tuple(k) if isinstance(k, list) else k] = int(v)
        for name in ("neurons", "positions", "position_rows"):
            getattr(t, name).update({k: np.asarray(arrays[f"{prefix}/{name}/{k}"], dtype=np.int64) for k in d[name]})
        return t


def _add_arrays(a: np.ndarray | None, b: np.ndarray) -> np.ndarray:
    if a is None:
        return b.copy()
    if len(a) < len(b):
        a = np.concatenate([a, np.zeros(len(b) - len(a), dtype=np.int64)])
    a[: len(b)] += b
    return a


@dataclass
class SpikeStats:
    """Per-sequence bookkeeping for one spiking layer (LIF or the binary-embedding encoder)."""

    width: int
    offset: int = 0  # next token position in the current sequence
    raster: list[torch.Tensor] = field(default_factory=list)  # (t, n_raster) bool, batch row 0 of the first sequence

    def add(self, tally: Tally, name: str, s: torch.Tensor, raster_neurons, raster_tokens: int, record_raster: bool):
        B, T, C = s.shape
        s = s.detach()
        per_neuron = s.sum(dim=(0, 1), dtype=torch.int64).cpu().numpy()
        tally.neurons[name] = _add_arrays(tally.neurons.get(name), per_neuron)
        tally.spikes[name] += int(per_neuron.sum())
        tally.steps[name] += B * T
        end = min(self.offset + T, POSITION_CAP)
        if end > self.offset:
            n = end - self.offset
            pos = np.zeros(end, dtype=np.int64)
            pos[self.offset :] = s[:, :n].sum(dim=(0, 2), dtype=torch.int64).cpu().numpy()
            rows = np.zeros(end, dtype=np.int64)
            rows[self.offset :] = B
            tally.positions[name] = _add_arrays(tally.positions.get(name), pos)
            tally.position_rows[name] = _add_arrays(tally.position_rows.get(name), rows)
        self.offset += T
        have = sum(r.shape[0] for r in self.raster)
        if record_raster and have < raster_tokens:
            self.raster.append(s[0, : raster_tokens - have][:, raster_neurons.to(s.device)].bool().cpu())


class Meter:
    """Context manager: ``with Meter(model) as m: model.run(...)``; results in ``m.tally``.

    The hooks add into ``m.tally``; ``take()`` hands the sums over and starts a new tally
    (the corpus runner takes one per block of tokens); ``begin_sequence()`` restarts the
    token positions (a new document).
    """

    def __init__(self, model: nn.Module, raster_neurons: int = 64, raster_tokens: int = 256, seed: int = 0):
        self.model = model
        self.raster_n = raster_neurons
        self.raster_tokens = raster_tokens
        self.gen = torch.Generator().manual_seed(seed)
        self.tally = Tally()
        self.spike_stats: dict[str, SpikeStats] = {}
        self.widths: dict[str, int] = {}
        self.order: list[str] = []  # modules in order of first call
        self.module_types: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        self.unruled: list[str] = []  # leaf modules without a rule (their ops show in the census)
        self.record_raster = True  # the raster shows the first sequence only
        self._raster_idx: dict[str, torch.Tensor] = {}
        self._called: set[str] = set()
        self._seen: dict[int, tuple] = {}
        self._handles = []

    # views of the current tally, under their historical names
    counts = property(lambda self: self.tally.counts)
    setup = property(lambda self: self.tally.setup)
    calls = property(lambda self: self.tally.calls)
    relu = property(lambda self: self.tally.relu)
    activation_elems = property(lambda self: self.tally.activation)

    @property
    def spikes(self) -> dict[str, SimpleNamespace]:
        """Per spiking layer: ``per_neuron`` and ``per_position`` (spikes), ``steps`` (per neuron), ``width``."""
        t = self.tally
        return {
            n: SimpleNamespace(
                per_neuron=torch.from_numpy(t.neurons[n]),
                steps=t.steps[n],
                width=self.widths[n],
                per_position=torch.from_numpy(t.positions.get(n, np.zeros(0, dtype=np.int64))),
            )
            for n in self.widths
            if n in t.neurons
        }

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

    def take(self) -> Tally:
        """The sums since the last ``take`` (a new, empty tally replaces them)."""
        t, self.tally = self.tally, Tally()
        t.widths = dict(self.widths)
        self._seen.clear()
        return t

    def begin_sequence(self, record_raster: bool = False) -> None:
        """A new sequence (document): token positions restart at 0."""
        for st in self.spike_stats.values():
            st.offset = 0
        self.record_raster = record_raster
        self._seen.clear()

    def _hook(self, name: str, rule):
        def hook(mod, args, output):
            t = self.tally
            out = output[0] if isinstance(output, tuple) else output
            ops = []
            for i, a in enumerate(args):
                if not isinstance(a, torch.Tensor):
                    ops.append(None)
                    continue
                op = self._classify(a) if i in rule.classify else Operand("float", a.numel(), a.numel(), tuple(a.shape))
                ops.append(op)
                t.activation[(name, "in")] += a.numel()
                if i in rule.classify:
                    t.operands[(name, i, "calls")] += 1
                    t.operands[(name, i, "numel")] += op.numel
                    t.operands[(name, i, "nnz")] += op.nnz
                    t.operands[(name, i, op.cls)] += 1
            t.activation[(name, "out")] += out.numel()
            cost = rule.cost(mod, ops, tuple(out.shape))
            opclass = next((o.cls for i, o in enumerate(ops) if o is not None and i in rule.classify), "-")
            for stage, counter in cost.ops.items():
                for prim, n in counter.items():
                    t.counts[(name, rule.kind, stage, prim, opclass)] += n
            for stage, counter in cost.setup.items():
                for prim, n in counter.items():
                    t.setup[(name, rule.kind, stage, prim)] += n
            if name not in self._called:
                self._called.add(name)
                self.order.append(name)
            t.calls[name] += 1
            if isinstance(mod, SPIKING_TYPES):
                self._record_spikes(name, out)
            elif isinstance(mod, sg.SquaredReLU):
                t.relu[(name, "numel")] += out.numel()
                t.relu[(name, "zeros")] += out.numel() - self._classify(out).nnz

        return hook

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

    def _record_spikes(self, name: str, s: torch.Tensor) -> None:
        if s.dim() != 3:
            s = s.reshape(s.shape[0], -1, s.shape[-1])
        C = s.shape[-1]
        st = self.spike_stats.get(name)
        if st is None:
            st = self.spike_stats[name] = SpikeStats(C)
            self.widths[name] = self.tally.widths[name] = C
            k = min(self.raster_n, C)
            self._raster_idx[name] = torch.randperm(C, generator=self.gen)[:k].sort().values
        self.tally.widths[name] = C
        st.add(self.tally, name, s, self._raster_idx[name], self.raster_tokens, self.record_raster)

    # ------------------------------------------------------------------ views

    def operand_class(self, name: str, i: int) -> str:
        """The widest class seen over all calls (one float call makes the layer float)."""
        return operand_class(self.tally, name, i)

    def firing_rates(self) -> dict[str, float]:
        t = self.tally
        return {n: t.spikes[n] / (t.steps[n] * w) for n, w in self.widths.items() if t.steps[n]}

    def raster(self, name: str) -> torch.Tensor:
        st = self.spike_stats[name]
        return torch.cat(st.raster, 0) if st.raster else torch.zeros(0, 0, dtype=torch.bool)


def operand_class(tally: Tally, name: str, i: int) -> str:
    """The widest operand class seen over all calls of ``name``'s input ``i`` ("-" if never seen)."""
    seen = [c for c in CLASS_ORDER if tally.operands.get((name, i, c))]
    return seen[-1] if seen else "-"


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
