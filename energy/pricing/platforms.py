"""What would it cost on real chips? Event-level platform presets, the split of the model's
work into what neuromorphic cores run and what they cannot, capacity, and a GPU reference.

A platform is a data file in the cost-table format (``energy/pricing/data/platforms/NAME.csv``,
read by ``energy.pricing.costs.load_costs``): every number with its source, year, process node and
basis; conflicting figures all kept, one marked ``default``; unpublished ones ``missing``.

Units: pJ per token unless named otherwise; a synaptic event is one spike delivered
through one synapse (one weight read and accumulated).

**Events** (measured by the profile, per token):

- *synaptic events*: every AC (a projection that reads spikes: one per spike per output
  weight) and every spike-driven residual add (a spike delivered through a fixed weight-1
  synapse). In the spike-input counterfactual, each projection that would read spikes gets
  dense MACs x the measured rate of the layer before it, as ``energy.pricing.estimate`` prices it.
- *neuron updates*: one per LIF neuron per step, and one per threshold unit of a binary
  embedding (a neuron without leak).
- *spikes*: neurons x firing rate; each is routed once to the layer that reads it (within
  a tile, plus ``hops_per_spike`` tile hops: placement is not modelled).

**Split.** The model is priced with ``energy.pricing.estimate.account`` (as executed, or the
counterfactual, with SRAM memory traffic Lemaire-style). The rows of the events above are
*native*: they are taken out and priced at the chip's event costs (whose figures include
the chip's own synapse-memory and membrane traffic). Every other row (float MACs, exp,
division, sigmoid, LayerNorm, the WKV recurrence, the head, their memory traffic) is the
*fallback*: the chip's embedded processors where a per-operation energy is published (for
none of the bundled chips), else a digital accelerator at the chip's process node (the
Horowitz table scaled by ``energy.pricing.nodes``), a labelled assumption shown apart.

**Static energy**: the chip's static power x chips needed x the time per step (one step per
token): derived from the workload where the chip's per-event busy times are published
(``step_time_us``), else the published step. Where no static power is published, the whole
chip's power over the step is listed as an upper bound (``left_out``, ``pj_per_token_range``).
A chip with fewer bits per synapse than the deployed int8 weight (TrueNorth) is charged b
synaptic events per b-bit weight event, as its capacity counts b synapses. The fallback runs
at the chip's node and its own supply voltage. **Off-chip**: where the weights need more than one
chip, the single-chip alternative streams the natively mapped layers' int8 weights from
DRAM once per step (amortised over the batch) and is shown beside the multi-chip total.

**GPU reference** (derived upper bound): energy = board power x max(compute time, memory
time) at peak dense throughput and HBM bandwidth; dense MACs (a GPU neither skips zeros nor
exploits spikes), elementwise ops as one FLOP each, weights read once per step.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from energy.pricing.costs import BYTES_PER_VALUE, CostTable, load_costs
from energy.pricing.estimate import MATRIX_KINDS, Accounting, account, counterfactual_inputs
from energy.pricing.memory import SPIKE_CLASSES
from energy.pricing.nodes import MEMORY_RULE, NODES, SB_FAMILY, node_factors, scale_costs, vdd
from spikegpt.errors import SpikeEnergyError

logger = logging.getLogger(__name__)

TITLES = {
    "horowitz": "Digital accelerator (Horowitz 45 nm, node-scaled)",
    "loihi": "Intel Loihi",
    "loihi2": "Intel Loihi 2",
    "truenorth": "IBM TrueNorth",
    "spinnaker": "SpiNNaker",
    "spinnaker2": "SpiNNaker 2",
    "tianjic": "Tianjic",
    "h100": "NVIDIA H100 SXM (derived upper bound)",
}


def _bundled(folder) -> tuple[str, ...]:
    """A bundled chip is one file: any CSV in data/platforms/ is a preset named by its stem (titled if listed)."""
    return tuple(TITLES) + tuple(
        sorted(f.name[:-4] for f in folder.iterdir() if f.name.endswith(".csv") and f.name[:-4] not in TITLES)
    )


PLATFORMS = _bundled(resources.files("energy.pricing") / "data" / "platforms")
EVENTS = ("synaptic_op", "neuron_update", "spike_tile", "spike_hop")
READABLE = {"synaptic_events": "synaptic events", "neuron_updates": "neuron updates",
            "spikes_within_tile": "spike routing", "spike_hops": "spike routing"}  # fmt: skip
NEURON_KINDS = ("lif", "heaviside")
CAPACITY_BITS = {"fp32": 32, "int8": 8}
NATIVE_WEIGHT_BYTES = 1  # weights streamed off-chip to a neuromorphic core: int8
FALLBACK = "digital accelerator at the chip's node (Horowitz 45 nm scaled by Stillmaker & Baas): an assumption"

# Issue 22: every choice of the memory model and the chip presets, listed in summary.json["assumptions"]
CHOICES = (
    ("memory: potential width", "energy/pricing/memory.py",
     "potentials and LIF membranes are stored at the accumulator width "
     "(4 bytes: int32 / fp32), the width their ACs are priced at, at every precision"),
    ("memory: counterfactual weights", "energy/pricing/estimate.py counterfactual_layers",
     "a projection fed two spike vectors "
     "stores W diag(m) and W diag(1 - m): twice its weights, in the SRAM banks and the budget"),
    ("memory: placement of state", "energy/pricing/memory.py placement",
     "one rule for every model: weights, K/V caches and "
     "recurrent state (membranes, WKV sums, token-shift inputs) share the SRAM budget; 'DRAM weights' moves weights "
     "only, state stays where the budget puts it"),
    ("memory: SRAM model", "energy/pricing/costs.py sram_access_pj",
     "horowitz-log (default: per byte, Horowitz's points in "
     "log2 size) or lemaire-linear (Lemaire et al.'s implementation: 1.09e-5 pJ/bit x size + 13.2 pJ per access); "
     "the chips section shows both"),
    ("truenorth: weight events", "energy/pricing/platforms.py events_per_weight_event",
     "a b-bit weight is b binary synapses "
     "(capacity), so one weight event is b synaptic events (int8: 8)"),
    ("truenorth: static", "energy/pricing/data/platforms/truenorth.csv",
     "no verified split of the 65 mW into static and "
     "dynamic: the default prices the all-in 26 pJ only; the range adds 65 mW over the 1 ms tick"),
    ("spinnaker2: default pair", "energy/pricing/data/platforms/spinnaker2.csv",
     "450 pJ per synaptic event and 2.19 nJ per "
     "neuron update, both from the 28 nm test chip (Hoppner 2019); the 22 nm chip's 10 pJ is the range's low end"),
    ("spinnaker: outlier", "energy/pricing/data/platforms/spinnaker.csv",
     "45 pJ (a survey's transcription, ~1000x below "
     "every other figure) is kept visible and out of the range"),
    ("loihi: time step", "energy/pricing/platforms.py step_time_us",
     "derived from the workload: (synaptic events x 3.8 ns + "
     "neuron updates x 9.7 ns) / cores + 0.6 us barrier (SANA-FE's silicon-fitted times); the range runs to the 1 ms "
     "real-time step"),
    ("chips: supply voltage", "energy/pricing/nodes.py chip_logic_factor",
     "each chip's fallback is scaled from Horowitz's "
     "45 nm at 0.9 V to the chip's node at its own supply (Loihi 0.75, TrueNorth 0.775, SpiNNaker 1.2, Tianjic "
     "0.9 V; SpiNNaker 2: not stated, 0.8 V)"),
    ("nodes: device family", "energy/pricing/data/node_scaling.csv sb_hp_*", "Stillmaker & Baas 2017 Table 5, one "
     "family at every node: HP (high performance) from 45 to 7 nm, the paper's single bulk fit at 130-65 nm; the LP "
     "rows (the 45 and 32 nm rows used before, mixed with HP below) are kept in the data file, unused"),
    ("chips: static upper bounds", "energy/pricing/platforms.py price_neuromorphic",
     "where no static power is published "
     "(SpiNNaker, Tianjic), the whole chip's power over the step is listed as an upper bound and in the range, not "
     "in the default sum; SpiNNaker 2 has no bound"),
)  # fmt: skip


# ---------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    name: str
    title: str
    kind: str  # "digital" (the Horowitz table), "neuromorphic" or "gpu"
    table: CostTable | None = field(default=None, repr=False)

    @functools.cached_property
    def _defaults(self) -> dict[tuple[str, str], dict]:
        """(op, dtype) -> the first default row of the file (read once: pricing asks hundreds of times)."""
        if self.table is None:
            return {}
        df = self.table.df
        out: dict[tuple[str, str], dict] = {}
        for r in df[df["default"].astype(str).str.lower() != "no"].to_dict("records"):
            out.setdefault((r["op"], r["dtype"]), r)
        return out

    def row(self, op: str, dtype: str = "-") -> dict | None:
        """The default row for ``op`` (None if the file has none)."""
        r = self._defaults.get((op, dtype))
        return dict(r) if r is not None else None

    def value(self, op: str, dtype: str = "-") -> float | None:
        """The default figure for ``op``; None where it is missing (unpublished) or absent."""
        r = self.row(op, dtype)
        if r is None:
            return None
        v = float(r["pj"]) if str(r["pj"]).strip() != "" else math.nan
        return v if math.isfinite(v) else None

    @functools.cached_property
    def _figures(self) -> dict[str, tuple[list[float], list[float]]]:
        """op -> (every figure, every figure but outliers), as numbers, in the file's order (read once: the
        ranges and step times are asked for every workload)."""
        out: dict[str, tuple[list[float], list[float]]] = {}
        if self.table is None:
            return out
        df = self.table.df
        for op in dict.fromkeys(df.op.tolist()):
            rows = self.table.rows(op)
            every = pd.to_numeric(rows.pj, errors="coerce").dropna()
            kept = pd.to_numeric(rows.pj[rows.status != "outlier"], errors="coerce").dropna()
            out[op] = ([float(x) for x in every], [float(x) for x in kept])
        return out

    def published(self, op: str) -> list[float]:
        """Every figure for ``op`` that is a number (defaults, alternatives and outliers), in the file's order."""
        return list(self._figures.get(op, ([], []))[0])

    def figure_range(self, op: str) -> tuple[float, float] | None:
        """(min, max) over every published figure for ``op`` (defaults and alternatives)."""
        if self.table is None:
            return None
        v = self._figures.get(op, ([], []))[1]
        return (min(v), max(v)) if v else None

    @property
    def node_nm(self) -> float | None:
        return self.value("process_node")


