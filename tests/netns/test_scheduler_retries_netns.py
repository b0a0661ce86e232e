"""Retries meet a partition: a run on a node cut off mid-run has no known outcome, so it
is reported ``run_interrupted`` and never retried, and its tick never runs twice - also
when the cut-off task goes on, finishes and reports after the heal.

Three nodes with real DNS discovery (tests/netns/test_scheduler_netns.py's helpers); the
job has ``max_attempts=3`` and runs on one named node that is not the holder; the task
(``tests.harness.scheduler_tasks:record``) writes a ``start`` line when it is entered
and a ``run`` line when it returns."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness.netns_cluster import Cluster
from tests.harness.polling import wait_for
from tests.netns.test_scheduler_netns import (
    BOUND,
    JOB,
    TASK,
    boot,
    events,
    one_holder,
    runs,
    sched_logs,
    starts,
)

pytestmark = pytest.mark.netns

#: the holder gives a run on a lost node up after ``lost_after`` (30 s)
LOST_AFTER = 30.0


def cut_job(path: Path, node: str, seconds: float) -> dict[str, Any]:
    return {
        "name": JOB,
        "schedule": "0 0 1 1 *",  # once a year: run by hand
        "task": TASK,
        "kwargs": {"path": str(path), "seconds": seconds},
        "run_strategy": [node],
        "max_attempts": 3,
        "backoff": [1.0, 1.0],
    }


def test_a_run_on_a_node_cut_off_mid_run_is_interrupted_never_retried_never_run_twice(
    cluster: Cluster,
) -> None:
    path = cluster.workdir / "task"
    nodes = boot(cluster, [])
    holder_name = wait_for(lambda: one_holder(nodes), BOUND, "one holder everywhere", 0.1)
    target = next(n for n in nodes if n.name != holder_name)
    holder = next(n for n in nodes if n.name == holder_name)
    # the task outlives the holder's patience: still running when it is given up
    assert holder.cmd(op="sched_add", job=cut_job(path, target.name, LOST_AFTER + 15)) is True
    keys = holder.cmd(op="sched_run", name=JOB)
    assert len(keys) == 1, keys
    wait_for(lambda: starts(path), BOUND, "the run starts on its node", 0.1)
    assert [s.node for s in starts(path)] == [target.name]
    cluster.isolate(target.index)
    rest = [n.index for n in nodes if n is not target]
    cluster.wait_view(cluster.parts([target.index], rest), BOUND, "the run's node is cut off")

    def interrupted() -> list[dict[str, Any]]:
        return [e for e in events(cluster.workdir, ["run_interrupted"]) if e["job"] == JOB]

    wait_for(
        interrupted,
        LOST_AFTER + 30,
        "the run is reported interrupted",
        0.5,
        diagnose=lambda: sched_logs(cluster),
    )
    assert len(interrupted()) == 1
    cluster.heal()
    cluster.wait_view(cluster.parts([n.index for n in nodes]), BOUND, "the cluster heals")
    # the cut-off task goes on to its end and its pool reports it to the holder
    wait_for(lambda: runs(path), LOST_AFTER + 30, "the cut-off task returns", 0.5)
    time.sleep(3.0)  # a quiet period after its late report, to observe (nothing awaited)
    assert [s.node for s in starts(path)] == [target.name], "the tick started twice"
    kinds = [e["kind"] for e in events(cluster.workdir) if e["job"] == JOB]
    assert "run_retrying" not in kinds, kinds
    assert kinds.count("run_finished") == 0, kinds  # the late report changes nothing
    history = holder.cmd(op="sched_history", name=JOB)
    assert [(h["outcome"], h["attempts"]) for h in history] == [("interrupted", 1)], history
