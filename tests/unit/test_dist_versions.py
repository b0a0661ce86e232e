"""The dist protocol version rule (``distribution/_handshake.py``): which peers a node
talks to, how the hello and challenge name a version, the refusal's one line, that the
cookie proofs cover both versions, and what ``dist.versions`` answers
(``DistCore.versions``)."""

from __future__ import annotations

import itertools
import socket
import time

import pytest

from otpkit.distribution import _codec, _core, _handshake
from otpkit.distribution._handshake import (
    FIRST_VERSIONED,
    PROTOCOL_VERSION,
    UNVERSIONED,
    accepts_version,
    oldest_accepted,
    refusal,
    refusal_reason,
    refused_by,
    spoken,
    version_of,
)

OWN = range(FIRST_VERSIONED, 40)
PEERS = range(UNVERSIONED, 45)


def talk(a: int, b: int) -> bool:
    """Nodes speaking ``a`` and ``b`` form a link: each side accepts the other (the
    acceptor checks the hello, the dialer the challenge: both checks run either way)."""
    return accepts_version(a, b) and accepts_version(b, a)


def test_this_release_and_the_release_before_versions() -> None:
    assert PROTOCOL_VERSION >= FIRST_VERSIONED > UNVERSIONED == 1
    assert accepts_version(PROTOCOL_VERSION, PROTOCOL_VERSION)
    assert not accepts_version(PROTOCOL_VERSION, UNVERSIONED)  # needs a full restart


def test_protocol_4_talks_to_protocol_3_and_refuses_protocol_2() -> None:
    assert PROTOCOL_VERSION == 4
    assert [accepts_version(4, v) for v in (1, 2, 3, 4, 5)] == [False, False, True, True, True]
    assert accepts_version(3, 4)  # the previous release takes this one's hello
    assert spoken(4) == "4 and 3"
    assert refusal("old@10.10.0.3", 4, 2).startswith(
        "refused old@10.10.0.3: it speaks otpkit protocol 2, this node 4 and 3 (only the "
        "previous release can join a rolling update; from an older one restart in full"
    )


@pytest.mark.parametrize(
    ("own", "peer", "accepted"),
    [
        (2, 1, False),  # the release before versions
        (2, 2, True),
        (2, 3, True),  # newer: the newer side decides
        (2, 9, True),
        (3, 1, False),
        (3, 2, True),  # N-1
        (3, 3, True),
        (3, 4, True),
        (4, 2, False),  # N-2
        (4, 3, True),
        (10, 8, False),
        (10, 9, True),
    ],
)
def test_a_node_accepts_its_version_the_previous_one_and_newer_ones(
    own: int, peer: int, accepted: bool
) -> None:
    assert accepts_version(own, peer) is accepted


def test_the_rule() -> None:
    for own, peer in itertools.product(OWN, PEERS):
        expected = peer >= own or (peer == own - 1 and peer >= FIRST_VERSIONED)
        assert accepts_version(own, peer) is expected, (own, peer)
        assert oldest_accepted(own) == max(own - 1, FIRST_VERSIONED)


def test_consecutive_releases_talk_in_both_directions() -> None:
    for n in OWN:
        assert talk(n, n)
        assert talk(n, n + 1) and talk(n + 1, n), n


def test_releases_further_apart_never_talk_and_the_newer_one_refuses() -> None:
    for a, b in itertools.product(PEERS, PEERS):
        old, new = min(a, b), max(a, b)
        if new < FIRST_VERSIONED:
            continue  # two nodes of the release before versions: not this code's business
        if new - old >= 2 or old < FIRST_VERSIONED:
            assert not talk(a, b), (a, b)
            assert accepts_version(old, new), "the older side lets the newer one decide"
            assert not accepts_version(new, old)
        else:
            assert talk(a, b), (a, b)


