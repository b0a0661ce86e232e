"""The node's metrics service: one thread of the starting program that applies every
process's updates to a ``prometheus_client`` registry, which ``/metrics`` serves.

It is made before the node's first fork, so every process inherits the sending end of
its socket pair (:mod:`otpkit.metrics._send`); forked processes close the receiving end.
A datagram that is not a well-formed update of a listed metric is dropped and counted
(``otpkit_metrics_dropped_total{reason="malformed"}``); so is a new series past
:data:`MAX_SERIES` of one metric (``reason="series"``), which bounds the memory a bug or
a flood of peers' names could take.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import socket
import threading
from typing import Any

import msgpack  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from otpkit.metrics import _send
from otpkit.metrics._catalog import METRICS

#: The most series one metric keeps (label combinations).
MAX_SERIES = 5000
#: Largest datagram read (an update is well under 1 KiB).
_MAX_DATAGRAM = 8192

_receivers: set[socket.socket] = set()


def _close_receivers_in_child() -> None:
    for sock in list(_receivers):  # detached: the object must not close a reused fd
        with contextlib.suppress(OSError):
            os.close(sock.detach())
    _receivers.clear()


os.register_at_fork(after_in_child=_close_receivers_in_child)


def _build(registry: CollectorRegistry) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, m in METRICS.items():
        if m.kind == "counter":
            out[name] = Counter(name, m.help, m.labels, registry=registry)
        elif m.kind == "gauge":
            out[name] = Gauge(name, m.help, m.labels, registry=registry)
        else:
            out[name] = Histogram(name, m.help, m.labels, registry=registry, buckets=m.buckets)
    return out


class Service:
    """Receive the node's updates; ``exposition()`` is the text ``/metrics`` answers."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics = _build(self.registry)
        self._series: dict[str, set[tuple[str, ...]]] = {name: set() for name in METRICS}
        self._lock = threading.Lock()
        self._recv, send = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):  # a deeper queue rides out a burst of updates
            send.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self._send = send
        _receivers.add(self._recv)
        self._recv.settimeout(0.25)
        self._stopping = False
        self._syncs: dict[int, threading.Event] = {}
        self._tokens = itertools.count(1)
        _send.attach(send)
        self._thread = threading.Thread(target=self._loop, daemon=True, name="otpkit-metrics")
        self._thread.start()

    # ------------------------------------------------------------------ reading

    def _loop(self) -> None:
        while not self._stopping:
            try:
                data = self._recv.recv(_MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError:
                return
            self.apply(data)

    def apply(self, data: bytes) -> bool:
        """Apply one update; False (and counted) when it is malformed or over the cap."""
        update = _decode(data)
        if update is None:
            self._drop("malformed")
            return False
        op, name, values, value = update
        if op == _send.SYNC:
            event = self._syncs.pop(int(value), None)
            if event is not None:
                event.set()
            return True
        metric = self._metrics[name]
        key = tuple(values)
        with self._lock:
            series = self._series[name]
            if op == _send.CLEAR:
                series.clear()
                metric.clear()
                return True
            if op == _send.FORGET:
                if key in series:
                    series.discard(key)
                    with contextlib.suppress(KeyError):
                        metric.remove(*values)
                return True
            if key not in series:
                if len(series) >= MAX_SERIES:
                    self._metrics["otpkit_metrics_dropped_total"].labels("series").inc()
                    return False
                series.add(key)
            target = metric.labels(*values) if values else metric
            try:
                if op == _send.INC:
                    if METRICS[name].kind == "counter" and value < 0:
                        raise ValueError("a counter only goes up")
                    target.inc(value)
                elif op == _send.SET:
                    if METRICS[name].kind != "gauge":
                        raise ValueError("only a gauge is set")
                    target.set(value)
                else:
                    if METRICS[name].kind != "histogram":
                        raise ValueError("only a histogram observes")
                    target.observe(value)
            except (ValueError, AttributeError):
                self._metrics["otpkit_metrics_dropped_total"].labels("malformed").inc()
                return False
        return True

    def sync(self, timeout: float = 5.0) -> bool:
        """Wait until every update this process sent before is applied (the socket
        keeps one sender's order). False if the service did not get there in time."""
        token = next(self._tokens)
        event = self._syncs[token] = threading.Event()
        if not _send._emit(msgpack.packb([_send.SYNC, "", [], float(token)])):
            self._syncs.pop(token, None)
            return False
        done = event.wait(timeout)
        self._syncs.pop(token, None)
        return done

    def _drop(self, reason: str) -> None:
        with self._lock:
            self._metrics["otpkit_metrics_dropped_total"].labels(reason).inc()

    # ------------------------------------------------------------------ serving

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return bytes(generate_latest(self.registry))

    def close(self) -> None:
        self._stopping = True
        if _send._sock is self._send:
            _send.attach(None)
        self._thread.join(timeout=2)
        _receivers.discard(self._recv)
        self._recv.close()
        self._send.close()


def _decode(data: bytes) -> tuple[int, str, list[str], float] | None:
    try:
        update = msgpack.unpackb(data, use_list=True, raw=False, strict_map_key=True)
    except Exception:
        return None
    if not isinstance(update, list) or len(update) != 4:
        return None
    op, name, values, value = update
    ops = (_send.INC, _send.SET, _send.OBSERVE, _send.FORGET, _send.CLEAR)
    if type(op) is int and op == _send.SYNC:
        ok = name == "" and values == [] and type(value) is float and value > 0
        return (op, name, [], value) if ok else None
    if type(op) is not int or op not in ops:
        return None
    if not isinstance(name, str) or name not in METRICS:
        return None
    wanted = 0 if op == _send.CLEAR else len(METRICS[name].labels)
    if not isinstance(values, list) or len(values) != wanted:
        return None
    if not all(isinstance(v, str) and len(v) <= 256 for v in values):
        return None
    if type(value) not in (int, float) or not math.isfinite(value):
        return None
    return op, name, values, float(value)
