"""An honest headline and fair baselines (issue 11), and per-character comparisons (issue 10, item 9)."""

import json
import re
import shutil
import subprocess

import pytest

from energy import baselines as bl
from energy.cli import main
from energy.costs import load_costs
from energy.decode import _at_position, energy_by_position, transformer_energy
from energy.memory import memory_terms

L, D, V, T = 2, 32, 64, 24  # a tiny same-size transformer: layers, width, vocabulary, sequence


@pytest.fixture(scope="module")
def same_dims():
    return {
        name: bl.count_gpt2(name, T, n_layer=L, n_embd=D, n_head=1, vocab_size=V)
        for name in ("transformer-same-dims", "transformer-same-dims-relu")
    }


def test_relu_transformer_dense_and_effective_macs_by_hand(same_dims):
    """The ReLU^2 transformer has the same dense MACs as the GELU one (12 L d^2 + V d + (T + 1) d L, attention
    causal); crediting it an activation sparsity z leaves (1 - z) of its down-projection MACs."""
    relu = same_dims["transformer-same-dims-relu"]
    dense = 12 * L * D * D + V * D + (T + 1) * D * L
    assert relu.ops_per_token()["mac"] == dense == same_dims["transformer-same-dims"].ops_per_token()["mac"]
    z = 0.63
    credited = bl.assume_activation_zeros(relu, z, "a test")
    down = credited.ops[credited.ops.layer.str.endswith("mlp.c_proj")]
    assert down[down.primitive == "effective_mac"].per_token.sum() == pytest.approx(L * 4 * D * D * (1 - z))
    others = credited.ops[~credited.ops.layer.str.endswith("mlp.c_proj") & (credited.ops.primitive == "effective_mac")]
    before = relu.ops[~relu.ops.layer.str.endswith("mlp.c_proj") & (relu.ops.primitive == "effective_mac")]
    assert others.per_token.sum() == pytest.approx(before.per_token.sum())  # nothing else changes
    assert any("63.0% zeros" in a for a in credited.assumptions)


def test_int8_ann_is_priced_with_32_bit_accumulation(same_dims):
    b = same_dims["transformer-same-dims"]
    costs = load_costs()
    e8 = b.energy("as_executed", costs, "int8")
    mac = e8[e8.primitive == "effective_mac"].pj.sum()
    assert mac == pytest.approx(b.ops_per_token()["effective_mac"] * (0.2 + 0.1))  # int8 mul + int32 add


def test_kv_cache_bytes_at_position_t(same_dims):
    """Decode at batch 1: generating token t reads K and V of t positions, 2 x t x d values per layer."""
    b = same_dims["transformer-same-dims"]
    costs = load_costs(sram_budget_bytes=0)  # every cache in DRAM, so its bytes are its own row
    for t in (1, 7, T):
        _, lay = _at_position(b, t)
        terms = memory_terms(lay, costs, "fp32", batch=1)
        kv = terms[terms.stage.str.startswith("memory.kv-cache")]
        assert kv.amount.sum() == pytest.approx(2 * t * D * L * 4, rel=1e-9), t
    ex = [transformer_energy(b, t, costs, "fp32", memory=False) for t in (1, 2, 3)]
    assert ex[2] - ex[1] == pytest.approx(ex[1] - ex[0])  # compute grows linearly with the position
    assert ex[1] > ex[0]


@pytest.mark.parametrize("budget", [None, 0, 3 * 2 * D * L * 4 * 4])  # default; all in DRAM; the cache spills
def test_decode_curve_by_position_equals_pricing_each_position(same_dims, budget):
    """The decode curve prices compute once and scales attention; it must give what pricing the ops and layers
    at each position does, with and without memory traffic, also where the K/V cache leaves the SRAM."""
    b = same_dims["transformer-same-dims"]
    costs = load_costs(sram_budget_bytes=budget)
    cost = energy_by_position(b, costs, "fp32")
    for t in (1, 2, 5, 11, T):
        for memory in (False, True):
            assert cost(t, memory) == pytest.approx(transformer_energy(b, t, costs, "fp32", memory), rel=1e-12)


