"""The profiled pass's shortcuts give the results of the long way (issue 24, target 2)."""

import importlib
from collections import Counter

import pandas as pd
import pytest
import torch

import energy
from spikegpt import SpikeGPT, preset

profile_module = importlib.import_module("energy.measuring.profile")  # the module, not the function of that name


def _census_calls(monkeypatch) -> list:
    calls = []
    real = profile_module.census

    def counting(model, fn):
        calls.append(model)
        return real(model, fn)

    monkeypatch.setattr(profile_module, "census", counting)
    return calls


def test_the_census_is_remembered_per_model_and_rerun_when_it_may_differ(monkeypatch):
    torch.manual_seed(0)
    model = SpikeGPT(preset("tiny", n_layer=2)).eval()
    ids = torch.randint(0, model.config.vocab_size, (20,))
    calls = _census_calls(monkeypatch)
    first = energy.profile(model, ids)
    again = energy.profile(model, ids)
    assert len(calls) == 1  # the second profile reused the census
    pd.testing.assert_frame_equal(first.census, again.census)
    profile_module._CENSUS_MEMO.clear()
    fresh = energy.profile(model, ids)
    assert len(calls) == 2
    pd.testing.assert_frame_equal(fresh.census, again.census)
    assert fresh.ops.equals(again.ops)

    energy.profile(model, ids, mode="streaming")  # another mode: another census
    assert len(calls) == 3
    model.double()  # other dtypes: another census
    energy.profile(model, ids)
    assert len(calls) == 4
    lin = model.blocks[0].att.key
    lin.forward = lambda x: torch.nn.functional.linear(x, lin.weight).exp().log()  # patched: new ops
    patched = energy.profile(model, ids)
    assert len(calls) == 5
    assert "aten::exp" in set(patched.census.query("module == 'blocks.0.att.key'").aten_op)


def test_counting_zeros_counts_what_numpy_counts_as_nonzero():
    import numpy as np

    from energy.measuring.census import count_nonzero as census_count
    from energy.measuring.hooks import count_nonzero

    g = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        a = g.standard_normal((7, 300)).astype(dtype)
        a[a < 0.3] = 0
        a[0, :5] = [np.nan, -0.0, np.inf, -np.inf, 1e-45 if dtype == np.float32 else 5e-324]  # subnormal: nonzero
        assert count_nonzero(a) == np.count_nonzero(a) == census_count(torch.from_numpy(a))
        assert count_nonzero(a[:, ::3]) == np.count_nonzero(a[:, ::3])  # strided views too


def test_spike_counts_of_a_chunk_equal_the_integer_sums():
    """The per-neuron and per-position spike counts of a 256-token chunk (float sums in numpy) are the int64
    sums of the spikes."""
    from energy.measuring.hooks import SpikeStats, Tally

    g = torch.Generator().manual_seed(0)
    s = (torch.rand(2, 300, 200, generator=g) < 0.2).float()
    st = SpikeStats(200)
    st.add(s, torch.arange(4), 0, False)
    t = Tally()
    st.flush(t, "x")
    assert (t.neurons["x"] == s.sum(dim=(0, 1), dtype=torch.int64).numpy()).all()
    assert (t.positions["x"][:300] == s.sum(dim=(0, 2), dtype=torch.int64).numpy()).all()
    assert t.spikes["x"] == int(s.sum(dtype=torch.int64))


def _hooked_meter(monkeypatch):
    """The meter as it was: a forward hook per measured module (the reference for the forward wrappers)."""
    from energy.measuring import hooks

    def register(mod, hook):
        return mod.register_forward_hook(hook).remove

    monkeypatch.setattr(hooks, "_wrap_forward", register)


def _same_profiles(a, b) -> None:
    for f in ("ops", "setup", "layers", "neurons", "positions", "census"):
        pd.testing.assert_frame_equal(getattr(a, f), getattr(b, f), check_exact=True)
    assert a.rasters == b.rasters
    assert {k: v for k, v in a.meta.items() if k != "wall_time_s"} == {
        k: v for k, v in b.meta.items() if k != "wall_time_s"
    }


