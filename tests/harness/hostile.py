"""Attack clients for the hostile-input tests and ``bench/hostile.py`` (issue 13), and the
``/proc`` readings that show what an attack cost the node.

What an unauthenticated client can throw at a node: frames full of msgpack ext types on
the dist port (:func:`ext_frames`, and :func:`junk_frames`, plain values of the same
sizes, to compare with), a burst of such connections (:func:`burst`), slow HTTP headers
on the probe port (:class:`Slowloris`), and many connections each streaming a large
declared frame at one socket (:func:`stream_flood`). The frames are built by hand from
the wire formats (``distribution/_codec.py``'s ext codes, ``actors/_wire.py``'s local
frame header, Thespian's ``<size>>`` header): this module imports nothing of otpkit, so
an attack stays the same whatever version of otpkit is under test.

Finding the target: which process of a node listens on a TCP port
(:func:`listener_pid`), the abstract Unix sockets and TCP ports a process listens on
(:func:`abstract_listeners`, :func:`tcp_listeners`); what it costs: run time of all its
threads (:func:`cpu_ns`, from ``/proc/PID/task/*/schedstat``, nanoseconds), its resident
memory (:func:`rss_mib`, :class:`RssPeak`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack  # type: ignore[import-untyped]

__all__ = [
    "ABSTRACT_HEADER",
    "DIST_HEADER",
    "PROBE_HEADER",
    "BurstResult",
    "CpuWatch",
    "RssPeak",
    "Slowloris",
    "StreamResult",
    "abstract_listeners",
    "burst",
    "connect_abstract",
    "connect_tcp",
    "cpu_ns",
    "ext_frames",
    "http_get",
    "junk_frames",
    "listener_pid",
    "rss_mib",
    "stream_flood",
    "tcp_listeners",
    "tcp_rx_queued",
    "thespian_header",
    "thread_cpu_ns",
]

# the ext codes of distribution/_codec.py
_EXT_PID = 2
_EXT_REF = 3
_EXT_DATETIME = 4
_ZONE_INFO_FLAGS = 4  # zone kind 2 (a ZoneInfo key), fold 0
_DT = struct.Struct(">HBBBBBIBq")  # wall fields, flags, UTC offset in microseconds
_PID = struct.Struct(">qqq")
_REF = struct.Struct(">qH")
_PREFIX = struct.Struct(">I")

#: A dist frame header declaring 16 MiB - 1 bytes (the largest frame of an established
#: link): a size cap must refuse it before any of it is buffered.
DIST_HEADER = _PREFIX.pack(16 * 1024 * 1024 - 1)
#: A local frame header (``actors/_wire.py``: length, then a 32-byte tag) declaring
#: 256 MiB - 1 bytes, the old limit between two local processes.
ABSTRACT_HEADER = _PREFIX.pack(256 * 1024 * 1024 - 1)
#: The start of a request on the probe port whose header line never ends.
PROBE_HEADER = b"GET /healthz/live HTTP/1.1\r\nHost: probe\r\nX-Pad: "


def thespian_header(size: int) -> bytes:
    """The header of a message of ``size`` bytes on a Thespian TCP port."""
    return f"{size}>".encode()


# --------------------------------------------------------------------------- frames


def _ext_items(first: int, tag: str) -> Iterable[msgpack.ExtType]:
    """Ext values without end, from number ``first`` on: eight aware datetimes (each
    with a zone name of its own that no tz database has), then a pid and a ref."""
    i = first
    while True:
        if i % 10 == 8:
            body = _PID.pack(1, i, 0) + f"x{tag}@127.0.0.9".encode()
            yield msgpack.ExtType(_EXT_PID, body)
        elif i % 10 == 9:
            body = _REF.pack(1, 8) + i.to_bytes(8, "big") + f"x{tag}@127.0.0.9".encode()
            yield msgpack.ExtType(_EXT_REF, body)
        else:
            wall = (2024, 1 + i % 12, 1 + i % 28, i % 24, i % 60, i % 60, i % 1000000)
            key = f"Hostile/{tag}-{i:x}".encode()
            yield msgpack.ExtType(_EXT_DATETIME, _DT.pack(*wall, _ZONE_INFO_FLAGS, 0) + key)
        i += 1


def _plain_like(packed: bytes) -> bytes:
    """A msgpack str of exactly as many packed bytes as ``packed``."""
    n = len(packed)
    text = n - 1 if n - 1 < 32 else n - 2  # fixstr: 1 header byte; str8: 2
    return msgpack.packb("j" * text)  # type: ignore[no-any-return]


def _frames(total: int, frame_size: int, tag: str, plain: bool) -> bytes:
    packer = msgpack.Packer()
    items = iter(_ext_items(0, tag))
    out = bytearray()
    while True:
        body: list[bytes] = []
        size = 3  # an array16 header
        while True:
            packed = packer.pack(next(items))
            if size + len(packed) > frame_size - _PREFIX.size:
                break
            body.append(_plain_like(packed) if plain else packed)
            size += len(packed)
        data = packer.pack_array_header(len(body)) + b"".join(body)
        if len(out) + _PREFIX.size + len(data) > total:
            return bytes(out)
        out += _PREFIX.pack(len(data)) + data


def ext_frames(total: int, frame_size: int, tag: str) -> bytes:
    """Frames of at most ``frame_size`` bytes each (with their prefix), at most ``total``
    bytes in all, each a msgpack array of ext values: aware datetimes whose zone names
    (``Hostile/<tag>-<n>``) no tz database has and no earlier frame used, pids and refs.
    Decoded as values, each datetime costs a failed zone lookup."""
    return _frames(total, frame_size, tag, plain=False)


def junk_frames(total: int, frame_size: int, tag: str) -> bytes:
    """The frames :func:`ext_frames` makes of the same arguments, each as long, with a
    plain str of the same packed size in place of each ext value."""
    return _frames(total, frame_size, tag, plain=True)


# --------------------------------------------------------------------------- clients


def connect_tcp(
    addr: tuple[str, int], source: str | None = None, timeout: float = 5.0
) -> socket.socket:
    """A blocking TCP connection to ``addr``, from the address ``source`` if given."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if source is not None:
            sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect(addr)
    except OSError:
        sock.close()
        raise
    return sock


