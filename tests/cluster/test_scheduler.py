"""The cluster scheduler on loopback nodes (OS processes on 127.0.0.x, policy majority):
the runtime API from a node that does not hold the scheduler, what survives a holder's
SIGKILL and a restart of every node, declared configuration jobs, ``@reboot``, manual
runs, events and bad input. Assertions come from the task's own records
(tests/harness/scheduler_tasks.py appends ``start``/``run`` lines with the tick, node and
OS pid) and from the event stream. Partitions and the chaos scenario are in tests/netns.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.node_process import NodeProc
from tests.harness.polling import wait_until
from tests.harness.processes import child_env, python_module

pytestmark = pytest.mark.cluster

BOUND = 30.0
INDICES = (2, 3, 4)


def job(name: str, path: Path, schedule: str = "* * * * * *", **kw: Any) -> dict[str, Any]:
    spec = {
        "name": name,
        "schedule": schedule,
        "task": "tests.harness.scheduler_tasks:record",
        "kwargs": {"path": str(path), **kw.pop("task_kwargs", {})},
    }
    spec.update(kw)
    return spec


class Trio:
    """Three scheduler nodes on loopback, each with its own SQLite store in ``workdir``."""

    def __init__(self, workdir: Path, jobs: list[dict[str, Any]]) -> None:
        self.workdir = workdir
        self.jobs = jobs
        self.nodes: dict[int, NodeProc] = {}

    def start(self, *indices: int) -> None:
        started = []
        for i in indices or INDICES:
            config = {
                "policy": "majority",
                "store": str(self.workdir / f"store{i}.sqlite"),
                "settle_timeout": 1.0,
                "jobs": self.jobs,
                "max_concurrency": 3,
            }
            path = self.workdir / f"config{i}.json"
            path.write_text(json.dumps(config))
            node = NodeProc(
                f"n{i}@127.0.0.{i}",
                str(self.workdir),
                extra_args=("--scheduler", str(path)),
                wait=False,
            )
            self.nodes[i] = node
            started.append(node)
        for node in started:
            node.wait_ready()
        self.mesh()
        for node in started:
            node.cmd(op="sched_events", path=str(self.workdir / "events"))

    def mesh(self) -> None:
        nodes = list(self.nodes.values())
        for a in nodes:
            for b in nodes:
                if a is not b:
                    a.cmd(op="connect", name=b.name, host=b.host, port=b.port)

    def holder(self) -> str | None:
        views = {n.cmd(op="sched_holder") for n in self.nodes.values()}
        return views.pop() if len(views) == 1 else None

    def wait_holder(self, not_on: str | None = None) -> str:
        return wait_until(
            lambda: (h := self.holder()) is not None and h != not_on and h,
            BOUND,
            what=f"one scheduler holder everywhere (not {not_on})",
        )

    def node_named(self, name: str) -> NodeProc:
        return next(n for n in self.nodes.values() if n.name == name)

    def index_of(self, name: str) -> int:
        return next(i for i, n in self.nodes.items() if n.name == name)

    def kill(self, name: str) -> int:
        i = self.index_of(name)
        self.nodes.pop(i).kill9()
        return i

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()
        self.nodes.clear()

    def events(self) -> list[dict[str, Any]]:
        path = self.workdir / "events"
        seen: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                event = json.loads(line)
                seen.setdefault(event["id"], event)
        return sorted(seen.values(), key=lambda e: e["at"])


def records(path: Path, kind: str = "run") -> list[list[str]]:
    """The task's lines of ``kind``: ``run tick node pid start end lane``."""
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.startswith(kind + " ")]


@pytest.fixture
def trio_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Trio] = []

    def make(jobs: list[dict[str, Any]]) -> Trio:
        trio = Trio(tmp_path, jobs)
        made.append(trio)
        trio.start()
        return trio

    try:
        yield make
    finally:
        for trio in made:
            trio.close()


