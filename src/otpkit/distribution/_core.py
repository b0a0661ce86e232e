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

Before authentication (:mod:`._handshake`): a connection whose peer has not proved the
cookie is read at most ``_PREAUTH_RECV`` bytes per pass of the loop and
``_PREAUTH_BYTES`` in all, its frames are decoded plain (no ext type: :mod:`._codec`)
and judged one at a time, the first bad one closing it before the next is decoded, and
at most ``_MAX_UNPROVEN`` accepted connections are unproven at once (a new one closes
the oldest). So a pass of the loop spends a bounded time on unproven sockets, whatever
they send, and the links' ticks go out on time. Their failures (version refusals
included: the name in a hello proves nothing) are logged once a minute per address
(:class:`._handshake.FailureLog`), the others at DEBUG.

Liveness: every connection sends ``tick`` when it has sent nothing for ``tick`` seconds;
any bytes received count as life; ``down_after`` seconds of silence, or a closed socket,
and the node is down. Known peers are redialled every ``redial_interval`` with a short
connect timeout, so a healed partition re-forms without application traffic.

Metrics: a link that comes up or goes down sets ``otpkit_dist_link_up`` and counts in
``otpkit_dist_link_changes_total``, labelled by the peer's name. The bytes and frames of
each link are counted here and added to ``otpkit_dist_{sent,received}_*_total`` at most
once a second (:data:`TRAFFIC_EVERY`) and when the link goes down. A hidden peer (a
shell) takes a new name each time: its series are forgotten when its link goes down,
a visible peer's stay (``link_up`` 0).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from otpkit import actors, metrics
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
from otpkit.distribution._handshake import PROBE, WITNESS
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
#: Before a peer proved the cookie: the bytes asked of one recv per readiness event,
#: the bytes it may send in all (the handshake's frames take a few hundred), and how
#: many accepted connections may be unproven at once (a new one closes the oldest).
_PREAUTH_RECV = 1024
_PREAUTH_BYTES = 16 * 1024
_MAX_UNPROVEN = 64
#: The bytes asked of one recv on a link: below the allocator's mmap threshold.
_RECV_SIZE = 65536
#: Connections taken from the listening socket per readiness event.
_ACCEPTS_PER_EVENT = 64
#: Witness connections a node accepts at once (each holds one socket and no buffer).
_MAX_WITNESSES = 1024
#: A version refusal is logged once per peer and version in this many seconds (a refused
#: node redials every redial_interval, and both sides dial), and one whose peer an
#: unproven hello named also at most once a minute per address; the others at DEBUG.
_VERSION_LOG_EVERY = 60.0
#: Seconds between two additions of the links' traffic to the node's metrics.
TRAFFIC_EVERY = 1.0
# a link's traffic counters: the metric and the _PeerConn field it adds
_TRAFFIC = (
    ("otpkit_dist_sent_bytes_total", "tx_bytes"),
    ("otpkit_dist_sent_frames_total", "tx_frames"),
    ("otpkit_dist_received_bytes_total", "rx_bytes"),
    ("otpkit_dist_received_frames_total", "rx_frames"),
)


@dataclass(frozen=True)
class NodeUp:
    """``monitor_nodes`` message: a connection to ``node`` is up; ``version`` is the dist
    protocol it speaks (what its processes understand: see ``dist.versions``)."""

    node: str
    version: int = 0


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

    def __post_init__(self) -> None:
        problem = _handshake.cookie_problem(self.cookie)
        if problem:
            raise ValueError(problem)


