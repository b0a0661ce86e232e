"""The Thespian actor that hosts one otpkit process, and how processes are spawned.

Thespian's job here is to create processes (``createActor`` forks the new actor from its
creator, so the OS process tree is the actor tree) and to reap them. The new process
learns what to run from :data:`_pending`, which its creator sets just before the fork
(memory is copied by ``fork``; nothing is pickled or sent). The creator then waits for the
child's ``STARTED`` report on its own socket, as OTP's ``start_link`` waits for ``init``.

Every hosted process asks the kernel to SIGKILL it when its parent process dies
(``PR_SET_PDEATHSIG``), so killing a supervisor ends its whole subtree at once, even
children busy in a handler, and nothing outlives the node.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from thespian.actors import (
    Actor as ThespianActor,
)
from thespian.actors import (
    ActorExitRequest,
    ChildActorExited,
    ThespianWatch,
    WakeupMessage,
    WatchMessage,
)

from otpkit.actors import _logs, _runtime
from otpkit.actors._actor import IGNORE, NOREPLY, Actor, Stop
from otpkit.actors._frames import CALL, CAST, INFO, MSG, STARTED
from otpkit.actors._loader import load_object
from otpkit.actors._pid import ExitSignal, From, Pid, Ref, is_normal_exit
from otpkit.actors._runtime import NodeIdentity, Runtime, _Die
from otpkit.errors import LoadError

log = logging.getLogger("otpkit.actors")

_PR_SET_PDEATHSIG = 1


@dataclass
class SpawnPayload:
    """What a new process needs to know; reaches it through fork."""

    node: NodeIdentity
    target: Any  # an Actor subclass, or "package.module:Class"
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    parent: Pid | None
    parent_ospid: int | None
    link: bool
    name: str | None
    token: Ref
    log_level: int = logging.INFO
    options: dict[str, Any] = field(default_factory=dict)
    #: the parent's end halts the node (it is the kernel): die with it at once
    parent_halts_node: bool = False


_pending: SpawnPayload | None = None

#: The Thespian message that boots a process created with ``defer_boot``.
BOOT = "$otpkit_boot"


def resolve_target(target: Any) -> type[Actor]:
    """An Actor subclass from itself or from ``"package.module:Class"``."""
    if isinstance(target, str):
        try:
            target = load_object(target)
        except LoadError as exc:
            if exc.cause is None:
                raise ValueError(f"actor {target!r}: expected 'package.module:Class'") from None
            raise exc.cause from None  # the start fails with the import's own error
    if not (isinstance(target, type) and issubclass(target, Actor)):
        raise TypeError(f"{target!r} is not an otpkit Actor subclass")
    return target


#: What the OS sends a process when its parent process ends (``PR_SET_PDEATHSIG``).
PARENT_DIED = signal.SIGUSR2
#: How long a process that traps exits has, once its parent died, to run ``terminate``
#: and end; then it is killed (SIGALRM's default action): nothing outlives its parent
#: longer than this.
ORPHAN_GRACE = 5.0


def _set_parent_death_signal() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, PARENT_DIED, 0, 0, 0)


def _fresh_logging(level: int) -> None:
    # Thespian points logging at its logger process through its transport, which only
    # flushes when the actor returns to Thespian's loop: a crash report written just
    # before the process exits would be lost. Put back the logging tree this process
    # inherited (module loggers still hang from it), drop the handlers of the program
    # that started the node, and send every record, and every line printed, to the
    # node's log writer (see _logs).
    manager = log.manager
    root = manager.root
    logging.root = root
    logging.Logger.root = root
    logging.Logger.manager = manager
    _logs.install(level)


def _actor_label(payload: SpawnPayload) -> str:
    """What this process's log lines call it: its registered name, else its class."""
    if payload.name is not None:
        return str(payload.name)
    target = payload.target
    if isinstance(target, str):
        return target.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
    return str(getattr(target, "__name__", type(target).__name__))