def test_per_character_uses_each_models_own_tokenizer():
    """Item 9: a baseline's characters per token come from its own tokenizer on the same text."""
    text = "Hello world"
    cpt, src = bl.chars_per_token("gpt2-small", text, own=1.0)
    assert cpt == pytest.approx(len(text) / 2) and "GPT-2" in src  # GPT-2: [15496, 995]
    assert bl.chars_per_token("transformer-paper-table2", "é!", own=1.0)[0] == pytest.approx(2 / 3)  # bytes
    assert bl.chars_per_token("transformer-same-dims", text, own=1.7)[0] == 1.7  # the checkpoint's vocabulary


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    """The bundled demo profiled as the README's command does, shortened, with one model of another size."""
    out = tmp_path_factory.mktemp("demo") / "report"
    args = ["profile", "--tokens", "128", "--baselines", "transformer-same-dims,gpt2-small", "--platform", "none",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    return out


@pytest.mark.slow  # headless Chromium
def test_demo_headline_in_the_browser(demo_report, tmp_path):
    """Rendered in headless Chromium: the first sentence answers the paper's claim against the same-size
    transformer and names the twin; no ratio to a model of another size appears in the summary cards."""
    s = json.loads((demo_report / "summary.json").read_text())
    h = s["headline"]
    assert h["comparator"] == "transformer-same-dims" and "gpt2-small" in h["scale"]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium binary")
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
             (demo_report / "report.html").as_uri()]  # fmt: skip
    dom = subprocess.run(flags, capture_output=True, text=True, timeout=90).stdout
    answer = re.search(r'<p class="answer" id="headline">(.*?)</p>', dom, re.S).group(1)
    first = answer.split(". ")[0].replace("&#39;", "'")
    assert "paper's 32.2× fewer operations" in first
    assert "transformer of the same size" in first and "non-spiking twin" in first
    assert f"{s['model']['n_layer']} layers × {s['model']['n_embd']}" in first
    assert "The cause, measured: no projection reads spikes" in answer
    cards = dom[dom.index('<div class="cards">') : dom.index("</div>\n  <p", dom.index('<div class="cards">'))]
    assert "gpt2" not in cards.lower()
    scale = h["scale"]["gpt2-small"]["ratio_per_char"]
    for v in scale.values():
        for shown in (f"{v:.2f}×", f"{v:.1f}×", f"{v:,.0f}×"):
            assert shown not in cards
    # the scale panel shows it, per character, apart
    assert 'id="scale"' in dom and "gpt2-small" in dom.split('id="scale"')[1].split("</table>")[0]


def test_demo_variants_run_the_same_tokens_as_the_main_run(demo_report):
    """The released model in the variants section is the profiled model on the same tokens: the same count
    of scored tokens, the same bits per character and firing rate as the report's header."""
    s = json.loads((demo_report / "summary.json").read_text())
    released = next(m for m in s["variants"]["models"] if m["variant"] == "released")
    assert released["tokens"] == s["tokens"] == 128
    assert released["bpc"] == pytest.approx(s["bpc"], rel=1e-6)
    assert released["firing_rate_overall"] == pytest.approx(s["firing_rate"]["overall"], rel=1e-6)


def test_census_note_counts_its_tokens_in_words(demo_report):
    """The default census runs on one token, and the report says "1 token", not "1 tokens"."""
    s = json.loads((demo_report / "summary.json").read_text())
    assert s["census"]["tokens"] == 1
    html = (demo_report / "report.html").read_text()
    assert "first 1 token of each row" in html and "first 1 tokens" not in html


def test_headline_names_the_mean_document_length_for_a_corpus():
    """A corpus runs each document as its own sequence: the comparator's sequence length is their mean,
    and the sentence says so instead of "the same N-token sequences"."""
    from energy.headline import _sentence

    h = {"holds": False, "op_ratio": 2.0, "energy_ratio": {"as_executed": 2.0, "as_executed_memory": 3.0},
         "zero_skipping": True, "twin_ratio": {"as_executed": 1.01, "as_executed_memory": 1.01}, "cause": "x",
         "context": {"spikegpt_tokens": 2524, "comparator": 2524, "set_by_user": False, "documents": 36}}  # fmt: skip
    model = {"n_layer": 4, "n_embd": 192, "vocab_size": 84}
    text = _sentence(h, model, 32.2, "transformer-same-dims", "rwkv-twin")
    assert "sequences of 2,524 tokens, the mean length of the 36 documents" in text
    h["context"]["documents"] = 1
    assert "the same 2,524-token sequences" in _sentence(h, model, 32.2, "transformer-same-dims", "rwkv-twin")