def connect_abstract(name: str, timeout: float = 5.0) -> socket.socket:
    """A connection to the abstract Unix socket ``name`` (as ``/proc/net/unix`` shows
    it: a leading ``@``)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect("\0" + name.removeprefix("@"))
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class BurstResult:
    """What :func:`burst` did: connections made and refused, bytes the node took, how
    many connections the node closed before it had read everything, wall time."""

    connected: int = 0
    refused: int = 0
    sent: int = 0
    cut_short: int = 0
    unfinished: int = 0
    seconds: float = 0.0


@dataclass
class _Conn:
    sock: socket.socket
    data: memoryview
    pos: int = 0
    done_writing: bool = False


def burst(
    addr: tuple[str, int],
    blobs: Sequence[bytes],
    timeout: float = 60.0,
    source: str | None = None,
) -> BurstResult:
    """One connection per blob, all opened at once: each writes its blob, shuts its
    writing side and reads (and drops) whatever comes back until the node closes it or
    ``timeout`` passes. Returns when every connection has ended."""
    out = BurstResult()
    sel = selectors.DefaultSelector()
    began = time.monotonic()
    live: dict[int, _Conn] = {}
    for blob in blobs:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source is not None:
            sock.bind((source, 0))
        sock.setblocking(False)
        err = sock.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS):
            out.refused += 1
            sock.close()
            continue
        conn = _Conn(sock, memoryview(blob))
        live[sock.fileno()] = conn
        sel.register(sock, selectors.EVENT_WRITE | selectors.EVENT_READ, conn)
    deadline = began + timeout

    def end(conn: _Conn, cut: bool) -> None:
        sel.unregister(conn.sock)
        del live[conn.sock.fileno()]
        conn.sock.close()
        out.cut_short += cut

    try:
        while live and time.monotonic() < deadline:
            for key, events in sel.select(0.2):
                conn = key.data
                if events & selectors.EVENT_WRITE and not conn.done_writing:
                    try:
                        n = conn.sock.send(conn.data[conn.pos :])
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        if exc.errno == errno.ECONNREFUSED and conn.pos == 0:
                            out.refused += 1
                            end(conn, False)
                        else:
                            end(conn, True)
                        continue
                    if conn.pos == 0 and n:
                        out.connected += 1
                    conn.pos += n
                    out.sent += n
                    if conn.pos == len(conn.data):
                        conn.done_writing = True
                        with contextlib.suppress(OSError):
                            conn.sock.shutdown(socket.SHUT_WR)
                        sel.modify(conn.sock, selectors.EVENT_READ, conn)
                elif events & selectors.EVENT_READ:
                    try:
                        data = conn.sock.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        end(conn, not conn.done_writing)
    finally:
        out.unfinished = len(live)
        for conn in list(live.values()):
            sel.unregister(conn.sock)
            conn.sock.close()
        sel.close()
    out.seconds = time.monotonic() - began
    return out


class Slowloris:
    """``connections`` connections to ``addr`` (from ``source``), each sending one more
    byte of a request header that never ends every ``interval`` seconds; a connection
    the server closes is opened again. A context manager: the attack runs on a thread
    from ``__enter__`` to ``__exit__``."""

    def __init__(
        self,
        addr: tuple[str, int],
        connections: int = 40,
        interval: float = 1.5,
        source: str | None = None,
    ) -> None:
        self.addr = addr
        self.connections = connections
        self.interval = interval
        self.source = source
        self.opened = 0
        self.reopened = 0
        self.failed_opens = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slowloris", daemon=True)
        self._socks: list[tuple[socket.socket, int] | None] = [None] * connections
        self._header = b"GET /healthz/live HTTP/1.1\r\nHost: probe\r\n" + b"X-a: b\r\n" * 4096

    def __enter__(self) -> Slowloris:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for entry in self._socks:
            if entry is not None:
                entry[0].close()

    def open_now(self) -> int:
        """How many of the connections are open."""
        return sum(entry is not None for entry in self._socks)

    def _open(self, i: int) -> None:
        try:
            sock = connect_tcp(self.addr, self.source, timeout=1.0)
        except OSError:
            self.failed_opens += 1
            return
        sock.setblocking(False)
        self._socks[i] = (sock, 0)
        self.opened += 1

    def _run(self) -> None:
        for i in range(self.connections):
            if self._stop.is_set():
                return
            self._open(i)
        while not self._stop.wait(self.interval):
            for i, entry in enumerate(self._socks):
                if entry is None:
                    self.reopened += 1
                    self._open(i)
                    continue
                sock, pos = entry
                try:
                    if sock.recv(4096) == b"":
                        raise ConnectionResetError("closed by the server")
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    sock.close()
                    self._socks[i] = None
                    continue
                try:
                    sock.send(self._header[pos % len(self._header) :][:1])
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    sock.close()
                    self._socks[i] = None
                    continue
                self._socks[i] = (sock, pos + 1)


@dataclass
class StreamResult:
    """What :func:`stream_flood` did: connections made, bytes the target took, how many
    connections it closed, whether every connection sent all it meant to, and why the
    flood ended (``"all sent"``, ``"time bound"``, ``"stopped"``, ``"all closed"``)."""

    connected: int = 0
    failed: int = 0
    sent: int = 0
    closed_by_peer: int = 0
    ended: str = ""
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    at_end: Any = None


def stream_flood(
    connect: Callable[[], socket.socket],
    header: bytes,
    per_connection: int,
    connections: int,
    seconds: float,
    stop: Callable[[], bool] = lambda: False,
    filler: bytes = b"\0",
    at_end: Callable[[], Any] | None = None,
) -> StreamResult:
    """``connections`` connections (each made by ``connect``), each writing ``header``
    then ``filler`` repeated up to ``per_connection`` bytes, as fast as the target takes
    them; what comes back is read and dropped. Ends after ``seconds``, once every
    connection has sent everything or been closed, or as soon as ``stop()`` is true
    (asked about 20 times a second). ``at_end()``, called before the connections close,
    goes in the result's ``at_end``."""
    out = StreamResult()
    chunk = memoryview(filler * (1024 * 1024 // len(filler)))
    sel = selectors.DefaultSelector()
    left: dict[socket.socket, int] = {}
    began = time.monotonic()
    for _ in range(connections):
        try:
            sock = connect()
        except OSError as exc:
            out.failed += 1
            if len(out.errors) < 3:
                out.errors.append(str(exc))
            continue
        sock.setblocking(False)
        out.connected += 1
        left[sock] = per_connection
        pending = memoryview(header)
        sel.register(sock, selectors.EVENT_WRITE | selectors.EVENT_READ, [pending])
    deadline = began + seconds
    next_ask = 0.0
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                out.ended = "time bound"
                break
            if now >= next_ask:
                next_ask = now + 0.05
                if stop():
                    out.ended = "stopped"
                    break
            if not left:
                out.ended = "all closed" if out.closed_by_peer == out.connected else "all sent"
                break
            for key, events in sel.select(0.05):
                sock = key.fileobj  # type: ignore[assignment]
                pending = key.data
                if events & selectors.EVENT_READ:
                    try:
                        data = sock.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        data = b"-"
                    except OSError:
                        data = b""
                    if not data:
                        out.closed_by_peer += 1
                        sel.unregister(sock)
                        sock.close()
                        left.pop(sock, None)
                        continue
                if events & selectors.EVENT_WRITE and sock in left:
                    piece = pending[0] if pending[0] else chunk[: min(len(chunk), left[sock])]
                    try:
                        n = sock.send(piece)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        out.closed_by_peer += 1
                        sel.unregister(sock)
                        sock.close()
                        left.pop(sock, None)
                        continue
                    out.sent += n
                    if pending[0]:
                        pending[0] = pending[0][n:]
                    else:
                        left[sock] -= n
                        if left[sock] <= 0:
                            del left[sock]
                            sel.modify(sock, selectors.EVENT_READ, pending)
        if at_end is not None:
            out.at_end = at_end()
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        sel.close()
    out.seconds = time.monotonic() - began
    return out


def http_get(
    addr: tuple[str, int], path: str, timeout: float, source: str | None = None
) -> tuple[int, str, float]:
    """(status, body, seconds) of ``GET path`` with one deadline for the whole request,
    as kubelet's ``timeoutSeconds``; (0, why, seconds) if no whole answer came in time."""
    began = time.monotonic()
    deadline = began + timeout
    try:
        sock = connect_tcp(addr, source, timeout=timeout)
    except OSError as exc:
        return 0, f"connect: {exc}", time.monotonic() - began
    data = bytearray()
    try:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n".encode())
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
        else:
            return 0, "timed out", time.monotonic() - began
    except TimeoutError:
        return 0, "timed out", time.monotonic() - began
    except OSError as exc:
        return 0, str(exc), time.monotonic() - began
    finally:
        sock.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return 0, f"no status line: {bytes(data[:80])!r}", time.monotonic() - began
    return int(parts[1]), body.decode(errors="replace").strip(), time.monotonic() - began


# --------------------------------------------------------------------------- /proc


def _socket_inodes(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def _listening_tcp() -> dict[int, tuple[str, int]]:
    """inode -> (address, port) of every listening IPv4 TCP socket."""
    out = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            host, port = fields[1].split(":")
            addr = socket.inet_ntoa(struct.pack("<I", int(host, 16)))
            out[int(fields[9])] = (addr, int(port, 16))
    return out


def _start_time(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 1 << 62
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def _holders(inodes: set[int], pids: Iterable[int]) -> list[int]:
    """Those of ``pids`` that hold one of the sockets ``inodes``, oldest first: a forked
    process inherits its parent's listening sockets, so the oldest holder is the one
    that made the socket."""
    found = [p for p in pids if _socket_inodes(p) & inodes]
    return sorted(found, key=lambda p: (_start_time(p), p))


def tcp_listeners(pid: int, among: Iterable[int] = ()) -> list[tuple[str, int]]:
    """The (address, port) of every IPv4 TCP socket ``pid`` listens on; with ``among``,
    only those it made itself (no older process of ``among`` holds them)."""
    table = _listening_tcp()
    older = [p for p in among if p != pid and _start_time(p) <= _start_time(pid)]
    inherited = set().union(*(_socket_inodes(p) for p in older)) if older else set()
    return sorted(table[i] for i in _socket_inodes(pid) - inherited if i in table)


def tcp_rx_queued(pid: int) -> int:
    """Bytes that peers sent to the TCP sockets of ``pid`` and it has not read yet."""
    mine = _socket_inodes(pid)
    total = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[9]) in mine:
                total += int(fields[4].split(":")[1], 16)
    return total


def listener_pid(port: int, pids: Iterable[int]) -> int | None:
    """Which of ``pids`` made the socket that listens on TCP ``port`` (the oldest of
    those that hold it)."""
    inodes = {i for i, (_, p) in _listening_tcp().items() if p == port}
    holders = _holders(inodes, pids)
    return holders[0] if holders else None


def abstract_listeners(pid: int) -> list[str]:
    """The names (``@...``) of the abstract Unix sockets ``pid`` listens on."""
    mine = _socket_inodes(pid)
    out = []
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            # Flags 00010000: a listening socket; a path starting with @: abstract
            if (
                len(fields) >= 8
                and int(fields[3], 16) & 0x10000
                and fields[7][:1] == "@"
                and int(fields[6]) in mine
            ):
                out.append(fields[7])
    return sorted(out)


def rss_mib(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (``VmRSS``); None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def thread_cpu_ns(pid: int) -> dict[int, int]:
    """Run time of each live thread of ``pid`` in nanoseconds (``schedstat``)."""
    out: dict[int, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


def cpu_ns(pid: int) -> int:
    """Run time of all live threads of ``pid`` in nanoseconds."""
    return sum(thread_cpu_ns(pid).values())


class RssPeak:
    """The largest resident memory of ``pid`` seen while the context is open, sampled
    every ``period`` seconds on a thread; ``over(mib)`` says whether it has grown by more
    than ``mib`` since the start (an attack's safety stop)."""

    def __init__(self, pid: int, period: float = 0.05) -> None:
        self.pid = pid
        self.period = period
        self.before = rss_mib(pid) or 0.0
        self.peak = self.before
        self.gone = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-peak", daemon=True)

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    def _sample(self) -> None:
        now = rss_mib(self.pid)
        if now is None:
            self.gone = True
        else:
            self.peak = max(self.peak, now)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def over(self, mib: float) -> bool:
        return self.peak - self.before > mib


class CpuWatch:
    """Run time of the threads of ``pid`` while the context is open, sampled every
    ``period`` seconds on a thread, so that what a process used before it died is still
    known (a lower bound: its last ``period``'s work is missed). ``used_ns()`` is the
    total since the start, ``busiest_ns()`` that of its busiest thread."""

    def __init__(self, pid: int, period: float = 0.05) -> None:
        self.pid = pid
        self.period = period
        self.start = thread_cpu_ns(pid)
        self.last = dict(self.start)
        self.died = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-watch", daemon=True)

    def __enter__(self) -> CpuWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    def _sample(self) -> None:
        now = thread_cpu_ns(self.pid)
        if not now:
            self.died = True
        for tid, ns in now.items():
            self.last[tid] = max(ns, self.last.get(tid, 0))

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def used_ns(self) -> int:
        return sum(v - self.start.get(t, 0) for t, v in self.last.items())

    def busiest_ns(self) -> int:
        return max((v - self.start.get(t, 0) for t, v in self.last.items()), default=0)
