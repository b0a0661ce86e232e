"""The node's name table, readable by every process of the node without a message.

The registry process is the only writer; every other process of the node reads. They
share one anonymous memory file (``memfd``) made by the node's starter before any other
process is forked, so each inherits it. Layout: a 16-byte header ``(sequence, length)``
then a pickled ``{name: Pid}``. The writer makes the sequence odd while it writes and even
when done (a seqlock); a reader re-reads the header after the body and tries again if it
moved. A reader decodes the body only when the sequence changed since its last read, so
``whereis_name`` costs one ``pread`` and a dict lookup.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
from typing import Any

from otpkit.actors import Pid

_HEADER = struct.Struct("<QQ")
_fd: int | None = None
_cache: tuple[int, dict[Any, Pid]] = (-1, {})
_seq = 0


def create() -> None:
    """Make the node's table (in the starter, before the node's processes fork)."""
    global _fd, _cache, _seq
    close()
    _fd = os.memfd_create("otpkit-global")
    _seq = 0
    _cache = (-1, {})
    os.pwrite(_fd, _HEADER.pack(0, 0), 0)


def close() -> None:
    global _fd
    if _fd is not None:
        with contextlib.suppress(OSError):
            os.close(_fd)
        _fd = None


def take_over() -> None:
    """Become the writer (a registry process, also a restarted one): carry on from the
    sequence in the file, so no reader mistakes a new table for the one it cached."""
    global _seq
    if _fd is not None:
        seq = _HEADER.unpack(os.pread(_fd, _HEADER.size, 0))[0]
        _seq = seq + (seq % 2)


def publish(table: dict[Any, Pid]) -> None:
    """Replace the shared table (the registry process only)."""
    global _seq
    if _fd is None:
        return
    body = pickle.dumps(table, protocol=pickle.HIGHEST_PROTOCOL)
    _seq += 1  # odd: being written
    os.pwrite(_fd, _HEADER.pack(_seq, 0), 0)
    os.pwrite(_fd, body, _HEADER.size)
    _seq += 1
    os.pwrite(_fd, _HEADER.pack(_seq, len(body)), 0)


def read(tries: int = 200) -> dict[Any, Pid] | None:
    """The current table, or None if there is none here (or it never held still)."""
    global _cache
    fd = _fd
    if fd is None:
        return None
    for _ in range(tries):
        seq, length = _HEADER.unpack(os.pread(fd, _HEADER.size, 0))
        if seq == _cache[0]:
            return _cache[1]
        if seq % 2:
            continue
        body = os.pread(fd, length, _HEADER.size)
        if _HEADER.unpack(os.pread(fd, _HEADER.size, 0))[0] != seq:
            continue
        # the body is the registry's own pickle, in a memory file only this node's
        # processes hold (inherited, never named): as trusted as the node's own memory
        table: dict[Any, Pid] = pickle.loads(body) if length else {}
        _cache = (seq, table)
        return table
    return None
