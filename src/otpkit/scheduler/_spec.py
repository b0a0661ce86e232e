"""The scheduler's child spec: :func:`Scheduler` checks its options and jobs and returns
the tree each node runs (a ``rest_for_one`` supervisor of the node's task pool and a
Singleton whose warm child is the node's ``_scheduler.SchedulerWorker``, started with a
:class:`SchedulerConfig`).

What the tree does once started is ``_scheduler``'s (which re-exports both names).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from otpkit.distribution import encode_term
from otpkit.registry import Singleton
from otpkit.scheduler import _history
from otpkit.scheduler._job import InvalidJob, Job
from otpkit.scheduler._messages import DEFAULT_NAME
from otpkit.scheduler._pool import pool_child_spec
from otpkit.supervision import ChildSpec, Supervisor

__all__ = ["POLICIES", "Scheduler", "SchedulerConfig"]

#: The values of :func:`Scheduler`'s ``policy``.
POLICIES = ("availability", "majority")


@dataclass(frozen=True)
class SchedulerConfig:
    """What each node's :class:`~otpkit.scheduler._scheduler.SchedulerWorker` starts
    with: the options of :func:`Scheduler`, checked."""

    name: str
    jobs: tuple[Job, ...]
    policy: str
    store: str | None
    lead: float = 0.05
    round_timeout: float = 2.0
    lost_after: float = 30.0
    max_wait: float = 1.0
    history: int = _history.KEEP
    history_days: float = _history.MAX_AGE / 86_400


def Scheduler(  # noqa: N802 - reads as the class it makes a spec for
    jobs: Iterable[Job] = (),
    name: str = DEFAULT_NAME,
    policy: str = "majority",
    store: str | os.PathLike[str] | None = "auto",
    max_concurrency: int = 10,
    queue_limit: int = 10_000,
    settle_timeout: float = 5.0,
    handover_timeout: float = 5.0,
    lead: float = 0.05,
    history: int = _history.KEEP,
    history_days: float = 7.0,
    id: Any = None,
    **options: Any,
) -> ChildSpec:
    """The child spec of a cluster scheduler (see the module).

    Args:
        jobs: configuration jobs: declared state, applied by name at each start of the
            scheduler (a runtime change to one lasts until then; the overwrite is logged).
        name: the scheduler's global name (several schedulers may run side by side).
        policy: ``"majority"`` (default: a tick runs at most once, also across
            partitions; the minority side fires nothing) or ``"availability"``.
        store: the SQLite file of this node's replica (``0600``); ``"auto"`` puts it in
            ``$OTPKIT_DATA_DIR/otpkit/`` (default ``./otpkit-data``; the directory
            ``0700``, beside the quorum's state) as ``<name>@<node>.sqlite``, and moves a
            store found where earlier versions kept it (``$OTPKIT_DATA_DIR/``) there;
            None keeps the replica in memory only (a restart of every node loses runtime
            jobs and the ledger).
        max_concurrency: this node's pool of worker processes (runs at once).
        queue_limit: runs waiting for a worker before new ones fail.
        lead: seconds before its tick a run is claimed and sent to its pool.
        history: runs kept per job in the run history (``history(job)``), replicated
            with the ledger; 0 keeps none.
        history_days: days a run stays in the history.
        options: none; the majority lease's ``term`` and ``expected_size`` are the
            node's (``Node(quorum=QuorumConfig(...))``, ``otpkit run
            --expected-size``): given here they are refused (ValueError).

    Raises:
        InvalidJob: a job is malformed (names the job and field); also two jobs of one
            name.
        ValueError: a bad option, naming it.
    """
    if not isinstance(name, str) or not name or len(name) > 32 or "/" in name:
        raise ValueError(f"Scheduler name={name!r}: expected a str of 1-32 characters, no '/'")
    if policy not in POLICIES:
        raise ValueError(f"Scheduler {name!r}: policy={policy!r}; expected one of {POLICIES}")
    if isinstance(lead, bool) or not isinstance(lead, int | float) or not 0 <= lead <= 1:
        raise ValueError(f"Scheduler {name!r}: lead={lead!r}; expected seconds in [0, 1]")
    declared: list[Job] = []
    names: set[str] = set()
    for job in jobs:
        if not isinstance(job, Job):
            raise InvalidJob(getattr(job, "name", job), "jobs", job, "a Job")
        if job.name in names:
            raise InvalidJob(job.name, "name", job.name, "a name unique among the jobs")
        try:
            encode_term(job.to_spec())
        except (TypeError, ValueError) as exc:
            raise InvalidJob(job.name, "args", job.args, f"values that can travel ({exc})") from exc
        declared.append(job)
        names.add(job.name)
    path = None if store is None else os.fspath(store)
    if isinstance(history, bool) or not isinstance(history, int):
        raise ValueError(f"Scheduler {name!r}: history={history!r}; expected an int in 0..1000")
    if not 0 <= history <= _history.MAX_KEEP:
        raise ValueError(f"Scheduler {name!r}: history={history!r}; expected an int in 0..1000")
    if isinstance(history_days, bool) or not isinstance(history_days, int | float):
        raise ValueError(f"Scheduler {name!r}: history_days={history_days!r}; expected days > 0")
    if not 0 < history_days <= 3650:
        raise ValueError(f"Scheduler {name!r}: history_days={history_days!r}; expected days > 0")
    config = SchedulerConfig(
        name,
        tuple(declared),
        policy,
        path,
        float(lead),
        history=history,
        history_days=float(history_days),
    )
    from otpkit.scheduler._scheduler import SchedulerWorker  # noqa: PLC0415 - it imports this

    worker = ChildSpec("scheduler", SchedulerWorker, (config,), shutdown=handover_timeout + 5)
    singleton = Singleton(
        worker,
        name,
        policy=policy,
        settle_timeout=settle_timeout,
        handover_timeout=handover_timeout,
        id="singleton",
        **options,
    )
    pool = pool_child_spec(name, max_concurrency=max_concurrency, queue_limit=queue_limit)
    return ChildSpec(
        id if id is not None else ("scheduler", name),
        Supervisor,
        kwargs={"children": [pool, singleton], "strategy": "rest_for_one", "intensity": 3},
        type="supervisor",
    )
