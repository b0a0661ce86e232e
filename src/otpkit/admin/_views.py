"""Pure functions over the admin service's answers: naming children, finding a supervisor
in a tree, parsing a pid, a tree's snapshot, times as text.

Nothing here talks to a process: the admin service (``_service``) and the shell
(:mod:`otpkit.shell`, which draws the answers) call these on plain values, and the unit
tests call them directly.

A tree is plain data, as the admin service answers it::

    {"id": "kernel", "pid": <Pid>, "type": "supervisor", "restart": "permanent",
     "restarts": 0, "error": None, "children": [<tree>, ...]}

``children`` is None for a worker; ``error`` says why a supervisor's children could
not be read (it did not answer in time, it lives on another node).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from otpkit.actors import Pid

__all__ = [
    "NO_ANSWER",
    "ROOT_NAMES",
    "Found",
    "child_rows",
    "find_child",
    "find_supervisor",
    "fmt_time",
    "id_label",
    "parse_pid",
    "pid_text",
    "singleton_rows",
    "snapshot",
    "tree_node_name",
    "walk",
]


#: What names the root of a node's tree (its kernel supervisor).
ROOT_NAMES = ("kernel", "/")


def id_label(child_id: Any) -> str:
    """A child id as one word a shell user can type: a str as itself, a tuple or list
    as its parts joined by ``:`` (``("scheduler", "jobs")`` -> ``scheduler:jobs``),
    anything else as its ``repr``."""
    if isinstance(child_id, str):
        return child_id
    if isinstance(child_id, tuple | list):
        return ":".join(id_label(part) for part in child_id)
    if child_id is None:
        return "-"
    return repr(child_id)


def pid_text(pid: Any) -> str:
    """``<node.ospid>`` for a pid, the word itself for ``"restarting"``, ``-`` for None."""
    if pid is None:
        return "-"
    return repr(pid) if isinstance(pid, Pid) else str(pid)


def parse_pid(text: str) -> tuple[str | None, int]:
    """``<app@host.1234>``, ``app@host.1234`` or ``1234`` as ``(node or None, os pid)``.

    Raises:
        ValueError: the text is none of these.
    """
    word = text.strip()
    if word.startswith("<") and word.endswith(">"):
        word = word[1:-1]
    node: str | None = None
    number = word
    if "@" in word:
        node, dot, number = word.rpartition(".")
        app, _, host = node.partition("@")
        if not dot or not app or not host:
            raise ValueError(f"pid {text!r}: expected <app@host.ospid> or an os pid")
    if not number.isdigit() or int(number) <= 0:
        raise ValueError(f"pid {text!r}: expected <app@host.ospid> or an os pid")
    return node, int(number)


def walk(tree: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every node of ``tree`` with its path of labels (``scheduler:jobs/pool``); the
    root's path is ``""``."""
    yield path, tree
    for child in tree.get("children") or ():
        label = str(child.get("id"))
        yield from walk(child, f"{path}/{label}" if path else label)


#: How a tree marks a supervisor that did not answer in time (its children unknown).
NO_ANSWER = "no answer"


def snapshot(
    tree: Mapping[str, Any], previous: Mapping[str, tuple[str, int]]
) -> dict[str, tuple[str, int]]:
    """Every process below the root of ``tree`` by path, as ``(pid text, restarts)``:
    what the event poll compares from one read to the next. A supervisor that did not
    answer in time (its ``error`` starts with :data:`NO_ANSWER`) keeps its children as
    ``previous`` had them: its silence is not their end."""
    found: dict[str, tuple[str, int]] = {}
    for path, node in walk(tree):
        if path:
            found[path] = (pid_text(node.get("pid")), int(node.get("restarts", 0)))
        if str(node.get("error") or "").startswith(NO_ANSWER):
            below = f"{path}/" if path else ""
            found.update((p, v) for p, v in previous.items() if p.startswith(below) and p != path)
    return found


class Found:
    """What :func:`find_supervisor` found: the ``path`` and the tree ``node``, or an
    ``error`` line (not found, ambiguous)."""

    __slots__ = ("error", "node", "path")

    def __init__(
        self, path: str = "", node: Mapping[str, Any] | None = None, error: str = ""
    ) -> None:
        self.path = path
        self.node = node
        self.error = error


