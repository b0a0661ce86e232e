"""``otpkit run`` nodes in network namespaces, driven as an operator drives pods.

Built on :mod:`tests.harness.netns_cluster` (the hub, dnsmasq, the node namespaces, the
cuts): each node here is a real ``python -m otpkit run tests.harness.netns_run_cluster:root``
process in namespace ``<tag>-n<i>`` as ``myapp@10.10.0.i``, set up as the Kubernetes
example's StatefulSet sets a pod up::

    otpkit run tests.harness.netns_run_cluster:root --name myapp@10.10.0.i
        --discovery dns-a:myapp-headless.default.svc.cluster.local --dist-port 4370
        --expected-size 3 --probe-port 8080 --data-dir <workdir>/data-<i> (kept across
        restarts of the node: its volume) --log-dir <workdir>/logs      (OTPKIT_COOKIE)

The namespace's ``/etc/resolv.conf`` names the hub's dnsmasq (``/etc/netns/<ns>/``,
which ``ip netns exec`` mounts over it), as a pod's names the cluster DNS. The
application (:func:`root`) is one ``Scheduler`` (policy ``majority``) with one job firing
every second; its task (:func:`tick`) appends ``<tick iso> <tick epoch> <node> <os pid>
<start epoch>`` to a file every node shares (namespaces share the file system), which
the tests read (:func:`read_runs`, :func:`ticks_run_twice`, :func:`gaps`, ...).

The test process talks to a node only as an operator or a kubelet would: signals to the
``otpkit run`` process (whose PID is the one ``ip netns exec`` was started as), the HTTP
probes (``/healthz/ready``) from inside the node's namespace, ``ss`` in the namespace (who
listens on the dist port; which dist links are established), and the task's file.

Clean-up (:func:`run_cluster_in`): every ``otpkit run`` process started is stopped by its
PID (SIGTERM, then SIGKILL), the ``/etc/netns/<ns>`` files made are removed, and the
cluster's ``down`` removes the namespaces, killing what is left inside them (processes
only these nodes started), dnsmasq and the guard route, also when the test failed.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import otpkit
from otpkit.scheduler import Job, Scheduler, current_run
from tests.harness.netns_cluster import (
    COOKIE,
    DIST_PORT,
    HEADLESS,
    HUB_IP,
    PREFIX,
    Cluster,
    _die_with_parent,
    _in_ns,
    _kill_if_in_ns,
    _ns_inode,
    cluster_in,
    name_of,
    sh,
    socket_in,
)
from tests.harness.polling import wait_for
from tests.harness.processes import REPO_ROOT

TARGET = "tests.harness.netns_run_cluster:root"
TASK = "tests.harness.netns_run_cluster:tick"
TICKS_ENV = "NETNS_RUN_TICKS"  # the shared file the task appends to
SRC_ENV = "NETNS_OTPKIT_SRC"  # the otpkit source tree the nodes run (default: this repo's)
JOB = "tick"
PROBE_PORT = 8080
EXPECTED_SIZE = 3
#: the example StatefulSet's terminationGracePeriodSeconds: SIGKILL after this long
KUBELET_GRACE = 40.0
ETC_NETNS = Path("/etc/netns")


# --------------------------------------------------------------------------- the application
# (runs inside the nodes, on whichever otpkit source tree they were started with)


def root() -> Any:
    """The nodes' root: one majority Scheduler, one job every second."""
    path = os.environ[TICKS_ENV]
    job = Job(JOB, "* * * * * *", TASK, kwargs={"path": path})
    return Scheduler([job], policy="majority")


def tick(path: str) -> None:
    """Append ``<tick iso> <tick epoch> <node> <os pid> <start epoch>`` (one write)."""
    started = time.time()
    run = current_run()
    node = otpkit.self().node
    when = run.tick if run is not None else None
    iso = when.isoformat() if when is not None else "-"
    epoch = f"{when.timestamp():.0f}" if when is not None else "-"
    line = f"{iso} {epoch} {node} {os.getpid()} {started:.3f}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the task's file


