"""OTP ``global_SUITE``'s partition scenarios, ported: the global registry across real
network partitions (nftables cuts between network namespaces, see
``tests/harness/netns_cluster.py``).

Each test builds its partitions, registers names on each side, heals, and checks what a
user would: which pid holds each name on EVERY node, which holders still live, and how
many times a resolver ran (the resolvers in tests/harness/clash_resolvers.py append one
line per call to the file named by ``$OTPKIT_RESOLVER_LOG``).

The rule under test (ARCHITECTURE.md, *The registry*): when partitions meet, the
smaller-named node of the first pair to merge calls the resolver stored with its own
side's registration, as ``resolve(name, other_pid, own_pid)`` on ``own_pid``'s node, once
per clash. In these tests side A holds the smallest names, so A's resolvers decide.

Every wait is a bound with a deadline (a loaded 2-core machine in mind).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.harness.netns_cluster import Cluster, cluster_in, name_of
from tests.harness.polling import hold, wait_for

pytestmark = pytest.mark.netns

BOUND = 15.0  # a connection change seen, a name gone
MERGE = 30.0  # partitions healed and their tables merged on every node
LOG_ENV = "OTPKIT_RESOLVER_LOG"  # clash_resolvers.LOG_ENV
RESOLVERS = "tests.harness.clash_resolvers"  # the nodes import its resolvers by name

Pidf = list[Any]  # a pid as [node, creation, id, serial]


# --------------------------------------------------------------------------- fixtures


def start_all(c: Cluster, indices: Iterable[int], dns: bool = True) -> None:
    """Start nodes one after the other, from this thread: a node is started with
    PR_SET_PDEATHSIG, which fires when the *thread* that forked it ends."""
    for i in indices:
        c.start(i, dns=dns)


def make_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hosts: int) -> Any:
    monkeypatch.setenv(LOG_ENV, str(tmp_path / "resolver-calls.log"))
    return cluster_in(tmp_path, hosts=hosts)


@pytest.fixture
def quad(tmp_path, monkeypatch):
    """Four nodes found through DNS, fully meshed, registry synced."""
    with make_cluster(tmp_path, monkeypatch, 4) as c:
        c.set_records([1, 2, 3, 4])
        start_all(c, [1, 2, 3, 4])
        c.wait_view(c.parts([1, 2, 3, 4]), BOUND, "four nodes meshed")
        for n in c.live():
            n.cmd(op="gsync", t=30, timeout=40)
        yield c


# --------------------------------------------------------------------------- helpers


def calls(c: Cluster) -> list[dict[str, Any]]:
    path = c.workdir / "resolver-calls.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def calls_for(c: Cluster, name: str) -> list[dict[str, Any]]:
    return [x for x in calls(c) if x["name"] == name]


def split(c: Cluster, *groups: list[int]) -> None:
    """Cut every link between the groups; wait until every node sees exactly its group."""
    for g, group in enumerate(groups):
        for other in groups[g + 1 :]:
            for a in group:
                for b in other:
                    c.cut(a, b)
    c.wait_view(c.parts(*groups), BOUND, f"partitions {groups}")
    for n in c.live():  # the registry has seen the node-downs too
        wait_for(
            lambda n=n: set(n.cmd(op="ginfo")["up"]) == set(n.nodes()),
            BOUND,
            f"{n.name}'s registry sees its partition",
            diagnose=c.diagnostics,
        )


def register(c: Cluster, i: int, names: list[str], resolve: str | None = None) -> list[Pidf]:
    """On node ``i``: a new holder process per name, registered (from node i) with
    ``resolve``; their pids."""
    held = c.node(i).cmd(op="hold_register", names=names, resolve=resolve)
    assert [ok for _, _, ok in held] == [True] * len(names), held
    return [pid for _, pid, _ in held]


def tables(c: Cluster, among: Iterable[int] | None = None) -> dict[str, dict[str, Any]]:
    nodes = c.live() if among is None else [c.node(i) for i in among]
    return {n.name: n.cmd(op="table") for n in nodes}


def wait_tables(
    c: Cluster, want: dict[str, Any], what: str, among: Iterable[int] | None = None
) -> None:
    """Every node (of ``among``) has exactly the table ``want``: {name: pid}."""
    wait_for(
        lambda: all(t == want for t in tables(c, among).values()),
        MERGE,
        f"{what}: every node's table is {want}",
        interval=0.1,
        diagnose=lambda: f"tables: {tables(c, among)}\n{c.diagnostics()}",
    )


def heal_and_merge(c: Cluster, want: dict[str, Any], among: list[int] | None = None) -> None:
    c.heal()
    indices = among or sorted(i for i, n in c.nodes.items() if n.running)
    c.wait_view(c.parts(indices), MERGE, "the healed mesh")
    for i in indices:
        c.node(i).cmd(op="gsync", t=30, timeout=40)
    wait_tables(c, want, "after the heal", indices)
    # and it stays so (no late flip from a merge still under way)
    hold(
        lambda: all(t == want for t in tables(c, indices).values()),
        1.0,
        "the merged tables stay put",
        interval=0.2,
    )


def alive(c: Cluster, pids: list[Pidf], via: int = 1) -> list[bool]:
    result: list[bool] = c.node(via).cmd(op="alive_many", pids=pids)
    return result


def seen(c: Cluster, pid: Pidf) -> list[Any]:
    node = next(n for n in c.live() if n.name == pid[0])
    result: list[Any] = node.cmd(op="seen", pid=pid)
    return result


def one_call(c: Cluster, name: str, resolver: str, own: Pidf, other: Pidf) -> None:
    """``name``'s clash was resolved exactly once: by side A's ``resolver`` on own's node,
    with (other, own) as the arguments."""
    got = calls_for(c, name)
    assert len(got) == 1, f"{name}: resolver calls {got}"
    (call,) = got
    assert call["resolver"] == resolver, call
    assert call["own"] == own and call["other"] == other, call
    assert call["node"] == own[0], call


# --------------------------------------------------------------------------- tests


def test_basic_name_partition(quad):
    """2x2 partitions, the same two names registered on both sides (default resolver):
    one winner each (the pid on the smaller node name; the loser killed), the same view
    on every node. A name known on one side only is copied; one whose holder exits
    while the partitions connect is gone everywhere."""
    c = quad
    split(c, [1, 2], [3, 4])
    (a_x,) = register(c, 1, ["bnp.x"])
    (a_y,) = register(c, 2, ["bnp.y"])
    (b_x,) = register(c, 3, ["bnp.x"])
    (b_y, b_only) = register(c, 4, ["bnp.y", "bnp.only_b"])
    (b_dies,) = register(c, 3, ["bnp.dies"])
    for i in (1, 2):
        assert c.node(i).cmd(op="table") == {"bnp.x": a_x, "bnp.y": a_y}
    for i in (3, 4):
        assert c.node(i).cmd(op="table") == {
            "bnp.x": b_x,
            "bnp.y": b_y,
            "bnp.only_b": b_only,
            "bnp.dies": b_dies,
        }
    c.heal()
    c.node(3).cmd(op="exit", pid=b_dies, reason="kill")  # exits while they connect
    heal_and_merge(c, {"bnp.x": a_x, "bnp.y": a_y, "bnp.only_b": b_only})
    assert alive(c, [a_x, a_y, b_only]) == [True, True, True]
    assert alive(c, [b_x, b_y, b_dies]) == [False, False, False]


def test_advanced_partition(quad):
    """Side A's stored resolver decides, once per clash, on A's pid's node:
    random_exit_name keeps the smaller node's pid and kills the other;
    notify_all_name unregisters and tells both; random_notify_name keeps one and tells
    the other; a custom resolver is honoured. Side B registered every name with
    resolve_second, which must never run."""
    c = quad
    split(c, [1, 2], [3, 4])
    b_resolver = f"{RESOLVERS}:resolve_second"
    a = {
        "adv.default": register(c, 2, ["adv.default"])[0],  # the built-in default
        "adv.exit": register(c, 2, ["adv.exit"], f"{RESOLVERS}:counted_random_exit")[0],
        "adv.notify_all": register(c, 1, ["adv.notify_all"], f"{RESOLVERS}:counted_notify_all")[0],
        "adv.notify": register(c, 2, ["adv.notify"], f"{RESOLVERS}:counted_random_notify")[0],
        "adv.custom": register(c, 1, ["adv.custom"], f"{RESOLVERS}:resolve_first")[0],
    }
    b = {
        "adv.default": register(c, 3, ["adv.default"], b_resolver)[0],
        "adv.exit": register(c, 4, ["adv.exit"], b_resolver)[0],
        "adv.notify_all": register(c, 3, ["adv.notify_all"], b_resolver)[0],
        "adv.notify": register(c, 4, ["adv.notify"], b_resolver)[0],
        "adv.custom": register(c, 4, ["adv.custom"], b_resolver)[0],
    }
    heal_and_merge(
        c,
        {
            "adv.default": a["adv.default"],
            "adv.exit": a["adv.exit"],
            "adv.notify": a["adv.notify"],
            "adv.custom": b["adv.custom"],
        },
    )
    # the losers of the exit resolvers were killed; everyone else lives
    assert alive(c, [b["adv.default"], b["adv.exit"]]) == [False, False]
    keep = [a[n] for n in a] + [b[n] for n in ("adv.notify_all", "adv.notify", "adv.custom")]
    assert alive(c, keep) == [True] * len(keep)

    one_call(c, "adv.exit", "counted_random_exit", a["adv.exit"], b["adv.exit"])
    one_call(c, "adv.custom", "resolve_first", a["adv.custom"], b["adv.custom"])
    one_call(c, "adv.notify_all", "counted_notify_all", a["adv.notify_all"], b["adv.notify_all"])
    one_call(c, "adv.notify", "counted_random_notify", a["adv.notify"], b["adv.notify"])
    assert calls_for(c, "adv.default") == []  # the built-in logs nothing of ours
    assert not [x for x in calls(c) if x["resolver"] == "resolve_second"]

    pa, pb = a["adv.notify_all"], b["adv.notify_all"]
    wait_for(
        lambda: (
            seen(c, pa) == [["global_name_conflict", "adv.notify_all", pb]]
            and seen(c, pb) == [["global_name_conflict", "adv.notify_all", pa]]
        ),
        BOUND,
        "notify_all_name told both, once, naming the other",
        diagnose=lambda: f"{seen(c, pa)} / {seen(c, pb)}",
    )
    wait_for(
        lambda: seen(c, b["adv.notify"]) == [["global_name_conflict", "adv.notify"]],
        BOUND,
        "random_notify_name told the loser",
    )
    assert seen(c, a["adv.notify"]) == []  # the keeper is told nothing
    assert seen(c, a["adv.custom"]) == seen(c, b["adv.custom"]) == []


# (resolver, where A's pid lives, who keeps the name: "A", "B" or None)
SIMPLE = {
    "sr.first": ("resolve_first", 1, "B"),
    "sr.second": ("resolve_second", 2, "A"),
    "sr.bad": ("bad_resolver", 1, None),  # returns a non-pid: unregistered
    "sr.none": ("resolve_none", 2, None),
    "sr.raise": ("exit_resolver", 1, "B"),  # raises: the other side's pid keeps it
}


def test_simple_resolve(quad):
    """OTP ``simple_resolve``: what each answer of side A's resolver means, one clash
    per resolver in one merge. The resolvers only answer: every holder lives on."""
    c = quad
    split(c, [1, 2], [3, 4])
    a: dict[str, Pidf] = {}
    b: dict[str, Pidf] = {}
    for k, (name, (resolver, node, _)) in enumerate(SIMPLE.items()):
        a[name] = register(c, node, [name], f"{RESOLVERS}:{resolver}")[0]
        b[name] = register(c, 3 + k % 2, [name])[0]  # B's default would kill: never runs
    want = {}
    for name, (_, _, keeper) in SIMPLE.items():
        if keeper is not None:
            want[name] = a[name] if keeper == "A" else b[name]
    heal_and_merge(c, want)
    everyone = [*a.values(), *b.values()]
    assert alive(c, everyone) == [True] * len(everyone)
    for name, (resolver, _, _) in SIMPLE.items():
        one_call(c, name, resolver, a[name], b[name])


def test_resolver_halts_its_node(quad):
    """OTP ``simple_resolve2/3``: the resolver halts the node it runs on (the node of
    the resolving side's pid) before answering: the name ends on the surviving side's
    pid, on every node left."""
    c = quad
    split(c, [1, 2], [3, 4])
    (a_pid,) = register(c, 2, ["halt.x"], f"{RESOLVERS}:halt_second")
    (b_pid,) = register(c, 3, ["halt.x"])
    (a_other,) = register(c, 1, ["halt.kept"])  # unrelated names survive too
    # the resolver halts its node by SIGKILL to the node program's pid, named here
    targets = {n.name: n.proc.pid for n in c.live()}
    (c.workdir / "resolver-calls.log.halt.json").write_text(json.dumps(targets))
    c.heal()
    n2 = c.node(2)
    wait_for(lambda: not n2.running, MERGE, "node 2 halted in its resolver", diagnose=c.diagnostics)
    c.wait_view(c.parts([1, 3, 4]), MERGE, "the survivors meshed")
    for i in (1, 3, 4):
        c.node(i).cmd(op="gsync", t=30, timeout=40)
    wait_tables(c, {"halt.x": b_pid, "halt.kept": a_other}, "after the halt", [1, 3, 4])
    assert alive(c, [b_pid, a_other, a_pid], via=3) == [True, True, False]
    got = calls_for(c, "halt.x")
    assert len(got) == 1 and got[0]["own"] == a_pid and got[0]["other"] == b_pid, got


def test_name_die(quad):
    """OTP ``name_die`` (OTP-6341). While the nodes are split 1 2 | 3 4:
    * side A registers a pid of node 3 that B registered under the same name: the same
      pid on both sides is no clash - no resolver call when they meet;
    * side A registers a pid of node 4 under a name B does not know, and that process
      dies during the split: the name must be gone everywhere after the heal;
    * a name of a process that died on B during the split is not brought back by A."""
    c = quad
    (before,) = register(c, 3, ["nd.gone"], f"{RESOLVERS}:resolve_none")
    split(c, [1, 2], [3, 4])
    assert c.node(1).cmd(op="whereis", name="nd.gone") is None  # its node went down
    (same,) = register(c, 3, ["nd.same"], f"{RESOLVERS}:resolve_none")
    (outside,) = c.node(4).cmd(op="hold")
    a1 = c.node(1)
    assert a1.cmd(op="register", name="nd.same", pid=same, resolve=f"{RESOLVERS}:resolve_none")
    assert a1.cmd(
        op="register", name="nd.outside", pid=outside, resolve=f"{RESOLVERS}:resolve_none"
    )
    c.node(3).cmd(op="exit", pid=before, reason="kill")
    c.node(4).cmd(op="exit", pid=outside, reason="kill")
    wait_for(
        lambda: c.node(3).cmd(op="whereis", name="nd.gone") is None,
        BOUND,
        "B drops the name of its dead process",
    )
    heal_and_merge(c, {"nd.same": same})
    assert alive(c, [same, before, outside]) == [True, False, False]
    assert calls(c) == []


def test_leftover_name(quad):
    """OTP ``leftover_name`` (OTP-5563): a node goes down while the partitions merge;
    no node keeps a name of it."""
    c = quad
    split(c, [1, 2], [3, 4])
    (a_pid,) = register(c, 1, ["left.a"])
    (b_pid, b_gone) = register(c, 4, ["left.b", "left.b2"])
    c.heal()
    n1, n4 = c.node(1), c.node(4)
    wait_for(lambda: name_of(4) in n1.nodes(), MERGE, "node 1 reconnects to node 4")
    c.kill9(4)  # during (or just after) the merge
    c.wait_view(c.parts([1, 2, 3]), MERGE, "the survivors meshed")
    for i in (1, 2, 3):
        c.node(i).cmd(op="gsync", t=30, timeout=40)
    wait_tables(c, {"left.a": a_pid}, "no name of the dead node left", [1, 2, 3])
    hold(
        lambda: all(t == {"left.a": a_pid} for t in tables(c, [1, 2, 3]).values()),
        2.0,
        "no name of the dead node comes back",
        interval=0.2,
    )
    assert not n4.running and alive(c, [b_pid, b_gone]) == [False, False]


def _single_name_merge(c: Cluster, n: int, join: Callable[[], None]) -> None:
    """Every node registered ``single_name`` alone; ``join`` connects them. One winner
    (node 1's pid: random_exit_name keeps the smaller node name at every merge), every
    other holder killed, the same whereis everywhere, one resolver call per clash."""
    pids = {
        i: register(c, i, ["single_name"], f"{RESOLVERS}:counted_random_exit")[0] for i in c.nodes
    }
    assert len({tuple(p) for p in pids.values()}) == n
    join()
    indices = list(range(1, n + 1))
    c.wait_view(c.parts(indices), MERGE, "one mesh")
    for i in indices:
        c.node(i).cmd(op="gsync", t=30, timeout=40)
    wait_tables(c, {"single_name": pids[1]}, "one winner")
    wait_for(
        lambda: alive(c, list(pids.values())) == [True] + [False] * (n - 1),
        BOUND,
        "every other holder was killed",
        diagnose=lambda: f"alive: {alive(c, list(pids.values()))}\n{c.diagnostics()}",
    )
    got = calls_for(c, "single_name")
    # merging n partitions into one takes n - 1 merges, each with one clash
    assert len(got) == n - 1, got
    losers = sorted(
        tuple(x["other"]) if x["own"][0] < x["other"][0] else tuple(x["own"]) for x in got
    )
    assert losers == sorted(tuple(pids[i]) for i in indices[1:]), got


def test_ring(tmp_path, monkeypatch):
    """OTP ``ring``: five nodes cut off from one another, each registers ``single_name``,
    then every cut is lifted at once."""
    with make_cluster(tmp_path, monkeypatch, 5) as c:
        c.set_records([1, 2, 3, 4, 5])
        start_all(c, [1, 2, 3, 4, 5])
        c.wait_view(c.parts([1, 2, 3, 4, 5]), BOUND, "five nodes meshed")
        split(c, [1], [2], [3], [4], [5])
        _single_name_merge(c, 5, c.heal)


def test_line(tmp_path, monkeypatch):
    """OTP ``line``: five nodes that never met (no discovery), each registers
    ``single_name``; then each dials the next one, all at once (1-2, 2-3, 3-4, 4-5);
    connect-all makes one mesh of them."""
    with make_cluster(tmp_path, monkeypatch, 5) as c:
        start_all(c, [1, 2, 3, 4, 5], dns=False)
        for n in c.live():
            assert n.nodes() == []

        def join() -> None:
            errors: list[BaseException] = []

            def dial(i: int) -> None:
                try:
                    nxt = c.node(i + 1)
                    c.node(i).cmd(op="connect", name=nxt.name, host=nxt.ip, port=4370)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=dial, args=(i,)) for i in (1, 2, 3, 4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert not errors, errors

        _single_name_merge(c, 5, join)
