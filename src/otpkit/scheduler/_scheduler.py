"""The Scheduler: Quantum's scheduler as the cluster's Singleton, each tick fired once.

``Scheduler(...)`` (made in ``_spec``, re-exported here) is a child spec for the
application's tree. On every node it starts a small supervisor (``rest_for_one``) with
two children:

* the node's **task pool** (``_pool.TaskPool``): pre-spawned worker processes that run
  the tasks the scheduler sends to this node;
* a :func:`~otpkit.registry.Singleton` manager whose warm child is a
  :class:`SchedulerWorker`. On every node that worker is a **replica**: it keeps the run
  ledger and the job table (``_replica``) in memory and in its SQLite store, and takes
  the holder's writes. On the elected node it is also the **holder**: it owns the fire
  queue, claims ticks, sends runs to pools and records their finish.

**Once per tick** (ARCHITECTURE.md, *The run ledger*). The holder claims a tick in the
ledger before its run is sent, and finishes it when the pool reports. Under
``policy="majority"`` a write counts only once a majority of members took it under the
holder's lease epoch; a new holder first has a majority *observe* its epoch (from then
on they refuse the old holder's writes) and starts from the merge of their copies. So a
paused or cut-off old holder cannot claim anything, a claimed tick is never claimed
again, and an open claim whose run is gone is reported ``interrupted``. Ticks nobody
claimed are due again and go through the job's misfire policy. Under ``"availability"``
each side of a partition may run jobs (OTP ``global``'s behaviour); writes go to the
nodes in reach.

**Runs** are claimed a little ahead of their tick (``lead``) and the pool's worker waits
for the tick itself, so the lateness is the worker's wake-up, not a network round.
A run survives the holder's death: its pool keeps reporting the finish until a holder
acknowledges it.

The decisions are pure functions (``_plan``, ``_ledger``, ``_replica``, ``_rounds``,
``pick_nodes``).
:class:`SchedulerWorker` is a shell that decodes each message once (``_messages``) and
hands it to the part that owns it: this node's copy (``_member.Member``), its event bus
(``_events.EventBus``) and, made anew for each term as the holder, the writer
(``_replication.Writer``), the tick engine (``_engine.Engine``), the finish tracker
(``_finishes.Finishes``) and the runtime API's server (``_api.Api``). The shell keeps
what touches the process: its name and service, the node events (``_peers.Peers``),
the quorum's members and readiness gate, the transport of the holder's rounds and the
holder's timers (:class:`_Timer`: Python objects, which no other node can send).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from otpkit import actors
from otpkit import distribution as dist
from otpkit import quorum as _quorum
from otpkit.actors import Down, From, shapes
from otpkit.distribution import NodeDown, NodeUp
from otpkit.errors import NodeError, OtpkitError
from otpkit.registry import SingletonWorker
from otpkit.scheduler._api import Api
from otpkit.scheduler._engine import Engine, wall_now
from otpkit.scheduler._events import EventBus, JobEvent, new_event
from otpkit.scheduler._finishes import Finishes
from otpkit.scheduler._ledger import LedgerError
from otpkit.scheduler._member import Member
from otpkit.scheduler._messages import (
    DEFAULT_NAME,
    REPLICA_CALLS,
    BadMessage,
    EventNote,
    Hello,
    ReplicaCall,
    RunDone,
    RunStarted,
    Subscribe,
    bad_answer,
    decode_call,
    decode_info,
    encode,
    replica_name,
)
from otpkit.scheduler._peers import Peers
from otpkit.scheduler._pool import pool_name
from otpkit.scheduler._replication import Writer
from otpkit.scheduler._retry import PROTOCOL_FEATURES
from otpkit.scheduler._spec import Scheduler, SchedulerConfig
from otpkit.scheduler._store import Store, auto_path

log = logging.getLogger("otpkit.scheduler")

#: The holder's timers (:class:`_Timer`).
TIMER_KINDS = ("recover", "wake", "flush", "check", "sync")


@dataclass(frozen=True)
class _Timer:
    """A timer of the holder's term ``gen``: ``kind`` (one of :data:`TIMER_KINDS`) is due.
    A Python object sent to this process by itself (``actors.send_after``): no other
    node can send one."""

    kind: str
    gen: int


class SchedulerWorker(SingletonWorker):
    """A scheduler's process on one node: replica everywhere, holder where elected."""

    # ------------------------------------------------------------------ start

    def init(self, config: SchedulerConfig) -> None:
        me = actors.self()
        self.me = me
        self.node = me.node
        self.cfg = config
        self.svc = replica_name(config.name)
        self.pool_svc = pool_name(config.name)
        path: str | os.PathLike[str] | None = config.store
        if path == "auto":
            base = os.environ.get("OTPKIT_DATA_DIR", "otpkit-data")
            path = auto_path(base, config.name, self.node)  # moves a store of the old place
        store = None if path is None else Store.open(path)
        self.member = Member(
            config.name,
            self.node,
            store,
            self._gate,
            keep=config.history,
            max_age=config.history_days * 86_400,
        )
        jobs = [job.name for job in config.jobs]
        self.bus = EventBus(config.name, self.node, self._broadcast, jobs)
        self.peers = Peers()
        self.rng = random.Random()
        self.has_dist = True
        self.drops = shapes.DropLog(log)
        actors.register(self.svc)
        try:
            dist.register_service(self.svc)
            dist.monitor_nodes(True)
            self.peers.up = set(dist.nodes())
            self.peers.versions.update(dist.versions())
        except NodeError:
            self.has_dist = False
        for node in self.peers.up:
            self._hello(node)
        self._reset_holder()
        # Ready means in sync: under majority this node's readiness waits until a
        # holder wrote to this replica since it started (a returning node is synced
        # by the holder at its hello), or it is the holder itself
        self.member.start(gated=self.cfg.policy == "majority" and self.has_dist)

    def _reset_holder(self) -> None:
        """New parts for a new term (or for none), under a new generation: the timers
        of the term before are ignored."""
        previous: Writer | None = getattr(self, "writer", None)
        self.gen = getattr(self, "gen", 0) + 1
        self.members_cache: tuple[float, list[str]] = (0.0, [])
        self.writer = Writer(
            self.member,
            holder=f"{self.me!r}/{self.gen}",
            policy=self.cfg.policy,
            round_timeout=self.cfg.round_timeout,
            ask=self._ask,
            members=self._members,
            connected=lambda: self.peers.up,
            lease=lambda: self.epoch,
            fence=self.fence,
            later=self._later,
            on_superseded=self._superseded,
            compat=lambda: self.peers.any_older(self._members(), PROTOCOL_FEATURES),
            # an episode of writes that fell short goes on across terms
            short_alarm=previous.short_alarm if previous is not None else None,
        )
        self.finishes = Finishes(
            node=self.node,
            lost_after=self.cfg.lost_after,
            member=self.member,
            writer=self.writer,
            bus=self.bus,
            peers=self.peers,
            pool_svc=self.pool_svc,
            later=self._later,
        )
        self.engine = Engine(
            name=self.cfg.name,
            node=self.node,
            lead=self.cfg.lead,
            max_wait=self.cfg.max_wait,
            member=self.member,
            writer=self.writer,
            finishes=self.finishes,
            bus=self.bus,
            peers=self.peers,
            rng=self.rng,
            pool_svc=self.pool_svc,
            later=self._later,
            cancel=self._cancel,
        )
        self.api = Api(
            name=self.cfg.name,
            node=self.node,
            member=self.member,
            writer=self.writer,
            engine=self.engine,
            finishes=self.finishes,
            bus=self.bus,
            history_age=self.cfg.history_days * 86_400,
        )

    def _gate(self, problem: str | None) -> bool:
        try:
            _quorum.ready_gate(problem, timeout=1.0)
        except OtpkitError as exc:
            log.warning(
                "%s: scheduler %s: readiness not updated: %s", self.node, self.cfg.name, exc
            )
            return False
        return True

    # ------------------------------------------------------------------ singleton hooks

    def activate(self, epoch: int) -> None:
        self._reset_holder()
        self._later("recover", None)

    def deactivate(self, reason: str) -> None:
        log.info("%s: scheduler %s stops here (%s)", self.node, self.cfg.name, reason)
        self.engine.stop()
        self._reset_holder()

    def terminate(self, reason: Any) -> None:
        if self.member.store is not None:
            self.member.store.close()

    def problem(self) -> str | None:
        """This replica's store failing (the watchdog's reason when there is no holder)."""
        return self.member.problem()

    def no_holder(self, seconds: float, reason: str) -> None:
        # this node's watchdog speaks for this node: its subscribers only, no broadcast
        event = new_event("no_holder", "", node=self.node, duration=seconds, error=reason)
        self.bus.deliver(event)

    def holder_back(self, seconds: float, holder: str | None) -> None:
        event = new_event(
            "holder_back", "", node=self.node, duration=seconds, extra={"holder": holder}
        )
        self.bus.deliver(event)

    # ------------------------------------------------------------------ calls

    def handle_request(self, request: Any, from_: From) -> Any:
        try:
            msg = decode_call(request)
        except BadMessage as exc:
            return exc.answer()
        if isinstance(msg, Subscribe):
            return self._subscribe(msg)
        if isinstance(msg, ReplicaCall):
            caller = getattr(getattr(from_, "pid", None), "node", self.node)
            old = caller != self.node and self._version_of(caller) < PROTOCOL_FEATURES
            return self.member.handle(msg, old_holder=old)
        if not self.active:
            return ("retry", f"not the active scheduler on {self.node}")
        if not self.writer.recovered:
            return ("retry", f"the scheduler on {self.node} is still recovering")
        return self.api.answer(msg)

    def _version_of(self, node: str) -> int:
        """The dist protocol ``node`` speaks (asked of dist when no ``NodeUp`` told it
        yet: a call may come before its node's NodeUp reached this process)."""
        version = self.peers.versions.get(node)
        if version is None and self.has_dist:
            with contextlib.suppress(OtpkitError):
                self.peers.versions.update(dist.versions())
            version = self.peers.versions.get(node)
        return PROTOCOL_FEATURES if version is None else version

    def _subscribe(self, msg: Subscribe) -> Any:
        try:
            why = self.bus.subscribe(msg.pid, msg.on)
        except (LedgerError, ValueError, TypeError, KeyError) as exc:
            log.warning("%s: scheduler request %s refused: %s", self.node, msg.op, exc)
            return False
        if why is not None:
            return bad_answer(REPLICA_CALLS, f"'subscribe' {why}")
        return True

    # ------------------------------------------------------------------ messages

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, _Timer):
            self._on_timer(msg)
            return
        if isinstance(msg, NodeUp):
            self._hello(msg.node)
            self.peers.node_up(msg.node, msg.version)
            self.members_cache = (0.0, [])
            if self.writer.recovered:
                self.finishes.schedule_check(0.2)
            return
        if isinstance(msg, NodeDown):
            self.peers.node_down(msg.node, msg.reason, time.monotonic())
            self.members_cache = (0.0, [])
            if self.writer.recovered:
                self.finishes.schedule_check(0.0)
            return
        if isinstance(msg, Down):
            self.bus.gone(msg.pid)
            return
        try:
            info = decode_info(msg)
        except BadMessage as exc:
            self.drops.dropped(f"{self.node}: scheduler {self.cfg.name}", msg, exc.why)
            return
        if isinstance(info, Hello):
            self._on_hello(info.node)
        elif isinstance(info, EventNote):
            self.bus.deliver(info.event)
        elif self.active:
            try:
                if isinstance(info, RunDone):
                    self.finishes.done(info)
                elif isinstance(info, RunStarted):
                    self.finishes.started(info)
            except (TypeError, ValueError, KeyError, LedgerError) as exc:
                self.drops.dropped(f"{self.node}: scheduler {self.cfg.name}", msg, str(exc))

    def _on_hello(self, node: str) -> None:
        # only from a connected node: a hello that comes before its NodeUp is
        # answered by the hello this node sends at that NodeUp
        if node in self.peers.up and node not in self.peers.with_replica:
            # new to us: say hello back, once
            self.peers.with_replica.add(node)
            self._hello(node)
            if self.active and self.writer.recovered and self.cfg.policy == "majority":
                # a returning (or new) replica gets everything now: its node is
                # ready once in sync, and a StatefulSet rolls on only then
                self.writer.sync([node], timeout=1.0)

    def _hello(self, node: str) -> None:
        """Tell ``node``'s copy of this scheduler that one runs here (run targets are
        the nodes that run it)."""
        with contextlib.suppress(OtpkitError, TypeError):
            actors.send((self.svc, node), encode(Hello(self.node)))

    def _broadcast(self, event: JobEvent) -> None:
        """Send ``event`` to every other node's scheduler process (for its subscribers)."""
        wire = encode(EventNote(event))
        for node in sorted(self.peers.up):
            with contextlib.suppress(OtpkitError):
                actors.send((self.svc, node), wire)

    # ------------------------------------------------------------------ the holder's timers

    def _later(self, kind: str, delay: float | None) -> Any:
        """Have this term's timer ``kind`` come after ``delay`` seconds (None: at once);
        the timer's id, which :meth:`_cancel` takes."""
        timer = _Timer(kind, self.gen)
        if delay is None:
            actors.send(self.me, timer)
            return None
        return actors.send_after(delay, timer)

    def _cancel(self, timer: Any) -> None:
        actors.cancel_timer(timer)

    def _on_timer(self, timer: _Timer) -> None:
        if timer.gen != self.gen or not self.active:
            return
        if timer.kind == "recover":
            self._recover()
        elif timer.kind == "wake":
            self.engine.woken()
            self.engine.wake()
        elif timer.kind == "flush":
            self.finishes.flush_due()
        elif timer.kind == "check":
            self.finishes.check_due()
        elif timer.kind == "sync":
            self.writer.sync_due()

    # ------------------------------------------------------------------ holder: recovery

    def _recover(self) -> None:
        """A new holder: observe the epoch at a majority, merge their copies, apply the
        configuration's jobs, find interrupted runs, and fill the fire queue."""
        read = self.writer.read()
        if not read.ok:
            self._later("recover", read.retry)
            return
        now = wall_now()
        updates, events = self.api.declare(self.cfg.jobs, now)
        # one write to a majority in any case: it carries the boot token (@reboot)
        if not self.writer.write(updates, force=True):
            self._later("recover", 0.2)
            return
        self.writer.established()
        self.finishes.begin()
        self.engine.start(now)
        rep = self.member.rep
        log.info(
            "%s: scheduler %s active (epoch %s, %s jobs, %s open claims)",
            self.node,
            self.cfg.name,
            self.writer.epoch,
            len(rep.live_jobs()),
            sum(len(lane.open) for lane in rep.ledger.lanes.values()),
        )
        for event in events:
            self.bus.emit(event)
        if read.reboot:
            self.engine.fire_reboot(now)
        self.finishes.schedule_check(0.0)
        self.engine.wake()

    def _superseded(self) -> None:
        """The writer was refused (a newer holder): stop firing, recover again."""
        self.engine.stop()
        self._later("recover", 0.1)

    # ------------------------------------------------------------------ holder: rounds

    def _members(self) -> list[str]:
        """The members a write counts over: the quorum's (a second at most old); under
        ``availability`` the nodes in reach."""
        if self.cfg.policy != "majority":
            return sorted({self.node, *self.peers.up})
        at, cached = self.members_cache
        if cached and time.monotonic() - at < 1.0:
            return cached
        try:
            _, names = _quorum.members(timeout=1.0)
        except OtpkitError:
            names = []
        self.members_cache = (time.monotonic(), names)
        return names

    def _ask(
        self,
        nodes: list[str],
        request: ReplicaCall,
        enough: int | None,
        counts: Callable[[Any], bool],
        timeout: float,
    ) -> list[tuple[str, Mapping[str, Any]]]:
        """``(node, answer)`` of the nodes that answered with a mapping."""
        if not nodes:
            return []
        try:
            answers = actors.multi_call(
                [(self.svc, n) for n in nodes],
                encode(request),
                timeout,
                enough=enough,
                counts=counts,
            )
        except (TypeError, ValueError) as exc:  # a value that cannot travel
            log.error("%s: scheduler request not sent: %s", self.node, exc)
            return []
        got = [
            (node, value)
            for node, (kind, value) in zip(nodes, answers, strict=True)
            if kind == "ok" and isinstance(value, Mapping)
        ]
        self.peers.with_replica.update(node for node, _ in got)
        return got


__all__ = [
    "DEFAULT_NAME",
    "TIMER_KINDS",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerWorker",
]
