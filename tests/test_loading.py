"""Checkpoints and tokenizers: round trips, untrusted pickles, every error a user can hit."""

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from spikegpt import SpikeGPT, preset
from spikegpt.checkpoint import load_checkpoint, read_state_dict, save_checkpoint
from spikegpt.errors import CheckpointError, TextError, TokenizerError
from spikegpt.evaluate import evaluate, unigram_entropy_bits
from spikegpt.tokenizer import ByteTokenizer, CharTokenizer, HFTokenizer, load_tokenizer, read_text, resolve_tokenizer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def tiny_ckpt(tmp_path):
    torch.manual_seed(0)
    model = SpikeGPT(preset("tiny")).eval()
    path = tmp_path / "tiny.pth"
    save_checkpoint(model, path)
    return model, path


def _logits(model, idx):
    with torch.no_grad():
        return model(idx).logits


# --------------------------------------------------------------------------------------
# Round trips and formats
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip(tmp_path, suffix):
    torch.manual_seed(1)
    model = SpikeGPT(preset("tiny", n_layer=3, n_embd=24, vocab_size=50)).eval()
    path = tmp_path / f"m{suffix}"
    save_checkpoint(model, path)
    loaded, info = load_checkpoint(path)
    assert (info.config.n_layer, info.config.n_embd, info.config.vocab_size) == (3, 24, 50)
    assert len(info.sha256) == 64 and info.file_dtypes == ["float32"]
    idx = torch.randint(0, 50, (2, 10))
    assert torch.equal(_logits(model, idx), _logits(loaded, idx))


def test_reference_key_format(tiny_ckpt):
    _, path = tiny_ckpt
    keys = set(torch.load(path, weights_only=True))
    for k in ["emb.weight", "blocks.0.ln0.weight", "blocks.1.att.time_decay", "blocks.1.att.time_mix_k",
              "blocks.0.att.receptance.weight", "blocks.0.ffn.value.weight", "ln_out.bias", "head.weight"]:  # fmt: skip
        assert k in keys
    assert "blocks.1.ln0.weight" not in keys
    assert not any("lif" in k for k in keys)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_files(tiny_ckpt, tmp_path, dtype):
    model, path = tiny_ckpt
    sd = {k: v.to(dtype) for k, v in torch.load(path, weights_only=True).items()}
    p = tmp_path / "half.pth"
    torch.save(sd, p)
    loaded, info = load_checkpoint(p)
    assert info.file_dtypes == [str(dtype).removeprefix("torch.")]
    assert next(loaded.parameters()).dtype == torch.float32


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_nested_state_dict(tiny_ckpt, tmp_path, wrapper):
    model, path = tiny_ckpt
    p = tmp_path / "nested.pth"
    torch.save({wrapper: torch.load(path, weights_only=True), "epoch": 3}, p)
    loaded, _ = load_checkpoint(p)
    idx = torch.randint(0, 64, (1, 8))
    assert torch.equal(_logits(model, idx), _logits(loaded, idx))


def test_overrides_lif_and_embedding(tiny_ckpt):
    _, path = tiny_ckpt
    m, info = load_checkpoint(path, lif_threshold=0.1, lif_tau=3.0, binary_embedding=False)
    assert m.blocks[0].lif1.threshold == 0.1 and m.blocks[1].lif2.tau == 3.0 and m.encode is None


def test_sidecar_config(tmp_path):
    model = SpikeGPT(preset("tiny", ctx_len=48, lif_threshold=0.5))
    save_checkpoint(model, tmp_path / "m.pth", sidecar=True)
    loaded, info = load_checkpoint(tmp_path / "m.pth")
    assert (info.config.ctx_len, info.config.lif_threshold) == (48, 0.5)
    assert info.config_source.endswith("m.config.json")
    loaded, info = load_checkpoint(tmp_path / "m.pth", lif_threshold=0.2)  # an explicit option wins
    assert info.config.lif_threshold == 0.2
    (tmp_path / "m.config.json").write_text('{"n_layer": 7}')
    with pytest.raises(CheckpointError, match="says n_layer=7 but the weights have 2"):
        load_checkpoint(tmp_path / "m.pth")
    save_checkpoint(model, tmp_path / "plain.pth")
    assert load_checkpoint(tmp_path / "plain.pth")[1].config.ctx_len == 1024


