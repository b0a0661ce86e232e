"""The registry's decisions as plain functions (``otpkit.registry._table``) and how a
resolver travels by name (``_resolvers.resolver_name`` / ``load_resolver``)."""

from __future__ import annotations

import json
import os.path

import pytest

from otpkit.actors._pid import Pid
from otpkit.registry import _resolvers
from otpkit.registry._resolvers import DEFAULT, load_resolver, resolver_name
from otpkit.registry._table import (
    RAISED,
    RESOLVED,
    UNREACHABLE,
    Clash,
    Entry,
    LockTable,
    check_register,
    exchange_plan,
    outcome,
)

A1 = Pid("app@10.0.0.1", 1, 101, 1)
A2 = Pid("app@10.0.0.1", 1, 102, 1)
B1 = Pid("app@10.0.0.2", 7, 201, 1)
B1_OTHER_LIFE = Pid("app@10.0.0.2", 8, 201, 1)  # same os pid, a later node incarnation
C1 = Pid("app@10.0.0.3", 3, 301, 1)
R = DEFAULT
R2 = "tests.harness.clash_resolvers:resolve_first"


# --------------------------------------------------------------------------- register


def test_check_register():
    names = {"a": Entry(A1, R)}
    assert check_register({}, "a", A1) is None
    assert check_register(names, "b", A2) is None
    assert check_register(names, "a", A2) == "taken"
    assert check_register(names, "a", A1) == "taken"  # even for the same pid
    assert check_register(names, "b", A1) == "has_name"  # OTP's check_dupname
    # a pid of another incarnation of the node is another pid
    assert check_register({"b": Entry(B1, R)}, "c", B1_OTHER_LIFE) is None


# --------------------------------------------------------------------------- merge


def test_exchange_plan_copies_one_sided_names_both_ways():
    own = {"mine": Entry(A1, R), "both": Entry(C1, R)}
    other = {"theirs": Entry(B1, R2), "both": Entry(C1, R)}
    plan = exchange_plan(own, other)
    assert plan.copy == {"mine": Entry(A1, R), "theirs": Entry(B1, R2)}
    assert plan.clashes == []


def test_same_pid_on_both_sides_is_no_clash_whatever_the_resolvers():
    """OTP-6341 (``name_die``): no resolver call for the same pid on both sides."""
    plan = exchange_plan({"n": Entry(B1, R)}, {"n": Entry(B1, R2)})
    assert plan.clashes == [] and plan.copy == {}


def test_two_pids_for_a_name_are_one_clash_with_the_resolving_sides_entry_as_own():
    own = {"x": Entry(A1, R2)}
    other = {"x": Entry(B1, R)}
    plan = exchange_plan(own, other)
    assert plan.copy == {}
    assert plan.clashes == [Clash("x", own=Entry(A1, R2), other=Entry(B1, R))]
    # from the other side, own and other swap: the resolver is always the own side's
    (back,) = exchange_plan(other, own).clashes
    assert (back.own, back.other) == (Entry(B1, R), Entry(A1, R2))


def test_pids_of_two_incarnations_clash():
    (clash,) = exchange_plan({"x": Entry(B1, R)}, {"x": Entry(B1_OTHER_LIFE, R)}).clashes
    assert clash.own.pid == B1 and clash.other.pid == B1_OTHER_LIFE


def test_clashes_come_in_one_order_on_every_node():
    own = {n: Entry(A1 if n % 2 else A2, R) for n in (5, 3, 9, 1)}
    other = {n: Entry(B1, R) for n in (9, 1, 5, 3)}
    names = [c.name for c in exchange_plan(own, other).clashes]
    assert names == sorted(names, key=repr)
    assert len(names) == 4


def test_empty_tables():
    plan = exchange_plan({}, {})
    assert plan.copy == {} and plan.clashes == []


# --------------------------------------------------------------------------- outcome


CLASH = Clash("x", own=Entry(A1, R2), other=Entry(B1, R))


@pytest.mark.parametrize(
    ("how", "result", "kept"),
    [
        (RESOLVED, B1, CLASH.other),  # resolve_first: the other side's pid
        (RESOLVED, A1, CLASH.own),  # resolve_second: its own
        (RESOLVED, None, None),  # resolve_none: gone
        (RESOLVED, "bad_answer", None),  # bad_resolver: gone
        (RESOLVED, C1, None),  # a third pid is no answer either
        (RESOLVED, B1_OTHER_LIFE, None),  # nor a pid equal but for its creation
        (RAISED, "RuntimeError('x')", CLASH.other),  # exit_resolver: the other keeps it
        (UNREACHABLE, None, CLASH.other),  # its node halted: the other keeps it
        (UNREACHABLE, A1, CLASH.other),
    ],
)
def test_outcome(how, result, kept):
    assert outcome(CLASH, how, result) == kept


