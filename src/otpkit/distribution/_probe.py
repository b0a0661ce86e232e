"""Who listens at a dist address: the dist handshake as a client that never joins
(``otpkit shell`` asks this before it starts its hidden node)."""

from __future__ import annotations

import os
import socket

from otpkit.distribution import _codec, _handshake, _witness

__all__ = ["ProbeError", "probe_peer"]


class ProbeError(Exception):
    """What answered at an address is not a dist node holding the cookie (or nothing did)."""


def probe_peer(host: str, port: int, cookie: bytes, timeout: float = 3.0) -> str:
    """The node name that listens at ``host:port``, once it proved it holds ``cookie``:
    the dist handshake with the hello's ``hidden`` set to ``"probe"`` (this side proves
    first, then the node), then a close. Nothing is admitted on the node's side: it closes the
    connection once it has proved itself.

    Raises:
        ProbeError: nothing answers there, not as a dist node, or with another cookie;
            its message says which.
    """
    own = _handshake.PROTOCOL_VERSION
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            me = f"probe-{os.getpid()}@{sock.getsockname()[0]}"
            dialer = _handshake.Dialer(cookie, me, 1, None)
            try:
                _witness.handshake(sock, dialer, _handshake.PROBE, (sock.getsockname()[0], 0))
            except _handshake.HandshakeError as exc:
                peer = dialer.peer_name
                where = f"{peer} at {host}:{port}" if peer else f"{host}:{port}"
                if exc.kind == "refused version":
                    raise ProbeError(
                        f"{host}:{port} refused this otpkit: it speaks otpkit protocol "
                        f"{_handshake.spoken(exc.version)}, this otpkit {own}: versions too "
                        "far apart"
                    ) from None
                if exc.kind == "version":
                    raise ProbeError(
                        f"{where} speaks otpkit protocol {exc.version}, this otpkit "
                        f"{_handshake.spoken(own)}: versions too far apart"
                    ) from None
                if exc.kind == "cookie" or (
                    exc.kind == "refused" and exc.detail == _handshake.BAD_COOKIE
                ):
                    raise ProbeError(f"{where} refused the handshake: wrong cookie") from None
                if exc.kind == "refused":
                    raise ProbeError(f"{where} refused the handshake: {exc.detail}") from None
                raise ProbeError(f"{host}:{port} is not an otpkit node: {exc.detail}") from None
            return dialer.peer_name
    except _witness.Closed:
        raise ProbeError(f"{host}:{port} closed the connection: not an otpkit node?") from None
    except OSError as exc:
        raise ProbeError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
    except (_codec.ProtocolError, TypeError, ValueError) as exc:
        raise ProbeError(f"{host}:{port} is not an otpkit node: {exc}") from None
