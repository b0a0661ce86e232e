"""The quorum's message shapes: what its actor answers (``quorum._actor.CALLS``) and what
its core takes from the members (``quorum._core.MESSAGES``), and the core against
malformed and hostile input.

Every message the code sends fits its declaration (the core's, in a small simulated
cluster; the client API's, captured); malformed ones are refused naming what is wrong;
a message that does not fit changes nothing in the core, and no message that fits
makes it raise, or send something that cannot cross the wire.
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections import deque
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otpkit import distribution as dist
from otpkit.actors import Pid, Ref, shapes
from otpkit.quorum import _actor
from otpkit.quorum._core import (
    MESSAGES,
    Lease,
    QuorumConfig,
    QuorumCore,
    Reply,
    Send,
    encode_state,
    message_problem,
)

PID = Pid("a@h", 1, 100, 1)
NAMES = ("a@h", "b@h", "c@h")
INCS = {name: (name, i + 1) for i, name in enumerate(NAMES)}

# ---------------------------------------------------------------------- a small cluster


class Net:
    """Cores of ``NAMES`` on a lossless FIFO network; every message sent is kept."""

    def __init__(self) -> None:
        self.now = 0.0
        config = QuorumConfig(expected_size=3)
        self.cores = {
            n: QuorumCore(INCS[n], config, 0.0, random.Random(i)) for i, n in enumerate(NAMES)
        }
        self.queue: deque[tuple[str, tuple[Any, ...]]] = deque()
        self.sent: list[tuple[Any, ...]] = []
        self.replies: dict[Any, Any] = {}
        for a in NAMES:
            for b in NAMES:
                if a != b:
                    self.perform(self.cores[a].node_up(b, self.now))
        self.pump()

    def perform(self, outs: list[Any]) -> None:
        for out in outs:
            if isinstance(out, Send):
                self.sent.append(out.msg)
                self.queue.append((out.node, out.msg))
            elif isinstance(out, Reply):
                self.replies[out.token] = out.value

    def pump(self) -> None:
        while self.queue:
            node, msg = self.queue.popleft()
            self.perform(self.cores[node].receive(msg, self.now))

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now += 0.05
            for core in self.cores.values():
                self.perform(core.tick(self.now))
            self.pump()


def formed() -> Net:
    """A formed cluster in which ``a`` holds ``"k"`` and fenced one effect."""
    net = Net()
    net.run(3.0)
    assert all(c.version >= 1 and c.is_member for c in net.cores.values())
    a = net.cores["a@h"]
    net.perform(a.acquire("k", PID, "t1", 2.0, net.now))
    net.pump()
    net.run(0.2)
    lease = net.replies["t1"]
    assert isinstance(lease, Lease)
    net.perform(a.fence("k", lease.epoch, {"run": 1}, "t2", 2.0, net.now))
    net.pump()
    assert net.replies["t2"] is True
    return net


@pytest.fixture(scope="module")
def cluster() -> Net:
    return formed()


def test_every_message_the_core_sends_fits() -> None:
    net = formed()
    a, b, c = (net.cores[n] for n in NAMES)
    net.run(4.0)  # renewals, gossip
    net.perform(a.release("k", a.held["k"].epoch if "k" in a.held else 1, net.now))
    net.perform(b.acquire("k", PID, "t3", 2.0, net.now))
    net.perform(c.acquire("k", PID, "t4", 2.0, net.now))  # a contest: refusals, blockers
    net.pump()
    net.run(1.0)
    net.perform(c.set_expected(4, "t5", 2.0, net.now))
    net.pump()
    net.run(1.0)
    net.perform(c.leave("t6", 2.0, net.now))  # records, a removal
    net.pump()
    net.run(2.0)
    tags = {msg[0] for msg in net.sent}
    assert tags >= {"hello", "prepare", "promise", "accept", "accepted", "decided"}
    assert tags >= {"grant?", "grant", "fence?", "fenced", "release", "records"}
    for msg in net.sent:
        assert message_problem(msg) is None, msg
        dist.encode_term(msg)  # and it crosses the wire


def test_the_declarations_name_every_message_the_core_handles() -> None:
    from otpkit.quorum._core import _HANDLERS  # noqa: PLC0415 - the core's own table

    assert set(MESSAGES.shapes) == set(_HANDLERS)
    assert _actor.INFOS is MESSAGES


@pytest.mark.parametrize(
    ("msg", "why"),
    [
        (("hello",), "'hello' with 0 fields (expected 5)"),
        (("hello", ("a@h", 1), 1, [[], 3, 3], True), "'hello' with 4 fields (expected 5)"),
        (("grant", ("a@h", 1), "k", 1, True), "'grant' with 4 fields (expected 5..6)"),
        (("nope", ("a@h", 1)), "unknown quorum message 'nope'"),
        ((1, 2), "tag 1 is not str"),
        (["hello", ("a@h", 1)], "is not a tagged tuple"),
        (("release", ("a@h", "1"), "k", 1), "'release' field 1: item 1: '1' is not int"),
        (("release", ("", 1), "k", 1), "'release' field 1: item 0: a str of 0 characters"),
        (("release", ("a@h", 1), "k", -1), "'release' field 3: -1 is outside 0.."),
        (("release", ("a@h", 1), "k", 1 << 63), "'release' field 3: 9223372036854775808 is"),
        (("check?", ("a@h", 1), "k" * 5000, 1), "'check?' field 2: a str of 5000 characters"),
        (("grant", ("a@h", 1), "k", 1, 1, 0), "'grant' field 4: 1 is not bool"),
        (("grant?", ("a@h", 1), "k", 1, 1, 1, math.inf), "'grant?' field 6: inf is outside"),
        (
            ("decided", ("a@h", 1), 2, [[["a@h", 1], ["a@h", 2]], 3, 3]),
            "'decided' field 3: a member set names a node twice",
        ),
        (
            ("accept", ("a@h", 1), 2, (1, "a@h", 1), [[["a@h", 1]], 3]),
            "'accept' field 4: a tuple of 2 items (expected 3)",
        ),
    ],
)
def test_malformed_messages_are_refused_naming_the_problem(msg: Any, why: str) -> None:
    problem = message_problem(msg)
    assert problem is not None and why in problem, problem


def test_a_later_release_may_append_fields_and_an_early_grant_lacks_the_blocker() -> None:
    assert message_problem(("release", ("a@h", 1), "k", 1, "a later field")) is None
    assert message_problem(("grant", ("a@h", 1), "k", 1, True, 3)) is None


# ---------------------------------------------------------------------- the client's calls


class _Actors:
    """Stands in for ``otpkit.actors`` in ``quorum._actor``: keeps each request and
    answers it as the actor would."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def call(self, dst: Any, request: Any, timeout: float = 5.0) -> Any:
        self.requests.append(request)
        return {"members": (1, ["a@h"]), "outside": None}.get(request[0], True)

    def self(self) -> Pid:
        return PID

    def whereis(self, name: str) -> Pid:
        return PID


