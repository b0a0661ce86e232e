"""The cookie handshake between two nodes, as pure functions.

Dialer A, acceptor B, one shared cookie:

1. A -> B  ``("hello", name_a, creation_a, nonce_a, hidden_a)``
2. B -> A  ``("challenge", name_b, creation_b, nonce_b, proof_b)``
3. A -> B  ``("ack", proof_a)``
4. B -> A  ``("ok",)`` or ``("refuse", reason)``

``proof_x = HMAC-SHA256(cookie, role_x | nonce_a | nonce_b | name_a | creation_a | name_b |
creation_b)``, role ``b"acceptor"`` or ``b"dialer"``: each side proves it knows the
cookie over both fresh nonces and both identities, so a proof cannot be replayed to
another connection or reflected back with the roles swapped. Nothing is sent before the
peer proved itself except the hello and the challenge.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

NONCE_LEN = 32


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
) -> bytes:
    parts = [role, nonce_a, nonce_b]
    for name, creation in ((name_a, creation_a), (name_b, creation_b)):
        raw = name.encode()
        parts.append(struct.pack(">H", len(raw)) + raw + struct.pack(">Q", creation))
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
) -> bytes:
    """The HMAC a side sends; ``role`` is ``"acceptor"`` or ``"dialer"``."""
    data = _transcript(role.encode(), nonce_a, nonce_b, name_a, creation_a, name_b, creation_b)
    return hmac.new(cookie, data, hashlib.sha256).digest()


def check(expected: bytes, got: object) -> bool:
    return isinstance(got, bytes) and hmac.compare_digest(expected, got)


def wins_duplicate(own_name: str, peer_name: str) -> bool:
    """Both nodes dialled each other at once: the connection dialled by the node with the
    smaller name is kept. True if this node's own dial is the one to keep."""
    return own_name < peer_name
