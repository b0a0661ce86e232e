"""Benchmarks: run each from the repository root as ``python -m bench.NAME`` (see
README.md). The helpers they share with the tests are in ``tests.harness``."""
