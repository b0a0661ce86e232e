"""DNS discovery against a real dnsmasq on loopback (``dnsmasq-base``, no system service).

dnsmasq serves ``cluster.local`` from a hosts directory (one file for the headless
service's pods, rewritten and renamed into place as pods come and go, one file for fixed
names) and a conf file with SRV records. Everything listens on 127.0.0.53/.54 at free
high ports; the addresses *in* the answers are loopback too, and nothing connects to them.

SERVFAIL comes from a real dnsmasq as well: a validating dnsmasq (``--dnssec`` with a made-up
root trust anchor) forwarding to the zone's dnsmasq, which serves it unsigned and refuses
the DS queries. The answer cannot be validated (dnsmasq logs it ABANDONED or BOGUS), so the
client gets SERVFAIL. (Pointing ``--server=`` at a closed port does not work: dnsmasq
never answers over UDP and closes TCP connections without an answer.)

Two failures dnsmasq cannot produce (it always serves TCP, and well-formed answers) use a
few lines of socket code instead: a UDP responder that always sets TC with nothing on TCP,
and one whose TCP side answers garbage.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import grp
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from otpkit.discovery import DnsA, DnsSrv, LookupResult, Peer, PeerTracker
from tests.harness import polling

pytestmark = pytest.mark.cluster

INSTALL = "apt-get update && apt-get install -y --no-install-recommends dnsmasq-base"
DNSMASQ = shutil.which("dnsmasq")

DNS_ADDR = "127.0.0.53"
UPSTREAM_ADDR = "127.0.0.54"
HEADLESS = "myapp-headless.default.svc.cluster.local"
BIG = "big-headless.default.svc.cluster.local"
SRV3 = "_dist._tcp.web-headless.default.svc.cluster.local"
SRV_HALF = "_dist._tcp.half-headless.default.svc.cluster.local"
DIST_PORT = 4370
FAST = 0.3  # lookup timeout where a timeout is the point of the test

# A made-up root key: every answer the validating dnsmasq sees is then BOGUS.
FAKE_ROOT_ANCHOR = ".,20326,8,2,E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D"

T = TypeVar("T")


def _need_dnsmasq() -> str:
    if DNSMASQ is None:
        pytest.skip(f"needs dnsmasq: {INSTALL}")
    return DNSMASQ


# this file's bounds: 5 s, polled every 5 ms
wait_until = functools.partial(polling.wait_until, timeout=5.0, interval=0.005)


def free_port(addr: str) -> int:
    """A port free for both UDP and TCP on ``addr``."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((addr, 0))
            port: int = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((addr, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free port on {addr}")


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the child
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: one system call, no locks, no imports."""
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


def raw_query(
    addr: str, port: int, name: str, rdtype: str = "A", timeout: float = 1.0
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)  # no EDNS: 512-byte UDP limit
    return dns.query.udp(q, addr, port=port, timeout=timeout)


def answer_ips(msg: dns.message.Message) -> set[str]:
    return {rd.address for rrset in msg.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset}


class Dnsmasq:
    """One dnsmasq process on loopback, killed by its PID when done.

    It runs as the current user and group (so it keeps PR_SET_PDEATHSIG: if pytest is
    killed, the kernel kills dnsmasq too, and it can read pytest's 0700 tmp dirs)."""

    def __init__(self, workdir: Path, addr: str, args: list[str]) -> None:
        self.workdir = workdir
        self.addr = addr
        self.args = args
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"dnsmasq-{addr}.log"

    def start(self) -> Dnsmasq:
        binary = _need_dnsmasq()
        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = free_port(self.addr)
            cmd = [
                binary,
                "--keep-in-foreground",
                "--bind-interfaces",
                f"--listen-address={self.addr}",
                f"--port={self.port}",
                "--no-resolv",
                "--no-poll",
                "--no-hosts",
                "--pid-file=",  # else it writes /run/dnsmasq.pid, and a 2nd one fails
                f"--user={user}",
                f"--group={group}",
                "--log-queries",
                "--log-facility=-",
                *self.args,
            ]
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - only a prctl call
                )
            if self._wait_answering():
                return self
            self.stop()
        raise AssertionError(f"dnsmasq did not start; log:\n{self.log.read_text()}")

    def _wait_answering(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(dns.exception.Timeout, OSError):
                raw_query(self.addr, self.port, "ready-probe.cluster.local", timeout=0.05)
                return True  # any answer (NXDOMAIN, SERVFAIL) means it is serving
            time.sleep(0.01)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


class Zone:
    """The served test zone: pods of HEADLESS (changeable), fixed names, SRV records."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.hostsdir = tmp_path / "hosts.d"
        self.hostsdir.mkdir()
        self._serial = 0
        fixed = [f"127.0.1.{i} {BIG}" for i in range(1, 61)]
        fixed += [
            f"127.0.20.1 web-0.{SRV3[11:]}",
            f"127.0.20.2 web-1.{SRV3[11:]}",
            f"127.0.20.3 web-2-real.{SRV3[11:]}",
            f"127.0.21.1 half-0.{SRV_HALF[11:]}",
        ]
        self._install("fixed", fixed)
        conf = tmp_path / "srv.conf"
        web = SRV3[11:]  # without "_dist._tcp."
        half = SRV_HALF[11:]
        conf.write_text(
            f"srv-host={SRV3},web-0.{web},4370\n"
            f"srv-host={SRV3},web-1.{web},4371\n"
            f"srv-host={SRV3},web-2.{web},4372\n"
            # web-2 is an alias: dnsmasq adds no glue for it, DnsSrv must resolve it
            f"cname=web-2.{web},web-2-real.{web}\n"
            f"srv-host={SRV_HALF},half-0.{half},4370\n"
            f"srv-host={SRV_HALF},half-1.{half},4371\n"  # no address anywhere
        )
        self.dnsmasq = Dnsmasq(
            tmp_path,
            DNS_ADDR,
            [
                f"--conf-file={conf}",
                "--local=/cluster.local/",
                "--local-ttl=0",
                f"--hostsdir={self.hostsdir}",
            ],
        )

    def _install(self, filename: str, lines: list[str]) -> None:
        """Write a new file beside the hosts dir and rename it in (atomic for dnsmasq)."""
        self._serial += 1
        staged = self.tmp / f".{filename}.{self._serial}"
        staged.write_text("".join(line + "\n" for line in lines))
        os.replace(staged, self.hostsdir / filename)

    def set_pods(self, ips: list[str]) -> None:
        """Serve exactly ``ips`` for HEADLESS, and wait until dnsmasq answers that set."""
        self._install("pods", [f"{ip} {HEADLESS}" for ip in ips])
        want = set(ips)

        def serving() -> bool:
            msg = raw_query(self.dnsmasq.addr, self.dnsmasq.port, HEADLESS)
            return answer_ips(msg) == want

        wait_until(serving, what=f"dnsmasq answers {sorted(want)} for {HEADLESS}")

    def dns_a(self, service: str = HEADLESS, timeout: float = 2.0) -> DnsA:
        return DnsA(
            service,
            app="app",
            port=DIST_PORT,
            nameserver=self.dnsmasq.addr,
            nameserver_port=self.dnsmasq.port,
            timeout=timeout,
        )

    def dns_srv(self, service: str) -> DnsSrv:
        return DnsSrv(
            service,
            app="app",
            nameserver=self.dnsmasq.addr,
            nameserver_port=self.dnsmasq.port,
        )


@pytest.fixture
def zone(tmp_path: Path) -> Iterator[Zone]:
    _need_dnsmasq()
    z = Zone(tmp_path)
    try:
        z.dnsmasq.start()
        yield z
    finally:
        z.dnsmasq.stop()


def peers_a(*ips: str) -> frozenset[Peer]:
    return frozenset(Peer(f"app@{ip}", ip, DIST_PORT) for ip in ips)


# --------------------------------------------------------------------------------------
# good answers
# --------------------------------------------------------------------------------------


def test_dns_a_returns_the_served_set(zone: Zone) -> None:
    zone.set_pods(["127.0.10.1", "127.0.10.2", "127.0.10.3"])
    assert zone.dns_a().lookup() == LookupResult(
        ok=True, peers=peers_a("127.0.10.1", "127.0.10.2", "127.0.10.3"), error=None
    )


def test_records_appearing_and_disappearing_drive_the_tracker(zone: Zone) -> None:
    strategy = zone.dns_a()
    tracker = PeerTracker(prune_after=3, self_name="app@127.0.10.1")

    zone.set_pods(["127.0.10.1", "127.0.10.2"])
    u = tracker.update(strategy.lookup())
    assert (u.added, u.pruned, u.desired) == (peers_a("127.0.10.2"), set(), peers_a("127.0.10.2"))
    assert tracker.settled

    # A new record appears: added at once.
    zone.set_pods(["127.0.10.1", "127.0.10.2", "127.0.10.3"])
    u = tracker.update(strategy.lookup())
    assert u.added == peers_a("127.0.10.3")
    assert u.pruned == frozenset()
    assert u.desired == peers_a("127.0.10.2", "127.0.10.3")

    # A record is removed: the answer lacks it at once; pruned after the 3rd good answer.
    zone.set_pods(["127.0.10.1", "127.0.10.3"])
    result = strategy.lookup()
    assert result == LookupResult(ok=True, peers=peers_a("127.0.10.1", "127.0.10.3"))
    assert tracker.update(result).pruned == frozenset()
    assert tracker.update(strategy.lookup()).pruned == frozenset()
    u = tracker.update(strategy.lookup())
    assert (u.added, u.pruned, u.desired) == (
        frozenset(),
        peers_a("127.0.10.2"),
        peers_a("127.0.10.3"),
    )


def test_nxdomain_is_a_good_empty_answer(zone: Zone) -> None:
    assert zone.dns_a("nobody.default.svc.cluster.local").lookup() == LookupResult(
        ok=True, peers=frozenset(), error=None
    )


def test_all_pods_gone_is_a_good_empty_answer(zone: Zone) -> None:
    zone.set_pods(["127.0.10.1"])
    zone.set_pods([])  # dnsmasq now answers NXDOMAIN for the name
    assert raw_query(DNS_ADDR, zone.dnsmasq.port, HEADLESS).rcode() == dns.rcode.NXDOMAIN
    assert zone.dns_a().lookup() == LookupResult(ok=True, peers=frozenset(), error=None)


def test_no_records_of_the_asked_type_is_a_good_empty_answer(zone: Zone) -> None:
    """NOERROR without SRV records (the name only has A records): dnspython's NoAnswer."""
    zone.set_pods(["127.0.10.1"])
    assert zone.dns_srv(HEADLESS).lookup() == LookupResult(ok=True, peers=frozenset())


def test_truncated_udp_answer_is_retried_over_tcp(
    zone: Zone, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server really truncates: 60 A records do not fit in 512 bytes.
    udp = raw_query(DNS_ADDR, zone.dnsmasq.port, BIG)
    assert udp.flags & dns.flags.TC
    assert 0 < len(answer_ips(udp)) < 60  # dnsmasq sends a partial set with TC

    tcp_queries: list[str] = []
    real_tcp = dns.query.tcp

    def counting_tcp(q: dns.message.Message, where: str, *args: Any, **kw: Any) -> Any:
        tcp_queries.append(where)
        return real_tcp(q, where, *args, **kw)

    monkeypatch.setattr(dns.query, "tcp", counting_tcp)
    result = zone.dns_a(BIG).lookup()
    assert result.ok, result.error
    assert result.peers == peers_a(*(f"127.0.1.{i}" for i in range(1, 61)))
    assert tcp_queries == [DNS_ADDR]


def test_dns_srv_with_three_targets(zone: Zone) -> None:
    web = SRV3[11:]
    # web-0 and web-1 come with glue in the additional section; web-2 (an alias) does
    # not, so the lookup takes both paths.
    glue = raw_query(DNS_ADDR, zone.dnsmasq.port, SRV3, "SRV").additional
    assert {rrset.name.to_text(omit_final_dot=True) for rrset in glue} == {
        f"web-0.{web}",
        f"web-1.{web}",
    }
    assert zone.dns_srv(SRV3).lookup() == LookupResult(
        ok=True,
        peers=frozenset(
            {
                Peer(f"app@web-0.{web}", "127.0.20.1", 4370),
                Peer(f"app@web-1.{web}", "127.0.20.2", 4371),
                Peer(f"app@web-2.{web}", "127.0.20.3", 4372),
            }
        ),
        error=None,
    )


def test_dns_srv_leaves_out_a_target_without_address(zone: Zone) -> None:
    half = SRV_HALF[11:]
    assert zone.dns_srv(SRV_HALF).lookup() == LookupResult(
        ok=True, peers=frozenset({Peer(f"app@half-0.{half}", "127.0.21.1", 4370)})
    )


def test_dns_srv_nxdomain_is_a_good_empty_answer(zone: Zone) -> None:
    result = zone.dns_srv("_dist._tcp.nobody.default.svc.cluster.local").lookup()
    assert result == LookupResult(ok=True, peers=frozenset())


# --------------------------------------------------------------------------------------
# failed answers prune nobody
# --------------------------------------------------------------------------------------


def _tracker_with(zone: Zone, ips: list[str]) -> PeerTracker:
    zone.set_pods(ips)
    tracker = PeerTracker(prune_after=3)
    assert tracker.update(zone.dns_a().lookup()).desired == peers_a(*ips)
    return tracker


def _dnssec_supported() -> bool:
    out = subprocess.run(
        [_need_dnsmasq(), "--version"], check=True, capture_output=True, text=True, timeout=10
    ).stdout
    return " DNSSEC" in out and "no-DNSSEC" not in out


def test_servfail_fails_the_lookup_and_prunes_nobody(zone: Zone, tmp_path: Path) -> None:
    if not _dnssec_supported():
        pytest.skip("this dnsmasq is built without DNSSEC (Debian's dnsmasq-base has it)")
    ips = ["127.0.10.1", "127.0.10.2"]
    tracker = _tracker_with(zone, ips)

    # The zone's dnsmasq is the upstream; a validating dnsmasq in front of it answers
    # SERVFAIL for everything, as a resolver does whose upstream turned bogus.
    front = Dnsmasq(
        tmp_path,
        UPSTREAM_ADDR,
        [
            "--dnssec",
            f"--trust-anchor={FAKE_ROOT_ANCHOR}",
            f"--server={DNS_ADDR}#{zone.dnsmasq.port}",
        ],
    )
    try:
        front.start()
        assert raw_query(UPSTREAM_ADDR, front.port, HEADLESS).rcode() == dns.rcode.SERVFAIL
        strategy = DnsA(
            HEADLESS,
            app="app",
            port=DIST_PORT,
            nameserver=UPSTREAM_ADDR,
            nameserver_port=front.port,
        )
        for _ in range(tracker.prune_after + 2):
            result = strategy.lookup()
            assert not result.ok
            assert result.peers == frozenset()
            assert result.error is not None and "SERVFAIL" in result.error, result.error
            u = tracker.update(result)
            assert (u.added, u.pruned, u.desired) == (frozenset(), frozenset(), peers_a(*ips))
        # The same DNS server through a healthy path still answers the full set.
        assert tracker.update(zone.dns_a().lookup()).desired == peers_a(*ips)
    finally:
        front.stop()
    log = front.log_text()
    assert " is ABANDONED" in log or " is BOGUS" in log, log


def test_refused_fails_the_lookup(zone: Zone) -> None:
    """dnsmasq with no upstream refuses names outside its local zone."""
    result = zone.dns_a("myapp.example.test").lookup()
    assert not result.ok
    assert result.error is not None and "REFUSED" in result.error, result.error


def test_timeout_fails_the_lookup_and_prunes_nobody(zone: Zone) -> None:
    ips = ["127.0.10.1", "127.0.10.2", "127.0.10.3"]
    tracker = _tracker_with(zone, ips)
    # A bound socket that never answers: the query is received and ignored.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((DNS_ADDR, 0))
        strategy = DnsA(
            HEADLESS,
            app="app",
            port=DIST_PORT,
            nameserver=DNS_ADDR,
            nameserver_port=silent.getsockname()[1],
            timeout=FAST,
        )
        for _ in range(tracker.prune_after + 1):
            t0 = time.monotonic()
            result = strategy.lookup()
            assert time.monotonic() - t0 < FAST + 2.0  # bounded by the timeout
            assert not result.ok
            assert result.error is not None and "timeout" in result.error, result.error
            u = tracker.update(result)
            assert (u.added, u.pruned, u.desired) == (frozenset(), frozenset(), peers_a(*ips))
    assert tracker.misses("app@127.0.10.1") == 0


def test_dns_server_stopped_prunes_nobody(zone: Zone) -> None:
    ips = ["127.0.10.1", "127.0.10.2"]
    tracker = _tracker_with(zone, ips)
    strategy = zone.dns_a(timeout=FAST)
    zone.dnsmasq.stop()
    for _ in range(tracker.prune_after + 1):
        result = strategy.lookup()
        assert not result.ok
        assert result.error is not None and "timeout" in result.error, result.error
        assert tracker.update(result).desired == peers_a(*ips)


# --------------------------------------------------------------------------------------
# what dnsmasq cannot do: a TC answer with TCP unusable
# --------------------------------------------------------------------------------------


class FakeServer:
    """UDP: answers every query with the TC flag set and no records. TCP (optional):
    accepts and sends ``tcp_reply`` (length-prefixed) to each query. Bounded: runs until
    stopped, each wait at most 0.1 s."""

    def __init__(self, tcp_reply: bytes | None) -> None:
        self.port = free_port(DNS_ADDR)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((DNS_ADDR, self.port))
        self.udp.settimeout(0.1)
        self.tcp: socket.socket | None = None
        if tcp_reply is not None:
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.tcp.bind((DNS_ADDR, self.port))
            self.tcp.listen(4)
            self.tcp.settimeout(0.1)
        self.tcp_reply = tcp_reply
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._serve_udp, daemon=True)]
        if self.tcp is not None:
            self.threads.append(threading.Thread(target=self._serve_tcp, daemon=True))

    def __enter__(self) -> FakeServer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=5)
        self.udp.close()
        if self.tcp is not None:
            self.tcp.close()

    def _serve_udp(self) -> None:
        while not self.stopping.is_set():
            try:
                data, peer = self.udp.recvfrom(4096)
            except TimeoutError:
                continue
            reply = dns.message.make_response(dns.message.from_wire(data))
            reply.flags |= dns.flags.TC
            self.udp.sendto(reply.to_wire(), peer)

    def _serve_tcp(self) -> None:
        assert self.tcp is not None and self.tcp_reply is not None
        while not self.stopping.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1.0)
                with contextlib.suppress(OSError):
                    conn.recv(4096)
                    conn.sendall(struct.pack("!H", len(self.tcp_reply)) + self.tcp_reply)

    def strategy(self) -> DnsA:
        return DnsA(
            HEADLESS, app="app", port=DIST_PORT, nameserver=DNS_ADDR, nameserver_port=self.port
        )


def test_truncated_answer_with_tcp_refused_fails_the_lookup() -> None:
    tracker = PeerTracker(prune_after=1)
    tracker.update(LookupResult(ok=True, peers=peers_a("127.0.10.1")))
    with FakeServer(tcp_reply=None) as server:  # nothing listens on TCP
        result = server.strategy().lookup()
    assert not result.ok
    assert result.error is not None
    assert "truncated answer" in result.error and "over udp" in result.error, result.error
    assert "network error" in result.error and "over tcp" in result.error, result.error
    assert tracker.update(result).desired == peers_a("127.0.10.1")


def test_truncated_answer_with_garbage_over_tcp_fails_the_lookup() -> None:
    with FakeServer(tcp_reply=b"\x12\x34 this is not a DNS message") as server:
        result = server.strategy().lookup()
    assert not result.ok
    assert result.error is not None and "malformed answer" in result.error, result.error
