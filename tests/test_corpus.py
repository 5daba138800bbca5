"""Corpus input, exact mergeable counters, per-document results, bootstrap intervals, resume.

Each test builds its own tiny model and corpus; independent computations are profiles of
each document on its own (``energy.profile``), or hand-worked statistics.
"""

import dataclasses
import io
import json
import math
import os
from collections import Counter

import numpy as np
import pytest
import torch

import energy
from energy.comparing.uncertainty import _units, ratio_interval, resample_weights, run_intervals, unit_energy
from energy.measuring.corpus import open_corpus
from energy.measuring.dist import Dist
from energy.measuring.hooks import Tally
from energy.measuring.profile import build_profile, frames
from energy.measuring.runner import CorpusRun, RunSettings, RunState, read_state
from energy.pricing.estimate import SCENARIOS, scenario_energy
from spikegpt import SpikeGPT, SpikeGPTConfig
from spikegpt.errors import SpikeEnergyError, TextError
from spikegpt.tokenizer import CharTokenizer

ALPHABET = "abcdefghijklmnopqrstuvwxyz .,\n"


def make_docs(n: int, seed: int = 0) -> list[dict]:
    """Documents of uneven lengths (one shorter than 2 tokens), two domains."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        length = [1, 7, 40, 75, 23, 130][i % 6] + int(rng.integers(0, 9))
        text = "".join(rng.choice(list(ALPHABET), size=length))
        docs.append({"text": text, "source": f"s{i % 3}", "domain": "odd" if i % 2 else "even"})
    docs[0]["text"] = "x"  # fewer than 2 tokens: skipped
    return docs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    tok = CharTokenizer.from_text(ALPHABET)
    torch.manual_seed(0)
    model = SpikeGPT(SpikeGPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_embd=32, ctx_len=16)).eval()
    docs = make_docs(9)
    path = d / "c.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in docs))
    return model, tok, docs, path


class Only(Dist):
    """A 'rank' that owns exactly the documents in ``keep`` (to split a corpus into A and B)."""

    def __init__(self, keep):
        super().__init__()
        self.keep = set(keep)

    def owns(self, index: int) -> bool:
        return index in self.keep


@pytest.fixture(scope="module")
def whole(setup) -> RunState:
    """The uninterrupted single-process run of the test corpus."""
    model, tok, _, path = setup
    return run_corpus(model, tok, path)


def run_corpus(model, tok, path, d=None, **kw) -> RunState:
    s = RunSettings(**kw)
    return CorpusRun({"m": model}, tok, open_corpus(path), s, d).run()


# --------------------------------------------------------------------------------------
# Corpus input
# --------------------------------------------------------------------------------------


def test_corpus_kinds_read_documents_in_order(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "skip.md").write_text("not a .txt")
    docs = [(d.index, d.name, "".join(d.pieces())) for d in open_corpus(tmp_path).documents()]
    assert docs == [(0, "a.txt", "first"), (1, "b.txt", "second")]
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "c.txt").write_text("third")
    names = [d.name for d in open_corpus(f"{tmp_path}/**/*.txt").documents()]
    assert [os.path.basename(n) for n in names] == ["a.txt", "b.txt", "c.txt"]
    j = tmp_path / "x.jsonl"
    j.write_text('{"text": "one", "source": "A", "domain": "D"}\n\n{"text": "two"}\n')
    got = [(d.index, d.name, d.source, d.domain, "".join(d.pieces())) for d in open_corpus(j).documents()]
    assert got == [(0, "x.jsonl:1", "A", "D", "one"), (1, "x.jsonl:3", "x.jsonl", "", "two")]
    stdin = io.BytesIO(b"from a pipe")
    assert ["".join(d.pieces()) for d in open_corpus("-", stdin=stdin).documents()] == ["from a pipe"]


def test_long_file_streams_in_pieces_cut_at_newlines(tmp_path, monkeypatch):
    import energy.measuring.corpus as corpus

    text = "".join(f"línea {i} — ünïcödé\n" for i in range(500))  # multi-byte characters across piece edges
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    monkeypatch.setattr(corpus, "PIECE_BYTES", 64)
    pieces = list(corpus._file_pieces(tmp_path / "t.txt", 64))
    assert "".join(pieces) == text
    assert len(pieces) > 100 and all(p.endswith("\n") for p in pieces)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda d: os.mkfifo(d / "f.txt"), "FIFO"),
        (lambda d: (d / "e").mkdir(), r"no \*\.txt files"),
        (lambda d: (d / "x.jsonl").write_text('{"text": "ok"}\nnot json\n'), "x.jsonl:2 is not a JSON object"),
        (lambda d: (d / "x.jsonl").write_text('{"txt": "ok"}\n'), 'no "text" string'),
        (lambda d: (d / "x.jsonl").write_text('{"text": "ok", "domain": 3}\n'), '"domain" must be a string'),
        (lambda d: (d / "x.jsonl").write_text('{"text": NaN}\n'), "not a JSON object"),
        (lambda d: (d / "l.txt").write_bytes(b"caf\xe9 " * 50), "not UTF-8"),
    ],
)
def test_bad_corpora_are_refused_with_one_line(tmp_path, make, message):
    make(tmp_path)
    target = next(tmp_path.iterdir())
    with pytest.raises(SpikeEnergyError, match=message) as e:  # a FIFO must be refused, not opened (it would block)
        for doc in open_corpus(target).documents():
            list(doc.pieces())
    assert "\n" not in str(e.value)


def test_devices_and_missing_globs_are_refused(tmp_path):
    if os.path.exists("/dev/zero"):
        with pytest.raises(SpikeEnergyError, match="character device"):
            open_corpus("/dev/zero")
    with pytest.raises(TextError, match="matches no files"):
        open_corpus(f"{tmp_path}/*.nothing")


# --------------------------------------------------------------------------------------
# Exact, mergeable counters
# --------------------------------------------------------------------------------------


def test_corpus_run_equals_each_document_profiled_alone(setup, whole):
    """Each document is its own sequence (state reset): the corpus counts are the sum of the
    counts of ``energy.profile`` on each document separately (an independent path)."""
    model, tok, docs, path = setup
    state = whole
    counts, nats, tokens = Counter(), [], 0
    for d in docs:
        ids = tok.encode(d["text"])
        if len(ids) < 2:
            continue
        p = energy.profile(model, torch.tensor(ids))
        for r in p.ops.itertuples():
            counts[(r.layer, r.kind, r.stage, r.primitive, r.operand)] += r.count
        nats.append(p.meta["nats"])
        tokens += p.tokens
    total = state.tracks["m"].total
    assert +total.counts == +counts
    assert total.tokens == state.tokens == tokens
    assert state.nats == pytest.approx(math.fsum(nats), rel=1e-12)
    assert state.skipped == [0] and [d.index for d in state.docs] == list(range(1, len(docs)))
    assert [d.tokens for d in state.docs] == [len(x["text"]) - 1 for x in docs[1:]]


def test_merge_of_parts_equals_the_whole(setup, whole):
    """profile(A + B) == merge(profile(A), profile(B)): counts exactly, floats to 1e-12."""
    model, tok, docs, path = setup
    a = run_corpus(model, tok, path, Only(range(0, 4)))
    b = run_corpus(model, tok, path, Only(range(4, 9)))
    merged = RunState.from_bytes(a.to_bytes()).merge(RunState.from_bytes(b.to_bytes()))
    tw, tm = whole.tracks["m"], merged.tracks["m"]
    assert tw.total == tm.total
    assert tw.doc_units.keys() == tm.doc_units.keys()
    assert all(tw.doc_units[u] == tm.doc_units[u] for u in tw.doc_units)
    assert [(d.index, d.tokens, d.chars, d.crc, d.spikes) for d in whole.docs] == [
        (d.index, d.tokens, d.chars, d.crc, d.spikes) for d in merged.docs
    ]
    assert [d.nats for d in whole.docs] == [d.nats for d in merged.docs]
    assert merged.nats == pytest.approx(whole.nats, rel=1e-12)
    assert merged.raster == whole.raster and merged.census_ids == whole.census_ids
    s = RunSettings()
    pw = build_profile(model, whole, "m", s)
    pm = build_profile(model, merged, "m", s)
    assert pw.ops[["layer", "stage", "primitive", "operand", "count"]].equals(
        pm.ops[["layer", "stage", "primitive", "operand", "count"]]
    )
    num = pw.layers.select_dtypes("number").columns
    np.testing.assert_allclose(pw.layers[num].to_numpy(float), pm.layers[num].to_numpy(float), rtol=1e-12)
    assert pw.firing_rates == pytest.approx(pm.firing_rates, rel=1e-12)
    assert pw.meta["bits_per_token"] == pytest.approx(pm.meta["bits_per_token"], rel=1e-12)
    iw = run_intervals(whole, s, {"m": model}, {"m": pw}, {}, pw.costs, "fp32")
    im = run_intervals(merged, s, {"m": model}, {"m": pm}, {}, pm.costs, "fp32")
    assert iw["firing_rate"] == im["firing_rate"] and iw["bpc"] == im["bpc"]


def test_only_the_owner_of_the_first_scored_document_records_the_raster(setup, whole):
    """The merged state keeps the raster, census tokens and excerpt of the first document that scores tokens
    (document 0 has one token: document 1). A rank that does not own it records none: for the 216M model a
    raster is ~5 MB of state that rank 0 used to receive, parse and throw away (some 0.3 s of every merge)."""
    model, tok, docs, path = setup
    assert whole.raster_doc == 1 and whole.raster and whole.census_ids
    for keep, records in (([0, 1, 5], True), (range(4, 9), False), ([0, 2, 3], False), ([1], True)):
        part = run_corpus(model, tok, path, Only(keep))
        if records:
            assert part.raster_doc == 1 and part.raster == whole.raster and part.census_ids == whole.census_ids
            assert part.excerpt == whole.excerpt
        else:
            assert (part.raster_doc, part.raster, part.census_ids, part.excerpt) == (-1, {}, [], ""), keep


def test_phase_timers_add_up_to_the_run(setup):
    """``CorpusRun.phase_s``: the blocks lie within the documents, which with the wait lie within the run."""
    model, tok, docs, path = setup
    run = CorpusRun({"m": model}, tok, open_corpus(path), RunSettings())
    run.run()
    ph = run.phase_s
    assert 0 < ph["blocks"] <= ph["documents"] and ph["documents"] + ph["wait"] <= run.wall_s and ph["merge"] >= 0


class Rank0Of2(Only):
    """Rank 0 of two in one process: the other rank's state arrives as the bytes given."""

    def __init__(self, keep, other: bytes):
        super().__init__(keep)
        self.rank, self.world, self.other, self.sent = 0, 2, other, []

    def gather_bytes(self, data: bytes) -> list[bytes]:
        self.sent.append(data)
        return [data, self.other]


