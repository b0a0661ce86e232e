"""The sockets between the processes of one node, attacked from the node's own network
namespace (issue 13, items 3 and 4): abstract Unix sockets reach every container of a
pod, and Thespian's 127.0.0.1 ports every process of the namespace.

- A replay from another user (``nobody``): what a name's listener sends to whoever
  connects, written into another process's socket, used to make that process believe
  the named process died (one replay killed the ``global`` server, four halted the
  node). Now the listener sends a fresh nonce and nothing else before a proof; the
  replay is refused and nothing dies.
- Memory before authentication: 100 connections each trying to send 100 MB to one
  process's abstract socket, or to its Thespian port, or to the admin's; the process
  grows by at most 16 MB and the node keeps working.
- Connections from strangers that never prove the key: a process keeps a bounded number
  of them (the oldest go first) and says so in one line.
- The challenge costs a busy process no availability: ``whereis`` of a named process
  working through a backlog still answers (its listener finishes the challenge between
  two messages, not after the whole backlog).

Each test starts its own node (``tests.harness.node_driver``): on the code before the
fix, the attacks halt it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import otpkit
from otpkit import Actor
from otpkit.actors._system import THESPIAN_MAX_MESSAGE
from otpkit.actors._wire import NONCE_LEN, PROOF_LEN, UNPROVEN_STRANGERS
from tests.harness import hostile
from tests.harness.node_process import NodeProc
from tests.harness.polling import hold, wait_for

pytestmark = pytest.mark.cluster

NOBODY = 65534
#: The goal of issue 13: what a process may grow by under each flood.
RSS_BOUND_MIB = 16.0
CONNECTIONS = 100
PER_CONNECTION = 100 * 1024 * 1024


def ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])


def start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except OSError:
        return None


def thespian_port(pid: int, parent: int) -> tuple[str, int]:
    """The TCP port Thespian made for ``pid`` (not one inherited from ``parent``)."""
    ports = hostile.tcp_listeners(pid, among=[parent])
    assert ports, f"process {pid} listens on no TCP port?"
    return ports[0]


class Target:
    """A started node and the OS processes the attacks aim at: ``glob`` (the registry's
    ``global`` server, which listens on a name), ``kernel`` (its parent, which listens
    on its pid), ``admin`` (Thespian's admin, the kernel's parent) and ``dist`` (the
    process of the dist thread, which listens on the name ``otpkit_dist``)."""

    def __init__(self, node: NodeProc) -> None:
        self.node = node
        pids = node.info["pids"]
        names = {p: hostile.abstract_listeners(p) for p in pids}
        self.glob = next(
            p for p, ls in names.items() if any(n.endswith("/n/otpkit_global") for n in ls)
        )
        self.glob_name = next(n for n in names[self.glob] if n.endswith("/n/otpkit_global"))
        self.kernel = ppid(self.glob)
        self.kernel_socket = next(n for n in names[self.kernel] if "/n/" not in n)
        self.admin = ppid(self.kernel)
        self.dist = node.dist_ospid()
        self.dist_socket = next(n for n in names[self.dist] if n.endswith("/n/otpkit_dist"))
        self.started = {p: start_ticks(p) for p in (self.glob, self.kernel)}

    def unchanged(self) -> bool:
        """The global server and the kernel are the same processes as at the start, and
        the node answers a call."""
        if any(start_ticks(p) != t for p, t in self.started.items()):
            return False
        return bool(self.node.cmd(op="call", pid=self.node.echo, req="ping", t=5)[0] == "ok")


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    node = NodeProc("local@127.0.0.1", str(tmp_path))
    try:
        yield Target(node)
    finally:
        node.close()


def as_user(uid: int, fn: Callable[[], bytes]) -> bytes:
    """Run ``fn`` in a child process forked from this one that has become user ``uid``
    (and its group); return what it returned. The child does sockets only."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            out = fn()
            with os.fdopen(write_end, "wb") as f:
                f.write(out)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the attacker's process failed"
    return data


def take_all(sock: socket.socket, quiet: float) -> bytes:
    """Everything ``sock`` receives until it stays quiet ``quiet`` seconds or closes."""
    data = bytearray()
    sock.settimeout(quiet)
    with contextlib.suppress(OSError):
        while piece := sock.recv(65536):
            data += piece
    return bytes(data)


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")


