"""The per-node task pool on real nodes: the pool runs on node ``pa``; a fake scheduler
holder (``pool_node_driver.Holder``, the global name of each test's scheduler) runs on node
``pb`` and dispatches runs to ``pa``'s pool through its dist service, as the real holder
does. Tasks and the holder write what they saw to files, and the tests read those. One
test starts a third node on the previous release's code (as git has it), for a holder
of the previous release.

Each test has its own scheduler name, so its own pool and holder. Every wait is a
deadline, wide enough for a loaded 2-core machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otpkit.scheduler._history import ERROR_TAIL
from otpkit.scheduler._pool import DEATH_WAIT, TaskPool, pool_child_spec, pool_name
from tests.harness.node_process import NodeProc
from tests.harness.polling import wait_until
from tests.harness.processes import REPO_ROOT, alive
from tests.harness.versions import previous_commit, previous_release

pytestmark = pytest.mark.cluster

DRIVER = "tests.harness.pool_node_driver"  # the node program, and its tasks by name
BOUND = 15.0
TASK = f"{DRIVER}:sleeper"


def pool_node(name: str, log_dir: str, env: dict[str, str] | None = None) -> NodeProc:
    """``python -m tests.harness.pool_node_driver NAME PORT LOG_DIR COOKIE``, started."""
    return NodeProc(
        name, log_dir, cookie="pool-cookie-0123456789", wait=False, module=DRIVER, env=env
    )


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
    pair: tuple[NodeProc, NodeProc],
    tmp_path: Any,
    scheduler: str,
    holder: bool = True,
    ack: str | None = "key",
    **kw: Any,
) -> tuple[str, str, dict[str, Any]]:
    """Start ``scheduler``'s pool on pa (and its holder on pb, acking as ``ack`` says and
    watching the tasks' pids); the holder's file, the tasks' file and the pool's first
    state."""
    pa, pb = pair
    hold, tasks = str(tmp_path / "holder.jsonl"), str(tmp_path / "tasks.jsonl")
    _, state = pa.cmd(op="pool_start", scheduler=scheduler, **kw)
    if holder:
        pb.cmd(op="holder_start", scheduler=scheduler, path=hold, ack=ack, watch=tasks)
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


def outbox_attempts(pa: NodeProc, scheduler: str) -> list[tuple[str, int]]:
    """The outbox's runs: ``(job, attempt)``, sorted."""
    return sorted((e[0][0], e[5]) for e in pa.cmd(op="pool_state", scheduler=scheduler)["outbox"])


def first_report(path: str, job: str) -> dict[str, Any] | None:
    """The first ``run_done`` of ``job`` the holder got (an unacked one comes again)."""
    return next((r for r in done(path) if r["key"][0] == job), None)


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
    # a holder of this code gets each report's info (the attempt: 1, none given)
    assert all(r["size"] == 8 for r in reports), reports
    assert all(r["info"] == {"attempt": 1, "raised": False, "traceback": None} for r in reports)
    assert sorted(r["key"][0] for r in started(hold)) == jobs
    assert all(r["size"] == 5 and r["info"] == {"attempt": 1} for r in started(hold))

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
    # a bad field is no task that raised: a holder does not retry it
    assert by_job["badfield"]["info"]["raised"] is False

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
    # its task did not raise, and may have done part of its work: a holder never retries it
    assert report["info"] == {"attempt": 1, "raised": False, "traceback": None}
    after = pa.cmd(op="pool_state", scheduler="death")
    assert len(after["workers"]) == 1 and after["workers"] != [worker]
    dispatch(pair, "death", run("after", time.time(), tasks))
    wait_until(lambda: len(done(hold)) == 2, timeout=BOUND, interval=0.05, what="next run")
    assert done(hold)[1]["outcome"] == "finished"
    assert [t["pid"] for t in lines(tasks)] == after["workers"]


# --------------------------------------------------------------------------- retries


