"""Forward hooks that measure a model while it runs on real text.

``Meter`` attaches one hook to every module that has a cost rule (``rules.MODULE_RULES``)
and, per call: classifies the operands whose values matter from the tensors actually
seen, evaluates the rule, and keeps running sums (never activation tensors): op counts,
operand statistics, spike counts per neuron and per token position, a small sampled
raster, ReLU^2 zeros, activation sizes. The hooks are removed on exit.

The model knows nothing of this: it only has to run its operations inside modules.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn

from energy.measuring.rules import MODULE_RULES, Operand
from spikegpt import model as sg

SPIKING_TYPES = (sg.LIF, sg.Heaviside)


NUMPY_FLOATS = (torch.float32, torch.float64)
# Spike counts are float sums of 0/1 values in numpy (4-5x faster than torch's int64 sums): exact while every
# partial sum, at most the number of values summed, is an integer the float type represents
EXACT_FLOAT_SUM = {torch.float32: 1 << 24, torch.float64: 1 << 53}


def count_nonzero(a: np.ndarray) -> int:
    """``np.count_nonzero(a)`` for a float array, as its size minus its exact zeros (0.0 and -0.0): the
    comparison and the count of a boolean array are vectorised, numpy's count of nonzero floats is not
    (measured 27 us against 113 us for 256 x 768 float32 values, 85 against 482 for 256 x 3072). NaN is
    nonzero in both."""
    return a.size - int(np.count_nonzero(a == 0))


def classify(x: torch.Tensor) -> Operand:
    """binary {0,1} / ternary {-1,0,1} / integer / float, and the zero count, from the values.

    Only comparisons and counts, which autograd never records: no ``torch.no_grad()`` context is
    needed, and entering one on every call (hundreds per token in streaming mode) cost more than
    the test itself."""
    if x.device.type == "cpu" and x.dtype in NUMPY_FLOATS and x.layout == torch.strided:
        return _classify_numpy(x)  # numpy's counts are the faster ones on the CPU, at every size
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


def _classify_numpy(x: torch.Tensor) -> Operand:
    """``classify`` for a float CPU tensor, the same tests on a numpy view: no per-op dispatch (streaming
    mode calls this hundreds of times per token), and numpy's count of nonzeros is 7-10x faster than
    torch's on values with many zeros (``energy.measuring.census.count_nonzero``).

    The cheap tests come first: the first nonzero value, if it is not an integer (NaN and inf are
    not), settles "float"; all nonzeros equal to 1 settle "binary" (spikes) without looking for
    fractions; only what is left needs the full integrality test. Where numba is there the counts come
    from two compiled passes (``energy.measuring._numba_counts``: zeros and the first nonzero; then ones,
    minus ones and integrality, only when the first nonzero is an integer) instead of up to five numpy
    passes with a boolean temporary each; the decisions are the same."""
    shape = tuple(x.shape)
    a = (x.detach() if x.requires_grad else x).numpy().reshape(-1)
    k = _counts()
    if k is None:
        return _classify_numpy_passes(a, shape)
    numel = a.size
    zeros, first = k.zeros_first(a)
    nnz = numel - int(zeros)
    if nnz == 0:
        return Operand("binary", numel, 0, shape)
    if not float(a[first]).is_integer():
        return Operand("float", numel, nnz, shape)
    ones, minus, integral = k.ones_integral(a)
    if ones == nnz:
        return Operand("binary", numel, nnz, shape)
    if ones + minus == nnz:
        return Operand("ternary", numel, nnz, shape)
    if integral:  # NaN is not an integer; +-inf is, as np.round(inf) == inf in the numpy test
        return Operand("integer", numel, nnz, shape)
    return Operand("float", numel, nnz, shape)


def _classify_numpy_passes(a: np.ndarray, shape: tuple) -> Operand:
    """The numpy tests of ``_classify_numpy`` (without numba, and the reference its compiled passes equal)."""
    numel, nnz = a.size, count_nonzero(a)
    if nnz == 0:
        return Operand("binary", numel, 0, shape)
    first = a[0] if a[0] != 0 else a[int(np.argmax(a != 0))]
    if not float(first).is_integer():
        return Operand("float", numel, nnz, shape)
    ones = int(np.count_nonzero(a == 1))
    if ones == nnz:
        return Operand("binary", numel, nnz, shape)
    if ones + int(np.count_nonzero(a == -1)) == nnz:
        return Operand("ternary", numel, nnz, shape)
    if np.array_equal(a, np.round(a)):  # NaN is unequal to itself: float, as in torch
        return Operand("integer", numel, nnz, shape)
    return Operand("float", numel, nnz, shape)


_COUNTS = None  # the compiled counting passes, False where numba cannot be used


def _counts():
    """``energy.measuring._numba_counts`` once it imported and compiled for float32 and float64, else None."""
    global _COUNTS
    if _COUNTS is None:
        try:
            from energy.measuring import _numba_counts as k

            for dtype in (np.float32, np.float64):  # compile (or load from numba's cache) both, or neither
                probe = np.array([0.0, 2.0, -1.0, 1.0], dtype=dtype)
                if k.zeros_first(probe) != (1, 1) or k.ones_integral(probe) != (1, 1, True):
                    raise RuntimeError("the compiled counts disagree on a probe")
            _COUNTS = k
        except Exception:  # no numba, or it cannot compile here: the numpy passes give the same results
            _COUNTS = False
    return _COUNTS or None


CLASS_ORDER = ("binary", "ternary", "integer", "float")


POSITION_CAP = 4096  # rates by token position are kept for the first positions of each sequence
PENDING_CALLS = 64  # one-token calls of a layer measured together (streaming mode)
PENDING_BYTES = 8 * 2**20  # ... or fewer, so that a layer never holds more than this of outputs (the LM head)


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
            mine, theirs = getattr(self, name), getattr(other, name)
            if not mine:  # an empty counter takes the other's keys and counts in one C-level copy (same order)
                dict.update(mine, theirs)
                continue
            for k, v in theirs.items():
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


def _reached(t: Tally, layer: str) -> np.ndarray:
    """Spikes per position, up to the last position any sequence reached."""
    if layer not in t.positions:
        return np.zeros(0, dtype=np.int64)
    return t.positions[layer][: np.count_nonzero(t.position_rows[layer])]


def _add_arrays(a: np.ndarray | None, b: np.ndarray) -> np.ndarray:
    if a is None:
        return b.copy()
    if len(a) < len(b):
        a = np.concatenate([a, np.zeros(len(b) - len(a), dtype=np.int64)])
    a[: len(b)] += b
    return a


@dataclass
class SpikeStats:
    """Running spike counts of one spiking layer (LIF or the binary-embedding encoder), kept as
    tensors on the model's device between ``flush`` calls (no copy to the host per call)."""

    width: int
    offset: int = 0  # next token position in the current sequence
    raster: list[torch.Tensor] = field(default_factory=list)  # (t, n_raster) bool, batch row 0 of the first sequence
    # spikes per neuron (C,) and per token position (POSITION_CAP,) since the last flush, int64:
    # numpy arrays for a model on the CPU, tensors on the model's device otherwise (no copy per call)
    neurons: np.ndarray | torch.Tensor | None = None
    positions: np.ndarray | torch.Tensor | None = None
    rows: np.ndarray = field(default_factory=lambda: np.zeros(POSITION_CAP, dtype=np.int64))
    steps: int = 0
    fresh: bool = True  # nothing added since the last flush
    raster_tokens: int = 0  # rows in ``raster``

    def add(self, s: torch.Tensor, raster_neurons, raster_tokens: int, record_raster: bool) -> None:
        B, T, C = s.shape
        s = s.detach()
        end = min(self.offset + T, POSITION_CAP)
        n = max(end - self.offset, 0)
        if s.device.type == "cpu":
            if self.neurons is None:
                self.neurons = np.zeros(C, dtype=np.int64)
                self.positions = np.zeros(POSITION_CAP, dtype=np.int64)
            if s.dtype in NUMPY_FLOATS and max(B * T, B * C) < EXACT_FLOAT_SUM[s.dtype]:
                a = s.numpy().reshape(B * T, C)  # 0/1 values: float sums of fewer than 2^24 (float32) are exact
                np.add(self.neurons, a[0] if B * T == 1 else a.sum(axis=0), out=self.neurons, casting="unsafe")
                if n:
                    per_pos = a.reshape(B, T, C)[:, :n].sum(axis=(0, 2))
                    np.add(self.positions[self.offset : end], per_pos, out=self.positions[self.offset : end],
                           casting="unsafe")  # fmt: skip
            else:
                self.neurons += s.sum(dim=(0, 1), dtype=torch.int64).numpy()
                if n:
                    self.positions[self.offset : end] += s[:, :n].sum(dim=(0, 2), dtype=torch.int64).numpy()
        else:
            if self.neurons is None:
                self.neurons = torch.zeros(C, dtype=torch.int64, device=s.device)
                self.positions = torch.zeros(POSITION_CAP, dtype=torch.int64, device=s.device)
            self.neurons += s.sum(dim=(0, 1), dtype=torch.int64)
            if n:
                self.positions[self.offset : end] += s[:, :n].sum(dim=(0, 2), dtype=torch.int64)
        if n:
            self.rows[self.offset : end] += B
        self.steps += B * T
        self.fresh = False
        self.offset += T
        if record_raster and self.raster_tokens < raster_tokens:
            part = s[0, : raster_tokens - self.raster_tokens].index_select(1, raster_neurons.to(s.device)).bool().cpu()
            self.raster.append(part)
            self.raster_tokens += part.shape[0]

    def flush(self, tally: Tally, name: str) -> None:
        """Add the counts since the last flush into ``tally`` and restart them."""
        if self.fresh:
            return
        host = isinstance(self.neurons, np.ndarray)
        neurons = self.neurons.copy() if host else self.neurons.cpu().numpy().copy()
        positions = self.positions.copy() if host else self.positions.cpu().numpy().copy()
        tally.neurons[name] = _add_arrays(tally.neurons.get(name), neurons)
        tally.spikes[name] += int(neurons.sum())
        tally.steps[name] += self.steps
        tally.positions[name] = _add_arrays(tally.positions.get(name), positions)
        tally.position_rows[name] = _add_arrays(tally.position_rows.get(name), self.rows.copy())
        self.neurons[:] = 0
        self.positions[:] = 0
        self.rows[:] = 0
        self.steps = 0
        self.fresh = True


