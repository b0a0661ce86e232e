"""An open claim's attempts (a job with ``max_attempts``): which attempt a claim is at,
a failed attempt recorded as waiting for its retry (:func:`retry_all`), and the next
attempt claimed before it is sent (:func:`start_all`).

Pure, on ``_ledger``'s values. The claim stays open across its attempts, so its tick
keeps one run; each attempt is recorded in the claim's lane (``Lane.tries``), stamped
and fenced by epoch like a claim, and replicated with the lane.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from otpkit.scheduler._ledger import (
    MAX_ATTEMPT,
    ClaimKey,
    Lane,
    Ledger,
    checked_epoch,
    checked_key,
    drop_try,
    to_utc,
)

__all__ = ["attempt_of", "retry_all", "start_all"]


def attempt_of(lane: Lane, tick: datetime) -> tuple[int, datetime | None]:
    """The open claim ``tick``'s attempt and when its next attempt is due: ``(1, None)``
    for a claim at its first attempt (or one whose lane came from a copy of the previous
    release, which keeps no attempts)."""
    for at, attempt, retry_at in lane.tries:
        if at == tick:
            return attempt, retry_at
    return 1, None


def retry_all(
    state: Ledger, items: Iterable[tuple[ClaimKey, int, datetime]], epoch: int
) -> tuple[Ledger, list[ClaimKey]]:
    """Attempt ``attempt`` of each open claim failed and may be retried: record that
    the next attempt is due at ``retry_at`` (not started). Returns the keys taken: a
    claim not open, at another attempt or already waiting is left out; under an epoch
    below the state's, nothing is taken. The claim stays open: the tick keeps one run."""
    epoch = checked_epoch(epoch)
    checked = [
        (checked_key(key), _attempt(attempt), to_utc(at, "retry_at")) for key, attempt, at in items
    ]
    if epoch < state.epoch:
        return state, []
    lanes = dict(state.lanes)
    done: list[ClaimKey] = []
    for key, attempt, retry_at in checked:
        lane = lanes.get(key.lane)
        if lane is None or all(tick != key.at for tick, _ in lane.open):
            continue
        if attempt_of(lane, key.at) != (attempt, None):
            continue
        tries = tuple(sorted((*drop_try(lane, key.at), (key.at, attempt, retry_at))))
        lanes[key.lane] = Lane(lane.high, lane.open, (epoch, lane.stamp[1] + 1), tries)
        done.append(key)
    return (Ledger(max(state.epoch, epoch), lanes), done) if done else (state, [])


def start_all(
    state: Ledger, items: Iterable[tuple[ClaimKey, int]], epoch: int
) -> tuple[Ledger, list[ClaimKey]]:
    """Claim attempt ``attempt`` of each open claim whose attempt ``attempt - 1`` is
    waiting for its retry (:func:`retry_all`): fenced like a claim, written before the
    attempt is sent. Returns the keys taken (others are left out)."""
    epoch = checked_epoch(epoch)
    checked = [(checked_key(key), _attempt(attempt)) for key, attempt in items]
    if epoch < state.epoch:
        return state, []
    lanes = dict(state.lanes)
    done: list[ClaimKey] = []
    for key, attempt in checked:
        lane = lanes.get(key.lane)
        if lane is None:
            continue
        previous, retry_at = attempt_of(lane, key.at)
        if retry_at is None or previous != attempt - 1:
            continue
        tries = tuple(sorted((*drop_try(lane, key.at), (key.at, attempt, None))))
        lanes[key.lane] = Lane(lane.high, lane.open, (epoch, lane.stamp[1] + 1), tries)
        done.append(key)
    return (Ledger(max(state.epoch, epoch), lanes), done) if done else (state, [])


def _attempt(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ATTEMPT:
        raise ValueError(f"attempt {value!r}: expected an int in 1..{MAX_ATTEMPT}")
    return value