def test_runtime_api_from_a_node_that_does_not_hold_it(trio_factory, tmp_path):
    out = tmp_path / "out"
    trio = trio_factory([])
    holder = trio.wait_holder()
    other = next(n for n in trio.nodes.values() if n.name != holder)
    assert other.cmd(op="sched_add", job=job("rt", out)) is True
    assert other.cmd(op="sched_add", job=job("rt", out)) is False  # the same job again
    wait_until(lambda: len(records(out)) >= 3, BOUND, what="the runtime job runs")
    rows = records(out)
    assert {r[2] for r in rows} == {holder}, rows  # local strategy: the holder's node
    assert len({r[1] for r in rows}) == len(rows), "a tick ran twice"
    found = other.cmd(op="sched_find", name="rt")
    assert (
        found["schedule"] == "* * * * * *"
        and found["task"] == "tests.harness.scheduler_tasks:record"
    )
    listed = other.cmd(op="sched_jobs")
    assert [j["name"] for j in listed] == ["rt"]
    assert listed[0]["holder"] == holder and listed[0]["next_at"] is not None
    assert listed[0]["last_run"]["outcome"] == "finished"

    # deactivate: no run starts after the change returned
    assert other.cmd(op="sched_deactivate", name="rt") is True
    stopped = time.time()
    time.sleep(2.5)  # a quiet period to observe (nothing is awaited here)
    assert not [r for r in records(out) if float(r[4]) > stopped + 0.2]
    assert other.cmd(op="sched_find", name="rt")["state"] == "inactive"
    # a manual run of an inactive job fires exactly once
    before = len(records(out))
    keys = other.cmd(op="sched_run", name="rt")
    assert len(keys) == 1 and keys[0][2] == "@manual", keys
    wait_until(lambda: len(records(out)) == before + 1, BOUND, what="the manual run")
    time.sleep(1.5)
    assert len(records(out)) == before + 1
    assert records(out)[-1][6] == "@manual"
    # activate again, then delete
    assert other.cmd(op="sched_activate", name="rt") is True
    again = time.time()
    wait_until(lambda: [r for r in records(out) if float(r[4]) > again], BOUND, what="runs again")
    assert other.cmd(op="sched_delete", name="rt") is True
    gone = time.time()
    assert other.cmd(op="sched_find", name="rt") is None
    assert other.cmd(op="sched_jobs") == []
    time.sleep(2.0)
    assert not [r for r in records(out) if float(r[4]) > gone + 0.2]

    kinds = [e["kind"] for e in trio.events() if e["job"] == "rt"]
    assert kinds[0] == "job_added" and "job_deleted" in kinds
    finished = [e for e in trio.events() if e["kind"] == "run_finished"]
    assert finished and all(e["node"] == holder and e["duration"] >= 0 for e in finished)


def test_bad_input_names_the_job_and_field(trio_factory, tmp_path):
    trio = trio_factory([])
    trio.wait_holder()
    node = trio.nodes[2]
    bad = node.cmd(op="sched_add", job=job("bad", tmp_path / "x", schedule="61 * * * *"))
    assert bad[0] == "error" and "'bad'" in bad[2] and "minute" in bad[2], bad
    bad_tz = node.cmd(op="sched_add", job=job("tz", tmp_path / "x", timezone="Mars/Base"))
    assert bad_tz[0] == "error" and "'tz'" in bad_tz[2] and "Mars/Base" in bad_tz[2], bad_tz
    bad_task = node.cmd(op="sched_add", job={**job("tk", tmp_path / "x"), "task": "nosuch:fn"})
    assert bad_task[0] == "error" and "'tk'" in bad_task[2] and "task" in bad_task[2], bad_task
    unknown = node.cmd(op="sched_run", name="nosuch")
    assert unknown[0] == "error" and unknown[1] == "UnknownJob", unknown
    assert node.cmd(op="sched_jobs") == []  # nothing half-added


