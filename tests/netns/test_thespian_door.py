"""No open Thespian door: Thespian unpickles whatever reaches its ports, so otpkit binds
it to loopback and authenticates its pickles. A pickle that would create a file is sent
to every port of a node, from another network namespace and from the node's own; the
file never appears and the node keeps answering."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess

import pytest

from tests.harness.netns_cluster import sh
from tests.harness.processes import child_env, python_module

pytestmark = pytest.mark.netns

STARTER = "tests.harness.nested_tree_node"
PROBE = "tests.harness.evil_pickle_probe"


def listening(ns: str, pids: set[int]) -> tuple[list[tuple[str, int]], list[str]]:
    """TCP ports and abstract Unix sockets that the node's processes listen on."""
    tcp = []
    for line in sh("ip", "netns", "exec", ns, "ss", "-ltnpH").stdout.splitlines():
        if any(f"pid={p}," in line for p in pids):
            local = line.split()[3]
            host, _, port = local.rpartition(":")
            tcp.append((host, int(port)))
    unix = []
    for line in sh("ip", "netns", "exec", ns, "ss", "-xlpH").stdout.splitlines():
        fields = line.split()
        name = next((f for f in fields if f.startswith("@otpkit/")), None)
        if name and any(f"pid={p}," in line for p in pids):
            unix.append(name[1:])
    return tcp, unix


def test_no_pickle_runs_from_another_namespace_or_the_nodes_own(ns_pair, tmp_path):
    target = tmp_path / "pwned"
    node = subprocess.Popen(
        ["ip", "netns", "exec", ns_pair.a, *python_module(STARTER, str(tmp_path))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    info: dict = {}
    try:
        info = json.loads(node.stdout.readline())
        pids = set(info["all"])
        tcp, unix = listening(ns_pair.a, pids)
        assert tcp, "the node listens on no TCP port?"
        assert len(unix) >= len(pids) - 2, "every actor (not admin/logger) has a socket"
        # every Thespian port is bound to loopback only
        assert {host for host, _ in tcp} == {"127.0.0.1"}, tcp
        ports = [port for _, port in tcp]

        # from the other namespace, at the node's address: nothing even connects
        spec = {"path": str(target), "tcp": [["10.10.0.1", p] for p in ports], "unix": unix}
        out = sh(
            "ip",
            "netns",
            "exec",
            ns_pair.b,
            *python_module(PROBE, json.dumps(spec)),
            env=child_env(),
        )
        remote = json.loads(out.stdout)
        assert remote and all(
            v.startswith("connect-failed") for k, v in remote.items() if k.startswith("tcp")
        ), remote
        # abstract sockets belong to the node's namespace: unreachable from b
        assert all(
            v.startswith("connect-failed") for k, v in remote.items() if k.startswith("unix")
        ), remote

        # from the node's own namespace: every port connects, every pickle is refused
        spec["tcp"] = [["127.0.0.1", p] for p in ports]
        out = sh(
            "ip",
            "netns",
            "exec",
            ns_pair.a,
            *python_module(PROBE, json.dumps(spec)),
            env=child_env(),
        )
        local = json.loads(out.stdout)
        assert local and not any(v.startswith("connect-failed") for v in local.values()), local

        assert not target.exists(), "a pickle ran inside the node"
        node.stdin.write("ping\n")
        node.stdin.flush()
        assert node.stdout.readline().startswith("pong ")
        log = (tmp_path / "starter@127.0.0.1.log").read_text()
        assert "refused an unauthenticated Thespian packet" in log
        assert "frame tag does not verify" in log
    finally:
        node.kill()
        node.wait(10)
        for pid in info.get("all", []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