def _data_dir():
    return resources.files("energy.pricing") / "data" / "platforms"


def _kind(table: CostTable) -> str:
    ops = set(table.df.op)
    if {"power", "tensor_peak"} <= ops:
        return "gpu"
    if "synaptic_op" in ops:
        return "neuromorphic"
    raise SpikeEnergyError(
        f"platform file {table.path}: neither event costs (a synaptic_op row) nor a GPU preset (power and "
        "tensor_peak rows); see energy/pricing/data/platforms/ for the format"
    )


@functools.cache
def _load_bundled(name: str) -> Platform:
    with resources.as_file(_data_dir() / f"{name}.csv") as p:
        table = load_costs(p, complete=False)
    table = CostTable(table.df, f"energy/pricing/data/platforms/{name}.csv")
    return Platform(name, TITLES.get(name, name), _kind(table), table)


def load_platform(name: str) -> Platform:
    """A bundled preset by name, ``horowitz`` (the cost table itself), or a platform CSV file."""
    if name == "horowitz":
        return Platform("horowitz", TITLES["horowitz"], "digital")
    if name in PLATFORMS:
        return _load_bundled(name)
    p = Path(name)
    if p.suffix.lower() == ".csv" and p.is_file():
        table = load_costs(p, complete=False)
        plat = Platform(p.stem, p.stem, _kind(table), table)
        if plat.kind == "neuromorphic" and plat.node_nm is None:
            raise SpikeEnergyError(f"platform file {p}: needs a process_node row (nm) to price the fallback")
        return plat
    raise SpikeEnergyError(
        f"--platform {name!r}: unknown; choose from {', '.join(PLATFORMS)}, all, none, or a platform CSV file"
    )


