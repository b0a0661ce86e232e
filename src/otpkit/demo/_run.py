"""``otpkit demo``: the whole mission in one command, on this machine.

What it does, in order (each step bounded; the whole run takes about 20 s):

1. Serves DNS on 127.0.0.1 (a :class:`~otpkit.discovery._responder.Responder` on a free
   UDP port): ``demo.otpkit.test`` has the A records 127.0.0.2, 127.0.0.3 and 127.0.0.4.
2. Starts three OS processes (``otpkit demo --node``, see :mod:`otpkit.demo._node`), one
   node each: ``demo@127.0.0.2`` .. ``demo@127.0.0.4``, dist on one port of each address,
   a random cookie (passed in the environment, never on a command line). Each finds the
   other two by asking the responder: DNS discovery is what connects them.
3. Each node runs a :func:`~otpkit.scheduler.Scheduler` (policy ``majority`` unless
   ``--policy availability``) with one job, ``tick``, every second; each run appends
   which node ran which tick to a file, and the demo prints it.
4. Once the holder has run a few ticks, the demo SIGKILLs the holder's node (its OS
   process; the node's lifeline takes the rest of its process group), prints how long
   the take-over took, and prints the new holder's ticks.
5. Prints a summary (ticks run, by node, ticks run twice, ticks reported missed or
   interrupted), stops the two nodes left with SIGTERM (in order), checks that no
   process of the demo is left (every node's OS process and process group), removes
   its run directory and exits 0.

Ctrl-C (or SIGTERM) at any point skips to the stop and exits 130. A step that does not
happen in time stops the demo with exit status 1, naming the step and keeping the run
directory (the nodes' logs) for a look. Only processes this demo started are signalled.

The lines a program may parse: ``node NAME pid PID group PGID processes P1 P2 ...``
(one per node), ``HH:MM:SS.mmm tick HH:MM:SS ran on NODE (pid PID)``, ``killing NODE
...``, ``take-over: NODE holds the scheduler after S s``, ``summary: ...`` and, last,
``stopping... no process left``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType
from typing import Any, TypeVar

import otpkit
from otpkit.actors import pids_in_group, proc_stat
from otpkit.demo import _node as _demo_node
from otpkit.discovery import Responder

__all__ = ["main"]

T = TypeVar("T")

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
APP = "demo"
TICKS_BEFORE = 4  # ticks the first holder runs before it is killed
TICKS_AFTER = 4  # ticks the new holder runs before the demo stops
RUN_DEADLINE = 45.0  # seconds from start to summary, whatever happens
STOP_GRACE = 12.0  # seconds a node may take to stop on SIGTERM before it is killed
_PUMP = 0.05  # seconds between two looks at the run directory


class _Interrupted(Exception):
    """Ctrl-C or SIGTERM: stop now."""


class _TooLate(Exception):
    """A step of the demo did not happen in time; ``str()`` names it."""


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    ready: dict[str, Any] = field(default_factory=dict)

    @property
    def pgid(self) -> int | None:
        value = self.ready.get("pgid")
        return int(value) if value is not None else None


@dataclass(frozen=True)
class _Tick:
    tick: str  # ISO, UTC
    node: str
    pid: int
    started: float


def _hms(when: datetime | float, millis: bool = False) -> str:
    moment = datetime.fromtimestamp(when) if isinstance(when, float) else when.astimezone()
    text = moment.strftime("%H:%M:%S.%f")
    return text[:-3] if millis else text[:8]


def _loopback_usable() -> str | None:
    """None if this machine can bind every demo address, else why not."""
    for host in HOSTS:
        with socket.socket() as s:
            try:
                s.bind((host, 0))
            except OSError as exc:
                return f"cannot bind {host} ({exc.strerror}): the demo needs 127.0.0.2-4 (Linux)"
    return None


def _common_free_port(attempts: int = 50) -> int:
    """A TCP port free on every demo address (DnsA gives every peer the same port)."""
    for _ in range(attempts):
        with socket.socket() as first:
            first.bind((HOSTS[0], 0))
            port = int(first.getsockname()[1])
        ok = True
        for host in HOSTS:
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise OSError("no TCP port free on all of 127.0.0.2-4")


class Demo:
    """One run of the demo (see the module)."""

    def __init__(self, policy: str, keep: bool) -> None:
        self.policy = policy
        self.keep = keep
        self.run_id = secrets.token_hex(4)
        self.began = time.monotonic()
        self.deadline = self.began + RUN_DEADLINE
        self.stop = threading.Event()
        self.dir = ""
        self.children: list[_Child] = []
        self.responder: Responder | None = None
        self.ticks: list[_Tick] = []
        self.status: list[dict[str, Any]] = []
        self._offsets = {"ticks": 0, "status": 0}
        self._partial = {"ticks": b"", "status": b""}
        self.killed: str | None = None
        # while set, only this node's ticks are shown; the others wait in _held
        self._only: str | None = None
        self._held: list[str] = []

    # ------------------------------------------------------------------ output

    def say(self, text: str) -> None:
        print(text, flush=True)

    # ------------------------------------------------------------------ the run

    def run(self) -> int:
        problem = _loopback_usable()
        if problem is not None:
            print(f"otpkit demo: {problem}", file=sys.stderr)
            return 2
        self.dir = tempfile.mkdtemp(prefix=f"otpkit-demo-{self.run_id}-")
        outcome = 1
        try:
            self._show()
            outcome = 0
        except _Interrupted:
            self.say("interrupted")
            outcome = 130
        except _TooLate as exc:
            self.say(f"otpkit demo: {exc} - stopping (logs kept in {self.dir})")
            self.keep = True
        finally:
            # a second Ctrl-C must not cut the clean-up short
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                left = self._stop_everything()
            finally:
                signal.signal(signal.SIGINT, previous)
        if left:
            self.say(f"stopping... processes left: {' '.join(map(str, left))}")
            return 1
        self.say("stopping... no process left")
        if self.keep:
            self.say(f"logs: {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return outcome

    def _show(self) -> None:
        service = _demo_node.SERVICE
        self.responder = Responder({service: HOSTS}).start()
        self.say(f"otpkit demo (run {self.run_id}): three nodes on this machine, found through DNS")
        self.say(
            f"dns: {service} A {' '.join(HOSTS)} "
            f"(responder on 127.0.0.1:{self.responder.port}, UDP)"
        )
        port = _common_free_port()
        cookie = secrets.token_hex(16)
        for host in HOSTS:
            self._start_node(f"{APP}@{host}", port, cookie)
        started = time.monotonic()
        self._wait(self._all_ready, 30.0, "the three nodes start")
        for child in self.children:
            pids = " ".join(map(str, sorted(child.ready.get("pids", []))))
            self.say(f"node {child.name} pid {child.proc.pid} group {child.pgid} processes {pids}")
        self._wait(self._meshed, 20.0, "every node finds the other two through DNS")
        self.say(
            f"cluster: every node is connected to the other two "
            f"{time.monotonic() - started:.1f} s after start (DnsA {service}, polled every 1 s)"
        )
        holder = self._wait(lambda: self._agreed_holder(None), 20.0, "a scheduler holder")
        self.say(
            f'scheduler: held by {holder} (policy {self.policy}); job "tick" runs every '
            f'second ("* * * * * *") on the holder\'s node'
        )
        # the kill comes between two ticks, once the last run's finish is recorded: a
        # kill during a run shows up in the summary as an interrupted tick
        self._wait(
            lambda: self._finished_on(holder) >= TICKS_BEFORE,
            15.0,
            f"{TICKS_BEFORE} ticks on {holder}",
        )
        killed_at = self._kill(holder)
        # the new holder may run its first tick before every live node has seen it take
        # over (the next second can come first): that tick is shown after the take-over
        # line, the killed node's last ones before it
        self._only = holder
        new = self._wait(lambda: self._agreed_holder(holder), 20.0, "a new holder")
        took = self._took_over_at(new) - killed_at
        self._pump()
        self.say(f"take-over: {new} holds the scheduler after {max(took, 0.0):.1f} s")
        self._only = None
        self._pump()
        self._wait(
            lambda: sum(t.node == new and t.started > killed_at for t in self.ticks) >= TICKS_AFTER,
            15.0,
            f"{TICKS_AFTER} ticks on {new}",
        )
        first = min(t.started for t in self.ticks if t.node == new and t.started > killed_at)
        self.say(f"first tick on {new}: {first - killed_at:.1f} s after the kill")
        self._summary()

    # ------------------------------------------------------------------ nodes

    def _start_node(self, name: str, port: int, cookie: str) -> None:
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(otpkit.__file__)))
        env = dict(os.environ)
        env[_demo_node.COOKIE_ENV] = cookie
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        args = [
            sys.executable, "-m", "otpkit", "demo", "--node", name,
            "--run", self.run_id, "--dir", self.dir, "--dist-port", str(port),
            "--dns-port", str(self.responder.port if self.responder else 0),
            "--parent", str(os.getpid()), "--policy", self.policy,
        ]  # fmt: skip
        out = os.path.join(self.dir, f"{name.replace('@', '_')}.out")
        with open(out, "ab") as log:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                process_group=0,  # Ctrl-C reaches the demo only: it stops the nodes in order
            )
        self.children.append(_Child(name, proc))

    def _kill(self, holder: str) -> float:
        """SIGKILL ``holder``'s program; returns the wall time just before the kill."""
        child = next(c for c in self.children if c.name == holder)
        self._pump()
        self.say(f"killing {holder} (the scheduler's holder) with SIGKILL")
        self.killed = holder
        at = time.time()
        os.kill(child.proc.pid, signal.SIGKILL)
        child.proc.wait(10)
        return at

    def _stop_everything(self) -> list[int]:
        """Stop every node this demo started (SIGTERM, SIGKILL after STOP_GRACE), then
        the DNS responder; wait until no process of any node is left. Returns the OS
        pids still alive (empty on success)."""
        # the holder last: stopped while its peers run, it would wait for a hand-over
        # to a node that is stopping too
        holder = self._agreed_holder(None)
        running = sorted(
            (c for c in self.children if c.proc.poll() is None), key=lambda c: c.name == holder
        )
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
            try:
                child.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop in {STOP_GRACE:.0f} s: SIGKILL")
                child.proc.kill()
                child.proc.wait(10)
        if self.responder is not None:
            self.responder.close()
        # a node's own processes die with its program (its lifeline): wait for that
        left = self._leftovers()
        until = time.monotonic() + 5.0
        while left and time.monotonic() < until:
            time.sleep(_PUMP)
            left = self._leftovers()
        for pid in left:  # each one forked from a node of this run (see _leftovers)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left:
            time.sleep(0.2)
        return self._leftovers()

    def _leftovers(self) -> list[int]:
        """Live processes of this run: in a node's process group, or with this run's id
        on their command line (every process of a node is forked from its program,
        ``otpkit demo --node NAME --run ID ...``, so it keeps that command line)."""
        groups = {c.pgid for c in self.children if c.pgid is not None}
        found = {pid for pgid in groups for pid in pids_in_group(pgid)}
        found.update(processes_of_run(self.run_id))
        found.discard(os.getpid())
        return sorted(found)

    # ------------------------------------------------------------------ reading the files

    def _read_new(self, which: str) -> list[str]:
        path = os.path.join(self.dir, which)
        try:
            with open(path, "rb") as f:
                f.seek(self._offsets[which])
                data = f.read()
        except FileNotFoundError:
            return []
        self._offsets[which] += len(data)
        data = self._partial[which] + data
        *lines, rest = data.split(b"\n")
        self._partial[which] = rest
        return [line.decode() for line in lines if line]

    def _pump(self) -> None:
        """Take in new status lines and print new ticks (while ``_only`` is set, only
        that node's: the first tick of another node and every one after it are held
        back, in order, until it is cleared)."""
        for line in self._read_new("status"):
            self.status.append(json.loads(line))
        lines = self._read_new("ticks")
        if self._only is None:
            lines, self._held = [*self._held, *lines], []
        for line in lines:
            if self._only is not None and (self._held or line.split()[2] != self._only):
                self._held.append(line)
            else:
                self._take_tick(line)

    def _take_tick(self, line: str) -> None:
        """Record one line of the ticks file and print it."""
        _, tick, node, pid, started = line.split()
        entry = _Tick(tick, node, int(pid), float(started))
        self.ticks.append(entry)
        shown = _hms(datetime.fromisoformat(tick)) if tick != "-" else "-"
        self.say(f"{_hms(entry.started, millis=True)} tick {shown} ran on {node} (pid {pid})")

    def _wait(self, cond: Callable[[], T | None], timeout: float, what: str) -> T:
        """Pump until ``cond()`` is truthy; raise _TooLate after ``timeout`` (or at the
        run's deadline), _Interrupted on Ctrl-C or SIGTERM."""
        until = min(time.monotonic() + timeout, self.deadline)
        while True:
            if self.stop.is_set():
                raise _Interrupted
            self._pump()
            dead = [
                c.name for c in self.children if c.name != self.killed and c.proc.poll() is not None
            ]
            if dead:
                raise _TooLate(f"node {', '.join(dead)} ended on its own while waiting for {what}")
            value = cond()
            if value:
                return value
            if time.monotonic() >= until:
                raise _TooLate(f"{what}: did not happen within {timeout:.0f} s")
            self.stop.wait(_PUMP)

    def _finished_on(self, node: str) -> int:
        """Ticks ``node`` ran whose finish the scheduler recorded (a run_finished event)."""
        done = {e["tick"] for e in self._events() if e["kind"] == "run_finished"}
        return sum(t.node == node and t.tick in done for t in self.ticks)

    def _latest(self, kind: str) -> dict[str, dict[str, Any]]:
        """The latest status line of ``kind`` from each node."""
        latest: dict[str, dict[str, Any]] = {}
        for row in self.status:
            if row["kind"] == kind:
                latest[row["node"]] = row
        return latest

    def _all_ready(self) -> bool:
        ready = self._latest("ready")
        for child in self.children:
            if child.name in ready:
                child.ready = ready[child.name]
        return all(child.ready for child in self.children)

    def _meshed(self) -> bool:
        views = self._latest("nodes")
        names = [c.name for c in self.children]
        return all(
            sorted(views.get(n, {}).get("nodes", [])) == sorted(m for m in names if m != n)
            for n in names
        )

    def _live_nodes(self) -> list[str]:
        return [c.name for c in self.children if c.name != self.killed]

    def _agreed_holder(self, not_on: str | None) -> str | None:
        """The node every live node sees holding the scheduler, if they agree on one
        other than ``not_on``."""
        views = self._latest("holder")
        seen = {views.get(n, {}).get("holder") for n in self._live_nodes()}
        if len(seen) != 1:
            return None
        holder = seen.pop()
        return holder if holder is not None and holder != not_on else None

    def _took_over_at(self, new: str) -> float:
        """When ``new`` saw itself holding the scheduler (its own status line)."""
        return max(
            float(row["at"])
            for row in self.status
            if row["kind"] == "holder" and row["node"] == new and row["holder"] == new
        )

    # ------------------------------------------------------------------ summary

    def _events(self) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        path = os.path.join(self.dir, "events")
        with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    event = json.loads(line)
                    seen.setdefault(event["id"], event)
        return list(seen.values())

    def _summary(self) -> None:
        """Every second from the first tick to the last: run (once), or reported by the
        scheduler as interrupted (claimed, its node died) or missed; never silently
        dropped."""
        by_node = Counter(t.node for t in self.ticks)
        ran = [datetime.fromisoformat(t.tick) for t in self.ticks if t.tick != "-"]
        twice = len(ran) - len(set(ran))
        interrupted: set[datetime] = set()
        missed: set[datetime] = set()
        for e in self._events():
            if e["kind"] == "run_interrupted" and e.get("tick"):
                interrupted.add(datetime.fromisoformat(e["tick"]))
            elif e["kind"] == "run_missed" and e.get("tick"):
                extra = e.get("extra") or {}
                first = datetime.fromisoformat(extra.get("first") or e["tick"])
                last = datetime.fromisoformat(extra.get("last") or e["tick"])
                missed.update(_seconds(first, last))
        span = _seconds(min(ran), max(ran)) if ran else []
        unaccounted = [t for t in span if t not in set(ran) | interrupted | missed]
        nodes = ", ".join(f"{node} {n}" for node, n in by_node.items())
        self.say(
            f"summary: {len(span)} seconds from {_hms(span[0]) if span else '-'} to "
            f"{_hms(span[-1]) if span else '-'}: {len(ran)} ticks run ({nodes}), "
            f"run twice {twice}"
        )
        cut = " ".join(_hms(t) for t in sorted(interrupted))
        self.say(
            f"summary: interrupted {len(interrupted)}"
            + (
                f" ({cut}: its node died before the finish was recorded; not run again)"
                if cut
                else ""
            )
            + f", missed {len(missed)}, unaccounted {len(unaccounted)}"
        )