def find_supervisor(tree: Mapping[str, Any], text: str) -> Found:
    """The supervisor ``text`` names in ``tree``: ``kernel`` (or ``/``) for the root, a
    path of child labels from the root (``scheduler:jobs/singleton:jobs``), a label
    that names exactly one supervisor anywhere in the tree, or a supervisor's pid."""
    if text in ROOT_NAMES:
        return Found("", tree)
    sups = [(p, n) for p, n in walk(tree) if n.get("children") is not None or _is_sup(n)]
    wanted = text.strip("/")
    for path, node in sups:
        if path == wanted:
            return Found(path, node)
    by_label = [(p, n) for p, n in sups if p and p.rsplit("/", 1)[-1] == wanted]
    if len(by_label) == 1:
        return Found(*by_label[0])
    if len(by_label) > 1:
        paths = ", ".join(p for p, _ in by_label)
        return Found(error=f"{text!r} names several supervisors: {paths} (give the path)")
    for path, node in sups:
        if pid_text(node.get("pid")) == text or _os_pid_matches(node.get("pid"), text):
            return Found(path, node)
    if any(p == wanted or p.rsplit("/", 1)[-1] == wanted for p, _ in walk(tree) if p):
        return Found(error=f"{text!r} is a worker, not a supervisor")
    return Found(error=f"no supervisor {text!r} in the tree of {tree_node_name(tree)}")


def find_child(rows: Sequence[Mapping[str, Any]], text: str) -> Mapping[str, Any] | None:
    """The row of ``rows`` (``which_children`` rows with ``label`` and ``pid``) that
    ``text`` names: by label first, then by pid."""
    for row in rows:
        if row.get("label") == text:
            return row
    for row in rows:
        if pid_text(row.get("pid")) == text or _os_pid_matches(row.get("pid"), text):
            return row
    return None


def tree_node_name(tree: Mapping[str, Any]) -> str:
    pid = tree.get("pid")
    return pid.node if isinstance(pid, Pid) else "the node"


def _is_sup(node: Mapping[str, Any]) -> bool:
    return node.get("type") == "supervisor"


def _os_pid_matches(pid: Any, text: str) -> bool:
    try:
        node, number = parse_pid(text)
    except ValueError:
        return False
    return isinstance(pid, Pid) and pid.id == number and (node is None or node == pid.node)


def singleton_rows(notices: Mapping[str, Mapping[str, Any]], now: float) -> list[dict[str, Any]]:
    """The node's Singletons as its watchdogs posted them (``quorum.notices``, topics
    ``singleton/<name>``), sorted by name: ``{"name", "policy", "holder" (a node or
    None), "no_holder_for" (seconds, once the watchdog speaks; else None), "reason"}``.
    ``now``: the node's monotonic clock, which the notices' ``since`` is on."""
    rows = []
    for topic, notice in notices.items():
        if not topic.startswith("singleton/"):
            continue
        since = notice.get("since")
        rows.append(
            {
                "name": notice.get("name", topic.split("/", 1)[1]),
                "policy": notice.get("policy"),
                "holder": notice.get("holder"),
                "no_holder_for": None
                if not isinstance(since, int | float)
                else max(0.0, round(now - since, 1)),
                "reason": notice.get("reason"),
            }
        )
    return sorted(rows, key=lambda r: id_label(r["name"]))


def child_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``which_children_ext`` rows as the admin answers them: each id as its label."""
    return [
        {
            "id": id_label(r.get("id")),
            "pid": r.get("pid"),
            "type": str(r.get("type", "worker")),
            "restart": str(r.get("restart", "")),
            "restarts": int(r.get("restarts", 0)),
        }
        for r in rows
    ]


def fmt_time(value: Any, now: datetime | None = None) -> str:
    """A UTC time as ``2026-05-01 10:00:00Z``, with how far it is from ``now``."""
    if not isinstance(value, datetime):
        return "-"
    when = value.astimezone(UTC)
    text = when.strftime("%Y-%m-%d %H:%M:%S") + (
        f".{when.microsecond // 1000:03d}Z" if when.microsecond else "Z"
    )
    if now is None:
        return text
    delta = (when - now).total_seconds()
    span = _span(abs(delta))
    return f"{text} ({'in ' + span if delta >= 0 else span + ' ago'})"


def _span(seconds: float) -> str:
    s = math.floor(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {s}s"
    return f"{s}s"
