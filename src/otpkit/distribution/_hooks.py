"""The remote hooks every process of a dist-enabled node uses (see RemoteHooks)."""

from __future__ import annotations

from typing import Any

from otpkit import actors
from otpkit.actors import BYE, EXIT, Pid, RemoteHooks, Runtime
from otpkit.distribution import _codec
from otpkit.distribution._core import DIST_NAME, DIST_NSEND, DIST_SEND, DIST_SEND_WATCH, DIST_WATCH


def wire_frame(frame: tuple[Any, ...]) -> tuple[Any, ...]:
    """A local frame made fit for msgpack: exit reasons summarised if they must be."""
    if frame[0] in (EXIT, BYE):
        return (frame[0], _codec.wire_reason(frame[1]))
    return frame


#: The largest message dist carries (its frames are at most 16 MiB, with room for the
#: envelope).
MAX_MESSAGE = 16 * 1024 * 1024 - 4096


def _payload(dst: Any, frame: tuple[Any, ...]) -> bytes:
    payload = _codec.encode(wire_frame(frame))  # TypeError here, in the sender
    if len(payload) > MAX_MESSAGE:
        # the peer would close the link on the oversize frame: fail here instead
        raise ValueError(
            f"message to {dst!r} is {len(payload)} bytes; dist carries at most {MAX_MESSAGE}"
        )
    return payload


class DistHooks(RemoteHooks):
    """Reaches remote pids through the node's dist thread."""

    def __init__(self) -> None:
        self._io: Pid | None = None

    def _io_conn(self, rt: Runtime) -> Any:
        if self._io is None:
            self._io = rt.whereis(DIST_NAME)
            if self._io is None:
                return None
        conn = rt.connection_to(self._io)
        if conn is None:
            self._io = None  # the dist process restarted: look it up again next time
        return conn

    def send(self, rt: Runtime, dst: Pid, frame: tuple[Any, ...], watch: bool = False) -> bool:
        payload = _payload(dst, frame)
        conn = self._io_conn(rt)
        if conn is None:
            return False
        tag = DIST_SEND_WATCH if watch else DIST_SEND
        return rt.write(conn, actors.encode_local_frame((tag, dst, payload)))

    def nsend(self, rt: Runtime, node: str, name: str, frame: tuple[Any, ...]) -> bool:
        payload = _payload((name, node), frame)
        conn = self._io_conn(rt)
        if conn is None:
            return False
        return rt.write(conn, actors.encode_local_frame((DIST_NSEND, node, name, payload)))

    def watch(self, rt: Runtime, dst: Pid) -> bool:
        conn = self._io_conn(rt)
        if conn is None:
            return False
        return rt.write(conn, actors.encode_local_frame((DIST_WATCH, dst)))
