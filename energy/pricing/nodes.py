"""Process-node scaling of a cost table: a new ``CostTable`` at another node, never a mutation.

The factors live in ``energy/pricing/data/node_scaling.csv`` (the cost-table format, one source per
number):

- **logic** (every arithmetic primitive: add, mul, MAC, AC, exp, ...): Stillmaker & Baas
  (Integration 58, 2017, Table 5) fit the energy of each node as ``a*Vdd^2 + b*Vdd + c``, one
  device family at every node: ``SB_FAMILY`` (HP; the paper's single bulk fit at 65 nm and
  above, where it has no HP/LP split; the LP rows are kept in the data file, unused); the factor
  from node X to node Y is ``E_Y(V) / E_X(V)`` at one fixed supply ``V`` (0.8 V, Accelergy's
  default), linear in nm between tabulated nodes. Past 7 nm, the vendor's step: TSMC N5 vs
  N7, about 30% less power at the same speed (x 0.70). Jouppi et al. (ISCA 2021) give 7 nm
  operation energies that imply a milder 0.30-0.35x; they are kept as the range.
- **memory** has its own factor. SRAM reads at 7 nm: Jouppi et al. 2021 Table 2 at the
  same three sizes as Horowitz (8 KB, 32 KB, 1 MB). Other nodes: an assumption, labelled
  wherever shown (``MEMORY_RULE``). DRAM: 1.0 (the same DDR3/4 1.3-2.6 nJ per 64-bit
  access is published at 45 nm and at 7 nm).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import asdict, dataclass
from importlib import resources

import pandas as pd

from energy.pricing.costs import SRAM_POINTS, CostTable, load_costs
from spikegpt.errors import SpikeEnergyError

NODES = (45, 28, 16, 7, 5)  # the --node choices
BASE_NODE = 45  # Horowitz, ISSCC 2014
MIN_NODE, MAX_NODE = 5, 130
_SB_NODES = (130, 90, 65, 45, 32, 20, 16, 14, 10, 7)
# one Stillmaker & Baas device family at every node (issue 22 item 9): the rows sb_hp_{a,b,c} of node_scaling.csv
SB_FAMILY = "HP"
MEMORY_RULE = (
    "assumption: SRAM between the published points (45 nm Horowitz, 7 nm Jouppi) moves the same fraction of "
    "its 45->7 nm way, on a log scale, as logic does; at 5 nm it stays at its 7 nm factor"
)
# Horowitz's 45 nm figures that the 7 nm points are compared with (energy/pricing/data/horowitz_45nm.csv)
_HOROWITZ_45 = {"mul.int8": 0.2, "add.int32": 0.1, "mul.fp16": 1.1, "mul.fp32": 3.7}


@functools.cache
def node_table() -> CostTable:
    src = resources.files("energy.pricing") / "data" / "node_scaling.csv"
    with resources.as_file(src) as p:
        return load_costs(p, complete=False)


def _check(node: float) -> float:
    try:
        n = float(node)
    except (TypeError, ValueError):
        raise SpikeEnergyError(f"process node must be a number of nm, got {node!r}") from None
    if not MIN_NODE <= n <= MAX_NODE:
        raise SpikeEnergyError(
            f"process node {node} nm is outside the published scaling range ({MIN_NODE}-{MAX_NODE} nm); "
            f"choose one of {', '.join(map(str, NODES))}"
        )
    return n


def vdd() -> float:
    return node_table().pj("sb_vdd", "-")


def _sb_energy(node: float, v: float) -> float:
    """Stillmaker & Baas relative energy (``SB_FAMILY``) at ``node`` (7-130 nm) and supply ``v``, linear in nm."""
    t = node_table()

    def at(n: int) -> float:
        a, b, c = (t.pj(f"sb_{SB_FAMILY.lower()}_{k}", f"{n}nm") for k in "abc")
        return a * v * v + b * v + c

    if node in _SB_NODES:
        return at(int(node))
    hi = min(n for n in _SB_NODES if n > node)
    lo = max(n for n in _SB_NODES if n < node)
    w = (hi - node) / (hi - lo)  # 0 at the larger node, 1 at the smaller
    return at(hi) * (1 - w) + at(lo) * w


def _logic_from_45(node: float) -> float:
    """Logic energy at ``node`` relative to 45 nm (vendor step below 7 nm)."""
    v = vdd()
    if node >= 7:
        return _sb_energy(node, v) / _sb_energy(BASE_NODE, v)
    f7 = _sb_energy(7, v) / _sb_energy(BASE_NODE, v)
    f5 = f7 * node_table().pj("vendor_n5_vs_n7", "5nm")
    if node <= 5:
        return f5
    w = (7 - node) / 2
    return f7 * (1 - w) + f5 * w


def chip_logic_factor(node: float, supply_v: float) -> float:
    """Logic energy at ``node`` and the chip's own supply ``supply_v``, relative to Horowitz's 45 nm table at its
    own 0.9 V (``horowitz_vdd``): E_node(supply_v) / E_45(0.9 V) on the Stillmaker & Baas fits (7-130 nm)."""
    n = _check(node)
    if n < 7:
        raise SpikeEnergyError(
            f"a chip supply voltage is scaled on Stillmaker & Baas fits (7-130 nm), not at {node} nm"
        )
    return _sb_energy(n, float(supply_v)) / _sb_energy(BASE_NODE, node_table().pj("horowitz_vdd", "-"))


def logic_factor(node: float, from_node: float = BASE_NODE) -> float:
    """Energy of a logic operation at ``node`` relative to ``from_node``."""
    return _logic_from_45(_check(node)) / _logic_from_45(_check(from_node))


def _jouppi_logic_7nm() -> dict[str, float]:
    t = node_table()
    return {k: t.pj(k, "7nm") / v for k, v in _HOROWITZ_45.items()}


def _sram_from_45(node: float, point: str) -> float:
    """SRAM read energy at ``node`` relative to 45 nm, for one Horowitz size point."""
    f7 = node_table().pj(point, "7nm") / load_costs().pj(point, "64b")
    if node <= 7:
        return f7
    if node == BASE_NODE:
        return 1.0
    return f7 ** (math.log(_logic_from_45(node)) / math.log(_logic_from_45(7)))


def _dram_from_45(node: float) -> float:
    return node_table().pj("dram_read", "7nm") / load_costs().pj("dram_read", "64b")


@dataclass(frozen=True)
class NodeFactors:
    """Energy factors from ``from_node`` to ``node``, with where each comes from."""

    node: float
    from_node: float
    logic: float
    logic_range: tuple[float, float]
    logic_basis: str
    sram: dict  # Horowitz SRAM point -> factor
    dram: float
    memory_basis: str
    memory_status: str  # "published" at 45 and 7 nm, else "assumption" (MEMORY_RULE)

    def to_dict(self) -> dict:
        return asdict(self)


def node_factors(node: float, from_node: float = BASE_NODE, supply_v: float | None = None) -> NodeFactors:
    """Factors from ``from_node`` to ``node``; ``supply_v``: a chip's own supply (from Horowitz's 45 nm at 0.9 V
    to the chip's node at ``supply_v``), else one fixed supply at both nodes."""
    n, f = _check(node), _check(from_node)
    if supply_v is not None and f == BASE_NODE:
        logic = chip_logic_factor(n, supply_v)
        lo = hi = logic
        basis = (
            f"Stillmaker & Baas 2017 energy fits ({SB_FAMILY} family), from Horowitz's 45 nm at "
            f"{node_table().pj('horowitz_vdd', '-'):g} V "
            f"to {n:g} nm at the chip's own {supply_v:g} V"
        )
        sram = {p: _sram_from_45(n, p) for p in SRAM_POINTS}
        mem = "SRAM: Jouppi et al. 2021 Table 2 (7 nm) against Horowitz 2014 (45 nm); " + MEMORY_RULE
        return NodeFactors(n, f, logic, (lo, hi), basis, sram, _dram_from_45(n), mem, "assumption")
    logic = logic_factor(n, f)
    lo = hi = logic
    basis = (
        f"Stillmaker & Baas 2017 energy fits ({SB_FAMILY} family) at a fixed {vdd():g} V (Accelergy's default supply)"
    )
    if n < 7:
        basis += "; below 7 nm x 0.70 (TSMC: N5 about 30% less power than N7 at the same speed)"
    if n == 7 and f == BASE_NODE:  # the only node where a second published set exists
        alt = list(_jouppi_logic_7nm().values())
        lo, hi = min([logic, *alt]), max([logic, *alt])
        basis += f"; Jouppi et al. 2021 7 nm operation energies imply {min(alt):.2f}-{max(alt):.2f}x (range)"
    sram = {p: _sram_from_45(n, p) / _sram_from_45(f, p) for p in SRAM_POINTS}
    dram = _dram_from_45(n) / _dram_from_45(f)
    published = {n, f} <= {7.0, float(BASE_NODE)}
    mem = "SRAM: Jouppi et al. 2021 Table 2 (7 nm) against Horowitz 2014 (45 nm)"
    if not published:
        mem += "; " + MEMORY_RULE
    mem += "; DRAM: 1.0 (the same DDR3/4 1.3-2.6 nJ per 64-bit read is published at 45 and 7 nm)"
    return NodeFactors(n, f, logic, (lo, hi), basis, sram, dram, mem, "published" if published else "assumption")