def resolve_platforms(names: Sequence[str] | None) -> tuple[str, ...]:
    """Expand ``all`` / ``none`` and check every name (raises before anything runs)."""
    out: list[str] = []
    for n in names or ("all",):
        n = str(n).strip()
        if n.lower() == "all":
            out += PLATFORMS
        elif n.lower() == "none":
            continue
        else:
            load_platform(n)
            out.append(n)
    return tuple(dict.fromkeys(out))


def resolve_nodes(nodes: Sequence | None) -> tuple[int, ...]:
    out: list[int] = []
    for n in nodes or ("all",):
        if str(n).strip().lower() == "all":
            out += NODES
            continue
        try:
            v = int(str(n).strip().removesuffix("nm"))
        except ValueError:
            v = None
        if v not in NODES:
            raise SpikeEnergyError(f"--node {n!r}: choose one of {', '.join(map(str, NODES))} (nm) or all")
        out.append(v)
    return tuple(dict.fromkeys(out))


# ---------------------------------------------------------------------------------
# Workloads, events and the split
# ---------------------------------------------------------------------------------


@dataclass
class Workload:
    """One model's measured work, priced on every platform."""

    name: str
    label: str
    ops: pd.DataFrame
    layers: pd.DataFrame
    params: int
    spiking: bool = True
    projections: str = "executed"  # or "counterfactual"
    chars_per_token: float | None = None
    chars_note: str = ""


def _lif_layers(layers: pd.DataFrame) -> set:
    return set(layers.layer[layers.kind.isin(NEURON_KINDS)])


def _fed(w: Workload) -> pd.Series:
    """layer -> spike events per dense MAC of the projections that read spikes in the counterfactual
    (rate x spike vectors, see ``energy.pricing.estimate.counterfactual_inputs``)."""
    if w.projections != "counterfactual":
        return pd.Series(dtype=float)
    cf = counterfactual_inputs(w.layers).set_index("layer")
    return (cf.rate * cf.vectors)[cf.fed]


def _spike_residual_layers(layers: pd.DataFrame) -> set:
    lay = layers[(layers.kind == "spike_add") & layers.operand_class.isin(SPIKE_CLASSES)]
    return set(lay.layer)


def events(w: Workload) -> dict:
    """Synaptic events, neuron updates and spikes per token (see the module docstring)."""
    ops, lay = w.ops, w.layers
    fed = _fed(w)
    ac = ops[(ops.primitive == "ac") & ~ops.layer.isin(fed.index)].per_token.sum()
    dense = ops[ops.kind.isin(MATRIX_KINDS) & (ops.primitive == "mac") & ops.layer.isin(fed.index)]
    cf = float((dense.groupby("layer").per_token.sum() * fed.reindex(dense.layer.unique())).sum()) if len(fed) else 0.0
    spike_add = ops[ops.layer.isin(_spike_residual_layers(lay)) & (ops.primitive == "add")].per_token.sum()
    neurons = lay[lay.kind.isin(NEURON_KINDS)]
    rates = pd.to_numeric(neurons.firing_rate, errors="coerce").fillna(0.0)
    proj = set(ops.layer[ops.primitive == "ac"]) | set(fed.index)
    return {
        "synaptic_events": float(ac + cf + spike_add),
        "synaptic_events_projections": float(ac + cf),
        "synaptic_events_residual": float(spike_add),
        "neuron_updates": float(neurons.out_per_token.sum()),
        "spikes": float((rates * neurons.out_per_token).sum()),
        "native_projection_layers": sorted(proj),
    }


@dataclass(frozen=True)
class Split:
    """What ``split_rows`` needs of a workload besides the priced rows, the same on every chip and node (issue 24:
    ``evaluate`` prices each workload about 20 times; these were worked out again each time): ``events(w)``, the
    LIF (and threshold) layers, the spike-driven residual adds and the projections a core runs."""

    events: dict
    neurons: frozenset
    residual: frozenset
    projections: frozenset


NO_EVENTS = {"synaptic_events": 0.0, "neuron_updates": 0.0, "spikes": 0.0, "native_projection_layers": []}


def split_of(w: Workload, ev: dict | None = None) -> Split:
    """``Split`` of ``w`` (``ev``: ``events(w)``, if at hand); a non-spiking workload runs nothing natively."""
    if not w.spiking:
        return Split(dict(NO_EVENTS), frozenset(), frozenset(), frozenset())
    ev = ev or events(w)
    return Split(ev, frozenset(_lif_layers(w.layers)), frozenset(_spike_residual_layers(w.layers)),
                 frozenset(ev["native_projection_layers"]))  # fmt: skip


