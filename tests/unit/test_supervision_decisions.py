"""The supervisor's pure decisions (no processes, no node): restart intensity, restart
types, strategies, auto_shutdown; plus the exit-reason rule they rely on (the local frame
reader's tests are in ``test_local_wire.py``).

Expected values come from OTP's supervisor.erl and supervisor_SUITE (flags and
strategies, the restart intensity, child specs, auto_shutdown), not from the
implementation.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from otpkit.actors._pid import is_normal_exit
from otpkit.supervision._decisions import (
    add_restart,
    auto_shutdown_due,
    needs_restart,
    restart_plan,
)

try:  # optional: not a dependency of the project
    from hypothesis import given, settings
    from hypothesis import strategies as st

    HAVE_HYPOTHESIS = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_HYPOTHESIS = False


# --------------------------------------------------------------------------------------
# add_restart: OTP's restart intensity window
# --------------------------------------------------------------------------------------


def run_crashes(times: list[float], intensity: int, period: float) -> int | None:
    """Feed crash times to add_restart as a supervisor does; the index of the refused
    restart (the supervisor gives up there), or None if every restart is allowed."""
    window: tuple[float, ...] = ()
    for i, now in enumerate(times):
        allowed, window = add_restart(window, now, intensity, period)
        if not allowed:
            return i
    return None


@pytest.mark.parametrize(
    ("restarts", "now", "intensity", "period", "expected"),
    [
        # the first restart with an empty history: counted, then compared
        ((), 100.0, 1, 5, (True, (100.0,))),
        ((), 100.0, 3, 5, (True, (100.0,))),
        # intensity 0: the very first restart is refused (it is counted first)
        ((), 100.0, 0, 5, (False, (100.0,))),
        ((), 100.0, 0, 0.001, (False, (100.0,))),
        # default flags (1 in 5 s): the second restart within 5 s is refused
        ((100.0,), 104.0, 1, 5, (False, (104.0, 100.0))),
        # ... but one after the window is allowed, and the old one drops out
        ((100.0,), 106.0, 1, 5, (True, (106.0,))),
        # inclusive edge: r >= now - period keeps a restart exactly `period` old
        ((100.0,), 105.0, 1, 5, (False, (105.0, 100.0))),
        # (intensity + 1)-th inside the window is refused, the intensity-th is not
        ((102.0, 101.0), 103.0, 3, 5, (True, (103.0, 102.0, 101.0))),
        ((103.0, 102.0, 101.0), 104.0, 3, 5, (False, (104.0, 103.0, 102.0, 101.0))),
        # OTP one_for_one test: {2, 3600}, the third crash kills the supervisor
        ((), 0.0, 2, 3600, (True, (0.0,))),
        ((0.0,), 1.0, 2, 3600, (True, (1.0, 0.0))),
        ((1.0, 0.0), 2.0, 2, 3600, (False, (2.0, 1.0, 0.0))),
        # only the restarts inside the window are kept, newest first
        ((109.0, 108.0, 104.0, 101.0), 110.0, 5, 5, (True, (110.0, 109.0, 108.0))),
        ((109.0, 108.0, 105.0, 104.0), 110.0, 3, 5, (False, (110.0, 109.0, 108.0, 105.0))),
        # fractional periods, full resolution (binary-exact values)
        ((1.0,), 1.5, 1, 0.5, (False, (1.5, 1.0))),
        ((1.0,), 1.625, 1, 0.5, (True, (1.625,))),
        ((1.0,), 1.25, 1, 0.25, (False, (1.25, 1.0))),
        ((1.0,), 1.375, 1, 0.25, (True, (1.375,))),
        # a restart just a hair past the edge is forgotten
        ((100.0,), 105.000001, 1, 5, (True, (105.000001,))),
        ((100.0,), 104.999999, 1, 5, (False, (104.999999, 100.0))),
    ],
)
def test_add_restart(
    restarts: tuple[float, ...],
    now: float,
    intensity: int,
    period: float,
    expected: tuple[bool, tuple[float, ...]],
) -> None:
    assert add_restart(restarts, now, intensity, period) == expected


def test_add_restart_accepts_a_list_and_returns_a_tuple() -> None:
    history = [3.0, 2.0]
    result = add_restart(history, 4.0, 5, 10)
    assert result == (True, (4.0, 3.0, 2.0))
    assert type(result[1]) is tuple
    assert history == [3.0, 2.0]  # the caller's history is not modified


def test_add_restart_a_refused_restart_is_in_the_returned_window() -> None:
    # OTP keeps State1 (with Now added) even when it terminates
    allowed, window = add_restart((9.0,), 10.0, 1, 5)
    assert (allowed, window) == (False, (10.0, 9.0))


@pytest.mark.parametrize(
    ("times", "intensity", "period", "refused_at"),
    [
        # OTP multiple_restarts: intensity 1, period 1, four crashes 2.1 s apart survive
        ([0.0, 2.1, 4.2, 6.3], 1, 1, None),
        # the same crashes 0.5 s apart: the second is refused
        ([0.0, 0.5, 1.0, 1.5], 1, 1, 1),
        # sliding window, 3 in 10 s: at 11 the window [1, 11] holds 4, 8, 11 (0 slid
        # out); at 12 the window [2, 12] holds 4, 8, 11, 12: refused
        ([0.0, 4.0, 8.0, 11.0, 12.0], 3, 10, 4),
        ([0.0, 4.0, 8.0, 11.0, 15.0], 3, 10, None),
        # at the inclusive edge: 0 and 10 are both in the window [0, 10]
        ([0.0, 10.0], 1, 10, 1),
        ([0.0, 10.5], 1, 10, None),
        # intensity 0 refuses the first
        ([7.0], 0, 5, 0),
        # sustained rate, 5 in 30 s: one every 6.25 s runs forever ...
        ([6.25 * k for k in range(50)], 5, 30, None),
        # ... one every 6 s does not: the window [0, 30] is inclusive and holds six
        ([6.0 * k for k in range(50)], 5, 30, 5),
        ([5.9 * k for k in range(50)], 5, 30, 5),
        # fractional period: 1 in 0.25 s
        ([0.0, 0.25], 1, 0.25, 1),
        ([0.0, 0.375, 0.75, 1.125], 1, 0.25, None),
    ],
)
def test_add_restart_sequences(
    times: list[float], intensity: int, period: float, refused_at: int | None
) -> None:
    assert run_crashes(times, intensity, period) == refused_at


if HAVE_HYPOTHESIS:

    @settings(max_examples=300, deadline=None)
    @given(
        gaps=st.lists(st.integers(min_value=0, max_value=40).map(lambda n: n / 8), max_size=30),
        intensity=st.integers(min_value=0, max_value=5),
        period=st.integers(min_value=1, max_value=40).map(lambda n: n / 8),
    )
    def test_add_restart_matches_the_definition(
        gaps: list[float], intensity: int, period: float
    ) -> None:
        """The supervisor survives up to crash i iff, for every crash so far, the crashes
        in [t - period, t] (inclusive) number at most `intensity`."""
        times = list(itertools.accumulate(gaps))
        expected = None
        for i, t in enumerate(times):
            in_window = sum(1 for s in times[: i + 1] if s >= t - period)
            if in_window > intensity:
                expected = i
                break
        assert run_crashes(times, intensity, period) == expected


# --------------------------------------------------------------------------------------
# is_normal_exit / needs_restart: restart type x exit reason
# --------------------------------------------------------------------------------------

NORMAL_REASONS: list[Any] = [
    "normal",
    "shutdown",
    ("shutdown", "x"),
    ("shutdown", None),
    ("shutdown", ("nested", 1)),
    ("shutdown", "normal"),
]
ABNORMAL_REASONS: list[Any] = [
    "killed",
    "died",
    "kill",
    "noproc",
    "noconnection",
    "Normal",
    "shutdown ",
    ("shutdown",),  # {shutdown} is not {shutdown, _}
    ("shutdown", 1, 2),
    ["shutdown", "x"],  # a list is not a tuple
    ("normal", "x"),
    ("x", "shutdown"),
    None,
    0,
    RuntimeError("boom"),
    ("EXIT", "normal"),
]


@pytest.mark.parametrize("reason", NORMAL_REASONS)
def test_is_normal_exit_true(reason: Any) -> None:
    assert is_normal_exit(reason) is True


@pytest.mark.parametrize("reason", ABNORMAL_REASONS)
def test_is_normal_exit_false(reason: Any) -> None:
    assert is_normal_exit(reason) is False


@pytest.mark.parametrize(
    ("restart", "reason", "expected"),
    [
        # permanent: always (permanent_normal / permanent_shutdown / permanent_abnormal)
        *(("permanent", r, True) for r in NORMAL_REASONS + ABNORMAL_REASONS),
        # transient: only after an abnormal exit (transient_normal/_shutdown/_abnormal)
        *(("transient", r, False) for r in NORMAL_REASONS),
        *(("transient", r, True) for r in ABNORMAL_REASONS),
        # temporary: never (temporary_normal / _shutdown / _abnormal), even when killed
        *(("temporary", r, False) for r in NORMAL_REASONS + ABNORMAL_REASONS),
    ],
)
def test_needs_restart(restart: str, reason: Any, expected: bool) -> None:
    assert needs_restart(restart, reason) is expected


@pytest.mark.parametrize(
    ("restart", "reason", "expected"),
    [
        ("permanent", "normal", True),
        ("permanent", "shutdown", True),
        ("permanent", ("shutdown", "bye"), True),
        ("permanent", "killed", True),
        ("transient", "normal", False),
        ("transient", "shutdown", False),
        ("transient", ("shutdown", "bye"), False),
        ("transient", "killed", True),
        ("transient", "died", True),
        ("temporary", "normal", False),
        ("temporary", "killed", False),
        ("temporary", "died", False),
    ],
)
def test_needs_restart_table(restart: str, reason: Any, expected: bool) -> None:
    assert needs_restart(restart, reason) is expected


# --------------------------------------------------------------------------------------
# restart_plan: which children each strategy stops and starts
# --------------------------------------------------------------------------------------

ORDER = ("c1", "c2", "c3", "c4", "c5")


@pytest.mark.parametrize(
    ("strategy", "failed", "stop", "start"),
    [
        # one_for_one: only the failed child, nothing stopped
        *(("one_for_one", f, [], [f]) for f in ORDER),
        *(("simple_one_for_one", f, [], [f]) for f in ORDER),
        # one_for_all: every other child stopped newest first, all started oldest first
        ("one_for_all", "c1", ["c5", "c4", "c3", "c2"], list(ORDER)),
        ("one_for_all", "c3", ["c5", "c4", "c2", "c1"], list(ORDER)),
        ("one_for_all", "c5", ["c4", "c3", "c2", "c1"], list(ORDER)),
        # rest_for_one: the children after the failed one (OTP order_of_children: a
        # restart of child 3 stops 5 then 4 and starts 3, 4, 5)
        ("rest_for_one", "c1", ["c5", "c4", "c3", "c2"], list(ORDER)),
        ("rest_for_one", "c2", ["c5", "c4", "c3"], ["c2", "c3", "c4", "c5"]),
        ("rest_for_one", "c3", ["c5", "c4"], ["c3", "c4", "c5"]),
        ("rest_for_one", "c4", ["c5"], ["c4", "c5"]),
        ("rest_for_one", "c5", [], ["c5"]),
    ],
)
def test_restart_plan(strategy: str, failed: str, stop: list[str], start: list[str]) -> None:
    assert restart_plan(strategy, ORDER, failed) == (stop, start)


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
def test_restart_plan_single_child(strategy: str) -> None:
    assert restart_plan(strategy, ["only"], "only") == ([], ["only"])


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
def test_restart_plan_does_not_modify_the_order(strategy: str) -> None:
    order = [1, 2, 3]
    stop, start = restart_plan(strategy, order, 2)
    assert order == [1, 2, 3]
    start.append(99)
    stop.append(99)
    assert order == [1, 2, 3]


def test_restart_plan_any_hashable_ids() -> None:
    order = [("a", 1), 7, None, frozenset({1})]
    assert restart_plan("rest_for_one", order, 7) == (
        [frozenset({1}), None],
        [7, None, frozenset({1})],
    )
    assert restart_plan("one_for_all", order, None) == (
        [frozenset({1}), 7, ("a", 1)],
        order,
    )


def test_restart_plan_unknown_strategy() -> None:
    with pytest.raises(ValueError, match="one_for_two"):
        restart_plan("one_for_two", ORDER, "c1")


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
def test_restart_plan_unknown_child(strategy: str) -> None:
    with pytest.raises(ValueError):
        restart_plan(strategy, ORDER, "nope")


# --------------------------------------------------------------------------------------
# auto_shutdown_due
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auto_shutdown", "significant", "restarted", "others_alive", "expected"),
    [
        # never: disabled whatever happens
        *(
            ("never", sig, rst, alive, False)
            for sig, rst, alive in itertools.product([True, False], repeat=3)
        ),
        # a non-significant child never triggers it (nonsignificant_* tests)
        *(
            (mode, False, rst, alive, False)
            for mode in ("any_significant", "all_significant")
            for rst, alive in itertools.product([True, False], repeat=2)
        ),
        # a significant child that is restarted (transient, abnormal) does not
        *(
            (mode, True, True, alive, False)
            for mode in ("any_significant", "all_significant")
            for alive in (True, False)
        ),
        # any_significant: the first significant child that ends by itself
        ("any_significant", True, False, True, True),
        ("any_significant", True, False, False, True),
        # all_significant: only the last active significant child
        ("all_significant", True, False, True, False),
        ("all_significant", True, False, False, True),
    ],
)
def test_auto_shutdown_due(
    auto_shutdown: str, significant: bool, restarted: bool, others_alive: bool, expected: bool
) -> None:
    assert auto_shutdown_due(auto_shutdown, significant, restarted, others_alive) is expected


@pytest.mark.parametrize(
    ("restart", "reason", "expected"),
    [
        # transient significant: a normal end shuts down, an abnormal one restarts it
        ("transient", "normal", True),
        ("transient", "shutdown", True),
        ("transient", ("shutdown", "done"), True),
        ("transient", "killed", False),
        ("transient", "died", False),
        # temporary significant: any end counts
        ("temporary", "normal", True),
        ("temporary", "killed", True),
        ("temporary", "died", True),
    ],
)
def test_auto_shutdown_with_restart_types(restart: str, reason: Any, expected: bool) -> None:
    """OTP's auto_shutdown (supervisor_SUITE significant_transient /
    significant_temporary): the supervisor combines needs_restart and auto_shutdown_due."""
    restarted = needs_restart(restart, reason)
    assert auto_shutdown_due("any_significant", True, restarted, True) is expected
    assert auto_shutdown_due("all_significant", True, restarted, False) is expected
    assert auto_shutdown_due("all_significant", True, restarted, True) is False
