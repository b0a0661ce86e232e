"""Erlang's built-ins for the current process: send, call, link, monitor, exit, ...

They act for the process they are called in: an actor (inside its handlers and
``init``) or the program that started a node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otpkit.actors import _runtime
from otpkit.actors._pid import From, Pid, Ref
from otpkit.actors._runtime import Runtime
from otpkit.errors import AlreadyStarted, BadName, Exit, NoRuntime, StartError


def runtime() -> Runtime:
    rt = _runtime.current()
    if rt is None:
        raise NoRuntime("no otpkit process here: call this in an actor or after Node.start()")
    return rt


def self() -> Pid:
    """The pid of the calling process."""
    return runtime().pid


def send(dest: Pid | str | tuple[str, str], msg: Any) -> None:
    """Send ``msg`` (any picklable value; msgpack-able across nodes) without waiting.

    At most once, in order between one sender and one receiver; a dead destination is
    not an error. ``dest`` may be a locally registered name, or ``(name, node)``: a
    system service of another node (its registry, a singleton manager).
    """
    rt = runtime()
    if isinstance(dest, tuple):
        name, node = dest
        rt.send_named(name, node, msg)
        return
    pid = _resolve(rt, dest)
    if pid is not None:
        rt.send(pid, msg)


def cast(dest: Pid | str, msg: Any) -> None:
    """Deliver ``msg`` to the destination's ``handle_cast``; never raises for a dead one."""
    rt = runtime()
    pid = _resolve(rt, dest)
    if pid is not None:
        rt.cast(pid, msg)


def call(dest: Pid | str, request: Any, timeout: float = 5.0) -> Any:
    """Ask ``dest``'s ``handle_call`` and wait for the reply.

    Raises :class:`~otpkit.errors.CallTimeout` after ``timeout`` seconds (a reply that
    comes later is dropped) and :class:`~otpkit.errors.Exit` with the callee's exit
    reason if it ends first (``"noproc"`` if there is no such process). Works inside a
    handler: messages that arrive meanwhile wait in the mailbox.
    """
    rt = runtime()
    pid = _resolve(rt, dest)
    if pid is None:
        raise Exit("noproc", dest)
    return rt.call(pid, request, timeout)


def multi_call(
    dests: list[Pid | tuple[str, str]],
    request: Any,
    timeout: float = 5.0,
    enough: int | None = None,
    counts: Callable[[Any], bool] | None = None,
) -> list[tuple[str, Any]]:
    """Ask every process in ``dests`` at once and wait (at most ``timeout`` in all) for
    every answer: one ``("ok", reply)``, ``("exit", reason)`` or ``("timeout", None)``
    per destination, in order. A round trip to N nodes costs one, not N.

    A destination may be a pid or ``(name, node)``: the process registered as ``name``
    on ``node`` (another node's dist service; it is not monitored, so a lost one
    answers ``("timeout", None)``). With ``enough``, return as soon as that many
    destinations answered ``("ok", reply)`` with a reply that ``counts`` (default: a
    truthy one) - a majority round; the ones still out are ``("timeout", None)``."""
    return runtime().multi_call(list(dests), request, timeout, enough, counts)


def stop(pid: Pid | str, reason: Any = "normal", timeout: float | None = None) -> None:
    """End ``pid`` in order, as OTP's ``gen_server:stop``: its ``terminate(reason)`` runs
    and it exits with ``reason``; returns once it has. Raises ``Exit`` if it exits with
    another reason (``"noproc"`` if it does not exist) and ``CallTimeout`` after
    ``timeout`` seconds (default: wait as long as it takes)."""
    rt = runtime()
    target = _resolve(rt, pid)
    if target is None:
        raise Exit("noproc", pid)
    try:
        rt.sys_call(target, ("stop", reason), 1e6 if timeout is None else timeout)
    except Exit as exc:
        if exc.reason == reason:
            return
        raise
    raise Exit(("unexpected_reply", "stop"), target)


def reply(to: From, value: Any) -> None:
    """Answer a call that ``handle_call`` left open with :data:`~otpkit.NOREPLY`."""
    runtime().reply(to, value)


def link(pid: Pid) -> None:
    """Link the calling process and ``pid``: an abnormal exit of either reaches the other."""
    runtime().link(pid)