def test_another_attempt_runs_while_the_first_report_is_unacknowledged(pair, tmp_path):
    """Attempt 1 raised and its report waits for an ack: attempt 2 of the same tick runs
    (attempt 1 sent again does not, attempt 2 sent twice runs once), listed by its
    attempt while it runs. Then the acks: one naming attempt 1 drops only that report,
    one naming the key drops the rest."""
    pa, pb = pair
    hold, tasks, _ = setup(pair, tmp_path, "retry", ack=None, max_concurrency=2)
    at = time.time()
    first = run("again", at, tasks, task=f"{DRIVER}:boom", attempt=1)
    dispatch(pair, "retry", first)
    wait_until(lambda: first_report(hold, "again"), timeout=BOUND, what="attempt 1's report")
    assert outbox_attempts(pa, "retry") == [("again", 1)]

    second = run("again", at, tasks, attempt=2, kwargs={"seconds": 1.0})
    dispatch(pair, "retry", first, second, second)
    state = wait_until(
        lambda: (s := pa.cmd(op="pool_state", scheduler="retry"))["running"] and s,
        timeout=BOUND,
        interval=0.05,
        what="attempt 2 running",
    )
    assert [k[0] for k in state["running"]] == ["again"]  # keys: [job, at, node]
    assert [(a[0], a[3]) for a in state["attempts"]] == [("again", 2)]

    def attempts() -> dict[int, str]:
        return {r["info"]["attempt"]: r["outcome"] for r in done(hold)}

    wait_until(lambda: len(attempts()) == 2, timeout=BOUND, interval=0.05, what="attempt 2")
    assert attempts() == {1: "failed", 2: "finished"}
    ran = lines(tasks)  # boom's line (attempt 1), the sleeper's (attempt 2): no third
    assert [t["tag"] for t in ran] == ["again", "again"] and ran[0]["end"] is None
    assert {r["info"]["attempt"] for r in started(hold)} == {1, 2}
    assert all(r["size"] == 8 for r in done(hold))
    assert outbox_attempts(pa, "retry") == [("again", 1), ("again", 2)]

    pb.cmd(op="ack", scheduler="retry", to=pa.name, items=[["again", round(at, 6), None, 1]])
    wait_until(
        lambda: outbox_attempts(pa, "retry") == [("again", 2)],
        timeout=BOUND,
        interval=0.05,
        what="attempt 1 acked alone",
    )
    pb.cmd(op="ack", scheduler="retry", to=pa.name, items=[["again", round(at, 6), None]])
    wait_until(lambda: outbox_empty(pa, "retry"), timeout=BOUND, interval=0.05, what="key acked")


def test_a_raising_task_reports_its_traceback(pair, tmp_path):
    """A task that raises, one that raises 200 calls deep, one that does not import: each
    report says the task raised, with the exception's repr as its error and the
    traceback's last lines (at most 2,000 characters, from a line start)."""
    hold, tasks, _ = setup(pair, tmp_path, "trace", max_concurrency=1)
    now = time.time()
    dispatch(
        pair,
        "trace",
        run("shallow", now, tasks, task=f"{DRIVER}:boom"),
        run("deep", now, tasks, task=f"{DRIVER}:deep", kwargs={"depth": 200}),
        run("missing", now, tasks, task="nosuch.mod:fn", attempt=3),
    )
    wait_until(lambda: len(done(hold)) >= 3, timeout=BOUND, interval=0.05, what="3 reports")
    by_job = {r["key"][0]: r for r in done(hold)}
    assert {r["outcome"] for r in by_job.values()} == {"failed"}
    assert all(r["info"]["raised"] is True for r in by_job.values()), by_job

    shallow = by_job["shallow"]
    assert shallow["error"] == "ValueError('boom shallow')"
    assert shallow["info"]["traceback"].startswith("Traceback (most recent call last):")
    assert shallow["info"]["traceback"].endswith("ValueError: boom shallow")
    assert ", in boom\n" in shallow["info"]["traceback"]

    trace = by_job["deep"]["info"]["traceback"]
    assert by_job["deep"]["error"] == "ValueError('deep deep')"
    assert 1_000 < len(trace) <= ERROR_TAIL and trace.endswith("ValueError: deep deep")
    first = trace.splitlines()[0]
    assert first.startswith("  File ") or first.startswith("    "), first  # a whole line

    missing = by_job["missing"]
    assert missing["start"] is None and missing["info"]["attempt"] == 3
    assert "No module named 'nosuch'" in missing["info"]["traceback"]


def test_a_timed_out_run_is_reported_once_its_worker_is_gone(pair, tmp_path):
    """The run's worker is killed on the timeout; the report, ``timed_out``, comes once
    the pool saw the worker's exit: when the holder gets it, the task's process is gone."""
    pa, _ = pair
    hold, tasks, state = setup(pair, tmp_path, "expire", max_concurrency=1)
    (worker,) = state["workers"]
    t0 = time.time()
    dispatch(pair, "expire", run("hung", t0, tasks, task=f"{DRIVER}:hang", timeout=0.5, attempt=2))
    report = wait_until(
        lambda: first_report(hold, "hung"), timeout=BOUND, interval=0.05, what="timed out"
    )
    assert report["outcome"] == "timed_out", report
    assert report["info"] == {"attempt": 2, "raised": False, "traceback": None}
    assert "timed out after 0.5 s" in report["error"] and "killed" in report["error"]
    assert [t["pid"] for t in lines(tasks)] == [worker]
    assert report["alive"] == []  # the hung task's process was gone when it came
    after = pa.cmd(op="pool_state", scheduler="expire")
    assert after["running"] == [] and after["attempts"] == []
    assert len(after["workers"]) == 1 and after["workers"] != [worker]


