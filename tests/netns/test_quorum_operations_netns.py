"""What an operator does to a running cluster, on real ``otpkit run`` nodes: restarts
that overlap, a StatefulSet's rolling restart, a cut of a node that does not hold the
scheduler, SIGKILLs of the holder's dist process, and an upgrade from stores written by
older code. Each checks what a user checks in the job's own output: which node ran which
tick, how many times, and how long no tick ran.

Three nodes, each ``otpkit run`` in its own namespace (see
``tests/harness/netns_run_cluster.py``): DNS A-record discovery through the cluster's
dnsmasq, ``--expected-size 3``, a ``--data-dir`` per node kept across its restarts (a
StatefulSet volume), ``--probe-port``; a majority ``Scheduler`` whose one job fires every
second and appends ``<tick> <node> <os pid> <start>`` to a file all nodes share.

Run (as root; ``-s`` prints the measured figures)::

    python -m pytest tests/netns/test_quorum_operations_netns.py -m netns -s

``NETNS_OTPKIT_SRC=/path/to/src`` runs the nodes on another otpkit source tree (default:
this repository's ``src``); ``OTPKIT_DIST_KILLS`` sets the SIGKILL count of the dist test
(default 10, about 45 s: the suite's short form; the issue's figure is 30);
``NETNS_OLD_TREE`` is the worktree of the old code the upgrade test starts from
(default: one made with ``git worktree add`` for the test and removed after it; the
test skips if it cannot be made).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.harness.netns_run_cluster import (
    KUBELET_GRACE,
    Run,
    RunCluster,
    clock,
    default_source,
    holder_changes,
    index_of,
    largest_gap,
    pause_until,
    run_cluster_in,
    shared_seconds,
    short,
    steady_holder,
    ticks_run_twice,
)
from tests.harness.polling import wait_for
from tests.harness.processes import REPO_ROOT

pytestmark = pytest.mark.netns

#: What a node's scheduler logs once a holder synced its replica (or it holds).
IN_SYNC = ": its replica is in sync"

T = TypeVar("T")

READY_BOUND = 90.0  # a node answers /healthz/ready 200 (settle timeout 30 s, a loaded box)
RESUME_BOUND = 30.0  # ticks go on after the last node is ready
BOOT_TICKS_BOUND = 60.0
DIST_KILL_GAP_BOUND = 10.0  # expected: term 3 s + margin 0.5 s + 1 s = 4.5 s
CUT_GAP_BOUND = 2.5
CUT_SECONDS = 6.0
OLD_COMMIT = "744ec1d"


@pytest.fixture
def run_cluster(tmp_path: Path) -> Iterator[RunCluster]:
    """Three node namespaces and dnsmasq serving their A records; no node started."""
    with run_cluster_in(tmp_path) as cluster:
        yield cluster


def poll(cond: Callable[[], T | None], timeout: float, what: str) -> T | None:
    """``cond``'s first truthy value within ``timeout``, or None: the test then reports
    what it measured instead of only that the wait failed."""
    with contextlib.suppress(AssertionError):
        return wait_for(cond, timeout, what, 0.1)
    return None


def boot(rc: RunCluster) -> str:
    """Start the three nodes at once; return the node running the ticks once it runs
    three in a row."""
    t0 = time.time()
    for i in rc.everyone:
        rc.start(i)
    rc.wait_ready(rc.everyone, READY_BOUND)
    return rc.wait_ticking(t0, BOOT_TICKS_BOUND, count=3)


def first_run_after(rc: RunCluster, since: float, timeout: float) -> Run | None:
    return poll(
        lambda: next((r for r in rc.runs() if r.start >= since), None),
        timeout,
        f"a run after {clock(since)}",
    )


def twice(runs: list[Run]) -> list[str]:
    """The problems a user sees in the file whatever happened: a tick run twice, two
    nodes running ticks in the same second."""
    problems = []
    if dup := ticks_run_twice(runs):
        problems.append(f"{len(dup)} ticks ran more than once: {dict(list(dup.items())[:10])}")
    if both := shared_seconds(runs):
        problems.append(f"two nodes ran ticks in the same second: {dict(list(both.items())[:10])}")
    return problems


def verdict(rc: RunCluster, report: list[str], problems: list[str]) -> None:
    """Print the figures; fail with every problem, the figures and the nodes' state."""
    text = "\n".join(report)
    print(text)
    if problems:
        pytest.fail("\n".join([*problems, "", text, rc.diagnostics()]), pytrace=False)


