"""The cookie handshake between two nodes, as pure functions and two state machines
without I/O (:class:`Dialer`, :class:`Acceptor`), shared by the dist thread, the
witnesses and the shell's probe.

Protocols 3 and 4 (the same frames). Dialer A, acceptor B, one shared cookie; the
dialer proves first:

1. A -> B  ``("hello", name_a, creation_a, nonce_a, hidden_a, listen_a, version_a)``
2. B -> A  ``("challenge", name_b, creation_b, nonce_b, None, version_b)``
3. A -> B  ``("ack", proof_a)``
4. B -> A  ``("ok", proof_b)``, or ``("refuse", reason)``: a bad ``proof_a`` (reason
   ``"bad cookie"``), or a connection B will not keep (a duplicate, a blocked node)

``proof_x = HMAC-SHA256(cookie, role_x | nonce_a | nonce_b | name_a | creation_a | name_b |
creation_b | version_a | version_b)``, role ``b"acceptor"`` or ``b"dialer"``: each side
proves it knows the cookie over both fresh nonces, both identities and both protocol
versions, so a proof cannot be replayed to another connection or reflected back with the
roles swapped, and a version cannot be changed on the way. B sends nothing that depends
on the cookie before it checked ``proof_a``, whatever the hello says: a caller without
the cookie learns one bit per connection (refused or not), never a value to test guesses
against offline. A checks ``proof_b`` before the link is up. The dialer chooses whom it
dials (discovery, ``connect_node``, the peers of a proven peer), so its proof goes only
to an address it was given, as in Erlang's handshake.

The hello's ``hidden`` is a bool (a hidden node: the admin shell), ``"witness"`` (a
witness dial, :mod:`._witness`: after ``ok`` one ``("witness", key, epoch)`` frame) or
``"probe"`` (the shell's probe, :mod:`._probe`: B answers ``ok`` and closes; no link).

**Versions.** Each side names the dist protocol it speaks (:data:`PROTOCOL_VERSION`; a
hello without one is the release before versions, protocol 1). The acceptor checks the
dialer's version on the hello, the dialer the acceptor's on the challenge, both with
:func:`accepts_version`, before any proof is computed; the side that refuses logs one
line (:func:`refusal`), sends ``("refuse", reason, its version)`` - the dialer instead of
its ack - and closes. A node accepts its own version, the previous one, and any newer one
(the newer side decides whether it can still talk to an older one), so the nodes of two
consecutive releases interoperate and a rolling update keeps the cluster whole. Fields
after the version are ignored: a later protocol may append some.

Protocol 4 changed no frame of the handshake (its processes send messages protocol 3
nodes do not know: see ``dist.versions``), so a protocol 3 node and a protocol 4 node
shake hands as two protocol 3 nodes do, whichever dials. **Protocol 2** had the acceptor
prove first (its challenge carried ``proof_b``); it is two behind protocol 4 and refused
as any older protocol is: its hello gets the version refusal, its challenge this side's
``refuse`` instead of an ack, so neither side sends a proof. (Protocol 3 closed a protocol
2 hello and dialled its node back in protocol 2's order; protocol 4 has no such path.)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

NONCE_LEN = 32

#: The dist protocol this code speaks. Raise it with any change of what crosses a dist
#: link; the next release then still talks to this one (see :func:`accepts_version`).
PROTOCOL_VERSION = 4
#: What a hello without a version speaks: the release before protocol versions.
UNVERSIONED = 1
#: The oldest protocol whose nodes can take part in a rolling update: the first one
#: whose hello names its version (protocol 1 nodes cannot parse the versioned hello).
FIRST_VERSIONED = 2
#: A version field at or above this is malformed (it is packed in 4 bytes).
_MAX_VERSION = 1 << 32
#: The hello's ``hidden`` of a witness dial and of the shell's probe.
WITNESS = "witness"
PROBE = "probe"
#: What a node name may look like: app@host, printable, bounded (it reaches the logs).
NODE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}@[A-Za-z0-9_.:\[\]-]{1,190}")
#: The longest listen host a hello may name: a DNS name's (a node listens at its name's
#: host part unless told otherwise, and NODE_NAME allows 190 characters there).
MAX_HOST = 253
#: The reason an acceptor sends when the dialer's proof is wrong.
BAD_COOKIE = "bad cookie"
#: The shortest cookie a node takes (``otpkit cookie new`` makes 32 random bytes). An
#: online guess costs a connection; a short or dictionary cookie is still one to guess.
MIN_COOKIE = 16


def new_nonce() -> bytes:
    return os.urandom(NONCE_LEN)


def cookie_problem(cookie: object) -> str:
    """Why ``cookie`` may not be a node's cookie (not bytes, or shorter than
    :data:`MIN_COOKIE` bytes), or ''."""
    if not isinstance(cookie, bytes):
        return f"the dist cookie must be bytes, not {type(cookie).__name__}"
    if len(cookie) < MIN_COOKIE:
        return (
            f"the dist cookie is {len(cookie)} bytes: at least {MIN_COOKIE} are needed "
            "(make one with `otpkit cookie new`)"
        )
    return ""


def _transcript(
    role: bytes,
    nonce_a: bytes,
    nonce_b: bytes,
    name_a: str,
    creation_a: int,
    name_b: str,
    creation_b: int,
    versions: tuple[int, int],
) -> bytes:
    parts = [role, nonce_a, nonce_b]
    for name, creation in ((name_a, creation_a), (name_b, creation_b)):
        raw = name.encode()
        parts.append(struct.pack(">H", len(raw)) + raw + struct.pack(">Q", creation))
    parts.append(struct.pack(">II", *versions))
    return b"".join(parts)


def proof(
    cookie: bytes,
    role: str,
    nonce_a: bytes,
    nonce_b: bytes,
    name_a: str,
    creation_a: int,
    name_b: str,
    creation_b: int,
    versions: tuple[int, int],
) -> bytes:
    """The HMAC a side sends; ``role`` is ``"acceptor"`` or ``"dialer"``; ``versions``
    is ``(dialer's version, acceptor's version)`` as the hello and challenge named them."""
    data = _transcript(
        role.encode(), nonce_a, nonce_b, name_a, creation_a, name_b, creation_b, versions
    )
    return hmac.new(cookie, data, hashlib.sha256).digest()


def check(expected: bytes, got: object) -> bool:
    return isinstance(got, bytes) and hmac.compare_digest(expected, got)


def wins_duplicate(own_name: str, peer_name: str) -> bool:
    """Both nodes dialled each other at once: the connection dialled by the node with the
    smaller name is kept. True if this node's own dial is the one to keep."""
    return own_name < peer_name


