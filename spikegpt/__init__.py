"""SpikeGPT in plain PyTorch: the model that spike-energy measures."""

from spikegpt.config import PRESETS, SpikeGPTConfig, preset
from spikegpt.model import LIF, WKV, Output, SpikeGPT, State

__all__ = ["PRESETS", "LIF", "WKV", "Output", "SpikeGPT", "SpikeGPTConfig", "State", "preset"]
