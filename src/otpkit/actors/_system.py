"""A node's local Thespian actor system: loopback only, authenticated, nothing left behind.

Three things Thespian 4.0.1 does not do, done here before its system starts (the admin
and every actor are forked from this process, so they inherit all of it):

* **Bind to loopback.** Thespian binds every socket to 0.0.0.0 whatever
  ``THESPIAN_BASE_IPADDR`` says; the address classes are patched to bind to the address
  they advertise (127.0.0.1).
* **Authenticate what it unpickles.** Thespian unpickles anything that reaches its ports.
  Its serializer is replaced by one that signs each pickle with this process's random key
  and refuses (without unpickling) any blob whose tag does not verify. Thespian's two
  constant ACK packets are let through by exact match.
* **Bound what it buffers.** Thespian buffers a message of any declared size before the
  tag can be checked, copying the whole buffer at every read. Its receive buffer is
  replaced by one that refuses a message over :data:`THESPIAN_MAX_MESSAGE` on its header
  (otpkit's own are under 1 KiB), holds at most :data:`THESPIAN_BUFFER_BUDGET` bytes of
  larger messages at once in a process, and grows linearly.
* **No orphans.** The admin daemonizes itself (new session, parent 1). It gets a
  *lifeline*: the read end of a pipe whose only write end this process holds; a thread in
  the admin blocks on it, and when this process dies by any signal the read returns and
  the admin SIGKILLs its process group - the admin, its logger and every actor of the
  node (none of them leaves the group). Below the admin, each process dies with its
  parent (``PR_SET_PDEATHSIG``), Thespian's logger included.

Actor stdio goes to the node's log file, never to the starter's pipes (a test runner
reading this process's output would otherwise wait for the node's processes to exit).
The log files (the node's, and Thespian's own ``<node>.log.thespian``) are made 0600
before anything writes to them, and kept so when Thespian rotates its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import resource
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

os.environ.setdefault("THESPIAN_BASE_IPADDR", "127.0.0.1")

from thespian.actors import ActorSystem
from thespian.system import multiprocCommon, utilis
from thespian.system.transport import IPBase, TCPTransport

from otpkit.actors import _files, _host, _logs, _runtime, _wire
from otpkit.actors._pid import Pid, Ref
from otpkit.actors._proc import proc_stat
from otpkit.errors import FrameError, NodeError

log = logging.getLogger("otpkit.node")

_PLAIN_ACKS = {pickle.dumps("ACK"): "ACK", pickle.dumps("ACK+DATAERR"): "ACK+DATAERR"}


#: Refusals on Thespian's ports, logged once a minute with a count (they can repeat).
_thespian_refusals = _wire.RateLog(log)


class SignedPickle:
    """Thespian's serializer, with every pickle signed by the node's key."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        return _wire.sign(pickle.dumps(obj))

    @staticmethod
    def loads(data: bytes) -> Any:
        ack = _PLAIN_ACKS.get(bytes(data))
        if ack is not None:
            return ack
        try:
            body = _wire.verify(bytes(data))
        except FrameError:
            _thespian_refusals.warning(
                "refused an unauthenticated Thespian packet (%d bytes)", len(data)
            )
            raise
        return pickle.loads(body)


#: Largest message a node's Thespian ports take (otpkit's own, the ones that create and
#: reap processes, are under 1 KiB); a larger one is refused on its header, unbuffered.
THESPIAN_MAX_MESSAGE = 64 * 1024
#: A message up to this size is always taken; the larger ones a process buffers at once
#: (their declared sizes) add up to at most THESPIAN_BUFFER_BUDGET, the rest are refused.
THESPIAN_SMALL_MESSAGE = 4 * 1024
THESPIAN_BUFFER_BUDGET = 8 * 1024 * 1024
_SIZE_DIGITS = 12  # of the "<size>>" header
_reserved = 0  # bytes of THESPIAN_BUFFER_BUDGET held by buffers of this process


