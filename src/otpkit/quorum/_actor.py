"""The ``Quorum`` system actor (one per node) and its client API.

The actor is a thin shell around :class:`~otpkit.quorum._core.QuorumCore` (see
that module for the protocol and its safety argument): it turns ``NodeUp``/``NodeDown``,
messages from other nodes' quorum actors, client calls and a clock tick into core
events, and performs the core's effects. It never waits on another node: peers talk by
fire-and-forget named sends ``(QUORUM_NAME, node)``; timeouts come from the tick. Client
calls block only the caller; the actor answers them later with :func:`otpkit.reply`.

Client API (from any local process, each blocking the caller at most ``timeout``):

* ``acquire(key, timeout) -> Lease | None``: hold ``key``'s lease for this node, the
  caller being the holder. The holder gets ``LeaseLost(key, epoch)`` when the lease is
  gone, and must consider itself expired at ``Lease.expires_monotonic`` at the latest
  (extended by renewals it is not told about: ask again with ``acquire``, which returns
  the current ``Lease`` to its holder). If the holder ends, its lease is released. One
  local candidate per key: another process's ``acquire`` of a key held or wanted here
  returns None.
* ``release(key, epoch)``: give the lease up at once (hand-over).
* ``fence(key, epoch, effect, timeout) -> bool``: True iff a majority of members
  accepted ``effect`` under ``epoch`` (the current one); False if refused or timed out.
* ``status()``: the operator's view (configuration, store, why nothing can be
  granted); ``set_expected_size(n)`` and ``recover()``: the operator's commands (also in
  ``otpkit shell``: ``quorum``, ``quorum_expected N``, ``quorum_recover``).
* ``key_status(key)``: what this node knows of a key's lease (grant record, rounds,
  reachable members), for the Singleton's watchdog; ``outside()``: for how long this
  node has reached no majority (the readiness probe); ``post_notice(topic, notice)``
  and ``notices()``: a local process's lines for the shell's ``nodes``.
* ``members() -> (version, sorted names)``; ``leave(timeout) -> bool``;
  ``subscribe(key, on=True)``: the caller gets ``LeaseGranted`` / ``LeaseLost`` for
  leases of ``key`` held by this node; ``effects(key)``: the fenced effects this member
  accepted, oldest first, as ``[(epoch, effect), ...]``.

If the quorum actor itself ends, every lease of the node is lost with it: a holder that
must not outlive that should monitor ``whereis(QUORUM_NAME)``.

After each event the actor sets, in the node's metrics, what changed of
``otpkit_quorum_members``, ``_membership_version``, ``_has_majority`` and, per lease
key, ``_lease_epoch`` and ``_lease_held`` (:func:`metric_values`).

Every call and every member's message is checked whole before it acts (:data:`CALLS`,
:data:`INFOS`): one that does not fit is answered as a refusal (``acquire``: None;
``fence``, ``leave``, ``set_expected``: False; others ``("error", "bad quorum call:
...")``) or dropped, with one WARNING a minute. ``acquire`` and ``subscribe`` are taken
from a process of this node for a process of this node only.

**The store.** With a data dir (``Node(data_dir=...)``, ``$OTPKIT_DATA_DIR``, ``otpkit
run --data-dir``) the actor keeps the core's promises in ``<data-dir>/otpkit/``
(directory 0700, as is the data dir if the actor makes it) as ``quorum@<node>.json``
(0600 whatever the umask; a file or directory found open to others is narrowed, with
one WARNING), written to a temporary file, fsynced
and renamed before any message that depends on it leaves; a failed write sends nothing
of that batch and logs ERROR, and the actor answers no lease or vote until a write
succeeds again (it retries every tick; a local caller still hears a refusal or a
timeout). A nearly full disk that takes part of a write never leaves a truncated file.
A start reloads the file: the node is the same member. A file of an older format is
migrated and written back at once; a file it cannot read (corrupt, or of a newer format:
written by a newer otpkit) stops the node's start with one line naming the file and
both formats. Without a data dir each start is a new member (logged at start).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import secrets
import time
from typing import Any

from otpkit import actors, metrics
from otpkit import distribution as dist
from otpkit.actors import NOREPLY, Actor, Down, From, Pid, shapes
from otpkit.distribution import NodeDown, NodeUp, WitnessDown
from otpkit.errors import CallTimeout, Exit
from otpkit.quorum._core import (
    MESSAGES,
    STATE_FORMAT,
    Changed,
    Lease,
    LeaseGranted,
    LeaseLost,
    Notify,
    Out,
    Persist,
    QuorumConfig,
    QuorumCore,
    Reply,
    Send,
    StateError,
    decode_state,
    quorum_size,
    state_format,
)

log = logging.getLogger("otpkit.quorum")

#: The local name and dist service of every node's quorum actor.
QUORUM_NAME = "otpkit_quorum"
#: Seconds between clock ticks: the resolution of every timeout of the protocol.
TICK = 0.05
#: Seconds between two ERROR lines while the quorum stays unable to grant.
REPORT_EVERY = 60.0

_KEY = shapes.Str(4096)
_COUNT = shapes.Int(0, 1 << 62)
_SECONDS = shapes.Num(0, 1e9)

#: The calls the quorum actor answers (its client API's requests). ``acquire`` and
#: ``subscribe`` name a local process (it is told of its leases with Python objects)
#: and take a local caller; the others are answered to any caller.
CALLS = shapes.Protocol(
    "quorum call",
    shapes.Shape("acquire", (_KEY, _SECONDS, Pid)),
    shapes.Shape("fence", (_KEY, _COUNT, shapes.ANY, _SECONDS)),
    shapes.Shape("leave", (_SECONDS,)),
    shapes.Shape("release", (_KEY, _COUNT)),
    shapes.Shape("members"),
    shapes.Shape("rejoin_problem"),
    shapes.Shape("ready_problem"),
    shapes.Shape("ready_gate", (shapes.Opt(str),), optional=1),
    shapes.Shape("status"),
    shapes.Shape("key_status", (_KEY,)),
    shapes.Shape("outside"),
    shapes.Shape("notice", (_KEY, shapes.Opt(shapes.Map(str, shapes.ANY, 64)))),
    shapes.Shape("notices"),
    shapes.Shape("set_expected", (shapes.Int(0, 1 << 31), _SECONDS)),
    shapes.Shape("recover"),
    shapes.Shape("subscribe", (_KEY, Pid, bool)),
    shapes.Shape("effects", (_KEY,)),
)

#: The messages the quorum actor takes from the members' quorum actors (plain tuples;
#: its own events are Python objects). The core's :data:`~otpkit.quorum._core.MESSAGES`.
INFOS = MESSAGES

# a refused call is answered as its client reads a refusal; the others get bad_request
_REFUSAL: dict[str, Any] = {"acquire": None, "fence": False, "leave": False, "set_expected": False}
# calls that name a local process: where
_LOCAL = {"acquire": 3, "subscribe": 2}


class _Tick:
    """The actor's clock (a timer of its own: no other process can send one)."""


