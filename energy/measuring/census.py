"""Coverage: every aten op the forward executed, and what accounts for it.

A ``TorchDispatchMode`` sees each aten op; forward pre-/post-hooks keep a stack of
the module currently running, so each op is charged to the innermost module. An op
is *attributed* when that module has a cost rule that names the op, *free* when it
only moves data (``rules.FREE_ATEN``), and *uncounted* otherwise. Dispatch-level
interception is slow, so the census runs on a short prefix of the input.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from energy.measuring.rules import FREE_ATEN, MODULE_RULES, aten_base_name, attention_stage
from spikegpt import cpu_kernels

# (activation operand index, weight operand index) of the matrix products
_MATMUL_OPERANDS = {"mm": (0, 1), "bmm": (0, 1), "addmm": (1, 2), "matmul": (0, 1)}


class _Dispatch(TorchDispatchMode):
    """Counts aten ops per innermost module; for matrix products also (``effective``) the MACs whose
    activation operand is nonzero, from the values seen, per module and stage (``attention.matmul`` for
    products on attention scores, else ``matmul``), both as executed and restricted to the causal
    triangle, and the activation elements read and written."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # TorchDispatchMode's documented opt-out (see its ``_should_skip_dynamo``): the census never runs under
        # torch.compile, and wrapping ``__torch_dispatch__`` for Dynamo imports ``torch._dynamo`` (over a second)
        return False

    def __init__(self, stack: list[str], effective: bool):
        super().__init__()
        self.stack = stack
        self.effective = effective
        self.calls: Counter = Counter()
        self.elements: Counter = Counter()
        self.effective_mac: Counter = Counter()  # (module, stage) -> MACs with a nonzero activation
        self.effective_mac_causal: Counter = Counter()  # the same, only the causal triangle of attention
        self.activations: Counter = Counter()  # (module, "in" / "out", on scores) -> elements

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        info = _OP_INFO.get(func)
        if info is None:  # the op's name and matrix-product operands, worked out once per op overload
            name = func.name()
            info = _OP_INFO[func] = (name, _MATMUL_OPERANDS.get(aten_base_name(name)))
        name, pair = info
        stack = self.stack
        module = stack[-1] if stack else ""
        key = (module, name)
        self.calls[key] += 1
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        self.elements[key] += math.prod(first.shape) if isinstance(first, torch.Tensor) else 0
        if pair is not None and self.effective:
            a, w = args[pair[0]], args[pair[1]]
            stage = attention_stage(True, [tuple(a.shape), tuple(w.shape)], tuple(first.shape)) or "matmul"
            nnz = count_nonzero(a)
            self.effective_mac[(module, stage)] += nnz * w.shape[-1]
            # P (scores after the mask) has an exactly zero upper triangle; Q, which may be square too, has not
            reads_scores = stage != "matmul" and a.shape[-1] == a.shape[-2] and bool((torch.triu(a, 1) == 0).all())
            makes_scores = stage != "matmul" and not reads_scores and first.shape[-1] == first.shape[-2]
            self.effective_mac_causal[(module, stage)] += (
                _causal_effective(a, w.shape[-1], reads_scores) if stage != "matmul" else nnz * w.shape[-1]
            )
            # scores (batch, heads, T, T) are a causal triangle in a causal model: kept apart to scale
            self.activations[(module, "in", reads_scores)] += a.numel()
            self.activations[(module, "out", makes_scores)] += first.numel()
        return out


# op overload -> (its name, (activation, weight) operand indices if a matrix product): the handler runs for
# every aten op of the census, and the name and its parsing were a third of its own time
_OP_INFO: dict = {}


def count_nonzero(t: torch.Tensor) -> int:
    """Nonzero elements of a tensor. A float CPU tensor is counted by numpy: for values with many zeros
    (spikes, ReLU^2) torch's count_nonzero measured 7-10x slower (3.6 ms against 0.34 ms for 256 x 3072),
    and numpy's count of the exact zeros (a vectorised comparison) 4-5x faster than its count of nonzero
    floats (``energy.measuring.hooks.count_nonzero``)."""
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and t.layout == torch.strided:
        a = (t.detach() if t.requires_grad else t).numpy()
        return a.size - int(np.count_nonzero(a == 0))
    return int(torch.count_nonzero(t))


