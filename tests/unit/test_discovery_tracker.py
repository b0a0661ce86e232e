"""The peer tracker's rules (ARCHITECTURE.md, *Discovery*), fed hand-made lookup results;
and the Static strategy's parsing. No DNS, no sockets: the DNS strategies are tested
against a real dnsmasq in tests/cluster/test_discovery_dns.py.

The rules exist because libcluster prunes on every answer, including a failed one, which
disconnects the whole cluster on one bad DNS query (its ``Kubernetes.DNS`` strategy, and
libcluster issue #190 for a truncated answer).
"""

from __future__ import annotations

import pytest

from otpkit.discovery import (
    DnsA,
    DnsSrv,
    LookupResult,
    Peer,
    PeerTracker,
    Static,
    TrackerUpdate,
)

PORT = 4370


def p(ip: str, port: int = PORT) -> Peer:
    return Peer(f"app@{ip}", ip, port)


A, B, C, D = p("10.0.0.1"), p("10.0.0.2"), p("10.0.0.3"), p("10.0.0.4")


def good(*peers: Peer) -> LookupResult:
    return LookupResult(ok=True, peers=frozenset(peers), error=None)


def failed(error: str = "SERVFAIL from test over udp") -> LookupResult:
    return LookupResult(ok=False, peers=frozenset(), error=error)


def upd(added: set[Peer], pruned: set[Peer], desired: set[Peer]) -> TrackerUpdate:
    return TrackerUpdate(frozenset(added), frozenset(pruned), frozenset(desired))


# --------------------------------------------------------------------------------------
# adding
# --------------------------------------------------------------------------------------


def test_first_good_result_adds_every_peer_at_once() -> None:
    t = PeerTracker()
    assert t.update(good(A, B, C)) == upd({A, B, C}, set(), {A, B, C})
    assert t.desired == frozenset({A, B, C})


def test_known_peers_are_not_added_again() -> None:
    t = PeerTracker()
    t.update(good(A, B))
    assert t.update(good(A, B)) == upd(set(), set(), {A, B})


def test_new_peer_in_a_later_result_is_added_at_once() -> None:
    t = PeerTracker()
    t.update(good(A, B))
    assert t.update(good(A, B, C)) == upd({C}, set(), {A, B, C})


def test_empty_good_result_adds_nothing_and_settles() -> None:
    t = PeerTracker()
    assert t.update(good()) == upd(set(), set(), set())
    assert t.settled


# --------------------------------------------------------------------------------------
# pruning
# --------------------------------------------------------------------------------------


def test_peer_missing_from_prune_after_consecutive_good_results_is_pruned() -> None:
    t = PeerTracker(prune_after=3)
    t.update(good(A, B, C))
    assert t.update(good(A, B)) == upd(set(), set(), {A, B, C})  # miss 1
    assert t.misses(C.name) == 1
    assert t.update(good(A, B)) == upd(set(), set(), {A, B, C})  # miss 2
    assert t.misses(C.name) == 2
    assert t.update(good(A, B)) == upd(set(), {C}, {A, B})  # miss 3: pruned
    assert t.misses(C.name) == 0
    assert t.desired == frozenset({A, B})
    # Pruned once: later results without C report nothing more.
    assert t.update(good(A, B)) == upd(set(), set(), {A, B})


def test_default_prune_after_is_three() -> None:
    t = PeerTracker()
    assert t.prune_after == 3
    t.update(good(A, B))
    assert t.update(good(A)).pruned == frozenset()
    assert t.update(good(A)).pruned == frozenset()
    assert t.update(good(A)) == upd(set(), {B}, {A})


def test_prune_after_one_prunes_on_the_first_miss() -> None:
    t = PeerTracker(prune_after=1)
    t.update(good(A, B))
    assert t.update(good(A)) == upd(set(), {B}, {A})


def test_empty_good_result_counts_as_a_miss_for_everyone() -> None:
    """NXDOMAIN / no records is a good answer: the service has no endpoints."""
    t = PeerTracker(prune_after=2)
    t.update(good(A, B))
    assert t.update(good()) == upd(set(), set(), {A, B})
    assert t.update(good()) == upd(set(), {A, B}, set())


def test_several_peers_pruned_in_the_same_update() -> None:
    t = PeerTracker(prune_after=2)
    t.update(good(A, B, C, D))
    assert t.update(good(A)) == upd(set(), set(), {A, B, C, D})
    assert t.update(good(A)) == upd(set(), {B, C, D}, {A})


