"""Drawing the admin service's answers: as text for a person, as JSON-able values for
scripts (``--json``). Pure functions of plain values; the unit tests call them directly.
The tree helpers they build on (:func:`otpkit.admin.id_label`, ``walk``, ...) belong to
the admin service, which answers with those shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from otpkit.actors import Pid, Ref
from otpkit.admin import (
    fmt_time,
    id_label,
    pid_text,
)

__all__ = [
    "plain",
    "render_children",
    "render_counts",
    "render_event",
    "render_job",
    "render_jobs",
    "render_names",
    "render_nodes",
    "render_table",
    "render_tree",
]


def render_tree(tree: Mapping[str, Any]) -> str:
    """The tree drawn with ``├─`` / ``└─``: one line per process with its child id,
    pid, type, restart type and restart count."""
    lines = [_tree_line(tree, root=True)]
    _draw(tree, "", lines)
    return "\n".join(lines)


def _tree_line(node: Mapping[str, Any], root: bool = False) -> str:
    parts = [str(node.get("id")), pid_text(node.get("pid"))]
    if root:
        parts.append(str(node.get("type", "supervisor")))
    else:
        parts.append(f"{node.get('type', 'worker')} {node.get('restart', '')}".rstrip())
        parts.append(f"restarts={node.get('restarts', 0)}")
    if node.get("error"):
        parts.append(f"({node['error']})")
    return "  ".join(parts)


def _draw(node: Mapping[str, Any], prefix: str, lines: list[str]) -> None:
    children = list(node.get("children") or ())
    for i, child in enumerate(children):
        last = i == len(children) - 1
        lines.append(f"{prefix}{'└─ ' if last else '├─ '}{_tree_line(child)}")
        _draw(child, prefix + ("   " if last else "│  "), lines)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)]
        out.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(out)


def render_nodes(data: Mapping[str, Any]) -> str:
    """The node table; then, if the node runs Singletons, one line each: its holder's
    node as the node's watchdog sees it, or ``no holder for N s: <reason>``."""
    me = str(data.get("node"))
    members = data.get("members")
    rows: list[list[str]] = []
    for name in sorted({me, *data.get("nodes", ())}):
        role = "this node" if name == me else "connected"
        member = "-" if members is None else ("yes" if name in members else "no")
        rows.append([name, role, member])
    for name in data.get("hidden", ()):
        rows.append([name, "hidden", "no"])
    text = render_table(["NODE", "SEEN AS", "MEMBER"], rows)
    singletons = data.get("singletons") or ()
    if not singletons:
        return text
    lines = [[id_label(s.get("name")), str(s.get("policy") or "-"), _holder(s)] for s in singletons]
    return f"{text}\n\n{render_table(['SINGLETON', 'POLICY', 'HOLDER'], lines)}"


def _holder(row: Mapping[str, Any]) -> str:
    since = row.get("no_holder_for")
    if isinstance(since, int | float):
        return f"no holder for {since:.0f} s: {row.get('reason') or '?'}"
    return str(row.get("holder") or "none (electing)")


def render_quorum(data: Mapping[str, Any]) -> str:
    """A node's quorum status (``otpkit.quorum.status``), a line per field."""
    expected = f"{data.get('expected')} (this node's setting: {data.get('setting')})"
    store = data.get("store") or "none (a restart is a new member)"
    if data.get("restored"):
        store += " (restored)"
    lines = [
        f"node         {data.get('node')}",
        f"config       v{data.get('version')}: {', '.join(data.get('members') or []) or '-'}",
        f"member       {'yes' if data.get('member') else 'no'}",
        f"expected     {expected}",
        f"store        {store}",
        f"holds        {', '.join(data.get('held') or []) or '-'}",
        f"grants       {_grants_text(data.get('grants') or {})}",
        f"problem      {data.get('problem') or '-'}",
        f"rejoin       {data.get('rejoin') or '-'}",
    ]
    return "\n".join(lines)


def _grants_text(grants: Mapping[str, Any]) -> str:
    """This member's grant per key: ``key -> holder @epoch (N s left | ran out | void)``."""
    parts = []
    for key, g in sorted(grants.items()):
        if not isinstance(g, Mapping):
            continue
        left = g.get("left")
        state = (
            "void"
            if g.get("void")
            else (f"{left:.1f} s left" if isinstance(left, int | float) and left > 0 else "ran out")
        )
        parts.append(f"{key} -> {g.get('holder')} @{g.get('epoch')} ({state})")
    return "; ".join(parts) or "-"


def render_names(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "(no global names)"
    return render_table(
        ["NAME", "PID", "NODE"],
        [
            [id_label(r.get("name")), pid_text(r.get("pid")), getattr(r.get("pid"), "node", "-")]
            for r in rows
        ],
    )


def render_children(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "(no children)"
    return render_table(
        ["ID", "PID", "TYPE", "RESTART", "RESTARTS"],
        [
            [r.get("id"), pid_text(r.get("pid")), r.get("type"), r.get("restart"), r["restarts"]]
            for r in rows
        ],
    )


def render_counts(counts: Mapping[str, int]) -> str:
    keys = ("specs", "active", "supervisors", "workers")
    return "  ".join(f"{k}={counts.get(k, 0)}" for k in keys)


def _job_state(job: Mapping[str, Any]) -> str:
    state = str(job.get("state", "?"))
    return f"{state}, running" if job.get("running") else state


def _last_run(job: Mapping[str, Any], now: datetime | None) -> str:
    last = job.get("last_run")
    if not isinstance(last, Mapping):
        return "-"
    return f"{fmt_time(last.get('tick'), now)} {last.get('outcome', '?')} on {last.get('node')}"


def render_jobs(jobs: Sequence[Mapping[str, Any]], now: datetime | None = None) -> str:
    if not jobs:
        return "(no jobs)"
    return render_table(
        ["JOB", "SCHEDULE", "STATE", "NEXT FIRE", "LAST RUN", "HOLDER"],
        [
            [
                j.get("name"),
                j.get("schedule"),
                _job_state(j),
                fmt_time(j.get("next_at"), now),
                _last_run(j, now),
                j.get("holder", "-"),
            ]
            for j in jobs
        ],
    )


def render_job(job: Mapping[str, Any], now: datetime | None = None) -> str:
    fields = [
        ("name", job.get("name")),
        ("schedule", f"{job.get('schedule')} ({job.get('timezone', 'UTC')})"),
        ("task", job.get("task")),
        ("state", _job_state(job)),
        ("next fire", fmt_time(job.get("next_at"), now)),
        ("last run", _last_run(job, now)),
        ("run strategy", job.get("run_strategy")),
        ("overlap", job.get("overlap")),
        ("misfire", job.get("misfire")),
        ("timeout", job.get("timeout")),
        ("origin", job.get("origin")),
        ("holder", job.get("holder")),
    ]
    return "\n".join(f"{k + ':':14}{v}" for k, v in fields)


def render_event(event: Mapping[str, Any]) -> str:
    at = event.get("at")
    stamp = (
        datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S.%f")[:-3]
        if isinstance(at, int | float)
        else "--:--:--"
    )
    return (
        f"{stamp}  {event.get('node', '?')}  {event.get('kind', '?'):10}  {event.get('text', '')}"
    )


def plain(value: Any) -> Any:
    """``value`` as JSON can carry it: pids and refs as their text, times in ISO
    format, tuples as lists, mapping keys as text."""
    if isinstance(value, Pid | Ref):
        return repr(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else id_label(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)
