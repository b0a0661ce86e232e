"""Driver ops and the test child for Singleton tests (imported by node_driver)."""

from __future__ import annotations

import os
import time
from typing import Any

import otpkit
from otpkit import registry
from otpkit.registry import SingletonWorker


def stamp(path: str, *fields: Any) -> None:
    """Append one line (one write: lines of concurrent writers never interleave)."""
    line = " ".join(str(f) for f in fields) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Marker(SingletonWorker):
    """Appends ``activate``/``deactivate`` lines to ``path``; while active, a ``tick``
    line every ``every`` seconds (time.time(), node, os pid, epoch)."""

    def init(self, path: str, every: float = 0.1) -> None:
        self.path, self.every = path, every
        self.me = otpkit.self()
        otpkit.trap_exit(True)  # so terminate runs (and logs) when it is shut down
        stamp(path, "standby", time.time(), self.me.node, os.getpid())

    def activate(self, epoch: int) -> None:
        stamp(self.path, "activate", time.time(), self.me.node, os.getpid(), epoch)
        otpkit.send_after(self.every, "tick")

    def deactivate(self, reason: str) -> None:
        stamp(self.path, "deactivate", time.time(), self.me.node, os.getpid(), reason)

    def handle_info(self, msg: Any) -> None:
        if msg == "tick" and self.active:
            # an effect that must happen once: under majority, fenced by the epoch
            t = time.time()
            accepted = self.fence(["tick", t])
            stamp(
                self.path,
                "tick" if accepted else "refused",
                t,
                self.me.node,
                os.getpid(),
                self.epoch,
            )
            otpkit.send_after(self.every, "tick")

    def terminate(self, reason: Any) -> None:
        stamp(self.path, "exit", time.time(), self.me.node, os.getpid(), reason)


def singleton_spec(path: str, name: str = "single", policy: str = "availability", **kw: Any) -> Any:
    return registry.Singleton(
        otpkit.ChildSpec("marker", Marker, (path,)), name, policy=policy, **kw
    )


def _start(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    spec = singleton_spec(cmd["path"], cmd.get("name", "single"), cmd.get("policy", "availability"))
    node.start_child(spec)
    return "ok"


def _state(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    sup = [
        c
        for c in otpkit.which_children(node.kernel)
        if c.id == ("singleton", cmd.get("name", "single"))
    ]
    if not sup:
        return None
    state = otpkit.call(sup[0].pid, ("$singleton", "state"))
    return {k: (repr(v) if isinstance(v, otpkit.Pid) else v) for k, v in state.items()}


def _child(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    """This node's Singleton child, as the child itself tells it: ``{"pid": [node,
    creation, id, serial], "active": bool}`` (``registry.IS_ACTIVE``), or None if the
    node runs no manager (or it has no child)."""
    name = cmd.get("name", "single")
    managers = [c.pid for c in otpkit.which_children(node.kernel) if c.id == ("singleton", name)]
    if not managers or not isinstance(managers[0], otpkit.Pid):
        return None
    kids = [c.pid for c in otpkit.which_children(managers[0]) if isinstance(c.pid, otpkit.Pid)]
    if not kids:
        return None
    pid = kids[0]
    try:
        active = otpkit.call(pid, registry.IS_ACTIVE, timeout=float(cmd.get("t", 5)))
    except otpkit.Exit:
        return None  # a child that just died, not yet seen by its supervisor: none now
    return {"pid": [pid.node, pid.creation, pid.id, pid.serial], "active": active}


def _restarts(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    """Restart counts of the kernel's children and of the singleton manager's child."""
    rows = otpkit.call(node.kernel, ("which_children_ext",))
    counts = {repr(r["id"]): r["restarts"] for r in rows}
    for r in rows:
        if r["id"] == ("singleton", cmd.get("name", "single")) and isinstance(r["pid"], otpkit.Pid):
            for c in otpkit.call(r["pid"], ("which_children_ext",)):
                counts["singleton child"] = c["restarts"]
    return counts


def _members(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    from otpkit.quorum import _actor as _quorum_actor  # noqa: PLC0415

    return _quorum_actor.members()


def _quorum_status(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    from otpkit import quorum  # noqa: PLC0415

    return quorum.status()


OPS = {
    "quorum_members": _members,
    "quorum_status": _quorum_status,
    "singleton_start": _start,
    "singleton_state": _state,
    "singleton_child": _child,
    "kernel_children": _restarts,
}
