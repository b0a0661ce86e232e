"""The probe port's decisions (otpkit.node._probes): which waiting connection makes room
for a new one, how a request head is read and answered.

What they must guarantee: one address never has more than ``per_source`` connections
waiting, nor all of them more than ``total``; a new connection is always taken; and a
connection is closed for another address's only when all ``total`` wait and its address
has the most of them - so the kubelet's one connection outlives any slowloris that
does not come from its own address or from ``total`` addresses at once."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otpkit.node._probes import (
    head_length,
    make_room,
    probe_hosts,
    response,
    route,
    source_of,
)


def test_room_is_made_by_the_oldest_of_the_same_address_first():
    pending = ["a", "b", "a", "a"]
    assert make_room(pending, "a", per_source=3, total=10) == 0
    assert make_room(pending, "b", per_source=3, total=10) is None
    assert make_room(pending, "c", per_source=3, total=10) is None
    assert make_room([], "a", per_source=1, total=1) is None
    assert make_room(["a"], "a", per_source=1, total=1) == 0


def test_when_all_wait_the_oldest_of_the_address_with_the_most_makes_room():
    pending = ["k", "a", "b", "a", "b", "b"]
    assert make_room(pending, "c", per_source=4, total=6) == 2  # b has 3
    assert make_room(pending, "k", per_source=4, total=6) == 2
    # a tie: the oldest connection among the addresses with the most
    assert make_room(["x", "k", "y"], "z", per_source=2, total=3) == 0


def test_limits_are_checked():
    with pytest.raises(ValueError, match="per_source"):
        make_room([], "a", per_source=0, total=4)
    with pytest.raises(ValueError, match="per_source"):
        make_room([], "a", per_source=5, total=4)


@settings(max_examples=300, deadline=None)
@given(
    arrivals=st.lists(st.sampled_from("abcdefgh"), max_size=200),
    per_source=st.integers(1, 6),
    extra=st.integers(0, 10),
)
def test_the_limits_hold_and_a_lone_connection_is_pushed_out_only_by_a_full_tie(
    arrivals: list[str], per_source: int, extra: int
):
    total = per_source + extra
    pending: list[str] = []
    for source in arrivals:
        victim = make_room(pending, source, per_source, total)
        if victim is not None:
            counts = Counter(pending)
            gone = pending[victim]
            if gone != source:  # another address's connection: only when all wait,
                assert len(pending) == total  # and it has the most of them
                assert counts[gone] == max(counts.values())
                # the kubelet's one connection: pushed out only if no address has two
                if counts[gone] == 1:
                    assert all(n == 1 for n in counts.values())
            else:
                assert counts[source] >= per_source or len(pending) == total
            assert victim == pending.index(gone), "the oldest of that address"
            del pending[victim]
        pending.append(source)
        assert len(pending) <= total
        assert max(Counter(pending).values()) <= per_source


def test_source_of_counts_a_mapped_ipv4_client_as_ipv4():
    assert source_of("::ffff:10.0.0.7") == "10.0.0.7"
    assert source_of("10.0.0.7") == "10.0.0.7"
    assert source_of("fe80::1%eth0") == "fe80::1"
    assert source_of("2001:db8::1") == "2001:db8::1"
    assert source_of("not an address") == "not an address"


def test_a_head_ends_at_its_first_empty_line():
    full = b"GET /healthz/live HTTP/1.1\r\nHost: x\r\n\r\n"
    assert head_length(full) == len(full)
    assert head_length(full + b"more") == len(full)
    assert head_length(b"GET / HTTP/1.0\n\n") == 16
    for cut in range(len(full)):
        assert head_length(full[:cut]) is None


def test_a_head_is_routed_or_answered_with_an_error():
    assert route(b"GET /healthz/ready?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n") == "/healthz/ready"
    assert route(b"\r\nGET /healthz/live HTTP/1.0\r\n\r\n") == "/healthz/live"
    assert route(b"POST /healthz/live HTTP/1.1\r\n\r\n") == (405, "method not allowed: GET only")
    for bad in (b"GET /\r\n\r\n", b"GET healthz HTTP/1.1\r\n\r\n", b"\x00\xff\xfe\r\n\r\n", b""):
        assert route(bad) == (400, "bad request")


def test_the_answer_is_whole_and_closes_the_connection():
    data = response(503, "not ready: stopping")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable"
    assert "Content-Length: 20" in lines and "Connection: close" in lines
    assert body == b"not ready: stopping\n"
    assert b"Allow: GET\r\n" in response(405, "method not allowed: GET only")


@pytest.mark.parametrize(
    ("own", "asked", "hosts"),
    [
        ("10.1.2.3", (), ("10.1.2.3", "127.0.0.1")),
        ("fd00::7", (), ("fd00::7", "::1")),
        ("127.0.0.3", (), ("127.0.0.3",)),  # three nodes on 127.0.0.2-4 share a port
        ("::1", (), ("::1",)),
        ("0.0.0.0", (), ("0.0.0.0",)),
        ("10.1.2.3", ("0.0.0.0",), ("0.0.0.0",)),
        ("10.1.2.3", ("10.1.2.3", "10.1.2.3", "::1"), ("10.1.2.3", "::1")),
    ],
)
def test_the_probe_port_binds_the_node_s_address_and_loopback(own, asked, hosts):
    assert probe_hosts(own, asked) == hosts


def test_a_metrics_answer_carries_its_content_type_and_bytes():
    data = response(200, b"# HELP x\nx 1\n", "text/plain; version=0.0.4; charset=utf-8")
    head, body = data.split(b"\r\n\r\n", 1)
    assert body == b"# HELP x\nx 1\n"
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    assert f"Content-Length: {len(body)}".encode() in head
