"""A dist node for the task pool tests, driven over stdin/stdout, and its tasks.

Usage: ``python -m tests.harness.pool_node_driver NAME PORT LOG_DIR COOKIE``. Prints
``{"ready": NAME, "pids": [...]}`` once started, then answers one JSON line
``{"ok": ...}`` (or ``{"error": ...}``) per command line (see ``OPS``).

On the wire of this driver a run's key is ``[job, at, node]`` with ``at`` in seconds
since the epoch (a float); the node turns it into an aware datetime. The fake holder
(:class:`Holder`) appends one JSON line per message it gets to its file, and acks each
``run_done`` to the pool's dist service on the pool's node. Tasks append one JSON line
``{"tag", "pid", "start", "end"}`` to the file given as ``path``; the pool's workers
import them as ``"tests.harness.pool_node_driver:<task>"``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

import otpkit
from otpkit import dist, registry
from otpkit.scheduler._pool import pool_child_spec, pool_name

# ---------------------------------------------------------------------- tasks


def append(path: str, record: dict[str, Any]) -> None:
    """Append one JSON line (one write: lines of concurrent writers never interleave)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def sleeper(path: str, tag: str, seconds: float = 0.0) -> None:
    """Record entry and exit around a sleep of ``seconds``."""
    start = time.time()
    time.sleep(seconds)
    append(path, {"tag": tag, "pid": os.getpid(), "start": start, "end": time.time()})


def boom(path: str, tag: str) -> None:
    append(path, {"tag": tag, "pid": os.getpid(), "start": time.time(), "end": None})
    raise ValueError(f"boom {tag}")


# ---------------------------------------------------------------------- the holder


def key_out(key: Any) -> list[Any]:
    job, at, node = key
    return [job, at.timestamp(), node]


def key_in(fields: list[Any]) -> tuple[str, datetime, str | None]:
    job, at, node = fields
    return (job, datetime.fromtimestamp(at, UTC), node)


class Holder(otpkit.Actor):
    """Stands in for the scheduler's holder: records what the pools report, acks it."""

    def init(self, scheduler: str, path: str, ack: bool = True) -> None:
        self.scheduler, self.path, self.ack = scheduler, path, ack

    def handle_info(self, msg: Any) -> None:
        kind = msg[0] if isinstance(msg, tuple) and msg else None
        if kind == "run_started" and len(msg) == 4:
            _, node, key, start = msg
            append(self.path, {"kind": kind, "node": node, "key": key_out(key), "start": start})
        elif kind == "run_done" and len(msg) == 7:
            _, node, key, outcome, start, end, error = msg
            append(
                self.path,
                {
                    "kind": kind,
                    "node": node,
                    "key": key_out(key),
                    "tuple": isinstance(key, tuple),
                    "outcome": outcome,
                    "start": start,
                    "end": end,
                    "error": error,
                },
            )
            if self.ack:
                otpkit.send((pool_name(self.scheduler), node), ("ack", [list(key)]))
        else:
            append(self.path, {"kind": "other", "msg": repr(msg)})


# ---------------------------------------------------------------------- driver ops


def make_run(spec: dict[str, Any]) -> dict[str, Any]:
    run = {
        "key": [spec["job"], datetime.fromtimestamp(spec["at"], UTC), spec.get("knode")],
        "task": spec["task"],
        "args": spec.get("args", []),
        "kwargs": spec.get("kwargs", {}),
        "timeout": spec.get("timeout"),
        "epoch": spec.get("epoch", 1),
    }
    return {**run, **spec.get("override", {})}


def _pool_start(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    s = cmd["scheduler"]
    spec = pool_child_spec(s, cmd.get("max_concurrency", 10), cmd.get("queue_limit", 10_000))
    pid = node.start_child(dataclasses.replace(spec, id=("pool", s)))
    return [pid.id, _pool_state(node, cmd)]


def _pool_stop(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    otpkit.terminate_child(node.kernel, ("pool", cmd["scheduler"]))
    otpkit.delete_child(node.kernel, ("pool", cmd["scheduler"]))
    return "ok"


def _pool_state(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    state = otpkit.call(pool_name(cmd["scheduler"]), ("state",))
    return {
        "running": [key_out(k) for k in state["running"]],
        "queued": [key_out(k) for k in state["queued"]],
        "outbox": [[key_out(e[0]), *e[1:]] for e in state["outbox"]],
        "incarnation": state["incarnation"],
        "workers": [p.id for p in state["workers"]],
        "pool": otpkit.whereis(pool_name(cmd["scheduler"])).id,
    }


def _dispatch(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    """Send each run to the pool of ``scheduler`` on node ``to`` (a dist service), or,
    with ``cast``, cast it to the local pool."""
    dest = pool_name(cmd["scheduler"])
    for spec in cmd["runs"]:
        msg = ("run", make_run(spec))
        if cmd.get("cast"):
            otpkit.cast(dest, msg)
        else:
            otpkit.send((dest, cmd["to"]), msg)
    return "ok"


def _raw(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    """Send malformed messages to the local pool (as info and as cast)."""
    dest = pool_name(cmd["scheduler"])
    for msg in (
        "garbage",
        ("run",),
        ("run", "not a dict"),
        ("run", {"key": ["j", "not a datetime", None], "task": "x:y"}),
        ("run", {"key": ["j", datetime.now(UTC).replace(tzinfo=None), None]}),
        ("ack", "not a list"),
        ("ack", [["j", 1.5, None]]),
        ("done", 1, 2),
        ("started", "x", "y", "z"),
        ("started", [1], "y", "z"),
        ("done", [1], 2, 3, 4, 5, 6),
        ("$timeout", [1], 2),
        ([1], 2),
        ("$resend", "x"),
        ("run", {"key": [["j"], datetime.now(UTC), None]}),
        ("run", {"key": ["j", datetime.now(UTC), [None]]}),
        ("ack", [["j", datetime.now(UTC), None], "junk"]),
    ):
        otpkit.send(dest, msg)
        otpkit.cast(dest, msg)
    return "ok"


def _holder_start(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    pid = node.spawn(Holder, cmd["scheduler"], cmd["path"], cmd.get("ack", True))
    assert registry.register_name(cmd["scheduler"], pid)
    return pid.id


def _connect(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    dist.connect_node(cmd["name"], cmd["host"], cmd["port"])
    return "ok"


def _nodes(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    return dist.nodes()


def _whereis(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    pid = registry.whereis_name(cmd["name"])
    return None if pid is None else pid.id


def _pids(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    return node.os_pids()


def _gsync(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    return registry.sync(cmd.get("t", 30))


OPS = {
    "connect": _connect,
    "dispatch": _dispatch,
    "gsync": _gsync,
    "holder_start": _holder_start,
    "nodes": _nodes,
    "pids": _pids,
    "pool_start": _pool_start,
    "pool_state": _pool_state,
    "pool_stop": _pool_stop,
    "raw": _raw,
    "whereis": _whereis,
}


def out(obj: Any) -> None:
    print(json.dumps(obj, default=repr), flush=True)


def main() -> None:
    name, port, log_dir, cookie = sys.argv[1:5]
    node = otpkit.Node(name, cookie=cookie, dist_port=int(port), log_dir=log_dir).start()
    out({"ready": name, "pids": node.os_pids()})
    try:
        for raw in sys.stdin:
            line = raw.strip()
            if not line:
                continue
            cmd = json.loads(line)
            try:
                out({"ok": OPS[cmd["op"]](node, cmd)})
            except Exception as exc:  # report, keep serving
                out({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        node.stop()


if __name__ == "__main__":
    main()
