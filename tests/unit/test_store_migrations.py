"""Stores migrate forward and refuse a newer version: the quorum's state file
(``quorum._core.STATE_FORMAT``, ``migrate_state``) and the scheduler's SQLite store
(``scheduler._store.SCHEMA_VERSION``, its migration steps).

A release that raises a version without changing the shape (as the operations suite's
upgrade test does to a copy of this code) reads the older files as they are and writes
the new version; a file of a newer version is refused with a line naming the file and
both versions, and left byte for byte as it was."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from otpkit.quorum import _core as quorum_core
from otpkit.quorum._actor import QuorumStore, StoreError
from otpkit.quorum._core import (
    STATE_FORMAT,
    QuorumConfig,
    QuorumCore,
    StateError,
    decode_state,
    encode_state,
    migrate_state,
)
from otpkit.scheduler import _store
from otpkit.scheduler._ledger import ClaimKey, Ledger, claim_all, finish_all
from otpkit.scheduler._ledger_codec import encode_ledger
from otpkit.scheduler._replica import decode_rows, encode_key
from otpkit.scheduler._store import SCHEMA_VERSION, Store
from otpkit.scheduler._store import StoreError as SchedulerStoreError

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

# --------------------------------------------------------------------------- quorum


def quorum_state() -> dict[str, Any]:
    return encode_state(QuorumCore(("a@h", 7), QuorumConfig(expected_size=3), 0.0))


def test_the_current_quorum_format_reads_as_it_is() -> None:
    raw = quorum_state()
    assert raw["format"] == STATE_FORMAT
    assert migrate_state(raw) == raw
    assert decode_state(raw)["sid"] == 7


def test_a_quorum_format_raised_without_a_change_of_shape_reads_the_older_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = quorum_state()
    monkeypatch.setattr(quorum_core, "STATE_FORMAT", STATE_FORMAT + 1)
    new = migrate_state(old)
    assert new == {**old, "format": STATE_FORMAT + 1}
    assert old["format"] == STATE_FORMAT, "the stored state given is not changed"
    assert decode_state(old) == decode_state(new)
    assert quorum_core.encode_state(QuorumCore(("a@h", 7), QuorumConfig(), 0.0))["format"] == (
        STATE_FORMAT + 1
    )


def test_quorum_migration_steps_run_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    top = STATE_FORMAT + 2

    def rename(state: dict[str, Any]) -> dict[str, Any]:
        state = dict(state)
        state["expected"] = state.pop("expected_size")
        return state

    def trail(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "trail": [*state.get("trail", []), state["format"]]}

    old = quorum_state()
    monkeypatch.setattr(quorum_core, "STATE_FORMAT", top)
    monkeypatch.setattr(quorum_core, "_STATE_STEPS", {STATE_FORMAT: rename, top - 1: trail})
    old["expected_size"] = old.pop("expected")  # the shape of an imagined older format
    new = migrate_state(old)
    assert new["format"] == top and new["expected"] == 3 and "expected_size" not in new
    assert new["trail"] == [STATE_FORMAT]  # trail saw the state before the format was set
    assert decode_state(old)["expected"] == 3


@pytest.mark.parametrize("bad", [None, 0, -1, True, "1", 1.0])
def test_a_quorum_state_without_a_valid_format_is_refused(bad: Any) -> None:
    with pytest.raises(StateError, match="no valid 'format'"):
        migrate_state({**quorum_state(), "format": bad})


def test_a_newer_quorum_format_is_refused_naming_both_and_the_file(tmp_path: Path) -> None:
    store = QuorumStore(str(tmp_path), "a@h")
    store.save({**quorum_state(), "format": STATE_FORMAT + 1})
    before = Path(store.path).read_bytes()
    with pytest.raises(StoreError) as err:
        store.load()
    text = str(err.value)
    assert store.path in text
    assert f"format {STATE_FORMAT + 1} is newer than this otpkit reads ({STATE_FORMAT})" in text
    assert "\n" not in text
    assert Path(store.path).read_bytes() == before


def test_a_quorum_store_of_an_older_format_loads_and_is_written_in_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = QuorumStore(str(tmp_path), "a@h")
    store.save(quorum_state())
    monkeypatch.setattr(quorum_core, "STATE_FORMAT", STATE_FORMAT + 1)
    loaded = store.load()
    assert loaded is not None and loaded["sid"] == 7
    assert store.loaded_format == STATE_FORMAT  # the actor writes it back at once
    core = QuorumCore(("a@h", 7), QuorumConfig(), 0.0, state=loaded)
    store.save(quorum_core.encode_state(core))
    assert json.loads(Path(store.path).read_text())["format"] == STATE_FORMAT + 1
    assert store.load() is not None and store.loaded_format == STATE_FORMAT + 1
    monkeypatch.setattr(quorum_core, "STATE_FORMAT", STATE_FORMAT)  # a downgrade now
    with pytest.raises(StoreError, match="newer than this otpkit reads"):
        store.load()


# --------------------------------------------------------------------------- scheduler


def version_of(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT version FROM otpkit_schema").fetchone()[0])
    finally:
        conn.close()


def v1_replica() -> tuple[Ledger, dict[ClaimKey, str], dict[ClaimKey, int]]:
    """A ledger with two lanes (one of run strategy "all"), claims open and finished,
    and where each open claim runs."""
    a = ClaimKey("report", T0)
    b = ClaimKey("report", T0.replace(second=1))
    c = ClaimKey("sweep", T0, "n2@h")
    ledger, claimed = claim_all(Ledger(), [a, b, c], 3)
    assert claimed == [a, b, c]
    ledger, _ = finish_all(ledger, [(a, "finished")], 3)
    return ledger, {b: "n1@h", c: "n2@h"}, {b: 3, c: 2}


def make_v1_store(db: Path, with_ledger: bool = True) -> None:
    """A store as schema version 1 wrote it (otpkit before the per-lane rows)."""
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE otpkit_schema (version INTEGER NOT NULL)")
    conn.execute("CREATE TABLE jobs (name TEXT PRIMARY KEY, body BLOB NOT NULL)")
    conn.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY CHECK (id = 1), body BLOB NOT NULL)")
    conn.execute("INSERT INTO otpkit_schema (version) VALUES (1)")
    conn.execute(
        "INSERT INTO jobs (name, body) VALUES (?, ?)",
        ("report", msgpack.packb({"name": "report", "state": "active"})),
    )
    if with_ledger:
        ledger, where, epochs = v1_replica()
        head = encode_ledger(ledger)
        head["jobs"] = {}
        head["where"] = [[*encode_key(k), node, epochs[k]] for k, node in where.items()]
        conn.execute("INSERT INTO ledger (id, body) VALUES (1, ?)", (msgpack.packb(head),))
    conn.commit()
    conn.close()
    os.chmod(db, 0o644)  # as SQLite made it under the usual umask


def test_a_version_1_store_is_migrated_when_opened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "s.sqlite"
    make_v1_store(db)
    with caplog.at_level(logging.INFO, logger="otpkit.scheduler"):
        store = Store.open(db)
    try:
        assert version_of(db) == SCHEMA_VERSION
        lines = [r.getMessage() for r in caplog.records if r.name == "otpkit.scheduler"]
        assert lines == [f"scheduler store {db}: schema version 1 migrated to {SCHEMA_VERSION}"]
        # made by an earlier version with SQLite's 0644: narrowed, and said so
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
        narrowed = [r.getMessage() for r in caplog.records if r.name == "otpkit.node"]
        assert narrowed == [f"scheduler store {db} was mode 0644, open to others: now 0600"]
        head = store.load_ledger()
        assert head is not None and head["lanes"] == []
        rows = store.lanes()
        assert sorted(rows, key=str) == [("report", None), ("sweep", "n2@h")]
        assert store.jobs() == {"report": {"name": "report", "state": "active"}}
        rep = decode_rows(head, rows)
        ledger, where, epochs = v1_replica()
        assert rep.ledger == ledger
        assert rep.where == where and rep.where_epochs == epochs
        assert head.get("synced") is not True  # counts once a holder synced it
    finally:
        store.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="otpkit.scheduler"), Store.open(db) as again:
        assert decode_rows(again.load_ledger(), again.lanes()).ledger == ledger
    assert not caplog.records, "migrated once"


def test_a_version_1_store_without_a_ledger_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    make_v1_store(db, with_ledger=False)
    with Store.open(db) as store:
        assert store.load_ledger() is None and store.lanes() == {}
        store.save_lanes({}, {"format": 1, "epoch": 4, "lanes": []})
    assert version_of(db) == SCHEMA_VERSION


def test_a_version_1_store_that_cannot_be_migrated_is_left_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    make_v1_store(db, with_ledger=False)
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO ledger (id, body) VALUES (1, ?)", (msgpack.packb({"epoch": 1}),))
    conn.commit()
    conn.close()
    before = db.read_bytes()
    with pytest.raises(SchedulerStoreError, match="version 1 ledger that cannot be migrated"):
        Store.open(db)
    assert db.read_bytes() == before
    assert version_of(db) == 1


def test_a_schema_version_raised_without_a_change_of_shape_migrates_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a rolling update to the next release does to each node's store."""
    db = tmp_path / "s.sqlite"
    lanes = {("report", None): {"lane": ["report", None, T0.isoformat(), [], 3, 1], "where": []}}
    with Store.open(db) as store:
        store.save_job("report", {"name": "report"})
        store.save_lanes(lanes, {"format": 1, "epoch": 3, "lanes": []})
    monkeypatch.setattr(_store, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with Store.open(db) as store:
        assert version_of(db) == SCHEMA_VERSION + 1
        assert store.jobs() == {"report": {"name": "report"}}
        assert store.lanes() == lanes
    monkeypatch.setattr(_store, "SCHEMA_VERSION", SCHEMA_VERSION)  # and back: a downgrade
    before = db.read_bytes()
    with pytest.raises(SchedulerStoreError) as err:
        Store.open(db)
    assert str(err.value) == (
        f"scheduler store {str(db)!r}: schema version {SCHEMA_VERSION + 1} is newer than this "
        f"otpkit reads ({SCHEMA_VERSION}): a downgrade after an upgrade; start the newer otpkit "
        "(the file is left as it is)"
    )
    assert db.read_bytes() == before


@pytest.mark.parametrize("bad", [0, -3, "two", 2.5])
def test_a_schema_version_that_is_no_version_is_refused(tmp_path: Path, bad: Any) -> None:
    db = tmp_path / "s.sqlite"
    Store.open(db).close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE otpkit_schema SET version = ?", (bad,))
    conn.commit()
    conn.close()
    with pytest.raises(SchedulerStoreError, match="is no version of otpkit's"):
        Store.open(db)
