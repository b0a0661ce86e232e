"""The holder's server of the runtime API (``_client``): job changes, job rows and
manual runs.

Each change is one write of the job's entry, stamped by the writer and taken by a
majority before it is answered ``("ok", changed)``; one that does not reach a majority
is answered ``("retry", why)`` (the client asks again, and every change is idempotent).
An error is ``("error", kind, text)``, which the client raises (``UnknownJob``,
``ValueError``, ...). A manual run (``run_job``) claims its own lane (``@manual``) at the
instant the caller asked (:func:`manual_tick`), so a retry after a fail-over finds it
claimed (``("ok", "already")``). The configuration's jobs are applied at each recovery
(:meth:`Api.declare`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from otpkit.scheduler import _history
from otpkit.scheduler._engine import Engine, wall_now
from otpkit.scheduler._events import EventBus, JobEvent, new_event
from otpkit.scheduler._finishes import Finishes
from otpkit.scheduler._job import Job
from otpkit.scheduler._ledger import LedgerError, to_utc
from otpkit.scheduler._member import Member
from otpkit.scheduler._messages import (
    ActivateJob,
    AddJob,
    ClientCall,
    DeactivateJob,
    DeleteAllJobs,
    DeleteJob,
    FindJob,
    JobHistory,
    ListJobs,
    RunJob,
)
from otpkit.scheduler._replica import JobEntry
from otpkit.scheduler._replication import Writer

log = logging.getLogger("otpkit.scheduler")

#: seconds a manual run may be asked for ahead of the holder's clock (``run_job`` sends
#: its caller's now: clocks differ a little; a run far ahead would take its job's manual
#: lane until then)
RUN_AHEAD = 86_400.0


def manual_tick(at: Any, now: datetime) -> datetime:
    """The tick of a manual run asked for at ``at`` (``run_job`` sends its caller's now),
    in UTC, given the holder's clock ``now``.

    Raises:
        ValueError: ``at`` is not an aware time, is outside the years 1-9999 in UTC, or
            is more than :data:`RUN_AHEAD` seconds after ``now``.
    """
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ValueError(f"run_job: at={at!r}, expected an aware time")
    try:
        tick = to_utc(at, "run_job: at")
    except LedgerError as exc:
        raise ValueError(str(exc)) from None
    if (tick - now).total_seconds() > RUN_AHEAD:
        raise ValueError(
            f"run_job: at={tick.isoformat()} is more than {RUN_AHEAD:g} s ahead of the "
            f"holder's clock ({now.isoformat()})"
        )
    return tick


class Api:
    """The runtime API's server of one holder term of scheduler ``name`` on ``node``."""

    def __init__(
        self,
        *,
        name: str,
        node: str,
        member: Member,
        writer: Writer,
        engine: Engine,
        finishes: Finishes,
        bus: EventBus,
        history_age: float = _history.MAX_AGE,
    ) -> None:
        self.history_age = history_age
        self.name = name
        self.node = node
        self.member = member
        self.writer = writer
        self.engine = engine
        self.finishes = finishes
        self.bus = bus

    def answer(self, msg: ClientCall) -> Any:
        """The answer to ``msg`` (the holder is recovered)."""
        try:
            return self._answer(msg)
        except (ValueError, TypeError, KeyError, LedgerError) as exc:
            return ("error", type(exc).__name__, str(exc))

    def _answer(self, msg: ClientCall) -> Any:
        now = wall_now()
        rep = self.member.rep
        if isinstance(msg, AddJob):
            spec = msg.spec
            try:
                job = Job.from_spec(spec)
            except (ValueError, TypeError):
                raise
            except Exception as exc:  # its task's module ran its code on import
                name = spec.get("name")
                raise ValueError(f"job {name!r}: importing its task raised {exc!r}") from exc
            current = rep.jobs.get(job.name)
            clean = job.to_spec()
            if current is not None and current.spec == clean:
                return ("ok", False)
            since = now if current is None or current.spec is None else current.since
            if not self.writer.write([self.writer.job_update(job.name, clean, "runtime", since)]):
                return ("retry", "the change did not reach a majority")
            kind = "job_added" if current is None or current.spec is None else "job_updated"
            self.engine.requeue(job.name, now)
            self.bus.emit(new_event(kind, job.name))
            return ("ok", True)
        if isinstance(msg, DeleteJob):
            name = msg.name
            current = rep.jobs.get(name)
            if current is None or current.spec is None:
                return ("ok", False)
            if not self.writer.write([self.writer.job_update(name, None, current.origin, now)]):
                return ("retry", "the change did not reach a majority")
            self.engine.unqueue(name)
            self.bus.emit(new_event("job_deleted", name))
            return ("ok", True)
        if isinstance(msg, DeleteAllJobs):
            names = sorted(rep.live_jobs())
            updates = [self.writer.job_update(n, None, rep.jobs[n].origin, now) for n in names]
            if not self.writer.write(updates):
                return ("retry", "the change did not reach a majority")
            for name in names:
                self.engine.unqueue(name)
                self.bus.emit(new_event("job_deleted", name))
            return ("ok", len(names))
        if isinstance(msg, ActivateJob | DeactivateJob):
            name = msg.name
            current = rep.jobs.get(name)
            if current is None or current.spec is None:
                return ("error", "UnknownJob", f"no job {name!r}")
            state = "active" if isinstance(msg, ActivateJob) else "inactive"
            if current.spec.get("state") == state:
                return ("ok", False)
            spec = {**current.spec, "state": state}
            since = now if state == "active" else current.since
            if not self.writer.write([self.writer.job_update(name, spec, current.origin, since)]):
                return ("retry", "the change did not reach a majority")
            self.engine.requeue(name, now)
            self.bus.emit(new_event("job_updated", name, extra={"state": state}))
            return ("ok", True)
        if isinstance(msg, FindJob):
            current = rep.jobs.get(msg.name)
            return ("ok", None if current is None or current.spec is None else dict(current.spec))
        if isinstance(msg, JobHistory):
            records = _history.recent(rep.runs, msg.name, now, self.history_age)
            return ("ok", [r.to_dict() for r in records])
        if isinstance(msg, ListJobs):
            return ("ok", [self._info(n, e) for n, e in sorted(rep.live_jobs().items())])
        if isinstance(msg, RunJob):
            name = msg.name
            current = rep.jobs.get(name)
            if current is None or current.spec is None:
                return ("error", "UnknownJob", f"no job {name!r}")
            tick = manual_tick(msg.at, now)
            high = self.engine.manual_high(name)
            if high is not None and high >= tick:
                return ("ok", "already")  # a retry of a run this scheduler took
            claimed = self.engine.claim_and_dispatch([(name, tick)], manual=True)
            if not claimed:
                return ("retry", "the run's claim did not reach a majority")
            return ("ok", [[k.job, k.at, k.node] for k in claimed])
        return ("error", "ValueError", f"unknown scheduler operation {msg!r}")

    def declare(self, jobs: Iterable[Job], now: datetime) -> tuple[list[Any], list[JobEvent]]:
        """The updates that set the configuration's ``jobs`` (declared state: each
        overwrites a runtime or earlier version of its name, with a WARNING), and their
        events."""
        updates: list[Any] = []
        events: list[JobEvent] = []
        for job in jobs:
            spec = job.to_spec()
            current = self.member.rep.jobs.get(job.name)
            if current is not None and current.spec == spec and current.origin == "config":
                continue
            if current is not None and current.spec is not None:
                log.warning(
                    "%s: scheduler %s: configuration job %r overwrites its %s version",
                    self.node,
                    self.name,
                    job.name,
                    "runtime" if current.origin == "runtime" else "earlier",
                )
            since = current.since if current is not None and current.spec is not None else now
            updates.append(self.writer.job_update(job.name, spec, "config", since))
            kind = "job_added" if current is None or current.spec is None else "job_updated"
            events.append(new_event(kind, job.name))
        return updates, events

    def _info(self, name: str, entry: JobEntry) -> dict[str, Any]:
        spec = dict(entry.spec or {})
        queue = self.engine.queue
        return {
            **spec,
            "origin": entry.origin,
            "next_at": queue.when(name) if name in queue else None,
            "last_run": self.finishes.last_run.get(name) or _last_of(self.member.rep, name),
            "running": self.engine.has_open(name),
            "holder": self.node,
        }


def _last_of(rep: Any, name: str) -> dict[str, Any] | None:
    """A job's last run as the run history keeps it (a term's own finishes come first:
    the history is empty under a member of the previous release)."""
    records = rep.runs.get(name) or ()
    if not records:
        return None
    last = records[0]
    return {
        "tick": last.tick,
        "node": last.node,
        "outcome": last.outcome,
        "duration": last.duration,
        "attempts": last.attempts,
    }


__all__ = ["RUN_AHEAD", "Api", "manual_tick"]