# ---------------------------------------------------------------------- versions


def version_of(frame: tuple[object, ...], at: int) -> int:
    """The protocol version a hello (``at`` 6) or a challenge (``at`` 5) names:
    :data:`UNVERSIONED` if the frame ends before it. Raises ValueError if the field is
    not an int in [1, 2**32)."""
    if len(frame) <= at:
        return UNVERSIONED
    version = frame[at]
    if type(version) is not int or not 1 <= version < _MAX_VERSION:
        raise ValueError(f"bad protocol version {str(version)[:40]!r}")
    return version


def oldest_accepted(own: int) -> int:
    """The oldest protocol a node speaking ``own`` talks to: the previous one, but never
    one older than :data:`FIRST_VERSIONED`."""
    return max(own - 1, FIRST_VERSIONED)


def accepts_version(own: int, peer: int) -> bool:
    """Whether a node speaking protocol ``own`` talks to a peer speaking ``peer``: its
    own, the previous one (N-1: a rolling update from the previous release) or any newer
    one (that side decides whether it can still talk to this one). Anything older is
    refused: its release needs a full restart."""
    return peer >= oldest_accepted(own)


def spoken(own: int) -> str:
    """The versions a node speaking ``own`` talks to (newer ones aside), for a message:
    ``"3 and 2"``, or ``"2"`` when the previous protocol is not one it talks to."""
    oldest = oldest_accepted(own)
    return f"{own} and {oldest}" if oldest < own else str(own)


