"""The on-disk baselines cache: a second run does not rebuild, a code change or another context
does, ``--no-cache`` bypasses it, and a corrupt entry is ignored and rebuilt (never unpickled)."""

import json
import pickle

import pandas as pd
import pytest
import torch

from energy.app.cli import main
from energy.comparing import cache
from energy.comparing.baselines import CLOSED_FORM_CONTEXTS, assume_activation_zeros, default_baselines
from spikegpt import SpikeGPT, SpikeGPTConfig
from spikegpt.checkpoint import save_checkpoint
from spikegpt.tokenizer import CharTokenizer

TEXT = "the cache must not change a single count; it must only save time. " * 20
CFG = SpikeGPTConfig(vocab_size=40, n_layer=1, n_embd=16, ctx_len=16)
NAME = "transformer-same-dims"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setattr(cache, "cache_dir", lambda: d)
    return d


@pytest.fixture
def counted(monkeypatch):
    """How many times the real counting ran, per baseline name."""
    calls = []

    def counting(config, context, include):
        calls.extend(include)
        return default_baselines(config, context, include=include)

    monkeypatch.setattr(cache, "default_baselines", counting)
    return calls


def assert_same_baseline(a, b):
    assert (a.name, a.description, a.params, a.context, a.uncounted, a.spiking) == (
        b.name, b.description, b.params, b.context, b.uncounted, b.spiking)  # fmt: skip
    pd.testing.assert_frame_equal(a.ops, b.ops, check_exact=True)
    pd.testing.assert_frame_equal(a.layers, b.layers, check_exact=True)


def test_second_call_reads_the_cache_and_gives_identical_counts(cache_dir, counted):
    first = cache.baselines(CFG, 16, (NAME,))[NAME]
    n = len(CLOSED_FORM_CONTEXTS)  # counted once at the contexts that fix its closed form, context 16 derived
    assert counted == [NAME] * n and len(list(cache_dir.glob("*.json"))) == n
    second = cache.baselines(CFG, 16, (NAME,))[NAME]
    assert counted == [NAME] * n  # not rebuilt
    assert_same_baseline(first, second)  # every field and column, bit for bit, dtypes included
    cache.baselines(CFG, 16, (NAME,), use_cache=False)
    assert counted == [NAME] * (n + 1)  # --no-cache rebuilds (at the context itself)


def test_key_covers_what_the_counts_depend_on(cache_dir, monkeypatch):
    k = cache.cache_key(NAME, CFG, 16)
    assert cache.cache_key(NAME, CFG, 32) != k  # context
    assert cache.cache_key(NAME, CFG.replace(n_embd=32), 16) != k  # dimensions
    assert cache.cache_key("gpt2-small", CFG, 16) == cache.cache_key("gpt2-small", CFG.replace(n_embd=32), 16)
    monkeypatch.setattr(cache, "code_hash", lambda: "another version of the counting code")
    assert cache.cache_key(NAME, CFG, 16) != k
    monkeypatch.undo()
    monkeypatch.setattr("energy.comparing.cache._version", lambda: "9.9.9")
    assert cache.cache_key(NAME, CFG, 16) != k


def test_code_hash_follows_the_counting_sources(tmp_path, monkeypatch):
    import hashlib
    import importlib.util
    from pathlib import Path

    expected = hashlib.sha256()
    for name in (
        "energy.comparing.baselines",
        "energy.measuring.rules",
        "energy.measuring.census",
        "energy.measuring.hooks",
        "energy.comparing.cache",
    ):
        expected.update(name.encode() + b"\0" + Path(importlib.util.find_spec(name).origin).read_bytes() + b"\0")
    assert cache.code_hash() == expected.hexdigest()


def _corrupt_truncated(p):
    p.write_text(p.read_text()[:100])


def _corrupt_number(p):  # valid JSON, schema-valid, one count changed: the checksum catches it
    d = json.loads(p.read_text())
    d["frames"]["ops"]["data"]["count"][0] += 1
    p.write_text(json.dumps(d))


def _corrupt_pickle(p):  # a pickle where JSON is expected is never unpickled
    p.write_bytes(pickle.dumps({"fields": {}, "frames": {}}))


def _corrupt_schema(p):
    d = json.loads(p.read_text())
    d["frames"]["ops"]["dtypes"]["count"] = "object; import os"
    p.write_text(json.dumps(d))


