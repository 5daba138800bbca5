"""``spike-energy profile --model PKG.MODULE:FACTORY``: profile any model a factory builds.

The factory is called with no arguments and returns one of:

- ``{"model": m, "inputs": x}`` (optionally ``"samples": n``; default: the first dimension of the inputs);
- ``{"model": m, "text": "...", "tokenizer": f}``: a language model, ``f(text)`` giving token ids;
- ``(model, inputs)`` or ``(model, inputs, samples)``;
- a model with an ``example_inputs`` attribute.

Writes ``summary.json`` (our counts), ``neurobench.json`` (NeuroBench's results format and names) and
``ops.csv`` / ``neurons.csv`` / ``uncounted.csv`` into ``--out``, all or nothing.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

from energy.measuring.generic import profile_model
from energy.pricing.costs import load_costs
from spikegpt.errors import SpikeEnergyError
from spikegpt.safeio import check_output_dir, strict_dumps, write_csv

SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def load_factory(spec: str) -> dict:
    """Import ``PKG.MODULE:FACTORY``, call it, and return ``{"model", "inputs", "samples"}``."""
    if not SPEC.match(spec or ""):
        raise SpikeEnergyError(f"--model {spec!r}: expected PKG.MODULE:FACTORY, e.g. examples.snntorch_net:make")
    module_name, factory_name = spec.split(":")
    if os.getcwd() not in sys.path:  # as `python -m` does: a model package in the current folder imports
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise SpikeEnergyError(f"--model {spec}: cannot import {module_name!r} ({type(e).__name__}: {e}); run from "
                               "the folder that holds it or add that folder to PYTHONPATH") from None  # fmt: skip
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise SpikeEnergyError(f"--model {spec}: {module_name} has no callable {factory_name!r}; name the factory "
                               "that returns the model and its inputs")  # fmt: skip
    made = factory()
    samples = None
    if isinstance(made, dict):
        model = made.get("model")
        if "inputs" in made:
            inputs = made["inputs"]
        elif "text" in made and callable(made.get("tokenizer")):
            ids = made["tokenizer"](made["text"])
            inputs = ids if isinstance(ids, torch.Tensor) else torch.tensor([list(ids)])
        else:
            inputs = None
        samples = made.get("samples")
    elif isinstance(made, tuple) and len(made) in (2, 3):
        model, inputs, samples = (*made, None)[:3]
    else:
        model, inputs = made, getattr(made, "example_inputs", None)
    if not isinstance(model, nn.Module):
        raise SpikeEnergyError(f"--model {spec}: the factory returned {type(model).__name__}, not a torch.nn.Module; "
                               "return {'model': m, 'inputs': x} or (m, x)")  # fmt: skip
    if inputs is None:
        raise SpikeEnergyError(f"--model {spec}: the factory returned no inputs; return {{'model': m, 'inputs': x}}, "
                               "(m, x), or text with a tokenizer")  # fmt: skip
    return {"model": model.eval(), "inputs": inputs, "samples": samples}


def _plain_seconds(model: nn.Module, inputs, repeats: int = 3) -> float:
    from energy.measuring.generic import _call

    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            _call(model, inputs)
            best = min(best, time.perf_counter() - t0)
    return best


def run(a) -> int:
    """The ``profile --model`` command."""
    if getattr(a, "checkpoint", None):
        raise SpikeEnergyError("--model and --checkpoint cannot be combined: --model profiles the model its "
                               "factory returns; drop one of them")  # fmt: skip
    out = check_output_dir(a.out, "--out")
    made = load_factory(a.model)
    model, inputs = made["model"], made["inputs"]
    costs = load_costs(a.costs) if getattr(a, "costs", None) else None
    plain = _plain_seconds(model, inputs)
    prof = profile_model(model, inputs, samples=made["samples"], precision=getattr(a, "precision", "fp32"),
                         costs=costs, name=a.model)  # fmt: skip
    summary = prof.summary(model)
    summary["timing"] = {"plain_seconds": plain, "profiled_seconds": prof.meta["profiled_seconds"],
                         "profiled_over_plain": prof.meta["profiled_seconds"] / plain if plain else None}  # fmt: skip
    nb = summary["neurobench"]
    nb_results = {k: nb[k] for k in ("Footprint", "ConnectionSparsity", "ActivationSparsity", "MembraneUpdates",
                                     "SynapticOperations")}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".spike-energy-", dir=out.parent))
    try:
        (tmp / "summary.json").write_text(strict_dumps(summary, indent=1))
        (tmp / "neurobench.json").write_text(json.dumps(nb_results, indent=4))  # as Benchmark.save_benchmark_results
        write_csv(prof.ops, tmp / "ops.csv")
        write_csv(prof.neurons, tmp / "neurons.csv")
        write_csv(prof.uncounted(), tmp / "uncounted.csv")
        out.mkdir(exist_ok=True)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    per = summary["ops_per_sample"]
    e = summary["energy"]
    print(f"{a.model}: {prof.samples} samples; per sample: {per['mac']:,.0f} dense MACs, {per['effective_mac']:,.0f} "
          f"effective MACs, {per['ac']:,.0f} ACs; overall firing rate {summary['firing_rates']['overall']:.4f}; "
          f"{e['zero_skipping_pj_per_sample']:,.1f} pJ per sample ({e['precision']}, compute only)")  # fmt: skip
    if summary["not_recognised_as_neurons"]:
        print("spiking but not recognised as neurons: " + ", ".join(summary["not_recognised_as_neurons"]))
    if summary["uncounted"]:
        print("uncounted ops: " + ", ".join(sorted({r["aten_op"] for r in summary["uncounted"]})))
    print(f"written: {out / 'summary.json'}, {out / 'neurobench.json'}")
    return 0