def test_rank_0_merges_its_own_state_without_the_bytes_round_trip(setup, whole, monkeypatch):
    """Rank 0 sends nothing in the final gather and merges its state as it is; the merge equals the whole run."""
    import energy.measuring.runner as runner

    class NoSync:  # no process group here: the progress thread is not under test
        def __init__(self, *a, **k):
            pass

        def stop(self, wait=True):
            pass

    monkeypatch.setattr(runner, "ProgressSync", NoSync)
    model, tok, docs, path = setup
    other = run_corpus(model, tok, path, Only(range(1, 9, 2))).to_bytes()
    d = Rank0Of2(range(0, 9, 2), other)
    merged = run_corpus(model, tok, path, d)
    assert d.sent == [b""]
    assert merged.tracks["m"].total == whole.tracks["m"].total
    assert merged.tracks["m"].doc_units.keys() == whole.tracks["m"].doc_units.keys()
    assert all(merged.tracks["m"].doc_units[u] == t for u, t in whole.tracks["m"].doc_units.items())
    assert [dataclasses.astuple(x) for x in merged.docs] == [dataclasses.astuple(x) for x in whole.docs]
    assert merged.skipped == whole.skipped and merged.raster == whole.raster and merged.nats == whole.nats


def test_state_file_is_npz_without_pickle(setup, tmp_path):
    model, tok, docs, path = setup
    state = run_corpus(model, tok, path, max_tokens=60)
    data = state.to_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    again = RunState.from_bytes(data)
    assert again.tracks["m"].total == state.tracks["m"].total and again.docs == state.docs
    evil = tmp_path / "state.npz"
    np.savez(evil, header=np.array([{"x": 1}], dtype=object))  # an object array can only load by unpickling
    with pytest.raises(SpikeEnergyError, match="not a readable spike-energy run state"):
        read_state(evil)


