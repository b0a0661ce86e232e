"""Opening a scheduler store's file (the store's contract: ``_store``): the checks made
before SQLite writes to it (the path, the file's mode, ``PRAGMA quick_check``), the
schema and its version, the steps that migrate an older version forward, WAL mode; and
:class:`StoreError`, which every problem with the file raises.

The version this code writes and the steps to it are ``_store``'s (``SCHEMA_VERSION``,
``_STEPS``, raised and added there): :func:`connect` takes them as arguments.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]

from otpkit.actors import narrow, private_file
from otpkit.errors import OtpkitError

__all__ = [
    "SIDE_FILES",
    "Step",
    "StoreError",
    "connect",
    "pack",
    "rollback",
    "v1_to_v2",
    "v2_to_v3",
]

log = logging.getLogger("otpkit.scheduler")

#: A migration step: turns a store of one schema version into the next, inside the
#: opening transaction.
Step = Callable[[Path, sqlite3.Connection], None]

#: The files SQLite keeps beside a database in WAL mode (and while it switches to it).
SIDE_FILES = ("-wal", "-shm", "-journal")

_TABLES = ("otpkit_schema", "jobs", "ledger", "lanes", "runs")
#: version 3: the run history, one row per record (a job's newest, trimmed by the holder)
_RUNS_TABLE = (
    "CREATE TABLE runs (job TEXT NOT NULL, tick TEXT NOT NULL, lane TEXT NOT NULL,"
    " at TEXT NOT NULL, body BLOB NOT NULL, PRIMARY KEY (job, tick, lane))"
)
_SCHEMA = (
    "CREATE TABLE otpkit_schema (version INTEGER NOT NULL)",
    "CREATE TABLE jobs (name TEXT PRIMARY KEY, body BLOB NOT NULL)",
    "CREATE TABLE ledger (id INTEGER PRIMARY KEY CHECK (id = 1), body BLOB NOT NULL)",
    # one row per ledger lane, so that a write stores the lanes it changed, not all
    "CREATE TABLE lanes (job TEXT NOT NULL, node TEXT NOT NULL, body BLOB NOT NULL,"
    " PRIMARY KEY (job, node))",
    _RUNS_TABLE,
)


class StoreError(OtpkitError):
    """The store's file cannot be used as it is; ``path`` and ``problem`` say why."""

    def __init__(self, path: Any, problem: str) -> None:
        super().__init__(f"scheduler store {str(path)!r}: {problem}")
        self.path = path
        self.problem = problem


def pack(value: Any, what: str) -> bytes:
    """``value`` packed with msgpack; TypeError naming ``what`` if it is not plain values."""
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{what}: not plain values msgpack can store ({exc})") from exc
    return packed


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the transaction ``conn`` is in, if any."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def connect(
    path: Path, timeout: float, version: int, steps: Mapping[int, Step]
) -> sqlite3.Connection:
    """A connection to the store at ``path`` (the work of ``Store.open``): the path and
    the file checked, the file created ``0600`` if missing (else narrowed), the schema of
    ``version`` created in an empty database or an older one migrated forward by
    ``steps`` (the one keyed ``n`` makes version ``n + 1`` of version ``n``), then WAL
    mode.

    Raises:
        StoreError: as ``Store.open``.
    """
    _check_path(path)
    _make_private(path)
    try:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(path, f"cannot open it ({exc})") from exc
    try:
        _check_file(path, conn)
        _prepare(path, conn, timeout, version, steps)
    except BaseException:
        conn.close()
        raise
    return conn


def _check_path(path: Path) -> None:
    """Clear errors for what SQLite would report as "unable to open database file"."""
    directory = path.parent
    if not directory.is_dir():
        raise StoreError(path, f"its directory {str(directory)!r} does not exist")
    if path.is_dir():
        raise StoreError(path, "it is a directory, expected a database file")
    if path.exists():
        if not path.is_file():
            raise StoreError(path, "it is not a regular file")
        if not os.access(path, os.R_OK | os.W_OK):
            raise StoreError(path, "no permission to read and write it")
    if not os.access(directory, os.W_OK | os.X_OK):
        # SQLite creates the file, and the WAL and shared-memory files, beside it.
        raise StoreError(path, f"no permission to create files in {str(directory)!r}")


def _make_private(path: Path) -> None:
    """Create the file ``0600`` if it is missing (SQLite then makes its side files with
    that mode), else narrow it and its side files to ``0600``."""
    try:
        private_file(path, "scheduler store")
    except OSError as exc:
        raise StoreError(path, f"cannot create it ({exc.strerror or exc})") from exc
    for suffix in SIDE_FILES:
        narrow(f"{path}{suffix}", 0o600, "scheduler store file")


def _check_file(path: Path, conn: sqlite3.Connection) -> None:
    """Read-only checks: a SQLite database, not damaged. Nothing is written here."""
    try:
        result = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        text = str(exc)
        if "not a database" in text:
            raise StoreError(path, f"not a SQLite database ({text})") from exc
        raise StoreError(path, f"damaged or truncated database ({text})") from exc
    if result != [("ok",)]:
        problems = "; ".join(str(row[0]) for row in result[:3])
        raise StoreError(path, f"damaged database, quick_check says: {problems}")


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {row[0] for row in rows}


