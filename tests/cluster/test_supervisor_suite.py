"""OTP's ``supervisor_SUITE`` (lib/stdlib/test/supervisor_SUITE.erl), ported to otpkit.

Each test is named after the OTP case whose behaviour it checks. Every actor is a real OS
process: kills are ``SIGKILL`` of the child's OS pid, exits are real exit signals or a
child stopping itself, and what is asserted is what a user sees - which pids changed,
``which_children`` / ``count_children``, exit reasons through monitors, the order in
which children start and stop (they append to a file in ``init`` and ``terminate``).

OTP's helpers, as used here:

* ``terminate(Pid, normal)`` sends ``"stop"`` (exit ``normal``), ``abnormal`` sends
  ``"die"`` (exit ``"died"``), ``kill`` is a SIGKILL (exit ``"killed"``), ``shutdown`` is
  an exit signal. :meth:`Box.stop` does them and waits for the ``Down``.
* ``get_child_counts`` is :func:`counts`: ``(specs, active, supervisors, workers)``.
* Where OTP sleeps and then checks that nothing happened, these tests wait until the
  supervisor's state shows that it handled the exit (the decision to restart or shut
  down is made in the same step), then check.

Differences that come from the Python API, not from the semantics: child specs are
:class:`~otpkit.ChildSpec` values or mappings, the errors of invalid specs and flags are
:class:`~otpkit.InvalidChildSpec` / :class:`~otpkit.InvalidSupervisorFlags` naming the
field (OTP: ``{start_spec, _}``, ``{supervisor_data, _}``), a supervisor's ``setup``
plays ``init/1``, and there is no hibernation, ``which_child/2`` or code change.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import otpkit
from otpkit import (
    IGNORE,
    Actor,
    AlreadyStarted,
    ChildInfo,
    ChildSpec,
    Down,
    DynamicSupervisor,
    ExitSignal,
    InvalidChildSpec,
    InvalidSupervisorFlags,
    Pid,
    StartError,
    Stop,
    Supervisor,
    SupervisorError,
    SupFlags,
)
from otpkit.actors import process_start_ticks
from otpkit.actors._host import ORPHAN_GRACE
from otpkit.supervision import check_specs, child_spec
from tests.harness.polling import wait_until
from tests.harness.processes import alive

pytestmark = pytest.mark.cluster

# ---------------------------------------------------------------------------- actors
# Module level: the node's processes unpickle them by module name.


class Worker(Actor):
    """OTP's ``supervisor_1`` child.

    ``init("ignore")`` ignores the start. Messages: ``"stop"`` ends it ``normal``,
    ``"die"`` ends it ``"died"``, ``("exit", reason)`` ends it with ``reason``,
    ``("sleep", seconds, to)`` tells ``to`` it is sleeping and then blocks.
    """

    def init(self, *args: Any) -> Any:
        if args[:1] == ("ignore",):
            return IGNORE
        return None

    def handle_info(self, msg: Any) -> None:
        if msg == "stop":
            raise Stop("normal")
        if msg == "die":
            raise Stop("died")
        if isinstance(msg, tuple) and msg[0] == "exit":
            raise Stop(msg[1])
        if isinstance(msg, tuple) and msg[0] == "sleep":
            otpkit.send(msg[2], ("sleeping", self.pid))
            time.sleep(msg[1])
            return
        super().handle_info(msg)


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


class LogWorker(Worker):
    """A worker that writes ``start <name>`` in init and ``stop <name>`` in terminate
    (it traps exits, so a supervisor's shutdown runs terminate)."""

    def init(self, path: str, name: str) -> Any:
        otpkit.trap_exit(True)
        self.path, self.name = path, name
        _append(path, f"start {name}")
        return None

    def terminate(self, reason: Any) -> None:
        _append(self.path, f"stop {self.name}")


class ReasonLogWorker(Worker):
    """Writes ``start <name>`` in init and ``stop <name> <reason>`` in terminate; traps
    exits unless told not to (then an exit signal ends it without terminate)."""

    def init(self, path: str, name: str, trap: bool = True) -> Any:
        otpkit.trap_exit(trap)
        self.path, self.name = path, name
        _append(path, f"start {name}")
        return None

    def terminate(self, reason: Any) -> None:
        _append(self.path, f"stop {self.name} {reason}")


class Refuser(Actor):
    """A child whose every start fails."""

    def init(self, *args: Any) -> Any:
        raise RuntimeError("refused")


class FailOnRestart(Worker):
    """OTP's ``supervisor_1:start_child(error)``: the first start succeeds (it leaves a
    marker file), every later start fails. Without a marker it is a plain worker."""

    def init(self, marker: str | None = None) -> Any:
        if marker is not None:
            if os.path.exists(marker):
                raise RuntimeError("restart refused")
            Path(marker).touch()
        return None


class Gate(Worker):
    """OTP's ``supervisor_deadlock``: its start fails, slowly, while the flag file
    exists; ``("exit", "error")`` makes it exit ``"error"``."""

    def init(self, flag: str, delay: float = 0.2) -> Any:
        if os.path.exists(flag):
            time.sleep(delay)
            raise RuntimeError("gate closed")
        return None


class FailNextStarts(LogWorker):
    """A logging worker whose next N starts fail, N read from (and decremented in) a
    file: lets a test fail exactly one restart."""

    def init(self, path: str, name: str, budget: str) -> Any:  # type: ignore[override]
        left = int(Path(budget).read_text() or 0) if os.path.exists(budget) else 0
        if left > 0:
            Path(budget).write_text(str(left - 1))
            _append(path, f"refuse {name}")
            raise RuntimeError("refused once")
        return super().init(path, name)


class SlowStop(Worker):
    """Takes ``delay`` seconds to stop when its supervisor shuts it down (OTP's
    ``supervisor_2``)."""

    def init(self, delay: float) -> Any:
        otpkit.trap_exit(True)
        self.delay = delay
        return None

    def terminate(self, reason: Any) -> None:
        time.sleep(self.delay)


class InitSup(Supervisor):
    """The suite's own callback module: ``setup(result)`` returns ``result``
    (``"ignore"`` ignores, ``"fail"`` raises)."""

    def setup(self, result: Any) -> Any:  # type: ignore[override]
        if result == "ignore":
            return IGNORE
        if result == "fail":
            raise RuntimeError("fail")
        return result


# Start functions: they run in the supervisor's process.


def start_returning(value: Any) -> Any:
    return value


def start_with_info(info: Any) -> Any:
    return ("ok", otpkit.spawn_link(Worker), info)


def start_registered(name: str) -> Any:
    return otpkit.spawn_link(Worker, name=name)


def start_or_adopt(name: str) -> Any:
    try:
        return otpkit.spawn_link(Worker, name=name)
    except AlreadyStarted as exc:
        return ("already_started", exc.pid)


WORKER_MODS = ChildSpec("x", Worker).modules

# ---------------------------------------------------------------------------- helpers


def running(pid: Pid) -> bool:
    """The very process ``pid`` names is alive (start time checked, zombies excluded)."""
    return process_start_ticks(pid.id) == pid.serial and alive(pid.id)


def gone(pid: Pid) -> None:
    """Wait for the OS process to be gone: its ``Down`` (its last word) can come a
    moment before the process has finished exiting."""
    wait_until(lambda: not running(pid), timeout=5, what=f"{pid!r} gone")


def counts(sup: Pid) -> tuple[int, int, int, int]:
    """OTP's ``get_child_counts``: ``(specs, active, supervisors, workers)``."""
    c = otpkit.count_children(sup)
    return (c["specs"], c["active"], c["supervisors"], c["workers"])


def pid_of(sup: Pid, cid: Any) -> Any:
    for row in otpkit.which_children(sup):
        if row.id == cid:
            return row.pid
    raise AssertionError(f"no child {cid!r} in {otpkit.which_children(sup)!r}")


def pids(sup: Pid) -> list[Any]:
    return [row.pid for row in otpkit.which_children(sup)]


def new_pid(sup: Pid, cid: Any, old: Pid) -> Pid:
    """Wait until child ``cid`` runs with a pid other than ``old``; return it."""

    def check() -> Pid | None:
        p = pid_of(sup, cid)
        return p if isinstance(p, Pid) and p != old else None

    result: Pid = wait_until(check, what=f"child {cid!r} restarted")
    return result


def all_new(sup: Pid, old: set[Pid], n: int) -> list[Pid]:
    """Wait until the supervisor has ``n`` running children, none of them in ``old``."""

    def check() -> list[Pid] | None:
        ps = pids(sup)
        ok = len(ps) == n and all(isinstance(p, Pid) and p not in old for p in ps)
        return ps if ok else None

    result: list[Pid] = wait_until(check, what=f"{n} new children")
    return result


def log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def spec(cid: Any, start: Any = Worker, *args: Any, **kw: Any) -> ChildSpec:
    kw.setdefault("shutdown", 1)
    return ChildSpec(cid, start, args, **kw)


class Box:
    """This test's view of the program's mailbox, and the processes it started."""

    def __init__(self, node: otpkit.Node) -> None:
        self.node = node
        self.saved: list[Any] = []
        self.started: list[Pid] = []

    # -- processes

    def sup(self, children: Any = (), cls: Any = Supervisor, **kwargs: Any) -> Pid:
        if cls is Supervisor:
            kwargs["children"] = list(children)
            kwargs.setdefault("intensity", 2)
            kwargs.setdefault("period", 3600)
        pid: Pid = otpkit.spawn(cls, **kwargs)
        assert isinstance(pid, Pid)
        self.started.append(pid)
        return pid

    def init_sup(self, result: Any) -> Pid:
        pid: Pid = otpkit.spawn(InitSup, result)
        self.started.append(pid)
        return pid

    def spawn(self, cls: Any, *args: Any, **kwargs: Any) -> Pid:
        pid: Pid = otpkit.spawn(cls, *args, **kwargs)
        self.started.append(pid)
        return pid

    def cleanup(self) -> None:
        for pid in self.started:
            otpkit.exit(pid, "kill")
        wait_until(lambda: not any(running(p) for p in self.started), what="cleanup")

    # -- messages

    def expect(self, pred: Callable[[Any], bool], timeout: float = 10.0) -> Any:
        """Selective receive: the first message for which ``pred`` holds."""
        for i, msg in enumerate(self.saved):
            if pred(msg):
                return self.saved.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no expected message within {timeout}s: {self.saved!r}")
            try:
                msg = self.node.receive(remaining)
            except TimeoutError:
                continue
            if pred(msg):
                return msg
            self.saved.append(msg)

    def down(self, ref: Any, timeout: float = 10.0) -> Any:
        """The exit reason in the ``Down`` of monitor ``ref``."""
        msg = self.expect(lambda m: isinstance(m, Down) and m.ref == ref, timeout)
        return msg.reason

    def downs(self, refs: dict[Any, Pid], timeout: float = 10.0) -> dict[Pid, Any]:
        return {pid: self.down(ref, timeout) for ref, pid in refs.items()}

    def watch(self, *ps: Pid) -> dict[Any, Pid]:
        return {otpkit.monitor(p): p for p in ps}

    def stop(self, pid: Pid, how: Any) -> None:
        """OTP's ``terminate(Pid, How)``: end ``pid`` and wait for its ``Down``."""
        ref = otpkit.monitor(pid)
        if how == "normal":
            otpkit.send(pid, "stop")
            expected: Any = "normal"
        elif how == "abnormal":
            otpkit.send(pid, "die")
            expected = "died"
        elif how == "kill":
            os.kill(pid.id, signal.SIGKILL)
            expected = "killed"
        else:
            otpkit.exit(pid, how)
            expected = how
        assert self.down(ref) == expected

    def shutdown(self, sup: Pid, timeout: float = 10.0) -> None:
        """Stop a supervisor as its parent does (exit signal ``shutdown``)."""
        ref = otpkit.monitor(sup)
        otpkit.exit(sup, "shutdown")
        assert self.down(ref, timeout) == "shutdown"


@pytest.fixture
def box(mailbox: otpkit.Node) -> Iterator[Box]:
    b = Box(mailbox)
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def files(tmp_path: Path) -> Callable[[str], str]:
    return lambda name: str(tmp_path / name)


# ============================================================================ sup_start


def test_sup_start_normal(box: Box) -> None:
    sup = box.sup(strategy="one_for_one", intensity=2, period=3600)
    assert otpkit.which_children(sup) == []
    box.shutdown(sup)
    gone(sup)


def test_sup_start_ignore_init(box: Box) -> None:
    assert otpkit.spawn(InitSup, "ignore") is None
    assert otpkit.spawn_link(InitSup, "ignore") is None


@pytest.mark.parametrize("result", ["ignore", "invalid", "fail"])
def test_sup_start_failure_sends_caller_no_exit(box: Box, result: str) -> None:
    with contextlib.suppress(StartError):
        otpkit.spawn_link(InitSup, result)
    with pytest.raises(AssertionError):
        box.expect(lambda m: isinstance(m, ExitSignal), timeout=0.5)


def test_sup_start_ignore_child(box: Box) -> None:
    sup = box.sup()
    assert otpkit.start_child(sup, spec("child1", Worker, "ignore")) is None
    cpid2 = otpkit.start_child(sup, spec("child2"))
    assert isinstance(cpid2, Pid)
    assert otpkit.which_children(sup) == [
        ChildInfo("child2", cpid2, "worker", WORKER_MODS),
        ChildInfo("child1", None, "worker", WORKER_MODS),
    ]
    assert counts(sup) == (2, 1, 0, 2)


def test_sup_start_ignore_temporary_child(box: Box) -> None:
    sup = box.sup(
        [
            spec("child1", Worker, "ignore", restart="temporary"),
            spec("child2", restart="temporary"),
        ]
    )
    [row] = otpkit.which_children(sup)
    assert row.id == "child2" and isinstance(row.pid, Pid) and running(row.pid)
    assert counts(sup) == (1, 1, 0, 1)


def test_sup_start_ignore_temporary_child_start_child(box: Box) -> None:
    sup = box.sup()
    assert otpkit.start_child(sup, spec("child1", Worker, "ignore", restart="temporary")) is None
    cpid2 = otpkit.start_child(sup, spec("child2", restart="temporary"))
    assert otpkit.which_children(sup) == [ChildInfo("child2", cpid2, "worker", WORKER_MODS)]
    assert counts(sup) == (1, 1, 0, 1)


@pytest.mark.parametrize("restart", ["temporary", "permanent"])
def test_sup_start_ignore_child_start_child_simple(box: Box, restart: str) -> None:
    """sup_start_ignore_{temporary,permanent}_child_start_child_simple"""
    sup = box.sup([spec("child1", restart=restart)], strategy="simple_one_for_one")
    assert otpkit.start_child(sup, ("ignore",)) is None
    cpid2 = otpkit.start_child(sup, ())
    assert otpkit.which_children(sup) == [ChildInfo(None, cpid2, "worker", WORKER_MODS)]
    assert counts(sup) == (1, 1, 0, 1)
    ref = otpkit.monitor(cpid2)
    box.shutdown(sup)
    assert box.down(ref) == "shutdown"


def test_sup_start_error_return(box: Box) -> None:
    with pytest.raises(StartError) as info:
        box.init_sup("invalid")
    assert info.value.reason == ("bad_return", ("setup", "invalid"))


def test_sup_start_fail(box: Box) -> None:
    with pytest.raises(StartError) as info:
        box.init_sup("fail")
    reason = info.value.reason
    assert isinstance(reason, RuntimeError) and reason.args == ("fail",)


def test_sup_start_restart_child_returns_error(box: Box, files: Any) -> None:
    sup = box.sup([spec("child1", FailOnRestart, files("marker"))])
    otpkit.terminate_child(sup, "child1")
    with pytest.raises(SupervisorError) as info:
        otpkit.restart_child(sup, "child1")
    reason = info.value.reason
    assert isinstance(reason, RuntimeError) and reason.args == ("restart refused",)
    assert otpkit.which_children(sup) == [
        ChildInfo("child1", None, "worker", [f"{FailOnRestart.__module__}:FailOnRestart"])
    ]


def test_sup_start_child_returns_error(box: Box) -> None:
    sup = box.sup()
    child1 = spec("child1", start_returning, ("error", "reason"))
    child2 = spec("child2", start_returning, "error_reason")
    with pytest.raises(SupervisorError) as info:
        otpkit.start_child(sup, child1)
    assert info.value.reason == ("reason", child_spec(child1))
    with pytest.raises(SupervisorError) as info:
        otpkit.start_child(sup, child2)
    assert info.value.reason == ("error_reason", child_spec(child2))
    assert otpkit.which_children(sup) == []


def test_sup_start_child_returns_error_simple(box: Box) -> None:
    sup = box.sup([spec("child1", start_returning)], strategy="simple_one_for_one")
    with pytest.raises(SupervisorError) as info:
        otpkit.start_child(sup, (("error", "reason"),))
    assert info.value.reason == "reason"
    with pytest.raises(SupervisorError) as info:
        otpkit.start_child(sup, ("error_reason",))
    assert info.value.reason == "error_reason"
    assert otpkit.which_children(sup) == []


def test_faulty_child_fails_supervisor_start(box: Box, tmp_path: Path) -> None:
    """faulty_application_shutdown: a child that fails in the supervisor's start stops
    the ones already started (reverse order) and fails the start."""
    log = tmp_path / "log"
    with pytest.raises(StartError) as info:
        box.sup(
            [
                spec("a", LogWorker, str(log), "a"),
                spec("b", LogWorker, str(log), "b"),
                spec("c", Refuser),
                spec("d", LogWorker, str(log), "d"),
            ]
        )
    reason = info.value.reason
    assert reason[:1] == ("shutdown",)
    tag, cid, why = reason[1]
    assert (tag, cid) == ("failed_to_start_child", "c")
    assert isinstance(why, RuntimeError) and why.args == ("refused",)
    assert log_lines(log) == ["start a", "start b", "stop b", "stop a"]


# ======================================================================== sup_start_map


def test_sup_start_map(box: Box) -> None:
    sup = box.sup(
        [
            {"id": "child1", "start": Worker},
            {"id": "child2", "start": Worker, "shutdown": "brutal_kill"},
            {"id": "child3", "start": Worker, "type": "supervisor"},
        ]
    )
    s1 = otpkit.get_childspec(sup, "child1")
    assert (s1.id, s1.start, s1.args, s1.restart, s1.shutdown, s1.type, s1.significant) == (
        "child1",
        Worker,
        (),
        "permanent",
        5.0,
        "worker",
        False,
    )
    assert s1.modules == WORKER_MODS
    s2 = otpkit.get_childspec(sup, "child2")
    assert (s2.restart, s2.shutdown, s2.type) == ("permanent", "brutal_kill", "worker")
    s3 = otpkit.get_childspec(sup, "child3")
    assert (s3.restart, s3.shutdown, s3.type) == ("permanent", "infinity", "supervisor")
    with pytest.raises(SupervisorError) as info:
        otpkit.get_childspec(sup, "child4")
    assert info.value.reason == "not_found"
    box.shutdown(sup)


def test_sup_start_map_simple(box: Box) -> None:
    sup = box.sup(
        [{"id": None, "start": Worker, "restart": "temporary"}], strategy="simple_one_for_one"
    )
    children = [otpkit.start_child(sup, ()) for _ in range(3)]
    full = ChildSpec(None, Worker, (), {}, "temporary", 5.0, "worker", False)
    for child in children:
        assert otpkit.get_childspec(sup, child) == full
    with pytest.raises(SupervisorError) as info:
        otpkit.get_childspec(sup, box.node.pid)
    assert info.value.reason == "not_found"
    box.shutdown(sup)


def test_sup_start_map_faulty_specs(box: Box) -> None:
    for children, field in [
        ([{"start": Worker}], "id"),
        ([{"id": "child2"}], "start"),
        (["child4"], "spec"),
    ]:
        with pytest.raises(StartError) as info:
            box.sup(children)
        reason = info.value.reason
        assert isinstance(reason, InvalidChildSpec), reason
        assert reason.field == field
    # unknown keys are ignored
    sup = box.sup([{"id": "child3", "start": Worker, "silly_flag": True}])
    assert [r.id for r in otpkit.which_children(sup)] == ["child3"]
    box.shutdown(sup)


# ============================================================================= sup_stop


def test_sup_stop_infinity(box: Box) -> None:
    sup = box.sup()
    cpid1 = otpkit.start_child(sup, spec("child1", shutdown="infinity", type="supervisor"))
    cpid2 = otpkit.start_child(sup, spec("child2", shutdown="infinity", type="worker"))
    refs = box.watch(cpid1, cpid2)
    box.shutdown(sup)
    assert box.downs(refs) == {cpid1: "shutdown", cpid2: "shutdown"}


def _sleeping(box: Box, pid: Pid) -> None:
    otpkit.send(pid, ("sleep", 60, box.node.pid))
    box.expect(lambda m: m == ("sleeping", pid))


def test_sup_stop_timeout(box: Box) -> None:
    sup = box.sup()
    cpid1 = otpkit.start_child(sup, spec("child1", shutdown=0.5))
    cpid2 = otpkit.start_child(sup, spec("child2", shutdown=0.5))
    refs = box.watch(cpid1, cpid2)
    _sleeping(box, cpid2)  # it cannot handle the shutdown signal
    t0 = time.monotonic()
    box.shutdown(sup)
    assert time.monotonic() - t0 >= 0.5
    assert box.downs(refs) == {cpid1: "shutdown", cpid2: "killed"}


def test_sup_stop_timeout_dynamic(box: Box) -> None:
    sup = box.sup([spec("child", restart="temporary", shutdown=0.5)], strategy="simple_one_for_one")
    cpid1 = otpkit.start_child(sup, ())
    cpid2 = otpkit.start_child(sup, ())
    refs = box.watch(cpid1, cpid2)
    _sleeping(box, cpid2)
    box.shutdown(sup)
    assert box.downs(refs) == {cpid1: "shutdown", cpid2: "killed"}


def test_sup_stop_brutal_kill(box: Box) -> None:
    sup = box.sup()
    cpid1 = otpkit.start_child(sup, spec("child1", shutdown=1))
    cpid2 = otpkit.start_child(sup, spec("child2", shutdown="brutal_kill"))
    refs = box.watch(cpid1, cpid2)
    box.shutdown(sup)
    assert box.downs(refs) == {cpid1: "shutdown", cpid2: "killed"}


def test_sup_stop_brutal_kill_dynamic(box: Box) -> None:
    sup = box.sup(
        [spec("child", restart="temporary", shutdown="brutal_kill")], strategy="simple_one_for_one"
    )
    cpids = [otpkit.start_child(sup, ()) for _ in range(10)]
    refs = box.watch(*cpids)
    box.shutdown(sup)
    assert box.downs(refs) == {p: "killed" for p in cpids}


# ========================================================================= API and specs


def test_child_adm(box: Box) -> None:
    child = spec("child1")
    sup = box.sup([child])
    [(cid, cpid, _, _)] = otpkit.which_children(sup)
    assert cid == "child1" and isinstance(cpid, Pid)
    assert counts(sup) == (1, 1, 0, 1)

    def refused(reason: Any, fn: Callable[..., Any], *args: Any) -> None:
        with pytest.raises(SupervisorError) as info:
            fn(*args)
        assert info.value.reason == reason

    def noproc(fn: Callable[..., Any], *args: Any) -> None:
        with pytest.raises(otpkit.Exit) as info:
            fn("no_such_supervisor", *args)
        assert info.value.reason == "noproc"

    # start of an already running child
    refused(("already_started", cpid), otpkit.start_child, sup, child)

    # termination
    refused("not_found", otpkit.terminate_child, sup, "hej")
    noproc(otpkit.terminate_child, "child1")
    ref = otpkit.monitor(cpid)
    assert otpkit.terminate_child(sup, "child1") is None
    assert box.down(ref) == "shutdown"
    assert otpkit.which_children(sup) == [ChildInfo("child1", None, "worker", WORKER_MODS)]
    assert counts(sup) == (1, 0, 0, 1)
    otpkit.terminate_child(sup, "child1")  # idempotent

    # start of a child that exists but does not run
    refused("already_present", otpkit.start_child, sup, child)

    # restart
    cpid2 = otpkit.restart_child(sup, "child1")
    assert isinstance(cpid2, Pid) and cpid2 != cpid
    assert otpkit.which_children(sup) == [ChildInfo("child1", cpid2, "worker", WORKER_MODS)]
    assert counts(sup) == (1, 1, 0, 1)
    refused("running", otpkit.restart_child, sup, "child1")
    refused("not_found", otpkit.restart_child, sup, "child2")

    # deletion
    refused("running", otpkit.delete_child, sup, "child1")
    refused("not_found", otpkit.delete_child, sup, "hej")
    noproc(otpkit.delete_child, "child1")
    otpkit.terminate_child(sup, "child1")
    assert otpkit.delete_child(sup, "child1") is None
    refused("not_found", otpkit.restart_child, sup, "child1")
    assert otpkit.which_children(sup) == []
    assert counts(sup) == (0, 0, 0, 0)

    # start
    noproc(otpkit.start_child, child)
    cpid3 = otpkit.start_child(sup, child)
    assert otpkit.which_children(sup) == [ChildInfo("child1", cpid3, "worker", WORKER_MODS)]
    assert counts(sup) == (1, 1, 0, 1)

    # a pid is not an id unless simple_one_for_one
    refused("not_found", otpkit.terminate_child, sup, cpid3)
    assert otpkit.which_children(sup) == [ChildInfo("child1", cpid3, "worker", WORKER_MODS)]
    assert running(cpid3)

    noproc(otpkit.which_children)
    noproc(otpkit.count_children)


def test_child_adm_simple(box: Box) -> None:
    sup = box.sup([spec("child")], strategy="simple_one_for_one")
    assert otpkit.which_children(sup) == []
    assert counts(sup) == (1, 0, 0, 0)

    with pytest.raises(otpkit.Exit) as exit_info:
        otpkit.start_child("no_such_supervisor", ())
    assert exit_info.value.reason == "noproc"
    cpid1 = otpkit.start_child(sup, ())
    assert otpkit.which_children(sup) == [ChildInfo(None, cpid1, "worker", WORKER_MODS)]
    assert counts(sup) == (1, 1, 0, 1)
    cpid2 = otpkit.start_child(sup, ())
    rows = otpkit.which_children(sup)
    assert sorted(rows, key=repr) == sorted(
        [
            ChildInfo(None, cpid1, "worker", WORKER_MODS),
            ChildInfo(None, cpid2, "worker", WORKER_MODS),
        ],
        key=repr,
    )
    assert counts(sup) == (1, 2, 0, 2)

    # termination: by pid only
    with pytest.raises(SupervisorError) as info:
        otpkit.terminate_child(sup, "child1")
    assert info.value.reason == "simple_one_for_one"
    assert counts(sup) == (1, 2, 0, 2)
    otpkit.terminate_child(sup, cpid1)
    assert len(otpkit.which_children(sup)) == 1
    assert counts(sup) == (1, 1, 0, 1)
    gone(cpid1)
    otpkit.terminate_child(sup, cpid1)  # a dead pid is fine
    assert counts(sup) == (1, 1, 0, 1)
    stranger = box.spawn(Worker)
    with pytest.raises(SupervisorError) as info:
        otpkit.terminate_child(sup, stranger)
    assert info.value.reason == "not_found"
    assert running(stranger)

    for fn in (otpkit.restart_child, otpkit.delete_child):
        with pytest.raises(SupervisorError) as info:
            fn(sup, "child1")
        assert info.value.reason == "simple_one_for_one"


def test_extra_return(box: Box) -> None:
    child = spec("child1", start_with_info, "extra_return")
    sup = box.sup([child])
    mods = child.modules
    [(_, cpid, _, _)] = otpkit.which_children(sup)
    for fn in (otpkit.terminate_child, otpkit.delete_child, otpkit.restart_child):
        with pytest.raises(SupervisorError) as info:
            fn(sup, "hej")
        assert info.value.reason == "not_found"
    for fn in (otpkit.delete_child, otpkit.restart_child):
        with pytest.raises(SupervisorError) as info:
            fn(sup, "child1")
        assert info.value.reason == "running"
    assert otpkit.which_children(sup) == [ChildInfo("child1", cpid, "worker", mods)]
    assert counts(sup) == (1, 1, 0, 1)

    ref = otpkit.monitor(cpid)
    otpkit.terminate_child(sup, "child1")
    assert box.down(ref) == "shutdown"
    assert otpkit.which_children(sup) == [ChildInfo("child1", None, "worker", mods)]
    assert counts(sup) == (1, 0, 0, 1)

    cpid2, info2 = otpkit.restart_child(sup, "child1")
    assert info2 == "extra_return" and isinstance(cpid2, Pid)
    assert otpkit.which_children(sup) == [ChildInfo("child1", cpid2, "worker", mods)]
    assert counts(sup) == (1, 1, 0, 1)

    otpkit.terminate_child(sup, "child1")
    otpkit.terminate_child(sup, "child1")
    otpkit.delete_child(sup, "child1")
    with pytest.raises(SupervisorError) as info:
        otpkit.restart_child(sup, "child1")
    assert info.value.reason == "not_found"
    assert otpkit.which_children(sup) == []
    assert counts(sup) == (0, 0, 0, 0)

    cpid3, info3 = otpkit.start_child(sup, child)
    assert info3 == "extra_return"
    assert otpkit.which_children(sup) == [ChildInfo("child1", cpid3, "worker", mods)]
    assert counts(sup) == (1, 1, 0, 1)

    # and it is restarted automatically
    box.stop(cpid3, "abnormal")
    cpid4 = new_pid(sup, "child1", cpid3)
    assert running(cpid4)
    assert counts(sup) == (1, 1, 0, 1)


def test_child_specs(box: Box) -> None:
    sup = box.sup()
    with pytest.raises(SupervisorError) as info:
        otpkit.start_child(sup, "hej")
    assert isinstance(info.value.reason, InvalidChildSpec)

    bad = {
        "start": ChildSpec("child", "mfa"),
        "restart": ChildSpec("child", Worker, restart="prmanent"),
        "shutdown": ChildSpec("child", Worker, shutdown=-10),
        "type": ChildSpec("child", Worker, type="wrker"),
        "args": ChildSpec("child", Worker, args="dy"),  # type: ignore[arg-type]
        "significant": ChildSpec("child", Worker, restart="transient", significant="maybe"),  # type: ignore[arg-type]
    }
    for field, b in bad.items():
        with pytest.raises(SupervisorError) as info:
            otpkit.start_child(sup, b)
        reason = info.value.reason
        assert isinstance(reason, InvalidChildSpec) and reason.field == field, reason
        assert reason.value == getattr(b, field)
        with pytest.raises(InvalidChildSpec) as spec_info:
            check_specs(SupFlags(), [b])
        assert spec_info.value.field == field
    assert otpkit.which_children(sup) == []

    with pytest.raises(InvalidChildSpec) as spec_info:
        check_specs(SupFlags(), bad["start"])  # type: ignore[arg-type]  # not a list
    assert spec_info.value.field == "children"

    for restart in ("permanent", "transient", "temporary"):
        for shutdown in (0, 1, "infinity", "brutal_kill"):
            for ctype in ("supervisor", "worker"):
                check_specs(
                    SupFlags(),
                    [ChildSpec("child", Worker, restart=restart, shutdown=shutdown, type=ctype)],
                )

    c1 = ChildSpec("child", Worker, shutdown="infinity", type="supervisor")
    c2 = ChildSpec("child", Worker, shutdown=1, type="supervisor")
    with pytest.raises(InvalidChildSpec) as spec_info:
        check_specs(SupFlags(), [c1, c2])
    assert (spec_info.value.field, spec_info.value.value) == ("id", "child")
    box.shutdown(sup)

    # faulty specs in a supervisor's start
    for children, strategy, field in [
        ([bad["start"]], "one_for_one", "start"),
        ([bad["restart"]], "simple_one_for_one", "restart"),
        ([], "simple_one_for_one", "children"),  # exactly one spec
        ([ChildSpec("a", Worker), ChildSpec("b", Worker)], "simple_one_for_one", "children"),
    ]:
        with pytest.raises(StartError) as start_info:
            box.sup(children, strategy=strategy)
        reason = start_info.value.reason
        assert isinstance(reason, InvalidChildSpec) and reason.field == field, reason

    # significant: never with permanent, never under auto_shutdown="never"
    sig = ChildSpec("child", Worker, restart="transient", significant=True)
    with pytest.raises(InvalidChildSpec) as spec_info:
        check_specs(
            SupFlags(auto_shutdown="any_significant"),
            [ChildSpec("child", Worker, significant=True)],
        )
    assert spec_info.value.field == "significant"
    check_specs(SupFlags(auto_shutdown="any_significant"), [sig])
    with pytest.raises(StartError) as start_info:
        box.sup([sig], auto_shutdown="never")
    reason = start_info.value.reason
    assert isinstance(reason, InvalidChildSpec) and reason.field == "significant"
    sup2 = box.sup(auto_shutdown="never")
    with pytest.raises(SupervisorError) as info:
        otpkit.start_child(sup2, sig)
    reason = info.value.reason
    assert isinstance(reason, InvalidChildSpec) and reason.field == "significant"


def test_sup_flags(box: Box) -> None:
    for result, field in [
        (({"strategy": "none_for_one"}, []), "strategy"),
        ((SupFlags("none_for_one", 2, 3600), []), "strategy"),
        (({"intensity": "infinity"}, []), "intensity"),
        (({"intensity": -1}, []), "intensity"),
        (({"period": 0}, []), "period"),
        (({"period": "infinity"}, []), "period"),
        (({"auto_shutdown": "sometimes"}, []), "auto_shutdown"),
        ((("one_for_one", 2), []), "flags"),  # neither SupFlags nor a mapping
        (
            (
                {"strategy": "simple_one_for_one", "auto_shutdown": "any_significant"},
                [ChildSpec("c", Worker)],
            ),
            "auto_shutdown",
        ),
        (
            (
                {"strategy": "simple_one_for_one", "auto_shutdown": "all_significant"},
                [ChildSpec("c", Worker)],
            ),
            "auto_shutdown",
        ),
    ]:
        with pytest.raises(StartError) as info:
            box.init_sup(result)
        reason = info.value.reason
        assert isinstance(reason, InvalidSupervisorFlags), (result, reason)
        assert reason.field == field, (result, reason)
    # unknown flags are ignored
    sup = box.init_sup(({"silly_flag": True}, []))
    box.shutdown(sup)
    sup = box.init_sup(
        ({"strategy": "simple_one_for_one", "auto_shutdown": "never"}, [ChildSpec("c", Worker)])
    )
    box.shutdown(sup)


# ============================================================ restart type vs exit reason

STOPPED1 = ChildInfo("child1", None, "worker", WORKER_MODS)
EXITS = {
    "normal": ["normal"],
    "shutdown": ["shutdown", ("shutdown", "some_info")],
    "abnormal": ["abnormal"],
}


@pytest.mark.parametrize("how", ["normal", "shutdown", "abnormal"])
@pytest.mark.parametrize("restart", ["permanent", "transient", "temporary"])
def test_restart_type_vs_exit(box: Box, restart: str, how: str) -> None:
    """permanent_*, transient_*, temporary_* x normal / shutdown / abnormal"""
    sup = box.sup()
    child = spec("child1", restart=restart)
    cpid = otpkit.start_child(sup, child)
    restarted = restart == "permanent" or (restart == "transient" and how == "abnormal")
    for n, reason in enumerate(EXITS[how]):
        if n > 0 and not restarted:  # start it again for the next exit reason
            if restart == "transient":
                cpid = otpkit.restart_child(sup, "child1")
            else:
                cpid = otpkit.start_child(sup, child)
        box.stop(cpid, reason)
        if restarted:
            cpid = new_pid(sup, "child1", cpid)
            assert running(cpid)
            assert counts(sup) == (1, 1, 0, 1)
        elif restart == "transient":
            wait_until(lambda: otpkit.which_children(sup) == [STOPPED1])
            assert counts(sup) == (1, 0, 0, 1)
        else:
            wait_until(lambda: otpkit.which_children(sup) == [])
            assert counts(sup) == (0, 0, 0, 0)
    assert running(sup)


def test_temporary_bystander(box: Box) -> None:
    children = [spec("child1", shutdown=0.1), spec("child2", restart="temporary", shutdown=0.1)]
    sups = [
        box.sup(strategy="one_for_all", intensity=2, period=300),
        box.sup(strategy="rest_for_one", intensity=2, period=300),
    ]
    for sup in sups:
        for c in children:
            otpkit.start_child(sup, c)
    for sup in sups:
        c1, c2 = pid_of(sup, "child1"), pid_of(sup, "child2")
        ref = otpkit.monitor(c2)
        box.stop(c1, "normal")
        assert box.down(ref) == "shutdown"  # stopped as a bystander ...
        new1 = new_pid(sup, "child1", c1)
        # ... and not restarted; the supervisor lives on
        assert otpkit.which_children(sup) == [ChildInfo("child1", new1, "worker", WORKER_MODS)]
        assert running(sup)


# ============================================================== strategies and intensity


def test_multiple_restarts(box: Box) -> None:
    """intensity 1 in 1 s: crashes spaced more than a period apart never exhaust it."""
    sup = box.sup(intensity=1, period=1)
    cpid = otpkit.start_child(sup, spec("child1", shutdown="brutal_kill"))
    box.stop(cpid, "abnormal")
    for _ in range(3):
        cpid = new_pid(sup, "child1", cpid)
        time.sleep(1.2)  # the real time gap under test
        box.stop(cpid, "abnormal")
    new_pid(sup, "child1", cpid)
    assert running(sup)
    otpkit.terminate_child(sup, "child1")
    otpkit.delete_child(sup, "child1")
    assert otpkit.which_children(sup) == []


def test_one_for_one(box: Box) -> None:
    sup = box.sup()
    cpid1 = otpkit.start_child(sup, spec("child1"))
    cpid2 = otpkit.start_child(sup, spec("child2"))
    box.stop(cpid1, "kill")
    new1 = new_pid(sup, "child1", cpid1)
    assert pid_of(sup, "child2") == cpid2  # only the dead child was restarted
    assert counts(sup) == (2, 2, 0, 2)
    assert running(cpid2) and running(new1)

    # the intensity: 2 restarts in 3600 s are fine, the third kills the supervisor
    sup_ref = otpkit.monitor(sup)
    box.stop(cpid2, "kill")
    new2 = new_pid(sup, "child2", cpid2)
    first = otpkit.which_children(sup)[0]
    other = new1 if first.pid == new2 else new2
    other_ref = otpkit.monitor(other)
    box.stop(first.pid, "kill")
    assert box.down(sup_ref) == "shutdown"
    assert box.down(other_ref) == "shutdown"


def test_one_for_one_escalation(box: Box, files: Any) -> None:
    sup = box.sup(intensity=4)
    cpid1 = otpkit.start_child(sup, spec("child1", FailOnRestart, files("marker")))
    cpid2 = otpkit.start_child(sup, spec("child2"))
    refs = box.watch(sup, cpid2)
    box.stop(cpid1, "kill")  # its restarts fail: the retries exhaust the intensity
    assert box.downs(refs) == {sup: "shutdown", cpid2: "shutdown"}


def test_one_for_all(box: Box) -> None:
    sup = box.sup(strategy="one_for_all")
    cpid1 = otpkit.start_child(sup, spec("child1"))
    cpid2 = otpkit.start_child(sup, spec("child2"))
    ref2 = otpkit.monitor(cpid2)
    box.stop(cpid1, "kill")
    assert box.down(ref2) == "shutdown"
    gen1 = all_new(sup, {cpid1, cpid2}, 2)
    assert counts(sup) == (2, 2, 0, 2)

    sup_ref = otpkit.monitor(sup)
    box.stop(gen1[0], "kill")
    gen2 = all_new(sup, set(gen1), 2)
    refs = box.watch(gen2[1])
    box.stop(gen2[0], "kill")
    assert box.down(sup_ref) == "shutdown"
    assert box.downs(refs) == {gen2[1]: "shutdown"}


def test_one_for_all_escalation(box: Box, files: Any) -> None:
    sup = box.sup(strategy="one_for_all", intensity=4)
    cpid1 = otpkit.start_child(sup, spec("child1"))
    cpid2 = otpkit.start_child(sup, spec("child2", FailOnRestart, files("marker")))
    refs = box.watch(cpid2, sup)
    box.stop(cpid1, "kill")
    assert box.downs(refs) == {cpid2: "shutdown", sup: "shutdown"}


def test_one_for_all_other_child_fails_restart(box: Box, tmp_path: Path) -> None:
    """When child2 fails to start during a one_for_all restart, the already restarted
    child1 is stopped again and the whole restart is retried."""
    log, budget = tmp_path / "log", tmp_path / "budget"
    sup = box.sup(
        [
            spec("child1", LogWorker, str(log), "child1"),
            spec("child2", FailNextStarts, str(log), "child2", str(budget)),
        ],
        strategy="one_for_all",
        intensity=3,
    )
    old = set(pids(sup))
    budget.write_text("1")  # child2's next start fails once
    box.stop(pid_of(sup, "child1"), "kill")
    all_new(sup, old, 2)
    assert log_lines(log) == [
        "start child1",
        "start child2",  # the supervisor's start
        "stop child2",  # child1 was killed: child2 stopped as a bystander
        "start child1",
        "refuse child2",  # the restart fails at child2 ...
        "stop child1",  # ... so the restarted child1 is stopped again
        "start child1",
        "start child2",  # and the restart is retried
    ]
    assert running(sup)


def test_simple_one_for_one(box: Box) -> None:
    sup = box.sup([spec("child")], strategy="simple_one_for_one")
    cpid1 = otpkit.start_child(sup, ())
    cpid2 = otpkit.start_child(sup, ())
    box.stop(cpid1, "kill")
    ps = all_new(sup, {cpid1}, 2)
    assert cpid2 in ps
    assert counts(sup) == (1, 2, 0, 2)

    sup_ref = otpkit.monitor(sup)
    box.stop(cpid2, "kill")
    ps = all_new(sup, {cpid1, cpid2}, 2)
    other_ref = otpkit.monitor(ps[1])
    box.stop(ps[0], "kill")
    assert box.down(sup_ref) == "shutdown"
    assert box.down(other_ref) == "shutdown"


def test_simple_one_for_one_extra(box: Box) -> None:
    sup = box.sup([spec("child", start_with_info, "extra_info")], strategy="simple_one_for_one")
    cpid1, info1 = otpkit.start_child(sup, ())
    cpid2, info2 = otpkit.start_child(sup, ())
    assert info1 == info2 == "extra_info"
    box.stop(cpid1, "abnormal")
    ps = all_new(sup, {cpid1}, 2)
    assert cpid2 in ps
    assert counts(sup) == (1, 2, 0, 2)


def test_simple_one_for_one_escalation(box: Box, files: Any) -> None:
    sup = box.sup([spec("child", FailOnRestart)], strategy="simple_one_for_one", intensity=4)
    cpid1 = otpkit.start_child(sup, (files("marker"),))
    cpid2 = otpkit.start_child(sup, ())
    refs = box.watch(sup, cpid2)
    box.stop(cpid1, "kill")
    assert box.downs(refs) == {sup: "shutdown", cpid2: "shutdown"}


def test_simple_one_for_one_shutdown(box: Box) -> None:
    """Dynamic children stop concurrently under one deadline: two that take T stop
    gracefully, one that would take 5T is killed at the shutdown time 2T."""
    t = 0.5
    sup = box.sup([spec("child", SlowStop, shutdown=2 * t)], strategy="simple_one_for_one")
    graceful = [otpkit.start_child(sup, (t,)) for _ in range(2)]
    slow = otpkit.start_child(sup, (5 * t,))
    refs = box.watch(*graceful, slow)
    t0 = time.monotonic()
    box.shutdown(sup)
    elapsed = time.monotonic() - t0
    # concurrent: about 2T; one by one it would take T + T + 2T
    assert t <= elapsed < 3 * t, elapsed
    assert box.downs(refs) == {graceful[0]: "shutdown", graceful[1]: "shutdown", slow: "killed"}


def test_rest_for_one(box: Box) -> None:
    sup = box.sup(strategy="rest_for_one")
    cpid1 = otpkit.start_child(sup, spec("child1"))
    cpid2 = otpkit.start_child(sup, spec("child2"))
    cpid3 = otpkit.start_child(sup, spec("child3"))
    assert counts(sup) == (3, 3, 0, 3)
    ref3 = otpkit.monitor(cpid3)
    box.stop(cpid2, "kill")
    assert box.down(ref3) == "shutdown"
    ps = all_new(sup, {cpid2, cpid3}, 3)
    assert [r.id for r in otpkit.which_children(sup)] == ["child3", "child2", "child1"]
    assert ps[2] == cpid1  # the child before the dead one was left alone
    assert counts(sup) == (3, 3, 0, 3)

    sup_ref = otpkit.monitor(sup)
    box.stop(ps[0], "kill")  # child3
    ps2 = all_new(sup, {cpid2, cpid3, ps[0]}, 3)
    assert ps2[1] == ps[1] and ps2[2] == cpid1
    refs = box.watch(ps2[0], cpid1)
    box.stop(ps2[1], "kill")  # child2: third restart
    assert box.down(sup_ref) == "shutdown"
    assert box.downs(refs) == {ps2[0]: "shutdown", cpid1: "shutdown"}


def test_rest_for_one_escalation(box: Box, files: Any) -> None:
    sup = box.sup(strategy="rest_for_one", intensity=4)
    cpid1 = otpkit.start_child(sup, spec("child1"))
    cpid2 = otpkit.start_child(sup, spec("child2", FailOnRestart, files("marker")))
    refs = box.watch(cpid2, sup)
    box.stop(cpid1, "kill")
    assert box.downs(refs) == {cpid2: "shutdown", sup: "shutdown"}


def test_rest_for_one_other_child_fails_restart(box: Box, tmp_path: Path) -> None:
    """A rest_for_one restart that fails at child2 retries from child2 only."""
    log, budget = tmp_path / "log", tmp_path / "budget"
    sup = box.sup(
        [
            spec("child1", LogWorker, str(log), "child1"),
            spec("child2", FailNextStarts, str(log), "child2", str(budget)),
        ],
        strategy="rest_for_one",
        intensity=3,
    )
    old = set(pids(sup))
    budget.write_text("1")
    box.stop(pid_of(sup, "child1"), "kill")
    all_new(sup, old, 2)
    assert log_lines(log) == [
        "start child1",
        "start child2",
        "stop child2",
        "start child1",
        "refuse child2",
        "start child2",  # child1 is not restarted again
    ]


def test_order_of_children(box: Box, tmp_path: Path) -> None:
    log = tmp_path / "log"
    ids = ["ch7", "ch3", "ch10", "ch2", "ch5"]  # not sorted on purpose
    sup = box.sup([spec(i, LogWorker, str(log), i) for i in ids], strategy="rest_for_one")
    assert log_lines(log) == [f"start {i}" for i in ids]
    before = {r.id: r.pid for r in otpkit.which_children(sup)}
    assert [r.id for r in otpkit.which_children(sup)] == ids[::-1]

    # ch10 dies: ch5 then ch2 are stopped; ch10, ch2, ch5 start again in order
    box.stop(before["ch10"], "abnormal")
    all_new(sup, set(before.values()) - {before["ch7"], before["ch3"]}, 5)
    assert log_lines(log)[5:] == [
        "stop ch10",
        "stop ch5",
        "stop ch2",
        "start ch10",
        "start ch2",
        "start ch5",
    ]
    assert pid_of(sup, "ch7") == before["ch7"] and pid_of(sup, "ch3") == before["ch3"]

    # the supervisor stops them all in reverse start order
    box.shutdown(sup)
    assert log_lines(log)[11:] == [f"stop {i}" for i in ids[::-1]]


def test_tree(box: Box, files: Any) -> None:
    child1, child2 = spec("child1"), spec("child2")
    child3 = spec("child3", FailOnRestart, files("marker"))
    child4 = spec("child4")
    supchild1 = ChildSpec(
        "supchild1",
        Supervisor,
        kwargs={"children": [child1, child2], "intensity": 4, "period": 3600},
    )
    supchild2 = ChildSpec("supchild2", Supervisor, kwargs={"intensity": 4, "period": 3600})
    top = box.sup(strategy="one_for_all", intensity=4)
    sup1 = otpkit.start_child(top, supchild1)
    sup2 = otpkit.start_child(top, supchild2)
    assert counts(top) == (2, 2, 2, 0)
    assert otpkit.get_childspec(top, "supchild1").shutdown == "infinity"
    [(_, cpid2, _, _), (_, cpid1, _, _)] = otpkit.which_children(sup1)
    assert counts(sup1) == (2, 2, 0, 2)
    assert counts(sup2) == (0, 0, 0, 0)

    # dynamic children
    cpid3 = otpkit.start_child(sup2, child3)
    cpid4 = otpkit.start_child(sup2, child4)
    assert counts(sup2) == (2, 2, 0, 2)

    # only the process that dies is restarted
    box.stop(cpid4, "abnormal")
    new4 = new_pid(sup2, "child4", cpid4)
    assert [r.pid for r in otpkit.which_children(sup1)] == [cpid2, cpid1]
    assert [r.pid for r in otpkit.which_children(sup2)] == [new4, cpid3]
    assert counts(sup1) == (2, 2, 0, 2) and counts(sup2) == (2, 2, 0, 2)

    # child3 cannot restart: sup2 gives up, and the top restarts the whole tree -
    # without the dynamic children
    refs = box.watch(sup1, sup2, cpid1, cpid2, new4)
    box.stop(cpid3, "abnormal")
    assert box.downs(refs) == {
        sup1: "shutdown",
        sup2: "shutdown",
        cpid1: "shutdown",
        cpid2: "shutdown",
        new4: "shutdown",
    }
    all_new(top, {sup1, sup2}, 2)
    [(id2, nsup2, _, _), (id1, nsup1, _, _)] = otpkit.which_children(top)
    assert (id2, id1) == ("supchild2", "supchild1")
    assert counts(top) == (2, 2, 2, 0)
    assert [r.id for r in otpkit.which_children(nsup1)] == ["child2", "child1"]
    assert counts(nsup1) == (2, 2, 0, 2)
    assert otpkit.which_children(nsup2) == []
    assert counts(nsup2) == (0, 0, 0, 0)


@pytest.mark.parametrize("ctype", ["worker", "supervisor"])
def test_count_children(box: Box, ctype: str) -> None:
    """count_children / count_children_supervisor (5 + 5 children, not 1000 + 1000:
    each is an OS process)."""
    sup = box.sup([spec("child", restart="temporary", type=ctype)], strategy="simple_one_for_one")

    def expected(n: int) -> tuple[int, int, int, int]:
        return (1, n, n if ctype == "supervisor" else 0, n if ctype == "worker" else 0)

    for _ in range(5):
        otpkit.start_child(sup, ())
    children = otpkit.which_children(sup)
    assert len(children) == 5 and counts(sup) == expected(5)
    for _ in range(5):
        otpkit.start_child(sup, ())
    children2 = otpkit.which_children(sup)
    assert len(children2) == 10 and counts(sup) == expected(10)
    assert otpkit.which_children(sup) == children2
    assert {r.type for r in children2} == {ctype}
    for row in children2:
        box.stop(row.pid, "kill")
    wait_until(lambda: counts(sup) == (1, 0, 0, 0))


def test_count_restarting_children(box: Box, files: Any) -> None:
    flag = files("flag")
    sup = box.sup(
        [spec("child", Gate, flag, shutdown="brutal_kill")],
        strategy="simple_one_for_one",
        intensity=200,
        period=10,
    )
    assert counts(sup) == (1, 0, 0, 0)
    gen1 = []
    for n in (1, 2, 3):
        gen1.append(otpkit.start_child(sup, ()))
        assert counts(sup) == (1, n, 0, n)
    for p in gen1:
        _exit_error(box, p)
    gen2 = all_new(sup, set(gen1), 3)
    assert counts(sup) == (1, 3, 0, 3)

    Path(flag).touch()  # restarts fail from now on
    box.stop(gen2[0], "kill")
    box.stop(gen2[1], "kill")
    wait_until(lambda: counts(sup) == (1, 1, 0, 3), what="two children restarting")
    ps = pids(sup)
    assert ps.count("restarting") == 2 and gen2[2] in ps
    os.unlink(flag)
    gen3 = all_new(sup, {gen2[0], gen2[1]}, 3)
    assert gen2[2] in gen3
    assert counts(sup) == (1, 3, 0, 3)

    otpkit.terminate_child(sup, gen2[2])
    assert counts(sup) == (1, 2, 0, 2)
    rest = pids(sup)
    otpkit.terminate_child(sup, rest[0])
    assert counts(sup) == (1, 1, 0, 1)
    otpkit.terminate_child(sup, rest[1])
    assert counts(sup) == (1, 0, 0, 0)


def _exit_error(box: Box, pid: Pid) -> None:
    ref = otpkit.monitor(pid)
    otpkit.send(pid, ("exit", "error"))
    assert box.down(ref) == "error"


def test_hanging_restart_loop(box: Box, files: Any) -> None:
    flag = files("flag")
    sup = box.sup(intensity=50, period=10)
    child1 = spec("child1", Gate, flag, shutdown="brutal_kill")
    cpid1 = otpkit.start_child(sup, child1)
    mods = child1.modules

    Path(flag).touch()
    _exit_error(box, cpid1)
    wait_until(lambda: pid_of(sup, "child1") == "restarting")

    for fn, arg, reason in [
        (otpkit.start_child, child1, "already_present"),
        (otpkit.restart_child, "child1", "restarting"),
        (otpkit.delete_child, "child1", "restarting"),
    ]:
        with pytest.raises(SupervisorError) as info:
            fn(sup, arg)
        assert info.value.reason == reason
    assert otpkit.which_children(sup) == [ChildInfo("child1", "restarting", "worker", mods)]
    assert counts(sup) == (1, 0, 0, 1)

    otpkit.terminate_child(sup, "child1")  # breaks the loop
    assert otpkit.which_children(sup) == [ChildInfo("child1", None, "worker", mods)]

    os.unlink(flag)
    cpid2 = otpkit.restart_child(sup, "child1")
    Path(flag).touch()
    _exit_error(box, cpid2)
    wait_until(lambda: pid_of(sup, "child1") == "restarting")
    # the supervisor still shuts down while in the loop
    box.shutdown(sup)


def test_hanging_restart_loop_rest_for_one(box: Box, files: Any) -> None:
    flag = files("flag")
    sup = box.sup(strategy="rest_for_one", intensity=50, period=10)
    child2 = spec("child2", Gate, flag, shutdown="brutal_kill")
    cpid1 = otpkit.start_child(sup, spec("child1", shutdown="brutal_kill"))
    cpid2 = otpkit.start_child(sup, child2)
    cpid3 = otpkit.start_child(sup, spec("child3", shutdown="brutal_kill"))
    ref3 = otpkit.monitor(cpid3)

    Path(flag).touch()
    _exit_error(box, cpid2)
    assert box.down(ref3) == "killed"
    wait_until(lambda: pid_of(sup, "child2") == "restarting")
    with pytest.raises(SupervisorError) as info:
        otpkit.start_child(sup, child2)
    assert info.value.reason == "already_present"
    for fn in (otpkit.restart_child, otpkit.delete_child):
        with pytest.raises(SupervisorError) as info:
            fn(sup, "child2")
        assert info.value.reason == "restarting"
    assert [(r.id, r.pid) for r in otpkit.which_children(sup)] == [
        ("child3", None),
        ("child2", "restarting"),
        ("child1", cpid1),
    ]
    assert counts(sup) == (3, 1, 0, 3)

    otpkit.terminate_child(sup, "child2")
    assert [(r.id, r.pid) for r in otpkit.which_children(sup)] == [
        ("child3", None),
        ("child2", None),
        ("child1", cpid1),
    ]

    os.unlink(flag)
    cpid22 = otpkit.restart_child(sup, "child2")
    Path(flag).touch()
    _exit_error(box, cpid22)
    wait_until(lambda: pid_of(sup, "child2") == "restarting")
    box.shutdown(sup)


def test_hanging_restart_loop_simple(box: Box, files: Any) -> None:
    flag = files("flag")
    sup = box.sup(
        [spec("child1", Gate, flag, shutdown="brutal_kill")],
        strategy="simple_one_for_one",
        intensity=50,
        period=10,
    )
    cpid1 = otpkit.start_child(sup, ())
    Path(flag).touch()
    _exit_error(box, cpid1)
    wait_until(lambda: pids(sup) == ["restarting"])
    for fn in (otpkit.restart_child, otpkit.delete_child):
        with pytest.raises(SupervisorError) as info:
            fn(sup, "child1")
        assert info.value.reason == "simple_one_for_one"
    assert [(r.id, r.pid) for r in otpkit.which_children(sup)] == [(None, "restarting")]
    assert counts(sup) == (1, 0, 0, 1)

    otpkit.terminate_child(sup, cpid1)  # by the pid it had: breaks the loop
    assert otpkit.which_children(sup) == []

    os.unlink(flag)
    cpid2 = otpkit.start_child(sup, ())
    Path(flag).touch()
    _exit_error(box, cpid2)
    wait_until(lambda: pids(sup) == ["restarting"])
    box.shutdown(sup)


# =========================================================================== significant


def sig_spec(cid: str, restart: str, significant: bool = True) -> dict[str, Any]:
    return {
        "id": cid,
        "start": Worker,
        "restart": restart,
        "significant": significant,
        "shutdown": 1,
    }


def _three(box: Box, restart: str, auto: str) -> tuple[Pid, list[Pid]]:
    sup = box.sup(intensity=5, auto_shutdown=auto)
    for cid, sig in (("child1", True), ("child2", True), ("child3", False)):
        otpkit.start_child(sup, sig_spec(cid, restart, sig))
    rows = otpkit.which_children(sup)
    assert [r.id for r in rows] == ["child3", "child2", "child1"]
    return sup, [r.pid for r in reversed(rows)]


def _still_up(sup: Pid, *ps: Pid) -> None:
    assert running(sup)
    for p in ps:
        assert running(p)


@pytest.mark.parametrize("auto", ["never", "any_significant", "all_significant"])
@pytest.mark.parametrize("restart", ["temporary", "transient"])
def test_nonsignificant(box: Box, restart: str, auto: str) -> None:
    """nonsignificant_temporary / nonsignificant_transient"""
    sup = box.sup(intensity=5, auto_shutdown=auto)
    child = sig_spec("child1", restart, significant=False)
    cpid = otpkit.start_child(sup, child)
    otpkit.terminate_child(sup, "child1")  # by the supervisor
    gone(cpid)
    _still_up(sup)
    if restart == "temporary":
        for how in ("kill", "abnormal", "normal"):
            cpid = otpkit.start_child(sup, child)
            box.stop(cpid, how)
            wait_until(lambda: otpkit.which_children(sup) == [])
            _still_up(sup)
    else:
        cpid = otpkit.restart_child(sup, "child1")
        for how in ("kill", "abnormal"):
            box.stop(cpid, how)
            cpid = new_pid(sup, "child1", cpid)
            _still_up(sup, cpid)
        box.stop(cpid, "normal")
        wait_until(lambda: pid_of(sup, "child1") is None)
        _still_up(sup)
    box.shutdown(sup)


def test_significant_temporary(box: Box) -> None:
    # any_significant: terminate_child does not count ...
    sup1, (c1, c2, c3) = _three(box, "temporary", "any_significant")
    otpkit.terminate_child(sup1, "child1")
    gone(c1)
    assert [r.id for r in otpkit.which_children(sup1)] == ["child3", "child2"]
    _still_up(sup1, c2, c3)

    # ... a kill does
    c1 = otpkit.start_child(sup1, sig_spec("child1", "temporary"))
    assert [r.id for r in otpkit.which_children(sup1)] == ["child1", "child3", "child2"]
    refs = box.watch(sup1, c2, c3)
    box.stop(c1, "kill")
    assert box.downs(refs) == {sup1: "shutdown", c2: "shutdown", c3: "shutdown"}

    # ... as do an abnormal and a normal exit
    for how in ("abnormal", "normal"):
        sup, (c1, c2, c3) = _three(box, "temporary", "any_significant")
        refs = box.watch(sup, c2, c3)
        box.stop(c1, how)
        assert box.downs(refs) == {sup: "shutdown", c2: "shutdown", c3: "shutdown"}

    # all_significant: only when the last significant child has ended
    sup4, (c1, c2, c3) = _three(box, "temporary", "all_significant")
    box.stop(c1, "normal")
    wait_until(lambda: [r.id for r in otpkit.which_children(sup4)] == ["child3", "child2"])
    _still_up(sup4, c2, c3)
    refs = box.watch(sup4, c3)
    box.stop(c2, "normal")
    assert box.downs(refs) == {sup4: "shutdown", c3: "shutdown"}


def test_significant_transient(box: Box) -> None:
    sup1, (c1, c2, c3) = _three(box, "transient", "any_significant")
    # terminate_child does not count
    otpkit.terminate_child(sup1, "child1")
    assert pid_of(sup1, "child1") is None
    _still_up(sup1, c2, c3)
    c1 = otpkit.restart_child(sup1, "child1")

    # killed or abnormal: restarted, no auto shutdown
    for how in ("kill", "abnormal"):
        box.stop(c1, how)
        c1 = new_pid(sup1, "child1", c1)
        _still_up(sup1, c1, c2, c3)

    # normal: auto shutdown
    refs = box.watch(sup1, c2, c3)
    box.stop(c1, "normal")
    assert box.downs(refs) == {sup1: "shutdown", c2: "shutdown", c3: "shutdown"}

    sup2, (c1, c2, c3) = _three(box, "transient", "all_significant")
    box.stop(c1, "normal")
    wait_until(lambda: pid_of(sup2, "child1") is None)
    _still_up(sup2, c2, c3)
    refs = box.watch(sup2, c3)
    box.stop(c2, "normal")
    assert box.downs(refs) == {sup2: "shutdown", c3: "shutdown"}


@pytest.mark.parametrize("auto", ["any_significant", "all_significant"])
@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
def test_significant_bystander(box: Box, strategy: str, auto: str) -> None:
    sup = box.sup(strategy=strategy, intensity=5, auto_shutdown=auto)
    for cid, sig in (("child1", True), ("child2", False), ("child3", True)):
        otpkit.start_child(sup, sig_spec(cid, "transient", sig))
    c1, c2, c3 = (pid_of(sup, c) for c in ("child1", "child2", "child3"))
    stopped = {"one_for_one": [], "one_for_all": [c1, c3], "rest_for_one": [c3]}[strategy]
    refs = box.watch(*stopped)
    box.stop(c2, "kill")
    assert box.downs(refs) == {p: "shutdown" for p in stopped}
    now = all_new(sup, {c2, *stopped}, 3)
    for p in (c1, c3):
        assert (p in now) == (p not in stopped)
    _still_up(sup, *now)
    box.shutdown(sup)


def test_significant_escalation(box: Box) -> None:
    child1 = sig_spec("child1", "transient")

    def child_sup(significant: bool) -> ChildSpec:
        return ChildSpec(
            "sup1",
            Supervisor,
            kwargs={"auto_shutdown": "any_significant"},
            restart="transient",
            significant=significant,
        )

    # A has B as a significant child, B has C: C's end ends B, and B's ends A
    sup1 = box.sup(auto_shutdown="any_significant")
    child_sup1 = otpkit.start_child(sup1, child_sup(True))
    cpid1 = otpkit.start_child(child_sup1, child1)
    refs = box.watch(child_sup1, sup1)
    box.stop(cpid1, "normal")
    assert box.downs(refs) == {child_sup1: "shutdown", sup1: "shutdown"}

    # the same with B not significant: A lives on
    sup2 = box.sup(auto_shutdown="any_significant")
    child_sup2 = otpkit.start_child(sup2, child_sup(False))
    cpid2 = otpkit.start_child(child_sup2, child1)
    ref = otpkit.monitor(child_sup2)
    box.stop(cpid2, "normal")
    assert box.down(ref) == "shutdown"
    wait_until(lambda: pid_of(sup2, "sup1") is None)
    _still_up(sup2)
    box.shutdown(sup2)


# ================================================================================= misc


def test_already_started_outside_supervisor(box: Box) -> None:
    name = f"registered_{os.getpid()}"
    outside = box.spawn(Worker, name=name)
    sup = box.sup()
    child = spec("child", start_registered, name, restart="transient")
    with pytest.raises(SupervisorError) as info:
        otpkit.start_child(sup, child)
    assert info.value.reason == ("already_started", outside)  # not wrapped with the spec
    assert otpkit.which_children(sup) == []
    box.shutdown(sup)
    assert running(outside)


def test_start_function_adopts_already_started(box: Box) -> None:
    """The contract's extension: a start returning ``("already_started", pid)`` makes
    the supervisor link to that process and supervise it as the child."""
    name = f"adopted_{os.getpid()}"
    outside = box.spawn(Worker, name=name)
    sup = box.sup()
    child = spec("child", start_or_adopt, name)
    assert otpkit.start_child(sup, child) == outside
    assert otpkit.which_children(sup) == [ChildInfo("child", outside, "worker", child.modules)]
    box.stop(outside, "kill")
    fresh = new_pid(sup, "child", outside)
    assert otpkit.whereis(name) == fresh


def test_which_children(box: Box) -> None:
    sup = box.sup()
    assert otpkit.which_children(sup) == []
    c1 = otpkit.start_child(sup, {"id": "child1", "start": Worker})
    assert otpkit.which_children(sup) == [ChildInfo("child1", c1, "worker", WORKER_MODS)]
    c2 = otpkit.start_child(sup, {"id": "child2", "start": Worker})
    assert otpkit.which_children(sup) == [
        ChildInfo("child2", c2, "worker", WORKER_MODS),
        ChildInfo("child1", c1, "worker", WORKER_MODS),
    ]
    otpkit.terminate_child(sup, "child1")
    assert otpkit.which_children(sup) == [
        ChildInfo("child2", c2, "worker", WORKER_MODS),
        ChildInfo("child1", None, "worker", WORKER_MODS),
    ]
    otpkit.delete_child(sup, "child1")
    assert otpkit.which_children(sup) == [ChildInfo("child2", c2, "worker", WORKER_MODS)]


def test_which_children_simple_one_for_one(box: Box) -> None:
    sup = box.sup(
        [{"id": "child", "start": Worker, "restart": "temporary"}], strategy="simple_one_for_one"
    )
    assert otpkit.which_children(sup) == []
    c1 = otpkit.start_child(sup, ())
    c2 = otpkit.start_child(sup, ())
    assert sorted(otpkit.which_children(sup), key=repr) == sorted(
        [ChildInfo(None, c1, "worker", WORKER_MODS), ChildInfo(None, c2, "worker", WORKER_MODS)],
        key=repr,
    )
    otpkit.terminate_child(sup, c1)
    assert otpkit.which_children(sup) == [ChildInfo(None, c2, "worker", WORKER_MODS)]


def test_which_children_dynamic_supervisor(box: Box) -> None:
    """Elixir's DynamicSupervisor.which_children: the id is always undefined (None), as
    for simple_one_for_one; count_children counts every child as a spec."""
    sup = box.sup(cls=DynamicSupervisor)
    assert otpkit.which_children(sup) == []
    c1 = otpkit.start_child(sup, spec("d1"))
    c2 = otpkit.start_child(sup, spec("d2", restart="temporary"))
    assert sorted(otpkit.which_children(sup), key=repr) == sorted(
        [ChildInfo(None, c1, "worker", WORKER_MODS), ChildInfo(None, c2, "worker", WORKER_MODS)],
        key=repr,
    )
    assert counts(sup) == (2, 2, 0, 2)
    otpkit.terminate_child(sup, c1)
    assert otpkit.which_children(sup) == [ChildInfo(None, c2, "worker", WORKER_MODS)]


# ============================================================================ parent killed


def test_trapping_child_of_a_killed_supervisor_runs_terminate(box: Box, files: Any) -> None:
    """top -> sub -> x (traps exits), y (does not); ``exit(sub, "kill")``. As on OTP, x
    runs ``terminate("killed")`` (gen_server: an 'EXIT' from the parent, with its reason),
    y dies at once without it, and top restarts sub, which starts new x and y. Neither
    old child outlives its parent for good."""
    log = Path(files("log"))
    sub_spec = ChildSpec(
        "sub",
        Supervisor,
        kwargs={
            "children": [
                spec("x", ReasonLogWorker, str(log), "x"),
                spec("y", ReasonLogWorker, str(log), "y", False),
            ],
            "intensity": 4,
            "period": 3600,
        },
        type="supervisor",
    )
    top = box.sup([sub_spec], intensity=4)
    sub = pid_of(top, "sub")
    x, y = pid_of(sub, "x"), pid_of(sub, "y")
    assert isinstance(x, Pid) and isinstance(y, Pid)
    wait_until(lambda: sorted(log_lines(log)) == ["start x", "start y"], what="x and y started")

    refs = box.watch(sub, x, y)
    otpkit.exit(sub, "kill")
    assert box.downs(refs) == {sub: "killed", x: "killed", y: "killed"}
    gone(x)
    gone(y)
    new_sub = new_pid(top, "sub", sub)
    new_x, new_y = new_pid(new_sub, "x", x), new_pid(new_sub, "y", y)
    assert running(new_x) and running(new_y)
    wait_until(lambda: log_lines(log).count("start y") == 2, what="the new x and y started")
    assert sorted(log_lines(log)) == ["start x", "start x", "start y", "start y", "stop x killed"]


def test_a_trapping_child_busy_when_its_parent_is_killed_ends_within_the_grace(
    box: Box, files: Any
) -> None:
    """x traps exits but is stuck in a handler when its supervisor is killed: it cannot
    run terminate, and the orphan guard ends it ORPHAN_GRACE seconds later (no orphan)."""
    log = Path(files("log"))
    sub = box.sup([spec("x", ReasonLogWorker, str(log), "x")])
    x = pid_of(sub, "x")
    assert isinstance(x, Pid)
    otpkit.send(x, ("sleep", 120, otpkit.self()))
    box.expect(lambda m: m == ("sleeping", x))
    otpkit.exit(sub, "kill")
    wait_until(lambda: not running(x), timeout=ORPHAN_GRACE + 15, what="the busy orphan gone")
    assert log_lines(log) == ["start x"]
