"""A scheduler replica's state: the run ledger plus the job table, as plain values.

Pure. Every node's scheduler process keeps one :class:`Replica` (and its SQLite store);
the holder writes to its own and to the members' with :func:`apply`, and a new holder
starts from the :func:`merge` of a majority's copies, each read after it observed the new
holder's epoch (see ``_ledger`` for why that keeps every accepted write).

**Job entries** follow the ledger's lanes: each change of a job is stamped ``(epoch,
seq)`` and a replica keeps the newest stamp per job; a deletion is an entry without a
spec (a tombstone), so a stale copy cannot bring a deleted job back in a merge.

**Where** each open claim was sent (its node) travels with the claim, so a new holder
knows whose task pool to ask whether the run is still alive.

This module owns the replica's values and their encoded forms (the observe answer, a
sync, the store's rows) and the decisions on copies: :func:`apply`, :func:`may_write`,
:func:`read_quorum`, :func:`merge`. What the answers to a write round mean is
``_rounds``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from otpkit.scheduler import _history
from otpkit.scheduler._history import RunRecord
from otpkit.scheduler._ledger import (
    MAX_STAMP,
    ClaimKey,
    LaneUpdate,
    Ledger,
    LedgerError,
    accept_all,
    observe,
    to_utc,
)
from otpkit.scheduler._ledger import merge as merge_ledgers
from otpkit.scheduler._ledger_codec import (
    LEDGER_FORMAT,
    decode_ledger,
    decode_update,
    encode_ledger,
    encode_update,
)

__all__ = [
    "JobEntry",
    "Replica",
    "apply",
    "decode_entry",
    "decode_key",
    "decode_replica",
    "encode_entry",
    "encode_key",
    "encode_replica",
    "merge",
    "observe_replica",
]

ORIGINS = ("config", "runtime")
Stamp = tuple[int, int]


@dataclass(frozen=True)
class JobEntry:
    """One job's record: ``spec`` (``Job.to_spec()``; None once deleted), the write's
    ``stamp``, where it came from (``"config"`` or ``"runtime"``) and ``since``: the
    instant from which its ticks are due (added, changed or activated)."""

    spec: Mapping[str, Any] | None
    stamp: Stamp
    origin: str
    since: datetime

    @property
    def deleted(self) -> bool:
        return self.spec is None


@dataclass(frozen=True)
class Replica:
    """A copy of the scheduler's replicated state."""

    ledger: Ledger = field(default_factory=Ledger)
    jobs: Mapping[str, JobEntry] = field(default_factory=dict)
    where: Mapping[ClaimKey, str] = field(default_factory=dict)
    #: the epoch of the write that set each ``where`` (the claim's epoch)
    where_epochs: Mapping[ClaimKey, int] = field(default_factory=dict)
    #: the run history: each job's newest records, newest tick first (``_history``)
    runs: Mapping[str, tuple[RunRecord, ...]] = field(default_factory=dict)

    @property
    def epoch(self) -> int:
        return self.ledger.epoch

    def live_jobs(self) -> dict[str, JobEntry]:
        """The jobs that are not deleted, by name."""
        return {name: e for name, e in self.jobs.items() if e.spec is not None}


# ---------------------------------------------------------------------- encoding


def _time(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def _parse_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise LedgerError(f"{where}: {value!r}, expected an ISO 8601 time")
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise LedgerError(f"{where}: {value!r} ({exc})") from exc
    if at.tzinfo is None or at.utcoffset() is None:
        raise LedgerError(f"{where}: {value!r}, expected a time with its offset")
    return to_utc(at, where)


def encode_key(key: ClaimKey) -> list[Any]:
    """``[job, at (ISO, UTC), node]``: a claim key on the wire."""
    return [key.job, _time(key.at), key.node]


def decode_key(value: Any) -> ClaimKey:
    """The key :func:`encode_key` made (an aware datetime is taken as well)."""
    if not isinstance(value, list | tuple) or len(value) not in (2, 3):
        raise LedgerError(f"claim key {value!r}: expected [job, at, node]")
    job, at = value[0], value[1]
    node = value[2] if len(value) == 3 else None
    if not isinstance(job, str) or not job:
        raise LedgerError(f"claim key {value!r}: job, expected a non-empty string")
    if isinstance(at, datetime):
        if at.tzinfo is None or at.utcoffset() is None:
            raise LedgerError(f"claim key {value!r}: at, expected an aware time")
        at = to_utc(at, f"claim key {value!r}: at")
    else:
        at = _parse_time(at, f"claim key {value!r}")
    if node is not None and (not isinstance(node, str) or not node):
        raise LedgerError(f"claim key {value!r}: node, expected None or a string")
    return ClaimKey(job, at, node)


def encode_entry(entry: JobEntry) -> dict[str, Any]:
    return {
        "spec": None if entry.spec is None else dict(entry.spec),
        "stamp": [entry.stamp[0], entry.stamp[1]],
        "origin": entry.origin,
        "since": _time(entry.since),
    }


def decode_entry(value: Any, name: str = "?") -> JobEntry:
    where = f"job entry {name!r}"
    if not isinstance(value, Mapping):
        raise LedgerError(f"{where}: expected a mapping")
    spec, stamp, origin = value.get("spec"), value.get("stamp"), value.get("origin")
    if spec is not None and not isinstance(spec, Mapping):
        raise LedgerError(f"{where}: spec {spec!r}, expected a mapping or None")
    if (
        not isinstance(stamp, list | tuple)
        or len(stamp) != 2
        or not all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= MAX_STAMP for x in stamp
        )
    ):
        raise LedgerError(f"{where}: stamp {stamp!r}, expected [epoch, seq] in 0..{MAX_STAMP}")
    if origin not in ORIGINS:
        raise LedgerError(f"{where}: origin {origin!r}, expected one of {ORIGINS}")
    since = _parse_time(value.get("since"), f"{where} since")
    return JobEntry(None if spec is None else dict(spec), (stamp[0], stamp[1]), origin, since)


