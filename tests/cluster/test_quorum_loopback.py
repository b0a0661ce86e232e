"""The majority policy on real nodes (OS processes on 127.0.0.x loopback), each running
the Quorum system actor (tests/harness/quorum_node_driver.py): members converge; a SIGKILLed
holder is replaced at once (the witnesses its acting process held closed), one without
witnesses, or whose dist alone died, only after its term; a SIGSTOPped holder only after its
term, and once resumed its old epoch is fenced off and it hears ``LeaseLost``; a lone
node with ``expected_size=3`` never holds a lease."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.node_process import NodeProc
from tests.harness.polling import wait_until

pytestmark = pytest.mark.cluster

DRIVER = "tests.harness.quorum_node_driver"
TERM, MARGIN = 3.0, 0.5


@pytest.fixture
def start(tmp_path) -> Iterator[Any]:
    nodes: list[NodeProc] = []

    def start_nodes(names: list[str], *extra: str, stores: bool = False) -> list[NodeProc]:
        batch = [
            NodeProc(
                n,
                str(tmp_path),
                extra_args=extra,
                wait=False,
                module=DRIVER,
                env={"OTPKIT_DATA_DIR": str(tmp_path / f"data-{n}")} if stores else None,
            )
            for n in names
        ]
        nodes.extend(batch)
        return [n.wait_ready() for n in batch]

    try:
        yield start_nodes
    finally:
        for n in nodes:
            n.close()


def formed_trio(start: Any, base: int, stores: bool = False) -> list[NodeProc]:
    # connected within the settle window: the three found the cluster together (version 1),
    # so no member sits out the quiet period of a late joiner
    names = [f"q{i}@127.0.0.{i}" for i in range(base, base + 3)]
    trio = start(names, "--settle", "3", stores=stores)
    a = trio[0]
    for other in trio[1:]:
        a.cmd(op="connect", name=other.name, host=other.host, port=other.port)
    want = sorted(n.name for n in trio)
    for n in trio:
        wait_until(lambda n=n: n.cmd(op="members")[1] == want, timeout=15, what=f"{n.name} members")
    return trio


def witnessed(holder: NodeProc, members: list[NodeProc], key: str = "job") -> None:
    """Wait until the holder's acting process (the driver) holds a witness of its lease
    at every other member."""
    want = sorted(m.name for m in members)
    wait_until(
        lambda: sorted(holder.cmd(op="witnesses", key=key)) == want,
        timeout=10,
        what="witnesses open",
    )


def replaced_fast(holder: NodeProc, successor: NodeProc, lease: Any, what: str) -> Any:
    """SIGKILL every process of ``holder``'s node (its sockets, its witnesses among
    them, close): ``successor`` gets the lease with a higher epoch within 2 s."""
    holder.kill_node()
    t0 = time.monotonic()
    got = successor.cmd(op="acquire", key="job", t=5)
    elapsed = time.monotonic() - t0
    print(f"\n{what}: successor acquired in {elapsed * 1000:.0f} ms")
    assert got is not None and got[0] > lease[0]
    assert elapsed < 2.0
    return got


def test_members_converge_and_a_killed_holder_is_replaced_fast(start):
    a, b, c = formed_trio(start, 11)
    versions = {n.cmd(op="members")[0] for n in (a, b, c)}
    assert versions == {1}
    lease = a.cmd(op="acquire", key="job", t=5)
    assert lease is not None and 0 < lease[1] <= TERM - MARGIN
    assert b.cmd(op="acquire", key="job", t=1) is None  # held elsewhere
    witnessed(a, [b, c])
    got = replaced_fast(a, b, lease, "SIGKILLed holder")
    assert b.cmd(op="fence", key="job", epoch=got[0], effect=["tick", 1]) is True
    assert c.cmd(op="effects", key="job")[-1] == [got[0], ["tick", 1]]


def test_a_witness_replaced_by_another_of_the_same_lease_voids_nothing(start):
    """The holder's process opens a second witness of its lease at every member and
    closes the first (as it does when it reached a new incarnation of a member): a
    member voids a grant early only when the last witness of it there closes, so the
    lease stays; the process's end still hands it on at once."""
    a, b, c = formed_trio(start, 31)
    lease = a.cmd(op="acquire", key="job", t=5)
    assert lease is not None
    witnessed(a, [b, c])
    assert sorted(a.cmd(op="rewitness", key="job")) == sorted([b.name, c.name])
    assert b.cmd(op="acquire", key="job", t=1, witness=False) is None  # still held
    assert c.cmd(op="acquire", key="job", t=1, witness=False) is None
    replaced_fast(a, b, lease, "SIGKILLed holder after a witness replacement")


