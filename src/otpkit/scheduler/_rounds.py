"""The holder's write rounds, decided on plain values: which answers count toward a
write's majority (:func:`is_ack`, :func:`acks_needed`), what the answers of one round
mean (:func:`tally`, :func:`shortfall`), and when trouble that repeats at every write is
logged (:class:`Alarm`).

Pure: no processes, no clock (time is an argument). ``_replication.Writer`` runs the
rounds and ``_member.Member`` keeps its store's alarm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Alarm",
    "Tally",
    "acks_needed",
    "alarm_clear",
    "alarm_raise",
    "is_ack",
    "shortfall",
    "tally",
]


def is_ack(answer: Any) -> bool:
    """Does a member's answer to a write count toward its majority? Only when the member
    *stored* the write (``ok``) and its copy holds every earlier write (``synced``)."""
    return isinstance(answer, Mapping) and answer.get("ok") is True and answer.get("synced") is True


def acks_needed(members: Sequence[str], me: str, saved_here: bool) -> int:
    """How many *other* members must have stored a write before the holder ``me``
    counts it: a majority of ``members`` with the write in their stores.

    The holder is one of that majority only when it is a member and its own store saved
    the write: a copy in memory alone dies with the process, and counting it would let a
    write stand on fewer stores than a majority (a restarted holder and a member that
    lacks the write would then be a majority without it: a tick run twice). So a holder
    whose store fails needs one ack more - a majority of *healthy* stores, as a Raft
    leader counts itself only once its own log entry is durable. With no member set
    yet nothing is a majority: one ack more than there can be others."""
    if not members:
        return 1
    need = len(members) // 2 + 1
    others = sum(1 for m in members if m != me)
    if me in members and saved_here:
        need -= 1
    return need if need <= others else others + 1


@dataclass(frozen=True)
class Tally:
    """The answers to one write round, by what they mean for the holder."""

    #: stored it, with a synced copy: they count
    acked: frozenset[str] = frozenset()
    #: stored it, but their copy may lack earlier writes (new, or its store failed or
    #: was lost): they count once the holder synced them
    behind: frozenset[str] = frozenset()
    #: their store failed (disk full, read-only, damaged): the cause, by node; not a
    #: refusal - they hold nobody back, and catch up (``behind``) once it works again
    failed: Mapping[str, str] = field(default_factory=dict)
    #: the highest epoch a member refused the write with (a newer holder), or None
    refused: int | None = None
    #: asked but no answer in time (or not a mapping)
    silent: frozenset[str] = frozenset()


def tally(asked: Sequence[str], answers: Mapping[str, Any]) -> Tally:
    """Sort the ``answers`` (by node) of the members ``asked`` to take a write (or a
    sync): see :class:`Tally`. A member's answer is ``{"ok", "synced"}``, with
    ``"failed": cause`` when its store failed, or ``{"refused": epoch}``."""
    acked: set[str] = set()
    behind: set[str] = set()
    failed: dict[str, str] = {}
    refused: list[int] = []
    silent: set[str] = set()
    for node in asked:
        answer = answers.get(node)
        if not isinstance(answer, Mapping):
            silent.add(node)
            continue
        epoch = answer.get("refused")
        if isinstance(epoch, int) and not isinstance(epoch, bool):
            refused.append(epoch)
        elif is_ack(answer):
            acked.add(node)
        elif answer.get("ok") is True:
            behind.add(node)
        elif answer.get("ok") is False or answer.get("failed") is not None:
            failed[node] = str(answer.get("failed") or "its store failed")
        else:
            silent.add(node)
    return Tally(
        frozenset(acked),
        frozenset(behind),
        failed,
        max(refused) if refused else None,
        frozenset(silent),
    )


def shortfall(tallied: Tally, needed: int) -> str:
    """Why a write round fell short of ``needed`` acks, one line for the log: how many
    acked, and what each other member did (store failing and why, behind, silent)."""
    parts = [f"{node}: its store fails ({cause})" for node, cause in sorted(tallied.failed.items())]
    parts += [f"{node}: not synced yet" for node in sorted(tallied.behind)]
    parts += [f"{node}: no answer" for node in sorted(tallied.silent)]
    detail = f" ({'; '.join(parts)})" if parts else ""
    return f"reached {len(tallied.acked)} of the {needed} other members it needs{detail}"


# ---------------------------------------------------------------------- alarms


@dataclass(frozen=True)
class Alarm:
    """One kind of trouble that repeats at every write (a store that cannot be written,
    writes that reach no majority), logged once per episode and then every ``every``
    seconds while it lasts - not once per write. An episode ends only after ``quiet``
    seconds without a failure, so trouble that comes and goes (a nearly full disk, a
    member that answers now and then) is one episode, not a line pair per write.
    Pure: time is an argument."""

    #: when the episode began (None: no trouble)
    since: float | None = None
    #: when it was last logged, and when it last failed
    logged_at: float | None = None
    last: float | None = None
    #: failures in this episode, and those since the last line
    count: int = 0
    unlogged: int = 0
    cause: str | None = None


def alarm_raise(alarm: Alarm, now: float, cause: str, every: float = 60.0) -> tuple[Alarm, bool]:
    """Another failure with ``cause`` at ``now``: the new state, and whether to log it
    (the episode's first failure, a new cause, or ``every`` seconds since the last line)."""
    due = (
        alarm.since is None
        or cause != alarm.cause
        or alarm.logged_at is None
        or now - alarm.logged_at >= every
    )
    since = now if alarm.since is None else alarm.since
    count = alarm.count + 1
    if due:
        return Alarm(since, now, now, count, 0, cause), True
    return Alarm(since, alarm.logged_at, now, count, alarm.unlogged + 1, cause), False


def alarm_clear(alarm: Alarm, now: float, quiet: float = 0.0) -> tuple[Alarm, Alarm | None]:
    """A success at ``now``: once ``quiet`` seconds passed since the last failure the
    episode is over - a quiet alarm, and the episode that ended (to log that it did, with
    its length and count); else the alarm as it is and None."""
    if alarm.since is None or (alarm.last is not None and now - alarm.last < quiet):
        return alarm, None
    return Alarm(), alarm
