"""The message shapes of a node's other system processes: every supervisor (the kernel
too, with its own calls), the dist process, the discovery poller.

Every call the code sends fits (the APIs' requests, kept by a stand-in for
``otpkit.actors``); malformed ones are refused naming what is wrong; a supervisor's
answer to another node is plain data (its rows are Python objects: one once crashed the
supervisor as it was sent).
"""

from __future__ import annotations

from typing import Any

import pytest

from otpkit import distribution, supervision
from otpkit.actors import Pid, Ref, shapes
from otpkit.discovery import _poller
from otpkit.distribution import _actor as _dist_actor
from otpkit.node._node import KERNEL_CALLS
from otpkit.supervision import ChildInfo, ChildSpec, child_spec
from otpkit.supervision._supervisor import CALLS, INFOS, wire_value

PID = Pid("a@h", 1, 10, 1)


class _Actors:
    """Stands in for ``otpkit.actors``: keeps every request, answers ``("ok",)``."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def call(self, dst: Any, request: Any, timeout: float = 5.0) -> Any:
        self.requests.append(request)
        return ("ok",)

    def self(self) -> Pid:
        return PID

    def whereis(self, name: str) -> Pid:
        return PID


# ---------------------------------------------------------------------- supervisors


def test_every_call_the_supervisor_api_makes_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Actors()
    monkeypatch.setattr(supervision, "actors", fake)
    spec = ChildSpec("w", "tests.harness.node_driver:Nothing")
    supervision.start_child(PID, spec)
    supervision.start_child(PID, (1, 2))  # simple_one_for_one's extra arguments
    supervision.terminate_child(PID, "w")
    supervision.terminate_child(PID, PID)
    supervision.restart_child(PID, "w")
    supervision.delete_child(PID, ("singleton", "x"))
    supervision.which_children(PID)
    supervision.count_children(PID)
    supervision.get_childspec(PID, "w")
    sent = [*fake.requests, ("which_children_ext",)]  # the admin service's
    assert {r[0] for r in sent} == set(CALLS.shapes)
    for request in sent:
        assert CALLS.problem(request) is None, request


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (("nope",), "unknown supervisor call 'nope'"),
        (("which_children", 1), "'which_children' with 1 fields (expected 0)"),
        (("start_child",), "'start_child' with 0 fields (expected 1)"),
        (("terminate_child", 1, 2), "'terminate_child' with 2 fields (expected 1)"),
        (("_api_which_children",), "unknown supervisor call '_api_which_children'"),
        ("which_children", "'which_children' is not a tagged tuple"),
        ((), "() is not a tagged tuple"),
    ],
)
def test_malformed_supervisor_calls_are_refused(request_: Any, why: str) -> None:
    problem = CALLS.problem(request_)
    assert problem is not None and why in problem, problem


def test_a_supervisor_takes_no_plain_message() -> None:
    assert INFOS.problem(("$try_again", 1)) == "unknown supervisor message '$try_again'"


def test_a_supervisor_answers_another_node_with_plain_data() -> None:
    spec = child_spec(ChildSpec("w", "tests.harness.node_driver:Nothing"))
    rows = [ChildInfo(("singleton", "x"), PID, "worker", ["m"]), ChildInfo("y", None, "s", [])]
    assert wire_value(rows) == [(("singleton", "x"), PID, "worker", ["m"]), ("y", None, "s", [])]
    assert type(wire_value(rows)[0]) is tuple  # not a ChildInfo: msgpack carries no class
    assert wire_value(("ok", spec)) == ("ok", repr(spec))
    error = ValueError("x")
    assert wire_value(("error", (error, {"a": b"b", 1: 2.5}))) == (
        "error",
        (repr(error), {"a": b"b", 1: 2.5}),
    )
    ref = Ref("a@h", 1, 5)
    assert wire_value([True, ref, 1 << 64, -(1 << 63)]) == [True, ref, repr(1 << 64), -(1 << 63)]
    deep: Any = "leaf"
    for _ in range(40):
        deep = [deep]
    flat = wire_value(deep)
    for _ in range(32):
        flat = flat[0]
    assert isinstance(flat, str)  # deeper than the codec carries: its repr


def test_the_kernel_calls_fit_and_malformed_ones_are_refused() -> None:
    # actors._client.ClientRuntime.spawn's and Node.stop's
    spawn = ("$spawn", "pkg.mod:Actor", (1, 2), {}, None, {"parent": PID, "link_parent": False})
    assert KERNEL_CALLS.problem(spawn) is None
    assert KERNEL_CALLS.problem(("$stop",)) is None
    problem = KERNEL_CALLS.problem(("$spawn", "pkg.mod:Actor", [1, 2], {}, None, {}))
    assert problem == "'$spawn' field 2: [1, 2] is not tuple"
    assert KERNEL_CALLS.problem(("$stop", 1)) == "'$stop' with 1 fields (expected 0)"


# ---------------------------------------------------------------------- dist


def test_every_call_the_dist_api_makes_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Actors()
    monkeypatch.setattr(distribution, "actors", fake)
    distribution.nodes()
    distribution.hidden_nodes()
    distribution.versions()
    distribution.connect_node("b@127.0.0.2", "127.0.0.2", 4370)
    distribution.disconnect_node("b@127.0.0.2")
    distribution.drop_link("b@127.0.0.2", "silent for 2.0 s in a global lock round")
    distribution.monitor_nodes(True)
    distribution.monitor_witnesses(False)
    distribution.witness_info()
    distribution.register_service("otpkit_sched:jobs")
    # the node's and the discovery poller's
    sent = [*fake.requests, ("port",), ("set_known", {"b@10.0.0.2": ("10.0.0.2", 4370)})]
    assert {r[0] for r in sent} == set(_dist_actor.CALLS.shapes)
    for request in sent:
        assert _dist_actor.call_problem(request, local=True) is None, request


@pytest.mark.parametrize(
    ("request_", "local", "why"),
    [
        (("nodes",), False, "the dist process answers processes of its own node only"),
        (("witness_info",), False, "its own node only"),  # its answer holds the cookie
        (("connect", "b@h", "10.0.0.2", 70000), True, "'connect' field 3: 70000 is outside"),
        (("connect", "b@h", "a\x00b", 4370), True, "peer 'b@h': a host name with a NUL"),
        (("connect", "b@h", "", 4370), True, "'connect' field 2: a str of 0 characters"),
        (("set_known", [("b@h", ("h", 1))]), True, "'set_known' field 1: [('b@h'"),
        (("monitor_nodes", "me", True), True, "'monitor_nodes' field 1: 'me' is not Pid"),
        (("service", "", PID), True, "'service' field 1: a str of 0 characters"),
    ],
)
def test_malformed_dist_calls_are_refused(request_: Any, local: bool, why: str) -> None:
    problem = _dist_actor.call_problem(request_, local)
    assert problem is not None and why in problem, problem


@pytest.mark.parametrize(
    ("name", "addr", "ok"),
    [
        ("b@10.0.0.2", ("10.0.0.2", 4370), True),
        ("b@h", ("h", 0), True),
        ("b@h", ("h", -1), False),
        ("b@h", ["h", 4370], True),
        ("b@h", ("h",), False),
        ("x" * 300, ("h", 1), False),
        ("b@h", ("h\x00", 1), False),
        (7, ("h", 1), False),
    ],
)
def test_set_known_leaves_out_each_peer_that_cannot_be_dialled(
    name: Any, addr: Any, ok: bool
) -> None:
    assert (_dist_actor.peer_problem(name, addr) is None) is ok


# ---------------------------------------------------------------------- discovery


@pytest.mark.parametrize("request_", ["settled", "peers", ("settled",), ("peers",)])
def test_the_discovery_calls_fit_bare_or_tagged(request_: Any) -> None:
    msg = (request_,) if type(request_) is str else request_
    assert _poller.CALLS.problem(msg) is None


def test_malformed_discovery_calls_and_messages_are_refused() -> None:
    assert _poller.CALLS.problem(("poll",)) == "unknown discovery call 'poll'"
    assert _poller.CALLS.problem(("peers", 1)) == "'peers' with 1 fields (expected 0)"
    # its timer is an object of its own: a plain "poll" once added a polling chain
    assert _poller.INFOS.problem("poll") == "'poll' is not a tagged tuple"
    assert shapes.bad_request(_poller.CALLS.owner, "x") == ("error", "bad discovery call: x")