def _corrupt_nan(p):
    p.write_text(p.read_text().replace('"params":', '"params": NaN, "x":', 1))


def _rehashed(edit):  # a file written by hand, its checksum recomputed: only the schema checks can catch it
    def corrupt(p):
        d = json.loads(p.read_text())
        edit(d)
        d["sha256"] = cache._payload_hash(d["fields"], d["frames"])
        p.write_text(json.dumps(d))

    corrupt.__name__ = edit.__name__
    return corrupt


def _drop_per_token(d):  # the review's reproduction: a KeyError in the audit's waterfall, with a traceback
    del d["frames"]["ops"]["dtypes"]["per_token"], d["frames"]["ops"]["data"]["per_token"]


def _params_not_an_int(d):
    d["fields"]["params"] = "x"


def _spiking_not_a_bool(d):
    d["fields"]["spiking"] = 1


def _assumptions_not_strings(d):
    d["fields"]["assumptions"] = [1]


def _a_table_of_another_class(d):
    d["frames"]["neurons"] = d["frames"]["ops"]


def _layers_without_mac(d):
    del d["frames"]["layers"]["dtypes"]["mac"], d["frames"]["layers"]["data"]["mac"]


@pytest.mark.parametrize(
    "corrupt",
    [_corrupt_truncated, _corrupt_number, _corrupt_pickle, _corrupt_schema, _corrupt_nan]
    + [
        _rehashed(e)
        for e in (
            _drop_per_token,
            _params_not_an_int,
            _spiking_not_a_bool,
            _assumptions_not_strings,
            _a_table_of_another_class,
            _layers_without_mac,
        )
    ],  # fmt: skip
    ids=lambda f: f.__name__,
)
def test_corrupt_entry_is_ignored_and_rebuilt(cache_dir, counted, caplog, corrupt):
    first = cache.baselines(CFG, 12, (NAME,))[NAME]  # a context counted directly (not derived): one entry
    (entry,) = cache_dir.glob("*.json")
    corrupt(entry)
    again = cache.baselines(CFG, 12, (NAME,))[NAME]
    assert counted == [NAME, NAME]  # rebuilt
    assert "ignoring the corrupt baseline cache entry" in caplog.text
    assert_same_baseline(first, again)
    assert cache.read(entry.stem) is not None  # and the rebuilt entry is good


def test_the_key_names_the_libraries_a_derived_entry_comes_from(monkeypatch):
    """Review: a derived entry is pandas' result kept on disk, so the key names pandas, numpy and Python, and
    the cache module itself (how entries are read back and which one is used) is among the hashed sources."""
    from importlib import metadata

    assert "energy.comparing.cache" in cache.COUNTING_MODULES
    k = cache.cache_key(NAME, CFG, 29, derived_from=CLOSED_FORM_CONTEXTS)
    real = metadata.version
    for dist in ("pandas", "numpy"):
        with monkeypatch.context() as m:
            m.setattr(metadata, "version", lambda d, dist=dist: "0.0.0" if d == dist else real(d))
            assert cache.cache_key(NAME, CFG, 29, derived_from=CLOSED_FORM_CONTEXTS) != k, dist


def test_unwritable_cache_is_not_an_error(tmp_path, monkeypatch, caplog):
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(cache, "cache_dir", lambda: tmp_path / "file" / "cache")
    assert NAME in cache.baselines(CFG, 16, (NAME,))
    assert "could not write the baseline cache" in caplog.text


def test_second_profile_does_not_rebuild_and_no_cache_does(tmp_path, cache_dir, counted, capsys):
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    model = SpikeGPT(SpikeGPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_embd=16, ctx_len=16))
    save_checkpoint(model, tmp_path / "m.pth")
    (tmp_path / "m.vocab.json").write_text(tok.to_json())
    (tmp_path / "t.txt").write_text(TEXT)
    # --platform none: the chips section is not what is cached here
    args = ["profile", "--checkpoint", tmp_path / "m.pth", "--text", tmp_path / "t.txt", "--tokens", 16,
            "--census-tokens", 2, "--baselines", NAME, "--platform", "none"]  # fmt: skip
    summaries = []
    for i, extra in enumerate(([], [], ["--no-cache"])):
        assert main([str(a) for a in [*args, "--out", tmp_path / f"r{i}", *extra]]) == 0, capsys.readouterr().err
        summaries.append(json.loads((tmp_path / f"r{i}" / "summary.json").read_text()))
    # built, read from the cache, rebuilt with --no-cache (the RWKV twin runs with SpikeGPT, never cached)
    assert counted == [NAME] * (len(CLOSED_FORM_CONTEXTS) + 1)
    assert summaries[0]["baselines"] == summaries[1]["baselines"] == summaries[2]["baselines"]
    assert summaries[0]["headline"] == summaries[1]["headline"]


