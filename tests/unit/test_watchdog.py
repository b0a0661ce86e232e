"""The watchdog that speaks, without processes: the Singleton's decision to log that no
holder is active, and why (``registry._watchdog``); what a quorum core tells of a lease
key (``QuorumCore.key_status``); the readiness probe's "outside a majority"
(``node._probes``); the shell's ``nodes`` lines for singletons."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from otpkit.admin import singleton_rows
from otpkit.node._probes import outside_problem, ready_problem
from otpkit.quorum._core import QuorumConfig, QuorumCore, Reply, Send
from otpkit.registry._watchdog import (
    ReportBack,
    ReportMissing,
    Watch,
    holder_seen,
    no_holder_reason,
    watch_step,
)
from otpkit.shell import _format

TERM = 3.5  # a lease term with its margin

# ---------------------------------------------------------------------- watch_step


def run(
    watch: Watch, start: float, end: float, seen: bool, live: int, need: int, every: float = 0.5
) -> tuple[Watch, list[tuple[float, Any]]]:
    """Checks every ``every`` seconds from ``start`` to ``end``: the state and the reports."""
    said = []
    t = start
    while t <= end + 1e-9:
        watch, report = watch_step(watch, t, seen, live, need, TERM)
        if report is not None:
            said.append((round(t, 3), report))
        t += every
    return watch, said


def test_no_error_before_two_terms_then_one_per_term():
    _watch, said = run(Watch(0.0), 0.5, 30.0, seen=False, live=3, need=2)
    times = [t for t, _ in said]
    assert all(isinstance(r, ReportMissing) for _, r in said)
    # the stretch began at the first check (0.5 s): the first line after 2 terms of it
    assert times[0] == pytest.approx(0.5 + 2 * TERM + 0.5)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and all(TERM <= g < TERM + 0.5 + 1e-9 for g in gaps), gaps
    # over the window, one line per term (never two within one)
    assert len(times) == 1 + int((30.0 - times[0]) // TERM)
    assert said[0][1].seconds == pytest.approx(times[0])  # since the holder was last seen


def test_a_holder_back_after_an_error_is_one_info_and_before_it_nothing():
    watch, said = run(Watch(0.0), 0.5, 10.0, seen=False, live=3, need=2)
    assert said
    watch, back = watch_step(watch, 12.0, True, 3, 2, TERM)
    assert back == ReportBack(12.0)
    watch, again = watch_step(watch, 12.5, True, 3, 2, TERM)
    assert again is None and watch == Watch(12.5)
    # a gap shorter than two terms (a fail-over) says nothing at all
    watch, said = run(watch, 13.0, 13.0 + 2 * TERM - 0.5, seen=False, live=3, need=2)
    assert said == []
    watch, back = watch_step(watch, 20.0, True, 3, 2, TERM)
    assert back is None


def test_a_minority_side_says_nothing_and_its_clock_restarts_on_heal():
    watch, said = run(Watch(0.0), 0.5, 60.0, seen=False, live=1, need=2)
    assert said == [] and watch.quiet_since is None
    # healed, still no holder: the stretch counts from the heal, the line says since when
    watch, said = run(watch, 60.5, 60.5 + 2 * TERM, seen=False, live=3, need=2)
    assert said == []
    watch, report = watch_step(watch, 60.5 + 2 * TERM + 0.5, False, 3, 2, TERM)
    assert isinstance(report, ReportMissing) and report.seconds == pytest.approx(68.0)


def test_nothing_before_the_settle_time():
    watch = Watch(0.0, not_before=5.0)
    watch, said = run(watch, 0.5, 5.0 + 2 * TERM, seen=False, live=3, need=2)
    assert said == []
    watch, report = watch_step(watch, 5.0 + 2 * TERM + 0.5, False, 3, 2, TERM)
    assert isinstance(report, ReportMissing)


def test_availability_needs_one_node():
    _watch, said = run(Watch(0.0), 0.5, 9.0, seen=False, live=1, need=1)
    assert [type(r) for _, r in said] == [ReportMissing]


# ---------------------------------------------------------------------- holder_seen


def status(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "member": True,
        "version": 1,
        "members": ["a", "b", "c"],
        "live": ["a", "b", "c"],
        "need": 2,
        "outsiders": [],
        "expected": 3,
        "problem": None,
        "grant": None,
        "held": None,
        "asking": True,
        "round": None,
        "last_round": None,
        "backoff": None,
        "store": None,
        "term": TERM,
    }
    base.update(kw)
    return base


def grant(holder: str, epoch: int = 7, left: float = 2.0, void: bool = False) -> dict[str, Any]:
    return {"holder": holder, "epoch": epoch, "left": left, "void": void}


def test_holder_seen_needs_the_name_and_a_live_grant_to_its_node():
    assert holder_seen(True, None, status(), "a")  # this node's child is active
    assert not holder_seen(False, None, status(grant=grant("b")), "a")  # no name
    assert holder_seen(False, "b", status(grant=grant("b")), "a")
    # the name of a holder that lost its lease (it keeps the name while it asks again)
    assert not holder_seen(False, "b", status(grant=grant("b", left=-0.1)), "a")
    assert not holder_seen(False, "b", status(grant=grant("b", void=True)), "a")
    assert not holder_seen(False, "b", status(grant=grant("c")), "a")
    assert not holder_seen(False, "b", status(), "a")
    # its own name on this node, but its child is not active
    assert not holder_seen(False, "a", status(grant=grant("a"), held=7), "a")
    # a node that is no member keeps no grants: the name is all it knows
    assert holder_seen(False, "b", status(member=False), "d")
    # availability: the name
    assert holder_seen(False, "b", None, "a")
    assert not holder_seen(False, None, None, "a")


# ---------------------------------------------------------------------- no_holder_reason


def test_reasons_in_order():
    def why(st: dict[str, Any] | None, **kw: Any) -> str:
        return no_holder_reason("a", st, **kw)

    assert why(status(store="/d/quorum@a.json"), stores=["scheduler s: disk full"]) == (
        "store failing: this node's quorum store /d/quorum@a.json cannot be written; "
        "scheduler s: disk full"
    )
    assert why(None, unanswered="CallTimeout: 1.0") == (
        "this node's quorum does not answer (CallTimeout: 1.0)"
    )
    assert why(None) == "no node won the election"
    assert why(None, election="the child failed to start on a: boom") == (
        "no node won the election (the child failed to start on a: boom)"
    )
    no_majority = "no majority: 1 of the 2 members needed are connected (down: d, e)"
    assert why(status(problem=no_majority, outsiders=["b", "c"])) == (
        f"no quorum: {no_majority}; not members: b, c"
    )
    assert why(status(grant=grant("b", epoch=9, left=2.25))) == (
        "waiting for b: it holds the grant of epoch 9 here (2.2 s left) but has no active holder"
    )
    assert why(status(grant=grant("a"), held=7)) == (
        "waiting for a: it holds the lease of epoch 7 but its child is not active"
    )
    silent = {"epoch": 12, "age": 0.3, "silent": ["b", "c"], "refused": []}
    assert why(status(grant=grant("a", void=True), round=silent)) == (
        "waiting for b, c: no answer to the grant round of epoch 12 (asked 0.3 s ago)"
    )
    # between rounds: the last one that failed
    assert why(status(last_round={**silent, "age": 0.6})) == (
        "waiting for b, c: no answer to the grant round of epoch 12 (asked 0.6 s ago)"
    )
    refused = {"epoch": 12, "age": 0.1, "silent": [], "refused": ["b"]}
    assert why(status(round=refused, backoff={"holder": "c", "left": 1.0})) == (
        "waiting for b: they refused the grant round of epoch 12 (a grant to c)"
    )
    assert why(status(backoff={"holder": "c", "left": 1.25})) == (
        "waiting for c: a member counts its grant live for 1.2 s more"
    )
    assert why(status(), election="the child failed to start on a: boom") == (
        "the child failed to start on a: boom"
    )
    assert why(status(asking=False)) == "this node's candidate is not asking for the lease"
    assert why(status()) == "no grant round has an outcome yet"


# ---------------------------------------------------------------------- QuorumCore.key_status


def trio() -> tuple[dict[str, QuorumCore], list[tuple[str, str, tuple[Any, ...]]], list[float]]:
    names = ["a@h", "b@h", "c@h"]
    clock = [1000.0]
    config = QuorumConfig(settle=0.2, expected_size=3)
    cores = {n: QuorumCore((n, 1), config, clock[0], random.Random(i)) for i, n in enumerate(names)}
    net: list[tuple[str, str, tuple[Any, ...]]] = []

    def perform(src: str, outs: list[Any]) -> None:
        net.extend((src, o.node, o.msg) for o in outs if isinstance(o, Send))

    for a in names:
        for b in names:
            if a != b:
                perform(a, cores[a].node_up(b, clock[0]))
    for _ in range(40):  # 2 s, fair
        while net:
            _src, dst, msg = net.pop(0)
            perform(dst, cores[dst].receive(msg, clock[0]))
        clock[0] += 0.05
        for n in names:
            perform(n, cores[n].tick(clock[0]))
    assert all(c.version == 1 and len(c.members) == 3 for c in cores.values())
    net.clear()
    return cores, net, clock


def test_key_status_names_the_silent_voters_of_a_round_and_keeps_the_last_one():
    cores, _net, clock = trio()
    a = cores["a@h"]
    outs = a.acquire("singleton/s", "holder", "tok", 2.0, clock[0])
    asked = [o.node for o in outs if isinstance(o, Send) and o.msg[0] == "grant?"]
    assert sorted(asked) == ["a@h", "b@h", "c@h"]
    for o in outs:  # a answers itself; b and c stay silent (frozen quorum actors)
        if isinstance(o, Send) and o.node == "a@h":
            for back in a.receive(o.msg, clock[0]):
                if isinstance(back, Send) and back.node == "a@h":
                    a.receive(back.msg, clock[0])
    st = a.key_status("singleton/s", clock[0] + 0.1)
    assert st["member"] and st["need"] == 2 and st["live"] == ["a@h", "b@h", "c@h"]
    assert st["problem"] is None and st["asking"] and st["held"] is None
    assert st["round"]["silent"] == ["b@h", "c@h"] and st["round"]["refused"] == []
    assert st["grant"]["holder"] == "a@h" and not st["grant"]["void"]
    # the round times out: it is kept as the last round, its own grant released
    clock[0] += 0.6
    for o in a.tick(clock[0]):
        if isinstance(o, Send) and o.node == "a@h":
            a.receive(o.msg, clock[0])
    st = a.key_status("singleton/s", clock[0])
    assert st["round"] is None
    assert st["last_round"]["silent"] == ["b@h", "c@h"]
    assert st["last_round"]["age"] == pytest.approx(0.6)
    assert st["grant"]["void"]
    reason = no_holder_reason("a@h", st)
    assert reason.startswith("waiting for b@h, c@h: no answer to the grant round of epoch 1")


def test_key_status_of_a_cut_off_member_says_no_majority():
    cores, _net, clock = trio()
    a = cores["a@h"]
    a.node_down("b@h", "net_tick_timeout", clock[0])
    a.node_down("c@h", "net_tick_timeout", clock[0])
    st = a.key_status("singleton/s", clock[0])
    assert st["live"] == ["a@h"] and st["need"] == 2 and not st["asking"]
    assert st["problem"] == "no majority: 1 of the 2 members needed are connected (down: b@h, c@h)"
    assert no_holder_reason("a@h", st) == f"no quorum: {st['problem']}"


def test_key_status_of_a_live_grant_names_its_holder():
    cores, net, clock = trio()
    b = cores["b@h"]
    replies: dict[Any, Any] = {}

    def perform(src: str, outs: list[Any]) -> None:
        for o in outs:
            if isinstance(o, Send):
                net.append((src, o.node, o.msg))
            elif isinstance(o, Reply):
                replies[o.token] = o.value

    perform("b@h", b.acquire("k", "holder", "tok", 2.0, clock[0]))
    while net:
        _src, dst, msg = net.pop(0)
        perform(dst, cores[dst].receive(msg, clock[0]))
    assert replies["tok"] is not None
    st = cores["a@h"].key_status("k", clock[0] + 1.0)
    assert st["grant"] == {"holder": "b@h", "epoch": 1, "left": pytest.approx(2.5), "void": False}
    assert holder_seen(False, "b@h", st, "a@h")
    assert not holder_seen(False, None, st, "a@h")  # granted, but not named: not active
    assert no_holder_reason("a@h", st).startswith("waiting for b@h: it holds the grant of epoch 1")
    assert cores["b@h"].key_status("k", clock[0])["held"] == 1


# ---------------------------------------------------------------------- the readiness probe


def test_outside_a_majority_for_two_terms_is_not_ready():
    problem = "no majority: 1 of the 2 members needed are connected (down: b, c)"
    assert outside_problem(None) is None
    assert outside_problem((problem, 6.9, 7.0)) is None  # a fail-over, a short cut
    assert outside_problem((problem, 8.2, 7.0)) == f"outside a majority for 8 s: {problem}"
    # joined or not, and past the settle timeout too
    assert ready_problem("running", True, 99, 30, None, (problem, 8.2, 7.0)) == (
        f"outside a majority for 8 s: {problem}"
    )
    assert ready_problem("running", True, 99, 30, None, (problem, 3.0, 7.0)) is None
    assert ready_problem("running", True, 99, 30, None, None) is None
    # not joined yet: that comes first; stopping: always
    view_problem = "dist did not answer"
    assert ready_problem("running", False, 3, 30, view_problem, (problem, 8.0, 7.0)).startswith(
        view_problem
    )
    assert ready_problem("stopping", True, 99, 30, None, (problem, 8.0, 7.0)) == "stopping"


# ---------------------------------------------------------------------- the shell's nodes


def test_nodes_shows_each_singleton_holder_or_why_it_has_none():
    notices = {
        "singleton/otpkit_scheduler": {
            "name": "otpkit_scheduler",
            "policy": "majority",
            "holder": None,
            "since": 88.0,
            "reason": "waiting for n3@h: no answer to the grant round of epoch 7 (asked 0.2 s ago)",
        },
        "singleton/single": {"name": "single", "policy": "availability", "holder": "n3@h"},
        "singleton/cold": {"name": "cold", "policy": "majority", "holder": None, "since": None},
        "other/topic": {"name": "x"},
    }
    rows = singleton_rows(notices, 100.0)
    assert [r["name"] for r in rows] == ["cold", "otpkit_scheduler", "single"]
    assert rows[1]["no_holder_for"] == 12.0 and rows[2]["no_holder_for"] is None
    text = _format.render_nodes(
        {
            "node": "n2@h",
            "nodes": ["n3@h"],
            "hidden": [],
            "members": ["n2@h", "n3@h"],
            "singletons": rows,
        }
    )
    assert text.splitlines() == [
        "NODE  SEEN AS    MEMBER",
        "n2@h  this node  yes",
        "n3@h  connected  yes",
        "",
        "SINGLETON         POLICY        HOLDER",
        "cold              majority      none (electing)",
        "otpkit_scheduler  majority      no holder for 12 s: waiting for n3@h: no answer to "
        "the grant round of epoch 7 (asked 0.2 s ago)",
        "single            availability  n3@h",
    ]