_ON_CORE = ("weights", "inputs", "potentials", "addressing")


def split_rows(
    w: Workload, costs: CostTable, precision: str, batch: int, ev: dict | None = None, split: Split | None = None
) -> pd.DataFrame:
    """``account`` rows (SRAM memory included) with a ``native`` column: True for the rows that
    a neuromorphic core runs (synaptic events, neuron updates and their own memory traffic).
    ``ev``: ``events(w)``, if at hand; ``split``: ``split_of(w)``, if at hand."""
    acc = Accounting(projections=w.projections, memory="sram")
    rows = account(w.ops, w.layers, costs, precision, acc, spiking=w.spiking, batch=batch)
    sp = split if split is not None else split_of(w, ev)
    # a synaptic event on a core reads its weight, finds its target and updates the target's potential; the
    # input spike reaches it through the core's router: those memory terms are inside the event costs
    native = [
        layer in sp.neurons  # neuron updates, membranes and output spikes
        or (layer in sp.residual and not memory)
        or (layer in sp.projections and (prim == "ac" or (memory and any(k in stage for k in _ON_CORE))))
        for layer, stage, prim in zip(rows.layer.tolist(), map(str, rows.stage.tolist()), rows.primitive.tolist())
        for memory in (stage.startswith("memory."),)
    ]
    return rows.assign(native=np.array(native, dtype=bool))


# ---------------------------------------------------------------------------------
# Capacity
# ---------------------------------------------------------------------------------


def capacity(p: Platform, n_weights: int, n_neurons: int, bits: int) -> dict:
    """Cores and chips to hold ``n_weights`` weights of ``bits`` bits (and the LIF neurons):
    perfect packing, weight bits only, so a lower bound on any real mapping."""
    out = {"weights": int(n_weights), "bits": bits, "weight_bytes": n_weights * bits / 8, "cores": None,
           "chips": None, "bound": None, "fits_one_chip": None, "native_precision": None, "note": ""}  # fmt: skip
    max_bits = p.value("max_weight_bits")
    if max_bits is not None:
        out["native_precision"] = bits <= max_bits
    mem_core, per_chip = p.value("synaptic_memory_per_core"), p.value("cores_per_chip")
    if mem_core and per_chip:
        by_mem = math.ceil(n_weights * bits / (mem_core * 8))
        npc = p.value("neurons_per_core")
        by_neurons = math.ceil(n_neurons / npc) if npc else 0
        out["cores"] = max(by_mem, by_neurons)
        out["bound"] = "synaptic memory" if by_mem >= by_neurons else "neurons"
        out["chips"] = math.ceil(out["cores"] / per_chip)
    elif p.value("synaptic_memory_per_chip"):
        out["chips"] = math.ceil(n_weights * bits / (p.value("synaptic_memory_per_chip") * 8))
        out["bound"] = "synaptic memory per chip"
    elif p.value("synapses_per_chip"):
        out["chips"] = math.ceil(n_weights / p.value("synapses_per_chip"))
        out["bound"] = "synapses per chip"
        out["note"] = "one weight per synapse: the weight precision behind the synapse count is not published"
    elif p.value("hbm_capacity"):
        out["chips"] = math.ceil(n_weights * bits / 8 / (p.value("hbm_capacity") * 1e9))
        out["bound"] = "HBM capacity"
    else:
        out["note"] = "no published memory capacity"
        return out
    out["fits_one_chip"] = out["chips"] <= 1
    if out["native_precision"] is False:
        out["note"] = f"{bits}-bit weights exceed the chip's {max_bits:g}-bit synapses"
    return out


# ---------------------------------------------------------------------------------
# Pricing
# ---------------------------------------------------------------------------------


def _per_char(pj: float | None, w: Workload) -> float | None:
    return pj / w.chars_per_token if pj is not None and w.chars_per_token else None


_SCALED: dict[tuple, tuple[CostTable, CostTable]] = {}


def _scaled(costs: CostTable, node: float, supply_v: float | None = None) -> CostTable:
    """``scale_costs(costs, node)``, built once per table and node (every workload on a platform is priced at
    its node): kept by the table's identity, with the table itself, so that a new table is never confused
    with a collected one."""
    key = (id(costs), node, supply_v)
    hit = _SCALED.get(key)
    if hit is None or hit[0] is not costs:
        if len(_SCALED) >= 64:
            _SCALED.clear()
        hit = _SCALED[key] = (costs, scale_costs(costs, node, supply_v))
    return hit[1]


def price_digital(
    w: Workload, costs: CostTable, precision: str, batch: int, node: int, split: Split | None = None
) -> dict:
    """Everything on a digital accelerator: the Horowitz table at ``node`` nm, SRAM traffic included (``split``:
    ``split_of(w)``, if at hand)."""
    rows = split_rows(w, _scaled(costs, node), precision, batch, split=split)
    total = float(rows.pj.sum())
    return {"pj_per_token": total, "fallback_pj": total, "native_pj": 0.0, "native_fraction": None,
            "static_pj": None, "node_nm": node, "fallback_by_stage": _by_kind(rows), "native_by_event": {},
            "left_out": ["static power (no time base for a digital accelerator)"]}  # fmt: skip


def events_per_weight_event(p: Platform, bits: int = 8 * NATIVE_WEIGHT_BYTES) -> int:
    """Synaptic events one weight event costs on ``p``: a chip whose synapses hold fewer bits than the deployed
    weight (TrueNorth: 1) stores a b-bit weight as b binary synapses (as ``capacity`` counts them), so one
    weight event is b synaptic events; 1 where a weight fits one synapse."""
    max_bits = p.value("max_weight_bits")
    return math.ceil(bits / max_bits) if max_bits and max_bits < bits else 1


