"""dist on loopback: three nodes as separate OS processes on 127.0.0.2-4 form a mesh;
each knows its peers' protocol (``dist.versions``, ``NodeUp``); remote
call/cast/send/monitor/link; kill -9 of a node gives NodeDown and noconnection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otpkit.distribution._handshake import PROTOCOL_VERSION
from tests.harness.node_process import NodeProc, mesh

pytestmark = pytest.mark.cluster


@pytest.fixture
def trio(tmp_path) -> Iterator[list[NodeProc]]:
    nodes: list[NodeProc] = []
    try:
        for i in (2, 3, 4):
            nodes.append(NodeProc(f"n{i}@127.0.0.{i}", str(tmp_path)))
        yield nodes
    finally:
        for n in nodes:
            n.close()


def test_mesh_and_remote_messaging(trio):
    a, b, c = trio
    mesh(trio)
    assert a.cmd(op="call", pid=b.echo, req="hi") == ["ok", ["echo", "hi"]]
    a.cmd(op="cast", pid=b.echo, msg=[1, {"k": 2}])
    a.cmd(op="send", pid=b.echo, msg="plain")
    assert a.cmd(op="call", pid=b.echo, req="seen") == [
        "ok",
        [["cast", [1, {"k": 2}]], ["info", "plain"]],
    ]
    # a call made inside a handler, across nodes (a's echo calls c's echo)
    assert a.cmd(op="call", pid=a.echo, req=["call", c.echo, "x"]) == ["ok", ["ok", ["echo", "x"]]]
    # what cannot cross fails in the sender, naming the type
    bad = a.cmd(op="send_bad", pid=b.echo)
    assert bad[0] == "TypeError" and "set" in bad[1]
    # a remote crash reaches the caller as a reason it can read
    assert a.cmd(op="call", pid=c.echo, req="crash") == [
        "exit",
        "('exception', 'ValueError', 'boom')",
    ]
    # ... and a dead remote pid is noproc
    assert a.cmd(op="call", pid=c.echo, req="hi") == ["exit", "noproc"]


def test_each_node_knows_the_protocol_of_its_peers(trio):
    for n in trio:
        n.cmd(op="monitor_nodes")
    mesh(trio)
    for n in trio:
        others = sorted(m.name for m in trio if m is not n)
        assert n.cmd(op="dist_versions") == dict.fromkeys(others, PROTOCOL_VERSION)
        heard = sorted(n.cmd(op="recv", t=10) for _ in others)
        assert heard == [
            ["NodeUp", f"NodeUp(node='{m}', version={PROTOCOL_VERSION})"] for m in others
        ]


def test_remote_link_and_kill(trio):
    a, b, _ = trio
    mesh(trio)
    a.cmd(op="link", pid=b.echo)
    a.cmd(op="exit", pid=b.echo, reason="kill")
    kind, text = a.cmd(op="recv", t=10)
    assert kind == "ExitSignal" and "'killed'" in text and str(b.echo[2]) in text


def test_kill_9_of_a_node_gives_nodedown_and_noconnection(trio):
    a, b, c = trio
    mesh(trio)
    for n in (a, b):
        n.cmd(op="monitor_nodes")
        n.cmd(op="monitor", pid=c.echo)
    c.kill9()
    for n in (a, b):
        got = [n.cmd(op="recv", t=10) for _ in range(2)]
        kinds = sorted(k for k, _ in got)
        assert kinds == ["Down", "NodeDown"], got
        texts = " ".join(t for _, t in got)
        assert "noconnection" in texts and c.name in texts
        assert n.cmd(op="nodes") == sorted(m.name for m in (a, b) if m is not n)
