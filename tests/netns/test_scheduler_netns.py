"""The cluster Scheduler in network namespaces: real DNS discovery, real cuts, real kills.

Every node runs ``tests.harness.node_driver --scheduler CONFIG`` (a ``Scheduler`` whose
one job runs ``tests.harness.scheduler_tasks:record``: a ``start`` line when the task is
entered and a ``run`` line when it returns, each with the run's tick, its node, os pid
and wall-clock times) and an event subscriber that appends every scheduler event to a
JSON-lines file (one file per node incarnation; an event reaches every node, so they are
merged by ``id``). The assertions read those files: which tick started and ran where,
how many times, and what the scheduler reported for the ticks that did not run.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.harness.netns_cluster import Cluster, NetnsNode, name_of
from tests.harness.polling import wait_for

pytestmark = pytest.mark.netns

BOUND = 20.0
JOB = "tick"
TASK = "tests.harness.scheduler_tasks:record"
SECOND = timedelta(seconds=1)
EVERYONE = [1, 2, 3]


# --------------------------------------------------------------------------- the files


@dataclass(frozen=True)
class Line:
    """One line of the task's file: ``start`` (entry into the task) or ``run`` (return)."""

    kind: str
    tick: datetime | None
    node: str
    pid: int
    start: float
    end: float | None = None
    lane: str | None = None


def _iso(text: str | None) -> datetime | None:
    if text is None or text == "-":
        return None
    return datetime.fromisoformat(text).astimezone(UTC)


def task_lines(path: Path) -> list[Line]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    rows = []
    for raw in text.splitlines():
        f = raw.split()
        if len(f) == 5 and f[0] == "start":
            rows.append(Line("start", _iso(f[1]), f[2], int(f[3]), float(f[4])))
        elif len(f) == 7 and f[0] == "run":
            lane = None if f[6] == "-" else f[6]
            rows.append(Line("run", _iso(f[1]), f[2], int(f[3]), float(f[4]), float(f[5]), lane))
    return rows


def runs(path: Path) -> list[Line]:
    return [r for r in task_lines(path) if r.kind == "run"]


def starts(path: Path) -> list[Line]:
    return [r for r in task_lines(path) if r.kind == "start"]


