"""The application: the command line (``cli.py``; ``energy.cli`` is this module), ``profile --model``, the
pipeline that writes a run's files, and timing. The only stage that imports ``reports/``."""
