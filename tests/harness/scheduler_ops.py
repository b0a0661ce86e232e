"""Driver ops for the scheduler tests (imported by node_driver), and the Scheduler
child spec ``node_driver --scheduler CONFIG`` boots with."""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import otpkit
from otpkit import registry, scheduler
from otpkit.scheduler import Job, JobEvent

NAME = scheduler.DEFAULT_NAME


def scheduler_spec(config_path: str) -> Any:
    """The Scheduler child spec a JSON file describes: ``{"policy", "store", "jobs":
    [job spec], "max_concurrency", "name", "lead"}``."""
    with open(config_path, encoding="utf-8") as f:
        cfg = json.load(f)
    return scheduler.Scheduler(
        [Job.from_spec(spec) for spec in cfg.get("jobs", [])],
        name=cfg.get("name", NAME),
        policy=cfg.get("policy", "majority"),
        store=cfg.get("store"),
        max_concurrency=cfg.get("max_concurrency", 4),
        settle_timeout=cfg.get("settle_timeout", 5.0),
        lead=cfg.get("lead", 0.05),
    )


class EventLog(otpkit.Actor):
    """Appends every scheduler event it gets to a file, one JSON object per line."""

    def init(self, path: str, name: str) -> None:
        self.path = path
        scheduler.subscribe(name)

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, JobEvent):
            append_row(self.path, {k: plain(v) for k, v in msg.to_wire().items()})


def append_row(path: str, row: dict[str, Any]) -> None:
    """Append ``row`` (and the node that saw it) to ``path`` as one JSON line, in one
    write (the nodes of a cluster append to files the tests read)."""
    row["seen_by"] = otpkit.self().node
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(row) + "\n").encode())
    finally:
        os.close(fd)


def plain(value: Any) -> Any:
    """``value`` as JSON can hold it: datetimes as ISO text, keys as text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _name(cmd: dict[str, Any]) -> str:
    return str(cmd.get("scheduler", NAME))


def _t(cmd: dict[str, Any]) -> float:
    return float(cmd.get("t", 30.0))


def _err(fn: Any) -> Any:
    def run(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
        try:
            return fn(node, cmd)
        except (otpkit.OtpkitError, ValueError, TypeError, KeyError) as exc:
            return ["error", type(exc).__name__, str(exc)]

    return run


OPS = {
    "sched_add": _err(lambda n, c: scheduler.add_job(Job.from_spec(c["job"]), _name(c), _t(c))),
    "sched_delete": _err(lambda n, c: scheduler.delete_job(c["name"], _name(c), _t(c))),
    "sched_delete_all": _err(lambda n, c: scheduler.delete_all_jobs(_name(c), _t(c))),
    "sched_activate": _err(lambda n, c: scheduler.activate_job(c["name"], _name(c), _t(c))),
    "sched_deactivate": _err(lambda n, c: scheduler.deactivate_job(c["name"], _name(c), _t(c))),
    "sched_find": _err(
        lambda n, c: (
            None if (j := scheduler.find_job(c["name"], _name(c), _t(c))) is None else j.to_spec()
        )
    ),
    "sched_jobs": _err(lambda n, c: plain(scheduler.jobs(_name(c), _t(c)))),
    "sched_history": _err(lambda n, c: plain(scheduler.history(c["name"], _name(c), _t(c)))),
    "sched_run": _err(lambda n, c: plain(scheduler.run_job(c["name"], _name(c), _t(c)))),
    "sched_holder": lambda n, c: None if (p := registry.whereis_name(_name(c))) is None else p.node,
    "sched_events": lambda n, c: repr(n.spawn(EventLog, c["path"], _name(c))),
}
