"""``energy.profile(model, tokens) -> Profile``: one measured pass over real text.

The main pass runs the whole input with the ``Meter``'s hooks (fast); the coverage
census runs on a short prefix under a dispatch mode (slow), in the same mode.
"""

from __future__ import annotations

import math
import platform
import weakref
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from energy.measuring.census import census
from energy.measuring.hooks import POSITION_CAP, block_index, operand_class, preceding_spike_source
from energy.measuring.rules import MODULE_RULES, PRIMITIVES
from energy.pricing.costs import CostTable, load_costs
from energy.pricing.estimate import SCENARIOS, scenario_energy
from energy.pricing.memory import memory_terms
from spikegpt.safeio import strict_dumps, write_csv

SATURATED_RATE = 0.5  # a neuron that fires on more than half of the steps is "saturated"


@dataclass
class Profile:
    """What one run measured. DataFrames are long-form; counts are per token unless named ``count``."""

    meta: dict
    ops: pd.DataFrame  # layer, block, kind, stage, primitive, operand, count, per_token
    setup: pd.DataFrame  # layer, kind, stage, primitive, count (parameter-only ops, summed over calls)
    layers: pd.DataFrame  # one row per measured module
    neurons: pd.DataFrame  # layer, neuron, spikes, rate
    positions: pd.DataFrame  # layer, position, rate
    rasters: dict  # layer -> list of lists (tokens x sampled neurons) of 0/1
    census: pd.DataFrame
    costs: CostTable = field(repr=False)
    precision: str = "fp32"

    # ------------------------------------------------------------ headline numbers

    @property
    def tokens(self) -> int:
        return self.meta["tokens"]

    @cached_property
    def firing_rates(self) -> dict[str, float]:
        """Per spiking layer, and ``overall`` over the LIF layers (the encoder is listed, not averaged in)."""
        spk = self.layers[self.layers.firing_rate.notna()]
        rates = dict(zip(spk.layer, spk.firing_rate.astype(float)))
        lif = spk[spk.kind == "lif"].layer.tolist()
        steps = sum(self.meta["neuron_steps"][k] for k in lif)
        spikes = float(self.neurons[self.neurons.layer.isin(lif)].spikes.sum())
        rates["overall"] = spikes / steps if steps else float("nan")
        return rates

    def ops_per_token(self) -> dict[str, float]:
        """Totals by primitive (mac, effective_mac, ac, add, ...), and composite kinds."""
        by = self.ops.groupby("primitive").per_token.sum()
        out = {p: float(by.get(p, 0.0)) for p in PRIMITIVES}
        lay = self.layers.set_index("layer")
        out["lif_updates"] = float(lay.loc[lay.kind == "lif", "out_per_token"].sum())
        out["wkv_steps"] = float(lay.loc[lay.kind == "wkv", "out_per_token"].sum())
        out["layernorm_elements"] = float(lay.loc[lay.kind == "layernorm", "out_per_token"].sum())
        return out

    def uncounted(self) -> pd.DataFrame:
        """Aten ops no rule accounts for (the goal is an empty table), with counts."""
        return self.census[self.census.status == "uncounted"].reset_index(drop=True)

    def by_layer(self) -> pd.DataFrame:
        return self.ops.pivot_table(index="layer", columns="primitive", values="per_token", aggfunc="sum", sort=False)

    def by_op(self) -> pd.DataFrame:
        return self.ops.groupby(["kind", "stage", "primitive"], sort=False).per_token.sum().reset_index()

    def by_layer_and_op(self) -> pd.DataFrame:
        return self.ops.groupby(["layer", "stage", "primitive"], sort=False).per_token.sum().reset_index()

    def memory(self, *, dram: bool = False, zero_skipping: bool = True) -> pd.DataFrame:
        """Memory traffic per token by layer and term (``energy.pricing.memory``): bytes (adds for addressing) and pJ,
        in the memory scenario (``dram``: every weight from DRAM)."""
        return memory_terms(self.layers, self.costs, self.precision, batch=self.meta["batch"],
                            budget_bytes=0 if dram else None, zero_skipping=zero_skipping)  # fmt: skip

    # ------------------------------------------------------------ energy

    def energy(
        self,
        scenario: str | None = None,
        *,
        precision: str | None = None,
        costs: CostTable | None = None,
        paper_rate: float = 0.15,
        zero_skipping: bool = True,
        batch: int | None = None,
    ) -> pd.DataFrame:
        """pJ per token by scenario, layer, stage and primitive (long form); ``batch``: the batch the memory
        scenarios assume (default: the profiled one)."""
        names = SCENARIOS if scenario is None else (scenario,)
        frames = [
            scenario_energy(
                name,
                self.ops,
                self.layers,
                costs or self.costs,
                precision or self.precision,
                batch=self.meta["batch"] if batch is None else batch,
                paper_rate=paper_rate,
                zero_skipping=zero_skipping,
            )
            for name in names
        ]
        return pd.concat(frames, ignore_index=True)

    def energy_per_token(self, **kw) -> dict[str, float]:
        e = self.energy(**kw)
        return {s: float(e[e.scenario == s].pj.sum()) for s in SCENARIOS}

    # ------------------------------------------------------------ export

    def to_dict(self) -> dict:
        e = self.energy_per_token()
        seq = self.meta["tokens_per_sequence"]
        return {
            "meta": self.meta,
            "firing_rate": self.firing_rates,
            "ops_per_token": self.ops_per_token(),
            "energy_pj_per_token": e,
            "energy_pj_per_sequence": {k: v * seq for k, v in e.items()},
            "uncounted_ops": self.uncounted().to_dict("records"),
            "layers": self.layers.to_dict("records"),
        }

    def to_json(self, path: str | Path | None = None) -> str:
        text = strict_dumps(self.to_dict(), indent=1)  # NaN/inf as null: strict JSON
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_csv(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        # text cells that a spreadsheet would run as formulas are neutralised (safeio.write_csv)
        write_csv(self.layers, d / "layers.csv")
        write_csv(self.ops, d / "ops.csv")
        write_csv(self.neurons, d / "neurons.csv")
        write_csv(self.census, d / "census.csv")
        write_csv(self.energy(), d / "energy.csv")


def as_batch(tokens, batch: int) -> torch.Tensor:
    """ids of shape (batch, T + 1): the model reads [:, :-1] and is scored on [:, 1:].

    A 1-D sequence is cut into ``batch`` consecutive rows of equal length.
    """
    ids = torch.as_tensor(tokens, dtype=torch.long)
    if ids.dim() == 2:
        return ids
    if ids.dim() != 1:
        raise ValueError(f"tokens must be 1-D or (batch, T), got shape {tuple(ids.shape)}")
    per_row = ids.numel() // batch
    if per_row < 2:
        raise ValueError(f"{ids.numel()} tokens are too few for batch {batch}: need at least 2 per row")
    return ids[: per_row * batch].view(batch, per_row)


@torch.no_grad()
def profile(
    model: nn.Module,
    tokens,
    *,
    batch: int = 1,
    mode: str = "parallel",
    chunk_len: int | None = None,
    census_tokens: int = 1,
    costs: CostTable | None = None,
    precision: str = "fp32",
    raster_neurons: int = 64,
    raster_tokens: int = 256,
    progress=None,
) -> Profile:
    """Run ``model`` on ``tokens`` (one sequence, or ``batch`` rows) with the meter attached.

    ``progress``: optional callable ``(tokens_done, tokens_total)`` for a progress bar.
    For a corpus of documents, see ``energy.measuring.runner.CorpusRun`` and ``build_profile``.
    """
    from energy.measuring.runner import CorpusRun, RunSettings, collector_paused

    ids = as_batch(tokens, batch)
    settings = RunSettings(
        mode=mode,
        chunk_len=chunk_len,
        concat=True,
        tokens=ids.shape[1] - 1,
        batch=ids.shape[0],
        census_tokens=census_tokens,
        raster_neurons=raster_neurons,
        raster_tokens=raster_tokens,
    )
    run = CorpusRun({"model": model}, None, None, settings, progress=progress, rows=ids)
    # The cyclic collector waits until the profile is built: attaching ~500 hooks and building the tables
    # allocate many small objects, which reference counting frees, and each full collection walks every
    # object of torch, pandas and the model (measured 0.07-0.3 s per profile of the 216M model, 1 thread).
    with collector_paused():
        state = run.run()
        return build_profile(model, state, "model", settings, costs=costs, precision=precision, wall_s=run.wall_s)


def build_profile(
    model: nn.Module,
    state,
    track: str,
    settings,
    *,
    costs: CostTable | None = None,
    precision: str = "fp32",
    wall_s: float = float("nan"),
    census_df: pd.DataFrame | None = None,
) -> Profile:
    """The ``Profile`` of one model from a (merged) ``RunState``: tables from the exact sums."""
    costs = costs or load_costs()
    tr = state.tracks[track]
    tally, static = tr.total, tr.static
    device = next(model.parameters()).device
    mode, chunk_len = settings.mode, settings.chunk_len
    if census_df is None:
        census_df = run_census(model, state, settings)
    n_tokens = tally.tokens
    if n_tokens == 0:
        raise ValueError("nothing was measured: no document had 2 tokens or more")
    ops = _ops_frame(tally.counts, n_tokens)
    layers = _layers_frame(model, tally, static, ops, n_tokens)
    neurons = pd.concat(
        [
            pd.DataFrame({"layer": name, "neuron": np.arange(len(v)), "spikes": v, "rate": v / tally.steps[name]})
            for name, v in tally.neurons.items()
        ]
        or [pd.DataFrame(columns=["layer", "neuron", "spikes", "rate"])],
        ignore_index=True,
    )
    reached = {name: int(np.count_nonzero(rows)) for name, rows in tally.position_rows.items()}
    positions = pd.concat(
        [
            pd.DataFrame(
                {
                    "layer": name,
                    "position": np.arange(reached[name]),
                    "rate": v[: reached[name]] / (tally.position_rows[name][: reached[name]] * tally.widths[name]),
                }
            )  # fmt: skip
            for name, v in tally.positions.items()
        ]
        or [pd.DataFrame(columns=["layer", "position", "rate"])],
        ignore_index=True,
    )
    setup = pd.DataFrame(
        [{"layer": k[0], "kind": k[1], "stage": k[2], "primitive": k[3], "count": v} for k, v in tally.setup.items()],
        columns=["layer", "kind", "stage", "primitive", "count"],
    )
    cfg = getattr(model, "config", None)
    n_seq = max(len(state.docs), 1)
    B = settings.batch if settings.concat else 1
    per_seq = n_tokens // B if settings.concat else round(n_tokens / n_seq)
    census_n = min(settings.census_tokens, per_seq)
    nats = state.nats
    meta = {
        "tokens": n_tokens,
        "batch": B,
        "tokens_per_sequence": per_seq,
        "sequences": len(state.docs) * B if settings.concat else len(state.docs),
        "mode": mode,
        "chunk_len": chunk_len or (cfg.ctx_len if cfg is not None else None),
        "census_tokens": census_n,
        "census_note": f"the coverage census ran on the first {census_n} token{'' if census_n == 1 else 's'} of "
        + ("each row" if settings.concat else "the first document"),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "device": str(device),
        "precision": precision,
        "params": sum(p.numel() for p in model.parameters()),
        "nats": nats,
        "bits_per_token": nats / math.log(2) / n_tokens,
        "wall_time_s": wall_s,
        "neuron_steps": {n: tally.neuron_steps(n) for n in tally.steps},
        "saturated_rate": SATURATED_RATE,
        "position_cap": POSITION_CAP,
        "modules_without_rule": static.get("unruled", []),  # their arithmetic shows as uncounted in the census
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if cfg is not None:
        meta["config"] = cfg.to_dict()
    rasters = state.raster if track == next(iter(state.tracks)) else {}
    return Profile(meta, ops, setup, layers, neurons, positions, rasters, census_df, costs, precision)


def run_census(model: nn.Module, state, settings) -> pd.DataFrame:
    """The dispatch-level coverage census on the first tokens of the first document.

    The census lists which aten ops the forward runs and what accounts for them: a function of the
    model's structure, the census tokens and the mode, not of the weights' values. It is remembered per
    model object under a fingerprint of all of these (``_census_key``), so a process that profiles the
    same model again (a benchmark, a notebook) does not pay for a second dispatch-level pass (about 0.1 s
    for the 216M model); any change of module, parameter shape or dtype, tokens or mode runs it again."""
    ids = torch.tensor(state.census_ids, dtype=torch.long) if state.census_ids else None
    if ids is None or ids.numel() == 0:
        return pd.DataFrame(columns=["module", "module_type", "aten_op", "calls", "elements", "status", "kind"])
    key = _census_key(model, ids, settings)
    try:
        memo = _CENSUS_MEMO.setdefault(model, {})
    except TypeError:  # a model that cannot be weakly referenced: no memo
        memo = {}
    if key in memo:
        return memo[key].copy()
    ids = ids.to(next(model.parameters()).device)
    was_training, kernels = model.training, getattr(model, "kernels", None)
    model.eval()
    if kernels is not None:
        model.kernels = "eager"
    try:
        with torch.no_grad():
            df = census(model, lambda: model.run(ids, mode=settings.mode, chunk_len=settings.chunk_len))
    finally:
        model.train(was_training)
        if kernels is not None:
            model.kernels = kernels
    memo.clear()  # one census per model object is enough to remember
    memo[key] = df
    return df.copy()


_CENSUS_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _census_key(model: nn.Module, ids: torch.Tensor, settings) -> tuple:
    """What the census depends on: every module's name, type and forward (a patched one counts), every
    parameter's and buffer's name, shape, dtype and device, the model's kernel choice, the census tokens
    and the mode."""
    modules = tuple((n, type(m), type(m).forward, m.__dict__.get("forward")) for n, m in model.named_modules())
    named = (*model.named_parameters(), *model.named_buffers())
    tensors = tuple((n, tuple(t.shape), t.dtype, t.device) for n, t in named)
    return (modules, tensors, getattr(model, "kernels", None), tuple(ids.reshape(-1).tolist()), tuple(ids.shape),
            settings.mode, settings.chunk_len)  # fmt: skip


def frames(model: nn.Module, tally, static: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ops, layers) frames of one tally (a whole run or one bootstrap unit), per token of that tally."""
    ops = _ops_frame(tally.counts, tally.tokens)
    return ops, _layers_frame(model, tally, static, ops, tally.tokens)


def _ops_frame(counts, n_tokens: int) -> pd.DataFrame:
    rows = [
        {"layer": k[0], "block": block_index(k[0]), "kind": k[1], "stage": k[2], "primitive": k[3], "operand": k[4],
         "count": v, "per_token": v / n_tokens}
        for k, v in counts.items()
    ]  # fmt: skip
    cols = ["layer", "block", "kind", "stage", "primitive", "operand", "count", "per_token"]
    return pd.DataFrame(rows, columns=cols)


def _input_kind(static: dict, name: str) -> str:
    """The cost kind of the module that produced this one's first tensor input (dataflow, seen at run time);
    the module run just before it where no producer was seen (a model input)."""
    producers, kinds, order = static.get("producers") or {}, static["kinds"], static["order"]
    src = (producers.get(name) or [""])[0]
    if src:
        return kinds[src]
    i = order.index(name)
    return kinds[order[i - 1]] if i else ""


def input_chain(static: dict, name: str, depth: int = 4) -> str:
    """Where a module's first input comes from, following the dataflow through data movement and
    token-shift mixes to a module that computes: 'lerp < layernorm' for a projection that reads a token-shift
    mix of a LayerNorm output."""
    producers, kinds = static.get("producers") or {}, static["kinds"]
    chain, src = [], (producers.get(name) or [""])[0]
    while src and len(chain) < depth:
        kind = kinds[src]
        if kind != "free":
            chain.append(kind)
            if kind != "lerp":
                break
        src = (producers.get(src) or [""])[0]
    return " < ".join(chain)


def _layers_frame(model: nn.Module, tally, static: dict, ops: pd.DataFrame, n_tokens: int) -> pd.DataFrame:
    modules = dict(model.named_modules())
    rates = tally.firing_rates()
    order, kinds, types = static["order"], static["kinds"], static["module_types"]
    source = preceding_spike_source(order, kinds)
    by_layer: dict[str, dict[str, float]] = {}
    for (layer, _kind, _stage, prim, _operand), n in tally.counts.items():
        d = by_layer.setdefault(layer, {})
        d[prim] = d.get(prim, 0.0) + n / n_tokens
    rows = []
    for name in order:
        mod = modules[name]
        kind = kinds[name]
        prim = by_layer.get(name, {})
        per_neuron = tally.neurons.get(name)
        steps = tally.steps.get(name, 0)
        out_pt = tally.activation[(name, "out")] / n_tokens
        rule, nan = MODULE_RULES[type(mod)], float("nan")
        ci = rule.classify[-1] if rule.classify else None  # the operand whose values set the cost
        numel = tally.operands.get((name, ci, "numel"), 0)
        seen = bool(tally.operands.get((name, ci, "calls")))
        src = source.get(name)
        relu_n = tally.relu[(name, "numel")]
        own = _own_params(mod)
        rows.append(
            {
                "layer": name,
                "block": block_index(name),
                "module_type": types[name],
                "kind": kind,
                "calls": tally.calls[name],
                "in_features": getattr(mod, "in_features", None),
                "out_features": getattr(mod, "out_features", None),
                "params": own,
                "weight_elems": own,
                "operand_class": operand_class(tally, name, ci) if seen else "-",
                "zero_fraction": 1 - tally.operands[(name, ci, "nnz")] / numel if seen and numel else nan,
                "firing_rate": rates.get(name, nan),
                "dead_fraction": float((per_neuron == 0).mean()) if per_neuron is not None else nan,
                "saturated_fraction": float((per_neuron / steps > SATURATED_RATE).mean())
                if per_neuron is not None and steps else nan,
                "relu_sq_zero_fraction": tally.relu[(name, "zeros")] / relu_n if relu_n else nan,
                "spike_source": src or "",
                "input_from": _input_kind(static, name),
                "input_chain": input_chain(static, name),
                "spike_source_rate": rates.get(src, nan) if src else nan,
                "mac": float(prim.get("mac", 0.0)),
                "effective_mac": float(prim.get("effective_mac", 0.0)),
                "ac": float(prim.get("ac", 0.0)),
                "elementwise": float(sum(v for k, v in prim.items() if k not in ("mac", "effective_mac", "ac"))),
                "synaptic_ops_per_token": float(prim.get("effective_mac", 0.0) + prim.get("ac", 0.0)),
                "in_per_token": tally.activation[(name, "in")] / n_tokens,
                "out_per_token": out_pt,
                "membrane_rw_per_token": rule.membrane_rw * out_pt,
                "state_rw_per_token": rule.state_rw * out_pt,
                "lookup_width": getattr(mod, "embedding_dim", None),
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def _own_params(mod: nn.Module) -> int:
    """``sum(p.numel() for p in mod.parameters(recurse=False))`` without the generator machinery of
    ``named_parameters`` (a parameter registered under two names counted once, as it lists it once)."""
    seen, n = set(), 0
    for p in mod._parameters.values():
        if p is not None and id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n