def _table_node(costs: CostTable) -> float:
    nodes = {str(v).strip() for v in costs.df.get("node_nm", pd.Series(dtype=str))} - {""}
    if len(nodes) > 1:
        raise SpikeEnergyError(f"cost table {costs.path} mixes process nodes {sorted(nodes)}; scale one node at a time")
    return float(nodes.pop()) if nodes else float(BASE_NODE)  # the bundled table and users' tables: Horowitz 45 nm


def _sram_point(op: str) -> str:
    """The Horowitz size point an SRAM row scales with (by the size in its name)."""
    if op in SRAM_POINTS:
        return op
    m = re.search(r"(\d+)\s*(KB|MB)", op, re.IGNORECASE)
    size = int(m.group(1)) * (2**10 if m.group(2).upper() == "KB" else 2**20) if m else 2**20
    return min(SRAM_POINTS, key=lambda p: abs(math.log2(SRAM_POINTS[p]) - math.log2(size)))


def scale_costs(costs: CostTable, node: float, supply_v: float | None = None) -> CostTable:
    """``costs`` (45 nm unless its ``node_nm`` column says otherwise) at ``node`` nm: a new table.

    Every energy row (unit pJ) is multiplied by its factor: SRAM rows by the SRAM factor of
    their size point, DRAM rows by the DRAM factor, every other row (arithmetic) by logic's.
    """
    src = _table_node(costs)
    f = node_factors(node, src, supply_v)
    df = costs.df.copy()
    energy = df.unit.astype(str).str.strip().str.lower().eq("pj") if "unit" in df else pd.Series(True, df.index)
    factor, kind = [], []
    for op in df.op.astype(str):
        if op.startswith("sram"):
            factor.append(f.sram[_sram_point(op)])
            kind.append("memory (SRAM)")
        elif op.startswith("dram"):
            factor.append(f.dram)
            kind.append("memory (DRAM)")
        else:
            factor.append(f.logic)
            kind.append("logic")
    factor = pd.Series(factor, index=df.index).where(energy, 1.0)
    df["pj"] = df.pj * factor
    df["node_nm"] = df.node_nm.where(~energy, f"{f.node:g}") if "node_nm" in df else f"{f.node:g}"
    kinds = pd.Series(kind, index=df.index)
    tag = (
        f"; scaled {src:g}->{f.node:g} nm"
        + (f" at {supply_v:g} V" if supply_v is not None else "")
        + " x"
        + factor.map("{:.4g}".format)
        + " ("
        + kinds
        + ")"
    )
    df["note"] = df.note.astype(str).where(~energy, df.note.astype(str) + tag)
    # dataclasses.replace keeps the SRAM budget and the memory model of the table being scaled
    return dataclasses.replace(costs, df=df.reset_index(drop=True), path=f"{costs.path} @ {f.node:g} nm",
                               sram_node_factors={k: v * (costs.sram_node_factors or {}).get(k, 1.0)
                                                  for k, v in f.sram.items()})  # fmt: skip
