"""Frames between the processes of one node: pickles, authenticated per connection.

Only processes of the same node (and the program that started it) hold the node's key; it
is made at random when the first node of an OS process starts and reaches the node's
processes by fork, never through a file or the environment. Cross-node traffic never uses
this module (that is ``dist``, msgpack only).

Every connection starts with a challenge (:class:`Channel`), because an abstract socket is
open to every process of the network namespace (every container of a pod):

1. the listening end sends a fresh random nonce (16 bytes, nothing that depends on the key);
2. the connecting end answers with its own nonce and its proof (32 bytes): a MAC under the
   node's key of both nonces and the listening address;
3. the listening end checks it and answers with its own proof.

Each direction's frames are then tagged under a key derived from the node's key, both
nonces and the address, so a frame taken from one connection verifies on no other, nor in
the other direction. Until the other end's proof verifies, an end reads only the bytes of
the challenge it still needs: an unproven connection holds at most 48 bytes. A proof or a
frame that does not verify is never acted on: its connection is closed.

Layout of a frame: 4-byte big-endian length, 32-byte tag of the body, pickled body. The
tag is keyed BLAKE2b (a MAC by construction, 5x faster than HMAC-SHA256 on small frames,
which matters on the local hot path); ``dist`` uses HMAC-SHA256 as its handshake specifies.
Thespian's pickles are signed with the node's key itself (:func:`sign`, :func:`verify`):
they carry no otpkit message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pickle
import socket
import struct
import time
from collections import OrderedDict
from typing import Any

from otpkit.errors import FrameError

log = logging.getLogger("otpkit.actors")

_HEADER = struct.Struct(">I")
_TAG_LEN = 32
#: Largest frame accepted between two local processes, once the other end proved the key.
MAX_FRAME = 256 * 1024 * 1024
#: Bytes of a nonce, and of a proof.
NONCE_LEN = 16
PROOF_LEN = 32
_UCRED = struct.Struct("3i")  # SO_PEERCRED: pid, uid, gid

_key: bytes = b""


def node_key() -> bytes:
    """This OS process's frame key, made on first use."""
    global _key
    if not _key:
        _key = os.urandom(32)
    return _key


def _tag(body: bytes) -> bytes:
    return hashlib.blake2b(body, key=node_key(), digest_size=_TAG_LEN).digest()


def sign(body: bytes) -> bytes:
    """``body`` prefixed with its tag under the node's key (Thespian's serializer)."""
    return _tag(body) + body


def verify(data: bytes) -> bytes:
    """The body of a signed blob, or :class:`FrameError` if the tag does not match."""
    if len(data) < _TAG_LEN:
        raise FrameError(f"blob of {len(data)} bytes is shorter than its tag")
    tag, body = data[:_TAG_LEN], data[_TAG_LEN:]
    if not hmac.compare_digest(tag, _tag(body)):
        raise FrameError("frame tag does not verify: not from this node")
    return body


def encode(obj: Any) -> bytes:
    """The pickled body of a frame holding ``obj``; the connection it is written on tags
    and frames it (:meth:`Channel.send`)."""
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _mac(key: bytes) -> hashlib.blake2b:
    """A keyed BLAKE2b state to copy for each tag (cheaper than keying it each time)."""
    return hashlib.blake2b(key=key, digest_size=_TAG_LEN)


def seal(body: bytes, mac: hashlib.blake2b) -> bytes:
    """One frame holding ``body``, tagged with a copy of ``mac`` (:func:`_mac`)."""
    h = mac.copy()
    h.update(body)
    return _HEADER.pack(len(body) + _TAG_LEN) + h.digest() + body


