"""The scheduler's runtime API, callable from any process of any node.

Each call finds the scheduler's current holder by its global name and asks it; the
holder answers once the change is replicated (under ``majority``: taken by a majority of
members). While there is no holder (a fail-over, a minority side) or the holder cannot
reach a majority, the call is retried until ``timeout`` and then raises
:class:`~otpkit.errors.SchedulerUnavailable`. Retrying is safe: every change is
idempotent, and ``run_job`` carries the instant it was asked at, so a retry after a
fail-over does not start a second run.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from otpkit import actors
from otpkit.distribution import encode_term
from otpkit.errors import CallTimeout, Exit, NodeError, SchedulerUnavailable, UnknownJob
from otpkit.registry import whereis_name
from otpkit.scheduler._job import InvalidJob, Job
from otpkit.scheduler._messages import (
    DEFAULT_NAME,
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
    Subscribe,
    encode,
    replica_name,
)

__all__ = [
    "activate_job",
    "add_job",
    "deactivate_job",
    "delete_all_jobs",
    "delete_job",
    "find_job",
    "jobs",
    "run_job",
    "subscribe",
    "unsubscribe",
]

_ERRORS: dict[str, type[Exception]] = {
    "UnknownJob": UnknownJob,
    "InvalidJob": ValueError,
    "ScheduleError": ValueError,
    "ValueError": ValueError,
    "TypeError": TypeError,
    "KeyError": UnknownJob,
}


def _request(scheduler: str, msg: ClientCall, timeout: float) -> Any:
    request = encode(msg)
    deadline = time.monotonic() + timeout
    last = "no holder of the scheduler's name"
    while True:
        remaining = deadline - time.monotonic()
        pid = whereis_name(scheduler)
        if pid is not None:
            try:
                answer = actors.call(pid, request, timeout=max(0.1, min(remaining, 10.0)))
            except (Exit, CallTimeout, NodeError) as exc:
                last = f"the holder {pid} did not answer ({exc})"
            else:
                if isinstance(answer, tuple) and answer and answer[0] == "ok":
                    return answer[1]
                if isinstance(answer, tuple) and answer and answer[0] == "error":
                    error = _ERRORS.get(str(answer[1]), ValueError)
                    raise error(f"scheduler {scheduler!r}: {answer[2]}")
                last = str(answer[1]) if isinstance(answer, tuple) and len(answer) > 1 else "?"
        if time.monotonic() >= deadline:
            raise SchedulerUnavailable(f"scheduler {scheduler!r}: {last} (after {timeout:g} s)")
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


def add_job(job: Job, scheduler: str = DEFAULT_NAME, timeout: float = 30.0) -> bool:
    """Add ``job`` (or replace the job of its name): True if anything changed. It
    persists across fail-overs and restarts until deleted."""
    if not isinstance(job, Job):
        raise InvalidJob(getattr(job, "name", None), "job", job, "a Job")
    try:
        encode_term(job.to_spec())
    except (TypeError, ValueError) as exc:
        raise InvalidJob(job.name, "args", job.args, f"values that can travel ({exc})") from exc
    return bool(_request(scheduler, AddJob(job.to_spec()), timeout))


def delete_job(name: str, scheduler: str = DEFAULT_NAME, timeout: float = 30.0) -> bool:
    """Delete the job ``name``: True if it existed."""
    return bool(_request(scheduler, DeleteJob(name), timeout))


def delete_all_jobs(scheduler: str = DEFAULT_NAME, timeout: float = 30.0) -> int:
    """Delete every job; returns how many there were."""
    return int(_request(scheduler, DeleteAllJobs(), timeout))


def activate_job(name: str, scheduler: str = DEFAULT_NAME, timeout: float = 30.0) -> bool:
    """Let ``name`` fire again (its ticks are due from now on). Raises UnknownJob."""
    return bool(_request(scheduler, ActivateJob(name), timeout))


def deactivate_job(name: str, scheduler: str = DEFAULT_NAME, timeout: float = 30.0) -> bool:
    """Keep ``name`` but stop firing it. Raises UnknownJob."""
    return bool(_request(scheduler, DeactivateJob(name), timeout))


def find_job(name: str, scheduler: str = DEFAULT_NAME, timeout: float = 30.0) -> Job | None:
    """The job ``name``, or None."""
    spec = _request(scheduler, FindJob(name), timeout)
    return None if spec is None else Job.from_spec(spec)


def jobs(scheduler: str = DEFAULT_NAME, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every job with its state: the job's fields plus ``next_at``, ``last_run``,
    ``running``, ``origin`` (config or runtime) and ``holder`` (the scheduler's node)."""
    result: list[dict[str, Any]] = _request(scheduler, ListJobs(), timeout)
    return result


def history(
    name: str, scheduler: str = DEFAULT_NAME, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """The last runs of job ``name`` (``Scheduler(history=..., history_days=...)``),
    newest tick first: each ``{"job", "tick", "lane", "outcome", "node", "start",
    "duration", "attempts", "error", "at"}`` (times aware, in UTC; ``error`` the
    traceback's last lines of a failed run). A job never run, or unknown: ``[]``."""
    result: list[dict[str, Any]] = _request(scheduler, JobHistory(name), timeout)
    return result


def run_job(name: str, scheduler: str = DEFAULT_NAME, timeout: float = 30.0) -> list[Any]:
    """Run ``name`` now, once, on the node(s) its strategy picks (also when inactive).
    Returns the claimed run keys ``[job, at, node]``. Raises UnknownJob."""
    at = datetime.now(UTC)
    result = _request(scheduler, RunJob(name, at), timeout)
    return [] if result == "already" else list(result)


def subscribe(scheduler: str = DEFAULT_NAME, pid: Any = None, timeout: float = 5.0) -> None:
    """Send the scheduler's :class:`JobEvent` s to ``pid`` (default: the caller), from
    this node's scheduler process (every node's sees every event).

    Raises:
        ValueError: ``pid`` is not a pid of this node.
    """
    _subscribe(scheduler, pid, True, timeout)


def unsubscribe(scheduler: str = DEFAULT_NAME, pid: Any = None, timeout: float = 5.0) -> None:
    _subscribe(scheduler, pid, False, timeout)


def _subscribe(scheduler: str, pid: Any, on: bool, timeout: float) -> None:
    target = pid or actors.self()
    answer = actors.call(replica_name(scheduler), encode(Subscribe(target, on)), timeout)
    if isinstance(answer, tuple) and len(answer) == 3 and answer[0] == "error":
        raise ValueError(f"scheduler {scheduler!r}: {answer[2]}")
