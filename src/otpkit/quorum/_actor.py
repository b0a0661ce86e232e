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
* ``members() -> (version, sorted names)``; ``leave(timeout) -> bool``;
  ``subscribe(key, on=True)``: the caller gets ``LeaseGranted`` / ``LeaseLost`` for
  leases of ``key`` held by this node; ``effects(key)``: the fenced effects this member
  accepted, oldest first, as ``[(epoch, effect), ...]``.

If the quorum actor itself ends, every lease of the node is lost with it: a holder that
must not outlive that should monitor ``whereis(QUORUM_NAME)``.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from otpkit import actors
from otpkit import distribution as dist
from otpkit.actors import NOREPLY, Actor, Down, From, Pid
from otpkit.distribution import NodeDown, NodeUp
from otpkit.errors import CallTimeout
from otpkit.quorum._core import (
    Changed,
    Lease,
    LeaseGranted,
    LeaseLost,
    Notify,
    Out,
    QuorumConfig,
    QuorumCore,
    Reply,
    Send,
)

log = logging.getLogger("otpkit.quorum")

#: The local name and dist service of every node's quorum actor.
QUORUM_NAME = "otpkit_quorum"
#: Seconds between clock ticks: the resolution of every timeout of the protocol.
TICK = 0.05


class Quorum(Actor):
    """One node's member of the majority policy: ``ChildSpec("quorum", Quorum,
    (QuorumConfig(...),))`` in the node's kernel, after dist."""

    def init(self, config: QuorumConfig | None = None) -> None:
        me = actors.self()
        self.node = me.node
        self.core = QuorumCore(
            (me.node, me.creation), config or QuorumConfig(), time.monotonic(), random.Random()
        )
        self.subscribers: dict[str, set[Pid]] = {}
        self.monitored: dict[Pid, Any] = {}
        actors.register(QUORUM_NAME)
        dist.register_service(QUORUM_NAME)
        dist.monitor_nodes(True)
        for name in dist.nodes():
            self._perform(self.core.node_up(name, time.monotonic()))
        actors.send_after(TICK, ("$tick",))

    # ------------------------------------------------------------------ effects

    def _perform(self, outs: list[Out]) -> None:
        """Carry out the core's effects; messages to this node go straight back in."""
        queue = list(outs)
        while queue:
            out = queue.pop(0)
            if isinstance(out, Send):
                if out.node == self.node:
                    queue.extend(self._receive(out.msg))
                else:
                    actors.send((QUORUM_NAME, out.node), out.msg)
            elif isinstance(out, Reply):
                actors.reply(out.token, out.value)
            elif isinstance(out, Notify):
                self._notify(out.holder, out.event)
            elif isinstance(out, Changed):
                log.info(
                    "%s: quorum members v%d: %s", self.node, out.version, ", ".join(out.members)
                )

    def _receive(self, msg: Any) -> list[Out]:
        try:
            return self.core.receive(msg, time.monotonic())
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            log.warning("%s: dropped a malformed quorum message %.120r: %s", self.node, msg, exc)
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
        if msg == ("$tick",):
            actors.send_after(TICK, ("$tick",))
            self._perform(self.core.tick(now))
        elif isinstance(msg, NodeUp):
            self._perform(self.core.node_up(msg.node, now))
        elif isinstance(msg, NodeDown):
            self._perform(self.core.node_down(msg.node, msg.reason, now))
        elif isinstance(msg, Down):
            self.monitored.pop(msg.pid, None)
            for subs in self.subscribers.values():
                subs.discard(msg.pid)
            self._perform(self.core.release_holder(msg.pid, now))
        elif isinstance(msg, tuple) and len(msg) >= 2 and isinstance(msg[0], str):
            self._perform(self._receive(msg))
        else:
            super().handle_info(msg)

    def handle_call(self, request: Any, from_: From) -> Any:
        now = time.monotonic()
        op = request[0]
        if op == "acquire":
            _, key, timeout, holder = request
            self._perform(self.core.acquire(key, holder, from_, timeout, now))
            return NOREPLY
        if op == "fence":
            _, key, epoch, effect, timeout = request
            self._perform(self.core.fence(key, epoch, effect, from_, timeout, now))
            return NOREPLY
        if op == "leave":
            self._perform(self.core.leave(from_, request[1], now))
            return NOREPLY
        if op == "release":
            self._perform(self.core.release(request[1], request[2], now))
            return "ok"
        if op == "members":
            return (self.core.version, list(self.core.member_names()))
        if op == "subscribe":
            _, key, pid, on = request
            if on:
                self.subscribers.setdefault(key, set()).add(pid)
                if pid not in self.monitored:
                    self.monitored[pid] = actors.monitor(pid)
            else:
                self.subscribers.get(key, set()).discard(pid)
            return "ok"
        if op == "effects":
            return list(self.core.effects.get(request[1], ()))
        return super().handle_call(request, from_)


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


def leave(timeout: float = 5.0) -> bool:
    """Leave the member set for good (graceful hand-over): releases this node's leases
    and returns True once a majority agreed this node is out; False on timeout."""
    result: bool = _call(("leave", timeout), timeout)
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
    try:
        return actors.call(QUORUM_NAME, request, timeout + 2.0)
    except CallTimeout:
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
    "leave",
    "members",
    "release",
    "subscribe",
]
