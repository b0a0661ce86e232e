"""A node running the ``Quorum`` system actor, driven over stdin/stdout by the quorum
tests (the style of ``tests.harness.node_driver``).

Usage: python -m tests.harness.quorum_node_driver NAME PORT LOG_DIR [COOKIE]
[--expected N] [--settle S] [--term T] [--margin M]. Prints {"ready": ...} once started,
then answers one JSON line per command line (see ``handle``). The driver's own process
is the lease holder of its ``acquire``, and holds the lease's witnesses (as a
``SingletonWorker`` does: their close lets the members void the grant at once) unless
the command says ``"witness": false``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

import otpkit
from otpkit import distribution as dist
from otpkit.quorum import _actor as quorum
from otpkit.quorum._core import QuorumConfig


def out(obj: Any) -> None:
    print(json.dumps(obj, default=repr), flush=True)


WITNESSES: dict[str, dist.Witness] = {}


def handle(node: otpkit.Node, cmd: dict[str, Any]) -> Any:
    op = cmd["op"]
    if op == "nodes":
        return dist.nodes()
    if op == "connect":
        dist.connect_node(cmd["name"], cmd["host"], cmd["port"])
        return "ok"
    if op == "pids":
        return node.os_pids()
    if op == "members":
        return list(quorum.members())
    if op == "status":
        return quorum.status()
    if op == "gate":
        quorum.ready_gate(cmd.get("problem"))
        return "ok"
    if op in ("ready_problem", "rejoin_problem"):
        return otpkit.call(quorum.QUORUM_NAME, (op,), 5.0)
    if op == "acquire":
        lease = quorum.acquire(cmd["key"], cmd.get("t", 5.0))
        if lease is None:
            return None
        left = lease.expires_monotonic - time.monotonic()
        if cmd.get("witness", True):
            old = WITNESSES.pop(cmd["key"], None)
            if old is not None:
                old.close()
            WITNESSES[cmd["key"]] = witness = dist.Witness(cmd["key"], lease.epoch)
            witness.update(dist.witness_info())
        return [lease.epoch, left]
    if op == "witnesses":
        # what a Singleton's manager does every second: the node's peers, again
        witness = WITNESSES.get(cmd["key"])
        if witness is None:
            return {}
        witness.update(dist.witness_info())
        return witness.peers()
    if op == "rewitness":
        # what a witness thread does when it reached a new incarnation of a peer: a
        # second witness of the same lease is opened, then the first one is closed
        old = WITNESSES[cmd["key"]]
        new = dist.Witness(cmd["key"], old.epoch)
        new.update(dist.witness_info())
        end = time.monotonic() + cmd.get("t", 10.0)
        while new.peers() != old.peers() and time.monotonic() < end:
            time.sleep(0.02)
        old.close()
        WITNESSES[cmd["key"]] = new
        return new.peers()
    if op == "release":
        witness = WITNESSES.pop(cmd["key"], None)
        if witness is not None:
            witness.close()
        quorum.release(cmd["key"], cmd["epoch"])
        return "ok"
    if op == "fence":
        return quorum.fence(cmd["key"], cmd["epoch"], cmd["effect"], cmd.get("t", 3.0))
    if op == "effects":
        return quorum.effects(cmd["key"])
    if op == "leave":
        return quorum.leave(cmd.get("t", 5.0))
    if op == "recv":
        try:
            msg = node.receive(cmd.get("t", 10))
        except TimeoutError:
            return ["timeout"]
        return [type(msg).__name__, repr(msg)]
    raise ValueError(op)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.harness.quorum_node_driver")
    p.add_argument("name")
    p.add_argument("port", type=int)
    p.add_argument("log_dir")
    p.add_argument("cookie", nargs="?", default="test-cookie-0123456789")
    p.add_argument("--expected", type=int, default=0)
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--term", type=float, default=3.0)
    p.add_argument("--margin", type=float, default=0.5)
    args = p.parse_args(sys.argv[1:])
    config = QuorumConfig(
        expected_size=args.expected, settle=args.settle, term=args.term, margin=args.margin
    )
    node = otpkit.Node(
        args.name,
        cookie=args.cookie,
        dist_port=args.port,
        log_dir=args.log_dir,
        quorum=config,
        # OTPKIT_DRIVER_DEBUG=1: every record at DEBUG (a failure's timeline, rounds included)
        log_level=logging.DEBUG if os.environ.get("OTPKIT_DRIVER_DEBUG") else logging.INFO,
    ).start()
    out({"ready": args.name, "pids": node.os_pids(), "main": os.getpid()})
    for raw in sys.stdin:
        line = raw.strip()
        if not line:
            continue
        try:
            out({"ok": handle(node, json.loads(line))})
        except Exception as exc:  # report, keep serving
            out({"error": f"{type(exc).__name__}: {exc}"})
    node.stop()


if __name__ == "__main__":
    main()
