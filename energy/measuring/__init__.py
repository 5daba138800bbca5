"""Measuring: run a model, count every op at the dispatch level, classify operands from the values, find neurons
(``adapters.py``: what a model's author knows; ``spiking_neurons.py``: the libraries' neuron classes) and price the
counts into a ``Profile``. Imports pricing only."""