class ReceiveBuffer:
    """Thespian's receive buffer (``thespian.system.transport.streamBuffer``), bounded:
    the same methods and results, the size refused on the header when it is over
    :data:`THESPIAN_MAX_MESSAGE` or over the process's budget, a ``bytearray`` that grows
    in place. A refusal raises ``ValueError``, on which Thespian closes the socket."""

    def __init__(self, serializer: Any = pickle.loads) -> None:
        self._buf = bytearray()
        self._size: int | None = None
        self._extra = b""
        self._deserialize = serializer
        self._reserved = 0

    def __del__(self) -> None:
        self._release()

    def _release(self) -> None:
        global _reserved
        _reserved -= self._reserved
        self._reserved = 0

    def addMore(self, buf: bytes) -> None:  # noqa: N802 - Thespian's names
        """Take received bytes (Thespian asks :meth:`remainingAmount` of them at most)."""
        size = self._size
        if size is not None:
            want = size - len(self._buf)
            self._buf += buf[:want]
            if len(buf) > want:
                self._extra += buf[want:]
            return
        self._buf += buf
        mark = self._buf.find(b">")
        if mark < 0:
            if len(self._buf) > _SIZE_DIGITS:
                raise ValueError(f"Thespian header without its size: {bytes(self._buf[:20])!r}")
            return
        digits = bytes(self._buf[:mark])
        if not (digits.isdigit() and digits.isascii() and len(digits) <= _SIZE_DIGITS):
            raise ValueError(f"Thespian header with a bad size: {digits[:20]!r}")
        size = int(digits)
        self._reserve(size)
        self._size = size
        rest = self._buf[mark + 1 :]
        self._buf = rest[:size]
        self._extra = bytes(rest[size:])

    def _reserve(self, size: int) -> None:
        global _reserved
        if size > THESPIAN_MAX_MESSAGE:
            why = f"over {THESPIAN_MAX_MESSAGE} bytes"
        elif size > THESPIAN_SMALL_MESSAGE and _reserved + size > THESPIAN_BUFFER_BUDGET:
            why = f"{_reserved} bytes of other large messages are buffered already"
        else:
            if size > THESPIAN_SMALL_MESSAGE:
                self._reserved = size
                _reserved += size
            return
        _thespian_refusals.warning(
            "refused a Thespian message of %d bytes on its header: %s", size, why
        )
        raise ValueError(f"Thespian message of {size} bytes refused: {why}")

    def is_empty(self) -> bool:
        return not self._buf and self._size is None

    def remainingAmount(self) -> int:  # noqa: N802
        """Bytes still to read for the message (20 while its size is unknown)."""
        if self._size is None:
            return 20
        return self._size - len(self._buf)

    def isDone(self) -> bool:  # noqa: N802
        return self._size is not None and len(self._buf) == self._size

    def removeExtra(self) -> None:  # noqa: N802
        self._extra = b""

    def completed(self) -> tuple[Any, bytes] | None:
        """The message and the bytes read past it, once all of it is here."""
        if not self.isDone():
            return None
        self._release()  # (Thespian may ask twice: the buffer stays)
        return self._deserialize(bytes(self._buf)), self._extra


def _loopback_bind_args(self: Any) -> tuple[Any, ...]:
    return (self.sockname,)


# What the admin needs, set just before it is forked (inherited, never sent).
_admin_boot: dict[str, Any] | None = None


class _OtpkitAdmin(multiprocCommon.MultiProcAdmin):  # type: ignore[misc]
    """Thespian's admin, started with stdio on the log file and the lifeline armed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        boot = _admin_boot
        if boot is not None:
            _redirect_stdio(boot["stdio"])
            # not the starting program's handlers (this process inherited them): the
            # node's writer, as every process of the node
            _logs.install(boot["log_level"])
            _raise_fd_limit()
            threading.Thread(
                target=_watch_lifeline,
                args=(boot["lifeline"],),
                daemon=True,
                name="otpkit-lifeline",
            ).start()
        super().__init__(*args, **kwargs)


def _raise_fd_limit() -> None:
    # every process keeps a socket per peer it talks to: a supervisor of thousands of
    # children needs more than the usual soft limit of 1024 descriptors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _redirect_stdio(stdio: int) -> None:
    # descriptors 1 and 2 of every process of the node: the writer's pipe
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(stdio, 1)
    os.dup2(stdio, 2)
    os.close(null)


def _watch_lifeline(fd: int) -> None:
    while True:
        try:
            os.read(fd, 1)
        except InterruptedError:
            continue
        except OSError:
            pass
        break
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _private_open(file: str, mode: str = "r") -> IO[Any]:
    """``open`` for Thespian's own log file: one it makes again (when it rotates the file
    past 50 KB) is 0600, as the node's other log files are."""
    return open(file, mode, opener=_private_opener)


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, _files.PRIVATE_FILE)


