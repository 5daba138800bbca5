"""Energy per operation: the cost table (a data file with a source for every number).

``energy/pricing/data/horowitz_45nm.csv`` has the columns op, dtype, pj, status, source,
table, note. ``status`` is ``published`` (Horowitz 2014), ``derived`` (a sum of
published numbers), ``assumption`` (no published 45 nm figure: exp, div, sigmoid,
rsqrt, compare, SRAM above 1 MB) or ``memory-only``. Users pass their own file with
the same columns (``--costs FILE``); it is validated on load.

Precision presets (``energy/pricing/data/precisions.csv``) name the operand and the accumulator
width: a MAC is a multiply at the operand width plus an add at the accumulator width,
an AC is one add at the accumulator width (int8 operands accumulate in int32, fp16 in
fp32). Both are derived here from the table's mul and add rows, never stored.

The same format carries event-level platform presets (``energy/pricing/data/platforms/``) and
process-node factors. Those files may name the value column ``value`` instead of ``pj``
and add the optional columns ``EXTENDED`` (filled with their defaults when absent, so
older files load unchanged): ``unit`` (pJ unless stated: mW, ns, bytes...), ``basis``
(measured, simulated, specification, derived, estimate), ``default`` (yes/no: when
sources conflict every figure is kept and exactly one row per (op, dtype) is the
default), ``year`` and ``node_nm``. ``status`` may also be ``missing``: a figure no one
published, kept as a row with an empty value so that the gap is visible; ``unverified``:
a figure quoted without a source read here; ``outlier``: a figure that conflicts by orders
of magnitude with every other (kept visible, out of the default range). Neither can be
the default.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from spikegpt.errors import SpikeEnergyError
from spikegpt.safeio import check_regular_file, shown

COLUMNS = ["op", "dtype", "pj", "status", "source", "table", "note"]
EXTENDED = {"unit": "pJ", "basis": "", "default": "yes", "year": "", "node_nm": ""}
STATUSES = {"published", "derived", "assumption", "memory-only", "missing", "outlier", "unverified"}
NEVER_DEFAULT = ("outlier", "unverified")  # kept visible; never a default, and an outlier stays out of ranges
ELEMENTWISE_OPS = ("add", "mul", "div", "exp", "sigmoid", "max", "rsqrt", "lookup")
DERIVED_OPS = ("mac", "ac")  # from the precision preset: mul + add at the accumulator width, add at it
SRAM_POINTS = {"sram_read_8KB": 8 * 2**10, "sram_read_32KB": 32 * 2**10, "sram_read_1MB": 2**20}
SRAM_SLOPE_ABOVE_1MB = "sram_read_slope_above_1MB"
# SRAM memory models (``CostTable.sram_access_pj``; equations in its docstring)
MEMORY_MODELS = ("horowitz-log", "lemaire-linear")
MEMORY_MODEL_LABELS = {
    "horowitz-log": "per byte: Horowitz's 8 KB / 32 KB / 1 MB 64-bit reads, piecewise linear in log2(size), "
    "a byte = 1/8 of a 64-bit read",
    "lemaire-linear": "per access of one value: e = a * size_bits + c (a = 1.09e-5 pJ/bit, c = 13.2 pJ), the "
    "linear fit of Lemaire et al.'s own implementation (qualia-plugin-snn EnergyEstimationMetric._e_ram)",
}


def _data_csv(name: str) -> pd.DataFrame:
    with resources.as_file(resources.files("energy.pricing") / "data" / name) as p:
        return pd.read_csv(p, keep_default_na=False)


PRESETS = _data_csv("precisions.csv").set_index("precision")
PRECISIONS = tuple(PRESETS.index)
BYTES_PER_VALUE = {p: int(b) for p, b in PRESETS.bytes_per_value.items()}
PARAMETERS = _data_csv("parameters.csv").set_index("name")
SRAM_BUDGET_BYTES = float(PARAMETERS.loc["sram_budget", "value"])

# Validation limits (not energy figures): the largest per-event figure in the bundled data is a
# whole-system SpiNNaker synaptic event (5.8 uJ, van Albada et al. 2018). 10^9 pJ (1 mJ) per op is far
# above any published one and keeps sums over 10^15 ops per token finite; a larger value is an input
# error, not a cost.
MAX_PJ = 1e9
MAX_OTHER = 1e18  # values in other units (synapses per chip, mW, ns, bytes): finite and below this
MAX_COST_TABLE_BYTES = 4 * 2**20


@dataclass
class CostTable:
    df: pd.DataFrame
    path: str
    sram_budget_bytes: float = SRAM_BUDGET_BYTES  # on-chip SRAM for weights, K/V caches and state (memory scenarios)
    memory_model: str = "horowitz-log"  # how an SRAM access is priced (MEMORY_MODELS)
    sram_node_factors: dict | None = None  # Horowitz SRAM point -> factor, set by energy.pricing.nodes.scale_costs

    def __post_init__(self) -> None:
        df = self.df
        if "default" in df:
            df = df[df["default"].astype(str).str.lower() != "no"]
        self._pj = {(r.op, r.dtype): float(r.pj) for r in df.itertuples() if r.pj == r.pj}  # NaN: missing

    def pj(self, op: str, dtype: str) -> float:
        try:
            return self._pj[(op, dtype)]
        except KeyError:
            msg = f"cost table {self.path} has no row for op={op!r}, dtype={dtype!r}; add one"
            raise SpikeEnergyError(msg) from None

    def primitives(self, precision: str) -> dict[str, float]:
        """pJ per primitive at a precision preset: MACs and ACs at the preset's accumulator width,
        every elementwise op at its operand width."""
        if precision not in PRECISIONS:
            raise SpikeEnergyError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        operands, acc = PRESETS.loc[precision, "operands"], PRESETS.loc[precision, "accumulator"]
        table = {op: self.pj(op, operands) for op in ELEMENTWISE_OPS}
        table["ac"] = self.pj("add", acc)
        table["mac"] = table["effective_mac"] = self.pj("mul", operands) + table["ac"]
        return table

    def preset(self, precision: str) -> dict:
        """The precision preset as shown in reports: widths, bytes, and the derived MAC and AC."""
        row = PRESETS.loc[precision]
        pj = self.primitives(precision)
        return {"precision": precision, "operands": row.operands, "accumulator": row.accumulator,
                "bytes_per_value": int(row.bytes_per_value), "mac_pj": pj["mac"], "ac_pj": pj["ac"],
                "mac": f"{row.operands} mul + {row.accumulator} add", "ac": f"{row.accumulator} add",
                "source": row.source}  # fmt: skip

    def sram_pj_per_byte(self, size_bytes: float) -> float:
        """SRAM read energy per byte for a memory of ``size_bytes``.

        Piecewise linear in log2(size) through Horowitz's 8 KB / 32 KB / 1 MB points; below
        8 KB the 8 KB figure; above 1 MB the table's ``sram_read_slope_above_1MB`` per doubling
        (an assumption: no published point there). This is spike-energy's own reading of
        Horowitz's points, not Lemaire et al.'s: their implementation fits one straight line in
        size to the same points and prices one access per value (``sram_access_pj``,
        ``lemaire-linear``).
        """
        pts = sorted((size, self.pj(op, "64b")) for op, size in SRAM_POINTS.items())
        x = math.log2(max(size_bytes, 1.0))
        xs = [math.log2(s) for s, _ in pts]
        ys = [e for _, e in pts]
        if x <= xs[0]:
            e64 = ys[0]
        elif x <= xs[2]:
            i = 1 if x <= xs[1] else 2
            e64 = ys[i - 1] + (ys[i] - ys[i - 1]) * (x - xs[i - 1]) / (xs[i] - xs[i - 1])
        else:
            e64 = ys[2] + self.pj(SRAM_SLOPE_ABOVE_1MB, "64b") * (x - xs[2])
        return e64 / 8

    def sram_access_pj(self, size_bytes: float, value_bytes: float) -> float:
        """pJ of one read (or write) of a ``value_bytes`` value from an SRAM of ``size_bytes``, per the
        table's ``memory_model``:

        - ``horowitz-log``: value_bytes x ``sram_pj_per_byte(size_bytes)``, i.e. E64(size) / 8 per byte;
        - ``lemaire-linear``: e = a x size_bits + c per access, whatever the value's width (Lemaire et al.'s
          implementation: ``1.09e-5 * mem_params * bits + 13.2``, mem_params x bits = the memory's size in
          bits); a and c from ``energy/pricing/data/parameters.csv``.
        """
        if self.memory_model == "lemaire-linear":
            a = float(PARAMETERS.loc["lemaire_sram_slope", "value"])
            c = float(PARAMETERS.loc["lemaire_sram_intercept", "value"])
            e = a * 8 * max(size_bytes, 0.0) + c
            if self.sram_node_factors:  # a table scaled to another node: the factor of the nearest size point
                x = math.log2(max(size_bytes, 1.0))
                point = min(SRAM_POINTS, key=lambda p: abs(math.log2(SRAM_POINTS[p]) - x))
                e *= self.sram_node_factors[point]
            return e
        return value_bytes * self.sram_pj_per_byte(size_bytes)

    def dram_pj_per_byte(self) -> float:
        return self.pj("dram_read", "64b") / 8

    def rows(self, op: str) -> pd.DataFrame:
        """Every figure for ``op`` (the default and its alternatives; missing ones included)."""
        return self.df[self.df.op == op].reset_index(drop=True)

    def assumptions(self) -> pd.DataFrame:
        """Every cost that is not a published figure (for every report)."""
        return self.df[self.df.status != "published"].reset_index(drop=True)

    def parameters(self) -> list[dict]:
        """The model's parameters that are not energies (the on-chip SRAM budget), as used, with their basis."""
        rows = []
        for name, r in PARAMETERS.iterrows():
            value = float(r.value)
            status, source = r.status, r.source
            if name == "sram_budget" and self.sram_budget_bytes != value:
                value, status, source = self.sram_budget_bytes, "user", "set by the user (--sram-budget-mb)"
            if name.startswith("lemaire_sram") and self.memory_model != "lemaire-linear":
                status = f"{status}; shown beside the selected {self.memory_model} model"
            rows.append({"name": name, "value": value, "unit": r.unit, "status": status, "source": source,
                         "note": r.note})  # fmt: skip
        return rows


