"""The scheduler's metrics on a real node: one dist node (its own OS processes, started
by this module run as a driver) with a Scheduler of one configuration job and a pool of
one worker, read through the node's metrics service with ``prometheus_client``'s own
parser.

What a user checks on ``/metrics``: a job that runs longer than its period fills the
pool (one running, runs queued); once it is deactivated and the pool drained, both
gauges are 0 and the finished runs counted under the job's name are the runs in the
job's own output file, each with its duration and its fire lateness; a job added at run
time and run by hand that fails counts under ``(runtime)``. Every wait is a deadline,
wide enough for a loaded 2-core machine.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import otpkit
from otpkit import scheduler
from otpkit.scheduler import Job, Scheduler
from tests.harness import metrics_read
from tests.harness.node_process import NodeProc
from tests.harness.polling import wait_for

pytestmark = pytest.mark.cluster

BOUND = 60.0
MODULE = "tests.cluster.test_metrics_scheduler_loopback"
TASKS = "tests.harness.scheduler_tasks"


def main() -> None:
    """The driver: ``NAME PORT LOG_DIR COOKIE``; the job ``slow`` (every second, 1.5 s)
    writes to ``LOG_DIR/runs.txt``. Answers ``{"op": "metrics"}`` (the ``/metrics``
    text), ``{"op": "deactivate"}`` and ``{"op": "fail"}`` (adds the job ``boom``, which
    writes to ``LOG_DIR/fails.txt`` and raises, and runs it once) until EOF."""
    name, port, log_dir, cookie = sys.argv[1:5]
    slow = Job(
        "slow",
        "* * * * * *",
        f"{TASKS}:record",
        kwargs={"path": os.path.join(log_dir, "runs.txt"), "seconds": 1.5},
    )
    spec = Scheduler(
        [slow], store=os.path.join(log_dir, "sched.sqlite"), max_concurrency=1, settle_timeout=1.0
    )
    node = otpkit.Node(
        name,
        cookie=cookie,
        dist_port=int(port),
        log_dir=log_dir,
        data_dir=log_dir,
        children=[spec],
    ).start()
    try:
        print(json.dumps({"ready": name, "pids": node.os_pids()}), flush=True)
        for line in sys.stdin:
            cmd = json.loads(line)
            answer: Any = None
            if cmd["op"] == "metrics":
                assert node.metrics is not None
                answer = node.metrics.exposition().decode()
            elif cmd["op"] == "deactivate":
                answer = scheduler.deactivate_job("slow")
            else:
                path = os.path.join(log_dir, "fails.txt")
                boom = Job("boom", "@yearly", f"{TASKS}:fail", kwargs={"path": path})
                answer = [scheduler.add_job(boom), len(scheduler.run_job("boom"))]
            print(json.dumps({"ok": answer}), flush=True)
    finally:
        node.stop()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProc]:
    proc = NodeProc("sched-metrics@127.0.0.1", str(tmp_path), module=MODULE)
    try:
        yield proc
    finally:
        proc.close(graceful=True)


def value(node: NodeProc, name: str, **labels: str) -> float | None:
    return metrics_read.value(metrics_read.parse(node.cmd(op="metrics")), name, **labels)


def wait_value(node: NodeProc, name: str, ok: Any, what: str, **labels: str) -> float:
    found = wait_for(
        lambda: (v := value(node, name, **labels)) is not None and ok(v) and (v, True),
        BOUND,
        what,
        interval=0.2,
        diagnose=lambda: f"{name}{labels} = {value(node, name, **labels)}",
    )
    return float(found[0])


def lines(path: Path, word: str) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.startswith(f"{word} "))


def test_the_holder_counts_the_runs_of_the_job_s_file_and_the_pool_its_load(
    node: NodeProc, tmp_path: Path
) -> None:
    pool = {"scheduler": "otpkit_scheduler"}
    slow = {"scheduler": "otpkit_scheduler", "job": "slow"}
    finished = {**slow, "outcome": "finished"}
    # 1.5 s runs every second on one worker: the pool is full and runs wait
    wait_value(node, "otpkit_pool_running", lambda v: v == 1, "a run running", **pool)
    wait_value(node, "otpkit_pool_queue_depth", lambda v: v >= 1, "runs queued", **pool)
    wait_value(node, "otpkit_job_runs_total", lambda v: v >= 3, "three runs", **finished)
    assert node.cmd(op="deactivate") is True
    # the claimed runs still run; then the pool is empty
    wait_value(node, "otpkit_pool_queue_depth", lambda v: v == 0, "queue drained", **pool)
    wait_value(node, "otpkit_pool_running", lambda v: v == 0, "nothing running", **pool)
    runs = lines(tmp_path / "runs.txt", "run")
    counted = wait_value(node, "otpkit_job_runs_total", lambda v: v >= runs, "all", **finished)
    assert counted == runs == lines(tmp_path / "runs.txt", "start"), (counted, runs)
    assert value(node, "otpkit_job_run_duration_seconds_count", **slow) == runs
    assert (value(node, "otpkit_job_run_duration_seconds_sum", **slow) or 0) >= 1.5 * runs
    assert value(node, "otpkit_job_fire_lateness_seconds_count", **slow) == runs
    assert value(node, "otpkit_job_runs_total", **slow, outcome="failed") is None

    assert node.cmd(op="fail") == [True, 1]
    runtime = {"scheduler": "otpkit_scheduler", "job": "(runtime)", "outcome": "failed"}
    wait_value(node, "otpkit_job_runs_total", lambda v: v == 1, "a failed run", **runtime)
    assert lines(tmp_path / "fails.txt", "fail") == 1


if __name__ == "__main__":
    main()
