"""dist on loopback: three nodes as separate OS processes on 127.0.0.2-4 form a mesh;
remote call/cast/send/monitor/link; kill -9 of a node gives NodeDown and noconnection."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from _util import wait_until

pytestmark = pytest.mark.cluster

SCRIPT = os.path.join(os.path.dirname(__file__), "dist_node.py")


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class NodeProc:
    def __init__(self, name: str, log_dir: str, cookie: str = "test-cookie") -> None:
        self.name = name
        self.host = name.split("@")[1]
        self.port = free_port(self.host)
        self.proc = subprocess.Popen(
            [sys.executable, SCRIPT, name, str(self.port), log_dir, cookie],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        assert line, f"{name} did not start"
        self.info = json.loads(line)
        self.echo = self.info["echo"]

    def cmd(self, **kw: Any) -> Any:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(kw) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        assert "ok" in reply, reply
        return reply["ok"]

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for pid in self.info.get("pids", []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


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


def mesh(nodes: list[NodeProc]) -> None:
    a = nodes[0]
    for other in nodes[1:]:
        a.cmd(op="connect", name=other.name, host=other.host, port=other.port)
    for n in nodes:
        want = sorted(m.name for m in nodes if m is not n)
        wait_until(
            lambda n=n, want=want: n.cmd(op="nodes") == want,
            timeout=10,
            what=f"{n.name} sees the full mesh",
        )


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
