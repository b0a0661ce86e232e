"""Child specs and supervisor flags (no processes, no node): OTP's defaults and its
validation (OTP's supervisor.erl: default flags, child spec fields, auto_shutdown;
supervisor_SUITE child_specs_map, sup_flags, sup_start_map_faulty_specs,
significant_simple), with errors that name the field."""

from __future__ import annotations

import math
from typing import Any

import pytest

from otpkit.actors._actor import Actor
from otpkit.errors import InvalidChildSpec, InvalidSupervisorFlags
from otpkit.supervision._spec import (
    DEFAULT_WORKER_SHUTDOWN,
    ChildSpec,
    SupFlags,
    check_specs,
    child_spec,
    sup_flags,
)
from otpkit.supervision._supervisor import DynamicSupervisor, Supervisor


class Worker(Actor):
    pass


class MySup(Supervisor):
    pass


class CustomSupervisorType(Actor):
    otp_type = "supervisor"


class BadOtpType(Actor):
    otp_type = "process"


class PlainClass:
    """A callable class that is not an Actor: a worker by default."""


def start_fn() -> None:
    return None


def assert_names(exc: InvalidChildSpec | InvalidSupervisorFlags, field: str, value: Any) -> None:
    """The exception's field/value and its message name the bad field and value."""
    assert exc.field == field
    if isinstance(value, float) and math.isnan(value):
        assert isinstance(exc.value, float)
        assert math.isnan(exc.value)
    else:
        assert exc.value == value
        assert type(exc.value) is type(value)
    assert f"{field}={value!r}" in str(exc)


# --------------------------------------------------------------------------------------
# child_spec: defaults
# --------------------------------------------------------------------------------------


def test_defaults_of_a_function_child() -> None:
    assert child_spec(ChildSpec("c", start_fn)) == ChildSpec(
        id="c",
        start=start_fn,
        args=(),
        kwargs={},
        restart="permanent",
        shutdown=5.0,
        type="worker",
        significant=False,
    )


def test_default_worker_shutdown_is_five_seconds() -> None:
    assert DEFAULT_WORKER_SHUTDOWN == 5.0


@pytest.mark.parametrize(
    ("start", "otp_type", "shutdown"),
    [
        (start_fn, "worker", 5.0),
        (Worker, "worker", 5.0),
        (Actor, "worker", 5.0),
        (PlainClass, "worker", 5.0),
        (Supervisor, "supervisor", "infinity"),
        (DynamicSupervisor, "supervisor", "infinity"),
        (MySup, "supervisor", "infinity"),
        (CustomSupervisorType, "supervisor", "infinity"),
        ("some.module:Thing", "worker", 5.0),
    ],
)
def test_type_and_shutdown_default_from_the_start(start: Any, otp_type: str, shutdown: Any) -> None:
    spec = child_spec({"id": "c", "start": start})
    assert (spec.type, spec.shutdown) == (otp_type, shutdown)
    assert (spec.restart, spec.significant) == ("permanent", False)


@pytest.mark.parametrize(
    ("start", "given_type", "shutdown"),
    [
        # an explicit type wins over the class's, and the shutdown default follows it
        (Supervisor, "worker", 5.0),
        (Worker, "supervisor", "infinity"),
        (start_fn, "supervisor", "infinity"),
        (start_fn, "worker", 5.0),
    ],
)
def test_explicit_type_wins(start: Any, given_type: str, shutdown: Any) -> None:
    spec = child_spec(ChildSpec("c", start, type=given_type))
    assert (spec.type, spec.shutdown) == (given_type, shutdown)


@pytest.mark.parametrize("shutdown", [0, 0.0, 0.25, 1, 5, 30.5, 3600, "brutal_kill", "infinity"])
@pytest.mark.parametrize("start", [Worker, MySup])
def test_explicit_shutdown_is_kept(start: Any, shutdown: Any) -> None:
    # OTP sup_stop_infinity: infinity is allowed for a worker as for a supervisor
    spec = child_spec(ChildSpec("c", start, shutdown=shutdown))
    assert spec.shutdown == shutdown
    assert type(spec.shutdown) is type(shutdown)


@pytest.mark.parametrize("restart", ["permanent", "transient", "temporary"])
def test_restart_types(restart: str) -> None:
    assert child_spec(ChildSpec("c", Worker, restart=restart)).restart == restart


@pytest.mark.parametrize("restart", ["transient", "temporary"])
def test_significant_allowed_unless_permanent(restart: str) -> None:
    spec = child_spec(ChildSpec("c", Worker, restart=restart, significant=True))
    assert spec.significant is True


