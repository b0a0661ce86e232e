"""The operations of issue 12, as functions over a running :class:`RunCluster`: each does
to the cluster what an operator (or a failure) does, checks the issue's invariant over
its window (:func:`~tests.harness.netns_run_cluster.account`: no tick ran twice, every
tick missing from the run file was reported missed or interrupted, the ticks resume) and
what the scenario shows besides, and returns an :class:`Outcome`: its report, its
problems and its measured figures. ``tests/netns/test_quorum_operations_netns.py`` runs
them as tests (several on one cluster: each starts from, and leaves, a healthy cluster)
and ``bench/operations.py`` prints their figures.

A scenario never fails by itself on a problem of the cluster (a tick twice, no resume):
it records it in ``Outcome.problems`` with the evidence and goes on where it can; a
harness failure (a node that never becomes ready) is an ``AssertionError`` carrying the
cluster's diagnostics.

Scenarios of the other parts of the issue (a full disk, a rolling update to the next
version) plug into the bench the same way: a function returning an :class:`Outcome`
whose ``figures`` name the figure (see ``bench/operations.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tests.harness.netns_run_cluster import (
    KUBELET_GRACE,
    Run,
    RunCluster,
    Tally,
    clock,
    holder_changes,
    index_of,
    label_gaps,
    largest_gap,
    pause_until,
    settle_tally,
    shared_seconds,
    short,
    steady_holder,
)
from tests.harness.polling import wait_for

T = TypeVar("T")

#: What a node's scheduler logs once a holder synced its replica (or it holds).
IN_SYNC = ": its replica is in sync"

READY_BOUND = 90.0  # a node answers /healthz/ready 200 (settle timeout 30 s, a loaded box)
RESUME_BOUND = 30.0  # ticks go on after the last node is ready
HEALTHY_BOUND = 90.0  # a cluster becomes healthy again (ready, meshed, ticking)
#: the quorum removes a member gone for good: remove_after 30 s, two removals term +
#: margin apart, a loaded box
CONFIG_BOUND = 120.0
CUT_GAP_BOUND = 2.5  # a cut of a non-holder: the holder never stops
DIST_KILL_GAP_BOUND = 10.0  # expected: term 3 s + margin 0.5 s + 1 s = 4.5 s
TERM = 3.0  # the lease's term (QuorumConfig's default)
#: the goal of ``sigstop_failover_label_gap_s_max``: term + 1 s
SIGSTOP_GAP_GOAL = TERM + 1.0


# --------------------------------------------------------------------------- outcomes


@dataclass
class Outcome:
    """What one scenario did and measured."""

    name: str
    started: float = field(default_factory=time.time)
    ended: float = 0.0
    report: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    tallies: list[Tally] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return (self.ended or time.time()) - self.started

    def done(self) -> Outcome:
        self.ended = time.time()
        return self

    def text(self) -> str:
        lines = [f"== {self.name} ({self.wall:.1f} s) =="]
        lines += self.report
        lines += [f"  {k} = {v}" for k, v in self.figures.items()]
        return "\n".join(lines)


def poll(cond: Callable[[], T | None], timeout: float, what: str) -> T | None:
    """``cond``'s first truthy value within ``timeout``, or None: the scenario then
    reports what it measured instead of only that the wait failed."""
    with contextlib.suppress(AssertionError):
        return wait_for(cond, timeout, what, 0.1)
    return None


def first_run_after(rc: RunCluster, since: float, timeout: float) -> Run | None:
    return poll(
        lambda: next((r for r in rc.runs() if r.start >= since), None),
        timeout,
        f"a run after {clock(since)}",
    )


def twice(runs: Iterable[Run]) -> list[str]:
    """Two nodes running ticks in the same wall-clock second: two holders at once."""
    both = shared_seconds(runs)
    if both:
        return [f"two nodes ran ticks in the same second: {dict(list(both.items())[:10])}"]
    return []


#: what a node's dist logs when it refuses a peer to prevent overlapping partitions
REFUSED = "refused to prevent overlapping partitions"


def mesh_problem(rc: RunCluster, since: float, timeout: float = 30.0) -> str | None:
    """None once every node of the deployment has its dist links to all the others
    (within ``timeout``); else which links are missing, and how often each node's log
    says a peer was refused to prevent overlapping partitions since ``since``."""
    if poll(lambda: rc.meshed(rc.everyone), timeout, "the mesh re-forms"):
        return None
    links = {f"n{i}": sorted(rc.links(i)) for i in rc.everyone}
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    refused = {
        f"n{i}": sum(1 for ln in rc.log(i).splitlines() if REFUSED in ln and ln[:19] >= stamp)
        for i in rc.everyone
    }
    drops = [
        ln.strip()
        for i in rc.everyone
        for ln in rc.log(i).splitlines()
        if "closed: prevent overlapping partitions" in ln and ln[:19] >= stamp
    ]
    return (
        f"the dist mesh did not re-form within {timeout:.0f} s: links {links}; "
        f"'{REFUSED}' lines since {clock(since)}: {refused}; drops: {drops[:6]}"
    )


#: the log lines that tell who held the scheduler's lease, and why it moved
LEASE_LINES = ("LeaseGranted", "LeaseLost", "witness of", "stops here", "active (epoch")


def lease_story(rc: RunCluster, since: float, limit: int = 30) -> str:
    """Every node's log lines since ``since`` about the scheduler's lease (grants,
    losses, witnesses closed, activations), by time: the evidence of a hand-over."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    rows = sorted(
        ln.strip()
        for i in rc.known
        for ln in rc.log(i).splitlines()
        if ln[:19] >= stamp and any(k in ln for k in LEASE_LINES)
    )
    more = f"\n    ... {len(rows) - limit} more" if len(rows) > limit else ""
    return "\n    " + "\n    ".join(r[:220] for r in rows[:limit]) + more


