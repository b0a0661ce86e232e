"""Singleton and the seed's recipe in network namespaces: real DNS discovery, real cuts.

Every node runs ``dist_node.py --singleton POLICY FILE`` (a Singleton ``single`` whose
child, a ``Marker``, appends ``standby``/``activate``/``tick``/``deactivate``/``exit``
lines with a wall-clock time, its node and os pid to FILE) or ``--seed FILE`` (the tree of
``examples/seed_recipe.py``: one line per second from the one scheduler). The assertions
read those files: which node was active, when, and how many times.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _cluster import Cluster, NetnsNode, hold, name_of, wait_for

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


def start_all(cluster: Cluster, indices: list[int], extra: tuple[str, ...]) -> list[NetnsNode]:
    """Start the nodes at the same moment (all launched, then each waited for)."""
    cluster.set_records(indices)
    nodes = [cluster.start(i, extra=extra, wait=False) for i in indices]
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
    nodes = start_all(cluster, [1, 2, 3], ("--seed", str(path)))
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

    # bring the victim back: it links to the running one, starts none
    cluster.start(victim.index, extra=("--seed", str(path)))
    nodes = [cluster.node(i) for i in (1, 2, 3)]
    cluster.wait_view(cluster.parts([1, 2, 3]), BOUND, "the victim rejoins")
    wait_for(lambda: one_holder(nodes) == second, BOUND, "the returning node adopts it")

    # 2. cut the holder off: both sides run one (availability), 3. heal: one is kept
    h = next(n.index for n in nodes if n.name == second)
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