#: What every refusal line ends with: the way out.
FULL_RESTART = (
    "only the previous release can join a rolling update; from an older one restart in "
    "full: stop every node (scale to 0), then start them all on one release"
)


def refusal(peer: str, own: int, theirs: int) -> str:
    """The one line a node logs when it refuses ``peer`` for its protocol ``theirs``."""
    return (
        f"refused {peer}: it speaks otpkit protocol {theirs}, this node {spoken(own)} "
        f"({FULL_RESTART})"
    )


def refused_by(peer: str, own: int, theirs: int) -> str:
    """The one line a node logs when ``peer``, speaking ``theirs``, refused it."""
    return (
        f"refused by {peer}: it speaks otpkit protocol {spoken(theirs)}, this node {own} "
        f"({FULL_RESTART})"
    )


def refusal_reason(own: int, theirs: int) -> str:
    """The reason sent in a version refusal, short enough that a node of the release
    before versions (which logs the first 80 characters of the frame) shows it."""
    return f"otpkit protocol {spoken(own)} only, not {theirs}: full restart needed"


# ---------------------------------------------------------------------- state machines


class HandshakeError(Exception):
    """The handshake ended without a link. ``kind`` says how:

    - ``"malformed"``: a frame that is not the handshake's next one, or a bad field;
    - ``"cookie"``: a proof that does not verify (or the wrong node answered);
    - ``"version"``: this side refuses the peer's protocol (``version``: the peer's);
      ``send`` is the ``refuse`` frame to send before closing;
    - ``"refused version"``: the peer refused this side's protocol (``version``: the
      peer's);
    - ``"refused"``: the peer refused after the proofs (``detail``: its reason).
    """

    def __init__(
        self, kind: str, detail: str, version: int = 0, send: tuple[Any, ...] | None = None
    ) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.version, self.send = kind, detail, version, send


@dataclass
class PeerHello:
    """What a valid hello says about the dialer."""

    name: str
    creation: int
    nonce: bytes
    hidden: bool | str
    listen: tuple[str, int]
    version: int


def _creation(value: object) -> int:
    if type(value) is not int or not 0 <= value < 1 << 63:
        raise HandshakeError("malformed", "bad creation")
    return value


def parse_hello(frame: tuple[Any, ...]) -> PeerHello:
    """The fields of a hello, checked: a node name, a creation, a nonce, a hidden flag,
    a listen address ``[host, port]`` and a version (ValueError inside ``version_of``
    becomes a ``"malformed"`` :class:`HandshakeError`)."""
    if len(frame) < 6 or frame[0] != "hello":
        raise HandshakeError("malformed", f"{str(frame[0])[:20]!r} out of order: no hello")
    _, name, creation, nonce, hidden, listen = frame[:6]
    if not (
        isinstance(name, str)
        and NODE_NAME.fullmatch(name) is not None
        and isinstance(nonce, bytes)
        and len(nonce) == NONCE_LEN
        and type(hidden) in (bool, str)
        and isinstance(listen, list)
        and len(listen) == 2
        and isinstance(listen[0], str)
        and len(listen[0]) <= MAX_HOST
        and type(listen[1]) is int
        and 0 <= listen[1] < 65536
    ):
        raise HandshakeError("malformed", "bad hello")
    try:
        version = version_of(frame, 6)
    except ValueError as exc:
        raise HandshakeError("malformed", f"bad hello: {exc}") from None
    return PeerHello(name, _creation(creation), nonce, hidden, (listen[0], listen[1]), version)