def close_books(rc: RunCluster, out: Outcome, since: float, until: float) -> Tally:
    """Check the invariant over ``[since, until]`` (waiting for late reports and the
    resumption); add its problems, and the runs of two nodes in one second, to ``out``."""
    tally = settle_tally(rc, since, until)
    out.tallies.append(tally)
    out.report.append(f"  ticks: {tally.summary()}")
    out.problems += tally.problems
    out.problems += twice(r for r in rc.runs() if since <= r.start <= until + 1)
    return tally


# --------------------------------------------------------------------------- the cluster


def boot(rc: RunCluster) -> str:
    """Start every node of the deployment at once; return the node running the ticks
    once it ran three in a row."""
    t0 = time.time()
    for i in rc.everyone:
        rc.start(i)
    rc.wait_ready(rc.everyone, READY_BOUND)
    return rc.wait_ticking(t0, 60, count=3)


def healthy(rc: RunCluster, timeout: float = HEALTHY_BOUND) -> str:
    """Wait until every node of the deployment runs, answers ready, has its dist links to
    all the others, and one node runs three ticks in a row; return that node. A scenario
    starts from (and leaves) such a cluster."""
    down = [i for i in rc.everyone if i not in rc.nodes or rc.exited(i)]
    assert not down, f"nodes {down} of the deployment do not run\n{rc.diagnostics()}"
    rc.wait_ready(rc.everyone, timeout)
    wait_for(
        lambda: rc.meshed(rc.everyone),
        timeout,
        "every node has its dist links",
        0.2,
        rc.diagnostics,
    )
    return rc.wait_ticking(time.time(), timeout, count=3)


def restart(rc: RunCluster, i: int, out: Outcome, t0: float) -> None:
    """A StatefulSet's restart of pod ``i``: SIGTERM, wait for its exit (SIGKILL after
    the grace), start it again, wait until it answers ready. Ready means rejoined: the
    node must have logged that its scheduler replica is in sync first."""
    t = time.time()
    rc.term(i)
    how = rc.wait_exit(i)
    t_exit = time.time()
    synced_before = rc.log(i).count(IN_SYNC)
    rc.start(i)
    ready = rc.wait_ready([i], READY_BOUND)[i]
    if rc.log(i).count(IN_SYNC) <= synced_before:
        out.problems.append(f"n{i} answered ready before its scheduler replica was in sync")
    out.report.append(
        f"  n{i}: SIGTERM at +{t - t0:.1f} s, {how} after {t_exit - t:.1f} s, ready "
        f"{ready - t_exit:.1f} s after its start (--expected-size {rc.nodes[i].expected})"
    )