def step_time_us(p: Platform, synaptic_events: float, neuron_updates: float, cores: int | None) -> dict:
    """The time step of one token on ``p``: derived from this workload where the chip's per-event busy times
    are published (busy time of a core = its share of the synaptic events x time per event + of the neuron
    updates x time per update, work spread evenly over the cores the model needs, a lower bound), plus the
    end-of-step synchronisation (the floor); else the published step_time. Also every published step time,
    for the range (the 1 ms real-time convention among them)."""
    t_syn, t_upd, t_sync = p.value("time_synaptic_op"), p.value("time_neuron_update"), p.value("sync_time")
    published = p.published("step_time")
    if None not in (t_syn, t_upd, t_sync) and cores:
        busy_ns = (synaptic_events * t_syn + neuron_updates * t_upd) / cores
        return {"us": busy_ns * 1e-3 + t_sync, "basis": "derived from this workload", "busy_us": busy_ns * 1e-3,
                "sync_us": t_sync, "cores": cores, "published_us": published}  # fmt: skip
    t = p.value("step_time")
    return {"us": t, "basis": "published" if t is not None else "not published", "published_us": published}


def price_neuromorphic(
    p: Platform,
    w: Workload,
    costs: CostTable,
    precision: str,
    batch: int,
    chips: int | None,
    cores: int | None = None,
    split: Split | None = None,
) -> dict:
    """Native events at the chip's costs + the fallback at the chip's node and supply + static energy; and the
    range every published figure spans (``pj_per_token_range``). ``split``: ``split_of(w)``, if at hand."""
    if p.value("synaptic_op") is None:
        missing = [e for e in EVENTS if p.row(e) is not None and p.value(e) is None]
        return {"pj_per_token": None, "not_priced": f"no published per-event energy ({', '.join(missing)})"}
    node = p.node_nm
    split = split if split is not None else split_of(w)
    ev = split.events
    hops = p.value("hops_per_spike") or 0.0
    per_weight = events_per_weight_event(p)
    terms = {
        "synaptic_events": (ev["synaptic_events"] * per_weight, p.value("synaptic_op")),
        "neuron_updates": (ev["neuron_updates"], p.value("neuron_update")),
        "spikes_within_tile": (ev["spikes"], p.value("spike_tile")),
        "spike_hops": (ev["spikes"] * hops, p.value("spike_hop")),
    }
    native = {k: n * e for k, (n, e) in terms.items() if e is not None}
    unpriced = list(dict.fromkeys(READABLE[k] for k, (n, e) in terms.items() if e is None and n > 0))
    supply = p.value("supply_voltage")
    scaled = _scaled(costs, node, supply)
    rows = split_rows(w, scaled, precision, batch, split=split)
    fallback = float(rows.pj[~rows.native].sum())
    native_pj = float(sum(native.values()))
    step = step_time_us(p, terms["synaptic_events"][0], ev["neuron_updates"], cores)
    p_static, t_step = p.value("static_power_chip"), step["us"]
    deployed = native_pj > 0  # a chip that runs nothing is not deployed: no static energy
    static = p_static * 1e-3 * t_step * 1e-6 * chips * 1e12 if None not in (p_static, t_step, chips) else None
    static = static if deployed or static is None else 0.0
    dynamic = native_pj + fallback
    offchip = 0.0
    if chips is not None and chips > 1:
        layers = w.layers.set_index("layer")
        proj = ev["native_projection_layers"]
        wb = float(layers.weight_elems.reindex(proj).fillna(0).sum()) * NATIVE_WEIGHT_BYTES
        offchip = wb * scaled.dram_pj_per_byte() / batch
    # the range: every published synaptic-op figure (outliers out); static at every published step time, or, where
    # no static power is published (or it is inside an all-in figure), the whole chip's power over the step as an
    # upper bound on it
    left_out = []
    syn_lo, syn_hi = p.figure_range("synaptic_op") or (p.value("synaptic_op"),) * 2
    n_syn = terms["synaptic_events"][0]
    steps = [t for t in [t_step, *step["published_us"]] if t is not None]
    chip_power = p.value("chip_power")
    static_hi = None
    if deployed and chips:
        if p_static:
            static_hi = p_static * 1e-3 * max(steps) * 1e-6 * chips * 1e12
        elif chip_power is not None and steps:
            static_hi = chip_power * 1e-3 * max(steps) * 1e-6 * chips * 1e12
            left_out.append(f"static power (upper bound {static_hi:.4g} pJ per token: chip_power {chip_power:g} mW "
                            "over "
                            f"{max(steps):g} us x {chips} chip{'s' if chips != 1 else ''})")  # fmt: skip
        elif not p_static and p_static != 0:
            left_out.append("static power (no published figure, no upper bound)")
    static_lo = static if static is not None else 0.0
    if p_static and deployed and chips and steps:
        static_lo = p_static * 1e-3 * min(steps) * 1e-6 * chips * 1e12
    rng = (
        dynamic + n_syn * (syn_lo - p.value("synaptic_op")) + static_lo,
        dynamic + n_syn * (syn_hi - p.value("synaptic_op")) + (static_hi if static_hi is not None else static or 0.0),
    )
    left_out += [f"{u} (unpublished)" for u in unpriced]
    return {
        "pj_per_token": dynamic + (static or 0.0),
        "pj_per_token_range": [min(rng), max(rng)],
        "native_pj": native_pj,
        "native_by_event": native,
        "fallback_pj": fallback,
        "fallback_replaced_pj": float(rows.pj[rows.native].sum()),  # what the native work costs on the fallback
        "fallback_by_stage": _by_kind(rows[~rows.native]),
        "native_fraction": native_pj / dynamic if dynamic else None,
        "static_pj": static,
        "static_upper_pj": static_hi,
        "step_time": step,
        "static_note": "included"
        if p_static == 0 and str((p.row("static_power_chip") or {}).get("basis", "")).startswith("included")
        else ("chip idle" if static == 0 and not deployed else None),
        "offchip_weights_pj": offchip,
        "single_chip_pj_per_token": None
        if chips is None
        else dynamic + offchip + (p_static * 1e-3 * t_step * 1e-6 * 1e12 if None not in (p_static, t_step) else 0.0),
        "events_per_token": {k: n for k, (n, _) in terms.items()},
        "synaptic_events_per_weight_event": per_weight,
        "supply_v": supply,
        "unpriced": unpriced,
        "left_out": left_out,
        "node_nm": node,
    }


