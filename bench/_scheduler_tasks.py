"""Tasks the scheduler benchmarks schedule (``"bench._scheduler_tasks:stamp"``: the
repository root is on the nodes' ``PYTHONPATH``, so the pool's workers import this module
by name), and the CPU burner of the loaded runs (``python -m bench._scheduler_tasks``).
Driver-side helpers are in ``bench._scheduler_driver``; this module imports nothing but
the standard library until a task runs.

Each recording task takes ``time.time()`` as its first statement (entry into the task
function is a run's start) and appends one JSON line to ``path`` in a single
``write`` (lines of concurrent writers never interleave): ``{"job", "tick", "start",
"node", "pid", "lane"}``, ``tick`` in seconds since the epoch from
``otpkit.scheduler.current_run()`` (None if it gave no run).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


def _append(path: str, record: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def stamp(path: str, name: str | None = None) -> None:
    """Record this run's start and tick (``name``: the job's, in case no run info)."""
    start = time.time()
    from otpkit import self as me  # noqa: PLC0415 - after the start stamp
    from otpkit.scheduler import current_run  # noqa: PLC0415

    run = current_run()
    _append(
        path,
        {
            "job": run.job if run else None,
            "tick": run.tick.timestamp() if run else None,
            "start": start,
            "node": me().node,
            "pid": os.getpid(),
            "lane": run.lane if run else None,
            "arg": name,
        },
    )


def noop() -> None:
    """Nothing: the scale benchmark's idle jobs."""


def spin() -> None:  # pragma: no cover - runs until killed
    """Burn one CPU (the load of fire_precision.py)."""
    while True:
        pass


if __name__ == "__main__":
    spin()
