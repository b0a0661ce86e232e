"""The dist engine: one thread in the node's dist process that owns every socket.

Remote traffic never rides Thespian. A local process that sends to a pid on another
node writes the frame - already msgpack-encoded in the sender, so a value that cannot
cross fails there with ``TypeError`` - to this thread's Unix socket; the thread forwards
it on the one TCP connection to that node; the peer's dist thread hands it to the
target over a Unix connection *introduced as the remote sender* (one per remote
sender and local target). To a local process a remote peer therefore looks like any
other peer: FIFO per pair, replies, links and monitors work unchanged, and a ``BYE`` on
that connection is the remote process's end. When a node is lost, every connection
introduced as one of its pids gets ``BYE("noconnection")``.

Liveness: every connection sends ``tick`` when it has sent nothing for ``tick`` seconds;
any bytes received count as life; ``down_after`` seconds of silence, or a closed socket,
and the node is down. Known peers are redialled every ``redial_interval`` with a short
connect timeout, so a healed partition re-forms without application traffic.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import re
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from otpkit import actors
from otpkit.actors import (
    BYE,
    FRAME_ARITY,
    HELLO,
    MSG,
    REMOTE_TAGS,
    NodeIdentity,
    Pid,
    address_of,
    name_address,
)
from otpkit.distribution import _codec, _handshake, _partition
from otpkit.distribution._witness import WITNESS
from otpkit.errors import FrameError

log = logging.getLogger("otpkit.dist")

#: Local frame tags used between a process and the dist thread.
DIST_SEND = 20  # (DIST_SEND, dst, msgpack bytes of the inner frame)
DIST_WATCH = 21  # (DIST_WATCH, dst): tell me when dst ends
DIST_SEND_WATCH = 22  # both at once (a call): the delivery itself watches on the far side
DIST_NSEND = 23  # (DIST_NSEND, node, service name, msgpack bytes of the inner frame)
#: The name under which the dist thread answers ``whereis``.
DIST_NAME = "otpkit_dist"

# a TLS socket's want-read / want-write: nothing to read for now, as a would-block
_TLS_AGAIN = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_HANDSHAKE_TIMEOUT = 5.0
_MAX_PENDING = 10000
_HANDSHAKE_MAX_FRAME = 4096
#: Witness connections a node accepts at once (each holds one socket and no buffer).
_MAX_WITNESSES = 1024
#: What a node name may look like: app@host, printable, bounded (it reaches the logs).
_NODE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}@[A-Za-z0-9_.:\[\]-]{1,190}")
#: A version refusal is logged once per peer and version in this many seconds (a refused
#: node redials every redial_interval, and both sides dial); the others at DEBUG.
_VERSION_LOG_EVERY = 60.0


@dataclass(frozen=True)
class NodeUp:
    """``monitor_nodes`` message: a connection to ``node`` is up."""

    node: str


@dataclass(frozen=True)
class NodeDown:
    """``monitor_nodes`` message: the connection to ``node`` is lost, and why."""

    node: str
    reason: str


@dataclass(frozen=True)
class WitnessDown:
    """``monitor_witnesses`` message: the witness ``node``'s acting process held for the
    lease ``(key, epoch)`` closed, and why (see :mod:`._witness`)."""

    node: str
    key: str
    epoch: int
    reason: str


@dataclass
class DistConfig:
    """Settings of a node's dist layer."""

    host: str  # address to listen on and to dial from
    port: int
    cookie: bytes
    tick: float = 1.0
    down_after: float = 3.0
    hidden: bool = False
    connect_timeout: float = 1.0
    redial_interval: float = 0.5
    max_frame: int = 16 * 1024 * 1024
    server_ssl: ssl.SSLContext | None = None
    client_ssl: ssl.SSLContext | None = None


@dataclass
class _PeerConn:
    sock: socket.socket
    addr: tuple[str, int]
    outbound: bool
    state: str  # connecting | hello | challenge | ack | ok | up
    decoder: _codec.FrameDecoder
    started: float
    name: str | None = None
    creation: int = 0
    hidden: bool = False
    listen: tuple[str, int] | None = None  # where the peer accepts connections
    nonce_own: bytes = b""
    nonce_peer: bytes = b""
    wbuf: bytearray = field(default_factory=bytearray)
    last_rx: float = 0.0
    last_tx: float = 0.0
    tls_pending: bool = False
    closed: bool = False
    peer_closing: str = ""  # why the peer said it closes the link (it lives on)
    witness: bool = False  # a witness dial (state "witness" once proven)
    version: int = 0  # the dist protocol the peer named in its hello or challenge
    witness_of: tuple[str, int] | None = None  # the lease (key, epoch) it witnesses


#: Reasons that mean the peer's process (or host) is gone: its sockets closed without a
#: word. A live peer that drops the link on purpose says ``closing`` first, so these
#: never describe it (the majority lease trusts this to hand a dead holder's lease on).
PEER_GONE = "connection closed"


@dataclass
class _Local:
    sock: socket.socket
    kind: str  # proc (a local process talking to us) | pair | whereis
    reader: actors.LocalFrameReader
    peer: Pid | None = None  # proc: the local process; pair: the local target
    remote: Pid | None = None  # pair: the remote pid this connection is introduced as
    wbuf: bytearray = field(default_factory=bytearray)
    closed: bool = False


