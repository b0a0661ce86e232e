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
proofs) followed by one ``("witness", key, epoch)`` frame; the acceptor answers
``ok`` and never sends again, nor expects ticks. A witness that cannot be dialled (a
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

log = logging.getLogger("otpkit.dist")

#: The hello's ``hidden`` field of a witness dial.
WITNESS = "witness"
#: The longest pause before a peer that failed a dial is dialled again (seconds).
MAX_PAUSE = 5.0


class WitnessError(Exception):
    """A witness dial failed (the peer is unreachable, refused it, or proved nothing)."""


def _read_frame(sock: socket.socket, decoder: _codec.FrameDecoder) -> Any:
    while True:
        data = sock.recv(4096)
        if not data:
            raise WitnessError("the peer closed the connection")
        frames = decoder.feed(data)
        if frames:
            return frames[0]


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
        nonce = _handshake.new_nonce()
        own = _handshake.PROTOCOL_VERSION
        hello = ("hello", me, creation, nonce, WITNESS, [str(info["host"]), 0], own)
        sock.sendall(_codec.encode_frame(hello))
        decoder = _codec.FrameDecoder(4096)
        frame = _read_frame(sock, decoder)
        if not (isinstance(frame, tuple) and len(frame) >= 5 and frame[0] == "challenge"):
            raise WitnessError(f"unexpected answer {str(frame)[:80]}")
        _, name, peer_creation, peer_nonce, proof = frame[:5]
        if (
            not isinstance(peer_creation, int)
            or not 0 <= peer_creation < 2**32
            or not isinstance(peer_nonce, bytes)
        ):
            raise WitnessError("a malformed challenge")
        version = _handshake.version_of(frame, 5)
        if not _handshake.accepts_version(own, version):
            sock.sendall(
                _codec.encode_frame(("refuse", _handshake.refusal_reason(own, version), own))
            )
            raise WitnessError(_handshake.refusal(str(name)[:80], own, version))
        versions = (own, version)
        expected = _handshake.proof(
            cookie, "acceptor", nonce, peer_nonce, me, creation, str(name), peer_creation, versions
        )
        if name != peer or not _handshake.check(expected, proof):
            raise WitnessError(f"bad cookie or wrong node (answered as {str(name)[:80]!r})")
        mine = _handshake.proof(
            cookie, "dialer", nonce, peer_nonce, me, creation, peer, peer_creation, versions
        )
        sock.sendall(_codec.encode_frame(("ack", mine)))
        answer = _read_frame(sock, decoder)
        if answer != ("ok",):
            raise WitnessError(f"refused: {str(answer)[:80]}")
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
