"""Shared fixtures: one node per test session in this process (a node per OS process is
otpkit's rule). Helpers that wait for conditions instead of sleeping, and the node
processes of the cluster tiers, are in ``tests.harness``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import otpkit


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[otpkit.Node]:
    n = otpkit.Node("test@127.0.0.1", log_dir=str(tmp_path_factory.mktemp("node"))).start()
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
def mailbox(node: otpkit.Node) -> Iterator[otpkit.Node]:
    """The session node, with this program's mailbox empty at the start of the test."""
    node.flush()
    yield node
    node.flush()