def test_progress_reports_tokens_done(setup, monkeypatch):
    import energy.measuring.runner as runner

    model, tok, docs, path = setup
    seen = []
    monkeypatch.setattr(runner.time, "monotonic", iter(range(0, 10**6, 10)).__next__)  # every call reports
    s = RunSettings(max_tokens=120)
    state = CorpusRun({"m": model}, tok, open_corpus(path), s, progress=lambda d, t: seen.append((d, t))).run()
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == state.tokens == 120
    assert all(t == 120 for _, t in seen[1:])  # the total is the cap (the corpus is larger)


def test_max_tokens_caps_the_total_in_corpus_order(setup):
    model, tok, docs, path = setup
    state = run_corpus(model, tok, path, max_tokens=50)
    assert state.tokens == 50
    expected, left = [], 50
    for x in docs[1:]:  # scored tokens per document, in order, until the cap (the last one cut)
        if left <= 0:
            break
        expected.append(min(len(x["text"]) - 1, left))
        left -= expected[-1]
    assert (
        [d.tokens for d in state.docs] == expected
        and len(expected) >= 2
        and expected[-1] < len(docs[len(expected)]["text"]) - 1
    )


def test_rates_by_domain_match_the_documents_of_each_domain(setup, whole):
    """The by-domain table: each group's rates are its own documents' spikes / steps (by hand)."""
    from energy.comparing.uncertainty import group_table

    model, tok, docs, path = setup
    tr = whole.tracks["m"]
    lif = [k for k, v in tr.static["kinds"].items() if v == "lif"]
    g = group_table(whole, RunSettings(), tr.total.widths, lif)
    assert g["by"] == "domain" and [r["group"] for r in g["rows"]] == ["odd", "even"]
    for row in g["rows"]:
        members = [d for d in whole.docs if d.domain == row["group"]]
        for k in lif:
            expected = sum(d.spikes[k] for d in members) / sum(d.tokens * tr.total.widths[k] for d in members)
            assert row["firing_rate"][k]["value"] == pytest.approx(expected, rel=1e-12)
        assert row["documents"] == len(members) and row["tokens"] == sum(d.tokens for d in members)
        iv = row["bpc"]
        assert iv["lo"] <= iv["value"] <= iv["hi"]


