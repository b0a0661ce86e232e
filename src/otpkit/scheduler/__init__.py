"""scheduler: Quantum's jobs, fired once per tick by the cluster's scheduler.

:func:`Scheduler` (``_spec``) is the child spec of the cluster's scheduler (a
Singleton with a replica and a task pool on every node); the runtime API (``_client``:
``add_job``, ``run_job``, ...) works from any process of any node; a subscriber gets
each :class:`JobEvent` (``_events``). This module exports that API only.

The parts inside, each importable from its private module:

* :class:`Schedule` (``_schedule``): a cron expression in a time zone and its fire
  times in UTC, with Vixie cron's daylight-saving rule.
* ``plan_misfires`` (``_plan``): after a gap, which due ticks run and which are
  reported missed, per the job's misfire policy; ticks only move forward.
* ``FireQueue`` (``_queue``): the next fire time of each job, in a heap.
* :class:`Job` (``_job``): a job's fields, each checked when it is made.
* the run ledger (``_ledger``): per job and node the highest claimed tick and the open
  claims with their attempts (``_ledger_attempts``), fenced by epoch, and its encoded
  form (``_ledger_codec``); replicas merged by the newest stamped lane (``_replica``,
  write rounds ``_rounds``); retries (``_retry``) and the run history (``_history``).
* ``Store`` (``_store``): SQLite for runtime jobs and the ledger; a corrupt or unknown
  file is reported, never replaced.
* the scheduler's process (``_scheduler.SchedulerWorker``) and its parts: the messages
  (``_messages``), the majority replication (``_replication``), the tick engine
  (``_engine``), the finish tracker (``_finishes``), the events (``_events``) and the
  runtime API's server (``_api``); the task pool (``_pool``).
"""

from __future__ import annotations

from otpkit.errors import SchedulerUnavailable, UnknownJob
from otpkit.scheduler._client import (
    activate_job,
    add_job,
    deactivate_job,
    delete_all_jobs,
    delete_job,
    find_job,
    history,
    jobs,
    run_job,
    subscribe,
    unsubscribe,
)
from otpkit.scheduler._context import RunInfo, current_run
from otpkit.scheduler._events import EVENT_KINDS, JobEvent
from otpkit.scheduler._job import RUN_STRATEGIES, STATES, InvalidJob, Job
from otpkit.scheduler._messages import DEFAULT_NAME
from otpkit.scheduler._plan import MISFIRE_POLICIES
from otpkit.scheduler._schedule import ALIASES, Schedule, ScheduleError
from otpkit.scheduler._scheduler import Scheduler
from otpkit.scheduler._store import StoreError

__all__ = [
    "ALIASES",
    "DEFAULT_NAME",
    "EVENT_KINDS",
    "MISFIRE_POLICIES",
    "RUN_STRATEGIES",
    "STATES",
    "InvalidJob",
    "Job",
    "JobEvent",
    "RunInfo",
    "Schedule",
    "ScheduleError",
    "Scheduler",
    "SchedulerUnavailable",
    "StoreError",
    "UnknownJob",
    "activate_job",
    "add_job",
    "current_run",
    "deactivate_job",
    "delete_all_jobs",
    "delete_job",
    "find_job",
    "history",
    "jobs",
    "run_job",
    "subscribe",
    "unsubscribe",
]
