"""The global name server: one per node, a replica of the cluster's name table.

How it keeps the replicas equal (OTP ``global``'s design, in messages):

* Every change of a binding by a user (``register_name``, ``re_register_name``,
  ``unregister_name``) is made by the caller's process under the cluster lock
  ``"global"``, taken on every node this node's server knows, and written to all of them
  with one ``multi_call``: the name is on every connected node or none.
* A binding goes when its process dies or its node goes down: every server monitors
  every registered pid and drops the name on its own ``Down`` (no lock: OTP's "there is
  no synchronization between nodes" for deaths).
* When a node comes up, the servers greet each other (a named send ``("otpkit_global",
  node)``); then the smaller-named node's :class:`_Merger` takes the lock on both sides'
  nodes, reads both tables, copies one-sided names across, calls the resolver once per
  clash (on the node of the resolving side's pid) and writes the outcome to every node it
  locked. A later pair of the same two partitions finds equal tables: one resolver call
  per clash.

The server never waits on another node inside a handler: user operations run in the
caller, merges in the node's merger process, resolvers in its resolver process. Each of
the three checks every request and message before it acts (:data:`CALLS`,
:data:`INFOS`, :data:`MERGER_INFOS`, :data:`RESOLVER_INFOS`; a merger also checks the
other node's answers): one that does not fit is answered ``("error", "bad global call:
...")`` or dropped, with one WARNING a minute.

The server sets ``otpkit_registry_names`` (the names in its table) in the node's
metrics whenever it publishes a table of another size.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from otpkit import actors, metrics
from otpkit.actors import NOREPLY, Actor, Down, From, Pid, Ref, shapes
from otpkit.distribution import NodeDown, NodeUp, drop_link, register_service
from otpkit.distribution import monitor_nodes as _monitor_nodes
from otpkit.distribution import nodes as _dist_nodes
from otpkit.errors import CallTimeout, Exit, NodeError
from otpkit.registry import _shared
from otpkit.registry._resolvers import load_resolver
from otpkit.registry._table import (
    RAISED,
    RESOLVED,
    UNREACHABLE,
    Clash,
    Entry,
    LockTable,
    check_register,
    exchange_plan,
    outcome,
)

log = logging.getLogger("otpkit.registry")
T = TypeVar("T")

#: The server's local name and its dist service name.
GLOBAL_NAME = "otpkit_global"
#: The lock every change of the name table is made under (OTP's ``global`` resource).
GLOBAL_LOCK = "global"

# ---------------------------------------------------------------------- messages

#: The most rows a table, a merge's changes or a batch of resolvers may have.
TABLE_MAX = 1 << 20

_NODE = shapes.Str(255, 1)
# a global name (a tuple's parts are checked by valid_name: see call_problem)
_NAME = shapes.Either((str, bytes, int, tuple))
# an importable name, "package.module:attr"
_RESOLVER = shapes.Str(4096)
_OPS = shapes.Seq(shapes.Tup((_NAME, shapes.Opt(shapes.Tup((Pid, _RESOLVER))))), TABLE_MAX)
_PROBE = shapes.Opt(
    shapes.Either(
        (
            shapes.Tup((shapes.Const(("check",)), _NAME, Pid)),
            shapes.Tup((shapes.Const(("whereis",)), _NAME)),
        )
    )
)
_BATCH = shapes.Seq(shapes.Tup((_NAME, Pid, Pid, _RESOLVER)), TABLE_MAX)
_SERIAL = shapes.Int(0, shapes.INT64 - 1)

#: The calls the server answers: from the node's processes and from the other nodes'
#: servers, mergers and lock holders (it is the dist service ``otpkit_global``). A lock's
#: resource and requester are any hashable values; ``watch`` takes a process of this
#: node (it is told with :class:`NameChanged` objects).
CALLS = shapes.Protocol(
    "global call",
    shapes.Shape("targets"),
    shapes.Shape("up"),
    shapes.Shape("peer", (_NODE,)),
    shapes.Shape("lock", (shapes.ANY, shapes.ANY, Pid)),
    shapes.Shape("lock_probe", (shapes.ANY, shapes.ANY, Pid, _PROBE)),
    shapes.Shape("commit", (shapes.ANY, shapes.ANY, Pid, _OPS)),
    shapes.Shape("unlock", (shapes.ANY, shapes.ANY, Pid)),
    shapes.Shape("apply", (_OPS,)),
    shapes.Shape("table"),
    shapes.Shape("whereis", (_NAME,)),
    shapes.Shape("names"),
    shapes.Shape("resolve", (_BATCH,)),
    shapes.Shape("synced", (shapes.Seq(_NODE, TABLE_MAX),)),
    shapes.Shape("sync"),
    shapes.Shape("watch", (_NAME, Pid)),
    shapes.Shape("unwatch", (_NAME, Pid)),
    shapes.Shape("info"),
)

#: The plain messages the server takes: other nodes' servers greet it (``hello``); its
#: timers, its merger and its resolver send the others.
INFOS = shapes.Protocol(
    "global message",
    shapes.Shape("hello", (_NODE, Pid)),
    shapes.Shape("resync", (_NODE,)),
    shapes.Shape("resolved", (_SERIAL, Pid)),
    shapes.Shape("resolve_check"),
    shapes.Shape("merge_failed", (_NODE,)),
)

#: What the server's merger takes (from the server).
MERGER_INFOS = shapes.Protocol("global merger message", shapes.Shape("merge", (_NODE, Pid)))

#: What the server's resolver takes (from the server: the caller is a ``From``).
RESOLVER_INFOS = shapes.Protocol(
    "global resolver message", shapes.Shape("resolve", (From, _BATCH, _SERIAL))
)

# the names in each call, by where they are: (index in the request, index in its items)
_NAMES_AT: dict[str, tuple[int, int | None]] = {
    "whereis": (1, None),
    "watch": (1, None),
    "unwatch": (1, None),
    "apply": (1, 0),
    "commit": (4, 0),
    "resolve": (1, 0),
}


def call_problem(request: Any) -> str | None:
    """Why ``request`` is not a call the server answers, or None: its shape
    (:data:`CALLS`), every name in it a global name (:func:`valid_name`), a lock's
    resource and requester hashable."""
    why = CALLS.problem(request)
    if why is not None:
        return why
    op = request[0]
    if op in ("lock", "lock_probe", "commit", "unlock"):
        try:
            hash((request[1], request[2]))
        except TypeError:
            return f"{op!r}: the lock's resource and requester must be hashable"
    names: list[Any] = []
    if op == "lock_probe" and request[4] is not None:
        names.append(request[4][1])
    if op in _NAMES_AT:
        at, item = _NAMES_AT[op]
        if item is None:
            names.append(request[at])
        else:
            names.extend(row[item] for row in request[at])
    for name in names:
        if not valid_name(name):
            return f"{op!r}: name {name!r:.60}: expected a str, int, bytes or a tuple of these"
    return None


class NameChanged:
    """To processes that watch a name: its binding on this node is now ``pid`` (None:
    unbound). Sent after every change, in order."""

    __slots__ = ("name", "pid")

    def __init__(self, name: Any, pid: Pid | None) -> None:
        self.name = name
        self.pid = pid

    def __repr__(self) -> str:
        return f"NameChanged({self.name!r}, {self.pid!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NameChanged) and (self.name, self.pid) == (
            other.name,
            other.pid,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.pid))


class Global(Actor):
    """The node's global name server (OTP's ``global_name_server``); see the module."""

    def init(self) -> None:
        self.me = actors.self()
        self.node = self.me.node
        self.names: dict[Any, Entry] = {}
        self.by_pid: dict[Pid, set[Any]] = {}  # the names of each registered pid
        self.monitors: dict[Pid, Ref] = {}  # one per registered pid or lock holder
        self.locks = LockTable()
        self.peers: dict[str, Pid] = {}  # visible nodes' servers that greeted this one
        self.up: set[str] = set()
        self.synced: set[str] = set()
        self.merging: set[str] = set()  # nodes the merger has been asked to merge with
        self.sync_waiters: list[From] = []
        self.watchers: dict[Any, set[Pid]] = {}
        self.dirty = False
        self.notes: list[tuple[Pid, NameChanged]] = []
        self.drops = shapes.DropLog(log)
        _shared.take_over()
        _shared.publish({})
        # the name count last sent to the node's metrics: a restarted server starts empty
        self.counted = 0
        metrics.gauge("otpkit_registry_names", None, 0)
        actors.register(GLOBAL_NAME)
        self.merger: Pid | None = None
        self.resolver: Pid | None = None
        self.resolving = 0  # resolve batches numbered
        # batches not answered yet: serial -> (deadline, caller, batch)
        self.pending: dict[int, tuple[float, From, list[Any]]] = {}
        self.dist = True
        try:
            register_service(GLOBAL_NAME)
            _monitor_nodes(True)
        except NodeError:  # a node without dist: a one-node registry
            self.dist = False
        if self.dist:
            # long-lived helpers (a node with peers only): a process per merge or per
            # resolver call would put a fork on a heal's critical path (tens of ms each)
            self.merger = actors.spawn_link(_Merger, self.me)
            self._spawn_resolver()
            for node in _dist_nodes():
                self._node_up(node)

    # ------------------------------------------------------------------ calls

    # Requests come from other nodes too: a malformed one is refused (CALLS, INFOS) with
    # one rate-limited log line, never allowed to crash the server (four crashes in 5 s
    # would halt the node).

    def handle_call(self, request: Any, from_: From) -> Any:
        why = call_problem(request)
        if why is None and request[0] == "watch" and not actors.runtime().is_local(request[2]):
            why = "'watch' takes a process of this node"
        if why is not None:
            self.drops.dropped(f"{self.node}: global", request, why)
            return shapes.bad_request(CALLS.owner, why)
        try:
            return self._call(request, from_)
        except _BAD_INPUT as exc:  # not expected of a request that fits: refused all the same
            self.drops.dropped(f"{self.node}: global", request, repr(exc))
            return shapes.bad_request(CALLS.owner, repr(exc))
        finally:
            self._publish()  # once per message: a merge of many names is one write

    def handle_cast(self, msg: Any) -> None:
        self.drops.dropped(f"{self.node}: global", msg, "the global server takes no cast")

    def handle_info(self, msg: Any) -> None:
        why = None if isinstance(msg, Down | NodeUp | NodeDown) else INFOS.problem(msg)
        if why is not None:
            self.drops.dropped(f"{self.node}: global", msg, why)
            return
        try:
            self._info(msg)
        except _BAD_INPUT as exc:
            self.drops.dropped(f"{self.node}: global", msg, repr(exc))
        finally:
            self._publish()

    def _call(self, request: Any, from_: From) -> Any:
        op = request[0]
        if op == "targets":
            return self._targets()
        if op == "up":
            return sorted(self.up)
        if op == "peer":
            return self.peers.get(request[1]) if request[1] in self.up else None
        if op == "lock":
            _, resource, requester, holder = request
            granted = self.locks.acquire(resource, requester, holder)
            if granted:
                self._monitor(holder)
            return granted
        if op == "lock_probe":
            # the lock, plus what the caller must decide under it: this server's merged
            # nodes and its answer to ``probe``, read in the same step as the grant
            _, resource, requester, holder, probe = request
            answer = self._probe(probe)
            granted = self.locks.acquire(resource, requester, holder)
            if granted:
                self._monitor(holder)
            return [granted, self._targets(), answer if granted else None]
        if op == "commit":
            # apply the changes decided under the lock, and release it: one round
            _, resource, requester, holder, ops = request
            self._apply(ops)
            self.locks.release(resource, requester, holder)
            self._forget_if_unused(holder)
            return True
        if op == "unlock":
            _, resource, requester, holder = request
            self.locks.release(resource, requester, holder)
            self._forget_if_unused(holder)
            return True
        if op == "apply":
            self._apply(request[1])
            return True
        if op == "table":
            return [(name, e.pid, e.resolver) for name, e in self.names.items()]
        if op == "whereis":
            entry = self.names.get(request[1])
            return entry.pid if entry else None
        if op == "names":
            return list(self.names)
        if op == "resolve":
            # [(name, other_pid, own_pid, resolver), ...]: the resolver process runs them
            # in turn and answers the caller itself
            batch = list(request[1])
            self.resolving += 1
            deadline = time.monotonic() + _resolve_deadline(batch)
            self.pending[self.resolving] = (deadline, from_, batch)
            self._replace_hung_resolver()
            self._to_resolver(self.resolving)
            # a resolver that hangs would hold every later merge on this node: past the
            # merger's own deadline its process is replaced
            actors.send_after(_resolve_deadline(batch), ("resolve_check",))
            return NOREPLY
        if op == "synced":
            for node in request[1]:
                if node != self.node:
                    self._synced(node)
            return True
        if op == "sync":
            if self.up <= self.synced:
                return sorted(self.up)
            self.sync_waiters.append(from_)
            return NOREPLY
        if op == "watch":
            _, name, pid = request
            self.watchers.setdefault(name, set()).add(pid)
            self._monitor(pid)
            entry = self.names.get(name)
            return entry.pid if entry else None
        if op == "unwatch":
            _, name, pid = request
            self.watchers.get(name, set()).discard(pid)
            self._forget_if_unused(pid)
            return True
        # "info" (every tag of CALLS is answered above)
        return {
            "names": len(self.names),
            "peers": sorted(self.peers),
            "up": sorted(self.up),
            "synced": sorted(self.synced),
            "locks": self.locks.held(),
        }

    def _targets(self) -> dict[str, Pid]:
        # only nodes whose table was merged with this one: a change made over a node not
        # merged yet would overwrite its binding without a resolver (the merge that
        # follows settles the difference instead)
        return {self.node: self.me, **{n: p for n, p in self.peers.items() if n in self.synced}}

    def _probe(self, probe: Any) -> Any:
        if probe is None:
            return None
        if probe[0] == "check":
            return check_register(self.names, probe[1], probe[2])
        entry = self.names.get(probe[1])  # "whereis"
        return entry.pid if entry else None

    def _apply(self, ops: list[Any]) -> None:
        checked = [_checked_op(op) for op in ops]  # all or nothing
        for name, entry in checked:
            if entry is None:
                self._unbind(name)
            else:
                self._bind(name, Entry(entry[0], entry[1]))

    # ------------------------------------------------------------------ messages

    def _info(self, msg: Any) -> None:
        if isinstance(msg, Down):
            self._down(msg.pid, msg.reason)
        elif isinstance(msg, NodeUp):
            self._node_up(msg.node)
        elif isinstance(msg, NodeDown):
            self._node_down(msg.node)
        elif msg[0] == "hello":  # a tag of INFOS, checked
            self._hello(msg[1], msg[2])
        elif msg[0] == "resync":
            self._maybe_sync(msg[1])
        elif msg[0] == "resolved":
            if msg[2] == self.resolver:
                self.pending.pop(msg[1], None)
        elif msg[0] == "resolve_check":
            self._replace_hung_resolver()
        else:  # "merge_failed": the peer went away, or the merge failed: again while up
            self.merging.discard(msg[1])
            actors.send_after(0.2, ("resync", msg[1]))

    def _node_up(self, node: str) -> None:
        self.up.add(node)
        self.synced.discard(node)
        actors.send((GLOBAL_NAME, node), ("hello", self.node, self.me))
        self._maybe_sync(node)

    def _hello(self, node: str, pid: Any) -> None:
        if not isinstance(pid, Pid) or pid.node != node or node == self.node:
            log.warning("%s: a malformed greeting from %r: %r", self.node, node, pid)
            return
        if self.peers.get(node) == pid:
            return
        old = self.peers.get(node)
        if old is not None:
            self._peer_gone(node)
        self.peers[node] = pid
        self._monitor(pid)
        actors.send(pid, ("hello", self.node, self.me))  # it may have missed ours
        self._maybe_sync(node)

    def _maybe_sync(self, node: str) -> None:
        """The smaller-named node of a pair merges (once per greeting)."""
        pid = self.peers.get(node)
        if (
            pid is None
            or node not in self.up
            or node in self.synced
            or node in self.merging
            or self.node > node
        ):
            return
        if self.merger is None:
            return
        self.merging.add(node)
        actors.send(self.merger, ("merge", node, pid))

    def _to_resolver(self, serial: int) -> None:
        if self.resolver is None:
            self._spawn_resolver()
        assert self.resolver is not None  # _Resolver.init never ignores
        _deadline, caller, batch = self.pending[serial]
        actors.send(self.resolver, ("resolve", caller, batch, serial))

    def _replace_hung_resolver(self) -> None:
        """A batch past its deadline: its resolver hangs. Replace the process, give that
        batch up (its caller has timed out: the other pid keeps the name) and hand the
        batches queued behind it to the new process."""
        now = time.monotonic()
        hung = [serial for serial, (deadline, _, _) in self.pending.items() if deadline <= now]
        if not hung or self.resolver is None:
            return
        log.warning("%s: a resolver hangs; its process is replaced", self.node)
        old, self.resolver = self.resolver, None
        self._forget_if_unused(old)
        actors.exit(old, "kill")
        for serial in hung:
            del self.pending[serial]
        for serial in sorted(self.pending):
            self._to_resolver(serial)

    def _spawn_resolver(self) -> None:
        self.resolver = actors.spawn(_Resolver, self.me)
        if self.resolver is not None:
            self._monitor(self.resolver)

    def _peer_gone(self, node: str) -> None:
        """``node``'s server is gone (its node, or the process alone): forget the pair."""
        self.synced.discard(node)
        self.peers.pop(node, None)
        self.merging.discard(node)  # the merger sees the peer gone and gives up

    def _node_down(self, node: str) -> None:
        self.up.discard(node)
        self._peer_gone(node)
        for pid in [p for p in self.by_pid if p.node == node]:
            for name in sorted(self.by_pid.get(pid, ()), key=repr):
                self._unbind(name)
        self.locks.release_holders(p for p in self.locks.holders() if p.node == node)
        self._answer_sync()

    def _synced(self, node: str) -> None:
        if node in self.up:
            self.synced.add(node)
        self.merging.discard(node)
        self._answer_sync()

    def _answer_sync(self) -> None:
        if self.sync_waiters and self.up <= self.synced:
            waiters, self.sync_waiters = self.sync_waiters, []
            for waiter in waiters:
                actors.reply(waiter, sorted(self.up))

    def _down(self, pid: Pid, reason: Any) -> None:
        self.monitors.pop(pid, None)
        for name in sorted(self.by_pid.get(pid, ()), key=repr):
            self._unbind(name)
        self.locks.release_holders([pid])
        for watchers in self.watchers.values():
            watchers.discard(pid)
        for node, peer in list(self.peers.items()):
            if peer == pid:
                self._peer_gone(node)
        if pid == self.resolver:
            # it died running the oldest batch (it runs them in order): that one is given
            # up (its caller keeps the other pid), the rest go to its successor
            self.resolver = None
            if self.pending:
                del self.pending[min(self.pending)]
            for serial in sorted(self.pending):
                self._to_resolver(serial)

    # ------------------------------------------------------------------ table

    def _bind(self, name: Any, entry: Entry) -> None:
        old = self.names.get(name)
        if old == entry:
            return
        self.names[name] = entry
        self.by_pid.setdefault(entry.pid, set()).add(name)
        self._monitor(entry.pid)
        if old is not None and old.pid != entry.pid:
            self._drop_pid_name(old.pid, name)
            self._forget_if_unused(old.pid)
        if old is None or old.pid != entry.pid:
            self._changed(name, entry.pid)

    def _unbind(self, name: Any) -> None:
        old = self.names.pop(name, None)
        if old is not None:
            self._drop_pid_name(old.pid, name)
            self._forget_if_unused(old.pid)
            self._changed(name, None)

    def _drop_pid_name(self, pid: Pid, name: Any) -> None:
        names = self.by_pid.get(pid)
        if names is not None:
            names.discard(name)
            if not names:
                del self.by_pid[pid]

    def _changed(self, name: Any, pid: Pid | None) -> None:
        self.dirty = True
        for watcher in self.watchers.get(name, ()):
            self.notes.append((watcher, NameChanged(name, pid)))

    def _monitor(self, pid: Pid) -> None:
        if pid not in self.monitors and pid != self.me:
            self.monitors[pid] = actors.monitor(pid)

    def _forget_if_unused(self, pid: Pid) -> None:
        if (
            pid in self.monitors
            and pid not in self.by_pid
            and pid not in self.locks.holders()
            and pid not in self.peers.values()
            and pid != self.resolver
            and not any(pid in w for w in self.watchers.values())
        ):
            actors.demonitor(self.monitors.pop(pid), flush=True)

    def _publish(self) -> None:
        if self.dirty:
            self.dirty = False
            _shared.publish({name: e.pid for name, e in self.names.items()})
            if len(self.names) != self.counted and metrics.gauge(
                "otpkit_registry_names", None, len(self.names)
            ):
                self.counted = len(self.names)
        # watchers hear of a change only once whereis_name shows it
        notes, self.notes = self.notes, []
        for watcher, note in notes:
            actors.send(watcher, note)


