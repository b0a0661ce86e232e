"""The Scheduler: Quantum's scheduler as the cluster's Singleton, each tick fired once.

``Scheduler(...)`` is a child spec for the application's tree. On every node it starts
a small supervisor (``rest_for_one``) with two children:

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

The decisions are pure functions (``_plan``, ``_ledger``, ``_replica``, :func:`pick_nodes`);
this module is the shell that reads the clock, talks to other nodes and keeps state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from otpkit import actors
from otpkit import distribution as dist
from otpkit import quorum as _quorum
from otpkit.actors import Down, From, Pid, Ref, shapes
from otpkit.distribution import PEER_GONE, NodeDown, NodeUp, encode_term
from otpkit.errors import NodeError, OtpkitError
from otpkit.registry import Singleton, SingletonWorker
from otpkit.scheduler._job import InvalidJob, Job
from otpkit.scheduler._ledger import (
    MAX_STAMP,
    ClaimKey,
    Lane,
    LaneUpdate,
    Ledger,
    LedgerError,
    claim_all,
    encode_update,
    finish_all,
    lane_update,
    to_utc,
)
from otpkit.scheduler._plan import plan_misfires
from otpkit.scheduler._pool import (
    EPOCH,
    ERROR_LIMIT,
    JOB_NAME,
    NODE_NAME,
    RUN_KEY,
    WALL_TIME,
    pool_child_spec,
    pool_name,
)
from otpkit.scheduler._queue import FireQueue
from otpkit.scheduler._replica import (
    Alarm,
    JobEntry,
    Replica,
    acks_needed,
    alarm_clear,
    alarm_raise,
    apply,
    decode_entry,
    decode_key,
    decode_replica,
    decode_rows,
    encode_entry,
    encode_head,
    encode_key,
    encode_lane_rows,
    encode_replica,
    is_ack,
    is_empty,
    lane_keys_of,
    may_write,
    merge,
    observe_replica,
    read_quorum,
    shortfall,
    tally,
)
from otpkit.scheduler._store import Store, StoreError, auto_path
from otpkit.supervision import ChildSpec, Supervisor

log = logging.getLogger("otpkit.scheduler")

#: The default global name of the scheduler.
DEFAULT_NAME = "otpkit_scheduler"
POLICIES = ("availability", "majority")
#: Event kinds (see :class:`JobEvent`). ``no_holder`` and ``holder_back`` are about the
#: scheduler itself (``job`` is empty), from each node's Singleton watchdog and to that
#: node's subscribers only: no holder for ``duration`` seconds (more than two lease
#: terms, a majority connected), ``error`` saying why, once per term; then a holder is
#: back (``extra["holder"]``) after ``duration`` seconds.
EVENT_KINDS = (
    "job_added",
    "job_updated",
    "job_deleted",
    "run_started",
    "run_finished",
    "run_failed",
    "run_timed_out",
    "run_interrupted",
    "run_missed",
    "run_skipped",
    "no_holder",
    "holder_back",
)
_OUTCOME_EVENT = {
    "finished": "run_finished",
    "failed": "run_failed",
    "timed_out": "run_timed_out",
    "interrupted": "run_interrupted",
    "missed": "run_missed",
    "skipped": "run_skipped",
}
_MANUAL = "@manual"
_US = timedelta(microseconds=1)
#: seconds between two ERROR lines while this replica's store cannot be written
STORE_REPORT_EVERY = 60.0
#: seconds between two WARNING lines while the holder's writes reach no majority
SHORT_REPORT_EVERY = 10.0
#: seconds without a failure that end an episode of either (a line says it ended)
ALARM_QUIET = 5.0
#: seconds before the holder syncs again a copy whose last sync did not take
SYNC_RETRY = 2.0
#: seconds a manual run may be asked for ahead of the holder's clock (``run_job`` sends
#: its caller's now: clocks differ a little; a run far ahead would take its job's manual
#: lane until then)
RUN_AHEAD = 86_400.0

# ---------------------------------------------------------------------- protocols

#: A holder's identity in its writes (``<pid>/<generation>``), and a boot token.
_HOLDER = shapes.Str(1024, min_len=1)
_BOOT = shapes.Opt(shapes.Str(256))

#: The ops of ``("$sr", op, ...)``: the holder's rounds to the replicas (``apply`` a
#: write, ``observe`` an epoch and answer the copy, ``sync`` the whole copy) and
#: ``subscribe`` (a local pid to send job events to, or not). Checked on the request
#: without its ``"$sr"``.
REPLICA_CALLS = shapes.Protocol(
    "scheduler replica call",
    shapes.Shape("apply", (EPOCH, shapes.Seq(shapes.Seq(shapes.ANY, 3), 1 << 20), _BOOT, _HOLDER)),
    shapes.Shape("observe", (EPOCH, _HOLDER)),
    shapes.Shape("sync", (EPOCH, _HOLDER, shapes.Map(shapes.Str(64), shapes.ANY, 64), _BOOT)),
    shapes.Shape("subscribe", (Pid, bool)),
)
#: The ops of ``("$sc", op, ...)``: the runtime API (``_client``), asked of the holder.
#: Checked on the request without its ``"$sc"``.
CLIENT_CALLS = shapes.Protocol(
    "scheduler client call",
    shapes.Shape("add", (shapes.Map(shapes.Str(64), shapes.ANY, 64),)),
    shapes.Shape("delete", (JOB_NAME,)),
    shapes.Shape("delete_all"),
    shapes.Shape("activate", (JOB_NAME,)),
    shapes.Shape("deactivate", (JOB_NAME,)),
    shapes.Shape("find", (JOB_NAME,)),
    shapes.Shape("jobs"),
    shapes.Shape("run", (JOB_NAME, datetime)),
)
#: The calls a scheduler process serves besides the Singleton's (``SingletonWorker``):
#: ``("$sr", op, ...)`` (:data:`REPLICA_CALLS`) and ``("$sc", op, ...)``
#: (:data:`CLIENT_CALLS`). A request that does not fit is answered
#: ``("error", "BadRequest", why)``, the runtime API's form of an error.
CALLS = shapes.Protocol(
    "scheduler call",
    shapes.Shape("$sr", (shapes.Str(64),), more=True),
    shapes.Shape("$sc", (shapes.Str(64),), more=True),
)
#: The plain messages a scheduler process takes besides ``NodeUp``, ``NodeDown`` and
#: ``Down``: another node's scheduler saying it runs one (``$hello``), a job event
#: from the holder (``$event``), its own timers (``$sched``, with the holder's
#: generation) and the task pools' reports (``run_done``, ``run_started``).
INFOS = shapes.Protocol(
    "scheduler message",
    shapes.Shape("$hello", (NODE_NAME,)),
    shapes.Shape("$event", (shapes.Map(shapes.Str(64), shapes.ANY, 64),)),
    shapes.Shape("$sched", (shapes.Const(("recover", "wake", "flush", "check", "sync")), int)),
    shapes.Shape(
        "run_done",
        (
            NODE_NAME,
            RUN_KEY,
            shapes.Str(64),
            shapes.Opt(WALL_TIME),
            WALL_TIME,
            shapes.Opt(shapes.Str(ERROR_LIMIT)),
        ),
    ),
    shapes.Shape("run_started", (NODE_NAME, RUN_KEY, WALL_TIME)),
)
#: The fields of a job event on the wire (:meth:`JobEvent.to_wire`), each with its kind.
_EVENT_FIELDS: dict[str, shapes.Kind] = {
    "kind": shapes.Str(64),
    "job": shapes.Str(JOB_NAME.max_len),
    "tick": shapes.Opt(datetime),
    "node": shapes.Opt(shapes.Str(1024)),
    "duration": shapes.Opt(shapes.Num()),
    "error": shapes.Opt(shapes.Str(4096)),
    "at": shapes.Opt(shapes.Num()),
    "id": shapes.Str(64),
    "extra": shapes.Map(shapes.Str(64), shapes.ANY, 64),
}


def _bad(protocol: shapes.Protocol, why: str) -> tuple[str, str, str]:
    """The answer to a request that does not fit ``protocol``: the runtime API's error."""
    return ("error", "BadRequest", shapes.bad_request(protocol.owner, why)[1])


