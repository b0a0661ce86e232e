"""``/metrics`` and the probe port of three ``otpkit run`` nodes, read as a user reads
them: over HTTP, with ``prometheus_client``'s own parser.

Three nodes ``m@127.0.0.2``, ``m@127.0.0.3`` and ``m@127.0.0.4`` share one probe port
and one dist port (each binds its own address), find each other by a static list, and
run ``tests.harness.metrics_app:root``: a majority Scheduler whose job appends
``<tick> <node>`` to a file every second, and a supervisor ``app`` with one worker. The
scenarios share the cluster (module scope), in order:

a. each node's probe port answers on its own address, 127.0.0.1 is not bound, and only
   the ``otpkit run`` program holds the listening socket (no process of the node
   inherited it);
b. the runs counted on the nodes' ``/metrics`` add up to the lines of the job's file,
   and exactly one node reports itself the singleton's holder: the one that runs;
c. a SIGKILL of a node's worker adds one restart on that node;
d. a SIGKILL of every process of the holder's node: another node becomes the holder
   (once the lease runs out), the survivors report their link to it down, and the job
   goes on, each tick once.

Every node's output (``<key>.out``) and log (``logs-<key>/<name>.log``) are in the
module's directory; a failed wait shows their tails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from otpkit.actors import proc_stat
from tests.harness.metrics_app import JOB, SCHEDULER, TICKS_ENV, WORKER_ENV
from tests.harness.metrics_read import Series, parse, value
from tests.harness.polling import wait_for
from tests.harness.processes import REPO_ROOT, alive

pytestmark = pytest.mark.cluster

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
NAMES = tuple(f"m@{h}" for h in HOSTS)
TARGET = "tests.harness.metrics_app:root"
COOKIE = "metrics-test-cookie-0123456789"
BOUND = 30.0
#: A holder lost: its lease runs out (a 3 s term and its margin), then an election.
FAILOVER_BOUND = 60.0
LISTEN = "0A"  # a listening socket's state in /proc/net/tcp


def free_port() -> int:
    """A port free on every address (the wildcard bind checks them all)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def group_pids(pgid: int) -> list[int]:
    """Live processes of process group ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(entry)
            if fields is not None and fields[0] != b"Z" and int(fields[2]) == pgid:
                out.append(int(entry))
    return out


def listeners(port: int) -> dict[str, int]:
    """``{address: socket inode}`` of the IPv4 TCP sockets listening on ``port``."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, _, hex_port = fields[1].partition(":")
        if fields[3] == LISTEN and int(hex_port, 16) == port:
            host = socket.inet_ntoa(struct.pack("=I", int(address, 16)))
            found[host] = int(fields[9])
    return found


def holders_of(inode: int, pids: list[int]) -> list[int]:
    """The processes of ``pids`` with a file descriptor on socket ``inode``."""
    link = f"socket:[{inode}]"
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == link:
                        out.append(pid)
                        break
    return out