def test_forward_wrappers_measure_what_forward_hooks_measure(monkeypatch):
    """The meter wraps each measured module's forward (nn.Module's plain call path) instead of registering a
    forward hook: every table of the profile is the one the hooks gave, in both modes, and the modules are left
    as they were (an instance-patched forward included)."""
    torch.manual_seed(0)
    model = SpikeGPT(preset("tiny", n_layer=2)).eval()
    ids = torch.randint(0, model.config.vocab_size, (41,), generator=torch.Generator().manual_seed(3))
    lin = model.blocks[1].ffn.value
    patched = lambda x: torch.nn.functional.linear(x, lin.weight) * 1.0  # noqa: E731
    lin.forward = patched
    wrapped = {m: energy.profile(model, ids, mode=m, batch=2) for m in ("parallel", "streaming")}
    assert lin.__dict__["forward"] is patched  # put back
    assert not any("forward" in m.__dict__ for m in model.modules() if m is not lin)
    assert not any(m._forward_hooks for m in model.modules())
    with monkeypatch.context() as mp:
        _hooked_meter(mp)
        hooked = {m: energy.profile(model, ids, mode=m, batch=2) for m in ("parallel", "streaming")}
    for m in wrapped:
        _same_profiles(wrapped[m], hooked[m])
    assert wrapped["parallel"].ops["count"].sum() > 0


def _census_per_module_hooks(model, fn):
    """The census's module stack as it was: a pre-hook and a forward hook on every module."""
    from energy.measuring import census as c

    stack, handles = [], []

    def pop(mod, args, out):
        stack.pop()

    for name, mod in model.named_modules():
        handles.append(mod.register_forward_pre_hook(lambda mod, args, name=name: stack.append(name)))
        handles.append(mod.register_forward_hook(pop))
    mode = c._Dispatch(stack, False)
    try:
        with torch.no_grad(), c.cpu_kernels.disabled(), mode:
            fn()
    finally:
        for h in handles:
            h.remove()
    return mode


def test_census_module_stack_from_global_hooks_equals_per_module_hooks():
    """The census keeps its module stack with two global hooks (module looked up by identity) instead of two
    hooks on each module: the same calls and elements per (module, op), for SpikeGPT in both modes and for a
    model that shares a module under two names and makes a module during its forward."""
    from energy.measuring.census import run_with_module_stack

    torch.manual_seed(0)
    model = SpikeGPT(preset("tiny", n_layer=2)).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 3))

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 4)
            self.b = self.a  # one module, two names: the first is kept
            self.c = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())

        def forward(self, x):
            x = self.b(self.a(x))
            return torch.nn.GELU()(self.c(x)) + torch.nn.Linear(4, 4)(x)  # modules outside the model

    odd = Odd()
    x = torch.randn(2, 4)
    cases = [(model, lambda m=m: model.run(ids, mode=m)) for m in ("parallel", "streaming")] + [(odd, lambda: odd(x))]
    for mod, fn in cases:
        new, ref = run_with_module_stack(mod, fn), _census_per_module_hooks(mod, fn)
        assert new.calls == ref.calls and new.elements == ref.elements
        assert sum(new.calls.values()) > 0
    from torch.nn.modules import module as nn_module

    assert not nn_module._global_forward_hooks and not nn_module._global_forward_pre_hooks  # removed


def test_census_on_one_thread_lists_the_same_ops_and_restores_the_threads():
    from energy.measuring.census import census

    torch.manual_seed(0)
    model = SpikeGPT(preset("tiny", n_layer=2)).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 2))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = census(model, lambda: model.run(ids))
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        one = census(model, lambda: model.run(ids))
    finally:
        torch.set_num_threads(threads)
    pd.testing.assert_frame_equal(one, two)


def test_tally_add_into_an_empty_tally_equals_adding_key_by_key():
    from collections import Counter

    from energy.measuring.hooks import Tally

    torch.manual_seed(0)
    model = SpikeGPT(preset("tiny", n_layer=2)).eval()
    ids = torch.randint(0, model.config.vocab_size, (30,))
    from energy.measuring.hooks import Meter

    with Meter(model) as m:
        model.run(ids[None])
    t = m.take()
    t.counts[("zero", "k", "s", "p", "-")] += 0  # a key with a zero count is kept, as the loop keeps it
    fast = Tally().add(t)
    slow = Tally()
    for name in Tally.COUNTERS:
        mine = getattr(slow, name)
        for k, v in getattr(t, name).items():
            mine[k] += v
    for name in Tally.COUNTERS:
        a, b = getattr(fast, name), getattr(slow, name)
        assert isinstance(a, Counter) and list(a.items()) == list(b.items())
    fast.add(t)  # and into a non-empty one, key by key
    for name in Tally.COUNTERS:
        mine = getattr(slow, name)
        for k, v in getattr(t, name).items():
            mine[k] += v
        assert list(getattr(fast, name).items()) == list(mine.items())
    assert fast.counts == Counter({k: 2 * v for k, v in t.counts.items()})


