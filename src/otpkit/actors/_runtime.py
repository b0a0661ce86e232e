"""The per-OS-process runtime: connections, links, monitors, exit signals, selective receive.

Each otpkit process is one OS process (a Thespian actor under ``multiprocTCPBase``; the
program that started a node has one too, a *client*). Processes of one node talk over
Unix stream sockets in the abstract namespace (``\\0otpkit/<node>/<creation>/<pid>``):
no file to clean up, gone the instant the process dies. Every connection starts with a
challenge that proves both ends hold the node's key, and its frames are authenticated
with keys of that connection alone (:mod:`._wire`). Thespian creates and reaps the
processes; it carries none of their messages, because its transport costs ~0.7 ms and an
ACK per message, and because a handler that blocks (a ``call``) stops Thespian's loop in
that process.

Why sockets give OTP's semantics almost for free:

* FIFO per pair: a process sends to a peer on one connection (its *outbound* one), so
  messages from one sender to one receiver arrive in send order.
* Death is a closed socket: when a process ends, the kernel closes every connection it
  held; a graceful end first writes ``BYE(reason)`` on each of them. A peer that sees
  ``BYE`` or end-of-file learns that the process is gone and why (``"killed"`` if no
  ``BYE`` came: it was SIGKILLed). Before acting on it, the peer reads whatever is still
  buffered on the dead process's other connection, so a ``Down`` never overtakes a
  message sent before the death.
* A monitor is local state plus a connection to the target: nothing to undo on the
  target's side, and ``noproc`` is a refused connect.
* ``call`` blocks in a selective receive over the process's own sockets: replies are
  matched by reference, everything else is queued for later, exit signals act at once.
  Two processes calling each other both end in :class:`~otpkit.errors.CallTimeout`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import select
import signal
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from otpkit.actors import _logs, _wire
from otpkit.actors._frames import (
    BYE,
    CALL,
    CAST,
    EXIT,
    FRAME_ARITY,
    HELLO,
    INFO,
    LINK,
    MSG,
    REPLY,
    STARTED,
    SYS,
    UNLINK,
)
from otpkit.actors._pid import Down, ExitSignal, From, Pid, Ref
from otpkit.actors._proc import process_start_ticks
from otpkit.actors._stream import read_frames
from otpkit.errors import CallTimeout, Exit, FrameError

log = logging.getLogger("otpkit.actors")

_POLLIN = select.POLLIN | select.POLLPRI
_POLLERR = select.POLLERR | select.POLLHUP | select.POLLNVAL
_DOWN_MEMORY = 4096


class _Die(BaseException):
    """Unwinds the process: it must end with ``reason`` (an exit signal it does not trap)."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """What every process of a node knows about the node it belongs to."""

    name: str
    creation: int


def address_of(pid: Pid) -> str:
    """The abstract Unix socket address where ``pid`` listens."""
    return f"\0otpkit/{pid.node}/{pid.creation}/{pid.id}.{pid.serial}"


def name_address(node: NodeIdentity, name: str) -> str:
    """The abstract Unix socket address that a local name binds."""
    return f"\0otpkit/{node.name}/{node.creation}/n/{name}"


# Sockets of this process's runtime: a forked child closes them at once, so that a
# process's death is not hidden by a copy of its sockets living on in a child.
_live_sockets: set[socket.socket] = set()
_close_in_children: set[int] = set()
_current: Runtime | None = None


def _after_fork_in_child() -> None:
    global _current
    for sock in list(_live_sockets):
        with contextlib.suppress(OSError):
            os.close(sock.detach())
    _live_sockets.clear()
    for fd in list(_close_in_children):
        with contextlib.suppress(OSError):
            os.close(fd)
    _close_in_children.clear()
    _current = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def current() -> Runtime | None:
    """The runtime of this OS process, if it has one."""
    return _current


def set_current(rt: Runtime | None) -> None:
    global _current
    _current = rt


def close_in_children(fd: int) -> None:
    """Make sure no process forked from this one keeps ``fd`` open."""
    _close_in_children.add(fd)


def close_here(fd: int) -> None:
    """Close ``fd`` (one given to :func:`close_in_children`) and forget it: its number,
    reused by a later descriptor, must not be closed in the next fork's child."""
    _close_in_children.discard(fd)
    with contextlib.suppress(OSError):
        os.close(fd)


def own_socket(sock: socket.socket, on: bool = True) -> None:
    """``sock`` belongs to this process alone: a process forked from it closes its copy
    at once (``on=False`` before closing it here)."""
    if on:
        _live_sockets.add(sock)
    else:
        _live_sockets.discard(sock)


class SysStop:
    """In a mailbox: end this process with ``terminate(reason)`` (``otpkit.stop``)."""

    __slots__ = ("reason",)

    def __init__(self, reason: Any) -> None:
        self.reason = reason