@dataclass(frozen=True)
class Run:
    """One line of the task's file: the scheduled tick, who ran it, when it started."""

    tick: str  # ISO time of the scheduled tick ("-" if the task saw no run context)
    node: str
    pid: int
    start: float

    @property
    def short(self) -> str:
        return short(self.node)

    def __str__(self) -> str:
        return f"{self.tick} on {self.short} (pid {self.pid}) at {clock(self.start)}"


def read_runs(path: Path) -> list[Run]:
    """Every run in the file, by start time (a line being written is skipped)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    rows = []
    for raw in text.splitlines():
        f = raw.split()
        if len(f) == 5:
            with contextlib.suppress(ValueError):
                rows.append(Run(f[0], f[2], int(f[3]), float(f[4])))
    return sorted(rows, key=lambda r: r.start)


def short(node: str) -> str:
    """``myapp@10.10.0.2`` -> ``n2``."""
    return f"n{node.rsplit('.', 1)[-1]}"


def index_of(node: str) -> int:
    return int(node.rsplit(".", 1)[-1])


def clock(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")[:-3]


def ticks_run_twice(runs: Iterable[Run]) -> dict[str, list[str]]:
    """``{tick: [node, ...]}`` for every scheduled tick that ran more than once."""
    by_tick: dict[str, list[str]] = {}
    for r in runs:
        by_tick.setdefault(r.tick, []).append(r.short)
    return {t: nodes for t, nodes in by_tick.items() if len(nodes) > 1}


def shared_seconds(runs: Iterable[Run]) -> dict[str, list[str]]:
    """Wall-clock seconds in which runs of two or more nodes started (two holders)."""
    by_second: dict[int, set[str]] = {}
    for r in runs:
        by_second.setdefault(math.floor(r.start), set()).add(r.short)
    return {clock(s): sorted(n) for s, n in sorted(by_second.items()) if len(n) > 1}


def holder_changes(runs: list[Run]) -> list[tuple[Run, Run]]:
    """Consecutive runs (by start) on different nodes: where the ticks moved."""
    return [(a, b) for a, b in itertools.pairwise(runs) if a.node != b.node]


@dataclass(frozen=True)
class Gap:
    seconds: float
    after: Run | None  # None: the window's start
    before: Run | None  # None: the window's end (still no run then)

    def __str__(self) -> str:
        a = str(self.after) if self.after else "window start"
        b = str(self.before) if self.before else "window end"
        return f"{self.seconds:.2f} s between [{a}] and [{b}]"


def gaps(runs: list[Run], since: float, until: float) -> list[Gap]:
    """Gaps between consecutive run starts over [since, until]: from the last run before
    ``since`` (or ``since``) to the first in the window, between those in it, and from the
    last to ``until``. The largest is how long no tick started."""
    before = [r for r in runs if r.start < since]
    inside = [r for r in runs if since <= r.start <= until]
    points: list[tuple[float, Run | None]] = [
        (before[-1].start, before[-1]) if before else (since, None),
        *((r.start, r) for r in inside),
    ]
    out = [Gap(b[0] - a[0], a[1], b[1]) for a, b in itertools.pairwise(points)]
    out.append(Gap(until - points[-1][0], points[-1][1], None))
    return out


def largest_gap(runs: list[Run], since: float, until: float) -> Gap:
    return max(gaps(runs, since, until), key=lambda g: g.seconds)


def steady_holder(runs: list[Run], since: float, count: int = 2) -> str | None:
    """The node that ran the last ``count`` runs started after ``since``, if one did."""
    recent = [r for r in runs if r.start > since][-count:]
    nodes = {r.node for r in recent}
    return nodes.pop() if len(recent) == count and len(nodes) == 1 else None


# --------------------------------------------------------------------------- the nodes


@dataclass
class Incarnation:
    """One ``otpkit run`` process of node ``index``."""

    index: int
    number: int
    proc: subprocess.Popen[bytes]
    out: Path
    started: float
    stopped: float | None = None
    how: str = ""  # how it ended: "exit 0", "exit 1", "SIGKILL (kubelet)", ...

    @property
    def running(self) -> bool:
        return self.proc.poll() is None


@dataclass
class RunCluster:
    """Three (``size``) ``otpkit run`` nodes in the namespaces of ``net``."""

    net: Cluster
    source: Path
    size: int = EXPECTED_SIZE
    nodes: dict[int, Incarnation] = field(default_factory=dict)  # the current ones
    history: list[Incarnation] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # processes outliving an otpkit run
    resolv: list[Path] = field(default_factory=list)  # the /etc/netns/<ns> folders made
    made_etc_netns: bool = False

    @property
    def workdir(self) -> Path:
        return self.net.workdir

    @property
    def ticks(self) -> Path:
        return self.workdir / "ticks"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def everyone(self) -> list[int]:
        return list(range(1, self.size + 1))

    def ns(self, i: int) -> str:
        return self.net.namespaces[i]

    def data_dir(self, i: int) -> Path:
        return self.workdir / f"data-{i}"

    def runs(self) -> list[Run]:
        return read_runs(self.ticks)

    # ------------------------------------------------------------ set-up

    def configure_dns(self) -> None:
        """Each node namespace's resolv.conf names the hub's dnsmasq (as a pod's names
        the cluster DNS); ``ip netns exec`` mounts ``/etc/netns/<ns>/resolv.conf``."""
        self.made_etc_netns = not ETC_NETNS.exists()
        for i in self.everyone:
            folder = ETC_NETNS / self.ns(i)
            folder.mkdir(parents=True, exist_ok=True)
            self.resolv.append(folder)
            (folder / "resolv.conf").write_text(f"nameserver {HUB_IP}\noptions timeout:1\n")

    def env(self, i: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTPKIT_") and k != "POD_IP"}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(self.source), str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        env["OTPKIT_COOKIE"] = COOKIE
        env[TICKS_ENV] = str(self.ticks)
        return env

    # ------------------------------------------------------------ a pod's life

    def start(self, i: int) -> Incarnation:
        """Start node ``i`` (the same name and data dir as any earlier incarnation)."""
        old = self.nodes.get(i)
        assert old is None or not old.running, f"node {i} still runs (pid {old.proc.pid})"
        self.log_dir.mkdir(exist_ok=True)
        self.data_dir(i).mkdir(exist_ok=True)
        number = sum(1 for inc in self.history if inc.index == i)
        out = self.workdir / f"node{i}.{number}.out"
        argv = [
            *("ip", "netns", "exec", self.ns(i), sys.executable, "-m", "otpkit", "run", TARGET),
            *("--name", name_of(i), "--discovery", f"dns-a:{HEADLESS}"),
            *("--dist-port", str(DIST_PORT), "--expected-size", str(EXPECTED_SIZE)),
            *("--probe-port", str(PROBE_PORT), "--data-dir", str(self.data_dir(i))),
            *("--log-dir", str(self.log_dir)),
        ]
        with open(out, "wb") as f:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=self.env(i),
                cwd=self.workdir,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only a prctl call
            )
        inc = Incarnation(i, number, proc, out, time.time())
        self.nodes[i] = inc
        self.history.append(inc)
        return inc

    def term(self, i: int) -> None:
        """SIGTERM node ``i``'s ``otpkit run`` (a pod deleted)."""
        self.nodes[i].proc.send_signal(signal.SIGTERM)

    def exited(self, i: int) -> bool:
        """True once node ``i``'s ``otpkit run`` ended; then whatever of the pod outlived
        it is ended too, as a container runtime does, and recorded in ``leftovers``."""
        inc = self.nodes[i]
        if inc.running:
            return False
        if inc.stopped is None:
            inc.stopped = time.time()
            code = inc.proc.returncode
            inc.how = inc.how or (f"exit {code}" if code >= 0 else f"signal {-code}")
            self._reap_pod(i)
        return True

    def wait_exit(self, i: int, grace: float = KUBELET_GRACE) -> str:
        """Wait for node ``i`` to end; SIGKILL it after ``grace`` (the kubelet's rule).
        Returns how it ended."""
        try:
            self.nodes[i].proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kubelet_kill(i)
        self.exited(i)
        return self.nodes[i].how

    def kubelet_kill(self, i: int) -> None:
        inc = self.nodes[i]
        if inc.running:
            inc.how = f"SIGKILL after {KUBELET_GRACE:.0f} s (kubelet)"
            inc.proc.kill()
            inc.proc.wait(10)

    def _reap_pod(self, i: int) -> None:
        ns = self.ns(i)
        inode = _ns_inode(ns)

        def left() -> list[int]:
            out = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            return [int(p) for p in out if p.isdigit() and _in_ns(int(p), inode)]

        with contextlib.suppress(AssertionError):
            wait_for(lambda: not left(), 3.0, f"node {i}'s processes end", 0.05)
        rest = left()
        if rest:
            self.leftovers.append(f"n{i}: {len(rest)} processes outlived otpkit run: {rest}")
            _kill_if_in_ns(rest, inode)
            wait_for(lambda: not left(), 10.0, f"node {i}'s leftovers die", 0.05)

    # ------------------------------------------------------------ what an operator sees

    def probe(self, i: int, path: str = "/healthz/ready") -> tuple[int, str]:
        """(status, body) of ``GET path`` on node ``i``'s probe port, asked from inside
        its namespace; (0, why) when nothing answered."""
        try:
            sock = socket_in(self.ns(i), socket.SOCK_STREAM)
        except OSError as exc:
            return 0, str(exc)
        try:
            sock.settimeout(3.0)
            sock.connect(("127.0.0.1", PROBE_PORT))
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        except OSError as exc:
            return 0, str(exc)
        finally:
            sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        fields = head.split()
        status = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
        return status, body.decode(errors="replace").strip()

    def wait_ready(self, indices: Iterable[int], timeout: float) -> dict[int, float]:
        """Wait until each node answers ``/healthz/ready`` 200; fail at once if one ends.
        Returns when each became ready (wall clock)."""
        waiting = set(indices)
        ready: dict[int, float] = {}

        def all_ready() -> bool:
            for i in sorted(waiting):
                if self.exited(i):
                    raise AssertionError(
                        f"node {i} ended ({self.nodes[i].how}) before it was ready{self.tail(i)}"
                    )
                if self.probe(i)[0] == 200:
                    ready[i] = time.time()
                    waiting.discard(i)
            return not waiting

        wait_for(
            all_ready,
            timeout,
            f"nodes {sorted(waiting)} answer /healthz/ready 200",
            0.1,
            lambda: f"{ {i: self.probe(i) for i in waiting} }\n{self.diagnostics()}",
        )
        return ready

    def dist_pid(self, i: int) -> int:
        """The OS pid of node ``i``'s dist process: the one listening on the dist port
        in its namespace (``ss -ltnp``), checked to be in that namespace."""
        out = sh(
            "ip", "netns", "exec", self.ns(i), "ss", "-Htlnp", "sport", "=", f":{DIST_PORT}"
        ).stdout
        pids = sorted({int(p) for p in re.findall(r"pid=(\d+)", out)})
        assert len(pids) == 1, f"node {i}: not one process listens on {DIST_PORT}: {out!r}"
        assert _in_ns(pids[0], _ns_inode(self.ns(i))), f"{pids[0]} is not in {self.ns(i)}"
        return pids[0]

    def links(self, i: int) -> set[int]:
        """The nodes node ``i`` has an established dist TCP link with (``ss`` in its
        namespace): connections of its dist process only (an active singleton's
        witnesses also reach the peers' dist ports, from another process)."""
        try:
            dist = self.dist_pid(i)
        except AssertionError:
            return set()  # no dist listens (it died, or the node is not up yet)
        out = sh("ip", "netns", "exec", self.ns(i), "ss", "-Htnp", "state", "established")
        peers = set()
        for line in out.stdout.splitlines():
            if f"pid={dist}," not in line:
                continue
            fields = [f for f in line.split() if not f.startswith("users:")]
            ends = [f.rpartition(":") for f in fields[-2:]]  # local, peer address
            if len(ends) != 2 or str(DIST_PORT) not in (ends[0][2], ends[1][2]):
                continue
            peer_ip = ends[1][0]
            if peer_ip.startswith("10.10.0.") and int(peer_ip.rsplit(".", 1)[1]) in self.everyone:
                peers.add(int(peer_ip.rsplit(".", 1)[1]))
        return peers

    def meshed(self, indices: Iterable[int] | None = None) -> bool:
        """Every node of ``indices`` (running) has a dist link to every other one."""
        group = set(self.everyone if indices is None else indices)
        return all(self.nodes[i].running and self.links(i) >= group - {i} for i in sorted(group))

    def wait_ticking(self, since: float, timeout: float, count: int = 2) -> str:
        """Wait until one node ran the last ``count`` runs started after ``since``;
        return its name."""
        name = wait_for(
            lambda: steady_holder(self.runs(), since, count),
            timeout,
            f"{count} runs in a row on one node after {clock(since)}",
            0.1,
            self.diagnostics,
        )
        return str(name)

    # ------------------------------------------------------------ diagnostics

    def log(self, i: int) -> str:
        try:
            return (self.log_dir / f"{name_of(i)}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, i: int, lines: int = 25) -> str:
        rows = [
            r
            for r in self.log(i).splitlines()
            if " ERROR " in r
            or " WARNING " in r
            or "quorum" in r
            or "singleton" in r.lower()
            or "scheduler" in r
        ]
        outs = [inc.out for inc in self.history if inc.index == i][-2:]
        text = "".join(f"\n--- {p.name} ---\n{p.read_text(errors='replace')[-1500:]}" for p in outs)
        return (
            f"\n--- n{i} log (quorum/singleton/scheduler/warnings, tail) ---\n"
            + "\n".join(rows[-lines:])
            + text
        )

    def diagnostics(self) -> str:
        runs = self.runs()
        lines = [f"last runs: {[str(r) for r in runs[-5:]]}", f"leftovers: {self.leftovers}"]
        for i in self.everyone:
            inc = self.nodes.get(i)
            state = "-" if inc is None else ("running" if inc.running else inc.how)
            links: Any = "-"
            if inc is not None and inc.running:
                try:
                    links = sorted(self.links(i))
                except subprocess.SubprocessError as exc:
                    links = f"? {exc}"
            lines.append(f"n{i} [{state}] ready={self.probe(i)} links={links}")
        lines.extend(self.tail(i) for i in self.everyone)
        return "\n".join(lines)

    # ------------------------------------------------------------ teardown

    def close(self, grace: float = 5.0) -> None:
        """Stop every ``otpkit run`` started (by its PID): SIGTERM, SIGKILL after
        ``grace``; remove the resolv.conf files made. Namespaces go with ``net.down``."""
        running = [inc for inc in self.history if inc.running]
        for inc in running:
            with contextlib.suppress(ProcessLookupError):
                inc.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for inc in running:
            try:
                inc.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                inc.proc.kill()
                inc.proc.wait(10)
        for folder in self.resolv:
            shutil.rmtree(folder, ignore_errors=True)
        self.resolv.clear()
        if self.made_etc_netns:
            with contextlib.suppress(OSError):
                ETC_NETNS.rmdir()  # only if empty


def sweep_resolv_confs() -> list[str]:
    """Remove ``/etc/netns/otpk-*`` folders whose namespace is gone (a crashed run's)."""
    removed = []
    if ETC_NETNS.is_dir():
        for folder in ETC_NETNS.glob(f"{PREFIX}*"):
            if not Path("/run/netns", folder.name).exists():
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(str(folder))
    return removed


def default_source() -> Path:
    """The otpkit source tree the nodes run: ``$NETNS_OTPKIT_SRC``, else this repo's."""
    return Path(os.environ.get(SRC_ENV) or REPO_ROOT / "src")


@contextlib.contextmanager
def run_cluster_in(
    workdir: Path, source: Path | None = None, size: int = EXPECTED_SIZE
) -> Iterator[RunCluster]:
    """A hub, dnsmasq serving the A records of all ``size`` nodes, ``size`` node
    namespaces whose resolver is that dnsmasq; no node started. Everything is removed
    afterwards, whatever happens."""
    sweep_resolv_confs()
    with cluster_in(workdir, hosts=size) as net:
        cluster = RunCluster(net, source or default_source(), size)
        try:
            cluster.configure_dns()
            net.set_records(cluster.everyone)
            yield cluster
        finally:
            cluster.close()


def pause_until(deadline: float) -> None:
    """Let time pass until the wall-clock ``deadline``: a planned duration of a scenario
    (a cut that lasts 6 s), never a wait for a condition."""
    while (left := deadline - time.time()) > 0:
        time.sleep(min(left, 0.5))