def events(workdir: Path, kinds: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Every event of the job any node's subscriber saw, once each (by ``id``), by time."""
    wanted = set(kinds)
    seen: dict[str, dict[str, Any]] = {}
    for path in sorted(workdir.glob("events*.jsonl")):
        for raw in path.read_text().splitlines():
            try:
                ev = json.loads(raw)
            except ValueError:
                continue  # a line being written
            if ev.get("job") == JOB and (not wanted or ev.get("kind") in wanted):
                seen.setdefault(ev["id"], ev)
    return sorted(seen.values(), key=lambda e: e["at"])


def missed_span(ev: dict[str, Any]) -> tuple[datetime, datetime]:
    """The ticks a ``run_missed`` event covers (``extra.first``..``extra.last``)."""
    extra = ev.get("extra") or {}
    first = _iso(extra.get("first")) or _iso(ev.get("tick"))
    last = _iso(extra.get("last")) or first
    assert first is not None and last is not None, ev
    return first, last


def seconds(first: datetime, last: datetime) -> list[datetime]:
    out, t = [], first
    while t <= last:
        out.append(t)
        t += SECOND
    return out


# --------------------------------------------------------------------------- the nodes


def job_spec(path: Path, seconds: float = 0.0, **more: Any) -> dict[str, Any]:
    return {
        "name": JOB,
        "schedule": "* * * * * *",
        "task": TASK,
        "kwargs": {"path": str(path), "seconds": seconds},
        **more,
    }


def write_configs(
    cluster: Cluster, indices: Iterable[int], jobs: list[dict[str, Any]], policy: str
) -> None:
    """One config per node: the same jobs, each node its own SQLite store."""
    for i in indices:
        cfg = {
            "policy": policy,
            "store": str(cluster.workdir / f"store{i}.sqlite"),
            "settle_timeout": 5.0,
            "jobs": jobs,
            "max_concurrency": 4,
        }
        (cluster.workdir / f"sched{i}.json").write_text(json.dumps(cfg))


def extra(cluster: Cluster, i: int) -> tuple[str, ...]:
    return ("--scheduler", str(cluster.workdir / f"sched{i}.json"))


def listen(cluster: Cluster, node: NetnsNode) -> None:
    """Start the node's event subscriber; each incarnation writes its own file."""
    n = len(list(cluster.workdir.glob(f"events{node.index}.*.jsonl")))
    target = str(cluster.workdir / f"events{node.index}.{n}.jsonl")

    def subscribed() -> bool:
        try:
            node.cmd(op="sched_events", path=target)
        except AssertionError:  # its scheduler process is not registered yet
            return False
        return True

    wait_for(subscribed, BOUND, f"{node.name} subscribes to the scheduler's events", 0.2)


def boot(
    cluster: Cluster,
    jobs: list[dict[str, Any]],
    policy: str = "majority",
    indices: Iterable[int] = EVERYONE,
) -> list[NetnsNode]:
    """Start the nodes at the same moment, each with the scheduler and a subscriber
    (the configurations of all three nodes are written)."""
    indices = list(indices)
    write_configs(cluster, EVERYONE, jobs, policy)
    cluster.set_records(indices)
    nodes = [cluster.start(i, extra=extra(cluster, i), wait=False) for i in indices]
    for n in nodes:
        n.wait_ready()
    cluster.wait_view(cluster.parts(indices), BOUND, "the nodes find each other by DnsA")
    for n in nodes:
        listen(cluster, n)
    return nodes


def restart(cluster: Cluster, i: int) -> NetnsNode:
    node = cluster.start(i, extra=extra(cluster, i))
    listen(cluster, node)
    return node


def holder_on(nodes: Iterable[NetnsNode]) -> dict[str, str | None]:
    return {n.name: n.cmd(op="sched_holder") for n in nodes}


def one_holder(nodes: Iterable[NetnsNode]) -> str | None:
    """The holder every one of ``nodes`` names, if they agree on one."""
    views = set(holder_on(nodes).values())
    return views.pop() if len(views) == 1 and None not in views else None


def members(cluster: Cluster) -> dict[str, tuple[int, list[str]]]:
    views = {}
    for n in cluster.live():
        version, names = n.cmd(op="quorum_members")
        views[n.name] = (int(version), list(names))
    return views


def full_membership(cluster: Cluster, after: int) -> bool:
    """Every live node agrees on one member set of all three, at a version > ``after``."""
    views = members(cluster)
    everyone = sorted(name_of(i) for i in EVERYONE)
    return (
        len(views) == len(EVERYONE)
        and len({v for v, _ in views.values()}) == 1
        and all(v > after and names == everyone for v, names in views.values())
    )


def member_version(cluster: Cluster) -> int:
    return max(v for v, _ in members(cluster).values())


def node_named(cluster: Cluster, name: str) -> NetnsNode:
    return next(n for n in cluster.nodes.values() if n.name == name and n.running)


def sched_logs(cluster: Cluster, lines: int = 40) -> str:
    """The tail of each node's scheduler, singleton and quorum log lines."""
    out = []
    for n in cluster.nodes.values():
        rows = [
            r
            for r in n.log().splitlines()
            if ("otpkit.scheduler" in r and " run " not in r and "run started" not in r)
            or "otpkit.quorum" in r
            or "singleton" in r
        ]
        out.append(f"--- {n.name} (scheduler/quorum lines, tail) ---")
        out.extend(rows[-lines:])
    return "\n".join(out)


def errors(cluster: Cluster) -> str:
    """Every node's ERROR lines (a crashed scheduler process, say), for failure messages."""
    rows = [r for n in cluster.nodes.values() for r in n.log().splitlines() if " ERROR " in r]
    return "\nERROR lines in the node logs:\n" + "\n".join(rows[-20:]) if rows else ""


def ran_since(path: Path, since: float, node: str | None = None, count: int = 2) -> bool:
    """``count`` runs (of ``node``, or any) started after ``since``."""
    got = [r for r in runs(path) if r.start > since and (node is None or r.node == node)]
    return len(got) >= count


# --------------------------------------------------------------------------- accounting


@dataclass
class Timeline:
    """What the test did and when (wall clock), to place a tick in its phase."""

    marks: list[tuple[float, str]] = field(default_factory=list)

    def mark(self, what: str) -> float:
        t = time.time()
        self.marks.append((t, what))
        return t

    def phase_of(self, at: float) -> str:
        phase = "boot"
        for t, what in self.marks:
            if t <= at:
                phase = what
        return phase

    def __str__(self) -> str:
        t0 = self.marks[0][0] if self.marks else 0.0
        return "\n".join(
            f"  {datetime.fromtimestamp(t, UTC).isoformat(timespec='milliseconds')} "
            f"(+{t - t0:6.2f} s) {what}"
            for t, what in self.marks
        )


@dataclass
class TickFate:
    """Everything the files say about one tick."""

    starts: list[str] = field(default_factory=list)  # nodes
    ran: list[str] = field(default_factory=list)
    interrupted: int = 0
    missed: int = 0
    skipped: int = 0
    other: list[str] = field(default_factory=list)  # run_failed, run_timed_out

    def accounted(self) -> int:
        return len(self.ran) + self.interrupted + self.missed + self.skipped + len(self.other)

    def problem(self) -> str | None:
        if len(self.starts) > 1:
            return "started more than once"
        if self.other:
            return "failed or timed out"
        if self.accounted() != 1:
            return "not accounted for exactly once"
        if self.starts and not self.ran and not self.interrupted:
            return "started, never ran, not reported interrupted"
        if self.ran and not self.starts:
            return "ran without a start line"
        return None


def fates(path: Path, workdir: Path, first: datetime, last: datetime) -> dict[datetime, TickFate]:
    table = {t: TickFate() for t in seconds(first, last)}
    for line in task_lines(path):
        fate = table.get(line.tick) if line.tick is not None else None
        if fate is not None:
            (fate.starts if line.kind == "start" else fate.ran).append(line.node)
    for ev in events(workdir):
        kind = ev["kind"]
        if kind == "run_missed":
            a, b = missed_span(ev)
            for t in seconds(max(a, first), min(b, last)):
                table[t].missed += 1
            continue
        fate = table.get(_iso(ev.get("tick")))  # type: ignore[arg-type]
        if fate is None:
            continue
        if kind == "run_interrupted":
            fate.interrupted += 1
        elif kind == "run_skipped":
            fate.skipped += 1
        elif kind in ("run_failed", "run_timed_out"):
            fate.other.append(f"{kind}: {ev.get('error')}")
    return table


def fate_table(table: dict[datetime, TickFate], timeline: Timeline, only_bad: bool) -> str:
    rows = [f"{'tick':<26} {'phase':<34} start@/ran@/int/miss/skip  problem"]
    for t, f in sorted(table.items()):
        bad = f.problem()
        if only_bad and not bad:
            continue
        rows.append(
            f"{t.isoformat():<26} {timeline.phase_of(t.timestamp())[:34]:<34} "
            f"{','.join(n.rsplit('.', 1)[-1] for n in f.starts) or '-':>6}/"
            f"{','.join(n.rsplit('.', 1)[-1] for n in f.ran) or '-'}/"
            f"{f.interrupted}/{f.missed}/{f.skipped}  {bad or ''} {'; '.join(f.other)}"
        )
    return "\n".join(rows)


# --------------------------------------------------------------------------- tests


def test_majority_chaos_each_tick_runs_once_or_is_accounted_for(cluster: Cluster) -> None:
    """Three SIGKILLs of the holder's node (one mid-run), a cut that isolates the holder,
    a cut that isolates another node, a SIGSTOP of the holder longer than its lease: no
    tick starts twice, each tick ran or is reported interrupted, missed or skipped, the
    minority side starts nothing, and the paused old holder starts nothing new."""
    path = cluster.workdir / "task"
    workdir = cluster.workdir
    timeline = Timeline()
    boot(cluster, [job_spec(path, 0.3, misfire="run_once")])
    timeline.mark("booted")

    def diagnose() -> str:
        try:
            views = holder_on(cluster.live())
        except AssertionError as exc:
            views = {"?": str(exc)}
        return (
            f"timeline:\n{timeline}\nwhereis(scheduler): {views}\n"
            f"{cluster.diagnostics()}\n{sched_logs(cluster)}"
        )

    def holder(among: list[NetnsNode], other_than: str | None = None) -> str:
        """The holder ``among`` agree on (not ``other_than``), with runs flowing on it
        (one condition: a merge may name a lease-less holder for a moment)."""
        since = time.time()

        def agreed_and_running() -> str | None:
            h = one_holder(among)
            return h if h is not None and h != other_than and ran_since(path, since, h) else None

        name = wait_for(
            agreed_and_running,
            40,
            f"{[n.name for n in among]} agree on a holder other than {other_than}, "
            "and runs flow on it",
            0.1,
            diagnose,
        )
        return str(name)

    def settled() -> None:
        version = member_version(cluster) if len(cluster.live()) == 3 else 0
        cluster.wait_view(cluster.parts(EVERYONE), BOUND, "the three see each other")
        wait_for(
            lambda: full_membership(cluster, after=version - 1),
            BOUND,
            "the three are members",
            0.2,
            diagnose,
        )

    def kill_holder(mid_run: bool) -> None:
        h = node_named(cluster, holder(cluster.live()))
        version = member_version(cluster)

        def finished_runs(name: str) -> set[datetime | None]:
            return {_iso(e.get("tick")) for e in events(workdir, ["run_finished"])
                    if e.get("node") == name}  # fmt: skip

        def moment() -> bool:
            now = time.time()
            mine = [r for r in task_lines(path) if r.node == h.name]
            if not mine:
                return False
            last = mine[-1]
            if mid_run:  # a run of the holder's node just started: ~0.25 s of it left
                return last.kind == "start" and now - last.start < 0.12
            # between two runs: the last one is finished in the ledger, the next not claimed
            return (
                last.kind == "run" and 0.45 <= now % 1 <= 0.8 and last.tick in finished_runs(h.name)
            )

        wait_for(moment, BOUND, f"the moment to kill {h.name}", 0.01, diagnose)
        h.kill9()
        timeline.mark(f"kill9 {h.name}" + (" mid-run" if mid_run else ""))
        survivors = cluster.live()
        new = holder(survivors, other_than=h.name)
        timeline.mark(f"holder {new} runs ticks")
        restart(cluster, h.index)
        timeline.mark(f"restarted {h.name}")
        settled()
        wait_for(lambda: full_membership(cluster, after=version), BOUND, "rejoined", 0.2, diagnose)
        timeline.mark(f"{h.name} is a member again")

    # -- let it run, then three SIGKILLs of the holder's node, one in the middle of a run
    settled()
    holder(cluster.live())
    timeline.mark("ticking")
    kill_holder(mid_run=False)
    kill_holder(mid_run=True)
    kill_holder(mid_run=False)

    # -- a 1|2 cut isolating the holder: the majority side takes over; then heal
    cuts: list[tuple[str, float, float]] = []
    h = node_named(cluster, holder(cluster.live()))
    rest = [n for n in cluster.live() if n is not h]
    cluster.isolate(h.index)
    t_cut = timeline.mark(f"cut: {h.name} | rest")
    cluster.wait_view(cluster.parts([h.index], [n.index for n in rest]), BOUND, "cut off")
    new = holder(rest, other_than=h.name)
    since = time.time()
    wait_for(lambda: ran_since(path, since, new, 3), BOUND, "ticks on the majority side")
    cluster.heal()
    t_heal = timeline.mark("heal")
    cuts.append((h.name, t_cut, t_heal))
    settled()
    holder(cluster.live())
    timeline.mark("healed, ticking")

    # -- a 1|2 cut isolating a node that does not hold the scheduler; then heal
    h = node_named(cluster, holder(cluster.live()))
    other = next(n for n in cluster.live() if n is not h)
    cluster.isolate(other.index)
    t_cut = timeline.mark(f"cut: {other.name} (not the holder) | rest")
    rest_idx = [n.index for n in cluster.live() if n is not other]
    cluster.wait_view(cluster.parts([other.index], rest_idx), BOUND, "cut off")
    since = time.time()
    wait_for(lambda: ran_since(path, since, None, 3), BOUND, "ticks go on", 0.1, diagnose)
    cluster.heal()
    t_heal = timeline.mark("heal")
    cuts.append((other.name, t_cut, t_heal))
    settled()
    holder(cluster.live())
    timeline.mark("healed, ticking")

    # -- SIGSTOP of the holder for longer than its lease (term 3 s + margin 0.5 s)
    h = node_named(cluster, holder(cluster.live()))
    others = [n for n in cluster.live() if n is not h]
    cluster.freeze(h.index)
    frozen_at = timeline.mark(f"SIGSTOP {h.name}")
    try:
        new = holder(others, other_than=h.name)
        timeline.mark(f"holder {new} runs ticks")
        time.sleep(max(0.0, frozen_at + 6.5 - time.time()))  # a pause, not a condition
    finally:
        cluster.thaw(h.index)
    timeline.mark(f"SIGCONT {h.name}")
    settled()
    wait_for(
        lambda: one_holder(cluster.live()) == new,
        BOUND,
        f"the resumed {h.name} sees {new} as the holder",
        0.2,
        diagnose,
    )
    paused = h.name

    # -- the end: a few more ticks, then every tick since the first run is accounted for
    end = timeline.mark("last phase done")
    wait_for(lambda: ran_since(path, end, None, 3), BOUND, "ticks go on at the end")

    def ticks_seen() -> tuple[datetime, datetime]:
        ticks = [r.tick for r in runs(path) if r.tick is not None]
        return min(ticks), max(ticks)

    wait_for(lambda: ticks_seen()[1] - ticks_seen()[0] >= 62 * SECOND, 40, "62 ticks")
    first, last = ticks_seen()

    def all_accounted() -> bool:
        return not any(f.problem() for f in fates(path, workdir, first, last).values())

    # an interrupted run is reported a few seconds after the holder finds it gone
    with contextlib.suppress(AssertionError):  # the assertions below print the table
        wait_for(all_accounted, 40, "every tick accounted for", 0.5)
    timeline.mark("checked")
    table = fates(path, workdir, first, last)
    report = (
        f"{errors(cluster)}\ntimeline:\n{timeline}\n"
        f"ticks {first.isoformat()} .. {last.isoformat()} ({len(table)})\n"
        f"{fate_table(table, timeline, only_bad=True)}"
    )
    print(report)
    print(fate_table(table, timeline, only_bad=False))

    # (a) no tick started twice
    twice = {t: f.starts for t, f in table.items() if len(f.starts) > 1}
    assert not twice, f"ticks started more than once: {twice}{report}"
    # (b) each tick ran, or was reported interrupted, missed or skipped: exactly one
    bad = {t: f.problem() for t, f in table.items() if f.problem()}
    assert not bad, f"{len(bad)} ticks not accounted for exactly once:{report}"
    assert len(table) >= 60, f"only {len(table)} ticks{report}"
    outcomes = Counter(
        "ran" if f.ran else "interrupted" if f.interrupted else "missed" if f.missed else "skip"
        for f in table.values()
    )
    assert outcomes["interrupted"] >= 1, f"the mid-run kill left no interrupted run{report}"
    # (c) the minority side starts nothing during a cut (after the cut's first second)
    lines = task_lines(path)
    for cut_off, t_cut, t_heal in cuts:
        minority = [
            r
            for r in lines
            if r.kind == "start" and r.node == cut_off and t_cut + 1.0 < r.start < t_heal
        ]
        assert not minority, f"{cut_off} started runs while cut off: {minority}{report}"
    # (d) the paused old holder, resumed, starts no run of a tick after it was paused
    late = [
        r
        for r in lines
        if r.kind == "start"
        and r.node == paused
        and r.tick is not None
        and r.tick.timestamp() > frozen_at + 1.0
    ]
    assert not late, f"the resumed old holder {paused} started runs: {late}{report}"


def test_run_strategy_all_runs_each_tick_once_on_every_node(cluster: Cluster) -> None:
    """run_strategy="all": each tick runs exactly once on each node, in that node's lane."""
    path = cluster.workdir / "task"
    boot(cluster, [job_spec(path, run_strategy="all")])
    everyone = {name_of(i) for i in EVERYONE}

    def full_ticks() -> list[datetime]:
        by_tick: dict[datetime, set[str]] = {}
        for r in runs(path):
            if r.tick is not None:
                by_tick.setdefault(r.tick, set()).add(r.node)
        return sorted(t for t, nodes in by_tick.items() if nodes == everyone)

    wait_for(
        lambda: len(full_ticks()) >= 7,
        60,
        "ticks run on all three nodes",
        0.2,
        diagnose=lambda: sched_logs(cluster),
    )
    rows = runs(path)
    assert all(r.tick is not None for r in rows), f"the pool set no run context: {rows[:3]}"
    ticks = full_ticks()
    window = seconds(ticks[1], ticks[-2])  # the first full tick may follow the nodes' join
    assert len(window) >= 5
    for tick in window:
        here = [r for r in rows if r.tick == tick]
        assert Counter(r.node for r in here) == dict.fromkeys(everyone, 1), (tick, here)
        assert all(r.lane == r.node for r in here), here
        assert Counter(s.node for s in starts(path) if s.tick == tick) == dict.fromkeys(
            everyone, 1
        ), tick


def test_run_strategy_random_spreads_runs_and_runs_each_tick_once(cluster: Cluster) -> None:
    """run_strategy="random": each tick runs exactly once, on more than one node overall
    (12 runs all on one of 3 nodes: p = 3 * 3**-12, about 6 in a million)."""
    path = cluster.workdir / "task"
    boot(cluster, [job_spec(path, run_strategy="random")])
    wait_for(
        lambda: len(runs(path)) >= 12,
        60,
        "12 runs",
        0.2,
        diagnose=lambda: sched_logs(cluster),
    )
    rows = runs(path)
    ticks = sorted(r.tick for r in rows if r.tick is not None)
    assert len(ticks) == len(rows), f"the pool set no run context: {rows[:3]}"
    count = Counter(ticks)
    assert all(v == 1 for v in count.values()), [t for t, v in count.items() if v > 1]
    assert Counter(s.tick for s in starts(path)) == count  # no start without its run
    window = seconds(ticks[0], ticks[-1])
    assert set(window) == set(count), sorted(set(window) - set(count))  # none skipped
    nodes = Counter(r.node for r in rows)
    assert len(nodes) >= 2, f"every run on one node: {nodes}"
    assert all(r.lane is None for r in rows), rows


def test_overlap_false_never_runs_two_at_once_and_reports_skipped_ticks(cluster: Cluster) -> None:
    """overlap=False, random nodes, a 2.5 s task every second: no two runs overlap in time
    (on any nodes), and the ticks that came while a run was running are run_skipped."""
    path = cluster.workdir / "task"
    boot(cluster, [job_spec(path, 2.5, run_strategy="random", overlap=False)])
    workdir = cluster.workdir
    wait_for(
        lambda: len(runs(path)) >= 5,
        60,
        "5 runs of 2.5 s",
        0.2,
        diagnose=lambda: sched_logs(cluster),
    )
    rows = sorted(runs(path), key=lambda r: r.start)
    for a, b in itertools.pairwise(rows):
        assert a.end is not None and a.end <= b.start, f"runs overlap: {a} and {b}"
    running = [s for s in starts(path) if s.tick not in {r.tick for r in rows}]
    assert len(running) <= 1, f"runs in progress at once: {running}"
    assert not running or running[0].start >= max(r.end or 0.0 for r in rows), running
    first, last = rows[0].tick, rows[-1].tick
    assert first is not None and last is not None
    told = [_iso(e["tick"]) for e in events(workdir, ["run_skipped"])]
    skipped = [t for t in told if t is not None and first <= t <= last]
    ran = [r.tick for r in rows if r.tick is not None]
    assert len(ran) == len(rows), f"the pool set no run context: {rows[:3]}"
    assert skipped, "no run_skipped event"
    assert not set(skipped) & set(ran), sorted(set(skipped) & set(ran))
    # each tick from the first run to the last either ran or was reported skipped, once
    assert Counter(skipped + ran) == Counter(seconds(first, last)), (
        f"ran: {[(r.tick, r.node) for r in rows]}\nskipped: {skipped}"
    )


def test_availability_runs_on_both_sides_of_a_cut_and_once_after_heal(cluster: Cluster) -> None:
    """policy="availability" (documented): during a cut isolating the holder each side runs
    the job (a tick may run on both sides, once per side); after heal one node runs it."""
    path = cluster.workdir / "task"
    # node 1 first, alone: it holds the scheduler, so after the heal the default
    # resolver (the smaller-named node) keeps the old holder, not the one elected
    # during the cut, and that old holder has to go on with the other side's ledger
    h = boot(cluster, [job_spec(path)], policy="availability", indices=[1])[0]
    wait_for(lambda: one_holder([h]) == h.name, BOUND, "node 1 holds the scheduler", 0.1)
    wait_for(lambda: ran_since(path, 0.0, h.name), BOUND, "node 1 runs ticks")
    cluster.set_records(EVERYONE)
    nodes = [h, *(cluster.start(i, extra=extra(cluster, i), wait=False) for i in (2, 3))]
    for n in nodes[1:]:
        n.wait_ready()
    cluster.wait_view(cluster.parts(EVERYONE), BOUND, "nodes 2 and 3 join")
    for n in nodes[1:]:
        listen(cluster, n)
    assert wait_for(lambda: one_holder(nodes), BOUND, "one holder everywhere", 0.1) == h.name
    joined = time.time()
    wait_for(lambda: ran_since(path, joined, h.name), BOUND, "node 1 runs ticks")
    rest = [n for n in nodes if n is not h]
    cluster.isolate(h.index)
    t_cut = time.time()
    cluster.wait_view(cluster.parts([h.index], [n.index for n in rest]), BOUND, "cut off")

    def both_sides() -> bool:
        late = [r for r in runs(path) if r.start > t_cut + 1.0]
        return h.name in {r.node for r in late} and bool({r.node for r in late} - {h.name})

    wait_for(both_sides, 30, "each side runs the job (availability)", 0.2,
             diagnose=lambda: sched_logs(cluster))  # fmt: skip
    t_heal = time.time()
    cluster.heal()
    during = Counter((r.tick, r.node) for r in runs(path) if t_cut < r.start < t_heal)
    assert all(v == 1 for v in during.values()), f"a side ran a tick twice: {during}"
    cluster.wait_view(cluster.parts(EVERYONE), BOUND, "the cluster heals")
    wait_for(lambda: one_holder(nodes), BOUND, "one holder after heal", 0.1)
    t0 = time.time() + 1.5
    wait_for(lambda: ran_since(path, t0, None, 5), BOUND, "ticks go on after heal",
             diagnose=lambda: sched_logs(cluster))  # fmt: skip
    kept = one_holder(nodes)
    assert kept == h.name, (
        f"the default resolver keeps the smaller-named node, not {kept}{errors(cluster)}"
    )
    late = [r for r in runs(path) if r.start > t0]
    assert {r.node for r in late} == {kept}, f"{late}{errors(cluster)}"
    count = Counter(r.tick for r in late)
    assert all(v == 1 for v in count.values()), count
    ticks = sorted(t for t in count if t is not None)
    assert ticks == seconds(ticks[0], ticks[-1]), ticks  # and none is left out
