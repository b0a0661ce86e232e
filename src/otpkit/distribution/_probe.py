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
            own = _handshake.PROTOCOL_VERSION
            hello = ("hello", me, 1, nonce, True, [sock.getsockname()[0], 0], own)
            sock.sendall(_codec.encode_frame(hello))
            decoder = _codec.FrameDecoder(4096)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = sock.recv(4096)
                if not data:
                    break
                for frame in decoder.feed(data):
                    if isinstance(frame, tuple) and len(frame) >= 3 and frame[0] == "refuse":
                        version = _handshake.version_of(frame, 2)
                        raise ProbeError(
                            f"{host}:{port} refused this otpkit: it speaks otpkit protocol "
                            f"{_handshake.spoken(version)}, this otpkit {own}: versions too "
                            "far apart"
                        )
                    if not (
                        isinstance(frame, tuple) and len(frame) >= 5 and frame[0] == "challenge"
                    ):
                        answer = str(frame)[:60]
                        raise ProbeError(f"{host}:{port} answered {answer!r}, not a challenge")
                    _, name, creation, theirs, proof = frame[:5]
                    version = _handshake.version_of(frame, 5)
                    if not _handshake.accepts_version(own, version):
                        raise ProbeError(
                            f"{name} at {host}:{port} speaks otpkit protocol {version}, "
                            f"this otpkit {_handshake.spoken(own)}: versions too far apart"
                        )
                    expected = _handshake.proof(
                        cookie,
                        "acceptor",
                        nonce,
                        theirs,
                        me,
                        1,
                        str(name),
                        int(creation),
                        (own, version),
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
