"""The misfire plan: which due ticks of a job run now, and which are reported missed.

Pure: a function of the schedule, the highest tick already claimed, ``now`` and the
job's policy. The scheduler calls it whenever it looks at a job (each wake-up, after a
fail-over, after a clock step) and acts on the result: it claims the ``run`` ticks in the
ledger and starts them, reports ``missed``, and records ``high_water`` as the job's
highest claimed tick.

The contract:

* **Due ticks** are the fire times in ``(last_claimed, now]``. When no tick was ever
  claimed (``last_claimed`` is None) they start at ``since`` (inclusive: the instant the
  job was added, say) or, without it, at ``now - grace``: a history nobody recorded is
  not invented.
* **Late** ticks are due ticks older than ``grace`` seconds (``now - tick > grace``); the
  others are on time and are never misfires.
* The policy picks ``run`` among the due ticks, always their most recent ones:
  ``skip`` runs the on-time ticks; ``run_once`` runs the on-time ticks, or, when there
  are none, the most recent late tick (the gap becomes one run); ``run_all`` runs every
  due tick. Each policy runs at most ``max_runs`` ticks (default 100) per plan: the
  older rest is missed (bounded catch-up: a week's gap of a per-minute job does not
  start 10,080 runs).
* **Missed** ticks are every due tick before the first one run: nothing is dropped
  silently. They are a span of the schedule (:class:`MissedTicks`), listed on demand,
  so that a long gap costs no memory.
* Ticks only move forward: nothing at or before ``last_claimed`` is ever in a plan, so
  a clock stepped back fires nothing twice; a clock stepped forward makes the ticks it
  jumped over due, and each is run or missed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice

from otpkit.scheduler._schedule import Schedule

__all__ = ["MISFIRE_POLICIES", "MisfirePlan", "MissedTicks", "plan_misfires"]

MISFIRE_POLICIES = ("run_once", "run_all", "skip")
#: The ticks :meth:`MissedTicks.count` walks before it estimates the rest of a span.
COUNT_WALK = 256
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class MissedTicks:
    """Every fire time of ``schedule`` in ``[first, last]``: ticks that no one ran.

    Empty (false) when ``first`` is None. Iterate to list them; a span costs no memory
    however long the gap was.
    """

    schedule: Schedule
    first: datetime | None = None
    last: datetime | None = None

    def __bool__(self) -> bool:
        return self.first is not None

    def __iter__(self) -> Iterator[datetime]:
        if self.first is None or self.last is None:
            return iter(())
        return self.schedule.fire_times(self.first, self.last + _TICK)

    def count(self, walk: int = COUNT_WALK) -> int:
        """How many ticks the span holds: exact up to ``walk`` ticks (at least 2); past
        them, those plus the rest of the span at their mean gap (exact for a schedule of
        even steps, an estimate for others), so a long gap is not walked tick by tick."""
        if self.first is None or self.last is None:
            return 0
        head = list(islice(self, max(2, walk)))
        if len(head) < max(2, walk) or head[-1] >= self.last:
            return len(head)
        gap = (head[-1] - head[0]) / (len(head) - 1)
        return len(head) + max(1, round((self.last - head[-1]) / gap))


@dataclass(frozen=True)
class MisfirePlan:
    """What to do with a job's due ticks now.

    Attributes:
        run: the ticks to claim and start now, oldest first.
        missed: the due ticks that are not run (all of them before ``run[0]``).
        high_water: the highest tick this plan settles (run or missed), or the previous
            ``last_claimed`` when nothing was due: record it as the job's highest claimed
            tick.
        next_at: the next fire time after both ``now`` and ``high_water`` (None for a
            schedule with no fire times): when to look at the job again.
    """

    run: tuple[datetime, ...]
    missed: MissedTicks
    high_water: datetime | None
    next_at: datetime | None


def _last_ticks(schedule: Schedule, low: datetime, high: datetime, count: int) -> list[datetime]:
    """The last ``count`` fire times in ``(low, high]``, oldest first.

    The window before ``high`` doubles until it holds ``count`` ticks or reaches
    ``low``, so a long gap is never walked tick by tick from its start.
    """
    width = timedelta(minutes=1)
    while True:
        start = max(low, high - width)
        ticks: deque[datetime] = deque(maxlen=count)
        ticks.extend(schedule.fire_times(start + _TICK, high + _TICK))
        if len(ticks) == count or start == low:
            return list(ticks)
        width *= 2


def plan_misfires(
    schedule: Schedule,
    last_claimed: datetime | None,
    now: datetime,
    policy: str,
    grace: float,
    *,
    since: datetime | None = None,
    max_runs: int = 100,
) -> MisfirePlan:
    """Decide which due ticks run now and which are missed; see the module's contract.

    Args:
        schedule: the job's schedule.
        last_claimed: the job's highest claimed tick, or None if it never had one.
        now: the current time (aware).
        policy: ``"run_once"``, ``"run_all"`` or ``"skip"``.
        grace: seconds a tick may be late and still count as on time.
        since: with ``last_claimed`` None, the first instant whose ticks are due.
        max_runs: the most ticks one plan runs (at least 1).

    Raises:
        ValueError: an unknown policy, a negative or non-finite grace, ``max_runs`` < 1.
    """
    if policy not in MISFIRE_POLICIES:
        raise ValueError(f"misfire policy {policy!r}: expected one of {MISFIRE_POLICIES}")
    if isinstance(grace, bool) or not math.isfinite(grace) or grace < 0:
        raise ValueError(f"misfire grace {grace!r}: expected a finite number of seconds >= 0")
    if max_runs < 1:
        raise ValueError(f"max_runs {max_runs!r}: expected at least 1")
    on_time_from = now - timedelta(seconds=grace)
    if last_claimed is not None:
        low = last_claimed
    elif since is not None:
        low = since - _TICK
    else:
        low = on_time_from - _TICK
    if low >= now or schedule.reboot:
        # Nothing can be due: a clock stepped back behind the last claim lands here.
        return MisfirePlan((), MissedTicks(schedule), last_claimed, _next(schedule, now, low))
    tail = _last_ticks(schedule, low, now, max_runs + 1)
    if not tail:
        return MisfirePlan((), MissedTicks(schedule), last_claimed, _next(schedule, now, low))
    on_time = [t for t in tail if t >= on_time_from][-max_runs:]
    if policy == "run_all":
        run = tail[-max_runs:]
    elif policy == "run_once" and not on_time:
        run = tail[-1:]
    else:
        run = on_time
    first_due = schedule.next_after(low)
    if run and run[0] == first_due:
        missed = MissedTicks(schedule)
    else:
        last_missed = tail[len(tail) - len(run) - 1]
        missed = MissedTicks(schedule, first_due, last_missed)
    return MisfirePlan(tuple(run), missed, tail[-1], _next(schedule, now, tail[-1]))


def _next(schedule: Schedule, now: datetime, high_water: datetime | None) -> datetime | None:
    after = now if high_water is None else max(now, high_water)
    return schedule.next_after(after)
