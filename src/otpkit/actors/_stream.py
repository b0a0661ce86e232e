"""The one read loop of a framed, non-blocking socket, shared by a process's runtime (Unix
sockets to the node's processes) and the dist thread (its TCP links and its local ones).

It reads what is there now, feeds it to the connection's frame decoder and hands each
frame on in order, and tells the caller how the stream stopped; what a frame, an end of
stream or a bad frame means is the caller's business.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["RECV_SIZE", "StreamEnd", "read_frames"]

#: Bytes asked of one ``recv``: below the allocator's mmap threshold (a larger buffer
#: costs an mmap per read).
RECV_SIZE = 65536

_AGAIN: tuple[type[BaseException], ...] = (BlockingIOError, InterruptedError)


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Why a stream can be read no further: ``"eof"`` (the peer closed it), ``"recv"``
    (``recv`` failed with ``error``) or ``"frame"`` (the decoder refused the bytes with
    ``error``; the connection must be closed)."""

    kind: str
    error: BaseException | None = None


def read_frames(
    sock: socket.socket,
    feed: Callable[[bytes], Iterable[Any]],
    on_frame: Callable[[Any], None],
    closed: Callable[[], bool],
    *,
    bad_frame: tuple[type[BaseException], ...],
    again: tuple[type[BaseException], ...] = _AGAIN,
    buffered: Callable[[], bool] | None = None,
    want: Callable[[], int] | None = None,
) -> StreamEnd | None:
    """Read ``sock`` until it has nothing more for now, handing each frame to ``on_frame``.

    Args:
        feed: the connection's decoder: bytes in, the frames they complete out.
        on_frame: called with each frame, in order; it may close the connection, and
            reading stops as soon as ``closed()`` says so. What it raises propagates.
        closed: whether the caller has closed the connection.
        bad_frame: the exceptions ``feed`` raises on bytes that are no valid frame.
        again: the exceptions of a ``recv`` that has nothing for now (a TLS socket adds
            its want-read and want-write errors).
        buffered: for a TLS socket, whether decrypted bytes wait in its buffer (a short
            read does not then mean the kernel's buffer is empty).
        want: how many bytes the decoder takes now, if fewer than :data:`RECV_SIZE`
            (0: any); a local connection whose peer has not proven the key asks for the
            bytes of its challenge only.

    Returns:
        None when everything readable was handled (or the connection was closed by
        ``on_frame``); a :class:`StreamEnd` when the stream ended or went bad, for the
        caller to close.
    """
    while not closed():
        asked = (want() or RECV_SIZE) if want is not None else RECV_SIZE
        try:
            data = sock.recv(asked)
        except again:
            return None
        except OSError as exc:
            return StreamEnd("recv", exc)
        if not data:
            return StreamEnd("eof")
        try:
            frames = feed(data)
        except bad_frame as exc:
            return StreamEnd("frame", exc)
        for frame in frames:
            on_frame(frame)
            if closed():
                return None
        if len(data) < asked and not (buffered is not None and buffered()):
            return None
    return None
