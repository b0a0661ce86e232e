"""Measurement ops run inside a node by tests/cluster/dist_node.py (bench/ is put on the
node's PYTHONPATH by the registry benchmarks): the timing loops run in the node, so the
figures hold no driver round trip."""

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


def _phases(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    from otpkit.registry._global import GLOBAL_NAME  # noqa: PLC0415

    servers = otpkit.call(GLOBAL_NAME, ("targets",))
    pids = list(servers.values())
    out: dict[str, list[float]] = {"local_call": [], "multi_call": [], "remote_call": []}
    remote = next(p for p in pids if p.node != otpkit.self().node)
    for _ in range(cmd["n"]):
        t0 = time.perf_counter()
        otpkit.call(GLOBAL_NAME, ("targets",))
        t1 = time.perf_counter()
        otpkit.multi_call(pids, ("targets",))
        t2 = time.perf_counter()
        otpkit.call(remote, ("targets",))
        t3 = time.perf_counter()
        out["local_call"].append((t1 - t0) * 1000)
        out["multi_call"].append((t2 - t1) * 1000)
        out["remote_call"].append((t3 - t2) * 1000)
    return {k: sorted(v)[len(v) // 2] for k, v in out.items()}


OPS["bench_phases"] = _phases


class PhaseLoop(Actor):
    def handle_call(self, request: Any, from_: Any) -> Any:
        return _phases(None, {"n": request})  # type: ignore[arg-type]


def _phases_actor(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    actor = node.spawn(PhaseLoop)
    try:
        return otpkit.call(actor, cmd["n"], timeout=120)
    finally:
        otpkit.exit(actor, "kill")


OPS["bench_phases_actor"] = _phases_actor


class EchoBack(Actor):
    def handle_call(self, request: Any, from_: Any) -> Any:
        return request


class CallLoop(Actor):
    def handle_call(self, request: Any, from_: Any) -> Any:
        target, n = request
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            otpkit.call(target, ("targets",))
            out.append((time.perf_counter() - t0) * 1000)
        return sorted(out)[n // 2]


def _calls(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    from otpkit.registry._global import GLOBAL_NAME  # noqa: PLC0415

    echo = node.spawn(EchoBack)
    loop = node.spawn(CallLoop)
    res = {
        "actor->echo": otpkit.call(loop, (echo, cmd["n"]), 60),
        "actor->global": otpkit.call(loop, (otpkit.whereis(GLOBAL_NAME), cmd["n"]), 60),
    }
    t = []
    for _ in range(cmd["n"]):
        t0 = time.perf_counter()
        otpkit.call(echo, ("targets",))
        t.append((time.perf_counter() - t0) * 1000)
    res["client->echo"] = sorted(t)[len(t) // 2]
    return res


OPS["bench_calls"] = _calls
