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

The driver runs on this code and on the previous release's (a node started with that
release first on its ``PYTHONPATH``): it uses nothing of otpkit the previous release
lacks but in the ops that say so.
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
from tests.harness import processes

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


def deep(path: str, tag: str, depth: int = 100) -> None:
    """Raise ``ValueError`` ``depth`` calls deep, through two functions in turn (Python
    folds a run of the same frame into one line): a traceback of some 10 KB."""
    if depth > 0:
        _deeper(path, tag, depth - 1)
        return
    append(path, {"tag": tag, "pid": os.getpid(), "start": time.time(), "end": None})
    raise ValueError(f"deep {tag}")


def _deeper(path: str, tag: str, depth: int) -> None:
    deep(path, tag, depth)


def hang(path: str, tag: str, seconds: float = 30.0, own_group: bool = False) -> None:
    """Record entry (the worker's pid), then sleep ``seconds``. With ``own_group`` the
    worker first leaves the node's process group: otpkit then never SIGKILLs it (a pid
    outside the group may be another program's), its kill is only a message that a busy
    worker does not read, and the worker lives on after it."""
    if own_group:
        os.setpgid(0, 0)
    append(path, {"tag": tag, "pid": os.getpid(), "start": time.time(), "end": None})
    time.sleep(seconds)


# ---------------------------------------------------------------------- the holder


def key_out(key: Any) -> list[Any]:
    job, at, node = key
    return [job, at.timestamp(), node]


def key_in(fields: list[Any]) -> tuple[str, datetime, str | None]:
    job, at, node = fields
    return (job, datetime.fromtimestamp(at, UTC), node)


def _holder_infos() -> Any:
    """The real holder's protocol of plain messages, as this node's otpkit has it (the
    previous release's: ``_scheduler.INFOS``), or None where it is elsewhere."""
    try:
        from otpkit.scheduler._scheduler import INFOS  # noqa: PLC0415 - as the release has it
    except ImportError:
        return None
    return INFOS


def _pids_in(path: str | None) -> list[int]:
    """The pids the tasks recorded in ``path``."""
    if path is None:
        return []
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line)["pid"] for line in f if line.strip()]
    except FileNotFoundError:
        return []


class Holder(otpkit.Actor):
    """Stands in for the scheduler's holder: records what the pools report, acks it.

    Each record has the message's ``size`` (7 for the previous release's ``run_done``,
    8 with ``info``; 4 and 5 for ``run_started``), its ``info`` (or None), ``problem``
    (why the real holder of this node's otpkit would drop it, None if it takes it,
    ``"n/a"`` if that protocol is not found), ``received`` (wall time) and, for a
    ``run_done``, ``alive``: the pids recorded in the ``watch`` file that were running
    when it came. ``ack`` is ``"key"`` (``[job, at, node]``, every attempt),
    ``"attempt"`` (``[job, at, node, attempt]``, the attempt the info names) or None (no
    ack)."""

    def init(self, scheduler: str, path: str, ack: str | None, watch: str | None) -> None:
        self.scheduler, self.path, self.ack, self.watch = scheduler, path, ack, watch
        self.infos = _holder_infos()

    def _common(self, msg: tuple[Any, ...], info: Any) -> dict[str, Any]:
        return {
            "kind": msg[0],
            "node": msg[1],
            "key": key_out(msg[2]),
            "tuple": isinstance(msg[2], tuple),
            "size": len(msg),
            "info": info,
            "problem": "n/a" if self.infos is None else self.infos.problem(msg),
            "received": time.time(),
        }

    def handle_info(self, msg: Any) -> None:
        kind = msg[0] if isinstance(msg, tuple) and msg else None
        if kind == "run_started" and len(msg) in (4, 5):
            record = self._common(msg, msg[4] if len(msg) == 5 else None)
            append(self.path, {**record, "start": msg[3]})
        elif kind == "run_done" and len(msg) in (7, 8):
            _, node, key, outcome, start, end, error = msg[:7]
            info = msg[7] if len(msg) == 8 else None
            record = self._common(msg, info)
            alive = [pid for pid in _pids_in(self.watch) if processes.alive(pid)]
            append(
                self.path,
                {
                    **record,
                    "outcome": outcome,
                    "start": start,
                    "end": end,
                    "error": error,
                    "alive": alive,
                },
            )
            if self.ack == "key":
                otpkit.send((pool_name(self.scheduler), node), ("ack", [list(key)]))
            elif self.ack == "attempt" and isinstance(info, dict):
                item = [*key, info["attempt"]]
                otpkit.send((pool_name(self.scheduler), node), ("ack", [item]))
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
    if "attempt" in spec:  # none: as the previous release's holder sends it
        run["attempt"] = spec["attempt"]
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
        "attempts": [[*key_out(a[:3]), a[3]] for a in state.get("attempts", ())],
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
        ("ack", [["j", datetime.now(UTC), None, 0]]),
        ("ack", [["j", datetime.now(UTC), None, True]]),
        ("ack", [["j", datetime.now(UTC), None, 1, 2]]),
        ("run", {"key": ["j", datetime.now(UTC), None], "task": "x:y", "attempt": 0}),
        ("run", {"key": ["j", datetime.now(UTC), None], "task": "x:y", "attempt": "2"}),
        ("$timeout", [1], ["j", datetime.now(UTC), None]),
        ("done", [1], ["j", datetime.now(UTC), None], "failed", None, 1.0, "e", "yes", None),
    ):
        otpkit.send(dest, msg)
        otpkit.cast(dest, msg)
    return "ok"


def _ack(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    """Send ``("ack", items)`` to the pool of ``scheduler`` on node ``to``; each item is
    a driver key ``[job, at, node]``, with an attempt after it or not."""
    items = [[*key_in(item[:3]), *item[3:]] for item in cmd["items"]]
    otpkit.send((pool_name(cmd["scheduler"]), cmd["to"]), ("ack", items))
    return "ok"


def _holder_start(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    ack, watch = cmd.get("ack", "key"), cmd.get("watch")
    pid = node.spawn(Holder, cmd["scheduler"], cmd["path"], ack, watch)
    assert registry.register_name(cmd["scheduler"], pid)
    return pid.id


def _versions(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    """The dist protocol of each connected node (this code only: the previous release
    has no ``dist.versions``)."""
    return dist.versions()


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
    "ack": _ack,
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
    "versions": _versions,
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