def test_compiled_classification_equals_the_numpy_passes():
    """``classify`` of a float CPU tensor counts with two compiled passes where numba is there: class, size and
    nonzeros equal those of the numpy tests, on every class, NaN (nonzero, not an integer), +-inf (an integer
    after an integer first value, a float as the first nonzero), -0.0, subnormals, huge integers, strided
    views and both float types; the compiled kernels are in the profiles' cache key."""
    import numpy as np

    from energy.comparing import cache
    from energy.measuring import hooks

    if hooks._counts() is None:
        import pytest

        pytest.skip("numba cannot compile here: classify uses the numpy passes themselves")
    g = np.random.default_rng(0)
    base = {
        "empty": np.zeros(0),
        "zeros": np.zeros(50),
        "negative zeros": -np.zeros(50),
        "binary": (g.random(3000) < 0.2) * 1.0,
        "ternary": g.integers(-1, 2, 3000) * 1.0,
        "minus ones": -np.ones(40),
        "integer": g.integers(-5, 6, 3000) * 1.0,
        "huge integers": np.array([0.0, 2.0**60, -(2.0**70), 3.0]),
        "float": g.standard_normal(3000),
        "late fraction": np.r_[np.zeros(10), np.ones(2000), [0.5], np.ones(5)],
        "late half": np.r_[[2.0, 0.0], np.full(100, 3.0), [2.5]],
        "nan first": np.r_[[0.0, np.nan], np.ones(10)],
        "nan late": np.r_[[0.0, 1.0, 2.0], [np.nan]],
        "inf first": np.r_[[0.0, np.inf], np.ones(10)],
        "inf late": np.r_[[1.0, 2.0, -np.inf], np.zeros(3)],
        "subnormal": np.r_[[0.0, 1.0], [5e-324, 1e-45]],
    }
    seen = set()
    for name, a in base.items():
        for dtype in (np.float32, np.float64):
            b = a.astype(dtype)
            for arr in (b, np.ascontiguousarray(np.repeat(b, 2)[::2]), np.tile(b, (3, 1)).T[:, 1]):
                t = torch.from_numpy(np.ascontiguousarray(arr)) if arr.ndim == 1 else torch.from_numpy(arr)
                got = hooks._classify_numpy(t)
                want = hooks._classify_numpy_passes(np.asarray(arr, dtype=dtype).reshape(-1), tuple(t.shape))
                assert got == want, (name, dtype, got, want)
                seen.add(got.cls)
    strided = torch.from_numpy(g.standard_normal((64, 90)).astype(np.float32))[:, ::3]
    assert hooks._classify_numpy(strided) == hooks._classify_numpy_passes(strided.numpy().reshape(-1), (64, 30))
    assert seen == {"binary", "ternary", "integer", "float"}
    assert "energy.measuring._numba_counts" in cache.PROFILING_MODULES


def test_one_token_calls_joined_by_shape_where_no_value_is_read():
    """Streaming mode joins a layer's one-token calls; inputs and outputs whose values are not read enter by the
    shape the concatenation would have (and its size), any other shape by the concatenation itself."""
    import pytest

    from energy.measuring.hooks import _join, _Joined

    parts = [torch.randn(2, 1, 5) for _ in range(7)]
    joined = _join(parts, True)
    assert isinstance(joined, _Joined)
    assert joined.shape == torch.cat(parts, dim=1).shape and joined.numel() == torch.cat(parts, dim=1).numel()
    assert torch.equal(_join(parts, False), torch.cat(parts, dim=1))  # values read: the concatenation
    odd = [*parts, torch.randn(2, 2, 5)]
    assert torch.equal(_join(odd, True), torch.cat(odd, dim=1))  # shapes differ: concatenated, as before
    with pytest.raises(RuntimeError):
        _join([*parts, torch.randn(3, 1, 5)], True)  # the concatenation's own check still applies


