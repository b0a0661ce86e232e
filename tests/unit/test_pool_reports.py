"""The task pool's pure parts for retries: a run's identity (key and attempt), acks of
either form and what the outbox keeps of them, the report's two forms (a holder of
protocol 4 or later, the previous release's), the text of a failure and the report of a
worker killed on a timeout (``_pool_wire``, ``_pool_outbox``). The pool's own processes
are in ``tests/cluster/test_pool.py``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from otpkit.actors import Pid
from otpkit.scheduler._history import ERROR_TAIL
from otpkit.scheduler._ledger import MAX_ATTEMPT
from otpkit.scheduler._pool_outbox import Outbox, acked, done_message, started_message, takes_info
from otpkit.scheduler._pool_wire import (
    CASTS,
    ERROR_LIMIT,
    INFOS,
    Report,
    Run,
    admission,
    failure_text,
    killed_report,
    parse_ack,
    parse_id,
    parse_run,
)

ME = "a@127.0.0.1"
PEER = "b@127.0.0.1"
WORKER = Pid(ME, 7, 4300, 14)
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEY = ("job", AT, None)
OTHER = ("job", AT + timedelta(minutes=1), None)


def fits(protocol: Any, msg: Any) -> None:
    assert protocol.problem(msg) is None, (protocol.owner, msg)


# ---------------------------------------------------------------------- identity


def test_a_run_is_its_key_and_its_attempt_one_when_it_names_none() -> None:
    """The previous release's holders send no attempt: that is attempt 1; a key in
    another zone is the same key in UTC."""
    east = timezone(timedelta(hours=2))
    assert parse_id({"key": ["job", AT.astimezone(east), None]}) == (KEY, 1)
    assert parse_id({"key": ["job", AT, None], "attempt": 3}) == (KEY, 3)
    assert parse_id({"key": ["job", AT, None], "attempt": MAX_ATTEMPT})[1] == MAX_ATTEMPT
    run = parse_run(KEY, {"task": "m:f", "attempt": 2, "timeout": 5})
    assert (run.id, run.timeout) == ((KEY, 2), 5)
    assert parse_run(KEY, {"task": "m:f"}).attempt == 1


@pytest.mark.parametrize("attempt", [0, -1, MAX_ATTEMPT + 1, True, 1.0, "2", None, [1]])
def test_a_bad_attempt_is_refused_by_name(attempt: Any) -> None:
    with pytest.raises(ValueError, match="attempt="):
        parse_id({"key": ["job", AT, None], "attempt": attempt})


def test_twice_the_same_attempt_runs_once_another_attempt_only_when_none_is_active() -> None:
    queued: set[Any] = set()
    outbox = {(KEY, 1): "report"}
    # attempt 1 is over (its report waits for its ack): attempt 2 is a new run
    assert admission((KEY, 2), (queued, outbox), {}) == "run"
    assert admission((KEY, 1), (queued, outbox), {}) == "again"
    # attempt 2 queued or running: the same again is ignored, another attempt refused
    running = {(KEY, 2): WORKER}
    assert admission((KEY, 2), (running, queued, outbox), {KEY: 2}) == "again"
    assert admission((KEY, 3), (running, queued, outbox), {KEY: 2}) == "busy"
    assert admission((OTHER, 1), (running, queued, outbox), {KEY: 2}) == "run"


# ---------------------------------------------------------------------- acks


def test_an_ack_of_a_key_takes_every_attempt_one_with_an_attempt_that_one_only() -> None:
    runs = [(KEY, 1), (KEY, 2), (OTHER, 1)]
    assert acked(runs, [parse_ack(["job", AT, None])]) == [(KEY, 1), (KEY, 2)]
    assert acked(runs, [parse_ack(("job", AT, None, 2))]) == [(KEY, 2)]
    assert acked(runs, [parse_ack(["job", AT, None, 3])]) == []
    both = [parse_ack(["job", AT, None, 1]), parse_ack(list(OTHER))]
    assert acked(runs, both) == [(KEY, 1), (OTHER, 1)]
    assert acked(runs, []) == []


@pytest.mark.parametrize(
    "item",
    [
        ["job", AT, None, 0],
        ["job", AT, None, True],
        ["job", AT, None, 1, 2],
        ["job", AT],
        ["job", "2026-03-01", None, 1],
        "job",
    ],
)
def test_a_malformed_ack_item_is_refused(item: Any) -> None:
    with pytest.raises(ValueError):
        parse_ack(item)
    assert CASTS.problem(("ack", [item])) is not None


def test_an_ack_drops_what_it_acknowledges_and_names_its_malformed_items() -> None:
    """The outbox keeps a report until an item of an ack names it; a malformed item is
    handed back with what is wrong with it (the pool logs it), the rest still apply."""
    outbox = Outbox("sched", ME)
    for run_id in [(KEY, 1), (KEY, 2), (OTHER, 1)]:
        outbox.reports[run_id] = Report(run_id[0], "failed", 1.0, 2.0, "e", run_id[1])
        outbox.last_sent[run_id] = 0.0
    bad = outbox.ack([["job", AT, None, 2], ["job", "2026-03-01", None], ("job", AT, None, 0)])
    assert [value for value, _ in bad] == [["job", "2026-03-01", None], ("job", AT, None, 0)]
    assert "at '2026-03-01'" in bad[0][1] and "attempt=0" in bad[1][1]
    assert (KEY, 1) in outbox and (KEY, 2) not in outbox and (KEY, 2) not in outbox.last_sent
    assert outbox.ack([list(KEY)]) == []
    assert [entry[0] for entry in outbox.entries()] == [OTHER]


def test_acks_of_both_forms_fit_the_pool_s_protocol() -> None:
    for msg in (
        ("ack", [list(KEY)]),
        ("ack", [[*KEY, 2], KEY]),
        ("ack", [(*KEY, MAX_ATTEMPT)]),
        ("ack", []),
    ):
        fits(CASTS, msg)
        fits(INFOS, msg)


# ---------------------------------------------------------------------- report forms


def test_a_holder_of_protocol_4_or_on_this_node_takes_info_an_older_one_does_not() -> None:
    versions = {PEER: 4, "c@127.0.0.3": 3, "d@127.0.0.4": 5}
    assert takes_info(ME, ME, {})  # this node runs this code
    assert takes_info(PEER, ME, versions)
    assert takes_info("d@127.0.0.4", ME, versions)
    assert not takes_info("c@127.0.0.3", ME, versions)
    assert not takes_info("e@127.0.0.5", ME, versions)  # not known: the old form


def test_the_reports_in_both_forms() -> None:
    """To a protocol 4 holder: the previous release's fields and an ``info``; to an
    older one, exactly the previous release's 7 and 4 fields (its ``run_done`` takes an
    error of at most 500 characters)."""
    report = Report(KEY, "failed", 1.0, 2.0, "ValueError('x')", 2, True, "Traceback ...")
    old = ("run_done", ME, KEY, "failed", 1.0, 2.0, "ValueError('x')")
    assert done_message(ME, report, info=False) == old
    new = done_message(ME, report, info=True)
    assert new[:7] == old
    assert new[7] == {"attempt": 2, "raised": True, "traceback": "Traceback ..."}
    assert len(new) == 8
    assert started_message(ME, KEY, 1.0, 3, info=False) == ("run_started", ME, KEY, 1.0)
    assert started_message(ME, KEY, 1.0, 3, info=True) == (
        "run_started",
        ME,
        KEY,
        1.0,
        {"attempt": 3},
    )
    finished = done_message(ME, Report(KEY, "finished", 1.0, 2.0, None), info=True)
    assert finished[7] == {"attempt": 1, "raised": False, "traceback": None}


def test_the_state_lists_an_outbox_entry_with_its_attempt_last() -> None:
    """The previous release's holder reads an entry's first item (its key)."""
    entry = Report(KEY, "finished", 1.0, 2.0, None, 4).entry()
    assert entry == [KEY, "finished", 1.0, 2.0, None, 4]


# ---------------------------------------------------------------------- failures


def _nested(depth: int) -> None:
    """Raise ``depth`` calls deep, through two functions in turn (Python folds a run of
    the same frame into one line)."""
    if depth:
        _other(depth - 1)
        return
    raise ValueError("at the bottom")


def _other(depth: int) -> None:
    _nested(depth)


def test_a_failure_s_text_is_its_repr_and_its_traceback_s_last_lines() -> None:
    try:
        _nested(120)
    except ValueError as exc:
        error, trace = failure_text(exc)
    assert error == "ValueError('at the bottom')"
    assert trace is not None and len(trace) <= ERROR_TAIL
    assert trace.endswith("ValueError: at the bottom")
    # cut at a line start: every line is a whole line of the traceback
    first = trace.splitlines()[0]
    assert first.startswith("  File ") or first.startswith("    "), first
    assert "_nested" in trace and "_other" in trace
    assert "repeated" not in trace


def test_a_short_traceback_is_whole_and_a_long_repr_is_cut() -> None:
    try:
        raise RuntimeError("x" * 2 * ERROR_LIMIT)
    except RuntimeError as exc:
        error, trace = failure_text(exc)
    assert len(error) == ERROR_LIMIT and error.startswith("RuntimeError('xxx")
    assert trace is not None and trace.startswith("Traceback (most recent call last):")


def test_a_failure_with_a_cause_shows_the_cause() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise LookupError("outer") from inner
    except LookupError as exc:
        _, trace = failure_text(exc)
    assert trace is not None and "KeyError: 'inner'" in trace and "LookupError: outer" in trace


def test_an_exception_whose_repr_and_str_raise_still_has_a_text() -> None:
    class Odd(Exception):
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

        def __str__(self) -> str:
            raise RuntimeError("no str")

    try:
        raise Odd()
    except Odd as exc:
        error, trace = failure_text(exc)
    assert error == "<Odd: repr failed>"
    assert trace is None or "Odd" in trace


def test_a_worker_s_reports_fit_the_pool_s_protocol() -> None:
    start, end = 1.7e9, 1.7e9 + 1
    for msg in (
        ("done", WORKER, KEY, "failed", start, end, "ValueError('x')", True, "x" * ERROR_TAIL),
        ("done", WORKER, KEY, "failed", None, end, "no module", True, None),
        ("done", WORKER, KEY, "finished", start, end, None, False, None),
        ("$timeout", WORKER, KEY, 2),
    ):
        fits(INFOS, msg)
    for msg in (
        ("done", WORKER, KEY, "failed", start, end, "e", "yes", None),
        ("done", WORKER, KEY, "failed", start, end, "e", True, "x" * (ERROR_TAIL + 1)),
        ("$timeout", WORKER, KEY),
        ("$timeout", WORKER, KEY, 0),
    ):
        assert INFOS.problem(msg) is not None, msg


# ---------------------------------------------------------------------- timeouts


def test_a_killed_worker_s_run_timed_out_only_once_it_is_gone() -> None:
    run = Run(KEY, "m:f", (), {}, 0.5, 1, 3)
    gone = killed_report(run, 1.0, 7.0, WORKER, gone=True)
    assert (gone.outcome, gone.attempt, gone.raised, gone.traceback) == (
        "timed_out",
        3,
        False,
        None,
    )
    assert gone.error is not None and "timed out after 0.5 s" in gone.error
    assert "killed" in gone.error
    alive = killed_report(run, 1.0, 7.0, WORKER, gone=False)
    assert (alive.outcome, alive.attempt, alive.raised) == ("failed", 3, False)
    assert alive.error is not None and "did not die" in alive.error
    assert len(alive.error) <= ERROR_LIMIT
