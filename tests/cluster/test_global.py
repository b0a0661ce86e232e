"""The global registry on loopback nodes (OS processes on 127.0.0.x): the parts of OTP's
``global_SUITE`` that need no network partition - names, deaths, mass death, stopped
nodes, re_register, sync, locks, and a node that leaves and comes back.

Three nodes (n2..n4) are shared by the module's tests (each test uses its own names);
a test that stops a node starts an extra one (n5..). Every wait is a bound with a
deadline, wide enough for a loaded 2-core machine.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.harness import clash_resolvers
from tests.harness.node_process import NodeProc, mesh
from tests.harness.polling import wait_until

pytestmark = pytest.mark.cluster

BOUND = 15.0
RESOLVERS = clash_resolvers.__name__  # the nodes import its resolvers by name


@pytest.fixture(scope="module")
def resolver_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The resolver call log every node of this module writes (set before they start)."""
    path = str(tmp_path_factory.mktemp("resolvers") / "calls.log")
    old = os.environ.get(clash_resolvers.LOG_ENV)
    os.environ[clash_resolvers.LOG_ENV] = path
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop(clash_resolvers.LOG_ENV, None)
        else:
            os.environ[clash_resolvers.LOG_ENV] = old


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory, resolver_log: str) -> Iterator[list[NodeProc]]:
    log_dir = str(tmp_path_factory.mktemp("global"))
    nodes: list[NodeProc] = []
    try:
        for i in (2, 3, 4):
            nodes.append(NodeProc(f"n{i}@127.0.0.{i}", log_dir, wait=False))
        for n in nodes:
            n.wait_ready()
        mesh(nodes)
        for n in nodes:
            n.cmd(op="gsync")
        yield nodes
    finally:
        for n in nodes:
            n.close()


@pytest.fixture
def extra(tmp_path) -> Iterator[list[NodeProc]]:
    """Nodes a test starts itself (and may kill): closed at the end."""
    nodes: list[NodeProc] = []
    try:
        yield nodes
    finally:
        for n in nodes:
            n.close()


def join(extra: list[NodeProc], trio: list[NodeProc], i: int, log_dir: str) -> NodeProc:
    node = NodeProc(f"n{i}@127.0.0.{i}", log_dir)
    extra.append(node)
    mesh([*trio, node])
    node.cmd(op="gsync")
    return node


def everywhere(nodes: list[NodeProc], name: str) -> list[Any]:
    return [n.cmd(op="whereis", name=name) for n in nodes]


def wait_everywhere(nodes: list[NodeProc], name: str, want: Any, what: str) -> None:
    wait_until(
        lambda: everywhere(nodes, name) == [want] * len(nodes),
        timeout=BOUND,
        interval=0.05,
        what=f"{what} (whereis({name!r}) on every node: {everywhere(nodes, name)})",
    )


