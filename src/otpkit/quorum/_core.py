"""The decisions of the ``"majority"`` policy: membership, leases, fencing (see
ARCHITECTURE.md, *The two policies, and the majority's three parts*).

Everything here is a plain state machine over plain values: :class:`QuorumCore` takes
events (a message from a peer, a node up or down, a client request, the clock) with the
current monotonic time and returns what to do (:class:`Send`, :class:`Reply`,
:class:`Notify`, :class:`Changed`). The ``Quorum`` actor (``quorum._actor``) is the thin
shell that performs those effects; the unit tests drive several cores over a simulated
network.

Nodes are known by incarnation, ``(name, creation)``: a restarted node comes back with
no memory, so it is a new member, never the old one with its promises forgotten.

**Membership.** State: ``(version, members)``, an agreed sorted tuple of incarnations.
Version ``v + 1`` is decided by single-decree Paxos among ``members(v)``: ballots
``(round, name, creation)``; phase 1 ``prepare``/``promise``, phase 2
``accept``/``accepted``; a proposer that learns an accepted value in phase 1 proposes
that value instead of its own. A value differs from ``members(v)`` by exactly one node
(acceptors refuse anything else). A majority of a member set ``M`` is more than
``max(len(M), expected_size) / 2`` of its members, so a lone pod at cold boot with
``expected_size=3`` is never a majority. Decided states are final and are gossiped
(``hello`` every ``gossip_interval``): a node behind adopts any higher decided version.

* Cold boot: a node starts at version 0 with no members. ``settle`` seconds after its
  start, a node at version 0 that has the smallest name among itself and the connected
  peers also at version 0 proposes version 1 = those nodes, by the same Paxos, every node
  at version 0 acting as acceptor. This first decision is safe when at most
  ``expected_size`` nodes take part in the cold boot (any two majorities then
  intersect); without ``expected_size`` two sides of a partition at cold boot may each
  form a cluster.
* Joins: the coordinator (the smallest-named member connected to this node, or this
  node) adds a connected peer that asks to join (its ``hello`` says so, at the
  coordinator's version: a node learns the version from the coordinator's ``hello``
  first), one at a time.
* Leaves: ``leave()`` releases this node's leases, hands its grant records to the other
  members, and proposes its own removal; a node that left never asks to join again.
  The last member cannot leave the set; it only stops taking part.
* Removal: the coordinator removes a member that has been down (from its view) for
  ``remove_after`` seconds, and at once a member whose name is connected as a newer
  incarnation (the old one is dead).

**Leases.** A candidate asks every member of its current version for a grant
``(key, epoch, holder, term)``. A member grants iff it is a member, at the same version,
with no membership change accepted but not yet learned, and its record for the key
allows it (:func:`grant_allowed`): the epoch is higher than any it granted for the key
(or the same epoch to the same holder: a renewal), and it holds no unexpired grant to
another holder (expiry on its own clock: receipt + term + margin) unless it saw that
holder's node die with its sockets closed. A member added to an existing set grants
nothing new for ``term + margin`` after it learns it is a member (it has no records).
The candidate holds the lease with grants from a majority; it counts its expiry from
the moment it *sent* the request: ``sent + term - margin``, so it expires at least
``2 * margin`` before any granting member lets another holder in (clock rates may drift
by that much). It renews every ``term / 3`` and reports :class:`LeaseLost` when it
cannot renew before that expiry. ``release`` voids the records at once (hand-over).

**Contests.** Candidates for a free key must not stall each other while a member is
silent (paused): each would grant itself first (its own request needs no network) and
refuse the others until its round times out, and candidates retrying on one cadence
would do so for ever. So: (1) a member whose record blocking a request is its own grant
to itself (not a lease it holds) yields if the request's ``(epoch, incarnation)`` ranks
higher: it drops its pending round in the same step, so that grant can never make it a
holder, withdraws the grant and judges the request without it; both sides rank the pair
alike, so one of two yields. (2) A candidate that holds an unexpired grant to another
holder does not ask (it would refuse itself) and tries again shortly. (3) A round
refused for an epoch at least its own ends at once and is retried after a random pause.
(4) A grant that reaches a candidate after it dropped the round is released at once.

**Fencing.** ``fence(key, epoch, effect)`` is accepted iff a majority of members (same
version, no change pending) hold ``(epoch, holder)`` as their highest grant for the key
and have not voided it. Once a higher epoch reached a majority, any majority holds it,
so an old epoch can never be fenced again. Members keep the last ``effects_kept``
accepted effects per key.

Known limit: two removals within one term may leave a majority with no record of a
live lease granted before them; removals wait for ``remove_after`` (much longer than a
term) or a graceful leave, whose records are handed over.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: A node incarnation: (name, creation).
Inc = tuple[str, int]
#: A Paxos ballot: (round, proposer name, proposer creation).
Ballot = tuple[int, str, int]
Members = tuple[Inc, ...]

#: NodeDown reasons that mean the peer's sockets closed (its process is gone).
_CLOSED = "connection closed"


@dataclass(frozen=True)
class QuorumConfig:
    """Settings of the majority policy; the same on every node of a cluster.

    ``expected_size`` (0: none): majorities are counted over
    ``max(len(members), expected_size)``. ``remove_after``: seconds a member may be down
    before it is removed. ``term``/``margin``: the lease term and the clock drift margin
    (seconds). ``settle``: seconds after start before a node may found the cluster.
    ``round_timeout``: how long a round of requests waits for replies.
    ``effects_kept``: accepted fenced effects kept per key.
    """

    expected_size: int = 0
    remove_after: float = 30.0
    term: float = 3.0
    margin: float = 0.5
    settle: float = 2.0
    round_timeout: float = 0.5
    gossip_interval: float = 1.0
    effects_kept: int = 100

    def __post_init__(self) -> None:
        if self.expected_size < 0:
            raise ValueError(f"expected_size={self.expected_size!r}: expected an int >= 0")
        if self.term <= 0:
            raise ValueError(f"term={self.term!r}: expected seconds > 0")
        if not 0 <= self.margin < self.term / 3:
            raise ValueError(
                f"margin={self.margin!r}: expected 0 <= margin < term / 3 ({self.term / 3})"
            )
        for name in ("remove_after", "settle", "round_timeout", "gossip_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected seconds > 0")
        if self.effects_kept < 1:
            raise ValueError(f"effects_kept={self.effects_kept!r}: expected an int >= 1")


# ---------------------------------------------------------------------- messages out


@dataclass(frozen=True)
class Lease:
    """A lease this node holds: valid until ``expires_monotonic`` (``time.monotonic()``
    of this host) at the latest, unless renewed."""

    key: str
    epoch: int
    expires_monotonic: float


@dataclass(frozen=True)
class LeaseGranted:
    """To the holder and the key's subscribers: this node now holds ``key``."""

    key: str
    epoch: int
    expires_monotonic: float