def test_every_call_the_client_api_makes_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Actors()
    monkeypatch.setattr(_actor, "actors", fake)
    q = _actor
    q.acquire("singleton/x", 0.5)
    q.release("singleton/x", 3)
    q.fence("singleton/x", 3, {"job": "j", "at": [1, 2]}, 5.0)
    q.members()
    q.ready_gate("the replica is not in sync yet")
    q.ready_gate(None)
    q.key_status("singleton/x")
    q.outside()
    q.post_notice("singleton/x", {"name": "x", "policy": "majority", "holder": None})
    q.post_notice("singleton/x", None)
    q.notices()
    q.leave(5.0)
    q.status()
    q.set_expected_size(5)
    q.recover()
    q.subscribe("singleton/x")
    q.subscribe("singleton/x", False)
    q.effects("singleton/x")
    sent = [*fake.requests, ("rejoin_problem",), ("ready_problem",)]  # registry._join's
    assert {r[0] for r in sent} == set(_actor.CALLS.shapes)
    for request in sent:
        assert _actor.CALLS.problem(request) is None, request


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        ((), "() is not a tagged tuple"),
        (("acquire",), "'acquire' with 0 fields (expected 3)"),
        (("acquire", "k", -1, PID), "'acquire' field 2: -1 is outside 0..1e+09"),
        (("acquire", "k", 1.0, "me"), "'acquire' field 3: 'me' is not Pid"),
        (("fence", "k", "3", None, 5.0), "'fence' field 2: '3' is not int"),
        (("set_expected", True, 5.0), "'set_expected' field 1: True is not int"),
        (("notice", "t", {1: "x"}), "'notice' field 2: entry 1: 1 is not str"),
        (("subscribe", "k", PID, 1), "'subscribe' field 3: 1 is not bool"),
        (("key_status", ["k"]), "'key_status' field 1: ['k'] is not str"),
        (("members", 1), "'members' with 1 fields (expected 0)"),
        (("$tick",), "unknown quorum call '$tick'"),
    ],
)
def test_malformed_calls_are_refused_naming_the_problem(request_: Any, why: str) -> None:
    problem = _actor.CALLS.problem(request_)
    assert problem is not None and why in problem, problem
    assert shapes.bad_request(_actor.CALLS.owner, problem) == (
        "error",
        f"bad quorum call: {problem}",
    )