def encode_replica(rep: Replica, compat: bool = False) -> dict[str, Any]:
    """The whole replica as plain values (the observe answer, a sync). ``compat``: the
    form a replica of the previous release reads (no attempts, no run history)."""
    out = encode_ledger(rep.ledger, compat)
    out["jobs"] = {name: encode_entry(e) for name, e in rep.jobs.items()}
    out["where"] = [
        [*encode_key(k), node, rep.where_epochs.get(k, 0)] for k, node in rep.where.items()
    ]
    if not compat:
        out["runs"] = [_history.encode_record(r) for rs in rep.runs.values() for r in rs]
    return out


def decode_records(value: Any) -> list[RunRecord]:
    """Run records encoded as a list (a replica's ``runs``, a write's ``runs`` update).
    Raises ``LedgerError`` naming the bad record."""
    if not isinstance(value, list | tuple):
        raise LedgerError(f"run records: {type(value).__name__}, expected a list")
    return [_history.decode_record(v) for v in value]


def decode_runs(value: Any, keep: int = _history.KEEP) -> dict[str, tuple[RunRecord, ...]]:
    """:func:`decode_records`, grouped by job and trimmed to ``keep`` each."""
    return _history.add({}, decode_records(value), keep)


def decode_replica(value: Any) -> Replica:
    """The replica :func:`encode_replica` made. Raises ``LedgerError`` naming the part."""
    ledger = decode_ledger(value)
    jobs_raw = value.get("jobs", {})
    if not isinstance(jobs_raw, Mapping):
        raise LedgerError(f"replica jobs: {type(jobs_raw).__name__}, expected a mapping")
    jobs = {str(n): decode_entry(e, str(n)) for n, e in jobs_raw.items()}
    where: dict[ClaimKey, str] = {}
    epochs: dict[ClaimKey, int] = {}
    where_raw = value.get("where", ())
    if not isinstance(where_raw, list | tuple):
        raise LedgerError(f"replica where: {where_raw!r}, expected a list")
    for item in where_raw:
        if (
            not isinstance(item, list | tuple)
            or len(item) not in (4, 5)
            or not isinstance(item[3], str)
            or (
                len(item) == 5
                and (
                    not isinstance(item[4], int)
                    or isinstance(item[4], bool)
                    or not 0 <= item[4] <= MAX_STAMP
                )
            )
        ):
            raise LedgerError(f"replica where: {item!r}, expected [job, at, node, where, epoch]")
        key = decode_key(item[:3])
        where[key] = item[3]
        epochs[key] = item[4] if len(item) == 5 else 0
    runs = decode_runs(value.get("runs", ()), _history.MAX_KEEP)
    return Replica(ledger, jobs, where, epochs, runs)


def lane_keys_of(updates: Iterable[Any]) -> set[tuple[str, str | None]]:
    """The ledger lanes a write's ``updates`` touch (its lanes and its wheres)."""
    keys: set[tuple[str, str | None]] = set()
    for update in updates:
        if update[0] == "lane":
            lane = update[1]["lane"]
            keys.add((lane[0], lane[1]))
        elif update[0] == "where":
            key = update[1]
            keys.add((key[0], key[2] if len(key) > 2 else None))
    return keys