class RemoteHooks:
    """How a runtime reaches pids on other nodes. ``dist`` plugs an implementation in.

    Without one, a remote pid is unreachable: sends are dropped (sends are at-most-once),
    ``call`` raises ``Exit("noconnection")``, ``monitor`` delivers ``Down(...,
    "noconnection")`` and ``link`` an exit signal ``"noconnection"`` - what a process
    sees when the node is down.

    The inbound half needs no hook: a local process accepts any authenticated connection
    whose ``HELLO`` names a pid, remote or not. So ``dist`` delivers a remote sender's
    frames by opening, on the receiving node, one connection per remote sender to the
    local target, introduced with the remote pid; it writes ``BYE(reason)`` on it when the
    remote process ends, or ``BYE("noconnection")`` when its node is lost. Links,
    monitors, ``call`` replies and ordering then work unchanged.
    """

    def send(self, rt: Runtime, dst: Pid, frame: tuple[Any, ...], watch: bool = False) -> bool:
        """Deliver ``frame`` from ``rt``'s process to ``dst``; False if it cannot be.
        With ``watch``, also as :meth:`watch` (a ``call``: one frame instead of two)."""
        return False

    def nsend(self, rt: Runtime, node: str, name: str, frame: tuple[Any, ...]) -> bool:
        """Deliver ``frame`` to the system process another node offers as ``name``."""
        return False

    def watch(self, rt: Runtime, dst: Pid) -> bool:
        """Arrange for ``rt.peer_down(dst, reason)`` when ``dst`` ends; False if unreachable."""
        return False


_remote_hooks = RemoteHooks()


def set_remote_hooks(hooks: RemoteHooks) -> None:
    """Install the cross-node transport (called by ``dist``)."""
    global _remote_hooks
    _remote_hooks = hooks