def wait_configured(rc: RunCluster, members: list[int], expected: int, what: str) -> float:
    """Wait until the quorum decided exactly ``members`` with ``expected`` (asked of one
    node, then of each); return when every node said so."""

    def one() -> bool:
        return rc.configured(members, expected, asked=members[:1]) is None

    def every() -> bool:
        return rc.configured(members, expected) is None

    wait_for(one, CONFIG_BOUND, what, 1.0, lambda: f"{rc.configured(members, expected)}")
    wait_for(
        every, 30, f"{what}, on every node", 1.0, lambda: f"{rc.configured(members, expected)}"
    )
    return time.time()


# --------------------------------------------------------------------------- (a) rolling


def rolling_restart(rc: RunCluster, rounds: int = 2) -> Outcome:
    """(a) A StatefulSet's rolling restart, ``rounds`` times: each node from the highest
    index down SIGTERMed, started again once it exited, the next one SIGTERMed as soon as
    it answers ready (no pause). Shows: no tick is lost to a hand-over
    (``rolling_restart_missed_ticks``, goal 0) and the hand-over runs start on time
    (``rolling_restart_lateness_ms_max``: run start - tick, goal <= 250 ms)."""
    out = Outcome(f"(a) rolling restart, {rounds} rounds")
    healthy(rc)
    t0 = out.started = time.time()
    out.report.append(f"roll starts at {clock(t0)}")
    for n in range(1, rounds + 1):
        out.report.append(f" round {n}")
        for i in sorted(rc.everyone, reverse=True):
            restart(rc, i, out, t0)
    t_done = time.time()
    tally = close_books(rc, out, t0, t_done)
    runs = [r for f in tally.fates.values() for r in f.runs]
    late = sorted((r.lateness or 0.0, str(r)) for r in runs)
    gap = largest_gap(rc.runs(), t0, t_done)
    out.report.append(f"  roll done at +{t_done - t0:.1f} s; largest gap between run starts: {gap}")
    if late:
        out.report.append(f"  latest run: {late[-1][1]} ({late[-1][0] * 1000:.0f} ms late)")
    out.figures["rolling_restart_missed_ticks"] = tally.missed
    out.figures["rolling_restart_lateness_ms_max"] = round(late[-1][0] * 1000, 1) if late else None
    return out.done()


# --------------------------------------------------------------------------- (b) overlap