def _is_ip(host: object) -> bool:
    if not isinstance(host, str):
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class DistCore:
    """Runs in a thread; everything else talks to it through :meth:`command`."""

    def __init__(self, node: NodeIdentity, config: DistConfig, io_pid: Pid) -> None:
        self.node = node
        self.config = config
        self.io_pid = io_pid
        self._sel = selectors.DefaultSelector()
        self._peers: dict[str, _PeerConn] = {}  # up connections by node name
        self._pending_conns: set[int] = set()
        self._conns: dict[int, _PeerConn | _Local] = {}
        self._pairs: dict[tuple[Pid, Pid], _Local] = {}
        # nodes to keep (re)dialling: discovery's set plus explicit connect_node calls;
        # nodes learned from peers are dialled once, not remembered
        self._discovered: dict[str, tuple[str, int]] = {}
        self._manual: dict[str, tuple[str, int]] = {}
        self._known: dict[str, tuple[str, int]] = {}
        # Prevention of overlapping partitions (ARCHITECTURE.md, *Partitions*; the
        # decision is _partition.overlap_victim): peers whose link to this node
        # failed (redialled, and reported to new peers), and peers this node will not
        # connect to while a link between two nodes it knows is broken: victim -> keepers
        self._lost: dict[str, tuple[str, int]] = {}
        self._blocked: dict[str, set[str]] = {}
        self._dropped: dict[str, tuple[str, int]] = {}  # dialled again once unblocked
        # reports of failed links wait down_after + tick before they are acted on: a
        # node whose own link to the same node is about to time out must not mistake an
        # isolated node for a broken pair (nor act on a report that a heal makes stale)
        # (reporter, lost) -> (when it is acted on, the reporter's creation, the
        # creation of this node's link to ``lost`` then, 0 if none): a report of an
        # earlier incarnation of either is stale once a later one is linked here
        self._pending_lost: dict[tuple[str, str], tuple[float, int, int]] = {}
        self._dialing: dict[str, _PeerConn] = {}
        self._next_dial: dict[str, float] = {}
        self._waiting: dict[str, deque[tuple[Any, ...]]] = {}
        self._subscribers: set[Pid] = set()
        self._witness_watchers: set[Pid] = set()
        self._witnesses = 0  # connections in state "witness"
        # closes of witnesses not reported because another one may witness the same
        # lease (see _witnessed): (node, lease) -> the close's reason
        self._suppressed: dict[tuple[str, tuple[str, int]], str] = {}
        self._version_logged: dict[tuple[str, int], float] = {}  # see _say_version
        # system processes other nodes may send to by name (OTP's {Name, Node} ! Msg,
        # kept to a fixed set: the registry and singleton managers find their peers so)
        self._services: dict[str, Pid] = {}
        self._lock = threading.Lock()
        self._commands: deque[
            tuple[Callable[..., Any], tuple[Any, ...], threading.Event | None, list[Any]]
        ] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._listen()

    # ------------------------------------------------------------------ setup

    def _listen(self) -> None:
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((self.config.host, self.config.port))
        tcp.listen(128)
        tcp.setblocking(False)
        self.port = tcp.getsockname()[1]
        self._tcp = tcp
        self._sel.register(tcp, selectors.EVENT_READ, "tcp")
        for address, tag in (
            (address_of(self.io_pid), "unix"),
            (name_address(self.node, DIST_NAME), "name"),
        ):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
            self._sel.register(sock, selectors.EVENT_READ, tag)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otpkit-dist", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.command(self._do_stop, wait=False)
        if self._thread is not None:
            self._thread.join(5)

    # ------------------------------------------------------------------ commands

    def command(
        self, fn: Callable[..., Any], *args: Any, wait: bool = True, timeout: float = 10.0
    ) -> Any:
        """Run ``fn(*args)`` on the dist thread; with ``wait``, return its result."""
        done = threading.Event() if wait else None
        out: list[Any] = []
        self._commands.append((fn, args, done, out))
        with contextlib.suppress(BlockingIOError):
            self._wake_w.send(b"x")
        if done is None:
            return None
        if not done.wait(timeout):
            raise TimeoutError("the dist thread did not answer")
        if out and isinstance(out[0], BaseException):
            raise out[0]
        return out[0] if out else None

    def nodes(self) -> list[str]:
        return sorted(n for n, p in self._peers.items() if not p.hidden)

    def hidden_nodes(self) -> list[str]:
        return sorted(n for n, p in self._peers.items() if p.hidden)

    def connect(self, name: str, host: str, port: int) -> None:
        if name == self.node.name:
            return
        self._manual[name] = (host, port)
        self._known = {**self._discovered, **self._manual}
        if name not in self._peers and name not in self._dialing:
            self._dial(name, (host, port))

    def set_known(self, peers: dict[str, tuple[str, int]]) -> None:
        """The peers discovery wants: dial new ones, stop redialling the others."""
        self._discovered = {
            n: (str(a[0]), int(a[1])) for n, a in peers.items() if n != self.node.name
        }
        for table in (self._lost, self._dropped):  # discovery pruned it: stop redialling
            for name in list(table):
                if name not in self._discovered and name not in self._manual:
                    del table[name]
        self._known = {**self._discovered, **self._manual}
        for name, addr in self._known.items():
            if name not in self._peers and name not in self._dialing:
                self._dial(name, addr)

    def disconnect(self, name: str) -> None:
        self._manual.pop(name, None)
        self._discovered.pop(name, None)
        self._known.pop(name, None)
        self._lost.pop(name, None)
        self._dropped.pop(name, None)
        peer = self._peers.get(name)
        if peer is not None:
            self._drop(peer, "disconnect", policy=True)

    def drop_link(self, name: str, reason: str) -> bool:
        """Drop the link to ``name`` as a failed link (its ticks stopped): it is redialled
        and the others are told, as after ``net_tick_timeout``. A dial in progress to it
        is dropped too. True if there was one of either."""
        found = False
        for conn in (self._peers.get(name), self._dialing.get(name)):
            if conn is not None and not conn.closed:
                self._drop(conn, reason, level=logging.WARNING)
                found = True
        return found

    def blocked(self) -> dict[str, list[str]]:
        return {victim: sorted(keepers) for victim, keepers in self._blocked.items()}

    def set_service(self, name: str, pid: Pid | None) -> None:
        """Make ``pid`` reachable from other nodes as ``(name, this node)``."""
        if pid is None:
            self._services.pop(name, None)
        else:
            self._services[name] = pid

    def subscribe(self, pid: Pid, on: bool) -> None:
        if on:
            self._subscribers.add(pid)
        else:
            self._subscribers.discard(pid)

    def watch_witnesses(self, pid: Pid, on: bool) -> None:
        if on:
            self._witness_watchers.add(pid)
        else:
            self._witness_watchers.discard(pid)

    def witness_info(self) -> dict[str, Any]:
        """What a local acting process needs to dial witnesses (see :mod:`._witness`):
        this node's identity and cookie, and the dist address and creation of every
        visible peer. None of it leaves the node."""
        return {
            "node": self.node.name,
            "creation": self.node.creation,
            "host": self.config.host,
            "cookie": self.config.cookie,
            "tls": self.config.client_ssl is not None,
            "peers": {
                n: (p.listen[0], p.listen[1], p.creation)
                for n, p in self._peers.items()
                if not p.hidden and p.listen is not None
            },
        }

    # ------------------------------------------------------------------ loop

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._loop_once()
        except Exception:
            log.critical("%s: dist thread failed", self.node.name, exc_info=True)
            # a node without dist is half alive: halt it, as a BEAM node would
            os.killpg(os.getpgrp(), 9)

    def _loop_once(self) -> None:
        now = time.monotonic()
        timeout = self._housekeeping(now)
        for key, events in self._sel.select(timeout):
            tag = key.data
            if tag == "wake":
                self._drain_wake()
            elif tag == "tcp":
                self._accept_tcp()
            elif tag in ("unix", "name"):
                self._accept_local(key.fileobj, tag)  # type: ignore[arg-type]
            else:
                conn = self._conns.get(key.fd)
                if conn is None:
                    continue
                if isinstance(conn, _PeerConn):
                    self._peer_event(conn, events)
                else:
                    self._local_event(conn, events)

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        while self._commands:
            fn, args, done, out = self._commands.popleft()
            try:
                out.append(fn(*args))
            except Exception as exc:
                out.append(exc)
            if done is not None:
                done.set()

    def _do_stop(self) -> None:
        self._stopping = True
        for conn in list(self._conns.values()):
            if isinstance(conn, _PeerConn):
                self._close_peer(conn)
            else:
                self._close_local(conn)

    def _housekeeping(self, now: float) -> float:
        cfg = self.config
        wait = cfg.tick / 2
        for conn in list(self._conns.values()):
            if not isinstance(conn, _PeerConn) or conn.closed:
                continue
            if conn.state == "connecting":
                # a dial into a cut sits in SYN back-off for seconds: give up early and
                # dial again, so a heal is seen within about redial + connect timeout
                if now - conn.started > cfg.connect_timeout:
                    self._drop(conn, "connect timed out", level=logging.DEBUG)
                continue
            if conn.state == "witness" and conn.witness_of is not None:
                continue  # silent by design: only its close says anything
            if conn.state != "up":
                if now - conn.started > _HANDSHAKE_TIMEOUT:
                    self._drop(conn, "handshake timed out")
                continue
            if now - conn.last_rx > cfg.down_after:
                self._drop(conn, "net_tick_timeout")
                continue
            if now - conn.last_tx >= cfg.tick and not conn.wbuf:
                self._send_peer(conn, ("tick",))
        for pair, (deadline, reporter_creation, lost_creation) in list(self._pending_lost.items()):
            if now >= deadline:
                del self._pending_lost[pair]
                reporter, lost = self._peers.get(pair[0]), self._peers.get(pair[1])
                if (
                    reporter is not None
                    and reporter.creation == reporter_creation
                    and lost is not None
                    and lost_creation in (0, lost.creation)  # 0: not linked then
                ):
                    self._on_lost(*pair)
        for name, addr in [*self._known.items(), *self._lost.items(), *self._dropped.items()]:
            if name in self._peers or name in self._dialing or name in self._blocked:
                continue
            if now >= self._next_dial.get(name, 0.0):
                self._dial(name, addr)
        return wait

    # ------------------------------------------------------------------ TCP peers

    def _dial(self, name: str, addr: tuple[str, int]) -> None:
        self._next_dial[name] = time.monotonic() + self.config.redial_interval
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            # bind the source address: a cut on one address must cut this node only
            sock.bind((self.config.host, 0))
            err = sock.connect_ex(addr)
        except OSError as exc:
            log.debug("%s: dial %s at %s failed: %s", self.node.name, name, addr, exc)
            sock.close()
            self._fail_waiting(name)
            return
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._fail_waiting(name)
            return
        conn = _PeerConn(
            sock, addr, True, "connecting", self._decoder(), time.monotonic(), name=name
        )
        self._dialing[name] = conn
        self._register_peer(conn, selectors.EVENT_WRITE)

    def _decoder(self) -> _codec.FrameDecoder:
        # Handshake frames are tiny: an unauthenticated peer gets a small frame limit
        # (a 16 MiB frame of one-byte containers would keep this thread busy for
        # seconds); the link's own limit applies once it is up.
        return _codec.FrameDecoder(min(_HANDSHAKE_MAX_FRAME, self.config.max_frame))

    def _register_peer(self, conn: _PeerConn, events: int) -> None:
        self._conns[conn.sock.fileno()] = conn
        self._sel.register(conn.sock, events, "peer")

    def _accept_tcp(self) -> None:
        while True:
            try:
                sock, addr = self._tcp.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("%s: accept failed: %s", self.node.name, exc)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _PeerConn(sock, addr, False, "hello", self._decoder(), time.monotonic())
            if self.config.server_ssl is not None:
                conn.sock = self.config.server_ssl.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
                conn.tls_pending = True
            self._register_peer(conn, selectors.EVENT_READ)

    def _peer_event(self, conn: _PeerConn, events: int) -> None:
        if conn.state == "connecting":
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._drop(conn, f"connect: {os.strerror(err)}")
                return
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.config.client_ssl is not None:
                conn.sock = self.config.client_ssl.wrap_socket(
                    conn.sock,
                    server_side=False,
                    do_handshake_on_connect=False,
                    server_hostname=conn.addr[0],
                )
                conn.tls_pending = True
                self._conns[conn.sock.fileno()] = conn
                self._sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, "peer")
            conn.state = "hello"
            conn.nonce_own = _handshake.new_nonce()
            self._send_peer(
                conn,
                (
                    "hello",
                    self.node.name,
                    self.node.creation,
                    conn.nonce_own,
                    self.config.hidden,
                    [self.config.host, self.port],
                    _handshake.PROTOCOL_VERSION,
                ),
            )
            return
        if conn.tls_pending and not self._tls_progress(conn):
            return
        if events & selectors.EVENT_READ:
            self._read_peer(conn)
        if not conn.closed and events & selectors.EVENT_WRITE:
            self._flush_peer(conn)

    def _tls_progress(self, conn: _PeerConn) -> bool:
        try:
            conn.sock.do_handshake()  # type: ignore[attr-defined]
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except (ssl.SSLError, OSError) as exc:
            self._drop(conn, f"TLS handshake failed: {exc}")
            return False
        conn.tls_pending = False
        self._update_events(conn)
        return True

    def _read_peer(self, conn: _PeerConn) -> None:
        def received(data: bytes) -> list[Any]:
            conn.last_rx = time.monotonic()
            return conn.decoder.feed(data)

        def on_frame(frame: Any) -> None:
            try:
                self._on_peer_frame(conn, frame)
            except Exception as exc:  # whatever a peer sends, only its link pays
                self._drop(conn, f"malformed frame {str(frame)[:80]}: {exc}", level=logging.WARNING)

        end = actors.read_frames(
            conn.sock,
            received,
            on_frame,
            lambda: conn.closed,
            bad_frame=(_codec.ProtocolError,),
            again=_TLS_AGAIN,
            buffered=lambda: isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending() > 0,
        )
        if end is None:
            return
        if end.kind == "eof":
            why = f"peer closed: {conn.peer_closing}" if conn.peer_closing else PEER_GONE
            self._drop(conn, why)
        elif end.kind == "recv":
            self._drop(conn, f"recv: {end.error}")
        else:
            self._drop(conn, f"bad frame: {end.error}", level=logging.WARNING)

    def _on_peer_frame(self, conn: _PeerConn, frame: Any) -> None:
        if not isinstance(frame, tuple) or not frame or not isinstance(frame[0], str):
            raise ValueError("not a tagged tuple")
        kind = frame[0]
        if conn.state == "witness":
            _, key, epoch = frame
            if (
                kind != "witness"
                or conn.witness_of is not None
                or not isinstance(key, str)
                or len(key) > 512
                or type(epoch) is not int
            ):
                raise ValueError("a witness names one lease, once")
            conn.witness_of = (key, epoch)
            if conn.name is not None:
                self._recheck_suppressed(conn.name)
            log.debug("%s: witness of %s for %s epoch %d", self.node.name, conn.name, key, epoch)
            return
        if conn.state != "up":
            self._handshake_frame(conn, kind, frame)
            return
        if kind == "tick":
            return
        if kind == "closing":
            conn.peer_closing = str(frame[1])[:200]
            return
        if kind == "send":
            _, src, dst, payload = frame
            self._deliver_local(src, dst, _codec.decode(payload))
        elif kind == "nsend":
            _, src, name, payload = frame
            self._deliver_service(src, name, _codec.decode(payload))
        elif kind == "watch":
            _, src, dst = frame
            if self._pair(src, dst) is None:
                self._to_node(src.node, ("bye", dst, src, "noproc"))
        elif kind == "bye":
            _, src, dst, reason = frame
            pair = self._pairs.get((src, dst))
            if pair is not None:
                self._write_local(pair, actors.encode_local_frame((BYE, reason)))
                self._close_local(pair)
        elif kind == "peers":
            # connect-all: dial the peers of a peer (once; only discovery and
            # connect_node make a node worth redialling)
            for name, host, port in frame[1]:
                if not _is_ip(host) or not isinstance(port, int) or not 0 < port < 65536:
                    continue  # a host name would mean a blocking lookup on this thread
                if (
                    name != self.node.name
                    and name not in self._peers
                    and name not in self._dialing
                    and name not in self._blocked
                    and not conn.hidden
                ):
                    self._dial(str(name), (str(host), int(port)))
        elif kind == "lost":
            # only a visible peer speaks, and only for its own links
            reporter, lost = str(frame[1]), str(frame[2])
            if conn.hidden or reporter != conn.name or lost == reporter:
                raise ValueError(f"a report of a lost link that is not the sender's own: {frame}")
            if self.node.name not in (reporter, lost):
                delay = self.config.down_after + self.config.tick
                linked = self._peers.get(lost)
                self._pending_lost[(reporter, lost)] = (
                    time.monotonic() + delay,
                    conn.creation,
                    linked.creation if linked is not None else 0,
                )
        elif kind == "regained":
            if conn.hidden or str(frame[1]) != conn.name:
                raise ValueError(f"a report of a regained link that is not the sender's: {frame}")
            self._regained(str(frame[1]), str(frame[2]))
        elif kind == "blocked":
            if conn.hidden:
                raise ValueError("a hidden node takes no part in partitions")
            # the sender dropped this node to keep its link to frame[1]: do not dial
            # the sender again before this node can reach frame[1] itself
            assert conn.name is not None
            self._blocked.setdefault(conn.name, set()).add(str(frame[1]))
        else:
            raise ValueError(f"unknown frame type {kind!r}")

    def _handshake_frame(self, conn: _PeerConn, kind: str, frame: Any) -> None:
        cookie = self.config.cookie
        me, my_creation = self.node.name, self.node.creation
        own = _handshake.PROTOCOL_VERSION
        if conn.state == "hello" and not conn.outbound and kind == "hello":
            _, name, creation, nonce, hidden, listen = frame[:6]
            if not (
                isinstance(name, str)
                and _NODE_NAME.fullmatch(name) is not None
                and isinstance(creation, int)
                and isinstance(nonce, bytes)
                and len(nonce) == _handshake.NONCE_LEN
                and isinstance(listen, list)
                and len(listen) == 2
            ):
                raise ValueError("bad hello")
            conn.name, conn.creation, conn.nonce_peer = name, creation, nonce
            conn.version = _handshake.version_of(frame, 6)
            if not _handshake.accepts_version(own, conn.version):
                self._refuse_version(conn)
                return
            conn.listen = (str(listen[0]), int(listen[1]))
            conn.hidden = bool(hidden)
            conn.witness = hidden == WITNESS
            conn.nonce_own = _handshake.new_nonce()
            proof = _handshake.proof(
                cookie,
                "acceptor",
                nonce,
                conn.nonce_own,
                name,
                creation,
                me,
                my_creation,
                (conn.version, own),
            )
            conn.state = "ack"
            self._send_peer(conn, ("challenge", me, my_creation, conn.nonce_own, proof, own))
        elif conn.state == "hello" and conn.outbound and kind == "challenge":
            _, name, creation, nonce, proof = frame[:5]
            version = _handshake.version_of(frame, 5)
            if name == conn.name and not _handshake.accepts_version(own, version):
                conn.version = version
                self._refuse_version(conn)
                return
            expected = _handshake.proof(
                cookie,
                "acceptor",
                conn.nonce_own,
                nonce,
                me,
                my_creation,
                name,
                creation,
                (own, version),
            )
            if name != conn.name or not _handshake.check(expected, proof):
                self._drop(
                    conn, f"bad cookie or wrong node (answered as {name!r})", level=logging.WARNING
                )
                return
            conn.creation, conn.nonce_peer, conn.version = creation, nonce, version
            mine = _handshake.proof(
                cookie,
                "dialer",
                conn.nonce_own,
                nonce,
                me,
                my_creation,
                name,
                creation,
                (own, version),
            )
            conn.state = "ok"
            self._send_peer(conn, ("ack", mine))
        elif (
            kind == "refuse"
            and len(frame) >= 3
            and ((conn.outbound and conn.state == "hello") or conn.state == "ack")
        ):
            # a version refusal: by the acceptor instead of its challenge, or by the
            # dialer instead of its ack (before any proof: it only ends this connection)
            theirs = _handshake.version_of(frame, 2)
            assert conn.name is not None
            self._say_version(conn, _handshake.refused_by(conn.name, own, theirs), theirs)
            self._drop(conn, f"refused for its protocol version ({theirs})", level=logging.DEBUG)
        elif conn.state == "ack" and kind == "ack":
            assert conn.name is not None
            expected = _handshake.proof(
                cookie,
                "dialer",
                conn.nonce_peer,
                conn.nonce_own,
                conn.name,
                conn.creation,
                me,
                my_creation,
                (conn.version, own),
            )
            if not _handshake.check(expected, frame[1]):
                self._drop(conn, "bad cookie", level=logging.WARNING)
                return
            if conn.witness:
                self._accept_witness(conn)
                return
            refusal = self._admit(conn)
            if refusal:
                self._send_peer(conn, ("refuse", refusal))
                self._flush_peer(conn)
                self._drop(conn, refusal, level=logging.DEBUG)
                return
            self._send_peer(conn, ("ok",))
            self._up(conn)
        elif conn.state == "ok" and kind == "ok":
            refusal = self._admit(conn)
            if refusal:
                self._drop(conn, refusal, level=logging.DEBUG)
                return
            self._up(conn)
        elif kind == "refuse" and conn.outbound and conn.state == "ok":
            # only the acceptor refuses, and only after both sides proved the cookie
            self._drop(conn, f"refused by the peer: {str(frame[1])[:200]!r}")
        else:
            raise ValueError(f"{kind!r} out of order in handshake state {conn.state}")

    def _refuse_version(self, conn: _PeerConn) -> None:
        """Refuse a peer whose protocol this node does not talk to (``conn.version``): one
        line, a ``refuse`` naming this node's version, and only this connection closed."""
        assert conn.name is not None
        own = _handshake.PROTOCOL_VERSION
        self._say_version(conn, _handshake.refusal(conn.name, own, conn.version), conn.version)
        self._send_peer(conn, ("refuse", _handshake.refusal_reason(own, conn.version), own))
        self._flush_peer(conn)
        self._drop(conn, f"protocol version {conn.version} refused", level=logging.DEBUG)

    def _say_version(self, conn: _PeerConn, line: str, version: int) -> None:
        """Log a version refusal at WARNING once per peer and version every
        ``_VERSION_LOG_EVERY`` seconds (a refused node keeps redialling), else at DEBUG."""
        now = time.monotonic()
        key = (str(conn.name), version)
        last = self._version_logged.get(key)
        fresh = last is None or now - last >= _VERSION_LOG_EVERY
        if fresh:
            if len(self._version_logged) >= 1024:  # names come from unproven peers
                self._version_logged.clear()
            self._version_logged[key] = now
        log.log(
            logging.WARNING if fresh else logging.DEBUG,
            "%s: %s (%s:%s)",
            self.node.name,
            line,
            conn.addr[0],
            conn.addr[1],
        )

    def _accept_witness(self, conn: _PeerConn) -> None:
        """A proven witness dial: it never becomes a link (no ticks, no traffic); it
        names its lease next, and its close is reported to the witness watchers."""
        if self._witnesses >= _MAX_WITNESSES:
            self._send_peer(conn, ("refuse", "too many witnesses"))
            self._flush_peer(conn)
            self._drop(conn, "too many witnesses", level=logging.WARNING)
            return
        self._witnesses += 1
        conn.state = "witness"
        # silent by design, so TCP keepalive finds a holder host that vanished (its
        # witness is then dropped for a timeout, which voids nothing)
        with contextlib.suppress(OSError, AttributeError):
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10)
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        self._send_peer(conn, ("ok",))

    def _on_lost(self, reporter: str, lost: str) -> None:
        """``reporter`` lost its link to ``lost``: see :mod:`._partition`."""
        decision = _partition.overlap_victim(self.node.name, reporter, lost, self._peers)
        if decision is None:
            return
        victim, keeper = decision
        self._blocked.setdefault(victim, set()).add(keeper)
        conn = self._peers.get(victim)
        if conn is not None:
            self._dropped[victim] = conn.listen or conn.addr
            self._send_peer(conn, ("blocked", keeper))
            self._flush_peer(conn)
            self._drop(conn, f"prevent overlapping partitions: {reporter} lost {lost}", policy=True)

    def _regained(self, a: str, b: str) -> None:
        self._pending_lost.pop((a, b), None)
        self._pending_lost.pop((b, a), None)
        self._unblock_pair(a, b)

    def _unblock_pair(self, a: str, b: str) -> None:
        for victim, keeper in ((a, b), (b, a)):
            keepers = self._blocked.get(victim)
            if keepers is not None:
                keepers.discard(keeper)
                if not keepers:
                    del self._blocked[victim]

    def _unblock_keeper(self, keeper: str) -> None:
        for victim in list(self._blocked):
            self._unblock_pair(victim, keeper)

    def _broadcast(self, frame: tuple[Any, ...], but: str) -> None:
        for name, peer in list(self._peers.items()):
            if name != but and not peer.hidden:
                self._send_peer(peer, frame)

    def _admit(self, conn: _PeerConn) -> str:
        """Why this authenticated connection must not become the node's link, or ''."""
        name = conn.name
        assert name is not None
        if name in self._blocked and not conn.hidden:
            return "refused to prevent overlapping partitions"
        current = self._peers.get(name)
        if current is not None and current is not conn:
            if current.creation != conn.creation:
                self._drop(current, "replaced by a new incarnation")
            else:
                return "duplicate connection"
        other = self._dialing.get(name)
        if not conn.outbound and other is not None and other is not conn:
            # both dialled at once: the dial of the smaller name wins
            if _handshake.wins_duplicate(self.node.name, name):
                return "simultaneous connect: keeping this node's own dial"
            self._dialing.pop(name, None)
            self._close_peer(other)
        return ""

    def _up(self, conn: _PeerConn) -> None:
        name = conn.name
        assert name is not None
        conn.state = "up"
        conn.decoder.max_frame = self.config.max_frame
        conn.last_rx = conn.last_tx = time.monotonic()
        if self._dialing.get(name) is conn:
            del self._dialing[name]
        self._peers[name] = conn
        if conn.outbound:
            conn.listen = conn.addr
        if not conn.hidden and not self.config.hidden:
            self._lost.pop(name, None)
            self._dropped.pop(name, None)
            # its links to the nodes this node can reach are whole again
            self._unblock_keeper(name)
            self._broadcast(("regained", self.node.name, name), but=name)
            for lost in self._lost:
                self._send_peer(conn, ("lost", self.node.name, lost))
            self._send_peer(
                conn,
                (
                    "peers",
                    [
                        [n, p.listen[0], p.listen[1]]
                        for n, p in self._peers.items()
                        if n != name and not p.hidden and p.listen is not None
                    ],
                ),
            )
            self._notify(NodeUp(name))
        log.info("%s: connected to %s%s", self.node.name, name, " (hidden)" if conn.hidden else "")
        for frame in self._waiting.pop(name, ()):
            self._send_peer(conn, frame)

    def _drop(
        self, conn: _PeerConn, reason: str, level: int = logging.INFO, policy: bool = False
    ) -> None:
        if conn.closed:
            return
        name = conn.name
        was_up = conn.state == "up" and name is not None and self._peers.get(name) is conn
        log.log(
            level,
            "%s: %s %s %s:%s closed: %s",
            self.node.name,
            "witness of" if conn.state == "witness" else "connection",
            name or "?",
            conn.addr[0],
            conn.addr[1],
            reason,
        )
        if conn.state == "witness":
            self._witnesses -= 1
            self._close_peer(conn)
            lease = conn.witness_of
            if lease is not None and name is not None:
                if self._witnessed(name, lease):
                    self._suppressed[(name, lease)] = reason
                else:
                    self._notify_witness(WitnessDown(name, *lease, reason))
            if name is not None:
                self._recheck_suppressed(name)
            return
        if (
            was_up
            and reason != PEER_GONE
            and not reason.startswith(("recv:", "send:", "peer closed"))
        ):
            # this node lives on: say so, so the peer does not take the close for a death
            with contextlib.suppress(OSError, ValueError):
                conn.sock.setblocking(True)
                conn.sock.settimeout(0.05)
                conn.sock.sendall(bytes(conn.wbuf) + _codec.encode_frame(("closing", reason)))
        self._close_peer(conn)
        if name is not None and self._dialing.get(name) is conn:
            del self._dialing[name]
            if name not in self._peers:
                self._fail_waiting(name)
        if was_up and name is not None:
            del self._peers[name]
            self._node_lost(name, reason, conn.hidden)
            if conn.peer_closing == "disconnect":
                # the peer left on purpose (disconnect_node / global.disconnect): it is
                # no longer worth redialling until discovery or connect_node names it again
                self._manual.pop(name, None)
                self._discovered.pop(name, None)
                self._known.pop(name, None)
                self._lost.pop(name, None)
            elif (
                not conn.hidden
                and not policy
                and not self.config.hidden
                and name not in self._blocked
            ):
                # (a peer that blocked this node dropped it on purpose: not a failure)
                # a link failed: redial it, and tell the others (overlapping partitions)
                self._lost[name] = conn.listen or conn.addr
                self._unblock_keeper(name)
                self._broadcast(("lost", self.node.name, name), but=name)

    def _close_peer(self, conn: _PeerConn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        conn.sock.close()

    def _node_lost(self, name: str, reason: str, hidden: bool) -> None:
        for (src, _dst), pair in list(self._pairs.items()):
            if src.node == name:
                self._write_local(pair, actors.encode_local_frame((BYE, "noconnection")))
                self._close_local(pair)
        self._fail_waiting(name)
        if not hidden:
            self._notify(NodeDown(name, reason))
        self._next_dial[name] = time.monotonic() + self.config.redial_interval

    def _fail_waiting(self, name: str) -> None:
        for frame in self._waiting.pop(name, ()):
            if frame[0] in ("send", "watch"):
                src, dst = frame[1], frame[2]
                pair = self._pair(dst, src)
                if pair is not None:
                    self._write_local(pair, actors.encode_local_frame((BYE, "noconnection")))
                    self._close_local(pair)

    def _send_peer(self, conn: _PeerConn, frame: tuple[Any, ...]) -> None:
        conn.wbuf += _codec.encode_frame(frame)
        conn.last_tx = time.monotonic()
        if not conn.tls_pending:
            self._flush_peer(conn)

    def _flush_peer(self, conn: _PeerConn) -> None:
        while conn.wbuf and not conn.closed:
            try:
                sent = conn.sock.send(conn.wbuf)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                break
            except OSError as exc:
                self._drop(conn, f"send: {exc}")
                return
            del conn.wbuf[:sent]
        if not conn.closed:
            self._update_events(conn)

    def _update_events(self, conn: _PeerConn) -> None:
        events = selectors.EVENT_READ
        if conn.wbuf or conn.tls_pending:
            events |= selectors.EVENT_WRITE
        with contextlib.suppress(KeyError, ValueError):
            self._sel.modify(conn.sock, events, "peer")

    def _to_node(self, name: str, frame: tuple[Any, ...]) -> None:
        """Send to a node; queue while its connection is being made; else fail."""
        conn = self._peers.get(name)
        if conn is not None:
            self._send_peer(conn, frame)
            return
        if name not in self._dialing and name in self._known:
            self._dial(name, self._known[name])
        if name in self._dialing:
            queue = self._waiting.setdefault(name, deque())
            if len(queue) < _MAX_PENDING:
                queue.append(frame)
                return
        self._waiting.setdefault(name, deque()).append(frame)
        self._fail_waiting(name)

    # ------------------------------------------------------------------ local side

    def _accept_local(self, lsock: socket.socket, tag: str) -> None:
        while True:
            try:
                sock, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            conn = _Local(sock, "whereis" if tag == "name" else "proc", actors.LocalFrameReader())
            self._conns[sock.fileno()] = conn
            self._sel.register(sock, selectors.EVENT_READ, "local")
            if tag == "name":
                self._write_local(conn, actors.encode_local_frame((HELLO, self.io_pid)))

    def _local_event(self, conn: _Local, events: int) -> None:
        if events & selectors.EVENT_WRITE:
            self._flush_local(conn)
        if events & selectors.EVENT_READ and not conn.closed:
            self._read_local(conn)

    def _read_local(self, conn: _Local) -> None:
        def on_frame(frame: Any) -> None:
            try:
                self._on_local_frame(conn, frame)
            except Exception:
                log.error(
                    "%s: bad local frame %.80r; connection closed",
                    self.node.name,
                    frame,
                    exc_info=True,
                )
                self._close_local(conn)

        end = actors.read_frames(
            conn.sock,
            conn.reader.feed,
            on_frame,
            lambda: conn.closed,
            bad_frame=(FrameError,),
        )
        if end is None:
            return
        if end.kind == "frame":
            log.warning("%s: local connection closed: %s", self.node.name, end.error)
            self._close_local(conn)
        else:
            self._local_eof(conn)

    def _on_local_frame(self, conn: _Local, frame: Any) -> None:
        tag = frame[0]
        if conn.kind == "pair":
            if conn.remote == self.io_pid:  # a monitor_nodes subscriber ended
                if tag == BYE and conn.peer is not None:
                    self._subscribers.discard(conn.peer)
                    self._close_local(conn)
                return
            if tag == BYE and conn.peer is not None and conn.remote is not None:
                # the local target ended: tell the remote process it was introduced to
                self._to_node(
                    conn.remote.node, ("bye", conn.peer, conn.remote, _codec.wire_reason(frame[1]))
                )
                self._close_local(conn)
            return
        if conn.peer is None:
            if tag == HELLO and isinstance(frame[1], Pid):
                conn.peer = frame[1]
            else:
                self._close_local(conn)
            return
        src = conn.peer
        if tag in (DIST_SEND, DIST_SEND_WATCH):
            _, dst, payload = frame
            # the connection that will carry dst's BYE (or noconnection) back to src; on
            # the far side, delivering opens the connection that carries dst's BYE
            if tag == DIST_SEND_WATCH and self._pair(dst, src) is None:
                return
            if dst.node == self.node.name:  # a pid of an earlier incarnation of this node
                if tag == DIST_SEND_WATCH:
                    self._to_local_bye(dst, src, "noproc")
            else:
                self._to_node(dst.node, ("send", src, dst, payload))
        elif tag == DIST_NSEND:
            _, node, name, payload = frame
            if node == self.node.name:
                self._deliver_service(src, name, _codec.decode(payload))
            else:
                self._to_node(node, ("nsend", src, name, payload))
        elif tag == DIST_WATCH:
            dst = frame[1]
            # the connection that will carry dst's BYE to src
            if self._pair(dst, src) is None:
                return
            if dst.node == self.node.name:
                self._to_local_bye(dst, src, "noproc")
            else:
                self._to_node(dst.node, ("watch", src, dst))

    def _to_local_bye(self, gone: Pid, to: Pid, reason: Any) -> None:
        pair = self._pairs.get((gone, to))
        if pair is not None:
            self._write_local(pair, actors.encode_local_frame((BYE, reason)))
            self._close_local(pair)

    def _local_eof(self, conn: _Local) -> None:
        if conn.kind == "pair" and conn.remote == self.io_pid and conn.peer is not None:
            self._subscribers.discard(conn.peer)
        elif conn.kind == "pair" and conn.peer is not None and conn.remote is not None:
            self._to_node(conn.remote.node, ("bye", conn.peer, conn.remote, "killed"))
        self._close_local(conn)

    def _pair(self, src: Pid, dst: Pid) -> _Local | None:
        """The connection to local ``dst`` introduced as ``src``; None if dst is gone."""
        pair = self._pairs.get((src, dst))
        if pair is not None:
            return pair
        if dst.node != self.node.name or dst.creation != self.node.creation:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2.0)
        try:
            sock.connect(address_of(dst))
        except OSError:
            sock.close()
            return None
        sock.setblocking(False)
        pair = _Local(sock, "pair", actors.LocalFrameReader(), peer=dst, remote=src)
        self._pairs[(src, dst)] = pair
        self._conns[sock.fileno()] = pair
        self._sel.register(sock, selectors.EVENT_READ, "local")
        self._write_local(pair, actors.encode_local_frame((HELLO, src)))
        return pair

    def _deliver_local(self, src: Pid, dst: Pid, inner: Any) -> None:
        if not (
            isinstance(src, Pid)
            and isinstance(dst, Pid)
            and isinstance(inner, tuple)
            and inner
            and inner[0] in REMOTE_TAGS
            and FRAME_ARITY[inner[0]] == len(inner)
        ):
            log.warning(
                "%s: dropped a malformed message from %r to %r: %.80r",
                self.node.name,
                src,
                dst,
                inner,
            )
            return
        pair = self._pair(src, dst)
        if pair is None:
            if src.node != self.node.name:
                self._to_node(src.node, ("bye", dst, src, "noproc"))
            return
        self._write_local(pair, actors.encode_local_frame(inner))

    def _deliver_service(self, src: Pid, name: Any, inner: Any) -> None:
        pid = self._services.get(name) if isinstance(name, str) else None
        if pid is None:
            log.debug(
                "%s: no service %.60r here; message from %r dropped", self.node.name, name, src
            )
            return
        self._deliver_local(src, pid, inner)

    def _write_local(self, conn: _Local, data: bytes) -> None:
        if conn.closed:
            return
        conn.wbuf += data
        self._flush_local(conn)

    def _flush_local(self, conn: _Local) -> None:
        while conn.wbuf and not conn.closed:
            try:
                sent = conn.sock.send(conn.wbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._local_eof(conn)
                return
            del conn.wbuf[:sent]
        if conn.closed:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.wbuf else 0)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.modify(conn.sock, events, "local")

    def _close_local(self, conn: _Local) -> None:
        if conn.closed:
            return
        if conn.wbuf:
            # a BYE must not be lost to a full buffer: finish it, bounded
            with contextlib.suppress(OSError):
                conn.sock.setblocking(True)
                conn.sock.settimeout(1.0)
                conn.sock.sendall(conn.wbuf)
        conn.closed = True
        self._conns.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        conn.sock.close()
        if (
            conn.kind == "pair"
            and conn.remote is not None
            and conn.peer is not None
            and self._pairs.get((conn.remote, conn.peer)) is conn
        ):
            del self._pairs[(conn.remote, conn.peer)]

    def _witnessed(self, name: str, lease: tuple[str, int]) -> bool:
        """``name``'s acting process may still hold another witness of ``lease`` here:
        it replaced the one that closed (after reaching a new incarnation of this
        node), or one whose lease is not read yet may be that. Then it lives, and
        nothing is voided early."""
        return any(
            isinstance(c, _PeerConn)
            and not c.closed
            and c.state == "witness"
            and c.name == name
            and c.witness_of in (lease, None)
            for c in self._conns.values()
        )

    def _recheck_suppressed(self, name: str) -> None:
        """A close of ``name``'s witness that another one (maybe not named yet) kept
        from voiding: report it once no witness of that lease from ``name`` is left."""
        for (node, lease), reason in list(self._suppressed.items()):
            if node == name and not self._witnessed(node, lease):
                del self._suppressed[(node, lease)]
                self._notify_witness(WitnessDown(node, *lease, reason))

    def _notify_witness(self, event: WitnessDown) -> None:
        self._tell(self._witness_watchers, event)

    def _notify(self, event: NodeUp | NodeDown) -> None:
        self._tell(self._subscribers, event)

    def _tell(self, pids: set[Pid], event: Any) -> None:
        for pid in list(pids):
            pair = self._pair(self.io_pid, pid)
            if pair is None:
                pids.discard(pid)
                continue
            self._write_local(pair, actors.encode_local_frame((MSG, event)))
