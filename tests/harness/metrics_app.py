"""An application for the metrics tests (``otpkit run tests.harness.metrics_app:root``):
a majority ``Scheduler`` (:data:`SCHEDULER`) whose job :data:`JOB` fires every second
and appends ``<tick iso> <node>`` to the file named by ``METRICS_APP_TICKS`` (one file
every node shares), and a supervisor ``app`` with one plain worker ``worker`` that
appends ``started <os pid>`` to the file named by ``METRICS_APP_WORKER`` each time it
starts (one file per node), so that a test can SIGKILL it and see its successor."""

from __future__ import annotations

import os
from typing import Any

import otpkit
from otpkit import Actor, ChildSpec, Supervisor
from otpkit.scheduler import Job, Scheduler, current_run

TICKS_ENV = "METRICS_APP_TICKS"
WORKER_ENV = "METRICS_APP_WORKER"
SCHEDULER = "ticks"  # also the label of its singleton
JOB = "tick"


def append(path: str, line: str) -> None:
    """Append ``line`` and a newline to ``path`` in one write (whole lines for readers)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def tick(path: str) -> None:
    """The job's task: ``<tick iso> <node>`` (``-`` for the tick outside a run)."""
    run = current_run()
    when = run.tick.isoformat() if run is not None else "-"
    append(path, f"{when} {otpkit.self().node}")


class Worker(Actor):
    """A plain supervised worker: says its OS pid when it starts, then waits."""

    def init(self) -> None:
        append(os.environ[WORKER_ENV], f"started {os.getpid()}")


def root() -> list[Any]:
    job = Job(JOB, "* * * * * *", f"{__name__}:tick", kwargs={"path": os.environ[TICKS_ENV]})
    return [
        ChildSpec(
            "app",
            Supervisor,
            kwargs={"children": [ChildSpec("worker", Worker)], "intensity": 10, "period": 60},
        ),
        Scheduler([job], name=SCHEDULER, policy="majority"),
    ]