def overlapping_restart(rc: RunCluster) -> Outcome:
    """(b) SIGTERM every node at once, with the job ticking; start each again (same name,
    same data dir) as soon as its old process has exited, not waiting for the others.
    Every node becomes ready, the dist mesh re-forms, the ticks resume within 30 s after
    the last one is ready, and then one node runs them. ``overlap_restart_recovery_s``:
    from the moment a majority of the new processes answer ``/healthz/live`` to the run
    that ends the gap in the ticks (goal <= 2 * (term + margin) + settle = 12 s); 0 when
    the ticks resumed earlier (old processes still stopping count towards a majority, so
    a holder may be elected before a majority of new ones is live)."""
    out = Outcome("(b) overlapping restart of every node")
    healthy(rc)
    pods = rc.everyone
    majority = len(pods) // 2 + 1
    t_term = out.started = time.time()
    for i in pods:
        rc.term(i)
    restarted: dict[int, float] = {}
    ended: dict[int, str] = {}
    live: dict[int, float] = {}

    def restart_each_once_exited() -> bool:
        for i in pods:
            if i not in restarted:
                if time.time() - t_term > KUBELET_GRACE:
                    rc.kubelet_kill(i)
                if rc.exited(i):
                    ended[i] = f"{rc.nodes[i].how} after {time.time() - t_term:.1f} s"
                    rc.start(i)
                    restarted[i] = time.time()
            elif i not in live and rc.live(i):
                live[i] = time.time()
        return len(live) == len(pods)

    wait_for(
        restart_each_once_exited,
        KUBELET_GRACE + READY_BOUND,
        "each node restarted once its old process ended, and live",
        0.05,
        rc.diagnostics,
    )
    t_majority = sorted(live.values())[majority - 1]
    ready = rc.wait_ready(pods, READY_BOUND)
    t_ready = max(ready.values())
    resumed = first_run_after(rc, t_ready, RESUME_BOUND)  # the ticks go on after the restart
    # the run that ends the gap the restart made
    first = largest_gap(rc.runs(), t_term, resumed.start).before if resumed else None
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
    out.report.append(f"SIGTERM to every node at {clock(t_term)}")
    out.report += [
        f"  n{i}: old process {ended[i]}; new one live +{live[i] - t_term:.1f} s, ready "
        f"+{ready[i] - t_term:.1f} s"
        for i in pods
    ]
    out.report.append(
        f"  a majority live at +{t_majority - t_term:.1f} s, every node ready at "
        f"+{t_ready - t_term:.1f} s"
    )
    if first is None:
        out.problems.append(f"ticks did not resume within {RESUME_BOUND:.0f} s of the last ready")
    else:
        after_majority = first.start - t_majority
        out.report.append(
            f"  the gap ends with {first}, {after_majority:+.1f} s from a majority live"
        )
        out.figures["overlap_restart_recovery_s"] = round(max(0.0, after_majority), 2)
        if len(after) < 6:
            out.problems.append(f"only {len(after)} runs within 20 s after the resume")
        elif moves := holder_changes(after):
            out.problems.append(
                "after the resume the ticks moved between nodes: "
                f"{[f'{a} -> {b}' for a, b in moves]}; the lease:{lease_story(rc, t_term)}"
            )
    out.report.append(
        f"  no tick for {largest_gap(rc.runs(), t_term, first.start if first else time.time())}"
    )
    if problem := mesh_problem(rc, t_term):
        out.problems.append(problem)
    tally = close_books(rc, out, t_term, t_ready)
    out.figures["overlap_restart_missed_ticks"] = tally.missed
    return out.done()


# --------------------------------------------------------------------------- (c) scale


def scale(rc: RunCluster, peak: int = 5) -> Outcome:
    """(c) Scale the deployment up to ``peak`` nodes and back, as a StatefulSet whose
    ``replicas`` and ``OTPKIT_EXPECTED_SIZE`` are changed together: up, the new pods start
    (new IPs, their A records added, ``--expected-size peak``) and then the old ones are
    rolled with the new setting; down, the new pods are stopped and their records removed,
    then the rest are rolled with the old setting. Shows: the quorum's members and
    expected size follow (asked with ``otpkit quorum``), the departed members are removed
    (``remove_after``), and the ticks are accounted for all along (the missed ones of each
    half are figures)."""
    base = rc.everyone
    size0 = rc.expected_size
    out = Outcome(f"(c) scale {len(base)} -> {peak} -> {len(base)}")
    healthy(rc)
    new = rc.fresh(peak - len(base))
    t0 = out.started = time.time()
    out.report.append(f"scale up at {clock(t0)}: new pods {[f'n{i}' for i in new]}")
    rc.expected_size = peak
    rc.add_pods(new)
    for i in new:
        rc.start(i)
    ready = rc.wait_ready(new, READY_BOUND)
    out.report.append(f"  new pods ready at +{max(ready.values()) - t0:.1f} s")
    for i in sorted(base, reverse=True):
        restart(rc, i, out, t0)
    t_up = wait_configured(rc, rc.everyone, peak, f"the quorum has {peak} members, expected {peak}")
    out.report.append(f"  {peak} members, expected size {peak}: +{t_up - t0:.1f} s")
    healthy(rc)
    t_down = time.time()
    up = close_books(rc, out, t0, t_down)
    out.report.append(f"scale down at +{t_down - t0:.1f} s: stop {[f'n{i}' for i in new]}")
    rc.expected_size = size0
    rc.remove_pods(new)
    for i in new:
        rc.term(i)
    for i in new:
        out.report.append(f"  n{i}: {rc.wait_exit(i)} after {time.time() - t_down:.1f} s")
    for i in sorted(base, reverse=True):
        restart(rc, i, out, t0)
    t_end = wait_configured(
        rc, base, size0, f"the departed members are removed, expected {size0} again"
    )
    took = t_end - t_down
    out.report.append(f"  {len(base)} members, expected size {size0}: +{took:.1f} s after it began")
    healthy(rc)
    down = close_books(rc, out, t_down, t_end)
    out.figures["scale_up_missed_ticks"] = up.missed
    out.figures["scale_down_missed_ticks"] = down.missed
    out.figures["scale_down_members_s"] = round(t_end - t_down, 1)
    return out.done()


