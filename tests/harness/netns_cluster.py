"""A dist cluster in network namespaces, with a real DNS server and real partitions.

Layout (the netns recipe: see ARCHITECTURE.md, *Tests and benchmarks*)::

    root namespace: guard route "unreachable 10.10.0.0/24" while a cluster lives
    hub  (<tag>-hub): bridge br0 10.10.0.254/24 + dnsmasq on 10.10.0.254:53 serving
                      HEADLESS from a hosts dir (one A record per pod)
    node i (<tag>-n<i>): eth0 10.10.0.i/24 (veth into br0), lo up; runs
                      tests.harness.node_driver as "myapp@10.10.0.i", dist port 4370,
                      finding its peers with DnsA(HEADLESS) every 0.5 s

Typical use (``cluster`` fixture in tests/netns/conftest.py)::

    cluster.set_records([1, 2, 3])          # dnsmasq now answers 10.10.0.1..3
    for i in (1, 2, 3):
        cluster.start(i)
    cluster.wait_view(cluster.parts([1, 2, 3]))   # {name: nodes()} of every live node
    cluster.isolate(1)                       # or cut(1, 2), cut_one_way(1, 2)
    cluster.wait_view(cluster.parts([1], [2, 3]))
    cluster.heal()

Nodes are addressed by their index ``i`` (or the :class:`NetnsNode`). Cuts drop packets on
the nftables *input* hook inside the receiving node's namespace (table ``inet otpk_cut``),
so a sender's ``sendto()`` never fails with EPERM, as in a real split.

Clean-up: :meth:`Cluster.down` (called from the fixture's ``finally``) ends every process
the cluster started (by its PID, and only if it still lives in the cluster's namespace),
deletes the namespaces (and with them the nft tables) and the guard route. Names carry the
owning pytest's PID (``otpk-<pid>-...``, guard route metric ``<pid>``), so :func:`sweep`
removes what a crashed run left behind without touching a concurrent run's cluster.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.harness.polling import hold, wait_for
from tests.harness.processes import alive, child_env, python_module

PREFIX = "otpk-"
INSTALL = "apt-get install -y dnsmasq-base nftables"
HEADLESS = "myapp-headless.default.svc.cluster.local"
APP = "myapp"
SUBNET = "10.10.0.0/24"
HUB_IP = "10.10.0.254"
DNS_PORT = 53
DIST_PORT = 4370
COOKIE = "netns-cookie-0123456789"
POLL = 0.5  # discovery poll_interval of the nodes
PRUNE_AFTER = 3
NFT_TABLE = "otpk_cut"
NODE_DRIVER = "tests.harness.node_driver"

Completed = subprocess.CompletedProcess[str]

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: one system call, no locks, no imports.
    (Kept across ``ip netns exec``'s exec; the child must not change its uid/gid.)"""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


# --------------------------------------------------------------------------- helpers


def sh(
    *args: str, check: bool = True, stdin: str | None = None, env: dict[str, str] | None = None
) -> Completed:
    return subprocess.run(
        list(args), capture_output=True, text=True, check=check, timeout=30, input=stdin, env=env
    )


def need_tools() -> None:
    """Skip (saying what to install) unless this run can build a cluster."""
    if os.geteuid() != 0:
        pytest.skip("netns tier needs root (run as root, as CI does)")
    missing = [tool for tool in ("ip", "nft", "dnsmasq") if _which(tool) is None]
    if missing:
        pytest.skip(f"netns tier needs {', '.join(missing)}: {INSTALL} iproute2")


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def pid_alive(pid: int) -> bool:
    return alive(pid)