# ---------------------------------------------------------------------- the lock


def _backoff(attempt: int) -> float:
    # short first waits (a lock is held for a few ms: one merge or one registration),
    # doubling to at most 1 s; random so contenders spread out (OTP: up to 1/4 s first)
    return random.uniform(0, min(0.002 * (2**attempt), 1.0))


def set_lock_on(
    targets: dict[str, Pid],
    resource: Any,
    requester: Any,
    retries: int | None,
    deadline: float | None = None,
) -> dict[str, Pid] | None:
    """Take ``resource`` for ``requester`` on every server in ``targets`` (the caller
    holds it); the servers that granted it (those unreachable are left out: they are not
    in this partition any more), or None after ``retries`` failed attempts."""
    me = actors.self()
    attempt = 0
    while True:
        order = sorted(targets)
        results = actors.multi_call(
            [targets[n] for n in order], ("lock", resource, requester, me), timeout=5.0
        )
        granted = {n: targets[n] for n, r in zip(order, results, strict=True) if r == ("ok", True)}
        refused = [
            n for n, r in zip(order, results, strict=True) if r[0] != "exit" and r[1] is not True
        ]
        if not refused:
            return granted
        # unlock also where the answer did not come in time: a grant made after the
        # caller gave up would otherwise stay (an unlock of nothing is a no-op)
        release_on(_answered(targets, order, results), resource, requester)
        if retries is not None and attempt >= retries:
            return None
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(_backoff(attempt))
        attempt += 1


