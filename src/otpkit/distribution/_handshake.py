"""The cookie handshake between two nodes, as pure functions.

Dialer A, acceptor B, one shared cookie:

1. A -> B  ``("hello", name_a, creation_a, nonce_a, hidden_a, listen_a, version_a)``
2. B -> A  ``("challenge", name_b, creation_b, nonce_b, proof_b, version_b)``
3. A -> B  ``("ack", proof_a)``
4. B -> A  ``("ok",)`` or ``("refuse", reason)``

``proof_x = HMAC-SHA256(cookie, role_x | nonce_a | nonce_b | name_a | creation_a | name_b |
creation_b | version_a | version_b)``, role ``b"acceptor"`` or ``b"dialer"``: each side
proves it knows the cookie over both fresh nonces, both identities and both protocol
versions, so a proof cannot be replayed to another connection or reflected back with the
roles swapped, and a version cannot be changed on the way. Nothing is sent before the
peer proved itself except the hello, the challenge, and a version refusal.

**Versions.** Each side names the dist protocol it speaks (:data:`PROTOCOL_VERSION`; a
hello without one is the release before versions, protocol 1). The acceptor checks the
dialer's version on the hello, the dialer the acceptor's on the challenge, both with
:func:`accepts_version`, before any proof is computed; the side that refuses logs one
line (:func:`refusal`), sends ``("refuse", reason, its version)`` - the dialer instead of
its ack - and closes. A node accepts its own version, the previous one, and any newer one
(the newer side decides whether it can still talk to an older one), so the nodes of two
consecutive releases interoperate in both dial directions and a rolling update keeps the
cluster whole. Fields after the version are ignored: a later protocol may append some.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

NONCE_LEN = 32

#: The dist protocol this code speaks. Raise it with any change of what crosses a dist
#: link; the next release then still talks to this one (see :func:`accepts_version`).
PROTOCOL_VERSION = 2
#: What a hello without a version speaks: the release before protocol versions.
UNVERSIONED = 1
#: The oldest protocol whose nodes can take part in a rolling update: the first one
#: whose hello names its version (protocol 1 nodes cannot parse the versioned hello).
FIRST_VERSIONED = 2
#: A version field at or above this is malformed (it is packed in 4 bytes).
_MAX_VERSION = 1 << 32


def new_nonce() -> bytes:
    return os.urandom(NONCE_LEN)


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
