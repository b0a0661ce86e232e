"""Actors as real OS processes: calls (also from inside handlers), ordering, links,
monitors, exit signals, names and timers."""

from __future__ import annotations

import os
import signal
import time

import pytest

import otpkit
from otpkit import Actor, CallTimeout, Down, Exit, ExitSignal, Stop
from tests.harness.polling import wait_until
from tests.harness.processes import alive

pytestmark = pytest.mark.cluster


class Echo(Actor):
    def init(self, tag: str = "echo") -> None:
        self.tag = tag
        self.seen: list[object] = []

    def handle_call(self, request, from_):
        if request == "crash":
            raise ValueError("boom")
        if request == "seen":
            return list(self.seen)
        if request == "ospid":
            return os.getpid()
        if isinstance(request, tuple) and request[0] == "sleep":
            time.sleep(request[1])
            return "slept"
        if isinstance(request, tuple) and request[0] == "stop":
            raise Stop(request[1], reply="stopping")
        return (self.tag, request)

    def handle_cast(self, msg):
        self.seen.append(("cast", msg))

    def handle_info(self, msg):
        self.seen.append(msg)


class Caller(Actor):
    """Calls another actor from inside its own handler."""

    def handle_call(self, request, from_):
        op = request[0]
        if op == "call":
            _, target, req, timeout = request
            try:
                return ("ok", otpkit.call(target, req, timeout))
            except CallTimeout:
                return ("timeout",)
            except Exit as exc:
                return ("exit", exc.reason)
        if op == "exit":
            otpkit.exit(request[1], request[2])
            return "ok"
        if op == "set_peer":
            self.peer = request[1]
            return "ok"
        if op == "call_peer":
            try:
                return ("ok", otpkit.call(self.peer, ("call_peer_back",), request[1]))
            except CallTimeout:
                return ("timeout",)
        if op == "call_peer_back":
            return "answered"
        if op == "stream":
            _, target, count = request
            for i in range(count):
                otpkit.send(target, ("seq", i))
            return "sent"
        if op == "stream_then_die":
            _, target, count = request
            for i in range(count):
                otpkit.send(target, ("seq", i))
            raise Stop("done_streaming")
        raise AssertionError(request)


class Trapper(Actor):
    """Traps exits and reports every message to its owner."""

    def init(self, owner) -> None:
        otpkit.trap_exit(True)
        self.owner = owner

    def handle_call(self, request, from_):
        if request[0] == "link":
            otpkit.link(request[1])
            return "ok"
        if request[0] == "spawn_link":
            return otpkit.spawn_link(Echo, "child")
        raise AssertionError(request)

    def handle_info(self, msg):
        otpkit.send(self.owner, ("trapper_got", msg))


class Linker(Actor):
    """Does not trap exits: dies with any abnormal exit of a linked process."""

    def handle_call(self, request, from_):
        if request[0] == "link":
            otpkit.link(request[1])
            return "ok"
        raise AssertionError(request)


class Timed(Actor):
    def init(self, owner) -> None:
        self.owner = owner

    def handle_call(self, request, from_):
        if request[0] == "after":
            return otpkit.send_after(request[1], ("tick", request[2]))
        if request[0] == "cancel":
            return otpkit.cancel_timer(request[1])
        raise AssertionError(request)

    def handle_info(self, msg):
        otpkit.send(self.owner, msg)


