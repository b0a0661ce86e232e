"""Retries in the ledger (``_ledger_attempts.retry_all``/``start_all``/``attempt_of``), the retry
decisions (``_retry``), the run history (``_history``) and how both replicate and are
stored (``_replica``, ``_store`` schema 3): pure values, no processes."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgpack  # type: ignore[import-untyped]
import pytest

from otpkit.scheduler import _history
from otpkit.scheduler._history import RunRecord, decode_record, encode_record
from otpkit.scheduler._ledger import (
    ClaimKey,
    Ledger,
    LedgerError,
    claim_all,
    finish_all,
    lane_update,
    merge,
)
from otpkit.scheduler._ledger_attempts import attempt_of, retry_all, start_all
from otpkit.scheduler._ledger_codec import (
    decode_ledger,
    decode_update,
    encode_ledger,
    encode_update,
)
from otpkit.scheduler._replica import Replica, apply, decode_replica, encode_replica
from otpkit.scheduler._replica import merge as merge_replicas
from otpkit.scheduler._retry import backoff_delay, may_retry
from otpkit.scheduler._store import SCHEMA_VERSION, Store

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
KEY = ClaimKey("nightly", T0)


def failed_once(epoch: int = 1) -> Ledger:
    ledger, _ = claim_all(Ledger(), [KEY], epoch)
    ledger, taken = retry_all(ledger, [(KEY, 1, T0 + timedelta(seconds=5))], epoch)
    assert taken == [KEY]
    return ledger


# ---------------------------------------------------------------------- ledger


def test_an_attempt_waits_then_is_claimed_and_the_tick_keeps_one_claim() -> None:
    ledger, _ = claim_all(Ledger(), [KEY], 1)
    lane = ledger.lanes[KEY.lane]
    assert attempt_of(lane, T0) == (1, None)
    ledger = failed_once()
    lane = ledger.lanes[KEY.lane]
    assert attempt_of(lane, T0) == (1, T0 + timedelta(seconds=5))
    assert [tick for tick, _ in lane.open] == [T0]  # still one open claim
    ledger, started = start_all(ledger, [(KEY, 2)], 1)
    assert started == [KEY]
    lane = ledger.lanes[KEY.lane]
    assert attempt_of(lane, T0) == (2, None)
    # the tick is never claimed again, whatever its attempts
    assert claim_all(ledger, [KEY], 1) == (ledger, [])
    ledger, closed = finish_all(ledger, [(KEY, "finished")], 1)
    assert closed == [KEY]
    assert ledger.lanes[KEY.lane].open == ()
    assert ledger.lanes[KEY.lane].tries == ()


def test_attempts_are_taken_only_in_order_and_only_under_a_current_epoch() -> None:
    ledger, _ = claim_all(Ledger(), [KEY], 5)
    # attempt 2 before attempt 1 failed: refused
    assert start_all(ledger, [(KEY, 2)], 5) == (ledger, [])
    # attempt 1 reported twice: the second changes nothing
    ledger = retry_all(ledger, [(KEY, 1, T0)], 5)[0]
    assert retry_all(ledger, [(KEY, 1, T0)], 5) == (ledger, [])
    # a skipped attempt number, a report of another attempt: refused
    assert start_all(ledger, [(KEY, 3)], 5) == (ledger, [])
    assert retry_all(ledger, [(KEY, 2, T0)], 5) == (ledger, [])
    # an old holder (lower epoch) is fenced off, like a claim
    assert start_all(ledger, [(KEY, 2)], 4) == (ledger, [])
    assert retry_all(ledger, [(ClaimKey("other", T0), 1, T0)], 5) == (ledger, [])
    with pytest.raises(ValueError, match="attempt"):
        start_all(ledger, [(KEY, 0)], 5)


def test_stamps_grow_with_each_attempt_write() -> None:
    ledger, _ = claim_all(Ledger(), [KEY], 1)
    stamps = [ledger.lanes[KEY.lane].stamp]
    ledger = retry_all(ledger, [(KEY, 1, T0)], 1)[0]
    stamps.append(ledger.lanes[KEY.lane].stamp)
    ledger = start_all(ledger, [(KEY, 2)], 2)[0]
    stamps.append(ledger.lanes[KEY.lane].stamp)
    assert stamps == sorted(stamps) and len(set(stamps)) == 3
    assert ledger.epoch == 2


def test_attempts_encode_and_the_compat_form_is_the_previous_releases() -> None:
    ledger = failed_once()
    assert decode_ledger(encode_ledger(ledger)) == ledger
    update = lane_update(ledger, KEY)
    assert decode_update(encode_update(update)) == update
    opened = encode_update(update)["lane"][3]
    assert opened == [[T0.isoformat(), 1, 1, (T0 + timedelta(seconds=5)).isoformat()]]
    # what a protocol 3 replica reads: two-item open claims, nothing else changed
    old = encode_update(update, compat=True)
    assert old["lane"][3] == [[T0.isoformat(), 1]]
    assert old["lane"][4:] == encode_update(update)["lane"][4:]
    assert decode_update(old).lane.tries == ()
    for bad in (
        [T0.isoformat(), 1, 0, None],
        [T0.isoformat(), 1, "2", None],
        [T0.isoformat(), 1, 2],
    ):
        lane = [*encode_update(update)["lane"][:3], [bad], 1, 2]
        with pytest.raises(LedgerError, match="open claim"):
            decode_update({"format": 1, "lane": lane})


def test_a_merge_keeps_the_attempts_a_same_stamp_copy_of_the_previous_release_lacks() -> None:
    rich = failed_once()
    poor = decode_ledger(encode_ledger(rich, compat=True))
    assert poor.lanes[KEY.lane].stamp == rich.lanes[KEY.lane].stamp
    assert merge([poor, rich]).lanes[KEY.lane] == rich.lanes[KEY.lane]
    assert merge([rich, poor]).lanes[KEY.lane] == rich.lanes[KEY.lane]
    # a newer write wins over richer older ones: a copy of the previous release that took
    # the start of attempt 2 tells that an attempt may be running (so nothing retries it)
    started = start_all(rich, [(KEY, 2)], 1)[0]
    newer_poor = decode_ledger(encode_ledger(started, compat=True))
    lane = merge([rich, newer_poor]).lanes[KEY.lane]
    assert attempt_of(lane, T0) == (1, None)


# ---------------------------------------------------------------------- decisions


@pytest.mark.parametrize(
    ("outcome", "raised", "attempt", "expected"),
    [
        ("failed", True, 1, True),
        ("failed", True, 3, False),  # the last attempt
        ("failed", False, 1, False),  # its worker died: not known to be over by a raise
        ("timed_out", False, 1, True),
        ("interrupted", False, 1, False),  # unknown outcome: never
        ("finished", False, 1, False),
        ("missed", False, 1, False),
    ],
)
def test_which_attempts_are_retried(outcome: str, raised: bool, attempt: int, expected: bool):
    assert may_retry(outcome, raised, attempt, 3) is expected


def test_the_backoff_doubles_up_to_its_cap_with_half_of_it_random() -> None:
    rng = random.Random(7)
    for attempt, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0), (6, 30.0), (500, 30.0)):
        delays = [backoff_delay(attempt, 2.0, 30.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # spread, not one value


# ---------------------------------------------------------------------- history


def record(tick_s: int, outcome: str = "finished", at_s: int | None = None, **kw) -> RunRecord:
    tick = T0 + timedelta(seconds=tick_s)
    at = T0 + timedelta(seconds=tick_s if at_s is None else at_s)
    fields = {
        "job": "nightly",
        "tick": tick,
        "lane": None,
        "outcome": outcome,
        "node": "a@h",
        "start": tick,
        "duration": 0.5,
        "attempts": 1,
        "error": None,
        "at": at,
    }
    fields.update(kw)
    return RunRecord(**fields)  # type: ignore[arg-type]


def test_history_keeps_the_newest_per_job_and_a_later_record_of_a_tick_replaces_it() -> None:
    history = _history.add({}, [record(i) for i in range(30)], keep=20)
    ticks = [r.tick for r in history["nightly"]]
    assert ticks == [T0 + timedelta(seconds=i) for i in range(29, 9, -1)]
    fixed = record(29, "failed", at_s=100, attempts=3, error="boom")
    history = _history.add(history, [fixed], keep=20)
    assert history["nightly"][0] == fixed
    assert len(history["nightly"]) == 20
    stale = record(29, "finished", at_s=50)
    assert _history.add(history, [stale], keep=20)["nightly"][0] == fixed


def test_history_merges_as_a_union_and_drops_what_is_too_old() -> None:
    one = _history.add({}, [record(i) for i in range(0, 10, 2)])
    two = _history.add({}, [record(i) for i in range(1, 10, 2)])
    merged = _history.merge([one, two], keep=6)
    assert [r.tick.second for r in merged["nightly"]] == [9, 8, 7, 6, 5, 4]
    now = T0 + timedelta(days=7, seconds=6)
    assert [r.tick.second for r in _history.recent(merged, "nightly", now)] == [9, 8, 7, 6]
    assert _history.prune(merged, T0 + timedelta(days=8)) == {}


def test_a_record_round_trips_and_a_bad_one_names_its_field() -> None:
    rec = record(3, "failed", attempts=2, error="Traceback ...\nValueError: boom", lane="a@h")
    assert decode_record(encode_record(rec)) == rec
    assert decode_record(msgpack.unpackb(msgpack.packb(encode_record(rec)))) == rec
    for field, value in (("outcome", "exploded"), ("attempts", -1), ("tick", "soon"), ("job", "")):
        raw = {**encode_record(rec), field: value}
        with pytest.raises(LedgerError, match=field):
            decode_record(raw)


def test_a_long_traceback_keeps_its_last_lines() -> None:
    text = "".join(f"  line {i}\n" for i in range(1000)) + "ValueError: boom"
    kept = _history.tail(text)
    assert kept is not None and len(kept) <= _history.ERROR_TAIL
    assert kept.endswith("ValueError: boom") and kept.startswith("  line ")


# ---------------------------------------------------------------------- replication


def test_a_write_adds_runs_and_replicas_merge_them() -> None:
    rep = Replica()
    rep, ok, _ = apply(rep, 1, [["runs", [encode_record(record(i)) for i in range(3)]]])
    assert ok and len(rep.runs["nightly"]) == 3
    full = decode_replica(encode_replica(rep))
    assert full.runs == rep.runs
    # the previous release's form carries neither runs nor attempts
    assert "runs" not in encode_replica(rep, compat=True)
    other, _, _ = apply(Replica(), 1, [["runs", [encode_record(record(5))]]])
    merged = merge_replicas([rep, other])
    assert [r.tick.second for r in merged.runs["nightly"]] == [5, 2, 1, 0]
    with pytest.raises(LedgerError):
        apply(rep, 1, [["runs", [{"job": "x"}]]])


# ---------------------------------------------------------------------- store


def test_the_store_keeps_each_jobs_newest_runs(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite") as store:
        runs = [encode_record(record(i)) for i in range(25)]
        store.save_runs({"nightly": runs}, keep=20)
        stored = [decode_record(r) for r in store.runs()]
        assert sorted(r.tick.second for r in stored) == list(range(5, 25))
        store.save_runs({}, keep=20, older_than=(T0 + timedelta(seconds=10)).isoformat())
        assert len(store.runs()) == 15


def test_a_schema_2_store_gains_the_run_history(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE otpkit_schema (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO otpkit_schema VALUES (2)")
    conn.execute("CREATE TABLE jobs (name TEXT PRIMARY KEY, body BLOB NOT NULL)")
    conn.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY CHECK (id = 1), body BLOB NOT NULL)")
    conn.execute(
        "CREATE TABLE lanes (job TEXT NOT NULL, node TEXT NOT NULL, body BLOB NOT NULL,"
        " PRIMARY KEY (job, node))"
    )
    conn.execute("INSERT INTO jobs VALUES ('kept', ?)", (msgpack.packb({"spec": None}),))
    conn.commit()
    conn.close()
    with Store.open(path) as store:
        assert store.jobs() == {"kept": {"spec": None}}
        assert store.runs() == []
        store.save_runs({"kept": [encode_record(record(1, job="kept"))]}, keep=20)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM otpkit_schema").fetchall() == [(SCHEMA_VERSION,)]
    conn.close()