def _by_kind(rows: pd.DataFrame) -> dict:
    """pJ per token by what the rows are: memory (weights, potentials, state...), synaptic ACs, MACs, the rest."""
    kind = [s if s.startswith("memory.") else f"compute: {p}"
            for s, p in zip(map(str, rows.stage.tolist()), map(str, rows.primitive.tolist()))]  # fmt: skip
    return {k: float(v) for k, v in rows.pj.groupby(np.array(kind, dtype=object)).sum().items()}


def price_gpu(p: Platform, w: Workload, precision: str, batch: int) -> dict:
    """Roofline energy at board power: P x max(FLOPs / peak, bytes / bandwidth), an upper bound."""
    ops, lay = w.ops, w.layers
    peak = p.value("tensor_peak", precision) * 1e12
    vec = p.value("vector_peak") * 1e12
    macs = float(ops[ops.kind.isin(MATRIX_KINDS) & (ops.primitive == "mac")].per_token.sum())
    spike_add = lay.kind == "spike_add"
    elem = ops[~ops.primitive.isin(["mac", "effective_mac", "ac", "lookup"]) & ~ops.layer.isin(lay.layer[spike_add])]
    n_elem = float(elem.per_token.sum()) + float(lay.out_per_token[spike_add].sum())  # dense adds on a GPU
    b = BYTES_PER_VALUE[precision]
    params = lay.params.fillna(0) > 0
    matrix = lay.kind.isin(MATRIX_KINDS)
    weights = float(lay.weight_elems[matrix & params].sum()) / batch  # read once per step, shared by the batch
    kv = float(lay.weight_elems[matrix & ~params].sum())  # a transformer's K/V cache, per sequence
    emb = float(lay.out_per_token[lay.kind == "embedding"].sum())
    state = float(lay.membrane_rw_per_token.sum() + lay.state_rw_per_token.sum())
    nbytes = (weights + kv + emb + state) * b
    t_compute = 2 * macs / peak + n_elem / vec
    t_memory = nbytes / (p.value("hbm_bandwidth") * 1e12)
    watts = p.value("power")
    return {
        "pj_per_token": watts * max(t_compute, t_memory) * 1e12,
        "native_fraction": None,
        "flops_per_token": 2 * macs + n_elem,
        "bytes_per_token": nbytes,
        "t_compute_s": t_compute,
        "t_memory_s": t_memory,
        "bound": "memory" if t_memory > t_compute else "compute",
        "node_nm": p.node_nm,
        "static_pj": None,
    }


# ---------------------------------------------------------------------------------
# The report section
# ---------------------------------------------------------------------------------


@functools.cache
def config_216m() -> tuple[int, int]:
    """(parameters, LIF neurons) of the 216M configuration (built uninitialised: its untouched weights are not
    resident)."""
    from spikegpt.checkpoint import build_uninitialised
    from spikegpt.config import preset

    cfg = preset("216m")
    model = build_uninitialised(cfg)
    n = sum(p.numel() for p in model.parameters())
    return n, 2 * cfg.n_layer * cfg.n_embd  # two LIF layers of n_embd neurons per block (Block.lif1, lif2)


def _preset_rows(p: Platform) -> list[dict]:
    if p.table is None:
        return []
    cols = ["op", "dtype", "pj", "unit", "status", "basis", "default", "year", "node_nm", "source", "table", "note"]
    df = p.table.df[cols].rename(columns={"pj": "value"})
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
            for r in df.to_dict("records")]  # fmt: skip


def _ranges(p: Platform) -> dict:
    out = {}
    for op in ("synaptic_op", "neuron_update", "spike_hop", "step_time"):
        r = p.figure_range(op)
        if r is not None:
            out[op] = {"min": r[0], "max": r[1], "default": p.value(op)}
    return out