def load_costs(
    path: str | Path | None = None,
    *,
    sram_budget_bytes: float | None = None,
    complete: bool = True,
    memory_model: str | None = None,
) -> CostTable:
    """The bundled Horowitz table, or a user's file with the same columns; ``sram_budget_bytes``
    replaces the on-chip SRAM budget of ``energy/pricing/data/parameters.csv``; ``memory_model`` selects how an
    SRAM access is priced (``MEMORY_MODELS``). ``complete=False`` loads an event table (a platform
    preset, node factors) that has no per-precision primitives."""
    table = _bundled_costs() if path is None else _load_costs(path, complete)
    if memory_model is not None:
        if memory_model not in MEMORY_MODELS:
            raise SpikeEnergyError(f"memory model must be one of {', '.join(MEMORY_MODELS)}, got {memory_model!r}")
        table = dataclasses.replace(table, memory_model=memory_model)
    if sram_budget_bytes is not None:
        if not (math.isfinite(sram_budget_bytes) and sram_budget_bytes >= 0):
            raise SpikeEnergyError(f"the SRAM budget must be a size >= 0 bytes, got {sram_budget_bytes!r}")
        table = dataclasses.replace(table, sram_budget_bytes=float(sram_budget_bytes))
    return table


@functools.cache
def _bundled_costs() -> CostTable:
    return _load_costs(None)


