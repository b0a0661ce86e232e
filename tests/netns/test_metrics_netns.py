"""``/metrics`` of three ``otpkit run`` nodes in network namespaces through a real cut.

Each node runs as a pod does (``tests/harness/netns_run_cluster.py``: DNS discovery,
``--expected-size 3``, ``--probe-port 8080``, a majority Scheduler). Its probe port binds
the node's own address and 127.0.0.1 (the address is not a loopback one), and nothing
else. Node 1 is cut off from nodes 2 and 3 (nftables, both ways): on 2 and 3 the link
to node 1 goes down on ``/metrics`` while they keep a majority; on node 1 both links go
down and it reports no majority; after the heal every link is up again and node 1 has a
majority again. Each ``/metrics`` is read from inside the node's namespace (as the
kubelet or a Prometheus on the pod's network) and parsed with ``prometheus_client``.

Run (as root)::

    python -m pytest tests/netns/test_metrics_netns.py -m netns
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.metrics_read import Series, parse, value
from tests.harness.netns_cluster import ip_of, name_of, sh
from tests.harness.netns_run_cluster import PROBE_PORT, RunCluster, run_cluster_in
from tests.harness.polling import wait_for

pytestmark = pytest.mark.netns

EVERYONE = [1, 2, 3]
READY_BOUND = 90.0
#: A cut link is down after dist's ``down_after`` (3 s) without a heartbeat; a healed
#: one is redialled within a second or two. Wide for a loaded 2-core machine.
BOUND = 40.0


def scrape(rc: RunCluster, i: int, host: str = "127.0.0.1") -> Series | None:
    """Node ``i``'s ``/metrics`` at ``host``, parsed; None if it did not answer 200."""
    status, body = rc.probe(i, "/metrics", host)
    if status != 200:
        return None
    return parse(body)


def probe_addresses(rc: RunCluster, i: int) -> set[str]:
    """The addresses node ``i``'s namespace listens on at the probe port."""
    out = sh("ip", "netns", "exec", rc.ns(i), "ss", "-Htln", "sport", "=", f":{PROBE_PORT}")
    return {line.split()[3].rpartition(":")[0] for line in out.stdout.splitlines()}


def links(series: Series, peers: list[int]) -> dict[int, float | None]:
    return {p: value(series, "otpkit_dist_link_up", peer=name_of(p)) for p in peers}


def wait_state(
    rc: RunCluster, want: Callable[[int, Series], bool], what: str, seen: dict[int, object]
) -> None:
    """Wait until ``want(i, series)`` holds for every node's ``/metrics`` at once."""

    def ok() -> bool:
        good = True
        for i in EVERYONE:  # each node every time: ``want`` may record what it sees
            series = scrape(rc, i)
            if series is None:
                seen[i] = "no /metrics"
                good = False
                continue
            others = [p for p in EVERYONE if p != i]
            seen[i] = (links(series, others), value(series, "otpkit_quorum_has_majority"))
            good = want(i, series) and good
        return good

    wait_for(ok, BOUND, what, 0.5, lambda: f"(links, majority): {seen}\n{rc.diagnostics()}")


def test_a_cut_moves_the_link_and_majority_gauges(tmp_path: Path) -> None:
    with run_cluster_in(tmp_path) as rc:
        for i in EVERYONE:
            rc.start(i)
        rc.wait_ready(EVERYONE, READY_BOUND)
        for i in EVERYONE:
            # the probe port binds the pod's address and loopback, nothing else
            assert probe_addresses(rc, i) == {ip_of(i), "127.0.0.1"}, probe_addresses(rc, i)
            assert scrape(rc, i, ip_of(i)) is not None, f"n{i}: no /metrics on {ip_of(i)}"
        seen: dict[int, object] = {}

        def whole(i: int, s: Series) -> bool:
            others = [p for p in EVERYONE if p != i]
            majority = value(s, "otpkit_quorum_has_majority")
            return set(links(s, others).values()) == {1.0} and majority == 1.0

        wait_state(rc, whole, "every link up, every node with a majority", seen)

        majorities: list[float | None] = []

        def cut(i: int, s: Series) -> bool:
            majority = value(s, "otpkit_quorum_has_majority")
            if i == 1:
                return set(links(s, [2, 3]).values()) == {0.0} and majority == 0.0
            majorities.append(majority)
            other = 5 - i  # 2 and 3 still reach each other
            return links(s, [1, other]) == {1: 0.0, other: 1.0}

        t_cut = time.monotonic()
        rc.net.isolate(1)
        try:
            wait_state(rc, cut, "n1's links down, and n1 without a majority", seen)
            t_seen = time.monotonic()
            # the majority side never lost its majority
            assert set(majorities) == {1.0}, majorities
        finally:
            rc.net.heal()
        t_heal = time.monotonic()
        wait_state(rc, whole, "every link up again, n1 with a majority again", seen)
        print(
            f"\n/metrics: the cut seen {t_seen - t_cut:.1f} s after it began,"
            f" the heal {time.monotonic() - t_heal:.1f} s after it"
        )
