"""The parts' metrics on real processes and sockets, read with ``prometheus_client``'s
own parser as Prometheus reads ``/metrics``.

A dist node (its own OS processes, started by this module run as a driver) with a
supervised worker and a majority Singleton: it is a quorum member with a majority,
holds the singleton (holder 1, its lease held at an epoch), its registry counts the
singleton's name; a SIGKILL of the worker adds one restart under the supervisor's id
and the worker's; a SIGKILL of the singleton's child counts under its manager's id in
the kernel, and the singleton is held again under a higher epoch.

The dist links: three dist threads (:class:`DistCore`) linked over loopback TCP in
this process, with a metrics service here: a link's state, changes, bytes and frames
on both sides; a hidden peer's series go with its link. Every wait is a deadline, wide
enough for a loaded 2-core machine.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import otpkit
from otpkit import Actor, ChildSpec, Supervisor, metrics
from otpkit.actors import NodeIdentity, Pid
from otpkit.distribution import _codec
from otpkit.distribution._core import DistConfig, DistCore
from otpkit.registry import Singleton
from tests.harness import metrics_read
from tests.harness.node_process import NodeProc
from tests.harness.polling import wait_for

pytestmark = pytest.mark.cluster

BOUND = 30.0
MODULE = "tests.cluster.test_metrics_parts_loopback"
SINGLETON = ["singleton", "solo"]  # the manager's id in the kernel: ("singleton", "solo")


class Idle(Actor):
    """A child that only waits to be killed."""


def children() -> list[Any]:
    return [
        ChildSpec(
            "app",
            Supervisor,
            kwargs={"children": [ChildSpec("worker", Idle)], "intensity": 10, "period": 60},
        ),
        Singleton(ChildSpec("child", Idle), "solo", policy="majority", intensity=10, period=60),
    ]


def main() -> None:
    """The driver: ``NAME PORT LOG_DIR COOKIE``; answers ``{"op": "metrics"}`` (the
    node's ``/metrics`` text) and ``{"op": "ospid", "path": [id, ...]}`` (the OS pid of
    the child found by its ids from the kernel down; a list id is a tuple) until EOF."""
    name, port, log_dir, cookie = sys.argv[1:5]
    node = otpkit.Node(
        name, cookie=cookie, dist_port=int(port), log_dir=log_dir, children=children()
    ).start()
    try:
        print(json.dumps({"ready": name, "pids": node.os_pids()}), flush=True)
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["op"] == "metrics":
                assert node.metrics is not None
                answer: Any = node.metrics.exposition().decode()
            else:
                pid: Any = node.kernel
                for cid in cmd["path"]:
                    want = tuple(cid) if isinstance(cid, list) else cid
                    pid = next(c.pid for c in otpkit.which_children(pid) if c.id == want)
                answer = pid.id
            print(json.dumps({"ok": answer}), flush=True)
    finally:
        node.stop()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProc]:
    proc = NodeProc("metrics@127.0.0.1", str(tmp_path), module=MODULE)
    try:
        yield proc
    finally:
        proc.close(graceful=True)


def value(node: NodeProc, name: str, **labels: str) -> float | None:
    return metrics_read.value(metrics_read.parse(node.cmd(op="metrics")), name, **labels)


def wait_value(node: NodeProc, name: str, ok: Any, what: str, **labels: str) -> None:
    wait_for(
        lambda: (v := value(node, name, **labels)) is not None and ok(v),
        BOUND,
        what,
        interval=0.2,
        diagnose=lambda: f"{name}{labels} = {value(node, name, **labels)}",
    )


def test_a_node_reports_its_quorum_singleton_registry_and_restarts(node: NodeProc) -> None:
    wait_value(node, "otpkit_quorum_members", lambda v: v == 1, "one member")
    wait_value(node, "otpkit_quorum_has_majority", lambda v: v == 1, "a majority")
    assert (value(node, "otpkit_quorum_membership_version") or 0) >= 1
    wait_value(node, "otpkit_singleton_holder", lambda v: v == 1, "held", singleton="solo")
    assert value(node, "otpkit_singleton_no_holder", singleton="solo") == 0
    key = {"key": "singleton/solo"}
    wait_value(node, "otpkit_quorum_lease_held", lambda v: v == 1, "lease held", **key)
    epoch = value(node, "otpkit_quorum_lease_epoch", **key)
    assert epoch is not None and epoch >= 1
    wait_value(node, "otpkit_registry_names", lambda v: v >= 1, "the singleton's name")

    os.kill(node.cmd(op="ospid", path=["app", "worker"]), signal.SIGKILL)
    labels = {"supervisor": "app", "child": "worker"}
    wait_value(node, "otpkit_supervisor_restarts_total", lambda v: v == 1, "one restart", **labels)

    os.kill(node.cmd(op="ospid", path=[SINGLETON, "child"]), signal.SIGKILL)
    labels = {"supervisor": "('singleton', 'solo')", "child": "child"}
    wait_value(node, "otpkit_supervisor_restarts_total", lambda v: v == 1, "one restart", **labels)
    wait_value(node, "otpkit_quorum_lease_epoch", lambda v: v > epoch, "a new lease", **key)
    wait_value(node, "otpkit_singleton_holder", lambda v: v == 1, "held again", singleton="solo")
    assert value(node, "otpkit_supervisor_restarts_total", supervisor="app", child="worker") == 1


# ---------------------------------------------------------------------- dist links


@pytest.fixture
def service() -> Iterator[metrics.Service]:
    yield from metrics_read.running_service()


def here(svc: metrics.Service, name: str, **labels: str) -> float | None:
    return metrics_read.value(metrics_read.read(svc), name, **labels)


def wait_here(svc: metrics.Service, name: str, want: float, **labels: str) -> None:
    wait_for(
        lambda: here(svc, name, **labels) == want,
        BOUND,
        f"{name}{labels} == {want}",
        diagnose=lambda: f"it is {here(svc, name, **labels)}",
    )


def dist_core(name: str, hidden: bool = False) -> DistCore:
    node = NodeIdentity(name, secrets.randbits(31) | 1)
    config = DistConfig("127.0.0.1", 0, b"metrics-test-cookie-0123456789", tick=0.2, hidden=hidden)
    core = DistCore(node, config, Pid(name, node.creation, os.getpid(), 0))
    core.start()
    return core


@pytest.fixture
def cores() -> Iterator[list[DistCore]]:
    """``a`` and ``b`` (visible) and ``shell`` (hidden), each a dist thread in this
    process; stopped and their sockets closed at the end."""
    made = [dist_core("a@127.0.0.1"), dist_core("b@127.0.0.1"), dist_core("shell@127.0.0.1", True)]
    try:
        yield made
    finally:
        for core in made:
            core.stop()
            for key in list(core._sel.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            core._wake_w.close()
            core._sel.close()


def test_dist_links_report_up_down_and_traffic(
    service: metrics.Service, cores: list[DistCore]
) -> None:
    a, b, _ = cores
    a.command(a.connect, "b@127.0.0.1", "127.0.0.1", b.port)
    wait_here(service, "otpkit_dist_link_up", 1, peer="b@127.0.0.1")
    wait_here(service, "otpkit_dist_link_up", 1, peer="a@127.0.0.1")
    assert here(service, "otpkit_dist_link_changes_total", peer="b@127.0.0.1", state="up") == 1
    # 100 KB to a service b does not have (dropped there): counted on both sides
    src = Pid("a@127.0.0.1", a.node.creation, os.getpid(), 7)
    payload = _codec.encode(b"x" * 100_000)
    a.command(a._to_node, "b@127.0.0.1", ("nsend", src, "no_such_service", payload))
    for name, peer in (
        ("otpkit_dist_sent_bytes_total", "b@127.0.0.1"),
        ("otpkit_dist_received_bytes_total", "a@127.0.0.1"),
    ):
        wait_for(
            lambda name=name, peer=peer: (here(service, name, peer=peer) or 0) > 100_000,
            BOUND,
            f"{name} to {peer} counts the 100 KB",
        )
    for name, peer in (
        ("otpkit_dist_sent_frames_total", "b@127.0.0.1"),
        ("otpkit_dist_received_frames_total", "a@127.0.0.1"),
    ):
        assert (here(service, name, peer=peer) or 0) >= 1
    a.command(a.disconnect, "b@127.0.0.1")
    # a visible peer's series stay: the link 0, one change down each side
    wait_here(service, "otpkit_dist_link_up", 0, peer="b@127.0.0.1")
    wait_here(service, "otpkit_dist_link_up", 0, peer="a@127.0.0.1")
    assert here(service, "otpkit_dist_link_changes_total", peer="b@127.0.0.1", state="down") == 1
    assert here(service, "otpkit_dist_link_changes_total", peer="a@127.0.0.1", state="down") == 1
    assert (here(service, "otpkit_dist_sent_bytes_total", peer="b@127.0.0.1") or 0) > 100_000


def test_a_hidden_peers_series_go_with_its_link(
    service: metrics.Service, cores: list[DistCore]
) -> None:
    """A shell is a new node name each time: its series would grow without bound."""
    a, _, shell = cores
    shell.command(shell.connect, "a@127.0.0.1", "127.0.0.1", a.port)
    wait_here(service, "otpkit_dist_link_up", 1, peer="shell@127.0.0.1")
    wait_for(
        lambda: (
            (here(service, "otpkit_dist_received_frames_total", peer="shell@127.0.0.1") or 0) > 0
        ),
        BOUND,
        "a counts the shell's frames (its ticks)",
    )
    shell.command(shell.disconnect, "a@127.0.0.1")
    wait_for(
        lambda: (
            not [
                k
                for k in metrics_read.parse(service.exposition())
                if ("peer", "shell@127.0.0.1") in k[1]
            ]
        ),
        BOUND,
        "no series names the shell once its link is down",
    )


if __name__ == "__main__":
    main()
