"""No orphans, ever: whatever is killed, no process of the node (or of the killed
supervisor's subtree) outlives it by more than 2 s. Real processes, checked with ps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.harness.processes import child_env, python_module

pytestmark = pytest.mark.cluster

STARTER = "tests.harness.nested_tree_node"


def live_pids(pids: list[int]) -> list[int]:
    """The pids ps lists as running (zombies are dead)."""
    out = subprocess.run(
        ["ps", "-o", "pid=,stat=", "-p", ",".join(map(str, pids))],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    live = []
    for line in out.splitlines():
        pid, stat = line.split()
        if not stat.startswith("Z"):
            live.append(int(pid))
    return live


def gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    left = live_pids(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = live_pids(pids)
    return left


@pytest.fixture
def started(tmp_path) -> Iterator[tuple[subprocess.Popen[str], dict]]:
    proc = subprocess.Popen(
        python_module(STARTER, str(tmp_path)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    info: dict = {}
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, "the starter printed nothing"
        info = json.loads(line)
        yield proc, info
    finally:
        # only what this test started: the starter, then the node's processes by pid
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for pid in live_pids(info.get("all", [])):
            os.kill(pid, signal.SIGKILL)


def test_tree_is_what_the_starter_reports(started):
    proc, info = started
    assert set(info["all"]) >= {
        info[k] for k in ("admin", "kernel", "app", "w1", "w2", "inner", "w3", "w4")
    }
    assert live_pids(info["all"]) == sorted(info["all"]) or set(live_pids(info["all"])) == set(
        info["all"]
    )
    proc.stdin.close()  # graceful stop
    assert proc.wait(30) == 0
    assert gone_within(info["all"], 2.0) == []


def test_kill_9_of_the_starter_leaves_nothing(started):
    proc, info = started
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert gone_within(info["all"], 2.0) == []


def test_kill_9_of_the_admin_leaves_nothing(started):
    proc, info = started
    os.kill(info["admin"], signal.SIGKILL)
    assert gone_within(info["all"], 2.0) == []
    proc.kill()


def test_kill_9_of_a_supervisor_takes_its_subtree_only(started):
    _, info = started
    subtree = [info["app"], info["w1"], info["w2"], info["inner"], info["w3"], info["w4"]]
    os.kill(info["app"], signal.SIGKILL)
    assert gone_within(subtree, 2.0) == []
    # the kernel restarts the app supervisor; the rest of the node lives on
    assert live_pids([info["admin"], info["kernel"]]) == sorted([info["admin"], info["kernel"]])


def test_kernel_giving_up_stops_every_process_of_the_node(tmp_path):
    proc = subprocess.Popen(
        python_module(STARTER, str(tmp_path), "fragile"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    info: dict = {}
    try:
        info = json.loads(proc.stdout.readline())
        # kernel intensity 0: the app supervisor's death is one restart too many
        os.kill(info["app"], signal.SIGKILL)
        assert gone_within(info["all"], 2.0) == []
    finally:
        proc.kill()
        proc.wait(10)
        for pid in live_pids(info.get("all", [])):
            os.kill(pid, signal.SIGKILL)
