"""A member's copy of the scheduler's state: the member side of the majority
replication (``_replication``).

:class:`Member` keeps this node's copy (the run ledger and the job table, ``_replica``)
in memory and in its store, and answers the holder's rounds against them: :class:`Apply`
a write, :class:`Observe` an epoch (from then on it refuses the writes of any other
holder at or below it, ``may_write``) and answer the copy, :class:`Sync` the whole
copy. Each answer is ``{"refused": epoch}``, the copy, or whether the store took it
and whether the copy is synced. A copy counts toward a majority only while it holds
every write (``synced``): a new copy, a lost one, or one whose store failed answers
``failed`` or ``synced: False`` until a holder synced it. A store that fails is logged
once per episode (and every :data:`STORE_REPORT_EVERY` seconds while it lasts); under
``majority`` the node is not ready (``gate``) until its copy is in sync.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from otpkit.scheduler import _history
from otpkit.scheduler._ledger import LedgerError
from otpkit.scheduler._messages import Apply, Observe, ReplicaCall, Sync
from otpkit.scheduler._replica import (
    Replica,
    apply,
    decode_entry,
    decode_replica,
    decode_rows,
    decode_runs,
    encode_entry,
    encode_head,
    encode_lane_rows,
    encode_replica,
    lane_keys_of,
    may_write,
    merge,
    observe_replica,
)
from otpkit.scheduler._rounds import Alarm, alarm_clear, alarm_raise
from otpkit.scheduler._store import Store, StoreError

log = logging.getLogger("otpkit.scheduler")

#: seconds between two ERROR lines while this replica's store cannot be written
STORE_REPORT_EVERY = 60.0
#: seconds without a failure that end an episode of failed writes, of this store or of
#: the holder's writes that fell short (``_replication``): a line says it ended
ALARM_QUIET = 5.0


class Member:
    """The copy of scheduler ``name`` on ``node``, kept in ``store`` (None: in memory)."""

    def __init__(
        self,
        name: str,
        node: str,
        store: Store | None,
        gate: Callable[[str | None], bool],
        clock: Callable[[], float] = time.monotonic,
        keep: int = _history.KEEP,
        max_age: float = _history.MAX_AGE,
    ) -> None:
        self.name = name
        self.node = node
        self.keep = keep  # run records per job
        self.max_age = max_age  # seconds a run record is kept
        self.store = store
        self.gate = gate
        self.clock = clock
        self.rep = Replica()
        # replica flags: who observed the current epoch (only that holder may write at
        # it), and whether this copy holds everything a holder wrote (a copy that is
        # new or was lost does not count toward a majority until a holder syncs it)
        self.observer: str | None = None
        self.synced = False
        # a store that cannot be written (disk full, read-only, damaged): its cause
        # while it lasts, logged once per episode (and every STORE_REPORT_EVERY s)
        self.store_problem: str | None = None
        self.store_alarm = Alarm()
        if store is not None:
            self.rep = self._load(store)
        self.boot: str | None = None  # in memory only: None after a whole-cluster restart
        # Ready means in sync: under majority this node's readiness waits until a
        # holder wrote to this replica since it started (a returning node is synced
        # by the holder at its hello), or it is the holder itself (see start)
        self.gated = False
        self.in_sync = True

    def start(self, gated: bool) -> None:
        """Hold this node's readiness (``gated``: under ``majority``, with dist) until a
        holder wrote to this copy."""
        self.gated = gated
        self.in_sync = not gated
        if not self.in_sync:
            self.gate(f"scheduler {self.name}: its replica is not in sync with a holder yet")

    def _too_old(self) -> str:
        """The ISO time before which run records are dropped from the store."""
        return (datetime.now(UTC) - timedelta(seconds=self.max_age)).isoformat()

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
        try:
            runs = decode_runs(store.runs(), _history.MAX_KEEP)
        except (LedgerError, ValueError, TypeError, KeyError) as exc:
            raise StoreError(store.path, f"unreadable scheduler state: {exc}") from exc
        return Replica(rep.ledger, jobs, rep.where, rep.where_epochs, runs)

    def caught_up(self) -> None:
        """This copy holds every write: its node may be ready."""
        if not self.in_sync:
            self.in_sync = True
            log.info("%s: scheduler %s: its replica is in sync", self.node, self.name)
            if not self.gate(None):
                self.in_sync = False  # the next write from a holder tries again

    def problem(self) -> str | None:
        """This copy's store failing, or None."""
        if self.store_problem is None:
            return None
        path = self.store.path if self.store is not None else "-"
        return f"scheduler {self.name}'s store {path} cannot be written ({self.store_problem})"

    # ------------------------------------------------------------------ the rounds

    def handle(self, msg: ReplicaCall, old_holder: bool = False) -> Any:
        """The answer to a holder's round: ``{"refused": epoch}`` (a newer holder
        observed), the copy (an observe: in the previous release's form to a holder of
        it, ``old_holder``: no attempts, no run history), or whether the store took it
        (:meth:`_answer`)."""
        try:
            if isinstance(msg, Apply):
                return self._apply(msg)
            if isinstance(msg, Observe):
                return self._observe(msg, old_holder)
            if isinstance(msg, Sync):
                return self._sync(msg)
        except (LedgerError, ValueError, TypeError, KeyError) as exc:
            log.warning("%s: scheduler request %s refused: %s", self.node, msg.op, exc)
            return False
        return False

    def _apply(self, msg: Apply) -> Any:
        if not may_write(self.rep.epoch, self.observer, int(msg.epoch), str(msg.holder)):
            return {"refused": self.rep.epoch}
        rep, ok, changed = apply(self.rep, int(msg.epoch), msg.updates, self.keep)
        if not ok:
            return {"refused": self.rep.epoch}
        self.observer = str(msg.holder)
        if msg.boot:
            self.boot = str(msg.boot)
        saved = self.adopt(rep, changed, lane_keys_of(msg.updates), head=True)
        if saved and self.synced:
            self.caught_up()
        return self._answer(saved)

    def _observe(self, msg: Observe, old_holder: bool) -> Any:
        if not may_write(self.rep.epoch, self.observer, int(msg.epoch), str(msg.holder)):
            return {"refused": self.rep.epoch}
        rep, _ = observe_replica(self.rep, int(msg.epoch))
        self.observer = str(msg.holder)
        if not self.adopt(rep, head=True):
            # not a refusal (no newer holder): a copy that cannot promise on
            # disk is no copy of the read; it is synced once its store works
            return self._answer(False)
        if self.synced:
            self.caught_up()
        return {
            "replica": encode_replica(self.rep, compat=old_holder),
            "boot": self.boot,
            "synced": self.synced,
        }

    def _sync(self, msg: Sync) -> Any:
        if not may_write(self.rep.epoch, self.observer, int(msg.epoch), str(msg.holder)):
            return {"refused": self.rep.epoch}
        full = decode_replica(msg.replica)
        rep = merge([full, self.rep], self.keep)  # the holder's copy first: it wins ties
        rep, _ = observe_replica(rep, int(msg.epoch))
        self.observer, self.boot, self.synced = str(msg.holder), msg.boot or self.boot, True
        ok = self.adopt(rep, rep.jobs, rep.ledger.lanes, head=True)
        if not ok:
            self.synced = False
        else:
            self.caught_up()
        return self._answer(ok)

    def _answer(self, saved: bool) -> dict[str, Any]:
        """A replica's answer to a write, an observe or a sync it could not refuse:
        whether its store took it, whether its copy is synced, and why the store failed."""
        if saved:
            return {"ok": True, "synced": self.synced}
        return {"ok": False, "synced": False, "failed": self.store_problem or "store failed"}

    # ------------------------------------------------------------------ the store

    def adopt(
        self,
        rep: Replica,
        jobs: Iterable[str] = (),
        lanes: Iterable[tuple[str, str | None]] = (),
        head: bool = False,
    ) -> bool:
        """Take ``rep`` as this replica's state and store what changed: the ``jobs`` and
        ledger ``lanes`` named, and (``head``) the ledger's epoch and this replica's
        flags. False if the store failed (the copy then stops counting: unsynced)."""
        before, self.rep = self.rep, rep
        return self.save(rep, jobs, lanes, head, runs_of=before)

    def save(
        self,
        rep: Replica,
        jobs: Iterable[str] = (),
        lanes: Iterable[tuple[str, str | None]] = (),
        head: bool = False,
        synced: bool | None = None,
        runs_of: Replica | None = None,
    ) -> bool:
        """Store the named parts of ``rep`` (see :meth:`adopt`; ``synced`` is the flag
        the head records, by default this replica's), and the run history of each job
        whose history differs from ``runs_of``'s. False if the store failed: the copy
        is then unsynced, and the failure is logged once per episode."""
        if self.store is None:
            return True
        try:
            self.store.save_jobs({name: encode_entry(rep.jobs[name]) for name in jobs})
            if runs_of is not None and rep.runs is not runs_of.runs:
                changed = {
                    job: [_history.encode_record(r) for r in records]
                    for job, records in rep.runs.items()
                    if runs_of.runs.get(job) is not records
                }
                if changed:
                    self.store.save_runs(changed, self.keep, self._too_old())
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
            self.store_alarm, self.clock(), root or cause, STORE_REPORT_EVERY
        )
        path = self.store.path if self.store is not None else "-"
        if due and self.store_alarm.count == 1:
            log.error(
                "%s: scheduler %s: its store %s cannot be written (%s): this replica counts "
                "toward no majority until the store works and a holder synced it",
                self.node,
                self.name,
                path,
                cause,
            )
        elif due:
            log.error(
                "%s: scheduler %s: its store %s still cannot be written (%s): %s failed "
                "writes in %.0f s",
                self.node,
                self.name,
                path,
                cause,
                self.store_alarm.count,
                self.clock() - (self.store_alarm.since or 0.0),
            )
        if self.in_sync and self.gated:
            self.in_sync = False
            self.gate(f"scheduler {self.name}: its store {path} cannot be written ({cause})")

    def _store_worked(self) -> None:
        """A write was stored: the trouble is over once no write failed for ALARM_QUIET
        seconds (then one line says so)."""
        self.store_problem = None
        if self.store_alarm.since is None:
            return
        self.store_alarm, ended = alarm_clear(self.store_alarm, self.clock(), ALARM_QUIET)
        if ended is not None:
            log.warning(
                "%s: scheduler %s: its store %s works again (%s writes failed in %.0f s)",
                self.node,
                self.name,
                self.store.path if self.store is not None else "-",
                ended.count,
                (ended.last or 0.0) - (ended.since or 0.0),
            )


__all__ = ["ALARM_QUIET", "STORE_REPORT_EVERY", "Member"]
