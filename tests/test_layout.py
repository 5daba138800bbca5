"""Issue 25: the layout shows the architecture. The stages of ``energy/`` are folders, and imports only go down.

Stage order, lowest first: pricing < measuring < comparing < app. Pricing (cost tables, the memory model,
chips and nodes) knows no model; measuring runs a model, counts and classifies its ops and prices them
(a ``Profile`` carries its energy, so measuring imports pricing); comparing puts profiles beside baselines,
variants and closed forms; the app (command line, pipeline, timing) is the only stage that reaches
``reports/``. The graph is read from the source (``ast``), function-local imports included.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("pricing", "measuring", "comparing", "app")  # lowest first: a stage imports only from itself and below
ALIASES = {"energy.cli": "energy.app.cli"}  # the command line's documented address (energy/__init__.py)


def modules(package: str) -> dict[str, Path]:
    """Module name -> file, for every .py file under ``package/``."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """Modules of ``known`` (or packages outside it, by top-level name) that the file imports anywhere."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known or f"{base}.{a.name}" in ALIASES else base
                       for a in node.names]  # fmt: skip
        else:
            continue
        for t in targets:
            t = ALIASES.get(t, t)
            while t not in known and "." in t and t.split(".")[0] in {k.split(".")[0] for k in known}:
                t = t.rpartition(".")[0]  # an attribute of a module: the module
            found.add(t)
    found.discard(name)
    return found


def graph(package: str = "energy") -> dict[str, set[str]]:
    mods = modules(package)
    known = set(mods)
    return {m: {t for t in imported(p, m, known) if t in known} for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ORDER else None


def test_the_cycle_finder_finds_a_cycle_and_no_false_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_sees_function_local_and_relative_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "from . import y\ndef g():\n    from energy.app.pipeline import run\n    import energy.pricing.costs\n"
    )
    assert imported(f, "energy.app.x", {"energy.app.y", "energy.app.pipeline", "energy.pricing.costs"}) == {
        "energy.app.y", "energy.app.pipeline", "energy.pricing.costs"}  # fmt: skip


def test_every_module_of_energy_is_in_a_stage_folder():
    loose = [m for m in modules("energy") if m != "energy" and stage(m) is None]
    assert not loose, f"modules outside the stage folders {ORDER}: {loose}"
    assert {stage(m) for m in modules("energy")} - {None} == set(ORDER)


def test_no_import_cycles_in_energy():
    assert cycles(graph("energy")) == []


def test_stages_import_only_downwards():
    bad = []
    for m, targets in graph("energy").items():
        for t in targets:
            if stage(m) and stage(t) and ORDER.index(stage(t)) > ORDER.index(stage(m)):
                bad.append(f"{m} -> {t}")
    assert not bad, f"imports up the stages {' < '.join(ORDER)}: {bad}"


def test_the_model_imports_nothing_from_counting_or_reports():
    known = set(modules("spikegpt"))
    for m, p in modules("spikegpt").items():
        outside = {t.split(".")[0] for t in imported(p, m, known)}
        assert not outside & {"energy", "reports"}, m


def test_only_the_app_stage_reaches_reports():
    known = set(modules("energy")) | set(modules("reports"))
    for m, p in modules("energy").items():
        if any(t.split(".")[0] == "reports" for t in imported(p, m, known)):
            assert stage(m) == "app", f"{m} imports reports/"
    for m, p in modules("reports").items():  # and reports/ does not reach back into the app
        assert not any(stage(t) == "app" for t in imported(p, m, known)), m


def test_the_command_line_keeps_its_address():
    import energy.app.cli
    import energy.cli

    assert energy.cli is energy.app.cli
    r = subprocess.run([sys.executable, "-m", "energy.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "profile" in r.stdout, r.stderr


def test_every_import_of_energy_names_a_module_of_this_tree():
    """A stale address (``energy.pipeline``) fails here even where an editable install of an older checkout
    would still resolve it from its own files."""
    import energy

    known = set(modules("energy")) | set(ALIASES)
    bad = []
    files = [p for d in ("energy", "tests", "benchmarks", "examples", "reports") for p in (ROOT / d).rglob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                bad += [f"{path.name}: import {a.name}" for a in node.names
                        if a.name.startswith("energy.") and a.name not in known]  # fmt: skip
            elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("energy"):
                if node.module not in known:
                    bad.append(f"{path.name}: from {node.module}")
                elif node.module == "energy":
                    bad += [f"{path.name}: from energy import {a.name}" for a in node.names
                            if f"energy.{a.name}" not in known and a.name not in energy.__all__]  # fmt: skip
    assert not bad, bad
