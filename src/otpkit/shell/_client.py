"""The shell's side of the admin service: a hidden node connected to one cluster node.

:func:`connect` starts this program's node as a **hidden** node (dist only: no registry,
no quorum, no scheduler, so it can never hold a name, vote or run a job), dials the
target and waits for the cookie handshake. Every request then goes to the target's
admin service - to its pid, so that a target lost during a request ends that request at
once (see ``ask_admin``); ``forward`` requests reach the other nodes through it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from otpkit.actors import Pid
from otpkit.admin import ACT_TIMEOUT, ask_admin
from otpkit.distribution import DistConfig, NodeDown, ProbeError, probe_peer
from otpkit.distribution import monitor_nodes as _monitor_nodes
from otpkit.distribution import nodes as _nodes
from otpkit.errors import CallTimeout, Exit, NodeError

__all__ = ["AdminClient", "ConnectError", "LostConnection", "RequestError", "connect", "peer_name"]

#: Seconds a request may take: the service's slowest action plus the hops.
REQUEST_TIMEOUT = ACT_TIMEOUT + 10.0


class ConnectError(Exception):
    """The target could not be reached, or refused the handshake."""


class LostConnection(Exception):
    """The connection to the target node is gone."""


class RequestError(Exception):
    """The admin service refused a request; the message is its one-line reason."""


def parse_target(text: str) -> tuple[str | None, str, int]:
    """``HOST:PORT`` or ``NAME@HOST:PORT`` as ``(name or None, host, port)``.

    Raises:
        ValueError: naming what is wrong.
    """
    name: str | None = None
    rest = text
    if "@" in text:
        app, _, rest = text.partition("@")
        host_part = rest.rpartition(":")[0]
        name = f"{app}@{host_part}"
    host, sep, raw_port = rest.rpartition(":")
    if not sep or not host or not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
        raise ValueError(f"{text!r}: expected HOST:PORT (or NAME@HOST:PORT)")
    return name, host.strip("[]"), int(raw_port)


def peer_name(host: str, port: int, cookie: bytes, timeout: float = 3.0) -> str:
    """The node name that listens at ``host:port``, once it proved it holds ``cookie``
    (see :func:`otpkit.distribution.probe_peer`).

    Raises:
        ConnectError: nothing answers there, not as a dist node, or with another cookie.
    """
    try:
        return probe_peer(host, port, cookie, timeout)
    except ProbeError as exc:
        raise ConnectError(str(exc)) from None


def _source_address(host: str, port: int) -> str:
    """The local address that routes to ``host`` (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, port))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