def first_acquire(node: NodeProc, limit: float, key: str = "job") -> tuple[float, Any]:
    """Ask for ``key`` at ``node`` until granted (or ``limit`` seconds); when, and what."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        got = node.cmd(op="acquire", key=key, t=0.5, witness=False)
        if got is not None:
            return time.monotonic(), got
    raise AssertionError(f"{node.name} never got {key} within {limit} s")


def test_a_holder_without_witnesses_is_replaced_only_after_its_term(start):
    """A node's dist link closing proves nothing about its acting process: a holder
    that holds no witness (the driver asked without) is replaced only once its grants
    ran out, although every process of its node was killed."""
    a, b, _c = formed_trio(start, 16)
    lease = a.cmd(op="acquire", key="job", t=5, witness=False)
    assert lease is not None
    a.kill_node()
    t0 = time.monotonic()
    t_got, got = first_acquire(b, 15)
    print(f"\nholder without witnesses killed: successor after {t_got - t0:.2f} s")
    assert got[0] > lease[0]
    assert t_got - t0 >= TERM + MARGIN - TERM / 3 - 0.2


def test_a_dead_dist_beside_a_live_holder_hands_the_lease_on_only_after_its_term(start):
    """The holder node's dist process alone dies (SIGKILL), its kernel frozen so that
    the node does not halt: the members see its links close but not the witnesses its
    acting process holds, so no member grants a successor before the old grant ran
    out - and the old holder hears ``LeaseLost`` (its own, earlier expiry) before the
    successor holds the lease: never two holders."""
    a, b, c = formed_trio(start, 36)
    lease = a.cmd(op="acquire", key="job", t=5)
    assert lease is not None
    witnessed(a, [b, c])
    dist_pid = a.dist_ospid()
    with open(f"/proc/{dist_pid}/stat") as f:
        kernel = int(f.read().rsplit(")", 1)[1].split()[1])  # the dist's parent
    assert kernel in a.info["pids"], (kernel, a.info["pids"])
    os.kill(kernel, signal.SIGSTOP)
    try:
        os.kill(dist_pid, signal.SIGKILL)
        t0 = time.monotonic()
        lost: list[float] = []

        def hear_lost() -> None:
            kind, text = a.cmd(op="recv", t=15)
            if kind == "LeaseLost" and f"epoch={lease[0]}" in text:
                lost.append(time.monotonic())

        listener = threading.Thread(target=hear_lost)
        listener.start()
        t_got, got = first_acquire(b, 15)
        listener.join(20)
    finally:
        os.kill(kernel, signal.SIGCONT)
    print(
        f"\ndist killed beside a live holder: LeaseLost after "
        f"{(lost[0] - t0) if lost else float('nan'):.2f} s, successor after {t_got - t0:.2f} s"
    )
    assert got[0] > lease[0]
    assert lost and lost[0] < t_got, "the old holder still held when the successor got it"
    assert t_got - t0 >= TERM + MARGIN - TERM / 3 - 0.2
    assert t_got - t0 <= TERM + MARGIN + 2.0


def test_a_paused_holder_is_replaced_after_its_term_and_fenced_off(start):
    a, b, c = formed_trio(start, 21)
    lease = a.cmd(op="acquire", key="job", t=5)
    assert lease is not None
    a.signal(signal.SIGSTOP)
    t0 = time.monotonic()
    got = None
    while got is None and time.monotonic() - t0 < 15:
        got = b.cmd(op="acquire", key="job", t=10)
    elapsed = time.monotonic() - t0
    print(f"\nSIGSTOPped holder: successor acquired after {elapsed:.2f} s (term {TERM} s)")
    assert got is not None and got[0] > lease[0]
    # the members let a successor in only after the old grant's term: at least
    # term + margin after the holder's last renewal, which is at most term / 3 old
    assert elapsed >= TERM + MARGIN - TERM / 3 - 0.2
    a.signal(signal.SIGCONT)
    kind, text = a.cmd(op="recv", t=10)
    assert kind == "LeaseLost" and f"epoch={lease[0]}" in text, (kind, text)
    want = sorted(n.name for n in (b, c))
    wait_until(lambda: a.cmd(op="nodes") == want, timeout=15, what="a reconnected")
    assert a.cmd(op="fence", key="job", epoch=lease[0], effect=["tick", 2]) is False
    assert b.cmd(op="fence", key="job", epoch=got[0], effect=["tick", 2]) is True


def test_a_lone_node_with_expected_size_never_acquires(start):
    (lone,) = start(["q31@127.0.0.31"], "--expected", "3", "--settle", "0.5")
    assert lone.cmd(op="acquire", key="job", t=2.5) is None
    assert lone.cmd(op="members") == [0, []]


def error_lines(node: NodeProc, text: str) -> list[str]:
    with open(node.log_path) as f:
        return [line for line in f if " ERROR " in line and text in line]


def test_a_lone_node_with_expected_size_says_why_it_cannot_grant(start):
    """Silence is a defect: a quorum that cannot grant says why in its status and, once
    that outlasts an election (2 * (term + margin) + settle), in an ERROR line."""
    (lone,) = start(["q32@127.0.0.32"], "--expected", "3", "--settle", "0.5")
    status = wait_until(lambda: (s := lone.cmd(op="status"))["problem"] and s, timeout=10)
    assert status["problem"].startswith("no configuration formed: 1 node(s) connected, 2 of")
    lines = wait_until(
        lambda: error_lines(lone, "quorum: no lease can be granted"),
        timeout=2 * (TERM + MARGIN) + 0.5 + 20,
        what="the ERROR line",
    )
    assert "no configuration formed" in lines[0]


def test_a_member_whose_store_fails_holds_nobody_back_and_says_so(start, tmp_path):
    """A member whose store cannot be written answers no vote (it must not promise what
    it cannot keep) and logs ERROR; the two healthy members still grant; once the store
    can be written again the member takes part again."""
    a, _b, c = formed_trio(start, 41, stores=True)
    lease = a.cmd(op="acquire", key="job", t=5)
    assert lease is not None
    store = tmp_path / f"data-{c.name}" / "otpkit"
    assert (store / f"quorum@{c.name}.json").exists()
    saved = tmp_path / "c-store"
    store.rename(saved)
    store.write_text("not a directory")  # every write of c's store fails from now on
    a.cmd(op="release", key="job", epoch=lease[0])
    again = a.cmd(op="acquire", key="job", t=5)  # a new epoch: each member stores a grant
    assert again is not None and again[0] > lease[0]
    status = wait_until(lambda: (s := c.cmd(op="status"))["problem"] and s, timeout=10)
    assert "cannot be written" in status["problem"]
    assert error_lines(c, f"quorum store {store}/quorum@{c.name}.json cannot be written")
    store.unlink()
    saved.rename(store)
    wait_until(lambda: c.cmd(op="status")["problem"] is None, timeout=10, what="c writes again")
    a.cmd(op="release", key="job", epoch=again[0])
    third = c.cmd(op="acquire", key="job", t=5)
    assert third is not None and third[0] > again[0]


def test_a_ready_gate_holds_readiness_back_and_not_elections(start):
    """A local process's gate (``quorum.ready_gate``: a scheduler replica not yet in
    sync) is the readiness probe's answer until lifted; the question a Singleton asks
    before its first election (``rejoin_problem``) never includes it."""
    (lone,) = start(["q41@127.0.0.41"], "--settle", "0.3")
    wait_until(lambda: lone.cmd(op="members")[0] == 1, timeout=10, what="a one-node quorum")
    assert lone.cmd(op="ready_problem") is None
    lone.cmd(op="gate", problem="scheduler s: its replica is not in sync with a holder yet")
    assert (
        lone.cmd(op="ready_problem") == "scheduler s: its replica is not in sync with a holder yet"
    )
    assert lone.cmd(op="rejoin_problem") is None
    lone.cmd(op="gate", problem=None)
    assert lone.cmd(op="ready_problem") is None


def test_a_restarted_member_gets_a_new_witness_and_a_killed_holder_is_replaced_fast(start):
    """c restarts (with its store: the same member) while a holds the lease: a's acting
    process dials a witness to c's new incarnation, so when a's node is then killed,
    b and c both void its grant at once and b holds within 2 s (c, with no witness,
    would refuse b for the rest of a's term)."""
    a, b, c = formed_trio(start, 46, stores=True)
    lease = a.cmd(op="acquire", key="job", t=5)
    assert lease is not None
    witnessed(a, [b, c])
    old_creation = a.cmd(op="witnesses", key="job")[c.name]
    c.kill_node()
    (c,) = start([c.name], "--settle", "3", stores=True)
    c.cmd(op="connect", name=a.name, host=a.host, port=a.port)  # (a new port)
    want = sorted(n.name for n in (a, b, c))
    wait_until(lambda: c.cmd(op="members")[1] == want, timeout=15, what="c is a member again")
    wait_until(
        lambda: a.cmd(op="witnesses", key="job").get(c.name, old_creation) != old_creation,
        timeout=10,
        what="a witness to c's new incarnation",
    )
    replaced_fast(a, b, lease, "holder killed after a member's restart")
