"""The audit walk-through notebook executes from top to bottom, and is committed with its outputs."""

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "audit_32x.ipynb"


def _text(nb) -> str:
    """What the code cells printed (stdout; the kernel's own warnings on stderr are not the notebook's)."""
    return "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("name") == "stdout"
    )


@pytest.mark.slow  # starts a Jupyter kernel and profiles the demo in it
def test_audit_notebook_runs_and_its_stored_outputs_are_current(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    stored = nbformat.read(NOTEBOOK, as_version=4)
    # committed executed, so that it reads on a code host without running it
    assert all(c.get("outputs") for c in stored.cells if c.cell_type == "code")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    resources = {"metadata": {"path": str(tmp_path)}}
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources=resources)
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the figures were drawn
    text = _text(nb)
    assert "measured overall firing rate" in text and "It comes from:" in text
    # the stored conclusions are the ones the code generates today (not stale, not typed by hand)
    conclusions = text[text.index("- The measured overall firing rate") :]
    assert conclusions in _text(stored)
