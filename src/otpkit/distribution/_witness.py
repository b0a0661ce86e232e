"""Witnesses: sockets whose close proves that a lease holder's acting process is gone.

A member of the majority quorum that sees a holder's node close its dist link cannot
tell a dead node from a dead dist process beside a live singleton: voiding the grant
then could make two active instances. So a member voids a grant early only when a
*witness* of it closes: a TCP connection to the member's dist port, dialled and held
by the very process that acts under the lease (a ``SingletonWorker``), naming the lease
``(key, epoch)``. The kernel closes it when that process ends, however it ends (a
process forked from it closes its copy at once: ``actors.own_socket``); the process
closes it itself only after it stopped acting. While it is open - the process lives,
frozen or not - the member waits for the grant's expiry.

The dial is the dist handshake (``hello`` with ``hidden="witness"``, the same cookie
proofs in the same order: :class:`._handshake.Dialer`) followed by one ``("witness",
key, epoch)`` frame; the acceptor answers ``ok`` and never sends again, nor expects
ticks. A witness that cannot be dialled (a
peer not yet connected, TLS dist links) only means that member waits for the expiry:
safety never depends on a witness, fast fail-over does.

:class:`Witness` runs one thread in the acting process; every loop is bounded by its
interval and its stop event; a peer that refused or could not be reached is dialled
again after a pause that doubles up to ``MAX_PAUSE``.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from typing import Any

from otpkit import actors
from otpkit.distribution import _codec, _handshake
from otpkit.distribution._handshake import WITNESS

log = logging.getLogger("otpkit.dist")

#: The longest pause before a peer that failed a dial is dialled again (seconds).
MAX_PAUSE = 5.0


class WitnessError(Exception):
    """A witness dial failed (the peer is unreachable, refused it, or proved nothing)."""


class Closed(Exception):
    """The peer closed the connection during a blocking handshake."""


def _read_frame(sock: socket.socket, decoder: _codec.FrameDecoder) -> tuple[Any, ...]:
    """The next frame on ``sock``, a tagged tuple; one at a time (the next ones stay in
    ``decoder``). Raises Closed, or HandshakeError for anything but a tagged tuple."""
    data = b""
    while True:
        frames = decoder.feed(data, 1)
        if frames:
            frame = frames[0]
            if not (isinstance(frame, tuple) and frame and isinstance(frame[0], str)):
                raise _handshake.HandshakeError("malformed", f"answered {str(frame)[:60]!r}")
            return frame
        data = sock.recv(4096)
        if not data:
            raise Closed("the peer closed the connection")


def handshake(
    sock: socket.socket,
    dialer: _handshake.Dialer,
    hidden: bool | str,
    listen: tuple[str, int],
) -> _codec.FrameDecoder:
    """The dist handshake of ``dialer`` on the blocking, connected ``sock``: returns once
    the link is up (the acceptor proved it holds the cookie), with the decoder holding
    what the peer sent after. Raises :class:`~._handshake.HandshakeError`
    (after sending its ``refuse`` frame, if any), Closed, OSError or ProtocolError."""
    sock.sendall(_codec.encode_frame(dialer.hello(hidden, listen)))
    decoder = _codec.FrameDecoder(4096, plain=True)
    while True:
        frame = _read_frame(sock, decoder)
        try:
            send, up = dialer.on_frame(frame)
        except _handshake.HandshakeError as exc:
            if exc.send is not None:
                with contextlib.suppress(OSError):
                    sock.sendall(_codec.encode_frame(exc.send))
            raise
        if send is not None:
            sock.sendall(_codec.encode_frame(send))
        if up:
            return decoder


def dial(
    info: dict[str, Any], peer: str, addr: tuple[str, int], key: str, epoch: int, timeout: float
) -> tuple[socket.socket, int]:
    """Dial ``peer``'s dist port at ``addr`` as a witness of ``(key, epoch)``; return the
    open socket (blocking, no timeout) once the peer accepted it, and the creation the
    peer proved (the incarnation it reached, whatever ``info`` said)."""
    me, creation, cookie = str(info["node"]), int(info["creation"]), bytes(info["cookie"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        # from the node's own address: a cut of that address cuts its witnesses too
        sock.bind((str(info["host"]), 0))
        sock.connect(addr)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        dialer = _handshake.Dialer(cookie, me, creation, peer)
        try:
            handshake(sock, dialer, WITNESS, (str(info["host"]), 0))
        except _handshake.HandshakeError as exc:
            if exc.kind == "version":
                raise WitnessError(_handshake.refusal(peer, dialer.own, exc.version)) from None
            if exc.kind == "refused version":
                raise WitnessError(_handshake.refused_by(peer, dialer.own, exc.version)) from None
            if exc.kind == "refused":
                raise WitnessError(f"refused: {exc.detail}") from None
            raise WitnessError(exc.detail) from None
        except Closed as exc:
            raise WitnessError(str(exc)) from None
        peer_creation = dialer.peer_creation
        sock.sendall(_codec.encode_frame(("witness", key, epoch)))
        sock.settimeout(None)
        return sock, peer_creation
    except (OSError, ValueError) as exc:
        sock.close()
        raise WitnessError(str(exc)) from None
    except BaseException:
        sock.close()
        raise


class Witness:
    """The witnesses of one lease, held by the process acting under it.

    ``update(info)`` gives the dist's :meth:`~._core.DistCore.witness_info` (again
    whenever the peers may have changed); the thread dials every peer it names that has
    no open witness to that incarnation, every ``interval``, and notices a witness the
    peer closed, so that it is dialled again (a restarted peer never saw the old one).
    ``close()`` closes them all: call it only once the process stopped acting.
    """

    def __init__(self, key: str, epoch: int, interval: float = 0.25, timeout: float = 1.0):
        self.key, self.epoch = key, epoch
        self.interval, self.timeout = interval, timeout
        self._info: dict[str, Any] | None = None
        self._open: dict[str, tuple[int, socket.socket]] = {}  # peer: its creation, socket
        self._pause: dict[str, tuple[float, float]] = {}  # peer: (next dial, last pause)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="otpkit-witness", daemon=True)
        self._thread.start()

    def update(self, info: dict[str, Any]) -> None:
        self._info = info

    def peers(self) -> dict[str, int]:
        """The peers that hold an open witness, and the creation of each (a snapshot)."""
        with self._lock:
            return {peer: creation for peer, (creation, _sock) in sorted(self._open.items())}

    def close(self) -> None:
        """Close every witness now (a dial still under way closes when it ends)."""
        with self._lock:
            self._stop.set()
            for _creation, sock in self._open.values():
                _close(sock)
            self._open.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            info = self._info
            if info is not None and not info.get("tls"):
                self._reap()
                for peer, (host, port, creation) in dict(info["peers"]).items():
                    held = self._open.get(peer)
                    if (held is not None and held[0] == creation) or self._stop.is_set():
                        continue
                    due, pause = self._pause.get(peer, (0.0, 0.0))
                    if time.monotonic() < due:
                        continue
                    try:
                        sock, proven = dial(
                            info, peer, (host, port), self.key, self.epoch, self.timeout
                        )
                    except WitnessError as exc:
                        log.debug("witness of %s at %s: %s", self.key, peer, exc)
                        pause = min(MAX_PAUSE, max(2 * pause, self.interval))
                        self._pause[peer] = (time.monotonic() + pause, pause)
                        continue
                    if proven == creation:
                        self._pause.pop(peer, None)
                    else:  # ``info`` is behind the peer: wait for it rather than redial
                        self._pause[peer] = (time.monotonic() + 1.0, 0.0)
                    with self._lock:
                        if self._stop.is_set():
                            sock.close()
                            break
                        actors.own_socket(sock)
                        # recorded under the creation the peer proved: ``info`` may
                        # name an incarnation that is stopping while its successor
                        # answers. The one it replaces is closed after the new one is
                        # open (the member voids a lease only when its last witness
                        # there closes)
                        if held is not None:
                            _close(held[1])
                        self._open[peer] = (proven, sock)
            self._stop.wait(self.interval)

    def _reap(self) -> None:
        """Forget the witnesses their peer closed (readable: EOF or an error)."""
        with self._lock:
            socks = list(self._open.items())
            if not socks or self._stop.is_set():
                return
            with contextlib.suppress(OSError, ValueError):
                readable, _, _ = select.select([s for _, (_c, s) in socks], [], [], 0)
                for peer, (_creation, sock) in socks:
                    if sock in readable:
                        _close(sock)
                        del self._open[peer]


def _close(sock: socket.socket) -> None:
    actors.own_socket(sock, False)
    with contextlib.suppress(OSError):
        sock.close()