def test_compared_profiles_are_cached_exactly_and_rebuilt_when_corrupt(tmp_path, cache_dir, monkeypatch, caplog):
    """The models that the demo report and `pareto` compare: a second comparison reads their profiles from
    the cache and reports the same numbers, bit for bit; a corrupt entry is rebuilt; no cache rebuilds."""
    from energy.comparing import variants
    from energy.pricing.costs import load_costs

    tok = CharTokenizer.from_text(TEXT)
    paths = {}
    for seed, variant in ((0, "released"), (1, "twin")):
        torch.manual_seed(seed)
        cfg = SpikeGPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_embd=16, ctx_len=16, variant=variant)
        paths[variant] = tmp_path / f"{variant}.pth"
        save_checkpoint(SpikeGPT(cfg), paths[variant])
        (tmp_path / f"{variant}.vocab.json").write_text(tok.to_json())
    built = []
    real = variants.profile
    monkeypatch.setattr(variants, "profile", lambda *a, **k: built.append(1) or real(*a, **k))
    costs = load_costs()

    def compare(**kw):
        return strict_json(variants.compare(paths, TEXT, 24, costs, platforms=("none",), **kw))

    first = compare()
    assert len(built) == 2 and len(list((cache_dir.parent / "profiles").glob("*.json"))) == 2
    assert compare() == first and len(built) == 2  # read, not rebuilt, and the same numbers
    entry = sorted((cache_dir.parent / "profiles").glob("*.json"))[0]
    entry.write_text(entry.read_text()[:-10])  # truncated
    assert compare() == first and len(built) == 3
    assert "ignoring the corrupt profile cache entry" in caplog.text
    assert compare(use_cache=False) == first and len(built) == 5
    # issue 24: the tables the comparison never reads are not kept (nor returned, built or read alike)
    for entry in (cache_dir.parent / "profiles").glob("*.json"):
        assert {"positions", "rasters"}.isdisjoint(json.loads(entry.read_text())["frames"])
    for _ in range(2):  # read from the cache the second time
        m = variants.measure_model("r", paths["released"], TEXT, 24, costs, "fp32")
        assert m["_profile"].positions is None and m["_profile"].rasters is None
        assert not m["_profile"].neurons.empty  # what the firing rates are read from
    ids = list(range(5))
    light = cache.profile_key("c", ids, mode="parallel", without=["positions", "rasters"])
    assert cache.profile_key("c", ids, mode="parallel") != light
    # and the comparison's own key says so (review: the assertion above alone passes without it)
    keys = []
    real_key = cache.profile_key
    monkeypatch.setattr(cache, "profile_key", lambda *a, **k: keys.append(k) or real_key(*a, **k))
    variants.measure_model("r", paths["released"], TEXT, 24, costs, "fp32")
    assert keys and all(sorted(k.get("without", [])) == ["positions", "rasters"] for k in keys), keys


def test_cache_folders_are_pruned_least_recently_used_first(tmp_path, cache_dir, monkeypatch):
    """Review of issue 24: entries are written for every new text, option or code version; each folder is kept
    under its cap, the entries read or written longest ago deleted first."""
    import os

    from spikegpt.safeio import prune_oldest

    for i in range(5):
        p = tmp_path / f"{i}.json"
        p.write_text("x" * 100)
        os.utime(p, (1000 + i, 1000 + i))
    os.utime(tmp_path / "0.json")  # used just now: kept
    (tmp_path / "other.txt").write_text("y" * 1000)  # not an entry: never deleted
    assert prune_oldest(tmp_path, 250) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.json", "4.json", "other.txt"]
    assert prune_oldest(tmp_path, 250) == 0
    assert prune_oldest(tmp_path, 0, keep=tmp_path / "4.json") == 1 and (tmp_path / "4.json").exists()

    monkeypatch.setitem(cache.CAP_BYTES, "baselines", 1)  # smaller than one entry: each write keeps only itself
    cache.baselines(CFG, 12, (NAME,))
    first = cache.cache_key(NAME, CFG, 12)
    assert cache.read(first) is not None
    cache.baselines(CFG, 13, (NAME,))
    assert [p.stem for p in cache_dir.glob("*.json")] == [cache.cache_key(NAME, CFG, 13)]


