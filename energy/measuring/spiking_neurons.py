"""Which modules of any model are spiking neurons, and where their membrane state lives.

Found by class, without a change to the model, for the libraries the field uses:

- spikingjelly 2.0 ``activation_based`` neurons (every ``*Node`` class of ``spikingjelly.*``, state ``v``);
  the legacy ``clock_driven`` package is not in spikingjelly 2.0, so its ``MultiStep*Node`` classes (which
  SpikeGPT's reference code vendors) are found by class name and their ``v_threshold`` / ``v`` attributes;
- snntorch ``SpikingNeuron`` subclasses (Leaky, Synaptic, Alpha, Lapicque, RLeaky, RSynaptic; state ``mem``);
- norse LIF / IAF cells and layers (``norse.torch``; the state is returned with the spikes);
- sinabs ``StatefulLayer`` neurons (IAF, LIF and their variants; state ``v_mem``).

A library that is not installed is skipped. Anything else that spikes (a custom ``torch.autograd.Function``
or module whose output is binary or ternary while its input is not) is found from the values by
``energy.measuring.generic`` and reported as "not recognised as a neuron".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

LEGACY_SJ_NODES = ("MultiStepLIFNode", "MultiStepIFNode", "MultiStepParametricLIFNode")


@dataclass(frozen=True)
class NeuronInfo:
    library: str
    cls: str
    state: str | None  # attribute holding the membrane potential after a call ("" when the state is returned)


def _mro_modules(m: nn.Module) -> list[tuple[str, str]]:
    return [(c.__module__ or "", c.__name__) for c in type(m).__mro__]


def detect(m: nn.Module) -> NeuronInfo | None:
    """The neuron library and state attribute of ``m``, or None when it is not a neuron we know."""
    name = type(m).__name__
    mro = _mro_modules(m)
    if any(mod.startswith("snntorch") and cls == "SpikingNeuron" for mod, cls in mro):
        return NeuronInfo("snntorch", name, "mem")
    if any(mod.startswith("spikingjelly.") and cls.endswith("Node") for mod, cls in mro):
        return NeuronInfo("spikingjelly", name, "v")
    if name in LEGACY_SJ_NODES and hasattr(m, "v_threshold"):
        return NeuronInfo("spikingjelly (clock_driven, legacy or vendored)", name, "v")
    if any(mod.startswith("sinabs.layers") and cls == "StatefulLayer" for mod, cls in mro) and (
        "IAF" in name or "LIF" in name
    ):
        return NeuronInfo("sinabs", name, "v_mem")
    if any(mod.startswith("norse.torch") for mod, _ in mro) and ("LIF" in name or "IAF" in name):
        return NeuronInfo("norse", name, "")
    return None


def find_neurons(model: nn.Module) -> dict[str, NeuronInfo]:
    """Every recognised neuron module of ``model`` by qualified name (outermost only: a neuron inside a
    neuron is part of it)."""
    found: dict[str, NeuronInfo] = {}
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in found):
            continue
        info = detect(m)
        if info is not None:
            found[name] = info
    return found
