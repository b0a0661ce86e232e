"""The holder's finish tracker: the runs sent to task pools, until their claims close.

A pool reports each run's start (:class:`RunStarted`, an event) and end (:class:`RunDone`,
sent again until acknowledged). The tracker keeps the reported ends (``pending``) and
finishes them in one write a moment later (:meth:`Finishes.flush`: ``finish_all``, the
writer's majority write), then emits their events, notes each job's ``last_run`` and
acknowledges them to their pools. A report of a claim already closed is acknowledged
and nothing else. :meth:`Finishes.check_open` asks every pool for its runs (with the
write epoch: a pool refuses runs of older holders from then on) and finishes as
``interrupted`` each open claim whose run is gone: its pool answered without it, or its
node was lost for good or for ``lost_after`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from otpkit import actors
from otpkit.distribution import PEER_GONE
from otpkit.errors import OtpkitError
from otpkit.scheduler import _history
from otpkit.scheduler._events import OUTCOME_EVENT, EventBus, new_event
from otpkit.scheduler._history import RunRecord
from otpkit.scheduler._job import Job
from otpkit.scheduler._ledger import ClaimKey, Ledger, LedgerError, finish_all
from otpkit.scheduler._ledger_attempts import attempt_of, retry_all
from otpkit.scheduler._member import Member
from otpkit.scheduler._messages import RunDone, RunStarted
from otpkit.scheduler._peers import Peers
from otpkit.scheduler._replica import decode_key, encode_key
from otpkit.scheduler._replication import Writer
from otpkit.scheduler._retry import backoff_delay, may_retry

log = logging.getLogger("otpkit.scheduler")

#: The node of a finish the holder found itself (an interrupted run): no pool to ack.
_HOLDER = "$holder"


class Finishes:
    """The finish tracker of one holder term on ``node``."""

    def __init__(
        self,
        *,
        node: str,
        lost_after: float,
        member: Member,
        writer: Writer,
        bus: EventBus,
        peers: Peers,
        pool_svc: str,
        later: Callable[[str, float | None], Any],
    ) -> None:
        self.node = node
        self.lost_after = lost_after
        self.member = member
        self.writer = writer
        self.bus = bus
        self.peers = peers
        self.pool_svc = pool_svc
        self.later = later
        self.dispatched: dict[ClaimKey, float] = {}
        self.pending: dict[ClaimKey, tuple[str, str, dict[str, Any]]] = {}
        self.flushing = False
        self.checking = False
        self.last_run: dict[str, dict[str, Any]] = {}
        self.activated_at = time.monotonic()
        # set by the holder once its engine exists: a job by name, and the engine's
        # queue of attempts due later
        self.job_named: Callable[[str], Job | None] = lambda name: None
        self.retry_later: Callable[[ClaimKey, datetime], None] = lambda key, at: None

    def begin(self) -> None:
        """The term is recovered: a run on a node never seen lost counts from now."""
        self.activated_at = time.monotonic()

    def sent(self, key: ClaimKey, at: float) -> None:
        """The run of ``key`` went to its pool at ``at`` (monotonic)."""
        self.dispatched[key] = at

    # ------------------------------------------------------------------ reports

    def started(self, msg: RunStarted) -> None:
        """Emit ``run_started`` (a later attempt than the first names its number)."""
        if not self.writer.recovered:
            return
        attempt = (msg.info or {}).get("attempt")
        later = isinstance(attempt, int) and not isinstance(attempt, bool) and attempt > 1
        key = msg.key
        extra = {"attempt": attempt} if later else None
        self.bus.emit(
            new_event(
                "run_started", key.job, tick=key.at, node=msg.node, extra=extra, started=msg.start
            )
        )

    def done(self, msg: RunDone) -> None:
        """Keep the report; it is finished at the next flush. A report of an attempt the
        ledger already moved past (its ack was lost: the pool sends it again) is acked
        again and nothing else."""
        if not self.writer.recovered:
            return  # the pool sends it again until a holder acknowledges it
        outcome = msg.outcome if msg.outcome in OUTCOME_EVENT else "failed"
        info: dict[str, Any] = {"start": msg.start, "end": msg.end, "error": msg.error}
        if msg.info is not None:  # a pool of this release: the attempt and how it ended
            info["attempt"] = msg.info.get("attempt")
            info["raised"] = msg.info.get("raised") is True
            info["traceback"] = msg.info.get("traceback")
            if self._stale(msg.key, info["attempt"]):
                key = msg.key
                self._ack(msg.node, [[key.job, key.at, key.node, info["attempt"]]])
                return
        self.pending[msg.key] = (msg.node, outcome, info)
        if not self.flushing:
            self.flushing = True
            self.later("flush", 0.005)

    def _stale(self, key: ClaimKey, attempt: Any) -> bool:
        """Whether a report of ``attempt`` of ``key`` is one the ledger has moved past:
        the claim is open at a later attempt, or at this one waiting for its retry."""
        if not isinstance(attempt, int) or isinstance(attempt, bool):
            return False
        lane = self.member.rep.ledger.lanes.get(key.lane)
        if lane is None or all(tick != key.at for tick, _ in lane.open):
            return False
        current, waiting = attempt_of(lane, key.at)
        return attempt < current or (attempt == current and waiting is not None)

    def _ack(self, node: str, items: list[Any]) -> None:
        if node == _HOLDER or (node != self.node and node not in self.peers.up):
            return  # a pool out of reach sends its report again once connected
        with contextlib.suppress(OtpkitError):
            actors.send((self.pool_svc, node), ("ack", items))

    def give_up(self, key: ClaimKey, why: str) -> None:
        """End the open claim ``key`` (waiting for a retry) as ``failed`` at the next
        flush, with ``why`` as its error."""
        self.pending[key] = (_HOLDER, "failed", {"error": why})
        if not self.flushing:
            self.flushing = True
            self.later("flush", 0.0)

    def flush_due(self) -> None:
        """The timer of :meth:`done`."""
        self.flushing = False
        self.flush()

    def _retry_at(
        self, key: ClaimKey, outcome: str, info: Mapping[str, Any], compat: bool
    ) -> datetime | None:
        """When the next attempt of ``key`` is due, if the reported one gets another
        (``_retry``): only a report of this release's pools names its attempt, and only
        while every member reads attempts."""
        attempt = info.get("attempt")
        if not isinstance(attempt, int):
            return None
        lane = self.member.rep.ledger.lanes.get(key.lane)
        job = self.job_named(key.job)
        if lane is None or job is None or attempt_of(lane, key.at) != (attempt, None):
            return None
        if not may_retry(outcome, bool(info.get("raised")), attempt, job.max_attempts):
            return None
        if compat:
            log.warning(
                "%s: run %s is not retried: a member of the previous release takes part "
                "(retries resume once every member runs this one)",
                self.node,
                key,
            )
            return None
        delay = backoff_delay(attempt, *job.backoff)
        return datetime.now(UTC) + timedelta(seconds=delay)

    def flush(self) -> None:
        """Record the reported finishes in one write (a retried attempt keeps its claim
        open, due again later), then acknowledge them."""
        if not self.pending:
            return
        batch = dict(self.pending)
        # one reading for the whole write: a member of the previous release takes part
        compat = self.writer.compat()
        before = self.member.rep.ledger
        retries: list[tuple[ClaimKey, int, datetime]] = []
        ends: list[tuple[ClaimKey, str]] = []
        for key, (_, outcome, info) in batch.items():
            due = self._retry_at(key, outcome, info, compat)
            if due is not None:
                retries.append((key, int(info["attempt"]), due))
            else:
                ends.append((key, outcome))
        epoch = self.writer.epoch
        ledger, closed = finish_all(before, ends, epoch)
        ledger, retried = retry_all(ledger, retries, epoch)
        updates = self.writer.lane_updates(ledger, [*closed, *retried], compat)
        updates += [["where", encode_key(k), None] for k in closed]
        records = [self._record(key, batch[key], before) for key in closed]
        if records and self.member.keep and not compat:
            updates.append(["runs", [_history.encode_record(r) for r in records]])
        if (closed or retried) and not self.writer.write(updates):
            self.flushing = True
            self.later("flush", 0.5)
            return
        closed_set, retried_set = set(closed), set(retried)
        due_at = {key: at for key, _, at in retries}
        acks: dict[str, list[Any]] = {}
        for record in records:
            self.last_run[record.job] = {
                "tick": record.tick,
                "node": record.node,
                "outcome": record.outcome,
                "duration": record.duration,
                "attempts": record.attempts,
            }
        for key, (node, outcome, info) in batch.items():
            self.pending.pop(key, None)
            self.dispatched.pop(key, None)
            attempt = info.get("attempt")
            item = [key.job, key.at, key.node]
            acks.setdefault(node, []).append([*item, attempt] if isinstance(attempt, int) else item)
            start, end = info.get("start"), info.get("end")
            duration = end - start if isinstance(start, float) and isinstance(end, float) else None
            if key in retried_set:
                extra = {"attempt": attempt, "retry_at": due_at[key]}
                if info.get("traceback"):
                    extra["traceback"] = info["traceback"]
                self.bus.emit(
                    new_event(
                        "run_retrying",
                        key.job,
                        tick=key.at,
                        node=node,
                        duration=duration,
                        error=info.get("error"),
                        extra=extra,
                    )
                )
                self.retry_later(key, due_at[key])
                continue
            if key not in closed_set:
                if outcome != "interrupted":
                    log.debug("%s: run %s reported again or late (%s)", self.node, key, outcome)
                continue
            extra = {"attempts": attempt_of(before.lanes[key.lane], key.at)[0]}
            if info.get("traceback") and outcome in ("failed", "timed_out"):
                extra["traceback"] = info["traceback"]
            self.bus.emit(
                new_event(
                    OUTCOME_EVENT[outcome],
                    key.job,
                    tick=key.at,
                    node=node if outcome != "interrupted" else info.get("where"),
                    duration=duration,
                    error=info.get("error"),
                    extra=extra,
                )
            )
        for node, keys in acks.items():
            self._ack(node, keys)

    def _record(
        self, key: ClaimKey, pending: tuple[str, str, dict[str, Any]], before: Ledger
    ) -> RunRecord:
        """The run history's record of a claim closed by this flush."""
        reporter, outcome, info = pending
        node: str | None = reporter
        start, end = info.get("start"), info.get("end")
        lane = before.lanes.get(key.lane)
        attempts = attempt_of(lane, key.at)[0] if lane is not None else 1
        if outcome == "interrupted":
            node = info.get("where")
        error = info.get("traceback") or info.get("error")
        return RunRecord(
            key.job,
            key.at,
            key.node,
            outcome,
            None if node == _HOLDER else node,
            datetime.fromtimestamp(start, UTC) if isinstance(start, float) else None,
            end - start if isinstance(start, float) and isinstance(end, float) else None,
            attempts,
            _history.tail(error if isinstance(error, str) else None),
            datetime.now(UTC),
        )

    # ------------------------------------------------------------------ open claims

    def schedule_check(self, delay: float) -> None:
        if self.checking:
            return
        self.checking = True
        self.later("check", delay)

    def check_due(self) -> None:
        """The timer of :meth:`schedule_check`."""
        self.checking = False
        self.check_open()

    def check_open(self) -> None:
        """Report the open claims whose run is gone as ``interrupted``."""
        if not self.writer.recovered:
            return
        now = time.monotonic()
        candidates = [
            ClaimKey(job, tick, node)
            for (job, node), lane in self.member.rep.ledger.lanes.items()
            for tick, _ in lane.open
            if ClaimKey(job, tick, node) not in self.pending
            # an attempt that failed and waits for its retry: no run to look for
            and attempt_of(lane, tick)[1] is None
        ]
        young = [k for k in candidates if now - self.dispatched.get(k, -1e9) < 3.0]
        young_set = set(young)
        candidates = [k for k in candidates if k not in young_set]
        if not candidates:
            if young:
                self.schedule_check(1.0)
            return
        where = self.member.rep.where
        ask = sorted({self.node, *self.peers.targets()})
        # the epoch tells each pool to refuse runs a superseded holder may still send
        answers = actors.multi_call(
            [(self.pool_svc, n) for n in ask], ("state", self.writer.epoch), timeout=1.0
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
            elif ran_on not in self.peers.up:
                seen = self.peers.down.get(ran_on)
                if seen is not None:
                    gone = seen[0] == PEER_GONE or now - seen[1] > self.lost_after
                else:
                    gone = now - self.activated_at > self.lost_after
            if gone:
                self.pending[key] = (_HOLDER, "interrupted", {"where": ran_on})
            else:
                waiting = True
        if any(o == "interrupted" for _, o, _ in self.pending.values()) and not self.flushing:
            self.flushing = True
            self.later("flush", 0.0)
        if waiting:
            self.schedule_check(1.0)


def _maybe_key(raw: Any) -> ClaimKey:
    try:
        return decode_key(raw)
    except LedgerError:
        return ClaimKey("?", datetime.min.replace(tzinfo=UTC), None)


__all__ = ["Finishes"]