def strict_json(d):
    from spikegpt.safeio import json_safe, strict_dumps

    return json.loads(strict_dumps(json_safe(d)))


def _same_counts(derived, fresh, rel=1e-12):
    """Every count of two baselines, with the same rows, equal to floating-point rounding."""
    assert (derived.name, derived.params, derived.context, derived.uncounted, derived.causal) == (
        fresh.name, fresh.params, fresh.context, fresh.uncounted, fresh.causal)  # fmt: skip
    for attr in ("ops", "eager_ops", "layers"):
        pd.testing.assert_frame_equal(getattr(derived, attr), getattr(fresh, attr), check_exact=False, rtol=rel)


def test_a_new_context_is_derived_exactly_and_never_recounted(cache_dir, counted):
    """Counted once at the small contexts that fix the closed form; contexts 29 and 41, never counted or cached,
    derived: the same counts as a fresh count at those contexts (the ReLU^2 transformer's zeros in random
    activations are not structural: compared with the pipeline's assumed sparsity applied, as it is used)."""
    names = ("transformer-same-dims", "transformer-same-dims-relu")
    for context in (29, 41):
        derived = cache.baselines(CFG, context, names)
        assert counted == [n for n in names for _ in CLOSED_FORM_CONTEXTS]  # the second context recounts nothing
        assert not (cache_dir / f"{cache.cache_key(names[0], CFG, context)}.json").exists()
        for name in names:
            fresh = default_baselines(CFG, context, include=(name,))[name]
            if name.endswith("-relu"):
                derived[name] = assume_activation_zeros(derived[name], 0.5, "test")
                fresh = assume_activation_zeros(fresh, 0.5, "test")
                assert derived[name].assumptions[0].startswith("model.transformer.h.0.mlp.c_proj: ")
                derived[name].assumptions = derived[name].assumptions[1:]
                for b in (derived[name], fresh):  # eager_ops keep the measured zeros: not structural
                    e = b.eager_ops
                    b.eager_ops = e[~(e.layer.str.endswith("mlp.c_proj") & (e.primitive == "effective_mac"))]
            _same_counts(derived[name], fresh)
            assert derived[name].assumptions == fresh.assumptions


def test_a_count_that_is_not_a_polynomial_in_the_context_is_refused():
    from energy.comparing.baselines import NotClosedForm, _derive

    cubic = {t: 2 * t**3 - t + 7 for t in CLOSED_FORM_CONTEXTS}
    assert _derive(cubic, 1000, "cubic") == 2 * 1000**3 - 1000 + 7
    with pytest.raises(NotClosedForm):
        _derive({t: t**4 for t in CLOSED_FORM_CONTEXTS}, 1000, "quartic")


def test_the_two_context_mechanisms_agree_where_their_questions_coincide():
    """``baselines.derive_baseline`` answers "the transformer built for context T" (its learned position table has T
    rows); ``decode.at_context`` answers "the same built transformer on sequences of c tokens" (its parameters
    unchanged). Every per-token count is the same for both: only the position table's size may differ. Checked on
    fresh counts: a model counted at 41 and taken to 29 by ``at_context`` counts what a model counted at 29 does."""
    from energy.comparing.decode import at_context

    at41 = default_baselines(CFG, 41, include=(NAME,))[NAME]
    at29 = default_baselines(CFG, 29, include=(NAME,))[NAME]
    moved = at_context(at41, 29)
    assert moved.context == 29
    cols = ["layer", "block", "kind", "stage", "primitive", "operand", "count", "per_token"]
    # Known limit of the closed form: it scales every row but attention as per token; a row counted once per
    # sequence (GPT-2's one scalar ``sub`` on the attention mask) is taken as 1/41 per token instead of 1/29
    once = (at29.ops.kind == "sub") & (at29.ops["count"] == 1)
    assert once.sum() == 1 and (at41.ops.loc[once.to_numpy(), "count"] == 1).all()
    assert moved.ops.loc[once.to_numpy(), "per_token"].item() == pytest.approx(1 / 41)
    pd.testing.assert_frame_equal(moved.ops[cols][~once.to_numpy()].reset_index(drop=True),
                                  at29.ops[cols][~once.to_numpy()].reset_index(drop=True),
                                  check_exact=False, rtol=1e-12, check_dtype=False)  # fmt: skip
    a, b = moved.layers.set_index("layer"), at29.layers.set_index("layer")
    position_table = [n for n in a.index if n.endswith("wpe")]
    assert position_table and (a.loc[position_table, "weight_elems"] > b.loc[position_table, "weight_elems"]).all()
    rest = a.drop(index=position_table)
    pd.testing.assert_frame_equal(rest, b.drop(index=position_table)[rest.columns], check_exact=False, rtol=1e-12,
                                  check_dtype=False)  # fmt: skip


