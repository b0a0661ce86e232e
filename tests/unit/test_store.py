"""The scheduler's SQLite store (otpkit.scheduler._store).

Expected results follow the contract in ``_store``'s docstring: what is saved is read
back, also after a reopen; every damaged, foreign or unknown file raises StoreError
naming the path and the problem and is left byte for byte as it was.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from otpkit.scheduler._ledger import ClaimKey, Ledger, claim, decode_ledger, encode_ledger
from otpkit.scheduler._store import SCHEMA_VERSION, Store, StoreError

JOB = {
    "name": "report",
    "schedule": "*/5 * * * *",
    "task": "app.tasks:report",
    "args": [1, "x", b"\x00\xff", None, 2.5],
    "kwargs": {"to": ["ops"], "deep": {"n": 1}},
    "run_strategy": ["n1", "n2"],
    "timeout": None,
}


def ledger() -> dict[str, Any]:
    state, _ = claim(Ledger(), ClaimKey("report", datetime(2026, 1, 1, tzinfo=UTC)), 3)
    return encode_ledger(state)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "scheduler.db"


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# --------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------


def test_jobs_round_trip(db: Path):
    with Store.open(db) as store:
        assert store.jobs() == {}
        store.save_job("report", JOB)
        store.save_job("cleanup", {"name": "cleanup"})
        assert store.jobs() == {"cleanup": {"name": "cleanup"}, "report": JOB}
        store.save_job("cleanup", {"name": "cleanup", "state": "inactive"})
        assert store.jobs()["cleanup"] == {"name": "cleanup", "state": "inactive"}
        assert store.delete_job("cleanup") is True
        assert store.delete_job("cleanup") is False
        assert list(store.jobs()) == ["report"]


def test_ledger_round_trip(db: Path):
    with Store.open(db) as store:
        assert store.load_ledger() is None
        store.save_ledger(ledger())
        loaded = store.load_ledger()
        assert loaded == ledger()
        assert decode_ledger(loaded) == decode_ledger(ledger())
        store.save_ledger(encode_ledger(Ledger(7)))
        assert store.load_ledger() == encode_ledger(Ledger(7))


def test_survives_close_and_reopen(db: Path):
    store = Store.open(db)
    store.save_job("report", JOB)
    store.save_ledger(ledger())
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        store.jobs()
    with Store.open(db) as again:
        assert again.jobs() == {"report": JOB}
        assert again.load_ledger() == ledger()


def test_a_write_is_visible_to_a_new_connection_at_once(db: Path):
    with Store.open(db) as store:
        store.save_job("report", JOB)
        # Another process would see it: committed, in the WAL.
        conn = sqlite3.connect(db)
        assert conn.execute("SELECT name FROM jobs").fetchall() == [("report",)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        conn.close()


def test_bad_values_are_refused_before_writing(db: Path):
    with Store.open(db) as store:
        with pytest.raises(ValueError, match="job name"):
            store.save_job("", JOB)
        with pytest.raises(TypeError, match="job 'x'"):
            store.save_job("x", {"when": object()})
        with pytest.raises(TypeError, match="expected a mapping"):
            store.save_job("x", ["not", "a", "map"])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="ledger"):
            store.save_ledger({"at": object()})
        assert store.jobs() == {}
        assert store.load_ledger() is None


# --------------------------------------------------------------------------------------
# files that are not a good store: reported, never touched
# --------------------------------------------------------------------------------------


def test_garbage_bytes_raise_and_the_file_is_unchanged(db: Path):
    garbage = bytes(range(256)) * 64
    db.write_bytes(garbage)
    before = files(db.parent)
    with pytest.raises(StoreError, match="not a SQLite database") as err:
        Store.open(db)
    assert str(db) in str(err.value)
    assert err.value.path == db
    assert files(db.parent) == before


def test_a_truncated_store_raises_and_is_unchanged(db: Path):
    with Store.open(db) as store:
        for i in range(200):
            store.save_job(f"job{i}", {**JOB, "pad": "x" * 500})
    conn = sqlite3.connect(db)  # fold the WAL into the file, as a clean shutdown would
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for name in ("scheduler.db-wal", "scheduler.db-shm"):
        (db.parent / name).unlink(missing_ok=True)
    whole = db.read_bytes()
    assert len(whole) > 8 * 4096
    for size in (60, 4096, len(whole) // 2, len(whole) - 4096):
        db.write_bytes(whole[:size])
        with pytest.raises(StoreError, match=r"damaged|not a SQLite") as err:
            Store.open(db)
        assert str(db) in str(err.value)
        assert db.read_bytes() == whole[:size]


def test_a_newer_schema_version_raises(db: Path):
    Store.open(db).close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE otpkit_schema SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    before = db.read_bytes()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}") as err:
        Store.open(db)
    assert str(db) in str(err.value)
    assert db.read_bytes() == before


def test_another_applications_database_raises(db: Path):
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    with pytest.raises(StoreError, match=r"not an otpkit scheduler store.*customers"):
        Store.open(db)
    assert db.read_bytes() == before


def test_a_row_that_does_not_unpack_raises(db: Path):
    with Store.open(db) as store:
        store.save_job("report", JOB)
        conn = sqlite3.connect(db)
        conn.execute("UPDATE jobs SET body = ? WHERE name = 'report'", (b"\xc1",))
        conn.execute("INSERT INTO ledger (id, body) VALUES (1, ?)", (b"\x01",))
        conn.commit()
        conn.close()
        with pytest.raises(StoreError, match="job 'report' does not unpack"):
            store.jobs()
        with pytest.raises(StoreError, match="the ledger is a int"):
            store.load_ledger()


def test_a_missing_directory_raises(tmp_path: Path):
    path = tmp_path / "nowhere" / "scheduler.db"
    with pytest.raises(StoreError, match=r"directory .* does not exist") as err:
        Store.open(path)
    assert str(path) in str(err.value)
    assert not path.parent.exists()


def test_a_directory_is_not_a_store(tmp_path: Path):
    with pytest.raises(StoreError, match="is a directory"):
        Store.open(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_raises(db: Path):
    Store.open(db).close()
    db.chmod(0)
    try:
        with pytest.raises(StoreError, match="no permission"):
            Store.open(db)
    finally:
        db.chmod(0o600)


# --------------------------------------------------------------------------------------
# two stores on one file
# --------------------------------------------------------------------------------------


def test_two_stores_on_one_file(db: Path):
    with Store.open(db) as one, Store.open(db) as two:
        one.save_job("a", {"n": 1})
        assert two.jobs() == {"a": {"n": 1}}
        two.save_ledger(ledger())
        assert one.load_ledger() == ledger()
        two.delete_job("a")
        assert one.jobs() == {}


def test_two_stores_created_at_once(db: Path):
    opened: list[Path] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            with Store.open(db) as store:  # a Store stays in the thread that opened it
                opened.append(store.path)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert opened == [db] * 4
    with Store.open(db) as store:
        assert store.jobs() == {}


def test_a_writer_blocked_past_its_timeout_fails_clearly(db: Path):
    with Store.open(db, timeout=0.1) as store:
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="saving job 'a' failed: database is locked"):
                store.save_job("a", {"n": 1})
        finally:
            other.execute("ROLLBACK")
            other.close()
        store.save_job("a", {"n": 1})
        assert store.jobs() == {"a": {"n": 1}}
