"""The task pool's reports: each ended run's report, sent to the scheduler's holder in the
form its node takes until the holder acknowledges it.

:class:`Outbox` keeps the reports of a :class:`~otpkit.scheduler._pool.TaskPool` and
lives in its process; the forms and the acks are pure functions
(:func:`takes_info`, :func:`done_message`, :func:`started_message`, :func:`acked`).

**Reports.** A run that ends goes to the outbox with its ``outcome``, ``start``,
``end``, ``error``, ``raised`` and ``traceback``: ``start`` is ``None`` if the task
function was never entered, ``error`` is ``None`` for ``"finished"`` and at most
:data:`~otpkit.scheduler._pool_wire.ERROR_LIMIT` characters, ``raised`` says the task
(or its import) raised, ``traceback`` is the last lines of its traceback (at most
``_history.ERROR_TAIL`` characters) or ``None``. The pool sends each entry to the
scheduler's holder (the pid of the global name ``scheduler``, if bound), in the form the
holder's node takes: a holder on this node or on a node of dist protocol
:data:`INFO_PROTOCOL` or later (``dist.versions``, kept current by
``NodeUp``/``NodeDown``) gets::

    ("run_started", node, key, start, {"attempt": n})                  # once, best effort
    ("run_done", node, key, outcome, start, end, error,
     {"attempt": n, "raised": bool, "traceback": str | None})          # until acknowledged

and any other holder (the previous release's) the same without the last field, the
form it takes. ``node`` is this pool's node name. ``run_done`` goes when the run ends
and again every :data:`RESEND_EVERY` seconds (up to half as much more: a tick checks
every ``RESEND_EVERY / 2``) while unacknowledged, to whoever holds the name then; the
holder answers ``("ack", [item, ...])`` (a plain message or a cast, items as lists or
tuples): an item ``[job, at, node]`` drops every attempt of that key from the outbox,
``[job, at, node, attempt]`` that attempt only. A holder must treat a repeated
``run_done`` as one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from otpkit import actors
from otpkit import distribution as dist
from otpkit.distribution import NET_NAME
from otpkit.errors import OtpkitError
from otpkit.registry import whereis_name
from otpkit.scheduler._pool_wire import Report, RunId, RunKey, parse_ack

__all__ = [
    "INFO_PROTOCOL",
    "RESEND_EVERY",
    "Outbox",
    "acked",
    "done_message",
    "started_message",
    "takes_info",
]

log = logging.getLogger("otpkit.scheduler")

#: Seconds between two sends of an unacknowledged ``run_done``.
RESEND_EVERY = 0.5
#: The dist protocol from which a holder takes a report's last field, ``info`` (the
#: previous release, protocol 3, takes ``run_done`` and ``run_started`` without it).
INFO_PROTOCOL = 4
#: Seconds a pool waits before it asks dist again for the protocol of a holder's node
#: it does not know.
_VERSIONS_EVERY = 1.0


# ---------------------------------------------------------------------- decisions


def acked(runs: Iterable[RunId], items: Iterable[tuple[RunKey, int | None]]) -> list[RunId]:
    """The runs of ``runs`` the ack ``items`` (from :func:`parse_ack`) acknowledge."""
    whole: set[RunKey] = set()
    one: set[RunId] = set()
    for key, attempt in items:
        if attempt is None:
            whole.add(key)
        else:
            one.add((key, attempt))
    return [run for run in runs if run[0] in whole or run in one]


def takes_info(holder_node: str, own_node: str, versions: Mapping[str, int]) -> bool:
    """Whether a holder on ``holder_node`` takes the reports' ``info`` field: it runs on
    this node (``own_node``, this code), or its node speaks dist protocol
    :data:`INFO_PROTOCOL` or later (``versions``: of the connected nodes; a node not
    there gets the previous release's form)."""
    return holder_node == own_node or versions.get(holder_node, 0) >= INFO_PROTOCOL


def done_message(node: str, report: Report, info: bool) -> tuple[Any, ...]:
    """The ``run_done`` of ``report`` from the pool of ``node``: with ``info`` (see
    :func:`takes_info`) its attempt, whether it raised and its traceback as an 8th
    field, else the previous release's 7 fields."""
    msg = (
        "run_done",
        node,
        report.key,
        report.outcome,
        report.start,
        report.end,
        report.error,
    )
    if not info:
        return msg
    extra = {"attempt": report.attempt, "raised": report.raised, "traceback": report.traceback}
    return (*msg, extra)


def started_message(
    node: str, key: RunKey, start: float, attempt: int, info: bool
) -> tuple[Any, ...]:
    """The ``run_started`` of attempt ``attempt`` of ``key``: with ``info``, the attempt
    as a 5th field, else the previous release's 4 fields."""
    msg = ("run_started", node, key, start)
    return (*msg, {"attempt": attempt}) if info else msg


# ---------------------------------------------------------------------- the outbox


class Outbox:
    """The reports of a pool's ended runs until the holder acks them (see the module).

    It lives in the pool's process, which drives it: :meth:`add` when a run ends,
    :meth:`resend` on the pool's ``("$resend",)`` timer (which :meth:`add` arms),
    :meth:`ack` with an ack's items, :meth:`node_up` and :meth:`node_down` with dist's
    ``NodeUp`` and ``NodeDown``.

    Args:
        scheduler: the scheduler's name: its holder is the global name ``scheduler``.
        node: the pool's node.
        versions: the dist protocol of each connected node, if the node runs dist.
    """

    def __init__(
        self, scheduler: str, node: str, versions: Mapping[str, int] | None = None
    ) -> None:
        self.scheduler = scheduler
        self.node = node
        self.reports: dict[RunId, Report] = {}
        self.last_sent: dict[RunId, float] = {}
        self.resend_armed = False
        # the dist protocol of each connected node (NodeUp, NodeDown, dist.versions)
        self.versions: dict[str, int] = dict(versions or {})
        self.versions_at = -math.inf if versions is None else time.monotonic()

    def __contains__(self, run_id: object) -> bool:
        return run_id in self.reports

    def entries(self) -> list[list[Any]]:
        """The reports as ``("state",)`` lists them."""
        return [report.entry() for report in self.reports.values()]

    def add(self, report: Report) -> None:
        """``report``'s run is over: send it now and again until it is acked."""
        self.reports[report.id] = report
        self._send_done(report)
        if not self.resend_armed:
            self.resend_armed = True
            actors.send_after(RESEND_EVERY / 2, ("$resend",))

    def started(self, key: RunKey, start: float, attempt: int) -> None:
        """Tell the holder (once) that attempt ``attempt`` of ``key`` started at ``start``."""
        self._tell_holder(lambda info: started_message(self.node, key, start, attempt, info))

    def resend(self) -> None:
        """The pool's ``$resend`` timer: send again what is unacknowledged since
        :data:`RESEND_EVERY` seconds."""
        self.resend_armed = False
        if not self.reports:
            return
        due = time.monotonic() - RESEND_EVERY
        for run_id, report in self.reports.items():
            if self.last_sent.get(run_id, 0.0) <= due:
                self._send_done(report)
        self.resend_armed = True
        actors.send_after(RESEND_EVERY / 2, ("$resend",))

    def ack(self, items: Iterable[Any]) -> list[tuple[Any, str]]:
        """Drop the reports an ack's ``items`` acknowledge (see ``parse_ack``); return
        the malformed items, each with what is wrong with it."""
        parsed: list[tuple[RunKey, int | None]] = []
        bad: list[tuple[Any, str]] = []
        for value in items:
            try:
                parsed.append(parse_ack(value))
            except ValueError as exc:
                bad.append((value, str(exc)))
        for run_id in acked(self.reports, parsed):
            del self.reports[run_id]
            self.last_sent.pop(run_id, None)
        return bad

    def node_up(self, node: str, version: int) -> None:
        """``node`` is connected and speaks dist protocol ``version``."""
        self.versions[node] = version

    def node_down(self, node: str) -> None:
        """``node`` is no longer connected."""
        self.versions.pop(node, None)

    def _send_done(self, report: Report) -> None:
        self.last_sent[report.id] = time.monotonic()
        self._tell_holder(lambda info: done_message(self.node, report, info))

    def _takes_info(self, node: str) -> bool:
        """Whether the holder on ``node`` takes the reports' ``info`` (see
        :func:`takes_info`); a node whose protocol is not known yet (its ``NodeUp`` is
        still on its way) is asked of dist, at most every ``_VERSIONS_EVERY`` seconds."""
        now = time.monotonic()
        if (
            node != self.node
            and node not in self.versions
            and now - self.versions_at >= _VERSIONS_EVERY
            and actors.whereis(NET_NAME) is not None
        ):
            self.versions_at = now
            try:
                self.versions = dist.versions(timeout=1.0)
            except (OtpkitError, ValueError) as exc:
                # the previous release's form, which every holder takes, goes meanwhile
                log.debug(
                    "%s: task pool of %r: no dist versions: %s", self.node, self.scheduler, exc
                )
        return takes_info(node, self.node, self.versions)

    def _tell_holder(self, make: Callable[[bool], tuple[Any, ...]]) -> None:
        """Send the holder ``make(info)``: ``info`` says whether it takes the reports'
        last field (see :func:`takes_info`)."""
        holder = whereis_name(self.scheduler)
        if holder is None:
            return
        try:
            actors.send(holder, make(self._takes_info(holder.node)))
        except (TypeError, ValueError) as exc:  # a value the wire cannot carry
            log.error(
                "%s: task pool of %r could not report to %r: %s",
                self.node,
                self.scheduler,
                holder,
                exc,
            )