def test_counts_are_per_peer() -> None:
    t = PeerTracker(prune_after=2)
    t.update(good(A, B, C))
    assert t.update(good(A, C)) == upd(set(), set(), {A, B, C})  # B: 1
    assert t.update(good(A, B)) == upd(set(), set(), {A, B, C})  # B reset, C: 1
    assert (t.misses(B.name), t.misses(C.name)) == (0, 1)
    assert t.update(good(A, B)) == upd(set(), {C}, {A, B})  # C: 2
    assert t.update(good(A)) == upd(set(), set(), {A, B})  # B: 1
    assert t.update(good(A)) == upd(set(), {B}, {A})  # B: 2


def test_reappearing_peer_resets_its_miss_count() -> None:
    t = PeerTracker(prune_after=3)
    t.update(good(A, B))
    t.update(good(A))
    t.update(good(A))
    assert t.misses(B.name) == 2
    assert t.update(good(A, B)) == upd(set(), set(), {A, B})  # back: not "added", reset
    assert t.misses(B.name) == 0
    # Needs three fresh misses again.
    assert t.update(good(A)) == upd(set(), set(), {A, B})
    assert t.update(good(A)) == upd(set(), set(), {A, B})
    assert t.update(good(A)) == upd(set(), {B}, {A})


def test_pruned_peer_that_comes_back_is_added_again() -> None:
    t = PeerTracker(prune_after=1)
    t.update(good(A, B))
    assert t.update(good(A)) == upd(set(), {B}, {A})
    assert t.update(good(A, B)) == upd({B}, set(), {A, B})


# --------------------------------------------------------------------------------------
# failed results
# --------------------------------------------------------------------------------------


def test_failed_result_changes_nothing() -> None:
    t = PeerTracker(prune_after=1)
    t.update(good(A, B))
    for _ in range(10):
        assert t.update(failed()) == upd(set(), set(), {A, B})
    assert t.desired == frozenset({A, B})
    assert (t.misses(A.name), t.misses(B.name)) == (0, 0)


def test_failed_results_do_not_count_toward_pruning() -> None:
    t = PeerTracker(prune_after=3)
    t.update(good(A, B))
    assert t.update(good(A)).pruned == frozenset()  # miss 1
    for _ in range(5):
        assert t.update(failed("timeout")) == upd(set(), set(), {A, B})
    assert t.misses(B.name) == 1
    assert t.update(good(A)).pruned == frozenset()  # miss 2
    assert t.update(failed("REFUSED")) == upd(set(), set(), {A, B})
    # good, failed, good: the failures in between neither count nor break the run
    assert t.update(good(A)) == upd(set(), {B}, {A})  # miss 3


def test_failed_result_with_peers_in_it_adds_nobody() -> None:
    """A failed result's peers are not information (e.g. a truncated answer's partial set)."""
    t = PeerTracker()
    t.update(good(A))
    partial = LookupResult(ok=False, peers=frozenset({A, B}), error="truncated answer")
    assert t.update(partial) == upd(set(), set(), {A})


def test_failed_result_before_any_good_one_leaves_it_unsettled() -> None:
    t = PeerTracker()
    assert not t.settled
    assert t.update(failed()) == upd(set(), set(), set())
    assert not t.settled
    t.update(good(A))
    assert t.settled
    t.update(failed())
    assert t.settled  # stays settled


def test_settled_after_first_good_result() -> None:
    t = PeerTracker()
    assert not t.settled
    t.update(good(A))
    assert t.settled


# --------------------------------------------------------------------------------------
# self, names and addresses
# --------------------------------------------------------------------------------------


def test_self_is_never_desired() -> None:
    t = PeerTracker(prune_after=1, self_name=A.name)
    assert t.update(good(A, B)) == upd({B}, set(), {B})
    assert t.update(good(A)) == upd(set(), {B}, set())
    assert t.update(good(A)) == upd(set(), set(), set())
    assert t.settled  # a result listing only this node still settles discovery


def test_self_excluded_by_name_whatever_its_address() -> None:
    t = PeerTracker(self_name="app@10.0.0.1")
    assert t.update(good(Peer("app@10.0.0.1", "127.0.0.1", 9999), B)) == upd({B}, set(), {B})


def test_same_name_with_a_new_address_replaces_the_old_entry() -> None:
    old = Peer("app@web-0.svc", "10.0.0.10", PORT)
    new = Peer("app@web-0.svc", "10.0.0.20", PORT)
    t = PeerTracker(prune_after=3)
    t.update(good(old, A))
    assert t.update(good(new, A)) == upd({new}, set(), {new, A})
    assert t.misses(new.name) == 0
    # The name keeps its own count, whatever the address.
    t.update(good(A))
    t.update(good(A))
    assert t.update(good(A)) == upd(set(), {new}, {A})


