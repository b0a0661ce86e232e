"""The message shapes system processes check before they act (``otpkit.actors.shapes``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otpkit.actors import Pid, Ref, shapes

PID = Pid("a@127.0.0.1", 1, 7, 99)

PROTOCOL = shapes.Protocol(
    "test call",
    shapes.Shape("acquire", (shapes.Str(8), shapes.Num(0, 60), Pid)),
    shapes.Shape("members"),
    shapes.Shape("notice", (str, shapes.Opt(shapes.Map(str, int, 4))), optional=1),
    shapes.Shape("peers", (shapes.Seq(shapes.Tup((str, shapes.Int(1, 65535))), 3),), more=True),
    shapes.Shape("mode", (shapes.Const(("on", "off")), shapes.Either((int, bytes)))),
)


@pytest.mark.parametrize(
    "msg",
    [
        ("acquire", "k", 1, PID),
        ("acquire", "12345678", 0.5, PID),
        ("members",),
        ("notice", "t"),
        ("notice", "t", None),
        ("notice", "t", {"a": 1}),
        ("peers", [("a", 1), ["b", 65535]]),
        ("peers", [], "a later release's field"),
        ("mode", "on", 3),
        ("mode", "off", b"x"),
    ],
)
def test_what_fits_passes(msg: tuple[Any, ...]) -> None:
    assert PROTOCOL.problem(msg) is None


@pytest.mark.parametrize(
    ("msg", "why"),
    [
        ((), "() is not a tagged tuple"),
        (["members"], "['members'] is not a tagged tuple"),
        ("members", "'members' is not a tagged tuple"),
        ((b"members",), "tag b'members' is not str"),
        (("nope",), "unknown test call 'nope'"),
        (("members", 1), "'members' with 1 fields (expected 0)"),
        (("acquire", "k", 1), "'acquire' with 2 fields (expected 3)"),
        (("acquire", "123456789", 1, PID), "'acquire' field 1: a str of 9 characters"),
        (("acquire", "k", True, PID), "'acquire' field 2: True is not a number"),
        (("acquire", "k", float("nan"), PID), "'acquire' field 2: nan is not a number"),
        (("acquire", "k", 61, PID), "'acquire' field 2: 61 is outside 0..60"),
        (("acquire", "k", 1, "pid"), "'acquire' field 3: 'pid' is not Pid"),
        (("notice",), "'notice' with 0 fields (expected 1..2)"),
        (("notice", "t", {"a": "1"}), "'notice' field 2: entry 'a': '1' is not int"),
        (("notice", "t", {str(i): i for i in range(5)}), "a dict of 5 entries (at most 4)"),
        (("peers", [("a", 0)]), "'peers' field 1: item 0: item 1: 0 is outside 1..65535"),
        (("peers", [("a", 1, 2)]), "item 0: a tuple of 3 items (expected 2)"),
        (("peers", [("a", 1)] * 4), "a list of 4 items (at most 3)"),
        (("peers", 5), "5 is not a list"),
        (("mode", "On", 1), "'On' is not one of 'on', 'off'"),
        (("mode", "on", True), "True is not int and True is not bytes"),
        (("mode", "on", None), "None is not int and None is not bytes"),
    ],
)
def test_what_does_not_fit_is_named(msg: Any, why: str) -> None:
    problem = PROTOCOL.problem(msg)
    assert problem is not None and why in problem, problem


def test_an_int_is_never_a_bool_and_a_long_value_is_quoted_short() -> None:
    assert shapes.problem(True, int) == "True is not int"
    assert shapes.problem(1, bool) == "1 is not bool"
    assert shapes.problem(1, float) is None
    long = shapes.problem("x" * 10_000, int)
    assert long is not None and len(long) < 100


def test_lists_are_messages_only_where_declared() -> None:
    listy = shapes.Protocol("list call", shapes.Shape("members"), lists=True)
    assert listy.problem(["members"]) is None
    assert "members" in listy and "other" not in listy


def test_a_tag_declared_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        shapes.Protocol("x", shapes.Shape("a"), shapes.Shape("a"))


def test_the_reply_to_a_bad_call_names_the_owner() -> None:
    assert shapes.bad_request("quorum call", "() is not a tagged tuple") == (
        "error",
        "bad quorum call: () is not a tagged tuple",
    )


def test_drops_are_logged_once_a_minute_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    drops = shapes.DropLog(logging.getLogger("otpkit.test"))
    with caplog.at_level(logging.DEBUG, "otpkit.test"):
        for i in range(5):
            drops.dropped("quorum", ("x", i), "unknown", now=100.0 + i)
        drops.dropped("quorum", ("y",), "unknown", now=161.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "quorum: dropped ('x', 0): unknown",
        "quorum: dropped ('y',): unknown (4 more dropped since the last line)",
    ]


_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.just(PID)
    | st.just(Ref("a@127.0.0.1", 1, 3))
    | st.just(datetime(2026, 1, 1, tzinfo=UTC)),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(_VALUES, st.tuples(st.sampled_from(["acquire", "notice", "peers", "mode"]))))
def test_any_value_gets_an_answer_never_an_exception(value: Any) -> None:
    problem = PROTOCOL.problem(value)
    assert problem is None or isinstance(problem, str)


@settings(max_examples=300, deadline=None)
@given(st.lists(_VALUES, max_size=4))
def test_random_fields_under_a_valid_tag_get_an_answer(fields: list[Any]) -> None:
    for tag in PROTOCOL.shapes:
        problem = PROTOCOL.problem((tag, *fields))
        assert problem is None or isinstance(problem, str)