_TICK = _Tick()


class StoreError(Exception):
    """The quorum's store cannot be read or written; the message names the file."""


class QuorumStore:
    """One node's quorum state on disk: ``<data_dir>/otpkit/quorum@<node>.json``."""

    def __init__(self, data_dir: str, node: str) -> None:
        self.dir = os.path.join(data_dir, "otpkit")
        self.path = os.path.join(self.dir, f"quorum@{node}.json")
        self._ready = False  # the directory made and private (0700)
        self.loaded_format: int | None = None  # the format of the file load() read

    def load(self) -> dict[str, Any] | None:
        """The stored state (checked, migrated to the current format), None if there is
        none; ``loaded_format`` is then the format the file had."""
        actors.narrow(self.path, 0o600, "quorum store")
        try:
            with open(self.path, encoding="utf-8") as f:
                raw = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StoreError(f"quorum store {self.path}: cannot read it: {exc}") from None
        try:
            state = decode_state(raw)
            self.loaded_format = state_format(raw)
            return state
        except StateError as exc:
            raise StoreError(f"quorum store {self.path}: {exc}") from None

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` durably (temporary file, fsync, rename, fsync of the dir)."""
        if not self._ready:  # the first write, and the one after a failed write
            actors.make_private_dir(self.dir)  # the data dir too, if missing: 0700
            actors.narrow(self.dir, 0o700, "otpkit state directory")
        self._ready = False  # until this write is done
        tmp = self.path + ".tmp"
        data = memoryview(json.dumps(state, separators=(",", ":")).encode())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a temporary file left by a crash keeps its old mode
            # a nearly full disk takes part of a write (a short count, no error): the
            # rest is written until all is, or the error (ENOSPC) comes - never rename a
            # truncated file over the good one
            while data:
                wrote = os.write(fd, data)
                if wrote <= 0:
                    raise OSError(errno.ENOSPC, "no byte written")
                data = data[wrote:]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # give the space back; the stored state is unchanged
            raise
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._ready = True


def metric_values(core: QuorumCore) -> dict[tuple[str, str | None], float]:
    """This node's quorum as the node's metrics show it: ``(metric, key) -> value``, with
    ``key`` the lease key of ``otpkit_quorum_lease_epoch`` and ``_held`` (cut at 200
    characters) and None for the others.

    ``otpkit_quorum_has_majority`` is 1 while the members this node reaches (itself
    included) make a majority (as ``QuorumCore.key_status`` counts them). The lease keys
    are those this node holds, or granted as a member; a key's epoch is the newest this
    node granted, holds or has a grant record of."""
    connected = core._connected_incs()
    live = sum(1 for m in core.members if m == core.me or connected.get(m[0]) == m)
    out: dict[tuple[str, str | None], float] = {
        ("otpkit_quorum_members", None): float(len(core.members)),
        ("otpkit_quorum_membership_version", None): float(core.version),
        ("otpkit_quorum_has_majority", None): float(
            live >= quorum_size(core.members, core.expected)
        ),
    }
    for key in sorted({*core.tops, *core.grants, *core.held}):
        epochs = [core.tops.get(key, 0)]
        rec, held = core.grants.get(key), core.held.get(key)
        if rec is not None:
            epochs.append(rec.epoch)
        if held is not None:
            epochs.append(held.epoch)
        out[("otpkit_quorum_lease_epoch", key[:200])] = float(max(epochs))
        out[("otpkit_quorum_lease_held", key[:200])] = float(held is not None)
    return out


def data_dir_of(data_dir: str | None) -> str | None:
    """The data dir the quorum keeps its store in: the node's, else
    ``$OTPKIT_DATA_DIR``, else none (no store)."""
    return data_dir or os.environ.get("OTPKIT_DATA_DIR") or None


class Quorum(Actor):
    """One node's member of the majority policy: ``ChildSpec("quorum", Quorum,
    (QuorumConfig(...), data_dir))`` in the node's kernel, after dist."""

    def init(self, config: QuorumConfig | None = None, data_dir: str | None = None) -> None:
        me = actors.self()
        self.node = me.node
        where = data_dir_of(data_dir)
        self.store = None if where is None else QuorumStore(where, me.node)
        state = None
        if self.store is not None:
            state = self.store.load()  # a StoreError stops the start, naming the file
        sid = int(state["sid"]) if state is not None else secrets.randbits(62) | 1
        self.core = QuorumCore(
            (me.node, sid), config or QuorumConfig(), time.monotonic(), random.Random(), state
        )
        self.store_failed = False
        if self.store is None:
            log.info("%s: quorum keeps no store (no data dir): a restart is a new member", me.node)
        elif state is None:
            log.info("%s: quorum store %s is new: a new member", me.node, self.store.path)
            self._persist(self.core.persist_now())
        else:
            log.info(
                "%s: quorum store %s: member v%d: %s",
                me.node,
                self.store.path,
                self.core.version,
                ", ".join(self.core.member_names()),
            )
            old = self.store.loaded_format
            if old is not None and old < STATE_FORMAT:  # migrated forward: written so now
                log.info(
                    "%s: quorum store %s: format %d migrated to %d",
                    me.node,
                    self.store.path,
                    old,
                    STATE_FORMAT,
                )
                self._persist(self.core.persist_now())
        self.subscribers: dict[str, set[Pid]] = {}
        self.monitored: dict[Pid, Any] = {}
        # why a local process keeps the node unready (a scheduler replica not yet in
        # sync with its holder): part of the readiness probe's answer, not of elections
        self.gates: dict[Pid, str] = {}
        # a state that stops work is an ERROR once it outlasts an election's bound
        cfg = self.core.config
        self.report_after = 2 * (cfg.term + cfg.margin) + cfg.settle
        self.problem_since: float | None = None
        self.reported_at: float | None = None
        # since when this node reaches no majority of its configuration (the readiness
        # probe's question: ``outside``), and what local processes post for the
        # operator (a Singleton's holder or why it has none: the shell's ``nodes``)
        self.outside_since: float | None = None
        self.notices: dict[str, tuple[Pid, dict[str, Any]]] = {}
        self.drops = shapes.DropLog(log)  # malformed messages and refused calls
        # the metric values last sent (see _send_metrics); a restarted quorum first drops
        # the lease series its previous incarnation set
        self.sent: dict[tuple[str, str | None], float] = {}
        metrics.forget_all("otpkit_quorum_lease_epoch")
        metrics.forget_all("otpkit_quorum_lease_held")
        actors.register(QUORUM_NAME)
        dist.register_service(QUORUM_NAME)
        dist.monitor_nodes(True)
        dist.monitor_witnesses(True)
        for name in dist.nodes():
            self._perform(self.core.node_up(name, time.monotonic()))
        self._send_metrics()
        actors.send_after(TICK, _TICK)

    # ------------------------------------------------------------------ effects

    def _persist(self, state: dict[str, Any]) -> bool:
        if self.store is None:
            return True
        try:
            self.store.save(state)
        except OSError as exc:
            if not self.store_failed:
                log.error(
                    "%s: quorum store %s cannot be written (%s): this node answers no "
                    "vote and no lease until it can",
                    self.node,
                    self.store.path,
                    exc.strerror or exc,
                )
            self.store_failed = True
            return False
        if self.store_failed:
            log.warning("%s: quorum store %s is written again", self.node, self.store.path)
            self.store_failed = False
        return True

    def _perform(self, outs: list[Out]) -> None:
        """Carry out the core's effects; messages to this node go straight back in. A
        batch whose state could not be stored sends and answers nothing."""
        queue = list(outs)
        mute = self.store_failed
        while queue:
            out = queue.pop(0)
            if isinstance(out, Persist):
                mute = not self._persist(out.state)
            elif isinstance(out, Send):
                if mute:
                    continue
                if out.node == self.node:
                    queue.extend(self._receive(out.msg))
                else:
                    self._deliver(out)
            elif isinstance(out, Reply):
                # a refusal (None, False: a timeout, no lease) promises nothing: a local
                # caller hears it even while the store fails, not after its call's margin
                if not mute or out.value is None or out.value is False:
                    self._deliver(out)
            elif isinstance(out, Notify):
                self._notify(out.holder, out.event)
            elif isinstance(out, Changed):
                log.info(
                    "%s: quorum members v%d: %s", self.node, out.version, ", ".join(out.members)
                )
        self._send_metrics()

    def _send_metrics(self) -> None:
        """Send the values of :func:`metric_values` that changed since they were last
        sent, and forget the series of a lease key no longer listed."""
        if not metrics.enabled():
            return
        values = metric_values(self.core)
        sent = dict(values)
        for (name, key), value in values.items():
            if self.sent.get((name, key)) != value and not metrics.gauge(
                name, None if key is None else {"key": key}, value
            ):
                sent.pop((name, key))  # dropped: sent again after the next message
        for name, key in self.sent.keys() - values.keys():
            if not metrics.forget(name, {"key": key}):
                sent[(name, key)] = self.sent[(name, key)]
        self.sent = sent

    def _deliver(self, out: Send | Reply) -> None:
        """Send ``out``; one that cannot cross nodes (a value msgpack cannot carry) is
        dropped with a line: it never ends the actor."""
        try:
            if isinstance(out, Send):
                actors.send((QUORUM_NAME, out.node), out.msg)
            else:
                actors.reply(out.token, out.value)
        except (TypeError, ValueError, OverflowError) as exc:
            self.drops.dropped(f"{self.node}: quorum", out, f"it cannot be sent: {exc}")

    def problem(self, now: float) -> str | None:
        """Why this node's quorum grants nothing now, or None."""
        if self.store_failed and self.store is not None:
            return f"its store {self.store.path} cannot be written"
        return self.core.quorum_problem(now)

    def _report(self, now: float) -> None:
        """ERROR when the quorum has been unable to grant for ``report_after`` seconds
        (and every ``REPORT_EVERY`` while it lasts); a line when it is over."""
        problem = self.problem(now)
        if problem is None:
            if self.reported_at is not None:
                log.warning("%s: quorum: can grant leases again", self.node)
            self.problem_since = self.reported_at = None
            return
        if self.problem_since is None:
            self.problem_since = now
        due = now - self.problem_since >= self.report_after and (
            self.reported_at is None or now - self.reported_at >= REPORT_EVERY
        )
        if due:
            self.reported_at = now
            log.error(
                "%s: quorum: no lease can be granted for %.0f s: %s",
                self.node,
                now - self.problem_since,
                problem,
            )

    def _receive(self, msg: Any) -> list[Out]:
        try:
            return self.core.receive(msg, time.monotonic())
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            # the core checks a message whole before it changes anything
            self.drops.dropped(f"{self.node}: quorum", msg, str(exc))
            return []

    def _notify(self, holder: Any, event: LeaseGranted | LeaseLost) -> None:
        targets = set(self.subscribers.get(event.key, ()))
        if isinstance(holder, Pid):
            if isinstance(event, LeaseGranted):
                # the holder has its Lease from acquire; watch it, to release on its end
                if holder not in self.monitored:
                    self.monitored[holder] = actors.monitor(holder)
            else:
                targets.add(holder)
        log.info("%s: %s -> %s", self.node, event, sorted(map(repr, targets)))
        for pid in targets:
            actors.send(pid, event)

    # ------------------------------------------------------------------ callbacks

    def handle_info(self, msg: Any) -> None:
        now = time.monotonic()
        if isinstance(msg, _Tick):
            actors.send_after(TICK, _TICK)
            if self.store_failed:
                self._persist(self.core.persist_now())
            self._perform(self.core.tick(now))
            self._report(now)
            if self.core.quorum_problem(now) is None:
                self.outside_since = None
            elif self.outside_since is None:
                self.outside_since = now
        elif isinstance(msg, NodeUp):
            self._perform(self.core.node_up(msg.node, now))
        elif isinstance(msg, NodeDown):
            self._perform(self.core.node_down(msg.node, msg.reason, now))
        elif isinstance(msg, WitnessDown):
            self._perform(self.core.witness_down(msg.node, msg.key, msg.epoch, msg.reason, now))
        elif isinstance(msg, Down):
            self.monitored.pop(msg.pid, None)
            self.gates.pop(msg.pid, None)
            for topic in [t for t, (pid, _) in self.notices.items() if pid == msg.pid]:
                del self.notices[topic]
            for subs in self.subscribers.values():
                subs.discard(msg.pid)
            self._perform(self.core.release_holder(msg.pid, now))
        else:
            why = INFOS.problem(msg)
            if why is None:
                self._perform(self._receive(msg))
            else:
                self.drops.dropped(f"{self.node}: quorum", msg, why)

    def handle_cast(self, msg: Any) -> None:
        self.drops.dropped(f"{self.node}: quorum", msg, "the quorum takes no cast")

    def _rejoin_problem(self) -> str | None:
        if self.store_failed:
            return "quorum: its store cannot be written"
        return self.core.rejoin_problem()

    def _call_problem(self, request: Any, from_: From) -> str | None:
        """Why ``request`` is refused, or None (see :data:`CALLS`)."""
        why = CALLS.problem(request)
        if why is not None:
            return why
        op = request[0]
        rt = actors.runtime()
        if op in _LOCAL and not (rt.is_local(from_.pid) and rt.is_local(request[_LOCAL[op]])):
            return f"{op!r} takes a process of this node, from this node"
        if op in ("fence", "notice"):  # kept, and sent to other nodes: msgpack values
            try:
                dist.encode_term(request[3 if op == "fence" else 2])
            except (TypeError, ValueError) as exc:
                return f"{op!r}: {exc}"
        return None

    def handle_call(self, request: Any, from_: From) -> Any:
        why = self._call_problem(request, from_)
        if why is not None:
            self.drops.dropped(f"{self.node}: quorum", request, why)
            op = request[0] if isinstance(request, tuple) and request else None
            if isinstance(op, str) and op in _REFUSAL:
                return _REFUSAL[op]
            return shapes.bad_request(CALLS.owner, why)
        now = time.monotonic()
        op = request[0]
        if op == "acquire":
            _, key, timeout, holder = request
            self._perform(self.core.acquire(key, holder, from_, float(timeout), now))
            return NOREPLY
        if op == "fence":
            _, key, epoch, effect, timeout = request
            self._perform(self.core.fence(key, epoch, effect, from_, float(timeout), now))
            return NOREPLY
        if op == "leave":
            self._perform(self.core.leave(from_, float(request[1]), now))
            return NOREPLY
        if op == "release":
            self._perform(self.core.release(request[1], request[2], now))
            return "ok"
        if op == "members":
            return (self.core.version, list(self.core.member_names()))
        if op == "rejoin_problem":
            return self._rejoin_problem()
        if op == "ready_problem":
            return self._rejoin_problem() or min(self.gates.values(), default=None)
        if op == "ready_gate":
            problem = request[1] if len(request) == 2 else None
            if problem is None:
                self.gates.pop(from_.pid, None)
            else:
                self.gates[from_.pid] = problem[:200]
                if from_.pid not in self.monitored:
                    self.monitored[from_.pid] = actors.monitor(from_.pid)
            return True
        if op == "status":
            return self._status(now)
        if op == "key_status":
            status = self.core.key_status(request[1], now)
            status["store"] = self.store.path if self.store_failed and self.store else None
            cfg = self.core.config
            status["term"] = cfg.term + cfg.margin
            return status
        if op == "outside":
            problem = self.core.quorum_problem(now)
            if problem is None or self.outside_since is None:
                return None
            cfg = self.core.config
            return [problem, now - self.outside_since, 2 * (cfg.term + cfg.margin)]
        if op == "notice":
            topic, notice = request[1], request[2]
            if notice is None:
                self.notices.pop(topic, None)
            else:
                self.notices[topic] = (from_.pid, notice)
                if from_.pid not in self.monitored:
                    self.monitored[from_.pid] = actors.monitor(from_.pid)
            return True
        if op == "notices":
            return {topic: dict(notice) for topic, (_, notice) in sorted(self.notices.items())}
        if op == "set_expected":
            _, size, timeout = request
            self._perform(self.core.set_expected(size, from_, float(timeout), now))
            return NOREPLY
        if op == "recover":
            log.warning("%s: quorum: an operator forces a new configuration", self.node)
            self._perform(self.core.recover(now))
            return self._status(now)
        if op == "subscribe":
            _, key, pid, on = request
            if on:
                self.subscribers.setdefault(key, set()).add(pid)
                if pid not in self.monitored:
                    self.monitored[pid] = actors.monitor(pid)
            else:
                self.subscribers.get(key, set()).discard(pid)
            return "ok"
        # "effects" (every tag of CALLS is answered above)
        return list(self.core.effects.get(request[1], ()))

    def _status(self, now: float) -> dict[str, Any]:
        core = self.core
        return {
            "node": self.node,
            "version": core.version,
            "members": list(core.member_names()),
            "member": core.is_member,
            "expected": core.expected,
            "setting": core.config.expected_size,
            "store": None if self.store is None else self.store.path,
            "restored": core.restored,
            "held": sorted(core.held),
            # this member's grant per key: whose lease it backs (renewals), until when
            "grants": {
                key: {
                    "holder": rec.holder[0],
                    "epoch": rec.epoch,
                    "void": rec.void,
                    "left": round(rec.expires - now, 2),
                }
                for key, rec in sorted(core.grants.items())
            },
            "problem": self.problem(now),
            "rejoin": core.rejoin_problem(),
        }


# ---------------------------------------------------------------------- client API


def acquire(key: str, timeout: float = 5.0) -> Lease | None:
    """Hold ``key``'s lease for this node (the caller is its holder), or None after
    ``timeout`` seconds without a majority's grants."""
    lease: Lease | None = _call(("acquire", key, timeout, actors.self()), timeout)
    return lease


def release(key: str, epoch: int) -> None:
    """Give up the lease of ``key`` held at ``epoch``; the members drop it at once."""
    actors.call(QUORUM_NAME, ("release", key, epoch))


def fence(key: str, epoch: int, effect: Any, timeout: float = 5.0) -> bool:
    """True iff a majority of members accepted ``effect`` (msgpack-able) under
    ``(key, epoch)``; an old epoch, a lost majority or the timeout give False."""
    result: bool = _call(("fence", key, epoch, effect, timeout), timeout)
    return result


def members(timeout: float = 5.0) -> tuple[int, list[str]]:
    """This node's view of the agreed member set: ``(version, sorted node names)``;
    version 0 means no member set formed yet."""
    version, names = actors.call(QUORUM_NAME, ("members",), timeout)
    return int(version), list(names)


def ready_gate(problem: str | None, timeout: float = 2.0) -> None:
    """Keep this node's readiness probe answering 503 with ``problem`` (one line) until
    the caller says None or ends - e.g. a scheduler replica not yet in sync with its
    holder after a restart, so that a StatefulSet does not roll on early. Elections do
    not wait for it. Nothing happens on a node without the quorum."""
    if actors.whereis(QUORUM_NAME) is not None:
        actors.call(QUORUM_NAME, ("ready_gate", problem), timeout)


def key_status(key: str, timeout: float = 2.0) -> dict[str, Any]:
    """What this node's quorum knows of ``key``'s lease, as plain values
    (``QuorumCore.key_status``, with ``store``: this node's store path while it cannot be
    written, else None, and ``term``: the lease term with its margin, in seconds)."""
    result: dict[str, Any] = actors.call(QUORUM_NAME, ("key_status", key), timeout)
    return result


def outside(timeout: float = 2.0) -> tuple[str, float, float] | None:
    """``(problem, seconds, limit)`` while this node reaches no majority of its
    configuration (``QuorumCore.quorum_problem``): for how long, and after how long the
    readiness probe says so (two lease terms); None while it does."""
    result = actors.call(QUORUM_NAME, ("outside",), timeout)
    return None if result is None else (str(result[0]), float(result[1]), float(result[2]))


def post_notice(topic: str, notice: dict[str, Any] | None, timeout: float = 2.0) -> None:
    """Post (None: withdraw) the caller's notice ``topic`` for the operator: shown by the
    shell's ``nodes`` (a Singleton posts its holder, or why it has none); withdrawn when
    the caller ends. Nothing happens on a node without the quorum."""
    if actors.whereis(QUORUM_NAME) is not None:
        actors.call(QUORUM_NAME, ("notice", topic, notice), timeout)


def notices(timeout: float = 2.0) -> dict[str, dict[str, Any]]:
    """This node's notices (see :func:`post_notice`), by topic."""
    result: dict[str, dict[str, Any]] = actors.call(QUORUM_NAME, ("notices",), timeout)
    return result


def leave(timeout: float = 5.0) -> bool:
    """Leave the member set for good (graceful hand-over): releases this node's leases
    and returns True once a majority agreed this node is out; False on timeout."""
    result: bool = _call(("leave", timeout), timeout)
    return result


def status(timeout: float = 5.0) -> dict[str, Any]:
    """This node's quorum as an operator reads it: ``version``, ``members``, whether this
    node is one, ``expected`` (decided) and ``setting`` (this node's flag), ``store``,
    ``restored``, the keys it holds, and ``problem`` (why it can grant nothing, or None)
    and ``rejoin`` (why it is not back in the quorum, or None)."""
    result: dict[str, Any] = actors.call(QUORUM_NAME, ("status",), timeout)
    return result


def set_expected_size(size: int, timeout: float = 5.0) -> bool:
    """Have the quorum decide ``size`` as the expected cluster size (an operator's
    command); True once decided. The members' own settings do not undo it; a later
    change of a majority of those settings (a rolling update) does."""
    result: bool = _call(("set_expected", size, timeout), timeout)
    return result


def recover(timeout: float = 5.0) -> dict[str, Any]:
    """The operator's way out when a majority of the members lost their stores for good:
    this node and every node connected to it become the members of a new configuration,
    without the old majority's consent. Never run it while the old members may still
    run (on the other side of a partition): that makes two clusters. Returns
    :func:`status`."""
    result: dict[str, Any] = actors.call(QUORUM_NAME, ("recover",), timeout)
    return result


def subscribe(key: str, on: bool = True) -> None:
    """Deliver ``LeaseGranted`` / ``LeaseLost`` for ``key`` on this node to the caller."""
    actors.call(QUORUM_NAME, ("subscribe", key, actors.self(), on))


def effects(key: str, timeout: float = 5.0) -> list[tuple[int, Any]]:
    """The effects this node, as a member, accepted for ``key``: ``[(epoch, effect)]``."""
    result: list[tuple[int, Any]] = actors.call(QUORUM_NAME, ("effects", key), timeout)
    return result


def _call(request: tuple[Any, ...], timeout: float) -> Any:
    # the actor answers by the request's own deadline; the margin covers the hops
    # a quorum that does not answer (frozen, or between two incarnations: its name is
    # gone, Exit("noproc")) grants and confirms nothing: the caller asks again later
    try:
        return actors.call(QUORUM_NAME, request, timeout + 2.0)
    except (CallTimeout, Exit):
        return None if request[0] == "acquire" else False


__all__ = [
    "QUORUM_NAME",
    "Lease",
    "LeaseGranted",
    "LeaseLost",
    "Quorum",
    "QuorumConfig",
    "acquire",
    "effects",
    "fence",
    "key_status",
    "leave",
    "members",
    "notices",
    "outside",
    "post_notice",
    "recover",
    "release",
    "set_expected_size",
    "status",
    "subscribe",
]