def _answered(
    targets: dict[str, Pid], order: list[str], results: list[tuple[str, Any]]
) -> dict[str, Pid]:
    """The servers that did not end or vanish (they granted, refused, or were slow)."""
    return {n: targets[n] for n, r in zip(order, results, strict=True) if r[0] != "exit"}


def release_on(targets: dict[str, Pid], resource: Any, requester: Any) -> None:
    if targets:
        actors.multi_call(
            list(targets.values()), ("unlock", resource, requester, actors.self()), timeout=5.0
        )


def local_server() -> Pid:
    pid = actors.whereis(GLOBAL_NAME)
    if pid is None:
        raise NodeError("this node runs no global registry (is it an otpkit node?)")
    return pid


#: How long a lock round waits for a node's answer. A node silent that long (frozen, or
#: its link half dead) is left out: its link is dropped, as if its ticks had stopped, so
#: the change is on every connected node or none (OTP ``global``) without waiting for
#: the link's own failure detector; a live node is redialled and merged again.
LOCK_ANSWER_TIMEOUT = 2.0


def locked_change(
    probe: Any, decide: Callable[[Any], tuple[list[Any], T]], timeout: float = 30.0
) -> T:
    """Change the name table under the ``"global"`` lock, in two rounds: take the lock on
    all of this node's merged nodes at once (as the local server last listed them), the
    local server also answering ``probe`` (``("check", name, pid)`` or ``("whereis",
    name)``) as it grants; then ``decide(answer) -> (ops, result)`` and write ``ops``
    (``[(name, (pid, resolver) | None)]``) while releasing the lock, in one round. If
    the set of merged nodes was not the one locked, the lock is released and taken again
    over the new set, as OTP does. A node that does not answer a round within
    ``LOCK_ANSWER_TIMEOUT`` is left out (see there). Raises ``CallTimeout`` after
    ``timeout``."""
    global _targets_seen
    server = local_server()
    me = actors.self()
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        # the nodes seen last time (the lock's answer says if they changed: then again)
        targets = _targets_seen.get(server)
        if targets is None:
            targets = actors.call(server, ("targets",))
            _targets_seen = {server: targets}
        order = sorted(targets)
        try:
            results = actors.multi_call(
                [targets[n] for n in order],
                ("lock_probe", GLOBAL_LOCK, me, me, probe),
                timeout=LOCK_ANSWER_TIMEOUT,
            )
        except BaseException:
            release_on(targets, GLOBAL_LOCK, me)  # some may have been asked already
            raise
        silent = _silent(order, results, me.node)
        granted = {n: targets[n] for n, r in zip(order, results, strict=True) if _granted(r)}
        refused = [
            n for n, r in zip(order, results, strict=True) if r[0] != "exit" and not _granted(r)
        ]
        mine: tuple[str, Any] = (
            results[order.index(me.node)] if me.node in targets else ("exit", None)
        )
        _targets_seen = {server: mine[1][1]} if mine[0] == "ok" else {}
        if not refused and mine[0] == "ok":
            now: dict[str, Pid] = mine[1][1]
            if set(now) <= set(granted) and all(now[n] == granted[n] for n in now):
                try:
                    ops, result = decide(mine[1][2])
                    order = sorted(now)
                    results = actors.multi_call(
                        [now[n] for n in order],
                        ("commit", GLOBAL_LOCK, me, me, ops),
                        timeout=LOCK_ANSWER_TIMEOUT,
                    )
                except BaseException:
                    release_on(granted, GLOBAL_LOCK, me)
                    raise
                release_on({n: p for n, p in granted.items() if n not in now}, GLOBAL_LOCK, me)
                # a node that took the lock but not the write is no longer connected
                _leave_out(server, {n: now[n] for n in _silent(order, results, me.node)}, "write")
                return result
        answered = _answered(targets, order, results)
        release_on({n: p for n, p in answered.items() if n not in silent}, GLOBAL_LOCK, me)
        if silent:
            _leave_out(server, {n: targets[n] for n in silent}, "lock")
            _targets_seen = {}
        if time.monotonic() >= deadline:
            raise CallTimeout(server, ("lock", GLOBAL_LOCK), timeout)
        if attempt and not silent:  # at once if only the set of nodes was stale
            time.sleep(_backoff(attempt))
        attempt += 1


