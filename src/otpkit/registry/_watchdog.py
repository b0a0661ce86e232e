"""The Singleton's watchdog: when a singleton has had no active holder for too long,
say so, and why (pure decisions; ``SingletonManager`` is the shell that reads the clock,
asks the quorum and logs).

Every node's manager checks every :data:`WATCH_EVERY` seconds whether the cluster has an
active holder, as far as this node can tell (:func:`holder_seen`): its own child is
active, or the registry names a holder whose lease this member still counts live. A
name alone is not enough under ``"majority"``: a holder that lost its lease keeps its
name while it looks for a new one.

:func:`watch_step` decides what to say: once nothing was seen for more than two lease
terms *while a majority of the expected nodes is connected* (a minority side is meant
to have no holder; the quorum says so itself), one ERROR line per term, and one INFO
line when a holder is back. :func:`no_holder_reason` words the reason from what this
node's quorum knows of the lease (``quorum.key_status``): a store failing, no quorum
(the members missing, the nodes not members), or waiting for a node (a live grant it
holds without acting, a grant round it does not answer, a refusal naming a holder).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "WATCH_EVERY",
    "ReportBack",
    "ReportMissing",
    "Watch",
    "holder_seen",
    "no_holder_reason",
    "watch_step",
]

#: Seconds between two checks of a manager's watchdog.
WATCH_EVERY = 0.5


@dataclass(frozen=True)
class Watch:
    """A manager's watchdog state (monotonic seconds).

    ``last_seen``: when a holder was last seen (at the start: the start); ``quiet_since``:
    when the current stretch without a holder while a majority is connected began;
    ``reported``: when the last ERROR line was logged (None: none since a holder was
    last seen); ``not_before``: no stretch starts before this (the start's settle time:
    nothing is elected before it).
    """

    last_seen: float
    quiet_since: float | None = None
    reported: float | None = None
    not_before: float = 0.0

    @property
    def missing(self) -> bool:
        """The ERROR line was logged and no holder has been seen since: what
        ``otpkit_singleton_no_holder`` shows (a minority side that lost its majority
        after the line still misses its holder)."""
        return self.reported is not None


@dataclass(frozen=True)
class ReportMissing:
    """Log the ERROR line: no holder seen for ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class ReportBack:
    """Log the INFO line: a holder is back after ``seconds`` without one."""

    seconds: float


def watch_step(
    watch: Watch, now: float, seen: bool, live: int, need: int, term: float
) -> tuple[Watch, ReportMissing | ReportBack | None]:
    """The watchdog's next state, and what to log now.

    Args:
        now: the monotonic clock.
        seen: a holder is active as far as this node can tell (:func:`holder_seen`).
        live: the nodes connected, this one included.
        need: how many make a majority of the expected size (``floor(expected / 2) + 1``;
            1 under ``"availability"``, where any side may elect).
        term: a lease term, its margin included (seconds).

    An ERROR is due once no holder has been seen for more than ``2 * term`` while at
    least ``need`` nodes were connected, then at most once per ``term``; a holder seen
    after an ERROR makes one :class:`ReportBack`.
    """
    if seen:
        back = ReportBack(now - watch.last_seen) if watch.reported is not None else None
        return Watch(now, not_before=watch.not_before), back
    if live < need:
        return replace(watch, quiet_since=None), None
    since = watch.quiet_since
    if since is None:
        since = max(now, watch.not_before)
        watch = replace(watch, quiet_since=since)
    if now - since <= 2 * term:
        return watch, None
    if watch.reported is not None and now - watch.reported < term:
        return watch, None
    return replace(watch, reported=now), ReportMissing(now - watch.last_seen)


