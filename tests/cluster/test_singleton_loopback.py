"""Singleton on loopback nodes (OS processes on 127.0.0.x; no root needed): three
``tests.harness.node_driver`` nodes, meshed, each start a Singleton ``single`` whose
child (``singleton_ops.Marker``) waits warm on every node and is active on one.

What a user checks: exactly one node's child says it is active, and every node's
registry names that child's pid as the holder; after a SIGKILL of the holder's node
another node takes over and the survivors agree; a graceful stop (SIGTERM) of the holder
hands over before its node exits. Partitions are the netns tier's
(tests/netns/test_singleton_netns.py). Every wait is a deadline, wide enough for a
loaded 2-core machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.node_process import NodeProc, mesh
from tests.harness.polling import hold, wait_until

pytestmark = pytest.mark.cluster

BOUND = 30.0
NAME = "single"

Pidf = tuple[Any, ...]  # a pid as (node, creation, id, serial)


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[Callable[[str, int], list[NodeProc]]]:
    """``start(policy, first)``: nodes ``s{i}@127.0.0.{first + i}`` (i = 0..2) started side
    by side, meshed, registries synced, and then a Singleton ``single`` under ``policy``
    started on each, its child logging to ``tmp_path/marks``. Every node this test
    started is killed at the end (also when it fails, or was killed already)."""
    started: list[NodeProc] = []

    def start(policy: str, first: int) -> list[NodeProc]:
        for i in range(3):
            started.append(NodeProc(f"s{i}@127.0.0.{first + i}", str(tmp_path), wait=False))
        nodes = started[-3:]
        for n in nodes:
            n.wait_ready()
        mesh(nodes)
        for n in nodes:
            n.cmd(op="gsync")
        if policy == "majority":  # the lease needs the members first
            everyone = sorted(n.name for n in nodes)
            wait_until(
                lambda: (
                    len({tuple(map(str, m)) for m in members(nodes)}) == 1
                    and members(nodes)[0][1] == everyone
                ),
                timeout=BOUND,
                interval=0.1,
                what="the three nodes are quorum members",
            )
        for n in nodes:
            n.cmd(op="singleton_start", path=str(tmp_path / "marks"), name=NAME, policy=policy)
        return nodes

    try:
        yield start
    finally:
        for n in started:
            n.close()


def members(nodes: list[NodeProc]) -> list[Any]:
    return [n.cmd(op="quorum_members") for n in nodes]


def agreed(nodes: list[NodeProc]) -> Pidf | None:
    """The holder, if exactly one node's child says it is active and every node's
    registry names that child's pid; None otherwise."""
    named = {tuple(p) if p else None for p in (n.cmd(op="whereis", name=NAME) for n in nodes)}
    children = [n.cmd(op="singleton_child", name=NAME) for n in nodes]
    active = [tuple(c["pid"]) for c in children if c and c["active"]]
    if len(named) != 1 or None in named or len(active) != 1:
        return None
    holder = named.pop()
    return holder if holder == active[0] else None


def holder_node(nodes: list[NodeProc], holder: Pidf) -> NodeProc:
    return next(n for n in nodes if n.name == holder[0])


def marks(path: Path) -> list[list[str]]:
    """The Marker's lines: ``kind time node os_pid [epoch | reason]``."""
    try:
        return [line.split() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def one_holder(nodes: list[NodeProc], what: str, other_than: str | None = None) -> Pidf:
    """Wait until the nodes agree on one active holder (not on node ``other_than``), then
    check that it stays so for a second."""
    holder = wait_until(
        lambda: (h := agreed(nodes)) is not None and h[0] != other_than and h,
        timeout=BOUND,
        interval=0.05,
        what=what,
    )
    hold(lambda: agreed(nodes) == holder, 1.0, f"{what}: it stays so")
    return holder


def test_availability_one_holder_a_sigkill_takeover_and_a_sigterm_handover(trio, tmp_path):
    path = tmp_path / "marks"
    nodes = trio("availability", 71)
    first = one_holder(nodes, "one active child, named by every node")

    # SIGKILL of every process of the holder's node: a survivor takes over
    victim = holder_node(nodes, first)
    victim.kill_node()
    survivors = [n for n in nodes if n is not victim]
    second = one_holder(survivors, "a survivor takes over after the SIGKILL", victim.name)
    assert second[0] in {n.name for n in survivors} and second != first

    # SIGTERM of the new holder's node: it hands over before its node exits
    leaving = holder_node(survivors, second)
    leaving.term()
    assert leaving.proc.wait(BOUND) == 0, leaving.log()[-3000:]
    last = [n for n in survivors if n is not leaving]
    third = one_holder(last, "the last node holds it after the hand-over", leaving.name)
    rows = marks(path)
    old, new = str(second[2]), str(third[2])
    handover = [r for r in rows if r[0] == "deactivate" and r[3] == old]
    assert handover and handover[0][4] == "handover", rows[-8:]
    old_exit = [r for r in rows if r[0] == "exit" and r[3] == old]
    new_active = [r for r in rows if r[0] == "activate" and r[3] == new]
    assert old_exit and new_active, rows[-8:]
    assert float(new_active[0][1]) < float(old_exit[0][1]), rows[-8:]


def test_majority_one_holder_and_a_sigkill_takeover(trio):
    nodes = trio("majority", 74)
    first = one_holder(nodes, "one active child, named by every node (majority)")

    victim = holder_node(nodes, first)
    victim.kill_node()
    survivors = [n for n in nodes if n is not victim]
    second = one_holder(survivors, "a survivor takes the lease over after the SIGKILL", victim.name)
    assert second[0] in {n.name for n in survivors} and second != first


def test_majority_a_killed_active_child_gives_its_lease_up(trio, tmp_path):
    """SIGKILL of the active child alone (its node lives on): the child's witnesses close,
    so the members void its grant, and its node's manager gives the lease up too. The
    next active child - on any node, the restarted one included - acts under a new
    epoch: no child is activated under the killed one's epoch again (that node kept it
    and activated its restarted child under it, while the members let a standby in:
    two active children)."""
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import time  # noqa: PLC0415

    nodes = trio("majority", 77)
    first = one_holder(nodes, "one active child, named by every node (majority)")
    path = tmp_path / "marks"
    active = [m for m in marks(path) if m[0] == "activate" and m[2] == first[0]][-1]
    child_os_pid, epoch = int(active[3]), active[4]
    t_kill = time.time()
    os.kill(child_os_pid, signal.SIGKILL)
    second = one_holder(nodes, "an active child again after its SIGKILL")
    assert second != first
    after = [m for m in marks(path) if m[0] == "activate" and float(m[1]) > t_kill]
    assert after, "no child was activated after the kill"
    assert all(int(m[4]) > int(epoch) for m in after), (epoch, after)
