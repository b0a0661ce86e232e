"""The scheduler's job events: :class:`JobEvent`, their kinds, and each scheduler
process's event bus.

The holder emits an event when a job changes and when a run starts or ends, is missed,
skipped or interrupted (:meth:`EventBus.emit`): the bus logs it on ``otpkit.scheduler``,
counts it in its node's metrics (:mod:`~otpkit.scheduler._metrics`: one node, the
holder's, counts each run), sends it to this node's subscribers, and hands it to
``broadcast``, which sends it to every other node's scheduler process; there
:meth:`EventBus.deliver` gives it to that node's subscribers. So every subscriber sees
every event once (``id`` names it on every node). Subscribers are processes of the
bus's own node (events travel to them as objects), each monitored and dropped when it
ends or cannot be sent to. The events of this node's Singleton watchdog (``no_holder``,
``holder_back``) are delivered here only.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from otpkit import actors
from otpkit.actors import Pid, Ref, shapes
from otpkit.errors import OtpkitError
from otpkit.scheduler import _metrics
from otpkit.scheduler._pool import JOB_NAME

log = logging.getLogger("otpkit.scheduler")

#: Event kinds (see :class:`JobEvent`). ``no_holder`` and ``holder_back`` are about the
#: scheduler itself (``job`` is empty), from each node's Singleton watchdog and to that
#: node's subscribers only: no holder for ``duration`` seconds (more than two lease
#: terms, a majority connected), ``error`` saying why, once per term; then a holder is
#: back (``extra["holder"]``) after ``duration`` seconds. ``run_retrying``: attempt
#: ``extra["attempt"]`` failed (``error``, ``extra["traceback"]``) and the next is due at
#: ``extra["retry_at"]``; the event that ends a run has ``extra["attempts"]``, the
#: ``run_started`` of a later attempt than the first ``extra["attempt"]``. A
#: ``run_missed`` of a span of ticks (misfires) has ``extra["first"]``, ``extra["last"]``
#: and ``extra["ticks"]``, how many (:meth:`~otpkit.scheduler._plan.MissedTicks.count`);
#: one of a single tick (no node of its strategy) none of them.
EVENT_KINDS = (
    "job_added",
    "job_updated",
    "job_deleted",
    "run_started",
    "run_finished",
    "run_failed",
    "run_timed_out",
    "run_retrying",
    "run_interrupted",
    "run_missed",
    "run_skipped",
    "no_holder",
    "holder_back",
)
#: The event of each outcome a claim is finished with.
OUTCOME_EVENT = {
    "finished": "run_finished",
    "failed": "run_failed",
    "timed_out": "run_timed_out",
    "interrupted": "run_interrupted",
    "missed": "run_missed",
    "skipped": "run_skipped",
}
#: The fields of a job event on the wire (:meth:`JobEvent.to_wire`), each with its kind.
_EVENT_FIELDS: dict[str, shapes.Kind] = {
    "kind": shapes.Str(64),
    "job": shapes.Str(JOB_NAME.max_len),
    "tick": shapes.Opt(datetime),
    "node": shapes.Opt(shapes.Str(1024)),
    "duration": shapes.Opt(shapes.Num()),
    "error": shapes.Opt(shapes.Str(4096)),
    "at": shapes.Opt(shapes.Num()),
    "id": shapes.Str(64),
    "extra": shapes.Map(shapes.Str(64), shapes.ANY, 64),
}


@dataclass(frozen=True)
class JobEvent:
    """What a subscriber gets (and what is logged): ``kind`` (one of
    :data:`EVENT_KINDS`), the ``job``, the ``tick`` (None for job changes), the ``node``
    that ran it, ``duration`` in seconds (finished runs), ``error`` text (failures),
    ``at`` (wall time of the event), ``id`` (unique: the same event reaches every
    node's subscribers) and ``extra`` (e.g. the last tick of a span of missed ones)."""

    kind: str
    job: str
    tick: datetime | None = None
    node: str | None = None
    duration: float | None = None
    error: str | None = None
    at: float = 0.0
    id: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "job": self.job,
            "tick": self.tick,
            "node": self.node,
            "duration": self.duration,
            "error": self.error,
            "at": self.at,
            "id": self.id,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_wire(cls, value: Mapping[str, Any]) -> JobEvent:
        """The event :meth:`to_wire` made (a field left out takes its default).

        Raises:
            ValueError: a field of the wrong kind (a tick not an aware datetime, ...),
                naming it.
        """
        for name, kind in _EVENT_FIELDS.items():
            why = shapes.problem(value.get(name), kind) if name in value else None
            if why is not None:
                raise ValueError(f"job event field {name!r}: {why}")
        tick = value.get("tick")
        if tick is not None and tick.utcoffset() is None:
            raise ValueError(f"job event field 'tick': {tick!r} is not an aware time")
        duration = value.get("duration")
        return cls(
            value.get("kind", ""),
            value.get("job", ""),
            tick,
            value.get("node"),
            None if duration is None else float(duration),
            value.get("error"),
            float(value.get("at") or 0.0),
            value.get("id", ""),
            dict(value.get("extra", {})),
        )


#: the log level of an event's line (see :meth:`EventBus.emit`)
_LEVELS = {
    "run_failed": logging.ERROR,
    "run_timed_out": logging.ERROR,
    "run_retrying": logging.WARNING,
    "run_interrupted": logging.WARNING,
}


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value or "-")


