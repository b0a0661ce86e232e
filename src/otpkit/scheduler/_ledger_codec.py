"""The run ledger as plain values: :func:`encode_ledger` and :func:`encode_update` for
storage and replication, :func:`decode_ledger` and :func:`decode_update` to read them
back, each part checked.

Pure. The form is versioned (:data:`LEDGER_FORMAT`); times are ISO 8601 strings in UTC.
A member of the previous release takes only open claims without attempts: ``compat``
writes that form. The values themselves are ``_ledger``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from otpkit.scheduler._ledger import (
    MAX_ATTEMPT,
    MAX_STAMP,
    Lane,
    LaneKey,
    LaneUpdate,
    Ledger,
    LedgerError,
    lane_order,
    to_utc,
)

__all__ = [
    "LEDGER_FORMAT",
    "decode_ledger",
    "decode_time",
    "decode_update",
    "encode_ledger",
    "encode_update",
]

#: The version of the encoded form (:func:`encode_ledger`, :func:`encode_update`).
LEDGER_FORMAT = 1


def _time(at: datetime) -> str:
    return at.isoformat()


def _encode_lane(job: str, node: str | None, lane: Lane, compat: bool = False) -> list[Any]:
    tries = {} if compat else {tick: (n, at) for tick, n, at in lane.tries}
    opened: list[list[Any]] = []
    for tick, epoch in lane.open:
        item: list[Any] = [_time(tick), epoch]
        if tick in tries:
            attempt, retry_at = tries[tick]
            item += [attempt, None if retry_at is None else _time(retry_at)]
        opened.append(item)
    return [job, node, _time(lane.high), opened, lane.stamp[0], lane.stamp[1]]


def encode_ledger(state: Ledger, compat: bool = False) -> dict[str, Any]:
    """``state`` as plain values (msgpack- and JSON-able), for storage and replication.

    The form: ``{"format": 1, "epoch": int, "lanes": [lane, ...]}``, each lane
    ``[job, node or None, high, [[tick, epoch], ...], stamp_epoch, stamp_seq]`` with times
    as ISO 8601 strings in UTC (``2026-01-01T10:00:00+00:00``), lanes sorted by job and
    node. An open claim past its first attempt is ``[tick, epoch, attempt, retry_at or
    None]``; ``compat`` leaves that out (the form the previous release reads: it takes
    two-item open claims only).
    """
    return {
        "format": LEDGER_FORMAT,
        "epoch": state.epoch,
        "lanes": [
            _encode_lane(job, node, state.lanes[(job, node)], compat)
            for job, node in sorted(state.lanes, key=lane_order)
        ],
    }


def encode_update(update: LaneUpdate, compat: bool = False) -> dict[str, Any]:
    """``update`` as plain values: ``{"format": 1, "lane": lane}`` (lane as in a ledger;
    ``compat`` as in :func:`encode_ledger`)."""
    lane = _encode_lane(update.job, update.node, update.lane, compat)
    return {"format": LEDGER_FORMAT, "lane": lane}


def decode_time(value: Any, where: str) -> datetime:
    """The instant an ISO 8601 string with its UTC offset names, in UTC; ``LedgerError``
    naming ``where`` otherwise."""
    if not isinstance(value, str):
        raise LedgerError(f"{where}: {value!r}, expected an ISO 8601 time string")
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise LedgerError(f"{where}: {value!r}, expected an ISO 8601 time ({exc})") from exc
    if at.tzinfo is None or at.utcoffset() is None:
        raise LedgerError(f"{where}: {value!r}, expected a time with its UTC offset")
    return to_utc(at, where)


def _decode_int(value: Any, where: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_STAMP:
        raise LedgerError(f"{where}: {value!r}, expected an int in {low}..{MAX_STAMP}")
    return value


def _decode_lane(value: Any, where: str) -> tuple[LaneKey, Lane]:
    if not isinstance(value, list | tuple) or len(value) != 6:
        raise LedgerError(
            f"{where}: {value!r}, expected [job, node, high, open, stamp_epoch, stamp_seq]"
        )
    job, node, high, opened, stamp_epoch, stamp_seq = value
    if not isinstance(job, str) or not job:
        raise LedgerError(f"{where}: job {job!r}, expected a non-empty string")
    if node is not None and (not isinstance(node, str) or not node):
        raise LedgerError(f"{where}: node {node!r}, expected None or a non-empty string")
    where = f"{where} (job {job!r}, node {node!r})"
    high_at = decode_time(high, f"{where} high")
    if not isinstance(opened, list | tuple):
        raise LedgerError(f"{where} open: {opened!r}, expected a list of [tick, epoch]")
    claims: list[tuple[datetime, int]] = []
    tries: list[tuple[datetime, int, datetime | None]] = []
    for item in opened:
        if not isinstance(item, list | tuple) or len(item) not in (2, 4):
            raise LedgerError(
                f"{where} open claim: {item!r}, expected [tick, epoch] or "
                "[tick, epoch, attempt, retry_at]"
            )
        tick = decode_time(item[0], f"{where} open claim")
        if tick > high_at or (claims and tick <= claims[-1][0]):
            raise LedgerError(
                f"{where} open claim {item[0]!r}: expected ticks ascending and <= high {high!r}"
            )
        claims.append((tick, _decode_int(item[1], f"{where} open claim epoch", 0)))
        if len(item) == 4:
            attempt = item[2]
            if isinstance(attempt, bool) or not isinstance(attempt, int):
                raise LedgerError(f"{where} open claim attempt: {attempt!r}, expected an int")
            if not 1 <= attempt <= MAX_ATTEMPT:
                raise LedgerError(
                    f"{where} open claim attempt: {attempt!r}, expected 1..{MAX_ATTEMPT}"
                )
            retry_at = None if item[3] is None else decode_time(item[3], f"{where} retry_at")
            tries.append((tick, attempt, retry_at))
    stamp = (
        _decode_int(stamp_epoch, f"{where} stamp epoch", 0),
        _decode_int(stamp_seq, f"{where} stamp seq", 1),
    )
    return (job, node), Lane(high_at, tuple(claims), stamp, tuple(tries))


def _check_format(value: Any, what: str, fields: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise LedgerError(f"encoded {what}: {type(value).__name__}, expected a mapping")
    missing = [name for name in fields if name not in value]
    if missing:
        raise LedgerError(f"encoded {what}: missing {', '.join(missing)}")
    if value["format"] != LEDGER_FORMAT:
        raise LedgerError(
            f"encoded {what}: format {value['format']!r}, expected {LEDGER_FORMAT} "
            "(written by another version of otpkit?)"
        )
    return value


def decode_ledger(value: Any) -> Ledger:
    """The ledger :func:`encode_ledger` made (also after msgpack or JSON, tuples as lists).

    Raises:
        LedgerError: naming the part that is malformed, or an unknown ``format``.
    """
    value = _check_format(value, "ledger", ("format", "epoch", "lanes"))
    epoch = _decode_int(value["epoch"], "ledger epoch", 0)
    if not isinstance(value["lanes"], list | tuple):
        raise LedgerError(f"ledger lanes: {value['lanes']!r}, expected a list")
    lanes: dict[LaneKey, Lane] = {}
    for i, item in enumerate(value["lanes"]):
        lane_key, lane = _decode_lane(item, f"ledger lane {i}")
        if lane_key in lanes:
            raise LedgerError(f"ledger lane {i}: job {lane_key[0]!r} node {lane_key[1]!r} twice")
        lanes[lane_key] = lane
    return Ledger(epoch, lanes)


def decode_update(value: Any) -> LaneUpdate:
    """The lane update :func:`encode_update` made.

    Raises:
        LedgerError: naming the part that is malformed, or an unknown ``format``.
    """
    value = _check_format(value, "lane update", ("format", "lane"))
    (job, node), lane = _decode_lane(value["lane"], "lane update")
    return LaneUpdate(job, node, lane)