def _granted(result: tuple[str, Any]) -> bool:
    """A server's answer to ``lock_probe`` grants the lock: ``[True, targets, answer]``
    (an error answer, e.g. from a server that cannot read the request, refuses it)."""
    kind, value = result
    return kind == "ok" and isinstance(value, list | tuple) and len(value) == 3 and value[0] is True


def _silent(order: list[str], results: list[tuple[str, Any]], own: str) -> list[str]:
    """The other nodes whose server did not answer a round in time."""
    return [n for n, r in zip(order, results, strict=True) if r[0] == "timeout" and n != own]


def _leave_out(server: Pid, silent: dict[str, Pid], step: str) -> None:
    """Drop the links of the nodes that were silent in a lock round (see
    ``LOCK_ANSWER_TIMEOUT``); return once the local server no longer lists them (at
    most 1 s), so the next round does not ask them again."""
    if not silent:
        return
    # first the unlock, on the connection the request took (so it is read after it,
    # when that node answers again): a grant it makes late is given back at once
    me = actors.self()
    actors.multi_call(list(silent.values()), ("unlock", GLOBAL_LOCK, me, me), timeout=0.2)
    for node in silent:
        log.warning(
            "global: %s did not answer the %s round in %.1f s; its link is dropped "
            "(a name change is on every connected node or none)",
            node,
            step,
            LOCK_ANSWER_TIMEOUT,
        )
        try:
            drop_link(node, f"silent for {LOCK_ANSWER_TIMEOUT:.1f} s in a global {step} round")
        except (NodeError, CallTimeout, Exit) as exc:
            log.warning("global: the link to %s could not be dropped: %s", node, exc)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            if not set(silent) & set(actors.call(server, ("targets",), timeout=1.0)):
                return
        except (CallTimeout, Exit):
            return
        time.sleep(0.01)


