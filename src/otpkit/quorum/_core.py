"""The decisions of the ``"majority"`` policy: membership, leases, fencing (see
ARCHITECTURE.md, *The two policies, and the majority's three parts*).

Everything here is a plain state machine over plain values: :class:`QuorumCore` takes
events (a message from a peer, a node up or down, a client request, the clock) with the
current monotonic time and returns what to do (:class:`Persist`, :class:`Send`,
:class:`Reply`, :class:`Notify`, :class:`Changed`). The ``Quorum`` actor
(``quorum._actor``) is the thin shell that performs those effects; the unit tests drive
several cores over a simulated network.

**Identity and the store.** A member is known as ``(name, sid)``: ``sid`` is the id of
its store (``<data-dir>/otpkit/quorum@<node>.json``, made when the store is). Every
batch of effects that follows a change of what this node promised (Paxos ballots and
accepted values, the decided configuration, each key's highest epoch and the holder of
its grant) starts with :class:`Persist`: the shell writes and fsyncs it before it sends
or answers anything of that batch, and sends nothing of it if the write fails. A node
restarted with its store is the same member with the same promises; grant expiries
are not stored, so a restored unexpired grant is taken to run a whole ``term + margin``
from the restart. A node without its store (or without a data dir) starts with a new
``sid``: a new acceptor that has promised nothing, never counted until the quorum adds
it, and then quiet (it grants nothing new) for ``term + margin``.

**Configuration.** ``(version, members, expected, basis)``: an agreed sorted tuple of
member ids, the expected cluster size majorities are counted over, and the expected
size the members' own settings agreed on last (``basis``). Version ``v + 1`` is decided
by single-decree Paxos among ``members(v)``: ballots ``(round, name, sid)``; phase 1
``prepare``/``promise``, phase 2 ``accept``/``accepted``; a proposer that learns an
accepted value in phase 1 proposes that value instead of its own. A value differs from
version ``v``'s by exactly one member, or only by its expected size (acceptors refuse
anything else), so any majority of ``v`` meets any majority of ``v + 1``. A majority of
a member set ``M`` is more than ``max(len(M), expected) / 2`` of its members, so a lone
pod at cold boot with expected size 3 is never a majority. Decided configurations are
final and gossiped (``hello`` every ``gossip_interval``): a node adopts a higher decided
version from any peer - a decision of the quorum, never a peer's own view.

* Cold boot: a node without a configuration (version 0) founds one only ``settle``
  seconds after its start, if no connected peer has one, the smallest-named of the
  connected nodes at version 0 proposing version 1 = those nodes, each voting as
  acceptor. Safe when at most ``expected_size`` nodes take part in the cold boot (any
  two majorities then intersect); without ``expected_size`` two sides of a partition at
  cold boot may each form a cluster. Nodes restarted with their stores start from the
  stored configuration: a whole-cluster restart is no cold boot.
* Joins: the coordinator (the smallest-named member connected to this node, or this
  node) adds a connected peer that asks to join (its ``hello`` says so, at the
  coordinator's version), one at a time.
* Replacement: a member's name connected with another ``sid`` (it lost its store): the
  coordinator removes the old id, then adds the new one.
* Removal: the coordinator removes a member down (in its view) for ``remove_after``
  seconds. **Two removals within ``term + margin`` are refused** (by the coordinator and
  by every acceptor, each on its own clock): the members removed could be the only
  record of a live lease.
* Leaves: ``leave()`` releases this node's leases, hands its grant records to the other
  members, and proposes its own removal. The last member cannot leave.
* Expected size: the coordinator proposes a change once a majority of the members'
  settings (said in their ``hello``) agree on a value other than ``basis`` (a rolling
  update that changes the setting); :meth:`QuorumCore.set_expected` (an operator's
  command) proposes a value directly and leaves ``basis`` as it is, so the members'
  unchanged settings do not undo it.

**Leases.** A candidate asks every member of its current version for a grant
``(key, epoch, holder, term)``. A member judges a new grant (:func:`grant_allowed`) only
at the candidate's version with no change of configuration pending: the epoch must be
above every epoch it granted for the key, and it must hold no unexpired grant to another
holder (expiry on its own clock: receipt + term + margin) unless that grant was voided
(released, or a *witness* of it closed: a connection the holder's acting process holds
to the member, ``distribution._witness``; the holder node's dist link closing voids
nothing, since its dist alone may have died); a member quiet after it
was added grants nothing new. A **renewal** (the same epoch to the same holder, not
voided) is granted by any member at any version: it makes no new holder, and the
holder counts it only if its configuration moved by at most one change meanwhile. The
candidate holds the lease with grants from a majority; it counts its expiry from the
moment it *sent* the request: ``sent + term - margin``, so it expires at least
``2 * margin`` before any granting member lets another holder in. It renews every
``term / 3`` and reports :class:`LeaseLost` when it cannot renew before that expiry.
``release`` voids the records at once (hand-over).

**Contests.** Candidates for a free key must not stall each other, and must never cost a
live holder its lease. (1) A refusal for a live grant names its holder and how long it
runs: the candidate backs off that long instead of asking again with higher epochs.
(2) A member whose own grant to itself (a candidate's, not a lease it holds) blocks a
request yields if the request's ``(epoch, id)`` ranks higher: it drops its pending
round, withdraws the grant and judges the request without it (the competitor may have
that same epoch only if the withdrawn grant never made a holder). (3) A grant that
replaced a live holder's record which ran out at this member (the holder could not
reach it) keeps that record aside, stored; when the grant is released (its round
failed), or its candidate restarts mid-round, the record comes back, so the live
holder's renewals are granted again (cut-off standbys that asked with rising epochs do
not refuse the holder after the heal). A configuration no majority could follow (fewer
members than its expected size's majority) is never decided. (4) A candidate that holds an unexpired
grant to another holder does not ask. (5) A round refused for an epoch at least its own
ends at once and is retried after a random pause. (6) A grant that reaches a candidate
after it dropped the round is released at once.

**Fencing.** ``fence(key, epoch, effect)`` is accepted iff a majority of members (same
version, no change pending) hold ``(epoch, holder)`` as their grant for the key and have
not voided it. Once a higher epoch reached a majority, any majority holds it, so an old
epoch can never be fenced again. Members keep the last ``effects_kept`` accepted effects
per key (in memory).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from otpkit.actors import shapes

#: A member id: (node name, store id).
Inc = tuple[str, int]
#: A Paxos ballot: (round, proposer name, proposer store id).
Ballot = tuple[int, str, int]
Members = tuple[Inc, ...]
#: A configuration, the value Paxos decides: (members, expected size, basis).
Config = tuple[Members, int, int]

#: The stored state's format; an older one is migrated (:func:`migrate_state`), a newer
#: one refused. Raise it with any change of what :func:`encode_state` writes, and add the
#: step from the previous format to ``_STATE_STEPS``.
STATE_FORMAT = 1

#: NodeDown reasons that mean the peer's sockets closed (its process is gone).
_CLOSED = "connection closed"

#: The most members a configuration in a message may name.
MAX_MEMBERS = 1000


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
class Persist:
    """Write ``state`` (:func:`encode_state`'s plain dict) and fsync it before any effect
    after it; if that fails, perform none of the batch's sends and replies."""

    state: dict[str, Any]


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


Out = Persist | Send | Reply | Notify | Changed


# ---------------------------------------------------------------------- messages in

# The fields of the members' messages. Counts (versions, epochs, rounds, request ids)
# stay below 2**62, so that the next one is still a 64-bit int on the wire.
_NODE = shapes.Str(255, 1)
_COUNT = shapes.Int(0, 1 << 62)
_SID = shapes.Int(0, shapes.INT64 - 1)
_INC = shapes.Tup((_NODE, _SID))
_SIZE = shapes.Int(0, 1 << 31)
_CONFIG = shapes.Tup((shapes.Seq(_INC, MAX_MEMBERS), _SIZE, _SIZE))
_BALLOT = shapes.Tup((_COUNT, _NODE, _SID))
_KEY = shapes.Str(4096)
_SECONDS = shapes.Num(0, 1e9)

#: The messages a member takes from the members' quorum actors (its own included):
#: ``(tag, sender's id, ...)``. A later release may append fields (``more``); ``grant``
#: from an early release has no blocker.
MESSAGES = shapes.Protocol(
    "quorum message",
    shapes.Shape("hello", (_INC, _COUNT, _CONFIG, bool, _SIZE), more=True),
    shapes.Shape("decided", (_INC, _COUNT, _CONFIG), more=True),
    shapes.Shape("prepare", (_INC, _COUNT, _BALLOT), more=True),
    shapes.Shape(
        "promise", (_INC, _COUNT, _BALLOT, shapes.Opt(_BALLOT), shapes.Opt(_CONFIG)), more=True
    ),
    shapes.Shape("accept", (_INC, _COUNT, _BALLOT, _CONFIG), more=True),
    shapes.Shape("accepted", (_INC, _COUNT, _BALLOT), more=True),
    shapes.Shape("nack", (_INC, _COUNT, _BALLOT, _BALLOT), more=True),
    shapes.Shape(
        "records",
        (_INC, shapes.Seq(shapes.Tup((_KEY, _COUNT, _INC, _SECONDS)), 1 << 20)),
        more=True,
    ),
    shapes.Shape("grant?", (_INC, _KEY, _COUNT, _COUNT, _COUNT, _SECONDS), more=True),
    shapes.Shape(
        "grant",
        (_INC, _KEY, _COUNT, bool, _COUNT, shapes.Opt(shapes.Tup((_INC, shapes.Num())))),
        optional=1,
        more=True,
    ),
    shapes.Shape("release", (_INC, _KEY, _COUNT), more=True),
    shapes.Shape("check?", (_INC, _KEY, _COUNT), more=True),
    shapes.Shape("fence?", (_INC, _KEY, _COUNT, shapes.ANY, _COUNT, _COUNT), more=True),
    shapes.Shape("fenced", (_INC, _KEY, _COUNT, bool, _COUNT), more=True),
)

# where each message carries a configuration (its index in the message)
_CONFIG_AT = {"hello": 3, "decided": 3, "promise": 5, "accept": 4}


def message_problem(msg: Any) -> str | None:
    """Why ``msg`` is not a message :meth:`QuorumCore.receive` takes, or None: its shape
    (:data:`MESSAGES`), and no member set in it naming a node twice."""
    why = MESSAGES.problem(msg)
    if why is not None:
        return why
    at = _CONFIG_AT.get(msg[0])
    if at is not None and msg[at] is not None:
        names = [m[0] for m in msg[at][0]]
        if len(set(names)) != len(names):
            return f"{msg[0]!r} field {at}: a member set names a node twice"
    return None


# ---------------------------------------------------------------------- pure decisions


def quorum_size(members: Members, expected_size: int) -> int:
    """How many votes of ``members`` make a majority."""
    return max(len(members), expected_size) // 2 + 1


def is_majority(votes: Iterable[Inc], members: Members, expected_size: int) -> bool:
    """True if the votes of distinct members are more than half of
    ``max(len(members), expected_size)``; votes of non-members do not count."""
    return len(set(votes) & set(members)) >= quorum_size(members, expected_size)


def is_single_change(old: Config, new: Config) -> bool:
    """A valid next configuration: a non-empty sorted member set, and either one member
    added or removed (the sizes unchanged), or the same members with another expected
    size."""
    (old_m, old_e, old_b), (new_m, new_e, new_b) = old, new
    if not new_m or list(new_m) != sorted(set(new_m)) or new_e < 0:
        return False
    if (new_e, new_b) == (old_e, old_b):
        return len(set(old_m) ^ set(new_m)) == 1
    return new_m == old_m


def is_viable(value: Config) -> bool:
    """A configuration of which a majority can exist: enough members for its expected
    size's majority (never decided otherwise: nobody could change it again)."""
    members, expected, _basis = value
    return len(members) >= quorum_size(members, expected)


def is_removal(old: Members, new: Members) -> bool:
    return bool(set(old) - set(new))


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
    void: bool = False  # released, or its witness (the acting process's socket) closed


def grant_allowed(
    rec: Grant | None, top: int, epoch: int, holder: Inc, now: float, quiet: bool
) -> bool:
    """Whether a member grants ``(epoch, holder)`` given its grant for the key and the
    highest epoch it ever granted for it (``top``).

    A renewal (the grant's own epoch and holder, not voided) is always granted. A new
    grant needs an epoch above ``top``, no unexpired live grant to another holder, and
    the member out of its quiet period.
    """
    if is_renewal(rec, epoch, holder):
        return True
    if quiet or epoch <= top:
        return False
    return rec is None or rec.holder == holder or rec.void or now >= rec.expires


def is_renewal(rec: Grant | None, epoch: int, holder: Inc) -> bool:
    return rec is not None and not rec.void and rec.epoch == epoch and rec.holder == holder


def live_holder(rec: Grant | None, holder: Inc, now: float) -> tuple[Inc, float] | None:
    """The other holder whose unexpired grant blocks ``holder``, and its time left."""
    if rec is None or rec.void or rec.holder == holder or now >= rec.expires:
        return None
    return rec.holder, rec.expires - now


def fence_allowed(rec: Grant | None, epoch: int, holder: Inc) -> bool:
    """Whether a member accepts an effect fenced with ``(epoch, holder)``."""
    return rec is not None and not rec.void and rec.epoch == epoch and rec.holder == holder


def choose_value(promises: Iterable[tuple[Ballot | None, Config | None]], own: Config) -> Config:
    """Paxos phase 2's value: the accepted value of the highest ballot among the
    promises, else the proposer's own."""
    best: tuple[Ballot, Config] | None = None
    for ballot, value in promises:
        if ballot is not None and value is not None and (best is None or ballot > best[0]):
            best = (ballot, value)
    return own if best is None else best[1]


def wished_expected(wishes: dict[Inc, int], members: Members, basis: int) -> int | None:
    """The expected size a majority of ``members``' own settings agree on, if it is not
    ``basis`` (what they agreed on last) and not already decided; else None."""
    counts: dict[int, int] = {}
    for m in members:
        if m in wishes:
            counts[wishes[m]] = counts.get(wishes[m], 0) + 1
    need = quorum_size(members, 0)  # a majority of the members there are
    for value, n in sorted(counts.items()):
        if n >= need and value != basis:
            return value
    return None


def next_change(
    me: Inc,
    members: Members,
    connected: dict[str, Inc],
    joinable: set[str],
    down_since: dict[str, float],
    now: float,
    remove_after: float,
    may_remove: bool = True,
) -> Members | None:
    """The coordinator's next member set, one member at a time, or None.

    In order: drop a member whose name is connected with another id (it lost its store);
    drop a member down for ``remove_after``; add a connected peer that asks to join.
    Removals only if ``may_remove``; never empties the set.
    """
    names = {m[0] for m in members}
    if may_remove and len(members) > 1:
        for m in members:
            inc = connected.get(m[0])
            if m != me and inc is not None and inc != m:
                return tuple(x for x in members if x != m)
        for m in members:
            since = down_since.get(m[0])
            if m != me and since is not None and now - since >= remove_after:
                return tuple(x for x in members if x != m)
    for name in sorted(joinable):
        inc = connected.get(name)
        if inc is not None and name not in names:
            return tuple(sorted((*members, inc)))
    return None


# ---------------------------------------------------------------------- the store


class StateError(Exception):
    """A stored quorum state that cannot be used; the message names the file's problem."""


def encode_state(core: QuorumCore) -> dict[str, Any]:
    """What a member must not forget, as plain JSON-able values (see the module)."""
    acc = core.accepted
    return {
        "format": STATE_FORMAT,
        "sid": core.me[1],
        "version": core.version,
        "members": [list(m) for m in core.members],
        "expected": core.expected,
        "basis": core.basis,
        "promised": None if core.promised is None else list(core.promised),
        "accepted": None if acc is None else [list(acc[0]), _encode_config(acc[1])],
        "accepted_slot": core.version + 1 if acc is not None else 0,
        "max_round": core.max_round,
        "tops": dict(sorted(core.tops.items())),
        "grants": {
            key: [rec.epoch, list(rec.holder), rec.void] for key, rec in sorted(core.grants.items())
        },
        "shadow": {
            key: [rec.epoch, list(rec.holder), rec.void] for key, rec in sorted(core.shadow.items())
        },
        "holds": dict(sorted(core.holds.items())),
    }


#: The steps of :func:`migrate_state`: the one keyed ``n`` turns a stored state of
#: format ``n`` into format ``n + 1``. A format raised without a change of shape needs
#: none. (Format 1's own early files lacked ``shadow`` and ``holds``: read as empty.)
_STATE_STEPS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def state_format(raw: Any) -> int:
    """The format a stored state names, or StateError (not an object, no valid format,
    or a format newer than this code reads: the message names both)."""
    if not isinstance(raw, dict):
        raise StateError(f"expected a JSON object, found {type(raw).__name__}")
    fmt = raw.get("format")
    if type(fmt) is not int or fmt < 1:
        raise StateError(f"no valid 'format' field ({fmt!r})")
    if fmt > STATE_FORMAT:
        raise StateError(
            f"format {fmt} is newer than this otpkit reads ({STATE_FORMAT}): "
            "a downgrade after an upgrade; start the newer otpkit, or remove the file "
            "to join as a new member"
        )
    return fmt


def migrate_state(raw: Any) -> dict[str, Any]:
    """A stored state of any format this code reads, in the current format (a new dict:
    ``raw`` is not changed). Raises StateError as :func:`state_format`."""
    fmt = state_format(raw)
    state = dict(raw)
    for step in range(fmt, STATE_FORMAT):
        if step in _STATE_STEPS:
            state = _STATE_STEPS[step](state)
    state["format"] = STATE_FORMAT
    return state


def decode_state(raw: Any) -> dict[str, Any]:
    """``raw`` (a stored state of this format or an older one) checked and in the
    current format, or StateError."""
    raw = migrate_state(raw)
    try:
        acc = raw["accepted"]
        return {
            "sid": int(raw["sid"]),
            "version": int(raw["version"]),
            "members": _members(raw["members"]),
            "expected": int(raw["expected"]),
            "basis": int(raw["basis"]),
            "promised": None if raw["promised"] is None else _ballot(raw["promised"]),
            "accepted": None if acc is None else (_ballot(acc[0]), _config(acc[1])),
            "accepted_slot": int(raw["accepted_slot"]),
            "max_round": int(raw["max_round"]),
            "tops": {str(k): int(v) for k, v in raw["tops"].items()},
            "grants": {
                str(k): (int(v[0]), (str(v[1][0]), int(v[1][1])), bool(v[2]))
                for k, v in raw["grants"].items()
            },
            "shadow": {
                str(k): (int(v[0]), (str(v[1][0]), int(v[1][1])), bool(v[2]))
                for k, v in raw.get("shadow", {}).items()
            },
            "holds": {str(k): int(v) for k, v in raw.get("holds", {}).items()},
        }
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise StateError(f"malformed state: {exc!r}") from None


# ---------------------------------------------------------------------- state machine


@dataclass
class _Proposal:
    slot: int
    ballot: Ballot
    value: Config
    voters: Members
    started: float
    phase: int = 1
    promises: dict[Inc, tuple[Ballot | None, Config | None]] = field(default_factory=dict)
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
    # the grant record here that kept it from asking (this node would refuse itself)
    blocked_by: tuple[int, Inc] | None = None


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
    monotonic time and returns the effects to perform, in order.

    ``state``: what :func:`decode_state` read from this node's store (the node restarts
    as the same member), or None (a new member: ``me``'s id is new).
    """

    def __init__(
        self,
        me: Inc,
        config: QuorumConfig,
        now: float,
        rng: random.Random | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.me = me
        self.config = config
        self.rng = rng or random.Random()
        self.booted = now
        self.version = 0
        self.members: Members = ()
        self.expected = config.expected_size
        self.basis = config.expected_size
        self.left = False
        self._leaving: list[tuple[Any, float]] = []
        self._setting: list[tuple[Any, int, float]] = []  # set_expected requests
        self.quiet_until = 0.0
        # no removal before term + margin after the last one (after a restart with the
        # store, the last one is unknown: counted from the restart)
        self.last_removal = now if state is not None else -math.inf
        # acceptor state for slot version + 1
        self.promised: Ballot | None = None
        self.accepted: tuple[Ballot, Config] | None = None
        self.accepted_at = 0.0
        self.max_round = 0
        self.proposal: _Proposal | None = None
        self.next_proposal_at = 0.0
        # peers: connected names, their ids, versions, wishes and expected-size settings
        self.connected: set[str] = set()
        self.peer_inc: dict[str, Inc] = {}
        self.peer_version: dict[str, int] = {}
        self.peer_joinable: dict[str, bool] = {}
        self.peer_setting: dict[Inc, int] = {}
        self.down_since: dict[str, float] = {}
        self.next_gossip = 0.0
        # member side of leases: each key's grant, highest epoch granted, and the grant
        # a candidate's grant to itself replaced (restored when that one is withdrawn)
        self.grants: dict[str, Grant] = {}
        self.tops: dict[str, int] = {}
        self.shadow: dict[str, Grant] = {}
        # epochs of this node's grants to itself that have not made it a holder (yet)
        self.never_held: dict[str, int] = {}
        # the last epoch of each key this node held (stored: after a restart it cannot
        # say that a grant of that epoch made no lease)
        self.holds: dict[str, int] = {}
        # requests refused for a live grant to another holder: judged again at once if
        # that grant is voided (its witness closed) within a round's time
        self.refused: dict[str, list[tuple[Inc, tuple[Any, ...], float]]] = {}
        # each key's last acquire round that made no lease (for :meth:`key_status` only:
        # which voters had not answered, which refused; no decision reads it)
        self.last_round: dict[str, dict[str, Any]] = {}
        self.effects: dict[str, deque[tuple[int, Any]]] = {}
        # candidate side; backoff: key -> (until, holder) of a live grant a member named
        self.seen_epoch: dict[str, int] = {}
        self.backoff: dict[str, tuple[float, str]] = {}
        self.wants: dict[str, _Want] = {}
        self.held: dict[str, _Held] = {}
        self.fences: dict[int, _Fence] = {}
        self._next_rid = 0
        self._out: list[Out] = []
        self.restored = state is not None
        if state is not None:
            self._restore(state, now)
        self._saved = encode_state(self)

    def _restore(self, state: dict[str, Any], now: float) -> None:
        self.version = state["version"]
        self.members = state["members"]
        self.expected = state["expected"]
        self.basis = state["basis"]
        self.max_round = state["max_round"]
        if state["accepted_slot"] == self.version + 1:
            self.promised = state["promised"]
            self.accepted = state["accepted"]
            self.accepted_at = now
        elif state["promised"] is not None and state["accepted_slot"] == 0:
            self.promised = state["promised"]
        self.tops = dict(state["tops"])
        self.holds = dict(state["holds"])
        # expiries are not stored: an unexpired grant runs a whole term from now
        expires = now + self.config.term + self.config.margin
        for key, (epoch, holder, void) in state["grants"].items():
            self.grants[key] = Grant(epoch, holder, expires, void)
            self.tops[key] = max(self.tops.get(key, 0), epoch)
        for key, (epoch, holder, void) in state["shadow"].items():
            # a record set aside had run out here (that is why it could be replaced):
            # it comes back run out, renewable by its holder, blocking nobody
            aside = Grant(epoch, holder, now, void)
            rec = self.grants.get(key)
            if rec is not None and rec.holder == self.me:
                # its own grant to itself never made it a holder (a lease drops the
                # shadow) and its round died with the process: the grant it replaced
                # comes back, so that holder's renewals are granted again
                self.grants[key] = aside
            else:
                self.shadow[key] = aside
        if self.version == 0:
            self.expected = self.basis = self.config.expected_size

    # ------------------------------------------------------------------ queries

    @property
    def is_member(self) -> bool:
        return self.me in self.members and not self.left

    @property
    def configuration(self) -> Config:
        return (self.members, self.expected, self.basis)

    def rejoin_problem(self) -> str | None:
        """Why this node is not back in its cluster's quorum, or None: a connected peer
        not heard yet, behind a connected peer's configuration, not (yet) a member, or a
        connected member that has not said hello at this version (it does not count
        this node yet). None at version 0 with no peer ahead: a cold boot (the settle
        timeout decides)."""
        silent = sorted(n for n in self.connected if n not in self.peer_version)
        if silent:
            return f"quorum: no hello from {', '.join(silent)} yet"
        connected = self._connected_incs()
        ahead = max((self.peer_version.get(n, 0) for n in connected), default=0)
        if ahead > self.version:
            return f"quorum: at configuration v{self.version}, a peer has v{ahead}"
        if self.version == 0:
            return None
        if not self.is_member:
            names = ", ".join(self.member_names())
            return f"quorum: not a member of configuration v{self.version} ({names}) yet"
        waiting = sorted(
            m[0]
            for m in self.members
            if m != self.me
            and connected.get(m[0]) == m
            and self.peer_version.get(m[0]) != self.version
        )
        if waiting:
            return f"quorum: {', '.join(waiting)} not at configuration v{self.version} yet"
        return None

    def quorum_problem(self, now: float) -> str | None:
        """Why this node's quorum can grant nothing now (a state that stops the
        ``"majority"`` policy's work), or None: no configuration formed past the settle
        time, not a member with no member reachable to add it, or a member that reaches
        no majority of its configuration."""
        connected = self._connected_incs()
        if self.version == 0:
            if now - self.booted < self.config.settle:
                return None
            need = quorum_size((), self.config.expected_size)
            return (
                f"no configuration formed: {len(connected) + 1} node(s) connected, "
                f"{need} of the expected {self.config.expected_size or 1} needed"
            )
        live = [m for m in self.members if m == self.me or connected.get(m[0]) == m]
        if not self.is_member:
            if live:
                return None  # a member can add it
            return (
                f"not a member of configuration v{self.version} "
                f"({', '.join(self.member_names())}) and none of them is connected: if "
                "they lost their stores, `otpkit shell` ... `quorum_recover` starts a new "
                "configuration from the connected nodes"
            )
        need = quorum_size(self.members, self.expected)
        if len(live) < need:
            down = sorted(m[0] for m in self.members if m not in live)
            return (
                f"no majority: {len(live)} of the {need} members needed are connected "
                f"(down: {', '.join(down)})"
            )
        return None

    def key_status(self, key: str, now: float) -> dict[str, Any]:
        """What this node knows of ``key``'s lease, as plain values (a read: it changes
        nothing). The Singleton's watchdog (``registry._watchdog``) says from it why no
        holder is active.

        ``member``, ``version``, ``members``; ``live``: the members this node reaches
        (itself included); ``need``: how many members make a majority; ``outsiders``:
        connected nodes that are not members; ``expected``; ``problem``:
        :meth:`quorum_problem`. ``grant``: this member's record for the key,
        ``{"holder", "epoch", "left", "void"}`` (``left`` <= 0: ran out here), or None;
        ``held``: the epoch this node holds the key at, or None; ``asking``: this node
        has a candidate for it; ``round``: its open grant round, ``last_round``: its
        last round that made no lease, each ``{"epoch", "age", "silent", "refused"}``
        (the voters that had not answered, and those that refused); ``backoff``:
        ``{"holder", "left"}`` while a member's refusal named a live holder.
        """
        connected = self._connected_incs()
        live = sorted(m[0] for m in self.members if m == self.me or connected.get(m[0]) == m)
        names = {m[0] for m in self.members}
        rec = self.grants.get(key)
        held = self.held.get(key)
        want = self.wants.get(key)

        def round_of(raw: dict[str, Any] | None) -> dict[str, Any] | None:
            if raw is None:
                return None
            return {**{k: v for k, v in raw.items() if k != "started"}, "age": now - raw["started"]}

        rnd = want.round if want is not None else None
        current = None
        if rnd is not None:
            current = {
                "epoch": rnd.epoch,
                "started": rnd.started,
                "silent": sorted(v[0] for v in rnd.voters if v not in rnd.ok and v not in rnd.no),
                "refused": sorted(v[0] for v in rnd.no),
            }
        until, by = self.backoff.get(key, (0.0, ""))
        return {
            "member": self.is_member,
            "version": self.version,
            "members": list(self.member_names()),
            "live": live,
            "need": quorum_size(self.members, self.expected),
            "outsiders": sorted(n for n in self.connected if n not in names),
            "expected": self.expected,
            "problem": self.quorum_problem(now),
            "grant": None
            if rec is None
            else {
                "holder": rec.holder[0],
                "epoch": rec.epoch,
                "left": rec.expires - now,
                "void": rec.void,
            },
            "held": None if held is None else held.epoch,
            "asking": want is not None,
            "round": round_of(current),
            "last_round": round_of(self.last_round.get(key)),
            "backoff": {"holder": by, "left": until - now} if until > now else None,
        }

    def recover(self, now: float) -> list[Out]:
        """An operator's command for a configuration whose majority is gone for good
        (lost stores): decide, without that majority, a new configuration of this node
        and every connected node, above every version seen. Unsafe if the old majority
        still runs elsewhere (two clusters); the operator vouches that it does not."""
        connected = self._connected_incs()
        members = tuple(sorted({self.me, *connected.values()}))
        version = max([self.version, *self.peer_version.values()]) + 1
        value = (members, self.expected or self.config.expected_size, self.basis)
        self.left = False
        self.last_removal = now
        for name in sorted(connected):
            self._send(name, ("decided", self.me, version, _encode_config(value)))
        self._learn(version, value, now)
        return self._take()

    def member_names(self) -> tuple[str, ...]:
        return tuple(sorted(m[0] for m in self.members))

    def _take(self) -> list[Out]:
        out, self._out = self._out, []
        state = encode_state(self)
        if state != self._saved:
            self._saved = state
            out.insert(0, Persist(state))
        return out

    def persist_now(self) -> dict[str, Any]:
        """The state to store now (at the start, or again after a failed write)."""
        self._saved = encode_state(self)
        return self._saved

    def _send(self, node: str, msg: tuple[Any, ...]) -> None:
        self._out.append(Send(node, msg))

    def _hello(self) -> tuple[Any, ...]:
        joinable = not self.left and not self._leaving
        return (
            "hello",
            self.me,
            self.version,
            _encode_config(self.configuration),
            joinable,
            self.config.expected_size,
        )

    def _quiet(self, now: float) -> bool:
        return now < self.quiet_until

    def _serving(self, version: int) -> bool:
        """Judges new grants and fences of ``version``."""
        return self.is_member and version == self.version and self.accepted is None

    def _may_remove(self, now: float) -> bool:
        return now - self.last_removal >= self.config.term + self.config.margin

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
        return self._take()

    def witness_down(self, name: str, key: str, epoch: int, reason: str, now: float) -> list[Out]:
        """The witness of ``(key, epoch)`` that ``name``'s acting process held closed
        (``distribution._witness``). A close (EOF or reset) proves that process ended
        or stopped acting: the grant is void at once, so the next holder need not wait
        for its expiry. A node's dist link closing proves nothing (its dist alone may
        have died): that grant runs out."""
        if not is_closed_reason(reason):
            return self._take()
        aside = self.shadow.get(key)
        if aside is not None and aside.holder[0] == name and aside.epoch == epoch:
            aside.void = True  # a record set aside comes back as it is: void
        rec = self.grants.get(key)
        if rec is None or rec.void or rec.holder[0] != name or rec.epoch != epoch:
            return self._take()
        rec.void = True
        for src, body, until in self.refused.pop(key, []):
            if until > now and src[0] != name:
                self._on_grant_req(src, body, now)
        # a candidate waiting on that lease asks now; a round it has open goes on: the
        # members that refused it for that holder judge it again as they see the close
        if key in self.backoff and self.backoff[key][1] == name:
            del self.backoff[key]
        self._ask_now(key, now)
        return self._take()

    def _ask_now(self, key: str, now: float) -> None:
        """A record that blocked this node's candidate for ``key`` is gone: it asks at
        once instead of at its next retry."""
        want = self.wants.get(key)
        if want is not None and want.round is None:
            self._start_acquire(want, now)

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
        founding = self.version == 0 and self.accepted is not None
        if founding and self.me in self.accepted[1][0]:  # type: ignore[index]
            # a cold boot's accepted value names this node: it votes on until that
            # value is decided (its voters need it), then leaves as a member does
            self._leaving.append((token, now + timeout))
        elif not self.is_member or self.members == (self.me,):
            self.left = True
            self._out.append(Reply(token, True))
        else:
            self._leaving.append((token, now + timeout))
            self.next_proposal_at = now
            self._propose(now)
        return self._take()

    def set_expected(self, size: int, token: Any, timeout: float, now: float) -> list[Out]:
        """An operator's command: make ``size`` the expected size the members' majorities
        are counted over. ``Reply(token, True)`` once decided, False on timeout or if this
        node is no member."""
        if size < 0 or not self.is_member or not is_viable((self.members, size, self.basis)):
            self._out.append(Reply(token, False))
        elif size == self.expected:
            self._out.append(Reply(token, True))
        else:
            self._setting.append((token, size, now + timeout))
            self.next_proposal_at = now
            self._propose(now)
        return self._take()

    # ------------------------------------------------------------------ messages

    def receive(self, msg: tuple[Any, ...], now: float) -> list[Out]:
        """A message from a peer's quorum actor (or this node's own). One that does not
        fit (:func:`message_problem`) raises ValueError and changes nothing."""
        why = message_problem(msg)
        if why is not None:
            raise ValueError(why)
        src: Inc = (str(msg[1][0]), int(msg[1][1]))
        self.peer_inc[src[0]] = src
        _HANDLERS[msg[0]](self, src, tuple(msg[2:]), now)
        return self._take()

    def _on_hello(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        version, value, joinable = int(body[0]), _config(body[1]), bool(body[2])
        setting = int(body[3])
        self.peer_version[src[0]] = version
        self.peer_joinable[src[0]] = joinable
        self.peer_setting[src] = setting
        if version > self.version:
            self._learn(version, value, now)
        # a candidate's round that died with its process leaves grants that block the
        # holder's renewals here for a whole term: ask the (restarted) candidate
        for key, rec in self.grants.items():
            if rec.holder == src and src != self.me and not rec.void and now < rec.expires:
                self._send(src[0], ("check?", self.me, key, rec.epoch))

    def _on_check(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        """A member asks whether this node's grant ``(key, epoch)`` still matters: it is
        released unless this node holds that epoch, has a round open for it, or held it
        last (then it cannot tell that its acting process stopped: the grant runs out)."""
        key, epoch = str(body[0]), int(body[1])
        held, want = self.held.get(key), self.wants.get(key)
        if held is not None and held.epoch == epoch:
            return
        if want is not None and want.round is not None and want.round.epoch == epoch:
            return
        if self.holds.get(key) == epoch:
            return
        self._send(src[0], ("release", self.me, key, epoch))

    def _on_decided(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        slot, value = int(body[0]), _config(body[1])
        if slot > self.version:
            self._learn(slot, value, now)

    def _can_vote(self, slot: int) -> bool:
        if slot != self.version + 1 or self.left:
            return False
        return self.version == 0 or self.me in self.members

    def _on_prepare(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        slot, ballot = int(body[0]), _ballot(body[1])
        self.max_round = max(self.max_round, ballot[0])
        if slot <= self.version:
            self._send(src[0], self._hello())
        elif self._can_vote(slot):
            if self.promised is None or ballot > self.promised:
                self.promised = ballot
                acc_b, acc_v = self.accepted if self.accepted is not None else (None, None)
                value = None if acc_v is None else _encode_config(acc_v)
                self._send(src[0], ("promise", self.me, slot, ballot, acc_b, value))
            else:
                self._send(src[0], ("nack", self.me, slot, ballot, self.promised))

    def _valid_value(self, slot: int, value: Config, now: float) -> bool:
        if slot == 1:
            return bool(value[0])
        if not is_single_change(self.configuration, value) or not is_viable(value):
            return False
        return not is_removal(self.members, value[0]) or self._may_remove(now)

    def _on_accept(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        slot, ballot, value = int(body[0]), _ballot(body[1]), _config(body[2])
        if slot <= self.version:
            self._send(src[0], self._hello())
            return
        if not self._can_vote(slot):
            return
        valid = self._valid_value(slot, value, now)
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
        acc_v = None if body[3] is None else _config(body[3])
        p = self.proposal
        if p is None or p.phase != 1 or p.slot != slot or p.ballot != ballot:
            return
        if src not in p.voters:
            return
        p.promises[src] = (acc_b, acc_v)
        if not is_majority(p.promises, p.voters, self._count_size(slot)):
            return
        # phase 1 of slot 1 counts over this node's own setting; the value chosen (an
        # accepted one, of another founder's setting) is counted over its own size
        p.value = choose_value(p.promises.values(), p.value)
        if slot == 1:
            p.voters = p.value[0]
        p.phase = 2
        for m in p.voters:
            self._send(m[0], ("accept", self.me, slot, ballot, _encode_config(p.value)))

    def _count_size(self, slot: int) -> int:
        """The expected size votes for ``slot`` are counted over."""
        return self.config.expected_size if slot == 1 else self.expected

    def _on_accepted(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        slot, ballot = int(body[0]), _ballot(body[1])
        p = self.proposal
        if p is None or p.phase != 2 or p.slot != slot or p.ballot != ballot:
            return
        if src not in p.voters:
            return
        p.accepts.add(src)
        size = p.value[1] if slot == 1 else self.expected
        if is_majority(p.accepts, p.voters, size):
            self.proposal = None
            targets = {m[0] for m in (*p.voters, *p.value[0])} | self.connected
            value = _encode_config(p.value)
            for name in sorted(targets):
                self._send(name, ("decided", self.me, slot, value))

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
                self.tops[key] = max(self.tops.get(key, 0), epoch)
                self.shadow.pop(key, None)
            elif rec.epoch == epoch and rec.holder == holder and not rec.void:
                rec.expires = max(rec.expires, expires)

    # -- leases, member side

    def _on_grant_req(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        key, epoch, rid, version, term = str(body[0]), int(body[1]), body[2], int(body[3]), body[4]
        rec, top = self._yield_to(key, epoch, src, version, now)
        aside = self.shadow.get(key)
        if (
            is_renewal(aside, epoch, src)
            and rec is not None
            and (rec.void or now >= rec.expires)
            and not (rec.holder == self.me and key in self.held)
        ):
            # the live holder's record this member set aside for a grant that ran out
            # unreleased (its release was lost): that holder renews, so it comes back
            self._withdraw(key)
            rec = self.grants.get(key)
        renewal = is_renewal(rec, epoch, src)
        if renewal:
            ok = self.is_member  # at any version: a renewal makes no new holder
        else:
            ok = self._serving(version) and grant_allowed(
                rec, top, epoch, src, now, self._quiet(now)
            )
        if ok:
            expires = now + float(term) + self.config.margin
            if rec is not None and renewal:
                rec.expires = max(rec.expires, expires)
            else:
                if rec is not None and rec.holder != src and not rec.void:
                    # a live holder's record that ran out here (it could not reach this
                    # member): back if this candidate's grant is released, so that
                    # holder's renewals are granted again. The first one set aside is
                    # kept through the candidates' churn after it (a record that comes
                    # back for a holder whose lease is gone is harmless: it ran out,
                    # and that holder renews nothing)
                    self.shadow.setdefault(key, rec)
                if src == self.me:
                    self.never_held[key] = epoch
                self.grants[key] = Grant(epoch, src, expires)
                self.tops[key] = max(self.tops.get(key, 0), epoch)
        if version != self.version:
            self._send(src[0], self._hello())
        live = None if ok else live_holder(self.grants.get(key), src, now)
        blocker = None if live is None else [list(live[0]), live[1]]
        if live is not None and self._serving(version):
            waiting = self.refused.setdefault(key, [])
            waiting[:] = [w for w in waiting if w[2] > now and w[0] != src]
            waiting.append((src, body, now + self.config.round_timeout))
        self._send(src[0], ("grant", self.me, key, rid, ok, self.tops.get(key, 0), blocker))

    def _yield_to(
        self, key: str, epoch: int, src: Inc, version: int, now: float
    ) -> tuple[Grant | None, int]:
        """The record for ``key`` to judge ``src``'s request by, and the epoch it must
        exceed. This node's grant to itself gives way to a competing request that ranks
        higher, ``(epoch, id)``: its pending round is dropped (its grants released, its
        answers ignored from now on), and a grant of the same epoch, dropped or
        released, is withdrawn (the competitor may then have that epoch: it never made
        a holder here). Any other record is kept as it is."""
        rec, top = self.grants.get(key), self.tops.get(key, 0)
        if (
            rec is None
            or rec.holder != self.me
            or src == self.me
            or (epoch, src) <= (rec.epoch, self.me)
            or not self._serving(version)
        ):
            return rec, top
        held, want = self.held.get(key), self.wants.get(key)
        if held is not None and held.epoch == rec.epoch:
            return rec, top  # a lease this node holds never gives way
        if want is not None and want.round is not None and want.round.epoch == rec.epoch:
            self._fail_acquire_round(want, now)
            rec.void = True
        if rec.void and epoch == rec.epoch:
            fresh = self.never_held.pop(key, None) == epoch
            self._withdraw(key)
            # the competitor may have this epoch only if it never made a lease here
            return self.grants.get(key), min(top, epoch - 1) if fresh else top
        return rec, top

    def _withdraw(self, key: str) -> None:
        """Drop a released grant; the grant it replaced comes back, so that holder's
        renewals are granted again."""
        del self.grants[key]
        old = self.shadow.pop(key, None)
        if old is not None:
            self.grants[key] = old

    def _on_release(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        key, epoch = str(body[0]), int(body[1])
        rec = self.grants.get(key)
        if rec is not None and rec.epoch == epoch and rec.holder == src:
            if key in self.shadow and not (src == self.me and key in self.held):
                self._withdraw(key)
            else:
                rec.void = True
            want = self.wants.get(key)
            if want is not None and want.blocked_by == (epoch, src):
                self._ask_now(key, now)  # the grant that kept it from asking is gone

    def _on_fence_req(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        key, epoch, effect, rid, version = str(body[0]), int(body[1]), body[2], body[3], body[4]
        rec = self.grants.get(key)
        ok = self._serving(int(version)) and fence_allowed(rec, epoch, src)
        if ok:
            log = self.effects.setdefault(key, deque(maxlen=self.config.effects_kept))
            log.append((epoch, effect))
        top = self.tops.get(key, 0)
        self._send(src[0], ("fenced", self.me, key, rid, ok, top))

    # -- leases, candidate side

    def _on_grant(self, src: Inc, body: tuple[Any, ...], now: float) -> None:
        key, rid, ok, top = str(body[0]), body[1], bool(body[2]), int(body[3])
        blocker = body[4] if len(body) > 4 else None
        self.seen_epoch[key] = max(self.seen_epoch.get(key, 0), top)
        want, held = self.wants.get(key), self.held.get(key)
        counted = False
        for rnd in (want.round if want else None, held.round if held else None):
            if rnd is not None and rnd.rid == rid and src in rnd.voters:
                if ok:
                    rnd.ok.add(src)
                    rnd.no.discard(src)  # judged again once the holder it waited for died
                else:
                    rnd.no.add(src)
                counted = True
                # refused for another candidate's epoch at least as high: a contest, which
                # waiting for the silent members does not end; retry after a random pause
                rnd.beaten = rnd.beaten or (not ok and top >= rnd.epoch)
        if want is not None and blocker is not None and not ok:
            holder, left = (str(blocker[0][0]), int(blocker[0][1])), float(blocker[1])
            if holder != self.me and want.round is not None and want.round.rid == rid:
                # a live holder: if this round fails, ask again once that grant runs out,
                # not at once with higher epochs (the others may still grant this one)
                wait = min(max(left, 0.0), self.config.term + self.config.margin)
                until = max(self._backoff_until(key, now), now + wait)
                self.backoff[key] = (until, holder[0])
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

    def _learn(self, version: int, value: Config, now: float) -> None:
        was_member = self.me in self.members
        old = self.members
        if version > self.version + 1 or is_removal(old, value[0]):
            self.last_removal = now
        self.version = version
        self.members, self.expected, self.basis = value
        self.promised, self.accepted = None, None
        if self.proposal is not None and self.proposal.slot <= version:
            self.proposal = None
        if self.me in self.members and not was_member and version > 1:
            self.quiet_until = now + self.config.term + self.config.margin
        for name in list(self.down_since):
            if not any(m[0] == name for m in self.members):
                del self.down_since[name]
        if self._leaving and self.me not in self.members:
            self.left = True
            for token, _deadline in self._leaving:
                self._out.append(Reply(token, True))
            self._leaving.clear()
        for token, size, deadline in list(self._setting):
            if self.expected == size:
                self._setting.remove((token, size, deadline))
                self._out.append(Reply(token, True))
        # new rounds of the old version can no longer succeed (renewals can: see _settle_key)
        for want in self.wants.values():
            if want.round is not None and want.round.version != version:
                self._fail_acquire_round(want, now)
        self._out.append(Changed(version, self.member_names()))

    def _propose(self, now: float) -> None:
        if self.proposal is not None or now < self.next_proposal_at or self.left:
            return
        value = self._wanted_change(now)
        if value is None or (self.version > 0 and not is_viable(value)):
            return  # (a change no majority could ever follow is never proposed)
        self.max_round += 1
        ballot: Ballot = (self.max_round, self.me[0], self.me[1])
        slot = self.version + 1
        voters = value[0] if slot == 1 else self.members
        self.proposal = _Proposal(slot, ballot, value, voters, now)
        for m in voters:
            self._send(m[0], ("prepare", self.me, slot, ballot))

    def _wanted_change(self, now: float) -> Config | None:
        connected = self._connected_incs()
        if self.version == 0:
            if now - self.booted < self.config.settle or self._leaving:
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
            size = self.config.expected_size
            return (tuple(sorted((*founders.values(), self.me))), size, size)
        if self.me not in self.members:
            return None
        if self.accepted is not None and now - self.accepted_at > 2 * self.config.round_timeout:
            return self.accepted[1]  # finish a change that a proposer left half done
        if self._leaving and len(self.members) > 1:
            if not self._may_remove(now):
                return None
            return (tuple(m for m in self.members if m != self.me), self.expected, self.basis)
        if self._setting:
            return (self.members, self._setting[-1][1], self.basis)
        live = [m[0] for m in self.members if m == self.me or connected.get(m[0]) == m]
        if min(live) != self.me[0]:
            return None
        wishes = {**self.peer_setting, self.me: self.config.expected_size}
        wished = wished_expected(wishes, self.members, self.basis)
        if wished is not None:
            return (self.members, wished, wished)
        # a wish counts only if said at this version: a node that just left may have
        # said "join" before it saw its own removal
        joinable = {
            n
            for n in connected
            if self.peer_joinable.get(n, False) and self.peer_version.get(n) == self.version
        }
        members = next_change(
            self.me,
            self.members,
            connected,
            joinable,
            self.down_since,
            now,
            self.config.remove_after,
            self._may_remove(now),
        )
        return None if members is None else (members, self.expected, self.basis)

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
        until = self._backoff_until(want.key, now)
        if now < until:
            want.retry_at = until
            return
        rec = self.grants.get(want.key)
        if rec is not None and not rec.void and rec.holder != self.me and now < rec.expires:
            # this node would refuse itself: asking the others would only take their
            # grants away from that holder's round (two candidates that granted each
            # other would refuse themselves, round after round)
            want.retry_at = now + self.rng.uniform(0.05, 0.25)
            want.blocked_by = (rec.epoch, rec.holder)
            return
        want.blocked_by = None
        top = max(self.seen_epoch.get(want.key, 0), self.tops.get(want.key, 0))
        want.round = self._new_round(want.key, top + 1, now)
        self.seen_epoch[want.key] = top + 1
        self._ask_grant(want.round)

    def _backoff_until(self, key: str, now: float) -> float:
        """Until when a candidate for ``key`` does not ask: a member named a live holder
        (kept across acquire calls: a standby asks again and again)."""
        until = self.backoff.get(key, (0.0, ""))[0]
        if until <= now:
            self.backoff.pop(key, None)
        return until

    def _release_at(self, key: str, epoch: int, voters: Iterable[Inc]) -> None:
        for m in voters:
            self._send(m[0], ("release", self.me, key, epoch))

    def _give_up(self, want: _Want) -> None:
        del self.wants[want.key]
        if want.round is not None:
            self._remember_round(want.round)
            self._release_at(want.key, want.round.epoch, want.round.ok)
        self._out.append(Reply(want.token, None))

    def _fail_acquire_round(self, want: _Want, now: float) -> None:
        rnd = want.round
        want.round = None
        if rnd is not None:
            self._remember_round(rnd)
            self._release_at(want.key, rnd.epoch, rnd.ok)
        want.retry_at = max(now + self.rng.uniform(0.05, 0.25), self._backoff_until(want.key, now))

    def _remember_round(self, rnd: _Round) -> None:
        self.last_round[rnd.key] = {
            "epoch": rnd.epoch,
            "started": rnd.started,
            "silent": sorted(v[0] for v in rnd.voters if v not in rnd.ok and v not in rnd.no),
            "refused": sorted(v[0] for v in rnd.no),
        }

    def _settle_key(self, key: str, now: float) -> None:
        """Act on the rounds of ``key`` that have an outcome."""
        expected = self.expected
        want = self.wants.get(key)
        if want is not None and want.round is not None:
            rnd = want.round
            result = rnd.outcome(expected)
            expires = rnd.started + self.config.term - self.config.margin
            if result and rnd.version == self.version and expires > now:
                del self.wants[key]
                self.last_round.pop(key, None)
                self.shadow.pop(key, None)
                self.never_held.pop(key, None)
                self.holds[key] = rnd.epoch  # stored before the lease is reported
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
            # a renewal counts across one change of configuration (any majority of one
            # meets any majority of the next), never across two
            if result and self.version - rnd.version <= 1:
                held.expires = max(
                    held.expires, rnd.started + self.config.term - self.config.margin
                )
                held.renew_at = rnd.started + self.config.term / 3
                held.round = None
            elif result is not None or now - rnd.started >= self.config.round_timeout:
                held.round = None
                held.renew_at = now + min(0.1, self.config.term / 10)

    def _settle_fence(self, fence: _Fence, now: float) -> None:
        result = fence.round.outcome(self.expected)
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
            self._settle_key(key, now)  # a round that just succeeded is not given up
            want = self.wants.get(key)
            if want is None:
                continue
            if now >= want.deadline:
                self._give_up(want)
            elif want.round is None and now >= want.retry_at:
                self._start_acquire(want, now)
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
        for token, size, deadline in list(self._setting):
            if now >= deadline:
                self._setting.remove((token, size, deadline))
                self._out.append(Reply(token, False))
        return self._take()


def _members(value: Any) -> Members:
    members = tuple(sorted((str(m[0]), int(m[1])) for m in value))
    if len({m[0] for m in members}) != len(members):
        raise ValueError(f"a member set names a node twice: {members!r}")
    return members


def _config(value: Any) -> Config:
    return (_members(value[0]), int(value[1]), int(value[2]))


def _encode_config(value: Config) -> list[Any]:
    return [[list(m) for m in value[0]], value[1], value[2]]


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
    "check?": QuorumCore._on_check,
    "fence?": QuorumCore._on_fence_req,
    "fenced": QuorumCore._on_fenced,
}
