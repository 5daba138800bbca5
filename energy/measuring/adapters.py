"""Model adapters: what a profiler cannot infer from values, behind one small interface.

The measuring core (``energy.measuring.generic``) needs nothing model-specific: it counts every aten op and classifies
operands from the values. An adapter adds the four facts a model's author knows:

- ``neurons(model)``: which modules are neurons (name -> ``NeuronInfo``, with where the state lives);
- ``projections(order, spiking)``: which projection reads which spike source (from the execution order);
- ``token_shift``: module types that carry the previous token's input (state read and written per step);
- ``counterfactual``: the comparison model, defined in words, and ``make_counterfactual(model)`` building it.

``GENERIC`` serves any model (neurons found by class from the libraries, ``energy.measuring.spiking_neurons``);
``SPIKEGPT`` states SpikeGPT's knowledge, which the SpikeGPT pipeline (hooks, rules, variants) also uses.
A second model implements the same five fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch.nn as nn

from energy.measuring.hooks import preceding_spike_source
from energy.measuring.spiking_neurons import NeuronInfo, find_neurons
from spikegpt import model as sg


@dataclass(frozen=True)
class Adapter:
    name: str
    neurons: Callable[[nn.Module], dict[str, NeuronInfo]]
    projections: Callable[[list[str], dict[str, str]], dict[str, str | None]]
    token_shift: tuple[type, ...]
    counterfactual: str
    make_counterfactual: Callable[[nn.Module], nn.Module] | None = None


def _spikegpt_neurons(model: nn.Module) -> dict[str, NeuronInfo]:
    """The LIF layers (multi-step over tokens; the state is returned with the spikes) and the binary
    embedding's Heaviside encoder (stateless)."""
    found = {}
    for name, m in model.named_modules():
        if isinstance(m, sg.LIF):
            found[name] = NeuronInfo("spikegpt", "LIF", "")
        elif isinstance(m, sg.Heaviside):
            found[name] = NeuronInfo("spikegpt", "Heaviside", None)
    return found


def _spikegpt_twin(model: nn.Module) -> nn.Module:
    """The plain RWKV-4 twin: the same weights, every LIF replaced by identity (``variant="twin"``)."""
    twin = sg.SpikeGPT(replace(model.config, variant="twin"))
    twin.load_state_dict(model.state_dict(), strict=False)
    return twin.to(next(model.parameters()).dtype).eval()


GENERIC = Adapter(
    name="generic",
    neurons=find_neurons,
    projections=preceding_spike_source,
    token_shift=(),
    counterfactual="none defined: the model's own counts, dense and as executed",
)

SPIKEGPT = Adapter(
    name="spikegpt",
    neurons=_spikegpt_neurons,
    projections=preceding_spike_source,
    token_shift=(sg.TokenShift,),
    counterfactual="the plain RWKV-4 twin: the same weights with every LIF replaced by identity",
    make_counterfactual=_spikegpt_twin,
)


def adapter_for(model: nn.Module) -> Adapter:
    """SPIKEGPT for a SpikeGPT, GENERIC otherwise."""
    return SPIKEGPT if isinstance(model, sg.SpikeGPT) else GENERIC
