import functools

import pytest
import torch

import energy
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


@pytest.fixture(scope="session")
def tiny_profile():
    """``tiny_profile(tokens, seed, census_tokens)``: the random tiny SpikeGPT (float32, torch seed 0), ``tokens``
    token ids drawn with a generator of seed ``seed``, and its profile, as ``(model, ids, prof)``. Made once per
    arguments in a session: tests read what they get and do not modify it."""

    @functools.cache
    def make(tokens: int, seed: int, census_tokens: int):
        torch.manual_seed(0)
        model = SpikeGPT(preset("tiny")).eval()
        ids = torch.randint(0, 64, (1, tokens), generator=torch.Generator().manual_seed(seed))
        return model, ids, energy.profile(model, ids, census_tokens=census_tokens)

    return make


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