# --------------------------------------------------------------------------------------
# Intervals
# --------------------------------------------------------------------------------------


def test_bootstrap_interval_matches_a_known_variance():
    """Units with value ~ N(mu, sigma^2) and equal weight: the 95% interval of the mean is
    mean +- 1.96 sigma / sqrt(n), and it covers mu in about 95% of repetitions."""
    rng = np.random.default_rng(1)
    n, mu, sigma = 400, 0.3, 0.05
    x = rng.normal(mu, sigma, n)
    w = resample_weights(n, 4000, seed=0)
    lo, hi = ratio_interval(w, x, np.ones(n))
    expected = 1.96 * sigma / math.sqrt(n)
    assert (hi - lo) / 2 == pytest.approx(expected, rel=0.1)
    covered = 0
    w = resample_weights(60, 1000, seed=2)
    for _ in range(200):
        y = rng.normal(mu, sigma, 60)
        lo, hi = ratio_interval(w, y, np.ones(60))
        covered += lo <= mu <= hi
    assert 0.88 <= covered / 200 <= 0.99


def test_ratio_bootstrap_uses_sums_not_means_of_ratios():
    """A ratio of sums: a big unit weighs more. Hand-worked: two units with (num, den) = (1, 1)
    and (30, 10); every resample is (1,1)x2, (30,10)x2 or one of each -> 1.0, 3.0 or 31/11."""
    w = resample_weights(2, 2000, seed=0)
    stat = (w @ np.array([1.0, 30.0])) / (w @ np.array([1.0, 10.0]))
    assert set(np.round(stat, 12)) <= {1.0, 3.0, round(31 / 11, 12)}
    lo, hi = ratio_interval(w, [1.0, 30.0], [1.0, 10.0])
    assert (float(lo), float(hi)) == (1.0, 3.0)