def test_meters_sharing_a_module_measure_their_own_calls_and_leave_no_wrapper():
    """Two meters on models that share a module (here the head), exited in either order: each counts what
    its own model ran, as with forward hooks, and no wrapper is left on any module."""
    from energy.measuring.hooks import Meter

    torch.manual_seed(0)
    a = SpikeGPT(preset("tiny", n_layer=1)).eval()
    b = SpikeGPT(preset("tiny", n_layer=1)).eval()
    b.head = a.head
    ids = torch.randint(0, a.config.vocab_size, (1, 12))

    def alone(model):
        with Meter(model) as m, torch.no_grad():
            model.run(ids)
        return m.take()

    want_a, want_b = alone(a), alone(b)
    for order in ("ab", "ba"):
        ma, mb = Meter(a), Meter(b)
        ma.__enter__()
        mb.__enter__()
        with torch.no_grad():
            a.run(ids)
            b.run(ids)
        for m in (ma, mb) if order == "ab" else (mb, ma):
            m.__exit__(None, None, None)
        got_a, got_b = ma.take(), mb.take()
        # the shared head is measured by both meters on both runs, as two forward hooks would measure it
        assert got_a.counts - want_a.counts == want_b.counts - Counter(
            {k: v for k, v in want_b.counts.items() if k[0] != "head"}
        )
        assert got_b.counts - want_b.counts == want_a.counts - Counter(
            {k: v for k, v in want_a.counts.items() if k[0] != "head"}
        )
        assert not any("forward" in mod.__dict__ for mod in (*a.modules(), *b.modules())), order
        assert got_a.calls["head"] == 2 and got_b.calls["head"] == 2


def test_a_deep_copy_made_while_measured_runs_its_own_weights_unmeasured():
    """Review: a wrapper's closure held the original module, so a deep copy made under a meter ran the
    original's weights (and kept doing so after the meter exited). The copy now gets its own forward: the
    same outputs as a copy made outside any meter, and nothing of it is measured."""
    import copy

    from energy.measuring.hooks import Meter

    torch.manual_seed(0)
    model = SpikeGPT(preset("tiny", n_layer=1)).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 6), generator=torch.Generator().manual_seed(1))
    lin = model.blocks[0].ffn.value
    patched = lambda x: torch.nn.functional.linear(x, lin.weight)  # noqa: E731
    lin.forward = patched  # a forward patched on the instance before: the copy gets a copy of it
    reference = copy.deepcopy(model)
    with torch.no_grad(), Meter(model) as meter:
        twin = copy.deepcopy(model)
        for m in (twin, reference):
            for p in m.parameters():
                p.mul_(0.5)
        out = twin(ids).logits
        meter.flush()
        assert sum(meter.tally.calls.values()) == 0  # the copy is not measured
    with torch.no_grad():
        assert torch.equal(out, reference(ids).logits)
        assert torch.equal(twin(ids).logits, reference(ids).logits)  # after the meter too
        assert not torch.equal(model(ids).logits, reference(ids).logits)  # the original kept its own weights


def test_a_module_with_its_own_forward_hook_is_measured_after_it():
    """Review: a user's forward hook may replace a module's output; the meter measured the raw output once it
    wrapped forwards. A module with hooks of its own is measured by a hook registered after them, as before."""
    torch.manual_seed(0)
    model = SpikeGPT(preset("tiny", n_layer=1)).eval()
    ids = torch.randint(0, model.config.vocab_size, (12,), generator=torch.Generator().manual_seed(2))
    plain = energy.profile(model, ids)
    lif = next(m for m in model.modules() if type(m).__name__ == "LIF")
    h = lif.register_forward_hook(lambda mod, args, out: (torch.zeros_like(out[0]), *out[1:]))  # silenced spikes
    try:
        silenced = energy.profile(model, ids)
    finally:
        h.remove()
    name = next(n for n, m in model.named_modules() if m is lif)
    rates = silenced.firing_rates
    assert plain.firing_rates[name] > 0 and rates[name] == 0
    assert "forward" not in lif.__dict__ and list(lif._forward_hooks) == []


def test_a_meter_that_fails_on_entry_leaves_nothing_wrapped(monkeypatch):
    from energy.measuring import hooks

    model = SpikeGPT(preset("tiny", n_layer=1)).eval()
    calls = []
    real = hooks._wrap_forward

    def failing(mod, hook):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(mod, hook)

    monkeypatch.setattr(hooks, "_wrap_forward", failing)
    with pytest.raises(KeyboardInterrupt):
        hooks.Meter(model).__enter__()
    assert not any("forward" in m.__dict__ for m in model.modules())