def test_bpe_sized_checkpoint_defaults_to_float_embedding(tmp_path):
    model = SpikeGPT(preset("tiny", vocab_size=50277, n_embd=8, n_layer=1))
    save_checkpoint(model, tmp_path / "bpe.pth")
    loaded, info = load_checkpoint(tmp_path / "bpe.pth")
    assert info.config.binary_embedding is False and loaded.encode is None


# --------------------------------------------------------------------------------------
# Untrusted pickles
# --------------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_payload_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    torch.save({"emb.weight": torch.zeros(2, 2), "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refused to load .*evil.pth.*run Python code"):
        load_checkpoint(path)
    assert not marker.exists()


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def test_missing_keys(tiny_ckpt, tmp_path):
    _, path = tiny_ckpt
    sd = torch.load(path, weights_only=True)
    del sd["blocks.1.att.key.weight"], sd["head.weight"]
    torch.save(sd, tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match=r"missing 2 keys: blocks\.1\.att\.key\.weight, head\.weight"):
        load_checkpoint(tmp_path / "m.pth")


def test_unexpected_keys(tiny_ckpt, tmp_path):
    _, path = tiny_ckpt
    sd = torch.load(path, weights_only=True)
    sd["blocks.0.att.bonus"] = torch.zeros(3)
    torch.save(sd, tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match=r"unexpected 1 keys: 'blocks\.0\.att\.bonus'"):
        load_checkpoint(tmp_path / "m.pth")


def test_wrong_shapes(tiny_ckpt, tmp_path):
    _, path = tiny_ckpt
    sd = torch.load(path, weights_only=True)
    sd["blocks.0.ffn.key.weight"] = torch.zeros(100, 32)
    torch.save(sd, tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match=r"blocks\.0\.ffn\.key\.weight is \(100, 32\), expected \(128, 32\)"):
        load_checkpoint(tmp_path / "m.pth")


def test_truncated_and_non_checkpoint_files(tiny_ckpt, tmp_path):
    _, path = tiny_ckpt
    raw = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="is a zip archive that torch.load cannot read .*: it is truncated or "
                       "corrupt; download it again"):  # fmt: skip
        load_checkpoint(tmp_path / "cut.pth")
    (tmp_path / "text.pth").write_text("hello, I am not a checkpoint")
    with pytest.raises(CheckpointError, match="is a text file .UTF-8. that starts 'hello, I am"):
        load_checkpoint(tmp_path / "text.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pth")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(CheckpointError, match="not a readable .safetensors"):
        load_checkpoint(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "list.pth")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "list.pth")
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a SpikeGPT"):
        load_checkpoint(tmp_path / "other.pth")


def test_nan_weights_warn_and_say_where(tiny_ckpt, tmp_path, caplog):
    _, path = tiny_ckpt
    sd = torch.load(path, weights_only=True)
    sd["blocks.1.ffn.value.weight"][0, :3] = float("nan")
    torch.save(sd, tmp_path / "nan.pth")
    with caplog.at_level(logging.WARNING):
        _, info = load_checkpoint(tmp_path / "nan.pth")
    assert info.warnings == ["blocks.1.ffn.value.weight has 3 NaN/inf values of 4096"]
    assert "blocks.1.ffn.value.weight" in caplog.text


def test_read_state_dict_strips_ddp_prefix(tiny_ckpt, tmp_path):
    _, path = tiny_ckpt
    sd = torch.load(path, weights_only=True)
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "ddp.pth")
    assert set(read_state_dict(tmp_path / "ddp.pth")) == set(sd)


# --------------------------------------------------------------------------------------
# Tokenizers and text
# --------------------------------------------------------------------------------------


def test_char_vocab_utf8_and_utf16(tmp_path):
    vocab = {"0": "\n", "1": " ", "2": "a", "3": "b", "4": "é"}
    for enc in ("utf-8", "utf-16"):
        p = tmp_path / f"v-{enc}.json"
        p.write_bytes(json.dumps(vocab, ensure_ascii=False).encode(enc))
        tok = load_tokenizer(p)
        assert isinstance(tok, CharTokenizer) and tok.vocab_size == 5
        assert tok.encode("ab é\n") == [2, 3, 1, 4, 0] and tok.decode([2, 4]) == "aé"


def test_unknown_characters(tmp_path):
    tok = CharTokenizer({0: "a", 1: "b", 2: " "})
    with pytest.raises(TokenizerError, match=r"3 character\(s\) that are not in the vocabulary.*'x' x2.*'z' x1"):
        tok.encode("ab xxz")
    assert CharTokenizer(tok.itos, unknown="skip").encode("axb") == [0, 1]
    assert CharTokenizer(tok.itos, unknown={"*": " "}).encode("axb") == [0, 2, 1]
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        CharTokenizer(tok.itos, unknown={"x": "q"})


