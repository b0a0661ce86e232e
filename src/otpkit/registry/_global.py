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
  node)``); then the smaller-named node's :class:`_Syncer` takes the lock on both sides'
  nodes, reads both tables, copies one-sided names across, calls the resolver once per
  clash (on the node of the resolving side's pid) and writes the outcome to every node it
  locked. A later pair of the same two partitions finds equal tables: one resolver call
  per clash.

The server never waits on another node inside a handler: user operations run in the
caller, merges in a syncer, resolvers in a process of their own.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from otpkit.actors import _api
from otpkit.actors._actor import NOREPLY, Actor, Stop
from otpkit.actors._pid import Down, From, Pid, Ref
from otpkit.dist import NodeDown, NodeUp, register_service
from otpkit.dist import monitor_nodes as _monitor_nodes
from otpkit.dist import nodes as _dist_nodes
from otpkit.errors import CallTimeout, NodeError
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

#: The server's local name and its dist service name.
GLOBAL_NAME = "otpkit_global"
#: The lock every change of the name table is made under (OTP's ``global`` resource).
GLOBAL_LOCK = "global"


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
        self.me = _api.self()
        self.node = self.me.node
        self.names: dict[Any, Entry] = {}
        self.monitors: dict[Pid, Ref] = {}  # one per registered pid or lock holder
        self.locks = LockTable()
        self.peers: dict[str, Pid] = {}  # visible nodes' servers that greeted this one
        self.up: set[str] = set()
        self.synced: set[str] = set()
        self.syncers: dict[str, Pid] = {}
        self.sync_waiters: list[From] = []
        self.watchers: dict[Any, set[Pid]] = {}
        self.dirty = False
        _shared.take_over()
        _shared.publish({})
        _api.register(GLOBAL_NAME)
        self.dist = True
        try:
            register_service(GLOBAL_NAME)
            _monitor_nodes(True)
        except NodeError:  # a node without dist: a one-node registry
            self.dist = False
        if self.dist:
            for node in _dist_nodes():
                self._node_up(node)

    # ------------------------------------------------------------------ calls

    def handle_call(self, request: Any, from_: From) -> Any:
        try:
            return self._call(request, from_)
        finally:
            self._publish()  # once per message: a merge of many names is one write

    def handle_info(self, msg: Any) -> None:
        try:
            self._info(msg)
        finally:
            self._publish()

    def _call(self, request: Any, from_: From) -> Any:
        op = request[0]
        if op == "targets":
            # only nodes whose table was merged with this one: a change made over a node
            # not merged yet would overwrite its binding without a resolver (the merge
            # that follows settles the difference instead)
            return {self.node: self.me, **{n: p for n, p in self.peers.items() if n in self.synced}}
        if op == "peer":
            return self.peers.get(request[1]) if request[1] in self.up else None
        if op == "lock":
            _, resource, requester, holder = request
            granted = self.locks.acquire(resource, requester, holder)
            if granted:
                self._monitor(holder)
            return granted
        if op == "unlock":
            _, resource, requester, holder = request
            self.locks.release(resource, requester, holder)
            self._forget_if_unused(holder)
            return True
        if op == "check":
            return check_register(self.names, request[1], request[2])
        if op == "register":
            _, name, pid, resolver = request
            self._bind(name, Entry(pid, resolver))
            return True
        if op == "unregister":
            self._unbind(request[1])
            return True
        if op == "apply":
            for name, entry in request[1]:
                if entry is None:
                    self._unbind(name)
                else:
                    self._bind(name, Entry(entry[0], entry[1]))
            return True
        if op == "table":
            return [(name, e.pid, e.resolver) for name, e in self.names.items()]
        if op == "whereis":
            entry = self.names.get(request[1])
            return entry.pid if entry else None
        if op == "names":
            return list(self.names)
        if op == "resolve":
            _, name, other, own, resolver = request
            _api.spawn(_Resolve, from_, name, other, own, resolver)
            return NOREPLY
        if op == "synced":
            self._synced(request[1])
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
        if op == "info":
            return {
                "names": len(self.names),
                "peers": sorted(self.peers),
                "up": sorted(self.up),
                "synced": sorted(self.synced),
                "locks": self.locks.held(),
            }
        return super().handle_call(request, from_)

    # ------------------------------------------------------------------ messages

    def _info(self, msg: Any) -> None:
        if isinstance(msg, Down):
            self._down(msg.pid, msg.reason)
        elif isinstance(msg, NodeUp):
            self._node_up(msg.node)
        elif isinstance(msg, NodeDown):
            self._node_down(msg.node)
        elif isinstance(msg, tuple) and msg and msg[0] == "hello":
            self._hello(str(msg[1]), msg[2])
        elif isinstance(msg, tuple) and msg and msg[0] == "resync":
            self._maybe_sync(msg[1])
        else:
            super().handle_info(msg)

    def _node_up(self, node: str) -> None:
        self.up.add(node)
        self.synced.discard(node)
        _api.send((GLOBAL_NAME, node), ("hello", self.node, self.me))
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
        _api.send(pid, ("hello", self.node, self.me))  # it may have missed ours
        self._maybe_sync(node)

    def _maybe_sync(self, node: str) -> None:
        """The smaller-named node of a pair merges (once per greeting)."""
        pid = self.peers.get(node)
        if (
            pid is None
            or node not in self.up
            or node in self.synced
            or node in self.syncers
            or self.node > node
        ):
            return
        syncer = _api.spawn(_Syncer, self.me, node, pid)
        if syncer is not None:
            self.syncers[node] = syncer
            self._monitor(syncer)

    def _peer_gone(self, node: str) -> None:
        """``node``'s server is gone (its node, or the process alone): forget the pair."""
        self.synced.discard(node)
        self.peers.pop(node, None)
        syncer = self.syncers.pop(node, None)
        if syncer is not None:
            _api.exit(syncer, "kill")

    def _node_down(self, node: str) -> None:
        self.up.discard(node)
        self._peer_gone(node)
        for name, entry in list(self.names.items()):
            if entry.pid.node == node:
                self._unbind(name)
        self.locks.release_holders(p for p in self.locks.holders() if p.node == node)
        self._answer_sync()

    def _synced(self, node: str) -> None:
        if node in self.up:
            self.synced.add(node)
        syncer = self.syncers.get(node)
        if syncer is not None:
            self.syncers.pop(node)
            self._forget_if_unused(syncer)
        self._answer_sync()

    def _answer_sync(self) -> None:
        if self.sync_waiters and self.up <= self.synced:
            waiters, self.sync_waiters = self.sync_waiters, []
            for waiter in waiters:
                _api.reply(waiter, sorted(self.up))

    def _down(self, pid: Pid, reason: Any) -> None:
        self.monitors.pop(pid, None)
        for name, entry in list(self.names.items()):
            if entry.pid == pid:
                self._unbind(name)
        self.locks.release_holders([pid])
        for watchers in self.watchers.values():
            watchers.discard(pid)
        for node, peer in list(self.peers.items()):
            if peer == pid:
                self._peer_gone(node)
        for node, syncer in list(self.syncers.items()):
            if syncer == pid:
                # it failed (a peer timed out): try again while the pair is up
                del self.syncers[node]
                _api.send_after(0.2, ("resync", node))

    # ------------------------------------------------------------------ table

    def _bind(self, name: Any, entry: Entry) -> None:
        old = self.names.get(name)
        if old == entry:
            return
        self.names[name] = entry
        self._monitor(entry.pid)
        if old is not None and old.pid != entry.pid:
            self._forget_if_unused(old.pid)
        if old is None or old.pid != entry.pid:
            self._changed(name, entry.pid)

    def _unbind(self, name: Any) -> None:
        old = self.names.pop(name, None)
        if old is not None:
            self._forget_if_unused(old.pid)
            self._changed(name, None)

    def _changed(self, name: Any, pid: Pid | None) -> None:
        self.dirty = True
        for watcher in self.watchers.get(name, ()):
            _api.send(watcher, NameChanged(name, pid))

    def _monitor(self, pid: Pid) -> None:
        if pid not in self.monitors and pid != self.me:
            self.monitors[pid] = _api.monitor(pid)

    def _forget_if_unused(self, pid: Pid) -> None:
        if (
            pid in self.monitors
            and not any(e.pid == pid for e in self.names.values())
            and pid not in self.locks.holders()
            and pid not in self.peers.values()
            and pid not in self.syncers.values()
            and not any(pid in w for w in self.watchers.values())
        ):
            _api.demonitor(self.monitors.pop(pid), flush=True)

    def _publish(self) -> None:
        if self.dirty:
            self.dirty = False
            _shared.publish({name: e.pid for name, e in self.names.items()})


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
    me = _api.self()
    attempt = 0
    while True:
        order = sorted(targets)
        results = _api.multi_call(
            [targets[n] for n in order], ("lock", resource, requester, me), timeout=5.0
        )
        granted = {n: targets[n] for n, r in zip(order, results, strict=True) if r == ("ok", True)}
        refused = [
            n for n, r in zip(order, results, strict=True) if r[0] != "exit" and r[1] is not True
        ]
        if not refused:
            return granted
        release_on(granted, resource, requester)
        if retries is not None and attempt >= retries:
            return None
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(_backoff(attempt))
        attempt += 1


def release_on(targets: dict[str, Pid], resource: Any, requester: Any) -> None:
    if targets:
        _api.multi_call(
            list(targets.values()), ("unlock", resource, requester, _api.self()), timeout=5.0
        )


def local_server() -> Pid:
    pid = _api.whereis(GLOBAL_NAME)
    if pid is None:
        raise NodeError("this node runs no global registry (is it an otpkit node?)")
    return pid


@contextmanager
def global_lock(timeout: float = 30.0) -> Iterator[dict[str, Pid]]:
    """Hold the ``"global"`` lock on every node this node knows; yields the servers.

    The set of nodes is read again once the lock is held; if it changed (a node came or
    went meanwhile), the lock is released and taken again over the new set, as OTP does.
    """
    server = local_server()
    me = _api.self()
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        targets: dict[str, Pid] = _api.call(server, ("targets",))
        held = set_lock_on(targets, GLOBAL_LOCK, me, None, deadline)
        if held is None:
            raise CallTimeout(server, ("lock", GLOBAL_LOCK), timeout)
        now: dict[str, Pid] = _api.call(server, ("targets",))
        if set(now) <= set(held) and all(now[n] == held[n] for n in now):
            break
        release_on(held, GLOBAL_LOCK, me)
        time.sleep(_backoff(attempt))
        attempt += 1
    try:
        yield now
    finally:
        release_on(held, GLOBAL_LOCK, me)


# ---------------------------------------------------------------------- helpers


class _Syncer(Actor):
    """Merges this node's table with a newly connected node's (see the module)."""

    def init(self, server: Pid, node: str, peer: Pid) -> None:
        self.server, self.node, self.peer = server, node, peer
        _api.send(_api.self(), "go")

    def handle_info(self, msg: Any) -> None:
        if msg != "go":
            super().handle_info(msg)
            return
        me = _api.self()
        attempt = 0
        while True:
            if _api.call(self.server, ("peer", self.node)) != self.peer:
                raise Stop("normal")  # the peer went away (or came back as another)
            mine: dict[str, Pid] = _api.call(self.server, ("targets",))
            try:
                theirs: dict[str, Pid] = _api.call(self.peer, ("targets",))
            except Exception:
                raise Stop("normal") from None
            targets = {**theirs, **mine, self.node: self.peer}
            held = set_lock_on(targets, GLOBAL_LOCK, me, 0)
            if held is not None:
                try:
                    self._merge(held)
                    return
                finally:
                    release_on(held, GLOBAL_LOCK, me)
            time.sleep(_backoff(attempt))
            attempt += 1

    def _merge(self, held: dict[str, Pid]) -> None:
        own = _table(_api.call(self.server, ("table",)))
        other = _table(_api.call(self.peer, ("table",), timeout=10.0))
        plan = exchange_plan(own, other)
        ops: list[tuple[Any, Any]] = [(n, (e.pid, e.resolver)) for n, e in plan.copy.items()]
        for clash in plan.clashes:
            kept = _resolve_clash(clash, held)
            ops.append((clash.name, None if kept is None else (kept.pid, kept.resolver)))
        if ops:
            _api.multi_call(list(held.values()), ("apply", ops), timeout=10.0)
        _api.call(self.peer, ("synced", self.server.node), timeout=5.0)
        _api.call(self.server, ("synced", self.node), timeout=5.0)
        raise Stop("normal")


def _table(rows: list[Any]) -> dict[Any, Entry]:
    return {name: Entry(pid, resolver) for name, pid, resolver in rows}


def _resolve_clash(clash: Clash, servers: dict[str, Pid]) -> Entry | None:
    server = servers.get(clash.own.pid.node)
    how, result = UNREACHABLE, None
    if server is not None:
        try:
            how, result = _api.call(
                server,
                ("resolve", clash.name, clash.other.pid, clash.own.pid, clash.own.resolver),
                timeout=10.0,
            )
        except Exception as exc:
            log.info("global: resolver for %r unreachable (%s)", clash.name, exc)
    kept = outcome(clash, how, result)
    if how == RESOLVED and kept is None and result is not None:
        log.info(
            "global: resolver %s returned %r for %r: unregistered",
            clash.own.resolver,
            result,
            clash.name,
        )
    return kept


class _Resolve(Actor):
    """Runs one resolver, apart from the server (it may stop processes, take time)."""

    def init(self, caller: From, name: Any, other: Pid, own: Pid, resolver: str) -> None:
        self.args = (caller, name, other, own, resolver)
        _api.send(_api.self(), "go")

    def handle_info(self, msg: Any) -> None:
        caller, name, other, own, resolver = self.args
        try:
            result = load_resolver(resolver)(name, other, own)
            answer: tuple[str, Any] = (RESOLVED, result if _transportable(result) else repr(result))
        except Exception as exc:
            log.info("global: resolver %s for %r raised %r", resolver, name, exc)
            answer = (RAISED, repr(exc))
        _api.reply(caller, answer)
        raise Stop("normal")


def _transportable(value: Any) -> bool:
    return value is None or isinstance(value, (Pid, str, int, float, bool))


# ---------------------------------------------------------------------- for Singleton


def whereis(name: Any) -> Pid | None:
    table = _shared.read()
    if table is not None:
        return table.get(name)
    pid: Pid | None = _api.call(local_server(), ("whereis", name))
    return pid


def sync_now(timeout: float) -> list[str]:
    nodes: list[str] = _api.call(local_server(), ("sync",), timeout)
    return nodes


def elect(name: Any, candidate: Any, resolver: str, timeout: float = 2.0) -> bool | None:
    """Register ``candidate()`` as ``name`` if nobody holds it, under the cluster lock
    (the candidate is made while the lock is held): True if it won, False if the name is
    held, None if the lock could not be had in ``timeout``."""
    try:
        with global_lock(timeout) as servers:
            if _api.call(local_server(), ("whereis", name)) is not None:
                return False
            pid = candidate()
            if pid is None:
                return False
            _api.multi_call(list(servers.values()), ("register", name, pid, resolver))
            return True
    except CallTimeout:
        return None


def unregister_if(name: Any, pid: Pid, timeout: float = 5.0) -> None:
    """Unregister ``name`` if it is still bound to ``pid`` (a hand-over)."""
    with global_lock(timeout) as servers:
        if _api.call(local_server(), ("whereis", name)) == pid:
            _api.multi_call(list(servers.values()), ("unregister", name))
