"""One log writer per node: every process's records reach the starting program whole.

A node is some 25 OS processes. Each writing its own lines to a shared stream tears a
line longer than a pipe's atomic write (4 KiB: a traceback) into pieces interleaved
with other processes' pieces, and a JSON line torn so no longer parses. So no node
process writes a log line itself:

* every process's ``logging`` root has one :class:`SinkHandler`, which sends each record
  (its message and traceback already formatted, and the tags below) as one message of a
  ``SOCK_SEQPACKET`` socket pair - one ``send``, one whole record, whatever its size up
  to :data:`MAX_RECORD`;
* ``sys.stdout`` and ``sys.stderr`` of every process are :class:`LineStream` objects:
  each line printed becomes a record of the ``otpkit.stdout`` (INFO) or ``otpkit.stderr``
  (WARNING) logger, with the process's tags - a task's lines carry its job and tick;
* the descriptors 1 and 2 of every process (what a C extension, a subprocess of a task
  or a dying interpreter writes) are a pipe; each line read from it is a record of the
  ``otpkit.stdio`` logger.

The starting program's :class:`LogWriter` (a thread) reads both and writes each record
once: into the node's log file when the node was given a log directory, else into the
starting program's own ``logging`` tree - the handlers a library user configured, or
those ``otpkit run`` set up (stderr, text or JSON; see :func:`text_formatter` and
:func:`json_formatter`). A record is dropped only when the writer has been behind for
:data:`SEND_WAIT` seconds (counted in ``otpkit_log_records_dropped_total``).
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import select
import socket
import sys
import threading
import time
from typing import Any

import msgpack  # type: ignore[import-untyped]

from otpkit import metrics

__all__ = [
    "MAX_RECORD",
    "LineStream",
    "LogWriter",
    "SinkHandler",
    "TextFormatter",
    "drain_stdio",
    "json_formatter",
    "set_tags",
    "text_formatter",
]

#: The largest record sent: a longer message or traceback keeps its last part.
MAX_RECORD = 128 * 1024
#: Seconds a process waits for room when the writer is behind, then drops the record.
SEND_WAIT = 2.0
#: A printed line longer than this is sent in pieces of this size.
MAX_LINE = 16 * 1024

#: The fields of a record that cross the socket (with ``tags``).
_FIELDS = ("name", "levelno", "levelname", "msg", "created", "msecs", "process", "exc_text")

_sock: socket.socket | None = None  # the sending end, inherited by every process
_tags: dict[str, str] = {}  # this process's: node, actor; a task's job and tick
_behind = False  # the last record waited SEND_WAIT in vain: the next ones do not wait
# the writer's reading ends: no node process keeps them
_readers: set[int] = set()
_reader_socks: set[socket.socket] = set()


def _after_fork_in_child() -> None:
    for fd in list(_readers):
        with contextlib.suppress(OSError):
            os.close(fd)
    for sock in list(_reader_socks):  # detached: the object must not close a reused fd
        with contextlib.suppress(OSError):
            os.close(sock.detach())
    _readers.clear()
    _reader_socks.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def set_tags(**tags: Any) -> None:
    """Tag this process's records from now on (``None`` removes a tag)."""
    for key, value in tags.items():
        if value is None:
            _tags.pop(key, None)
        else:
            _tags[key] = str(value)


def tags() -> dict[str, str]:
    return dict(_tags)


def _tail(text: str, limit: int) -> str:
    """``text``, or its last ``limit`` bytes (UTF-8) when it is longer."""
    if len(text) * 4 <= limit:
        return text
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return f"[{len(data) - limit} bytes cut] " + data[-limit:].decode("utf-8", "ignore")


class SinkHandler(logging.Handler):
    """Send each record to the node's writer (a node process's only handler)."""

    def emit(self, record: logging.LogRecord) -> None:
        sock = _sock
        if sock is None:
            return
        try:
            data = encode(record, self)
        except Exception:
            self.handleError(record)
            return
        _send(sock, data)