class AdminClient:
    """A connection to ``target``'s admin service from this program's hidden node."""

    def __init__(self, node: Any, target: str, log_dir: str | None) -> None:
        self.node = node
        self.target = target
        self._log_dir = log_dir
        # the program's runtime takes one request at a time (a second one, from
        # another thread, raises); the watcher thread and the shell's own requests
        # take turns under this lock
        self._lock = threading.RLock()
        self._lost = False
        #: the target's admin service, looked up once (see ask_admin)
        self._admin: dict[str, Pid] = {}
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ requests

    def request(self, *request: Any, node: str | None = None, timeout: float | None = None) -> Any:
        """Ask the target's admin service (or, with ``node``, that node's through the
        target); the answer's value.

        Raises:
            RequestError: the service refused the request (its one line).
            LostConnection: the target is gone.
        """
        if node is not None and node != self.target:
            request = ("forward", node, request)
        with self._lock:
            self.check()
            wait = timeout or REQUEST_TIMEOUT
            try:
                kind, answer = ask_admin(self.target, tuple(request), wait, self._admin)
            except TypeError as exc:  # a value that cannot travel: "cannot send ..."
                raise RequestError(str(exc)) from None
            if (kind, answer) == ("exit", "noconnection"):
                self._lost = True
                raise LostConnection(self.target)
            if kind != "ok":
                self.check()
                if kind == "exit":
                    raise RequestError(
                        f"the admin service of {self.target} ended during the request ({answer})"
                    )
                raise RequestError(f"{self.target} did not answer within {wait:g} s")
        if isinstance(answer, tuple | list) and len(answer) == 2 and answer[0] == "ok":
            return answer[1]
        if isinstance(answer, tuple | list) and len(answer) == 2 and answer[0] == "error":
            raise RequestError(str(answer[1]))
        raise RequestError(f"unexpected answer {answer!r:.80}")

    def check(self) -> None:
        """Raise :class:`LostConnection` if the target is no longer connected."""
        if self._lost:
            raise LostConnection(self.target)
        try:
            with self._lock:
                up = self.target in _nodes(timeout=5.0)
        except (Exit, CallTimeout, NodeError):
            up = False
        if not up:
            self._lost = True
            raise LostConnection(self.target)

    @property
    def pid(self) -> Pid:
        pid: Pid = self.node.pid
        return pid

    def receive(self, timeout: float) -> Any:
        """The next message to this program, or None after ``timeout``; a ``NodeDown``
        of the target raises :class:`LostConnection`."""
        try:
            with self._lock:
                msg = self.node.receive(timeout)
        except TimeoutError:
            return None
        if isinstance(msg, NodeDown) and msg.node == self.target:
            self._lost = True
            raise LostConnection(self.target)
        return msg

    def watch(self, on_lost: Callable[[], None], interval: float = 1.0) -> None:
        """Call ``on_lost`` from a thread as soon as the target is gone (checked every
        ``interval`` seconds), so an idle shell notices too."""

        def run() -> None:
            while not self._stop.wait(interval):
                # a request under way notices a lost target itself: no need to wait for it
                if not self._lock.acquire(blocking=False):
                    continue
                try:
                    if self._stop.is_set():  # closed meanwhile: the node is stopping
                        return
                    self.check()
                except LostConnection:
                    lost = True
                else:
                    lost = False
                finally:
                    self._lock.release()
                if lost:
                    on_lost()
                    return

        self._watcher = threading.Thread(target=run, name="otpkit-shell-watch", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        """Stop this program's node and remove its scratch directory."""
        self._stop.set()
        with self._lock, contextlib.suppress(Exception):
            self.node.stop(timeout=5.0)
        self.remove_scratch()

    def remove_scratch(self) -> None:
        """Remove the node's scratch (log) directory; idempotent."""
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)


def connect(
    target: str, cookie: bytes, timeout: float = 10.0, name: str | None = None
) -> AdminClient:
    """Start this program's hidden node and connect it to ``target`` (``HOST:PORT`` or
    ``NAME@HOST:PORT``).

    Raises:
        ValueError: ``target`` is malformed.
        ConnectError: one line: unreachable, not a node, or the handshake failed
            (a wrong cookie).
    """
    from otpkit.node import Node  # noqa: PLC0415 - the node module imports this package

    given, host, port = parse_target(target)
    peer = peer_name(host, port, cookie, min(timeout, 5.0))
    if given is not None and given != peer:
        raise ConnectError(f"{host}:{port} is node {peer}, not {given}")
    source = _source_address(host, port)
    me = name or f"shell-{os.getpid()}@{source}"
    # the shell's own node logs to a scratch directory, removed when the shell ends
    logging.getLogger("otpkit").addHandler(logging.NullHandler())
    log_dir = tempfile.mkdtemp(prefix="otpkit-shell-")
    config = DistConfig(source, 0, cookie, hidden=True)
    try:
        node = Node(me, dist=config, log_dir=log_dir).start()
    except (NodeError, OSError) as exc:
        shutil.rmtree(log_dir, ignore_errors=True)
        raise ConnectError(f"cannot start the shell's node {me}: {exc}") from None
    client = AdminClient(node, peer, log_dir)
    try:
        _monitor_nodes(True)
        from otpkit.distribution import connect_node  # noqa: PLC0415

        connect_node(peer, host, port)
        deadline = time.monotonic() + timeout
        while peer not in _nodes():
            if time.monotonic() >= deadline:
                raise ConnectError(
                    f"cannot connect to {peer} at {host}:{port}: the handshake failed "
                    f"within {timeout:g} s (wrong cookie?)"
                )
            time.sleep(0.05)
        # flush the connection's own NodeUp (a hidden node gets none, but be sure)
        node.flush()
    except BaseException:
        client.close()
        raise
    return client
