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


@pytest.fixture(autouse=True, scope="session")
def _private_baselines_cache(tmp_path_factory):
    """Tests never read or fill the user's baselines cache: one cache per test session."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("user-cache")
    mp.setenv("XDG_CACHE_HOME", str(root))
    mp.setattr("energy.cache.cache_dir", lambda: root / "spike-energy" / "baselines")
    yield root
    mp.undo()
