"""Shared fixtures: one node per test session in this process (a node per OS process is
otpkit's rule). Helpers that wait for conditions instead of sleeping, and the node
processes of the cluster tiers, are in ``tests.harness``.

In parallel (``python -m pytest -n 2``, README's command, pytest-xdist; ``--dist
loadgroup`` is in the project's ``addopts``) any test may run beside any other: nodes
take free ports and a random creation (which names their abstract sockets), namespaces
and the guard route carry the worker's pid, and what a test writes is under its own
``tmp_path``. The tests of a module that share a module-scoped fixture (a trio of nodes,
a netns cluster that runs one scenario after another) form one xdist group: one worker
runs them in file order on one fixture, as a run without ``-n`` does. Most tests wait on
timers (ticks, heartbeats, leases), so two workers halve the suite's time on two cores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

import otpkit

# Hypothesis's own timing checks - a 200 ms deadline per example, the too_slow health
# check - measure the machine (workers side by side on two cores), not the code; what a
# property asserts is unchanged. A test's own @settings still sets any field it names.
settings.register_profile("otpkit", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("otpkit")

_SHARED_SCOPES = ("class", "module", "package")


def _shares_a_fixture(item: pytest.Item) -> bool:
    """True if ``item`` uses a fixture that lives longer than one test but not the
    session (a session fixture is made once per worker anyway)."""
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else ()
    return any(d and d[-1].scope in _SHARED_SCOPES for d in defs)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each module whose tests share a fixture is one xdist group (read by ``--dist
    loadgroup`` only). Runs first: xdist reads the groups from the marks in its own hook."""
    for item in items:
        if not item.get_closest_marker("xdist_group") and _shares_a_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


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