# --------------------------------------------------------------------------- the tests


def test_overlapping_restarts_of_all_three_nodes(run_cluster: RunCluster) -> None:
    """SIGTERM all three ``otpkit run`` processes at once, with the job ticking; start
    each again (same name, same data dir) as soon as its old process has exited, not
    waiting for the others. Every node becomes ready, ticks resume within 30 s after the
    last one is ready, no tick runs twice, and afterwards one node at a time runs them."""
    rc = run_cluster
    boot(rc)
    t_term = time.time()
    for i in rc.everyone:
        rc.term(i)
    restarted: dict[int, float] = {}
    ended: dict[int, str] = {}

    def restart_each_once_exited() -> bool:
        for i in rc.everyone:
            if i in restarted:
                continue
            if time.time() - t_term > KUBELET_GRACE:
                rc.kubelet_kill(i)
            if rc.exited(i):
                ended[i] = f"{rc.nodes[i].how} after {time.time() - t_term:.1f} s"
                rc.start(i)
                restarted[i] = time.time()
        return len(restarted) == len(rc.everyone)

    wait_for(
        restart_each_once_exited,
        KUBELET_GRACE + 15,
        "each node restarted once its old process ended",
        0.05,
        rc.diagnostics,
    )
    ready = rc.wait_ready(rc.everyone, READY_BOUND)
    t_ready = max(ready.values())
    first = first_run_after(rc, t_ready, RESUME_BOUND)
    after: list[Run] = []
    if first is not None:
        after = (
            poll(
                lambda: (a := [r for r in rc.runs() if r.start >= first.start])[5:] and a,
                20,
                "six runs after the resume",
            )
            or []
        )
    runs = rc.runs()
    gap = largest_gap(runs, t_term, first.start if first else time.time())
    report = [f"SIGTERM to all three at {clock(t_term)}"]
    report += [
        f"  n{i}: old process {ended[i]}; new one ready {ready[i] - t_term:.1f} s after SIGTERM"
        for i in rc.everyone
    ]
    report.append(f"last node ready at +{t_ready - t_term:.1f} s")
    report.append(
        f"first tick after it: +{first.start - t_ready:.1f} s ({first})"
        if first
        else f"NO tick within {RESUME_BOUND:.0f} s after the last node was ready"
    )
    report.append(f"no tick for {gap}")
    report.append(f"runs after the resume: {[str(r) for r in after]}")
    problems = twice(runs)
    if first is None:
        problems.append(f"ticks did not resume within {RESUME_BOUND:.0f} s of the last ready")
    elif len(after) < 6:
        problems.append(f"only {len(after)} runs within 20 s after the resume")
    elif moves := holder_changes(after):
        problems.append(f"after the resume the ticks moved between nodes: {moves}")
    verdict(rc, report, problems)


def test_rolling_restart_at_a_statefulsets_pace(run_cluster: RunCluster) -> None:
    """A StatefulSet's rolling restart: node 3, 2, 1 in turn, each SIGTERMed, started
    again once it exited, and the next one SIGTERMed as soon as it answers ready (no
    pause). Ready means rejoined: each restarted node logged that its scheduler replica
    is in sync (a holder synced it) before it first answered ready. After the roll the
    ticks go on within 30 s, none twice; the largest gap between two ticks during the
    roll is printed."""
    rc = run_cluster
    boot(rc)
    t_roll = time.time()
    report = [f"roll starts at {clock(t_roll)}"]
    problems: list[str] = []
    for i in (3, 2, 1):
        t = time.time()
        rc.term(i)
        how = rc.wait_exit(i)
        t_exit = time.time()
        synced_before = rc.log(i).count(IN_SYNC)
        rc.start(i)
        ready = rc.wait_ready([i], READY_BOUND)[i]
        if rc.log(i).count(IN_SYNC) <= synced_before:
            problems.append(f"n{i} answered ready before its scheduler replica was in sync")
        report.append(
            f"  n{i}: SIGTERM at +{t - t_roll:.1f} s, {how} after {t_exit - t:.1f} s, "
            f"ready {ready - t_exit:.1f} s after its start"
        )
    t_done = time.time()
    first = first_run_after(rc, t_done, RESUME_BOUND)
    runs = rc.runs()
    report.append(f"roll done at +{t_done - t_roll:.1f} s")
    report.append(f"largest gap during the roll: {largest_gap(runs, t_roll, t_done)}")
    report.append(
        f"first tick after the roll: +{first.start - t_done:.1f} s ({first})"
        if first
        else f"NO tick within {RESUME_BOUND:.0f} s after the roll"
    )
    if first:
        report.append(f"largest gap, roll to that tick: {largest_gap(runs, t_roll, first.start)}")
    problems += twice(runs)
    if first is None:
        problems.append(f"ticks did not go on within {RESUME_BOUND:.0f} s after the roll")
    verdict(rc, report, problems)