# ---------------------------------------------------------------------- hostile input

_STRS = st.sampled_from([*NAMES, "k", "singleton/x", ""]) | st.text(max_size=8)


def _any() -> st.SearchStrategy[Any]:
    """Values msgpack carries between nodes."""
    leaves = (
        st.none()
        | st.booleans()
        | st.integers(-(1 << 63), (1 << 64) - 1)
        | st.floats()
        | _STRS
        | st.binary(max_size=4)
        | st.builds(Pid, _STRS, st.integers(0, 3), st.integers(0, 9), st.integers(0, 9))
        | st.builds(Ref, _STRS, st.integers(0, 3), st.integers(0, 9))
    )
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.lists(inner, max_size=3).map(tuple)
            | st.dictionaries(_STRS, inner, max_size=2)
        ),
        max_leaves=8,
    )


def _fitting(kind: Any) -> st.SearchStrategy[Any]:
    """Values of ``kind``, edges included (huge, empty, unknown nodes, ...)."""
    if isinstance(kind, shapes.Int):
        near = st.integers(kind.lo, min(kind.hi, kind.lo + 5))
        return near | st.sampled_from([kind.lo, kind.hi]) | st.integers(kind.lo, kind.hi)
    if isinstance(kind, shapes.Num):
        edges = st.sampled_from([kind.lo, kind.hi, 0.0, 1.5])
        return edges | st.floats(kind.lo, kind.hi) | st.integers(math.ceil(kind.lo), 10)
    if isinstance(kind, shapes.Str):
        known = st.sampled_from([s for s in (*NAMES, "k", "z@h") if len(s) >= kind.min_len])
        return known | st.text(min_size=kind.min_len, max_size=min(kind.max_len, 8))
    if isinstance(kind, shapes.Seq):
        return st.lists(_fitting(kind.item), max_size=min(kind.max_len, 4))
    if isinstance(kind, shapes.Tup):
        items = st.tuples(*(_fitting(k) for k in kind.items))
        return items | items.map(list)
    if isinstance(kind, shapes.Map):
        return st.dictionaries(_fitting(kind.key), _fitting(kind.value), max_size=3)
    if isinstance(kind, shapes.Opt):
        return st.none() | _fitting(kind.kind)
    if isinstance(kind, shapes.Either):
        return st.one_of(*(_fitting(k) for k in kind.kinds))
    if isinstance(kind, shapes.Const):
        return st.sampled_from(kind.values)
    if kind is bool:
        return st.booleans()
    if kind is shapes.ANY:
        return _any()
    raise AssertionError(f"no values for {kind!r}")


