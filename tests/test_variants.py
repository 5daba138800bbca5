"""Model variants (released, twin, spike-input), the bundled trained ones, and the pareto comparison."""

import json
import math

import pytest
import torch

import energy
from energy.app.cli import main
from energy.comparing.variants import BUNDLED, bundled_models
from spikegpt import SpikeGPT, preset
from spikegpt.card import card_paths
from spikegpt.checkpoint import load_checkpoint, save_checkpoint
from spikegpt.model import LIF, atan_heaviside
from spikegpt.tokenizer import CharTokenizer

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. " * 12


def tiny(variant: str, seed: int = 0) -> SpikeGPT:
    torch.manual_seed(seed)
    return SpikeGPT(preset("tiny", variant=variant)).eval()


@pytest.mark.parametrize("reset", [0.0, 0.3])
def test_lif_backward_equals_autograd_of_the_equations(reset):
    """The hand-written surrogate backward gives the gradient autograd gives through the stepped equations."""

    def stepped(x, v, tau=2.0, th=1.0, alpha=2.0):
        out = []
        for t in range(x.shape[1]):
            h = v + (x[:, t] - (v - reset)) / tau
            s = atan_heaviside(h - th, alpha)
            v = h * (1 - s) + reset * s
            out.append(s)
        return torch.stack(out, 1), v

    g = torch.Generator().manual_seed(1)
    x = (torch.randn(3, 40, 5, dtype=torch.float64, generator=g) * 2).requires_grad_()
    v0 = torch.randn(3, 5, dtype=torch.float64, generator=g).requires_grad_()
    w_s, w_v = (
        torch.randn(3, 40, 5, dtype=torch.float64, generator=g),
        torch.randn(3, 5, dtype=torch.float64, generator=g),
    )
    s1, v1 = stepped(x, v0)
    s2, v2 = LIF(reset=reset)(x, v0)
    assert torch.equal(s1, s2) and torch.equal(v1, v2)
    g1 = torch.autograd.grad((s1 * w_s).sum() + (v1 * w_v).sum(), (x, v0))
    g2 = torch.autograd.grad((s2 * w_s).sum() + (v2 * w_v).sum(), (x, v0))
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("variant", ["released", "twin", "spike-input"])
def test_streaming_equals_parallel_for_every_variant(variant):
    model = tiny(variant).double()
    ids = torch.randint(0, 64, (2, 19), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        par = model.run(ids, mode="parallel", return_spikes=True)
        st = model.run(ids, mode="streaming", return_spikes=True)
    assert torch.allclose(par.logits, st.logits, atol=1e-9)
    assert set(par.spikes) == set(st.spikes)
    for name in par.spikes:
        assert torch.equal(par.spikes[name], st.spikes[name]), name
    assert (len(par.spikes) == 0) == (variant == "twin")


def test_spike_input_projections_are_found_binary_and_ac():
    """The profile decides from the values seen (nobody tells it) that every block projection of the spike-input
    model reads binary spikes, and counts ACs there; the released model's are floats with no AC."""
    ids = torch.randint(0, 64, (1, 33), generator=torch.Generator().manual_seed(3))
    spk = energy.profile(tiny("spike-input"), ids).layers
    rel = energy.profile(tiny("released"), ids).layers
    for lay, binary in ((spk, True), (rel, False)):
        proj = lay[(lay.kind == "linear") & lay.block.notna()]
        assert len(proj) == 2 * 7
        assert (proj.operand_class == "binary").all() == binary
        assert (proj.ac > 0).all() if binary else (proj.ac == 0).all()
    head = spk.set_index("layer").loc["head"]
    assert head.operand_class == "float" and head.ac == 0  # the head reads the final LayerNorm, as in the paper
    lif = spk[spk.kind == "lif"]
    assert len(lif) == 2 * 7 and lif.firing_rate.between(0, 1).all()


@pytest.mark.parametrize("variant", ["twin", "spike-input"])
def test_variant_travels_in_the_sidecar(tmp_path, variant):
    model = tiny(variant)
    save_checkpoint(model, tmp_path / "m.pth", sidecar=True)
    loaded, info = load_checkpoint(tmp_path / "m.pth")
    assert info.config.variant == variant
    ids = torch.randint(0, 64, (1, 9))
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits)
    # the keys are the reference ones: without the sidecar the same file loads as the released model
    (tmp_path / "m.config.json").unlink()
    assert load_checkpoint(tmp_path / "m.pth")[1].config.variant == "released"