# --------------------------------------------------------------------------- (d) replace


def replace_node(rc: RunCluster) -> Outcome:
    """(d) The holder's node is replaced by a node with a new IP, as a pod rescheduled
    elsewhere (with ``dns-a`` names ``myapp@<pod IP>``: a new node name): the old pod
    is SIGTERMed and its A record removed, the new one gets a new record and starts.
    Shows: the new node joins and becomes ready, the old member (gone for good) is
    removed from the quorum (``remove_after``) and the ticks are accounted for."""
    out = Outcome("(d) a node replaced by a node with a new IP")
    holder = healthy(rc)
    h = index_of(holder)
    (k,) = rc.fresh(1)
    t0 = out.started = time.time()
    rc.term(h)
    rc.remove_pods([h])
    how = rc.wait_exit(h)
    t_exit = time.time()
    rc.add_pods([k])
    rc.start(k)
    ready = rc.wait_ready([k], READY_BOUND)[k]
    out.report.append(
        f"holder n{h} SIGTERMed at {clock(t0)}, {how} after {t_exit - t0:.1f} s; n{k} "
        f"started, ready +{ready - t0:.1f} s"
    )
    t_members = wait_configured(
        rc, rc.everyone, rc.expected_size, f"n{h} removed and n{k} a member of the quorum"
    )
    out.report.append(f"  members {[f'n{i}' for i in rc.everyone]}: +{t_members - t0:.1f} s")
    healthy(rc)
    tally = close_books(rc, out, t0, t_members)
    out.figures["replace_missed_ticks"] = tally.missed
    out.figures["replace_old_member_removed_s"] = round(t_members - t_exit, 1)
    return out.done()


# --------------------------------------------------------------------------- (e) kill all


def kill_all(rc: RunCluster) -> Outcome:
    """(e) SIGKILL every process of every node at once, then start all of them again
    (same names, same data dirs). Shows: a whole-cluster restart is no cold boot (the
    quorum keeps its configuration version), the ticks of the outage are reported
    missed (``run_once``: the latest runs), and none runs twice."""
    out = Outcome("(e) SIGKILL of every node, then all started")
    healthy(rc)
    pods = rc.everyone
    before = rc.quorum(pods[0])
    t_kill = out.started = time.time()
    for i in pods:
        rc.kill_pod(i)
    t_start = time.time()
    for i in pods:
        rc.start(i)
    ready = rc.wait_ready(pods, READY_BOUND)
    t_ready = max(ready.values())
    first = first_run_after(rc, t_start, t_ready - t_start + RESUME_BOUND)
    out.report.append(
        f"every node SIGKILLed at {clock(t_kill)} (+{t_start - t_kill:.2f} s), started again; "
        f"every node ready +{t_ready - t_start:.1f} s"
    )
    if first is None:
        out.problems.append(f"no tick within {RESUME_BOUND:.0f} s of the last ready")
    else:
        out.report.append(f"  first tick: {first}, +{first.start - t_start:.1f} s after the start")
        out.figures["kill_all_recovery_s"] = round(first.start - t_start, 2)
    if problem := mesh_problem(rc, t_kill):
        out.problems.append(problem)
        return out.done()
    holder = healthy(rc)
    after = rc.quorum(pods[0])
    if before is not None and after is not None:
        out.report.append(
            f"  quorum v{before.get('version')} before, v{after.get('version')} after"
        )
        if after.get("version") != before.get("version") or after.get("members") != before.get(
            "members"
        ):
            out.problems.append(f"the quorum's configuration changed: {before} -> {after}")
    out.report.append(f"  ticks run by {short(holder)}")
    tally = close_books(rc, out, t_kill, t_ready)
    out.figures["kill_all_missed_ticks"] = tally.missed
    return out.done()


# --------------------------------------------------------------------------- (f) cut


LEASE_KEY = "singleton/otpkit_scheduler"


