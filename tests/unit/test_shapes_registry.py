"""The registry's message shapes: the global name server (``registry._global.CALLS``,
``INFOS``), its merger and resolver, and a Singleton's manager and warm child.

Every call and message the code sends fits (the registry's API, a lock round and a
merge, run against a stand-in for ``otpkit.actors`` that keeps what they send); the
malformed ones of the attacks (a watcher that is no pid, a name that is a list, a
malformed resolver batch, a reply of another node that does not fit) are refused
naming what is wrong.
"""

from __future__ import annotations

from typing import Any

import pytest

from otpkit import registry
from otpkit.actors import From, Pid, Ref, shapes
from otpkit.registry import _global, _singleton
from otpkit.registry._global import (
    CALLS,
    GLOBAL_LOCK,
    INFOS,
    MERGER_INFOS,
    RESOLVER_INFOS,
    BadReply,
    _granted,
    call_problem,
    checked_reply,
)

A, B = "a@h", "b@h"
PID_A, PID_B = Pid(A, 1, 10, 1), Pid(B, 1, 20, 1)
SERVER_A, SERVER_B = Pid(A, 1, 11, 1), Pid(B, 1, 21, 1)
RESOLVER = "otpkit.registry._singleton:keep_smaller_node"


class _Actors:
    """Stands in for ``otpkit.actors`` on node ``a@h``, connected to ``b@h``: keeps every
    request and message, and answers as the servers of both nodes would (the two tables
    share a name bound to two pids: a clash)."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def self(self) -> Pid:
        return PID_A

    def whereis(self, name: str) -> Pid:
        return SERVER_A

    def _answer(self, dst: Pid, request: Any) -> Any:
        self.sent.append(request)
        op = request[0]
        if op == "targets":
            return {A: SERVER_A, B: SERVER_B}
        if op == "peer":
            return SERVER_B
        if op == "up":
            return [A, B]
        if op == "table":
            pid = PID_A if dst == SERVER_A else PID_B
            return [(("only", dst.node), pid, RESOLVER), ("clash", pid, RESOLVER)]
        if op == "resolve":
            return [("resolved", own) for _name, _other, own, _resolver in request[1]]
        if op == "lock_probe":
            return [True, {A: SERVER_A, B: SERVER_B}, None]
        if op in ("sync", "names"):
            return []
        return True

    def call(self, dst: Any, request: Any, timeout: float = 5.0) -> Any:
        return self._answer(dst, request)

    def multi_call(self, dsts: list[Any], request: Any, timeout: float = 5.0) -> Any:
        return [("ok", self._answer(d, request)) for d in dsts]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> _Actors:
    fake = _Actors()
    monkeypatch.setattr(_global, "actors", fake)
    monkeypatch.setattr(registry, "actors", fake)
    monkeypatch.setattr(_global, "_targets_seen", {})
    # a node started earlier in this process (the session's `node` fixture) leaves its
    # shared name table: reads must go to the (fake) server here
    monkeypatch.setattr(_global._shared, "read", lambda: None)
    return fake


def test_every_call_the_registry_makes_fits(fake: _Actors) -> None:
    assert registry.register_name(("job", 1), PID_A)
    registry.re_register_name(b"bytes", PID_A, timeout=1.0)
    registry.unregister_name(7, timeout=1.0)
    assert registry.set_lock(("res", 1), retries=0)
    registry.del_lock(("res", 1))
    assert registry.trans("r", lambda: 1, requester=("me", 2), retries=0) == 1
    assert _global.elect("single", lambda: PID_A, RESOLVER) is True
    _global.unregister_if("single", PID_A)
    registry.registered_names()
    _global.whereis("single")  # without the node's shared table
    registry.sync(1.0)
    merger = _global._Merger()
    merger.server, merger.node, merger.peer = SERVER_A, B, SERVER_B
    assert merger._run()  # a lock round on both nodes, tables, a resolver, the writes
    # the Singleton manager's and the join check's
    sent = [*fake.sent, ("watch", "single", PID_A), ("unwatch", "single", PID_A), ("info",)]
    assert {r[0] for r in sent} == set(CALLS.shapes)
    for request in sent:
        assert call_problem(request) is None, request


def test_every_message_the_registry_sends_fits() -> None:
    serial, resolver = 3, Pid(A, 1, 12, 1)
    for msg in [
        ("hello", A, SERVER_A),
        ("resync", B),
        ("resolved", serial, resolver),
        ("resolve_check",),
        ("merge_failed", B),
    ]:
        assert INFOS.problem(msg) is None, msg
    assert MERGER_INFOS.problem(("merge", B, SERVER_B)) is None
    batch = [("clash", PID_B, PID_A, RESOLVER)]
    assert RESOLVER_INFOS.problem(("resolve", From(PID_B, Ref(B, 1, 5)), batch, 1)) is None


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        # the attack's: a watcher that is no pid, kept and crashing the next binding
        (("watch", "single", "not a pid"), "'watch' field 2: 'not a pid' is not Pid"),
        (("watch", ["a", "list"], PID_A), "'watch' field 1: ['a', 'list'] is not str"),
        (("watch", ("a", ["b"]), PID_A), "'watch': name ('a', ['b']): expected a str, int"),
        (("whereis", 1.5), "'whereis' field 1: 1.5 is not str"),
        (("lock", ["res"], PID_A, PID_A), "the lock's resource and requester must be hash"),
        (("lock", "global", PID_A, "me"), "'lock' field 3: 'me' is not Pid"),
        (("lock_probe", "global", PID_A, PID_A, ("nope", 1)), "'lock_probe' field 4:"),
        (("apply", [("n", (PID_A,))]), "'apply' field 1: item 0: item 1:"),
        (("apply", [("n", (PID_A, RESOLVER)), "x"]), "'apply' field 1: item 1:"),
        (("commit", "global", PID_A, PID_A, [([1], None)]), "'commit' field 4: item 0"),
        (("resolve", [("n", PID_A, PID_B)]), "'resolve' field 1: item 0: a tuple of 3"),
        (("resolve", [("n", PID_A, "pid", RESOLVER)]), "'resolve' field 1: item 0: item 2"),
        (("synced", [A, 1]), "'synced' field 1: item 1: 1 is not str"),
        (("peer", None), "'peer' field 1: None is not str"),
        (("sync", 1), "'sync' with 1 fields (expected 0)"),
        (("merge", B, SERVER_B), "unknown global call 'merge'"),
        ((), "() is not a tagged tuple"),
    ],
)
def test_malformed_calls_are_refused_naming_the_problem(request_: Any, why: str) -> None:
    problem = call_problem(request_)
    assert problem is not None and why in problem, problem


@pytest.mark.parametrize(
    ("protocol", "msg", "why"),
    [
        (INFOS, ("hello", A), "'hello' with 1 fields (expected 2)"),
        (INFOS, ("hello", A, "pid"), "'hello' field 2: 'pid' is not Pid"),
        (INFOS, ("resolved", -1, SERVER_A), "'resolved' field 1: -1 is outside"),
        (INFOS, ("resync",), "'resync' with 0 fields"),
        (INFOS, ("$tick",), "unknown global message '$tick'"),
        (MERGER_INFOS, ("merge", B), "'merge' with 1 fields (expected 2)"),
        (MERGER_INFOS, ("merge", B, "pid"), "'merge' field 2: 'pid' is not Pid"),
        # the attack's: a resolver batch from another node (its caller is no From)
        (RESOLVER_INFOS, ("resolve", PID_B, [], 1), "'resolve' field 1: <b@h.20> is not From"),
        (
            RESOLVER_INFOS,
            ("resolve", From(PID_B, Ref(B, 1, 5)), [("n", PID_A)], 1),
            "'resolve' field 2: item 0: a tuple of 2 items (expected 4)",
        ),
    ],
)
def test_malformed_messages_are_refused_naming_the_problem(
    protocol: shapes.Protocol, msg: Any, why: str
) -> None:
    problem = protocol.problem(msg)
    assert problem is not None and why in problem, problem


@pytest.mark.parametrize(
    ("value", "kind", "why"),
    [
        ("nope", _global._TARGETS, "b@h's answer to 'q' does not fit: 'nope' is not a dict"),
        ({A: "pid"}, _global._TARGETS, "entry 'a@h': 'pid' is not Pid"),
        ([("n", PID_A)], _global._TABLE, "item 0: a tuple of 2 items (expected 3)"),
        ([(["n"], PID_A, RESOLVER)], _global._TABLE, "item 0: item 0: ['n'] is not str"),
        ([(("n", [1]), PID_A, RESOLVER)], _global._TABLE, "('n', [1]) is not a global name"),
    ],
)
def test_a_reply_of_another_node_that_does_not_fit_fails_the_merge(
    value: Any, kind: Any, why: str
) -> None:
    with pytest.raises(BadReply, match="does not fit") as info:
        checked_reply(value, kind, B, "q")
    assert why in str(info.value)
    rows = [(("n", 1), PID_A, RESOLVER)]
    assert checked_reply(rows, _global._TABLE, B, "table") is rows


def test_only_a_grant_counts_as_granted_in_a_lock_round() -> None:
    assert _granted(("ok", [True, {A: SERVER_A}, None]))
    assert not _granted(("ok", [False, {A: SERVER_A}, None]))
    # an error answer (a server that cannot read the request) once counted as a grant
    assert not _granted(("ok", ("error", "bad global call: ...")))
    assert not _granted(("ok", "error"))
    assert not _granted(("timeout", None))


def test_a_name_nested_deeper_than_dist_carries_is_not_a_global_name() -> None:
    name: Any = "leaf"
    for _ in range(64):
        name = (name,)
    assert _global.valid_name(name)
    assert not _global.valid_name((name,))


# ---------------------------------------------------------------------- Singleton


def test_the_singleton_calls_fit() -> None:
    workers, managers = _singleton.WORKER_CALLS, _singleton.MANAGER_CALLS
    assert workers.problem(_singleton.IS_ACTIVE) is None
    assert workers.problem(_singleton.PROBLEM) is None
    info = {"node": A, "creation": 1, "host": "127.0.0.1", "cookie": b"c", "tls": False}
    assert workers.problem((_singleton.WITNESS_PEERS, {**info, "peers": {}})) is None
    assert managers.problem(("$singleton", "state")) is None
    assert "'$singleton' field 1: 'stat' is not one of 'state'" in str(
        managers.problem(("$singleton", "stat"))
    )
    assert "'$singleton_witness' field 1: 'x' is not a dict" in str(
        workers.problem((_singleton.WITNESS_PEERS, "x"))
    )
    assert _singleton.MANAGER_INFOS.problem(("$singleton", "elect", 1)) is not None


class _Worker(_singleton.SingletonWorker):
    def handle_request(self, request: Any, from_: From) -> Any:
        return ("mine", request)


def test_a_warm_child_refuses_a_malformed_singleton_call_and_passes_its_own_on() -> None:
    worker = _Worker()
    worker.pid = PID_A
    caller = From(PID_B, Ref(B, 1, 5))
    assert worker.handle_call(_singleton.IS_ACTIVE, caller) is False
    assert worker.handle_call(("$singleton", "is_active", "more"), caller) == (
        "error",
        "bad singleton worker call: '$singleton' with 2 fields (expected 1)",
    )
    assert worker.handle_call(("$singleton",), caller)[0] == "error"
    assert worker.handle_call(("jobs",), caller) == ("mine", ("jobs",))
    assert worker.handle_call([1], caller) == ("mine", [1])


def test_a_plain_warm_child_refuses_what_it_does_not_take_and_goes_on() -> None:
    worker = _singleton.SingletonWorker()
    worker.pid = PID_A
    caller = From(PID_B, Ref(B, 1, 5))
    assert worker.handle_call(("jobs",), caller) == (
        "error",
        "bad singleton worker call: unknown singleton worker call ('jobs',)",
    )
    worker.handle_cast(("run", 1))  # dropped, with a line
    worker.handle_info(12)
    assert worker.handle_call(_singleton.PROBLEM, caller) is None


def test_the_manager_timers_are_its_own() -> None:
    """A tuple from another process is no timer of the manager's (a remote
    ``("$singleton", "watchdog")`` once started one more watchdog chain each)."""
    timer = _singleton._Timer("watchdog")
    assert timer == _singleton._Timer("watchdog")
    assert _singleton.MANAGER_INFOS.problem(("$singleton", "watchdog")) is not None


def test_the_lock_round_constants_are_in_the_protocol() -> None:
    assert CALLS.problem(("lock", GLOBAL_LOCK, PID_A, PID_A)) is None