def evaluate(
    workloads: Sequence[Workload],
    costs: CostTable,
    precision: str,
    batch: int,
    platforms: Sequence[str],
    nodes: Sequence[int] = NODES,
    neurons: int = 0,
) -> dict:
    """The ``platforms`` section of summary.json (plain data)."""
    names = resolve_platforms(platforms)
    nodes = resolve_nodes(nodes)
    plats = {n: load_platform(n) for n in names}
    n216, neurons216 = config_216m()
    spikegpt = next((w for w in workloads if w.name == "spikegpt"), workloads[0] if workloads else None)
    models = {"profiled": (spikegpt.params if spikegpt else 0, neurons), "216m": (n216, neurons216)}
    cap = []
    for name, p in plats.items():
        if p.kind == "digital":
            continue
        for model, (nw, nn) in models.items():
            for prec, bits in CAPACITY_BITS.items():
                cap.append({"platform": name, "model": model, "precision": prec, **capacity(p, nw, nn, bits)})
    deploy = {r["platform"]: r["chips"] for r in cap if r["model"] == "profiled" and r["precision"] == "int8"}
    deploy_cores = {r["platform"]: r["cores"] for r in cap if r["model"] == "profiled" and r["precision"] == "int8"}
    results = []
    splits = {id(w): split_of(w) for w in workloads}  # the same on every chip and node
    for name, p in plats.items():
        for w in workloads:
            base = {"platform": name, "workload": w.name}
            if p.kind == "digital":
                for node in nodes:
                    r = price_digital(w, costs, precision, batch, node, splits[id(w)])
                    results.append({**base, **r, "pj_per_char": _per_char(r["pj_per_token"], w)})
                continue
            if p.kind == "gpu":
                r = price_gpu(p, w, precision, batch)
            else:
                r = price_neuromorphic(p, w, costs, precision, batch, deploy.get(name), deploy_cores.get(name),
                                       splits[id(w)])  # fmt: skip
            results.append({**base, **r, "pj_per_char": _per_char(r.get("pj_per_token"), w)})
    memory_models = _other_memory_model(workloads, costs, precision, batch, plats, nodes, deploy, deploy_cores, results,
                                        splits)  # fmt: skip
    presets = {}
    for name, p in plats.items():
        presets[name] = {
            "title": p.title,
            "kind": p.kind,
            "node_nm": p.node_nm,
            "path": p.table.path if p.table is not None else costs.path,
            "fallback": FALLBACK if p.kind == "neuromorphic" else None,
            "ranges": _ranges(p),
            "table": _preset_rows(p),
        }
    node_set = sorted({*nodes, *(p.node_nm for p in plats.values() if p.kind == "neuromorphic" and p.node_nm)})
    return {
        "precision": precision,
        "batch": batch,
        "nodes": list(nodes),
        "workloads": {
            w.name: {
                "label": w.label,
                "chars_per_token": w.chars_per_token,
                "chars_note": w.chars_note,
                "params": w.params,
            }
            for w in workloads
        },  # fmt: skip
        "presets": presets,
        "results": results,
        "capacity": cap,
        "node_factors": [node_factors(n).to_dict() for n in node_set if n >= 5],
        "node_basis": {
            "logic": f"Stillmaker & Baas 2017 Table 5 energy fits, {SB_FAMILY} family at every node "
            f"(a*Vdd^2 + b*Vdd + c per node; the single bulk fit at 130-65 nm) at a fixed {vdd():g} V, linear in nm "
            "between tabulated nodes; below 7 nm x 0.70 (TSMC: N5 about 30% less power than N7 at the same speed); "
            "at 7 nm Jouppi et al. 2021 imply 0.30-0.35x (range)",
            "sram": "Jouppi et al. 2021 Table 2 at 7 nm against Horowitz 2014 at 45 nm (published; the page is not "
            "verified here: the 7 nm values are as two public notes quote them, the primary PDF was not read); "
            "other nodes: " + MEMORY_RULE,
            "dram": "1.0: the same DDR3/4 1.3-2.6 nJ per 64-bit read is published at 45 nm and at 7 nm",
        },
        "notes": notes(results, plats, {w.name: w.label for w in workloads}, cap),
        "memory_models": memory_models,
        "counterfactual_notes": counterfactual_notes(results, plats),
        "ranking": ranking(results, "spikegpt"),
    }


def _other_memory_model(workloads, costs, precision, batch, plats, nodes, deploy, deploy_cores, results,
                        splits=None) -> dict:  # fmt: skip
    """SpikeGPT's pJ per token on every platform under the other SRAM memory model, beside the selected one
    (``splits``: id(workload) -> ``split_of`` it, if at hand)."""
    from energy.pricing.costs import MEMORY_MODEL_LABELS, MEMORY_MODELS

    other = next(m for m in MEMORY_MODELS if m != costs.memory_model)
    alt = dataclasses.replace(costs, memory_model=other)
    rows = []
    for w in workloads:
        if not w.name.startswith("spikegpt"):
            continue
        sp = (splits or {}).get(id(w)) or split_of(w)
        for name, p in plats.items():
            if p.kind == "digital":
                got = [(n, price_digital(w, alt, precision, batch, n, sp)) for n in nodes]
            elif p.kind == "neuromorphic":
                got = [
                    (
                        p.node_nm,
                        price_neuromorphic(p, w, alt, precision, batch, deploy.get(name), deploy_cores.get(name), sp),
                    )
                ]
            else:
                continue
            for node, r in got:
                mine = next((x for x in results if x["platform"] == name and x["workload"] == w.name
                             and x.get("node_nm") == node), None)  # fmt: skip
                a, b = (mine or {}).get("pj_per_token"), r.get("pj_per_token")
                rows.append({"platform": name, "workload": w.name, "node_nm": node, costs.memory_model: a, other: b,
                             "change": (b / a - 1) if a and b else None})  # fmt: skip
    changes = [r["change"] for r in rows if r["change"] is not None]
    return {"selected": costs.memory_model, "other": other, "labels": MEMORY_MODEL_LABELS, "rows": rows,
            "change_range": [min(changes), max(changes)] if changes else None}  # fmt: skip