@dataclass(frozen=True)
class LeaseLost:
    """To the holder and the key's subscribers: the lease of ``epoch`` is gone."""

    key: str
    epoch: int


@dataclass(frozen=True)
class Send:
    """Send ``msg`` to the quorum actor of node ``node`` (possibly this one)."""

    node: str
    msg: tuple[Any, ...]


@dataclass(frozen=True)
class Reply:
    """Answer the client request identified by ``token``."""

    token: Any
    value: Any


@dataclass(frozen=True)
class Notify:
    """Tell ``holder`` (and the key's subscribers) about its lease."""

    holder: Any
    event: LeaseGranted | LeaseLost


@dataclass(frozen=True)
class Changed:
    """This node learned a new decided member set."""

    version: int
    members: tuple[str, ...]


Out = Send | Reply | Notify | Changed


# ---------------------------------------------------------------------- pure decisions


def quorum_size(members: Members, expected_size: int) -> int:
    """How many votes of ``members`` make a majority."""
    return max(len(members), expected_size) // 2 + 1


def is_majority(votes: Iterable[Inc], members: Members, expected_size: int) -> bool:
    """True if the votes of distinct members are more than half of
    ``max(len(members), expected_size)``; votes of non-members do not count."""
    return len(set(votes) & set(members)) >= quorum_size(members, expected_size)


def is_single_change(old: Members, new: Members) -> bool:
    """A valid next member set: non-empty, sorted, and one node added or removed."""
    return bool(new) and list(new) == sorted(set(new)) and len(set(old) ^ set(new)) == 1


def is_closed_reason(reason: str) -> bool:
    """True if a ``NodeDown`` reason says the peer's sockets closed (EOF or reset: its
    process is gone), as opposed to a silence (``net_tick_timeout``) or a policy drop."""
    text = reason.lower()
    if reason == _CLOSED:
        return True
    return text.startswith(("recv:", "send:")) and ("reset" in text or "broken pipe" in text)


@dataclass
class Grant:
    """A member's record of its highest grant for one key."""

    epoch: int
    holder: Inc
    expires: float  # this member's clock
    void: bool = False  # released, or the holder's node died with its sockets closed


