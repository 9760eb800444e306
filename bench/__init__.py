"""Benchmarks of the dispatch core and the pipeline: ``python -m bench.run --help``."""
