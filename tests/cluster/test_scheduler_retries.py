"""Retries and run history on three loopback scheduler nodes (policy majority): a task
failing twice then succeeding makes three attempts of one tick, one at a time, also
across a holder SIGKILL between attempts; the history names outcome, node and attempts
and survives a fail-over and a restart of every node. Assertions come from the task's
own lines (tests/harness/scheduler_tasks.py ``flaky``: ``try``/``run`` with tick, node,
pid, start and end) and from the event stream."""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_scheduler import BOUND, Trio, records
from tests.harness.polling import wait_until

pytestmark = pytest.mark.cluster


def flaky_job(name: str, path: Path, fails: int, **kw: Any) -> dict[str, Any]:
    spec = {
        "name": name,
        "schedule": "0 0 1 1 *",  # once a year: the tests run it by hand
        "task": "tests.harness.scheduler_tasks:flaky",
        "kwargs": {"path": str(path), "fails": fails},
        "max_attempts": 3,
        "backoff": [3.0, 3.0],  # 1.5-3 s between attempts
    }
    spec.update(kw)
    return spec


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[Trio]:
    made = Trio(tmp_path, [])
    try:
        made.start()
        yield made
    finally:
        made.close()


def attempts_of(path: Path) -> list[list[str]]:
    """Every attempt's line (``try`` or ``run``), in the order they were written."""
    if not path.exists():
        return []
    return [
        line.split() for line in path.read_text().splitlines() if line.split()[0] in ("try", "run")
    ]


def one_at_a_time(lines: list[list[str]]) -> bool:
    spans = sorted((float(line[4]), float(line[5])) for line in lines)
    return all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))


