"""The profiled pass's shortcuts give the results of the long way (issue 24, target 2)."""

import importlib

import pandas as pd
import torch

import energy
from spikegpt import SpikeGPT, preset

profile_module = importlib.import_module("energy.profile")  # the module, not the function of that name


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