def replica_name(scheduler: str) -> str:
    """The local name and dist service of a scheduler's per-node worker."""
    return f"otpkit_sched:{scheduler}"


@dataclass(frozen=True)
class JobEvent:
    """What a subscriber gets (and what is logged): ``kind`` (one of
    :data:`EVENT_KINDS`), the ``job``, the ``tick`` (None for job changes), the ``node``
    that ran it, ``duration`` in seconds (finished runs), ``error`` text (failures),
    ``at`` (wall time of the event), ``id`` (unique: the same event reaches every
    node's subscribers) and ``extra`` (e.g. the last tick of a span of missed ones)."""

    kind: str
    job: str
    tick: datetime | None = None
    node: str | None = None
    duration: float | None = None
    error: str | None = None
    at: float = 0.0
    id: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "job": self.job,
            "tick": self.tick,
            "node": self.node,
            "duration": self.duration,
            "error": self.error,
            "at": self.at,
            "id": self.id,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_wire(cls, value: Mapping[str, Any]) -> JobEvent:
        """The event :meth:`to_wire` made (a field left out takes its default).

        Raises:
            ValueError: a field of the wrong kind (a tick not an aware datetime, ...),
                naming it.
        """
        for name, kind in _EVENT_FIELDS.items():
            why = shapes.problem(value.get(name), kind) if name in value else None
            if why is not None:
                raise ValueError(f"job event field {name!r}: {why}")
        tick = value.get("tick")
        if tick is not None and tick.utcoffset() is None:
            raise ValueError(f"job event field 'tick': {tick!r} is not an aware time")
        duration = value.get("duration")
        return cls(
            value.get("kind", ""),
            value.get("job", ""),
            tick,
            value.get("node"),
            None if duration is None else float(duration),
            value.get("error"),
            float(value.get("at") or 0.0),
            value.get("id", ""),
            dict(value.get("extra", {})),
        )


@dataclass(frozen=True)
class SchedulerConfig:
    name: str
    jobs: tuple[Job, ...]
    policy: str
    store: str | None
    lead: float = 0.05
    round_timeout: float = 2.0
    lost_after: float = 30.0
    max_wait: float = 1.0


def pick_nodes(
    strategy: str | Sequence[str], me: str, connected: Iterable[str], rng: random.Random
) -> list[str]:
    """The nodes one tick runs on: ``local`` this node, ``random`` one node of the
    cluster, ``all`` each node, a list: one of its nodes that is up (none: empty)."""
    if isinstance(strategy, str) and strategy not in ("local", "random", "all"):
        raise ValueError(f"run_strategy {strategy!r}: expected 'local', 'random', 'all' or a list")
    if strategy == "local":
        return [me]
    alive = sorted({me, *connected})
    if strategy == "random":
        return [rng.choice(alive)]
    if strategy == "all":
        return alive
    allowed = [n for n in strategy if n in alive]
    return [rng.choice(allowed)] if allowed else []


#: The lease epoch's share of a write epoch; the bits above count eras.
_ERA = 1 << 32


def write_epoch(seen: int, lease: int) -> int:
    """The epoch a new holder writes the ledger under, given the highest epoch a replica
    has ``seen`` and the holder's ``lease`` epoch: ``era * 2**32 + lease``.

    Within one run of the quorum the current lease holder has the highest lease epoch
    ever granted, so a replica that saw a lease epoch at or above this holder's saw it
    in an earlier era: the quorum's epochs started again (every node restarted without
    its quorum store - no data dir - and the ledger did not). The era then goes up by
    one, so writes stay strictly ordered across whole-cluster restarts too. With the
    quorum's promises on disk its epochs keep rising across restarts, so under
    ``majority`` the era stays. Under ``availability`` (lease epoch 0) every new holder
    starts a new era.
    """
    era, seen_lease = divmod(seen, _ERA)
    return (era + 1 if seen_lease >= lease else era) * _ERA + lease


def manual_tick(at: Any, now: datetime) -> datetime:
    """The tick of a manual run asked for at ``at`` (``run_job`` sends its caller's now),
    in UTC, given the holder's clock ``now``.

    Raises:
        ValueError: ``at`` is not an aware time, is outside the years 1-9999 in UTC, or
            is more than :data:`RUN_AHEAD` seconds after ``now``.
    """
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ValueError(f"run_job: at={at!r}, expected an aware time")
    try:
        tick = to_utc(at, "run_job: at")
    except LedgerError as exc:
        raise ValueError(str(exc)) from None
    if (tick - now).total_seconds() > RUN_AHEAD:
        raise ValueError(
            f"run_job: at={tick.isoformat()} is more than {RUN_AHEAD:g} s ahead of the "
            f"holder's clock ({now.isoformat()})"
        )
    return tick


def majority(members: Sequence[str]) -> int:
    return len(members) // 2 + 1


def Scheduler(  # noqa: N802 - reads as the class it makes a spec for
    jobs: Iterable[Job] = (),
    name: str = DEFAULT_NAME,
    policy: str = "majority",
    store: str | os.PathLike[str] | None = "auto",
    max_concurrency: int = 10,
    queue_limit: int = 10_000,
    settle_timeout: float = 5.0,
    handover_timeout: float = 5.0,
    lead: float = 0.05,
    id: Any = None,
    **options: Any,
) -> ChildSpec:
    """The child spec of a cluster scheduler (see the module).

    Args:
        jobs: configuration jobs: declared state, applied by name at each start of the
            scheduler (a runtime change to one lasts until then; the overwrite is logged).
        name: the scheduler's global name (several schedulers may run side by side).
        policy: ``"majority"`` (default: a tick runs at most once, also across
            partitions; the minority side fires nothing) or ``"availability"``.
        store: the SQLite file of this node's replica (``0600``); ``"auto"`` puts it in
            ``$OTPKIT_DATA_DIR/otpkit/`` (default ``./otpkit-data``; the directory
            ``0700``, beside the quorum's state) as ``<name>@<node>.sqlite``, and moves a
            store found where earlier versions kept it (``$OTPKIT_DATA_DIR/``) there;
            None keeps the replica in memory only (a restart of every node loses runtime
            jobs and the ledger).
        max_concurrency: this node's pool of worker processes (runs at once).
        queue_limit: runs waiting for a worker before new ones fail.
        lead: seconds before its tick a run is claimed and sent to its pool.
        options: none; the majority lease's ``term`` and ``expected_size`` are the
            node's (``Node(quorum=QuorumConfig(...))``, ``otpkit run
            --expected-size``): given here they are refused (ValueError).

    Raises:
        InvalidJob: a job is malformed (names the job and field); also two jobs of one
            name.
        ValueError: a bad option, naming it.
    """
    if not isinstance(name, str) or not name or len(name) > 32 or "/" in name:
        raise ValueError(f"Scheduler name={name!r}: expected a str of 1-32 characters, no '/'")
    if policy not in POLICIES:
        raise ValueError(f"Scheduler {name!r}: policy={policy!r}; expected one of {POLICIES}")
    if isinstance(lead, bool) or not isinstance(lead, int | float) or not 0 <= lead <= 1:
        raise ValueError(f"Scheduler {name!r}: lead={lead!r}; expected seconds in [0, 1]")
    declared: list[Job] = []
    names: set[str] = set()
    for job in jobs:
        if not isinstance(job, Job):
            raise InvalidJob(getattr(job, "name", job), "jobs", job, "a Job")
        if job.name in names:
            raise InvalidJob(job.name, "name", job.name, "a name unique among the jobs")
        try:
            encode_term(job.to_spec())
        except (TypeError, ValueError) as exc:
            raise InvalidJob(job.name, "args", job.args, f"values that can travel ({exc})") from exc
        declared.append(job)
        names.add(job.name)
    path = None if store is None else os.fspath(store)
    config = SchedulerConfig(name, tuple(declared), policy, path, float(lead))
    worker = ChildSpec("scheduler", SchedulerWorker, (config,), shutdown=handover_timeout + 5)
    singleton = Singleton(
        worker,
        name,
        policy=policy,
        settle_timeout=settle_timeout,
        handover_timeout=handover_timeout,
        id="singleton",
        **options,
    )
    pool = pool_child_spec(name, max_concurrency=max_concurrency, queue_limit=queue_limit)
    return ChildSpec(
        id if id is not None else ("scheduler", name),
        Supervisor,
        kwargs={"children": [pool, singleton], "strategy": "rest_for_one", "intensity": 3},
        type="supervisor",
    )


