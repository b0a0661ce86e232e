"""The scheduler's Prometheus metrics: the updates each job event makes, the ``job``
label of a job, and the task pool's load.

The holder's :class:`~otpkit.scheduler._events.EventBus` hands every event it emits to
:func:`record`, so each run is counted once, on the holder's node, whatever node ran
it: a tick's run that ended (``otpkit_job_runs_total`` by outcome, from the event that
closed its claim: a retried tick counts once, when it ends), each attempt's duration,
the fire lateness of a tick's first attempt (its ``run_started``), and the ticks missed
(``run_missed``'s ``extra["ticks"]``), skipped and retried. :func:`event_updates` is
the rule, :func:`job_labels` the ``job`` label of each configuration job. Each node's
task pool sets its gauges through :class:`PoolLoad`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from otpkit import metrics

if TYPE_CHECKING:
    from otpkit.scheduler._events import JobEvent

__all__ = ["RUN_ENDS", "PoolLoad", "event_updates", "job_label", "job_labels", "record"]

#: The longest label value the node's metrics service takes: a longer job name is
#: labelled ``OTHER_JOBS``.
MAX_LABEL = 256
#: The outcome label of each event that ends a tick's run for good.
RUN_ENDS = {
    "run_finished": "finished",
    "run_failed": "failed",
    "run_timed_out": "timed_out",
    "run_interrupted": "interrupted",
}
#: The events of an attempt that ended (an interrupted run has no duration).
_ATTEMPT_ENDS = frozenset(("run_finished", "run_failed", "run_timed_out", "run_retrying"))

#: One metric update: ``(op, metric, labels, value)``.
Update = tuple[Literal["inc", "observe"], str, dict[str, str], float]


def job_labels(names: Iterable[str]) -> dict[str, str]:
    """The ``job`` label of each configuration job of ``names`` (in the order of the
    Scheduler's ``jobs``): its name for the first :data:`~otpkit.metrics.MAX_JOB_LABELS`,
    ``OTHER_JOBS`` for the rest and for a name longer than :data:`MAX_LABEL`. A job
    named in none (added at run time) is ``RUNTIME_JOBS`` (:func:`job_label`)."""
    labels: dict[str, str] = {}
    own = 0
    for name in names:
        if name in labels:
            continue
        if own < metrics.MAX_JOB_LABELS and len(name) <= MAX_LABEL:
            labels[name] = name
            own += 1
        else:
            labels[name] = metrics.OTHER_JOBS
    return labels


def job_label(labels: Mapping[str, str], job: str) -> str:
    """The ``job`` label of ``job``, given :func:`job_labels`' result."""
    return labels.get(job, metrics.RUNTIME_JOBS)


def _seconds(value: Any) -> float | None:
    """``value`` as seconds to observe: a finite number, negative ones (clocks) as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(0.0, float(value))


def event_updates(event: JobEvent, scheduler: str, job: str) -> list[Update]:
    """The metric updates of one event the holder emitted (``job``: its label).

    A run ends with ``run_finished``, ``run_failed``, ``run_timed_out`` (for good) or
    ``run_interrupted``: one run of its outcome. An attempt that ended with a duration
    observes it (``run_retrying`` too: it counts a retry, not a run). A ``run_started``
    of a first attempt (no ``extra["attempt"]``, or 1) observes its start minus its
    tick. ``run_missed`` counts ``extra["ticks"]`` ticks (1 without it), ``run_skipped``
    one. Other events make none."""
    series = {"scheduler": scheduler, "job": job}
    kind, extra = event.kind, event.extra or {}
    out: list[Update] = []
    if kind in RUN_ENDS:
        outcome = {**series, "outcome": RUN_ENDS[kind]}
        out.append(("inc", "otpkit_job_runs_total", outcome, 1.0))
    if kind in _ATTEMPT_ENDS and (duration := _seconds(event.duration)) is not None:
        out.append(("observe", "otpkit_job_run_duration_seconds", series, duration))
    if kind == "run_retrying":
        out.append(("inc", "otpkit_job_retries_total", series, 1.0))
    elif kind == "run_skipped":
        out.append(("inc", "otpkit_job_ticks_skipped_total", series, 1.0))
    elif kind == "run_missed":
        ticks = extra.get("ticks")
        count = ticks if isinstance(ticks, int) and not isinstance(ticks, bool) else 1
        out.append(("inc", "otpkit_job_ticks_missed_total", series, float(max(1, count))))
    elif kind == "run_started" and extra.get("attempt", 1) == 1 and event.tick is not None:
        start = _seconds(extra.get("start"))
        if start is not None:
            late = max(0.0, start - event.tick.timestamp())
            out.append(("observe", "otpkit_job_fire_lateness_seconds", series, late))
    return out


def record(event: JobEvent, scheduler: str, labels: Mapping[str, str]) -> None:
    """Send the updates of ``event`` (nothing outside a node's metrics service)."""
    if not metrics.enabled():
        return
    for op, name, series, value in event_updates(event, scheduler, job_label(labels, event.job)):
        if op == "inc":
            metrics.inc(name, series, value)
        else:
            metrics.observe(name, series, value)


class PoolLoad:
    """The gauges of scheduler ``scheduler``'s task pool on this node: its queued and
    running runs, each sent when it changes (and 0 when the pool starts)."""

    def __init__(self, scheduler: str) -> None:
        self.labels = {"scheduler": scheduler}
        self.sent: tuple[int, int] | None = None
        self.update(0, 0)

    def update(self, queued: int, running: int) -> None:
        """The pool now has ``queued`` runs waiting and ``running`` handed to workers."""
        last = self.sent
        ok = True
        if last is None or last[0] != queued:
            ok = metrics.gauge("otpkit_pool_queue_depth", self.labels, queued)
        if last is None or last[1] != running:
            ok = metrics.gauge("otpkit_pool_running", self.labels, running) and ok
        self.sent = (queued, running) if ok else None  # dropped: both again next time
