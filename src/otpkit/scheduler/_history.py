"""Run history: the last runs of each job, replicated with the ledger.

Pure: plain values in and out, no clock (``now`` is passed in). The holder records one
:class:`RunRecord` per run whose claim its finish tracker closes (finished, failed for
good, timed out, interrupted; a tick settled without a run - missed, skipped - is an
event, not a run) in the same write that closes the claim; each
replica keeps the newest :data:`KEEP` records per job (``Scheduler(history=...)``) and
drops those older than ``history_days``. History is not part of the "once" guarantee:
copies merge as a union (the same record twice is one), then each job's list is trimmed,
so a new holder starts from every record a majority kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from otpkit.scheduler._ledger import OUTCOMES, LedgerError
from otpkit.scheduler._ledger_codec import decode_time

__all__ = [
    "KEEP",
    "MAX_AGE",
    "MAX_KEEP",
    "RunRecord",
    "add",
    "decode_record",
    "encode_record",
    "merge",
    "prune",
    "recent",
    "tail",
]

#: Records kept per job unless the scheduler says otherwise.
KEEP = 20
#: The most records per job a scheduler may keep (``Scheduler(history=...)``).
MAX_KEEP = 1_000
#: Seconds a record is kept unless the scheduler says otherwise: 7 days.
MAX_AGE = 7 * 86_400.0
#: The longest job name a record takes: as long as any message names a job
#: (``_pool_wire.JOB_NAME``, which this module cannot import: it imports this one).
MAX_JOB_NAME = 65_536
#: The characters of a failure's text kept (its traceback's last lines).
ERROR_TAIL = 2_000

History = Mapping[str, tuple["RunRecord", ...]]


@dataclass(frozen=True)
class RunRecord:
    """One settled tick of a job.

    Attributes:
        job: the job's name.
        tick: the tick (UTC).
        lane: the node of a run strategy ``"all"`` run (one run per node per tick), a
            manual run's lane, or None.
        outcome: one of the ledger's outcomes (``finished``, ``failed``, ...).
        node: the node it ran on (None: it never ran, or ran where nobody knows).
        start: when its last attempt entered the task (UTC), or None.
        duration: seconds its last attempt ran, or None.
        attempts: attempts made (1 without retries; 0 for a tick that never ran).
        error: the last attempt's error: the traceback's last lines, or why it did not run.
        at: when the record was made (UTC): what ``history_days`` counts from.
    """

    job: str
    tick: datetime
    lane: str | None
    outcome: str
    node: str | None
    start: datetime | None
    duration: float | None
    attempts: int
    error: str | None
    at: datetime

    @property
    def key(self) -> tuple[str, datetime, str | None]:
        return (self.job, self.tick, self.lane)

    def to_dict(self) -> dict[str, Any]:
        """The record as the runtime API answers it (times as aware datetimes)."""
        return {
            "job": self.job,
            "tick": self.tick,
            "lane": self.lane,
            "outcome": self.outcome,
            "node": self.node,
            "start": self.start,
            "duration": self.duration,
            "attempts": self.attempts,
            "error": self.error,
            "at": self.at,
        }


def tail(text: str | None, limit: int = ERROR_TAIL) -> str | None:
    """The last ``limit`` characters of ``text``, cut at a line start when one is near."""
    if text is None or len(text) <= limit:
        return text
    cut = text[-limit:]
    newline = cut.find("\n")
    return cut[newline + 1 :] if 0 <= newline < limit // 2 else cut


def _order(record: RunRecord) -> tuple[datetime, str]:
    return (record.tick, record.lane or "")


def add(
    history: History, records: Iterable[RunRecord], keep: int = KEEP
) -> dict[str, tuple[RunRecord, ...]]:
    """``history`` with ``records`` added: per job the newest ``keep`` by tick (newest
    first); a record of a key already there replaces it when it was made later."""
    out = dict(history)
    grouped: dict[str, dict[tuple[str, datetime, str | None], RunRecord]] = {}
    for record in records:
        group = grouped.get(record.job)
        if group is None:
            group = grouped[record.job] = {r.key: r for r in out.get(record.job, ())}
        current = group.get(record.key)
        if current is None or record.at >= current.at:
            group[record.key] = record
    for job, group in grouped.items():
        out[job] = tuple(sorted(group.values(), key=_order, reverse=True)[:keep])
    return out


def merge(copies: Iterable[History], keep: int = KEEP) -> dict[str, tuple[RunRecord, ...]]:
    """The union of several copies, trimmed as :func:`add` trims."""
    out: dict[str, tuple[RunRecord, ...]] = {}
    for copy in copies:
        out = add(out, (r for records in copy.values() for r in records), keep)
    return out


def recent(history: History, job: str, now: datetime, max_age: float = MAX_AGE) -> list[RunRecord]:
    """``job``'s records made in the last ``max_age`` seconds, newest tick first."""
    since = now - timedelta(seconds=max_age)
    return [r for r in history.get(job, ()) if r.at >= since]