@needs_root
def test_a_replay_from_another_user_is_refused_and_nothing_dies(target: Target) -> None:
    """As ``nobody``: connect to the ``global`` server's name, take what it sends, write
    it into the kernel's socket (with and without as many filler bytes as a proof
    takes), close; four times in quick succession, as the attack that halted a node."""

    def attack() -> bytes:
        rows = []
        for round_ in range(4):
            try:
                with hostile.connect_abstract(target.glob_name) as sock:
                    captured = take_all(sock, quiet=0.5)
                with hostile.connect_abstract(target.kernel_socket) as sock:
                    padding = b"" if round_ % 2 == 0 else b"\0" * PROOF_LEN
                    sock.sendall(captured + padding)
                    refused = closed_by_peer(sock, within=2.0)
            except OSError as exc:  # the node's sockets are gone: the attack worked
                rows.append(f"-1 {type(exc).__name__} 0")
                continue
            rows.append(f"{len(captured)} {captured.hex() or '-'} {int(refused)}")
        return "\n".join(rows).encode()

    rows = [line.split() for line in as_user(NOBODY, attack).decode().splitlines()]
    hold(
        target.unchanged,
        3.0,
        "the global server, the kernel and the node live on",
        diagnose=lambda: f"attack: {rows}\nlog: {target.node.log()[-3000:]}",
    )
    # all a listener says before a proof is a fresh nonce: nothing signed, nothing twice
    assert [int(size) for size, _, _ in rows] == [NONCE_LEN] * 4, rows
    assert len({nonce for _, nonce, _ in rows}) == 4
    # the replay with filler (a full answer's length) is refused at once
    assert [refused for _, _, refused in rows[1::2]] == ["1", "1"]
    log = target.node.log()
    assert "refused a local connection" in log
    assert "not from this node" in log


def _flood(connect: Callable[[], socket.socket], header: bytes, pid: int) -> tuple[Any, float]:
    """100 connections each trying to send 100 MB after ``header``, while ``pid``'s
    memory is watched (stopped early once it grew past 4x the bound, as the old code
    did); returns what the flood did and how much ``pid`` grew (MiB)."""
    with hostile.RssPeak(pid) as rss:
        result = hostile.stream_flood(
            connect,
            header,
            PER_CONNECTION,
            CONNECTIONS,
            seconds=30.0,
            stop=lambda: rss.over(4 * RSS_BOUND_MIB),
        )
    return result, rss.peak - rss.before


@pytest.mark.parametrize("process", ["kernel", "dist"])
def test_an_abstract_socket_buffers_nothing_before_the_proof(target: Target, process: str) -> None:
    """The kernel's runtime, and the dist thread (its own reading loop)."""
    address = getattr(target, f"{process}_socket")
    result, growth = _flood(
        lambda: hostile.connect_abstract(address),
        hostile.ABSTRACT_HEADER,
        getattr(target, process),
    )
    print(f"abstract socket of the {process}: {result} growth {growth:.1f} MiB")
    assert result.connected == CONNECTIONS, result
    assert growth <= RSS_BOUND_MIB, (growth, result)
    assert result.closed_by_peer == CONNECTIONS, result  # each refused after its proof
    assert result.sent < CONNECTIONS * 1024 * 1024, result
    assert target.unchanged()


@pytest.mark.parametrize("process", ["kernel", "admin"])
def test_a_thespian_port_buffers_nothing_oversize(target: Target, process: str) -> None:
    pid = getattr(target, process)
    port = thespian_port(pid, ppid(pid))
    result, growth = _flood(
        lambda: hostile.connect_tcp(port),
        hostile.thespian_header(PER_CONNECTION),
        pid,
    )
    print(f"Thespian port of the {process}: {result} growth {growth:.1f} MiB")
    assert result.connected == CONNECTIONS, result
    assert growth <= RSS_BOUND_MIB, (growth, result)
    assert result.closed_by_peer == CONNECTIONS, result  # refused on the header
    assert target.unchanged()