def test_a_hello_without_a_version_is_the_release_before_versions() -> None:
    hello = ("hello", "a@h", 1, b"\0" * 32, False, ["h", 1])
    assert version_of(hello, 6) == UNVERSIONED
    assert version_of((*hello, 3), 6) == 3
    assert version_of((*hello, 3, "a field of a later protocol"), 6) == 3
    challenge = ("challenge", "b@h", 1, b"\0" * 32, b"p")
    assert version_of(challenge, 5) == UNVERSIONED
    assert version_of((*challenge, 2), 5) == 2


@pytest.mark.parametrize("bad", [True, False, 0, -1, 2**32, 2.0, "2", None, [2]])
def test_a_malformed_version_is_an_error(bad: object) -> None:
    with pytest.raises(ValueError, match="bad protocol version"):
        version_of(("hello", "a@h", 1, b"\0" * 32, False, ["h", 1], bad), 6)


def test_the_refusal_line_names_both_versions() -> None:
    assert spoken(2) == "2"  # protocol 1 (no version) is not one it talks to
    assert spoken(3) == "3 and 2"
    assert refusal("myapp@10.10.0.3", 3, 1) == (
        "refused myapp@10.10.0.3: it speaks otpkit protocol 1, this node 3 and 2 (only the "
        "previous release can join a rolling update; from an older one restart in full: "
        "stop every node (scale to 0), then start them all on one release)"
    )
    assert refusal("myapp@10.10.0.3", 2, 1).startswith(
        "refused myapp@10.10.0.3: it speaks otpkit protocol 1, this node 2 (only the "
    )
    assert refused_by("myapp@10.10.0.1", 2, 4).startswith(
        "refused by myapp@10.10.0.1: it speaks otpkit protocol 4 and 3, this node 2 ("
    )
    for line in (refusal("a@h", 5, 2), refused_by("a@h", 2, 5)):
        assert "\n" not in line and "full" in line


def test_the_reason_sent_fits_what_the_release_before_versions_logs() -> None:
    # a node of the release before versions logs the first 80 characters of the frame
    frame = ("refuse", refusal_reason(PROTOCOL_VERSION, UNVERSIONED), PROTOCOL_VERSION)
    assert len(str(frame)) <= 80, str(frame)
    assert f"protocol {PROTOCOL_VERSION}" in str(frame)[:80]


def _proof(versions: tuple[int, int], role: str = "dialer", cookie: bytes = b"c") -> bytes:
    return _handshake.proof(cookie, role, b"a" * 32, b"b" * 32, "a@h", 1, "b@h", 2, versions)


def test_the_proofs_cover_both_versions() -> None:
    assert _proof((2, 3)) == _proof((2, 3))
    proofs = {_proof(v) for v in [(2, 3), (3, 2), (2, 2), (3, 3), (3, 4)]}
    assert len(proofs) == 5
    assert _proof((2, 3), "acceptor") != _proof((2, 3), "dialer")
    assert _handshake.check(_proof((2, 3)), _proof((2, 3)))
    assert not _handshake.check(_proof((2, 3)), _proof((3, 3)))


def _conn(name: str, version: int, hidden: bool = False) -> _core._PeerConn:
    conn = _core._PeerConn(
        socket.socket(), ("10.0.0.1", 4370), True, "up", _codec.FrameDecoder(), time.monotonic()
    )
    conn.sock.close()
    conn.name, conn.version, conn.hidden = name, version, hidden
    return conn


def test_dist_versions_names_the_protocol_of_each_visible_peer() -> None:
    """``dist.versions`` (``DistCore.versions``): the protocol each linked node named in
    its hello or challenge; a hidden node (a shell) is left out, as ``dist.nodes`` leaves
    it out."""
    core = _core.DistCore.__new__(_core.DistCore)  # no sockets: the peers' table only
    core._peers = {
        "a@10.0.0.1": _conn("a@10.0.0.1", 4),
        "b@10.0.0.2": _conn("b@10.0.0.2", 3),
        "shell@10.0.0.9": _conn("shell@10.0.0.9", 4, hidden=True),
    }
    assert core.versions() == {"a@10.0.0.1": 4, "b@10.0.0.2": 3}
    assert core.nodes() == sorted(core.versions())
    assert _core.NodeUp("a@10.0.0.1", 4).version == 4
