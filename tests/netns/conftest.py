"""netns tier: network namespaces this test run creates (prefix ``otpk-``), removed
afterwards even when a test fails; a session sweep removes leftovers of a crashed run."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

PREFIX = "otpk-"


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("netns tier needs root (run as root, as CI does)")
    if shutil.which("ip") is None:
        pytest.skip("netns tier needs iproute2: apt-get install -y iproute2")


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


def _sweep() -> None:
    out = sh("ip", "netns", "list", check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            sh("ip", "netns", "del", name, check=False)


@pytest.fixture(scope="session", autouse=True)
def _sweep_leftovers() -> Iterator[None]:
    if os.geteuid() == 0 and shutil.which("ip"):
        _sweep()
    yield


class Pair:
    """Two namespaces joined by a veth pair: ``a`` at 10.10.0.1, ``b`` at 10.10.0.2."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.a = f"{PREFIX}{tag}a"
        self.b = f"{PREFIX}{tag}b"
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
