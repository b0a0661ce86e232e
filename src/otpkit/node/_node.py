"""Node: one per OS process tree; starts the local actor system, its kernel supervisor
and, under the kernel, the system services in this order: dist, the global registry, the
quorum, the admin service, the discovery poller (a hidden node, the admin shell, runs
dist only; a node without dist, the registry only). The application's children follow
them. The only module that wires the parts together.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import signal
import stat
import threading
from collections.abc import Mapping
from typing import Any

from otpkit import actors, metrics
from otpkit.actors import ClientRuntime, From, NodeIdentity, Pid, shapes
from otpkit.admin import Admin
from otpkit.discovery import Discoverer
from otpkit.distribution import NET_NAME, Dist, DistConfig, DistHooks
from otpkit.errors import NodeError, StartError
from otpkit.quorum import Quorum, QuorumConfig
from otpkit.registry import Global, close_shared_table, create_shared_table
from otpkit.supervision import ChildSpec, Supervisor, SupFlags, start_child

log = logging.getLogger("otpkit.node")

#: The kernel's own calls, from the program that started the node (a process of this
#: node): start a process for it, stop the tree. The kernel answers a supervisor's
#: calls too; from another node only those that read its children.
KERNEL_CALLS = shapes.Protocol(
    "kernel call",
    shapes.Shape("$spawn", (shapes.ANY, tuple, dict, shapes.Opt(str), dict)),
    shapes.Shape("$stop"),
)

# the supervisor's calls that change the kernel's children: from this node only (the
# admin service makes them for a shell)
_CHANGES = ("start_child", "terminate_child", "restart_child", "delete_child")


class Kernel(Supervisor):
    """The root of a node's tree (OTP's kernel_sup). If it gives up - or ends in any
    other way - the whole node stops: every process of its process group is killed, as
    a BEAM node halts when its kernel dies. It also starts processes on behalf of the
    program that started the node."""

    def setup(  # type: ignore[override]
        self,
        children: list[Any] | tuple[Any, ...] = (),
        intensity: int = 3,
        period: float = 5,
    ) -> Any:
        return SupFlags("one_for_one", intensity, period), list(children)

    def handle_call(self, request: Any, from_: From) -> Any:
        tag = request[0] if type(request) is tuple and request else None
        local = self._rt.is_local(from_.pid)
        if type(tag) is str and tag in KERNEL_CALLS:
            why = KERNEL_CALLS.problem(request)
        elif tag in _CHANGES and not local:
            why = None  # refused below
        else:
            return super().handle_call(request, from_)  # checked there
        if why is None and not local:
            why = f"{tag!r} is asked of the kernel from this node only"
        if why is not None:
            self._drops.dropped(repr(self.pid), request, why)
            return shapes.bad_request(KERNEL_CALLS.owner, why)
        if tag == "$spawn":
            _, target, args, kwargs, name, options = request
            return self._rt.spawn(target, args, kwargs, link=False, name=name, options=options)
        self._stop_all_children()  # "$stop"
        return "ok"

    def halt_node_on_exit(self, reason: Any) -> bool:
        return True

    def _child_exited(self, child: Any, reason: Any) -> None:
        if child.spec.id == "dist":
            # a new dist would not know the node's services nor who watches nodes, and
            # the peers took its close for the node's death (they may have elected new
            # holders already): the node halts at once, as a BEAM node does when its
            # net_kernel dies; its supervisor (Kubernetes) starts it again
            log.critical(
                "%r: dist exited (%r): the node halts (a node without dist is half alive)",
                self.pid,
                reason,
            )
            os.killpg(os.getpgrp(), signal.SIGKILL)
        super()._child_exited(child, reason)


def _cookie(cookie: str | bytes | None) -> bytes:
    """The cookie: given, else ``OTPKIT_COOKIE``, else the file ``OTPKIT_COOKIE_FILE``
    (refused if others may read it, as ``otpkit run`` does). Its length is checked by
    ``DistConfig`` (ValueError)."""
    if cookie is None:
        cookie = os.environ.get("OTPKIT_COOKIE")
    if cookie is None and os.environ.get("OTPKIT_COOKIE_FILE"):
        path = os.environ["OTPKIT_COOKIE_FILE"]
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & stat.S_IROTH:
                raise ValueError(
                    f"OTPKIT_COOKIE_FILE {path!r} is readable by others (mode "
                    f"{stat.S_IMODE(mode):04o}): chmod o-r it (0600, or 0440 for a group)"
                )
            cookie = f.read().strip()
    if not cookie:
        raise NodeError(
            "dist needs a cookie: pass cookie=, or set OTPKIT_COOKIE or OTPKIT_COOKIE_FILE"
        )
    return cookie.encode() if isinstance(cookie, str) else bytes(cookie)


_one_node = threading.Lock()
_running: Node | None = None


#: The kernel's children a dist node adds before the application's (see ``Node``): the
#: admin shell refuses to restart or terminate them (see ``admin._service``).
SYSTEM_CHILDREN: frozenset[str] = frozenset({"dist", "global", "quorum", "admin", "discovery"})


class Node:
    """A node: its Thespian system (loopback, authenticated), kernel and client.

    ``Node(name).start()`` returns once the kernel runs; from then on this program is an
    otpkit process too (``otpkit.call``, ``spawn``, ``monitor`` work here, and exit
    signals arrive as messages: see :meth:`receive`). ``stop()`` stops the tree in OTP
    order and leaves no process of the node. Both are idempotent. One node per program.

    If this program dies - by any signal - every process of the node dies with it.

    Logs: every process of the node sends its records (and the lines it prints) to one
    writer in this program, which writes them whole: into ``<log_dir>/<name>.log`` when
    ``log_dir`` is given, else into this program's own ``logging`` (its handlers, its
    levels; processes log at ``log_level`` and up). Metrics: :attr:`metrics`.

    ``data_dir`` (else ``$OTPKIT_DATA_DIR``): where the quorum of the ``"majority"``
    policy keeps this node's promises (``<data_dir>/otpkit/``), so that a restarted node
    is the same member; give every node one that outlives its process (a StatefulSet's
    volume). Without one, each start is a new member (see ``otpkit.quorum``).
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        children: list[ChildSpec | Mapping[str, Any]] | tuple[Any, ...] = (),
        kernel_intensity: int = 3,
        kernel_period: float = 5,
        log_dir: str | None = None,
        log_level: int = logging.INFO,
        start_timeout: float = 30.0,
        cookie: str | bytes | None = None,
        dist_port: int | None = None,
        dist: DistConfig | None = None,
        discovery: Any = None,
        poll_interval: float = 5.0,
        prune_after: int = 3,
        quorum: QuorumConfig | None = None,
        data_dir: str | None = None,
        metrics_service: bool = True,
    ) -> None:
        self.name = name or f"otpkit{os.getpid()}@127.0.0.1"
        if "@" not in self.name:
            raise NodeError(f"node name {self.name!r}: expected 'app@host'")
        if dist is None and (cookie is not None or dist_port is not None):
            dist = DistConfig(self.name.split("@", 1)[1], dist_port or 0, _cookie(cookie))
        self.dist_config = dist
        self._children = list(children)
        # the system actors come first: started before the application, stopped after
        system = [ChildSpec("global", Global)]
        if dist is not None and dist.hidden:
            # an admin shell: it holds no name, votes in no quorum, runs no job
            system = [ChildSpec("dist", Dist, (dist,))]
        elif dist is not None:
            # the majority policy's membership and leases (see quorum._core), and the
            # service the admin shell asks (see admin._service)
            system = [
                ChildSpec("dist", Dist, (dist,)),
                *system,
                ChildSpec("quorum", Quorum, (quorum or QuorumConfig(), data_dir)),
                ChildSpec("admin", Admin, (SYSTEM_CHILDREN,)),
            ]
            if discovery is not None:
                system.append(
                    ChildSpec(
                        "discovery",
                        Discoverer,
                        (discovery, poll_interval, prune_after, NET_NAME),
                    )
                )
        elif discovery is not None:
            raise NodeError("discovery needs dist: give the node a cookie and a dist port")
        self._children[:0] = system
        self._kernel_args = (self._children, kernel_intensity, kernel_period)
        self._log_dir = log_dir
        self._log_level = log_level
        self._metrics = metrics_service
        #: The node's metrics (a :class:`otpkit.metrics.Service`; None before the start
        #: or with ``metrics_service=False``): ``metrics.registry`` is a
        #: ``prometheus_client`` registry any of its exposition helpers can serve.
        self.metrics: metrics.Service | None = None
        self._start_timeout = start_timeout
        self._system: actors.LocalSystem | None = None
        self._client: ClientRuntime | None = None
        self.creation = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Node:
        global _running
        if self._system is not None:
            return self
        with _one_node:
            if _running is not None:
                raise NodeError(f"this program already runs node {_running.name!r}")
            _running = self
        try:
            self.creation = secrets.randbits(31) | 1
            identity = NodeIdentity(self.name, self.creation)
            log_path = None
            if self._log_dir is not None:
                actors.make_private_dir(self._log_dir)  # 0700 if made here
                log_path = os.path.join(self._log_dir, f"{self.name}.log")
            if self._metrics and self.metrics is None:
                # before the first fork: every process of the node inherits its socket
                self.metrics = metrics.Service()
            if self.dist_config is not None:
                actors.set_remote_hooks(DistHooks())  # inherited by every process
            create_shared_table()  # before the fork: every process of the node reads it
            client = ClientRuntime(identity)
            actors.set_current_runtime(client)
            self._client = client
            self._system = actors.start_local_system(
                client,
                Kernel,
                self._kernel_args,
                log_path,
                self._log_level,
                self._start_timeout,
            )
            client.kernel = self._system.kernel
            actors.set_node_pgid(self._system.pgid)
            log.info(
                "node %s started (kernel %r, log %s)",
                self.name,
                client.kernel,
                log_path or "this program's logging",
            )
            # a program that ends without stop() still stops its tree in order
            atexit.register(self._stop_at_exit)
        except BaseException:
            with _one_node:
                _running = None
            actors.set_current_runtime(None)
            self._client = None
            close_shared_table()
            if self.metrics is not None:
                self.metrics.close()
                self.metrics = None
            raise
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the tree (reverse start order, each child's shutdown honoured), then
        every process of the node. Returns when none is left."""
        global _running
        system = self._system
        if system is None:
            return
        client = self._client
        try:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.call(system.kernel, ("$stop",), timeout)
        finally:
            left = actors.halt_local_system(system)
            self._system = None
            if client is not None:
                client.goodbye("normal")
            actors.set_current_runtime(None)
            actors.set_node_pgid(os.getpgrp())
            close_shared_table()
            self._client = None
            if self.metrics is not None:
                self.metrics.close()
                self.metrics = None
            atexit.unregister(self._stop_at_exit)
            with _one_node:
                _running = None
            if left:
                raise NodeError(f"node {self.name}: processes {left} survived the stop")

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout=10.0)

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ access

    @property
    def running(self) -> bool:
        return self._system is not None

    @property
    def kernel(self) -> Pid:
        return self._require().kernel

    @property
    def pid(self) -> Pid:
        """This program's own pid in the node."""
        if self._client is None:
            raise NodeError("node not started")
        return self._client.pid

    @property
    def log_path(self) -> str | None:
        """The node's log file, or None when its records go to this program's logging."""
        return self._require().log_path

    @property
    def admin_port(self) -> int:
        return self._require().admin_port

    @property
    def dist_port(self) -> int:
        """The TCP port this node's dist listens on."""
        port: int = actors.call(NET_NAME, ("port",))
        return port

    def os_pids(self) -> list[int]:
        """OS pids of every process of the node (admin, logger, actors)."""
        return self._require().node_pids()

    def _require(self) -> actors.LocalSystem:
        if self._system is None:
            raise NodeError(f"node {self.name} is not running")
        return self._system

    def start_child(self, spec: ChildSpec | Mapping[str, Any]) -> Any:
        """Start a child under the kernel (an application's root supervisor)."""
        return start_child(self.kernel, spec)

    def spawn(self, target: Any, *args: Any, name: str | None = None, **kwargs: Any) -> Any:
        """Start an actor process owned by this program (not linked)."""
        self._require()
        return actors.spawn(target, *args, name=name, **kwargs)

    def spawn_link(self, target: Any, *args: Any, name: str | None = None, **kwargs: Any) -> Any:
        """Start an actor linked to this program; its exit arrives as an ExitSignal."""
        self._require()
        return actors.spawn_link(target, *args, name=name, **kwargs)

    def receive(self, timeout: float | None = 5.0) -> Any:
        """The next message to this program (``Down``, ``ExitSignal``, sends)."""
        if self._client is None:
            raise NodeError("node not started")
        return self._client.receive(timeout)

    def flush(self) -> list[Any]:
        """Every message already waiting for this program."""
        if self._client is None:
            raise NodeError("node not started")
        return self._client.flush()


__all__ = ["SYSTEM_CHILDREN", "Kernel", "Node", "StartError"]