def test_pareto_command_on_three_tiny_models(tmp_path, capsys):
    tok = CharTokenizer.from_text(TEXT)
    paths = []
    for variant in ("released", "twin", "spike-input"):
        torch.manual_seed(0)
        cfg = preset("tiny", vocab_size=tok.vocab_size, variant=variant)
        path = tmp_path / f"{variant}.pth"
        save_checkpoint(SpikeGPT(cfg).eval(), path, sidecar=True)
        path.with_name(f"{variant}.vocab.json").write_text(tok.to_json())
        paths += ["--checkpoint", str(path)]
    (tmp_path / "t.txt").write_text(TEXT)
    args = ["pareto", *paths, "--text", str(tmp_path / "t.txt"), "--tokens", "48", "--platform", "none"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "out" / "pareto.json").read_text())
    assert (tmp_path / "out" / "pareto.svg").read_bytes().startswith(b"<?xml")
    by = {m["variant"]: m for m in res["models"]}
    assert by["spike-input"]["projections"]["spike"] == 14 and by["released"]["projections"]["spike"] == 0
    assert by["spike-input"]["ops_per_token"]["ac"] > 0 == by["released"]["ops_per_token"]["ac"]
    for m in res["models"]:
        assert m["tokens"] == 48 and m["chars_per_token"] == 1.0  # char vocabulary: a token is a character
        assert m["energy_pj_per_char"]["as_executed"] == pytest.approx(m["energy_pj_per_token"]["as_executed"])
    mc = res["measured_counterfactual"]
    assert mc["measured"]["projections_binary"] == 14 and mc["counterfactual"]["projections_fed"] == 10
    d = by["spike-input"]["bpc"] - by["released"]["bpc"]
    assert f"costs {d:+.3f} bits per character" in res["verdict"]
    out = " ".join(capsys.readouterr().out.split())  # the terminal wraps long lines
    assert "At equal training, making the ACs real" in out


@pytest.mark.slow  # three 40,000-character evaluations: 72-210 s each on a loaded 2-core machine
@pytest.mark.parametrize("stem", list(BUNDLED.values()))
def test_bundled_model_matches_its_card_and_fires(stem):
    """Each shipped model's held-out BPC equals its card's (to 2e-3), and every LIF layer fires."""
    from spikegpt.evaluate import evaluate
    from spikegpt.tokenizer import read_text, resolve_tokenizer

    models = bundled_models()
    assert stem in models, f"spikegpt/demo/{stem}.pth is not shipped"
    ckpt = models[stem]
    assert ckpt.stat().st_size < 20 * 2**20
    card = json.loads(card_paths(ckpt.parent, stem)[0].read_text())
    assert card_paths(ckpt.parent, stem)[1].is_file()
    model, info = load_checkpoint(ckpt)
    assert info.config.variant == {v: k for k, v in BUNDLED.items()}[stem]
    tok = resolve_tokenizer(info.config.vocab_size, checkpoint_path=ckpt)
    text = read_text(ckpt.with_name("sample.txt"))
    assert evaluate(model, tok, text).bpc == pytest.approx(card["sample_bpc"], abs=2e-3)
    with torch.no_grad():
        spikes = model(torch.tensor([tok.encode(text[:3000])]), return_spikes=True).spikes
    assert set(spikes) == set(card["firing_rates"])
    for name, s in spikes.items():
        assert 0 < s.mean().item() < 1, name
    assert card["training"]["steps"] == 3000 and math.isfinite(card["training"]["val_bits_per_char"])


def test_a_model_without_lifs_is_priced_as_a_non_spiking_model(tmp_path):
    """Issue 20, item F: the trained twin (no LIF) is priced as the rwkv-twin baseline is: its "paper" scenario
    is every projection as a MAC (no AC at R = 0.15), and its spike-input counterfactual is itself as executed
    (no LIF, so no spikes to feed; the binary embedding's are not a LIF's)."""
    from energy.comparing.variants import measure_model
    from energy.pricing.costs import load_costs
    from energy.pricing.estimate import MATRIX_KINDS

    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    save_checkpoint(SpikeGPT(preset("tiny", vocab_size=tok.vocab_size, variant="twin")).eval(), tmp_path / "t.pth",
                    sidecar=True)  # fmt: skip
    (tmp_path / "t.vocab.json").write_text(tok.to_json())
    costs = load_costs()
    m = measure_model("twin", tmp_path / "t.pth", TEXT, 48, costs, "fp32", use_cache=False)
    prof = m["_profile"]
    ops = prof.ops[prof.ops.block.notna()]
    dense = ops[ops.kind.isin(MATRIX_KINDS) & (ops.primitive == "mac")].per_token.sum()
    wkv = prof.layers[(prof.layers.kind == "wkv") & prof.layers.block.notna()].out_per_token.sum()
    mac = costs.primitives("fp32")["mac"]
    e = m["energy_pj_per_token"]
    assert e["paper"] == pytest.approx((dense + 6 * wkv) * mac, rel=1e-12)
    assert e["paper_measured_rates"] == pytest.approx(e["paper"], rel=1e-12)
    assert e["spike_input_counterfactual"] == e["as_executed"]
