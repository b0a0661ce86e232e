"""Majority replication with epoch fencing: the holder's writes to a majority of the
members' copies (each a ``_member.Member``).

:class:`Writer` is the holder's side, one per term. The recovery read
(:meth:`~Writer.read`): a write epoch above every epoch seen (:func:`write_epoch`; a new
era only with the lease confirmed, ``fence``), observed by a majority of members (from
then on they refuse the old holder's writes), then the merge of their copies if enough
of them were synced (``read_quorum``). Each write (:meth:`~Writer.write`): stamped
``(epoch, seq)``, stored here first, then taken by a majority of healthy stores
(``acks_needed``, ``tally``); a copy behind is synced, at once if the write needs it,
else after it. A member that saw a newer epoch refuses: the writer steps back
(``on_superseded``) and the next read goes above that epoch.

The decisions are ``_replica``'s pure functions. What touches the world is given to
the writer: the transport ``ask``, the ``members``, the lease's epoch and its
``fence``, the timers (``later``) and the clock; ``tests/unit/test_replication.py``
runs members and writers in memory.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from otpkit.errors import OtpkitError
from otpkit.scheduler._ledger import (
    MAX_STAMP,
    ClaimKey,
    LaneUpdate,
    Ledger,
    LedgerError,
    lane_update,
)
from otpkit.scheduler._ledger_codec import encode_update
from otpkit.scheduler._member import ALARM_QUIET, Member
from otpkit.scheduler._messages import Apply, Observe, ReplicaCall, Sync
from otpkit.scheduler._replica import (
    JobEntry,
    Replica,
    apply,
    decode_replica,
    encode_entry,
    encode_replica,
    is_empty,
    lane_keys_of,
    merge,
    observe_replica,
    read_quorum,
)
from otpkit.scheduler._rounds import (
    Alarm,
    acks_needed,
    alarm_clear,
    alarm_raise,
    is_ack,
    shortfall,
    tally,
)

log = logging.getLogger("otpkit.scheduler")

#: seconds between two WARNING lines while the holder's writes reach no majority
SHORT_REPORT_EVERY = 10.0
#: seconds before the holder syncs again a copy whose last sync did not take
SYNC_RETRY = 2.0

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


def majority(members: Sequence[str]) -> int:
    """How many of ``members`` make a majority."""
    return len(members) // 2 + 1


class Ask(Protocol):
    """The transport of a round: send ``request`` to ``nodes`` and return
    ``(node, answer)`` of those that answered with a mapping, once ``enough`` answers
    ``counts`` (None: all) or after ``timeout`` seconds."""

    def __call__(
        self,
        nodes: list[str],
        request: ReplicaCall,
        enough: int | None,
        counts: Callable[[Any], bool],
        timeout: float,
    ) -> list[tuple[str, Mapping[str, Any]]]: ...


@dataclass(frozen=True)
class Read:
    """The outcome of a recovery read: ``ok`` (the member's copy is now the merge of
    enough copies), else try again after ``retry`` seconds (None: at once).
    ``reboot``: no copy held a boot token, so the cluster (re)started."""

    ok: bool
    retry: float | None = None
    reboot: bool = False


class Writer:
    """The holder's side of the replication for one term: it writes as ``holder`` under
    the lease of epoch ``lease()``, through ``member`` (this node's copy)."""

    def __init__(
        self,
        member: Member,
        *,
        holder: str,
        policy: str,
        round_timeout: float,
        ask: Ask,
        members: Callable[[], list[str]],
        connected: Callable[[], Iterable[str]],
        lease: Callable[[], int],
        fence: Callable[[Any, float], bool],
        later: Callable[[str, float | None], Any],
        on_superseded: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        short_alarm: Alarm | None = None,
        compat: Callable[[], bool] = lambda: False,
    ) -> None:
        self.member = member
        # a member of the previous release takes part: write what it reads (no
        # attempts, no run history)
        self.compat = compat
        self.node = member.node
        self.name = member.name
        self.holder = holder
        self.policy = policy
        self.round_timeout = round_timeout
        self.ask = ask
        self.members = members
        self.connected = connected
        self.lease = lease
        self.fence = fence
        self.later = later
        self.on_superseded = on_superseded
        self.clock = clock
        self.short_alarm = short_alarm or Alarm()  # the writes that reach no majority
        # the term is established: its epoch observed by a majority, the merge of
        # their copies taken and written (set by the holder after its first write)
        self.recovered = False
        self.wepoch: int | None = None
        self.seen_high = 0  # the highest epoch a member answered with when it refused
        self.seq = 0  # the last write stamp's sequence number: only grows
        # copies that took a write but are not synced: synced after the write, not in it
        self.sync_wanted: set[str] = set()
        self.sync_pending = False
        self.sync_next: dict[str, float] = {}

    @property
    def epoch(self) -> int:
        """The write epoch (0 before the first read)."""
        return self.wepoch or 0

    def need(self, saved_here: bool = True) -> tuple[list[str], int]:
        """The other members, and how many of their acks a majority needs: this node
        counts for itself when it is a member and (``saved_here``) its own store took
        the write (``acks_needed``). Under ``availability``: the nodes in reach, none."""
        members = self.members()
        others = [n for n in members if n != self.node]
        if self.policy != "majority":
            return others, 0
        return others, acks_needed(members, self.node, saved_here)

    # ------------------------------------------------------------------ recovery

    def read(self) -> Read:
        """A new holder's read: observe the epoch at a majority and take the merge of
        their copies; copies that are not synced are synced."""
        member = self.member
        seen = max(member.rep.epoch, self.seen_high)
        if (self.wepoch is None or seen >= self.wepoch) and not self.raise_epoch(seen):
            return Read(False, 0.5)
        rep, _ = observe_replica(member.rep, self.epoch)
        member.observer = self.holder
        member.adopt(rep, head=True)
        others, need = self.need()
        answers = self.ask(
            others,
            Observe(self.epoch, self.holder),
            need or None,
            lambda v: isinstance(v, Mapping) and v.get("synced") is True,
            self.round_timeout if need else 0.5,
        )
        refused = [a["refused"] for _, a in answers if isinstance(a.get("refused"), int)]
        if refused:
            # a member saw a higher epoch: go above it (see raise_epoch), then again
            return Read(False, None if self.raise_epoch(max(refused)) else 0.5)
        copies: list[tuple[str, Replica, Any, bool]] = [
            (self.node, member.rep, member.boot, member.synced)
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
            need + 1 if self.policy == "majority" else 1,
            [(c[3], is_empty(c[1])) for c in copies],
            all_answered=len(copies) == len(others) + 1,
            # only when need + 1 is the members' majority (this node one of them)
            members=len(others) + 1
            if self.policy == "majority" and self.node in self.members()
            else None,
        )
        if verdict == "wait":
            log.info(
                "%s: scheduler %s waits for a majority of its replicas (%s answered, %s synced)",
                self.node,
                self.name,
                len(copies),
                sum(1 for c in copies if c[3]),
            )
            return Read(False, 0.2)
        if verdict == "minority":
            log.warning(
                "%s: scheduler %s: only %s of its replicas hold a synced copy; starting from them",
                self.node,
                self.name,
                sum(1 for c in copies if c[3]),
            )
        merged = merge([c[1] for c in copies])
        boots = [c[2] for c in copies]
        member.synced = True
        member.adopt(merged, merged.jobs, merged.ledger.lanes, head=True)
        reboot = not any(boots)
        member.boot = next((b for b in boots if b), None) or uuid.uuid4().hex
        # bring every copy that is not synced up to date (it counts from then on)
        self.sync([node for node, _, _, synced in copies[1:] if not synced])
        return Read(True, reboot=reboot)

    def established(self) -> None:
        """The term's first write was taken: the holder is recovered, and its own copy
        in sync (its node may be ready)."""
        self.recovered = True
        self.member.caught_up()

    def raise_epoch(self, seen: int) -> bool:
        """Set the write epoch above ``seen`` (see :func:`write_epoch`). A new era means
        the quorum's lease epochs started again - or that this holder was superseded
        while it was paused: so an era change first has the lease confirmed by a
        majority (``fence``), which a superseded holder cannot get."""
        lease = self.lease()
        target = write_epoch(seen, lease)
        if target > MAX_STAMP:
            # only a member that took a forged epoch near 2**62 gets here: no write is
            # possible above it (this holder waits, and says why)
            log.error(
                "%s: scheduler %s: a member saw epoch %s; no write epoch is left above it",
                self.node,
                self.name,
                seen,
            )
            return False
        try:
            confirmed = seen % _ERA < lease or self.fence(["era", target], 2.0)
        except OtpkitError:  # the quorum actor is restarting: not confirmed
            confirmed = False
        if not confirmed:
            log.warning(
                "%s: scheduler %s: the lease of epoch %s is not confirmed; not writing",
                self.node,
                self.name,
                lease,
            )
            return False
        self.wepoch = max(self.epoch, target)
        return True

    def sync(self, nodes: list[str], timeout: float | None = None) -> set[str]:
        """Send this holder's whole copy to ``nodes``; the ones that took it (within
        ``timeout``; by default the round's, at least 5 s)."""
        if not nodes:
            return set()
        replica = encode_replica(self.member.rep, self.compat())
        request = Sync(self.epoch, self.holder, replica, self.member.boot)
        wait = max(self.round_timeout, 5.0) if timeout is None else timeout
        answers = self.ask(nodes, request, None, lambda v: False, wait)
        done = set(tally(nodes, dict(answers)).acked)
        if done:
            log.info("%s: scheduler %s synced the copies of %s", self.node, self.name, sorted(done))
        return done

    # ------------------------------------------------------------------ writes

    def next_seq(self, floor: int) -> int:
        self.seq = max(self.seq, floor) + 1
        return self.seq

    def job_update(
        self, name: str, spec: Mapping[str, Any] | None, origin: str, since: datetime
    ) -> list[Any]:
        """The update that sets job ``name`` to ``spec`` (None: deleted), stamped."""
        current = self.member.rep.jobs.get(name)
        stamp = (self.epoch, self.next_seq(current.stamp[1] if current is not None else 0))
        entry = JobEntry(None if spec is None else dict(spec), stamp, origin, since)
        return ["job", name, encode_entry(entry)]

    def lane_updates(
        self, ledger: Ledger, keys: Iterable[ClaimKey], compat: bool | None = None
    ) -> list[Any]:
        """The updates that set the lanes of ``keys`` to their state in ``ledger``
        (``compat``: in the previous release's form; by default as :attr:`compat` says
        now)."""
        old = self.compat() if compat is None else compat
        seen: set[tuple[str, str | None]] = set()
        updates: list[Any] = []
        for key in keys:
            if key.lane in seen:
                continue
            seen.add(key.lane)
            update = lane_update(ledger, key)
            # every write of this holder gets a stamp of its own (a retried write that
            # changed meanwhile must not reuse the stamp a member may already hold)
            stamp = (self.epoch, self.next_seq(update.lane.stamp[1] - 1))
            lane = replace(update.lane, stamp=stamp)
            lane_update_ = LaneUpdate(update.job, update.node, lane)
            updates.append(["lane", encode_update(lane_update_, old)])
        return updates

    def write(self, updates: list[Any], force: bool = False) -> bool:
        """Have a majority of members take ``updates``, then take them here; True once
        they did (``availability``: the nodes in reach are asked, this one decides).

        When the write falls short, memory is unchanged (a retry computes the same
        change again, under a new stamp: ``self.seq`` only grows) but this node's store
        may keep it (the holder saves first): after a fail-over such a claim merges in
        as an open claim and is reported ``run_interrupted``, never run again."""
        if not updates and not force:
            return True
        member = self.member
        try:
            rep, ok, changed = apply(member.rep, self.epoch, updates, member.keep)
        except LedgerError as exc:
            log.error("%s: scheduler write malformed: %s", self.node, exc)
            return False
        if not ok:
            self.superseded(member.rep.epoch)
            return False
        # this node's own store first: it counts toward the majority only if it took
        # the write (else one more member must: a majority of healthy stores)
        saved = self.save_own(rep, changed, lane_keys_of(updates))
        others, need = self.need(saved)
        answers = self.ask(
            others,
            Apply(self.epoch, updates, member.boot, self.holder),
            need or None,
            is_ack,
            self.round_timeout if need else 0.5,
        )
        result = tally(others, dict(answers))
        if result.refused is not None:
            self.superseded(result.refused)
            return False
        acks = set(result.acked)
        if result.behind and len(acks) < need:
            # copies that took the write but may lack earlier ones (new, or their store
            # failed or was lost): send them everything (merged with what they have),
            # then they count
            acks |= self.sync(sorted(result.behind))
        elif result.behind:
            self.sync_later(result.behind)  # the write stands without them: after it
        if len(acks) < need:
            self.short_alarm, due = alarm_raise(
                self.short_alarm, self.clock(), "short", SHORT_REPORT_EVERY
            )
            if due:
                alarm = self.short_alarm
                log.warning(
                    "%s: scheduler %s: a write %s%s",
                    self.node,
                    self.name,
                    shortfall(result, need),
                    f"; {alarm.count} writes fell short in "
                    f"{self.clock() - (alarm.since or 0.0):.0f} s"
                    if alarm.count > 1
                    else "",
                )
            return False
        self.short_alarm, ended = alarm_clear(self.short_alarm, self.clock(), ALARM_QUIET)
        if ended is not None:
            log.warning(
                "%s: scheduler %s: writes reach a majority again (%s fell short in %.0f s)",
                self.node,
                self.name,
                ended.count,
                (ended.last or 0.0) - (ended.since or 0.0),
            )
        member.rep = rep
        return True

    def save_own(
        self, rep: Replica, changed: Iterable[str], lanes: Iterable[tuple[str, str | None]]
    ) -> bool:
        """Store a write in this (the holder's) store before the members are asked; True
        if it took it. A copy that missed writes (its store failed) stores all of it
        (the holder's copy is the whole state), and counts again from then on."""
        member = self.member
        if member.synced:
            return member.save(rep, changed, lanes, runs_of=member.rep)
        whole = member.save(
            rep, rep.jobs, rep.ledger.lanes, head=True, synced=True, runs_of=Replica()
        )
        if not whole:
            return False
        member.synced = True
        member.caught_up()
        return True

    def sync_later(self, nodes: Iterable[str]) -> None:
        """Sync ``nodes`` once the current write is done (at most every SYNC_RETRY s
        each): a copy that is behind holds no write back."""
        now = self.clock()
        fresh = {n for n in nodes if self.sync_next.get(n, 0.0) <= now}
        if not fresh:
            return
        self.sync_wanted |= fresh
        if not self.sync_pending:
            self.sync_pending = True
            self.later("sync", None)

    def sync_due(self) -> None:
        """The timer of :meth:`sync_later`: sync the copies wanted that are connected."""
        self.sync_pending = False
        if not self.recovered:
            return
        nodes = sorted(self.sync_wanted & set(self.connected()))
        self.sync_wanted.clear()
        done = self.sync(nodes, timeout=1.0)
        for node in nodes:
            if node not in done:
                self.sync_next[node] = self.clock() + SYNC_RETRY

    def superseded(self, seen: int) -> None:
        """A member saw a higher epoch: this holder's writes are refused. Recover again
        (``on_superseded``; the read raises the epoch only with the lease confirmed, see
        raise_epoch)."""
        log.warning(
            "%s: scheduler %s: a member saw epoch %s above this holder's %s; recovering",
            self.node,
            self.name,
            seen,
            self.epoch,
        )
        self.seen_high = max(self.seen_high, seen)  # the next recovery goes above it
        if self.recovered:
            self.recovered = False
            self.on_superseded()


__all__ = [
    "SHORT_REPORT_EVERY",
    "SYNC_RETRY",
    "Ask",
    "Read",
    "Writer",
    "majority",
    "write_epoch",
]