def test_a_task_failing_twice_runs_three_attempts_of_one_tick_across_a_holder_kill(
    trio: Trio, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    holder = trio.wait_holder()
    other = next(n for n in trio.nodes.values() if n.name != holder)
    assert other.cmd(op="sched_add", job=flaky_job("flaky", out, fails=2)) is True
    keys = other.cmd(op="sched_run", name="flaky")
    assert len(keys) == 1, keys
    # the first attempt failed and its retry is written (the event comes after the write)
    wait_until(
        lambda: any(e["kind"] == "run_retrying" and e["job"] == "flaky" for e in trio.events()),
        BOUND,
        what="attempt 1 failed and attempt 2 is due",
    )
    trio.kill(holder)
    second = trio.wait_holder(not_on=holder)
    wait_until(lambda: records(out), BOUND * 2, what="the third attempt succeeds")
    lines = attempts_of(out)
    assert [line[0] for line in lines] == ["try", "try", "run"], lines
    assert len({line[1] for line in lines}) == 1, "attempts of more than one tick"
    assert one_at_a_time(lines), lines
    assert lines[-1][2] == second  # after the kill, the new holder's node ran them
    wait_until(
        lambda: any(e["kind"] == "run_finished" and e["job"] == "flaky" for e in trio.events()),
        BOUND,
        what="the run's finish is recorded",
    )
    finished = [e for e in trio.events() if e["kind"] == "run_finished" and e["job"] == "flaky"]
    assert len(finished) == 1 and finished[0]["extra"]["attempts"] == 3, finished
    node = trio.node_named(second)
    history = node.cmd(op="sched_history", name="flaky")
    assert [(h["outcome"], h["attempts"], h["node"]) for h in history] == [
        ("finished", 3, second)
    ], history
    # nothing more comes: the tick had one run (of three attempts)
    time.sleep(4.0)  # a quiet period longer than the backoff, to observe (nothing awaited)
    assert len(attempts_of(out)) == 3


def test_a_run_failing_for_good_is_one_failed_run_and_history_survives_everything(
    trio: Trio, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    holder = trio.wait_holder()
    other = next(n for n in trio.nodes.values() if n.name != holder)
    job = flaky_job("doomed", out, fails=5, backoff=[1.0, 1.0])
    assert other.cmd(op="sched_add", job=job) is True
    assert len(other.cmd(op="sched_run", name="doomed")) == 1
    wait_until(
        lambda: any(e["kind"] == "run_failed" and e["job"] == "doomed" for e in trio.events()),
        BOUND,
        what="the run fails for good",
    )
    lines = attempts_of(out)
    assert [line[0] for line in lines] == ["try"] * 3, lines  # max_attempts, no more
    failed = [e for e in trio.events() if e["kind"] == "run_failed" and e["job"] == "doomed"]
    assert len(failed) == 1 and "fails on purpose" in (failed[0]["error"] or ""), failed
    retrying = [e for e in trio.events() if e["kind"] == "run_retrying" and e["job"] == "doomed"]
    assert [e["extra"]["attempt"] for e in retrying] == [1, 2], retrying
    # what an operator reads: each retried attempt a WARNING, the run that failed for good
    # an ERROR, each with the task's traceback (the node's log reaches its file a moment
    # after the event)
    log = trio.node_named(holder)

    def lines(level: str, kind: str) -> list[str]:
        text = log.log()
        return [
            chunk
            for chunk in text.split(f" {level} ")[1:]
            if f": {kind} job=doomed" in chunk.splitlines()[0] and "RuntimeError: attempt" in chunk
        ]

    wait_until(lambda: len(lines("ERROR", "run_failed")) == 1, BOUND, what="the ERROR line")
    assert len(lines("WARNING", "run_retrying")) == 2, log.log()[-3000:]

    def history() -> list[tuple[str, int]]:
        rows = trio.nodes[next(iter(trio.nodes))].cmd(op="sched_history", name="doomed")
        return [(h["outcome"], h["attempts"]) for h in rows]

    assert history() == [("failed", 3)]
    record = trio.nodes[next(iter(trio.nodes))].cmd(op="sched_history", name="doomed")[0]
    assert "RuntimeError" in record["error"] and "fails on purpose" in record["error"]

    trio.kill(holder)
    trio.wait_holder(not_on=holder)
    assert history() == [("failed", 3)]  # the new holder has it
    trio.close()
    trio.start()
    trio.wait_holder()
    assert history() == [("failed", 3)]  # and so does every node after a restart of all


#: seconds of the retry soak: CI's short form is 12; the ``soak`` form 300 or more
SOAK_SECONDS = float(os.environ.get("OTPKIT_RETRY_SOAK_SECONDS", "12"))


@pytest.mark.soak
def test_retries_under_holder_kills_keep_every_tick_to_one_run(trio: Trio, tmp_path: Path) -> None:
    """A job every second whose attempts fail at random (30 %, three attempts, 0.2-0.4 s
    apart), a holder SIGKILL every 10 s (restarted after): each tick's attempts run one at
    a time, at most three; a tick whose task returned ran once; every tick ended once
    (finished, failed for good or interrupted) or is still in its last seconds."""
    out = tmp_path / "out"
    seed = int(os.environ.get("OTPKIT_RETRY_SOAK_SEED", random.randrange(2**32)))
    print(f"retry soak seed {seed}, {SOAK_SECONDS:g} s")
    holder = trio.wait_holder()
    spec = {
        "name": "dice",
        "schedule": "* * * * * *",
        "task": "tests.harness.scheduler_tasks:dice",
        "kwargs": {"path": str(out), "odds": 0.3, "seed": seed},
        "max_attempts": 3,
        "backoff": [0.4, 0.4],
    }
    assert trio.nodes[next(iter(trio.nodes))].cmd(op="sched_add", job=spec) is True
    end = time.monotonic() + SOAK_SECONDS
    next_kill = time.monotonic() + 5.0
    while time.monotonic() < end:
        due = min(next_kill, end)
        wait_until(lambda due=due: time.monotonic() >= due, SOAK_SECONDS + 60, what="the next kill")
        if time.monotonic() < end:
            index = trio.kill(holder)
            holder = trio.wait_holder(not_on=holder)
            trio.start(index)  # the killed node comes back, as a pod would
            next_kill = time.monotonic() + 10.0
    trio.nodes[next(iter(trio.nodes))].cmd(op="sched_deactivate", name="dice")
    stopped = time.time()
    time.sleep(4.0)  # the last ticks' retries settle (three attempts within ~1 s)
    by_tick: dict[str, list[list[str]]] = {}
    for line in attempts_of(out):
        by_tick.setdefault(line[1], []).append(line)
    assert by_tick, "no tick ran"
    for tick, lines in by_tick.items():
        assert len(lines) <= 3, (tick, lines)
        assert sum(1 for line in lines if line[0] == "run") <= 1, (tick, lines)
        assert one_at_a_time(lines), (tick, lines)
    ended: dict[str, list[str]] = {}
    for event in trio.events():
        if event["job"] == "dice" and event["kind"] in (
            "run_finished",
            "run_failed",
            "run_interrupted",
        ):
            ended.setdefault(event["tick"], []).append(event["kind"])
    twice = {t: kinds for t, kinds in ended.items() if len(kinds) > 1}
    kinds = [k for ks in ended.values() for k in ks]
    print(
        f"{len(by_tick)} ticks, {sum(len(v) for v in by_tick.values())} attempts, "
        f"{sum(1 for v in by_tick.values() if len(v) > 1)} ticks retried; "
        f"finished {kinds.count('run_finished')}, failed {kinds.count('run_failed')}, "
        f"interrupted {kinds.count('run_interrupted')}"
    )
    assert not twice, twice
    for tick, lines in by_tick.items():
        returned = any(line[0] == "run" for line in lines)
        if returned and float(lines[0][4]) < stopped - 2.0:
            # interrupted: its node was killed before its report was recorded
            assert ended.get(tick) in (["run_finished"], ["run_interrupted"]), (tick, lines)
