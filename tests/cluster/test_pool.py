"""The per-node task pool on real nodes: the pool runs on node ``pa``; a fake scheduler
holder (``pool_node_driver.Holder``, the global name of each test's scheduler) runs on node
``pb`` and dispatches runs to ``pa``'s pool through its dist service, as the real holder
does. Tasks and the holder write what they saw to files, and the tests read those.

Each test has its own scheduler name, so its own pool and holder. Every wait is a
deadline, wide enough for a loaded 2-core machine.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from otpkit.scheduler._pool import TaskPool, pool_child_spec, pool_name
from tests.harness.node_process import NodeProc
from tests.harness.polling import wait_until
from tests.harness.processes import alive

pytestmark = pytest.mark.cluster

DRIVER = "tests.harness.pool_node_driver"  # the node program, and its tasks by name
BOUND = 15.0
TASK = f"{DRIVER}:sleeper"


def pool_node(name: str, log_dir: str) -> NodeProc:
    """``python -m tests.harness.pool_node_driver NAME PORT LOG_DIR COOKIE``, started."""
    return NodeProc(name, log_dir, cookie="pool-cookie-0123456789", wait=False, module=DRIVER)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProc, NodeProc]]:
    log_dir = str(tmp_path_factory.mktemp("pool"))
    nodes: list[NodeProc] = []
    try:
        nodes = [pool_node("pa@127.0.0.21", log_dir), pool_node("pb@127.0.0.22", log_dir)]
        for n in nodes:
            n.wait_ready()
        pa, pb = nodes
        pa.cmd(op="connect", name=pb.name, host=pb.host, port=pb.port)
        wait_until(lambda: pa.cmd(op="nodes") == [pb.name], timeout=BOUND, what="pa sees pb")
        wait_until(lambda: pb.cmd(op="nodes") == [pa.name], timeout=BOUND, what="pb sees pa")
        for n in nodes:
            n.cmd(op="gsync")
        yield pa, pb
    finally:
        for n in nodes:
            n.close(graceful=True)


def lines(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def done(path: str) -> list[dict[str, Any]]:
    return [r for r in lines(path) if r["kind"] == "run_done"]


def started(path: str) -> list[dict[str, Any]]:
    return [r for r in lines(path) if r["kind"] == "run_started"]


def run(job: str, at: float, path: str, **kw: Any) -> dict[str, Any]:
    """A run spec for the driver: task ``sleeper(path, tag=job)`` unless ``task`` given."""
    spec: dict[str, Any] = {
        "job": job,
        "at": round(at, 6),  # the key's datetime holds microseconds
        "task": kw.pop("task", TASK),
        "kwargs": {"path": path, "tag": job, **kw.pop("kwargs", {})},
    }
    spec.update(kw)
    return spec


def setup(
    pair: tuple[NodeProc, NodeProc], tmp_path: Any, scheduler: str, holder: bool = True, **kw: Any
) -> tuple[str, str, dict[str, Any]]:
    """Start ``scheduler``'s pool on pa (and its holder on pb); the holder's file, the
    tasks' file and the pool's first state."""
    pa, pb = pair
    hold, tasks = str(tmp_path / "holder.jsonl"), str(tmp_path / "tasks.jsonl")
    _, state = pa.cmd(op="pool_start", scheduler=scheduler, **kw)
    if holder:
        pb.cmd(op="holder_start", scheduler=scheduler, path=hold)
        wait_until(
            lambda: pa.cmd(op="whereis", name=scheduler) is not None,
            timeout=BOUND,
            what="pa sees the holder's name",
        )
    return hold, tasks, state


def dispatch(pair: tuple[NodeProc, NodeProc], scheduler: str, *runs: dict[str, Any]) -> None:
    """From pb, through pa's dist service: the holder's path."""
    pa, pb = pair
    pb.cmd(op="dispatch", scheduler=scheduler, to=pa.name, runs=list(runs))


def outbox_empty(pa: NodeProc, scheduler: str) -> bool:
    return pa.cmd(op="pool_state", scheduler=scheduler)["outbox"] == []


# --------------------------------------------------------------------------- spec


def test_names_and_child_spec():
    assert pool_name("sched") == "otpkit_pool:sched"
    spec = pool_child_spec("sched", 3, 7)
    assert (spec.id, spec.start, spec.args) == ("pool", TaskPool, ("sched", 3, 7))
    assert pool_child_spec("sched").args == ("sched", 10, 10_000)
    for bad, field in (
        ({"scheduler": ""}, "scheduler"),
        ({"scheduler": "x" * 40}, "scheduler"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": True}, "max_concurrency"),
        ({"queue_limit": -1}, "queue_limit"),
    ):
        args = {"scheduler": "sched", **bad}
        with pytest.raises(ValueError, match=field):
            pool_child_spec(**args)


# --------------------------------------------------------------------------- runs


def test_concurrency_bounded_by_prespawned_workers(pair, tmp_path):
    """max_concurrency=2, five 0.5 s runs at once: at most two overlap, on the two
    pre-spawned processes; each is reported started and done once, as finished."""
    pa, _ = pair
    hold, tasks, state = setup(pair, tmp_path, "conc", max_concurrency=2)
    workers = state["workers"]
    assert len(workers) == 2 and all(alive(p) for p in workers)
    now = time.time()
    jobs = [f"conc{i}" for i in range(5)]
    dispatch(pair, "conc", *(run(j, now, tasks, kwargs={"seconds": 0.5}) for j in jobs))

    wait_until(lambda: len(done(hold)) >= 5, timeout=BOUND, interval=0.05, what="5 run_done")
    wait_until(lambda: outbox_empty(pa, "conc"), timeout=BOUND, interval=0.05, what="acked")
    reports = done(hold)
    assert sorted(r["key"][0] for r in reports) == jobs  # each exactly once
    assert {r["outcome"] for r in reports} == {"finished"}
    assert all(r["node"] == pa.name and r["tuple"] and r["error"] is None for r in reports)
    assert sorted(r["key"][0] for r in started(hold)) == jobs

    ran = lines(tasks)
    assert sorted(r["tag"] for r in ran) == jobs
    assert {r["pid"] for r in ran} <= set(workers)  # the pre-spawned processes ran them
    events = sorted([(r["start"], 1) for r in ran] + [(r["end"], -1) for r in ran])
    level, most = 0, 0
    for _, step in events:
        level += step
        most = max(most, level)
    assert most == 2, ran
    for r in reports:  # the reported start is the task's entry, the end after its exit
        mine = next(t for t in ran if t["tag"] == r["key"][0])
        assert r["start"] <= mine["start"] < mine["end"] <= r["end"]
    assert sorted(pa.cmd(op="pool_state", scheduler="conc")["workers"]) == sorted(workers)


def test_waits_for_the_tick(pair, tmp_path):
    """A run dispatched 0.3 s early starts at its tick, not before, and promptly."""
    hold, tasks, _ = setup(pair, tmp_path, "early", max_concurrency=1)
    at = round(time.time() + 0.3, 6)
    dispatch(pair, "early", run("early", at, tasks))
    wait_until(lambda: done(hold), timeout=BOUND, interval=0.05, what="run_done")
    (task,) = lines(tasks)
    # 1 us: the tick travels as a datetime (microseconds) and back as a float
    assert at - 1e-6 <= task["start"] <= at + 0.05, task["start"] - at
    (report,) = done(hold)
    assert report["outcome"] == "finished"
    assert at - 1e-6 <= report["start"] <= task["start"]


def test_timeout_kills_and_replaces_the_worker(pair, tmp_path):
    pa, _ = pair
    hold, tasks, state = setup(pair, tmp_path, "slow", max_concurrency=1)
    (worker,) = state["workers"]
    t0 = time.time()
    dispatch(pair, "slow", run("hang", t0, tasks, kwargs={"seconds": 30}, timeout=0.5))
    wait_until(lambda: done(hold), timeout=BOUND, interval=0.05, what="timed out")
    (report,) = done(hold)
    assert report["outcome"] == "timed_out", report
    # the timeout counts from the tick (or the hand-over to a worker, if later), so the
    # task's own start may come a little after t0
    assert 0.5 <= report["end"] - t0 < 5.0
    assert t0 <= report["start"] < report["end"]
    wait_until(lambda: not alive(worker), timeout=BOUND, what="the hung worker is gone")
    after = pa.cmd(op="pool_state", scheduler="slow")
    assert len(after["workers"]) == 1 and after["workers"] != [worker]
    assert alive(after["workers"][0]) and after["running"] == []

    dispatch(pair, "slow", run("next", time.time(), tasks))
    wait_until(lambda: len(done(hold)) == 2, timeout=BOUND, interval=0.05, what="next run")
    assert done(hold)[1]["outcome"] == "finished"
    assert [t["tag"] for t in lines(tasks)] == ["next"]  # the hung task never returned
    assert lines(tasks)[0]["pid"] == after["workers"][0]


def test_failures_never_hurt_the_pool(pair, tmp_path):
    """A raising task, an unknown task, a run with a bad field, malformed messages: the
    runs fail with their error, the pool and its worker live on."""
    pa, _ = pair
    hold, tasks, state = setup(pair, tmp_path, "bad", max_concurrency=1)
    now = time.time()
    dispatch(
        pair,
        "bad",
        run("raises", now, tasks, task=f"{DRIVER}:boom"),
        run("unknown", now, tasks, task="nosuch.mod:fn"),
        run("badfield", now, tasks, override={"kwargs": "not a dict"}),
    )
    wait_until(lambda: len(done(hold)) == 3, timeout=BOUND, interval=0.05, what="3 failures")
    by_job = {r["key"][0]: r for r in done(hold)}
    assert {r["outcome"] for r in by_job.values()} == {"failed"}
    assert by_job["raises"]["error"] == "ValueError('boom raises')"
    assert "nosuch" in by_job["unknown"]["error"] and by_job["unknown"]["start"] is None
    assert "kwargs" in by_job["badfield"]["error"]

    pa.cmd(op="raw", scheduler="bad")
    dispatch(pair, "bad", run("fine", time.time(), tasks))
    wait_until(lambda: len(done(hold)) == 4, timeout=BOUND, interval=0.05, what="next run")
    assert done(hold)[3]["outcome"] == "finished"
    after = pa.cmd(op="pool_state", scheduler="bad")
    assert after["incarnation"] == state["incarnation"]  # never restarted
    assert after["pool"] == state["pool"] and after["workers"] == state["workers"]  # one worker


def test_outbox_waits_for_a_holder(pair, tmp_path):
    """No holder when the run ends: the report stays in the outbox, reaches the holder
    once it registers, and goes when acknowledged."""
    pa, pb = pair
    hold, tasks, _ = setup(pair, tmp_path, "late", holder=False, max_concurrency=1)
    dispatch(pair, "late", run("orphan", time.time(), tasks))

    def in_outbox() -> list[Any]:
        return pa.cmd(op="pool_state", scheduler="late")["outbox"]

    (entry,) = wait_until(in_outbox, timeout=BOUND, interval=0.05, what="in the outbox")
    assert entry[0][0] == "orphan" and entry[1] == "finished"
    pb.cmd(op="holder_start", scheduler="late", path=hold)
    wait_until(lambda: done(hold), timeout=BOUND, interval=0.05, what="delivered by a retry")
    wait_until(lambda: not in_outbox(), timeout=BOUND, interval=0.05, what="acked and gone")
    (report,) = done(hold)
    assert report["key"] == entry[0] and report["outcome"] == "finished"
    assert [report["start"], report["end"]] == entry[2:4]


def test_duplicate_dispatch_runs_once(pair, tmp_path):
    pa, _ = pair
    hold, tasks, _ = setup(pair, tmp_path, "dup", max_concurrency=2)
    spec = run("twice", time.time(), tasks, kwargs={"seconds": 0.5})
    dispatch(pair, "dup", spec, spec)
    pa.cmd(op="dispatch", scheduler="dup", cast=True, runs=[spec])  # a cast, on pa itself
    wait_until(lambda: done(hold), timeout=BOUND, interval=0.05, what="run_done")
    wait_until(lambda: outbox_empty(pa, "dup"), timeout=BOUND, interval=0.05, what="acked")
    assert [t["tag"] for t in lines(tasks)] == ["twice"]
    assert len(done(hold)) == 1 and len(started(hold)) == 1


def test_killed_pool_takes_its_workers(pair, tmp_path):
    """The pool SIGKILLed mid-run: its workers die with it (no orphans), and its
    supervisor starts a new pool, with a new incarnation and fresh workers."""
    pa, _ = pair
    _, tasks, state = setup(pair, tmp_path, "crash", max_concurrency=2)
    dispatch(pair, "crash", run("busy", time.time(), tasks, kwargs={"seconds": 30}))
    wait_until(
        lambda: pa.cmd(op="pool_state", scheduler="crash")["running"],
        timeout=BOUND,
        what="a run in progress",
    )
    os.kill(state["pool"], signal.SIGKILL)
    wait_until(
        lambda: not any(alive(p) for p in state["workers"]),
        timeout=2.0,
        what="the workers died with their pool",
    )

    def restarted() -> dict[str, Any] | None:
        try:
            new = pa.cmd(op="pool_state", scheduler="crash")
        except AssertionError:  # the name is not bound again yet
            return None
        return new if new["pool"] != state["pool"] else None

    new = wait_until(restarted, timeout=BOUND, interval=0.05, what="a new pool")
    assert new["incarnation"] != state["incarnation"] and new["running"] == []
    assert len(new["workers"]) == 2 and not set(new["workers"]) & set(state["workers"])
    pa.cmd(op="pool_stop", scheduler="crash")


def test_stop_leaves_no_worker(pair, tmp_path):
    pa, _ = pair
    _, tasks, state = setup(pair, tmp_path, "stop", max_concurrency=3)
    dispatch(pair, "stop", run("busy", time.time(), tasks, kwargs={"seconds": 30}))
    wait_until(
        lambda: pa.cmd(op="pool_state", scheduler="stop")["running"],
        timeout=BOUND,
        what="a run in progress",
    )
    workers = state["workers"]
    assert len(workers) == 3 and all(alive(p) for p in workers)
    pa.cmd(op="pool_stop", scheduler="stop")
    # terminate waits until its workers are gone: nothing to wait for here
    assert [p for p in workers if alive(p)] == []
    wait_until(lambda: not alive(state["pool"]), timeout=BOUND, what="the pool is gone")


def test_queue_is_fifo_and_bounded(pair, tmp_path):
    """One worker, a queue of one: the second run waits (shown in ``state``), the third
    finds the queue full and fails at once; the waiting one runs after the first."""
    pa, _ = pair
    hold, tasks, _ = setup(pair, tmp_path, "queue", max_concurrency=1, queue_limit=1)
    now = time.time()
    dispatch(
        pair,
        "queue",
        *(run(j, now, tasks, kwargs={"seconds": 0.5}) for j in ("first", "second", "third")),
    )
    wait_until(lambda: done(hold), timeout=BOUND, interval=0.05, what="the refused run")
    state = pa.cmd(op="pool_state", scheduler="queue")
    assert [k[0] for k in state["running"]] == ["first"]
    assert [k[0] for k in state["queued"]] == ["second"]
    (full,) = done(hold)
    assert full["key"][0] == "third" and full["outcome"] == "failed"
    assert full["error"] == "pool queue full" and full["start"] is None
    wait_until(lambda: len(done(hold)) == 3, timeout=BOUND, interval=0.05, what="all ended")
    assert [t["tag"] for t in lines(tasks)] == ["first", "second"]
    assert [r["key"][0] for r in done(hold)] == ["third", "first", "second"]


def test_worker_death_fails_its_run(pair, tmp_path):
    """A worker killed mid-run from outside: its run fails with the exit reason, a
    replacement takes its place, and the next run works."""
    pa, _ = pair
    hold, tasks, state = setup(pair, tmp_path, "death", max_concurrency=1)
    (worker,) = state["workers"]
    dispatch(pair, "death", run("victim", time.time(), tasks, kwargs={"seconds": 30}))
    wait_until(lambda: started(hold), timeout=BOUND, interval=0.05, what="the run started")
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: done(hold), timeout=BOUND, interval=0.05, what="the run failed")
    (report,) = done(hold)
    assert report["outcome"] == "failed" and "killed" in report["error"], report
    after = pa.cmd(op="pool_state", scheduler="death")
    assert len(after["workers"]) == 1 and after["workers"] != [worker]
    dispatch(pair, "death", run("after", time.time(), tasks))
    wait_until(lambda: len(done(hold)) == 2, timeout=BOUND, interval=0.05, what="next run")
    assert done(hold)[1]["outcome"] == "finished"
    assert [t["pid"] for t in lines(tasks)] == after["workers"]
