"""Extra node_driver ops for the registry tests (``OPS[name] = fn(node, cmd)``).

Pids travel as ``[node, creation, id, serial]``. A :class:`Holder` is a process that
holds a name: it answers ``"ping"``, keeps every message it is sent (``"seen"``, pids as
field lists, tuples as lists) and can take a cluster lock for itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import otpkit
from otpkit import Actor, registry
from otpkit.actors._pid import Pid


def pid_of(fields: list[Any]) -> Pid:
    return Pid(*fields)


def fields(pid: Pid | None) -> list[Any] | None:
    return None if pid is None else [pid.node, pid.creation, pid.id, pid.serial]


def plain(value: Any) -> Any:
    """``value`` as JSON can carry it: pids as field lists, tuples as lists."""
    if isinstance(value, Pid):
        return fields(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


class Holder(Actor):
    def init(self) -> None:
        self.seen: list[Any] = []

    def handle_call(self, request: Any, from_: Any) -> Any:
        if request == "ping":
            return "pong"
        if request == "seen":
            return self.seen
        if isinstance(request, tuple) and request[0] == "set_lock":
            _, resource, retries = request
            return registry.set_lock(resource, retries=retries)
        return super().handle_call(request, from_)

    def handle_info(self, msg: Any) -> None:
        self.seen.append(plain(msg))


def _hold(node: otpkit.Node, cmd: dict[str, Any]) -> list[Any]:
    """Spawn ``n`` Holders; their pids."""
    return [fields(node.spawn(Holder)) for _ in range(int(cmd.get("n", 1)))]


def _hold_register(node: otpkit.Node, cmd: dict[str, Any]) -> list[Any]:
    """For each of ``names``: spawn a Holder and register it under the name (with
    ``resolve``); ``[[name, pid, registered?], ...]``."""
    result = []
    for name in cmd["names"]:
        pid = node.spawn(Holder)
        ok = registry.register_name(name, pid, cmd.get("resolve"))
        result.append([name, fields(pid), ok])
    return result


def _kill_many(node: otpkit.Node, cmd: dict[str, Any]) -> str:
    reason = cmd.get("reason", "kill")
    for p in cmd["pids"]:
        otpkit.exit(pid_of(p), reason)
    return "ok"


def _alive_many(node: otpkit.Node, cmd: dict[str, Any]) -> list[bool]:
    """Which of ``pids`` answer a call (any answer: alive; an exit: dead)."""
    pids = [pid_of(p) for p in cmd["pids"]]
    results = otpkit.multi_call(pids, "ping", timeout=float(cmd.get("t", 5)))
    return [status == "ok" for status, _ in results]


def _whereis_many(node: otpkit.Node, cmd: dict[str, Any]) -> list[Any]:
    return [fields(registry.whereis_name(n)) for n in cmd["names"]]


def _table(node: otpkit.Node, cmd: dict[str, Any]) -> dict[str, Any]:
    """This node's view: ``{name: pid}`` for every registered (string) name."""
    return {str(n): fields(registry.whereis_name(n)) for n in registry.registered_names()}


def _seen(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    return otpkit.call(pid_of(cmd["pid"]), "seen", timeout=float(cmd.get("t", 5)))


def _read_lines(node: otpkit.Node, cmd: dict[str, Any]) -> list[str]:
    try:
        with open(cmd["path"], encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    except FileNotFoundError:
        return []


def _set_lock(node: otpkit.Node, cmd: dict[str, Any]) -> bool:
    """The node program takes ``resource`` for itself."""
    return registry.set_lock(
        cmd["resource"], cmd.get("requester"), nodes=cmd.get("nodes"), retries=cmd.get("retries")
    )


def _del_lock(node: otpkit.Node, cmd: dict[str, Any]) -> str:
    registry.del_lock(cmd["resource"], cmd.get("requester"), nodes=cmd.get("nodes"))
    return "ok"


def _holder_lock(node: otpkit.Node, cmd: dict[str, Any]) -> bool:
    """Holder ``pid`` takes ``resource`` for itself."""
    request = ("set_lock", cmd["resource"], cmd.get("retries"))
    return bool(otpkit.call(pid_of(cmd["pid"]), request, timeout=float(cmd.get("t", 30))))


def _trans(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    """``trans(resource, fn)``: fn appends ``enter <node>`` to ``path``, works for
    ``hold`` seconds, appends ``leave <node>``; its result is ``"done"``."""
    me = node.name

    def note(what: str) -> None:
        fd = os.open(cmd["path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{what} {me} {time.time():.6f}\n".encode())
        finally:
            os.close(fd)

    def work() -> str:
        note("enter")
        time.sleep(float(cmd.get("hold", 0.2)))  # the work done under the lock
        note("leave")
        return "done"

    return registry.trans(cmd["resource"], work, retries=cmd.get("retries"))


def _locks(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    """This node's lock table: ``{resource: [requester, [holders]]}``."""
    info = otpkit.call(registry.GLOBAL_NAME, ("info",))
    return plain(info["locks"])


def _gdisconnect(node: otpkit.Node, cmd: dict[str, Any]) -> list[str]:
    return registry.disconnect()


OPS: dict[str, Callable[[otpkit.Node, dict[str, Any]], Any]] = {
    "hold": _hold,
    "hold_register": _hold_register,
    "kill_many": _kill_many,
    "alive_many": _alive_many,
    "whereis_many": _whereis_many,
    "table": _table,
    "seen": _seen,
    "read_lines": _read_lines,
    "set_lock": _set_lock,
    "del_lock": _del_lock,
    "holder_lock": _holder_lock,
    "trans": _trans,
    "locks": _locks,
    "gdisconnect": _gdisconnect,
}