_original_logger_start = multiprocCommon.startupASLogger


def _logger_start(*args: Any, **kwargs: Any) -> Any:
    _host._set_parent_death_signal()
    return _original_logger_start(*args, **kwargs)


_patched = False


def patch_thespian() -> None:
    """Apply the loopback, serializer, buffer and orphan fixes (idempotent)."""
    global _patched
    if _patched:
        return
    if not isinstance(getattr(TCPTransport, "ReceiveBuffer", None), type):
        # Thespian's transport no longer reads through this class: nothing would bound
        # what it buffers before the tag is checked
        raise NodeError("this Thespian has no TCPTransport.ReceiveBuffer to replace")
    TCPTransport.serializer = SignedPickle
    TCPTransport.ReceiveBuffer = ReceiveBuffer
    IPBase.IPActorAddress.bindArgs = property(_loopback_bind_args)
    multiprocCommon.MultiProcAdmin = _OtpkitAdmin
    multiprocCommon.startupASLogger = _logger_start
    utilis.open = _private_open  # the only open() of thesplog's module: its log file
    _patched = True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def admin_port_candidate(host: str = "127.0.0.1", attempts: int = 64) -> int:
    """A free port for Thespian's admin, below the kernel's ephemeral range when that
    range leaves room: a port taken from the ephemeral range (``bind(0)``) can be given
    to any outgoing connection's local end before the admin binds it."""
    low, _ = _ephemeral_range()
    if low > 12000:
        rng = random.SystemRandom()
        for _ in range(attempts):
            port = rng.randrange(10000, low)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    return free_port(host)


@dataclass
class LocalSystem:
    """A started node's actor system, as seen from the program that started it."""

    asys: Any
    admin_port: int
    lifeline: int
    kernel: Pid
    pgid: int
    log_path: str | None
    writer: _logs.LogWriter | None = None

    def node_pids(self) -> list[int]:
        """OS pids of every live process of the node (its process group)."""
        return pids_in_group(self.pgid)


