"""Example spiking models profiled unchanged by ``spike-energy profile --model examples.MODULE:make``.

Each is written from its paper's equations with random weights (their op counts are what the tests check);
each ``make()`` returns ``{"model", "inputs", "samples"}``. None imports anything from ``energy``.
"""
