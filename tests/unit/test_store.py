"""The scheduler's SQLite store (otpkit.scheduler._store).

Expected results follow the contract in ``_store``'s docstring: what is saved is read
back, also after a reopen; every damaged, foreign or unknown file raises StoreError
naming the path and the problem and is left byte for byte as it was; the store and its
WAL files are 0600 whatever the umask, and a store where earlier versions kept it is
moved beside the quorum's state with every committed write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from otpkit.scheduler._ledger import ClaimKey, Ledger, claim
from otpkit.scheduler._ledger_codec import decode_ledger, encode_ledger
from otpkit.scheduler._store import SCHEMA_VERSION, Store, StoreError, auto_path

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


# --------------------------------------------------------------------------------------
# the file is its user's alone; its place beside the quorum's state
# --------------------------------------------------------------------------------------


def modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in sorted(directory.iterdir())}


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_a_new_store_and_its_wal_and_shm_are_0600_whatever_the_umask(db: Path, umask: int):
    old = os.umask(umask)
    try:
        with Store.open(db) as store:
            store.save_job("report", JOB)  # args a user would not show others
            assert modes(db.parent) == {
                "scheduler.db": 0o600,
                "scheduler.db-shm": 0o600,
                "scheduler.db-wal": 0o600,
            }
    finally:
        os.umask(old)


def test_a_store_open_to_others_is_narrowed_with_one_line(
    db: Path, umask_022: None, caplog: pytest.LogCaptureFixture
):
    """As an earlier version left it: SQLite's 0644 for the file and its WAL files."""
    with Store.open(db) as store:
        store.save_job("report", JOB)
        conn = sqlite3.connect(db)  # another connection keeps the WAL files on disk
        conn.execute("SELECT name FROM jobs").fetchall()
        for name in ("scheduler.db", "scheduler.db-wal", "scheduler.db-shm"):
            (db.parent / name).chmod(0o644)
    caplog.clear()
    with caplog.at_level(logging.WARNING), Store.open(db) as again:
        assert again.jobs() == {"report": JOB}
        assert set(modes(db.parent).values()) == {0o600}
    conn.close()
    lines = sorted(r.getMessage() for r in caplog.records)
    assert lines == sorted(
        [
            f"scheduler store {db} was mode 0644, open to others: now 0600",
            f"scheduler store file {db}-wal was mode 0644, open to others: now 0600",
            f"scheduler store file {db}-shm was mode 0644, open to others: now 0600",
        ]
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING), Store.open(db):
        pass
    assert not caplog.records, "said once"


def test_auto_puts_the_store_in_a_private_directory_beside_the_quorums(
    tmp_path: Path, umask_022: None
):
    data = tmp_path / "data"  # missing: made 0700, as its otpkit directory
    path = auto_path(data, "jobs", "a@h")
    assert path == data / "otpkit" / "jobs@a@h.sqlite"
    with Store.open(path) as store:
        store.save_job("report", JOB)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "otpkit").stat().st_mode) == 0o700
    assert modes(data / "otpkit") == {"jobs@a@h.sqlite": 0o600}
    # an existing data dir (a volume's root) is the user's; an otpkit directory open to
    # others is narrowed
    shared = tmp_path / "volume"
    (shared / "otpkit").mkdir(parents=True)
    shared.chmod(0o2775)
    (shared / "otpkit").chmod(0o755)
    auto_path(shared, "jobs", "a@h")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o2775
    assert stat.S_IMODE((shared / "otpkit").stat().st_mode) == 0o700


def old_store(data: Path, keep_in_wal: bool) -> Path:
    """A store where earlier versions kept it (``<data>/<name>@<node>.sqlite``, 0644 as
    SQLite made it), its last writes still in its WAL if ``keep_in_wal`` (the files
    copied as a crash of the node would have left them)."""
    data.mkdir(exist_ok=True)
    old = data / "jobs@a@h.sqlite"
    work = data.parent / "work.sqlite"
    store = Store.open(work)
    store.save_ledger(ledger())
    store._live().execute("PRAGMA wal_autocheckpoint = 0")
    store._live().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.save_job("report", JOB)
    store.save_job("cleanup", {"name": "cleanup", "state": "inactive"})
    if keep_in_wal:
        assert Path(f"{work}-wal").stat().st_size > 0
        for suffix in ("", "-wal"):
            Path(f"{old}{suffix}").write_bytes(Path(f"{work}{suffix}").read_bytes())
        store.close()
    else:
        store.close()
        old.write_bytes(work.read_bytes())
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{old}{suffix}").chmod(0o644)
    return old