def pids_in_group(pgid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = proc_stat(entry)
        if fields is not None and fields[0] != b"Z" and int(fields[2]) == pgid:
            out.append(int(entry))
    return out


_start_lock = threading.Lock()
_ADMIN_ATTEMPTS = 3


def start_local_system(
    client: Any,
    kernel_target: Any,
    kernel_args: tuple[Any, ...],
    log_path: str | None,
    log_level: int,
    start_timeout: float,
) -> LocalSystem:
    """Start the admin and the node's kernel process; the kernel reports to ``client``.

    The node's records go through one writer (``_logs.LogWriter``): into ``log_path``
    when given (Thespian's own log beside it, ``<log_path>.thespian``), else into this
    program's ``logging``."""
    writer = _start_writer(client.node.name, log_path)
    try:
        return _start(client, kernel_target, kernel_args, writer, log_level, start_timeout)
    except BaseException:
        writer.close(wait=0.5)
        raise


def _start_writer(node: str, log_path: str | None) -> _logs.LogWriter:
    if log_path is None:
        _route_thesplog()
        return _logs.LogWriter(node)
    for path in (log_path, log_path + ".thespian"):  # 0600 before anyone opens them
        try:
            _files.private_file(path, "log file")
        except OSError as exc:
            raise NodeError(f"log file {path}: cannot create it ({exc.strerror or exc})") from exc
    os.environ["THESPLOG_FILE"] = log_path + ".thespian"
    os.environ.setdefault("THESPLOG_THRESHOLD", "WARNING")
    return _logs.LogWriter(node, log_path)


def _start(
    client: Any,
    kernel_target: Any,
    kernel_args: tuple[Any, ...],
    writer: _logs.LogWriter,
    log_level: int,
    start_timeout: float,
) -> LocalSystem:
    global _admin_boot
    patch_thespian()
    token: Ref = client.make_ref()
    _wire.node_key()  # made before the fork, so the admin and actors share it
    log_path = writer.file_path
    with _start_lock:
        _host._pending = _host.SpawnPayload(
            node=client.node,
            target=kernel_target,
            args=kernel_args,
            kwargs={},
            parent=client.pid,
            parent_ospid=None,
            link=False,
            name=None,
            token=token,
            log_level=log_level,
            options={"defer_boot": True},
        )
        for attempt in range(1, _ADMIN_ATTEMPTS + 1):
            read_end, write_end = os.pipe()
            _runtime.close_in_children(write_end)
            _admin_boot = {
                "lifeline": read_end,
                "stdio": writer.stdio_fd,
                "log_level": max(log_level, logging.WARNING),
            }
            port = admin_port_candidate()
            try:
                asys = ActorSystem(
                    "multiprocTCPBase",
                    {"Admin Port": port},
                    logDefs=_thespian_log_defs(),
                    transientUnique=True,
                )
                break
            except Exception as exc:
                # the port was taken between the check and the admin's bind: closing the
                # lifeline ends whatever that admin started; try another port
                _runtime.close_here(write_end)
                if attempt == _ADMIN_ATTEMPTS:
                    _host._pending = None
                    raise NodeError(
                        f"Thespian's admin did not start on {_ADMIN_ATTEMPTS} ports "
                        f"(last {port}): {exc}"
                    ) from exc
                log.warning("Thespian's admin could not use port %d (%s); retrying", port, exc)
            finally:
                _admin_boot = None
                os.close(read_end)
        try:
            kernel_address = asys.createActor(_host.Host)
            asys.tell(kernel_address, _host.BOOT)
        finally:
            _host._pending = None
    writer.forked()  # only the node's processes write to it now
    deadline = time.monotonic() + start_timeout
    result: tuple[Any, ...] | None = None
    while time.monotonic() < deadline:
        client.pump(0.05)
        if token in client._started:
            result = client._started.pop(token)
            break
    if result is None or result[0] != "ok":
        _runtime.close_here(write_end)
        where = f" (log: {log_path})" if log_path else ""
        error = NodeError(f"the node's kernel did not start: {result!r}{where}")
        error.reason = None if result is None else result[1]  # why, for a caller to show
        raise error
    kernel: Pid = result[1]
    pgid = os.getpgid(kernel.id)
    return LocalSystem(asys, port, write_end, kernel, pgid, log_path, writer)


def halt_local_system(system: LocalSystem, wait: float = 5.0) -> list[int]:
    """Close the lifeline (the admin kills the node's process group) and wait until the
    group is empty. Returns the OS pids still alive after ``wait`` (empty on success)."""
    _runtime.close_here(system.lifeline)
    deadline = time.monotonic() + wait
    left = pids_in_group(system.pgid)
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = pids_in_group(system.pgid)
    if left and system.pgid != os.getpgrp():
        with contextlib.suppress(OSError):
            os.killpg(system.pgid, signal.SIGKILL)
        time.sleep(0.05)
        left = pids_in_group(system.pgid)
    if system.writer is not None:
        system.writer.close()  # what the last processes wrote is written
    return left


def _thespian_log_defs() -> dict[str, Any]:
    # Thespian's logger process (and what Thespian's admin logs) sends to the node's
    # writer like every other process of the node
    return {
        "version": 1,
        "handlers": {"sink": {"class": "otpkit.actors._logs.SinkHandler"}},
        "root": {"handlers": ["sink"], "level": logging.WARNING},
    }


def _thesplog(msg: Any, *args: Any, **kw: Any) -> None:
    level = kw.get("level", logging.INFO)
    if level >= logging.WARNING:
        logging.getLogger("thespian").log(level, str(msg), *args)


def _route_thesplog() -> None:
    """Thespian's internal log (``thesplog``) writes a file of its own in $TMPDIR; a node
    without a log directory sends its warnings to the node's writer instead."""
    import thespian.system.multiprocTCPBase  # noqa: F401, PLC0415 - loaded, then patched

    original = getattr(utilis, "thesplog", None)
    if original is None or original is _thesplog:
        return

    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "")
        if name.startswith("thespian") and getattr(module, "thesplog", None) is original:
            module.thesplog = _thesplog  # type: ignore[attr-defined]