def receive_matching(node, predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    others = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no matching message; got {others!r}")
        msg = node.receive(remaining)
        if predicate(msg):
            return msg
        others.append(msg)


def test_call_cast_and_pid_identity(mailbox):
    pid = mailbox.spawn(Echo, "a")
    assert otpkit.call(pid, "hi") == ("a", "hi")
    assert otpkit.call(pid, "ospid") == pid.id
    assert repr(pid) == f"<test@127.0.0.1.{pid.id}>"
    assert pid.creation == mailbox.creation
    otpkit.cast(pid, 1)
    otpkit.send(pid, 2)
    assert otpkit.call(pid, "seen") == [("cast", 1), 2]
    otpkit.exit(pid, "kill")


def test_crash_reason_reaches_caller_and_monitor(mailbox):
    pid = mailbox.spawn(Echo)
    ref = otpkit.monitor(pid)
    with pytest.raises(Exit) as info:
        otpkit.call(pid, "crash")
    assert isinstance(info.value.reason, ValueError)
    assert str(info.value.reason) == "boom"
    down = receive_matching(mailbox, lambda m: isinstance(m, Down))
    assert down.ref == ref and down.pid == pid
    assert isinstance(down.reason, ValueError)
    wait_until(lambda: not alive(pid.id), what="crashed process gone")


def test_stop_with_reply(mailbox):
    pid = mailbox.spawn(Echo)
    ref = otpkit.monitor(pid)
    assert otpkit.call(pid, ("stop", "normal")) == "stopping"
    down = receive_matching(mailbox, lambda m: isinstance(m, Down))
    assert (down.ref, down.reason) == (ref, "normal")


def test_call_timeout_and_late_reply_dropped(mailbox):
    pid = mailbox.spawn(Echo)
    with pytest.raises(CallTimeout):
        otpkit.call(pid, ("sleep", 0.5), timeout=0.1)
    # the late reply must not be taken as the answer to the next call
    assert otpkit.call(pid, "next", timeout=5) == ("echo", "next")
    assert mailbox.flush() == []
    otpkit.exit(pid, "kill")


def test_call_from_inside_a_handler(mailbox):
    echo = mailbox.spawn(Echo, "inner")
    caller = mailbox.spawn(Caller)
    assert otpkit.call(caller, ("call", echo, "x", 5.0)) == ("ok", ("inner", "x"))
    # a late reply inside a handler is dropped too
    assert otpkit.call(caller, ("call", echo, ("sleep", 0.4), 0.1)) == ("timeout",)
    assert otpkit.call(caller, ("call", echo, "y", 5.0)) == ("ok", ("inner", "y"))
    # the callee crashes while the caller (an actor) waits: it learns why
    outcome = otpkit.call(caller, ("call", echo, "crash", 5.0))
    assert outcome[0] == "exit" and isinstance(outcome[1], ValueError)
    # and a dead pid is noproc at once
    assert otpkit.call(caller, ("call", echo, "z", 5.0)) == ("exit", "noproc")
    otpkit.exit(caller, "kill")


def test_mutual_calls_end_in_timeout_not_a_hang(mailbox):
    a = mailbox.spawn(Caller)
    b = mailbox.spawn(Caller)
    otpkit.call(a, ("set_peer", b))
    otpkit.call(b, ("set_peer", a))
    # a calls b from a handler; b's handler calls a back while a is blocked in its call
    started = time.monotonic()
    result = otpkit.call(a, ("call", b, ("call_peer", 0.5), 1.0), timeout=10)
    assert result == ("ok", ("timeout",))
    assert time.monotonic() - started < 5
    # both are still alive and answer
    assert otpkit.call(a, ("call_peer_back",)) == "answered"
    assert otpkit.call(b, ("call_peer_back",)) == "answered"
    otpkit.exit(a, "kill")
    otpkit.exit(b, "kill")


def test_messages_arrive_in_send_order_and_down_comes_last(mailbox):
    caller = mailbox.spawn(Caller)
    ref = otpkit.monitor(caller)
    count = 3000
    with pytest.raises(Exit):
        otpkit.call(caller, ("stream_then_die", mailbox.pid, count), timeout=30)
    got = []
    while True:
        msg = mailbox.receive(10)
        if isinstance(msg, Down):
            assert msg.ref == ref and msg.reason == "done_streaming"
            break
        got.append(msg)
    assert got == [("seq", i) for i in range(count)]


def test_down_exactly_once_and_noproc(mailbox):
    pid = mailbox.spawn(Echo)
    refs = [otpkit.monitor(pid) for _ in range(3)]
    otpkit.exit(pid, "kill")
    downs = [receive_matching(mailbox, lambda m: isinstance(m, Down)) for _ in range(3)]
    assert sorted((d.ref.n, d.reason) for d in downs) == sorted((r.n, "killed") for r in refs)
    assert mailbox.flush() == []
    # a dead pid gives noproc, once
    ref = otpkit.monitor(pid)
    assert mailbox.receive(5) == Down(ref, pid, "noproc")
    assert mailbox.flush() == []
    # demonitor with flush removes a queued Down
    other = mailbox.spawn(Echo)
    ref2 = otpkit.monitor(other)
    otpkit.exit(other, "kill")
    wait_until(lambda: not alive(other.id))
    time.sleep(0.05)  # let the Down reach this mailbox before flushing it
    assert otpkit.demonitor(ref2, flush=True) in (True, False)
    assert [m for m in mailbox.flush() if isinstance(m, Down)] == []


def test_kill_is_untrappable_and_reported_as_killed(mailbox):
    trapper = mailbox.spawn(Trapper, mailbox.pid)
    other = mailbox.spawn(Caller)
    ref = otpkit.monitor(trapper)
    # from a process that is not its parent, a trapped exit signal is just a message
    otpkit.call(other, ("exit", trapper, "shutdown"))
    msg = receive_matching(mailbox, lambda m: isinstance(m, tuple) and m[0] == "trapper_got")
    assert msg[1] == ExitSignal(other, "shutdown")
    assert alive(trapper.id)
    otpkit.call(other, ("exit", trapper, "kill"))
    down = receive_matching(mailbox, lambda m: isinstance(m, Down))
    assert (down.ref, down.reason) == (ref, "killed")
    otpkit.exit(other, "kill")


def test_parent_exit_signal_stops_a_trapping_actor_with_terminate(mailbox):
    trapper = mailbox.spawn(Trapper, mailbox.pid)
    ref = otpkit.monitor(trapper)
    otpkit.exit(trapper, "shutdown")  # this program is its parent
    down = receive_matching(mailbox, lambda m: isinstance(m, Down))
    assert (down.ref, down.reason) == (ref, "shutdown")


def test_busy_process_is_killed_at_once(mailbox):
    pid = mailbox.spawn(Echo)
    ref = otpkit.monitor(pid)
    with pytest.raises(CallTimeout):
        otpkit.call(pid, ("sleep", 30), timeout=0.2)
    otpkit.exit(pid, "kill")
    down = receive_matching(mailbox, lambda m: isinstance(m, Down), timeout=5)
    assert (down.ref, down.reason) == (ref, "killed")


def test_links_propagate_abnormal_exits_not_normal_ones(mailbox):
    # abnormal: the linked non-trapping process dies with the same reason
    linker = mailbox.spawn(Linker)
    victim = mailbox.spawn(Echo)
    otpkit.call(linker, ("link", victim))
    ref = otpkit.monitor(linker)
    with pytest.raises(Exit):
        otpkit.call(victim, "crash")
    down = receive_matching(mailbox, lambda m: isinstance(m, Down))
    assert down.ref == ref and isinstance(down.reason, ValueError)
    # normal: the linked process lives on
    linker = mailbox.spawn(Linker)
    victim = mailbox.spawn(Echo)
    otpkit.call(linker, ("link", victim))
    otpkit.call(victim, ("stop", "normal"))
    wait_until(lambda: not alive(victim.id))
    assert otpkit.call(linker, ("link", mailbox.spawn(Echo))) == "ok"
    # a trapping process gets the exit as a message
    trapper = mailbox.spawn(Trapper, mailbox.pid)
    victim = mailbox.spawn(Echo)
    otpkit.call(trapper, ("link", victim))
    os.kill(victim.id, signal.SIGKILL)
    msg = receive_matching(mailbox, lambda m: isinstance(m, tuple) and m[0] == "trapper_got")
    assert msg[1] == ExitSignal(victim, "killed")
    # linking a dead process: noproc
    otpkit.call(trapper, ("link", victim))
    msg = receive_matching(mailbox, lambda m: isinstance(m, tuple) and m[0] == "trapper_got")
    assert msg[1] == ExitSignal(victim, "noproc")
    otpkit.exit(trapper, "kill")


def test_spawn_link_to_this_program_delivers_exit_signal(mailbox):
    pid = mailbox.spawn_link(Echo)
    with pytest.raises(Exit):
        otpkit.call(pid, "crash")
    msg = receive_matching(mailbox, lambda m: isinstance(m, ExitSignal))
    assert msg.pid == pid and isinstance(msg.reason, ValueError)


def test_child_dies_with_its_linked_parent(mailbox):
    trapper = mailbox.spawn(Trapper, mailbox.pid)
    child = otpkit.call(trapper, ("spawn_link",))
    assert otpkit.call(child, "x") == ("child", "x")
    os.kill(trapper.id, signal.SIGKILL)
    wait_until(lambda: not alive(child.id), timeout=5, what="child died with its parent")


def test_local_names(mailbox):
    pid = mailbox.spawn(Echo, "named", name="echo_srv")
    assert otpkit.whereis("echo_srv") == pid
    assert otpkit.call("echo_srv", "q") == ("named", "q")
    with pytest.raises(otpkit.AlreadyStarted) as info:
        mailbox.spawn(Echo, name="echo_srv")
    assert info.value.pid == pid
    with pytest.raises(otpkit.BadName):
        otpkit.register("echo_srv", mailbox.spawn(Echo))
    otpkit.unregister("echo_srv")
    assert otpkit.whereis("echo_srv") is None
    otpkit.register("echo_srv2", pid)
    assert otpkit.whereis("echo_srv2") == pid
    otpkit.exit(pid, "kill")
    wait_until(lambda: otpkit.whereis("echo_srv2") is None, what="name freed on death")
    with pytest.raises(otpkit.BadName):
        otpkit.register("bad/name")


def test_timers(mailbox):
    timed = mailbox.spawn(Timed, mailbox.pid)
    otpkit.call(timed, ("after", 0.05, 1))
    cancelled = otpkit.call(timed, ("after", 0.2, 2))
    assert otpkit.call(timed, ("cancel", cancelled)) is True
    otpkit.call(timed, ("after", 0.3, 3))
    assert mailbox.receive(5) == ("tick", 1)
    assert mailbox.receive(5) == ("tick", 3)
    otpkit.exit(timed, "kill")


def test_init_failures(mailbox):
    class_path = f"{__name__}:Echo"
    pid = mailbox.spawn(class_path, "by-path")
    assert otpkit.call(pid, 1) == ("by-path", 1)
    with pytest.raises(otpkit.StartError) as info:
        mailbox.spawn(Echo, "too", "many", "args")
    assert isinstance(info.value.reason, TypeError)
    otpkit.exit(pid, "kill")


class Weird(Exception):
    """An exception that pickles but cannot be rebuilt from its args."""

    def __init__(self, a, b):
        super().__init__(f"{a}{b}")


class WeirdReplier(Actor):
    def handle_call(self, request, from_):
        if request == "weird":
            return Weird(1, 2)
        return request


def test_a_reply_that_does_not_unpickle_is_dropped_not_fatal(mailbox):
    pid = mailbox.spawn(WeirdReplier)
    with pytest.raises(CallTimeout):
        otpkit.call(pid, "weird", timeout=0.5)
    assert otpkit.call(pid, "fine") == "fine"
    assert mailbox.flush() == []
    otpkit.exit(pid, "kill")


class Parent(Actor):
    """Links a child; on "go" stops it and exits as soon as it hears the child is gone."""

    def init(self) -> None:
        self.child = otpkit.spawn_link(Echo, "child")

    def handle_call(self, request, from_):
        if request == "child":
            return self.child
        if request == "go":
            self.ref = otpkit.monitor(self.child)
            otpkit.exit(self.child, "shutdown")
            return "ok"
        raise AssertionError(request)

    def handle_info(self, msg):
        if isinstance(msg, Down) and msg.ref == self.ref:
            raise Stop("normal")


def test_every_monitor_sees_the_reason_even_when_the_parent_exits_at_once(mailbox):
    """A dying process tells its parent last: the parent may exit at once, and its
    children die with it (PR_SET_PDEATHSIG)."""
    reasons = []
    for _ in range(30):
        parent = mailbox.spawn(Parent)
        child = otpkit.call(parent, "child")
        ref = otpkit.monitor(child)
        otpkit.call(parent, "go")
        down = receive_matching(mailbox, lambda m, ref=ref: isinstance(m, Down) and m.ref == ref)
        reasons.append(down.reason)
    assert reasons == ["shutdown"] * 30


class Answer(Actor):
    """Answers every call with ``value`` after ``delay`` seconds."""

    def init(self, value: object, delay: float = 0.0) -> None:
        self.value, self.delay = value, delay

    def handle_call(self, request, from_):
        time.sleep(self.delay)
        return self.value


def test_multi_call_ends_early_only_on_answers_that_count(mailbox):
    """``enough`` answers that ``counts`` end the round: a quick answer that is truthy
    but does not count (a replica whose store failed) must not end it before the slower
    one that does (the scheduler's stall of issue 12, finding 2)."""
    failed = mailbox.spawn(Answer, {"ok": False, "failed": "disk is full"})
    slow = mailbox.spawn(Answer, {"ok": True}, 0.3)
    never = mailbox.spawn(Answer, {"ok": True}, 30.0)
    got = otpkit.multi_call(
        [failed, slow, never], "write", 10.0, enough=1, counts=lambda v: v.get("ok") is True
    )
    assert got == [
        ("ok", {"ok": False, "failed": "disk is full"}),
        ("ok", {"ok": True}),
        ("timeout", None),
    ]
    # without counts, any truthy answer counts
    got = otpkit.multi_call([failed, never], "write", 10.0, enough=1)
    assert got == [("ok", {"ok": False, "failed": "disk is full"}), ("timeout", None)]
    for pid in (failed, slow, never):
        otpkit.exit(pid, "kill")