def encode_lane_rows(
    rep: Replica, lane_keys: Iterable[tuple[str, str | None]]
) -> dict[tuple[str, str | None], dict[str, Any]]:
    """The named lanes (those ``rep`` has) as the store keeps them: each lane and the
    wheres of its claims (the wheres grouped by lane in one pass)."""
    rows: dict[tuple[str, str | None], dict[str, Any]] = {}
    for key in lane_keys:
        lane = rep.ledger.lanes.get(key)
        if lane is not None:
            rows[key] = {
                "lane": encode_update(LaneUpdate(key[0], key[1], lane))["lane"],
                "where": [],
            }
    for claim, node in rep.where.items():
        row = rows.get(claim.lane)
        if row is not None:
            row["where"].append([_time(claim.at), node, rep.where_epochs.get(claim, 0)])
    return rows


def encode_head(rep: Replica) -> dict[str, Any]:
    """The ledger's own record in the store: its format and highest epoch."""
    return {"format": LEDGER_FORMAT, "epoch": rep.ledger.epoch, "lanes": []}


def decode_rows(
    head: Mapping[str, Any] | None, rows: Mapping[tuple[str, str | None], Any]
) -> Replica:
    """The replica (without jobs) stored as :func:`encode_head` + one
    :func:`encode_lane_rows` row per lane. Raises ``LedgerError`` naming the bad part."""
    base = decode_ledger(head) if head is not None else Ledger()
    lanes = dict(base.lanes)
    where: dict[ClaimKey, str] = {}
    epochs: dict[ClaimKey, int] = {}
    for (job, node), row in rows.items():
        if not isinstance(row, Mapping) or "lane" not in row:
            raise LedgerError(f"stored lane {job!r}/{node!r}: expected a lane record")
        update = decode_update({"format": LEDGER_FORMAT, "lane": row["lane"]})
        if update.key != (job, node):
            raise LedgerError(f"stored lane {job!r}/{node!r} holds {update.key!r}")
        lanes[update.key] = update.lane
        for item in row.get("where", ()):
            if not isinstance(item, list | tuple) or len(item) != 3:
                raise LedgerError(f"stored lane {job!r}/{node!r} where {item!r}")
            key = decode_key([job, item[0], node])
            where[key] = str(item[1])
            epochs[key] = int(item[2])
    epoch = max([base.epoch, *(lane.stamp[0] for lane in lanes.values())])
    return Replica(Ledger(epoch, lanes), {}, where, epochs)


# ---------------------------------------------------------------------- decisions


def observe_replica(rep: Replica, epoch: int) -> tuple[Replica, bool]:
    """``rep`` having seen ``epoch`` (False, unchanged, if it has seen a higher one)."""
    if epoch < rep.ledger.epoch:
        return rep, False
    return replace(rep, ledger=observe(rep.ledger, epoch)), True


def apply(
    rep: Replica, epoch: int, updates: Sequence[Any], keep: int = _history.KEEP
) -> tuple[Replica, bool, set[str]]:
    """Take a holder's write: ``(new replica, accepted, names of jobs changed)``.

    ``updates`` is a list of ``("lane", encoded lane update)``, ``("job", name, encoded
    entry)``, ``("where", encoded key, node)`` (``node`` None drops the entry) and
    ``("runs", [encoded run record, ...])`` (added to the history, ``keep`` per job;
    a replica of the previous release is sent no such update). Refused
    as a whole (False) when ``epoch`` is below the replica's epoch: an old holder's
    write. Malformed updates raise ``LedgerError`` (the caller refuses the write).
    """
    if not isinstance(updates, list | tuple):
        raise LedgerError(f"replica write {str(updates)[:80]}: expected a list of updates")
    if epoch < rep.ledger.epoch:
        return rep, False, set()
    lanes = []
    jobs: dict[str, JobEntry] | None = None
    where: dict[ClaimKey, str] | None = None
    epochs: dict[ClaimKey, int] | None = None
    changed: set[str] = set()
    runs: list[RunRecord] = []
    for update in updates:
        if not isinstance(update, list | tuple) or not update:
            raise LedgerError(f"replica update {update!r}: expected a tagged list")
        kind = update[0]
        if kind == "lane" and len(update) == 2:
            lane = decode_update(update[1])
            if lane.lane.stamp[0] > epoch:
                raise LedgerError(f"lane update stamped {lane.lane.stamp} above epoch {epoch}")
            lanes.append(lane)
        elif kind == "job" and len(update) == 3 and isinstance(update[1], str):
            entry = decode_entry(update[2], update[1])
            jobs = dict(rep.jobs) if jobs is None else jobs
            current = jobs.get(update[1])
            if current is None or entry.stamp > current.stamp:
                jobs[update[1]] = entry
                changed.add(update[1])
        elif kind == "where" and len(update) == 3:
            key = decode_key(update[1])
            where = dict(rep.where) if where is None else where
            epochs = dict(rep.where_epochs) if epochs is None else epochs
            if update[2] is None:
                where.pop(key, None)
                epochs.pop(key, None)
            elif isinstance(update[2], str) and update[2]:
                where[key] = update[2]
                epochs[key] = epoch
            else:
                raise LedgerError(
                    f"replica where {update[1]!r}: node {update[2]!r}, expected a string or None"
                )
        elif kind == "runs" and len(update) == 2:
            runs += decode_records(update[1])
        else:
            raise LedgerError(f"replica update {str(update)[:80]}: unknown kind or shape")
    ledger, ok = accept_all(observe(rep.ledger, epoch), lanes)
    if not ok:
        return rep, False, set()
    return (
        Replica(
            ledger,
            rep.jobs if jobs is None else jobs,
            rep.where if where is None else where,
            rep.where_epochs if epochs is None else epochs,
            _history.add(rep.runs, runs, keep) if runs else rep.runs,
        ),
        True,
        changed,
    )