def encode(record: logging.LogRecord, handler: logging.Handler | None = None) -> bytes:
    """One record as the writer reads it."""
    message = record.getMessage()
    exc_text = record.exc_text
    if record.exc_info and not exc_text:
        formatter = (handler.formatter if handler else None) or logging.Formatter()
        exc_text = formatter.formatException(record.exc_info)
    if record.stack_info:
        exc_text = f"{exc_text}\n{record.stack_info}" if exc_text else record.stack_info
    fields: dict[str, Any] = {
        "name": record.name,
        "levelno": record.levelno,
        "levelname": record.levelname,
        "msg": _tail(message, MAX_RECORD // 2),
        "created": record.created,
        "msecs": record.msecs,
        "process": record.process or os.getpid(),
        "exc_text": _tail(exc_text, MAX_RECORD // 2) if exc_text else None,
        "tags": {**_tags, **getattr(record, "otpkit_tags", {})},
    }
    return bytes(msgpack.packb(fields))


def _send(sock: socket.socket, data: bytes) -> None:
    """One record, one message: a send of a ``SOCK_SEQPACKET`` socket is whole, so the
    threads of a process (and the processes of a node) need no lock between them - and a
    signal handler that logs while its thread is inside a send cannot deadlock. A writer
    that is behind makes the first record wait up to :data:`SEND_WAIT`; until one gets
    through again, the next ones are dropped at once (counted), so a stalled stderr costs
    each process one wait, not one per record."""
    global _behind
    deadline = time.monotonic() + (0.0 if _behind else SEND_WAIT)
    while True:
        try:
            sock.send(data, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            left = deadline - time.monotonic()
            if left > 0:
                poller = select.poll()
                poller.register(sock, select.POLLOUT)
                poller.poll(min(left, 0.1) * 1000)
                continue
            _behind = True
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE:
                return  # the writer is gone: the node is stopping
        else:
            _behind = False
            return
        metrics.inc("otpkit_log_records_dropped_total")
        return


class LineStream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` of a node process: each line one record."""

    def __init__(self, logger: str, level: int, fd: int) -> None:
        super().__init__()
        self._logger = logging.getLogger(logger)
        self._level = level
        self._fd = fd
        self._buf = ""
        self._lock = threading.RLock()
        self._inside = threading.local()

    encoding = "utf-8"

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd  # what a subprocess given ``stdout=sys.stdout`` inherits

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if getattr(self._inside, "on", False):
            # written while this stream logs (a handler's own error report): raw
            with contextlib.suppress(OSError):
                os.write(self._fd, text.encode("utf-8", "replace"))
            return len(text)
        with self._lock:
            self._buf += text
            while True:
                cut = self._buf.find("\n")
                if cut < 0 and len(self._buf) < MAX_LINE:
                    break
                end = cut if 0 <= cut < MAX_LINE else MAX_LINE
                line, self._buf = self._buf[:end], self._buf[end + (end == cut) :]
                self._emit(line)
        return len(text)

    def flush(self) -> None:
        """Nothing: a line is a record once it ends (``print(..., end="", flush=True)``
        progress stays one line); :meth:`drain` writes a last unended one."""

    def drain(self) -> None:
        """Write the line not ended yet (at the end of a task or of the process)."""
        with self._lock:
            if self._buf:
                line, self._buf = self._buf, ""
                self._emit(line)

    @property
    def buffer(self) -> _Bytes:
        """For code that writes bytes (``sys.stdout.buffer.write``): decoded as UTF-8."""
        return _Bytes(self)

    def reconfigure(self, **_: Any) -> None:
        """Accepted and ignored: the stream is line-based whatever is asked."""

    def _emit(self, line: str) -> None:
        self._inside.on = True
        try:
            self._logger.log(self._level, "%s", line.rstrip("\r"))
        finally:
            self._inside.on = False


class _Bytes(io.RawIOBase):
    """The binary side of a :class:`LineStream`."""

    def __init__(self, text: LineStream) -> None:
        super().__init__()
        self._text = text

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._text.fileno()

    def write(self, data: Any) -> int:
        self._text.write(bytes(data).decode("utf-8", "replace"))
        return len(data)


def drain_stdio() -> None:
    """Write this process's printed lines not ended yet."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, LineStream):
            with contextlib.suppress(Exception):
                stream.drain()


def install(level: int) -> None:
    """This (node) process: records to the writer, prints as records."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(SinkHandler())
    root.setLevel(level)
    if _sock is not None:
        sys.stdout = LineStream("otpkit.stdout", logging.INFO, 1)
        sys.stderr = LineStream("otpkit.stderr", logging.WARNING, 2)


# --------------------------------------------------------------------- the writer


class LogWriter:
    """The node's one writer (a thread of the starting program; see the module).

    Made before the node's first fork: :attr:`stdio_fd` is the pipe every node process
    has as its descriptors 1 and 2 (the admin puts it there). ``file`` (a path): write
    every record there in the text format, else hand each record to the starting
    program's ``logging`` tree (the logger of its name, when that logger is enabled for
    its level).
    """

    def __init__(self, node: str, file: str | None = None) -> None:
        global _sock
        self.node = node
        self._recv, send = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with contextlib.suppress(OSError):
            send.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self._send_end = send
        self._pipe_r, self.stdio_fd = os.pipe()
        _readers.add(self._pipe_r)
        _reader_socks.add(self._recv)
        self._file: logging.Handler | None = None
        self.file_path = file
        if file is not None:
            handler = logging.FileHandler(file, encoding="utf-8")
            handler.setFormatter(text_formatter(node))
            self._file = handler
        self._pending = b""  # a partial line of the stdio pipe
        self._buf = bytearray(MAX_RECORD * 4)
        self._closing = False
        self._released = False
        self._release_lock = threading.Lock()
        _sock = send
        set_tags(node=node)
        self._thread = threading.Thread(target=self._loop, name="otpkit-log-writer", daemon=True)
        self._thread.start()

    def forked(self) -> None:
        """The node's first processes are forked: only they keep the sending ends, so
        the writer reads end-of-file once the last of them has ended."""
        global _sock
        if _sock is self._send_end:
            _sock = None
        with contextlib.suppress(OSError):
            self._send_end.close()
        self._close_stdio_end()

    def _close_stdio_end(self) -> None:
        fd, self.stdio_fd = self.stdio_fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _loop(self) -> None:
        recv_fd = self._recv.fileno()
        poller = select.poll()
        poller.register(recv_fd, select.POLLIN)
        poller.register(self._pipe_r, select.POLLIN)
        open_fds = {recv_fd, self._pipe_r}
        while open_fds:
            for fd, _ in poller.poll(250):
                if fd == recv_fd:
                    if not self._read_record():
                        poller.unregister(fd)
                        open_fds.discard(fd)
                elif not self._read_stdio():
                    poller.unregister(fd)
                    open_fds.discard(fd)
            if self._closing and not _readable(open_fds):
                break
        if self._closing:
            self._release()  # close() gave up waiting for this thread

    def _read_record(self) -> bool:
        try:
            size = self._recv.recv_into(self._buf)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not size:
            return False
        data = bytes(self._buf[:size])
        record = decode(data, self.node)
        if record is None:
            record = _stdio_record(self.node, "a malformed log record", logging.WARNING)
        self.write(record)
        return True

    def _read_stdio(self) -> bool:
        try:
            data = os.read(self._pipe_r, 65536)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:
            if self._pending:
                self.write(_stdio_record(self.node, self._pending.decode("utf-8", "replace")))
                self._pending = b""
            return False
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > MAX_LINE:
            lines.append(self._pending)
            self._pending = b""
        for line in lines:
            if line.strip():
                self.write(_stdio_record(self.node, line.decode("utf-8", "replace")))
        return True

    def write(self, record: logging.LogRecord) -> None:
        """Write one record where this node's records go."""
        try:
            if self._file is not None:
                self._file.handle(record)
                return
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)
        except Exception:  # a handler's bug must not end the writer
            with contextlib.suppress(Exception):
                os.write(2, f"otpkit: a log handler failed on {record.name}\n".encode())

    def close(self, wait: float = 2.0) -> None:
        """Write what the node's last processes sent, then stop."""
        global _sock
        self._closing = True
        self._thread.join(wait)
        if _sock is self._send_end:
            _sock = None
        with contextlib.suppress(OSError):
            self._send_end.close()
        self._close_stdio_end()
        if not self._thread.is_alive():
            self._release()
        # else the thread still reads (a process of the node that outlived the stop
        # holds a sending end): it releases the reading ends itself when it ends

    def _release(self) -> None:
        with self._release_lock:
            if self._released:
                return
            self._released = True
        _readers.discard(self._pipe_r)
        _reader_socks.discard(self._recv)
        with contextlib.suppress(OSError):
            os.close(self._pipe_r)
        self._recv.close()
        if self._file is not None:
            self._file.close()


def _readable(fds: set[int]) -> bool:
    if not fds:
        return False
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return any(ev & select.POLLIN for _, ev in poller.poll(0))


def decode(data: bytes, node: str) -> logging.LogRecord | None:
    """A record the writer read, or None when it is not one."""
    try:
        fields = msgpack.unpackb(data, raw=False)
    except Exception:
        return None
    if not isinstance(fields, dict) or not all(isinstance(k, str) for k in fields):
        return None
    shape: dict[str, type | tuple[type, ...]] = {
        "name": str,
        "levelno": int,
        "levelname": str,
        "msg": str,
        "created": (int, float),
        "msecs": (int, float),
        "process": int,
    }
    for key, kind in shape.items():
        if not isinstance(fields.get(key), kind):
            return None
    exc_text = fields.get("exc_text")
    raw_tags = fields.get("tags")
    tags: dict[Any, Any] = raw_tags if isinstance(raw_tags, dict) else {}
    record = logging.makeLogRecord(
        {
            "name": fields["name"],
            "levelno": fields["levelno"],
            "levelname": fields["levelname"],
            "msg": fields["msg"],
            "args": None,
            "created": float(fields["created"]),
            "msecs": float(fields["msecs"]),
            "process": fields["process"],
            "exc_text": exc_text if isinstance(exc_text, str) else None,
        }
    )
    record.node = str(tags.get("node", node))
    record.actor = str(tags.get("actor", "-"))
    for key in ("job", "tick"):
        if key in tags:
            setattr(record, key, str(tags[key]))
    return record


def _stdio_record(node: str, line: str, level: int = logging.WARNING) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"name": "otpkit.stdio", "levelno": level, "levelname": logging.getLevelName(level)}
    )
    record.msg = line
    record.args = None
    record.node = node
    record.actor = "-"
    return record


# --------------------------------------------------------------------- formats


class TextFormatter(logging.Formatter):
    """``2026-12-05T12:00:00.123Z INFO app@10.0.0.7 otpkit_quorum[4242] otpkit.quorum:
    message``, a task's ``[job=every5 tick=2026-12-05T12:00:00Z]`` before its message,
    and a traceback on the lines after."""

    def __init__(self, node: str = "-") -> None:
        super().__init__()
        self.node = node

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        tags = _task_tags(record)
        line = (
            f"{self.formatTime(record)} {record.levelname} {getattr(record, 'node', self.node)} "
            f"{getattr(record, 'actor', '-')}[{record.process}] {record.name}:"
            f"{tags} {record.message}"
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text.rstrip()}"
        return line


def _task_tags(record: logging.LogRecord) -> str:
    parts = [f"{k}={getattr(record, k)}" for k in ("job", "tick") if hasattr(record, k)]
    return f" [{' '.join(parts)}]" if parts else ""


def text_formatter(node: str = "-") -> logging.Formatter:
    return TextFormatter(node)


def json_formatter(node: str = "-") -> logging.Formatter:
    """One JSON object per line (python-json-logger): time, level, node, actor, process,
    logger, message, and a task's job and tick; a traceback in ``exc_info``."""
    from pythonjsonlogger.json import JsonFormatter  # noqa: PLC0415 - only for json

    class _Json(JsonFormatter):
        def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            return f"{stamp}.{int(record.msecs):03d}Z"

        def add_fields(
            self,
            log_data: dict[str, Any],
            record: logging.LogRecord,
            message_dict: dict[str, Any],
        ) -> None:
            super().add_fields(log_data, record, message_dict)
            log_data.setdefault("node", getattr(record, "node", node))
            log_data.setdefault("actor", getattr(record, "actor", "-"))

    return _Json(
        "{asctime}{levelname}{name}{process}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        json_ensure_ascii=False,
    )
