"""Singleton: one active instance of a child in the whole cluster (the seed's
``SchedulerSupervisor`` as a library part).

``Singleton(child, name)`` is a child spec for the application's tree. Its manager (a
small supervisor) runs on every node and supervises the child there:

* **Warm standby.** If the child is a :class:`SingletonWorker`, every manager starts it at
  once, *inactive*; the elected one is told :class:`Activate` (``activate(epoch)``), a
  losing one :class:`Deactivate`. Any other child is *cold*: only the holder's manager
  starts it, under a cluster lock, and stops it when it loses.
* **Election.** Not before discovery has settled (every node of the first good DNS
  answer connected and the registry merged with it), or ``settle_timeout``: five pods
  booting at once elect one, with no kill storm. Then the child's pid is registered as
  ``name`` in the global registry under the cluster lock ``("otpkit_singleton", name)``;
  the others watch the name and elect again the moment it goes (its holder died, or its
  node went down).
* **Conflicts** (``policy="availability"``, OTP global's behaviour). During a partition
  each side may elect its own; on heal the registry calls ``resolve`` once (default: keep
  the holder on the smaller-named node). The manager whose child lost the name stops
  being active and goes back to standby. It does not exit, so nothing counts against its
  parent's restart intensity.
* **Hand-over.** When the holder's manager is stopped (SIGTERM, a rolling deploy), it
  deactivates its child (which finishes in-flight work, bounded by ``handover_timeout``),
  unregisters the name so a standby is elected at once, and waits until the new holder
  is active before it exits: no failure detector is waited for.

``policy="majority"`` adds a lease granted by a majority of member nodes with rising
epochs (see ``otpkit.quorum._core``): a holder is active only while it holds the
lease; its effects carry the epoch (``fence``), so a paused or cut-off old holder cannot
act even before it notices that it lost. The epoch reaches the child in
:class:`Activate`. An active warm child holds a *witness* of its lease at every member
(``distribution._witness``): only its close - the child ended, or stopped acting - lets
a member hand the lease on before it expires, so a node whose dist alone died cannot
make a second active child; a cold child's lease always runs out first.

**The watchdog** (``_watchdog``). Every manager checks twice a second whether the
cluster has an active holder, as far as its node can tell. After more than two lease
terms without one while a majority of the expected nodes is connected it logs one ERROR
line per term saying why (a store failing, no quorum, waiting for a node), tells its warm
child (:meth:`SingletonWorker.no_holder`; the scheduler makes it a ``no_holder`` job
event), and posts it for the shell's ``nodes``; one INFO line (and
:meth:`SingletonWorker.holder_back`) when a holder is back.

**Metrics.** Each manager sets ``otpkit_singleton_holder`` (1 while its child is the
active one, else 0) and ``otpkit_singleton_no_holder`` (1 from the watchdog's ERROR line
until a holder is seen again) for its node, both 0 at its start and once it stops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from otpkit import actors, metrics
from otpkit import quorum as _quorum
from otpkit.actors import Actor, Down, From, Pid, shapes
from otpkit.distribution import Witness
from otpkit.errors import CallTimeout, Exit, NodeError, OtpkitError
from otpkit.quorum import LeaseGranted, LeaseLost, QuorumConfig
from otpkit.registry import _global
from otpkit.registry._global import GLOBAL_NAME, NameChanged
from otpkit.registry._join import ClusterViewError, cluster_view, join_problem
from otpkit.registry._resolvers import resolver_name
from otpkit.registry._watchdog import (
    WATCH_EVERY,
    ReportBack,
    ReportMissing,
    Watch,
    holder_seen,
    no_holder_reason,
    watch_step,
)
from otpkit.supervision import ChildSpec, Supervisor, SupFlags, child_spec

log = logging.getLogger("otpkit.registry")

POLICIES = ("availability", "majority")

# refused calls, one line a minute (per process)
_drops = shapes.DropLog(log)


@dataclass(frozen=True)
class Activate:
    """Call to a warm child: it is now the cluster's one active instance. ``epoch`` rises
    with every new holder under ``policy="majority"`` (0 under availability)."""

    name: Any
    epoch: int
    fenced: bool = False
    #: majority: the node's ``dist.witness_info()``, for the child's witnesses (it holds
    #: the cookie: never in a repr)
    witness: dict[str, Any] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Deactivate:
    """Call to a warm child: stop acting (finish or abandon in-flight work) and reply."""

    name: Any
    reason: str


@dataclass(frozen=True)
class NoHolder:
    """Call to every node's warm child, once per lease term while the watchdog finds no
    active holder (more than two terms, a majority connected): ``seconds`` without one
    as this node sees it, and ``reason`` (the ERROR line's)."""

    name: Any
    seconds: float
    reason: str


@dataclass(frozen=True)
class HolderBack:
    """Call to every node's warm child after :class:`NoHolder`: a holder (on node
    ``holder``, None if unknown) is active again after ``seconds`` without one."""

    name: Any
    seconds: float
    holder: str | None


#: Call to a warm child, also from another node: True once it is active.
IS_ACTIVE = ("$singleton", "is_active")
#: Call to a warm child: its :meth:`SingletonWorker.problem` (for the watchdog's reason).
PROBLEM = ("$singleton", "problem")
#: Call to the active child: ``(WITNESS_PEERS, info)``, the node's peers changed.
WITNESS_PEERS = "$singleton_witness"

#: The plain calls a warm child answers itself (its subclass's requests go to
#: :meth:`SingletonWorker.handle_request`): ``IS_ACTIVE`` (also from another node's
#: manager, at a hand-over) and ``PROBLEM``; ``WITNESS_PEERS`` from its manager only
#: (the info holds the cookie). ``Activate``, ``Deactivate``, ``NoHolder`` and
#: ``HolderBack`` are Python objects: from this node only.
WORKER_CALLS = shapes.Protocol(
    "singleton worker call",
    shapes.Shape("$singleton", (shapes.Const(("is_active", "problem")),)),
    shapes.Shape(WITNESS_PEERS, (shapes.Map(str, shapes.ANY, 64),)),
)

#: The manager's own call (``("$singleton", "state")``, for tests and the shell); it
#: answers the supervisor's calls too.
MANAGER_CALLS = shapes.Protocol(
    "singleton manager call", shapes.Shape("$singleton", (shapes.Const(("state",)),))
)

#: The manager takes no plain message: its timers, the registry's ``NameChanged`` and
#: the quorum's lease notices are Python objects, its children's exits the supervisor's.
MANAGER_INFOS = shapes.Protocol("singleton manager message")


@dataclass(frozen=True)
class _Timer:
    """One of the manager's timers (no other process can send one): ``what`` is
    ``"elect"`` (``arg``: the election's number), ``"name"`` (the child to bind the name
    to), ``"witness"`` (the epoch), ``"watchdog"`` or ``"rewatch"``."""

    what: str
    arg: Any = None


class SingletonWorker(Actor):
    """Base of a child that can wait warm: started on every node, active on one.

    Override :meth:`activate` and :meth:`deactivate`; ``self.active`` and ``self.epoch``
    tell the current state. Other calls reach :meth:`handle_request` (by default
    refused with an error answer); casts and plain messages not overridden are dropped
    with a rate-limited line, so that no stray message ends a warm child.
    """

    active: bool = False
    epoch: int = -1
    singleton_name: Any = None
    fenced: bool = False

    def activate(self, epoch: int) -> None:
        """Become the active instance (epoch: see :class:`Activate`)."""

    def deactivate(self, reason: str) -> None:
        """Stop acting; return when in-flight work is finished or abandoned."""

    def no_holder(self, seconds: float, reason: str) -> None:
        """The watchdog found no active holder in the cluster for ``seconds`` (more than
        two lease terms, a majority connected), because of ``reason``; called on every
        node's child once per term while it lasts (the manager has logged ERROR)."""

    def holder_back(self, seconds: float, holder: str | None) -> None:
        """A holder (on node ``holder``) is active again after ``seconds`` without one;
        called once after :meth:`no_holder`."""

    def problem(self) -> str | None:
        """What on this node keeps the child from acting if elected (e.g. its store
        cannot be written), for the watchdog's reason; None (default) if nothing."""
        return None

    _witness: Witness | None = None

    def handle_call(self, request: Any, from_: From) -> Any:
        tag = request[0] if type(request) is tuple and request else None
        if type(tag) is str and tag in WORKER_CALLS:
            why = WORKER_CALLS.problem(request)
            if why is None and tag == WITNESS_PEERS and not actors.runtime().is_local(from_.pid):
                why = f"{WITNESS_PEERS!r} is asked by this node's manager only"
            if why is not None:
                _drops.dropped(repr(self.pid), request, why)
                return shapes.bad_request(WORKER_CALLS.owner, why)
        if isinstance(request, Activate):
            self._close_witness()
            self.singleton_name, self.epoch, self.active = request.name, request.epoch, True
            self.fenced = request.fenced
            if request.fenced and request.witness is not None:
                # this process holds the lease's witnesses: their close (this process
                # ended, or stopped acting) lets the members void the grant at once
                self._witness = Witness(f"singleton/{request.name}", request.epoch)
                self._witness.update(request.witness)
            self.activate(request.epoch)
            return True
        if isinstance(request, Deactivate):
            if self.active:
                self.active = False
                self.deactivate(request.reason)
            self._close_witness()  # only once it stopped acting
            return True
        if request == IS_ACTIVE:
            return self.active
        if isinstance(request, NoHolder):
            self.no_holder(request.seconds, request.reason)
            return True
        if isinstance(request, HolderBack):
            self.holder_back(request.seconds, request.holder)
            return True
        if request == PROBLEM:
            return self.problem()
        if tag == WITNESS_PEERS:
            if self._witness is not None:
                self._witness.update(request[1])
            return True
        return self.handle_request(request, from_)

    def _close_witness(self) -> None:
        if self._witness is not None:
            self._witness.close()
            self._witness = None

    def handle_request(self, request: Any, from_: From) -> Any:
        """A call that is not the Singleton's own. By default refused: a warm child
        runs on every node, and no stray call may end it."""
        why = f"unknown singleton worker call {request!r:.60}"
        _drops.dropped(repr(self.pid), request, why)
        return shapes.bad_request(WORKER_CALLS.owner, why)

    def handle_cast(self, msg: Any) -> None:
        """By default a cast is dropped (one rate-limited line)."""
        _drops.dropped(repr(self.pid), msg, "a singleton worker takes no cast")

    def handle_info(self, msg: Any) -> None:
        """By default a plain message is dropped (one rate-limited line)."""
        _drops.dropped(repr(self.pid), msg, "a singleton worker takes no message")

    def fence(self, effect: Any, timeout: float = 5.0) -> bool:
        """Under ``policy="majority"``: True iff a majority of members accepted
        ``effect`` (msgpack-able) under this instance's epoch - False once a newer holder
        was granted the lease, even if this one has not heard yet. Do the effect only
        after True. Under ``"availability"`` there is no fencing: always True."""
        if not self.fenced:
            return self.active
        return _quorum.fence(f"singleton/{self.singleton_name}", self.epoch, effect, timeout)


@dataclass(frozen=True)
class SingletonConfig:
    child: ChildSpec
    name: Any
    resolver: str
    policy: str
    settle_timeout: float
    handover_timeout: float
    warm: bool


def keep_smaller_node(name: Any, other: Pid, own: Pid) -> Pid:
    """The Singleton's default resolver: keep the holder on the smaller-named node and
    touch neither (the losing manager sees the name move and goes back to standby)."""
    return own if (own.node, own.id) <= (other.node, other.id) else other


def Singleton(  # noqa: N802 - reads as the class it makes a spec for
    child: ChildSpec | Mapping[str, Any],
    name: Any,
    resolve: str | Callable[..., Any] | None = None,
    policy: str = "availability",
    settle_timeout: float = 5.0,
    handover_timeout: float = 5.0,
    id: Any = None,
    intensity: int = 3,
    period: float = 5.0,
    **options: Any,
) -> ChildSpec:
    """The child spec of a Singleton manager for ``child``, elected cluster-wide as
    ``name`` (see the module). ``resolve`` decides conflicts after a partition under
    ``policy="availability"`` (default :func:`keep_smaller_node`); ``intensity`` and
    ``period`` bound the restarts of the child on this node. Under
    ``policy="majority"`` the lease is the node's quorum's: its options (``term``,
    ``expected_size``, ...) are the node's, ``Node(quorum=QuorumConfig(...))`` or
    ``otpkit run --expected-size``; given here they are refused (ValueError)."""
    if options:
        raise ValueError(
            f"Singleton {name!r}: {', '.join(sorted(options))}: not an option of a "
            "Singleton (the majority lease's term and expected size are the node's: "
            "Node(quorum=QuorumConfig(...)), otpkit run --expected-size)"
        )
    spec = child_spec(child)
    if policy not in POLICIES:
        raise ValueError(f"Singleton {name!r}: policy={policy!r}; expected one of {POLICIES}")
    if settle_timeout < 0 or handover_timeout < 0:
        raise ValueError(f"Singleton {name!r}: timeouts must be >= 0")
    start = spec.start
    warm = isinstance(start, type) and issubclass(start, SingletonWorker)
    config = SingletonConfig(
        spec,
        name,
        resolver_name(resolve or keep_smaller_node),
        policy,
        settle_timeout,
        handover_timeout,
        warm,
    )
    return ChildSpec(
        id if id is not None else ("singleton", name),
        SingletonManager,
        (config, intensity, period),
        shutdown=handover_timeout + 5.0,
        type="supervisor",
    )


class SingletonManager(Supervisor):
    """The per-node manager of a :func:`Singleton` (see the module)."""

    def setup(  # type: ignore[override]
        self, config: SingletonConfig, intensity: int = 3, period: float = 5.0
    ) -> Any:
        self.config = config
        self.active = False
        self.epoch = 0
        self.holder: Pid | None = None
        self.started = time.monotonic()
        self.settled = False
        self.lease: Any = None  # majority: the Lease this manager holds
        self.elect_gen = 0  # only the latest scheduled election runs: one retry chain
        self.key = f"singleton/{config.name}"
        self.witness_peers: dict[str, Any] = {}  # the peers the active child was given
        # the watchdog (see _watchdog): nothing is elected before the settle time
        self.watch = Watch(self.started, not_before=self.started + config.settle_timeout)
        self.need = 1  # the last majority this node's quorum counted (majority)
        self.trouble: str | None = None  # what the election last ran into
        self.notice: dict[str, Any] | None = None  # the last one posted
        # the metrics' label, and the gauges' values last sent (see _send_gauges)
        self.label = (config.name if isinstance(config.name, str) else repr(config.name))[:200]
        self.sent: dict[str, float] = {}
        children = [config.child] if config.warm else []
        return SupFlags("one_for_one", intensity, period), children

    def init(self, *args: Any, **kwargs: Any) -> Any:
        result = super().init(*args, **kwargs)
        self.services: dict[Any, str] = {}  # monitor ref -> the system service it watches
        self._watch_services()
        self._later(0)
        actors.send_after(WATCH_EVERY, _Timer("watchdog"))
        self._send_gauges()  # 0 and 0: a restarted manager holds nothing yet
        return result

    def _watch_services(self) -> bool:
        """Watch the name at this node's registry server (and subscribe to the lease at
        its quorum): both forget their subscribers when they restart, so the manager
        monitors them and subscribes again."""
        wanted = [GLOBAL_NAME] + ([_quorum.QUORUM_NAME] if self.config.policy == "majority" else [])
        pids = {name: actors.whereis(name) for name in wanted}
        if any(pid is None for pid in pids.values()):
            actors.send_after(0.1, _Timer("rewatch"))
            return False
        for ref in list(self.services):
            actors.demonitor(ref, flush=True)
        self.services = {actors.monitor(pid): name for name, pid in pids.items() if pid}
        self.holder = actors.call(GLOBAL_NAME, ("watch", self.config.name, actors.self()))
        if self.config.policy == "majority":
            _quorum.subscribe(self.key)
        return True

    def _service_down(self, name: str) -> None:
        log.warning("%r: the node's %s restarted; watching again", self.pid, name)
        if name == _quorum.QUORUM_NAME and self.lease is not None:
            self._lease_lost(self.lease.epoch)  # its leases died with it
        actors.send_after(0.1, _Timer("rewatch"))

    # ------------------------------------------------------------------ events

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, NameChanged) and msg.name == self.config.name:
            self._name_changed(msg.pid)
        elif isinstance(msg, _Timer):
            if msg.what == "elect" and msg.arg == self.elect_gen:
                self._elect()
            elif msg.what == "name":
                if self.active and self._child_pid() == msg.arg and self.holder != msg.arg:
                    self._reassert(msg.arg)
            elif msg.what == "witness":
                self._refresh_witness(msg.arg)
            elif msg.what == "watchdog":
                actors.send_after(WATCH_EVERY, _Timer("watchdog"))
                try:
                    self._watchdog()
                except OtpkitError as exc:  # a check that failed must not end the manager
                    log.warning("%r: singleton watchdog check failed: %r", self.pid, exc)
            elif msg.what == "rewatch" and self._watch_services():
                mine = self._child_pid()
                if self.active and self.holder is None and mine is not None:
                    # a restarted registry starts empty: the active child keeps its name
                    self._reassert(mine)
                else:
                    self._name_changed(self.holder)
        elif isinstance(msg, Down) and msg.ref in self.services:
            self._service_down(self.services.pop(msg.ref))
        elif isinstance(msg, LeaseLost) and msg.key == self.key:
            self._lease_lost(msg.epoch)
        elif isinstance(msg, LeaseGranted):
            pass
        else:
            was = self._child_pid()
            super().handle_info(msg)
            if was is not None and self._child_pid() != was and self.active:
                # the active child ended (the supervisor restarted it, or gave up): the
                # registry drops its name, and the election starts again everywhere.
                # Its witnesses closed with it, so the members voided its grant: the
                # lease is given up too, and a new child acts only under a new one
                self.active = False
                if self.lease is not None:
                    epoch, self.lease = self.lease.epoch, None
                    _quorum.release(self.key, epoch)
                    self._later(0.1)
        self._send_gauges()

    def _name_changed(self, pid: Pid | None) -> None:
        previous, self.holder = self.holder, pid
        mine = self._child_pid()
        if self.config.policy == "majority":
            if self.active and pid != mine and mine is not None:
                # a merge gave the name to a pid without the lease: the holder takes it back
                self._reassert(mine)
            elif pid is None and not self.active:
                self._later(self._rank(previous.node if previous else None) * 0.02)
            return
        if pid is not None and pid == mine:
            if not self.active:
                self._activate()
            return
        if self.active:
            log.info(
                "%r: singleton %r lost to %r; back to standby", self.pid, self.config.name, pid
            )
            self._deactivate("conflict")
        if pid is None:
            # the holder is gone: the smallest-named node tries at once, the others a
            # little later (they stop as soon as the name is taken), so the survivors
            # do not all contend for the cluster lock at the same instant
            delay = self._rank(previous.node if previous is not None else None) * 0.02
            if delay:
                self._later(delay)
            else:
                self.elect_gen += 1  # cancels an election already scheduled
                self._elect()

    def _later(self, delay: float) -> None:
        """Schedule the next election attempt, replacing any scheduled before."""
        self.elect_gen += 1
        msg = _Timer("elect", self.elect_gen)
        if delay:
            actors.send_after(delay, msg)
        else:
            actors.send(actors.self(), msg)

    def _reassert(self, mine: Pid) -> None:
        """Bind the name to the active child ``mine`` (the cluster lock's round); if
        the round fails, try again in 0.5 s while it is still the active child."""
        try:
            _global.locked_change(
                None,
                lambda _: ([(self.config.name, (mine, self.config.resolver))], None),
                # under majority the child acts already: a short try, again in 0.5 s,
                # so the manager hears its lease's loss between the tries
                timeout=1.0 if self.config.policy == "majority" else 5.0,
            )
        except (CallTimeout, Exit, NodeError) as exc:
            log.warning(
                "%r: singleton %r: its name is not written yet (%s); trying again",
                self.pid,
                self.config.name,
                exc,
            )
            actors.send_after(0.5, _Timer("name", mine))
            return
        self.holder = mine

    def _peers(self) -> list[str]:
        try:
            from otpkit import distribution as dist  # noqa: PLC0415

            return dist.nodes()
        except NodeError:
            return []

    def _rank(self, leaving: str | None) -> int:
        """This node's place among the candidates (the old holder's node is none: it
        may still be connected while it hands over)."""
        me = actors.self().node
        return sorted(n for n in [me, *self._peers()] if n != leaving or n == me).index(me)

    # ------------------------------------------------------------------ election

    def _ready(self) -> bool:
        """Discovery settled and merged, or ``settle_timeout`` passed."""
        if self.settled:
            return True
        if time.monotonic() - self.started >= self.config.settle_timeout:
            self.settled = True
            return True
        try:
            # a node without discovery (or dist) has none; merges are waited for (sync)
            view = cluster_view(1.0, discovery=None, dist=None, dist_timeout=5.0, sync=True)
        except ClusterViewError as exc:
            if isinstance(exc.cause, CallTimeout) and exc.step != "dist":
                return False  # discovery or the registry is busy: ask again later
            raise exc.cause from None
        if join_problem(view) is not None:
            return False
        self.settled = True
        return True

    def _elect(self) -> None:
        if self.config.policy == "majority":
            self._elect_majority()
            return
        if self.active or self.holder is not None:
            return
        if not self._ready():
            self._later(0.05)
            return
        won = _global.elect(self.config.name, self._candidate, self.config.resolver)
        if won is None:
            self._later(0.05)  # the lock was contended
        elif not won and self.holder is None:
            self._later(0.5)  # a cold child failed to start (or the name went meanwhile)
        elif won:
            self.holder = self._child_pid()
            self._activate()

    def _elect_majority(self) -> None:
        """Ask for the lease; while another node holds it, ask again every 0.5 s (every
        0.1 s once the holder's name is gone). Active only while holding it."""
        if self.active:
            return
        if not self._ready():
            self._later(0.05)
            return
        lease = _quorum.acquire(self.key, timeout=0.5)
        if lease is None:
            # no holder in sight: its lease is running out, ask again soon (the members
            # grant the moment it has); a live holder: check on it now and then
            self._later(0.1 if self.holder is None else 0.5)
            return
        pid = self._candidate()
        if pid is None:
            _quorum.release(self.key, lease.epoch)
            self._later(0.5)
            return
        self.lease, self.epoch = lease, lease.epoch
        # the lease and its fence are what let the child act: it acts now, and the name
        # follows (a lock round that waits on a frozen node delays only the name)
        self._activate()
        self._reassert(pid)

    def _lease_lost(self, epoch: int) -> None:
        if self.lease is None or self.lease.epoch != epoch:
            return
        log.warning("%r: singleton %r lost its lease (epoch %d)", self.pid, self.config.name, epoch)
        self.lease = None
        if self.active:
            self._deactivate("lease_lost")
        self._later(0.5)

    def _candidate(self) -> Pid | None:
        """The pid to register: the warm child, or a cold child started now (under the
        election lock, so no other node starts one meanwhile)."""
        if not self.config.warm:
            res = self._ensure_child(self.config.child)
            if res[0] != "ok":
                log.error("%r: singleton child failed to start: %r", self.pid, res)
                self.trouble = f"the child failed to start on {self.pid.node}: {res!r:.200}"
                return None
        return self._child_pid()

    def _activate(self) -> None:
        self.active = True
        self.trouble = None
        child = self._child_pid()
        log.info("%r: singleton %r active in %r", self.pid, self.config.name, child)
        if self.config.warm and child is not None:
            fenced = self.config.policy == "majority"
            witness = self._witness_info() if fenced else None
            self.witness_peers = witness["peers"] if witness else {}
            try:
                actors.call(
                    child, Activate(self.config.name, self.epoch, fenced, witness), timeout=30.0
                )
            except (Exit, CallTimeout) as exc:
                log.error("%r: activating %r failed: %s", self.pid, child, exc)
            if witness is not None:
                actors.send_after(1.0, _Timer("witness", self.epoch))

    def _witness_info(self) -> dict[str, Any] | None:
        try:
            from otpkit import distribution as dist  # noqa: PLC0415

            return dist.witness_info()
        except (NodeError, CallTimeout, Exit):
            return None

    def _refresh_witness(self, epoch: int) -> None:
        """Every second while active: the active child's witnesses follow the node's
        peers (a member restarted, or added, gets one too)."""
        child = self._child_pid()
        if not self.active or epoch != self.epoch or child is None:
            return
        actors.send_after(1.0, _Timer("witness", epoch))
        info = self._witness_info()
        if info is None or info["peers"] == self.witness_peers:
            return
        try:
            actors.call(child, (WITNESS_PEERS, info), timeout=1.0)
            self.witness_peers = info["peers"]
        except (Exit, CallTimeout) as exc:
            log.debug("%r: witness peers not updated: %s", self.pid, exc)

    def _deactivate(self, reason: str) -> None:
        self.active = False
        pid = self._child_pid()
        if pid is None:
            return
        if self.config.warm:
            try:
                actors.call(
                    pid,
                    Deactivate(self.config.name, reason),
                    timeout=self.config.handover_timeout,
                )
                return
            except (Exit, CallTimeout) as exc:
                log.error("%r: deactivating %r failed: %s; restarting it", self.pid, pid, exc)
        # a cold child (or a warm one that would not stop acting) is stopped; a warm
        # one is started again as a standby, without counting as a restart
        self._stop_child(self.config.child.id)
        if self.config.warm:
            self._ensure_child(self.config.child)

    # ------------------------------------------------------------------ watchdog

    def _watchdog(self) -> None:
        """One check of the watchdog (see ``_watchdog``): is a holder active, as far as
        this node can tell; log, tell the child and post a notice when due."""
        now = time.monotonic()
        status: dict[str, Any] | None = None
        unanswered = None
        term = QuorumConfig().term + QuorumConfig().margin  # the default lease term
        if self.config.policy == "majority":
            try:
                got = _quorum.key_status(self.key, timeout=1.0)
                self.need, term, status = int(got["need"]), float(got["term"]), got
            except (CallTimeout, Exit, NodeError, KeyError, TypeError, ValueError) as exc:
                unanswered = f"{type(exc).__name__}: {exc}"
        me = self.pid.node
        name_node = self.holder.node if self.holder is not None else None
        # a quorum that does not answer tells nothing of grants: the name is all there is
        seen = holder_seen(self.active, name_node, status, me)
        live = 1 + len(self._peers())
        self.watch, report = watch_step(self.watch, now, seen, live, self.need, term)
        if isinstance(report, ReportMissing):
            reason = self._no_holder_reason(status, unanswered)
            majority = f" ({self.need} make a majority)" if self.config.policy == "majority" else ""
            log.error(
                "%s: singleton %r has no active holder for %.0f s, %d nodes connected%s: %s",
                me,
                self.config.name,
                report.seconds,
                live,
                majority,
                reason,
            )
            # the next line a term after this one was written (finding the reason may
            # have taken a moment)
            self.watch = replace(self.watch, reported=time.monotonic())
            self._tell_child(NoHolder(self.config.name, report.seconds, reason))
            if unanswered is None:
                self._post({"holder": None, "since": self.watch.last_seen, "reason": reason})
        elif isinstance(report, ReportBack):
            holder = me if self.active else name_node
            log.info(
                "%s: singleton %r has a holder again after %.0f s (on %s)",
                me,
                self.config.name,
                report.seconds,
                holder or "?",
            )
            self._tell_child(HolderBack(self.config.name, report.seconds, holder))
        if unanswered is not None:
            return  # the quorum the notice is posted to does not answer either
        if seen:
            self._post({"holder": me if self.active else name_node, "since": None, "reason": None})
        elif self.watch.reported is None:
            self._post({"holder": None, "since": None, "reason": None})

    def _no_holder_reason(self, status: dict[str, Any] | None, unanswered: str | None) -> str:
        stores: list[str] = []
        child = self._child_pid()
        if self.config.warm and child is not None:
            try:
                problem = actors.call(child, PROBLEM, timeout=1.0)
                if isinstance(problem, str) and problem:
                    stores.append(problem)
            except (Exit, CallTimeout) as exc:
                log.debug("%r: the child's problem not known: %s", self.pid, exc)
        return no_holder_reason(
            self.pid.node, status, stores=stores, unanswered=unanswered, election=self.trouble
        )

    def _tell_child(self, event: NoHolder | HolderBack) -> None:
        child = self._child_pid()
        if not self.config.warm or child is None:
            return
        try:
            actors.call(child, event, timeout=1.0)
        except (Exit, CallTimeout) as exc:
            log.debug("%r: %s not told to %r: %s", self.pid, type(event).__name__, child, exc)

    def _post(self, notice: dict[str, Any]) -> None:
        """Post this singleton's line for the shell's ``nodes`` when it changed: its
        holder's node, or since when (monotonic) it has none and why."""
        notice = {"name": self.config.name, "policy": self.config.policy, **notice}
        if notice == self.notice:
            return
        try:
            _quorum.post_notice(self.key, notice, timeout=1.0)
            self.notice = notice
        except (CallTimeout, Exit, NodeError) as exc:
            log.debug("%r: notice not posted: %s", self.pid, exc)

    def _send_gauges(self, stopped: bool = False) -> None:
        """Send what changed of this node's view of the singleton: whether its child is
        the active one (``otpkit_singleton_holder``) and whether the watchdog misses a
        holder past its grace (``otpkit_singleton_no_holder``); both 0 once the manager
        stops."""
        values = {
            "otpkit_singleton_holder": 0.0 if stopped else float(self.active),
            "otpkit_singleton_no_holder": 0.0 if stopped else float(self.watch.missing),
        }
        for name, value in values.items():
            if self.sent.get(name) != value and metrics.gauge(
                name, {"singleton": self.label}, value
            ):
                self.sent[name] = value

    # ------------------------------------------------------------------ hand-over

    def terminate(self, reason: Any) -> None:
        try:
            if self.active:
                self._hand_over()
        finally:
            self._send_gauges(stopped=True)
            actors.call(GLOBAL_NAME, ("unwatch", self.config.name, actors.self()))
            super().terminate(reason)

    def _hand_over(self) -> None:
        name, mine = self.config.name, self._child_pid()
        self._deactivate("handover")
        if self.lease is not None:
            _quorum.release(self.key, self.lease.epoch)
            self.lease = None
        deadline = time.monotonic() + self.config.handover_timeout
        if mine is not None and _global.whereis(name) == mine:
            _global.unregister_if(name, mine)
        if not self._peers():
            return  # no other node: nobody to hand over to
        # wait for a standby to be active (bounded): a rolling deploy never waits for a
        # failure detector, and never has a gap longer than one election
        while time.monotonic() < deadline:
            holder = _global.whereis(name)
            if holder is not None and holder != mine:
                try:
                    if not self.config.warm or actors.call(holder, IS_ACTIVE, timeout=1.0):
                        log.info("%r: singleton %r handed over to %r", self.pid, name, holder)
                        return
                except (Exit, CallTimeout):
                    pass
            time.sleep(0.002)
        log.warning("%r: no standby took singleton %r over in time", self.pid, name)

    # ------------------------------------------------------------------ helpers

    def _child_pid(self) -> Pid | None:
        child = self._child_info(self.config.child.id)
        return child.pid if child is not None and isinstance(child.pid, Pid) else None

    def handle_call(self, request: Any, from_: From) -> Any:
        tag = request[0] if type(request) is tuple and request else None
        if type(tag) is str and tag in MANAGER_CALLS:
            why = MANAGER_CALLS.problem(request)
            if why is not None:
                _drops.dropped(repr(self.pid), request, why)
                return shapes.bad_request(MANAGER_CALLS.owner, why)
        if request == ("$singleton", "state"):
            return {
                "active": self.active,
                "holder": self.holder,
                "child": self._child_pid(),
                "epoch": self.epoch,
                "settled": self.settled,
                "notice": self.notice,
            }
        return super().handle_call(request, from_)
