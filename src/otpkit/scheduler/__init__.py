"""scheduler: Quantum's jobs, fired once per tick by the cluster's scheduler.

So far the pure groundwork, as functions of plain values (no processes, no clock):

* :class:`Schedule` (``_schedule``): a cron expression in a time zone and its fire
  times in UTC, with Vixie cron's daylight-saving rule.
* :func:`plan_misfires` (``_plan``): after a gap, which due ticks run and which are
  reported missed, per the job's misfire policy; ticks only move forward.
* :class:`FireQueue` (``_queue``): the next fire time of each job, in a heap.
* :class:`Job` (``_job``): a job's fields, each checked when it is made.
"""

from __future__ import annotations

from otpkit.scheduler._job import RUN_STRATEGIES, STATES, InvalidJob, Job, load_task, task_ref
from otpkit.scheduler._plan import MISFIRE_POLICIES, MisfirePlan, MissedTicks, plan_misfires
from otpkit.scheduler._queue import FireQueue
from otpkit.scheduler._schedule import ALIASES, FIELDS, Schedule, ScheduleError

__all__ = [
    "ALIASES",
    "FIELDS",
    "MISFIRE_POLICIES",
    "RUN_STRATEGIES",
    "STATES",
    "FireQueue",
    "InvalidJob",
    "Job",
    "MisfirePlan",
    "MissedTicks",
    "Schedule",
    "ScheduleError",
    "load_task",
    "plan_misfires",
    "task_ref",
]
