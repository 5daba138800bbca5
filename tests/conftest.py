import pytest
import torch

from spikegpt import SpikeGPT, SpikeGPTConfig, preset
from spikegpt.checkpoint import save_checkpoint
from spikegpt.tokenizer import CharTokenizer


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
    mp.setattr("energy.comparing.cache.cache_dir", lambda: root / "spike-energy" / "baselines")
    yield root
    mp.undo()


@pytest.fixture(scope="session")
def write_model_files():
    """``write(d, text, seed=0, ctx_len=32)``: a random 2 x 32 char model whose vocabulary covers ``text``,
    saved in ``d`` as m.pth + m.vocab.json, with the text as text.txt; returns ``d``."""

    def write(d, text: str, seed: int = 0, ctx_len: int = 32):
        tok = CharTokenizer.from_text(text)
        torch.manual_seed(seed)
        model = SpikeGPT(SpikeGPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_embd=32, ctx_len=ctx_len))
        save_checkpoint(model, d / "m.pth")
        (d / "m.vocab.json").write_text(tok.to_json())
        (d / "text.txt").write_text(text)
        return d

    return write
