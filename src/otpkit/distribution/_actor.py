"""The dist process: a system actor under the kernel that runs the dist thread."""

from __future__ import annotations

import os
from typing import Any

from otpkit import actors
from otpkit.actors import Actor, From, Pid
from otpkit.distribution._core import DistConfig, DistCore

#: The local name of the dist process (its control API; the thread has its own name).
NET_NAME = "otpkit_net"


class Dist(Actor):
    """Owns the node's dist thread; answers ``nodes``, ``connect``, ``monitor_nodes``."""

    def init(self, config: DistConfig) -> None:
        rt = actors.runtime()
        actors.register(NET_NAME)
        # the dist thread has a pid of its own (serial 0 never names a real process)
        io_pid = Pid(rt.node.name, rt.node.creation, os.getpid(), 0)
        self.core = DistCore(rt.node, config, io_pid)
        self.core.start()

    def handle_call(self, request: Any, from_: From) -> Any:
        core = self.core
        op = request[0]
        if op == "nodes":
            return core.command(core.nodes)
        if op == "hidden_nodes":
            return core.command(core.hidden_nodes)
        if op == "port":
            return core.port
        if op == "connect":
            _, name, host, port = request
            return core.command(core.connect, name, host, port)
        if op == "set_known":
            return core.command(core.set_known, request[1])
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
        if op == "witness_info":
            return core.command(core.witness_info)
        return super().handle_call(request, from_)

    def terminate(self, reason: Any) -> None:
        self.core.stop()