class FrameReader:
    """Splits a byte stream into verified, unpickled frames tagged with one key."""

    __slots__ = ("_buf", "_mac")

    def __init__(self, key: bytes) -> None:
        self._buf = bytearray()
        self._mac = _mac(key)

    def feed(self, data: bytes) -> list[Any]:
        """Add bytes; return the complete frames they finish, in order.

        Raises :class:`FrameError` on an oversize length or a tag that does not verify;
        the caller must then close the connection.
        """
        buf = self._buf
        buf += data
        out: list[Any] = []
        pos = 0
        mac = self._mac
        while len(buf) - pos >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buf, pos)
            if size > MAX_FRAME or size < _TAG_LEN:
                raise FrameError(f"frame length {size} outside 32..{MAX_FRAME}")
            end = pos + _HEADER.size + size
            if len(buf) < end:
                break
            start = pos + _HEADER.size
            tag = bytes(buf[start : start + _TAG_LEN])
            body = bytes(buf[start + _TAG_LEN : end])
            h = mac.copy()
            h.update(body)
            if not hmac.compare_digest(tag, h.digest()):
                raise FrameError("frame tag does not verify: not from this node")
            pos = end
            try:
                out.append(pickle.loads(body))
            except Exception as exc:
                # authentic but not loadable here (a class this process cannot import or
                # rebuild): drop this one message, keep the connection and the rest
                log.error("dropped a message that does not unpickle here: %r", exc)
        if pos:
            del buf[:pos]
        return out


def _derive(address: bytes, listener_nonce: bytes, connector_nonce: bytes, what: bytes) -> bytes:
    """One secret of a connection: ``what`` names it (a proof or a direction's key)."""
    return hashlib.blake2b(
        listener_nonce + connector_nonce + address,
        key=node_key(),
        person=what,
        digest_size=32,
    ).digest()


class Channel:
    """One end of a local connection: the challenge, the two keys, the frames.

    The end that accepted the connection is ``listening``. Whatever :meth:`take_output`
    returns must be written to the socket, in order, before anything else: the listener's
    nonce at once, then each end's answer to the challenge, then the frames written
    meanwhile. :meth:`send` seals a frame as soon as the keys are known (``ready``: for
    the connecting end once it read the listener's nonce, for the listener once the
    connecting end proved the key) and queues it until then. :meth:`feed` takes what was
    read; it raises :class:`FrameError` when the other end's proof or a frame does not
    verify, and never holds more than the challenge's bytes before the proof.
    """

    __slots__ = (
        "_address",
        "_hs",
        "_nonce",
        "_out",
        "_peer_proof",
        "_queue",
        "_reader",
        "_tx",
        "listening",
        "proven",
    )

    def __init__(self, address: str, *, listening: bool) -> None:
        self._address = address.encode("utf-8", "surrogatepass")
        self.listening = listening
        self._nonce = os.urandom(NONCE_LEN)
        self._hs = bytearray()  # the other end's challenge bytes read so far
        self._out = bytearray(self._nonce if listening else b"")
        self._queue: list[bytes] = []  # bodies sent before the keys were known
        self._tx: hashlib.blake2b | None = None  # the MAC state of this end's frames
        self._reader: FrameReader | None = None
        self._peer_proof = b""  # the connecting end: the listener's proof to expect
        #: the other end proved it holds the node's key
        self.proven = False

    @property
    def ready(self) -> bool:
        """Frames this end sends are sealed at once (the keys are known)."""
        return self._tx is not None

    def need(self) -> int:
        """Bytes of the challenge still to read (0 once the other end is proven)."""
        if self.proven:
            return 0
        if self.listening:
            return NONCE_LEN + PROOF_LEN - len(self._hs)
        if self._tx is None:
            return NONCE_LEN - len(self._hs)
        return PROOF_LEN - len(self._hs)

    def queued(self) -> bool:
        """Frames wait for the keys (see :meth:`send`)."""
        return bool(self._queue)

    def take_output(self) -> bytes:
        """What must be written to the socket now, in this order; empties it."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def send(self, body: bytes) -> bytes:
        """The frame holding ``body`` (from :func:`encode`) to write now, after what
        :meth:`take_output` holds; b"" if it waits for the keys (then :meth:`take_output`
        hands it out once they are known)."""
        tx = self._tx
        if tx is None:
            self._queue.append(body)
            return b""
        if self._out:
            self._out += seal(body, tx)
            return b""
        return seal(body, tx)

    def feed(self, data: bytes) -> list[Any]:
        """Take bytes read from the socket; return the frames they complete, in order."""
        reader = self._reader
        if self.proven and reader is not None:
            return reader.feed(data)
        view = memoryview(data)
        while not self.proven:
            want = self.need()
            self._hs += view[:want]
            view = view[want:]
            if self.need():
                return []
            self._step()
        reader = self._reader
        assert reader is not None
        return reader.feed(bytes(view)) if view else []

    def _step(self) -> None:
        """The other end's current step of the challenge is complete: check it, answer."""
        hs = bytes(self._hs)
        self._hs.clear()
        if self.listening:
            nonce, proof = hs[:NONCE_LEN], hs[NONCE_LEN:]
            keys = self._keys(self._nonce, nonce)
            if not hmac.compare_digest(proof, keys[0]):
                raise FrameError(
                    "frame tag does not verify: the connection's proof is not from this node"
                )
            self.proven = True
            self._out += keys[1]
            self._open(tx=keys[3], rx=keys[2])
        elif self._tx is None:
            keys = self._keys(hs, self._nonce)
            self._out += self._nonce + keys[0]
            self._peer_proof = keys[1]
            self._open(tx=keys[2], rx=keys[3])
        else:
            if not hmac.compare_digest(hs, self._peer_proof):
                raise FrameError(
                    "frame tag does not verify: the listener's proof is not from this node"
                )
            self.proven = True

    def _keys(self, listener_nonce: bytes, connector_nonce: bytes) -> list[bytes]:
        """The connecting end's proof, the listener's, then the connecting end's frame key
        and the listener's."""
        return [
            _derive(self._address, listener_nonce, connector_nonce, what)
            for what in (
                b"otpkit proof c",
                b"otpkit proof l",
                b"otpkit frames c",
                b"otpkit frames l",
            )
        ]

    def _open(self, tx: bytes, rx: bytes) -> None:
        self._tx = _mac(tx)
        self._reader = FrameReader(rx)
        for body in self._queue:
            self._out += seal(body, self._tx)
        self._queue.clear()