def _now() -> datetime:
    return datetime.now(UTC)


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
        self.store: Store | None = None
        self.rep = Replica()
        path: str | os.PathLike[str] | None = config.store
        if path == "auto":
            base = os.environ.get("OTPKIT_DATA_DIR", "otpkit-data")
            path = auto_path(base, config.name, self.node)  # moves a store of the old place
        # replica flags: who observed the current epoch (only that holder may write at
        # it), and whether this copy holds everything a holder wrote (a copy that is
        # new or was lost does not count toward a majority until a holder syncs it)
        self.observer: str | None = None
        self.synced = False
        # a store that cannot be written (disk full, read-only, damaged): its cause
        # while it lasts, logged once per episode (and every STORE_REPORT_EVERY s)
        self.store_problem: str | None = None
        self.store_alarm = Alarm()
        self.short_alarm = Alarm()  # the holder's writes that reach no majority
        if path is not None:
            self.store = Store.open(path)
            self.rep = self._load(self.store)
        self.boot: str | None = None  # in memory only: None after a whole-cluster restart
        self.subscribers: dict[Pid, Ref] = {}
        self.peers: set[str] = set()
        self.down: dict[str, tuple[str, float]] = {}
        # peers seen running this scheduler (they answered a round): the only run targets
        self.with_replica: set[str] = set()
        self.rng = random.Random()
        self.has_dist = True
        self.drops = shapes.DropLog(log)
        actors.register(self.svc)
        try:
            dist.register_service(self.svc)
            dist.monitor_nodes(True)
            self.peers = set(dist.nodes())
        except NodeError:
            self.has_dist = False
        for node in self.peers:
            self._hello(node)
        self.started = time.monotonic()
        self._reset_holder()
        # Ready means in sync: under majority this node's readiness waits until a
        # holder wrote to this replica since it started (a returning node is synced
        # by the holder at its hello), or it is the holder itself
        self.in_sync = self.cfg.policy != "majority" or not self.has_dist
        if not self.in_sync:
            self._gate(f"scheduler {self.cfg.name}: its replica is not in sync with a holder yet")

    def _gate(self, problem: str | None) -> bool:
        try:
            _quorum.ready_gate(problem, timeout=1.0)
        except OtpkitError as exc:
            log.warning(
                "%s: scheduler %s: readiness not updated: %s", self.node, self.cfg.name, exc
            )
            return False
        return True

    def _caught_up(self) -> None:
        if not self.in_sync:
            self.in_sync = True
            log.info("%s: scheduler %s: its replica is in sync", self.node, self.cfg.name)
            if not self._gate(None):
                self.in_sync = False  # the next write from a holder tries again

    def _load(self, store: Store) -> Replica:
        try:
            head = store.load_ledger()
            rep = decode_rows(head, store.lanes())
            jobs = {name: decode_entry(e, name) for name, e in store.jobs().items()}
        except (LedgerError, ValueError, TypeError, KeyError) as exc:
            raise StoreError(store.path, f"unreadable scheduler state: {exc}") from exc
        if head is not None:
            observer = head.get("observer")
            self.observer = observer if isinstance(observer, str) else None
            self.synced = head.get("synced") is True
        return Replica(rep.ledger, jobs, rep.where, rep.where_epochs)

    def _reset_holder(self) -> None:
        self.gen = getattr(self, "gen", 0) + 1
        self.recovered = False
        self.queue = FireQueue()
        self.timer: int | None = None
        self.timer_at: float | None = None
        self.job_lanes: dict[str, set[str | None]] = {}
        self.dispatched: dict[ClaimKey, float] = {}
        self.pending: dict[ClaimKey, tuple[str, str, dict[str, Any]]] = {}
        self.flushing = False
        self.checking = False
        self.last_run: dict[str, dict[str, Any]] = {}
        self.members_cache: tuple[float, list[str]] = (0.0, [])
        self.jobs_cache: dict[str, tuple[tuple[int, int], Job]] = {}
        self.activated_at = time.monotonic()
        self.wepoch: int | None = None
        self.seen_high = 0  # the highest epoch a member answered with when it refused
        self.seq = 0  # the last write stamp's sequence number: only grows
        # copies that took a write but are not synced: synced after the write, not in it
        self.sync_wanted: set[str] = set()
        self.sync_pending = False
        self.sync_next: dict[str, float] = {}

    def _we(self) -> int:
        return self.wepoch or 0

    # ------------------------------------------------------------------ singleton hooks

    def activate(self, epoch: int) -> None:
        self._reset_holder()
        actors.send(self.me, ("$sched", "recover", self.gen))

    def deactivate(self, reason: str) -> None:
        log.info("%s: scheduler %s stops here (%s)", self.node, self.cfg.name, reason)
        if self.timer is not None:
            actors.cancel_timer(self.timer)
        self._reset_holder()

    def terminate(self, reason: Any) -> None:
        if self.store is not None:
            self.store.close()

    def problem(self) -> str | None:
        """This replica's store failing (the watchdog's reason when there is no holder)."""
        if self.store_problem is None:
            return None
        path = self.store.path if self.store is not None else "-"
        return f"scheduler {self.cfg.name}'s store {path} cannot be written ({self.store_problem})"

    def no_holder(self, seconds: float, reason: str) -> None:
        # this node's watchdog speaks for this node: its subscribers only, no broadcast
        event = self._event("no_holder", "", node=self.node, duration=seconds, error=reason)
        self._deliver_event(event)

    def holder_back(self, seconds: float, holder: str | None) -> None:
        event = self._event(
            "holder_back", "", node=self.node, duration=seconds, extra={"holder": holder}
        )
        self._deliver_event(event)

    # ------------------------------------------------------------------ replica role

    def handle_request(self, request: Any, from_: From) -> Any:
        why = CALLS.problem(request)
        if why is not None:
            return _bad(CALLS, why)
        ops = REPLICA_CALLS if request[0] == "$sr" else CLIENT_CALLS
        why = ops.problem(request[1:])
        if why is not None:
            return _bad(ops, why)
        if request[0] == "$sr":
            return self._replica_request(request[1], request[2:])
        return self._client_request(request[1], request[2:], from_)

    def _replica_request(self, op: str, args: tuple[Any, ...]) -> Any:
        try:
            if op == "apply":
                epoch, updates, boot, holder = args
                if not may_write(self.rep.epoch, self.observer, int(epoch), str(holder)):
                    return {"refused": self.rep.epoch}
                rep, ok, changed = apply(self.rep, int(epoch), updates)
                if not ok:
                    return {"refused": self.rep.epoch}
                self.observer = str(holder)
                if boot:
                    self.boot = str(boot)
                saved = self._adopt(rep, changed, lane_keys_of(updates), head=True)
                if saved and self.synced:
                    self._caught_up()
                return self._answer(saved)
            if op == "observe":
                epoch, holder = args
                if not may_write(self.rep.epoch, self.observer, int(epoch), str(holder)):
                    return {"refused": self.rep.epoch}
                rep, _ = observe_replica(self.rep, int(epoch))
                self.observer = str(holder)
                if not self._adopt(rep, head=True):
                    # not a refusal (no newer holder): a copy that cannot promise on
                    # disk is no copy of the read; it is synced once its store works
                    return self._answer(False)
                if self.synced:
                    self._caught_up()
                return {
                    "replica": encode_replica(self.rep),
                    "boot": self.boot,
                    "synced": self.synced,
                }
            if op == "sync":
                epoch, holder, raw, boot = args
                if not may_write(self.rep.epoch, self.observer, int(epoch), str(holder)):
                    return {"refused": self.rep.epoch}
                full = decode_replica(raw)
                rep = merge([full, self.rep])  # the holder's copy first: it wins ties
                rep, _ = observe_replica(rep, int(epoch))
                self.observer, self.boot, self.synced = str(holder), boot or self.boot, True
                ok = self._adopt(rep, rep.jobs, rep.ledger.lanes, head=True)
                if not ok:
                    self.synced = False
                else:
                    self._caught_up()
                return self._answer(ok)
            if op == "subscribe":
                pid, on = args
                if on and not actors.runtime().is_local(pid):
                    # events travel as JobEvent objects: to this node's processes only
                    why = f"{pid!r} is not a process of node {self.node} (subscribe there)"
                    return _bad(REPLICA_CALLS, f"'subscribe' {why}")
                if on and pid not in self.subscribers:
                    self.subscribers[pid] = actors.monitor(pid)
                elif not on and pid in self.subscribers:
                    actors.demonitor(self.subscribers.pop(pid), flush=True)
                return True
        except (LedgerError, ValueError, TypeError, KeyError) as exc:
            log.warning("%s: scheduler request %s refused: %s", self.node, op, exc)
            return False
        return False

    def _adopt(
        self,
        rep: Replica,
        jobs: Iterable[str] = (),
        lanes: Iterable[tuple[str, str | None]] = (),
        head: bool = False,
    ) -> bool:
        """Take ``rep`` as this replica's state and store what changed: the ``jobs`` and
        ledger ``lanes`` named, and (``head``) the ledger's epoch and this replica's
        flags. False if the store failed (the copy then stops counting: unsynced)."""
        self.rep = rep
        return self._save(rep, jobs, lanes, head)

    def _save(
        self,
        rep: Replica,
        jobs: Iterable[str] = (),
        lanes: Iterable[tuple[str, str | None]] = (),
        head: bool = False,
        synced: bool | None = None,
    ) -> bool:
        """Store the named parts of ``rep`` (see :meth:`_adopt`; ``synced`` is the flag
        the head records, by default this replica's). False if the store failed: the
        copy is then unsynced, and the failure is logged once per episode."""
        if self.store is None:
            return True
        try:
            self.store.save_jobs({name: encode_entry(rep.jobs[name]) for name in jobs})
            rows = encode_lane_rows(rep, lanes)
            if rows or head:
                record = None
                if head:
                    flag = self.synced if synced is None else synced
                    record = {**encode_head(rep), "observer": self.observer, "synced": flag}
                self.store.save_lanes(rows, record)
        except StoreError as exc:
            # one episode per root cause (SQLite's words), whatever the write was
            self._store_failed(exc.problem, str(exc.__cause__ or exc.problem))
            return False
        except (TypeError, ValueError) as exc:
            self._store_failed(str(exc))
            return False
        self._store_worked()
        return True

    def _store_failed(self, cause: str, root: str | None = None) -> None:
        """The store could not take a write: this copy no longer holds every write
        (unsynced: it counts toward no majority until a holder synced it, which logs
        "its replica is in sync" again), its readiness gate names the store, and the
        ERROR names the file and the cause - once per episode and every
        STORE_REPORT_EVERY seconds while it lasts, not once per write."""
        self.synced = False
        self.store_problem = cause
        self.store_alarm, due = alarm_raise(
            self.store_alarm, time.monotonic(), root or cause, STORE_REPORT_EVERY
        )
        path = self.store.path if self.store is not None else "-"
        if due and self.store_alarm.count == 1:
            log.error(
                "%s: scheduler %s: its store %s cannot be written (%s): this replica counts "
                "toward no majority until the store works and a holder synced it",
                self.node,
                self.cfg.name,
                path,
                cause,
            )
        elif due:
            log.error(
                "%s: scheduler %s: its store %s still cannot be written (%s): %s failed "
                "writes in %.0f s",
                self.node,
                self.cfg.name,
                path,
                cause,
                self.store_alarm.count,
                time.monotonic() - (self.store_alarm.since or 0.0),
            )
        if self.in_sync and self.cfg.policy == "majority" and self.has_dist:
            self.in_sync = False
            self._gate(f"scheduler {self.cfg.name}: its store {path} cannot be written ({cause})")

    def _store_worked(self) -> None:
        """A write was stored: the trouble is over once no write failed for ALARM_QUIET
        seconds (then one line says so)."""
        self.store_problem = None
        if self.store_alarm.since is None:
            return
        self.store_alarm, ended = alarm_clear(self.store_alarm, time.monotonic(), ALARM_QUIET)
        if ended is not None:
            log.warning(
                "%s: scheduler %s: its store %s works again (%s writes failed in %.0f s)",
                self.node,
                self.cfg.name,
                self.store.path if self.store is not None else "-",
                ended.count,
                (ended.last or 0.0) - (ended.since or 0.0),
            )

    def _answer(self, saved: bool) -> dict[str, Any]:
        """A replica's answer to a write, an observe or a sync it could not refuse:
        whether its store took it, whether its copy is synced, and why the store failed."""
        if saved:
            return {"ok": True, "synced": self.synced}
        return {"ok": False, "synced": False, "failed": self.store_problem or "store failed"}

    # ------------------------------------------------------------------ messages

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, NodeUp):
            self._hello(msg.node)
            self.peers.add(msg.node)
            self.down.pop(msg.node, None)
            self.members_cache = (0.0, [])
            if self.recovered:
                self._schedule_check(0.2)
            return
        if isinstance(msg, NodeDown):
            self.peers.discard(msg.node)
            self.with_replica.discard(msg.node)
            self.down[msg.node] = (msg.reason, time.monotonic())
            self.members_cache = (0.0, [])
            if self.recovered:
                self._schedule_check(0.0)
            return
        if isinstance(msg, Down):
            self.subscribers.pop(msg.pid, None)
            return
        why = INFOS.problem(msg)
        if why is not None:
            self.drops.dropped(f"{self.node}: scheduler {self.cfg.name}", msg, why)
            return
        kind = msg[0]
        if kind == "$hello":
            # only from a connected node: a hello that comes before its NodeUp is
            # answered by the hello this node sends at that NodeUp
            if msg[1] in self.peers and msg[1] not in self.with_replica:
                # new to us: say hello back, once
                self.with_replica.add(msg[1])
                self._hello(msg[1])
                if self.active and self.recovered and self.cfg.policy == "majority":
                    # a returning (or new) replica gets everything now: its node is
                    # ready once in sync, and a StatefulSet rolls on only then
                    self._sync([msg[1]], timeout=1.0)
            return
        if kind == "$event":
            try:
                self._deliver_event(JobEvent.from_wire(msg[1]))
            except (TypeError, ValueError) as exc:
                self.drops.dropped(f"{self.node}: scheduler {self.cfg.name}", msg, str(exc))
            return
        if kind == "$sched":
            if msg[2] != self.gen or not self.active:
                return
            if msg[1] == "recover":
                self._recover()
            elif msg[1] == "wake":
                self.timer = None
                self.timer_at = None
                self._wake()
            elif msg[1] == "flush":
                self.flushing = False
                self._flush()
            elif msg[1] == "check":
                self.checking = False
                self._check_open()
            elif msg[1] == "sync":
                self.sync_pending = False
                self._sync_wanted()
            return
        try:
            if kind == "run_done":
                self._on_run_done(msg)
            else:
                self._on_run_started(msg)
        except (TypeError, ValueError, KeyError, LedgerError) as exc:
            self.drops.dropped(f"{self.node}: scheduler {self.cfg.name}", msg, str(exc))

    # ------------------------------------------------------------------ holder: recovery

    def _members(self) -> list[str]:
        if self.cfg.policy != "majority":
            return sorted({self.node, *self.peers})
        at, cached = self.members_cache
        if cached and time.monotonic() - at < 1.0:
            return cached
        try:
            _, names = _quorum.members(timeout=1.0)
        except OtpkitError:
            names = []
        self.members_cache = (time.monotonic(), names)
        return names

    def _hello(self, node: str) -> None:
        """Tell ``node``'s copy of this scheduler that one runs here (run targets are
        the nodes that run it)."""
        with contextlib.suppress(OtpkitError, TypeError):
            actors.send((self.svc, node), ("$hello", self.node))

    def _holder_id(self) -> str:
        return f"{self.me!r}/{self.gen}"

    def _need(self, saved_here: bool = True) -> tuple[list[str], int]:
        """The other members, and how many of their acks a majority needs: this node
        counts for itself when it is a member and (``saved_here``) its own store took
        the write (``acks_needed``). Under ``availability``: none."""
        if self.cfg.policy != "majority":
            return sorted(self.peers), 0
        members = self._members()
        others = [n for n in members if n != self.node]
        return others, acks_needed(members, self.node, saved_here)

    def _ask(
        self,
        nodes: list[str],
        request: tuple[Any, ...],
        enough: int | None,
        counts: Callable[[Any], bool],
        timeout: float,
    ) -> list[tuple[str, Any]]:
        """``(node, answer)`` of the nodes that answered with a mapping."""
        if not nodes:
            return []
        try:
            answers = actors.multi_call(
                [(self.svc, n) for n in nodes], request, timeout, enough=enough, counts=counts
            )
        except (TypeError, ValueError) as exc:  # a value that cannot travel
            log.error("%s: scheduler request not sent: %s", self.node, exc)
            return []
        got = [
            (node, value)
            for node, (kind, value) in zip(nodes, answers, strict=True)
            if kind == "ok" and isinstance(value, Mapping)
        ]
        self.with_replica.update(node for node, _ in got)
        return got

    def _recover(self) -> None:
        """A new holder: observe the epoch at a majority, merge their copies, apply the
        configuration's jobs, find interrupted runs, and fill the fire queue."""
        seen = max(self.rep.epoch, self.seen_high)
        if (self.wepoch is None or seen >= self.wepoch) and not self._raise_epoch(seen):
            actors.send_after(0.5, ("$sched", "recover", self.gen))
            return
        holder = self._holder_id()
        rep, _ = observe_replica(self.rep, self._we())
        self.observer = holder
        self._adopt(rep, head=True)
        others, need = self._need()
        answers = self._ask(
            others,
            ("$sr", "observe", self._we(), holder),
            need or None,
            lambda v: isinstance(v, Mapping) and v.get("synced") is True,
            self.cfg.round_timeout if need else 0.5,
        )
        refused = [a["refused"] for _, a in answers if isinstance(a.get("refused"), int)]
        if refused:
            # a member saw a higher epoch: go above it (see _raise_epoch), then again
            if self._raise_epoch(max(refused)):
                actors.send(self.me, ("$sched", "recover", self.gen))
            else:
                actors.send_after(0.5, ("$sched", "recover", self.gen))
            return
        copies: list[tuple[str, Replica, Any, bool]] = [
            (self.node, self.rep, self.boot, self.synced)
        ]
        for node, answer in answers:
            if "replica" not in answer:
                continue  # its store failed: no copy of this read (synced once it works)
            try:
                copies.append(
                    (
                        node,
                        decode_replica(answer["replica"]),
                        answer.get("boot"),
                        answer.get("synced") is True,
                    )
                )
            except (LedgerError, KeyError, TypeError, AttributeError) as exc:
                log.warning("%s: a malformed replica answer from %s: %s", self.node, node, exc)
        verdict = read_quorum(
            need + 1 if self.cfg.policy == "majority" else 1,
            [(c[3], is_empty(c[1])) for c in copies],
            all_answered=len(copies) == len(others) + 1,
            # only when need + 1 is the members' majority (this node one of them)
            members=len(others) + 1
            if self.cfg.policy == "majority" and self.node in self._members()
            else None,
        )
        if verdict == "wait":
            log.info(
                "%s: scheduler %s waits for a majority of its replicas (%s answered, %s synced)",
                self.node,
                self.cfg.name,
                len(copies),
                sum(1 for c in copies if c[3]),
            )
            actors.send_after(0.2, ("$sched", "recover", self.gen))
            return
        if verdict == "minority":
            log.warning(
                "%s: scheduler %s: only %s of its replicas hold a synced copy; starting from them",
                self.node,
                self.cfg.name,
                sum(1 for c in copies if c[3]),
            )
        merged = merge([c[1] for c in copies])
        boots = [c[2] for c in copies]
        self.synced = True
        self._adopt(merged, merged.jobs, merged.ledger.lanes, head=True)
        reboot = not any(boots)
        self.boot = next((b for b in boots if b), None) or uuid.uuid4().hex
        # bring every copy that is not synced up to date (it counts from then on)
        self._sync([node for node, _, _, synced in copies[1:] if not synced])
        now = _now()
        updates: list[Any] = []
        events: list[JobEvent] = []
        for job in self.cfg.jobs:
            spec = job.to_spec()
            current = self.rep.jobs.get(job.name)
            if current is not None and current.spec == spec and current.origin == "config":
                continue
            if current is not None and current.spec is not None:
                log.warning(
                    "%s: scheduler %s: configuration job %r overwrites its %s version",
                    self.node,
                    self.cfg.name,
                    job.name,
                    "runtime" if current.origin == "runtime" else "earlier",
                )
            since = current.since if current is not None and current.spec is not None else now
            updates.append(self._job_update(job.name, spec, "config", since))
            kind = "job_added" if current is None or current.spec is None else "job_updated"
            events.append(self._event(kind, job.name))
        # one write to a majority in any case: it carries the boot token (@reboot)
        if not self._write(updates, force=True):
            actors.send_after(0.2, ("$sched", "recover", self.gen))
            return
        self.recovered = True
        self._caught_up()
        self.activated_at = time.monotonic()
        for lane_job, lane_node in self.rep.ledger.lanes:
            self.job_lanes.setdefault(lane_job, set()).add(lane_node)
        self.queue = FireQueue()  # a recovery after a refused write starts afresh
        for name, entry in self.rep.live_jobs().items():
            if entry.spec is not None and entry.spec.get("state") == "active":
                self.queue.add(name, now)
        log.info(
            "%s: scheduler %s active (epoch %s, %s jobs, %s open claims)",
            self.node,
            self.cfg.name,
            self._we(),
            len(self.rep.live_jobs()),
            sum(len(lane.open) for lane in self.rep.ledger.lanes.values()),
        )
        for event in events:
            self._emit(event)
        if reboot:
            self._fire_reboot(now)
        self._schedule_check(0.0)
        self._wake()

    def _sync(self, nodes: list[str], timeout: float | None = None) -> set[str]:
        """Send this holder's whole copy to ``nodes``; the ones that took it (within
        ``timeout``; by default the round's, at least 5 s)."""
        if not nodes:
            return set()
        request = (
            "$sr",
            "sync",
            self._we(),
            self._holder_id(),
            encode_replica(self.rep),
            self.boot,
        )
        wait = max(self.cfg.round_timeout, 5.0) if timeout is None else timeout
        answers = self._ask(nodes, request, None, lambda v: False, wait)
        done = set(tally(nodes, dict(answers)).acked)
        if done:
            log.info(
                "%s: scheduler %s synced the copies of %s", self.node, self.cfg.name, sorted(done)
            )
        return done

    def _raise_epoch(self, seen: int) -> bool:
        """Set the write epoch above ``seen`` (see :func:`write_epoch`). A new era means
        the quorum's lease epochs started again - or that this holder was superseded
        while it was paused: so an era change first has the lease confirmed by a
        majority (``fence``), which a superseded holder cannot get."""
        target = write_epoch(seen, self.epoch)
        if target > MAX_STAMP:
            # only a member that took a forged epoch near 2**62 gets here: no write is
            # possible above it (this holder waits, and says why)
            log.error(
                "%s: scheduler %s: a member saw epoch %s; no write epoch is left above it",
                self.node,
                self.cfg.name,
                seen,
            )
            return False
        try:
            confirmed = seen % _ERA < self.epoch or self.fence(["era", target], timeout=2.0)
        except OtpkitError:  # the quorum actor is restarting: not confirmed
            confirmed = False
        if not confirmed:
            log.warning(
                "%s: scheduler %s: the lease of epoch %s is not confirmed; not writing",
                self.node,
                self.cfg.name,
                self.epoch,
            )
            return False
        self.wepoch = max(self._we(), target)
        return True

    def _fire_reboot(self, now: datetime) -> None:
        runs = []
        for name, entry in self.rep.live_jobs().items():
            spec = entry.spec
            if spec is None or spec.get("state") != "active":
                continue
            if str(spec.get("schedule", "")).strip().lower() == "@reboot":
                runs.append((name, now))
        if runs:
            self._claim_and_dispatch(runs, manual=False)

    # ------------------------------------------------------------------ holder: writes

    def _job_update(
        self, name: str, spec: Mapping[str, Any] | None, origin: str, since: datetime
    ) -> list[Any]:
        current = self.rep.jobs.get(name)
        stamp = (self._we(), self._next_seq(current.stamp[1] if current is not None else 0))
        entry = JobEntry(None if spec is None else dict(spec), stamp, origin, since)
        return ["job", name, encode_entry(entry)]

    def _write(self, updates: list[Any], force: bool = False) -> bool:
        """Have a majority of members take ``updates``, then take them here; True once
        they did (``availability``: the nodes in reach are asked, this one decides).

        When the write falls short, memory is unchanged (a retry computes the same
        change again, under a new stamp: ``self.seq`` only grows) but this node's store
        may keep it (the holder saves first): after a fail-over such a claim merges in
        as an open claim and is reported ``run_interrupted``, never run again."""
        if not updates and not force:
            return True
        try:
            rep, ok, changed = apply(self.rep, self._we(), updates)
        except LedgerError as exc:
            log.error("%s: scheduler write malformed: %s", self.node, exc)
            return False
        if not ok:
            self._superseded(self.rep.epoch)
            return False
        # this node's own store first: it counts toward the majority only if it took
        # the write (else one more member must: a majority of healthy stores)
        saved = self._save_own(rep, changed, lane_keys_of(updates))
        others, need = self._need(saved)
        answers = self._ask(
            others,
            ("$sr", "apply", self._we(), updates, self.boot, self._holder_id()),
            need or None,
            is_ack,
            self.cfg.round_timeout if need else 0.5,
        )
        result = tally(others, dict(answers))
        if result.refused is not None:
            self._superseded(result.refused)
            return False
        acks = set(result.acked)
        if result.behind and len(acks) < need:
            # copies that took the write but may lack earlier ones (new, or their store
            # failed or was lost): send them everything (merged with what they have),
            # then they count
            acks |= self._sync(sorted(result.behind))
        elif result.behind:
            self._sync_later(result.behind)  # the write stands without them: after it
        if len(acks) < need:
            self.short_alarm, due = alarm_raise(
                self.short_alarm, time.monotonic(), "short", SHORT_REPORT_EVERY
            )
            if due:
                alarm = self.short_alarm
                log.warning(
                    "%s: scheduler %s: a write %s%s",
                    self.node,
                    self.cfg.name,
                    shortfall(result, need),
                    f"; {alarm.count} writes fell short in "
                    f"{time.monotonic() - (alarm.since or 0.0):.0f} s"
                    if alarm.count > 1
                    else "",
                )
            return False
        self.short_alarm, ended = alarm_clear(self.short_alarm, time.monotonic(), ALARM_QUIET)
        if ended is not None:
            log.warning(
                "%s: scheduler %s: writes reach a majority again (%s fell short in %.0f s)",
                self.node,
                self.cfg.name,
                ended.count,
                (ended.last or 0.0) - (ended.since or 0.0),
            )
        self.rep = rep
        return True

    def _save_own(
        self, rep: Replica, changed: Iterable[str], lanes: Iterable[tuple[str, str | None]]
    ) -> bool:
        """Store a write in this (the holder's) store before the members are asked; True
        if it took it. A copy that missed writes (its store failed) stores all of it
        (the holder's copy is the whole state), and counts again from then on."""
        if self.synced:
            return self._save(rep, changed, lanes)
        if not self._save(rep, rep.jobs, rep.ledger.lanes, head=True, synced=True):
            return False
        self.synced = True
        self._caught_up()
        return True

    def _sync_later(self, nodes: Iterable[str]) -> None:
        """Sync ``nodes`` once the current write is done (at most every SYNC_RETRY s
        each): a copy that is behind holds no write back."""
        now = time.monotonic()
        fresh = {n for n in nodes if self.sync_next.get(n, 0.0) <= now}
        if not fresh:
            return
        self.sync_wanted |= fresh
        if not self.sync_pending:
            self.sync_pending = True
            actors.send(self.me, ("$sched", "sync", self.gen))

    def _sync_wanted(self) -> None:
        if not self.recovered:
            return
        nodes = sorted(self.sync_wanted & self.peers)
        self.sync_wanted.clear()
        done = self._sync(nodes, timeout=1.0)
        for node in nodes:
            if node not in done:
                self.sync_next[node] = time.monotonic() + SYNC_RETRY

    def _superseded(self, seen: int) -> None:
        """A member saw a higher epoch: this holder's writes are refused. Recover again
        (which raises the epoch only with the lease confirmed, see _raise_epoch)."""
        log.warning(
            "%s: scheduler %s: a member saw epoch %s above this holder's %s; recovering",
            self.node,
            self.cfg.name,
            seen,
            self._we(),
        )
        self.seen_high = max(self.seen_high, seen)  # the next recovery goes above it
        if self.recovered:
            self.recovered = False
            if self.timer is not None:
                actors.cancel_timer(self.timer)
                self.timer, self.timer_at = None, None
            actors.send_after(0.1, ("$sched", "recover", self.gen))

    # ------------------------------------------------------------------ holder: ticks

    def _arm(self) -> None:
        nxt = self.queue.next_at()
        if nxt is None:
            return
        delay = (nxt - _now()).total_seconds() - self.cfg.lead
        delay = max(0.0, min(delay, self.cfg.max_wait))
        due = time.monotonic() + delay
        if self.timer is not None and self.timer_at is not None and self.timer_at <= due:
            return
        if self.timer is not None:
            actors.cancel_timer(self.timer)
        self.timer = actors.send_after(delay, ("$sched", "wake", self.gen))
        self.timer_at = due

    def _wake(self) -> None:
        if not self.recovered:
            return
        real_now = _now()
        due = self.queue.pop_due(real_now + timedelta(seconds=self.cfg.lead))
        runs: list[tuple[str, datetime]] = []
        settle: list[tuple[ClaimKey, str, JobEvent]] = []
        held: list[tuple[str, datetime, JobEvent]] = []
        for at, name in due:
            entry = self.rep.jobs.get(name)
            if entry is None or entry.spec is None or entry.spec.get("state") != "active":
                continue
            job = self._job_of(name, entry)
            if job is None:
                continue
            now = max(real_now, at)
            last = self._last_claimed(name)
            try:
                floor = entry.since - _US
                plan = plan_misfires(
                    job.schedule,
                    floor if last is None or last < floor else last,
                    now,
                    job.misfire,
                    job.misfire_grace,
                )
            except OverflowError as exc:
                # times beyond the years 1-9999 (a misfire_grace of millennia, a since
                # of year 1): the job cannot be planned, the others still fire
                log.error(
                    "%s: scheduler %s: job %r cannot be planned (%s); it does not fire",
                    self.node,
                    self.cfg.name,
                    name,
                    exc,
                )
                continue
            if plan.missed:
                settle_key = ClaimKey(name, plan.missed.last or now, None)
                extra = {"first": plan.missed.first, "last": plan.missed.last}
                event = self._event("run_missed", name, tick=plan.missed.first, extra=extra)
                if not plan.run:
                    settle.append((settle_key, "missed", event))
                else:
                    # reported once the run after the span is claimed (a claim that no
                    # majority takes settles nothing: the span is due again)
                    held.append((name, plan.run[0], event))
            for tick in plan.run:
                runs.append((name, tick))
            if plan.next_at is not None:
                self.queue.add(name, plan.next_at)
        if settle:
            self._settle(settle)
        if runs:
            self._claim_and_dispatch(runs, manual=False)
        for name, first_run, event in held:
            last = self._last_claimed(name)
            if last is not None and last >= first_run:
                self._emit(event)
        self._arm()

    def _job_of(self, name: str, entry: JobEntry) -> Job | None:
        """The entry's job, parsed once per version of it."""
        cached = self.jobs_cache.get(name)
        if cached is not None and cached[0] == entry.stamp:
            return cached[1]
        try:
            job = Job.from_spec(entry.spec or {})
        except Exception as exc:  # its task's module runs its code on import: anything may raise
            log.error("scheduler: job %r cannot be read back (%r); it does not fire", name, exc)
            return None
        self.jobs_cache[name] = (entry.stamp, job)
        return job

    def _last_claimed(self, job: str) -> datetime | None:
        lanes = self.rep.ledger.lanes
        best = None
        for node in self.job_lanes.get(job, ()):
            if node is not None and node.startswith("@"):
                continue
            lane = lanes.get((job, node))
            if lane is not None and (best is None or lane.high > best):
                best = lane.high
        return best

    def _has_open(self, job: str) -> bool:
        lanes = self.rep.ledger.lanes
        return any(
            (lane := lanes.get((job, node))) is not None and lane.open
            for node in self.job_lanes.get(job, ())
        )

    def _settle(self, items: list[tuple[ClaimKey, str, JobEvent]]) -> None:
        """Claim and finish at once: ticks settled without a run (missed, skipped)."""
        ledger, claimed = claim_all(self.rep.ledger, [k for k, _, _ in items], self._we())
        claimed_set = set(claimed)
        ledger, _ = finish_all(
            ledger, [(k, o) for k, o, _ in items if k in claimed_set], self._we()
        )
        updates = self._lane_updates(ledger, claimed)
        if updates and self._write(updates):
            for key in claimed:
                self.job_lanes.setdefault(key.job, set()).add(key.node)
            done = set(claimed)
            for key, _, event in items:
                if key in done:
                    self._emit(event)

    def _lane_updates(self, ledger: Ledger, keys: Iterable[ClaimKey]) -> list[Any]:
        seen: set[tuple[str, str | None]] = set()
        updates: list[Any] = []
        for key in keys:
            if key.lane in seen:
                continue
            seen.add(key.lane)
            update = lane_update(ledger, key)
            # every write of this holder gets a stamp of its own (a retried write that
            # changed meanwhile must not reuse the stamp a member may already hold)
            stamp = (self._we(), self._next_seq(update.lane.stamp[1] - 1))
            lane = Lane(update.lane.high, update.lane.open, stamp)
            updates.append(["lane", encode_update(LaneUpdate(update.job, update.node, lane))])
        return updates

    def _next_seq(self, floor: int) -> int:
        self.seq = max(self.seq, floor) + 1
        return self.seq

    def _claim_and_dispatch(self, runs: list[tuple[str, datetime]], manual: bool) -> list[ClaimKey]:
        """Claim each run's key(s) in one write, then send them to their pools."""
        plans: list[tuple[ClaimKey, str, Mapping[str, Any]]] = []
        skipped: list[tuple[ClaimKey, str, JobEvent]] = []
        for name, tick in runs:
            entry = self.rep.jobs.get(name)
            job = None if entry is None or entry.spec is None else self._job_of(name, entry)
            if job is None:
                continue
            spec: Mapping[str, Any] = job.to_spec()  # the entry's spec, checked
            if not manual and not spec.get("overlap", True) and self._has_open(name):
                key = ClaimKey(name, tick, None)
                event = self._event(
                    "run_skipped", name, tick=tick, error="the previous run is still running"
                )
                skipped.append((key, "skipped", event))
                continue
            targets = pick_nodes(
                spec.get("run_strategy", "local"),
                self.node,
                self.peers & self.with_replica,
                self.rng,
            )
            if not targets:
                key = ClaimKey(name, tick, _MANUAL if manual else None)
                event = self._event("run_missed", name, tick=tick, error="no node of its strategy")
                skipped.append((key, "missed", event))
                continue
            every = spec.get("run_strategy") == "all"
            for target in targets:
                lane_node = target if every else None
                if manual:
                    lane_node = f"{_MANUAL}:{target}" if every else _MANUAL
                plans.append((ClaimKey(name, tick, lane_node), target, spec))
        if skipped:
            self._settle(skipped)
        if not plans:
            return []
        ledger, claimed = claim_all(self.rep.ledger, [k for k, _, _ in plans], self._we())
        if not claimed:
            return []
        done = set(claimed)
        chosen = [(k, t, s) for k, t, s in plans if k in done]
        updates = self._lane_updates(ledger, claimed)
        updates += [["where", encode_key(k), t] for k, t, _ in chosen]
        if not self._write(updates):
            # not accepted by a majority: never started; a later check reports the claim
            self._schedule_check(1.0)
            return []
        now = time.monotonic()
        for key, target, spec in chosen:
            self.job_lanes.setdefault(key.job, set()).add(key.node)
            self.dispatched[key] = now
            run = {
                "key": [key.job, key.at, key.node],
                "task": spec["task"],
                "args": list(spec.get("args", ())),
                "kwargs": dict(spec.get("kwargs", {})),
                "timeout": spec.get("timeout"),
                "epoch": self._we(),
            }
            try:
                actors.send((self.pool_svc, target), ("run", run))
            except OtpkitError as exc:
                log.warning("%s: run %s could not be sent to %s: %s", self.node, key, target, exc)
        self._schedule_check(3.0)
        return claimed

    # ------------------------------------------------------------------ holder: finishes

    def _on_run_started(self, msg: tuple[Any, ...]) -> None:
        if not (self.active and self.recovered):
            return
        _, node, raw_key, start = msg
        try:
            key = decode_key(raw_key)
        except LedgerError:
            return
        self._emit(self._event("run_started", key.job, tick=key.at, node=node, started=start))

    def _on_run_done(self, msg: tuple[Any, ...]) -> None:
        if not (self.active and self.recovered):
            return  # the pool sends it again until a holder acknowledges it
        _, node, raw_key, outcome, start, end, error = msg
        try:
            key = decode_key(raw_key)
        except LedgerError as exc:
            log.warning("%s: malformed run report from %s: %s", self.node, node, exc)
            return
        if not isinstance(outcome, str) or outcome not in _OUTCOME_EVENT:
            outcome = "failed"
        if not isinstance(node, str):
            return
        self.pending[key] = (
            str(node),
            outcome,
            {"start": start, "end": end, "error": error},
        )
        if not self.flushing:
            self.flushing = True
            actors.send_after(0.005, ("$sched", "flush", self.gen))

    def _flush(self) -> None:
        """Record the reported finishes in one write, then acknowledge them."""
        if not self.pending:
            return
        batch = dict(self.pending)
        ledger, closed = finish_all(
            self.rep.ledger, [(k, o) for k, (_, o, _) in batch.items()], self._we()
        )
        updates = self._lane_updates(ledger, closed)
        updates += [["where", encode_key(k), None] for k in closed]
        if closed and not self._write(updates):
            self.flushing = True
            actors.send_after(0.5, ("$sched", "flush", self.gen))
            return
        closed_set = set(closed)
        acks: dict[str, list[Any]] = {}
        for key, (node, outcome, info) in batch.items():
            self.pending.pop(key, None)
            self.dispatched.pop(key, None)
            acks.setdefault(node, []).append([key.job, key.at, key.node])
            if key not in closed_set:
                if outcome != "interrupted":
                    log.debug("%s: run %s reported again or late (%s)", self.node, key, outcome)
                continue
            start, end = info.get("start"), info.get("end")
            duration = end - start if isinstance(start, float) and isinstance(end, float) else None
            self.last_run[key.job] = {
                "tick": key.at,
                "node": node,
                "outcome": outcome,
                "duration": duration,
            }
            self._emit(
                self._event(
                    _OUTCOME_EVENT[outcome],
                    key.job,
                    tick=key.at,
                    node=node if outcome != "interrupted" else info.get("where"),
                    duration=duration,
                    error=info.get("error"),
                )
            )
        for node, keys in acks.items():
            if node == "$holder" or (node != self.node and node not in self.peers):
                continue  # a pool out of reach sends its report again once connected
            with contextlib.suppress(OtpkitError):
                actors.send((self.pool_svc, node), ("ack", keys))

    def _schedule_check(self, delay: float) -> None:
        if self.checking:
            return
        self.checking = True
        actors.send_after(delay, ("$sched", "check", self.gen))

    def _check_open(self) -> None:
        """Report the open claims whose run is gone as ``interrupted``."""
        if not self.recovered:
            return
        now = time.monotonic()
        candidates = [
            ClaimKey(job, tick, node)
            for (job, node), lane in self.rep.ledger.lanes.items()
            for tick, _ in lane.open
            if ClaimKey(job, tick, node) not in self.pending
        ]
        young = [k for k in candidates if now - self.dispatched.get(k, -1e9) < 3.0]
        young_set = set(young)
        candidates = [k for k in candidates if k not in young_set]
        if not candidates:
            if young:
                self._schedule_check(1.0)
            return
        where = self.rep.where
        ask = sorted({self.node, *(self.peers & self.with_replica)})
        # the epoch tells each pool to refuse runs a superseded holder may still send
        answers = actors.multi_call(
            [(self.pool_svc, n) for n in ask], ("state", self._we()), timeout=1.0
        )
        answered: set[str] = set()
        alive: set[ClaimKey] = set()
        for node, (kind, value) in zip(ask, answers, strict=True):
            if kind != "ok" or not isinstance(value, Mapping):
                continue
            answered.add(node)
            for part in ("running", "queued"):
                for raw in value.get(part, ()):
                    alive.add(_maybe_key(raw))
            for item in value.get("outbox", ()):
                if isinstance(item, list | tuple) and item:
                    alive.add(_maybe_key(item[0]))
        waiting = bool(young)
        for key in candidates:
            if key in alive:
                waiting = True
                continue
            ran_on = where.get(key)
            gone = False
            if ran_on is None:
                gone = set(ask) <= answered
            elif ran_on in answered:
                gone = True
            elif ran_on not in self.peers:
                seen = self.down.get(ran_on)
                if seen is not None:
                    gone = seen[0] == PEER_GONE or now - seen[1] > self.cfg.lost_after
                else:
                    gone = now - self.activated_at > self.cfg.lost_after
            if gone:
                self.pending[key] = ("$holder", "interrupted", {"where": ran_on})
            else:
                waiting = True
        if any(o == "interrupted" for _, o, _ in self.pending.values()) and not self.flushing:
            self.flushing = True
            actors.send_after(0.0, ("$sched", "flush", self.gen))
        if waiting:
            self._schedule_check(1.0)

    # ------------------------------------------------------------------ events

    def _event(
        self,
        kind: str,
        job: str,
        tick: datetime | None = None,
        node: str | None = None,
        duration: float | None = None,
        error: str | None = None,
        extra: Mapping[str, Any] | None = None,
        started: float | None = None,
    ) -> JobEvent:
        more = dict(extra or {})
        if started is not None:
            more["start"] = started
        return JobEvent(kind, job, tick, node, duration, error, time.time(), uuid.uuid4().hex, more)

    def _emit(self, event: JobEvent) -> None:
        """Log ``event`` and send it to every node's subscribers (this one's included)."""
        log.info(
            "scheduler %s: %s job=%s tick=%s node=%s%s%s",
            self.cfg.name,
            event.kind,
            event.job,
            event.tick.isoformat() if event.tick else "-",
            event.node or "-",
            f" duration={event.duration:.3f}s" if event.duration is not None else "",
            f" error={event.error}" if event.error else "",
        )
        wire = event.to_wire()
        self._deliver_event(event)
        for node in sorted(self.peers):
            with contextlib.suppress(OtpkitError):
                actors.send((self.svc, node), ("$event", wire))

    def _deliver_event(self, event: JobEvent) -> None:
        for pid in list(self.subscribers):
            try:
                actors.send(pid, event)
            except (OtpkitError, TypeError, ValueError):
                self.subscribers.pop(pid, None)

    # ------------------------------------------------------------------ runtime API

    def _client_request(self, op: str, args: tuple[Any, ...], from_: From) -> Any:
        if not self.active:
            return ("retry", f"not the active scheduler on {self.node}")
        if not self.recovered:
            return ("retry", f"the scheduler on {self.node} is still recovering")
        try:
            return self._client_op(op, args)
        except (ValueError, TypeError, KeyError, LedgerError) as exc:
            return ("error", type(exc).__name__, str(exc))

    def _client_op(self, op: str, args: tuple[Any, ...]) -> Any:
        now = _now()
        if op == "add":
            (spec,) = args
            try:
                job = Job.from_spec(spec)
            except (ValueError, TypeError):
                raise
            except Exception as exc:  # its task's module ran its code on import
                name = spec.get("name")
                raise ValueError(f"job {name!r}: importing its task raised {exc!r}") from exc
            current = self.rep.jobs.get(job.name)
            clean = job.to_spec()
            if current is not None and current.spec == clean:
                return ("ok", False)
            since = now if current is None or current.spec is None else current.since
            if not self._write([self._job_update(job.name, clean, "runtime", since)]):
                return ("retry", "the change did not reach a majority")
            kind = "job_added" if current is None or current.spec is None else "job_updated"
            self._requeue(job.name, now)
            self._emit(self._event(kind, job.name))
            return ("ok", True)
        if op == "delete":
            (name,) = args
            current = self.rep.jobs.get(name)
            if current is None or current.spec is None:
                return ("ok", False)
            if not self._write([self._job_update(name, None, current.origin, now)]):
                return ("retry", "the change did not reach a majority")
            if name in self.queue:
                self.queue.remove(name)
            self._emit(self._event("job_deleted", name))
            return ("ok", True)
        if op == "delete_all":
            names = sorted(self.rep.live_jobs())
            updates = [self._job_update(n, None, self.rep.jobs[n].origin, now) for n in names]
            if not self._write(updates):
                return ("retry", "the change did not reach a majority")
            for name in names:
                if name in self.queue:
                    self.queue.remove(name)
                self._emit(self._event("job_deleted", name))
            return ("ok", len(names))
        if op in ("activate", "deactivate"):
            (name,) = args
            current = self.rep.jobs.get(name)
            if current is None or current.spec is None:
                return ("error", "UnknownJob", f"no job {name!r}")
            state = "active" if op == "activate" else "inactive"
            if current.spec.get("state") == state:
                return ("ok", False)
            spec = {**current.spec, "state": state}
            since = now if state == "active" else current.since
            if not self._write([self._job_update(name, spec, current.origin, since)]):
                return ("retry", "the change did not reach a majority")
            self._requeue(name, now)
            self._emit(self._event("job_updated", name, extra={"state": state}))
            return ("ok", True)
        if op == "find":
            (name,) = args
            current = self.rep.jobs.get(name)
            return ("ok", None if current is None or current.spec is None else dict(current.spec))
        if op == "jobs":
            return ("ok", [self._info(n, e) for n, e in sorted(self.rep.live_jobs().items())])
        if op == "run":
            name, at = args
            current = self.rep.jobs.get(name)
            if current is None or current.spec is None:
                return ("error", "UnknownJob", f"no job {name!r}")
            tick = manual_tick(at, now)
            lanes = self.rep.ledger.lanes
            manual = [
                lane.high
                for node in self.job_lanes.get(name, ())
                if node is not None
                and node.startswith(_MANUAL)
                and (lane := lanes.get((name, node))) is not None
            ]
            if manual and max(manual) >= tick:
                return ("ok", "already")  # a retry of a run this scheduler took
            claimed = self._claim_and_dispatch([(name, tick)], manual=True)
            if not claimed:
                return ("retry", "the run's claim did not reach a majority")
            return ("ok", [[k.job, k.at, k.node] for k in claimed])
        return ("error", "ValueError", f"unknown scheduler operation {op!r}")

    def _requeue(self, name: str, now: datetime) -> None:
        if name in self.queue:
            self.queue.remove(name)
        entry = self.rep.jobs.get(name)
        if entry is not None and entry.spec is not None and entry.spec.get("state") == "active":
            self.queue.add(name, now)
            self._arm()

    def _info(self, name: str, entry: JobEntry) -> dict[str, Any]:
        spec = dict(entry.spec or {})
        return {
            **spec,
            "origin": entry.origin,
            "next_at": self.queue.when(name) if name in self.queue else None,
            "last_run": self.last_run.get(name),
            "running": self._has_open(name),
            "holder": self.node,
        }


def _maybe_key(raw: Any) -> ClaimKey:
    try:
        return decode_key(raw)
    except LedgerError:
        return ClaimKey("?", datetime.min.replace(tzinfo=UTC), None)


__all__ = [
    "DEFAULT_NAME",
    "EVENT_KINDS",
    "JobEvent",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerWorker",
    "majority",
    "pick_nodes",
    "replica_name",
]