#: per process: the local server's merged nodes as its last answer gave them
_targets_seen: dict[Pid, dict[str, Pid]] = {}


# ---------------------------------------------------------------------- helpers


class _Merger(Actor):
    """Merges this node's table with newly connected nodes', one at a time (see the
    module); tells the server ``merge_failed`` when a merge could not be made."""

    def init(self, server: Pid) -> None:
        self.server = server
        self.drops = shapes.DropLog(log)

    def handle_call(self, request: Any, from_: From) -> Any:
        self.drops.dropped("global merger", request, "the merger answers no call")
        return shapes.bad_request(MERGER_INFOS.owner, "the merger answers no call")

    def handle_cast(self, msg: Any) -> None:
        self.drops.dropped("global merger", msg, "the merger takes no cast")

    def handle_info(self, msg: Any) -> None:
        why = MERGER_INFOS.problem(msg)
        if why is not None:
            self.drops.dropped("global merger", msg, why)
            return
        _, self.node, self.peer = msg
        try:
            merged = self._run()
        except (Exit, CallTimeout) as exc:
            log.info("global: merge with %s failed: %s", self.node, exc)
            merged = False
        except BadReply as exc:
            log.warning("global: merge with %s failed: %s", self.node, exc)
            merged = False
        if not merged:
            actors.send(self.server, ("merge_failed", self.node))

    def _run(self) -> bool:
        me = actors.self()
        attempt = 0
        while True:
            if actors.call(self.server, ("peer", self.node)) != self.peer:
                return False  # the peer went away (or came back as another)
            mine: dict[str, Pid] = actors.call(self.server, ("targets",))
            theirs: dict[str, Pid] = checked_reply(
                actors.call(self.peer, ("targets",)), _TARGETS, self.node, "targets"
            )
            targets = {**theirs, **mine, self.node: self.peer}
            held = set_lock_on(targets, GLOBAL_LOCK, me, 0)
            if held is not None:
                try:
                    # every node of both sides locked (one not reached yet is not left
                    # out: it would keep its side's old bindings), all connected
                    if set(held) == set(targets) and self._meshed(held):
                        self._merge(held)
                        return True
                finally:
                    release_on(held, GLOBAL_LOCK, me)
            time.sleep(_backoff(attempt))
            attempt += 1

    def _meshed(self, held: dict[str, Pid]) -> bool:
        """Every locked node is connected to every other: a resolver's kill or notice
        to the other side's pid must not go to a node its node has not dialled yet (a
        message to a node being dialled can be lost with the dial); connect-all meshes
        the two sides within a few milliseconds, so a merge waits for that."""
        order = sorted(held)
        results = actors.multi_call([held[n] for n in order], ("up",), timeout=5.0)
        for node, (kind, up) in zip(order, results, strict=True):
            if kind != "ok" or shapes.problem(up, _UP) is not None:
                return False
            if not set(order) - {node} <= set(up):
                return False
        return True

    def _merge(self, held: dict[str, Pid]) -> None:
        own = _table(actors.call(self.server, ("table",)))
        other = _table(
            checked_reply(
                actors.call(self.peer, ("table",), timeout=10.0), _TABLE, self.node, "table"
            )
        )
        plan = exchange_plan(own, other)
        ops: list[tuple[Any, Any]] = [(n, (e.pid, e.resolver)) for n, e in plan.copy.items()]
        for clash, kept in _resolve_clashes(plan.clashes, held):
            ops.append((clash.name, None if kept is None else (kept.pid, kept.resolver)))
        if ops:
            actors.multi_call(list(held.values()), ("apply", ops), timeout=10.0)
        # every locked node (all of both sides) now holds the same table: each pair of
        # them is merged, as OTP spreads a sync to the partition's known nodes, so a
        # change made next on any of them reaches all of them, not only this pair
        actors.multi_call(list(held.values()), ("synced", sorted(held)), timeout=5.0)