def parallel(nodes: list[NodeProc], fn: Callable[[NodeProc], Any]) -> list[Any]:
    """``fn(node)`` for every node at once (a thread each); the results, in order."""
    results: list[Any] = [None] * len(nodes)
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            results[k] = fn(nodes[k])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(nodes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "a node did not answer within 120 s"
    return results


def calls_for(path: str, name: str) -> list[dict[str, Any]]:
    return [c for c in clash_resolvers.read_calls(path) if c["name"] == name]


# --------------------------------------------------------------------------- names


def test_names(trio):
    """OTP ``names``: visible on every node at once; refused when taken (from the
    holder's node and another) and for a pid that has a name; send from any node;
    re_register moves it; unregister; a dead holder's name goes everywhere."""
    a, b, c = trio
    p = a.cmd(op="hold")[0]
    assert a.cmd(op="register", name="names.foo", pid=p) is True
    # register_name is synchronous: every replica has it when it returns
    assert everywhere(trio, "names.foo") == [p, p, p]
    for n in trio:
        assert "names.foo" in n.cmd(op="names")

    q = a.cmd(op="hold")[0]
    r = c.cmd(op="hold")[0]
    assert a.cmd(op="register", name="names.foo", pid=q) is False  # local
    assert c.cmd(op="register", name="names.foo", pid=r) is False  # remote
    assert b.cmd(op="register", name="names.foo", pid=r) is False
    assert c.cmd(op="register", name="names.second", pid=p) is False  # p has a name
    assert everywhere(trio, "names.foo") == [p, p, p]
    assert everywhere(trio, "names.second") == [None, None, None]

    # send from any node reaches the holder
    for i, n in enumerate(trio):
        assert n.cmd(op="gsend", name="names.foo", msg=["hello", i]) == p
    got: list[Any] = []

    def three_sends() -> bool:  # from three senders: no order between them
        got[:] = a.cmd(op="seen", pid=p)
        return sorted(got) == [["hello", 0], ["hello", 1], ["hello", 2]]

    try:
        wait_until(three_sends, timeout=BOUND, what="the holder got the three sends")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; it got {got}") from None
    got = b.cmd(op="gsend", name="names.nobody", msg="x")
    assert got[0] == "NoSuchName" and "names.nobody" in got[1]

    # re_register moves the name (to a pid on another node), everywhere at once
    assert b.cmd(op="re_register", name="names.foo", pid=r) is True
    assert everywhere(trio, "names.foo") == [r, r, r]
    assert a.cmd(op="gsend", name="names.foo", msg="moved") == r
    # p has no name now: it may take one
    assert b.cmd(op="register", name="names.second", pid=p) is True
    assert everywhere(trio, "names.second") == [p, p, p]

    # unregister (from a node that holds neither pid), then a no-op unregister
    c.cmd(op="unregister", name="names.second")
    assert everywhere(trio, "names.second") == [None, None, None]
    c.cmd(op="unregister", name="names.second")
    for n in trio:
        assert "names.second" not in n.cmd(op="names")

    # the holder dies: the name goes on every node
    a.cmd(op="exit", pid=r, reason="kill")
    wait_everywhere(trio, "names.foo", None, "a killed holder's name goes everywhere")
    assert a.cmd(op="alive_many", pids=[p, q, r]) == [True, True, False]
    assert a.cmd(op="kill_many", pids=[p, q]) == "ok"


def test_re_register_forgets_the_old_pid(trio):
    """OTP ``re_register_name``: after the move, the old pid's death changes nothing."""
    a, b, c = trio
    old = a.cmd(op="hold")[0]
    new = c.cmd(op="hold")[0]
    assert b.cmd(op="register", name="rereg", pid=old) is True
    assert a.cmd(op="re_register", name="rereg", pid=new) is True
    a.cmd(op="exit", pid=old, reason="kill")
    wait_until(lambda: a.cmd(op="alive_many", pids=[old]) == [False], BOUND, what="old is dead")
    for n in trio:
        n.cmd(op="gsync")
    assert everywhere(trio, "rereg") == [new, new, new]
    c.cmd(op="exit", pid=new, reason="kill")
    wait_everywhere(trio, "rereg", None, "the new holder's death removes it")


def test_names_of_a_stopped_node_disappear(trio, extra, tmp_path):
    c = trio[2]
    d = join(extra, trio, 5, str(tmp_path))
    held = d.cmd(op="hold_register", names=["stopped.1", "stopped.2"])
    assert [ok for _, _, ok in held] == [True, True]
    everyone = [*trio, d]
    for name, pid, _ in held:
        assert everywhere(everyone, name) == [pid] * 4
    mine = c.cmd(op="hold_register", names=["stopped.kept"])[0][1]
    d.kill9()
    for name, _, _ in held:
        wait_everywhere(trio, name, None, f"{name} of the stopped node goes")
    assert everywhere(trio, "stopped.kept") == [mine] * 3
    c.cmd(op="kill_many", pids=[mine])


def test_mass_death(trio):
    """OTP ``mass_death``: 201 named processes (67 per node) die together; every name
    goes on every node."""
    names = {n.name: [f"mass.{n.name}.{k}" for k in range(67)] for n in trio}
    held = parallel(trio, lambda n: n.cmd(op="hold_register", names=names[n.name]))
    assert all(ok for group in held for _, _, ok in group)
    pids = [pid for group in held for _, pid, _ in group]
    every = sorted(x for group in names.values() for x in group)
    assert len(every) == len(set(map(tuple, pids))) == 201
    for n in trio:
        assert [x for x in n.cmd(op="names") if x.startswith("mass.")] == every
    trio[0].cmd(op="kill_many", pids=pids)

    def left() -> dict[str, int]:
        return {n.name: len([x for x in n.cmd(op="names") if x.startswith("mass.")]) for n in trio}

    wait_until(
        lambda: not any(left().values()),
        timeout=30,
        interval=0.1,
        what=f"every mass.* name is gone on every node (left: {left()})",
    )


def test_sync_brings_a_new_node_up_to_date(trio, extra, tmp_path):
    """OTP ``sync``: once sync() returns on a node that just joined, its table is the
    cluster's (no polling)."""
    a, _, c = trio
    held = a.cmd(op="hold_register", names=[f"sync.{k}" for k in range(5)])
    held += c.cmd(op="hold_register", names=["sync.c"])
    d = NodeProc("n6@127.0.0.6", str(tmp_path))
    extra.append(d)
    assert d.cmd(op="names") == []
    mesh([*trio, d])
    assert d.cmd(op="gsync") == sorted(n.name for n in trio)
    table = d.cmd(op="table")
    for name, pid, _ in held:
        assert table.get(name) == pid
    assert table == a.cmd(op="table")
    # a name registered after the join reaches it at once
    e = d.cmd(op="hold_register", names=["sync.from_new"])[0][1]
    assert everywhere([*trio, d], "sync.from_new") == [e] * 4
    a.cmd(op="kill_many", pids=[pid for _, pid, _ in held] + [e])


def test_a_node_that_leaves_and_comes_back(trio, extra, tmp_path, resolver_log):
    """A node leaves (``disconnect``): each side drops the other's names, keeps its own.
    It comes back: the tables are merged again, with no clash, so no resolver call."""
    a = trio[0]
    d = join(extra, trio, 7, str(tmp_path))
    ours = a.cmd(op="hold_register", names=["leave.a"], resolve=f"{RESOLVERS}:resolve_none")
    theirs = d.cmd(op="hold_register", names=["leave.d"], resolve=f"{RESOLVERS}:resolve_none")
    pa, pd = ours[0][1], theirs[0][1]
    assert sorted(d.cmd(op="gdisconnect")) == sorted(n.name for n in trio)
    wait_until(lambda: d.cmd(op="nodes") == [], BOUND, what="the leaver sees nobody")
    wait_everywhere(trio, "leave.d", None, "the leaver's name goes from the others")
    wait_everywhere([d], "leave.a", None, "the others' names go from the leaver")
    assert d.cmd(op="whereis", name="leave.d") == pd
    assert a.cmd(op="whereis", name="leave.a") == pa

    mesh([*trio, d])
    for n in [*trio, d]:
        n.cmd(op="gsync")
    assert everywhere([*trio, d], "leave.a") == [pa] * 4
    assert everywhere([*trio, d], "leave.d") == [pd] * 4
    assert calls_for(resolver_log, "leave.a") == calls_for(resolver_log, "leave.d") == []
    a.cmd(op="kill_many", pids=[pa, pd])


def test_a_frozen_node_is_left_out_of_a_registration(trio, extra, tmp_path):
    """A node frozen (SIGSTOP) while a name is registered: the lock round does not wait
    out a fixed timeout on it; it is left out - its link dropped, logged by the caller -
    so the name is on every connected node. Thawed, it comes back and gets the name."""
    a = trio[0]
    d = join(extra, trio, 8, str(tmp_path))
    p = a.cmd(op="hold")[0]
    d.signal(signal.SIGSTOP)
    try:
        assert a.cmd(op="register", name="frozen.x", pid=p) is True
        assert everywhere(trio, "frozen.x") == [p] * 3
        # left out: no longer connected to the caller's node, and the caller said why
        assert d.name not in a.cmd(op="nodes")
        said = [ln for ln in a.log().splitlines() if "in a global lock round" in ln]
        assert said and f"connection {d.name} " in said[-1], a.log()[-3000:]
    finally:
        d.signal(signal.SIGCONT)
    wait_until(lambda: d.name in a.cmd(op="nodes"), BOUND, what="the thawed node is back")
    d.cmd(op="gsync")
    wait_everywhere([*trio, d], "frozen.x", p, "the thawed node has the name")
    a.cmd(op="kill_many", pids=[p])


# --------------------------------------------------------------------------- locks


def test_locks_are_exclusive_and_released(trio, extra, tmp_path):
    """OTP ``locks`` / ``otp_1849`` / ``otp_5737`` / ``lock_die``."""
    a, b, c = trio
    # exclusive between requesters; retries=0 answers at once
    assert a.cmd(op="set_lock", resource="lk.x") is True
    assert b.cmd(op="set_lock", resource="lk.x", retries=0) is False
    assert c.cmd(op="set_lock", resource="lk.x", retries=2) is False
    a.cmd(op="del_lock", resource="lk.x")
    assert b.cmd(op="set_lock", resource="lk.x", retries=0) is True
    b.cmd(op="del_lock", resource="lk.x")

    # one requester id, two holders: each must release it
    assert a.cmd(op="set_lock", resource="lk.s", requester="shared") is True
    assert b.cmd(op="set_lock", resource="lk.s", requester="shared") is True
    assert c.cmd(op="set_lock", resource="lk.s", requester="other", retries=0) is False
    a.cmd(op="del_lock", resource="lk.s", requester="shared")
    assert c.cmd(op="set_lock", resource="lk.s", requester="other", retries=0) is False
    b.cmd(op="del_lock", resource="lk.s", requester="shared")
    assert c.cmd(op="set_lock", resource="lk.s", requester="other", retries=0) is True
    c.cmd(op="del_lock", resource="lk.s", requester="other")

    # a holder's death releases its lock
    h = b.cmd(op="hold")[0]
    assert b.cmd(op="holder_lock", pid=h, resource="lk.d", retries=0) is True
    assert a.cmd(op="set_lock", resource="lk.d", retries=0) is False
    b.cmd(op="exit", pid=h, reason="kill")
    wait_until(
        lambda: a.cmd(op="set_lock", resource="lk.d", retries=0),
        BOUND,
        interval=0.05,
        what="the dead holder's lock is free",
    )
    a.cmd(op="del_lock", resource="lk.d")

    # its node going down releases it too
    d = join(extra, trio, 8, str(tmp_path))
    assert d.cmd(op="set_lock", resource="lk.n") is True
    assert a.cmd(op="set_lock", resource="lk.n", retries=0) is False
    d.kill9()
    wait_until(
        lambda: a.cmd(op="set_lock", resource="lk.n", retries=0),
        BOUND,
        interval=0.05,
        what="the lock of a stopped node is free",
    )
    a.cmd(op="del_lock", resource="lk.n")
    for n in trio:
        assert n.cmd(op="locks") == {}


def test_trans_runs_one_at_a_time(trio, tmp_path):
    """``trans`` from three nodes at once, twice each: never two inside together."""
    path = str(tmp_path / "trans.log")
    results = parallel(
        trio,
        lambda n: [n.cmd(op="trans", resource="tr.x", path=path, hold=0.1) for _ in range(2)],
    )
    assert results == [["done", "done"]] * 3
    with open(path, encoding="utf-8") as f:
        lines = [line.split() for line in f]
    assert len(lines) == 12
    for k in range(0, 12, 2):
        enter, leave = lines[k], lines[k + 1]
        assert enter[0] == "enter" and leave[0] == "leave" and enter[1] == leave[1], lines
    assert sorted(line[1] for line in lines if line[0] == "enter") == sorted(
        n.name for n in trio for _ in range(2)
    )
    # held elsewhere: trans with retries=0 aborts without running fn
    a, b, _ = trio
    assert a.cmd(op="set_lock", resource="tr.x") is True
    assert b.cmd(op="trans", resource="tr.x", path=path, retries=0) == "aborted"
    a.cmd(op="del_lock", resource="tr.x")
    with open(path, encoding="utf-8") as f:
        assert len(f.readlines()) == 12


def test_a_hanging_resolver_is_given_up_and_replaced(trio, extra, tmp_path, resolver_log):
    """A resolver that never returns: after its deadline (10 s) the other side's pid
    keeps the name (as for a resolver whose node halted), the node's resolver process is
    replaced, and the next clash on that node is resolved as usual."""
    a = trio[0]
    d = join(extra, trio, 8, str(tmp_path))
    assert sorted(d.cmd(op="gdisconnect")) == sorted(n.name for n in trio)
    wait_until(lambda: d.cmd(op="nodes") == [], BOUND, what="the leaver sees nobody")
    ours = a.cmd(op="hold_register", names=["hang.x"], resolve=f"{RESOLVERS}:hang")
    theirs = d.cmd(op="hold_register", names=["hang.x"], resolve=f"{RESOLVERS}:hang")
    mesh([*trio, d])
    calls = wait_until(lambda: calls_for(resolver_log, "hang.x"), BOUND, what="the resolver runs")
    assert len(calls) == 1, calls
    own = calls[0]["own"]
    other = next(p[1] for p in (*ours, *theirs) if p[1] != own)
    wait_everywhere([*trio, d], "hang.x", other, "the other side's pid keeps the name")
    # the resolver process of the hanging call's node was replaced: a new clash resolves
    assert sorted(d.cmd(op="gdisconnect")) == sorted(n.name for n in trio)
    wait_until(lambda: d.cmd(op="nodes") == [], BOUND, what="the leaver sees nobody")
    again = a.cmd(op="hold_register", names=["hang.y"], resolve=f"{RESOLVERS}:resolve_first")
    d.cmd(op="hold_register", names=["hang.y"], resolve=f"{RESOLVERS}:resolve_first")
    mesh([*trio, d])
    wait_until(lambda: calls_for(resolver_log, "hang.y"), BOUND, what="a new clash is resolved")
    for n in [*trio, d]:
        n.cmd(op="gsync")
    assert len({tuple(p) for p in everywhere([*trio, d], "hang.y")}) == 1
    assert again