def test_bad_vocab_files(tmp_path):
    cases = {
        "gaps.json": ('{"0": "a", "2": "b"}', "without gaps"),
        "multi.json": ('{"0": "ab"}', "not a single character"),
        "notjson.json": ("{oops", "not valid JSON"),
        "list.json": ("[1, 2]", "non-empty JSON object"),
    }
    for name, (content, match) in cases.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(TokenizerError, match=match):
            load_tokenizer(tmp_path / name)
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.json")


def test_resolve_tokenizer(tmp_path):
    assert isinstance(resolve_tokenizer(256), ByteTokenizer)
    with pytest.raises(TokenizerError, match=r"20B_tokenizer\.json.*GPT-NeoX"):
        resolve_tokenizer(50277, checkpoint_path=tmp_path / "SpikeGPT-216M.pth")
    with pytest.raises(TokenizerError, match=r"vocab_book\.json"):
        resolve_tokenizer(77, checkpoint_path=tmp_path / "BookCorpus-SpikeGPT.pth")
    with pytest.raises(TokenizerError, match="--tokenizer"):
        resolve_tokenizer(100)
    ckpt = tmp_path / "m.pth"
    (tmp_path / "m.vocab.json").write_text(json.dumps({str(i): c for i, c in enumerate("abc")}))
    assert resolve_tokenizer(3, checkpoint_path=ckpt).encode("cab") == [2, 0, 1]
    with pytest.raises(TokenizerError, match="3 characters but the model has 5"):
        resolve_tokenizer(5, tokenizer_path=tmp_path / "m.vocab.json")


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("naïve ✓")) == "naïve ✓"


@pytest.mark.skipif(not (SHARED / "20B_tokenizer.json").exists(), reason="shared 20B tokenizer not present")
def test_real_neox_tokenizer_found_next_to_checkpoint(tmp_path):
    tok = HFTokenizer(SHARED / "20B_tokenizer.json")
    assert tok.vocab_size == 50277 and tok.decode([187]) == "\n"
    (tmp_path / "20B_tokenizer.json").symlink_to(SHARED / "20B_tokenizer.json")
    found = resolve_tokenizer(50277, checkpoint_path=tmp_path / "SpikeGPT-216M.pth")
    assert found.encode("Hello world\n") == tok.encode("Hello world\n")


@pytest.mark.skipif(not (SHARED / "vocab_book.json").exists(), reason="shared BookCorpus vocab not present")
def test_real_book_vocab_utf16():
    tok = load_tokenizer(SHARED / "vocab_book.json")
    assert tok.vocab_size == 77 and tok.decode([0]) == "\n"
    assert tok.decode(tok.encode("hello, world!")) == "hello, world!"


def test_read_text_errors(tmp_path):
    (tmp_path / "ok.txt").write_text("hello ✓\n", encoding="utf-8")
    assert read_text(tmp_path / "ok.txt") == "hello ✓\n"
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(TextError, match=r"not UTF-8 \(byte 0xe9 at offset 3\).*iconv"):
        read_text(tmp_path / "latin.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(TextError, match="empty"):
        read_text(tmp_path / "empty.txt")
    with pytest.raises(TextError, match="does not exist"):
        read_text(tmp_path / "none.txt")
    (tmp_path / "big.txt").write_text("x" * 2000)
    with pytest.raises(TextError, match="over the"):
        read_text(tmp_path / "big.txt", max_bytes=1000)


def test_evaluate_bpc_against_hand_computation(tiny_ckpt):
    model, _ = tiny_ckpt
    tok = CharTokenizer({i: chr(65 + i) for i in range(64)})
    text = "".join(chr(65 + (i * 7) % 64) for i in range(50))
    ev = evaluate(model, tok, text)
    ids = torch.tensor(tok.encode(text))
    with torch.no_grad():
        logp = torch.log_softmax(model(ids[None, :-1]).logits[0], -1)
    nats = -logp[torch.arange(49), ids[1:]].sum().item()
    assert ev.tokens == 49 and ev.bpc == pytest.approx(nats / 49 / 0.6931471805599453, rel=1e-5)
    assert unigram_entropy_bits([0, 0, 1, 1]) == pytest.approx(1.0)