def _table(rows: list[Any]) -> dict[Any, Entry]:
    return {name: Entry(pid, resolver) for name, pid, resolver in rows}


class BadReply(ValueError):
    """Another node's server answered a merge's request with a value that does not fit;
    the merge fails (and is tried again) instead of the merger crashing."""


# the answers a merger reads from another node's server
_TARGETS = shapes.Map(_NODE, Pid, TABLE_MAX)
_UP = shapes.Seq(_NODE, TABLE_MAX)
_TABLE = shapes.Seq(shapes.Tup((_NAME, Pid, _RESOLVER)), TABLE_MAX)
_ANSWERS = shapes.Seq(shapes.Tup((shapes.Str(64), shapes.ANY)), TABLE_MAX)


def checked_reply(value: Any, kind: shapes.Kind, node: str, what: str) -> Any:
    """``value`` if it is of ``kind`` (and every name in a table a global name), else
    :class:`BadReply` naming the node and the request."""
    why = shapes.problem(value, kind)
    if why is None and kind is _TABLE:
        bad = next((row[0] for row in value if not valid_name(row[0])), None)
        why = None if bad is None else f"name {bad!r:.60} is not a global name"
    if why is not None:
        raise BadReply(f"{node}'s answer to {what!r} does not fit: {why}")
    return value


