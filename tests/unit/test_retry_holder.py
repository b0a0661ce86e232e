"""The holder's side of retries and run history, without processes: a finish tracker and
a tick engine over three members wired in memory (``test_replication.Cluster``, real
SQLite stores). Each case is a sequence a review found wrong: a resent report of an
earlier attempt, a retry whose node is down, the holder's own history on disk, the node
of a retried attempt across a merge, a job changed while its attempt waits."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from otpkit.scheduler import _history
from otpkit.scheduler._engine import Engine
from otpkit.scheduler._events import EventBus, JobEvent
from otpkit.scheduler._finishes import Finishes
from otpkit.scheduler._job import Job
from otpkit.scheduler._ledger import ClaimKey, claim_all
from otpkit.scheduler._ledger_attempts import attempt_of, retry_all, start_all
from otpkit.scheduler._messages import Observe, RunDone
from otpkit.scheduler._peers import Peers
from otpkit.scheduler._replica import Replica, merge
from otpkit.scheduler._replication import Writer
from tests.unit.test_replication import Cluster

TICK = datetime(2026, 1, 1, tzinfo=UTC)


class Holder:
    """A recovered writer on m0 with a finish tracker and an engine; events and timers
    are recorded, acks to pools too."""

    def __init__(self, cluster: Cluster, job: Job) -> None:
        self.cluster = cluster
        self.writer: Writer = cluster.writer("m0", 1)
        assert self.writer.read().ok
        update = self.writer.job_update(job.name, job.to_spec(), "runtime", TICK)
        assert self.writer.write([update], force=True)
        self.writer.established()
        self.member = cluster.members["m0"]
        self.events: list[JobEvent] = []
        self.timers: list[tuple[str, float | None]] = []
        self.acks: list[Any] = []
        bus = EventBus("s", "m0", lambda event: None)
        bus.emit = self.events.append  # type: ignore[method-assign]

        def later(kind: str, delay: float | None) -> object:
            self.timers.append((kind, delay))
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
        self.finishes._ack = lambda node, items: self.acks.append((node, items))  # type: ignore[method-assign]
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
        self.engine._send = lambda key, target, spec, attempt: None  # type: ignore[method-assign]

    def claim(self, key: ClaimKey) -> None:
        ledger, _ = claim_all(self.member.rep.ledger, [key], self.writer.epoch)
        assert self.writer.write(self.writer.lane_updates(ledger, [key]))

    def report(self, key: ClaimKey, attempt: int, outcome: str = "failed") -> None:
        now = time.time()
        info = {"attempt": attempt, "raised": True, "traceback": "Traceback ...\nboom"}
        self.finishes.done(RunDone("m0", key, outcome, now, now + 0.1, "boom", info))
        self.finishes.flush()

    def attempt(self, key: ClaimKey) -> tuple[int, datetime | None]:
        return attempt_of(self.member.rep.ledger.lanes[key.lane], key.at)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path, 3)
    try:
        yield made
    finally:
        made.close()


def test_a_resent_report_of_an_earlier_attempt_is_acked_and_changes_nothing(cluster: Cluster):
    holder = Holder(cluster, Job("j", "0 0 1 1 *", "json:dumps", max_attempts=3))
    key = ClaimKey("j", TICK)
    holder.claim(key)
    holder.report(key, 1)
    assert holder.attempt(key)[0] == 1 and holder.attempt(key)[1] is not None
    assert holder.kinds() == ["run_retrying"]
    # the pool sends attempt 1's report again (its ack was lost) before and after
    # attempt 2 started: acked again, nothing closed
    holder.report(key, 1)
    ledger, _ = start_all(holder.member.rep.ledger, [(key, 2)], holder.writer.epoch)
    assert holder.writer.write(holder.writer.lane_updates(ledger, [key]))
    holder.report(key, 1)
    assert holder.attempt(key) == (2, None)
    assert holder.kinds() == ["run_retrying"]
    assert holder.member.rep.runs.get("j") is None
    assert holder.acks[-1] == ("m0", [["j", TICK, None, 1]])
    # attempt 2's own report is taken
    holder.report(key, 2, "finished")
    assert holder.kinds() == ["run_retrying", "run_finished"]
    assert [(r.outcome, r.attempts) for r in holder.member.rep.runs["j"]] == [("finished", 2)]


def test_the_holder_stores_its_own_run_records(cluster: Cluster):
    holder = Holder(cluster, Job("j", "0 0 1 1 *", "json:dumps"))
    key = ClaimKey("j", TICK)
    holder.claim(key)
    holder.report(key, 1, "finished")
    for node in cluster.nodes:
        stored = [_history.decode_record(r) for r in cluster.stores[node].runs()]
        assert [(r.job, r.outcome) for r in stored] == [("j", "finished")], node


def test_a_retry_whose_node_is_down_waits_then_ends_failed_without_spinning(cluster: Cluster):
    job = Job("j", "0 0 1 1 *", "json:dumps", max_attempts=3, run_strategy="all")
    holder = Holder(cluster, job)
    key = ClaimKey("j", TICK, "gone@host")
    holder.claim(key)
    ledger, _ = retry_all(
        holder.member.rep.ledger,
        [(key, 1, datetime.now(UTC) - timedelta(seconds=1))],
        holder.writer.epoch,
    )
    assert holder.writer.write(holder.writer.lane_updates(ledger, [key]))
    holder.engine.start(datetime.now(UTC))
    holder.timers.clear()
    holder.engine.woken()
    holder.engine.wake()
    wakes = [delay for kind, delay in holder.timers if kind == "wake"]
    assert wakes and min(d or 0.0 for d in wakes) > 0.5, wakes  # not a busy loop
    time.sleep(0.4)  # past the test's lost_after (0.3 s): nothing is awaited here
    holder.engine.retries[key] = datetime.now(UTC) - timedelta(seconds=1)
    holder.engine.woken()
    holder.engine.wake()
    holder.finishes.flush()
    assert key not in holder.engine.retries
    assert "run_failed" in holder.kinds()
    lane = holder.member.rep.ledger.lanes[key.lane]
    assert lane.open == ()  # the claim ended: nothing stays open forever


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"state": "inactive"}, "deactivated"),
        ({"max_attempts": 1}, "max_attempts is now 1"),
    ],
)
def test_a_job_changed_while_its_attempt_waits_ends_the_run(
    cluster: Cluster, change: dict[str, Any], why: str
):
    job = Job("j", "0 0 1 1 *", "json:dumps", max_attempts=3)
    holder = Holder(cluster, job)
    key = ClaimKey("j", TICK)
    holder.claim(key)
    holder.report(key, 1)
    changed = job.replace(**change)
    update = holder.writer.job_update("j", changed.to_spec(), "runtime", TICK)
    assert holder.writer.write([update])
    holder.engine.start_attempts([key])
    holder.finishes.flush()
    failed = [e for e in holder.events if e.kind == "run_failed"]
    assert len(failed) == 1 and why in (failed[0].error or ""), holder.events
    assert holder.member.rep.ledger.lanes[key.lane].open == ()


def test_the_node_of_a_retried_attempt_survives_a_merge():
    key = ClaimKey("job", TICK)
    ledger, _ = claim_all(Replica().ledger, [key], 5)
    ledger, _ = retry_all(ledger, [(key, 1, TICK + timedelta(seconds=1))], 5)
    ledger, _ = start_all(ledger, [(key, 2)], 9)
    # as apply() leaves a copy: attempt 2's where written by the holder of epoch 9, and
    # an older copy with attempt 1's where of epoch 5
    newer = Replica(ledger, {}, {key: "node-b"}, {key: 9})
    older = Replica(ledger, {}, {key: "node-a"}, {key: 5})
    assert merge([older, newer]).where == {key: "node-b"}
    assert merge([newer, older]).where == {key: "node-b"}
    # a where older than the claim (a write of an earlier holder that reached no
    # majority) is not the claim's
    stale = Replica(ledger, {}, {key: "node-c"}, {key: 4})
    assert merge([stale]).where == {}


def test_a_holder_of_the_previous_release_reads_a_copy_it_can_decode(cluster: Cluster):
    """A member answers an observe of a protocol 3 holder in that release's form: no
    attempts in the lanes (a protocol 3 decoder refuses them), no run history."""
    holder = Holder(cluster, Job("j", "0 0 1 1 *", "json:dumps", max_attempts=3))
    key = ClaimKey("j", TICK)
    holder.claim(key)
    holder.report(key, 1)  # the claim waits for attempt 2: its lane carries the attempt
    other = ClaimKey("j", TICK + timedelta(days=1))
    holder.claim(other)
    holder.report(other, 1, "finished")  # and the history has a record
    member = cluster.members["m1"]
    epoch = holder.writer.epoch + 1
    answer = member.handle(Observe(epoch, "old-holder/1"), old_holder=True)
    lanes = answer["replica"]["lanes"]
    assert all(len(claim) == 2 for lane in lanes for claim in lane[3]), lanes
    assert "runs" not in answer["replica"]
    full = cluster.members["m2"].handle(Observe(epoch, "new-holder/1"))
    assert any(len(claim) == 4 for lane in full["replica"]["lanes"] for claim in lane[3])
    assert full["replica"]["runs"]


def test_a_record_of_a_long_job_name_is_taken():
    name = "j" * 1000  # a Job allows names far longer than 255
    record = _history.RunRecord(name, TICK, None, "finished", "m0", None, 0.1, 1, None, TICK)
    assert _history.decode_record(_history.encode_record(record)) == record