def test_cutting_off_a_node_that_is_not_the_holder_costs_the_holder_nothing(
    run_cluster: RunCluster,
) -> None:
    """Isolate (nftables) one node that does not run the ticks for ~6 s, heal, wait ~6 s:
    the holder keeps running the job all along - no gap over 2.5 s between two ticks,
    and every tick in that time from the holder."""
    rc = run_cluster
    boot(rc)
    wait_for(rc.meshed, 30, "every node has its dist links", 0.2, rc.diagnostics)
    holder = rc.wait_ticking(time.time(), 15, count=3)
    h = index_of(holder)
    other = min(i for i in rc.everyone if i != h)
    t_cut = time.time()
    rc.net.isolate(other)
    t_seen = wait_for(
        lambda: other not in rc.links(h) and time.time(),
        30,
        f"the holder n{h} drops its dist link to the isolated n{other}",
        0.2,
        rc.diagnostics,
    )
    pause_until(max(t_cut + CUT_SECONDS, t_seen + 1))
    rc.net.heal()
    t_heal = time.time()
    t_mesh = wait_for(
        lambda: rc.meshed() and time.time(), 30, "the links form again", 0.2, rc.diagnostics
    )
    pause_until(t_heal + CUT_SECONDS)
    t_end = time.time()
    runs = rc.runs()
    window = [r for r in runs if t_cut <= r.start <= t_end]
    gap = largest_gap(runs, t_cut, t_end)
    strangers = [str(r) for r in window if r.node != holder]
    report = [
        f"holder {short(holder)}; n{other} isolated at {clock(t_cut)}, "
        f"link dropped +{t_seen - t_cut:.1f} s, healed +{t_heal - t_cut:.1f} s, "
        f"meshed again +{t_mesh - t_cut:.1f} s, window ends +{t_end - t_cut:.1f} s",
        f"{len(window)} runs in the window, by {sorted({r.short for r in window})}",
        f"largest gap: {gap}",
    ]
    problems = twice(runs)
    if gap.seconds > CUT_GAP_BOUND:
        problems.append(f"no tick for {gap.seconds:.1f} s (> {CUT_GAP_BOUND} s) around the cut")
    if strangers:
        problems.append(f"ticks ran on other nodes than the holder {short(holder)}: {strangers}")
    verdict(rc, report, problems)


def test_sigkill_of_the_holders_dist_process(run_cluster: RunCluster) -> None:
    """SIGKILL only the dist process of the node running the ticks (the process that
    listens on the dist port), ``OTPKIT_DIST_KILLS`` times (default 10; 30 for the
    issue's figure), each time once the links are back and the ticks run again. The
    node halts (its kernel kills it, as a BEAM node halts when net_kernel dies) and is
    restarted, as its pod would be. Two nodes never run the same tick nor ticks in the
    same second, the ticks never move back and forth within one kill, and they go on
    within 10 s of each kill (expected: the lease's term 3 s + margin 0.5 s + 1 s =
    4.5 s at most; the measured gaps are printed)."""
    rc = run_cluster
    kills = int(os.environ.get("OTPKIT_DIST_KILLS", "10"))
    boot(rc)
    report = [f"{'#':>3} {'holder':>6} {'dist pid':>8} {'next':>5} {'gap s':>6}  notes"]
    problems: list[str] = []
    worst = 0.0
    for n in range(1, kills + 1):
        wait_for(rc.meshed, 40, "every node has its dist links", 0.2, rc.diagnostics)
        holder = rc.wait_ticking(time.time(), 20, count=2)
        h = index_of(holder)
        pid = rc.dist_pid(h)
        t_kill = time.time()
        os.kill(pid, signal.SIGKILL)
        notes: list[str] = []

        def dist_back(h: int = h, old: int = pid, notes: list[str] = notes) -> bool:
            if rc.exited(h):  # the node halted: its pod is restarted
                notes.append(f"n{h} halted ({rc.nodes[h].how}), restarted")
                rc.start(h)
                return False
            with contextlib.suppress(AssertionError):
                return rc.dist_pid(h) != old and rc.meshed()
            return False

        wait_for(dist_back, 60, f"n{h}'s dist is back and linked", 0.2, rc.diagnostics)

        def resumed(since: float = t_kill) -> str | None:
            return steady_holder(rc.runs(), since, 2)

        nxt = poll(resumed, 30, "two runs in a row on one node")
        runs = rc.runs()
        t_end = max([r.start for r in runs if r.start > t_kill], default=time.time())
        gap = largest_gap(runs, t_kill, t_end if nxt else time.time())
        worst = max(worst, gap.seconds)
        anchor = [r for r in runs if r.start < t_kill][-1:]
        moves = holder_changes([*anchor, *(r for r in runs if t_kill <= r.start <= t_end)])
        if len(moves) > 1:
            notes.append(f"ticks moved {len(moves)} times: {[f'{a} -> {b}' for a, b in moves]}")
            problems.append(f"kill {n}: the ticks went back and forth between nodes")
        report.append(
            f"{n:>3} {short(holder):>6} {pid:>8} {short(nxt) if nxt else '-':>5} "
            f"{gap.seconds:>6.2f}  {'; '.join(notes)}"
        )
        if gap.seconds > DIST_KILL_GAP_BOUND:
            problems.append(f"kill {n}: no tick for {gap}")
        if nxt is None:
            problems.append(f"kill {n}: the ticks did not go on within 30 s; stopped here")
            break
    gaps_line = f"largest gap over {len(report) - 1} kills: {worst:.2f} s"
    report.append(gaps_line)
    verdict(rc, report, [*twice(rc.runs()), *problems])