def may_write(seen: int, observer: str | None, epoch: int, holder: str) -> bool:
    """May ``holder`` observe or write at ``epoch`` a replica that has ``seen`` that
    epoch, observed by ``observer``? Yes above it; at it only the holder that observed
    it: two holders never write under one epoch (their records could tie in a merge)."""
    return epoch > seen or (epoch == seen and observer in (None, holder))


def is_empty(rep: Replica) -> bool:
    """No job and no lane: a copy with nothing in it (a new cluster's, or a lost one)."""
    return not rep.jobs and not rep.ledger.lanes


def read_quorum(
    need: int,
    copies: Sequence[tuple[bool, bool]],
    all_answered: bool,
    members: int | None = None,
) -> str:
    """Whether a new holder may start from the copies it read: ``copies`` are
    ``(synced, empty)`` of each copy it has (its own included), ``need`` a majority,
    ``members`` how many copies there are in all (answered or not).

    ``"ok"``: a majority of synced copies (every write a holder counted was taken by a
    majority of synced copies, so one of them is here). Also ``"ok"`` for at least one
    synced copy when fewer than a majority did not answer: a counted write's majority of
    synced takers cannot all be among those, so one of them is here too (a holder that
    died having synced only one other copy left one synced copy and an unsynced one: a
    majority of *synced* copies never comes back without the dead node). Also ``"ok"``
    for a majority of copies none of which is synced and all empty: a new cluster (or one
    whose every copy was lost: there is nothing better to wait for). ``"minority"``:
    every member answered but fewer than a majority is synced - start from what there is
    (logged). ``"wait"``: ask again.
    """
    synced = sum(1 for s, _ in copies if s)
    if synced >= need:
        return "ok"
    if members is not None and synced >= 1 and members - len(copies) < need:
        return "ok"
    if len(copies) >= need and synced == 0 and all(empty for _, empty in copies):
        return "ok"
    if all_answered and len(copies) >= need:
        return "minority"
    return "wait"


def merge(copies: Iterable[Replica], keep: int = _history.KEEP) -> Replica:
    """The state a new holder starts from: the ledgers merged (``_ledger.merge``), per
    job the entry with the newest stamp, the ``where`` of every claim still open, and
    the union of the run histories (``keep`` per job)."""
    reps = list(copies)
    if not reps:
        raise ValueError("merge of no replicas: expected at least one")
    ledger = merge_ledgers(r.ledger for r in reps)
    jobs: dict[str, JobEntry] = {}
    for rep in reps:
        for name, entry in rep.jobs.items():
            best = jobs.get(name)
            if best is None or entry.stamp > best.stamp:
                jobs[name] = entry
    # the where of an open claim is the newest written since the claim (its epoch or a
    # later one: a later holder sends a retried attempt, and writes where it went); an
    # old holder's where for the same key, from a write that reached no majority, is
    # older than the claim and is not
    claim_epoch = {
        ClaimKey(job, tick, node): epoch
        for (job, node), lane in ledger.lanes.items()
        for tick, epoch in lane.open
    }
    where: dict[ClaimKey, str] = {}
    epochs: dict[ClaimKey, int] = {}
    for rep in reps:
        for key, node in rep.where.items():
            want = claim_epoch.get(key)
            if want is None:
                continue
            written = rep.where_epochs.get(key, want)
            if written >= want and (key not in where or written > epochs[key]):
                where[key] = node
                epochs[key] = written
    return Replica(ledger, jobs, where, epochs, _history.merge((r.runs for r in reps), keep))