def _stored_version(path: Path, conn: sqlite3.Connection, tables: set[str], current: int) -> int:
    """The schema version the file names: ``current`` (this code's) or an older one; else
    StoreError."""
    if "otpkit_schema" not in tables:
        raise StoreError(
            path,
            "not an otpkit scheduler store (it has tables "
            f"{', '.join(sorted(tables))} and no otpkit_schema table)",
        )
    versions = [row[0] for row in conn.execute("SELECT version FROM otpkit_schema").fetchall()]
    if len(versions) != 1:
        raise StoreError(path, f"otpkit_schema holds {versions!r}, expected one version")
    version = versions[0]
    if type(version) is not int or version < 1:
        raise StoreError(path, f"schema version {version!r} is no version of otpkit's")
    if version > current:
        raise StoreError(
            path,
            f"schema version {version} is newer than this otpkit reads ({current}): "
            "a downgrade after an upgrade; start the newer otpkit (the file is left as it is)",
        )
    return version


def _check_tables(path: Path, tables: set[str], current: int) -> None:
    missing = [name for name in _TABLES if name not in tables]
    if missing:
        raise StoreError(path, f"schema version {current} without its tables {', '.join(missing)}")


def v1_to_v2(path: Path, conn: sqlite3.Connection) -> None:
    """Version 1 kept the whole replica in the ledger row: ``{"format", "epoch", "lanes":
    [lane, ...], "jobs": {}, "where": [[job, at, node, where, epoch?], ...]}``, each lane
    ``[job, node, ...]``. Version 2 keeps one row per lane, ``{"lane": lane, "where":
    [[at, where, epoch], ...]}``, and the ledger row only ``{"format", "epoch", "lanes":
    []}`` (a replica migrated so counts as not synced until a holder writes to it)."""
    conn.execute(
        "CREATE TABLE lanes (job TEXT NOT NULL, node TEXT NOT NULL, body BLOB NOT NULL,"
        " PRIMARY KEY (job, node))"
    )
    row = conn.execute("SELECT body FROM ledger WHERE id = 1").fetchone()
    if row is None:
        return
    try:
        head = msgpack.unpackb(row[0], raw=False, strict_map_key=False)
        wheres: dict[tuple[str, str | None], list[list[Any]]] = {}
        for item in head.get("where", ()):
            epoch = item[4] if len(item) == 5 else 0
            wheres.setdefault((item[0], item[2]), []).append([item[1], item[3], epoch])
        rows = []
        for lane in head["lanes"]:
            job, node = lane[0], lane[1]
            body = {"lane": lane, "where": wheres.get((job, node), [])}
            rows.append((job, node or "", pack(body, f"lane {job!r}/{node!r}")))
        new_head = {"format": head["format"], "epoch": head["epoch"], "lanes": []}
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise StoreError(path, f"a version 1 ledger that cannot be migrated ({exc!r})") from exc
    conn.executemany("INSERT INTO lanes (job, node, body) VALUES (?, ?, ?)", rows)
    conn.execute("UPDATE ledger SET body = ? WHERE id = 1", (pack(new_head, "ledger"),))


def v2_to_v3(path: Path, conn: sqlite3.Connection) -> None:
    """Version 3 adds the run history (``runs``); an open claim of a lane may carry its
    attempt (``[tick, epoch, attempt, retry_at]``), which version 2 never wrote."""
    conn.execute(_RUNS_TABLE)


def _prepare(
    path: Path, conn: sqlite3.Connection, timeout: float, current: int, steps: Mapping[int, Step]
) -> None:
    """Check the schema, create it in an empty database or migrate an older one; then
    WAL mode."""
    migrated: int | None = None
    try:
        tables = _tables(conn)
        if not tables or _stored_version(path, conn, tables, current) < current:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Another Store may have created or migrated the schema since we looked.
                tables = _tables(conn)
                if not tables:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.execute("INSERT INTO otpkit_schema (version) VALUES (?)", (current,))
                elif (old := _stored_version(path, conn, tables, current)) < current:
                    for version in range(old, current):
                        step = steps.get(version)
                        if step is not None:
                            step(path, conn)
                    conn.execute("UPDATE otpkit_schema SET version = ?", (current,))
                    migrated = old
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
            tables = _tables(conn)
        _check_tables(path, tables, current)
        if migrated is not None:
            log.info(
                "scheduler store %s: schema version %d migrated to %d",
                path,
                migrated,
                current,
            )
        _use_wal(path, conn, timeout)
        conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.Error as exc:
        raise StoreError(path, f"cannot prepare the schema ({exc})") from exc


def _use_wal(path: Path, conn: sqlite3.Connection, timeout: float) -> None:
    """Switch to WAL mode (kept in the file), retrying while another connection is busy.

    SQLite answers "database is locked" at once, without its busy timeout, when two
    connections switch a new file to WAL together.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
    if str(mode).lower() != "wal":
        raise StoreError(path, f"cannot use WAL mode (SQLite kept journal mode {mode!r})")