def test_args_become_a_tuple_and_kwargs_a_dict() -> None:
    class Frozen(dict[str, Any]):
        pass

    kwargs = Frozen(a=1)
    spec = child_spec({"id": "c", "start": Worker, "args": [1, 2], "kwargs": kwargs})
    assert spec.args == (1, 2)
    assert type(spec.args) is tuple
    assert spec.kwargs == {"a": 1}
    assert type(spec.kwargs) is dict


def test_mapping_spec_with_every_field() -> None:
    spec = child_spec(
        {
            "id": ("pool", 3),
            "start": "pkg.mod:start",
            "args": (1,),
            "kwargs": {"k": "v"},
            "restart": "transient",
            "shutdown": "brutal_kill",
            "type": "worker",
            "significant": True,
        }
    )
    assert spec == ChildSpec(
        ("pool", 3), "pkg.mod:start", (1,), {"k": "v"}, "transient", "brutal_kill", "worker", True
    )


def test_mapping_unknown_keys_are_ignored() -> None:
    # OTP sup_start_map_faulty_specs: unknown keys in a map spec are ignored
    spec = child_spec(
        {"id": "c", "start": Worker, "modules": ["x"], "foo": "bar", ("not", "a", "str"): 1}
    )
    assert spec == child_spec(ChildSpec("c", Worker))


@pytest.mark.parametrize("cid", ["c", 0, None, ("t", 1), frozenset({1}), Worker, 2.5])
def test_any_hashable_id(cid: Any) -> None:
    assert child_spec({"id": cid, "start": Worker}).id == cid


def test_child_spec_is_idempotent() -> None:
    once = child_spec({"id": "c", "start": MySup, "args": [1]})
    assert child_spec(once) == once


def test_modules() -> None:
    assert child_spec(ChildSpec("c", "pkg.mod:Thing")).modules == ["pkg.mod:Thing"]
    assert child_spec(ChildSpec("c", Worker)).modules == [f"{__name__}:Worker"]
    assert child_spec(ChildSpec("c", start_fn)).modules == [f"{__name__}:start_fn"]


# --------------------------------------------------------------------------------------
# child_spec: invalid fields
# --------------------------------------------------------------------------------------


def test_missing_id() -> None:
    with pytest.raises(InvalidChildSpec) as info:
        child_spec({"start": Worker, "restart": "permanent"})
    assert_names(info.value, "id", None)
    assert "missing_id" in str(info.value)


def test_missing_start() -> None:
    with pytest.raises(InvalidChildSpec) as info:
        child_spec({"id": "child7"})
    assert_names(info.value, "start", None)
    assert info.value.child_id == "child7"
    assert "missing_start" in str(info.value)
    assert "'child7'" in str(info.value)


def test_missing_id_is_reported_before_missing_start() -> None:
    with pytest.raises(InvalidChildSpec) as info:
        child_spec({})
    assert info.value.field == "id"


@pytest.mark.parametrize(
    ("fields", "field", "value"),
    [
        # start
        ({"start": 42}, "start", 42),
        ({"start": "no_colon_here"}, "start", "no_colon_here"),
        ({"start": None}, "start", None),
        # id
        ({"id": ["unhashable"]}, "id", ["unhashable"]),
        ({"id": {"a": 1}}, "id", {"a": 1}),
        # args / kwargs
        ({"args": "abc"}, "args", "abc"),
        ({"args": 5}, "args", 5),
        ({"kwargs": [("a", 1)]}, "kwargs", [("a", 1)]),
        # restart
        ({"restart": "always"}, "restart", "always"),
        ({"restart": "Permanent"}, "restart", "Permanent"),
        ({"restart": None}, "restart", None),
        ({"restart": 1}, "restart", 1),
        # shutdown: negative, bool, other strings, other types, NaN
        ({"shutdown": -1}, "shutdown", -1),
        ({"shutdown": -0.001}, "shutdown", -0.001),
        ({"shutdown": True}, "shutdown", True),
        ({"shutdown": False}, "shutdown", False),
        ({"shutdown": "forever"}, "shutdown", "forever"),
        ({"shutdown": "kill"}, "shutdown", "kill"),
        ({"shutdown": "Infinity"}, "shutdown", "Infinity"),
        ({"shutdown": "5"}, "shutdown", "5"),
        ({"shutdown": [5]}, "shutdown", [5]),
        ({"shutdown": float("nan")}, "shutdown", float("nan")),
        # type
        ({"type": "process"}, "type", "process"),
        ({"type": "Supervisor"}, "type", "Supervisor"),
        ({"type": ""}, "type", ""),
        # significant: only a bool
        ({"significant": 1, "restart": "transient"}, "significant", 1),
        ({"significant": 0, "restart": "transient"}, "significant", 0),
        ({"significant": "true", "restart": "transient"}, "significant", "true"),
        ({"significant": None, "restart": "transient"}, "significant", None),
        # significant with permanent (bad_combination), explicit or by default
        ({"significant": True, "restart": "permanent"}, "significant", True),
        ({"significant": True}, "significant", True),
    ],
)
@pytest.mark.parametrize("as_mapping", [True, False])
def test_invalid_field(fields: dict[str, Any], field: str, value: Any, as_mapping: bool) -> None:
    raw: dict[str, Any] = {"id": "kid", "start": Worker, **fields}
    spec: Any = raw if as_mapping else ChildSpec(**raw)
    with pytest.raises(InvalidChildSpec) as info:
        child_spec(spec)
    assert_names(info.value, field, value)
    if field != "id":
        assert info.value.child_id == "kid"
        assert "'kid'" in str(info.value)


