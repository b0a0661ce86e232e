"""Readiness and liveness for Kubernetes probes (``otpkit run --probe-port``).

A small HTTP server (a thread of the ``otpkit run`` process) answers:

* ``GET /healthz/live``: 200 when the node's kernel answers a call within
  :data:`LIVE_TIMEOUT` (1 s), else 503. While the node starts or stops it answers 200
  without asking: the start is bounded by the node's own start timeout, the stop by the
  grace period, and a liveness failure then would only cut either short.
* ``GET /healthz/ready``: 200 once the node has *joined* (below), else 503; 503 again
  from SIGTERM on (``stopping``), so no new traffic is sent to a node handing over.
* any other path: 404.

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

Once joined, a node stays ready until it stops. A peer lost later is dist's business
(heartbeats, the registry, the quorum's ``remove_after``), not Kubernetes': one dead pod
must not make every other pod unready. Readiness never asks for a quorum: a lone pod of
a StatefulSet started one by one (``podManagementPolicy: OrderedReady``) must become
ready for the next pod to be created at all.
"""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from otpkit.actors import _api
from otpkit.errors import CallTimeout, Exit, NodeError, NoRuntime, OtpkitError
from otpkit.registry._join import ClusterView, join_problem

__all__ = [
    "LIVE_TIMEOUT",
    "ClusterView",
    "ProbeServer",
    "bind_host",
    "join_problem",
    "ready_problem",
]

#: Seconds the kernel has to answer a liveness probe.
LIVE_TIMEOUT = 1.0
#: Seconds each question of a readiness probe may take.
READY_TIMEOUT = 1.0

PHASES = ("starting", "running", "stopping")


def ready_problem(
    phase: str,
    joined: bool,
    elapsed: float,
    settle_timeout: float,
    view: ClusterView | str | None,
) -> str | None:
    """Why the node is not ready, or None if it is.

    Args:
        phase: ``"starting"``, ``"running"`` or ``"stopping"``.
        joined: the node has been reported ready before (readiness holds until it stops).
        elapsed: seconds since the start.
        settle_timeout: seconds after which a running node is ready anyway.
        view: the node's view of its cluster; None for a node without dist; a string
            when the view could not be had (which service did not answer).
    """
    if phase not in PHASES:
        raise ValueError(f"phase={phase!r}: expected one of {PHASES}")
    if phase != "running":
        return phase
    if joined or view is None or elapsed >= settle_timeout:
        return None
    problem = view if isinstance(view, str) else join_problem(view)
    if problem is None:
        return None
    return f"{problem} ({elapsed:.0f} s of the {settle_timeout:g} s settle timeout)"


def cluster_view(discovery: bool) -> ClusterView | str:
    """This node's view of its cluster, asked of its services (each within
    :data:`READY_TIMEOUT`), or a string naming the one that did not answer."""
    # imported here: only nodes with dist ask
    from otpkit import dist  # noqa: PLC0415
    from otpkit.node import DISCOVERY_NAME  # noqa: PLC0415
    from otpkit.registry._global import local_server  # noqa: PLC0415

    step = "discovery"
    try:
        settled, discovered = True, frozenset[str]()
        if discovery:
            settled = bool(_api.call(DISCOVERY_NAME, "settled", READY_TIMEOUT))
            discovered = frozenset(_api.call(DISCOVERY_NAME, "peers", READY_TIMEOUT))
        step = "dist"
        connected = frozenset(dist.nodes(READY_TIMEOUT))
        step = "the registry"
        info = _api.call(local_server(), ("info",), READY_TIMEOUT)
    except (CallTimeout, Exit, NodeError) as exc:
        return f"{step} did not answer ({type(exc).__name__}: {exc})"
    return ClusterView(settled, discovered, connected, frozenset(info["synced"]))


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
        self._lock = threading.Lock()  # one probe asks the node at a time
        family = http.server.ThreadingHTTPServer
        if ipaddress.ip_address(host).version == 6:
            family = _HTTPServer6
        self._http = family((host, port), _handler(self))
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="otpkit-probes", daemon=True
        )
        self._thread.start()

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
        self.phase = "stopping"

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(5)

    # ------------------------------------------------------------------ answers

    def live(self) -> tuple[int, str]:
        if self.phase != "running":
            return 200, f"live: {self.phase}"
        from otpkit.supervision import count_children  # noqa: PLC0415

        began = time.monotonic()
        try:
            with self._lock:
                count_children(self.kernel, LIVE_TIMEOUT)
        except CallTimeout:
            return 503, f"not live: kernel {self.kernel.id} did not answer in {LIVE_TIMEOUT:g} s"
        except (Exit, NoRuntime) as exc:
            return 503, f"not live: kernel {self.kernel.id} is gone ({exc})"
        took = (time.monotonic() - began) * 1000
        return 200, f"live: kernel {self.kernel.id} answered in {took:.0f} ms"

    def ready(self) -> tuple[int, str]:
        phase, elapsed = self.phase, time.monotonic() - self.started
        view: ClusterView | str | None = None
        if phase == "running" and self.dist and not self.joined and elapsed < self.settle_timeout:
            try:
                with self._lock:
                    view = cluster_view(self.discovery)
            except OtpkitError as exc:
                view = f"the node did not answer ({type(exc).__name__}: {exc})"
        problem = ready_problem(phase, self.joined, elapsed, self.settle_timeout, view)
        if problem is not None:
            return 503, f"not ready: {problem}"
        self.joined = True
        return 200, "ready"


class _HTTPServer6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler(probes: ProbeServer) -> type[http.server.BaseHTTPRequestHandler]:
    routes: dict[str, Callable[[], tuple[int, str]]] = {
        "/healthz/live": probes.live,
        "/healthz/ready": probes.ready,
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "otpkit"

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