def _fitting_message() -> st.SearchStrategy[tuple[Any, ...]]:
    """A message of :data:`MESSAGES`, its sender most often a member."""

    def of(shape: shapes.Shape) -> st.SearchStrategy[tuple[Any, ...]]:
        fields = list(shape.fields)
        src = st.sampled_from(list(INCS.values())) | _fitting(fields[0])
        rest = st.tuples(*(_fitting(k) for k in fields[1:]))
        return st.tuples(st.just(shape.tag), src, rest).map(lambda t: (t[0], t[1], *t[2]))

    return st.one_of(*(of(s) for s in MESSAGES.shapes.values()))


def _broken_message() -> st.SearchStrategy[Any]:
    """A message that may not fit: a fitting one with a field replaced, cut short or
    made longer, or any value."""

    def mutate(msg: tuple[Any, ...], data: st.DataObject) -> Any:
        how = data.draw(st.sampled_from(["replace", "cut", "tag"]))
        if how == "cut":
            return msg[: data.draw(st.integers(0, len(msg) - 1))]
        if how == "tag":
            return (data.draw(_any()), *msg[1:])
        at = data.draw(st.integers(1, len(msg) - 1))
        return (*msg[:at], data.draw(_any()), *msg[at + 1 :])

    return st.one_of(
        _any(),
        st.tuples(_fitting_message(), st.data()).map(lambda t: mutate(t[0], t[1])),
    )


def _snapshot(core: QuorumCore) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in vars(core).items() if k != "rng"}


def _still_sound(core: QuorumCore, outs: list[Any], now: float) -> None:
    """What the actor does next with a core must not raise either."""
    outs = outs + core.tick(now + 0.05) + core.tick(now + 5.0)
    for out in outs:
        if isinstance(out, Send):
            dist.encode_term(out.msg)  # the actor sends it to another node
    json.dumps(encode_state(core))  # the actor stores it
    core.key_status("k", now)
    core.quorum_problem(now)
    core.rejoin_problem()


_HYPOTHESIS = settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


@_HYPOTHESIS
@given(st.lists(_broken_message(), min_size=1, max_size=4), st.sampled_from(NAMES))
def test_a_message_that_does_not_fit_changes_nothing(
    cluster: Net, msgs: list[Any], name: str
) -> None:
    core = copy.deepcopy(cluster.cores[name])
    now = cluster.now + 0.01
    for msg in msgs:
        before = _snapshot(core)
        why = message_problem(msg)
        if why is None:
            _still_sound(core, core.receive(msg, now), now)
            continue
        with pytest.raises(ValueError) as info:
            core.receive(msg, now)
        assert str(info.value) == why
        assert _snapshot(core) == before


@_HYPOTHESIS
@given(st.lists(_fitting_message(), min_size=1, max_size=6), st.sampled_from(NAMES))
def test_no_message_that_fits_makes_the_core_raise(
    cluster: Net, msgs: list[tuple[Any, ...]], name: str
) -> None:
    core = copy.deepcopy(cluster.cores[name])
    now = cluster.now + 0.01
    outs: list[Any] = []
    for msg in msgs:
        if message_problem(msg) is not None:  # a member set naming a node twice
            continue
        outs += core.receive(msg, now)
    _still_sound(core, outs, now)


def test_a_fresh_core_takes_hostile_counts() -> None:
    """Versions, epochs and rounds at the top of their range: the core adopts or refuses
    them and what it sends next still crosses the wire."""
    top = 1 << 62
    core = QuorumCore(("a@h", 1), QuorumConfig(), 0.0, random.Random(0))
    core.node_up("b@h", 0.0)
    outs = core.receive(("hello", ("b@h", 2), top, [[["b@h", 2]], top >> 31, 0], True, 0), 0.1)
    outs += core.receive(("prepare", ("b@h", 2), top, (top, "b@h", 2)), 0.1)
    outs += core.receive(("grant", ("b@h", 2), "k", top, True, top, [["c@h", 9], 1e9]), 0.1)
    assert core.version == top
    _still_sound(core, outs, 0.1)