def socket_in(ns: str, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    """A socket created inside namespace ``ns`` (usable from any thread afterwards):
    a short-lived thread enters the namespace, makes the socket and ends."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["sock"] = socket.socket(socket.AF_INET, kind)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"setns-{ns}")
    thread.start()
    thread.join(10)
    if "error" in box:
        raise box["error"]
    return box["sock"]


def _ns_inode(ns: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return None


def _in_ns(pid: int, inode: int | None) -> bool:
    """True if process ``pid`` lives and is in the network namespace with ``inode``."""
    if inode is None or not pid_alive(pid):
        return False
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == inode
    except OSError:
        return False


def _kill_if_in_ns(pids: Iterable[int], inode: int | None, sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        if _in_ns(pid, inode):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _owner(name: str) -> int | None:
    """The pytest PID encoded in a namespace name ``otpk-<pid>-...``, if any."""
    rest = name[len(PREFIX) :]
    head = rest.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _guard_routes() -> list[int]:
    """Metrics of the guard routes ``unreachable 10.10.0.0/24 metric M`` in the root ns."""
    out = sh("ip", "-o", "route", "show", "type", "unreachable", check=False).stdout
    metrics = []
    for line in out.splitlines():
        fields = line.split()
        if SUBNET in fields and "metric" in fields:
            metrics.append(int(fields[fields.index("metric") + 1]))
    return metrics


def sweep(include_own: bool = False) -> list[str]:
    """Remove what an earlier (crashed) run left: namespaces ``otpk-*`` whose owner is gone
    - first ending the processes inside them, which that run started - and guard routes
    whose metric names a gone owner. With ``include_own``, this run's leftovers too.
    Returns what it removed."""
    removed: list[str] = []
    me = os.getpid()

    def stale(owner: int | None) -> bool:
        if owner is None:  # an older name without an owner: nobody can still use it safely
            return True
        if owner == me:
            return include_own
        return not pid_alive(owner)

    out = sh("ip", "netns", "list", check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX) or not stale(_owner(name)):
            continue
        inode = _ns_inode(name)
        pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
        _kill_if_in_ns((int(p) for p in pids if p.isdigit()), inode)
        sh("ip", "netns", "del", name, check=False)
        removed.append(f"netns {name}")
    for metric in _guard_routes():
        if metric > 0 and stale(metric):
            sh("ip", "route", "del", "unreachable", SUBNET, "metric", str(metric), check=False)
            removed.append(f"route unreachable {SUBNET} metric {metric}")
    return removed


def name_of(i: int) -> str:
    return f"{APP}@{ip_of(i)}"


def ip_of(i: int) -> str:
    if not 1 <= i <= 250:
        raise ValueError(f"node index {i} not in 1..250")
    return f"10.10.0.{i}"


# --------------------------------------------------------------------------- a node


class NetnsNode:
    """One ``tests.harness.node_driver`` process in namespace ``ns``, driven by JSON lines."""

    def __init__(
        self,
        index: int,
        ns: str,
        workdir: Path,
        dns: bool = True,
        cookie: str = COOKIE,
        poll: float = POLL,
        prune_after: int = PRUNE_AFTER,
        start_timeout: float = 60.0,
        extra: tuple[str, ...] = (),
        wait: bool = True,
        start_tolerates: tuple[str, ...] = (),
    ) -> None:
        """``start_tolerates``: substrings of ERROR lines that do not fail the start (a
        supervised child's exit that its supervisor restarts, where a test expects it)."""
        self.index = index
        self.ns = ns
        self.name = name_of(index)
        self.ip = ip_of(index)
        self.log_dir = workdir / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.log_path = self.log_dir / f"{self.name}.log"
        # a restarted node appends to its earlier incarnation's log: judge only its own lines
        self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._start_tolerates = start_tolerates
        self.stderr_path = workdir / f"node{index}.stderr"
        self.frozen: list[int] = []
        self.info: dict[str, Any] = {}
        self._inode = _ns_inode(ns)
        self._buf = b""
        args = [self.name, str(DIST_PORT), str(self.log_dir), cookie]
        if dns:
            args += [
                "--dns-a",
                HEADLESS,
                "--ns",
                HUB_IP,
                "--ns-port",
                str(DNS_PORT),
                "--poll",
                str(poll),
                "--prune-after",
                str(prune_after),
            ]
        args += list(extra)
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *python_module(NODE_DRIVER, *args)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=child_env(),
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only a prctl call
            )
        self._start_timeout = start_timeout
        if wait:
            self.wait_ready()

    def wait_ready(self) -> NetnsNode:
        """Wait for the node's ready line (``wait=False`` starts several side by side)."""
        try:
            self.info = json.loads(self._readline(self._start_timeout, self._start_failure))
        except BaseException:
            self.close()
            raise
        self.echo = self.info["echo"]
        return self

    def _start_failure(self) -> str | None:
        """An error the node logged while starting (its start would only time out)."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_from)
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            return None
        for line in text.splitlines():
            if (" ERROR " in line or " CRITICAL " in line) and not any(
                t in line for t in self._start_tolerates
            ):
                return line
        return None

    # ------------------------------------------------------------ talking to it

    def _readline(self, timeout: float, failed: Callable[[], str | None] | None = None) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no answer within {timeout}s{self._tail()}")
            why = failed() if failed is not None else None
            if why:
                raise AssertionError(f"{self.name} failed to start: {why}{self._tail()}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(
                        f"{self.name} ended (status {self.proc.poll()}){self._tail()}"
                    )
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def cmd(self, timeout: float = 15.0, **kw: Any) -> Any:
        """Send one command (see node_driver.handle) and return its ``ok`` value."""
        if self.frozen:
            raise AssertionError(f"{self.name} is frozen (SIGSTOP): thaw it first")
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(kw) + "\n").encode())
        self.proc.stdin.flush()
        reply = json.loads(self._readline(timeout))
        assert "ok" in reply, f"{self.name}: {kw} -> {reply}"
        return reply["ok"]

    def nodes(self) -> list[str]:
        result: list[str] = self.cmd(op="nodes")
        return result

    def recv(self, timeout: float = 10.0) -> tuple[str, str] | None:
        """The next message in the node program's mailbox: (type name, repr), or None."""
        got = self.cmd(op="recv", t=timeout, timeout=timeout + 15)
        return None if got == ["timeout"] else (got[0], got[1])

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _tail(self, lines: int = 30) -> str:
        text = self.log().splitlines()[-lines:]
        try:
            err = self.stderr_path.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            err = []
        return (
            f"\n--- {self.name} log (tail) ---\n"
            + "\n".join(text)
            + (f"\n--- stderr ---\n{chr(10).join(err)}" if err else "")
        )

    # ------------------------------------------------------------ its processes

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def _pids(self) -> list[int]:
        """The driver and every os process of the node that still lives in its namespace."""
        pids = [self.proc.pid, *self.info.get("pids", []), *self.frozen]
        return sorted({p for p in pids if _in_ns(p, self._inode)})

    def freeze(self) -> None:
        """SIGSTOP every process of the node (its dist thread included)."""
        current = set(self.cmd(op="pids")) | {self.proc.pid}
        self.frozen = sorted(p for p in current if _in_ns(p, self._inode))
        for pid in self.frozen:
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.frozen:
            if _in_ns(pid, self._inode):
                os.kill(pid, signal.SIGCONT)
        self.frozen = []

    def term(self) -> None:
        """SIGTERM the node program: node_driver stops the node gracefully (a pod's
        termination)."""
        os.kill(self.proc.pid, signal.SIGTERM)

    def kill9(self) -> None:
        """SIGKILL the node program (its processes die with it: the node's own rule)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """A clean stop: end of stdin makes node_driver call ``node.stop()`` and exit."""
        self.thaw()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not stop in {timeout}s{self._tail()}") from None
        finally:
            self.close()

    def close(self) -> None:
        """Kill whatever is left of the node (PIDs it started, still in its namespace)."""
        self.thaw()
        for stream in (self.proc.stdin,):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        _kill_if_in_ns(self._pids(), self._inode)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()
        # the node's Thespian processes die with their parent; make sure
        deadline = time.monotonic() + 10
        while self._pids() and time.monotonic() < deadline:
            _kill_if_in_ns(self._pids(), self._inode)
            time.sleep(0.02)


# --------------------------------------------------------------------------- the cluster


class Cluster:
    """A hub with dnsmasq and ``hosts`` node namespaces; see the module docstring."""

    def __init__(self, workdir: Path, hosts: int = 3) -> None:
        self.workdir = workdir
        self.tag = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.hub = f"{self.tag}-hub"
        self.hosts = hosts
        self.namespaces: dict[int, str] = {}  # index -> namespace
        self.made: list[str] = []  # namespaces made, in order
        self.guard = False
        self.nodes: dict[int, NetnsNode] = {}  # every node started (also stopped ones)
        self._cuts: set[tuple[int, int]] = set()  # (src, dst): dst drops what src sends
        self.hostsdir = workdir / "hosts.d"
        self.dns_log = workdir / "dnsmasq.log"
        self.dnsmasq: subprocess.Popen[bytes] | None = None
        self._serial = 0
        self.records: list[int] = []

    # ------------------------------------------------------------ setup / teardown

    def up(self) -> Cluster:
        self.hostsdir.mkdir(exist_ok=True)
        self._install_records([])
        sh("ip", "route", "add", "unreachable", SUBNET, "metric", str(os.getpid()))
        self.guard = True
        sh("ip", "netns", "add", self.hub)
        self.made.append(self.hub)
        sh("ip", "-n", self.hub, "link", "set", "lo", "up")
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        # a fixed MAC: else the bridge takes the lowest MAC of its ports and changes it
        # when a node is added later, and the nodes' ARP entries for the hub go stale
        sh("ip", "-n", self.hub, "link", "set", "br0", "address", "02:00:0a:0a:00:fe")
        sh("ip", "-n", self.hub, "addr", "add", f"{HUB_IP}/24", "dev", "br0")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i in range(1, self.hosts + 1):
            self.add_host(i)
        self.start_dns()
        return self

    def add_host(self, i: int) -> str:
        """Namespace ``<tag>-n<i>`` at 10.10.0.i on the bridge (made once)."""
        if i in self.namespaces:
            return self.namespaces[i]
        ns = f"{self.tag}-n{i}"
        ip = ip_of(i)
        sh("ip", "netns", "add", ns)
        self.made.append(ns)
        self.namespaces[i] = ns
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        port = f"v{i}"  # the hub side; interface names are per namespace
        sh(
            "ip", "-n", self.hub, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", ns,
        )  # fmt: skip
        sh("ip", "-n", self.hub, "link", "set", port, "master", "br0")
        sh("ip", "-n", self.hub, "link", "set", port, "up")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        return ns

    def down(self) -> None:
        """Remove everything this cluster made; safe to call twice, and after a failure
        anywhere in :meth:`up`. Every step runs even if an earlier one failed."""
        errors: list[str] = []

        def step(what: str, fn: Callable[[], Any]) -> None:
            try:
                fn()
            except Exception as exc:
                errors.append(f"{what}: {type(exc).__name__}: {exc}")

        for node in list(self.nodes.values()):
            step(f"thaw {node.name}", node.thaw)
            if node.running and node.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    node.proc.stdin.close()  # a clean stop, all nodes at once
        deadline = time.monotonic() + 5
        for node in list(self.nodes.values()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(max(0.0, deadline - time.monotonic()))
            step(f"close {node.name}", node.close)
        step("stop dnsmasq", self.stop_dns)
        for ns in reversed(self.made):
            step(f"remove {ns}", lambda ns=ns: self._remove_ns(ns))
        self.made.clear()
        self.namespaces.clear()
        if self.guard:
            step(
                "remove guard route",
                lambda: sh("ip", "route", "del", "unreachable", SUBNET, "metric", str(os.getpid())),
            )
            self.guard = False
        if errors:
            raise AssertionError("cluster teardown: " + "; ".join(errors))

    @staticmethod
    def _remove_ns(ns: str) -> None:
        inode = _ns_inode(ns)
        if inode is None:
            return
        # anything still inside was started by this cluster's processes
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        _kill_if_in_ns((int(p) for p in pids if p.isdigit()), inode)
        sh("ip", "netns", "del", ns)

    # ------------------------------------------------------------ DNS

    def start_dns(self, timeout: float = 15.0) -> None:
        """(Re)start dnsmasq in the hub and wait until it answers."""
        assert self.dnsmasq is None or self.dnsmasq.poll() is not None, "dnsmasq runs"
        binary = _which("dnsmasq")
        assert binary
        cmd = [
            "ip", "netns", "exec", self.hub, binary,
            "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-poll",
            "--no-hosts", f"--listen-address={HUB_IP}", "--bind-interfaces",
            f"--port={DNS_PORT}", "--local=/cluster.local/", "--local-ttl=0",
            f"--hostsdir={self.hostsdir}", "--pid-file=",
            # stay root: a change of uid would clear PR_SET_PDEATHSIG
            "--user=root", "--group=root", "--log-queries", "--log-facility=-",
        ]  # fmt: skip
        with open(self.dns_log, "ab") as log:
            self.dnsmasq = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only a prctl call
            )
        wait_for(
            lambda: (
                self.dnsmasq is not None
                and self.dnsmasq.poll() is None
                and self.dns_answer() is not None
            ),
            timeout,
            "dnsmasq answers",
            diagnose=lambda: self.dns_log.read_text(errors="replace")[-3000:],
        )

    def stop_dns(self) -> None:
        """Stop dnsmasq (SIGTERM, then SIGKILL) by its PID."""
        proc = self.dnsmasq
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    @property
    def dns_running(self) -> bool:
        return self.dnsmasq is not None and self.dnsmasq.poll() is None

    def dns_answer(self, timeout: float = 0.5) -> set[str] | None:
        """The A records dnsmasq serves for HEADLESS now (empty for NXDOMAIN), asked from
        inside the hub; None when it does not answer."""
        q = dns.message.make_query(HEADLESS, "A")
        sock = socket_in(self.hub)
        try:
            sock.setblocking(False)
            msg = dns.query.udp(q, HUB_IP, timeout=timeout, port=DNS_PORT, sock=sock)
        except (dns.exception.DNSException, OSError):
            return None
        finally:
            sock.close()
        if msg.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return None
        return {
            rd.address for rrset in msg.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset
        }

    def _install_records(self, indices: list[int]) -> None:
        self._serial += 1
        staged = self.workdir / f".pods.{self._serial}"
        staged.write_text("".join(f"{ip_of(i)} {HEADLESS}\n" for i in indices))
        os.replace(staged, self.hostsdir / "pods")  # atomic for dnsmasq's inotify
        self.records = sorted(indices)

    def set_records(self, indices: Iterable[int], timeout: float = 10.0) -> None:
        """Serve exactly the A records of nodes ``indices`` for HEADLESS (write a new file,
        rename it in) and wait until dnsmasq answers that set."""
        wanted = sorted(set(indices))
        self._install_records(wanted)
        if not self.dns_running:
            return  # it reads the hosts dir when it starts again
        want = {ip_of(i) for i in wanted}
        wait_for(
            lambda: self.dns_answer() == want,
            timeout,
            f"dnsmasq answers {sorted(want)} for {HEADLESS}",
        )

    # ------------------------------------------------------------ nodes

    def start(self, i: int, dns: bool = True, **kw: Any) -> NetnsNode:
        """Start node ``i`` (``myapp@10.10.0.i``) in its namespace; it finds its peers
        through DnsA unless ``dns=False``. Returns once it is up."""
        old = self.nodes.get(i)
        assert old is None or not old.running, f"node {i} already runs"
        ns = self.add_host(i)
        node = NetnsNode(i, ns, self.workdir, dns=dns, **kw)
        self.nodes[i] = node
        return node

    def node(self, i: int | NetnsNode) -> NetnsNode:
        return i if isinstance(i, NetnsNode) else self.nodes[i]

    def stop(self, i: int | NetnsNode) -> None:
        self.node(i).stop()

    def kill9(self, i: int | NetnsNode) -> None:
        self.node(i).kill9()

    def freeze(self, i: int | NetnsNode) -> None:
        self.node(i).freeze()

    def thaw(self, i: int | NetnsNode) -> None:
        self.node(i).thaw()

    def live(self) -> list[NetnsNode]:
        """Running, not frozen nodes, by index."""
        return [n for _, n in sorted(self.nodes.items()) if n.running and not n.frozen]

    def nodes_view(self) -> dict[str, list[str]]:
        """``{node name: its nodes()}`` for every running, not frozen node."""
        return {n.name: n.nodes() for n in self.live()}

    def parts(self, *groups: Iterable[int | NetnsNode]) -> dict[str, list[str]]:
        """The nodes_view of a cluster split into fully connected ``groups``:
        ``parts([1], [2, 3])`` -> {n1: [], n2: [n3], n3: [n2]}."""
        view: dict[str, list[str]] = {}
        for group in groups:
            names = [name_of(self._idx(m)) for m in group]
            for name in names:
                view[name] = sorted(n for n in names if n != name)
        return view

    def wait_view(self, want: dict[str, list[str]], timeout: float = 15.0, what: str = "") -> float:
        """Poll nodes_view() until it equals ``want``; return how long that took."""
        t0 = time.monotonic()
        wait_for(
            lambda: self._view_is(want),
            timeout,
            what or f"nodes_view() == {want}",
            interval=0.1,
            diagnose=lambda: f"wanted: {want}\n{self.diagnostics()}",
        )
        return time.monotonic() - t0

    def _view_is(self, want: dict[str, list[str]]) -> bool:
        return self.nodes_view() == want

    def hold_view(self, want: dict[str, list[str]], seconds: float, what: str = "") -> int:
        """nodes_view() equals ``want`` at every check for ``seconds``."""
        return hold(
            lambda: self._view_is(want),
            seconds,
            what or f"nodes_view() == {want}",
            diagnose=lambda: f"wanted: {want}\n{self.diagnostics()}",
        )

    # ------------------------------------------------------------ partitions

    def _idx(self, n: int | NetnsNode) -> int:
        return n.index if isinstance(n, NetnsNode) else int(n)

    def cut_one_way(self, src: int | NetnsNode, dst: int | NetnsNode) -> None:
        """``dst`` drops every packet from ``src`` (on its input hook); src still hears dst."""
        s, d = self._idx(src), self._idx(dst)
        assert s != d
        self._cuts.add((s, d))
        self._apply(d)

    def cut(self, a: int | NetnsNode, b: int | NetnsNode) -> None:
        """Cut the link a-b both ways."""
        x, y = self._idx(a), self._idx(b)
        assert x != y
        self._cuts |= {(x, y), (y, x)}
        self._apply(x)
        self._apply(y)

    def isolate(self, n: int | NetnsNode) -> None:
        """Cut ``n`` from every other host of the cluster (n | rest)."""
        x = self._idx(n)
        others = [i for i in self.namespaces if i != x]
        for i in others:
            self._cuts |= {(x, i), (i, x)}
        for i in [x, *others]:
            self._apply(i)

    def uncut(self, a: int | NetnsNode, b: int | NetnsNode) -> None:
        """Heal the link a-b only (both directions); other cuts stay."""
        x, y = self._idx(a), self._idx(b)
        self._cuts -= {(x, y), (y, x)}
        self._apply(x)
        self._apply(y)
        self._flush_neigh([x, y])

    def heal(self) -> None:
        """Delete every cut table and flush the neighbour tables."""
        self._cuts.clear()
        for i, ns in self.namespaces.items():
            if _ns_inode(ns) is not None:
                sh("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", NFT_TABLE,
                   check=False)  # fmt: skip
                assert NFT_TABLE not in self.nft_tables(i), f"{ns}: cut table still there"
        self._flush_neigh(list(self.namespaces))

    @property
    def cuts(self) -> set[tuple[int, int]]:
        """The one-way cuts in force, as (src, dst) pairs."""
        return set(self._cuts)

    def nft_tables(self, i: int) -> str:
        return sh("ip", "netns", "exec", self.namespaces[i], "nft", "list", "tables").stdout

    def _apply(self, d: int) -> None:
        """Rebuild node d's cut table from the cuts in force, atomically."""
        ns = self.namespaces[d]
        sources = sorted(ip_of(s) for s, dst in self._cuts if dst == d)
        script = f"add table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
        if sources:
            script += (
                f"table inet {NFT_TABLE} {{\n"
                "  chain input {\n"
                "    type filter hook input priority filter; policy accept;\n"
                f"    ip saddr {{ {', '.join(sources)} }} drop\n"
                "  }\n"
                "}\n"
            )
        res = sh("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=script, check=False)
        assert res.returncode == 0, f"nft in {ns} failed: {res.stderr}\n{script}"

    def _flush_neigh(self, indices: list[int]) -> None:
        for ns in [self.hub, *(self.namespaces[i] for i in indices)]:
            sh("ip", "-n", ns, "neigh", "flush", "all", check=False)

    # ------------------------------------------------------------ diagnostics

    def diagnostics(self) -> str:
        lines = [f"cuts (src, dst): {sorted(self._cuts)}; records: {self.records}"]
        for node in self.nodes.values():
            state = "frozen" if node.frozen else ("running" if node.running else "stopped")
            view: Any = "-"
            if node.running and not node.frozen:
                try:
                    view = node.nodes()
                except AssertionError as exc:
                    view = f"? {exc}"
            lines.append(f"{node.name} [{state}] nodes(): {view}")
        for node in self.nodes.values():
            lines.append(node._tail(15))
        return "\n".join(lines)


@contextlib.contextmanager
def cluster_in(workdir: Path, hosts: int = 3) -> Iterator[Cluster]:
    """A cluster that is taken down whatever happens (also when ``up`` fails half-way)."""
    need_tools()
    cluster = Cluster(workdir, hosts)
    try:
        yield cluster.up()
    finally:
        cluster.down()
