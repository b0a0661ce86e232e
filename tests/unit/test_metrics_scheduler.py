"""The scheduler's metrics (issue 15): the ``job`` label of each job, the updates each
job event makes, the count of a span of missed ticks, and - read back from a real
metrics service in this process with ``prometheus_client``'s parser - what the holder's
finish tracker and tick engine send (over three members wired in memory,
``test_replication.Cluster``, with a real event bus) and what the pool's gauges send.

What a user checks on ``/metrics``: each tick's run counted once, when it ends, by
outcome (a retried attempt is a retry, not a run; a report sent again is not counted
again); each attempt's duration; the lateness of a tick's first attempt only; every
tick of a missed span; a job of the configuration under its name, one added at run
time under ``(runtime)``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from otpkit import metrics
from otpkit.scheduler._engine import Engine
from otpkit.scheduler._events import EventBus, JobEvent, new_event
from otpkit.scheduler._finishes import _HOLDER, Finishes
from otpkit.scheduler._job import Job
from otpkit.scheduler._ledger import ClaimKey, claim_all
from otpkit.scheduler._ledger_attempts import start_all
from otpkit.scheduler._messages import RunDone, RunStarted
from otpkit.scheduler._metrics import (
    MAX_LABEL,
    PoolLoad,
    event_updates,
    job_label,
    job_labels,
)
from otpkit.scheduler._peers import Peers
from otpkit.scheduler._plan import MissedTicks
from otpkit.scheduler._schedule import Schedule
from tests.harness import metrics_read
from tests.harness.polling import wait_for
from tests.unit.test_replication import Cluster

TICK = datetime(2026, 1, 1, tzinfo=UTC)
BOUND = 10.0
TASK = "json:dumps"


# ---------------------------------------------------------------------- labels


def test_configuration_jobs_keep_their_names_up_to_the_cap_the_rest_are_other():
    names = [f"job{i}" for i in range(metrics.MAX_JOB_LABELS + 5)]
    labels = job_labels(names)
    assert [job_label(labels, n) for n in names[:3]] == ["job0", "job1", "job2"]
    assert (
        job_label(labels, names[metrics.MAX_JOB_LABELS - 1]) == f"job{metrics.MAX_JOB_LABELS - 1}"
    )
    assert {job_label(labels, n) for n in names[metrics.MAX_JOB_LABELS :]} == {metrics.OTHER_JOBS}
    own = {v for v in labels.values() if v != metrics.OTHER_JOBS}
    assert len(own) == metrics.MAX_JOB_LABELS


def test_a_job_added_at_run_time_is_runtime_and_a_long_name_is_other():
    long = "x" * (MAX_LABEL + 1)
    labels = job_labels(["a", long, "b", "a"])
    assert job_label(labels, "a") == "a" and job_label(labels, "b") == "b"
    assert job_label(labels, long) == metrics.OTHER_JOBS  # the service takes 256 characters
    assert job_label(labels, "added-later") == metrics.RUNTIME_JOBS
    assert job_label(job_labels([]), "a") == metrics.RUNTIME_JOBS


# ---------------------------------------------------------------------- event updates


def _event(kind: str, **kw: Any) -> JobEvent:
    return new_event(kind, "j", tick=kw.pop("tick", TICK), **kw)


S = {"scheduler": "s", "job": "j"}


@pytest.mark.parametrize(
    ("event", "updates"),
    [
        (
            _event("run_finished", duration=2.0),
            [
                ("inc", "otpkit_job_runs_total", {**S, "outcome": "finished"}, 1.0),
                ("observe", "otpkit_job_run_duration_seconds", S, 2.0),
            ],
        ),
        (
            _event("run_failed"),  # given up before it ran: no duration
            [("inc", "otpkit_job_runs_total", {**S, "outcome": "failed"}, 1.0)],
        ),
        (
            _event("run_timed_out", duration=5.0),
            [
                ("inc", "otpkit_job_runs_total", {**S, "outcome": "timed_out"}, 1.0),
                ("observe", "otpkit_job_run_duration_seconds", S, 5.0),
            ],
        ),
        (
            _event("run_interrupted"),
            [("inc", "otpkit_job_runs_total", {**S, "outcome": "interrupted"}, 1.0)],
        ),
        (
            _event("run_retrying", duration=1.5, extra={"attempt": 1}),
            [
                ("observe", "otpkit_job_run_duration_seconds", S, 1.5),
                ("inc", "otpkit_job_retries_total", S, 1.0),
            ],
        ),
        (_event("run_skipped"), [("inc", "otpkit_job_ticks_skipped_total", S, 1.0)]),
        (
            _event("run_missed", extra={"first": TICK, "last": TICK, "ticks": 7}),
            [("inc", "otpkit_job_ticks_missed_total", S, 7.0)],
        ),
        (_event("run_missed"), [("inc", "otpkit_job_ticks_missed_total", S, 1.0)]),
        (
            _event("run_started", started=TICK.timestamp() + 0.25),
            [("observe", "otpkit_job_fire_lateness_seconds", S, 0.25)],
        ),
        (_event("run_started", started=TICK.timestamp() + 3, extra={"attempt": 2}), []),
        (
            _event("run_started", started=TICK.timestamp() - 0.1),  # another clock
            [("observe", "otpkit_job_fire_lateness_seconds", S, 0.0)],
        ),
        (
            _event("run_finished", duration=-0.5),  # a clock stepped back
            [
                ("inc", "otpkit_job_runs_total", {**S, "outcome": "finished"}, 1.0),
                ("observe", "otpkit_job_run_duration_seconds", S, 0.0),
            ],
        ),
        (new_event("job_added", "j"), []),
        (new_event("job_updated", "j", extra={"state": "inactive"}), []),
    ],
    ids=lambda value: value.kind if isinstance(value, JobEvent) else "",
)
def test_each_event_makes_its_updates(event: JobEvent, updates: list[Any]):
    assert event_updates(event, "s", "j") == updates


# ---------------------------------------------------------------------- missed ticks


@pytest.mark.parametrize(
    ("expr", "span"),
    [
        ("* * * * * *", timedelta(seconds=30)),
        ("*/5 * * * *", timedelta(days=3)),
        ("0 9-17 * * 1-5", timedelta(days=14)),
        ("0 0 29 2 *", timedelta(days=3000)),
    ],
)
def test_a_short_span_is_counted_tick_by_tick(expr: str, span: timedelta):
    schedule = Schedule.parse(expr)
    first = schedule.next_after(TICK)
    assert first is not None
    ticks = list(schedule.fire_times(first, first + span))
    missed = MissedTicks(schedule, ticks[0], ticks[-1])
    assert missed.count() == len(ticks) == len(list(missed))


def test_a_long_span_of_even_steps_is_counted_exactly_without_walking_it():
    schedule = Schedule.parse("* * * * * *")
    first = datetime(2025, 1, 1, tzinfo=UTC)
    last = datetime(2026, 1, 1, tzinfo=UTC)
    began = time.monotonic()
    count = MissedTicks(schedule, first, last).count()
    # a year of seconds: walking them one by one takes minutes
    assert count == 365 * 86_400 + 1
    assert time.monotonic() - began < 5.0
    hourly = Schedule.parse("@hourly")
    span = MissedTicks(hourly, first, last)
    assert span.count() == len(list(span)) == 365 * 24 + 1


def test_a_long_uneven_span_is_estimated_from_its_first_ticks():
    schedule = Schedule.parse("0 9-17 * * 1-5")  # on the hour, working hours, weekdays
    first = schedule.next_after(TICK)
    assert first is not None
    ticks = list(schedule.fire_times(first, first + timedelta(days=120)))
    missed = MissedTicks(schedule, ticks[0], ticks[-1])
    assert len(ticks) > 600
    assert abs(missed.count() - len(ticks)) <= len(ticks) * 0.1


def test_an_empty_span_and_a_span_of_one_tick():
    schedule = Schedule.parse("* * * * * *")
    assert MissedTicks(schedule).count() == 0
    assert MissedTicks(schedule, TICK, TICK).count() == 1
    assert MissedTicks(schedule, TICK, TICK + timedelta(seconds=9)).count(walk=2) == 10


# ---------------------------------------------------------------------- the holder


def sample(svc: metrics.Service, name: str, **labels: str) -> float | None:
    return metrics_read.value(metrics_read.read(svc), name, **labels)


def wait_sample(svc: metrics.Service, name: str, value: float, **labels: str) -> None:
    wait_for(
        lambda: sample(svc, name, **labels) == value,
        BOUND,
        f"{name}{labels} == {value}",
        diagnose=lambda: f"{name}{labels} = {sample(svc, name, **labels)}",
    )


@pytest.fixture
def service() -> Iterator[metrics.Service]:
    yield from metrics_read.running_service()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path, 3)
    try:
        yield made
    finally:
        made.close()


class Holder:
    """A recovered writer on m0 of scheduler ``s`` with its finish tracker, engine and a
    real event bus (configuration jobs ``config``); pools are not reached: runs sent
    and acks are recorded, and so are the events broadcast."""

    def __init__(
        self, cluster: Cluster, jobs: list[Job], config: list[str], since: datetime = TICK
    ) -> None:
        self.writer = cluster.writer("m0", 1)
        assert self.writer.read().ok
        for job in jobs:
            origin = "config" if job.name in config else "runtime"
            update = self.writer.job_update(job.name, job.to_spec(), origin, since)
            assert self.writer.write([update], force=True)
        self.writer.established()
        self.member = cluster.members["m0"]
        self.events: list[JobEvent] = []
        self.sent: list[tuple[ClaimKey, int]] = []
        bus = EventBus("s", "m0", self.events.append, config)

        def later(kind: str, delay: float | None) -> object:
            return object()

        self.finishes = Finishes(
            node="m0",
            lost_after=0.3,
            member=self.member,
            writer=self.writer,
            bus=bus,
            peers=Peers(),
            pool_svc="pool",
            later=later,
        )
        self.finishes._ack = lambda node, items: None  # type: ignore[method-assign]
        self.engine = Engine(
            name="s",
            node="m0",
            lead=0.05,
            max_wait=1.0,
            member=self.member,
            writer=self.writer,
            finishes=self.finishes,
            bus=bus,
            peers=Peers(),
            rng=random.Random(1),
            pool_svc="pool",
            later=later,
            cancel=lambda timer: None,
        )
        self.engine._send = lambda key, target, spec, attempt: self.sent.append((key, attempt))  # type: ignore[method-assign]

    def claim(self, key: ClaimKey) -> None:
        ledger, _ = claim_all(self.member.rep.ledger, [key], self.writer.epoch)
        assert self.writer.write(self.writer.lane_updates(ledger, [key]))

    def start(self, key: ClaimKey, attempt: int, late: float) -> float:
        """The pool's report that ``attempt`` of ``key`` entered its task ``late``
        seconds after the tick; its start."""
        if attempt > 1:
            ledger, _ = start_all(self.member.rep.ledger, [(key, attempt)], self.writer.epoch)
            assert self.writer.write(self.writer.lane_updates(ledger, [key]))
        start = key.at.timestamp() + late
        self.finishes.started(RunStarted("m0", key, start, {"attempt": attempt}))
        return start

    def report(
        self, key: ClaimKey, attempt: int, outcome: str, start: float, seconds: float
    ) -> None:
        info = {"attempt": attempt, "raised": outcome == "failed", "traceback": None}
        error = None if outcome == "finished" else "boom"
        self.finishes.done(RunDone("m0", key, outcome, start, start + seconds, error, info))
        self.finishes.flush()

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def test_a_finished_run_counts_once_with_its_duration_and_lateness(
    cluster: Cluster, service: metrics.Service
):
    holder = Holder(cluster, [Job("j", "0 0 1 1 *", TASK), Job("k", "0 0 1 1 *", TASK)], ["j", "k"])
    key = ClaimKey("j", TICK)
    holder.claim(key)
    start = holder.start(key, 1, late=0.5)
    holder.report(key, 1, "finished", start, 2.0)
    # the pool sends its report again (the ack was lost): acked, not counted again
    holder.report(key, 1, "finished", start, 2.0)
    other = ClaimKey("k", TICK)
    holder.claim(other)
    holder.report(other, 1, "finished", holder.start(other, 1, late=0.0), 1.0)
    wait_sample(service, "otpkit_job_runs_total", 1, scheduler="s", job="k", outcome="finished")
    assert holder.kinds() == ["run_started", "run_finished", "run_started", "run_finished"]
    j = {"scheduler": "s", "job": "j"}
    assert sample(service, "otpkit_job_runs_total", **j, outcome="finished") == 1
    assert sample(service, "otpkit_job_run_duration_seconds_count", **j) == 1
    assert sample(service, "otpkit_job_run_duration_seconds_sum", **j) == pytest.approx(2.0)
    assert sample(service, "otpkit_job_fire_lateness_seconds_count", **j) == 1
    assert sample(service, "otpkit_job_fire_lateness_seconds_sum", **j) == pytest.approx(0.5)
    assert sample(service, "otpkit_job_runs_total", **j, outcome="failed") is None


def test_a_retried_tick_counts_its_retry_and_one_run_when_it_ends(
    cluster: Cluster, service: metrics.Service
):
    holder = Holder(cluster, [Job("j", "0 0 1 1 *", TASK, max_attempts=3)], ["j"])
    key = ClaimKey("j", TICK)
    holder.claim(key)
    holder.report(key, 1, "failed", holder.start(key, 1, late=0.1), 1.0)
    holder.report(key, 2, "timed_out", holder.start(key, 2, late=3.0), 4.0)
    holder.report(key, 3, "failed", holder.start(key, 3, late=9.0), 1.0)
    j = {"scheduler": "s", "job": "j"}
    wait_sample(service, "otpkit_job_runs_total", 1, **j, outcome="failed")
    assert holder.kinds().count("run_retrying") == 2 and holder.kinds()[-1] == "run_failed"
    assert sample(service, "otpkit_job_retries_total", **j) == 2
    assert sample(service, "otpkit_job_runs_total", **j, outcome="timed_out") is None
    assert sample(service, "otpkit_job_run_duration_seconds_count", **j) == 3
    assert sample(service, "otpkit_job_run_duration_seconds_sum", **j) == pytest.approx(6.0)
    # the tick's first attempt only: a retry starts late on purpose
    assert sample(service, "otpkit_job_fire_lateness_seconds_count", **j) == 1
    assert sample(service, "otpkit_job_fire_lateness_seconds_sum", **j) == pytest.approx(0.1)


def test_timed_out_and_interrupted_runs_of_a_runtime_job(
    cluster: Cluster, service: metrics.Service
):
    holder = Holder(cluster, [Job("added", "0 0 1 1 *", TASK, timeout=1.0)], ["j"])
    first, second = ClaimKey("added", TICK), ClaimKey("added", TICK + timedelta(days=365))
    holder.claim(first)
    holder.claim(second)
    holder.report(first, 1, "timed_out", holder.start(first, 1, late=0.0), 1.0)
    # the holder found the second run gone (``Finishes.check_open``)
    holder.finishes.pending[second] = (_HOLDER, "interrupted", {"where": "m1"})
    holder.finishes.flush()
    runtime = {"scheduler": "s", "job": metrics.RUNTIME_JOBS}
    wait_sample(service, "otpkit_job_runs_total", 1, **runtime, outcome="interrupted")
    assert holder.kinds()[-2:] == ["run_timed_out", "run_interrupted"]
    assert sample(service, "otpkit_job_runs_total", **runtime, outcome="timed_out") == 1
    # an interrupted run has no duration
    assert sample(service, "otpkit_job_run_duration_seconds_count", **runtime) == 1
    assert (
        sample(service, "otpkit_job_runs_total", scheduler="s", job="added", outcome="timed_out")
        is None
    )


def test_every_tick_of_a_missed_span_is_counted(cluster: Cluster, service: metrics.Service):
    # a job due every second since a day ago, never claimed: all but its on-time ticks
    # are missed at the holder's first wake
    since = datetime.now(UTC) - timedelta(days=1)
    job = Job("j", "* * * * * *", TASK, misfire="skip", misfire_grace=1.0)
    holder = Holder(cluster, [job], ["j"], since=since)
    holder.engine.start(datetime.now(UTC))
    holder.engine.wake()
    missed = [e for e in holder.events if e.kind == "run_missed"]
    assert len(missed) == 1 and holder.sent, holder.kinds()
    first, last = missed[0].extra["first"], missed[0].extra["last"]
    ticks = int((last - first).total_seconds()) + 1
    assert ticks > 86_000 and missed[0].extra["ticks"] == ticks
    wait_sample(service, "otpkit_job_ticks_missed_total", ticks, scheduler="s", job="j")


def test_a_tick_whose_previous_run_still_runs_is_counted_skipped(
    cluster: Cluster, service: metrics.Service
):
    holder = Holder(cluster, [Job("j", "0 0 1 1 *", TASK, overlap=False)], ["j"])
    holder.claim(ClaimKey("j", TICK))
    holder.engine.start(datetime.now(UTC))  # the engine learns the job's open lane
    later = TICK + timedelta(days=365)
    holder.engine.claim_and_dispatch([("j", later), ("j", later + timedelta(days=365))], False)
    assert holder.kinds() == ["run_skipped", "run_skipped"]
    wait_sample(service, "otpkit_job_ticks_skipped_total", 2, scheduler="s", job="j")


# ---------------------------------------------------------------------- the pool


def test_the_pool_sets_its_gauges_at_start_and_when_they_change(service: metrics.Service):
    load = PoolLoad("s")
    wait_sample(service, "otpkit_pool_running", 0, scheduler="s")
    assert sample(service, "otpkit_pool_queue_depth", scheduler="s") == 0
    load.update(4, 10)
    wait_sample(service, "otpkit_pool_queue_depth", 4, scheduler="s")
    wait_sample(service, "otpkit_pool_running", 10, scheduler="s")
    load.update(0, 3)
    wait_sample(service, "otpkit_pool_running", 3, scheduler="s")
    assert sample(service, "otpkit_pool_queue_depth", scheduler="s") == 0
