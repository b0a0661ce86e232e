"""Readiness and liveness for Kubernetes probes (``otpkit run --probe-port``).

A small HTTP server (a thread of the ``otpkit run`` process) answers:

* ``GET /healthz/live``: 200 when the node's kernel answers a call within
  :data:`LIVE_TIMEOUT` (1 s), else 503. While the node starts or stops it answers 200
  without asking: the start is bounded by the node's own start timeout, the stop by the
  grace period, and a liveness failure then would only cut either short.
* ``GET /healthz/ready``: 200 once the node has *joined* (below), else 503; 503 again
  from SIGTERM on (``stopping``), so no new traffic is sent to a node handing over.
* any other path: 404.

One thread asks the node every :data:`ASK_INTERVAL` (the kernel, and the cluster view
until joined); a probe only reads its last answers, so nothing a client of the probe port
sends makes the node work, and an answer older than :data:`STALE_AFTER` is a failure.

**Hostile clients.** One thread serves the port with a selector (no thread per
connection). A connection has :data:`REQUEST_TIMEOUT` (2 s) from its accept to send its
whole request head (at most :data:`MAX_HEAD` bytes), however it spreads the bytes; it is
answered the moment the head is complete, and closed. At most :data:`PER_SOURCE` (8)
connections from one source address, and :data:`MAX_CONNECTIONS` (128) in all, wait for
their request: a new connection is always taken, and room is made by closing the oldest
waiting one of its own address, or when all are taken the oldest of the address with
the most (:func:`make_room`); one about to be closed is read once more first and
answered if its request has come. So a client that sends its request as it connects is
answered whatever other addresses send: a slowloris holds at most 8 connections per
address, each for at most 2 s, and closes another address's connection only once all
128 wait and that address has the most of them (a kubelet, with one, only when 128
addresses have one each and its connection is the oldest). From the client's own
address, an attacker must open 8 connections between the client's connect and the
arrival of its request (under a millisecond for a kubelet on its node). The kubelet
probes from the node's address (the host network namespace), which hostNetwork pods,
and traffic that a Service NATs to the node's address, share; other pods come from
their own addresses. Connections closed unanswered are logged with a count, at most
once a minute.

Each body is one line of text; a 503's says why (``not ready: not connected to
myapp@myapp-2...``).

Joined (:func:`ready_problem`):

* a node without dist: once started;
* with dist: when the node agrees with its cluster, as a :func:`~otpkit.Singleton`
  decides before its first election: discovery has had a good answer, every peer in it
  is connected, and the registry has merged its table with every connected node
  (:func:`join_problem`; without discovery, dist's own peers are the cluster);
* or, either way, once ``settle_timeout`` has passed since the start: a peer that DNS
  still lists but that is down (a pod in a crash loop keeps its address) must not keep
  every other pod unready.

Once joined, a node stays ready until it stops, unless it has been **outside a
majority** for two lease terms (``quorum.outside``: it reaches no majority of its
quorum's members - cut off, or the other members down - or no configuration formed):
then 503 with the reason (``not ready: outside a majority for 8 s: no majority: 1 of the
2 members needed are connected (down: ...)``), and 200 again as soon as it reaches one.
A peer lost otherwise is dist's business (heartbeats, the registry, the quorum's
``remove_after``), not Kubernetes': one dead pod must not make every other pod unready,
and a pod that is one of a majority stays ready. Joining never asks for a quorum: a
lone pod becomes ready once joined, and is unready only two terms later - a StatefulSet
with ``podManagementPolicy: Parallel`` (the example's) starts every pod anyway; one
started pod by pod (``OrderedReady``) creates the next pod only while the last is ready,
so its second pod must come within those two terms of the first being ready.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

from otpkit import actors
from otpkit.errors import CallTimeout, Exit, NoRuntime, OtpkitError
from otpkit.registry import ClusterView, ClusterViewError, cluster_view, join_problem

__all__ = [
    "LIVE_TIMEOUT",
    "ClusterView",
    "ProbeServer",
    "bind_host",
    "head_length",
    "join_problem",
    "make_room",
    "outside_problem",
    "probe_hosts",
    "ready_problem",
    "response",
    "route",
    "source_of",
]

log = logging.getLogger("otpkit.node")

#: Seconds the kernel has to answer a liveness probe.
LIVE_TIMEOUT = 1.0
#: Seconds each question of a readiness probe may take.
READY_TIMEOUT = 1.0
#: Seconds between two rounds of questions to the node (one thread asks; an HTTP probe
#: only reads the last answers, so no request from the network makes the node work).
ASK_INTERVAL = 1.0
#: An answer older than this is no answer (the asking thread itself is stuck).
STALE_AFTER = 5.0
#: Seconds a probe connection has to send its whole request (however slowly it sends).
REQUEST_TIMEOUT = 2.0
#: Connections waiting for their request: from one source address, and in all.
PER_SOURCE = 8
MAX_CONNECTIONS = 128
#: Bytes of a request's head (request line and headers) at most.
MAX_HEAD = 8192
#: Seconds between two lines about connections closed unanswered.
REPORT_EVERY = 60.0

PHASES = ("starting", "running", "stopping")
TEXT = "text/plain; charset=utf-8"
#: Seconds between two expositions of the metrics, made by a thread of their own while
#: someone scrapes (in the last :data:`SCRAPED_WITHIN` seconds): ``/metrics`` answers the
#: last one, so its cost (0.1-0.4 s for a thousand jobs) never holds a probe's answer,
#: and a client asking in a loop costs one exposition a second. Only a scrape after
#: :data:`METRICS_STALE` seconds without one waits for a fresh exposition.
METRICS_FRESH = 1.0
SCRAPED_WITHIN = 120.0
METRICS_STALE = 5.0
#: Seconds a connection has to read its answer (a ``/metrics`` answer can outgrow the
#: socket's buffer), and how many such connections are kept at once.
WRITE_TIMEOUT = 5.0
MAX_WRITING = 16

Answer = tuple[int, str] | tuple[int, bytes, str]


def ready_problem(
    phase: str,
    joined: bool,
    elapsed: float,
    settle_timeout: float,
    view: ClusterView | str | None,
    outside: tuple[str, float, float] | None = None,
) -> str | None:
    """Why the node is not ready, or None if it is.

    Args:
        phase: ``"starting"``, ``"running"`` or ``"stopping"``.
        joined: the node has been reported ready before (readiness holds until it stops,
            unless it is outside a majority).
        elapsed: seconds since the start.
        settle_timeout: seconds after which a running node is ready anyway.
        view: the node's view of its cluster; None for a node without dist; a string
            when the view could not be had (which service did not answer).
        outside: ``(problem, seconds, limit)`` while the node reaches no majority of
            its quorum (``quorum.outside``), None while it does (or runs no quorum).
    """
    if phase not in PHASES:
        raise ValueError(f"phase={phase!r}: expected one of {PHASES}")
    if phase != "running":
        return phase
    if not (joined or view is None or elapsed >= settle_timeout):
        problem = view if isinstance(view, str) else join_problem(view)
        if problem is not None:
            return f"{problem} ({elapsed:.0f} s of the {settle_timeout:g} s settle timeout)"
    return outside_problem(outside)


def outside_problem(outside: tuple[str, float, float] | None) -> str | None:
    """``outside a majority for N s: <problem>`` once a node has reached no majority of
    its quorum for ``limit`` seconds (two lease terms), else None: a holder's fail-over
    or a short cut does not make pods unready."""
    if outside is None:
        return None
    problem, seconds, limit = outside
    if seconds < limit:
        return None
    return f"outside a majority for {seconds:.0f} s: {problem}"


def bind_host(pod_ip: str | None) -> str:
    """Every address of the pod (the wildcard of the pod IP's family)."""
    return "::" if pod_ip and ipaddress.ip_address(pod_ip).version == 6 else "0.0.0.0"


def probe_hosts(own: str, asked: Sequence[str] = ()) -> tuple[str, ...]:
    """The addresses the probe port binds: ``asked`` (``--probe-bind``) if given, else
    the node's own address - the kubelet probes the pod's IP and Prometheus scrapes it -
    and the loopback address of its family, which ``kubectl port-forward`` connects to,
    unless the node's address is a loopback one itself (three nodes on 127.0.0.2-4 share
    a port) or the wildcard (which has loopback)."""
    if asked:
        return tuple(dict.fromkeys(asked))
    ip = ipaddress.ip_address(own)
    if ip.is_loopback or ip.is_unspecified:
        return (str(ip),)
    return (str(ip), "::1" if ip.version == 6 else "127.0.0.1")


class ProbeServer:
    """The probe endpoints of one ``otpkit run`` node (see the module).

    Made before the node starts: the port is bound at once (``OSError`` if it cannot
    be), and probes answer ``starting`` until :meth:`running`. :meth:`stopping` at
    SIGTERM, :meth:`close` after the node stopped.
    """

    def __init__(
        self,
        port: int,
        *,
        host: str = "0.0.0.0",
        hosts: Sequence[str] = (),
        dist: bool = False,
        discovery: bool = False,
        settle_timeout: float = 30.0,
    ) -> None:
        self.dist = dist
        self.discovery = discovery
        self.settle_timeout = settle_timeout
        self.phase = "starting"
        self.joined = False
        self.started = time.monotonic()
        self.kernel: Any = None
        # the last answers of the asking thread: (status, body, monotonic time)
        self._live: tuple[int, str, float] | None = None
        self._view: tuple[ClusterView | str, float] | None = None
        # the quorum's answer to ``outside`` (None: inside, or not asked), and when
        self._outside: tuple[tuple[str, float, float] | None, float] | None = None
        self._closing = threading.Event()
        self._asking = threading.Lock()
        self._metrics: Any = None  # the node's metrics Service, once running
        self._exposition: tuple[bytes, float] | None = None
        self._routes: dict[str, Callable[[], Answer]] = {
            "/healthz/live": self.live,
            "/healthz/ready": self.ready,
            "/metrics": self.metrics,
        }
        self._listener = _Listener(tuple(hosts) or (host,), port, self._get)
        self._asker = threading.Thread(
            target=self._ask_loop, name="otpkit-probe-asker", daemon=True
        )
        self._asker.start()
        self._scraped = 0.0  # monotonic time of the last /metrics request
        self._exposer = threading.Thread(
            target=self._expose_loop, name="otpkit-probe-metrics", daemon=True
        )
        self._exposer.start()

    @property
    def port(self) -> int:
        port: int = self._listener.socks[0].getsockname()[1]
        return port

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the probe port listens."""
        return [s.getsockname()[:2] for s in self._listener.socks]

    def running(self, kernel: Any, metrics: Any = None) -> None:
        """The node has started; ``kernel`` is its kernel's pid, ``metrics`` its
        metrics service (``/metrics``)."""
        self.kernel = kernel
        if metrics is not None:
            self.serve_metrics(metrics)
        self.started = time.monotonic()
        self.phase = "running"

    def serve_metrics(self, service: Any) -> None:
        """Answer ``/metrics`` from ``service`` (``exposition()``, ``content_type``)."""
        self._metrics = service

    def stopping(self) -> None:
        """SIGTERM: answer ``stopping``, and return once no question to the node is under
        way (the stop's own calls must not meet one)."""
        self.phase = "stopping"
        with self._asking:
            pass

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        self._asker.join(READY_TIMEOUT * 4 + ASK_INTERVAL)
        self._exposer.join(5)

    # ------------------------------------------------------------------ asking

    def _ask_loop(self) -> None:
        """The one thread that asks the node (the program's runtime serves one call at a
        time): the kernel every round, the cluster view until joined. A round holds
        ``_asking``; :meth:`stopping` waits for it, so no question overlaps the stop."""
        while not self._closing.wait(ASK_INTERVAL if self.phase != "starting" else 0.1):
            with self._asking:
                if self.phase != "running":
                    continue
                self._live = (*self._ask_live(), time.monotonic())
                if self.dist:
                    self._outside = (self._ask_outside(), time.monotonic())
                elapsed = time.monotonic() - self.started
                if (
                    self.phase == "running"
                    and self.dist
                    and not self.joined
                    and elapsed < self.settle_timeout
                ):
                    try:
                        view: ClusterView | str = cluster_view(
                            READY_TIMEOUT, discovery=self.discovery, gates=True
                        )
                    except ClusterViewError as exc:  # "dist did not answer (...)"
                        view = str(exc)
                    except OtpkitError as exc:
                        view = f"the node did not answer ({type(exc).__name__}: {exc})"
                    self._view = (view, time.monotonic())

    def _ask_outside(self) -> tuple[str, float, float] | None:
        """Whether the node reaches no majority of its quorum, and for how long; None if
        it does, or if the quorum did not answer (the liveness probe is the one that
        judges a node that does not answer)."""
        from otpkit.quorum import outside  # noqa: PLC0415 - a dist node's only

        try:
            return outside(READY_TIMEOUT)
        except OtpkitError:
            return None

    def _ask_live(self) -> tuple[int, str]:
        from otpkit.supervision import count_children  # noqa: PLC0415

        began = time.monotonic()
        try:
            count_children(self.kernel, LIVE_TIMEOUT)
        except CallTimeout:
            return 503, f"not live: kernel {self.kernel.id} did not answer in {LIVE_TIMEOUT:g} s"
        except (Exit, NoRuntime) as exc:
            return 503, f"not live: kernel {self.kernel.id} is gone ({exc})"
        except OtpkitError as exc:
            return 503, f"not live: kernel {self.kernel.id}: {type(exc).__name__}: {exc}"
        took = (time.monotonic() - began) * 1000
        return 200, f"live: kernel {self.kernel.id} answered in {took:.0f} ms"

    # ------------------------------------------------------------------ answers

    def _get(self, path: str) -> Answer:
        answer = self._routes.get(path)
        return answer() if answer is not None else (404, "not found")

    def metrics(self) -> Answer:
        """The node's metrics in Prometheus' text format, at most :data:`METRICS_FRESH`
        seconds old."""
        service = self._metrics
        if service is None:
            return 503, f"no metrics: {self.phase}"
        now = time.monotonic()
        self._scraped = now
        cached = self._exposition
        if cached is None or now - cached[1] >= METRICS_STALE:
            cached = (service.exposition(), now)
            self._exposition = cached
        return 200, cached[0], service.content_type

    def _expose_loop(self) -> None:
        """Keep the exposition fresh while someone scrapes (see :data:`METRICS_FRESH`)."""
        while not self._closing.wait(METRICS_FRESH):
            service = self._metrics
            if service is None or time.monotonic() - self._scraped > SCRAPED_WITHIN:
                continue
            try:
                self._exposition = (service.exposition(), time.monotonic())
            except Exception:  # a collector's bug must not end the thread
                log.exception("metrics: the exposition failed")

    def live(self) -> tuple[int, str]:
        if self.phase != "running":
            return 200, f"live: {self.phase}"
        last = self._live
        if last is None:
            return 200, "live: started, not asked yet"
        status, body, at = last
        age = time.monotonic() - at
        if age > STALE_AFTER:
            return 503, f"not live: no answer from the node for {age:.0f} s"
        return status, body

    def ready(self) -> tuple[int, str]:
        phase, elapsed = self.phase, time.monotonic() - self.started
        view: ClusterView | str | None = None
        if phase == "running" and self.dist and not self.joined and elapsed < self.settle_timeout:
            last = self._view
            if last is None:
                view = "not asked yet"
            elif time.monotonic() - last[1] > STALE_AFTER:
                view = f"no answer from the node for {time.monotonic() - last[1]:.0f} s"
            else:
                view = last[0]
        outside = None
        asked = self._outside
        if phase == "running" and asked is not None and time.monotonic() - asked[1] <= STALE_AFTER:
            outside = asked[0]
            if outside is not None:  # the time outside grows while the answer ages
                outside = (outside[0], outside[1] + time.monotonic() - asked[1], outside[2])
        problem = ready_problem(phase, self.joined, elapsed, self.settle_timeout, view, outside)
        if problem is not None:
            return 503, f"not ready: {problem}"
        self.joined = True
        return 200, "ready"


def source_of(address: str) -> str:
    """The source address a connection is counted under: an IPv4 client of a dual-stack
    socket (``::ffff:10.0.0.7``) as its IPv4 address, a scoped IPv6 one without its zone."""
    text = address.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def make_room(pending: Sequence[str], source: str, per_source: int, total: int) -> int | None:
    """Which waiting connection to close so that a new one from ``source`` is served.

    A new connection is always taken; the connections still waiting for their request
    make room for it:

    * if ``source`` already has ``per_source`` of them, its oldest one;
    * else if ``total`` wait in all, the oldest of the source that has the most;
    * else none.

    Args:
        pending: the source of each connection waiting for its request, oldest first.
        source: the new connection's source (see :func:`source_of`).
        per_source: connections one source may have waiting (>= 1).
        total: connections that may wait in all (>= ``per_source``).

    Returns:
        The index in ``pending`` of the connection to close, or None.
    """
    if not 1 <= per_source <= total:
        raise ValueError(
            f"per_source={per_source}, total={total}: expected 1 <= per_source <= total"
        )
    same = [i for i, s in enumerate(pending) if s == source]
    if len(same) >= per_source:
        return same[0]
    if len(pending) < total:
        return None
    counts = Counter(pending)
    most = max(counts.values())
    return next(i for i, s in enumerate(pending) if counts[s] == most)


def head_length(data: bytes) -> int | None:
    """The length of a request's head (request line, headers and the empty line that ends
    them; a bare LF counts as CRLF), or None while it is incomplete."""
    ends = [at + len(end) for end in (b"\n\r\n", b"\n\n") if (at := data.find(end)) >= 0]
    return min(ends) if ends else None


def route(head: bytes) -> str | tuple[int, str]:
    """What a request's head asks: the path of a well-formed ``GET`` (without its query),
    else the ``(status, body)`` of the error answer (400 malformed, 405 another method)."""
    line = head.lstrip(b"\r\n").split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[1].startswith(b"/"):
        return 400, "bad request"
    if parts[0] != b"GET":
        return 405, "method not allowed: GET only"
    return parts[1].split(b"?", 1)[0].decode("latin-1")


def response(status: int, body: str | bytes, content_type: str = TEXT) -> bytes:
    """The whole HTTP answer; the connection closes after it. A text ``body`` is one
    line; bytes (``/metrics``) are sent as they are."""
    data = body if isinstance(body, bytes) else (body + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Server: otpkit\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(data)}\r\n"
        "Cache-Control: no-store\r\n"
        + ("Allow: GET\r\n" if status == 405 else "")
        + "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + data


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and ipaddress.ip_address(host).is_unspecified:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    actors.own_socket(sock)  # no process of the node keeps the probe port
    return sock


class _Waiting:
    """A connection waiting for its request."""

    __slots__ = ("data", "deadline", "source")

    def __init__(self, source: str, deadline: float) -> None:
        self.source = source
        self.deadline = deadline
        self.data = bytearray()


class _Listener:
    """The probe port: one thread, one selector; no thread per connection, so a
    connection that sends slowly holds a socket and a few KB, nothing more.

    Each connection must send its whole request head (at most :data:`MAX_HEAD` bytes)
    within :data:`REQUEST_TIMEOUT` of being accepted, however it spreads the bytes; it is
    answered as soon as the head is complete (from memory) and closed. Room for a new
    connection is made as :func:`make_room` decides; a connection about to be closed so
    is read once more first, and answered if its request has come. Connections closed
    unanswered (too slow, or making room) are logged with a count, at most once per
    :data:`REPORT_EVERY` seconds. An answer larger than the socket's buffer is written
    as the client reads it, for at most :data:`WRITE_TIMEOUT` seconds; at most
    :data:`MAX_WRITING` connections are written so (the oldest is closed for a new one).

    Every socket of the port is this program's alone: a process of the node forked
    from it closes its copy (``actors.own_socket``).
    """

    def __init__(self, hosts: Sequence[str], port: int, answer: Callable[[str], Answer]) -> None:
        self.socks: list[socket.socket] = []
        try:
            for host in hosts:
                self.socks.append(_listen(host, port))
                port = self.socks[0].getsockname()[1]  # port 0: every address the same
        except BaseException:
            for sock in self.socks:
                actors.own_socket(sock, on=False)
                sock.close()
            raise
        self._answer = answer
        self._selector = selectors.DefaultSelector()
        for sock in self.socks:
            self._selector.register(sock, selectors.EVENT_READ, None)
        self._waiting: dict[socket.socket, _Waiting] = {}  # oldest first
        self._writing: dict[socket.socket, tuple[memoryview, float]] = {}  # oldest first
        self._closing = threading.Event()
        # connections closed unanswered since the last report, by source
        self._dropped: Counter[str] = Counter()
        self._reported = time.monotonic() - REPORT_EVERY
        self._thread = threading.Thread(target=self._loop, name="otpkit-probes", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        for conn in list(self._waiting):
            self._drop(conn)
        for conn in list(self._writing):
            self._done(conn)
        self._selector.close()
        for sock in self.socks:
            actors.own_socket(sock, on=False)
            sock.close()

    def _loop(self) -> None:
        while not self._closing.is_set():
            try:
                self._round()
            except Exception:  # a bug here must not end the probes: the kubelet would
                log.exception("probe port: unexpected error")  # restart a healthy pod
                time.sleep(0.1)

    def _round(self) -> None:
        now = time.monotonic()
        wait = 0.25
        for deadline in (
            next(iter(self._waiting.values())).deadline if self._waiting else None,
            next(iter(self._writing.values()))[1] if self._writing else None,
        ):
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - now))
        for key, _ in self._selector.select(wait):
            if key.data is None:
                self._accept(key.fileobj)  # type: ignore[arg-type]
            elif key.fileobj in self._waiting:
                self._read(key.fileobj)
            elif key.fileobj in self._writing:
                self._write(key.fileobj)
        now = time.monotonic()
        while self._waiting:  # deadlines follow the order of arrival
            conn, waiting = next(iter(self._waiting.items()))
            if waiting.deadline > now:
                break
            self._drop(conn, waiting.source)
        while self._writing:
            conn, (_, deadline) = next(iter(self._writing.items()))
            if deadline > now:
                break
            self._done(conn)
        self._report(now)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(MAX_CONNECTIONS):  # then the waiting ones get their turn
            try:
                conn, address = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:  # out of descriptors: the waiting ones free some
                log.warning("probe port: cannot accept (%s)", exc.strerror or exc)
                if self._waiting:
                    oldest = next(iter(self._waiting))
                    self._evict(oldest)
                else:
                    time.sleep(0.05)
                return
            actors.own_socket(conn)
            source = source_of(str(address[0]))
            victim = make_room(
                [w.source for w in self._waiting.values()], source, PER_SOURCE, MAX_CONNECTIONS
            )
            if victim is not None:
                self._evict(list(self._waiting)[victim])
            conn.setblocking(False)
            self._waiting[conn] = _Waiting(source, time.monotonic() + REQUEST_TIMEOUT)
            self._selector.register(conn, selectors.EVENT_READ, source)

    def _evict(self, conn: socket.socket) -> None:
        """Close ``conn`` to make room, unless its request has come meanwhile."""
        waiting = self._waiting[conn]
        self._read(conn)
        if conn in self._waiting:
            self._drop(conn, waiting.source)

    def _read(self, conn: socket.socket) -> None:
        waiting = self._waiting[conn]
        while True:
            try:
                chunk = conn.recv(MAX_HEAD + 1 - len(waiting.data))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            if not chunk:  # the client closed (or reset) before its request was whole
                self._drop(conn)
                return
            waiting.data += chunk
            end = head_length(bytes(waiting.data))
            if end is not None:
                asked = route(bytes(waiting.data[:end]))
                answer = self._answer(asked) if isinstance(asked, str) else asked
                self._send(conn, response(*answer))
                return
            if len(waiting.data) > MAX_HEAD:
                self._send(conn, response(431, f"request head over {MAX_HEAD} bytes"))
                return

    def _send(self, conn: socket.socket, data: bytes) -> None:
        """One non-blocking send; what the buffer did not take is written as the client
        reads it (:meth:`_write`), else the connection closes now."""
        del self._waiting[conn]
        sent = 0
        with contextlib.suppress(OSError):
            sent = conn.send(data)
        if sent <= 0 or sent >= len(data):
            self._close(conn)
            return
        if len(self._writing) >= MAX_WRITING:
            self._done(next(iter(self._writing)))
        self._writing[conn] = (memoryview(data)[sent:], time.monotonic() + WRITE_TIMEOUT)
        self._selector.modify(conn, selectors.EVENT_WRITE, "writing")

    def _write(self, conn: socket.socket) -> None:
        rest, deadline = self._writing[conn]
        try:
            sent = conn.send(rest)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            sent = len(rest)
        if sent >= len(rest):
            self._done(conn)
        else:
            self._writing[conn] = (rest[sent:], deadline)

    def _done(self, conn: socket.socket) -> None:
        del self._writing[conn]
        self._close(conn)

    def _drop(self, conn: socket.socket, unanswered: str | None = None) -> None:
        del self._waiting[conn]
        self._close(conn)
        if unanswered is not None:
            self._dropped[unanswered] += 1

    def _close(self, conn: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn)
        actors.own_socket(conn, on=False)
        conn.close()

    def _report(self, now: float) -> None:
        if not self._dropped or now - self._reported < REPORT_EVERY:
            return
        (top, most), *_ = self._dropped.most_common(1)
        log.warning(
            "probe port: %d connections closed without a whole request in %g s or to make "
            "room, from %d addresses (%d from %s) in the last %.0f s",
            sum(self._dropped.values()),
            REQUEST_TIMEOUT,
            len(self._dropped),
            most,
            top,
            now - self._reported,
        )
        self._dropped.clear()
        self._reported = now