@pytest.fixture
def old_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ``src`` of a worktree of the old code (``NETNS_OLD_TREE``, else one made for
    this test and removed after it; skip if it cannot be made)."""
    given = os.environ.get("NETNS_OLD_TREE")
    tree = Path(given) if given else tmp_path_factory.mktemp("old") / OLD_COMMIT
    made = False
    if not (tree / "src" / "otpkit").is_dir():
        add = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(tree), OLD_COMMIT],
            capture_output=True,
            text=True,
            check=False,
        )
        if add.returncode != 0:
            pytest.skip(f"no worktree of {OLD_COMMIT} at {tree}: {add.stderr.strip()}")
        made = True
    try:
        head = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if not head.startswith(OLD_COMMIT):
            pytest.skip(f"{tree} is at {head or '?'}, not {OLD_COMMIT}")
        yield tree / "src"
    finally:
        if made:
            subprocess.run(
                ["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(tree)],
                capture_output=True,
                check=False,
            )


def test_upgrade_from_stores_written_by_old_code(tmp_path: Path, old_source: Path) -> None:
    """The cluster runs the old code (744ec1d) for a few ticks and is stopped gracefully
    (all three SIGTERMed at once, as a StatefulSet scaled to 0 in parallel); the current
    code then starts on the same data dirs: the job fires again, and no tick runs twice
    across the two versions."""
    with run_cluster_in(tmp_path, source=old_source) as rc:
        boot(rc)
        t_stop = time.time()
        for i in rc.everyone:
            rc.term(i)
        ended = {i: rc.wait_exit(i) for i in rc.everyone}
        old_runs = rc.runs()
        stores = sorted(
            p.name for i in rc.everyone for p in rc.data_dir(i).rglob("*") if p.is_file()
        )
        rc.source = default_source()
        t_start = time.time()
        for i in rc.everyone:
            rc.start(i)
        ready = rc.wait_ready(rc.everyone, READY_BOUND)
        t_ready = max(ready.values())
        first = first_run_after(rc, t_start, t_ready - t_start + RESUME_BOUND)
        more = first and poll(lambda: steady_holder(rc.runs(), first.start - 0.01, 3), 20, "3 runs")
        runs = rc.runs()
        report = [
            f"old code ({OLD_COMMIT}): {len(old_runs)} runs, stopped at {clock(t_stop)}: "
            f"{ {f'n{i}': how for i, how in ended.items()} }",
            f"stores the old code left: {stores}",
            f"current code ({rc.source}) ready +{t_ready - t_start:.1f} s after its start",
            f"first tick of the current code: +{first.start - t_ready:.1f} s after the last "
            f"ready ({first})"
            if first
            else "NO tick of the current code",
        ]
        problems = twice(runs)
        if first is None:
            problems.append(
                f"the job did not fire within {RESUME_BOUND:.0f} s after the last node was ready"
            )
        elif not more:
            problems.append("the current code ran fewer than 3 ticks in a row on one node")
        verdict(rc, report, problems)