def get(host: str, port: int, path: str) -> tuple[int, str]:
    """(status, body) of ``GET path``; (0, why) when nothing answered."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def runs_finished(series: Series) -> float:
    labels = {"scheduler": SCHEDULER, "job": JOB, "outcome": "finished"}
    return value(series, "otpkit_job_runs_total", **labels) or 0.0


def holding(series: Series) -> float | None:
    return value(series, "otpkit_singleton_holder", singleton=SCHEDULER)


def restarts(series: Series) -> float:
    labels = {"supervisor": "app", "child": "worker"}
    return value(series, "otpkit_supervisor_restarts_total", **labels) or 0.0


class Node:
    """One ``otpkit run`` process, the leader of its own process group; its kernel's
    group (the Thespian admin's, made by its daemonizing) holds the node's actors."""

    def __init__(self, key: str, host: str, proc: subprocess.Popen[bytes], out: Path) -> None:
        self.key = key
        self.host = host
        self.name = f"m@{host}"
        self.proc = proc
        self.out = out
        self.kernel_pgid: int | None = None

    def groups(self) -> list[int]:
        return [self.proc.pid] + ([self.kernel_pgid] if self.kernel_pgid else [])

    def pids(self) -> list[int]:
        return sorted({p for g in self.groups() for p in group_pids(g)})

    def kill(self) -> None:
        """SIGKILL every process of the node at once (a pod's container killed), again
        while any is left (one forked meanwhile), until none is."""

        def gone() -> bool:
            for group in self.groups():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            return not self.pids()

        wait_for(gone, 10, f"every process of {self.name} is gone", 0.05)
        self.proc.wait(10)


class Cluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.dist_port = free_port()
        self.probe_port = free_port()
        while self.probe_port == self.dist_port:
            self.probe_port = free_port()
        self.ticks = workdir / "ticks"
        self.nodes: list[Node] = []

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTPKIT_")}
        env.pop("POD_IP", None)
        env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
        env["OTPKIT_COOKIE"] = COOKIE
        env[TICKS_ENV] = str(self.ticks)
        for i, host in enumerate(HOSTS):
            key = f"n{i}"
            argv = [
                *(sys.executable, "-m", "otpkit", "run", TARGET, "--name", f"m@{host}"),
                *("--discovery", f"static:{','.join(NAMES)}", "--expected-size", "3"),
                *("--dist-port", str(self.dist_port), "--probe-port", str(self.probe_port)),
                *("--data-dir", str(self.workdir / f"data-{key}")),
                *("--log-dir", str(self.workdir / f"logs-{key}")),
            ]
            out = self.workdir / f"{key}.out"
            with open(out, "wb") as f:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    env={**env, WORKER_ENV: str(self.worker_file(i))},
                    start_new_session=True,
                )
            self.nodes.append(Node(key, host, proc, out))

    def worker_file(self, i: int) -> Path:
        return self.workdir / f"worker-n{i}"

    def wait_ready(self) -> None:
        for node in self.nodes:
            wait_for(
                lambda n=node: self.probe(n, "/healthz/ready") == (200, "ready"),
                90,
                f"{node.name} is ready",
                0.2,
                self.diagnose,
            )
            _status, body = wait_for(
                lambda n=node: (
                    (r := self.probe(n, "/healthz/live"))[1].startswith("live: kernel") and r
                ),
                BOUND,
                f"{node.name}'s kernel answers",
                0.2,
                self.diagnose,
            )
            node.kernel_pgid = os.getpgid(int(body.split()[2]))

    def probe(self, node: Node, path: str) -> tuple[int, str]:
        status, body = get(node.host, self.probe_port, path)
        return status, body.strip()

    def scrape(self, node: Node) -> Series | None:
        """The node's ``/metrics``, parsed; None if it did not answer 200."""
        status, body = get(node.host, self.probe_port, "/metrics")
        return parse(body) if status == 200 else None

    def lines(self) -> list[tuple[str, str]]:
        """``(tick, node)`` of each whole line of the job's file."""
        try:
            text = self.ticks.read_text()
        except FileNotFoundError:
            return []
        rows = [tuple(line.split()) for line in text.splitlines(keepends=True) if line[-1:] == "\n"]
        return [(r[0], r[1]) for r in rows if len(r) == 2]

    def worker(self, i: int) -> int | None:
        """The OS pid the node's worker last said."""
        with contextlib.suppress(FileNotFoundError):
            last = self.worker_file(i).read_text().splitlines()[-1:]
            if last and last[0].startswith("started "):
                return int(last[0].split()[1])
        return None

    def running(self) -> list[Node]:
        return [n for n in self.nodes if n.proc.poll() is None]

    def diagnose(self) -> str:
        parts = [f"job file: {self.lines()[-5:]}"]
        for node in self.nodes:
            log = self.workdir / f"logs-{node.key}" / f"{node.name}.log"
            for path in (node.out, log):
                with contextlib.suppress(FileNotFoundError):
                    tail = path.read_text(errors="replace").splitlines()[-15:]
                    parts.append(f"--- {path.name} ({node.name}) ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def close(self) -> None:
        """SIGTERM each node still running; SIGKILL what is left after 30 s, and every
        process left in the nodes' groups."""
        for node in self.running():
            node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for node in self.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            if node.proc.poll() is None or node.pids():
                node.kill()
        for node in self.nodes:
            wait_for(lambda n=node: not n.pids(), 10, f"{node.name}'s processes are gone", 0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = Cluster(tmp_path_factory.mktemp("metrics"))
    try:
        started.start()
        started.wait_ready()
        yield started
    finally:
        started.close()


def test_each_node_serves_its_probes_on_its_own_address_only(cluster: Cluster) -> None:
    port = cluster.probe_port
    for node in cluster.nodes:
        status, body = cluster.probe(node, "/healthz/live")
        assert status == 200 and body.startswith("live: kernel"), (node.name, status, body)
        series = wait_for(
            lambda n=node: cluster.scrape(n), BOUND, f"{node.name} serves /metrics", 0.2
        )
        assert value(series, "otpkit_quorum_members") == 3, node.name
    # three nodes on one port: each binds its own address, none the loopback's
    bound = listeners(port)
    assert set(HOSTS) <= set(bound), bound
    assert "127.0.0.1" not in bound and "0.0.0.0" not in bound, bound
    assert get("127.0.0.1", port, "/healthz/live")[0] == 0
    # the listening socket is the otpkit run program's alone: no process of the node
    # (forked after it was bound) holds it
    for node in cluster.nodes:
        pids = node.pids()
        assert node.proc.pid in pids and len(pids) > 5, (node.name, pids)
        assert holders_of(bound[node.host], pids) == [node.proc.pid], node.name


def test_runs_on_metrics_add_up_to_the_jobs_file(cluster: Cluster) -> None:
    seen: dict[str, float] = {}

    def agree() -> list[float | None] | None:
        """Each node's holder gauge, at a moment when the runs counted on the nodes
        equal the file's lines (read before and after the nodes)."""
        before = cluster.lines()
        scrapes = [cluster.scrape(n) for n in cluster.nodes]
        after = cluster.lines()
        counted = sum(runs_finished(s) for s in scrapes if s is not None)
        seen.update(file=len(after), counted=counted)
        if None in scrapes or not len(before) == len(after) == counted >= 3:
            return None
        return [holding(s) for s in scrapes if s is not None]

    holders = wait_for(
        agree, BOUND, "the runs counted equal the file's lines", 0.2, lambda: str(seen)
    )
    assert holders.count(1.0) == 1 and holders.count(0.0) == 2, holders
    holder = cluster.nodes[holders.index(1.0)]
    # the holder runs the job (its run strategy is local)
    assert cluster.lines()[-1][1] == holder.name, (holder.name, cluster.lines()[-3:])


def test_a_worker_sigkill_adds_one_restart_on_its_node(cluster: Cluster) -> None:
    i = 1
    node = cluster.nodes[i]
    before = [cluster.scrape(n) for n in cluster.nodes]
    assert all(s is not None for s in before)
    counts = [restarts(s) for s in before if s is not None]
    pid = wait_for(lambda: cluster.worker(i), BOUND, "the worker said its pid")
    assert alive(pid)
    os.kill(pid, signal.SIGKILL)
    new = wait_for(
        lambda: (p := cluster.worker(i)) != pid and p,
        BOUND,
        "a new worker says its pid",
        0.1,
        cluster.diagnose,
    )
    assert alive(new)
    wait_for(
        lambda: (s := cluster.scrape(node)) is not None and restarts(s) == counts[i] + 1,
        BOUND,
        f"{node.name} counts the restart",
        0.2,
        lambda: f"before: {counts}\n{cluster.diagnose()}",
    )
    after = [restarts(cluster.scrape(n) or {}) for n in cluster.nodes]
    assert after == [c + (j == i) for j, c in enumerate(counts)], (counts, after)


def test_a_holder_sigkill_moves_the_holder_and_downs_its_links(cluster: Cluster) -> None:
    scrapes = {n.name: cluster.scrape(n) for n in cluster.nodes}
    held = [name for name, s in scrapes.items() if s is not None and holding(s) == 1.0]
    assert len(held) == 1, {name: s and holding(s) for name, s in scrapes.items()}
    holder = next(n for n in cluster.nodes if n.name == held[0])
    survivors = [n for n in cluster.nodes if n is not holder]
    down = {"peer": holder.name, "state": "down"}
    downs = {
        n.name: value(scrapes[n.name] or {}, "otpkit_dist_link_changes_total", **down) or 0.0
        for n in survivors
    }
    assert all(value(scrapes[n.name] or {}, "otpkit_dist_link_up", peer=holder.name) == 1.0
               for n in survivors), scrapes  # fmt: skip

    lines_at_kill = len(cluster.lines())
    holder.kill()

    def new_holder() -> Node | None:
        now = {n.name: cluster.scrape(n) for n in survivors}
        ones = [name for name, s in now.items() if s is not None and holding(s) == 1.0]
        if not ones:
            return None
        assert len(ones) == 1, f"two holders: {ones}"
        return next(n for n in survivors if n.name == ones[0])

    successor = wait_for(new_holder, FAILOVER_BOUND, "a survivor holds", 0.2, cluster.diagnose)
    for node in survivors:
        wait_for(
            lambda n=node: (
                (s := cluster.scrape(n)) is not None
                and value(s, "otpkit_dist_link_up", peer=holder.name) == 0.0
                and (value(s, "otpkit_dist_link_changes_total", **down) or 0.0) > downs[n.name]
                and s
            ),
            BOUND,
            f"{node.name} reports its link to {holder.name} down",
            0.2,
            cluster.diagnose,
        )
    # the job goes on, on the new holder, and no tick runs twice
    wait_for(
        lambda: [n for _, n in cluster.lines()[lines_at_kill:]].count(successor.name) >= 3,
        BOUND,
        f"{successor.name} runs the job",
        0.2,
        cluster.diagnose,
    )
    ticks = [t for t, _ in cluster.lines()]
    twice = sorted({t for t in ticks if ticks.count(t) > 1})
    assert not twice, f"ticks run twice: {twice}"
    later = [n for _, n in cluster.lines()[lines_at_kill:]]
    assert later.count(holder.name) <= 1, later  # at most its run under way at the kill
    now = [holding(cluster.scrape(n) or {}) for n in survivors]
    assert now == [float(n is successor) for n in survivors], now