def backed_without(rc: RunCluster, holder: str, timeout: float = 10.0) -> int | None:
    """A non-holder whose cut leaves ``holder`` a majority of members that
    back its lease (their grant names it, unexpired): the other non-holders' grant
    records, from ``otpkit quorum --json``. A member that asked for the lease itself
    before it knew the holder does not back that holder's renewals (a known limitation,
    ``test_a_standby_that_asked_before_it_knew_the_holder_backs_its_renewals``): the
    lease then rests on the members that granted it first, and this picks the node
    whose cut does not test that limitation. None if not seen within ``timeout``."""
    h = index_of(holder)
    others = [i for i in rc.everyone if i != h and rc.nodes[i].running]
    need = len(rc.everyone) // 2 + 1

    def backs(i: int) -> bool:
        status = rc.quorum(i) or {}
        g = (status.get("grants") or {}).get(LEASE_KEY) or {}
        return g.get("holder") == holder and not g.get("void") and (g.get("left") or 0) > 0

    def pick() -> int | None:
        backers = {i for i in others if backs(i)}
        for i in sorted(others):
            if 1 + len(backers - {i}) >= need:
                return i
        return None

    with contextlib.suppress(AssertionError):
        return wait_for(pick, timeout, "a non-holder whose cut the lease outlives", 0.5)
    return None


def nonholder_cut(rc: RunCluster, seconds: float = 10.0, after: float = 6.0) -> Outcome:
    """(f) Isolate (nftables) a node that does not run the ticks for ``seconds``, heal,
    wait ``after`` seconds more (its return): the holder keeps running the job all along
    - no gap over 2.5 s between two ticks, every tick of that time from the holder, none
    missed (``nonholder_cut_missed_ticks``, goal 0)."""
    out = Outcome(f"(f) a non-holder cut off {seconds:.0f} s")
    holder = healthy(rc)
    h = index_of(holder)
    other = backed_without(rc, holder)
    if other is None:
        other = min(i for i in rc.everyone if i != h)
        out.report.append(
            f"  (no non-holder whose cut leaves the holder's grants a majority was seen; "
            f"cutting n{other})"
        )
    t_cut = out.started = time.time()
    rc.net.isolate(other)
    try:
        t_seen = wait_for(
            lambda: other not in rc.links(h) and time.time(),
            30,
            f"the holder n{h} drops its dist link to the isolated n{other}",
            0.2,
            rc.diagnostics,
        )
        pause_until(max(t_cut + seconds, t_seen + 1))
    finally:
        rc.net.heal()
    t_heal = time.time()
    t_mesh = wait_for(
        lambda: rc.meshed(rc.everyone) and time.time(),
        30,
        "the links form again",
        0.2,
        rc.diagnostics,
    )
    pause_until(t_heal + after)
    t_end = time.time()
    runs = rc.runs()
    window = [r for r in runs if t_cut <= r.start <= t_end]
    gap = largest_gap(runs, t_cut, t_end)
    strangers = [str(r) for r in window if r.node != holder]
    out.report += [
        f"holder {short(holder)}; n{other} isolated at {clock(t_cut)}, link dropped "
        f"+{t_seen - t_cut:.1f} s, healed +{t_heal - t_cut:.1f} s, meshed again "
        f"+{t_mesh - t_cut:.1f} s, window ends +{t_end - t_cut:.1f} s",
        f"  {len(window)} runs in the window, by {sorted({r.short for r in window})}",
        f"  largest gap: {gap}",
    ]
    if gap.seconds > CUT_GAP_BOUND:
        out.problems.append(f"no tick for {gap.seconds:.1f} s (> {CUT_GAP_BOUND} s) around the cut")
    if strangers:
        out.problems.append(
            f"ticks ran on other nodes than the holder {short(holder)}: {strangers}"
        )
    tally = close_books(rc, out, t_cut, t_end)
    out.figures["nonholder_cut_missed_ticks"] = tally.missed
    out.figures["nonholder_cut_gap_s_max"] = round(gap.seconds, 2)
    return out.done()


# --------------------------------------------------------------------------- (g) sigstop


