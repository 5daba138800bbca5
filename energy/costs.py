"""Energy per operation: the cost table (a data file with a source for every number).

``energy/data/horowitz_45nm.csv`` has the columns op, dtype, pj, status, source,
table, note. ``status`` is ``published`` (Horowitz 2014), ``derived`` (a sum of
published numbers, e.g. MAC = mul + add), ``assumption`` (no published 45 nm figure:
exp, div, sigmoid, rsqrt, compare) or ``memory-only``. Users pass their own file with
the same columns (``--costs FILE``); it is validated on load.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from spikegpt.errors import SpikeEnergyError
from spikegpt.safeio import check_regular_file, shown

COLUMNS = ["op", "dtype", "pj", "status", "source", "table", "note"]
STATUSES = {"published", "derived", "assumption", "memory-only"}
PRECISIONS = ("fp32", "fp16", "int8")
COMPUTE_OPS = ("mac", "ac", "add", "mul", "div", "exp", "sigmoid", "max", "rsqrt", "lookup")
SRAM_POINTS = {"sram_read_8KB": 8 * 2**10, "sram_read_32KB": 32 * 2**10, "sram_read_1MB": 2**20}
BYTES_PER_VALUE = {"fp32": 4, "fp16": 2, "int8": 1}
# Validation limits (not energy figures): the largest cost in the bundled table is a 64-bit DRAM
# read (about 1.3-2.6 nJ). 10^6 pJ (1 uJ) per op is far above any real op, and keeps sums over
# 10^15 ops per token finite; a larger value is an input error, not a cost.
MAX_PJ = 1e6
MAX_COST_TABLE_BYTES = 4 * 2**20


@dataclass
class CostTable:
    df: pd.DataFrame
    path: str

    def __post_init__(self) -> None:
        self._pj = {(r.op, r.dtype): float(r.pj) for r in self.df.itertuples()}

    def pj(self, op: str, dtype: str) -> float:
        try:
            return self._pj[(op, dtype)]
        except KeyError:
            msg = f"cost table {self.path} has no row for op={op!r}, dtype={dtype!r}; add one"
            raise SpikeEnergyError(msg) from None

    def primitives(self, precision: str) -> dict[str, float]:
        """pJ per primitive at a precision preset: MACs, ACs and every elementwise op."""
        if precision not in PRECISIONS:
            raise SpikeEnergyError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        table = {op: self.pj(op, precision) for op in COMPUTE_OPS}
        table["effective_mac"] = table["mac"]
        return table

    def sram_pj_per_byte(self, size_bytes: float) -> float:
        """SRAM read energy per byte for a memory of ``size_bytes``.

        Piecewise linear in log2(size) through Horowitz's 8 KB / 32 KB / 1 MB points
        (Lemaire et al. 2022 interpolate the same way); below 8 KB the 8 KB figure, above
        1 MB the 32 KB -> 1 MB slope extended (an assumption: no published point there).
        """
        pts = sorted((size, self.pj(op, "64b")) for op, size in SRAM_POINTS.items())
        x = math.log2(max(size_bytes, 1.0))
        xs = [math.log2(s) for s, _ in pts]
        ys = [e for _, e in pts]
        if x <= xs[0]:
            e64 = ys[0]
        else:
            i = 1 if x <= xs[1] else 2
            e64 = ys[i - 1] + (ys[i] - ys[i - 1]) * (x - xs[i - 1]) / (xs[i] - xs[i - 1])
        return e64 / 8

    def dram_pj_per_byte(self) -> float:
        return self.pj("dram_read", "64b") / 8

    def assumptions(self) -> pd.DataFrame:
        """Every cost that is not a published figure (for every report)."""
        return self.df[self.df.status != "published"].reset_index(drop=True)


def load_costs(path: str | Path | None = None) -> CostTable:
    """The bundled Horowitz table, or a user's file with the same columns."""
    if path is None:
        return _bundled_costs()
    return _load_costs(path)


@functools.cache
def _bundled_costs() -> CostTable:
    return _load_costs(None)


def _load_costs(path: str | Path | None) -> CostTable:
    if path is None:
        src = resources.files("energy") / "data" / "horowitz_45nm.csv"
        with resources.as_file(src) as p:
            df = pd.read_csv(p, dtype={"pj": float}, keep_default_na=False)
        name = "energy/data/horowitz_45nm.csv"
    else:
        p = check_regular_file(path, "--costs", MAX_COST_TABLE_BYTES)
        try:
            df = pd.read_csv(p, keep_default_na=False, dtype=str)  # pj checked below, as the user wrote it
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError, OSError) as e:
            raise SpikeEnergyError(f"cost table {p} is not a readable CSV ({e}); expected columns {COLUMNS}") from None
        name = str(path)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise SpikeEnergyError(f"cost table {name} lacks columns {missing}; expected {COLUMNS}")
    pj = pd.to_numeric(df.pj, errors="coerce")
    bad = df[~(pj.between(0, MAX_PJ))]  # NaN, inf, negative or absurdly large
    if not bad.empty:
        r = bad.index[0]
        raise SpikeEnergyError(
            f"cost table {name}, row {r + 2}: pj {shown(str(df.pj[r]), 40)} is not a number between 0 and {MAX_PJ:g} pJ"
        )
    df = df.assign(pj=pj)
    bad_status = sorted(set(df.status) - STATUSES)
    if bad_status:
        listed = ", ".join(shown(str(b), 40) for b in bad_status[:5])
        raise SpikeEnergyError(f"cost table {name}: unknown status {listed}; use one of {sorted(STATUSES)}")
    no_source = df[(df.source.astype(str).str.strip() == "")]
    if not no_source.empty:
        raise SpikeEnergyError(f"cost table {name}, row {no_source.index[0] + 2}: every cost needs a source")
    dup = df[df.duplicated(["op", "dtype"])]
    if not dup.empty:
        raise SpikeEnergyError(
            f"cost table {name}: op {shown(str(dup.op.iloc[0]))} dtype {shown(str(dup.dtype.iloc[0]))} appears twice"
        )
    table = CostTable(df[COLUMNS].reset_index(drop=True), name)
    for prec in PRECISIONS:
        table.primitives(prec)  # every preset is complete
    for op in [*SRAM_POINTS, "dram_read"]:
        table.pj(op, "64b")
    return table