def _seconds(first: datetime, last: datetime) -> list[datetime]:
    return [first + timedelta(seconds=k) for k in range(int((last - first).total_seconds()) + 1)]


def processes_of_run(run_id: str) -> list[int]:
    """OS pids of live (not zombie) processes whose command line has ``--run run_id``."""
    wanted = b"\0--run\0" + run_id.encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = b"\0" + f.read()
        except OSError:
            continue
        if wanted in cmdline:
            stat = proc_stat(entry)
            if stat is not None and stat[0] != b"Z":
                found.append(int(entry))
    return found


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="otpkit demo",
        description="Three nodes on this machine, found through DNS; a job every second; "
        "the holder killed; the take-over shown.",
    )
    p.add_argument(
        "--policy",
        default="majority",
        choices=("majority", "availability"),
        help="the scheduler's policy (default majority: a tick runs at most once)",
    )
    p.add_argument("--keep", action="store_true", help="keep the run directory (the logs)")
    return p


def main(argv: Sequence[str]) -> int:
    """``otpkit demo [--policy P] [--keep]``; ``otpkit demo --node ...`` is one node."""
    argv = list(argv)
    if "--node" in argv:
        return _demo_node.main(argv)
    args = _parser().parse_args(argv)
    demo = Demo(args.policy, args.keep)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        demo.stop.set()

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return demo.run()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
