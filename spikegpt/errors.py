"""Errors a user can act on. Each message names the problem and the fix.

The CLI turns any ``SpikeEnergyError`` into one line on stderr and exit code 2.
"""


class SpikeEnergyError(Exception):
    """Bad input: a wrong file, a wrong option, a text the model cannot read."""


class CheckpointError(SpikeEnergyError):
    pass


class TokenizerError(SpikeEnergyError):
    pass


class TextError(SpikeEnergyError):
    pass