def test_outcome_keeps_the_resolver_stored_with_the_winner():
    assert outcome(CLASH, RESOLVED, A1).resolver == R2
    assert outcome(CLASH, RESOLVED, B1).resolver == R


# --------------------------------------------------------------------------- locks


def test_lock_is_exclusive_between_requesters():
    locks = LockTable()
    assert locks.acquire("r", "req1", A1) is True
    assert locks.acquire("r", "req2", B1) is False
    assert locks.acquire("other", "req2", B1) is True  # another resource
    assert locks.held() == {"r": ("req1", [A1]), "other": ("req2", [B1])}


def test_a_lock_shared_by_one_requester_is_released_by_each_holder():
    """OTP ``otp_1849``."""
    locks = LockTable()
    assert locks.acquire("r", "req", A1)
    assert locks.acquire("r", "req", B1)
    assert locks.acquire("r", "req", A1)  # again: still one holder A1
    assert locks.held() == {"r": ("req", sorted([A1, B1], key=repr))}
    assert locks.release("r", "req", A1) is True
    assert locks.acquire("r", "req2", C1) is False  # B1 still holds it
    assert locks.release("r", "req", B1) is True
    assert locks.held() == {}
    assert locks.acquire("r", "req2", C1) is True


def test_release_by_a_stranger_does_nothing():
    locks = LockTable()
    locks.acquire("r", "req", A1)
    assert locks.release("r", "other", A1) is False  # wrong requester
    assert locks.release("r", "req", B1) is False  # not a holder
    assert locks.release("nothing", "req", A1) is False
    assert locks.held() == {"r": ("req", [A1])}


def test_release_holders_frees_what_the_dead_held():
    locks = LockTable()
    locks.acquire("r1", "req", A1)
    locks.acquire("r2", "req", A1)
    locks.acquire("r2", "req", B1)
    locks.acquire("r3", "req3", C1)
    assert locks.holders() == {A1, B1, C1}
    assert sorted(locks.release_holders([A1])) == ["r1"]
    assert locks.held() == {"r2": ("req", [B1]), "r3": ("req3", [C1])}
    assert locks.release_holders([B1, C1, A2]) == ["r2", "r3"]
    assert locks.holders() == set() and locks.held() == {}
    assert locks.release_holders([A1]) == []


# --------------------------------------------------------------------------- resolvers


def test_builtin_resolvers_by_name_and_by_function():
    assert resolver_name(None) == DEFAULT == "otpkit.registry:random_exit_name"
    for short in ("random_exit_name", "random_notify_name", "notify_all_name"):
        full = f"otpkit.registry:{short}"
        assert resolver_name(short) == full
        assert resolver_name(full) == full
        fn = getattr(_resolvers, short)
        assert resolver_name(fn) == full
        assert load_resolver(full) is fn


def test_a_module_level_function_travels_by_its_import_name():
    assert resolver_name(json.dumps) == "json:dumps"
    assert resolver_name("json:dumps") == "json:dumps"
    assert load_resolver("json:dumps") is json.dumps
    assert load_resolver("os:path.join") is os.path.join  # a dotted attribute


def _nested() -> object:
    def inner(name, a, b):
        return a

    return inner


@pytest.mark.parametrize(
    "resolve",
    [
        lambda name, a, b: a,  # no import name
        _nested(),  # a local function
        "json",  # no ':'
        ":dumps",
        "json:",
        "no_such_module_otpkit:f",
        "json:no_such_function",
        "json:__name__",  # not callable
    ],
)
def test_what_cannot_travel_is_refused_when_registering(resolve):
    with pytest.raises(ValueError, match="resolver"):
        resolver_name(resolve)


def test_a_function_of_main_is_refused():
    def fn(name, a, b):
        return a

    fn.__module__ = "__main__"
    fn.__qualname__ = "fn"
    with pytest.raises(ValueError, match="importable"):
        resolver_name(fn)


def test_a_function_that_is_not_what_its_name_imports_is_refused():
    def dumps(obj):  # claims to be json:dumps
        return ""

    dumps.__module__ = "json"
    dumps.__qualname__ = "dumps"
    with pytest.raises(ValueError):
        resolver_name(dumps)


@pytest.mark.parametrize("resolve", [42, b"json:dumps", ("json", "dumps")])
def test_a_resolver_of_another_type_is_a_type_error(resolve):
    with pytest.raises(TypeError, match="resolver"):
        resolver_name(resolve)


def test_builtins_keep_the_pid_on_the_smaller_node_name():
    """OTP's ``minmax``: by node name, so the same choice on every node."""
    assert _resolvers._order(B1, A1) == (A1, B1)
    assert _resolvers._order(A1, B1) == (A1, B1)
    assert _resolvers._order(A2, A1) == (A1, A2)  # same node: by id