@dataclass
class _PeerConn:
    sock: socket.socket
    addr: tuple[str, int]
    outbound: bool
    state: str  # connecting | handshake | up | witness
    decoder: _codec.FrameDecoder
    started: float
    name: str | None = None
    creation: int = 0
    hidden: bool = False
    listen: tuple[str, int] | None = None  # where the peer accepts connections
    handshake: _handshake.Dialer | _handshake.Acceptor | None = None
    received: int = 0  # bytes received before the peer proved the cookie
    wbuf: bytearray = field(default_factory=bytearray)
    last_rx: float = 0.0
    last_tx: float = 0.0
    tls_pending: bool = False
    closed: bool = False
    peer_closing: str = ""  # why the peer said it closes the link (it lives on)
    witness: bool = False  # a witness dial (state "witness" once proven)
    version: int = 0  # the dist protocol the peer named in its hello or challenge
    witness_of: tuple[str, int] | None = None  # the lease (key, epoch) it witnesses
    # the link's traffic not yet added to the node's metrics (see DistCore._add_traffic)
    tx_bytes: int = 0
    tx_frames: int = 0
    rx_bytes: int = 0
    rx_frames: int = 0


#: Reasons that mean the peer's process (or host) is gone: its sockets closed without a
#: word. A live peer that drops the link on purpose says ``closing`` first, so these
#: never describe it (the majority lease trusts this to hand a dead holder's lease on).
PEER_GONE = "connection closed"


@dataclass
class _Local:
    sock: socket.socket
    kind: str  # proc (a local process talking to us) | pair | whereis
    chan: actors.LocalChannel  # the challenge, then the frames (actors' _wire)
    peer: Pid | None = None  # proc: the local process; pair: the local target
    remote: Pid | None = None  # pair: the remote pid this connection is introduced as
    wbuf: bytearray = field(default_factory=bytearray)
    closed: bool = False
    stranger: bool = False  # accepted from another user or PID namespace
    closing: bool = False  # closed once the frames waiting for the challenge are out