def is_stranger(sock: socket.socket) -> bool:
    """Whether the process at the other end of a Unix connection is no kin of this one:
    another user, or a process this one cannot see (another PID namespace: another
    container of the pod). A process of the same user that this one sees could kill it
    anyway; a stranger can only connect."""
    try:
        pid, uid, _ = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
    except OSError:
        return True
    return bool(pid == 0 or uid != os.geteuid())


#: Connections a process keeps at once that have not proven the node's key yet, from
#: strangers (:func:`is_stranger`) and from kin.
UNPROVEN_STRANGERS = 32
UNPROVEN_KIN = 1024


class Unproven:
    """The connections of a process that have not proven the key yet, oldest first, by
    kind of peer; past a kind's bound, the oldest of that kind is to be closed. A
    stranger never pushes out kin: the node's own processes prove within a round trip."""

    __slots__ = ("_bounds", "_by_kind")

    def __init__(self, strangers: int = UNPROVEN_STRANGERS, kin: int = UNPROVEN_KIN) -> None:
        self._bounds = {True: strangers, False: kin}
        self._by_kind: dict[bool, OrderedDict[int, None]] = {
            True: OrderedDict(),
            False: OrderedDict(),
        }

    def add(self, key: int, stranger: bool) -> int | None:
        """Count a new unproven connection; returns the one to close, if any."""
        kind = self._by_kind[stranger]
        kind[key] = None
        if len(kind) > self._bounds[stranger]:
            return kind.popitem(last=False)[0]
        return None

    def done(self, key: int) -> None:
        """The connection proved the key, or closed."""
        for kind in self._by_kind.values():
            kind.pop(key, None)

    def count(self, stranger: bool) -> int:
        return len(self._by_kind[stranger])


class RateLog:
    """A warning that can repeat (a flood of bad connections): the first of each
    ``every`` seconds is logged with how many were left out since, the rest at DEBUG."""

    __slots__ = ("_last", "_left_out", "every", "logger")

    def __init__(self, logger: logging.Logger, every: float = 60.0) -> None:
        self.logger = logger
        self.every = every
        self._last = -1e18
        self._left_out = 0

    def warning(self, msg: str, *args: Any, now: float | None = None) -> bool:
        """Log ``msg % args``; True if it went out at WARNING."""
        now = time.monotonic() if now is None else now
        if now - self._last >= self.every:
            more = f" ({self._left_out} more since the last such line)" if self._left_out else ""
            self.logger.warning(msg + "%s", *args, more)
            self._last, self._left_out = now, 0
            return True
        self._left_out += 1
        self.logger.debug(msg, *args)
        return False