def _resolve_clashes(
    clashes: list[Clash], servers: dict[str, Pid]
) -> list[tuple[Clash, Entry | None]]:
    """Call each clash's resolver once, on the node of its own side's pid: one request
    per node, all nodes at once."""
    by_node: dict[str, list[Clash]] = {}
    for clash in clashes:
        by_node.setdefault(clash.own.pid.node, []).append(clash)
    answers: dict[str, list[Any]] = {}
    for node, group in by_node.items():
        server = servers.get(node)
        if server is None:
            continue
        batch = [(c.name, c.other.pid, c.own.pid, c.own.resolver) for c in group]
        try:
            value = actors.call(server, ("resolve", batch), timeout=_resolve_deadline(batch))
        except (Exit, CallTimeout) as exc:  # its node halted mid-resolution
            log.info("global: resolvers on %s unreachable (%s)", node, exc)
            continue
        if shapes.problem(value, _ANSWERS) is None and len(value) == len(group):
            answers[node] = list(value)
    out: list[tuple[Clash, Entry | None]] = []
    for node, group in by_node.items():
        got = answers.get(node)
        for k, clash in enumerate(group):
            how, result = got[k] if got is not None else (UNREACHABLE, None)
            kept = outcome(clash, how, result)
            if how == RESOLVED and kept is None and result is not None:
                log.info(
                    "global: resolver %s returned %r for %r: unregistered",
                    clash.own.resolver,
                    result,
                    clash.name,
                )
            out.append((clash, kept))
    return out