def test_a_thespian_port_holds_the_largest_messages_within_the_bound(target: Target) -> None:
    """100 connections each declaring the largest message taken and sending all of it
    but its last byte: once the kernel has read all of them, what it holds stays within
    the bound."""
    port = thespian_port(target.kernel, target.admin)
    size = THESPIAN_MAX_MESSAGE
    before = hostile.rss_mib(target.kernel) or 0.0
    socks = []
    try:
        for _ in range(CONNECTIONS):
            sock = hostile.connect_tcp(port)
            socks.append(sock)
            sock.sendall(hostile.thespian_header(size) + b"\0" * (size - 1))
        wait_for(
            lambda: hostile.tcp_rx_queued(target.kernel) == 0,
            10.0,
            "the kernel read every connection",
        )
        growth = (hostile.rss_mib(target.kernel) or 0.0) - before
    finally:
        for sock in socks:
            sock.close()
    print(f"Thespian port, {CONNECTIONS} x {size - 1} bytes held: growth {growth:.1f} MiB")
    assert growth <= RSS_BOUND_MIB, growth
    assert target.unchanged()


@needs_root
@pytest.mark.parametrize("process", ["kernel", "dist"])
def test_unproven_connections_from_strangers_are_bounded(target: Target, process: str) -> None:
    """``nobody`` opens 100 connections to a process and proves nothing: it keeps the
    newest UNPROVEN_STRANGERS of them, closes the rest, says so in one line, and serves
    the node's own processes meanwhile."""
    address = getattr(target, f"{process}_socket")

    def attack() -> bytes:
        socks = [hostile.connect_abstract(address) for _ in range(CONNECTIONS)]
        deadline = time.monotonic() + 10.0
        closed: set[int] = set()
        while time.monotonic() < deadline and len(closed) < CONNECTIONS - UNPROVEN_STRANGERS:
            for i, sock in enumerate(socks):
                if i not in closed and closed_by_peer(sock, within=0.01):
                    closed.add(i)
        still_open = [i for i in range(CONNECTIONS) if i not in closed]
        for sock in socks:
            sock.close()
        return " ".join(map(str, still_open)).encode()

    still_open = [int(i) for i in as_user(NOBODY, attack).decode().split()]
    assert len(still_open) == UNPROVEN_STRANGERS, still_open
    assert still_open == list(range(CONNECTIONS - UNPROVEN_STRANGERS, CONNECTIONS))
    assert target.unchanged()
    wait_for(
        lambda: "have not proven the node's key; closed the oldest" in target.node.log(),
        5.0,
        "one line about the closed connections",
    )
    assert target.node.log().count("have not proven the node's key") == 1


class Busy(Actor):
    """Works through what it is sent: each ``("sleep", s)`` keeps it in one handler."""

    def init(self, owner: Any) -> None:
        self.owner = owner

    def handle_call(self, request: Any, from_: Any) -> Any:
        return request

    def handle_cast(self, msg: Any) -> None:
        if msg[0] == "busy":
            otpkit.send(self.owner, ("busy",))
        time.sleep(msg[1])


def test_whereis_of_a_busy_named_process_answers(mailbox: otpkit.Node) -> None:
    """A named process busy in a handler (1 s), 2.4 s of messages queued behind it: a
    ``whereis`` made meanwhile (2 s to get the answer) reaches the name's listener in
    the same loop turn as the queued messages. The listener sends its nonce at once; it
    must also check the answer and send the pid before the backlog, not after it (it
    did after, and ``whereis`` gave None)."""
    pid = mailbox.spawn(Busy, mailbox.pid, name="busy_local")
    try:
        assert otpkit.call(pid, "ping") == "ping"
        otpkit.cast(pid, ("busy", 1.0))
        assert mailbox.receive(5) == ("busy",)
        for _ in range(4):
            otpkit.cast(pid, ("sleep", 0.6))
        started = time.monotonic()
        found = otpkit.whereis("busy_local")
        took = time.monotonic() - started
        assert found == pid, f"whereis gave {found!r} after {took:.2f}s"
        assert otpkit.call(pid, "pong", 10.0) == "pong"  # the backlog is done
    finally:
        otpkit.exit(pid, "kill")
