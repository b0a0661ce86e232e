"""The run ledger: which ticks were claimed, and which claims are still open (see
ARCHITECTURE.md, *The run ledger*).

Pure: a :class:`Ledger` is a frozen value and every operation returns a new one (or a
decision); no I/O, no clock. The scheduler's holder claims each tick here before the
task starts and finishes it after; members keep replicated copies; a new holder merges
the copies of a majority before it fires anything. This module owns the values, the
claims and finishes, replication and merge; an open claim's attempts are
``_ledger_attempts``'s, the encoded form ``_ledger_codec``'s.

**Claims and lanes.** A claim is a :class:`ClaimKey` ``(job, at)``, or
``(job, at, node)`` for run strategy ``"all"`` (one run per node per tick). Claims of one
job (and node) form a *lane*. Per lane the ledger keeps only what the "once" guarantee
needs: the highest claimed tick (``high``) and the open claims (claimed, not finished),
each with the epoch it was claimed under. Finished claims leave no trace but ``high``:
ticks only move forward, so a tick at or below ``high`` is never claimed again.

**Decisions** (all on plain values):

* :func:`claim` accepts a key iff its epoch is at least the highest epoch the state has
  seen (fencing: an old holder's claim is refused) and its tick is above its lane's
  ``high``. So no key is ever accepted twice, finished or not.
* :func:`finish` closes an open claim (under the same epoch rule); the outcome is checked
  (one of :data:`OUTCOMES`) and not kept.
* :func:`interrupted` lists the open claims whose run is not alive: a new holder reports
  them as ``"interrupted"`` runs and finishes them.
* :func:`observe` raises the highest epoch seen without writing anything.

**Replication.** Each change to a lane is stamped ``(epoch, seq)``: the writer's epoch
and one more than the lane's previous ``seq``, so stamps of a lane only grow along the
holders' history. The holder replicates the whole changed lane (:func:`lane_update`,
a few ticks) and each member takes it with :func:`accept` iff its epoch is at least the
member's highest epoch and its stamp is not older than the member's copy. A member that
missed a write is brought up to date by the next one: there are no gaps to track.

**Merge** (:func:`merge`): per lane, the copy with the highest stamp (its ``high`` and
its open claims); the highest epoch of all. Safe under two conditions the scheduler
keeps: (1) a claim or finish counts as accepted only once a majority of members accepted
its lane update, and the holder starts a run only after its claim was accepted; (2) a new
holder reads each member's copy only after that member observed its epoch
(:func:`observe`), so from then on the member refuses the old holder's writes. Then for
any accepted write ``w`` and any majority ``M`` read by a later holder: ``M`` meets the
majority that accepted ``w`` in a member ``m``; ``m`` took ``w`` before it observed the
reader's epoch, and stamps at a member only grow, so ``m``'s copy is ``w`` or a later
write. Every later write descends from ``w``: the same holder's next writes are built on
its own state, and a later holder's on a merge that (by the same argument, by induction
on epochs) already contained ``w``. So the newest copy in ``M`` contains ``w``: an
accepted claim is in it as ``high`` (never claimed again) and, unless an accepted finish
closed it, as an open claim (reported interrupted if its run is gone); an accepted
finish is never undone (a finished run is not reported interrupted). A write that
reached no majority may or may not survive: a claim that survives was never started
(it is reported interrupted), one that does not leaves its tick unclaimed (the misfire
policy covers it); a finish that does not survive belongs to a run whose finish the old
holder never reported.

Why not "the highest tick of any copy, and the union of open claims not finished in any
copy": with only ``high`` and open claims per copy, a member that missed claim ``t`` but
took a later claim of the same lane looks exactly like one on which ``t`` finished, so an
accepted, unfinished claim could vanish in the merge. The stamp tells which copy is
newest, and the newest copy already holds the answer.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from otpkit.errors import OtpkitError

__all__ = [
    "MAX_STAMP",
    "OUTCOMES",
    "ClaimKey",
    "Lane",
    "LaneUpdate",
    "Ledger",
    "LedgerError",
    "accept",
    "accept_all",
    "claim",
    "claim_all",
    "finish",
    "finish_all",
    "highest",
    "interrupted",
    "lane_update",
    "merge",
    "observe",
    "open_claims",
    "to_utc",
]

#: How a claimed run ended, as :func:`finish` accepts it (``missed``: a tick settled by
#: the misfire policy without a run; ``skipped``: not run because ``overlap=False`` and
#: the previous run was still open).
OUTCOMES = ("finished", "failed", "timed_out", "interrupted", "missed", "skipped")
#: The highest epoch or stamp sequence number a ledger takes (from a holder or a
#: member): 2**62 - 1, so a holder's next era and sequence number still fit the 64-bit
#: integers of msgpack and SQLite.
MAX_STAMP = (1 << 62) - 1
#: The highest attempt number a ledger takes.
MAX_ATTEMPT = 1000

#: A lane: a job, and the node for run strategy ``"all"`` (else None).
LaneKey = tuple[str, str | None]
#: A lane's write stamp: ``(epoch, seq)``.
Stamp = tuple[int, int]


class LedgerError(OtpkitError, ValueError):
    """An encoded ledger or lane update is malformed; the message names the bad part."""


class ClaimKey(NamedTuple):
    """One run to claim: ``job`` at tick ``at`` (aware), on ``node`` for strategy ``"all"``."""

    job: str
    at: datetime
    node: str | None = None

    @property
    def lane(self) -> LaneKey:
        """The lane the claim belongs to: ``(job, node)``."""
        return (self.job, self.node)


@dataclass(frozen=True)
class Lane:
    """One lane's record.

    Attributes:
        high: the highest tick ever claimed in the lane (UTC).
        open: the open claims, ``(tick, epoch claimed under)``, oldest tick first.
        stamp: ``(epoch, seq)`` of the write that made this record.
        tries: the attempts of open claims past their first (a job with
            ``max_attempts``): ``(tick, attempt, retry_at)``, oldest tick first.
            ``retry_at`` set: attempt ``attempt`` failed and the next one is due then,
            not started; None: attempt ``attempt`` was started. An open claim without
            an entry is at its first attempt (see ``_ledger_attempts.attempt_of``).
    """

    high: datetime
    open: tuple[tuple[datetime, int], ...]
    stamp: Stamp
    tries: tuple[tuple[datetime, int, datetime | None], ...] = ()


@dataclass(frozen=True)
class Ledger:
    """A copy of the run ledger: the highest epoch seen, and the lanes by ``(job, node)``.

    ``Ledger()`` is the empty ledger. Treat ``lanes`` as read-only: the operations of this
    module return new ledgers and never change one.
    """

    epoch: int = 0
    lanes: Mapping[LaneKey, Lane] = field(default_factory=dict)


@dataclass(frozen=True)
class LaneUpdate:
    """A lane record to replicate to the members (see :func:`accept`)."""

    job: str
    node: str | None
    lane: Lane

    @property
    def key(self) -> LaneKey:
        """The lane's key: ``(job, node)``."""
        return (self.job, self.node)


