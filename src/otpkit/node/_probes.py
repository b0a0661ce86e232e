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
At most :data:`MAX_CONNECTIONS` probe connections are served at once, each cut off after
:data:`REQUEST_TIMEOUT` if its request does not come.

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

import http.server
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from otpkit.errors import CallTimeout, Exit, NoRuntime, OtpkitError
from otpkit.registry import ClusterView, ClusterViewError, cluster_view, join_problem

__all__ = [
    "LIVE_TIMEOUT",
    "ClusterView",
    "ProbeServer",
    "bind_host",
    "join_problem",
    "outside_problem",
    "ready_problem",
]

#: Seconds the kernel has to answer a liveness probe.
LIVE_TIMEOUT = 1.0
#: Seconds each question of a readiness probe may take.
READY_TIMEOUT = 1.0
#: Seconds between two rounds of questions to the node (one thread asks; an HTTP probe
#: only reads the last answers, so no request from the network makes the node work).
ASK_INTERVAL = 1.0
#: An answer older than this is no answer (the asking thread itself is stuck).
STALE_AFTER = 5.0
#: Seconds a probe connection may take to send its request; connections served at once.
REQUEST_TIMEOUT = 2.0
MAX_CONNECTIONS = 32

PHASES = ("starting", "running", "stopping")


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
    """Every address of the pod: the kubelet probes the pod's IP, ``kubectl
    port-forward`` its loopback. IPv6 when the pod's IP is."""
    return "::" if pod_ip and ipaddress.ip_address(pod_ip).version == 6 else "0.0.0.0"


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
        family: type[_HTTPServer] = (
            _HTTPServer6 if ipaddress.ip_address(host).version == 6 else _HTTPServer
        )
        self._http = family((host, port), _handler(self))
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="otpkit-probes", daemon=True
        )
        self._thread.start()
        self._asker = threading.Thread(
            target=self._ask_loop, name="otpkit-probe-asker", daemon=True
        )
        self._asker.start()

    @property
    def port(self) -> int:
        port: int = self._http.server_address[1]
        return port

    def running(self, kernel: Any) -> None:
        """The node has started; ``kernel`` is its kernel's pid."""
        self.kernel = kernel
        self.started = time.monotonic()
        self.phase = "running"

    def stopping(self) -> None:
        """SIGTERM: answer ``stopping``, and return once no question to the node is under
        way (the stop's own calls must not meet one)."""
        self.phase = "stopping"
        with self._asking:
            pass

    def close(self) -> None:
        self._closing.set()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(5)
        self._asker.join(READY_TIMEOUT * 4 + ASK_INTERVAL)

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


class _HTTPServer(http.server.ThreadingHTTPServer):
    """At most :data:`MAX_CONNECTIONS` probe connections at once, each with
    :data:`REQUEST_TIMEOUT`; one more is closed at once (answers are read from memory,
    so a probe holds its thread for milliseconds unless its client stalls)."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


def _handler(probes: ProbeServer) -> type[http.server.BaseHTTPRequestHandler]:
    routes: dict[str, Callable[[], tuple[int, str]]] = {
        "/healthz/live": probes.live,
        "/healthz/ready": probes.ready,
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "otpkit"
        timeout = REQUEST_TIMEOUT  # a client that never sends its request is cut off

        def do_GET(self) -> None:
            answer = routes.get(self.path.split("?", 1)[0])
            status, body = answer() if answer is not None else (404, "not found")
            data = (body + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the kubelet probes every few seconds."""

    return Handler
