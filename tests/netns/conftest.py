"""netns tier: network namespaces this test run creates (prefix ``otpk-<pytest pid>-``),
removed afterwards even when a test fails; a session sweep (at the start and the end)
removes leftovers of a crashed run - namespaces whose owning pytest is gone, with the
processes inside them, and guard routes - without touching a concurrent run.

Fixtures: ``ns_pair`` (two namespaces joined by a veth pair) and ``cluster`` (a hub with
a real dnsmasq and three node namespaces: see ``tests/harness/netns_cluster.py``)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

from tests.harness.netns_cluster import PREFIX, Cluster, cluster_in, sh, sweep

__all__ = ["PREFIX", "Pair", "sh"]


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("netns tier needs root (run as root, as CI does)")
    if shutil.which("ip") is None:
        pytest.skip("netns tier needs iproute2: apt-get install -y iproute2")


@pytest.fixture(scope="session", autouse=True)
def _sweep_leftovers() -> Iterator[None]:
    able = os.geteuid() == 0 and shutil.which("ip") is not None
    if able:
        sweep()
    yield
    if able:
        left = sweep(include_own=True)
        assert not left, f"the netns tests left {left} behind (removed now)"


class Pair:
    """Two namespaces joined by a veth pair: ``a`` at 10.10.0.1, ``b`` at 10.10.0.2."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]  # veth names below use its last 7 characters
        self.a = f"{PREFIX}{os.getpid()}-{tag}a"
        self.b = f"{PREFIX}{os.getpid()}-{tag}b"
        self.made: list[str] = []

    def up(self) -> Pair:
        for ns in (self.a, self.b):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        va, vb = f"va{self.a[-7:]}", f"vb{self.b[-7:]}"
        sh(
            "ip",
            "-n",
            self.a,
            "link",
            "add",
            va,
            "type",
            "veth",
            "peer",
            "name",
            vb,
            "netns",
            self.b,
        )
        sh("ip", "-n", self.a, "addr", "add", "10.10.0.1/24", "dev", va)
        sh("ip", "-n", self.b, "addr", "add", "10.10.0.2/24", "dev", vb)
        sh("ip", "-n", self.a, "link", "set", va, "up")
        sh("ip", "-n", self.b, "link", "set", vb, "up")
        return self

    def down(self) -> None:
        for ns in self.made:
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def ns_pair() -> Iterator[Pair]:
    _need_root()
    pair = Pair()
    try:
        yield pair.up()
    finally:
        pair.down()


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    """A hub (bridge 10.10.0.254 + dnsmasq serving HEADLESS, no records yet) and three
    node namespaces 10.10.0.1..3, no node started; all removed afterwards."""
    with cluster_in(tmp_path, hosts=3) as c:
        yield c