def test_significant_with_permanent_names_the_combination() -> None:
    with pytest.raises(InvalidChildSpec) as info:
        child_spec(ChildSpec("c", Worker, significant=True))
    assert "permanent" in str(info.value)
    assert "bad_combination" in str(info.value)


def test_bad_otp_type_of_the_class_is_named() -> None:
    with pytest.raises(InvalidChildSpec) as info:
        child_spec(ChildSpec("c", BadOtpType))
    assert_names(info.value, "type", "process")


def test_invalid_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        child_spec(ChildSpec("c", Worker, restart="sometimes"))


@pytest.mark.parametrize("spec", [("c", Worker), "c", 42, None, [("id", "c")]])
def test_not_a_spec(spec: Any) -> None:
    with pytest.raises(InvalidChildSpec) as info:
        child_spec(spec)
    assert_names(info.value, "spec", spec)


# --------------------------------------------------------------------------------------
# sup_flags
# --------------------------------------------------------------------------------------


def test_flag_defaults() -> None:
    expected = SupFlags("one_for_one", 1, 5, "never")
    assert sup_flags(None) == expected
    assert sup_flags({}) == expected
    assert sup_flags(SupFlags()) == expected


def test_flags_unknown_keys_are_ignored() -> None:
    # OTP sup_flags: unknown flags are ignored
    flags = sup_flags({"strategy": "rest_for_one", "max_restarts": 9, "foo": "bar", 3: 4})
    assert flags == SupFlags("rest_for_one", 1, 5, "never")


@pytest.mark.parametrize(
    "flags",
    [
        {"strategy": "one_for_one"},
        {"strategy": "one_for_all", "intensity": 0},
        {"strategy": "rest_for_one", "intensity": 10, "period": 3600},
        {"strategy": "simple_one_for_one", "auto_shutdown": "never"},
        {"period": 0.5},
        {"period": 0.001},
        {"auto_shutdown": "any_significant"},
        {"auto_shutdown": "all_significant", "strategy": "one_for_all"},
    ],
)
def test_valid_flags(flags: dict[str, Any]) -> None:
    assert sup_flags(flags) == SupFlags(**flags)
    assert sup_flags(SupFlags(**flags)) == SupFlags(**flags)


@pytest.mark.parametrize(
    ("flags", "field", "value"),
    [
        ({"strategy": "one_for_two"}, "strategy", "one_for_two"),
        ({"strategy": "ONE_FOR_ONE"}, "strategy", "ONE_FOR_ONE"),
        ({"strategy": None}, "strategy", None),
        ({"strategy": ""}, "strategy", ""),
        ({"intensity": -1}, "intensity", -1),
        ({"intensity": True}, "intensity", True),
        ({"intensity": False}, "intensity", False),
        ({"intensity": 1.0}, "intensity", 1.0),
        ({"intensity": 2.5}, "intensity", 2.5),
        ({"intensity": "1"}, "intensity", "1"),
        ({"intensity": None}, "intensity", None),
        ({"period": 0}, "period", 0),
        ({"period": 0.0}, "period", 0.0),
        ({"period": -1}, "period", -1),
        ({"period": -0.5}, "period", -0.5),
        ({"period": True}, "period", True),
        ({"period": "5"}, "period", "5"),
        ({"period": None}, "period", None),
        ({"period": float("nan")}, "period", float("nan")),
        ({"auto_shutdown": "always"}, "auto_shutdown", "always"),
        ({"auto_shutdown": None}, "auto_shutdown", None),
        ({"auto_shutdown": True}, "auto_shutdown", True),
        # OTP significant_simple: auto_shutdown must be never for simple_one_for_one
        (
            {"strategy": "simple_one_for_one", "auto_shutdown": "any_significant"},
            "auto_shutdown",
            "any_significant",
        ),
        (
            {"strategy": "simple_one_for_one", "auto_shutdown": "all_significant"},
            "auto_shutdown",
            "all_significant",
        ),
    ],
)
@pytest.mark.parametrize("as_mapping", [True, False])
def test_invalid_flag(flags: dict[str, Any], field: str, value: Any, as_mapping: bool) -> None:
    raw: Any = flags if as_mapping else SupFlags(**flags)
    with pytest.raises(InvalidSupervisorFlags) as info:
        sup_flags(raw)
    assert_names(info.value, field, value)