class _Wrapper:
    """A measured module's ``forward`` (see ``_wrap_forward``): the module's own forward, then the hook."""

    __slots__ = ("mod", "inner", "hook", "_meter_state", "__wrapped__")

    def __init__(self, mod: nn.Module, inner, hook, state: dict):
        self.mod, self.inner, self.hook, self._meter_state = mod, inner, hook, state
        self.__wrapped__ = inner  # inspect.signature and the like see the module's own forward

    def __call__(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        if self._meter_state["active"]:
            self.hook(self.mod, args, out)
        return out

    def __deepcopy__(self, memo):
        """A copy of the module made while it is measured gets its own forward, unmeasured: the class's, or a
        copy of the forward that was patched on the instance before (a wrapper's closure would run the
        original module, with the original's weights)."""
        import copy
        import types

        new = memo.get(id(self.mod))
        if new is None:  # the wrapper alone, outside a copy of its module
            return self
        state = self._meter_state
        if state["had"]:
            return copy.deepcopy(state["previous"], memo)
        return types.MethodType(type(self.mod).forward, new)


def _wrap_forward(mod: nn.Module, hook):
    """Call ``hook(mod, args, output)`` after each forward of ``mod``, as a forward hook would; returns the
    function that undoes it.

    The module's ``forward`` is replaced on the instance by a wrapper, instead of registering a forward hook:
    a module with a hook takes ``nn.Module``'s general call path (pre-hooks, global hooks, the hook loop),
    measured 3 us more per call than the plain path, and streaming mode calls the hooked modules ~490 times
    per token of the 216M model (0.04 s for 32 tokens at 1 thread). A module called through ``mod(...)``,
    the only way the models call them, gives the hook the same ``args`` and output either way, unless the
    module has forward hooks of its own (one may replace the output): ``Meter`` then registers a forward hook
    after them, as before. Unlike a hook, the wrapper also sees a direct ``mod.forward(...)`` call. A deep copy
    of the module made meanwhile gets its own, unmeasured forward (``_Wrapper.__deepcopy__``)."""
    had = "forward" in mod.__dict__  # a forward patched on the instance: wrapped, and put back afterwards
    previous = mod.__dict__.get("forward")
    state = {"active": True, "had": had, "previous": previous}
    forward = _Wrapper(mod, mod.forward, hook, state)
    mod.forward = forward

    def undo() -> None:
        # Meters may share a module (two models with a common submodule) and exit in any order: a wrapper
        # that is no longer on top only stops measuring, and the one above it skips it when it is undone.
        state["active"] = False
        if mod.__dict__.get("forward") is not forward:
            return  # another wrapper (or a patch) is above this one
        h, prev = had, previous
        while h and getattr(prev, "_meter_state", None) is not None and not prev._meter_state["active"]:
            h, prev = prev._meter_state["had"], prev._meter_state["previous"]
        if h:
            mod.forward = prev
        else:
            del mod.forward

    return undo


class _Joined:
    """One-token tensors joined along the tokens where no value of them is read: the shape that
    ``torch.cat(tensors, dim=1)`` would have, and its size."""

    __slots__ = ("shape",)

    def __init__(self, shape: torch.Size):
        self.shape = shape

    def numel(self) -> int:
        return math.prod(self.shape)


def _join(tensors: list, shape_only: bool):
    """``torch.cat(tensors, dim=1)``, or only its shape (``_Joined``) when ``shape_only`` and every tensor has the
    first one's shape (otherwise the concatenation itself, which checks them, as before)."""
    s = tensors[0].shape
    if shape_only and len(s) == 3 and all(t.shape == s for t in tensors):
        return _Joined(torch.Size((s[0], s[1] * len(tensors), s[2])))
    return torch.cat(tensors, dim=1)


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
        self.producers: dict[str, tuple[str, ...]] = {}  # layer -> the layers that produced its tensor inputs
        self._producer: dict[int, tuple] = {}  # id(tensor) -> (weak reference, layer)
        self.record_raster = True  # the raster shows the first sequence only
        self._raster_idx: dict[str, torch.Tensor] = {}
        self._called: set[str] = set()
        self._pending: dict[str, tuple] = {}  # layer -> (rule, module, [(args, output)]) of one-token calls
        self._costs: dict[tuple, tuple] = {}  # (layer, operands, output shape) -> counter keys and counts
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
        self.flush()
        t = self.tally
        return {
            n: SimpleNamespace(
                per_neuron=torch.from_numpy(t.neurons[n]),
                steps=t.steps[n],
                width=self.widths[n],
                per_position=torch.from_numpy(_reached(t, n)),
            )
            for n in self.widths
            if n in t.neurons
        }

    def __enter__(self) -> Meter:
        try:
            for name, mod in self.model.named_modules():
                rule = MODULE_RULES.get(type(mod))
                if rule is None:
                    if not list(mod.children()) and name:
                        self.unruled.append(name)
                    continue
                self.module_types[name] = type(mod).__name__
                self.kinds[name] = rule.kind
                if mod._forward_hooks:  # a hook of its own may replace the output: measure after it, as a hook
                    self._handles.append(mod.register_forward_hook(self._hook(name, rule)).remove)
                else:
                    self._handles.append(_wrap_forward(mod, self._hook(name, rule)))
        except BaseException:  # nothing left wrapped (an interrupt included)
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for undo in reversed(self._handles):
            undo()
        self._handles.clear()
        self._measure_pending()
        self._seen.clear()
        self._producer.clear()

    def flush(self) -> None:
        """Deferred one-token calls measured, and the spike counts kept on the device, into the tally."""
        self._measure_pending()
        for name, st in self.spike_stats.items():
            st.flush(self.tally, name)

    def take(self) -> Tally:
        """The sums since the last ``take`` (a new, empty tally replaces them)."""
        self.flush()
        t, self.tally = self.tally, Tally()
        t.widths = dict(self.widths)
        self._seen.clear()
        return t

    def begin_sequence(self, record_raster: bool = False) -> None:
        """A new sequence (document): token positions restart at 0."""
        self._measure_pending()
        for st in self.spike_stats.values():
            st.offset = 0
        self.record_raster = record_raster
        self._seen.clear()

    def _hook(self, name: str, rule):
        pending, called = self._pending, self._called

        def hook(mod, args, output):
            out = output[0] if isinstance(output, tuple) else output
            if out.dim() == 3 and out.shape[1] == 1:
                # One token step (streaming mode): most of the cost of measuring it is per call, not per value.
                # The call waits with the layer's next ones and they are measured together, as one call over
                # those tokens (``_measure_pending``): every rule is linear in the tokens, so the counts are the
                # ones of the calls one by one, and an operand is classified over those tokens at once, as
                # parallel mode classifies a chunk. Waiting touches no values: it runs on the model's threads.
                entry = pending.get(name)
                if entry is None:
                    if name not in called:  # order and dataflow: at the first call, while the inputs are alive
                        called.add(name)
                        self.order.append(name)
                        self._record_dataflow(name, args, out)
                    entry = pending[name] = (rule, mod, [])
                calls = entry[2]
                calls.append((args, out))
                # the outputs held (the inputs are alike)
                if len(calls) >= PENDING_CALLS or len(calls) * out.numel() * out.element_size() >= PENDING_BYTES:
                    self._one_thread(self._measure_calls, name, *pending.pop(name))
                return
            self._one_thread(self._measure_one, name, rule, mod, args, out)

        return hook

    @staticmethod
    def _one_thread(measure, *args) -> None:
        # The statistics are reductions over tensors of a few hundred thousand elements: with
        # several intra-op threads each one opens a parallel region whose barrier waits for every
        # thread, and when another job holds a core that wait is a scheduler time slice (measured:
        # a count_nonzero of 256 x 768 values took 1.1 ms on 2 threads against 0.09 ms on 1). One
        # thread here keeps the hooks' cost independent of the load; the model keeps its threads.
        threads = torch.get_num_threads()
        if threads > 1:
            torch.set_num_threads(1)
        try:
            measure(*args)
        finally:
            if threads > 1:
                torch.set_num_threads(threads)

    def _measure_pending(self) -> None:
        """Measure every deferred one-token call (in the order the layers first waited)."""
        while self._pending:
            name = next(iter(self._pending))
            self._measure_calls(name, *self._pending.pop(name))

    def _measure_calls(self, name: str, rule, mod, calls: list) -> None:
        """k one-token calls of one layer as one call over k tokens: tensor inputs and the output joined along
        the token axis (dim 1) where they have one; parameter-only (setup) counts stay per call."""
        if len(calls) == 1:
            self._measure_one(name, rule, mod, *calls[0])
            return
        k = len(calls)
        # Only values that are read are joined: the classified inputs, and the output of a spiking layer
        # (spike counts) or of ReLU^2 (its zeros). Any other input or output enters the counts by its shape
        # alone (``_Joined``: the shape the concatenation would have), which saves ~2,000 of the ~2,400
        # concatenations per 32 tokens of the 216M model.
        reads_out = isinstance(mod, (*SPIKING_TYPES, sg.SquaredReLU))
        out = _join([o for _, o in calls], not reads_out)
        first_args = calls[0][0]
        args = []
        for i, a in enumerate(first_args):
            if isinstance(a, torch.Tensor) and a.dim() == 3 and a.shape[1] == 1:
                args.append(_join([c[0][i] for c in calls], i not in rule.classify))
            else:
                args.append(a)  # parameters (time_mix, decay), states: the same shape on every call
        n_in_extra = sum(
            a.numel()
            for c in calls[1:]
            for a in c[0]
            if isinstance(a, torch.Tensor) and not (a.dim() == 3 and a.shape[1] == 1)
        )
        self._measure_one(name, rule, mod, tuple(args), out, calls=k, extra_in=n_in_extra)

    def _measure_one(self, name: str, rule, mod, args, out, calls: int = 1, extra_in: int = 0) -> None:
        """One forward call of a module (or ``calls`` one-token calls joined, see ``_measure_calls``)."""
        t = self.tally
        # A rule is a pure function of the module, the operands and the output shape: in streaming mode
        # the same call repeats every token, so its evaluation (flattened to counter keys) is kept, under
        # a key of the classified operands and the other inputs' shapes (their operand follows from it).
        key, n_in, operands = [name, calls], extra_in, t.operands
        for i, a in enumerate(args):
            if not isinstance(a, (torch.Tensor, _Joined)):
                key.append(None)
                continue
            n_in += a.numel()
            if i in rule.classify:
                op = self._classify(a)
                operands[(name, i, "calls")] += calls
                operands[(name, i, "numel")] += op.numel
                operands[(name, i, "nnz")] += op.nnz
                operands[(name, i, op.cls)] += calls
                key.append(op)
            else:
                key.append(a.shape)
        t.activation[(name, "in")] += n_in
        t.activation[(name, "out")] += out.numel()
        key.append(out.shape)
        key = tuple(key)
        entry = self._costs.get(key)
        if entry is None:
            ops = [
                k if k is None or isinstance(k, Operand) else Operand("float", math.prod(k), math.prod(k), tuple(k))
                for k in key[2:-1]
            ]
            cost = rule.cost(mod, ops, tuple(out.shape))
            opclass = next((o.cls for i, o in enumerate(ops) if o is not None and i in rule.classify), "-")
            kind = rule.kind
            entry = (
                [((name, kind, stage, prim, opclass), n) for stage, c in cost.ops.items() for prim, n in c.items()],
                [((name, kind, stage, prim), n * calls) for stage, c in cost.setup.items() for prim, n in c.items()],
            )
            if len(self._costs) >= 4096:
                self._costs.clear()
            self._costs[key] = entry
        counts, setup = t.counts, t.setup
        for k, n in entry[0]:
            counts[k] += n
        for k, n in entry[1]:
            setup[k] += n
        if name not in self._called:
            self._called.add(name)
            self.order.append(name)
            self._record_dataflow(name, args, out)
        t.calls[name] += calls
        if isinstance(mod, SPIKING_TYPES):
            self._record_spikes(name, out)
        elif isinstance(mod, sg.SquaredReLU):
            t.relu[(name, "numel")] += out.numel()
            t.relu[(name, "zeros")] += out.numel() - self._classify(out).nnz

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
        st.add(s, self._raster_idx[name], self.raster_tokens, self.record_raster)

    # ------------------------------------------------------------------ views

    def operand_class(self, name: str, i: int) -> str:
        """The widest class seen over all calls (one float call makes the layer float)."""
        return operand_class(self.tally, name, i)

    def firing_rates(self) -> dict[str, float]:
        self.flush()
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


@functools.lru_cache(maxsize=8192)  # a pure function of the name, asked per row of every table
def block_index(name: str) -> float:
    """The block a module belongs to, from its path (``blocks.3.att.key`` -> 3.0, GPT-2's ``h.3``), else NaN."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("h", "blocks", "layers", "layer") and parts[i + 1].isdigit():
            return float(parts[i + 1])
    return float("nan")