def holder_seen(
    active: bool, name_node: str | None, status: Mapping[str, Any] | None, me: str = ""
) -> bool:
    """Whether this node sees an active holder.

    Args:
        active: this node's child is the active one.
        name_node: the node of the pid the registry names for the singleton, or None.
        status: this node's ``quorum.key_status`` of the singleton's lease key under
            ``"majority"``; None under ``"availability"`` (the name is all there is).

    Under ``"majority"`` a named holder counts only if this member's grant record for
    the key is to that node and still live (not void, not run out here): a holder that
    lost its lease keeps its name until it is elected again or its node goes. A node
    that is no member keeps no grant records: the name is all it knows.
    """
    if active:
        return True
    if name_node is None:
        return False
    if status is None or not status.get("member"):
        return True
    if name_node == me:
        return False  # this node's own child holds the name but is not active
    grant = status.get("grant")
    return (
        isinstance(grant, Mapping)
        and grant.get("holder") == name_node
        and not grant.get("void")
        and float(grant.get("left", 0.0)) > 0
    )


def _names(names: Sequence[str], most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


def no_holder_reason(
    me: str,
    status: Mapping[str, Any] | None,
    *,
    stores: Sequence[str] = (),
    unanswered: str | None = None,
    election: str | None = None,
) -> str:
    """Why no holder is active, from what this node knows: one line.

    Args:
        me: this node's name.
        status: this node's ``quorum.key_status`` of the lease key (``"majority"``), or
            None (``"availability"``, or the quorum did not answer).
        stores: the stores of this node that cannot be written (the child's, e.g. the
            scheduler's replica; the quorum's own is in ``status``).
        unanswered: why the quorum's status could not be had (it did not answer).
        election: what this node's election last ran into, if anything (a cold child
            that failed to start, ...).

    In this order: a store failing; the quorum not answering; no quorum (members
    missing, nodes not members); waiting for a node (a live grant it holds without
    acting, its own lease without an active child, a grant round that node does not
    answer or refuses, a refusal naming a live holder); the election's trouble; else
    that no candidate asks.
    """
    failing = list(stores)
    if status is not None and status.get("store"):
        failing.insert(0, f"this node's quorum store {status['store']} cannot be written")
    if failing:
        return f"store failing: {'; '.join(failing)}"
    if unanswered is not None:
        return f"this node's quorum does not answer ({unanswered})"
    if status is None:
        return f"no node won the election{f' ({election})' if election else ''}"
    outsiders = list(status.get("outsiders") or ())
    not_members = f"; not members: {_names(outsiders)}" if outsiders else ""
    if status.get("problem"):
        return f"no quorum: {status['problem']}{not_members}"
    grant = status.get("grant")
    if (
        isinstance(grant, Mapping)
        and grant.get("holder") != me
        and not grant.get("void")
        and float(grant.get("left", 0.0)) > 0
    ):
        return (
            f"waiting for {grant['holder']}: it holds the grant of epoch {grant['epoch']} "
            f"here ({float(grant['left']):.1f} s left) but has no active holder"
        )
    if status.get("held") is not None:
        return (
            f"waiting for {me}: it holds the lease of epoch {status['held']} but its "
            "child is not active"
        )
    for which in ("round", "last_round"):
        rnd = status.get(which)
        if not isinstance(rnd, Mapping):
            continue
        silent, refused = list(rnd.get("silent") or ()), list(rnd.get("refused") or ())
        if silent:
            return (
                f"waiting for {_names(silent)}: no answer to the grant round of epoch "
                f"{rnd['epoch']} (asked {float(rnd['age']):.1f} s ago)"
            )
        if refused:
            backoff = status.get("backoff")
            by = f" (a grant to {backoff['holder']})" if isinstance(backoff, Mapping) else ""
            return (
                f"waiting for {_names(refused)}: they refused the grant round of epoch "
                f"{rnd['epoch']}{by}"
            )
    backoff = status.get("backoff")
    if isinstance(backoff, Mapping):
        return (
            f"waiting for {backoff['holder']}: a member counts its grant live for "
            f"{float(backoff['left']):.1f} s more"
        )
    if election:
        return election
    if not status.get("asking"):
        return "this node's candidate is not asking for the lease"
    return "no grant round has an outcome yet"