def test_unit_energies_add_up_and_match_units_priced_alone(setup, whole):
    model, tok, docs, path = setup
    state = whole
    s = RunSettings()
    prof = build_profile(model, state, "m", s)
    kind, keys, tallies, tokens, _, _ = _units(state, s)
    assert kind == "documents" and len(keys) == len(state.docs)
    # An SRAM budget that holds the model's weights once but not once per unit: the units must each be
    # priced as the whole model (pricing them together once placed len(units) copies of the weights, and
    # the demo's "+ memory" intervals came out 12x too high).
    weights = float((prof.layers.weight_elems.fillna(0) * 4).sum())
    costs = dataclasses.replace(prof.costs, sram_budget_bytes=1.5 * weights)
    e = unit_energy(model, tallies["m"], state.tracks["m"].static, SCENARIOS, costs, "fp32")
    point = {s: float(scenario_energy(s, prof.ops, prof.layers, costs, "fp32").pj.sum()) for s in SCENARIOS}
    for scen in SCENARIOS:
        assert e[scen].sum() / tokens.sum() == pytest.approx(point[scen], rel=1e-9), scen
    o, la = frames(model, tallies["m"][2], state.tracks["m"].static)  # one unit priced on its own
    for scen in SCENARIOS:
        alone = scenario_energy(scen, o, la, costs, "fp32").pj.sum() * tallies["m"][2].tokens
        assert e[scen][2] == pytest.approx(alone, rel=1e-12)


def test_single_sequence_uses_a_block_bootstrap(tiny32):
    ids = torch.randint(0, 64, (1, 16 * 12 + 1), generator=torch.Generator().manual_seed(0))
    from energy.measuring.runner import CorpusRun as Run

    s = RunSettings(concat=True, tokens=16 * 12, chunk_len=16)
    state = Run({"m": tiny32}, None, None, s, rows=ids).run()
    prof = build_profile(tiny32, state, "m", s)
    iv = run_intervals(state, s, {"m": tiny32}, {"m": prof}, {}, prof.costs, "fp32")
    assert iv["unit"] == "blocks" and iv["units"] == 12
    assert "12 blocks of 16 consecutive tokens" in iv["method"]
    rate = iv["firing_rate"]["overall"]
    assert rate["lo"] <= rate["value"] <= rate["hi"] and rate["lo"] < rate["hi"]
    # the blocks add up to the run
    total = Tally()
    for t in state.tracks["m"].block_units.values():
        total.add(t, detail=False)
    assert +total.counts == +state.tracks["m"].total.counts


# --------------------------------------------------------------------------------------
# Interrupt and resume
# --------------------------------------------------------------------------------------


def test_error_mid_run_flushes_partial_state_and_resume_completes_it(setup, whole, tmp_path):
    """An exception (as SIGTERM becomes in the CLI) flushes what was done; --resume skips it
    and ends with the state of an uninterrupted run."""
    model, tok, docs, path = setup
    ck = tmp_path / "partial"
    calls = {"n": 0}
    forward = model.forward
    fp = {"max_tokens": None}  # what the CLI records of the settings

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 14:  # in document 5: after the checkpoint at document 3, and document 4
            raise KeyboardInterrupt
        return forward(*a, **k)

    model.forward = failing
    try:
        with pytest.raises(KeyboardInterrupt):
            run_corpus(model, tok, path, checkpoint_every=100, checkpoint_dir=ck, fingerprint=fp)
    finally:
        model.forward = forward
    files = sorted(p.name for p in ck.iterdir())
    assert "state.npz" in files and any(f.startswith("delta-") for f in files)
    resumed = run_corpus(model, tok, path, checkpoint_every=100, checkpoint_dir=ck, resume=True, fingerprint=fp)
    assert resumed.tracks["m"].total == whole.tracks["m"].total
    assert [d.nats for d in resumed.docs] == [d.nats for d in whole.docs]
    assert resumed.raster == whole.raster and resumed.skipped == whole.skipped
    with pytest.raises(SpikeEnergyError, match="different settings"):
        run_corpus(model, tok, path, checkpoint_every=100, checkpoint_dir=ck, resume=True, max_tokens=10,
                   fingerprint={"max_tokens": 10})  # fmt: skip
