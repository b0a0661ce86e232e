"""One node of ``otpkit demo``: the program each of the demo's three OS processes runs.

``otpkit demo --node NAME ...`` (started by :mod:`otpkit.demo`, never by hand) hosts
one node: dist on ``NAME``'s loopback address, peers found by
:class:`~otpkit.discovery.DnsA` asking the demo's DNS responder, and a
:func:`~otpkit.scheduler.Scheduler` with one job, ``tick``, every second. It talks to the
demo through files in the run directory, each line one ``O_APPEND`` write (never
interleaved):

* ``ticks``: the task :func:`tick` appends ``tick <tick ISO> <node> <os pid> <start>``;
* ``events``: every scheduler event this node hears (JSON; each event reaches every
  node, so the demo merges them by ``id``);
* ``status``: JSON lines from this program: ``ready`` (its OS pid, the node's process
  group and pids) once the node runs, ``nodes`` when the set of connected nodes changes,
  ``holder`` when the node the scheduler's global name points at changes, ``stopped``.

SIGTERM (or SIGINT) stops the node in order. The program dies with the demo
(``PR_SET_PDEATHSIG``): if the demo is killed, its nodes go too, and with each of them
its whole process group (the node's lifeline).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import otpkit
from otpkit import distribution as dist
from otpkit import registry, scheduler
from otpkit.discovery import DnsA
from otpkit.quorum import QuorumConfig
from otpkit.scheduler import Job, JobEvent
from otpkit.shell import plain

__all__ = ["JOB", "SERVICE", "EventLog", "main", "tick"]

SERVICE = "demo.otpkit.test"
JOB = "tick"
COOKIE_ENV = "OTPKIT_DEMO_COOKIE"
_PR_SET_PDEATHSIG = 1
_WATCH = 0.05  # seconds between two looks at the holder and the connected nodes


def append_line(path: str, text: str) -> None:
    """Append one line with one ``write`` (lines of several processes never mix)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)


def tick(path: str) -> None:
    """The demo's job: record which node ran this tick, in which OS process, when."""
    started = time.time()
    run = scheduler.current_run()
    at = run.tick.isoformat() if run is not None else "-"
    append_line(path, f"tick {at} {otpkit.self().node} {os.getpid()} {started:.3f}")


class EventLog(otpkit.Actor):
    """Appends every scheduler event this node hears to ``path``, one JSON line each."""

    def init(self, path: str) -> None:
        self.path = path
        scheduler.subscribe()

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, JobEvent):
            row = plain(msg.to_wire())
            row["seen_by"] = otpkit.self().node
            append_line(self.path, json.dumps(row))


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the demo died before the line above
        os._exit(1)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="otpkit demo --node")
    p.add_argument("--node", required=True, help="this node's name, demo@127.0.0.x")
    p.add_argument("--run", required=True, help="the demo's run id")
    p.add_argument("--dir", required=True, help="the run directory")
    p.add_argument("--dist-port", type=int, required=True)
    p.add_argument("--dns-port", type=int, required=True)
    p.add_argument("--parent", type=int, required=True, help="the demo's OS pid")
    p.add_argument("--policy", default="majority", choices=("majority", "availability"))
    return p


def _status(path: str, kind: str, **fields: Any) -> None:
    append_line(path, json.dumps({"kind": kind, "at": time.time(), **fields}))


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    _die_with_parent(args.parent)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    cookie = os.environ.get(COOKIE_ENV)
    if not cookie:
        print(f"otpkit demo --node: {COOKIE_ENV} is not set", file=sys.stderr)
        return 2
    name: str = args.node
    status = os.path.join(args.dir, "status")
    job = Job(JOB, "* * * * * *", "otpkit.demo._node:tick", kwargs={"path": f"{args.dir}/ticks"})
    safe = name.replace("@", "_")
    node = otpkit.Node(
        name,
        children=[
            scheduler.Scheduler(
                [job],
                policy=args.policy,
                store=os.path.join(args.dir, f"store-{safe}.sqlite"),
                max_concurrency=2,
                settle_timeout=1.0,
            )
        ],
        cookie=cookie,
        dist_port=args.dist_port,
        discovery=DnsA(
            SERVICE,
            app=name.split("@", 1)[0],
            port=args.dist_port,
            nameserver="127.0.0.1",
            nameserver_port=args.dns_port,
            timeout=1.0,
        ),
        poll_interval=1.0,
        # a node alone at start-up never calls itself a majority of one
        quorum=QuorumConfig(expected_size=3, settle=1.0),
        log_dir=args.dir,
    ).start()
    try:
        node.spawn(EventLog, os.path.join(args.dir, "events"))
        pids = node.os_pids()
        pgid = os.getpgid(pids[0]) if pids else None
        _status(status, "ready", node=name, pid=os.getpid(), pgid=pgid, pids=pids)
        seen_nodes: list[str] | None = None
        seen_holder: str | None = ""
        while not stop.wait(_WATCH):
            nodes = sorted(dist.nodes())
            if nodes != seen_nodes:
                seen_nodes = nodes
                _status(status, "nodes", node=name, nodes=nodes)
            pid = registry.whereis_name(scheduler.DEFAULT_NAME)
            holder = None if pid is None else pid.node
            if holder != seen_holder:
                seen_holder = holder
                _status(status, "holder", node=name, holder=holder)
    finally:
        began = time.monotonic()
        node.stop(timeout=10.0)
        _status(status, "stopped", node=name, took=round(time.monotonic() - began, 2))
    return 0
