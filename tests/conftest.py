import pytest
import torch

from spikegpt import SpikeGPT, preset


@pytest.fixture
def tiny64():
    """A random tiny SpikeGPT in float64 (neurons fire at about 15%)."""
    torch.manual_seed(0)
    return SpikeGPT(preset("tiny")).double().eval()


@pytest.fixture
def tiny32():
    torch.manual_seed(0)
    return SpikeGPT(preset("tiny")).eval()