def reason_of(exc: BaseException) -> Any:
    """The exit reason for a crash: the exception itself, if it survives pickling."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


class ProcessRuntime(Runtime):
    """The runtime of a process hosted in a Thespian actor (it can spawn and set timers)."""

    def __init__(self, node: NodeIdentity, host: Host) -> None:
        super().__init__(node)
        self._host = host
        self._timers: dict[int, Any] = {}
        self._timer_n = 0

    def spawn(
        self,
        target: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        link: bool = False,
        name: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, ...]:
        """Start a child process and wait for its init: ("ok", pid) | ("ignore",) |
        ("error", reason)."""
        token = self.make_ref()
        payload = SpawnPayload(
            node=self.node,
            target=target,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            parent=self.pid,
            parent_ospid=os.getpid(),
            link=link,
            name=name,
            token=token,
            log_level=logging.root.level,
            options=dict(options or {}),
            parent_halts_node=hasattr(self._host._actor, "halt_node_on_exit"),
        )
        alive = self._host.fork_child(payload)
        return self.await_start(token, link, alive)

    def send_after(self, delay: float, msg: Any) -> int:
        self._timer_n += 1
        self._timers[self._timer_n] = msg
        period = timedelta(seconds=max(0.0, delay))
        # during init, before Thespian's loop first ran, its transport has no run_time
        # yet and raises AttributeError; the wakeup is queued already and fires once
        # the loop runs
        with contextlib.suppress(AttributeError):
            self._host.wakeupAfter(period, payload=("otpkit", self._timer_n))
        return self._timer_n

    def cancel_timer(self, timer: int) -> bool:
        return self._timers.pop(timer, None) is not None

    def fire_timer(self, timer: int) -> None:
        msg = self._timers.pop(timer, None)
        if msg is not None:
            self.mailbox.append((INFO, None, msg))


class Host(ThespianActor):  # type: ignore[misc]
    """Thespian actor class of every otpkit process."""

    def __init__(self) -> None:
        super().__init__()
        global _pending
        payload, _pending = _pending, None
        if payload is None:
            os._exit(3)  # created by something other than otpkit: refuse to run
        self._payload = payload
        self._mgr: Any = None
        self._booted = False
        self._ending = False
        self._orphaned = False
        self._actor: Actor | None = None
        self._rt = ProcessRuntime(payload.node, self)
        signal.signal(PARENT_DIED, self._parent_died)
        _set_parent_death_signal()
        if payload.parent_ospid is not None and os.getppid() != payload.parent_ospid:
            os._exit(1)  # the parent died before the death signal was armed
        _fresh_logging(payload.log_level)
        _logs.set_tags(actor=_actor_label(payload), job=None, tick=None)
        _runtime.set_current(self._rt)
        # A process the kernel starts for a client has the client as its OTP parent.
        otp_parent = payload.options.get("parent")
        self._rt.parent = otp_parent or payload.parent
        self._rt.os_parent = payload.parent
        if payload.parent is not None:
            if payload.link:
                self._rt.links.add(payload.parent)
            # Connect first: from now on the parent sees this process die, whatever
            # happens during init.
            if self._rt.connection_to(payload.parent) is None:
                os._exit(1)

    # Thespian assigns _myRef right after constructing the actor and before its loop
    # runs: the one moment at which init can run with createActor available and no
    # message needed to wake the actor up.
    @property
    def _myRef(self) -> Any:  # noqa: N802 - Thespian's name
        return self._mgr

    @_myRef.setter
    def _myRef(self, mgr: Any) -> None:  # noqa: N802
        first = self._mgr is None
        self._mgr = mgr
        if first and not self._payload.options.get("defer_boot"):
            self._boot()

    def _parent_died(self, signum: int, frame: Any) -> None:
        """The OS parent of this process ended (its parent-death signal).

        A process that traps exits and is linked to its parent learns of the death on
        its connection to the parent, with the reason (``"killed"`` for a SIGKILL), and
        runs ``terminate`` with it, as a gen_server does on an ``'EXIT'`` from its
        parent; it has :data:`ORPHAN_GRACE` seconds. So does a process already ending.
        Any other process - and every child of a process whose end halts the node (the
        kernel) - dies at once.
        """
        p = self._payload
        if p.parent_ospid is not None and os.getppid() == p.parent_ospid:
            return  # only the thread that forked this process ended: the parent lives
        if not p.parent_halts_node and (self._ending or self._awaits_parent_exit()):
            if not self._orphaned:
                self._orphaned = True
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                signal.setitimer(signal.ITIMER_REAL, ORPHAN_GRACE)
            return
        os.kill(os.getpid(), signal.SIGKILL)

    def _awaits_parent_exit(self) -> bool:
        """Booted, trapping exits, and its parent's exit signal still to come (linked) or
        queued: it will run ``terminate`` with the parent's reason."""
        rt = self._rt
        parent = rt.os_parent
        if not (self._booted and rt.trap_exit) or parent is None:
            return False
        return parent in rt.links or any(
            item[0] == INFO and isinstance(item[2], ExitSignal) and item[2].pid == parent
            for item in rt.mailbox
        )

    def fork_child(self, payload: SpawnPayload) -> Callable[[], bool]:
        global _pending
        _pending = payload
        try:
            self.createActor(Host)
        finally:
            _pending = None
        procs = getattr(self._mgr, "_child_procs", None)
        proc = procs[-1].childProc if procs else None
        if proc is None:
            return lambda: True
        return proc.is_alive  # type: ignore[no-any-return]

    def _report(self, result: tuple[Any, ...]) -> None:
        p = self._payload
        if p.parent is not None:
            self._rt.deliver(p.parent, (STARTED, p.token, result))

    def _boot(self) -> None:
        rt, p = self._rt, self._payload
        try:
            if p.name is not None and not rt.register(p.name):
                self._report(("error", ("already_started", rt.whereis(p.name))))
                self._finish("normal", run_terminate=False, quiet=True)
            actor = resolve_target(p.target)()
            actor.pid = rt.pid
            self._actor = actor
            result = actor.init(*p.args, **p.kwargs)
        except Stop as stop:
            self._report(("error", stop.reason))
            self._finish(stop.reason, run_terminate=False, quiet=True)
        except _Die as die:
            self._report(("error", die.reason))
            self._finish(die.reason, run_terminate=False, quiet=True)
        except Exception as exc:
            log.error("%r: init of %s failed", rt.pid, p.target, exc_info=True)
            reason = reason_of(exc)
            self._report(("error", reason))
            self._finish(reason, run_terminate=False, quiet=True)
        if result is IGNORE:
            self._report(("ignore",))
            self._finish("normal", run_terminate=False, quiet=True)
        link_to = p.options.get("parent")
        if link_to is not None and p.options.get("link_parent"):
            # linked only once init succeeded: a failed start sends its caller no exit
            # signal (OTP's start_link)
            rt.link(link_to)
        self._report(("ok", rt.pid))
        self._booted = True
        with contextlib.suppress(AttributeError):
            self._mgr.transport.set_watch(rt.fds())
        try:
            self._run_mailbox()
        except _Die as die:
            self._finish(die.reason, run_terminate=False)

    def receiveMessage(self, msg: Any, sender: Any) -> Any:  # noqa: N802 - Thespian's name
        rt = self._rt
        if not self._booted:
            # a process created by Thespian's admin (the kernel) boots on its first
            # message: the admin answers the creator only once the new actor's loop
            # has run, so a failed init must not end the process before that
            if msg == BOOT and self._payload.options.get("defer_boot"):
                self._boot()
                return ThespianWatch(rt.fds())
            return None
        try:
            if isinstance(msg, WatchMessage):
                rt.handle_ready(list(msg.ready))
            elif isinstance(msg, WakeupMessage):
                payload = msg.payload
                if isinstance(payload, tuple) and payload[:1] == ("otpkit",):
                    rt.fire_timer(payload[1])
            elif isinstance(msg, ActorExitRequest):
                # the whole actor system is shutting down
                self._finish("shutdown", run_terminate=True)
            elif isinstance(msg, ChildActorExited):
                pass  # links and closed sockets already told us, with the reason
            self._run_mailbox()
        except _Die as die:
            self._finish(die.reason, run_terminate=False)
        except Exception as exc:
            # a fault in the runtime itself: crash this process (its supervisor decides),
            # never let Thespian retry the message or limp on in an unknown state
            log.critical("%r: runtime fault", rt.pid, exc_info=True)
            self._finish(reason_of(exc), run_terminate=True)
        return ThespianWatch(rt.fds())

    def _run_mailbox(self) -> None:
        rt = self._rt
        while rt.mailbox:
            rt.tend_challenges()  # a new connection's challenge waits for no backlog
            self._dispatch(rt.mailbox.popleft())

    def _dispatch(self, item: tuple[Any, ...]) -> None:
        actor = self._actor
        assert actor is not None
        kind = item[0]
        from_: From | None = None
        try:
            if kind == CALL:
                from_ = From(item[1], item[2])
                result = actor.handle_call(item[3], from_)
                if result is not NOREPLY:
                    self._rt.reply(from_, result)
            elif kind == CAST:
                actor.handle_cast(item[2])
            elif kind == MSG:
                actor.handle_info(item[2])
            elif kind == INFO:
                msg = item[2]
                if isinstance(msg, _runtime.SysStop):
                    raise Stop(msg.reason)
                if isinstance(msg, ExitSignal) and msg.pid == self._rt.parent:
                    # a trapping actor told to stop by its parent (gen_server's rule)
                    raise Stop(msg.reason)
                actor.handle_info(msg)
        except Stop as stop:
            if stop.has_reply and from_ is not None:
                self._rt.reply(from_, stop.reply)
            self._finish(stop.reason, run_terminate=True)
        except Exception as exc:
            log.error(
                "%r (%s) crashed handling %r",
                self._rt.pid,
                type(actor).__name__,
                item[-1],
                exc_info=True,
            )
            self._finish(reason_of(exc), run_terminate=True)

    def _finish(self, reason: Any, run_terminate: bool, quiet: bool = False) -> None:
        """End this process with ``reason``: terminate, tell every peer, exit."""
        self._ending = True
        actor, rt = self._actor, self._rt
        if run_terminate and actor is not None:
            try:
                actor.terminate(reason)
            except _Die as die:
                reason = die.reason
            except Exception as exc:
                log.error("%r: terminate raised", rt.pid, exc_info=True)
                reason = reason_of(exc)
        if not quiet and not is_normal_exit(reason):
            log.error("%r (%s) exited: %r", rt.pid, type(actor).__name__, reason)
        halt = getattr(actor, "halt_node_on_exit", None)
        try:
            rt.goodbye(reason)
        finally:
            if halt is not None and halt(reason):
                with contextlib.suppress(OSError):
                    os.killpg(os.getpgrp(), signal.SIGKILL)
            _logs.drain_stdio()
            os._exit(0)