def test_every_module_a_cache_key_hashes_exists():
    """A cached profile or baseline is keyed on the source of the code that made it; a name that does not resolve
    (a module renamed away, or never there: ``energy.classify`` was listed) must not drop out of the key silently.
    The compiled CPU kernels compute the spikes, so they are in the profiles' key."""
    import importlib.util

    for name in (*cache.PROFILING_MODULES, *cache.COUNTING_MODULES):
        assert importlib.util.find_spec(name) is not None, name
    assert {"spikegpt.cpu_kernels", "spikegpt._numba_loops"} <= set(cache.PROFILING_MODULES)
    assert len(cache.code_hash(cache.PROFILING_MODULES)) == 64


def _assert_identical(a, b):
    """Two baselines alike in every field, frames bit for bit (dtypes included)."""
    import dataclasses

    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, pd.DataFrame) or isinstance(y, pd.DataFrame):
            pd.testing.assert_frame_equal(x, y, check_exact=True)
        else:
            assert x == y, f.name


def test_a_derived_baseline_is_kept_and_read_back_exactly(cache_dir, counted, monkeypatch):
    """Issue 24: the baseline derived at a new context is kept in ``derived/``; a second call reads that one
    entry (no counted entry read, nothing derived again) and gets the derivation's result bit for bit; another
    context, other dimensions or other counting code is another entry; a corrupt one is derived again."""
    from energy.comparing import baselines as bl

    names = ("transformer-same-dims", "transformer-same-dims-relu")
    derived_dir = cache_dir.parent / "derived"
    first = cache.baselines(CFG, 29, names)
    assert len(list(derived_dir.glob("*.json"))) == 2
    samples = {t: cache.read(cache.cache_key(NAME, CFG, t)) for t in CLOSED_FORM_CONTEXTS}
    _assert_identical(first[NAME], bl.derive_baseline(samples, 29))  # what is kept is the derivation's result
    derives, reads = [], []
    real_derive, real_read = cache.derive_baseline, cache.read
    monkeypatch.setattr(cache, "derive_baseline", lambda *a: derives.append(1) or real_derive(*a))
    monkeypatch.setattr(cache, "read", lambda key, folder="baselines", *a: reads.append(folder) or real_read(
        key, folder, *a))  # fmt: skip
    second = cache.baselines(CFG, 29, names)
    assert derives == [] and reads == ["derived", "derived"]
    for name in names:
        _assert_identical(first[name], second[name])
    k = cache.cache_key(NAME, CFG, 29, derived_from=CLOSED_FORM_CONTEXTS)
    assert k != cache.cache_key(NAME, CFG, 29)  # never confused with an entry counted at 29
    assert k != cache.cache_key(NAME, CFG, 41, derived_from=CLOSED_FORM_CONTEXTS)
    assert k != cache.cache_key(NAME, CFG.replace(n_embd=32), 29, derived_from=CLOSED_FORM_CONTEXTS)
    with monkeypatch.context() as m:
        m.setattr(cache, "code_hash", lambda: "another version of the counting code (derive_baseline included)")
        assert cache.cache_key(NAME, CFG, 29, derived_from=CLOSED_FORM_CONTEXTS) != k
    entry = derived_dir / f"{k}.json"
    _corrupt_number(entry)
    third = cache.baselines(CFG, 29, (NAME,))[NAME]
    assert derives == [1]  # derived again from the counted entries, and the same baseline
    _assert_identical(first[NAME], third)
    assert counted == [n for n in names for _ in CLOSED_FORM_CONTEXTS]  # nothing was ever counted twice
