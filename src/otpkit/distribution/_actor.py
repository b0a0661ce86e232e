"""The dist process: a system actor under the kernel that runs the dist thread."""

from __future__ import annotations

import logging
import os
from typing import Any

from otpkit import actors
from otpkit.actors import Actor, From, Pid, shapes
from otpkit.distribution._core import DistConfig, DistCore

log = logging.getLogger("otpkit.dist")

#: The local name of the dist process (its control API; the thread has its own name).
NET_NAME = "otpkit_net"

_NODE = shapes.Str(255, 1)
_HOST = shapes.Str(253, 1)
_PORT = shapes.Int(0, 65535)

#: The calls the dist process answers, from processes of this node only (its answers
#: hold the cookie; its commands dial, drop links, expose services).
CALLS = shapes.Protocol(
    "dist call",
    shapes.Shape("nodes"),
    shapes.Shape("hidden_nodes"),
    shapes.Shape("versions"),
    shapes.Shape("port"),
    shapes.Shape("connect", (_NODE, _HOST, _PORT)),
    shapes.Shape("set_known", (shapes.Map(shapes.ANY, shapes.ANY, 100_000),)),
    shapes.Shape("disconnect", (_NODE,)),
    shapes.Shape("drop_link", (_NODE, shapes.Str(4096))),
    shapes.Shape("service", (shapes.Str(4096, 1), shapes.Opt(Pid))),
    shapes.Shape("monitor_nodes", (Pid, bool)),
    shapes.Shape("monitor_witnesses", (Pid, bool)),
    shapes.Shape("witness_info"),
)


# one peer of set_known: name, (host, port)
_PEER = shapes.Tup((_NODE, shapes.Tup((_HOST, _PORT))))


def peer_problem(name: Any, addr: Any) -> str | None:
    """Why ``name`` at ``addr`` (``(host, port)``) cannot be dialled, or None."""
    why = shapes.problem((name, addr), _PEER)
    if why is None and "\x00" in addr[0]:
        why = "a host name with a NUL character"
    return None if why is None else f"peer {name!r:.60}: {why}"


def call_problem(request: Any, local: bool) -> str | None:
    """Why the dist process refuses ``request`` (from a process of this node if
    ``local``), or None: a caller of another node, a request that is not of
    :data:`CALLS`, or a peer to ``connect`` that cannot be dialled. (The peers of
    ``set_known`` that cannot be dialled are left out, the others kept.)"""
    if not local:
        return "the dist process answers processes of its own node only"
    why = CALLS.problem(request)
    if why is None and request[0] == "connect":
        why = peer_problem(request[1], (request[2], request[3]))
    return why


class Dist(Actor):
    """Owns the node's dist thread; answers ``nodes``, ``connect``, ``monitor_nodes``."""

    def init(self, config: DistConfig) -> None:
        rt = actors.runtime()
        actors.register(NET_NAME)
        # the dist thread has a pid of its own (serial 0 never names a real process)
        io_pid = Pid(rt.node.name, rt.node.creation, os.getpid(), 0)
        self.core = DistCore(rt.node, config, io_pid)
        self.core.start()
        self.drops = shapes.DropLog(log)

    def handle_call(self, request: Any, from_: From) -> Any:
        why = call_problem(request, actors.runtime().is_local(from_.pid))
        if why is not None:
            self.drops.dropped(f"{self.core.node.name}: dist", request, why)
            return shapes.bad_request(CALLS.owner, why)
        core = self.core
        op = request[0]
        if op == "nodes":
            return core.command(core.nodes)
        if op == "hidden_nodes":
            return core.command(core.hidden_nodes)
        if op == "versions":
            return core.command(core.versions)
        if op == "port":
            return core.port
        if op == "connect":
            _, name, host, port = request
            return core.command(core.connect, name, host, port)
        if op == "set_known":
            peers = {}
            for name, addr in request[1].items():
                why = peer_problem(name, addr)
                if why is None:
                    peers[name] = addr
                else:
                    self.drops.dropped(f"{core.node.name}: dist", ("set_known", name, addr), why)
            return core.command(core.set_known, peers)
        if op == "disconnect":
            return core.command(core.disconnect, request[1])
        if op == "drop_link":
            _, name, reason = request
            return core.command(core.drop_link, name, reason)
        if op == "service":
            _, name, pid = request
            return core.command(core.set_service, name, pid)
        if op == "monitor_nodes":
            _, pid, on = request
            return core.command(core.subscribe, pid, on)
        if op == "monitor_witnesses":
            _, pid, on = request
            return core.command(core.watch_witnesses, pid, on)
        # "witness_info" (every tag of CALLS is answered above)
        return core.command(core.witness_info)

    def handle_cast(self, msg: Any) -> None:
        self.drops.dropped(f"{self.core.node.name}: dist", msg, "the dist process takes no cast")

    def handle_info(self, msg: Any) -> None:
        why = "the dist process takes no message"
        self.drops.dropped(f"{self.core.node.name}: dist", msg, why)

    def terminate(self, reason: Any) -> None:
        self.core.stop()