def grant_allowed(rec: Grant | None, epoch: int, holder: Inc, now: float, quiet: bool) -> bool:
    """Whether a member grants ``(epoch, holder)`` given its record for the key.

    A renewal (the same epoch to the same holder, not voided) is always granted. A new
    grant needs an epoch above the record's, no unexpired live grant to another holder,
    and the member out of its quiet period.
    """
    if rec is not None and rec.epoch == epoch and rec.holder == holder:
        return not rec.void
    if quiet:
        return False
    if rec is None:
        return True
    if epoch <= rec.epoch:
        return False
    return rec.holder == holder or rec.void or now >= rec.expires


def fence_allowed(rec: Grant | None, epoch: int, holder: Inc) -> bool:
    """Whether a member accepts an effect fenced with ``(epoch, holder)``."""
    return rec is not None and not rec.void and rec.epoch == epoch and rec.holder == holder


def choose_value(promises: Iterable[tuple[Ballot | None, Members | None]], own: Members) -> Members:
    """Paxos phase 2's value: the accepted value of the highest ballot among the
    promises, else the proposer's own."""
    best: tuple[Ballot, Members] | None = None
    for ballot, value in promises:
        if ballot is not None and value is not None and (best is None or ballot > best[0]):
            best = (ballot, value)
    return own if best is None else best[1]


def next_change(
    me: Inc,
    members: Members,
    connected: dict[str, Inc],
    joinable: set[str],
    down_since: dict[str, float],
    now: float,
    remove_after: float,
) -> Members | None:
    """The coordinator's next proposal, one node at a time, or None.

    In order: drop a member whose name is connected as another incarnation; drop a
    member down for ``remove_after``; add a connected peer that asks to join. Never
    empties the set.
    """
    names = {m[0] for m in members}
    for m in members:
        inc = connected.get(m[0])
        if m != me and inc is not None and inc != m and len(members) > 1:
            return tuple(x for x in members if x != m)
    for m in members:
        since = down_since.get(m[0])
        if m != me and since is not None and now - since >= remove_after and len(members) > 1:
            return tuple(x for x in members if x != m)
    for name in sorted(joinable):
        inc = connected.get(name)
        if inc is not None and name not in names:
            return tuple(sorted((*members, inc)))
    return None


# ---------------------------------------------------------------------- state machine


@dataclass
class _Proposal:
    slot: int
    ballot: Ballot
    value: Members
    voters: Members
    started: float
    phase: int = 1
    promises: dict[Inc, tuple[Ballot | None, Members | None]] = field(default_factory=dict)
    accepts: set[Inc] = field(default_factory=set)


@dataclass
class _Round:
    """One request to every member (a grant or a fence), and its answers."""

    rid: int
    key: str
    epoch: int
    started: float
    version: int
    voters: Members
    ok: set[Inc] = field(default_factory=set)
    no: set[Inc] = field(default_factory=set)
    beaten: bool = False  # refused in favour of a competing epoch (acquire rounds)

    def outcome(self, expected_size: int) -> bool | None:
        if is_majority(self.ok, self.voters, expected_size):
            return True
        possible = tuple(v for v in self.voters if v not in self.no)
        if not is_majority(possible, self.voters, expected_size):
            return False
        return None


@dataclass
class _Want:
    key: str
    holder: Any
    token: Any
    deadline: float
    retry_at: float
    round: _Round | None = None


@dataclass
class _Held:
    key: str
    epoch: int
    holder: Any
    expires: float
    renew_at: float
    round: _Round | None = None


@dataclass
class _Fence:
    round: _Round
    token: Any
    deadline: float