def test_port_change_is_an_address_change() -> None:
    t = PeerTracker()
    t.update(good(p("10.0.0.1", 4370)))
    moved = p("10.0.0.1", 4380)
    assert t.update(good(moved)) == upd({moved}, set(), {moved})


def test_duplicate_names_in_one_result_keep_the_desired_entry_else_the_lowest() -> None:
    x1 = Peer("app@x", "10.0.0.9", PORT)
    x2 = Peer("app@x", "10.0.0.10", PORT)  # "10.0.0.10" < "10.0.0.9" as strings
    t = PeerTracker()
    assert t.update(good(x1, x2)) == upd({x2}, set(), {x2})
    t2 = PeerTracker()
    t2.update(good(x1))
    assert t2.update(good(x1, x2)) == upd(set(), set(), {x1})


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_prune_after_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="prune_after"):
        PeerTracker(prune_after=bad)  # type: ignore[arg-type]


def test_update_returns_immutable_sets_not_views_of_the_state() -> None:
    t = PeerTracker()
    first = t.update(good(A))
    t.update(good(A, B))
    assert first.desired == frozenset({A})
    assert isinstance(first.desired, frozenset)


# --------------------------------------------------------------------------------------
# Static (pure: no I/O)
# --------------------------------------------------------------------------------------


def test_static_parses_names_with_default_port_explicit_ports_and_peers() -> None:
    s = Static(
        ["app@127.0.0.2", "app@127.0.0.3:5000", Peer("other@h", "127.0.0.4", 4444)],
        port=4370,
    )
    r = s.lookup()
    assert r == LookupResult(
        ok=True,
        peers=frozenset(
            {
                Peer("app@127.0.0.2", "127.0.0.2", 4370),
                Peer("app@127.0.0.3", "127.0.0.3", 5000),
                Peer("other@h", "127.0.0.4", 4444),
            }
        ),
        error=None,
    )
    assert s.lookup() == r  # the same every time


def test_static_host_names_and_ipv6() -> None:
    s = Static(["app@node-a.example:4370", "app@::1", "app@[::1]:4371"], port=4369)
    assert s.lookup().peers == frozenset(
        {
            Peer("app@node-a.example", "node-a.example", 4370),
            Peer("app@::1", "::1", 4369),
            Peer("app@::1", "::1", 4371),
        }
    )


@pytest.mark.parametrize(
    "entry",
    ["app", "@127.0.0.1", "app@", "app@127.0.0.1:0", "app@127.0.0.1:x", "app@[::1", "app@:1"],
)
def test_static_rejects_malformed_entries(entry: str) -> None:
    with pytest.raises(ValueError):
        Static([entry], port=4370)


def test_static_needs_a_port_for_entries_without_one() -> None:
    with pytest.raises(ValueError, match="no port"):
        Static(["app@127.0.0.2"])
    assert Static(["app@127.0.0.2:4370"]).lookup().peers == frozenset(
        {Peer("app@127.0.0.2", "127.0.0.2", 4370)}
    )


def test_static_through_the_tracker() -> None:
    t = PeerTracker(self_name="app@127.0.0.2")
    s = Static(["app@127.0.0.2", "app@127.0.0.3", "app@127.0.0.4"], port=4370)
    u = t.update(s.lookup())
    assert u.added == frozenset(
        {Peer("app@127.0.0.3", "127.0.0.3", 4370), Peer("app@127.0.0.4", "127.0.0.4", 4370)}
    )
    assert u.desired == u.added
    assert t.settled


# --------------------------------------------------------------------------------------
# DNS strategies: settings are checked when built, before any query
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"service": "a..b.cluster.local"}, "not a valid DNS name"),
        ({"service": ""}, "service"),
        ({"timeout": 0}, "timeout"),
        ({"app": ""}, "app"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
    ],
)
def test_dns_a_rejects_bad_settings(kwargs: dict[str, object], match: str) -> None:
    settings: dict[str, object] = {"service": "svc.cluster.local", "app": "app", "port": PORT}
    settings.update(kwargs)
    with pytest.raises(ValueError, match=match):
        DnsA(**settings)  # type: ignore[arg-type]


def test_dns_srv_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="app"):
        DnsSrv("_dist._tcp.svc.cluster.local", app="")
    with pytest.raises(ValueError, match="timeout"):
        DnsSrv("_dist._tcp.svc.cluster.local", app="app", timeout=-1)