class Acceptor:
    """The accepting side: :meth:`on_hello` with the first frame, :meth:`on_ack` with
    the second; then :meth:`ok` is the frame that proves this side, to send once the
    caller decided to keep the connection (else ``("refuse", reason)``).

    ``own`` is the protocol this side names: :data:`PROTOCOL_VERSION`, or in tests the
    previous one (protocol 3: the same frames in the same order)."""

    def __init__(self, cookie: bytes, name: str, creation: int, own: int = PROTOCOL_VERSION):
        self.cookie, self.name, self.creation, self.own = cookie, name, creation, own
        self.nonce = b""
        self.peer: PeerHello | None = None

    def on_hello(self, frame: tuple[Any, ...]) -> tuple[Any, ...]:
        """The challenge to send; :class:`HandshakeError` for a bad hello or a version
        refusal (its ``send``: nothing in it depends on the cookie)."""
        peer = parse_hello(frame)
        self.peer = peer
        if not accepts_version(self.own, peer.version):
            refuse = ("refuse", refusal_reason(self.own, peer.version), self.own)
            raise HandshakeError("version", "protocol refused", peer.version, refuse)
        self.nonce = new_nonce()
        return ("challenge", self.name, self.creation, self.nonce, None, self.own)

    def _proof(self, role: str) -> bytes:
        peer = self.peer
        assert peer is not None
        return proof(
            self.cookie,
            role,
            peer.nonce,
            self.nonce,
            peer.name,
            peer.creation,
            self.name,
            self.creation,
            (peer.version, self.own),
        )

    def on_ack(self, frame: tuple[Any, ...]) -> None:
        """Returns once the dialer proved it holds the cookie; :class:`HandshakeError`
        otherwise (``"cookie"``: send ``("refuse", BAD_COOKIE)``, then close)."""
        if self.peer is None or not self.nonce:
            raise HandshakeError("malformed", "an ack before the challenge")
        if frame[0] == "refuse" and len(frame) >= 3:
            # the dialer refuses this side's version, instead of its ack
            try:
                theirs = version_of(frame, 2)
            except ValueError as exc:
                raise HandshakeError("malformed", str(exc)) from None
            raise HandshakeError("refused version", "refused", theirs)
        if frame[0] != "ack" or len(frame) < 2:
            raise HandshakeError("malformed", f"{str(frame[0])[:20]!r} out of order: no ack")
        if not check(self._proof("dialer"), frame[1]):
            raise HandshakeError("cookie", BAD_COOKIE)

    def ok(self) -> tuple[Any, ...]:
        """The acceptor's proof: only once :meth:`on_ack` returned."""
        return ("ok", self._proof("acceptor"))