def prune(
    history: History, now: datetime, max_age: float = MAX_AGE
) -> dict[str, tuple[RunRecord, ...]]:
    """``history`` without the records older than ``max_age`` (and jobs left with none)."""
    since = now - timedelta(seconds=max_age)
    out: dict[str, tuple[RunRecord, ...]] = {}
    for job, records in history.items():
        kept = tuple(r for r in records if r.at >= since)
        if kept:
            out[job] = kept
    return out


# ---------------------------------------------------------------------- encoding


def _time(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat()


def _parse(value: Any, where: str, optional: bool = False) -> datetime | None:
    if value is None and optional:
        return None
    return decode_time(value, where)


def encode_record(record: RunRecord) -> dict[str, Any]:
    """The record as plain values (msgpack- and JSON-able: times as ISO 8601 strings)."""
    return {
        "job": record.job,
        "tick": _time(record.tick),
        "lane": record.lane,
        "outcome": record.outcome,
        "node": record.node,
        "start": _time(record.start),
        "duration": record.duration,
        "attempts": record.attempts,
        "error": record.error,
        "at": _time(record.at),
    }


def _optional_str(value: Any, where: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise LedgerError(f"{where}: expected None or a string of at most {limit} characters")
    return value


def decode_record(value: Any) -> RunRecord:
    """The record :func:`encode_record` made. Raises ``LedgerError`` naming the field."""
    if not isinstance(value, Mapping):
        raise LedgerError(f"run record: {type(value).__name__}, expected a mapping")
    job = value.get("job")
    if not isinstance(job, str) or not job or len(job) > MAX_JOB_NAME:
        raise LedgerError(f"run record job: {job!r}, expected a non-empty string")
    where = f"run record of job {job!r}"
    outcome = value.get("outcome")
    if outcome not in OUTCOMES:
        raise LedgerError(f"{where}: outcome {outcome!r}, expected one of {OUTCOMES}")
    duration = value.get("duration")
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, int | float)
    ):
        raise LedgerError(f"{where}: duration {duration!r}, expected seconds or None")
    attempts = value.get("attempts")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 0 <= attempts <= 1000:
        raise LedgerError(f"{where}: attempts {attempts!r}, expected an int in 0..1000")
    tick = _parse(value.get("tick"), f"{where} tick")
    at = _parse(value.get("at"), f"{where} at")
    assert tick is not None and at is not None
    return RunRecord(
        job,
        tick,
        _optional_str(value.get("lane"), f"{where} lane", 1024),
        outcome,
        _optional_str(value.get("node"), f"{where} node", 1024),
        _parse(value.get("start"), f"{where} start", optional=True),
        None if duration is None else float(duration),
        attempts,
        _optional_str(value.get("error"), f"{where} error", ERROR_TAIL + 100),
        at,
    )