def test_simple_one_for_one_auto_shutdown_names_the_combination() -> None:
    with pytest.raises(InvalidSupervisorFlags) as info:
        sup_flags({"strategy": "simple_one_for_one", "auto_shutdown": "any_significant"})
    assert "simple_one_for_one" in str(info.value)


@pytest.mark.parametrize("flags", [42, "one_for_one", ["one_for_one", 1, 5]])
def test_flags_of_an_invalid_type(flags: Any) -> None:
    with pytest.raises(InvalidSupervisorFlags) as info:
        sup_flags(flags)
    assert_names(info.value, "flags", flags)


# --------------------------------------------------------------------------------------
# check_specs: rules across the specs
# --------------------------------------------------------------------------------------


def test_check_specs_keeps_order_and_fills_defaults() -> None:
    checked = check_specs(
        SupFlags(),
        [
            {"id": "a", "start": Worker},
            ChildSpec("b", MySup),
            {"id": "c", "start": start_fn, "restart": "temporary", "unknown": 1},
        ],
    )
    assert checked == [
        ChildSpec("a", Worker, (), {}, "permanent", 5.0, "worker", False),
        ChildSpec("b", MySup, (), {}, "permanent", "infinity", "supervisor", False),
        ChildSpec("c", start_fn, (), {}, "temporary", 5.0, "worker", False),
    ]


@pytest.mark.parametrize("specs", [[], ()])
def test_check_specs_empty(specs: Any) -> None:
    assert check_specs(SupFlags(), specs) == []


@pytest.mark.parametrize("specs", [None, {"id": "a", "start": Worker}, "a", 3])
def test_check_specs_not_a_list(specs: Any) -> None:
    with pytest.raises(InvalidChildSpec) as info:
        check_specs(SupFlags(), specs)
    assert_names(info.value, "children", specs)


def test_duplicate_ids() -> None:
    with pytest.raises(InvalidChildSpec) as info:
        check_specs(
            SupFlags(),
            [
                {"id": "a", "start": Worker},
                {"id": "b", "start": Worker},
                {"id": "a", "start": start_fn},
            ],
        )
    assert_names(info.value, "id", "a")
    assert "duplicate_child_name" in str(info.value)


def test_an_invalid_spec_in_the_list_is_reported() -> None:
    with pytest.raises(InvalidChildSpec) as info:
        check_specs(
            SupFlags(), [{"id": "a", "start": Worker}, {"id": "b", "start": Worker, "shutdown": -5}]
        )
    assert_names(info.value, "shutdown", -5)
    assert info.value.child_id == "b"


@pytest.mark.parametrize("restart", ["transient", "temporary"])
def test_significant_needs_auto_shutdown(restart: str) -> None:
    spec = {"id": "s", "start": Worker, "restart": restart, "significant": True}
    with pytest.raises(InvalidChildSpec) as info:
        check_specs(SupFlags(auto_shutdown="never"), [spec])
    assert_names(info.value, "significant", True)
    assert info.value.child_id == "s"
    assert "never" in str(info.value)
    assert "bad_combination" in str(info.value)


@pytest.mark.parametrize("auto_shutdown", ["any_significant", "all_significant"])
@pytest.mark.parametrize("restart", ["transient", "temporary"])
def test_significant_with_auto_shutdown(auto_shutdown: str, restart: str) -> None:
    spec = {"id": "s", "start": Worker, "restart": restart, "significant": True}
    checked = check_specs(SupFlags(auto_shutdown=auto_shutdown), [spec])
    assert [(s.id, s.restart, s.significant) for s in checked] == [("s", restart, True)]


def test_simple_one_for_one_with_one_spec() -> None:
    flags = SupFlags(strategy="simple_one_for_one")
    assert check_specs(flags, [{"id": "tpl", "start": Worker, "restart": "temporary"}]) == [
        ChildSpec("tpl", Worker, (), {}, "temporary", 5.0, "worker", False)
    ]


@pytest.mark.parametrize("count", [0, 2, 3])
def test_simple_one_for_one_needs_exactly_one_spec(count: int) -> None:
    specs = [{"id": f"c{i}", "start": Worker} for i in range(count)]
    with pytest.raises(InvalidChildSpec) as info:
        check_specs(SupFlags(strategy="simple_one_for_one"), specs)
    assert_names(info.value, "children", count)
    assert "simple_one_for_one" in str(info.value)