def _causal_effective(a: torch.Tensor, n: int, reads_scores: bool) -> int:
    """MACs of an attention product with a nonzero activation, counting only the causal triangle.

    Reading the scores P whose upper triangle is masked to exact zeros: its nonzeros x n. Making the
    scores from Q (batch, heads, T, d): query row i meets keys 0..i, so nnz(row i) x (i + 1)."""
    if reads_scores:
        return count_nonzero(a) * n
    rows = torch.count_nonzero(a, dim=-1)  # (..., T): nonzeros of each query row
    return int((rows * torch.arange(1, a.shape[-2] + 1, device=a.device)).sum())


def run_with_module_stack(model: nn.Module, fn, effective: bool = False) -> _Dispatch:
    """Run ``fn()`` under the dispatch mode with the module stack kept by hooks
    (``effective``: also read the activation operand of every matrix product).

    The stack is kept by one global pre-hook and one global forward hook (``torch.nn.modules.module``'s
    ``register_module_forward_pre_hook``), which look the module up by identity: the same stack as a pair of
    hooks on each of the model's modules (a module seen under two names keeps the first, as
    ``named_modules`` lists it), without registering and removing two hooks per module (about 10 ms for the
    546 modules of the 216M model). A module outside the model (made during the forward) keeps the
    enclosing module's name, as the per-module hooks did by not seeing it."""
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    stack: list[str] = []
    names: dict[int, str] = {}
    keep = []  # the modules themselves: their ids stay theirs while the hooks run
    for name, mod in model.named_modules():
        names[id(mod)] = name
        keep.append(mod)

    def pre(mod, args):
        name = names.get(id(mod))
        stack.append(name if name is not None else (stack[-1] if stack else ""))

    def pop(mod, args, out):
        stack.pop()

    mode = _Dispatch(stack, effective)
    handles = [register_module_forward_pre_hook(pre)]  # the last thing before the try that removes them
    try:
        handles.append(register_module_forward_hook(pop))
        # the model's torch loops, whose aten ops the mode sees (the compiled CPU loops run outside aten)
        with torch.no_grad(), cpu_kernels.disabled(), mode:
            fn()
    finally:
        for h in handles:
            h.remove()
    return mode


def census(model: nn.Module, fn) -> pd.DataFrame:
    """Run ``fn()`` (a forward of ``model``) under the census; one row per (module, aten op).

    Columns: module, module_type, aten_op, calls, elements (of the first output),
    status (attributed / free / uncounted), kind (the cost kind it is attributed to).
    """
    types = {name: type(m) for name, m in model.named_modules()}
    # One intra-op thread: the census runs one token, whose ops are too small to share (each parallel region
    # waits at its barrier for every thread, a scheduler time slice when another job holds a core: 0.86 s on
    # 2 threads against 0.23 s on 1 for the 216M model, load 4), and it lists ops, never their values.
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        mode = run_with_module_stack(model, fn)
    finally:
        if threads > 1:
            torch.set_num_threads(threads)
    rows = []
    for (module, op), calls in sorted(mode.calls.items()):
        rule = MODULE_RULES.get(types.get(module))
        base = aten_base_name(op)
        if rule is not None and base in rule.aten:
            status, kind = "attributed", rule.kind
        elif base in FREE_ATEN:
            status, kind = "free", "data movement"
        else:
            status, kind = "uncounted", ""
        rows.append(
            {
                "module": module or "<top level>",
                "module_type": types[module].__name__ if module in types else "",
                "aten_op": op,
                "calls": calls,
                "elements": mode.elements[(module, op)],
                "status": status,
                "kind": kind,
            }
        )
    return pd.DataFrame(rows, columns=["module", "module_type", "aten_op", "calls", "elements", "status", "kind"])
