"""Speed benchmarks (``python -m benchmarks.run``)."""
