"""Measurement ops of the benchmarks, run inside a node by ``tests.harness.node_driver``:
the timing loops run in the node, so the figures hold no driver round trip."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import otpkit
from otpkit import Actor, registry


def pid_of(fields: list[Any]) -> otpkit.Pid:
    return otpkit.Pid(*fields)


def _register(node: otpkit.Node, cmd: dict[str, Any]) -> list[float]:
    """register_name of a pid on another node, from this node's program: ms per call."""
    pid = pid_of(cmd["pid"])
    out = []
    for i in range(cmd["n"]):
        name = f"bench-{i}"
        t0 = time.perf_counter()
        assert registry.register_name(name, pid)
        out.append((time.perf_counter() - t0) * 1000)
        registry.unregister_name(name)
    return out


class WhereisLoop(Actor):
    def handle_call(self, request: Any, from_: Any) -> Any:
        _, name, samples, per = request
        out = []
        for _ in range(samples):
            t0 = time.perf_counter()
            for _ in range(per):
                registry.whereis_name(name)
            out.append((time.perf_counter() - t0) / per * 1e6)
        return out


def _whereis(node: otpkit.Node, cmd: dict[str, Any]) -> list[float]:
    """whereis_name from an application actor (not the registry's process): µs per call."""
    actor = node.spawn(WhereisLoop)
    try:
        return otpkit.call(actor, ("run", cmd["name"], cmd["samples"], cmd["per"]), timeout=120)
    finally:
        otpkit.exit(actor, "kill")


class ManyLoop(Actor):
    def handle_call(self, request: Any, from_: Any) -> Any:
        prefix, count, pid = request
        for i in range(count):
            registry.re_register_name(f"{prefix}-{i}", pid)
        return "ok"


def _many(node: otpkit.Node, cmd: dict[str, Any]) -> str:
    """Bind names prefix-0..count-1 to one pid (re_register_name allows many per pid)."""
    actor = node.spawn(ManyLoop)
    try:
        return otpkit.call(actor, (cmd["prefix"], cmd["count"], pid_of(cmd["pid"])), 600)
    finally:
        otpkit.exit(actor, "kill")


def _agree(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    """(number of names, a digest of the table) in this node's replica."""
    table = {n: registry.whereis_name(n) for n in registry.registered_names()}
    text = repr(sorted((str(k), repr(v)) for k, v in table.items()))
    return [len(table), hashlib.sha256(text.encode()).hexdigest()[:16]]


OPS = {
    "bench_register": _register,
    "bench_whereis": _whereis,
    "bench_many": _many,
    "bench_agree": _agree,
}


# ---------------------------------------------------------------------- scheduler benches


def _sched_holder_pid(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    """[node, OS pid] of the scheduler's holder (its SchedulerWorker), or None."""
    pid = registry.whereis_name(cmd.get("scheduler", "otpkit_scheduler"))
    return None if pid is None else [pid.node, pid.id]


def _sched_pool_state(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    """This node's task pool: how many runs are running, queued, unacknowledged."""
    from otpkit.scheduler._pool import pool_name  # noqa: PLC0415 - scheduler benches only

    state = otpkit.call(pool_name(cmd.get("scheduler", "otpkit_scheduler")), ("state",), 10)
    return {k: len(state[k]) for k in ("running", "queued", "outbox", "workers")}


OPS["bench_sched_holder_pid"] = _sched_holder_pid
OPS["bench_sched_pool_state"] = _sched_pool_state
