"""The bundled demo: a trained SpikeGPT that has learned English and whose neurons fire."""

import json
from pathlib import Path

import pytest
import torch

from energy.app.pipeline import demo_paths
from spikegpt.checkpoint import load_checkpoint
from spikegpt.evaluate import evaluate, unigram_entropy_bits
from spikegpt.tokenizer import read_text, resolve_tokenizer

CARD = Path(demo_paths()[0]).with_name("card.json")


@pytest.fixture(scope="module")
def demo():
    ckpt, sample = demo_paths()
    model, info = load_checkpoint(ckpt)
    tok = resolve_tokenizer(info.config.vocab_size, checkpoint_path=ckpt)
    return model, tok, read_text(sample), json.loads(CARD.read_text())


def test_demo_files_are_small_and_shipped():
    ckpt, sample = demo_paths()
    assert ckpt.stat().st_size < 20 * 2**20
    assert 20_000 < len(sample.read_text()) < 100_000
    assert ckpt.with_name("MODEL_CARD.md").exists()


def test_heldout_bpc_matches_card_and_beats_unigram(demo):
    model, tok, text, card = demo
    ev = evaluate(model, tok, text)
    assert ev.bpc == pytest.approx(card["sample_bpc"], abs=2e-3)
    unigram = unigram_entropy_bits(tok.encode(text))
    assert unigram == pytest.approx(card["sample_unigram_entropy_bits"], abs=1e-9)
    assert ev.bpc < unigram - 1.5  # far below a letter-frequency model


def test_every_lif_layer_fires(demo):
    model, tok, text, card = demo
    ids = torch.tensor([tok.encode(text[:4000])])
    with torch.no_grad():
        spikes = model(ids, return_spikes=True).spikes
    assert set(spikes) == set(card["firing_rates"])
    for name, s in spikes.items():
        rate = s.mean().item()
        assert 0 < rate < 1, name
        assert rate == pytest.approx(card["firing_rates"][name], abs=0.05), name  # a 4000-char prefix vs the card
