"""otpkit's tests. The tiers ``unit``, ``cluster`` and ``netns`` hold test modules only
(pytest imports each under its file name); ``harness`` holds the helpers they and the
benchmarks share, imported as ``tests.harness.<module>`` from the repository root (put on
the import path by ``pythonpath`` in pyproject.toml; benchmarks run as
``python -m bench.NAME`` from the root)."""
