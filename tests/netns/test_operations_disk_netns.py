"""Scenario (h) of the operations suite (issue 12): one node's data dir on a full disk.

Three ``otpkit run`` nodes in network namespaces, each node's ``--data-dir`` a 16 MiB
tmpfs of its own (``tests/harness/operations_disk.py``), a majority ``Scheduler`` whose
job fires every second and appends each run to one file. While the cluster runs, one
node's data dir is filled to the last byte for ~15 s and then freed - first a node that
does not run the ticks, then the holder's. Asserted each time: no tick runs twice (nor
two nodes' ticks in one second); the holder runs every tick of the window, no gap over
2.5 s; every tick missing from the run file is one the scheduler reported missed or
interrupted (the nodes' event recorders) and the ticks go on; the sick node logs an
ERROR naming its store and the full disk, a few lines, not one per write; once freed, it
logs that its replica is in sync again. Printed: ``minority_disk_full_missed_ticks``
(goal 0) and the wall time (about 50 s).

Run (as root; ``-s`` prints the figures)::

    python3 -m pytest tests/netns/test_operations_disk_netns.py -m netns -s -x

``NETNS_OTPKIT_SRC=/path/to/src`` runs the nodes on another source tree.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.netns_run_cluster import RunCluster
from tests.harness.operations import boot
from tests.harness.operations_disk import disk_cluster_in, full_disk

pytestmark = pytest.mark.netns


@pytest.fixture
def disk_cluster(tmp_path: Path) -> Iterator[RunCluster]:
    """Three node namespaces, each node's data dir a tmpfs of its own (no node started);
    the nodes are stopped and the mounts removed afterwards, whatever happened."""
    with disk_cluster_in(tmp_path / "cluster") as cluster:
        yield cluster


def test_a_full_data_dir_holds_nobody_back_and_catches_up(disk_cluster: RunCluster) -> None:
    rc = disk_cluster
    t0 = time.time()
    boot(rc)
    out = full_disk(rc)
    text = out.text()
    print(f"\n{text}\n  wall time of the test: {time.time() - t0:.1f} s")
    if out.problems:
        pytest.fail("\n".join([*out.problems, "", text, rc.diagnostics()]), pytrace=False)
    assert out.figures["minority_disk_full_missed_ticks"] is not None
