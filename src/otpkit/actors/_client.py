"""The runtime of a program that started a node (or joined one): a process without a
Thespian actor, whose mailbox is read when the program asks (``receive``, ``call``).

It always traps exits - an exit signal becomes an :class:`ExitSignal` message - so no
actor can make the starting program exit. Every operation holds one lock, so several
threads of the program may use it.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from otpkit.actors._frames import CALL, CAST, EXIT, INFO, MSG
from otpkit.actors._pid import ExitSignal, Pid
from otpkit.actors._runtime import NodeIdentity, Runtime

F = TypeVar("F", bound=Callable[..., Any])

_EMPTY = object()


def _locked(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: ClientRuntime, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class ClientRuntime(Runtime):
    """The starting program's own process."""

    handshake_wait = 2.0  # see Runtime.handshake_wait

    def __init__(self, node: NodeIdentity) -> None:
        super().__init__(node, trap_exit=True)
        self.lock = threading.RLock()
        self.kernel: Pid | None = None

    def exit_signal(self, src: Pid, reason: Any, linked: bool) -> None:
        self.mailbox.append((INFO, None, ExitSignal(src, reason)))

    def _on_frame_from_self(self, frame: tuple[Any, ...]) -> None:
        if frame[0] == EXIT:  # an exit signal to itself: trapped like every other
            self.mailbox.append((INFO, None, ExitSignal(self.pid, frame[1])))
            return
        super()._on_frame_from_self(frame)

    call = _locked(Runtime.call)
    multi_call = _locked(Runtime.multi_call)
    sys_call = _locked(Runtime.sys_call)
    send = _locked(Runtime.send)
    cast = _locked(Runtime.cast)
    reply = _locked(Runtime.reply)
    link = _locked(Runtime.link)
    unlink = _locked(Runtime.unlink)
    monitor = _locked(Runtime.monitor)
    demonitor = _locked(Runtime.demonitor)
    exit = _locked(Runtime.exit)
    register = _locked(Runtime.register)
    unregister = _locked(Runtime.unregister)
    whereis = _locked(Runtime.whereis)

    @_locked
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
        """Ask the node's kernel to start the process (it is the kernel's child)."""
        if self.kernel is None:
            raise RuntimeError("this client has no node to spawn on")
        opts = dict(options or {})
        opts["parent"] = self.pid
        opts["link_parent"] = link
        result: tuple[Any, ...] = self.call(
            self.kernel,
            ("$spawn", target, tuple(args), dict(kwargs or {}), name, opts),
            timeout=60.0,
        )
        return result

    @_locked
    def receive(self, timeout: float | None = None) -> Any:
        """The next message, or raise TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while self.mailbox:
                item = self.mailbox.popleft()
                kind = item[0]
                if kind in (MSG, CAST):
                    return item[2]
                if kind == INFO:
                    return item[2]
                if kind == CALL:
                    continue  # a client answers no calls
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no message within {timeout}s")
            self.pump(remaining if remaining is not None else 1.0)

    @_locked
    def flush(self) -> list[Any]:
        """Every message already here (after reading what the sockets hold)."""
        self.pump(0)
        out = []
        while self.mailbox:
            item = self.mailbox.popleft()
            if item[0] != CALL:
                out.append(item[2])
        return out
