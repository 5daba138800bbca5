"""The transformer baselines' names, without importing torch: ``spike-energy --help`` lists them.

``energy.comparing.baselines.BASELINE_NAMES`` (built from the architectures' own tables) must equal this
tuple; ``tests/test_cli.py::test_help_imports_no_torch_and_lists_the_baselines`` checks it.
"""

BASELINE_NAMES = (
    "transformer-same-dims",
    "transformer-same-dims-relu",
    "gpt2-small",
    "gpt2-medium",
    "transformer-paper-table2",
)