def counterfactual_notes(results: list[dict], plats: Mapping[str, Platform]) -> list[str]:
    """Where the spike-input counterfactual costs more than SpikeGPT as executed, one sentence generated from the
    difference of the two, term by term (native events and the fallback's stages), largest first."""
    out = []
    for name, p in plats.items():
        by: dict = {}
        for r in results:
            if r["platform"] == name and r.get("pj_per_token") is not None:
                by.setdefault(r.get("node_nm"), {})[r["workload"]] = r
        for node, pair in by.items():
            ex, cf = pair.get("spikegpt"), pair.get("spikegpt-counterfactual")
            if ex is None or cf is None or cf["pj_per_token"] <= ex["pj_per_token"]:
                continue
            terms: dict[str, float] = {}
            for src in ("native_by_event", "fallback_by_stage"):
                for k in set(ex.get(src) or {}) | set(cf.get(src) or {}):
                    label = READABLE.get(k, k) + (" (on the chip)" if src == "native_by_event" else "")
                    terms[label] = (
                        terms.get(label, 0.0) + (cf.get(src) or {}).get(k, 0.0) - (ex.get(src) or {}).get(k, 0.0)
                    )
            diff = cf["pj_per_token"] - ex["pj_per_token"]
            top = sorted(terms.items(), key=lambda kv: -abs(kv[1]))[:3]
            where = p.title if p.kind != "digital" else f"{p.title} at {node:g} nm"
            out.append(f"{where}: the spike-input counterfactual costs {diff / 1e3:+,.1f} nJ per token more than as "
                       f"executed ({cf['pj_per_token'] / 1e3:,.1f} against {ex['pj_per_token'] / 1e3:,.1f}); the "
                       "largest changes: " + ", ".join(f"{k} {v / 1e3:+,.1f} nJ" for k, v in top) + ".")  # fmt: skip
    return out


def ranking(results: list[dict], workload: str) -> list[dict]:
    """Platforms by pJ per token for ``workload``, each with what its figures leave out beside its rank; ``covers``:
    every event of the workload is priced (static power may still be left out, and says so)."""
    rows = [r for r in results if r["workload"] == workload and r.get("pj_per_token")]
    rows.sort(key=lambda r: r["pj_per_token"])
    return [{"rank": i + 1, "platform": r["platform"], "node_nm": r.get("node_nm"), "pj_per_token": r["pj_per_token"],
             "left_out": r.get("left_out") or [], "covers": not r.get("unpriced")}
            for i, r in enumerate(rows)]  # fmt: skip


def notes(results: list[dict], plats: Mapping[str, Platform], labels: Mapping[str, str], cap: list[dict]) -> list[str]:
    """One sentence per neuromorphic platform, generated from the numbers (never hand-written causes)."""
    out = []
    for name, p in plats.items():
        if p.kind != "neuromorphic":
            continue
        by = {r["workload"]: r for r in results if r["platform"] == name}
        ex, cf = by.get("spikegpt"), by.get("spikegpt-counterfactual")
        if ex is None:
            continue
        if ex.get("pj_per_token") is None:
            out.append(f"{p.title}: not priced: {ex.get('not_priced')}.")
            continue
        line = f"{p.title}: {ex['native_fraction']:.1%} of SpikeGPT's dynamic energy as executed runs on the "
        line += "neuromorphic cores"
        if cf is not None and cf.get("native_fraction") is not None:
            line += f", {cf['native_fraction']:.1%} in the spike-input counterfactual"
        line += f"; the rest runs on the fallback at {ex['node_nm']:g} nm."
        if ex["unpriced"]:
            line += f" Not priced (unpublished): {', '.join(ex['unpriced'])}."
        out.append(line)
    c216 = [c for c in cap if c["model"] == "216m" and c["precision"] == "int8" and c["chips"] is not None]
    if c216:
        chips = [f"{c['chips']} {c['platform']} chip{'s' if c['chips'] != 1 else ''}" for c in c216]
        out.append("The 216M configuration's int8 weights need " + ", ".join(chips) + ".")
    return out


def section(result, baseline_summaries: Mapping[str, Mapping] | None = None) -> dict | None:
    """The ``platforms`` section for a ``pipeline.Result`` (None when ``--platform none``).

    Characters per token: scored characters / tokens for SpikeGPT and its twin (same text,
    same tokenizer); for the same-size transformer its own figure where the baselines report
    one (``chars_per_token``), else SpikeGPT's (same vocabulary), and the note says so."""
    job, prof = result.job, result.profile
    if not resolve_platforms(job.platforms):
        return None
    base = baseline_summaries or {}
    cpt = result.scored_chars / prof.tokens if prof.tokens else None
    own = "scored characters / scored tokens of this run"
    ws = [
        Workload("spikegpt", "SpikeGPT as executed", prof.ops, prof.layers, prof.meta["params"],
                 chars_per_token=cpt, chars_note=own),
        Workload("spikegpt-counterfactual", "SpikeGPT, spike-input counterfactual", prof.ops, prof.layers,
                 prof.meta["params"], projections="counterfactual", chars_per_token=cpt, chars_note=own),
    ]  # fmt: skip
    labels = {"rwkv-twin": "RWKV-4 twin (no LIF)", "transformer-same-dims": "transformer of the same size"}
    for name, label in labels.items():
        b = result.baselines.get(name)
        if b is None:
            continue
        theirs = (base.get(name) or {}).get("chars_per_token")
        note = own if name == "rwkv-twin" else (
            "the baseline's own tokenizer" if theirs else "SpikeGPT's characters per token (same vocabulary; "
            "the baseline reports none of its own)")  # fmt: skip
        ws.append(Workload(name, label, b.ops, b.layers, b.params, spiking=False,
                           chars_per_token=theirs or cpt, chars_note=note))  # fmt: skip
    neurons = int(prof.layers.out_per_token[prof.layers.kind.isin(NEURON_KINDS)].sum())
    return evaluate(ws, result.costs, job.precision, prof.meta["batch"], job.platforms, job.nodes, neurons)
