"""Who listens at a dist address: the first two steps of the handshake, as a client that
never joins (``otpkit shell`` asks this before it starts its hidden node)."""

from __future__ import annotations

import os
import socket
import time

from otpkit.distribution import _codec, _handshake

__all__ = ["ProbeError", "probe_peer"]


class ProbeError(Exception):
    """What answered at an address is not a dist node holding the cookie (or nothing did)."""


def probe_peer(host: str, port: int, cookie: bytes, timeout: float = 3.0) -> str:
    """The node name that listens at ``host:port``, once it proved it holds ``cookie``:
    the first two steps of the dist handshake (our hello; its challenge carries its name
    and its proof), then a close. Nothing is admitted on the node's side: it only logs
    a handshake that ended early.

    Raises:
        ProbeError: nothing answers there, not as a dist node, or with another cookie;
            its message says which.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            me = f"probe-{os.getpid()}@{sock.getsockname()[0]}"
            nonce = _handshake.new_nonce()
            hello = ("hello", me, 1, nonce, True, [sock.getsockname()[0], 0])
            sock.sendall(_codec.encode_frame(hello))
            decoder = _codec.FrameDecoder(4096)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = sock.recv(4096)
                if not data:
                    break
                for frame in decoder.feed(data):
                    if not (
                        isinstance(frame, tuple) and len(frame) == 5 and frame[0] == "challenge"
                    ):
                        answer = str(frame)[:60]
                        raise ProbeError(f"{host}:{port} answered {answer!r}, not a challenge")
                    _, name, creation, theirs, proof = frame
                    expected = _handshake.proof(
                        cookie, "acceptor", nonce, theirs, me, 1, str(name), int(creation)
                    )
                    if not _handshake.check(expected, proof):
                        raise ProbeError(
                            f"{name} at {host}:{port} refused the handshake: wrong cookie"
                        )
                    return str(name)
    except OSError as exc:
        raise ProbeError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
    except (_codec.ProtocolError, TypeError, ValueError) as exc:
        raise ProbeError(f"{host}:{port} is not an otpkit node: {exc}") from None
    raise ProbeError(f"{host}:{port} closed the connection: not an otpkit node?")