class Dialer:
    """The dialing side: :meth:`hello` first; then :meth:`on_frame` with each frame of
    the acceptor until it returns ``(frame to send or None, True)``: the link is up.

    ``peer`` is the node name dialled (None: any node, the shell's probe); ``own`` as
    :class:`Acceptor`'s.
    """

    def __init__(
        self,
        cookie: bytes,
        name: str,
        creation: int,
        peer: str | None,
        own: int = PROTOCOL_VERSION,
    ) -> None:
        self.cookie, self.name, self.creation, self.own = cookie, name, creation, own
        self.peer = peer
        self.nonce = new_nonce()
        self.stage = "challenge"  # the frame awaited: challenge, then ok
        self.proven = False  # the acceptor proved it holds the cookie
        self.peer_name = ""
        self.peer_creation = 0
        self.peer_nonce = b""
        self.version = 0  # the acceptor's, from its challenge

    def hello(self, hidden: bool | str, listen: tuple[str, int]) -> tuple[Any, ...]:
        return (
            "hello",
            self.name,
            self.creation,
            self.nonce,
            hidden,
            [listen[0], listen[1]],
            self.own,
        )

    def _proof(self, role: str) -> bytes:
        return proof(
            self.cookie,
            role,
            self.nonce,
            self.peer_nonce,
            self.name,
            self.creation,
            self.peer_name,
            self.peer_creation,
            (self.own, self.version),
        )

    def on_frame(self, frame: tuple[Any, ...]) -> tuple[tuple[Any, ...] | None, bool]:
        """What to send, and whether the link is up; :class:`HandshakeError` if the
        handshake ends here."""
        kind = frame[0]
        if kind == "refuse" and len(frame) >= 3 and self.stage == "challenge":
            # a version refusal, instead of the challenge
            try:
                theirs = version_of(frame, 2)
            except ValueError as exc:
                raise HandshakeError("malformed", str(exc)) from None
            raise HandshakeError("refused version", "refused", theirs)
        if kind == "refuse" and self.stage == "ok" and len(frame) >= 2:
            raise HandshakeError("refused", str(frame[1])[:200])
        if self.stage == "challenge" and kind == "challenge":
            return self._on_challenge(frame), False
        if self.stage == "ok" and kind == "ok":
            if len(frame) < 2 or not check(self._proof("acceptor"), frame[1]):
                raise HandshakeError("cookie", "the peer's proof does not verify")
            self.stage, self.proven = "up", True
            return None, True
        raise HandshakeError(
            "malformed", f"{str(kind)[:20]!r} out of order in handshake state {self.stage}"
        )

    def _on_challenge(self, frame: tuple[Any, ...]) -> tuple[Any, ...]:
        if len(frame) < 5:
            raise HandshakeError("malformed", "bad challenge")
        _, name, creation, nonce = frame[:4]
        try:
            version = version_of(frame, 5)
        except ValueError as exc:
            raise HandshakeError("malformed", f"bad challenge: {exc}") from None
        if not (
            isinstance(name, str)
            and NODE_NAME.fullmatch(name) is not None
            and isinstance(nonce, bytes)
            and len(nonce) == NONCE_LEN
        ):
            raise HandshakeError("malformed", "bad challenge")
        if self.peer is not None and name != self.peer:
            raise HandshakeError("cookie", f"wrong node (answered as {name!r})")
        if not accepts_version(self.own, version):
            # a protocol 2 challenge carries the acceptor's proof: this side sends none
            refuse = ("refuse", refusal_reason(self.own, version), self.own)
            raise HandshakeError("version", "protocol refused", version, refuse)
        self.version = version
        self.peer_name, self.peer_creation, self.peer_nonce = name, _creation(creation), nonce
        self.stage = "ok"
        return ("ack", self._proof("dialer"))


# ---------------------------------------------------------------------- failure log


class FailureLog:
    """Which failures of unauthenticated connections are logged loud (WARNING), per
    source address: the first one, then one per ``every`` seconds saying how many more
    there were since (:meth:`note`); the others at DEBUG. At most ``sources`` addresses
    are remembered (the one loud longest ago is forgotten first) and at most ``loud``
    lines are loud per ``every`` seconds over all of them, so a caller with many
    addresses cannot fill the log either. Time is an argument: no clock inside."""

    def __init__(self, every: float = 60.0, sources: int = 1024, loud: int = 64) -> None:
        self.every, self.sources, self.loud = every, sources, loud
        # source: (when its last loud line was, failures since then)
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._window = (float("-inf"), 0)  # (start of the current window, loud lines in it)

    def note(self, source: str, now: float) -> int | None:
        """A failure from ``source`` at ``now``: None to log it at DEBUG; else log it
        loud, saying the returned number of failures from ``source`` since its last loud
        line (0: none, or its first)."""
        last = self._seen.get(source)
        if last is not None and now - last[0] < self.every:
            self._seen[source] = (last[0], last[1] + 1)
            return None
        start, count = self._window
        if now - start >= self.every:
            start, count = now, 0
        if count >= self.loud:  # counted, and loud as soon as a window allows
            when, missed = (float("-inf"), 0) if last is None else last
            self._seen[source] = (when, missed + 1)
            while len(self._seen) > self.sources:
                self._seen.popitem(last=False)
            return None
        self._window = (start, count + 1)
        since = 0 if last is None else last[1]
        self._seen.pop(source, None)
        self._seen[source] = (now, 0)
        while len(self._seen) > self.sources:
            self._seen.popitem(last=False)
        return since