def unlink(pid: Pid) -> None:
    runtime().unlink(pid)


def monitor(pid: Pid) -> Ref:
    """Watch ``pid``: one ``Down(ref, pid, reason)`` message when it ends."""
    return runtime().monitor(pid)


def demonitor(ref: Ref, flush: bool = False) -> bool:
    """Stop watching; with ``flush`` a ``Down`` already queued is removed too."""
    return runtime().demonitor(ref, flush)


def trap_exit(flag: bool = True) -> bool:
    """Turn exit signals into ``ExitSignal`` messages (True) or not; returns the old value."""
    rt = runtime()
    old, rt.trap_exit = rt.trap_exit, flag
    return old


def exit(pid: Pid, reason: Any) -> None:
    """Send an exit signal. ``"kill"`` cannot be trapped; the process ends as ``"killed"``."""
    runtime().exit(pid, reason)


def register(name: str, pid: Pid | None = None) -> None:
    """Register ``pid`` (default: the caller) under a local name. Raises BadName if taken."""
    rt = runtime()
    _check_name(name)
    target = pid or rt.pid
    ok = rt.register(name) if target == rt.pid else rt.sys_call(target, ("register", name))
    if ok is not True:
        raise BadName(f"name {name!r} is already registered (by {rt.whereis(name)!r})")


def unregister(name: str) -> None:
    rt = runtime()
    holder = rt.whereis(name)
    if holder is None:
        raise BadName(f"name {name!r} is not registered")
    if holder == rt.pid:
        rt.unregister(name)
    else:
        rt.sys_call(holder, ("unregister", name))


def whereis(name: str) -> Pid | None:
    """The pid registered locally under ``name``, or None."""
    return runtime().whereis(name)


def spawn(target: Any, *args: Any, name: str | None = None, **kwargs: Any) -> Pid | None:
    """Start an actor process (``init(*args, **kwargs)`` runs first) and return its pid.

    Raises :class:`~otpkit.errors.StartError` if ``init`` fails (``AlreadyStarted`` if
    ``name`` is taken); returns None if ``init`` returned ``IGNORE``.
    """
    return _start(target, args, kwargs, link=False, name=name)


def spawn_link(target: Any, *args: Any, name: str | None = None, **kwargs: Any) -> Pid | None:
    """As :func:`spawn`, linked to the caller before the caller gets the pid."""
    return _start(target, args, kwargs, link=True, name=name)


def _start(target: Any, args: Any, kwargs: Any, link: bool, name: str | None) -> Pid | None:
    if name is not None:
        _check_name(name)
    rt: Any = runtime()
    result = rt.spawn(target, tuple(args), dict(kwargs), link=link, name=name)
    if result[0] == "ok":
        pid: Pid = result[1]
        return pid
    if result[0] == "ignore":
        return None
    reason = result[1]
    if isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "already_started":
        raise AlreadyStarted(reason[1])
    raise StartError(reason)


def send_after(delay: float, msg: Any) -> int:
    """Deliver ``msg`` to the caller's ``handle_info`` after ``delay`` seconds."""
    rt: Any = runtime()
    if not hasattr(rt, "send_after"):
        raise NoRuntime("timers need an actor process")
    return int(rt.send_after(delay, msg))


def cancel_timer(timer: int) -> bool:
    rt: Any = runtime()
    return bool(rt.cancel_timer(timer))


def make_ref() -> Ref:
    return runtime().make_ref()


def process_info(pid: Pid, timeout: float = 5.0) -> dict[str, Any]:
    """Links, monitors, queue length, trap_exit and names of a live process."""
    rt = runtime()
    info: dict[str, Any] = rt.sys_call(pid, ("info",), timeout)
    return info


def _resolve(rt: Runtime, dest: Pid | str) -> Pid | None:
    if isinstance(dest, Pid):
        return dest
    if isinstance(dest, str):
        return rt.whereis(dest)
    raise TypeError(f"destination must be a Pid or a registered name, not {type(dest).__name__}")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name) > 48 or "/" in name or "\0" in name:
        raise BadName(
            f"local name {name!r}: expected a non-empty str of at most 48 "
            "characters without '/' or NUL"
        )
