"""The send-only side: every process of a node updates a metric with one datagram.

The node's starting program makes a datagram socket pair before its first fork
(:func:`otpkit.metrics._service.Service`); each process it forks inherits the sending
end, held here. An update is one ``send`` that never blocks: when the service is behind
(its queue full) the update is dropped and counted, and the count is sent with the next
update that gets through. Outside a node (no service) every function is a no-op, so a
decision or a unit test never needs one.

A label value is any ``str()``-able value; names and labels must be those of
:data:`~otpkit.metrics._catalog.METRICS` (a mistake raises ``ValueError``: it is a bug of
the caller, found by its tests).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any

import msgpack  # type: ignore[import-untyped]

from otpkit.metrics._catalog import METRICS, problem

INC, SET, OBSERVE, FORGET, CLEAR, SYNC = 1, 2, 3, 4, 5, 6

_sock: socket.socket | None = None
_lock = threading.Lock()
_dropped = 0


def attach(sock: socket.socket | None) -> None:
    """Send this process's (and its future children's) updates to ``sock``."""
    global _sock, _dropped
    _sock = sock
    _dropped = 0


def enabled() -> bool:
    """Whether this process has a service to send to."""
    return _sock is not None


def inc(name: str, labels: Mapping[str, Any] | None = None, amount: float = 1.0) -> bool:
    """Add ``amount`` to a counter (or a gauge)."""
    return _send(INC, name, labels, amount)


def gauge(name: str, labels: Mapping[str, Any] | None = None, value: float = 0.0) -> bool:
    """Set a gauge. False when the update was dropped (the service behind): a caller
    that sends only changes must send the value again."""
    return _send(SET, name, labels, value)


def observe(name: str, labels: Mapping[str, Any] | None = None, value: float = 0.0) -> bool:
    """Record one value in a histogram."""
    return _send(OBSERVE, name, labels, value)


def forget(name: str, labels: Mapping[str, Any] | None = None) -> bool:
    """Remove one labelled series (a peer gone, a singleton stopped)."""
    return _send(FORGET, name, labels, 0.0)


def forget_all(name: str) -> bool:
    """Remove every series of ``name``: what a restarted process sends before its own
    values, so none its previous incarnation set stays behind."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}")
    return _emit(msgpack.packb([CLEAR, name, [], 0.0]))


def _send(op: int, name: str, labels: Mapping[str, Any] | None, value: float) -> bool:
    if _sock is None:
        return True
    text = {k: str(v) for k, v in (labels or {}).items()}
    why = problem(name, text)
    if why is not None:
        raise ValueError(why)
    values = [text[k] for k in METRICS[name].labels]
    return _emit(msgpack.packb([op, name, values, float(value)]))


def _emit(data: bytes) -> bool:
    global _dropped
    sock = _sock
    if sock is None:
        return True
    with _lock:
        if _dropped:
            note = msgpack.packb([INC, "otpkit_metrics_dropped_total", ["full"], _dropped])
            if _try(sock, note):
                _dropped = 0
        if _try(sock, data):
            return True
        _dropped += 1
        return False


def _try(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.send(data, socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False  # the service is gone: the node is stopping
    return True


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a fork while another thread sent keeps no held lock


with contextlib.suppress(AttributeError):
    os.register_at_fork(after_in_child=_after_fork_in_child)
