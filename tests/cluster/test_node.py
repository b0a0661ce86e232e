"""Node lifecycle: idempotent start and stop, one node per program, clean errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import otpkit
from tests.harness.polling import wait_until

pytestmark = pytest.mark.cluster

LIFECYCLE = textwrap.dedent(
    """
    import json, sys, otpkit

    node = otpkit.Node("life@127.0.0.1", log_dir=sys.argv[1])
    assert node.start() is node
    first = (node.kernel, sorted(node.os_pids()))
    assert node.start() is node                   # idempotent
    assert node.kernel == first[0]
    try:
        otpkit.Node("other@127.0.0.1", log_dir=sys.argv[1]).start()
        raise SystemExit("a second node started in the same program")
    except otpkit.NodeError as exc:
        second = str(exc)
    node.stop()
    node.stop()                                   # idempotent
    try:
        otpkit.call(first[0], "x")
        raise SystemExit("otpkit.call worked after stop")
    except otpkit.OtpkitError as exc:
        after = type(exc).__name__
    again = otpkit.Node("life2@127.0.0.1", log_dir=sys.argv[1]).start()
    creation = again.creation
    again.stop()
    print(json.dumps({"pids": first[1], "second": second, "after": after,
                      "creations": [node.creation, creation]}))
    """
)


def test_start_and_stop_are_idempotent_and_leave_nothing(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", LIFECYCLE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert len(result["pids"]) == 4  # admin, logger, kernel, the global name server
    assert "already runs node 'life@127.0.0.1'" in result["second"]
    assert result["after"] == "NoRuntime"
    assert result["creations"][0] != result["creations"][1]
    left = subprocess.run(
        ["ps", "-o", "pid=,stat=", "-p", ",".join(map(str, result["pids"]))],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split("\n")
    assert [line for line in left if line.strip() and "Z" not in line.split()[-1]] == []


def test_bad_node_name():
    with pytest.raises(otpkit.NodeError, match="expected 'app@host'"):
        otpkit.Node("no-at-sign")


class Echo(otpkit.Actor):
    def handle_call(self, request, from_):
        if request[0] == "remote":
            target = request[1]
            ref = otpkit.monitor(target)
            try:
                otpkit.call(target, "x", timeout=1)
            except otpkit.Exit as exc:
                reason = exc.reason
            return ref, reason
        return request


def test_a_pid_on_another_node_is_unreachable_without_dist(mailbox):
    """Until dist plugs in its hooks, a remote pid behaves as one on a down node."""
    remote = otpkit.Pid("elsewhere@10.0.0.1", 7, 1234, 1)
    ref = otpkit.monitor(remote)
    assert mailbox.receive(5) == otpkit.Down(ref, remote, "noconnection")
    with pytest.raises(otpkit.Exit) as info:
        otpkit.call(remote, "x")
    assert info.value.reason == "noconnection"
    otpkit.send(remote, "dropped")  # at most once: no error
    otpkit.link(remote)
    assert mailbox.receive(5) == otpkit.ExitSignal(remote, "noconnection")
    # the same from inside an actor
    echo = mailbox.spawn(Echo)
    _, reason = otpkit.call(echo, ("remote", remote))
    assert reason == "noconnection"
    otpkit.exit(echo, "kill")


def test_threads_of_the_starting_program_may_call_and_multi_call_at_once(mailbox):
    """The starting program's runtime serves one request at a time; its threads take
    turns (a multi_call in one thread and a call in another raised RuntimeError before:
    the admin shell's connection watcher met its commands that way)."""
    import threading  # noqa: PLC0415 - only this test

    echo = mailbox.spawn(Echo)
    errors: list[BaseException] = []

    def calls() -> None:
        try:
            for i in range(200):
                assert otpkit.call(echo, ("c", i)) == ("c", i)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=calls)
    thread.start()
    try:
        for i in range(200):
            assert otpkit.multi_call([echo], ("m", i), 5.0) == [("ok", ("m", i))]
    finally:
        thread.join(60)
    assert errors == []
    otpkit.exit(echo, "kill")


def test_a_local_name_is_not_read_once_its_process_is_gone(mailbox):
    """``whereis_name`` never hands out a pid of this node whose process has ended, even
    before the name server has taken the name off (frozen here): a supervisor restarting a
    child that links to the pid it reads would crash-loop on the dead one meanwhile."""
    import signal  # noqa: PLC0415 - only this test

    from otpkit.actors import process_alive  # noqa: PLC0415

    echo = mailbox.spawn(Echo)
    assert otpkit.register_name("gone-soon", echo)
    assert otpkit.whereis_name("gone-soon") == echo
    server = next(c.pid for c in otpkit.which_children(mailbox.kernel) if c.id == "global")
    os.kill(server.id, signal.SIGSTOP)
    try:
        os.kill(echo.id, signal.SIGKILL)
        wait_until(lambda: not process_alive(echo.id, echo.serial), 10, what="echo ended")
        assert otpkit.whereis_name("gone-soon") is None
    finally:
        os.kill(server.id, signal.SIGCONT)
    wait_until(lambda: "gone-soon" not in otpkit.registered_names(), 10, what="name gone")