# ---------------------------------------------------------------------- checks


def checked_epoch(value: Any, what: str = "epoch") -> int:
    """``value`` checked: an int in 0..:data:`MAX_STAMP` (``what`` names it); else
    ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_STAMP:
        raise ValueError(f"{what} {value!r}: expected an int in 0..{MAX_STAMP}")
    return value


def checked_key(key: Any) -> ClaimKey:
    """``key`` checked, with its tick in UTC (so equal instants are equal keys); else
    ValueError (LedgerError for a tick outside the years 1-9999 in UTC)."""
    if not isinstance(key, tuple) or len(key) not in (2, 3):
        raise ValueError(f"claim key {key!r}: expected (job, at) or (job, at, node)")
    job, at = key[0], key[1]
    node = key[2] if len(key) == 3 else None
    if not isinstance(job, str) or not job:
        raise ValueError(f"claim key {key!r}: job {job!r}, expected a non-empty string")
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"claim key {key!r}: at {at!r}, expected an aware datetime")
    if node is not None and (not isinstance(node, str) or not node):
        raise ValueError(f"claim key {key!r}: node {node!r}, expected None or a non-empty string")
    return ClaimKey(job, to_utc(at, f"claim key {key!r}: at"), node)


def to_utc(at: datetime, where: str) -> datetime:
    """The aware ``at`` in UTC.

    Raises:
        LedgerError: ``at`` is outside the years 1-9999 in UTC (``0001-01-01`` east of
            UTC, ``9999-12-31`` west of it), naming ``where``.
    """
    try:
        return at.astimezone(UTC)
    except OverflowError:
        raise LedgerError(f"{where}: {at!r} is outside the years 1-9999 in UTC") from None


def _with_lane(state: Ledger, lane_key: LaneKey, lane: Lane, epoch: int) -> Ledger:
    lanes = dict(state.lanes)
    lanes[lane_key] = lane
    return Ledger(max(state.epoch, epoch), lanes)


# ---------------------------------------------------------------------- decisions


def observe(state: Ledger, epoch: int) -> Ledger:
    """``state`` having seen ``epoch``: from now on writes under a lower epoch are refused.

    A new holder has each member observe its epoch before it reads the member's copy
    (see the module's merge contract).

    Raises:
        ValueError: ``epoch`` is not an int >= 0.
    """
    epoch = checked_epoch(epoch)
    return state if epoch <= state.epoch else Ledger(epoch, state.lanes)


def claim(state: Ledger, key: ClaimKey | tuple[Any, ...], epoch: int) -> tuple[Ledger, bool]:
    """Claim ``key`` under ``epoch``: ``(new state, True)``, or ``(state, False)`` if refused.

    Refused when ``epoch`` is below the highest epoch ``state`` has seen (the claim comes
    from an old holder), or when the key's tick is at or below the highest tick claimed
    in its lane (claimed before: running, finished or interrupted). Accepted, the tick
    becomes the lane's ``high`` and an open claim, the lane's stamp becomes
    ``(epoch, seq + 1)``, and ``state``'s epoch becomes at least ``epoch``.

    Raises:
        ValueError: a malformed key (job, aware tick, node) or epoch.
    """
    key, epoch = checked_key(key), checked_epoch(epoch)
    if epoch < state.epoch:
        return state, False
    lane = state.lanes.get(key.lane)
    if lane is None:
        new = Lane(key.at, ((key.at, epoch),), (epoch, 1))
    elif key.at <= lane.high:
        return state, False
    else:
        new = Lane(key.at, (*lane.open, (key.at, epoch)), (epoch, lane.stamp[1] + 1), lane.tries)
    return _with_lane(state, key.lane, new, epoch), True


def finish(
    state: Ledger, key: ClaimKey | tuple[Any, ...], outcome: str, epoch: int
) -> tuple[Ledger, bool]:
    """Close the open claim ``key`` with ``outcome``, writing under ``epoch``.

    Returns ``(new state, True)`` when the claim was open; ``(state, False)`` when it is
    not (finished already, or never claimed: finishing twice changes nothing) or when
    ``epoch`` is below the highest epoch ``state`` has seen. The claim may have been made
    under an older epoch: a run's finish is recorded by whoever holds the ledger then.
    The outcome is checked but not kept (the lane keeps only ``high`` and open claims).

    Raises:
        ValueError: a malformed key or epoch, or an outcome not in :data:`OUTCOMES`.
    """
    key, epoch = checked_key(key), checked_epoch(epoch)
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome {outcome!r}: expected one of {OUTCOMES}")
    lane = state.lanes.get(key.lane)
    if epoch < state.epoch or lane is None:
        return state, False
    still_open = tuple(claimed for claimed in lane.open if claimed[0] != key.at)
    if len(still_open) == len(lane.open):
        return state, False
    new = Lane(lane.high, still_open, (epoch, lane.stamp[1] + 1), drop_try(lane, key.at))
    return _with_lane(state, key.lane, new, epoch), True


def claim_all(
    state: Ledger, keys: Iterable[ClaimKey | tuple[Any, ...]], epoch: int
) -> tuple[Ledger, list[ClaimKey]]:
    """:func:`claim` for many keys at once (one copy of the lanes, not one per key).

    Returns the new state and the keys accepted, in order; a refused key (its tick at
    or below its lane's ``high``, or an earlier key of the batch) is left out. Under an
    epoch below the state's, nothing is accepted.
    """
    epoch = checked_epoch(epoch)
    checked = [checked_key(key) for key in keys]
    if epoch < state.epoch:
        return state, []
    lanes = dict(state.lanes)
    done: list[ClaimKey] = []
    for key in checked:
        lane = lanes.get(key.lane)
        if lane is None:
            lanes[key.lane] = Lane(key.at, ((key.at, epoch),), (epoch, 1))
        elif key.at <= lane.high:
            continue
        else:
            lanes[key.lane] = Lane(
                key.at, (*lane.open, (key.at, epoch)), (epoch, lane.stamp[1] + 1), lane.tries
            )
        done.append(key)
    return (Ledger(max(state.epoch, epoch), lanes), done) if done else (state, [])


def finish_all(
    state: Ledger, items: Iterable[tuple[ClaimKey | tuple[Any, ...], str]], epoch: int
) -> tuple[Ledger, list[ClaimKey]]:
    """:func:`finish` for many ``(key, outcome)`` at once; returns the keys it closed."""
    epoch = checked_epoch(epoch)
    checked = []
    for key, outcome in items:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r}: expected one of {OUTCOMES}")
        checked.append(checked_key(key))
    if epoch < state.epoch:
        return state, []
    lanes = dict(state.lanes)
    done: list[ClaimKey] = []
    for key in checked:
        lane = lanes.get(key.lane)
        if lane is None:
            continue
        still_open = tuple(claimed for claimed in lane.open if claimed[0] != key.at)
        if len(still_open) == len(lane.open):
            continue
        lanes[key.lane] = Lane(
            lane.high, still_open, (epoch, lane.stamp[1] + 1), drop_try(lane, key.at)
        )
        done.append(key)
    return (Ledger(max(state.epoch, epoch), lanes), done) if done else (state, [])


def drop_try(lane: Lane, tick: datetime) -> tuple[tuple[datetime, int, datetime | None], ...]:
    """``lane``'s attempts without those of the claim ``tick``."""
    return tuple(t for t in lane.tries if t[0] != tick)


def accept_all(state: Ledger, updates: Iterable[LaneUpdate]) -> tuple[Ledger, bool]:
    """:func:`accept` for many updates at once (one copy of the lanes).

    False (and ``state``) if any update's epoch is below the state's epoch: an old
    holder's write. Otherwise each update is taken in order as :func:`accept` would take
    it: one stamped below an epoch taken earlier in the batch, or not newer than the
    lane's copy, is skipped.
    """
    batch = list(updates)
    if any(update.lane.stamp[0] < state.epoch for update in batch):
        return state, False
    lanes = dict(state.lanes)
    epoch = state.epoch
    for update in batch:
        if update.lane.stamp[0] < epoch:
            continue
        current = lanes.get(update.key)
        if current is not None and current.stamp >= update.lane.stamp:
            continue
        lanes[update.key] = update.lane
        epoch = max(epoch, update.lane.stamp[0])
    return Ledger(epoch, lanes), True


def highest(state: Ledger, job: str, node: str | None = None) -> datetime | None:
    """The highest tick claimed in the lane ``(job, node)``, or None if it has none.

    This is the ``last_claimed`` of :func:`plan_misfires`.
    """
    lane = state.lanes.get((job, node))
    return None if lane is None else lane.high


def lane_order(lane_key: LaneKey) -> tuple[str, bool, str]:
    """The sort key of lanes: by job, then node (None first)."""
    job, node = lane_key
    return (job, node is not None, node or "")


def open_claims(state: Ledger) -> tuple[ClaimKey, ...]:
    """Every open claim, by job, node (None first) and tick."""
    return tuple(
        ClaimKey(lane_key[0], tick, lane_key[1])
        for lane_key in sorted(state.lanes, key=lane_order)
        for tick, _ in state.lanes[lane_key].open
    )


def interrupted(
    state: Ledger,
    alive_runs: Collection[ClaimKey | tuple[Any, ...]],
    *,
    before: int | None = None,
) -> tuple[ClaimKey, ...]:
    """The open claims whose run is not alive: runs to report as ``"interrupted"``.

    Args:
        state: the ledger (a new holder's merge).
        alive_runs: the keys of the runs the task pools hold (queued, running, or
            finished with their finish not yet recorded).
        before: if given, only claims made under an epoch lower than this one: a holder
            passes its own epoch so that runs it claimed but that have not reached a
            pool yet are not reported.

    Returns:
        The keys, in the order of :func:`open_claims`.
    """
    alive = {checked_key(run) for run in alive_runs}
    found: list[ClaimKey] = []
    for lane_key in sorted(state.lanes, key=lane_order):
        for tick, epoch in state.lanes[lane_key].open:
            key = ClaimKey(lane_key[0], tick, lane_key[1])
            if (before is None or epoch < before) and key not in alive:
                found.append(key)
    return tuple(found)


# ---------------------------------------------------------------------- replication


def lane_update(state: Ledger, key: ClaimKey | tuple[Any, ...]) -> LaneUpdate:
    """The record of ``key``'s lane, to replicate after a :func:`claim` or :func:`finish`.

    Raises:
        KeyError: the lane has no record (nothing was ever claimed in it).
        ValueError: a malformed key.
    """
    checked = checked_key(key)
    return LaneUpdate(checked.job, checked.node, state.lanes[checked.lane])


def accept(state: Ledger, update: LaneUpdate) -> tuple[Ledger, bool]:
    """A member takes a replicated lane record: ``(new state, True)`` or ``(state, False)``.

    Accepted iff the update's epoch (its stamp's first part) is at least the highest
    epoch ``state`` has seen, and its stamp is newer than the member's copy of the lane
    (or the member has none). The same update again is accepted and changes nothing (a
    retried write). A different record under the same stamp is refused: one writer never
    makes two.
    """
    epoch = update.lane.stamp[0]
    if epoch < state.epoch:
        return state, False
    current = state.lanes.get(update.key)
    if current is not None:
        if current.stamp == update.lane.stamp:
            return state, current == update.lane
        if current.stamp > update.lane.stamp:
            return state, False
    return _with_lane(state, update.key, update.lane, epoch), True


def merge(states: Iterable[Ledger]) -> Ledger:
    """The ledger a new holder starts from, given the copies of a majority of members.

    Per lane, the copy with the highest stamp (ties: the first given, unless a later one
    keeps attempts the first lacks: a member of the previous release stores a write
    without them); the highest epoch
    of all copies. Why this keeps every accepted claim and finish: see the module's
    docstring.

    Raises:
        ValueError: no copies.
    """
    copies = list(states)
    if not copies:
        raise ValueError("merge of no ledger copies: expected at least one")
    lanes: dict[LaneKey, Lane] = {}
    for copy in copies:
        for lane_key, lane in copy.lanes.items():
            best = lanes.get(lane_key)
            # the same stamp from a member of the previous release lacks the attempts
            if (
                best is None
                or lane.stamp > best.stamp
                or (lane.stamp == best.stamp and len(lane.tries) > len(best.tries))
            ):
                lanes[lane_key] = lane
    return Ledger(max(copy.epoch for copy in copies), lanes)
