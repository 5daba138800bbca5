"""spike-energy: measure what a spiking language model computes and what it would cost."""

from energy.costs import CostTable, load_costs
from energy.estimate import SCENARIOS
from energy.profile import Profile, profile

__all__ = ["SCENARIOS", "CostTable", "Profile", "load_costs", "profile"]