def test_a_worker_that_outlives_its_kill_fails_its_run(pair, tmp_path):
    """A hung task whose worker left the node's process group: otpkit kills only its
    own group's processes, so the kill is a message the busy worker never reads, and it
    lives on. The replacement comes at once; the run stays listed as running, and after
    ``DEATH_WAIT`` seconds it is reported ``failed`` ("did not die"), never
    ``timed_out``, so no holder retries it while its task still runs."""
    pa, _ = pair
    hold, tasks, state = setup(pair, tmp_path, "undead", max_concurrency=1)
    (worker,) = state["workers"]
    try:
        t0 = time.time()
        hang = {"seconds": 120, "own_group": True}
        dispatch(
            pair, "undead", run("stuck", t0, tasks, task=f"{DRIVER}:hang", timeout=0.5, kwargs=hang)
        )

        def replaced() -> dict[str, Any] | None:
            now = pa.cmd(op="pool_state", scheduler="undead")
            return now if now["workers"] != [worker] else None

        now = wait_until(replaced, timeout=BOUND, interval=0.05, what="a replacement")
        assert len(now["workers"]) == 1 and alive(now["workers"][0])
        assert [k[0] for k in now["running"]] == ["stuck"]  # not over: its task runs
        assert first_report(hold, "stuck") is None

        report = wait_until(
            lambda: first_report(hold, "stuck"),
            timeout=BOUND + DEATH_WAIT,
            interval=0.05,
            what="the run's report",
        )
        assert report["outcome"] == "failed" and "did not die" in report["error"], report
        assert report["info"] == {"attempt": 1, "raised": False, "traceback": None}
        assert report["alive"] == [worker]  # reported, not retried: the task still runs
        assert report["end"] - t0 >= DEATH_WAIT
        after = pa.cmd(op="pool_state", scheduler="undead")
        assert after["running"] == [] and after["workers"] == now["workers"]
    finally:
        for t in lines(tasks):
            if alive(t["pid"]):
                os.kill(t["pid"], signal.SIGKILL)


# --------------------------------------------------------------------------- versions


@pytest.fixture
def previous(tmp_path: Path) -> Path:
    try:
        commit = previous_commit()
    except LookupError as exc:
        pytest.skip(f"needs the repository's git history: {exc}")
    return previous_release(tmp_path / "previous", commit)


def test_a_holder_of_the_previous_release_gets_the_previous_form(pair, tmp_path, previous):
    """A holder on a node of the previous release (its code, as git has it: dist
    protocol 3) gets ``run_started`` and ``run_done`` in the form its protocol takes
    (its own ``INFOS`` accepts them), runs it sends without an attempt run, and its
    acks (keys only) take the reports off the outbox."""
    pa, pb = pair
    env = {"PYTHONPATH": os.pathsep.join([str(previous), str(REPO_ROOT)])}
    old = pool_node("pc@127.0.0.23", str(tmp_path), env=env)
    try:
        old.wait_ready()
        old.cmd(op="connect", name=pa.name, host=pa.host, port=pa.port)
        everyone = sorted([pa.name, pb.name, old.name])
        for n in (pa, pb, old):
            wait_until(
                lambda n=n: sorted([n.name, *n.cmd(op="nodes")]) == everyone,
                timeout=BOUND,
                what=f"{n.name} linked to the other two",
            )
        assert pa.cmd(op="versions")[old.name] == 3
        for n in (pa, pb, old):
            n.cmd(op="gsync")
        hold, tasks = str(tmp_path / "holder.jsonl"), str(tmp_path / "tasks.jsonl")
        pa.cmd(op="pool_start", scheduler="oldh", max_concurrency=1)
        old.cmd(op="holder_start", scheduler="oldh", path=hold)
        wait_until(
            lambda: pa.cmd(op="whereis", name="oldh") is not None,
            timeout=BOUND,
            what="pa sees the old holder's name",
        )
        now = time.time()
        runs = [run("fine", now, tasks), run("fails", now, tasks, task=f"{DRIVER}:boom")]
        old.cmd(op="dispatch", scheduler="oldh", to=pa.name, runs=runs)
        wait_until(lambda: len(done(hold)) >= 2, timeout=BOUND, interval=0.05, what="2 reports")
        wait_until(lambda: outbox_empty(pa, "oldh"), timeout=BOUND, interval=0.05, what="acked")
        reports = {r["key"][0]: r for r in done(hold)}
        assert {j: r["outcome"] for j, r in reports.items()} == {
            "fine": "finished",
            "fails": "failed",
        }
        assert reports["fails"]["error"] == "ValueError('boom fails')"
        for record in [*done(hold), *started(hold)]:
            assert record["size"] == (7 if record["kind"] == "run_done" else 4), record
            assert record["info"] is None and record["problem"] is None, record
        assert sorted(r["key"][0] for r in started(hold)) == ["fails", "fine"]
        assert sorted(t["tag"] for t in lines(tasks)) == ["fails", "fine"]
    finally:
        with contextlib.suppress(Exception):
            pa.cmd(op="pool_stop", scheduler="oldh")
        old.close()