def sigstop_holder(rc: RunCluster, freezes: int, seconds: float = 8.0) -> Outcome:
    """(g) SIGSTOP every process of the holder's node for ``seconds``, then SIGCONT,
    ``freezes`` times (each once the cluster is healthy again). Shows: another node takes
    the ticks over within about a lease term, the thawed old holder runs nothing twice,
    and it rejoins. ``sigstop_failover_label_gap_s_max``: the largest difference between
    consecutive tick labels in the run file over the freezes (goal <= term + 1 s = 4 s)."""
    out = Outcome(f"(g) the holder's node SIGSTOPped {seconds:.0f} s, {freezes} times")
    out.report.append(
        f"{'#':>3} {'holder':>6} {'next':>5} {'label gap s':>11} {'first run after':>16}"
    )
    worst = 0.0
    for n in range(1, freezes + 1):
        holder = healthy(rc)
        h = index_of(holder)
        t_stop = time.time()
        if n == 1:
            out.started = t_stop
        stopped = rc.freeze(h)
        try:
            nxt = poll(
                lambda since=t_stop, old=holder: next(
                    (r for r in rc.runs() if r.start > since and r.node != old), None
                ),
                seconds,
                "another node runs a tick",
            )
            pause_until(t_stop + seconds)
        finally:
            rc.thaw(h)
        t_thaw = time.time()
        if nxt is None:
            nxt = first_run_after(rc, t_stop, RESUME_BOUND)
        if nxt is None or nxt.label is None:
            out.problems.append(f"freeze {n}: no tick within {seconds + RESUME_BOUND:.0f} s")
            break
        pairs = label_gaps(rc.runs(), t_stop, nxt.label)
        gap = max((b - a for a, b in pairs), default=0)
        worst = max(worst, gap)
        out.report.append(
            f"{n:>3} {short(holder):>6} {nxt.short:>5} {gap:>11} "
            f"{nxt.start - t_stop:>+15.2f}s  ({len(stopped)} processes stopped; thawed "
            f"+{t_thaw - t_stop:.1f} s)"
        )
        healthy(rc)
        close_books(rc, out, t_stop, t_thaw)
    out.figures["sigstop_failover_label_gap_s_max"] = worst
    out.figures["sigstop_freezes"] = freezes
    return out.done()


# --------------------------------------------------------------------------- dist kills


def dist_kills(rc: RunCluster, kills: int) -> Outcome:
    """SIGKILL only the dist process of the node running the ticks (the process that
    listens on the dist port), ``kills`` times, each time once the links are back and
    the ticks run again. The node halts (its kernel kills it, as a BEAM node halts when
    net_kernel dies) and is restarted, as its pod would be. The ticks never move back and
    forth within one kill, and they go on within 10 s of each kill (expected: the lease's
    term 3 s + margin 0.5 s + 1 s = 4.5 s at most)."""
    out = Outcome(f"SIGKILL of the holder's dist process, {kills} times")
    out.report.append(f"{'#':>3} {'holder':>6} {'dist pid':>8} {'next':>5} {'gap s':>6}  notes")
    healthy(rc)
    out.started = time.time()
    worst = 0.0
    done = 0
    for n in range(1, kills + 1):
        wait_for(lambda: rc.meshed(rc.everyone), 40, "the dist links", 0.2, rc.diagnostics)
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
                return rc.dist_pid(h) != old and rc.meshed(rc.everyone)
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
            out.problems.append(
                f"kill {n}: the ticks went back and forth between nodes; the lease:"
                f"{lease_story(rc, t_kill)}"
            )
        out.report.append(
            f"{n:>3} {short(holder):>6} {pid:>8} {short(nxt) if nxt else '-':>5} "
            f"{gap.seconds:>6.2f}  {'; '.join(notes)}"
        )
        done = n
        if gap.seconds > DIST_KILL_GAP_BOUND:
            out.problems.append(f"kill {n}: no tick for {gap}")
        if nxt is None:
            out.problems.append(f"kill {n}: the ticks did not go on within 30 s; stopped here")
            break
    out.report.append(f"  largest gap over {done} kills: {worst:.2f} s")
    healthy(rc)
    close_books(rc, out, out.started, time.time() - 1)
    out.figures["dist_kill_gap_s_max"] = round(worst, 2)
    return out.done()