def test_a_runtime_job_survives_a_holder_kill_and_a_restart_of_every_node(trio_factory, tmp_path):
    out = tmp_path / "out"
    trio = trio_factory([])
    holder = trio.wait_holder()
    other = next(n for n in trio.nodes.values() if n.name != holder)
    assert other.cmd(op="sched_add", job=job("kept", out, schedule="*/1 * * * * *")) is True
    wait_until(lambda: records(out), BOUND, what="the job runs")

    trio.kill(holder)
    second = trio.wait_holder(not_on=holder)
    killed_at = time.time()
    wait_until(
        lambda: [r for r in records(out) if float(r[4]) > killed_at and r[2] == second],
        BOUND,
        what="the new holder runs the runtime job",
    )
    ticks = [r[1] for r in records(out)]
    assert len(ticks) == len(set(ticks)), "a tick ran twice across the fail-over"

    trio.close()  # every node gone: only the stores remain
    restarted = time.time()
    trio.start()
    trio.wait_holder()
    wait_until(
        lambda: [r for r in records(out) if float(r[4]) > restarted],
        BOUND,
        what="the job runs after a restart of every node",
    )
    names = [j["name"] for j in trio.nodes[3].cmd(op="sched_jobs")]
    assert names == ["kept"]
    ticks = [r[1] for r in records(out)]
    assert len(ticks) == len(set(ticks)), "a tick ran twice across the restart"


def test_configuration_jobs_are_declared_state_and_reboot_runs_once_per_cluster_start(
    trio_factory, tmp_path
):
    out, boot = tmp_path / "out", tmp_path / "boot"
    trio = trio_factory([job("cfg", out), job("boot", boot, schedule="@reboot")])
    holder = trio.wait_holder()
    wait_until(lambda: records(out), BOUND, what="the configuration job runs")
    wait_until(lambda: records(boot), BOUND, what="the @reboot job runs")
    node = next(n for n in trio.nodes.values() if n.name != holder)
    # a runtime change to a configuration job lasts until the next start of the scheduler
    assert node.cmd(op="sched_deactivate", name="cfg") is True
    assert node.cmd(op="sched_find", name="cfg")["state"] == "inactive"
    trio.kill(holder)
    second = trio.wait_holder(not_on=holder)
    wait_until(
        lambda: trio.node_named(second).cmd(op="sched_find", name="cfg")["state"] == "active",
        BOUND,
        what="the new holder applies the configuration again",
    )
    # the node's log lines reach its file through its logging process: a moment later
    wait_until(
        lambda: "configuration job 'cfg' overwrites" in trio.node_named(second).log(),
        BOUND,
        what="the overwrite is logged",
    )
    # @reboot ran once: a fail-over is not a cluster start
    time.sleep(1.0)
    assert len(records(boot)) == 1, records(boot)
    # a restart of every node is
    trio.close()
    trio.start()
    trio.wait_holder()
    wait_until(lambda: len(records(boot)) == 2, BOUND, what="@reboot runs after a cluster restart")
    time.sleep(1.0)
    assert len(records(boot)) == 2
    assert os.path.exists(tmp_path / "store2.sqlite")


def test_a_corrupt_store_stops_the_start_with_its_path_and_is_left_as_it_was(tmp_path):
    store = tmp_path / "store.sqlite"
    garbage = bytes(range(256)) * 16
    store.write_bytes(garbage)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"policy": "availability", "store": str(store), "jobs": []}))
    out = subprocess.run(
        python_module(
            "tests.harness.node_driver",
            "c1@127.0.0.9",
            "0",
            str(tmp_path),
            "test-cookie-0123456789",
            "--scheduler",
            str(config),
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=child_env(),
    )
    assert out.returncode != 0
    assert f"scheduler store '{store}': not a SQLite database" in out.stderr, out.stderr[-2000:]
    assert store.read_bytes() == garbage  # reported, never replaced or repaired
