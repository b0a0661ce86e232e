"""Singleton and the seed's recipe in network namespaces: real DNS discovery, real cuts.

Every node runs ``tests.harness.node_driver --singleton POLICY FILE`` (a Singleton ``single`` whose
child, a ``Marker``, appends ``standby``/``activate``/``tick``/``deactivate``/``exit``
lines with a wall-clock time, its node and os pid to FILE) or ``--seed FILE`` (the tree of
``examples/seed_recipe.py``: one line per second from the one scheduler). The assertions
read those files: which node was active, when, and how many times.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from tests.harness.netns_cluster import Cluster, NetnsNode, name_of
from tests.harness.polling import hold, wait_for

pytestmark = pytest.mark.netns

BOUND = 20.0


def marks(path: Path) -> list[list[str]]:
    try:
        return [line.split() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def active_intervals(rows: list[list[str]]) -> dict[str, list[float]]:
    """os pid -> [activate time, last tick or deactivate/exit time]."""
    spans: dict[str, list[float]] = {}
    for kind, t, _node, pid, *_ in rows:
        if kind == "activate":
            spans[pid] = [float(t), float(t)]
        elif kind in ("tick", "deactivate", "exit") and pid in spans:
            spans[pid][1] = max(spans[pid][1], float(t))
    return spans


def start_all(
    cluster: Cluster,
    indices: list[int],
    extra: tuple[str, ...],
    start_tolerates: tuple[str, ...] = (),
) -> list[NetnsNode]:
    """Start the nodes at the same moment (all launched, then each waited for)."""
    cluster.set_records(indices)
    nodes = [
        cluster.start(i, extra=extra, wait=False, start_tolerates=start_tolerates) for i in indices
    ]
    for n in nodes:
        n.wait_ready()
    cluster.wait_view(cluster.parts(indices), BOUND, "the nodes find each other by DnsA")
    return nodes


def holder_on(nodes: list[NetnsNode], name: str = "single") -> dict[str, str | None]:
    views = {}
    for n in nodes:
        pid = n.cmd(op="whereis", name=name)
        views[n.name] = pid[0] if pid else None
    return views


def test_five_nodes_booted_at_once_activate_exactly_one(cluster: Cluster) -> None:
    path = cluster.workdir / "marks"
    nodes = start_all(cluster, [1, 2, 3, 4, 5], ("--singleton", "availability", str(path)))
    wait_for(
        lambda: (
            len({v for v in holder_on(nodes).values()}) == 1
            and None not in holder_on(nodes).values()
        ),
        BOUND,
        "every node sees one holder",
    )
    # the name is registered before the child hears Activate: wait for its line
    wait_for(lambda: any(r[0] == "activate" for r in marks(path)), BOUND, "the holder activates")
    # hold it: for 3 s, nobody else activates
    hold(
        lambda: len([r for r in marks(path) if r[0] == "activate"]) == 1,
        3.0,
        "exactly one activation, ever",
        diagnose=lambda: str(marks(path)),
    )
    standbys = [r for r in marks(path) if r[0] == "standby"]
    assert len(standbys) == 5, standbys
    for n in nodes:
        counts = n.cmd(op="kernel_children")
        assert all(v == 0 for v in counts.values()), f"{n.name} restarted something: {counts}"


def test_sigterm_of_the_holder_hands_over_before_it_exits(cluster: Cluster) -> None:
    path = cluster.workdir / "marks"
    nodes = start_all(cluster, [1, 2, 3], ("--singleton", "availability", str(path)))
    wait_for(lambda: None not in holder_on(nodes).values(), BOUND, "a holder is elected")
    wait_for(lambda: any(r[0] == "activate" for r in marks(path)), BOUND, "the holder activates")
    holder_name = next(iter(holder_on(nodes).values()))
    holder = next(n for n in nodes if n.name == holder_name)
    old = [r for r in marks(path) if r[0] == "activate"][-1]
    holder.term()
    holder.proc.wait(30)
    exited_at = time.time()
    rows = marks(path)
    new = [r for r in rows if r[0] == "activate" and r[3] != old[3]]
    assert new, f"no standby took over: {rows[-6:]}"
    old_exit = [r for r in rows if r[0] == "exit" and r[3] == old[3]]
    assert old_exit, f"the old child did not log its exit: {rows[-6:]}"
    assert float(new[0][1]) < float(old_exit[0][1]) < exited_at, (rows, holder.log()[-3000:])
    handover = [r for r in rows if r[0] == "deactivate" and r[3] == old[3]]
    assert handover and handover[0][4] == "handover", rows[-6:]
    survivors = [n for n in nodes if n is not holder]
    wait_for(
        lambda: set(holder_on(survivors).values()) == {new[0][2]},
        BOUND,
        "the survivors agree on the new holder",
    )


def test_availability_runs_both_sides_during_a_cut_and_one_after_heal(cluster: Cluster) -> None:
    path = cluster.workdir / "marks"
    nodes = start_all(cluster, [1, 2, 3], ("--singleton", "availability", str(path)))
    wait_for(lambda: None not in holder_on(nodes).values(), BOUND, "a holder is elected")
    wait_for(lambda: any(r[0] == "activate" for r in marks(path)), BOUND, "the holder activates")
    holder_name = next(iter(holder_on(nodes).values()))
    h = next(n.index for n in nodes if n.name == holder_name)
    rest = [i for i in (1, 2, 3) if i != h]
    cluster.isolate(h)
    cluster.wait_view(cluster.parts([h], rest), BOUND, "the holder is cut off")

    def both_active() -> bool:
        spans = active_intervals(marks(path))
        now = time.time()
        return sum(1 for s in spans.values() if now - s[1] < 1.0) == 2

    wait_for(both_active, BOUND, "each side runs an instance (availability)")
    cluster.heal()
    cluster.wait_view(cluster.parts([1, 2, 3]), BOUND, "the cluster heals")
    wait_for(
        lambda: len(set(holder_on(nodes).values())) == 1 and None not in holder_on(nodes).values(),
        BOUND,
        "one holder everywhere after heal",
    )
    winner = next(iter(holder_on(nodes).values()))
    wait_for(
        lambda: any(r[0] == "deactivate" and r[4] == "conflict" for r in marks(path)),
        BOUND,
        "the loser went back to standby",
    )
    # from now on only the winner ticks
    t0 = time.time() + 0.5
    wait_for(lambda: any(float(r[1]) > t0 + 1 for r in marks(path)), BOUND, "ticks go on")
    late = {r[2] for r in marks(path) if r[0] == "tick" and float(r[1]) > t0}
    assert late == {winner}, late
    for n in nodes:
        counts = n.cmd(op="kernel_children")
        assert all(v == 0 for v in counts.values()), f"{n.name} restarted something: {counts}"


def ticks(path: Path, since: float) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        t, _, _, node, *_ = line.split()
        if float(t) > since:
            out[node] = out.get(node, 0) + 1
    return out


def test_seed_recipe_through_a_kill_a_partition_and_a_heal(cluster: Cluster) -> None:
    path = cluster.workdir / "ticks"
    # The three boot at once, each before its registry has merged with its peers': the
    # recipe's race described below (at the victim's return) can happen here too - a
    # node links to a SchedulerSupervisor that a resolver has just stopped (exit noproc,
    # restarted by its supervisor), or two copies meet between the recipe's
    # register_name and its re_register_name, when the name still has the default
    # resolver (random_exit_name: the copy on the larger-named node and its Ticker end
    # "killed"; Elixir's recipe has the same window between start_link's {:global, _}
    # and init's re_register_name). Each seen once in CI runs of the suite (loaded box).
    recipe_race = (
        "child 'SchedulerSupervisor' exited",
        "(SchedulerSupervisor) exited: 'killed'",
        "(Ticker) exited: 'killed'",
    )
    nodes = start_all(cluster, [1, 2, 3], ("--seed", str(path)), start_tolerates=recipe_race)
    name = "SchedulerSupervisor"

    def one_holder(among: list[NetnsNode]) -> str | None:
        views = set(holder_on(among, name).values())
        return views.pop() if len(views) == 1 else None

    wait_for(lambda: one_holder(nodes), BOUND, "one SchedulerSupervisor everywhere")
    first = one_holder(nodes)
    t = time.time()
    wait_for(lambda: sum(ticks(path, t).values()) >= 2, BOUND, "the scheduler ticks")
    assert set(ticks(path, t)) == {first}

    # 1. kill the holder's node: another node starts the one scheduler
    victim = next(n for n in nodes if n.name == first)
    victim.kill9()
    alive = [n for n in nodes if n is not victim]
    wait_for(lambda: one_holder(alive) not in (None, first), BOUND, "a survivor takes over")
    second = one_holder(alive)
    t = time.time()
    wait_for(lambda: sum(ticks(path, t).values()) >= 2, BOUND, "the new scheduler ticks")
    assert set(ticks(path, t)) == {second}

    # bring the victim back. The recipe starts its SchedulerSupervisor before the node's
    # registry has merged with its peers' (whereis_name says :undefined), so the returning
    # node may register a second one, and the resolver - which keeps the pid it is handed
    # first, the larger-named node's - may stop the running one instead; or its link to the
    # running one can find that pid just stopped (exit noproc, restarted by its supervisor).
    # What the recipe does guarantee: one scheduler in the end, the only one ticking.
    # (otpkit.Singleton elects nothing before discovery has settled, so it keeps the holder.)
    cluster.start(
        victim.index,
        extra=("--seed", str(path)),
        start_tolerates=recipe_race,
    )
    nodes = [cluster.node(i) for i in (1, 2, 3)]
    cluster.wait_view(cluster.parts([1, 2, 3]), BOUND, "the victim rejoins")
    wait_for(lambda: one_holder(nodes), BOUND, "one SchedulerSupervisor after the return")
    third = one_holder(nodes)
    t = time.time() + 1.5
    wait_for(lambda: sum(ticks(path, t).values()) >= 2, BOUND, "ticks after the return")
    assert set(ticks(path, t)) == {third}, ticks(path, t)
    assert one_holder(nodes) == third

    # 2. cut the holder off: both sides run one (availability), 3. heal: one is kept
    h = next(n.index for n in nodes if n.name == third)
    rest = [i for i in (1, 2, 3) if i != h]
    cluster.isolate(h)
    cluster.wait_view(cluster.parts([h], rest), BOUND, "the holder is cut off")
    t = time.time()
    wait_for(lambda: len(ticks(path, t)) == 2, BOUND, "each side runs a scheduler")
    cluster.heal()
    cluster.wait_view(cluster.parts([1, 2, 3]), BOUND, "the cluster heals")
    wait_for(lambda: one_holder(nodes), BOUND, "one SchedulerSupervisor after heal")
    kept = one_holder(nodes)
    t = time.time() + 1.5
    wait_for(lambda: sum(ticks(path, t).values()) >= 3, BOUND, "ticks after heal")
    assert set(ticks(path, t)) == {kept}, ticks(path, t)
    assert name_of(h) in {n.name for n in nodes}


def accepted_spans(rows: list[list[str]]) -> list[tuple[float, float, str, str]]:
    """(first, last, pid, epoch) of the fenced ticks each instance had accepted."""
    spans: dict[tuple[str, str], list[float]] = {}
    for kind, t, _node, pid, *rest in rows:
        if kind == "tick":
            span = spans.setdefault((pid, rest[0]), [float(t), float(t)])
            span[1] = max(span[1], float(t))
    return sorted((a, b, pid, epoch) for (pid, epoch), (a, b) in spans.items())


def assert_no_overlap(rows: list[list[str]]) -> None:
    spans = accepted_spans(rows)
    for (_a1, b1, pid1, e1), (a2, _b2, pid2, e2) in itertools.pairwise(spans):
        assert b1 < a2, (
            f"{pid1} (epoch {e1}) still acted at {b1} after {pid2} (epoch {e2}) began at {a2}"
        )
        assert int(e2) > int(e1), spans


def test_majority_never_runs_two_instances_through_cut_kill_and_pause(cluster: Cluster) -> None:
    path = cluster.workdir / "marks"
    nodes = start_all(cluster, [1, 2, 3], ("--singleton", "majority", str(path)))

    def holder_pid() -> tuple[str, str] | None:
        spans = accepted_spans(marks(path))
        return (spans[-1][2], spans[-1][3]) if spans else None

    def active_node() -> NetnsNode:
        last = [r for r in marks(path) if r[0] == "activate"][-1]
        return next(n for n in cluster.live() if n.name == last[2])

    wait_for(holder_pid, 40, "the majority elects a holder (membership forms first)")

    def new_holder_after(old: tuple[str, str] | None) -> object:
        now = holder_pid()
        return now if now is not None and now != old else None

    # 1. a 1|2 cut isolating the holder: the majority side takes over, the old one stops
    first = holder_pid()
    h = active_node()
    rest = [n.index for n in nodes if n is not h]
    cluster.isolate(h.index)
    wait_for(lambda: new_holder_after(first), BOUND, "the majority side takes over")
    cluster.heal()
    cluster.wait_view(cluster.parts([1, 2, 3]), BOUND, "the cluster heals")
    assert_no_overlap(marks(path))

    # 2. SIGKILL of the holder's node
    second = holder_pid()
    h = active_node()
    version = max(n.cmd(op="quorum_members")[0] for n in cluster.live())
    h.kill9()
    wait_for(lambda: new_holder_after(second), BOUND, "a standby takes over after SIGKILL")
    cluster.start(h.index, extra=("--singleton", "majority", str(path)))
    cluster.wait_view(cluster.parts([1, 2, 3]), BOUND, "the killed node rejoins")
    # its new incarnation replaces the old one among the members, one change at a time
    # (removal, then addition: two versions on)
    everyone = sorted(name_of(i) for i in (1, 2, 3))
    wait_for(
        lambda: all(n.cmd(op="quorum_members") == [version + 2, everyone] for n in cluster.live()),
        BOUND,
        "the three are members again",
    )
    assert_no_overlap(marks(path))

    # 3. SIGSTOP of the holder for longer than its lease, then SIGCONT
    third = holder_pid()
    assert third is not None
    h = active_node()
    cluster.freeze(h.index)
    try:
        wait_for(
            lambda: new_holder_after(third),
            BOUND,
            "a standby takes over from the paused one",
            diagnose=lambda: "\n".join(
                line
                for n in cluster.live()
                for line in n.log().splitlines()[-400:]
                if "quorum" in line or "registry" in line or "NodeDown" in line or "closed" in line
            )[-6000:],
        )
    finally:
        cluster.thaw(h.index)
    resumed = time.time()
    wait_for(
        lambda: any(
            r[0] in ("refused", "deactivate") and r[3] == third[0] and float(r[1]) >= resumed - 0.01
            for r in marks(path)
        ),
        BOUND,
        "the resumed old holder stands down",
    )
    rows = marks(path)
    refused = [r for r in rows if r[0] == "refused" and r[3] == third[0]]
    late = [r for r in rows if r[0] == "tick" and r[3] == third[0] and float(r[1]) >= resumed]
    assert not late, f"the paused holder's effects after it resumed were accepted: {late}"
    assert refused, "the paused holder tried no fenced effect after it resumed"
    assert_no_overlap(rows)
    assert rest  # the cut's majority side was not empty
