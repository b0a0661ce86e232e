"""Thespian's admin port is chosen below the kernel's ephemeral range: a port from that
range (what ``bind(0)`` hands out) can become any outgoing connection's local end before
the admin binds it, and a node's start then fails with Thespian's "not a valid or useable
ActorSystem Admin" (seen once in CI with many nodes starting)."""

from __future__ import annotations

import socket

from otpkit.actors._system import _ephemeral_range, admin_port_candidate


def test_the_admin_port_is_free_and_outside_the_ephemeral_range() -> None:
    low, high = _ephemeral_range()
    assert 0 < low <= high
    seen = set()
    for _ in range(20):
        port = admin_port_candidate()
        assert 10000 <= port < low
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free when chosen
        seen.add(port)
    assert len(seen) > 1  # random, not a fixed port two nodes would share


def test_a_taken_candidate_is_skipped() -> None:
    held = []
    try:
        for _ in range(50):
            port = admin_port_candidate()
            s = socket.socket()
            s.bind(("127.0.0.1", port))
            held.append(s)
        assert len({s.getsockname()[1] for s in held}) == 50
    finally:
        for s in held:
            s.close()
