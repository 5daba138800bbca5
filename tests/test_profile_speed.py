"""The profiled pass's shortcuts give the results of the long way (issue 24, target 2)."""

import importlib

import pandas as pd
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
