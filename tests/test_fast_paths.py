"""First contact is instant: ``spike-energy --help`` and ``spike-energy CMD --help`` import no torch
(issue 24: 1.9-3.2 s before, most of it ``import torch`` through ``spikegpt.errors``)."""

import subprocess
import sys

import pytest
import torch

from energy.comparing.baseline_names import BASELINE_NAMES

PROBE = """
import sys
sys.argv = ["spike-energy", *sys.argv[1:]]
from energy.app import cli
try:
    cli.main()
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "pandas", "numpy", "matplotlib", "transformers", "numba") if m in sys.modules)
print("HEAVY", ",".join(heavy))
"""


@pytest.mark.parametrize("command", [[], ["profile"], ["audit"], ["eval"], ["train"], ["bench"], ["compare"]])
def test_help_imports_no_torch(command):
    r = subprocess.run([sys.executable, "-c", PROBE, *command, "--help"], capture_output=True, text=True, timeout=120)
    assert "usage: spike-energy" in r.stdout, r.stderr
    heavy = r.stdout.rsplit("HEAVY", 1)[1].strip()
    assert heavy == "", f"--help imported {heavy}"


def test_the_light_list_of_baseline_names_is_the_real_one():
    from energy.app import pipeline
    from energy.comparing.baselines import BASELINE_NAMES as real

    assert BASELINE_NAMES == real == pipeline.DEFAULT_BASELINES


def test_lazy_package_names_still_import():
    import energy
    import spikegpt

    assert spikegpt.SpikeGPT.__name__ == "SpikeGPT" and callable(spikegpt.preset)
    assert callable(energy.profile) and energy.SCENARIOS
    with pytest.raises(AttributeError):
        spikegpt.no_such_name  # noqa: B018


def test_evaluation_builds_no_autograd_graph(tiny32):
    """``evaluate`` scores without autograd: with it, the bundled models' card test built a graph over
    40,000 characters and ran silently for more than five minutes."""
    from spikegpt.evaluate import cross_entropy_nats

    seen = []
    tiny32.register_forward_hook(lambda m, a, out: seen.append((torch.is_grad_enabled(), out.logits.requires_grad)))
    assert torch.is_grad_enabled()
    cross_entropy_nats(tiny32, torch.randint(0, tiny32.config.vocab_size, (40,)), chunk_len=16)
    assert seen == [(False, False)] * 3
