"""Scenario (i) of the operations suite: a rolling update of a 3-node ``otpkit run``
cluster from this code to the next release, a build of it whose dist protocol, quorum
state format and scheduler schema versions are one higher (the test makes it: a copy of
the nodes' source tree with the three constants raised, ``tests/harness/versions.py``);
and from the previous release - the last commit whose dist protocol is one below this
code's, as git has it (``versions.previous_release``) - to this code: the real N-1,
which knows no attempts and no run history (this code's holder writes neither while a
node of it takes part).

One node at a time, from the highest index down, as a StatefulSet's rolling update
does: SIGTERM, wait for the exit, start it on the new build (same name, same data dir),
and the next one as soon as it answers ``/healthz/ready`` 200. Asserted: no tick runs
twice (nor two nodes' ticks in one second); every tick of the update missing from the run
file is one the scheduler reported missed or interrupted (the nodes' event recorders);
the ticks go on after the update; while both releases run, every node has a dist link to
every other; no node logs a version refusal; each updated node migrated its stores
forward. Printed: the issue's figure ``rolling_update_missed_ticks`` (goal 0) and the
wall time.

Run (as root; ``-s`` prints the figures)::

    python3 -m pytest tests/netns/test_operations_upgrade_netns.py -m netns -s -x

``NETNS_OTPKIT_SRC=/path/to/src`` starts the cluster on another source tree (the new
build is made from that tree).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.netns_run_cluster import RunCluster, run_cluster_in
from tests.harness.operations import boot
from tests.harness.operations_upgrade import rolling_update
from tests.harness.processes import REPO_ROOT
from tests.harness.versions import next_release, previous_commit, previous_release

pytestmark = pytest.mark.netns


@pytest.fixture
def run_cluster(tmp_path: Path) -> Iterator[RunCluster]:
    """Three node namespaces and dnsmasq serving their A records; no node started."""
    (tmp_path / "cluster").mkdir()
    with run_cluster_in(tmp_path / "cluster") as cluster:
        yield cluster


def test_rolling_update_to_the_next_release(run_cluster: RunCluster, tmp_path: Path) -> None:
    rc = run_cluster
    t0 = time.time()
    new = next_release(tmp_path / "next", source=rc.source)
    boot(rc)
    out = rolling_update(rc, new)
    text = out.text()
    print(f"\n{text}\n  wall time of the test: {time.time() - t0:.1f} s")
    if out.problems:
        pytest.fail("\n".join([*out.problems, "", text, rc.diagnostics()]), pytrace=False)
    assert out.figures["rolling_update_missed_ticks"] is not None


def test_rolling_update_from_the_previous_release(tmp_path: Path) -> None:
    """The cluster starts on the previous release's code (a git commit) and is rolled to
    this code, with the same checks: every node linked to every other while both run
    (either side dials: the handshake did not change), no version refusal, no tick
    twice, every missing tick reported."""
    try:
        commit = previous_commit()
    except LookupError as exc:
        pytest.skip(f"needs the repository's git history: {exc}")
    old = previous_release(tmp_path / "previous", commit)
    t0 = time.time()
    (tmp_path / "cluster").mkdir()
    with run_cluster_in(tmp_path / "cluster", source=old) as rc:
        boot(rc)
        out = rolling_update(rc, REPO_ROOT / "src")
        text = out.text()
        print(f"\n  from {commit[:10]}\n{text}\n  wall time of the test: {time.time() - t0:.1f} s")
        if out.problems:
            pytest.fail("\n".join([*out.problems, "", text, rc.diagnostics()]), pytrace=False)
    assert out.figures["rolling_update_missed_ticks"] is not None
