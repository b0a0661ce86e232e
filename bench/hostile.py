"""Hostile input (issue 13): what an unauthenticated client, a slow HTTP client or a
flood of bytes costs a node, on two ``otpkit run`` nodes on loopback.

    python -m bench.hostile [--quick] [--only FIGURE ...] [--seconds S] [--rss-cap MIB]
                            [--fuzz-count N]

Node ``a`` is attacked, node ``b`` is its healthy peer (static discovery, both meshed
and ready before each attack; a node found down is restarted, and the summary says so).
The attack clients are ``tests/harness/hostile.py``'s; they build every byte by hand,
so the same attacks run against any version of otpkit (``PYTHONPATH=<tree>/src``
chooses which: each figure names the otpkit its nodes ran).

* ``preauth_cpu_ms_per_mb`` (goal: ratio <= 2): run time of all threads of the dist
  process of ``a`` (the OS process whose socket listens on its dist port: the dist
  thread's) per MiB that 150 unauthenticated connections, opened at once, send to the
  dist port: each about 58 KiB of 480-byte msgpack frames full of ext values (aware
  datetimes with zone names no tz database has and no earlier frame used, pids, refs),
  then the end of its stream. The peer figure is the same bytes of plain frames (each
  ext value replaced by a str of the same size), in the same run; rounds alternate (3
  of each, 1 with ``--quick``), medians and spread. The line also says whether either
  node logged ``net_tick_timeout`` or dropped the link between them during the rounds,
  and in how many rounds ``a`` halted (its dist process's CPU is sampled every 50 ms,
  so a round that kills it still counts what it used until then: a lower bound; the
  next round gets a new cluster).
* ``slowloris_probe_failures`` (goal 0): 40 connections from 127.0.0.2 to the probe port
  of ``a``, each sending one more byte of a header that never ends every 1.5 s (a
  connection the node closes is opened again); meanwhile ``/healthz/live`` is asked 6
  times from 127.0.0.1, one request at a time, each with the example manifest's
  ``timeoutSeconds`` (3 s) for the whole request: the failures (not a 200 in time).
  The full run adds ``slowloris_same_source_probe_failures``: the same with the 40
  connections from 127.0.0.1 too (no goal: what per-source limits can still do).
* ``preauth_rss_growth_mb``, one line per surface (goal <= 16 MiB each): 100
  connections each trying to send 100 MiB, for at most ``--seconds`` (20 s; 5 s with
  ``--quick``), or until the target grew by ``--rss-cap`` (1024 MiB, a safety stop):
  the resident memory of the target process before, the largest seen during the
  attack and until it is steady after it (at most 5 s), and that steady value (a
  flood that leaves its target more than 16 MiB larger is followed by a new
  cluster). Surfaces: the probe port (a request whose header never ends; target: the
  process serving the probes), the dist port (a frame header declaring 16 MiB - 1
  bytes; target: the dist process), the Thespian port of ``a``'s application worker
  (a message header declaring 100 MiB) and the worker's abstract Unix socket (a local
  frame header declaring 256 MiB - 1 bytes). Each line says how the attack ended, how
  much of what was written the target had not read yet when it ended (TCP only), the
  target's CPU time, and whether ``a`` still answered ``/healthz/live`` after it.
* ``fuzz_system_crashes`` (goal 0): the fuzz suite (``tests/harness/fuzz.py``, its
  three-node ``FuzzCluster`` and ``run``) with ``--fuzz-count`` messages (3000; 300
  with ``--quick``; the suite's full run is its ``soak`` test): crash lines in the
  nodes' logs, and beside them the system processes restarted, the ticks missed or
  run twice, the nodes alive. A ``skipped`` line if the suite cannot run against this
  otpkit (it reads the message definitions of ``otpkit.actors.shapes``).

Each figure's line is ``{"figure", "value", "unit", "goal", ...}`` with what was done and
measured. The summary is on stderr. Every process the run starts is in a process group
of its own and carries a marker in its environment; all are killed at the end, on an
error and on Ctrl-C. The nodes' logs are kept with ``OTPKIT_BENCH_KEEP=1``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import _runner
from bench._runner import MARKER_VAR, HostLoad
from tests.harness import hostile
from tests.harness.processes import alive, child_env

APP = "tests.harness.otpkit_run_app:root"
COOKIE = "hostile-bench-cookie-0123456789abcdef"  # 16+ bytes: the cookie rule of issue 13
HOST = "127.0.0.1"
ATTACK_SOURCE = "127.0.0.2"
PROBE_TIMEOUT = 3.0  # examples/kubernetes/statefulset.yaml: timeoutSeconds
MIB = 1024 * 1024

FIGURES = (
    "preauth_cpu_ms_per_mb",
    "slowloris_probe_failures",
    "preauth_rss_growth_mb",
    "fuzz_system_crashes",
)


def say(*lines: str) -> None:
    for text in lines:
        print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    """A port no socket uses, below the ephemeral range: the attacks' own connections
    take ephemeral ports, and one of them could take a port picked from that range
    before its node binds it."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def otpkit_source(env: dict[str, str]) -> str:
    """Which otpkit a node started with ``env`` imports: its directory, and the commit
    of the tree it lives in (``+dirty`` if its ``src/`` has uncommitted changes)."""
    try:
        pkg = subprocess.run(
            [sys.executable, "-c", "import otpkit, os; print(os.path.dirname(otpkit.__file__))"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return _runner.tree_source(pkg)


# --------------------------------------------------------------------------- the nodes


class NodeExited(RuntimeError):
    """A node's ``otpkit run`` ended while the cluster was starting."""


@dataclass
class Node:
    key: str
    name: str
    dist_port: int
    probe_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.dir / "log" / f"{self.name}.log"

    @property
    def marks(self) -> Path:
        return self.dir / "marks"


@dataclass
class Cluster:
    """Nodes ``a`` and ``b``, each ``otpkit run`` of the test application in a process
    group of its own, every process of theirs marked ``OTPKIT_BENCH_TAG=<tag>``."""

    work: Path
    tag: str = field(default_factory=lambda: "hostile-" + uuid.uuid4().hex)
    nodes: dict[str, Node] = field(default_factory=dict)
    restarts: int = 0  # new clusters because a node was found down or not ready
    fresh: int = 0  # new clusters after a flood that left its target larger
    generation: int = 0

    def env(self) -> dict[str, str]:
        full = {k: v for k, v in child_env().items() if not k.startswith("OTPKIT_")}
        full.pop("POD_IP", None)
        full[MARKER_VAR] = self.tag
        return full

    def start(self, attempts: int = 3) -> None:
        """Start both nodes; again on new ports if one exits while starting (a port
        taken meanwhile by another program)."""
        for attempt in range(attempts):
            try:
                self._start()
                return
            except NodeExited as exc:
                say(f"  ({exc}: starting again)")
                self.stop()
                if attempt == attempts - 1:
                    raise

    def _start(self) -> None:
        self.generation += 1
        self.nodes = {}
        for key in ("a", "b"):
            d = self.work / f"{key}{self.generation}"
            (d / "log").mkdir(parents=True)
            self.nodes[key] = Node(key, f"{key}@{HOST}", free_port(), free_port(), d)
        peers = ",".join(f"{n.name}:{n.dist_port}" for n in self.nodes.values())
        for n in self.nodes.values():
            env = self.env()
            env.update(
                OTPKIT_NODE_NAME=n.name,
                OTPKIT_COOKIE=COOKIE,
                OTPKIT_DIST_PORT=str(n.dist_port),
                OTPKIT_DISCOVERY=f"static:{peers}",
                OTPKIT_PROBE_PORT=str(n.probe_port),
                OTPKIT_LOG_DIR=str(n.dir / "log"),
                OTPKIT_DATA_DIR=str(n.dir / "data"),
                CLI_APP_OUT=str(n.marks),
            )
            with open(n.dir / "out", "wb") as out:
                n.proc = subprocess.Popen(
                    [sys.executable, "-m", "otpkit", "run", APP],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
        self.wait_ready(90)

    def ready(self, key: str) -> bool:
        n = self.nodes[key]
        status, _, _ = hostile.http_get((HOST, n.probe_port), "/healthz/ready", 2.0)
        return status == 200

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n in self.nodes.values():
                if n.proc is not None and n.proc.poll() is not None:
                    tail = (n.dir / "out").read_text(errors="replace").strip().splitlines()
                    raise NodeExited(f"{n.name} exited: {' | '.join(tail[-2:])}")
            if all(self.ready(k) for k in self.nodes) and self.worker("a") is not None:
                return
            time.sleep(0.2)
        raise RuntimeError(f"the nodes were not ready within {timeout} s (files: {self.work})")

    def healthy(self) -> bool:
        return all(
            n.proc is not None and n.proc.poll() is None and self.ready(k)
            for k, n in self.nodes.items()
        )

    def ensure(self, why: str) -> None:
        """A healthy cluster for the next attack: the same one, or a new one."""
        if self.nodes and self.healthy():
            return
        if self.nodes:
            say(f"  (the cluster was not healthy before {why}: a new one)")
            self.restarts += 1
            self.stop()
        self.start()

    def restart(self) -> None:
        self.fresh += 1
        self.stop()
        self.start()

    def pids(self, key: str) -> list[int]:
        n = self.nodes[key]
        own = _runner.marked_pids(self.tag)
        if n.proc is None:
            return []
        return [p for p in own if _in_node(p, n)]

    def worker(self, key: str) -> int | None:
        """The os pid of the application's worker on node ``key`` (its last start)."""
        try:
            lines = [ln.split() for ln in self.nodes[key].marks.read_text().splitlines()]
        except OSError:
            return None
        started = [int(ln[1]) for ln in lines if ln and ln[0] == "started"]
        return started[-1] if started and alive(started[-1]) else None

    def stop(self) -> None:
        procs = [n.proc for n in self.nodes.values() if n.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.kill_left()

    def kill_left(self) -> list[int]:
        left = _runner.marked_pids(self.tag)
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return left


def _in_node(pid: int, node: Node) -> bool:
    """Whether ``pid`` is one of ``node``'s processes: its environment names the node."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"OTPKIT_NODE_NAME={node.name}\0".encode() in f.read()
    except OSError:
        return False


def log_mark(node: Node) -> int:
    try:
        return node.log.stat().st_size
    except OSError:
        return 0


def log_since(node: Node, mark: int) -> str:
    try:
        with open(node.log, "rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def link_drops(text: str, other: Node) -> int:
    """Lines of a node's log that say its link to ``other`` closed."""
    return len(re.findall(rf"connection {re.escape(other.name)} \S+ closed", text))


def settle_cpu(pid: int, quiet_ns: int = 2_000_000, window: float = 0.3, limit: float = 30) -> None:
    """Wait until ``pid`` used less than ``quiet_ns`` of CPU over ``window`` seconds."""
    deadline = time.monotonic() + limit
    last = hostile.cpu_ns(pid)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = hostile.cpu_ns(pid)
        if now - last < quiet_ns:
            return
        last = now


# --------------------------------------------------------------------------- the attacks


def _dist_pid(cl: Cluster) -> int:
    a = cl.nodes["a"]
    dist = hostile.listener_pid(a.dist_port, cl.pids("a"))
    if dist is None:
        raise RuntimeError(f"no process of {a.name} listens on its dist port {a.dist_port}")
    return dist


def _idle_rate(pid: int) -> float:
    """CPU nanoseconds per second ``pid`` uses when left alone (over 2 s)."""
    settle_cpu(pid)
    t0, c0 = time.monotonic(), hostile.cpu_ns(pid)
    time.sleep(2.0)
    return (hostile.cpu_ns(pid) - c0) / (time.monotonic() - t0)


def preauth_cpu(cl: Cluster, quick: bool, source: str) -> list[dict[str, Any]]:
    connections, per_conn, frame = 150, 60_000, 480
    rounds = 1 if quick else 3
    dist = _dist_pid(cl)
    idle_ns_per_s = _idle_rate(dist)
    costs: dict[str, list[float]] = {"ext": [], "junk": []}
    stalls: dict[str, list[float]] = {"ext": [], "junk": []}
    sent: dict[str, list[int]] = {"ext": [], "junk": []}
    per_conn_ms: dict[str, list[float]] = {"ext": [], "junk": []}
    halted: dict[str, int] = {"ext": 0, "junk": 0}
    tick_timeouts = {"a": 0, "b": 0}
    drops = {"a": 0, "b": 0}
    run = uuid.uuid4().hex[:6]
    for r in range(rounds):
        for kind in ("ext", "junk"):
            if not cl.healthy():
                cl.ensure(f"round {r + 1} {kind}")
                dist = _dist_pid(cl)
            a, b = cl.nodes["a"], cl.nodes["b"]
            marks = {k: log_mark(n) for k, n in cl.nodes.items()}
            make = hostile.ext_frames if kind == "ext" else hostile.junk_frames
            blobs = [make(per_conn, frame, f"{run}r{r}c{c:03}") for c in range(connections)]
            began = time.monotonic()
            with hostile.CpuWatch(dist) as watch:
                res = hostile.burst((HOST, a.dist_port), blobs, timeout=60, source=source)
                settle_cpu(dist)
            elapsed = time.monotonic() - began
            used = watch.used_ns() - idle_ns_per_s * elapsed
            # a node that lost its dist halts at once, or after its kernel's restarts
            assert a.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                a.proc.wait(0.1 if watch.died else 3)
            gone = watch.died or a.proc.poll() is not None
            halted[kind] += gone
            mib = res.sent / MIB
            costs[kind].append(max(0.0, used) / 1e6 / mib if mib else float("nan"))
            per_conn_ms[kind].append(max(0.0, used) / 1e6 / max(1, res.connected))
            stalls[kind].append(watch.busiest_ns() / 1e6)
            sent[kind].append(res.sent)
            logs = {k: log_since(n, marks[k]) for k, n in cl.nodes.items()}
            for k, text in logs.items():
                tick_timeouts[k] += text.count("net_tick_timeout")
            drops["a"] += link_drops(logs["a"], b)
            drops["b"] += link_drops(logs["b"], a)
            say(
                f"  round {r + 1} {kind}: {mib:.2f} MiB over {res.connected} connections"
                f" ({res.refused} refused, {res.cut_short} cut short, {res.unfinished}"
                f" unfinished) in {res.seconds:.1f} s: {used / 1e6:.0f} ms of dist CPU"
                f" ({costs[kind][-1]:.1f} ms/MiB), busiest thread {stalls[kind][-1]:.0f} ms"
                + ("; node a HALTED (its dist CPU until then)" if gone else "")
            )
    ext, junk = statistics.median(costs["ext"]), statistics.median(costs["junk"])
    return [
        {
            "figure": "preauth_cpu_ms_per_mb",
            "value": round(ext, 2),
            "unit": "ms per MiB",
            "peer": "plain frames, the same bytes",
            "peer_value": round(junk, 2),
            "ratio": round(ext / junk, 2) if junk > 0 else None,
            "goal": "ratio <= 2",
            "spread": {k: [round(min(v), 2), round(max(v), 2)] for k, v in costs.items()},
            "busiest_thread_ms_max": {k: round(max(v)) for k, v in stalls.items()},
            "ms_per_connection": {
                k: round(statistics.median(v), 3) for k, v in per_conn_ms.items()
            },
            "rounds": rounds,
            "mib_per_round": round(statistics.median(sent["ext"]) / MIB, 2),
            "connections": connections,
            "frame_bytes": frame,
            "peer_node_logged_net_tick_timeout": tick_timeouts["b"] > 0,
            "net_tick_timeout_lines": tick_timeouts,
            "link_a_b_drops": drops,
            "node_a_halted_rounds": halted,
            "note": (
                "node a halted in some rounds: their CPU is what its dist process used"
                " until then (a lower bound)"
                if any(halted.values())
                else None
            ),
        }
    ]


def slowloris(cl: Cluster, same_source: bool) -> dict[str, Any]:
    a = cl.nodes["a"]
    source = HOST if same_source else ATTACK_SOURCE
    connections, interval, asks = 40, 1.5, 6
    results: list[tuple[int, str, float]] = []
    with hostile.Slowloris((HOST, a.probe_port), connections, interval, source) as attack:
        deadline = time.monotonic() + 10
        while attack.open_now() < connections and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2 * interval)  # every connection has sent a byte or two
        for _ in range(asks):
            began = time.monotonic()
            results.append(hostile.http_get((HOST, a.probe_port), "/healthz/live", PROBE_TIMEOUT))
            time.sleep(max(0.0, interval - (time.monotonic() - began)))
        opened, reopened, open_at_end = attack.opened, attack.reopened, attack.open_now()
    failures = [r for r in results if r[0] != 200]
    say(
        f"  slowloris from {source}: {connections} connections ({reopened} reopened,"
        f" {open_at_end} open at the end); /healthz/live: "
        + ", ".join(f"{s or 'none'} in {t:.2f} s" for s, _, t in results)
    )
    return {
        "figure": (
            "slowloris_same_source_probe_failures" if same_source else "slowloris_probe_failures"
        ),
        "value": len(failures),
        "unit": f"requests of {asks}",
        "goal": "report" if same_source else 0,
        "connections": connections,
        "byte_every_s": interval,
        "attack_source": source,
        "probe_source": HOST,
        "request_timeout_s": PROBE_TIMEOUT,
        "slowest_s": round(max(t for _, _, t in results), 2),
        "failures": [why[:80] for s, why, _ in failures][:3],
        "attack_connections_opened": opened,
        "attack_connections_reopened": reopened,
    }


@dataclass(frozen=True)
class Surface:
    name: str
    target: str
    header: bytes
    filler: bytes
    # (cluster) -> (target pid, connect function), or a reason it cannot be found
    find: Callable[[Cluster], tuple[int, Callable[[], socket.socket]] | str]


def _find_probe(cl: Cluster) -> tuple[int, Callable[[], socket.socket]] | str:
    port = cl.nodes["a"].probe_port
    pid = hostile.listener_pid(port, cl.pids("a"))
    if pid is None:
        return f"no process of a listens on its probe port {port}"
    return pid, lambda: hostile.connect_tcp((HOST, port), ATTACK_SOURCE)


def _find_dist(cl: Cluster) -> tuple[int, Callable[[], socket.socket]] | str:
    port = cl.nodes["a"].dist_port
    pid = hostile.listener_pid(port, cl.pids("a"))
    if pid is None:
        return f"no process of a listens on its dist port {port}"
    return pid, lambda: hostile.connect_tcp((HOST, port), ATTACK_SOURCE)


def _find_thespian(cl: Cluster) -> tuple[int, Callable[[], socket.socket]] | str:
    pid = cl.worker("a")
    if pid is None:
        return "a's worker is not running"
    ports = [p for h, p in hostile.tcp_listeners(pid, cl.pids("a")) if h == HOST]
    if not ports:
        return f"a's worker {pid} listens on no TCP port of {HOST}"
    return pid, lambda: hostile.connect_tcp((HOST, ports[0]))


def _find_abstract(cl: Cluster) -> tuple[int, Callable[[], socket.socket]] | str:
    pid = cl.worker("a")
    if pid is None:
        return "a's worker is not running"
    names = hostile.abstract_listeners(pid)
    names.sort(key=lambda n: f"/{pid}." not in n)  # its own first, then inherited ones
    if not names:
        return f"a's worker {pid} listens on no abstract socket"
    return pid, lambda: hostile.connect_abstract(names[0])


SURFACES = [
    Surface(
        "probe port", "the process serving the probes", hostile.PROBE_HEADER, b"a", _find_probe
    ),
    Surface("dist port", "the dist process", hostile.DIST_HEADER, b"\0", _find_dist),
    Surface(
        "Thespian port",
        "the application's worker",
        hostile.thespian_header(100 * MIB),
        b"\0",
        _find_thespian,
    ),
    Surface(
        "abstract socket",
        "the application's worker",
        hostile.ABSTRACT_HEADER,
        b"\0",
        _find_abstract,
    ),
]


def rss_growth(cl: Cluster, surface: Surface, seconds: float, cap: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "figure": "preauth_rss_growth_mb",
        "surface": surface.name,
        "unit": "MiB",
        "goal": "<= 16",
        "target": surface.target,
        "connections": 100,
        "per_connection_mib": 100,
        "bounded_s": seconds,
        "safety_cap_mib": cap,
    }
    found = surface.find(cl)
    if isinstance(found, str):
        say(f"  {surface.name}: skipped: {found}")
        return {**out, "value": None, "skipped": found}
    pid, connect = found
    cpu0 = hostile.cpu_ns(pid)
    with hostile.RssPeak(pid) as peak:
        res = hostile.stream_flood(
            connect,
            surface.header,
            100 * MIB,
            100,
            seconds,
            stop=lambda: peak.over(cap) or peak.gone,
            filler=surface.filler,
            at_end=lambda: hostile.tcp_rx_queued(pid),
        )
        # after: once it is steady (what the target still had to read is read; at most 5 s)
        after = hostile.rss_mib(pid)
        deadline = time.monotonic() + 5
        while after is not None and time.monotonic() < deadline:
            time.sleep(0.5)
            now = hostile.rss_mib(pid)
            if now is None or abs(now - after) < 0.5:
                after = now
                break
            after = now
    cpu_s = (hostile.cpu_ns(pid) - cpu0) / 1e9
    unread = res.at_end / MIB if surface.name != "abstract socket" else None
    live = hostile.http_get((HOST, cl.nodes["a"].probe_port), "/healthz/live", PROBE_TIMEOUT)
    ended = "target gone" if peak.gone else ("safety cap" if res.ended == "stopped" else res.ended)
    growth = peak.peak - peak.before
    say(
        f"  {surface.name} -> {surface.target} ({pid}): RSS {peak.before:.0f} -> max"
        f" {peak.peak:.0f} -> after {after if after is None else round(after)} MiB;"
        f" {res.sent / MIB:.0f} MiB written over {res.connected} connections"
        + (f" ({unread:.0f} MiB of it unread at the end)" if unread is not None else "")
        + f", {res.failed} failed, {res.closed_by_peer} closed by the node, in"
        f" {res.seconds:.1f} s (ended: {ended}); target CPU {cpu_s:.1f} s; live after:"
        f" {live[0] or live[1]}"
    )
    return {
        **out,
        "value": round(growth, 1),
        "rss_before_mib": round(peak.before, 1),
        "rss_max_mib": round(peak.peak, 1),
        "rss_after_mib": None if after is None else round(after, 1),
        "sent_mib": round(res.sent / MIB, 1),
        "unread_at_end_mib": None if unread is None else round(unread, 1),
        "target_cpu_s": round(cpu_s, 2),
        "connected": res.connected,
        "connect_failures": res.failed,
        "closed_by_node": res.closed_by_peer,
        "ended": ended,
        "target_alive_after": alive(pid),
        "node_live_after": live[0] == 200,
    }


def fuzz(work: Path, count: int) -> dict[str, Any]:
    out = _fuzz(work, count)
    if "skipped" in out:
        say(f"  skipped: {out['skipped']}")
    return out


def _fuzz(work: Path, count: int) -> dict[str, Any]:
    line: dict[str, Any] = {"figure": "fuzz_system_crashes", "unit": "crashes", "goal": 0}
    try:
        fz = importlib.import_module("tests.harness.fuzz")
    except ImportError as exc:
        return {**line, "value": None, "skipped": f"tests/harness/fuzz.py cannot run: {exc}"}
    if not hasattr(fz, "FuzzCluster") or not hasattr(fz, "run"):
        return {**line, "value": None, "skipped": "tests/harness/fuzz.py has no FuzzCluster, run"}
    d = work / "fuzz"
    d.mkdir()
    seed = int.from_bytes(os.urandom(4), "big")
    cluster = fz.FuzzCluster(d)
    try:
        cluster.start()
        deadline = time.monotonic() + 120
        while not cluster.ready():
            if time.monotonic() > deadline or not all(cluster.alive()):
                return {**line, "value": None, "skipped": "the fuzz cluster did not get ready"}
            time.sleep(0.5)
        verdict = fz.run(cluster, count, seed, timeout=900)
    finally:
        cluster.close()
    found = verdict.as_dict()
    say(
        f"  {found.get('sent')} messages (seed {seed}) in {verdict.seconds:.0f} s:"
        f" {len(verdict.crashes)} crashes, {len(verdict.restarted)} processes restarted,"
        f" {len(verdict.tick_problems)} tick problems of {verdict.ticks_checked} ticks,"
        f" nodes alive {verdict.alive}"
    )
    return {
        **line,
        "value": len(verdict.crashes),
        "restarted": len(verdict.restarted),
        "tick_problems": len(verdict.tick_problems),
        "ticks_checked": verdict.ticks_checked,
        "nodes_alive": verdict.alive,
        "sent": found.get("sent"),
        "planned": found.get("planned"),
        "seed": seed,
        "seconds": round(verdict.seconds, 1),
        "examples": [*verdict.crashes[:2], *verdict.restarted[:2], *verdict.tick_problems[:2]],
    }


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one CPU round, 5 s floods (~1 min)")
    ap.add_argument("--only", nargs="*", choices=FIGURES, help="these figures only")
    ap.add_argument("--seconds", type=float, help="bound of each flood (20; 5 with --quick)")
    ap.add_argument("--rss-cap", type=float, default=1024.0, help="safety stop of a flood (MiB)")
    ap.add_argument("--fuzz-count", type=int, help="fuzz messages (3000; 300 with --quick)")
    args = ap.parse_args()
    fuzz_count = args.fuzz_count or (300 if args.quick else 3000)
    wanted = set(args.only or FIGURES)
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    keep = bool(os.environ.get("OTPKIT_BENCH_KEEP"))
    work = Path(tempfile.mkdtemp(prefix="otpkit-bench-hostile-"))
    cl = Cluster(work)
    os.environ[MARKER_VAR] = cl.tag  # what the fuzz suite starts carries it too
    figures: list[dict[str, Any]] = []
    failed: list[str] = []

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with &
    load = HostLoad()
    t0 = time.monotonic()
    source = otpkit_source(cl.env())
    say(f"hostile: otpkit {source}")

    def phase(name: str, units: dict[str, str], run: Callable[[], list[dict[str, Any]]]) -> None:
        """Run one attack; one that fails yields its figures with ``null`` and the error
        (the run goes on, on a new cluster, and ends with status 1)."""
        say(f"{name}:")
        try:
            figures.extend(run())
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            failed.append(f"{name}: {why}")
            say(f"  FAILED: {why}")
            figures.extend(
                {"figure": f, "value": None, "unit": u, "error": why[:500]}
                for f, u in units.items()
            )
            cl.stop()
            cl.nodes = {}

    def rss_all() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for surface in SURFACES:
            last = out[-1] if out else {}
            if (last.get("rss_after_mib") or 0) - (last.get("rss_before_mib") or 0) > 16:
                say("  (the last flood left its target larger: a new cluster)")
                cl.restart()
            cl.ensure(f"the {surface.name} flood")
            out.append(rss_growth(cl, surface, seconds, args.rss_cap))
        return out

    def slow_all() -> list[dict[str, Any]]:
        cl.ensure("the slowloris")
        out = [slowloris(cl, same_source=False)]
        if not args.quick:
            cl.ensure("the slowloris from the same address")
            out.append(slowloris(cl, same_source=True))
        return out

    def cpu_all() -> list[dict[str, Any]]:
        cl.ensure("the pre-auth CPU rounds")
        return preauth_cpu(cl, args.quick, ATTACK_SOURCE)

    def fuzz_all() -> list[dict[str, Any]]:
        cl.stop()  # the fuzz suite runs a cluster of its own
        cl.nodes = {}
        return [fuzz(work, fuzz_count)]

    try:
        if "preauth_cpu_ms_per_mb" in wanted:
            phase("preauth_cpu_ms_per_mb", {"preauth_cpu_ms_per_mb": "ms per MiB"}, cpu_all)
        if "slowloris_probe_failures" in wanted:
            phase("slowloris_probe_failures", {"slowloris_probe_failures": "requests"}, slow_all)
        if "preauth_rss_growth_mb" in wanted:
            phase(
                f"preauth_rss_growth_mb (each flood bounded to {seconds:g} s)",
                {"preauth_rss_growth_mb": "MiB"},
                rss_all,
            )
        if "fuzz_system_crashes" in wanted:
            phase(
                f"fuzz_system_crashes ({fuzz_count} messages)",
                {"fuzz_system_crashes": "crashes"},
                fuzz_all,
            )
    finally:
        cl.stop()
        left = cl.kill_left()
        if left:
            failed.append(f"processes left behind (killed): {left}")
        say(
            f"hostile: {time.monotonic() - t0:.0f} s; {cl.generation} clusters ({cl.restarts}"
            f" after a node was found down or not ready, {cl.fresh} after a flood that left"
            f" its target larger); nodes' files: {work}" + ("" if keep or failed else " (removed)"),
            load.line(),
        )
        if not (keep or failed):
            shutil.rmtree(work, ignore_errors=True)
    for fig in figures:
        print(json.dumps({**fig, "otpkit": source}), flush=True)
    if failed:
        say("problems:", *failed)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
