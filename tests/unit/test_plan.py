"""The misfire plan (otpkit.scheduler._plan) and the next-fire queue (_queue).

Expected plans follow the contract in ``_plan``'s docstring: due ticks are in
``(last_claimed, now]``; on time within ``grace``; ``skip`` / ``run_once`` / ``run_all``;
at most ``max_runs`` runs; every other due tick is missed; nothing at or before
``last_claimed`` is ever planned.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otpkit.scheduler import Schedule
from otpkit.scheduler._plan import MissedTicks, plan_misfires
from otpkit.scheduler._queue import FireQueue

EVERY_MINUTE = Schedule.parse("* * * * *")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def at(minute: int, second: float = 0) -> datetime:
    """10:mm:ss on 2026-01-01, UTC."""
    return utc("2026-01-01 10:00") + timedelta(minutes=minute, seconds=second)


def span(missed: MissedTicks) -> list[datetime]:
    return list(missed)


# --------------------------------------------------------------------------------------
# policies after a gap: last claimed 10:00, ticks 10:01 ... 10:05 due
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "run", "missed"),
    [
        ("skip", [5], [1, 2, 3, 4]),
        ("run_once", [5], [1, 2, 3, 4]),
        ("run_all", [1, 2, 3, 4, 5], []),
    ],
)
def test_last_tick_on_time(policy: str, run: list[int], missed: list[int]):
    plan = plan_misfires(EVERY_MINUTE, at(0), at(5, 0.5), policy, 1.0)
    assert plan.run == tuple(at(m) for m in run)
    assert span(plan.missed) == [at(m) for m in missed]
    assert bool(plan.missed) == bool(missed)
    assert plan.high_water == at(5)
    assert plan.next_at == at(6)


@pytest.mark.parametrize(
    ("policy", "run", "missed"),
    [
        ("skip", [], [1, 2, 3, 4, 5]),
        ("run_once", [5], [1, 2, 3, 4]),
        ("run_all", [1, 2, 3, 4, 5], []),
    ],
)
def test_every_tick_late(policy: str, run: list[int], missed: list[int]):
    plan = plan_misfires(EVERY_MINUTE, at(0), at(5, 30), policy, 1.0)
    assert plan.run == tuple(at(m) for m in run)
    assert span(plan.missed) == [at(m) for m in missed]
    assert plan.high_water == at(5)


def test_grace_bounds_are_inclusive():
    # 10:05 is exactly `grace` late: on time.
    plan = plan_misfires(EVERY_MINUTE, at(0), at(5, 1), "skip", 1.0)
    assert plan.run == (at(5),)
    plan = plan_misfires(EVERY_MINUTE, at(0), at(5, 1.000001), "skip", 1.0)
    assert plan.run == ()
    # grace 0: only a tick at exactly now is on time.
    assert plan_misfires(EVERY_MINUTE, at(0), at(5), "skip", 0).run == (at(5),)


def test_a_long_grace_makes_several_ticks_on_time():
    plan = plan_misfires(EVERY_MINUTE, at(0), at(5, 10), "skip", 150)
    assert plan.run == (at(3), at(4), at(5))
    assert span(plan.missed) == [at(1), at(2)]


def test_run_all_catch_up_is_bounded():
    plan = plan_misfires(EVERY_MINUTE, at(0), at(5, 30), "run_all", 1.0, max_runs=3)
    assert plan.run == (at(3), at(4), at(5))
    assert span(plan.missed) == [at(1), at(2)]
    week = plan_misfires(EVERY_MINUTE, at(0), at(0) + timedelta(days=7), "run_all", 1.0)
    assert len(week.run) == 100
    assert week.run[-1] == at(0) + timedelta(days=7)
    assert week.missed.first == at(1)
    assert week.missed.last == week.run[0] - timedelta(minutes=1)
    assert sum(1 for _ in week.missed) + len(week.run) == 7 * 24 * 60


def test_run_once_coalesces_a_gap_into_one_run():
    plan = plan_misfires(EVERY_MINUTE, at(0), at(0) + timedelta(hours=3, seconds=30), "run_once", 1)
    assert plan.run == (at(180),)
    assert plan.missed.first == at(1)
    assert plan.missed.last == at(179)


def test_nothing_due():
    plan = plan_misfires(EVERY_MINUTE, at(5), at(5, 30), "run_all", 1.0)
    assert plan.run == ()
    assert not plan.missed
    assert span(plan.missed) == []
    assert plan.high_water == at(5)
    assert plan.next_at == at(6)


# --------------------------------------------------------------------------------------
# clock steps
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["skip", "run_once", "run_all"])
def test_a_clock_stepped_back_fires_nothing_again(policy: str):
    plan = plan_misfires(EVERY_MINUTE, at(5), at(2, 0.5), policy, 1.0)
    assert plan.run == ()
    assert not plan.missed
    assert plan.high_water == at(5)
    assert plan.next_at == at(6)  # not 10:03: 10:03-10:05 already had their turn
    # Back to the claim itself: still nothing.
    assert plan_misfires(EVERY_MINUTE, at(5), at(5), policy, 1.0).run == ()


@pytest.mark.parametrize("policy", ["skip", "run_once", "run_all"])
def test_a_clock_stepped_forward_drops_no_tick_silently(policy: str):
    plan = plan_misfires(EVERY_MINUTE, at(5), at(65, 0.2), policy, 1.0, max_runs=10)
    settled = sorted([*plan.run, *plan.missed])
    assert settled == [at(m) for m in range(6, 66)]
    assert len(set(settled)) == len(settled)


def test_first_plan_without_history():
    # Nothing claimed and no `since`: only an on-time tick is due.
    assert plan_misfires(EVERY_MINUTE, None, at(5, 0.5), "run_all", 1.0).run == (at(5),)
    plan = plan_misfires(EVERY_MINUTE, None, at(5, 30), "run_all", 1.0)
    assert plan.run == ()
    assert not plan.missed
    assert plan.high_water is None
    assert plan.next_at == at(6)
    # With `since` (the job was added at 10:02), ticks from then on are due.
    plan = plan_misfires(EVERY_MINUTE, None, at(5, 30), "run_once", 1.0, since=at(2))
    assert plan.run == (at(5),)
    assert span(plan.missed) == [at(2), at(3), at(4)]
    assert plan.high_water == at(5)
    # `since` in the future: nothing yet.
    later = plan_misfires(EVERY_MINUTE, None, at(5, 30), "run_once", 1.0, since=at(8))
    assert (later.run, later.high_water, later.next_at) == ((), None, at(8))


def test_reboot_plans_nothing():
    plan = plan_misfires(Schedule.parse("@reboot"), None, at(5), "run_all", 1.0)
    assert (plan.run, bool(plan.missed), plan.high_water, plan.next_at) == ((), False, None, None)


def test_a_long_gap_of_a_per_second_job_is_cheap():
    secondly = Schedule.parse("@secondly")
    plan = plan_misfires(secondly, at(0), at(0) + timedelta(days=30, seconds=0.5), "run_once", 1)
    assert plan.run == (at(0) + timedelta(days=30),)
    assert plan.missed.first == at(0, 1)
    assert plan.missed.last == at(0) + timedelta(days=30, seconds=-1)


def test_a_gap_across_fall_back_runs_each_tick_once():
    s = Schedule.parse("30 2 * * *", "Europe/Berlin")
    plan = plan_misfires(s, utc("2026-10-24 00:30"), utc("2026-10-26 12:00"), "run_all", 1)
    assert plan.run == (utc("2026-10-25 00:30"), utc("2026-10-26 01:30"))
    assert not plan.missed


def test_bad_arguments():
    with pytest.raises(ValueError, match="misfire policy 'later'"):
        plan_misfires(EVERY_MINUTE, None, at(0), "later", 1.0)
    for grace in (-1, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="misfire grace"):
            plan_misfires(EVERY_MINUTE, None, at(0), "skip", grace)
    with pytest.raises(ValueError, match="max_runs"):
        plan_misfires(EVERY_MINUTE, None, at(0), "skip", 1.0, max_runs=0)


# --------------------------------------------------------------------------------------
# property: plans over any sequence of clock readings settle each tick exactly once
# --------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    expr=st.sampled_from(["* * * * *", "*/7 * * * *", "*/20 * * * * *", "0 1-3 * * *"]),
    tz=st.sampled_from(["UTC", "Europe/Berlin"]),
    policy=st.sampled_from(["skip", "run_once", "run_all"]),
    grace=st.sampled_from([0, 1.0, 90.0]),
    max_runs=st.integers(1, 5),
    steps=st.lists(st.integers(-3600, 3 * 3600), min_size=1, max_size=10),
)
def test_each_tick_is_settled_once(
    expr: str, tz: str, policy: str, grace: float, max_runs: int, steps: list[int]
):
    schedule = Schedule.parse(expr, tz)
    since = utc("2026-10-24 22:00")  # the night Berlin falls back
    now, last = since, None
    run: list[datetime] = []
    missed: list[datetime] = []
    latest = since - timedelta(seconds=1)  # the latest clock reading
    for step in steps:
        now += timedelta(seconds=step)
        latest = max(latest, now)
        plan = plan_misfires(schedule, last, now, policy, grace, since=since, max_runs=max_runs)
        assert all(last is None or t > last for t in [*plan.run, *plan.missed])
        assert len(plan.run) <= max_runs
        assert list(plan.run) == sorted(plan.run)
        if plan.run and plan.missed.last is not None:
            assert plan.missed.last < plan.run[0]
        run += plan.run
        missed += plan.missed
        last = plan.high_water
        if plan.next_at is not None:
            assert plan.next_at > now and (last is None or plan.next_at > last)
    settled = run + missed
    assert len(set(settled)) == len(settled)  # no tick run twice, none both run and missed
    assert sorted(settled) == list(schedule.fire_times(since, latest + timedelta(microseconds=1)))


# --------------------------------------------------------------------------------------
# FireQueue
# --------------------------------------------------------------------------------------


def test_queue_basics():
    q = FireQueue()
    q.add("b", at(2))
    q.add("a", at(2))
    q.add("c", at(1))
    assert len(q) == 3 and "a" in q and "z" not in q
    assert q.next_at() == at(1)
    with pytest.raises(ValueError, match="already queued"):
        q.add("a", at(3))
    q.update("c", at(3))
    assert q.when("c") == at(3)
    assert q.next_at() == at(2)
    assert q.pop_due(at(1)) == []
    assert q.pop_due(at(2)) == [(at(2), "a"), (at(2), "b")]  # same instant: name order
    assert len(q) == 1
    q.remove("c")
    assert q.next_at() is None
    assert q.pop_due(at(99)) == []
    with pytest.raises(KeyError):
        q.remove("c")
    with pytest.raises(KeyError):
        q.update("c", at(1))
    q.add("c", at(4))  # a removed job comes back cleanly
    q.update("c", at(5))
    q.update("c", at(4))  # back to an earlier time: one entry pops, not two
    assert q.pop_due(at(9)) == [(at(4), "c")]


def test_queue_with_ten_thousand_jobs():
    rng = random.Random(7)
    q = FireQueue()
    expected: dict[str, datetime] = {}
    for i in range(10_000):
        name = f"job-{i:05}"
        expected[name] = at(0, rng.randrange(0, 3600))
        q.add(name, expected[name])
    for name in rng.sample(sorted(expected), 3000):
        expected[name] = at(0, rng.randrange(0, 3600))
        q.update(name, expected[name])
    for name in rng.sample(sorted(expected), 2000):
        del expected[name]
        q.remove(name)
    assert len(q) == 8000
    assert len(q._heap) <= 2 * len(q) + 16  # stale entries are compacted
    popped: list[tuple[datetime, str]] = []
    for minute in range(0, 70, 7):
        batch = q.pop_due(at(minute))
        assert all(t <= at(minute) for t, _ in batch)
        popped += batch
        assert q.next_at() is None or q.next_at() > at(minute)  # type: ignore[operator]
    assert popped == sorted((t, name) for name, t in expected.items())
    assert len(q) == 0