@pytest.mark.parametrize("keep_in_wal", [False, True])
def test_a_store_at_the_old_place_is_moved_with_every_write(
    tmp_path: Path, keep_in_wal: bool, caplog: pytest.LogCaptureFixture
):
    data = tmp_path / "data"
    old = old_store(data, keep_in_wal)
    with caplog.at_level(logging.INFO, logger="otpkit.scheduler"):
        path = auto_path(data, "jobs", "a@h")
    assert not list(data.glob("jobs@*")), "nothing left at the old place"
    assert modes(data / "otpkit") == {"jobs@a@h.sqlite": 0o600}
    moved = [r.getMessage() for r in caplog.records if r.name == "otpkit.scheduler"]
    assert moved == [f"scheduler store {old} moved to {path}"]
    with Store.open(path) as store:
        assert store.jobs() == {
            "cleanup": {"name": "cleanup", "state": "inactive"},
            "report": JOB,
        }
        assert store.load_ledger() == ledger()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="otpkit.scheduler"):
        assert auto_path(data, "jobs", "a@h") == path
    assert not [r for r in caplog.records if r.name == "otpkit.scheduler"], "moved once"


def test_a_crash_after_the_move_leaves_nothing_in_the_way(tmp_path: Path):
    """The rename is the move: before it the old store is whole, after it the new one;
    the old place's side files left by a crash just after are removed at the next
    start (an index and an empty WAL), a WAL still holding writes is not."""
    data = tmp_path / "data"
    old = old_store(data, keep_in_wal=False)
    path = auto_path(data, "jobs", "a@h")
    Path(f"{old}-shm").write_bytes(b"\0" * 32768)
    Path(f"{old}-wal").write_bytes(b"")
    assert auto_path(data, "jobs", "a@h") == path
    assert not list(data.glob("jobs@*"))
    Path(f"{old}-wal").write_bytes(b"frames")
    assert auto_path(data, "jobs", "a@h") == path
    assert [p.name for p in data.glob("jobs@*")] == ["jobs@a@h.sqlite-wal"]


def test_a_store_at_both_places_uses_the_new_one_and_leaves_the_old(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    data = tmp_path / "data"
    old = old_store(data, keep_in_wal=False)
    path = auto_path(data, "jobs", "a@h")
    with Store.open(path) as store:
        store.delete_job("cleanup")
    old.write_bytes(path.read_bytes())  # e.g. an earlier version started again, then this
    before = {p.name: p.read_bytes() for p in data.glob("jobs@*")}
    with caplog.at_level(logging.WARNING, logger="otpkit.scheduler"):
        assert auto_path(data, "jobs", "a@h") == path
    assert {p.name: p.read_bytes() for p in data.glob("jobs@*")} == before
    (line,) = [r.getMessage() for r in caplog.records if r.name == "otpkit.scheduler"]
    assert line.startswith(f"scheduler store {path} is used; the store {old}")


def test_a_damaged_store_at_the_old_place_is_left_as_it_is(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    old = data / "jobs@a@h.sqlite"
    old.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(StoreError, match="not a SQLite database") as err:
        auto_path(data, "jobs", "a@h")
    assert err.value.path == old
    assert old.read_bytes() == bytes(range(256)) * 64
    assert not (data / "otpkit" / "jobs@a@h.sqlite").exists()


def test_an_explicit_path_is_kept_and_still_0600(tmp_path: Path, umask_022: None):
    path = tmp_path / "mine" / "sched.db"
    path.parent.mkdir()
    with Store.open(path) as store:
        store.save_job("report", JOB)
        assert modes(path.parent) == {
            "sched.db": 0o600,
            "sched.db-shm": 0o600,
            "sched.db-wal": 0o600,
        }