class _Resolver(Actor):
    """Runs resolvers, apart from the server (they may stop processes, take time), and
    answers the merger that asked."""

    def init(self, server: Pid) -> None:
        self.server = server
        self.drops = shapes.DropLog(log)

    def handle_call(self, request: Any, from_: From) -> Any:
        self.drops.dropped("global resolver", request, "the resolver answers no call")
        return shapes.bad_request(RESOLVER_INFOS.owner, "the resolver answers no call")

    def handle_cast(self, msg: Any) -> None:
        self.drops.dropped("global resolver", msg, "the resolver takes no cast")

    def handle_info(self, msg: Any) -> None:
        why = RESOLVER_INFOS.problem(msg)
        if why is not None:
            self.drops.dropped("global resolver", msg, why)
            return
        _, caller, batch, serial = msg
        answers: list[tuple[str, Any]] = []
        for name, other, own, resolver in batch:
            try:
                result = load_resolver(resolver)(name, other, own)
                answers.append((RESOLVED, result if _transportable(result) else repr(result)))
            except Exception as exc:
                log.info("global: resolver %s for %r raised %r", resolver, name, exc)
                answers.append((RAISED, repr(exc)))
        actors.reply(caller, answers)
        actors.send(self.server, ("resolved", serial, actors.self()))


def _resolve_deadline(batch: list[Any]) -> float:
    """How long a batch of resolvers may take (10 s, and 0.1 s more per clash)."""
    return 10.0 + len(batch) * 0.1


_BAD_INPUT = (TypeError, ValueError, IndexError, KeyError, AttributeError)


#: The deepest a tuple name may nest (dist's codec carries no deeper value).
_NAME_DEPTH = 64


def valid_name(name: Any, _depth: int = 0) -> bool:
    """A global name: a str, int or bytes, or a tuple of names (hashable, and carried by
    dist's codec unchanged)."""
    if isinstance(name, (str, bytes)) or (isinstance(name, int) and not isinstance(name, bool)):
        return True
    return (
        isinstance(name, tuple)
        and _depth < _NAME_DEPTH
        and all(valid_name(part, _depth + 1) for part in name)
    )


def _checked_op(op: Any) -> tuple[Any, Any]:
    name, entry = op
    if not valid_name(name):
        raise TypeError(f"name {name!r}: expected a str, int, bytes or a tuple of these")
    if entry is not None:
        pid, resolver = entry
        if not isinstance(pid, Pid) or not isinstance(resolver, str):
            raise TypeError(f"binding {entry!r}: expected (Pid, resolver name)")
    return name, entry


def _transportable(value: Any) -> bool:
    return value is None or isinstance(value, (Pid, str, int, float, bool))


# ---------------------------------------------------------------------- for Singleton


def whereis(name: Any) -> Pid | None:
    table = _shared.read()
    if table is not None:
        found = table.get(name)
        return found if found is None or not _gone_here(found) else None
    pid: Pid | None = actors.call(local_server(), ("whereis", name))
    return pid


def _gone_here(pid: Pid) -> bool:
    """``pid`` is of this node and its process has ended, though the server has not yet
    taken its name off (it does on the process's Down, a moment later). A read must not
    hand it out meanwhile: the seed's recipe, restarted at once by its supervisor, linked to
    the dead pid it read and crashed again, eleven times in 2 ms (intensity spent)."""
    rt = actors.current_runtime()
    if rt is None or pid.node != rt.node.name:
        return False
    if pid.creation != rt.node.creation:
        return True  # an earlier incarnation of this node
    return not actors.process_alive(pid.id, pid.serial)


def sync_now(timeout: float) -> list[str]:
    nodes: list[str] = actors.call(local_server(), ("sync",), timeout)
    return nodes


def elect(name: Any, candidate: Any, resolver: str, timeout: float = 2.0) -> bool | None:
    """Register ``candidate()`` as ``name`` if nobody holds it, under the cluster lock
    (the candidate is made while the lock is held): True if it won, False if the name is
    held, None if the lock could not be had in ``timeout``."""

    def decide(holder: Pid | None) -> tuple[list[Any], bool]:
        if holder is not None:
            return [], False
        pid = candidate()
        if pid is None:
            return [], False
        return [(name, (pid, resolver))], True

    try:
        return locked_change(("whereis", name), decide, timeout)
    except CallTimeout:
        return None


def unregister_if(name: Any, pid: Pid, timeout: float = 5.0) -> None:
    """Unregister ``name`` if it is still bound to ``pid`` (a hand-over)."""
    locked_change(("whereis", name), lambda h: ([(name, None)] if h == pid else [], None), timeout)
