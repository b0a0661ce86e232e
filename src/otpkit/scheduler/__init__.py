"""scheduler: Quantum's jobs, fired once per tick by the cluster's scheduler.

:func:`Scheduler` (``_scheduler``) is the child spec of the cluster's scheduler (a
Singleton with a replica and a task pool on every node); the runtime API (``_client``:
``add_job``, ``run_job``, ...) works from any process of any node.

The decisions are pure functions of plain values (no processes, no clock):

* :class:`Schedule` (``_schedule``): a cron expression in a time zone and its fire
  times in UTC, with Vixie cron's daylight-saving rule.
* :func:`plan_misfires` (``_plan``): after a gap, which due ticks run and which are
  reported missed, per the job's misfire policy; ticks only move forward.
* :class:`FireQueue` (``_queue``): the next fire time of each job, in a heap.
* :class:`Job` (``_job``): a job's fields, each checked when it is made.
* the run ledger (``_ledger``): per job and node the highest claimed tick and the open
  claims, fenced by epoch; replicas merged by the newest stamped lane.
* :class:`Store` (``_store``): SQLite for runtime jobs and the ledger; a corrupt or
  unknown file is reported, never replaced.
"""

from __future__ import annotations

from otpkit.scheduler._client import (
    activate_job,
    add_job,
    deactivate_job,
    delete_all_jobs,
    delete_job,
    find_job,
    jobs,
    run_job,
    subscribe,
    unsubscribe,
)
from otpkit.scheduler._context import RunInfo, current_run
from otpkit.scheduler._job import RUN_STRATEGIES, STATES, InvalidJob, Job, load_task, task_ref
from otpkit.scheduler._ledger import (
    LEDGER_FORMAT,
    OUTCOMES,
    ClaimKey,
    Lane,
    LaneUpdate,
    Ledger,
    LedgerError,
    accept,
    claim,
    decode_ledger,
    decode_update,
    encode_ledger,
    encode_update,
    finish,
    highest,
    interrupted,
    lane_update,
    merge,
    observe,
    open_claims,
)
from otpkit.scheduler._plan import MISFIRE_POLICIES, MisfirePlan, MissedTicks, plan_misfires
from otpkit.scheduler._queue import FireQueue
from otpkit.scheduler._schedule import ALIASES, FIELDS, Schedule, ScheduleError
from otpkit.scheduler._scheduler import (
    DEFAULT_NAME,
    EVENT_KINDS,
    JobEvent,
    Scheduler,
    SchedulerWorker,
    pick_nodes,
)
from otpkit.scheduler._store import SCHEMA_VERSION, Store, StoreError

__all__ = [
    "ALIASES",
    "DEFAULT_NAME",
    "EVENT_KINDS",
    "FIELDS",
    "LEDGER_FORMAT",
    "MISFIRE_POLICIES",
    "OUTCOMES",
    "RUN_STRATEGIES",
    "SCHEMA_VERSION",
    "STATES",
    "ClaimKey",
    "FireQueue",
    "InvalidJob",
    "Job",
    "JobEvent",
    "Lane",
    "LaneUpdate",
    "Ledger",
    "LedgerError",
    "MisfirePlan",
    "MissedTicks",
    "RunInfo",
    "Schedule",
    "ScheduleError",
    "Scheduler",
    "SchedulerWorker",
    "Store",
    "StoreError",
    "accept",
    "activate_job",
    "add_job",
    "claim",
    "current_run",
    "deactivate_job",
    "decode_ledger",
    "decode_update",
    "delete_all_jobs",
    "delete_job",
    "encode_ledger",
    "encode_update",
    "find_job",
    "finish",
    "highest",
    "interrupted",
    "jobs",
    "lane_update",
    "load_task",
    "merge",
    "observe",
    "open_claims",
    "pick_nodes",
    "plan_misfires",
    "run_job",
    "subscribe",
    "task_ref",
    "unsubscribe",
]
