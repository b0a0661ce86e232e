"""A hidden node (the admin shell) connects without joining the mesh: the others do not
list it, do not dial it, and it can still call their processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from otpkit.distribution._handshake import PROTOCOL_VERSION
from tests.harness.node_process import NodeProc
from tests.harness.polling import wait_until

pytestmark = pytest.mark.cluster

HIDDEN = textwrap.dedent(
    """
    import json, sys, time, otpkit
    from otpkit import distribution as dist
    from otpkit.distribution import DistConfig

    log_dir, a_name, a_port, echo = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    config = DistConfig("127.0.0.9", 0, b"test-cookie-0123456789", hidden=True)
    node = otpkit.Node("shell@127.0.0.9", dist=config, log_dir=log_dir).start()
    dist.connect_node(a_name, "127.0.0.2", a_port)
    deadline = time.monotonic() + 10
    while dist.nodes() != [a_name] and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = dist.nodes()
    answer = otpkit.call(otpkit.Pid(*json.loads(echo)), "from the shell")
    print(json.dumps({"nodes": seen, "answer": answer}), flush=True)
    sys.stdin.read()
    node.stop()
    """
)


def test_a_hidden_node_stays_out_of_the_mesh(tmp_path):
    a = NodeProc("n2@127.0.0.2", str(tmp_path))
    b = NodeProc("n3@127.0.0.3", str(tmp_path))
    shell = None
    try:
        a.cmd(op="connect", name=b.name, host=b.host, port=b.port)
        wait_until(lambda: a.cmd(op="nodes") == [b.name], what="a and b meshed")
        shell = subprocess.Popen(
            [sys.executable, "-c", HIDDEN, str(tmp_path), a.name, str(a.port), json.dumps(a.echo)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        result = json.loads(shell.stdout.readline())
        assert result == {"nodes": [a.name], "answer": ["echo", "from the shell"]}
        assert a.cmd(op="nodes") == [b.name]  # the shell is not a member
        assert a.cmd(op="hidden_nodes") == ["shell@127.0.0.9"]
        assert a.cmd(op="dist_versions") == {b.name: PROTOCOL_VERSION}  # nor here
        # b never hears of it: nothing gossips a hidden node
        assert b.cmd(op="nodes") == [a.name]
        assert b.cmd(op="hidden_nodes") == []
    finally:
        if shell is not None:
            shell.kill()
            shell.wait(10)
        a.close()
        b.close()