class _Conn:
    __slots__ = (
        "chan",
        "closed",
        "fd",
        "outbound",
        "peer",
        "reading",
        "sock",
        "stranger",
        "wait_until",
    )

    def __init__(
        self,
        sock: socket.socket,
        outbound: bool,
        peer: Pid | None,
        chan: _wire.Channel,
        stranger: bool = False,
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.chan = chan
        self.peer = peer
        self.outbound = outbound
        self.stranger = stranger  # accepted from another user or PID namespace
        self.closed = False
        self.reading = False  # its frames are being read and handled (see Runtime._read)
        self.wait_until = 0.0  # see Runtime.tend_challenges


#: Connections one readiness event of a listener accepts; the rest wait for the next
#: turn of the loop, so that a stranger connecting in a loop cannot keep a process in
#: its accept loop.
_ACCEPTS_PER_EVENT = 64
_LISTEN_BACKLOG = 128
#: ... when a process takes every connection queued (before it concludes that a peer
#: ended, or before it stops listening): the listener's queue and some more.
_ACCEPTS_AT_ONCE = 2 * _LISTEN_BACKLOG


#: How long a process that ends waits for its peers' answers to the challenge of the
#: connections still unproven, so that they get its BYE (a stranger's are not waited for).
_GOODBYE_CHALLENGE_WAIT = 0.5
#: ... and when a message it sent waits on one of them: a message sent is delivered
#: (as on OTP) unless its receiver stays busy in one handler this long.
_GOODBYE_MESSAGE_WAIT = 5.0


class Runtime:
    """One otpkit process's view of the world.

    Not thread-safe: an actor's runtime runs on the actor's one thread; a client runtime
    (the program that started a node) is guarded by the client's lock.
    """

    #: How long a write on a new connection waits (keeping its own sockets read) for the
    #: peer's challenge before it leaves the frame queued in the connection: a process
    #: that sends and then stays busy, or a program that does not read its sockets again
    #: for a while, must not hold its message back. A peer that does not answer in time
    #: is busy in a handler; the process then waits for none for ``handshake_rest``
    #: seconds (a supervisor stopping many busy children waits once).
    handshake_wait = 0.25
    handshake_rest = 5.0
    #: How long a busy process waits, before its next message, for the other end's
    #: answer to the challenge of a connection it just opened, or accepted on a name
    #: (a ``whereis``): that end normally waits for it, and the process's answer (a
    #: name's pid, frames queued for the peer) must not wait for the whole backlog.
    challenge_grace = 0.01

    def __init__(self, node: NodeIdentity, *, trap_exit: bool = False) -> None:
        self.node = node
        ospid = os.getpid()
        self.pid = Pid(node.name, node.creation, ospid, process_start_ticks(ospid) or 0)
        self.trap_exit = trap_exit
        self.parent: Pid | None = None
        #: the process that forked this one (differs from ``parent`` when the kernel
        #: starts a process on behalf of a client)
        self.os_parent: Pid | None = None
        self.mailbox: deque[tuple[Any, ...]] = deque()
        self.links: set[Pid] = set()
        self._monitors: dict[Ref, Pid] = {}
        self._watched: dict[Pid, set[Ref]] = {}
        self._conns: dict[int, _Conn] = {}
        self._out: dict[Pid, _Conn] = {}
        self._by_peer: dict[Pid, list[_Conn]] = {}
        self._down: OrderedDict[Pid, Any] = OrderedDict()
        # fd -> (socket, the name it binds or None, its address)
        self._listeners: dict[int, tuple[socket.socket, str | None, str]] = {}
        self._unproven = _wire.Unproven()
        self._refusals = _wire.RateLog(log)
        self._no_wait_until = 0.0  # see handshake_rest
        self._poll = select.poll()
        # the connections whose challenge this end waits on to send something (a new
        # outbound one until its keys are known, a name's until the peer is proven),
        # watched by their own poll: see tend_challenges
        self._pending: dict[int, _Conn] = {}
        self._pending_poll = select.poll()
        self._reading: list[_Conn] = []  # connections being read (see _read), innermost last
        self._ref_base = secrets.randbits(62) << 32
        self._ref_n = 0
        # the calls this process waits for: ref -> [callee, ("ok"|"exit", value) or None]
        self._await: dict[Ref, list[Any]] = {}
        self._started: dict[Ref, tuple[Any, ...]] = {}
        self._linking: set[Ref] = set()
        self._names: set[str] = set()
        self._listen(address_of(self.pid), None)

    # ------------------------------------------------------------------ sockets

    def _listen(self, address: str, name: str | None) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        sock.listen(_LISTEN_BACKLOG)
        sock.setblocking(False)
        _live_sockets.add(sock)
        self._listeners[sock.fileno()] = (sock, name, address)
        self._poll.register(sock.fileno(), _POLLIN)

    def _add_conn(
        self,
        sock: socket.socket,
        outbound: bool,
        peer: Pid | None,
        chan: _wire.Channel,
        stranger: bool = False,
    ) -> _Conn:
        sock.setblocking(False)
        _live_sockets.add(sock)
        conn = _Conn(sock, outbound, peer, chan, stranger)
        self._conns[conn.fd] = conn
        self._poll.register(conn.fd, _POLLIN)
        if peer is not None:
            self._by_peer.setdefault(peer, []).append(conn)
        return conn

    def _pend(self, conn: _Conn) -> None:
        """``conn`` has output that waits on the other end's challenge (tend_challenges)."""
        conn.wait_until = time.monotonic() + self.challenge_grace
        self._pending[conn.fd] = conn
        self._pending_poll.register(conn.fd, _POLLIN)

    def _unpend(self, conn: _Conn) -> None:
        if self._pending.pop(conn.fd, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._pending_poll.unregister(conn.fd)

    def _close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.pop(conn.fd, None)
        self._unproven.done(conn.fd)
        self._unpend(conn)
        with contextlib.suppress(KeyError, ValueError):
            self._poll.unregister(conn.fd)
        _live_sockets.discard(conn.sock)
        conn.sock.close()
        if conn.peer is not None:
            peers = self._by_peer.get(conn.peer)
            if peers and conn in peers:
                peers.remove(conn)
                if not peers:
                    del self._by_peer[conn.peer]
            if self._out.get(conn.peer) is conn:
                del self._out[conn.peer]

    def fds(self) -> list[int]:
        """Every file number this runtime needs watched for reading."""
        return [*self._listeners, *self._conns]

    def is_local(self, pid: Pid) -> bool:
        return pid.node == self.node.name and pid.creation == self.node.creation

    def connection_to(self, pid: Pid) -> _Conn | None:
        """This process's outbound connection to local ``pid``; None if it is gone."""
        conn = self._out.get(pid)
        if conn is not None:
            return conn
        if pid in self._down or not self.is_local(pid):
            return None
        address = address_of(pid)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5.0)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            return None
        conn = self._add_conn(sock, True, pid, _wire.Channel(address, listening=False))
        self._out[pid] = conn
        self._pend(conn)
        self.write(conn, _wire.encode((HELLO, self.pid)), wait=False)
        return conn

    def write(self, conn: _Conn, data: bytes, wait: bool = True) -> bool:
        """Write the frame whose pickled body is ``data`` (``_wire.encode``).

        Until the connection's challenge is answered the frame waits in its channel and
        goes out, in order, as soon as this process reads the connection again (its
        loop, a ``pump``, or before its next message: :meth:`tend_challenges`); with
        ``wait``, the write first waits for that, see ``handshake_wait``. While the
        peer's buffer is full, keep reading our own sockets so that two processes
        flooding each other cannot deadlock."""
        if conn.closed:
            return False
        chan = conn.chan
        frame = chan.send(data)
        if frame:
            return self._write_bytes(conn, frame)
        if chan.ready:
            return self._write_bytes(conn, chan.take_output())
        if wait:
            self._await_keys(conn)
        return not conn.closed

    def _await_keys(self, conn: _Conn) -> None:
        """Read our own sockets until ``conn``'s challenge is answered (its queued frames
        then go out), at most ``handshake_wait``."""
        now = time.monotonic()
        if now < self._no_wait_until:
            return
        deadline = now + self.handshake_wait
        while not conn.closed and not conn.chan.ready:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._no_wait_until = time.monotonic() + self.handshake_rest
                return
            self.pump(remaining)

    def _write_bytes(self, conn: _Conn, data: bytes) -> bool:
        """Write all of ``data`` as it is (see :meth:`write`)."""
        view = memoryview(data)
        while view:
            if conn.closed:
                return False
            try:
                sent = conn.sock.send(view)
            except BlockingIOError:
                self._wait_writable(conn)
                continue
            except OSError:
                self._on_eof(conn)
                return False
            view = view[sent:]
        return True

    def _wait_writable(self, conn: _Conn) -> None:
        self._poll.modify(conn.fd, select.POLLOUT if conn.reading else _POLLIN | select.POLLOUT)
        try:
            events = self._poll_events(100, conn)
        finally:
            if not conn.closed:
                self._poll.modify(conn.fd, _POLLIN)
        for fd, ev in events:
            if fd == conn.fd and not ev & _POLLIN:
                continue
            self._on_ready(fd, ev)

    def _poll_events(self, ms: int | None, writing: _Conn | None = None) -> list[tuple[int, int]]:
        """Wait for our sockets. A connection being read (a write made while a frame of
        it is handled waits here) is left out: it is read on, in order, once the frames
        before are handled; watched, it would end each wait at once."""
        if not self._reading:
            return self._poll.poll(ms)
        hidden = [c for c in self._reading if c is not writing and not c.closed]
        for c in hidden:
            self._poll.unregister(c.fd)
        try:
            return self._poll.poll(ms)
        finally:
            for c in hidden:
                if not c.closed:
                    self._poll.register(c.fd, _POLLIN)

    # ------------------------------------------------------------------ reading

    def pump(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: forever) and handle what arrives."""
        ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
        try:
            events = self._poll_events(ms)
        except InterruptedError:
            return False
        for fd, ev in events:
            self._on_ready(fd, ev)
        return bool(events)

    def handle_ready(self, fds: list[int]) -> None:
        """Handle file numbers that Thespian reported readable."""
        for fd in fds:
            self._on_ready(fd, select.POLLIN)

    def _on_ready(self, fd: int, ev: int) -> None:
        listener = self._listeners.get(fd)
        if listener is not None:
            self._accept(*listener)
            return
        conn = self._conns.get(fd)
        if conn is not None:
            self._read(conn)

    def tend_challenges(self) -> None:
        """Move on the challenges this process waits on, between two of its messages (the
        Host calls it before each): a busy process otherwise reads a new connection only
        once its whole mailbox is handled, and a name's pid (``whereis``) or the frames
        queued for a new peer (a ``sys`` reply) would wait as long.

        Waits at most until ``challenge_grace`` after the newest of them was made (the
        other end normally answers at once); for the outbound ones, not in a rest (see
        ``handshake_rest``), and a peer that does not answer starts one. Nothing to do,
        or only connections past their grace: no wait. Never called by an idle process
        (an empty mailbox): its loop reads its sockets."""
        pending = self._pending
        while pending:
            now = time.monotonic()
            resting = now < self._no_wait_until
            until = 0.0
            outbound = False
            for conn in pending.values():
                if conn.wait_until > now and not (resting and conn.outbound):
                    until = max(until, conn.wait_until)
                    outbound = outbound or conn.outbound
            ms = max(0, int((until - now) * 1000 + 0.999)) if until > now else 0
            try:
                events = self._pending_poll.poll(ms)
            except InterruptedError:
                continue
            for fd, _ in events:
                ready = pending.get(fd)
                if ready is not None:
                    self._read(ready)
            if not ms:
                return
            if not events:
                if outbound:
                    self._no_wait_until = time.monotonic() + self.handshake_rest
                return

    def _accept(
        self,
        lsock: socket.socket,
        name: str | None,
        address: str,
        limit: int = _ACCEPTS_PER_EVENT,
    ) -> None:
        for _ in range(limit):  # the others at the next turn of the loop
            try:
                sock, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("%r: accept failed: %s", self.pid, exc)
                return
            stranger = _wire.is_stranger(sock)
            chan = _wire.Channel(address, listening=True)
            conn = self._add_conn(sock, False, None, chan, stranger)
            old = self._unproven.add(conn.fd, stranger)
            if old is not None:
                self._refusals.warning(
                    "%r: more than %d local connections%s have not proven the node's key; "
                    "closed the oldest",
                    self.pid,
                    self._unproven.count(stranger),
                    " from other users or containers" if stranger else "",
                )
                evicted = self._conns.get(old)
                if evicted is not None:
                    self._close(evicted)
            if name is not None:
                # a connection to a name learns whose name it is (whereis), once proven
                chan.send(_wire.encode((HELLO, self.pid)))
                if not stranger:
                    self._pend(conn)
            self._write_bytes(conn, chan.take_output())  # the challenge

    def _read(self, conn: _Conn) -> None:
        if conn.reading:
            # asked again while one of its frames is handled (a write that waits reads
            # our sockets): the read under way goes on with the next frames, in order
            return
        chan = conn.chan
        conn.reading = True
        self._reading.append(conn)
        try:
            end = read_frames(
                conn.sock,
                chan.feed if chan.proven else lambda data: self._feed_unproven(conn, data),
                lambda frame: self._on_frame(conn, frame),
                lambda: conn.closed,
                bad_frame=(FrameError,),
                want=None if chan.proven else chan.need,
            )
        finally:
            conn.reading = False
            self._reading.remove(conn)
        if not conn.closed:
            out = chan.take_output()  # an answer to the challenge, the frames it held
            if out:
                self._write_bytes(conn, out)
        if end is None:
            return
        if end.kind == "frame":
            if chan.proven:
                log.warning("%r: closing connection from %r: %s", self.pid, conn.peer, end.error)
            else:
                self._refusals.warning("%r: refused a local connection: %s", self.pid, end.error)
            self._on_eof(conn, protocol_error=True)
        else:
            self._on_eof(conn)

    def _feed_unproven(self, conn: _Conn, data: bytes) -> list[Any]:
        chan = conn.chan
        frames = chan.feed(data)
        if chan.proven:
            self._unproven.done(conn.fd)
        if conn.fd in self._pending and (chan.proven or (conn.outbound and chan.ready)):
            self._unpend(conn)
        return frames

    def _on_eof(self, conn: _Conn, protocol_error: bool = False) -> None:
        peer = conn.peer
        self._close(conn)
        if peer is None or peer in self._down or protocol_error:
            return
        # A BYE may wait on the peer's other connection: read it before concluding.
        self._settle()
        for other in list(self._by_peer.get(peer, ())):
            self._read(other)
        if peer not in self._down:
            self.peer_down(peer, "killed")

    def _settle(self) -> None:
        """Accept pending connections and read the ones not introduced yet."""
        for listener in list(self._listeners.values()):
            self._accept(*listener, limit=_ACCEPTS_AT_ONCE)
        for conn in [c for c in self._conns.values() if c.peer is None]:
            self._read(conn)

    def _on_frame(self, conn: _Conn, frame: Any) -> None:
        if not (isinstance(frame, tuple) and frame and FRAME_ARITY.get(frame[0]) == len(frame)):
            log.warning("%r: dropped a malformed frame from %r: %.80r", self.pid, conn.peer, frame)
            return
        tag = frame[0]
        peer = conn.peer
        if peer is None:
            if tag == HELLO and isinstance(frame[1], Pid):
                conn.peer = frame[1]
                self._by_peer.setdefault(frame[1], []).append(conn)
            else:
                log.warning("%r: connection spoke before HELLO; closing", self.pid)
                self._close(conn)
            return
        if tag == MSG:
            self.mailbox.append((MSG, peer, frame[1]))
        elif tag == CALL:
            self.mailbox.append((CALL, peer, frame[1], frame[2]))
        elif tag == CAST:
            self.mailbox.append((CAST, peer, frame[1]))
        elif tag == REPLY:
            waiting = self._await.get(frame[1])
            if waiting is not None and waiting[1] is None:
                waiting[1] = ("ok", frame[2])
            # else: a late reply, dropped (its call already timed out)
        elif tag == LINK:
            self.links.add(peer)
        elif tag == UNLINK:
            self.links.discard(peer)
        elif tag == EXIT:
            self.exit_signal(peer, frame[1], linked=False)
        elif tag == BYE:
            self.peer_down(peer, frame[1])
        elif tag == STARTED:
            token, result = frame[1], frame[2]
            if not (isinstance(result, tuple) and result):
                log.warning("%r: dropped a malformed start report from %r", self.pid, peer)
                return
            self._started[token] = result
            if token in self._linking and result[0] == "ok":
                self.links.add(result[1])
        elif tag == SYS:
            self._sys(peer, frame[1], frame[2])
        elif tag == HELLO:
            pass
        else:
            log.warning("%r: unknown frame tag %r from %r", self.pid, tag, peer)

    # ------------------------------------------------------------------ death

    def peer_down(self, peer: Pid, reason: Any) -> None:
        """``peer`` ended with ``reason``: deliver links, monitors and a waiting call."""
        if peer in self._down:
            return
        self._down[peer] = reason
        if len(self._down) > _DOWN_MEMORY:
            self._down.popitem(last=False)
        # whatever the peer sent before it ended comes first, including on a connection
        # it opened that is not accepted or not introduced yet
        self._settle()
        for conn in list(self._by_peer.get(peer, ())):
            self._read(conn)
        for conn in list(self._by_peer.get(peer, ())):
            self._close(conn)
        for waiting in self._await.values():
            if waiting[0] == peer and waiting[1] is None:
                waiting[1] = ("exit", reason)
        for ref in sorted(self._watched.pop(peer, ()), key=lambda r: r.n):
            del self._monitors[ref]
            self.mailbox.append((INFO, None, Down(ref, peer, reason)))
        if peer in self.links:
            self.links.discard(peer)
            self.exit_signal(peer, reason, linked=True)

    def exit_signal(self, src: Pid, reason: Any, linked: bool) -> None:
        """Apply an exit signal from ``src`` as Erlang does."""
        if reason == "kill" and not linked:
            raise _Die("killed")
        if self.trap_exit:
            self.mailbox.append((INFO, None, ExitSignal(src, reason)))
            return
        if reason == "normal":
            return
        raise _Die(reason)

    def goodbye(self, reason: Any) -> None:
        """Tell every peer this process ends with ``reason``; close everything."""
        # Stop listening first (taking what is queued): a peer that connects while the
        # BYEs go out would otherwise be dropped unaccepted and see "killed", not noproc.
        for lsock, _, address in list(self._listeners.values()):
            self._accept(lsock, None, address, limit=_ACCEPTS_AT_ONCE)
            _live_sockets.discard(lsock)
            lsock.close()
        self._listeners.clear()
        try:
            body = _wire.encode((BYE, reason))
        except Exception:  # an exit reason that does not pickle still has to go out
            body = _wire.encode((BYE, repr(reason)))
        pending = any(c.chan.queued() for c in self._conns.values() if not c.stranger)
        self._answer_challenges(_GOODBYE_MESSAGE_WAIT if pending else _GOODBYE_CHALLENGE_WAIT)
        # Parents last: a parent that hears of this exit may end at once, and this
        # process dies with its parent (PR_SET_PDEATHSIG) - every other peer must have
        # its BYE by then, or it would see "killed" instead of the reason.
        parents = {self.parent, self.os_parent}
        for conn in sorted(self._conns.values(), key=lambda c: c.peer in parents):
            chan = conn.chan
            if not chan.ready:
                continue  # the peer never answered the challenge: it sees the close
            frame = chan.send(body)
            try:
                conn.sock.setblocking(True)
                conn.sock.settimeout(1.0)
                conn.sock.sendall(chan.take_output() + frame)
            except OSError:
                pass
        for conn in list(self._conns.values()):
            self._close(conn)

    def _answer_challenges(self, timeout: float) -> None:
        """Take the challenge bytes of every connection not ready yet (only those: no
        frame is read), so that each can carry a last frame; at most ``timeout``."""
        waiting = {c.fd: c for c in self._conns.values() if not c.chan.ready and not c.stranger}
        if not waiting:
            return
        poll = select.poll()
        for fd in waiting:
            poll.register(fd, _POLLIN)
        deadline = time.monotonic() + timeout
        while waiting and (remaining := deadline - time.monotonic()) > 0:
            for fd, _ in poll.poll(max(1, int(remaining * 1000))):
                conn = waiting[fd]
                try:
                    data = conn.sock.recv(conn.chan.need())
                    if data:
                        conn.chan.feed(data)
                except (BlockingIOError, InterruptedError):
                    continue
                except (OSError, FrameError):
                    data = b""
                if not data or conn.chan.ready:
                    poll.unregister(fd)
                    del waiting[fd]

    # ------------------------------------------------------------------ operations

    def make_ref(self) -> Ref:
        self._ref_n += 1
        return Ref(self.node.name, self.node.creation, self._ref_base | self._ref_n)

    def deliver(self, dst: Pid, frame: tuple[Any, ...], wait: bool = True) -> bool:
        """Send ``frame`` to ``dst``; False if ``dst`` is known to be unreachable.
        ``wait``: as for :meth:`write`, on a new connection to a local ``dst``."""
        if dst == self.pid:
            self._on_frame_from_self(frame)
            return True
        if not self.is_local(dst):
            return _remote_hooks.send(self, dst, frame)
        conn = self.connection_to(dst)
        if conn is None:
            return False
        return self.write(conn, _wire.encode(frame), wait)

    def _on_frame_from_self(self, frame: tuple[Any, ...]) -> None:
        tag = frame[0]
        if tag == MSG:
            self.mailbox.append((MSG, self.pid, frame[1]))
        elif tag == CAST:
            self.mailbox.append((CAST, self.pid, frame[1]))
        elif tag == EXIT:
            reason = frame[1]
            if reason == "kill":
                raise _Die("killed")
            if self.trap_exit:
                self.mailbox.append((INFO, None, ExitSignal(self.pid, reason)))
            else:
                raise _Die(reason)

    def send(self, dst: Pid, msg: Any) -> None:
        self.deliver(dst, (MSG, msg))

    def send_named(self, name: str, node: str, msg: Any) -> bool:
        """Send to the process registered as ``name`` on ``node`` (OTP's ``{Name, Node} !
        Msg``): a local name here, a dist service on another node."""
        if node == self.node.name:
            pid = self.whereis(name)
            if pid is None:
                return False
            self.send(pid, msg)
            return True
        return _remote_hooks.nsend(self, node, name, (MSG, msg))

    def cast(self, dst: Pid, msg: Any) -> None:
        self.deliver(dst, (CAST, msg))

    def reply(self, to: From, value: Any) -> None:
        self.deliver(to.pid, (REPLY, to.ref, value))

    def call(self, dst: Pid, request: Any, timeout: float = 5.0) -> Any:
        return self._request(dst, (CALL, None, request), request, timeout)

    def sys_call(self, dst: Pid, request: Any, timeout: float = 5.0) -> Any:
        """A request the target's runtime answers itself (names, introspection)."""
        return self._request(dst, (SYS, None, request), request, timeout)

    def _request(self, dst: Pid, frame: tuple[Any, ...], request: Any, timeout: float) -> Any:
        if dst == self.pid:
            raise Exit("calling_self", dst)
        kind, value = self._requests([dst], frame[0], request, timeout)[0]
        if kind == "ok":
            return value
        if kind == "timeout":
            raise CallTimeout(dst, request, timeout)
        raise Exit(value, dst)

    def multi_call(
        self,
        dsts: list[Pid | tuple[str, str]],
        request: Any,
        timeout: float = 5.0,
        enough: int | None = None,
        counts: Callable[[Any], bool] | None = None,
    ) -> list[tuple[str, Any]]:
        """``call`` many processes at once; one result per destination, in order:
        ``("ok", reply)``, ``("exit", reason)`` or ``("timeout", None)``.

        A destination may be ``(name, node)``: the process registered as ``name`` there
        (a dist service on another node; no monitor, so a lost one answers
        ``("timeout", None)``). With ``enough``, stop waiting once that many answered
        ``("ok", reply)`` with a reply that ``counts`` (default: a truthy one) - a
        majority round: the rest are ``("timeout", None)``."""
        return self._requests(dsts, CALL, request, timeout, enough, counts)

    def _requests(
        self,
        dsts: list[Any],
        tag: int,
        request: Any,
        timeout: float,
        enough: int | None = None,
        counts: Callable[[Any], bool] | None = None,
    ) -> list[tuple[str, Any]]:
        if self._await:
            raise RuntimeError("call made while another call of this process waits")
        refs: list[Ref] = []
        try:
            for dest in dsts:
                dst = dest
                ref = self.make_ref()
                refs.append(ref)
                waiting: list[Any] = [dst, None]
                self._await[ref] = waiting
                if isinstance(dst, tuple) and not isinstance(dst, Pid):
                    name, node = dst
                    if node == self.node.name:
                        dst = self.whereis(name)
                        waiting[0] = dst
                        if dst is None:
                            waiting[1] = ("exit", "noproc")
                            continue
                    else:
                        if not _remote_hooks.nsend(self, node, name, (tag, ref, request)):
                            waiting[1] = ("exit", "noconnection")
                        continue
                if dst == self.pid:
                    waiting[1] = ("exit", "calling_self")
                elif self.is_local(dst):
                    conn = self.connection_to(dst)
                    if conn is None:
                        waiting[1] = ("exit", "noproc")
                    else:  # no wait for a new connection's challenge: the pump reads it
                        self.write(conn, _wire.encode((tag, ref, request)), wait=False)
                else:
                    self._down.pop(dst, None)  # a node may come back: each call watches afresh
                    if not _remote_hooks.send(self, dst, (tag, ref, request), watch=True):
                        waiting[1] = ("exit", "noconnection")
            deadline = time.monotonic() + timeout
            while any(self._await[ref][1] is None for ref in refs):
                if enough is not None and enough <= sum(
                    1
                    for ref in refs
                    if (got := self._await[ref][1]) is not None
                    and got[0] == "ok"
                    and (counts(got[1]) if counts is not None else got[1])
                ):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.pump(remaining)
            return [self._await[ref][1] or ("timeout", None) for ref in refs]
        finally:
            for ref in refs:
                self._await.pop(ref, None)

    def _watch_remote(self, pid: Pid) -> bool:
        self._down.pop(pid, None)  # its node may have come back since it was seen down
        return _remote_hooks.watch(self, pid)

    def link(self, pid: Pid) -> None:
        if pid == self.pid or pid in self.links:
            return
        if self.is_local(pid):
            if self.connection_to(pid) is None:
                self.exit_signal(pid, "noproc", linked=True)
                return
        elif not self._watch_remote(pid):
            self.exit_signal(pid, "noconnection", linked=True)
            return
        self.links.add(pid)
        self.deliver(pid, (LINK,))

    def unlink(self, pid: Pid) -> None:
        if pid in self.links:
            self.links.discard(pid)
            self.deliver(pid, (UNLINK,))

    def monitor(self, pid: Pid) -> Ref:
        ref = self.make_ref()
        reachable = (
            self.connection_to(pid) is not None if self.is_local(pid) else self._watch_remote(pid)
        )
        if not reachable or pid == self.pid:
            reason = "noproc" if self.is_local(pid) else "noconnection"
            self.mailbox.append((INFO, None, Down(ref, pid, reason)))
            return ref
        self._monitors[ref] = pid
        self._watched.setdefault(pid, set()).add(ref)
        return ref

    def demonitor(self, ref: Ref, flush: bool = False) -> bool:
        pid = self._monitors.pop(ref, None)
        if pid is not None:
            refs = self._watched.get(pid)
            if refs is not None:
                refs.discard(ref)
                if not refs:
                    del self._watched[pid]
        if flush:
            self.mailbox = deque(
                m
                for m in self.mailbox
                if not (m[0] == INFO and isinstance(m[2], Down) and m[2].ref == ref)
            )
        return pid is not None

    def exit(self, pid: Pid, reason: Any) -> None:
        """Send an exit signal. ``"kill"`` to a process of this node is a SIGKILL, so it
        cannot be trapped or delayed by a busy handler; its peers see ``"killed"``."""
        if pid == self.pid:
            self._on_frame_from_self((EXIT, reason))
            return
        if reason == "kill" and self.is_local(pid) and self._kill_local(pid):
            return
        self.deliver(pid, (EXIT, reason))

    def _kill_local(self, pid: Pid) -> bool:
        # Only a process of this node (same process group as the node's admin) and only
        # the very process the pid names (start time checked), never a recycled OS pid.
        if process_start_ticks(pid.id) != pid.serial:
            return True  # already gone
        try:
            if os.getpgid(pid.id) != node_pgid():
                return False
            os.kill(pid.id, signal.SIGKILL)
        except ProcessLookupError:
            return True
        return True

    # ------------------------------------------------------------------ names

    def register(self, name: str) -> bool:
        """Bind ``name`` to this process; False if another live process holds it."""
        if name in self._names:
            return True
        try:
            self._listen(name_address(self.node, name), name)
        except OSError:
            return False
        self._names.add(name)
        _logs.set_tags(actor=name)  # the process's log lines say its name
        return True

    def unregister(self, name: str) -> bool:
        for fd, (lsock, held, _) in list(self._listeners.items()):
            if held == name:
                with contextlib.suppress(KeyError, ValueError):
                    self._poll.unregister(fd)
                del self._listeners[fd]
                _live_sockets.discard(lsock)
                lsock.close()
                self._names.discard(name)
                return True
        return False

    def registered_names(self) -> list[str]:
        """The local names this process holds, sorted."""
        return sorted(self._names)

    def whereis(self, name: str) -> Pid | None:
        if name in self._names:
            return self.pid
        address = name_address(self.node, name)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2.0)
        try:
            sock.connect(address)
            chan = _wire.Channel(address, listening=False)
            while True:
                data = sock.recv(4096)
                if not data:
                    return None
                frames = chan.feed(data)
                sock.sendall(chan.take_output())  # the answer to the challenge
                if frames:
                    pid = frames[0][1]
                    return pid if isinstance(pid, Pid) else None
        except (OSError, FrameError):
            return None
        finally:
            sock.close()

    def _sys(self, peer: Pid, ref: Ref, request: Any) -> None:
        kind = request[0] if isinstance(request, tuple) and request else None
        value: Any
        if not self.is_local(peer) and kind not in ("stop", "info"):
            # another node may stop a process (gen_server:stop) or look at it; local
            # names are this node's own business
            value = ("error", ("not_allowed_remotely", kind))
        elif kind in ("register", "unregister") and not (
            len(request) == 2 and isinstance(request[1], str)
        ):
            value = ("error", ("badarg", request))
        elif kind == "register":
            value = self.register(request[1])
        elif kind == "unregister":
            value = self.unregister(request[1])
        elif kind == "stop" and len(request) == 2:
            # gen_server:stop: the actor's loop ends it with terminate(reason); the
            # caller's wait ends with this process's exit (no reply is sent)
            self.mailbox.append((INFO, None, SysStop(request[1])))
            return
        elif kind == "info":
            value = {
                "pid": self.pid,
                "links": sorted(self.links, key=repr),
                "monitors": len(self._monitors),
                "message_queue_len": len(self.mailbox),
                "trap_exit": self.trap_exit,
                "registered_names": sorted(self._names),
            }
        else:
            value = ("error", ("unknown_sys_request", request))
        # no wait for a new connection's challenge: this runs amid a read of the peer's
        # frames, and the caller waits (it answers the challenge at once; a busy process
        # finishes it before its next message, an idle one at its next loop turn)
        self.deliver(peer, (REPLY, ref, value), wait=False)

    # ------------------------------------------------------------------ spawning

    def await_start(self, token: Ref, link: bool, alive: Callable[[], bool]) -> tuple[Any, ...]:
        """Wait for a spawned child's STARTED report (OTP's start_link waits without a
        time limit; a child that dies before it reports is an error, not a hang)."""
        if link:
            self._linking.add(token)
        try:
            while token not in self._started:
                self.pump(0.05)
                if token not in self._started and not alive():
                    self.pump(0.01)
                    if token not in self._started:
                        return ("error", "killed")
            return self._started.pop(token)
        finally:
            self._linking.discard(token)


_node_pgid: int | None = None


def node_pgid() -> int:
    """The process group of this node's processes (every actor, its admin and logger)."""
    return _node_pgid if _node_pgid is not None else os.getpgrp()


def set_node_pgid(pgid: int) -> None:
    global _node_pgid
    _node_pgid = pgid
