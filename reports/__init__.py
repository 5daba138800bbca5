"""The HTML report, its figures and ``spike-energy compare``, all rendered from summary.json."""