#: Local connections accepted per readable event of a listener (the others at the next
#: pass of the loop: a flood of connections does not hold up the links).
_LOCAL_ACCEPTS_PER_EVENT = 64


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
        # links a previous dist process saw up: none is, until it comes up again here
        metrics.forget_all("otpkit_dist_link_up")
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
        # accepted connections whose peer has not proved the cookie, oldest first
        self._unproven: dict[int, _PeerConn] = {}
        # failures of unproven connections, logged loud once a minute per address
        self._failures = _handshake.FailureLog()
        # local connections that have not proved the node's key, and their refusals
        self._unproven_local = actors.UnprovenConnections()
        self._local_refusals = actors.RateLog(log)
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
        self._traffic_due = 0.0  # when the links' traffic is next added to the metrics
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

    def versions(self) -> dict[str, int]:
        return {n: p.version for n, p in self._peers.items() if not p.hidden}

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
        if now >= self._traffic_due:
            self._traffic_due = now + TRAFFIC_EVERY
            for name, peer in self._peers.items():
                self._add_traffic(name, peer)
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
        """Dial ``name`` at ``addr`` (in ``_dialing`` until it is up or fails)."""
        self._next_dial[name] = time.monotonic() + self.config.redial_interval
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            # bind the source address: a cut on one address must cut this node only
            sock.bind((self.config.host, 0))
            err = sock.connect_ex(addr)
        except OSError as exc:
            log.debug("%s: dial %s at %s failed: %s", self.node.name, name, addr, exc)
            err = -1
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
        # Handshake frames are tiny and plain: an unauthenticated peer gets a small frame
        # limit (a 16 MiB frame of one-byte containers would keep this thread busy for
        # seconds) and no ext type; the link's own limit applies once it is up.
        return _codec.FrameDecoder(min(_HANDSHAKE_MAX_FRAME, self.config.max_frame), plain=True)

    def _register_peer(self, conn: _PeerConn, events: int) -> None:
        self._conns[conn.sock.fileno()] = conn
        self._sel.register(conn.sock, events, "peer")

    def _accept_tcp(self) -> None:
        for _ in range(_ACCEPTS_PER_EVENT):  # the others at the next pass of the loop
            try:
                sock, addr = self._tcp.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("%s: accept failed: %s", self.node.name, exc)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _PeerConn(sock, addr, False, "handshake", self._decoder(), time.monotonic())
            conn.handshake = _handshake.Acceptor(
                self.config.cookie, self.node.name, self.node.creation
            )
            if self.config.server_ssl is not None:
                conn.sock = self.config.server_ssl.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
                conn.tls_pending = True
            self._register_peer(conn, selectors.EVENT_READ)
            self._unproven[id(conn)] = conn
            if len(self._unproven) > _MAX_UNPROVEN:
                oldest = next(iter(self._unproven.values()))
                self._drop(
                    oldest,
                    f"too many unauthenticated connections ({_MAX_UNPROVEN}): the oldest closed",
                    level=logging.WARNING,
                )

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
            conn.state = "handshake"
            assert conn.name is not None
            dialer = _handshake.Dialer(
                self.config.cookie, self.node.name, self.node.creation, conn.name
            )
            conn.handshake = dialer
            self._send_peer(conn, dialer.hello(self.config.hidden, (self.config.host, self.port)))
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
        """Read what ``conn`` has for now and handle its frames. A peer that has not
        proved the cookie is read ``_PREAUTH_RECV`` bytes per event and ``_PREAUTH_BYTES``
        in all, and its frames are judged one at a time (plain: see _codec), so whatever
        it sends costs this thread a bounded amount of work per pass of the loop."""
        tls = isinstance(conn.sock, ssl.SSLSocket)
        while not conn.closed:
            proven = conn.state in ("up", "witness")
            size = _RECV_SIZE if proven else _PREAUTH_RECV
            try:
                data = conn.sock.recv(size)
            except _TLS_AGAIN:
                return
            except OSError as exc:
                self._drop(conn, f"recv: {exc}")
                return
            if not data:
                why = f"peer closed: {conn.peer_closing}" if conn.peer_closing else PEER_GONE
                self._drop(conn, why)
                return
            conn.last_rx = time.monotonic()
            if conn.state == "up":
                conn.rx_bytes += len(data)
            if not proven:
                conn.received += len(data)
                if conn.received > _PREAUTH_BYTES:
                    self._drop(
                        conn,
                        f"sent over {_PREAUTH_BYTES} bytes before authentication",
                        level=logging.WARNING,
                    )
                    return
            self._peer_frames(conn, data)
            if conn.closed:
                return
            # a TLS socket may hold decrypted bytes that no readiness event announces
            pending = tls and conn.sock.pending() > 0  # type: ignore[attr-defined]
            if not pending and (not proven or len(data) < size):
                return

    def _peer_frames(self, conn: _PeerConn, data: bytes) -> None:
        """Decode and handle the frames ``data`` completes; while the peer is unproven
        one at a time, each judged before the next is decoded."""
        decoder = conn.decoder
        while not conn.closed:
            plain = decoder.plain
            try:
                frames = decoder.feed(data, 1 if plain else 0)
            except _codec.ProtocolError as exc:
                self._drop(conn, f"bad frame: {exc}", level=logging.WARNING)
                return
            data = b""
            if not frames:
                return
            for frame in frames:
                try:
                    self._on_peer_frame(conn, frame)
                except Exception as exc:  # whatever a peer sends, only its link pays
                    self._drop(
                        conn, f"malformed frame {str(frame)[:80]}: {exc}", level=logging.WARNING
                    )
                if conn.closed:
                    return
            if not plain:
                return  # every complete frame was decoded at once

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
            self._handshake_frame(conn, frame)
            return
        conn.rx_frames += 1
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

    def _handshake_frame(self, conn: _PeerConn, frame: tuple[Any, ...]) -> None:
        """The next frame of ``conn``'s handshake (see _handshake): its state machine
        says what to send; this node decides whether a proven peer becomes a link."""
        hs = conn.handshake
        try:
            if isinstance(hs, _handshake.Dialer):
                send, up = hs.on_frame(frame)
                if send is not None:
                    conn.creation, conn.version = hs.peer_creation, hs.version
                    self._send_peer(conn, send)
                if up:
                    refusal = self._admit(conn)
                    if refusal:
                        self._drop(conn, refusal, level=logging.DEBUG)
                    else:
                        self._up(conn)
                return
            assert hs is not None
            if hs.peer is None:
                try:
                    challenge = hs.on_hello(frame)
                finally:
                    if hs.peer is not None:
                        self._hello(conn, hs.peer)
                self._send_peer(conn, challenge)
                return
            hs.on_ack(frame)
        except _handshake.HandshakeError as exc:
            self._handshake_failed(conn, frame, exc)
            return
        # the dialer proved it holds the cookie: only now does this node prove it too
        self._unproven.pop(id(conn), None)
        if conn.witness:
            self._accept_witness(conn)
            return
        if hs.peer.hidden == PROBE:
            self._send_peer(conn, hs.ok())
            self._flush_peer(conn)
            self._drop(conn, "answered a probe", level=logging.DEBUG)
            return
        refusal = self._admit(conn)
        if refusal:
            self._send_peer(conn, ("refuse", refusal))
            self._flush_peer(conn)
            self._drop(conn, refusal, level=logging.DEBUG)
            return
        self._send_peer(conn, hs.ok())
        self._up(conn)

    def _hello(self, conn: _PeerConn, hello: _handshake.PeerHello) -> None:
        """What an accepted connection's hello says about its dialer."""
        conn.name, conn.creation, conn.version = hello.name, hello.creation, hello.version
        conn.listen = hello.listen
        conn.hidden = bool(hello.hidden)
        conn.witness = hello.hidden == WITNESS

    def _handshake_failed(
        self, conn: _PeerConn, frame: tuple[Any, ...], exc: _handshake.HandshakeError
    ) -> None:
        """End ``conn``'s handshake as ``exc`` says, with one line (see _drop)."""
        own = _handshake.PROTOCOL_VERSION
        name = conn.name or "?"
        if exc.kind == "version":
            # a version this node does not talk to: one line, a refuse naming its own
            conn.version = exc.version
            self._say_version(conn, _handshake.refusal(name, own, exc.version), exc.version)
            assert exc.send is not None
            self._send_peer(conn, exc.send)
            self._flush_peer(conn)
            self._drop(conn, f"protocol version {exc.version} refused", level=logging.DEBUG)
        elif exc.kind == "refused version":
            # by the acceptor instead of its challenge, or by the dialer instead of its
            # ack (before any proof: it only ends this connection)
            self._say_version(conn, _handshake.refused_by(name, own, exc.version), exc.version)
            self._drop(conn, f"refused for its protocol version ({exc.version})", logging.DEBUG)
        elif exc.kind == "cookie":
            if not conn.outbound:
                self._send_peer(conn, ("refuse", _handshake.BAD_COOKIE))
                self._flush_peer(conn)
            self._drop(conn, exc.detail, level=logging.WARNING)
        elif exc.kind == "refused":
            # after this node's proof: a wrong cookie is an operator's problem
            level = logging.WARNING if exc.detail == _handshake.BAD_COOKIE else logging.INFO
            self._drop(conn, f"refused by the peer: {exc.detail!r}", level=level)
        else:
            self._drop(conn, f"malformed frame {str(frame)[:80]}: {exc.detail}", logging.WARNING)

    def _say_version(self, conn: _PeerConn, line: str, version: int) -> None:
        """Log a version refusal at WARNING once per peer and version every
        ``_VERSION_LOG_EVERY`` seconds (a refused node keeps redialling, and both sides
        dial), else at DEBUG. For an accepted connection, whose name an unproven hello
        chose, also at most once a minute per address, with the other
        failures before authentication (``_failures``)."""
        now = time.monotonic()
        key = (str(conn.name), version)
        last = self._version_logged.get(key)
        loud = last is None or now - last >= _VERSION_LOG_EVERY
        more = ""
        if loud and not conn.outbound:
            where = self._where(conn)
            since = self._failures.note(where, now)
            loud = since is not None
            if since:
                more = f" ({since} more {where} since the last warning)"
        if loud:
            if len(self._version_logged) >= 1024:
                self._version_logged.clear()
            self._version_logged[key] = now
        log.log(
            logging.WARNING if loud else logging.DEBUG,
            "%s: %s (%s:%s)%s",
            self.node.name,
            line,
            conn.addr[0],
            conn.addr[1],
            more,
        )

    @staticmethod
    def _where(conn: _PeerConn) -> str:
        """The address a failure before authentication is counted under (``_failures``)."""
        return f"{'dials of' if conn.outbound else 'from'} {conn.addr[0]}"

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
        assert isinstance(conn.handshake, _handshake.Acceptor)
        self._send_peer(conn, conn.handshake.ok())

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
        conn.decoder.plain = False
        conn.handshake = None
        self._unproven.pop(id(conn), None)
        conn.last_rx = conn.last_tx = time.monotonic()
        if self._dialing.get(name) is conn:
            del self._dialing[name]
        self._peers[name] = conn
        metrics.gauge("otpkit_dist_link_up", {"peer": name}, 1)
        metrics.inc("otpkit_dist_link_changes_total", {"peer": name, "state": "up"})
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
            self._notify(NodeUp(name, conn.version))
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
        more = ""
        if conn.state == "handshake" and level > logging.DEBUG:
            # a failure before the peer proved anything: whoever can reach the port
            # repeats it at will (and this node redials a peer that fails its own), so
            # one loud line per address a minute, with a count
            where = self._where(conn)
            since = self._failures.note(where, time.monotonic())
            if since is None:
                level = logging.DEBUG
            elif since:
                more = f" ({since} more {where} since the last warning)"
        log.log(
            level,
            "%s: %s %s %s:%s closed: %s%s",
            self.node.name,
            "witness of" if conn.state == "witness" else "connection",
            name or "?",
            conn.addr[0],
            conn.addr[1],
            reason,
            more,
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
            self._link_down(name, conn)
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

    def _add_traffic(self, name: str, conn: _PeerConn) -> None:
        """Add the traffic counted on the link to ``name`` since the last time to the
        node's metrics."""
        if not metrics.enabled():
            return
        for metric, field_name in _TRAFFIC:
            count = getattr(conn, field_name)
            if count:
                metrics.inc(metric, {"peer": name}, count)
                setattr(conn, field_name, 0)

    def _link_down(self, name: str, conn: _PeerConn) -> None:
        """The link to ``name`` went down, in the node's metrics: a visible peer's
        series stay (its link 0), a hidden peer's are forgotten."""
        peer = {"peer": name}
        if not conn.hidden:
            self._add_traffic(name, conn)
            metrics.gauge("otpkit_dist_link_up", peer, 0)
            metrics.inc("otpkit_dist_link_changes_total", {**peer, "state": "down"})
            return
        metrics.forget("otpkit_dist_link_up", peer)
        for state in ("up", "down"):
            metrics.forget("otpkit_dist_link_changes_total", {**peer, "state": state})
        for metric, _ in _TRAFFIC:
            metrics.forget(metric, peer)

    def _close_peer(self, conn: _PeerConn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._unproven.pop(id(conn), None)
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
        data = _codec.encode_frame(frame)
        conn.wbuf += data
        conn.last_tx = time.monotonic()
        if conn.state == "up":
            conn.tx_bytes += len(data)
            conn.tx_frames += 1
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
        address = name_address(self.node, DIST_NAME) if tag == "name" else address_of(self.io_pid)
        for _ in range(_LOCAL_ACCEPTS_PER_EVENT):
            try:
                sock, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._local_refusals.warning("%s: local accept failed: %s", self.node.name, exc)
                return
            sock.setblocking(False)
            stranger = actors.is_stranger(sock)
            chan = actors.LocalChannel(address, listening=True)
            conn = _Local(sock, "whereis" if tag == "name" else "proc", chan, stranger=stranger)
            self._conns[sock.fileno()] = conn
            self._sel.register(sock, selectors.EVENT_READ, "local")
            old = self._unproven_local.add(sock.fileno(), stranger)
            if old is not None:
                self._local_refusals.warning(
                    "%s: more than %d local connections%s have not proven the node's key; "
                    "closed the oldest",
                    self.node.name,
                    self._unproven_local.count(stranger),
                    " from other users or containers" if stranger else "",
                )
                evicted = self._conns.get(old)
                if isinstance(evicted, _Local):
                    self._close_local(evicted, flush=False)
            if tag == "name":  # whereis learns the pid once it proved the key
                chan.send(actors.encode_local_frame((HELLO, self.io_pid)))
            conn.wbuf += chan.take_output()  # the challenge
            self._flush_local(conn)

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

        chan = conn.chan
        end = actors.read_frames(
            conn.sock,
            chan.feed if chan.proven else lambda data: self._feed_local(conn, data),
            on_frame,
            lambda: conn.closed,
            bad_frame=(FrameError,),
            want=None if chan.proven else chan.need,
        )
        if not conn.closed:
            out = chan.take_output()  # an answer to the challenge, the frames it held
            if out:
                conn.wbuf += out
                self._flush_local(conn)
            if conn.closing and chan.ready:
                self._close_local(conn)
        if end is None:
            return
        if end.kind == "frame":
            if chan.proven:
                log.warning("%s: local connection closed: %s", self.node.name, end.error)
            else:
                self._local_refusals.warning(
                    "%s: refused a local connection: %s", self.node.name, end.error
                )
            self._close_local(conn, flush=False)
        else:
            self._local_eof(conn)

    def _feed_local(self, conn: _Local, data: bytes) -> list[Any]:
        frames = conn.chan.feed(data)
        if conn.chan.proven:
            self._unproven_local.done(conn.sock.fileno())
        return frames

    def _on_local_frame(self, conn: _Local, frame: Any) -> None:
        if conn.closing:
            return  # closed as far as this thread is concerned
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
        if conn.closing:
            pass
        elif conn.kind == "pair" and conn.remote == self.io_pid and conn.peer is not None:
            self._subscribers.discard(conn.peer)
        elif conn.kind == "pair" and conn.peer is not None and conn.remote is not None:
            self._to_node(conn.remote.node, ("bye", conn.peer, conn.remote, "killed"))
        self._close_local(conn, flush=False)

    def _pair(self, src: Pid, dst: Pid) -> _Local | None:
        """The connection to local ``dst`` introduced as ``src``; None if dst is gone."""
        pair = self._pairs.get((src, dst))
        if pair is not None:
            return pair
        if dst.node != self.node.name or dst.creation != self.node.creation:
            return None
        address = address_of(dst)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2.0)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            return None
        sock.setblocking(False)
        chan = actors.LocalChannel(address, listening=False)
        pair = _Local(sock, "pair", chan, peer=dst, remote=src)
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
        """Write the frame whose pickled body is ``data`` (``encode_local_frame``); until
        the local process answered the connection's challenge it waits in the channel."""
        if conn.closed or conn.closing:
            return
        chan = conn.chan
        frame = chan.send(data)
        if frame:
            conn.wbuf += frame
        elif chan.ready:
            conn.wbuf += chan.take_output()
        else:
            return
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

    def _close_local(self, conn: _Local, flush: bool = True) -> None:
        """Close ``conn`` once what was written on it is out (a BYE must not be lost), or
        at once without ``flush`` (its peer is gone, or refused)."""
        if conn.closed:
            return
        if flush and conn.chan.queued() and not self._stopping:
            # frames wait for the local process to answer the challenge (its loop runs
            # soon, or its end closes the connection): close once they are written
            conn.closing = True
            self._forget_pair(conn)
            return
        if flush and conn.wbuf:
            # a BYE must not be lost to a full buffer: finish it, bounded
            with contextlib.suppress(OSError):
                conn.sock.setblocking(True)
                conn.sock.settimeout(1.0)
                conn.sock.sendall(conn.wbuf)
        conn.closed = True
        self._unproven_local.done(conn.sock.fileno())
        self._conns.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        conn.sock.close()
        self._forget_pair(conn)

    def _forget_pair(self, conn: _Local) -> None:
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