def new_event(
    kind: str,
    job: str,
    tick: datetime | None = None,
    node: str | None = None,
    duration: float | None = None,
    error: str | None = None,
    extra: Mapping[str, Any] | None = None,
    started: float | None = None,
) -> JobEvent:
    """An event of now with a new id (``started``: the run's start, in ``extra``)."""
    more = dict(extra or {})
    if started is not None:
        more["start"] = started
    return JobEvent(kind, job, tick, node, duration, error, time.time(), uuid.uuid4().hex, more)


class EventBus:
    """The job events of scheduler ``name`` on ``node``: its subscribers, and the
    events it emits (to them and, through ``broadcast``, to every other node's); ``jobs``
    names the configuration jobs, each with a ``job`` label of its own in the metrics."""

    def __init__(
        self,
        name: str,
        node: str,
        broadcast: Callable[[JobEvent], None],
        jobs: Iterable[str] = (),
    ) -> None:
        self.name = name
        self.node = node
        self.broadcast = broadcast
        self.subscribers: dict[Pid, Ref] = {}
        self.job_labels = _metrics.job_labels(jobs)

    def subscribe(self, pid: Pid, on: bool) -> str | None:
        """Send the events to ``pid`` (``on``) or no longer; None, or why not (a pid of
        another node: events travel as objects, to this node's processes only)."""
        if on and not actors.runtime().is_local(pid):
            return f"{pid!r} is not a process of node {self.node} (subscribe there)"
        if on and pid not in self.subscribers:
            self.subscribers[pid] = actors.monitor(pid)
        elif not on and pid in self.subscribers:
            actors.demonitor(self.subscribers.pop(pid), flush=True)
        return None

    def gone(self, pid: Pid) -> None:
        """A subscriber ended."""
        self.subscribers.pop(pid, None)

    def emit(self, event: JobEvent) -> None:
        """Log ``event``, count it in the node's metrics and send it to every node's
        subscribers (this one's included).

        The line's level: ERROR for a run that failed or timed out for good (with the
        traceback's last lines), WARNING for an attempt that will be retried (with its
        traceback) and for an interrupted run, INFO otherwise. A span of missed ticks
        names its first and last tick."""
        extra = event.extra or {}
        level = _LEVELS.get(event.kind, logging.INFO)
        trace = extra.get("traceback")
        # an attempt that will be retried names its number, a run that ended its count
        counted = (
            f" attempts={extra['attempts']}"
            if extra.get("attempts")
            else f" attempt={extra['attempt']}"
            if extra.get("attempt")
            else ""
        )
        log.log(
            level,
            "scheduler %s: %s job=%s tick=%s%s node=%s%s%s%s%s",
            self.name,
            event.kind,
            event.job,
            event.tick.isoformat() if event.tick else "-",
            f" last={_iso(extra.get('last'))}" if event.kind == "run_missed" else "",
            event.node or "-",
            counted,
            f" duration={event.duration:.3f}s" if event.duration is not None else "",
            f" error={event.error}" if event.error else "",
            f"\n{trace}" if isinstance(trace, str) and trace else "",
        )
        _metrics.record(event, self.name, self.job_labels)
        self.deliver(event)
        self.broadcast(event)

    def deliver(self, event: JobEvent) -> None:
        """Send ``event`` to this node's subscribers."""
        for pid in list(self.subscribers):
            try:
                actors.send(pid, event)
            except (OtpkitError, TypeError, ValueError):
                self.subscribers.pop(pid, None)


__all__ = ["EVENT_KINDS", "OUTCOME_EVENT", "EventBus", "JobEvent", "new_event"]