class QuorumCore:
    """One node's part of the majority policy. Every method takes the current
    monotonic time and returns the effects to perform, in order."""

    def __init__(
        self, me: Inc, config: QuorumConfig, now: float, rng: random.Random | None = None
    ) -> None:
        self.me = me
        self.config = config
        self.rng = rng or random.Random()
        self.booted = now
        self.version = 0
        self.members: Members = ()
        self.left = False
        self._leaving: list[tuple[Any, float]] = []
        self.quiet_until = 0.0
        # acceptor state for slot version + 1
        self.promised: Ballot | None = None
        self.accepted: tuple[Ballot, Members] | None = None
        self.accepted_at = 0.0
        self.max_round = 0
        self.proposal: _Proposal | None = None
        self.next_proposal_at = 0.0
        # peers: connected names, their incarnations, versions and wishes
        self.connected: set[str] = set()
        self.peer_inc: dict[str, Inc] = {}
        self.peer_version: dict[str, int] = {}
        self.peer_joinable: dict[str, bool] = {}
        self.down_since: dict[str, float] = {}
        self.next_gossip = 0.0
        # member side of leases
        self.grants: dict[str, Grant] = {}
        self.effects: dict[str, deque[tuple[int, Any]]] = {}
        # candidate side
        self.seen_epoch: dict[str, int] = {}
        self.wants: dict[str, _Want] = {}
        self.held: dict[str, _Held] = {}
        self.fences: dict[int, _Fence] = {}
        self._next_rid = 0
        self._out: list[Out] = []

    # ------------------------------------------------------------------ queries

    @property
    def is_member(self) -> bool:
        return self.me in self.members and not self.left

    def member_names(self) -> tuple[str, ...]:
        return tuple(sorted(m[0] for m in self.members))

    def _take(self) -> list[Out]:
        out, self._out = self._out, []
        return out

    def _send(self, node: str, msg: tuple[Any, ...]) -> None:
        self._out.append(Send(node, msg))

    def _hello(self) -> tuple[Any, ...]:
        return ("hello", self.me, self.version, self.members, not self.left and not self._leaving)

    def _quiet(self, now: float) -> bool:
        return now < self.quiet_until

    def _serving(self, version: int) -> bool:
        """Answers lease and fence requests of ``version``."""
        return self.is_member and version == self.version and self.accepted is None

    # ------------------------------------------------------------------ node events

    def node_up(self, name: str, now: float) -> list[Out]:
        self.connected.add(name)
        self._send(name, self._hello())
        return self._take()

    def node_down(self, name: str, reason: str, now: float) -> list[Out]:
        self.connected.discard(name)
        self.peer_version.pop(name, None)
        if any(m[0] == name for m in self.members):
            self.down_since.setdefault(name, now)
        if is_closed_reason(reason):
            for rec in self.grants.values():
                if rec.holder[0] == name:
                    rec.void = True
            # candidates waiting on a lease it held try again now, with a fresh round
            for want in self.wants.values():
                if want.round is not None:
                    self._fail_acquire_round(want, now)
                self._start_acquire(want, now)
        return self._take()

    def _connected_incs(self) -> dict[str, Inc]:
        return {n: self.peer_inc[n] for n in self.connected if n in self.peer_inc}

    # ------------------------------------------------------------------ client requests

    def acquire(self, key: str, holder: Any, token: Any, timeout: float, now: float) -> list[Out]:
        """Try to hold ``key`` for ``holder`` until ``now + timeout``; the answer (a
        :class:`Lease` or None) is a ``Reply(token, ...)``. One candidate per key."""
        held = self.held.get(key)
        want = self.wants.get(key)
        if self.left or self._leaving or (want is not None and want.holder != holder):
            self._out.append(Reply(token, None))
        elif held is not None:
            lease = Lease(key, held.epoch, held.expires) if held.holder == holder else None
            self._out.append(Reply(token, lease))
        elif want is not None:
            self._out.append(Reply(want.token, None))
            want.token, want.deadline = token, now + timeout
        else:
            self.wants[key] = _Want(key, holder, token, now + timeout, now)
            self._start_acquire(self.wants[key], now)
        return self._take()

    def release(self, key: str, epoch: int, now: float) -> list[Out]:
        """Give up ``key`` held at ``epoch``: every member voids its record at once."""
        held = self.held.get(key)
        if held is not None and held.epoch == epoch:
            del self.held[key]
            self._release_at(key, epoch, self.members)
        return self._take()

    def release_holder(self, holder: Any, now: float) -> list[Out]:
        """``holder`` ended: release what it holds and drop what it waits for."""
        for key, held in list(self.held.items()):
            if held.holder == holder:
                del self.held[key]
                self._release_at(key, held.epoch, self.members)
        for want in list(self.wants.values()):
            if want.holder == holder:
                self._give_up(want)
        return self._take()

    def fence(
        self, key: str, epoch: int, effect: Any, token: Any, timeout: float, now: float
    ) -> list[Out]:
        """Ask the members to accept ``effect`` under ``(key, epoch)`` held by this node;
        ``Reply(token, True)`` iff a majority accepted."""
        if not self.members:
            self._out.append(Reply(token, False))
            return self._take()
        rnd = self._new_round(key, epoch, now)
        self.fences[rnd.rid] = _Fence(rnd, token, now + timeout)
        for m in rnd.voters:
            self._send(m[0], ("fence?", self.me, key, epoch, effect, rnd.rid, self.version))
        return self._take()

    def leave(self, token: Any, timeout: float, now: float) -> list[Out]:
        """Leave the member set for good: release this node's leases, hand its grant
        records over, and propose its own removal. ``Reply(token, True)`` once out."""
        for key, held in list(self.held.items()):
            del self.held[key]
            self._out.append(Notify(held.holder, LeaseLost(key, held.epoch)))
            self._release_at(key, held.epoch, self.members)
        for want in list(self.wants.values()):
            self._give_up(want)
        records = [
            (key, r.epoch, r.holder, max(0.0, r.expires - now))
            for key, r in self.grants.items()
            if not r.void and r.expires > now and r.holder != self.me  # those are released
        ]
        for m in self.members:
            if m != self.me:
                self._send(m[0], ("records", self.me, records))
        if not self.is_member or self.members == (self.me,):
            self.left = True
            self._out.append(Reply(token, True))
        else:
            self._leaving.append((token, now + timeout))
            self.next_proposal_at = now
            self._propose(now)
        return self._take()

    # ------------------------------------------------------------------ messages

    def receive(self, msg: tuple[Any, ...], now: float) -> list[Out]:
        """A message from a peer's quorum actor (or this node's own)."""
        kind = msg[0]
        src: Inc = (str(msg[1][0]), int(msg[1][1]))
        self.peer_inc[src[0]] = src
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise ValueError(f"unknown quorum message {kind!r}")
        handler(self, src, msg[2:], now)
        return self._take()

    def _on_hello(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        version, members, joinable = int(body[0]), _members(body[1]), bool(body[2])
        self.peer_version[src[0]] = version
        self.peer_joinable[src[0]] = joinable
        if version > self.version:
            self._learn(version, members, now)

    def _on_decided(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        slot, value = int(body[0]), _members(body[1])
        if slot > self.version:
            self._learn(slot, value, now)

    def _can_vote(self, slot: int) -> bool:
        if slot != self.version + 1 or self.left:
            return False
        return self.version == 0 or self.me in self.members

    def _on_prepare(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        slot, ballot = int(body[0]), _ballot(body[1])
        if slot <= self.version:
            self._send(src[0], self._hello())
        elif self._can_vote(slot):
            if self.promised is None or ballot > self.promised:
                self.promised = ballot
                acc_b, acc_v = self.accepted if self.accepted is not None else (None, None)
                self._send(src[0], ("promise", self.me, slot, ballot, acc_b, acc_v))
            else:
                self._send(src[0], ("nack", self.me, slot, ballot, self.promised))

    def _on_accept(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        slot, ballot, value = int(body[0]), _ballot(body[1]), _members(body[2])
        if slot <= self.version:
            self._send(src[0], self._hello())
            return
        if not self._can_vote(slot):
            return
        valid = bool(value) if slot == 1 else is_single_change(self.members, value)
        if valid and (self.promised is None or ballot >= self.promised):
            self.promised = ballot
            if self.accepted is None or self.accepted[1] != value:
                self.accepted_at = now
            self.accepted = (ballot, value)
            self._send(src[0], ("accepted", self.me, slot, ballot))
        else:
            self._send(src[0], ("nack", self.me, slot, ballot, self.promised or ballot))

    def _on_promise(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        slot, ballot = int(body[0]), _ballot(body[1])
        acc_b = None if body[2] is None else _ballot(body[2])
        acc_v = None if body[3] is None else _members(body[3])
        p = self.proposal
        if p is None or p.phase != 1 or p.slot != slot or p.ballot != ballot:
            return
        if src not in p.voters:
            return
        p.promises[src] = (acc_b, acc_v)
        if not is_majority(p.promises, p.voters, self.config.expected_size):
            return
        p.value = choose_value(p.promises.values(), p.value)
        if slot == 1:
            p.voters = p.value
        p.phase = 2
        for m in p.voters:
            self._send(m[0], ("accept", self.me, slot, ballot, p.value))

    def _on_accepted(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        slot, ballot = int(body[0]), _ballot(body[1])
        p = self.proposal
        if p is None or p.phase != 2 or p.slot != slot or p.ballot != ballot:
            return
        if src not in p.voters:
            return
        p.accepts.add(src)
        if is_majority(p.accepts, p.voters, self.config.expected_size):
            self.proposal = None
            targets = {m[0] for m in (*p.voters, *p.value)} | self.connected
            for name in sorted(targets):
                self._send(name, ("decided", self.me, slot, p.value))

    def _on_nack(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        slot, ballot, promised = int(body[0]), _ballot(body[1]), _ballot(body[2])
        self.max_round = max(self.max_round, promised[0])
        p = self.proposal
        if p is not None and p.slot == slot and p.ballot == ballot:
            self._abandon(now)

    def _on_records(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        """A leaving member hands over its grants: keep the more conservative."""
        self.peer_joinable[src[0]] = False
        for raw_key, raw_epoch, raw_holder, remaining in body[0]:
            key, epoch = str(raw_key), int(raw_epoch)
            holder = (str(raw_holder[0]), int(raw_holder[1]))
            rec = self.grants.get(key)
            expires = now + float(remaining)
            if rec is None or epoch > rec.epoch:
                self.grants[key] = Grant(epoch, holder, expires)
            elif rec.epoch == epoch and rec.holder == holder and not rec.void:
                rec.expires = max(rec.expires, expires)

    # -- leases, member side

    def _on_grant_req(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        key, epoch, rid, version, term = str(body[0]), int(body[1]), body[2], int(body[3]), body[4]
        rec = self._yield_to(key, epoch, src, version, now)
        ok = self._serving(version) and grant_allowed(rec, epoch, src, now, self._quiet(now))
        if ok:
            expires = now + float(term) + self.config.margin
            if rec is not None and rec.epoch == epoch and rec.holder == src:
                rec.expires = max(rec.expires, expires)
            else:
                self.grants[key] = Grant(epoch, src, expires)
        if version != self.version:
            self._send(src[0], self._hello())
        top = self.grants[key].epoch if key in self.grants else 0
        self._send(src[0], ("grant", self.me, key, rid, ok, top))

    def _yield_to(self, key: str, epoch: int, src: Inc, version: int, now: float) -> Grant | None:
        """The record for ``key`` to judge ``src``'s request by. This node's grant to
        itself gives way to a competing request that ranks higher, ``(epoch,
        incarnation)``: its pending round is dropped (its grants released, its answers
        ignored from now on), and a grant of the same epoch, dropped or released, is
        withdrawn. Any other record is kept as it is."""
        rec = self.grants.get(key)
        if (
            rec is None
            or rec.holder != self.me
            or src == self.me
            or (epoch, src) <= (rec.epoch, self.me)
            or not self._serving(version)
        ):
            return rec
        held, want = self.held.get(key), self.wants.get(key)
        if held is not None and held.epoch == rec.epoch:
            return rec  # a lease this node holds never gives way
        if want is not None and want.round is not None and want.round.epoch == rec.epoch:
            self._fail_acquire_round(want, now)
            rec.void = True
        if rec.void and epoch == rec.epoch:
            del self.grants[key]  # only ever granted to this node, which gave it up
            return None
        return rec

    def _on_release(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        key, epoch = str(body[0]), int(body[1])
        rec = self.grants.get(key)
        if rec is not None and rec.epoch == epoch and rec.holder == src:
            rec.void = True

    def _on_fence_req(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        key, epoch, effect, rid, version = str(body[0]), int(body[1]), body[2], body[3], body[4]
        rec = self.grants.get(key)
        ok = self._serving(int(version)) and fence_allowed(rec, epoch, src)
        if ok:
            log = self.effects.setdefault(key, deque(maxlen=self.config.effects_kept))
            log.append((epoch, effect))
        top = rec.epoch if rec is not None else 0
        self._send(src[0], ("fenced", self.me, key, rid, ok, top))

    # -- leases, candidate side

    def _on_grant(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        key, rid, ok, top = str(body[0]), body[1], bool(body[2]), int(body[3])
        self.seen_epoch[key] = max(self.seen_epoch.get(key, 0), top)
        want, held = self.wants.get(key), self.held.get(key)
        counted = False
        for rnd in (want.round if want else None, held.round if held else None):
            if rnd is not None and rnd.rid == rid and src in rnd.voters:
                (rnd.ok if ok else rnd.no).add(src)
                counted = True
                # refused for another candidate's epoch at least as high: a contest, which
                # waiting for the silent members does not end; retry after a random pause
                rnd.beaten = rnd.beaten or (not ok and top >= rnd.epoch)
        live = {held.epoch} if held is not None else set()
        if want is not None and want.round is not None:
            live.add(want.round.epoch)
        if ok and not counted and top not in live:
            # a grant (of epoch ``top``) to a round dropped meanwhile: no lease can come
            # of it, so free that member at once instead of letting it wait for the term
            self._release_at(key, top, [src])
        self._settle_key(key, now)

    def _on_fenced(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        key, rid, ok, top = str(body[0]), body[1], bool(body[2]), int(body[3])
        self.seen_epoch[key] = max(self.seen_epoch.get(key, 0), top)
        fence = self.fences.get(rid) if isinstance(rid, int) else None
        if fence is None or src not in fence.round.voters:
            return
        (fence.round.ok if ok else fence.round.no).add(src)
        self._settle_fence(fence, now)

    # ------------------------------------------------------------------ membership

    def _learn(self, version: int, members: Members, now: float) -> None:
        was_member = self.me in self.members
        self.version, self.members = version, members
        self.promised, self.accepted = None, None
        if self.proposal is not None and self.proposal.slot <= version:
            self.proposal = None
        if self.me in members and not was_member and version > 1:
            self.quiet_until = now + self.config.term + self.config.margin
        for name in list(self.down_since):
            if not any(m[0] == name for m in members):
                del self.down_since[name]
        if self._leaving and self.me not in members:
            self.left = True
            for token, _deadline in self._leaving:
                self._out.append(Reply(token, True))
            self._leaving.clear()
        # rounds of the old version can no longer succeed
        for want in self.wants.values():
            if want.round is not None and want.round.version != version:
                self._fail_acquire_round(want, now)
        self._out.append(Changed(version, self.member_names()))

    def _propose(self, now: float) -> None:
        if self.proposal is not None or now < self.next_proposal_at or self.left:
            return
        value = self._wanted_change(now)
        if value is None:
            return
        self.max_round += 1
        ballot: Ballot = (self.max_round, self.me[0], self.me[1])
        slot = self.version + 1
        voters = value if slot == 1 else self.members
        self.proposal = _Proposal(slot, ballot, value, voters, now)
        for m in voters:
            self._send(m[0], ("prepare", self.me, slot, ballot))

    def _wanted_change(self, now: float) -> Members | None:
        connected = self._connected_incs()
        if self.version == 0:
            if now - self.booted < self.config.settle:
                return None
            if any(self.peer_version.get(n, 0) > 0 for n in connected):
                return None  # a cluster exists: wait to be added
            founders = {
                n: inc
                for n, inc in connected.items()
                if self.peer_version.get(n) == 0 and self.peer_joinable.get(n, False)
            }
            if min((*founders, self.me[0])) != self.me[0]:
                return None
            return tuple(sorted((*founders.values(), self.me)))
        if self.me not in self.members:
            return None
        if self.accepted is not None and now - self.accepted_at > 2 * self.config.round_timeout:
            return self.accepted[1]  # finish a change that a proposer left half done
        if self._leaving and len(self.members) > 1:
            return tuple(m for m in self.members if m != self.me)
        live = [m[0] for m in self.members if m == self.me or connected.get(m[0]) == m]
        if min(live) != self.me[0]:
            return None
        # a wish counts only if said at this version: a node that just left may have
        # said "join" before it saw its own removal
        joinable = {
            n
            for n in connected
            if self.peer_joinable.get(n, False) and self.peer_version.get(n) == self.version
        }
        return next_change(
            self.me,
            self.members,
            connected,
            joinable,
            self.down_since,
            now,
            self.config.remove_after,
        )

    def _abandon(self, now: float) -> None:
        self.proposal = None
        self.next_proposal_at = now + self.rng.uniform(0.05, 0.3)

    # ------------------------------------------------------------------ lease rounds

    def _new_round(self, key: str, epoch: int, now: float) -> _Round:
        self._next_rid += 1
        return _Round(self._next_rid, key, epoch, now, self.version, self.members)

    def _ask_grant(self, rnd: _Round) -> None:
        for m in rnd.voters:
            self._send(
                m[0],
                ("grant?", self.me, rnd.key, rnd.epoch, rnd.rid, rnd.version, self.config.term),
            )

    def _start_acquire(self, want: _Want, now: float) -> None:
        if not self.members:
            want.retry_at = now + self.config.round_timeout
            return
        rec = self.grants.get(want.key)
        if rec is not None and not rec.void and rec.holder != self.me and now < rec.expires:
            # this node would refuse itself: asking the others would only take their
            # grants away from that holder's round (two candidates that granted each
            # other would refuse themselves, round after round)
            want.retry_at = now + self.rng.uniform(0.05, 0.25)
            return
        top = max(self.seen_epoch.get(want.key, 0), rec.epoch if rec is not None else 0)
        want.round = self._new_round(want.key, top + 1, now)
        self.seen_epoch[want.key] = top + 1
        self._ask_grant(want.round)

    def _release_at(self, key: str, epoch: int, voters: Iterable[Inc]) -> None:
        for m in voters:
            self._send(m[0], ("release", self.me, key, epoch))

    def _give_up(self, want: _Want) -> None:
        del self.wants[want.key]
        if want.round is not None:
            self._release_at(want.key, want.round.epoch, want.round.ok)
        self._out.append(Reply(want.token, None))

    def _fail_acquire_round(self, want: _Want, now: float) -> None:
        rnd = want.round
        want.round = None
        if rnd is not None:
            self._release_at(want.key, rnd.epoch, rnd.ok)
        want.retry_at = now + self.rng.uniform(0.05, 0.25)

    def _settle_key(self, key: str, now: float) -> None:
        """Act on the rounds of ``key`` that have an outcome."""
        expected = self.config.expected_size
        want = self.wants.get(key)
        if want is not None and want.round is not None:
            rnd = want.round
            result = rnd.outcome(expected)
            expires = rnd.started + self.config.term - self.config.margin
            if result and rnd.version == self.version and expires > now:
                del self.wants[key]
                self.held[key] = _Held(
                    key, rnd.epoch, want.holder, expires, rnd.started + self.config.term / 3
                )
                self._out.append(Reply(want.token, Lease(key, rnd.epoch, expires)))
                self._out.append(Notify(want.holder, LeaseGranted(key, rnd.epoch, expires)))
            elif result is not None or rnd.beaten or now - rnd.started >= self.config.round_timeout:
                self._fail_acquire_round(want, now)
        held = self.held.get(key)
        if held is not None and held.round is not None:
            rnd = held.round
            result = rnd.outcome(expected)
            if result and rnd.version == self.version:
                held.expires = max(
                    held.expires, rnd.started + self.config.term - self.config.margin
                )
                held.renew_at = rnd.started + self.config.term / 3
                held.round = None
            elif result is not None or now - rnd.started >= self.config.round_timeout:
                held.round = None
                held.renew_at = now + min(0.1, self.config.term / 10)

    def _settle_fence(self, fence: _Fence, now: float) -> None:
        result = fence.round.outcome(self.config.expected_size)
        if result is not None and fence.round.version != self.version:
            result = False
        if result is None and now >= fence.deadline:
            result = False
        if result is not None:
            del self.fences[fence.round.rid]
            self._out.append(Reply(fence.token, result))

    # ------------------------------------------------------------------ clock

    def tick(self, now: float) -> list[Out]:
        """Timeouts, renewals, gossip and proposals due at ``now``."""
        # a holder past its expiry hears it before anything could renew it
        for key, held in list(self.held.items()):
            if now >= held.expires:
                del self.held[key]
                self._out.append(Notify(held.holder, LeaseLost(key, held.epoch)))
                self._release_at(key, held.epoch, self.members)
        if now >= self.next_gossip:
            self.next_gossip = now + self.config.gossip_interval
            for name in sorted(self.connected):
                self._send(name, self._hello())
        connected = self._connected_incs()
        for m in self.members:
            if m == self.me or connected.get(m[0]) == m:
                self.down_since.pop(m[0], None)
            else:
                self.down_since.setdefault(m[0], now)
        p = self.proposal
        if p is not None and now - p.started > 2 * self.config.round_timeout:
            self._abandon(now)
        self._propose(now)
        for key in list(self.wants):
            want = self.wants[key]
            if now >= want.deadline:
                self._give_up(want)
            elif want.round is None and now >= want.retry_at:
                self._start_acquire(want, now)
            else:
                self._settle_key(key, now)
        for key, held in list(self.held.items()):
            if held.round is None and now >= held.renew_at:
                held.round = self._new_round(key, held.epoch, now)
                self._ask_grant(held.round)
            else:
                self._settle_key(key, now)
        for fence in list(self.fences.values()):
            self._settle_fence(fence, now)
        for token, deadline in list(self._leaving):
            if now >= deadline:
                self._leaving.remove((token, deadline))
                self._out.append(Reply(token, False))
        return self._take()


def _members(value: Any) -> Members:
    return tuple(sorted((str(m[0]), int(m[1])) for m in value))


def _ballot(value: Any) -> Ballot:
    return (int(value[0]), str(value[1]), int(value[2]))


_HANDLERS: dict[str, Any] = {
    "hello": QuorumCore._on_hello,
    "decided": QuorumCore._on_decided,
    "prepare": QuorumCore._on_prepare,
    "promise": QuorumCore._on_promise,
    "accept": QuorumCore._on_accept,
    "accepted": QuorumCore._on_accepted,
    "nack": QuorumCore._on_nack,
    "records": QuorumCore._on_records,
    "grant?": QuorumCore._on_grant_req,
    "grant": QuorumCore._on_grant,
    "release": QuorumCore._on_release,
    "fence?": QuorumCore._on_fence_req,
    "fenced": QuorumCore._on_fenced,
}