def _load_costs(path: str | Path | None, complete: bool = True) -> CostTable:
    if path is None:
        src = resources.files("energy.pricing") / "data" / "horowitz_45nm.csv"
        with resources.as_file(src) as p:
            df = pd.read_csv(p, dtype={"pj": float}, keep_default_na=False)
        name = "energy/pricing/data/horowitz_45nm.csv"
    else:
        p = check_regular_file(path, "--costs", MAX_COST_TABLE_BYTES)
        try:
            df = pd.read_csv(p, keep_default_na=False, dtype=str)  # pj checked below, as the user wrote it
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError, OSError) as e:
            raise SpikeEnergyError(f"cost table {p} is not a readable CSV ({e}); expected columns {COLUMNS}") from None
        name = str(path)
    if "pj" not in df.columns and "value" in df.columns:
        df = df.rename(columns={"value": "pj"})
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise SpikeEnergyError(f"cost table {name} lacks columns {missing}; expected {COLUMNS}")
    df = df.assign(**{c: df[c] if c in df.columns else v for c, v in EXTENDED.items()})
    pj = pd.to_numeric(df.pj, errors="coerce")
    absent = df.status.astype(str) == "missing"
    energy = df.unit.astype(str).str.strip().str.lower() == "pj"  # other units (fit coefficients) may be < 0
    limit = pj.abs() <= MAX_PJ  # False for NaN and inf
    finite = pj.abs() <= MAX_OTHER  # other units: capacities, power, fit coefficients
    bad = df[(~absent & energy & ~limit) | (~absent & ~energy & ~finite) | (energy & (pj < 0))]
    if not bad.empty:
        r = bad.index[0]
        raise SpikeEnergyError(
            f"cost table {name}, row {r + 2}: pj {shown(str(df.pj[r]), 40)} is not a number between 0 and "
            f"{MAX_PJ:g} pJ (or, in another unit, a finite number)"
        )
    df = df.assign(pj=pj)
    bad_status = sorted(set(df.status) - STATUSES)
    if bad_status:
        listed = ", ".join(shown(str(b), 40) for b in bad_status[:5])
        raise SpikeEnergyError(f"cost table {name}: unknown status {listed}; use one of {sorted(STATUSES)}")
    no_source = df[(df.source.astype(str).str.strip() == "")]
    if not no_source.empty:
        raise SpikeEnergyError(f"cost table {name}, row {no_source.index[0] + 2}: every cost needs a source")
    derived = df[df.op.isin(DERIVED_OPS)]
    if not derived.empty:
        raise SpikeEnergyError(
            f"cost table {name}: remove the {derived.op.iloc[0]!r} rows: MAC and AC are derived from the mul and add "
            "rows and the precision preset's accumulator width (energy/pricing/data/precisions.csv)"
        )
    bad_default = df[df.status.isin(NEVER_DEFAULT) & (df["default"].astype(str).str.lower() != "no")]
    if not bad_default.empty:
        raise SpikeEnergyError(
            f"cost table {name}, row {bad_default.index[0] + 2}: an {bad_default.status.iloc[0]} figure "
            "cannot be the default; mark it default=no"
        )
    chosen = df[df["default"].astype(str).str.lower() != "no"]
    dup = chosen[chosen.duplicated(["op", "dtype"])]
    if not dup.empty:
        raise SpikeEnergyError(
            f"cost table {name}: op {shown(str(dup.op.iloc[0]))} dtype {shown(str(dup.dtype.iloc[0]))} appears twice; "
            "mark all but one figure default=no"
        )
    table = CostTable(df[COLUMNS + list(EXTENDED)].reset_index(drop=True), name)
    if not complete:
        return table
    for prec in PRECISIONS:
        table.primitives(prec)  # every preset is complete
    for op in [*SRAM_POINTS, SRAM_SLOPE_ABOVE_1MB, "dram_read"]:
        table.pj(op, "64b")
    return table
