"""The scheduler's storage on disk: runtime jobs, the run ledger and the run history, in
one SQLite file.

Each node keeps its own store (stdlib ``sqlite3``; the path is configurable), so that
runtime jobs and the ledger survive a restart of every node. What is stored is plain
values (an encoded job, an encoded ledger: see ``_job`` and ``_ledger``), packed with
msgpack; the store does not interpret them.

The contract:

* :meth:`Store.open` creates a missing file (its directory must exist) with the current
  schema (an empty, 0-byte file is an empty SQLite database and is treated the same), or
  opens an existing one after checking it: a SQLite database
  (``PRAGMA quick_check`` passes) whose ``otpkit_schema`` table holds a version this
  code reads: :data:`SCHEMA_VERSION` or an older one, which is migrated forward there
  and then (one transaction: a step per version, logged once), so the file is of the
  current version from its first write on. A newer version is refused (a downgrade
  after an upgrade), naming the file and both versions. The database is put in WAL
  mode, with ``synchronous=FULL``.
* Every write (:meth:`~Store.save_job`, :meth:`~Store.delete_job`,
  :meth:`~Store.save_ledger`) is one transaction, committed (and on disk) when the call
  returns.
* Anything wrong with the file - not a SQLite database, damaged or truncated, another
  application's database, an unknown schema version, a row that does not unpack, no
  permission - raises :class:`StoreError` naming the path and the problem. The store
  never deletes, replaces or "repairs" a file: it writes nothing to a file it has not
  checked, and a damaged store is left as it is for an operator to look at.
* Several :class:`Store` objects (in one process or several) may have the same file
  open: WAL lets them read while one writes; a writer waits up to ``timeout`` seconds for
  another's transaction, then raises :class:`StoreError` ("database is locked").
  A :class:`Store` is used from the thread that opened it.
* The file is its user's alone (it holds every job's arguments): a missing one is
  created ``0600`` whatever the umask, and SQLite makes its ``-wal`` and ``-shm`` files
  with the database's mode; an existing one (or its ``-wal``, ``-shm``) open to others is
  narrowed to ``0600``, with one WARNING (see ``otpkit.actors._files``).

Where (:func:`auto_path`, the scheduler's ``store="auto"``): ``<data-dir>/otpkit/
<name>@<node>.sqlite``, beside the quorum's state, in a directory made ``0700``. A store
found where earlier versions kept it, ``<data-dir>/<name>@<node>.sqlite``, is moved
there first (:func:`move_store`: nothing committed is lost, also by a crash during the
move), with one INFO line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import msgpack  # type: ignore[import-untyped]

from otpkit.actors import make_private_dir, narrow, private_file
from otpkit.errors import OtpkitError

__all__ = ["SCHEMA_VERSION", "STATE_DIR", "Store", "StoreError", "auto_path", "move_store"]

log = logging.getLogger("otpkit.scheduler")

#: The schema version this code writes; it reads this one and older ones (migrated
#: forward when opened), never a newer one. Raise it with any change of the tables or of
#: what a row holds, and add the step from the previous version to ``_STEPS``.
SCHEMA_VERSION = 3

#: The directory of a data dir that otpkit keeps its state in (the quorum's too).
STATE_DIR = "otpkit"
#: The files SQLite keeps beside a database in WAL mode (and while it switches to it).
_SIDE_FILES = ("-wal", "-shm", "-journal")

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


def _pack(value: Any, what: str) -> bytes:
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{what}: not plain values msgpack can store ({exc})") from exc
    return packed


class Store:
    """An open store; make one with :meth:`Store.open`. See the module's contract."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = conn

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, timeout: float = 5.0) -> Store:
        """Open the store at ``path``, creating it (and its schema) if the file is missing.

        Args:
            path: the database file; its directory must exist.
            timeout: seconds a write waits for another connection's transaction.

        Raises:
            StoreError: the directory is missing, the path is a directory, the file is
                not readable and writable, not a SQLite database, damaged, another
                application's database, or of an unknown schema version.
        """
        where = Path(path)
        _check_path(where)
        _make_private(where)
        try:
            conn = sqlite3.connect(where, timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(where, f"cannot open it ({exc})") from exc
        try:
            _check_file(where, conn)
            _prepare(where, conn, timeout)
        except BaseException:
            conn.close()
            raise
        return cls(where, conn)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    # ------------------------------------------------------------------ jobs

    def save_job(self, name: str, job: Mapping[str, Any]) -> None:
        """Store the encoded job ``job`` under ``name``, replacing any job of that name.

        Raises:
            ValueError: ``name`` is not a non-empty string.
            TypeError: ``job`` is not a mapping of plain (msgpack-able) values.
            StoreError: the write failed (locked past the timeout, disk full, ...).
        """
        _check_name(name)
        if not isinstance(job, Mapping):
            raise TypeError(f"job {name!r}: {type(job).__name__}, expected a mapping")
        body = _pack(dict(job), f"job {name!r}")
        with self._write(f"saving job {name!r}") as conn:
            conn.execute("INSERT OR REPLACE INTO jobs (name, body) VALUES (?, ?)", (name, body))

    def save_jobs(self, jobs: Mapping[str, Mapping[str, Any]]) -> None:
        """:meth:`save_job` for many jobs, in one transaction.

        Raises:
            ValueError, TypeError, StoreError: as :meth:`save_job`; nothing is stored then.
        """
        rows = []
        for name, job in jobs.items():
            _check_name(name)
            if not isinstance(job, Mapping):
                raise TypeError(f"job {name!r}: {type(job).__name__}, expected a mapping")
            rows.append((name, _pack(dict(job), f"job {name!r}")))
        if not rows:
            return
        with self._write(f"saving {len(rows)} jobs") as conn:
            conn.executemany("INSERT OR REPLACE INTO jobs (name, body) VALUES (?, ?)", rows)

    def delete_job(self, name: str) -> bool:
        """Remove the job ``name``: True if it was stored, False if there was none.

        Raises:
            ValueError: ``name`` is not a non-empty string.
            StoreError: the write failed.
        """
        _check_name(name)
        with self._write(f"deleting job {name!r}") as conn:
            return conn.execute("DELETE FROM jobs WHERE name = ?", (name,)).rowcount > 0

    def jobs(self) -> dict[str, dict[str, Any]]:
        """Every stored job: its name to its encoded form, by name.

        Raises:
            StoreError: the read failed, or a stored job does not unpack to a mapping.
        """
        rows = self._read("reading jobs", "SELECT name, body FROM jobs ORDER BY name")
        found: dict[str, dict[str, Any]] = {}
        for name, body in rows:
            job = self._unpack(body, f"job {name!r}")
            if not isinstance(job, dict):
                raise StoreError(self._path, f"job {name!r} is a {type(job).__name__}, not a map")
            found[name] = job
        return found

    # ------------------------------------------------------------------ ledger

    def save_ledger(self, ledger: Mapping[str, Any]) -> None:
        """Store the encoded ledger (see :func:`encode_ledger`), replacing the previous one.

        Raises:
            TypeError: ``ledger`` is not a mapping of plain (msgpack-able) values.
            StoreError: the write failed.
        """
        if not isinstance(ledger, Mapping):
            raise TypeError(f"ledger: {type(ledger).__name__}, expected a mapping")
        body = _pack(dict(ledger), "ledger")
        with self._write("saving the ledger") as conn:
            conn.execute("INSERT OR REPLACE INTO ledger (id, body) VALUES (1, ?)", (body,))

    def load_ledger(self) -> dict[str, Any] | None:
        """The stored encoded ledger, or None if none was ever saved.

        Raises:
            StoreError: the read failed, or the stored ledger does not unpack to a mapping.
        """
        rows = self._read("reading the ledger", "SELECT body FROM ledger WHERE id = 1")
        if not rows:
            return None
        ledger = self._unpack(rows[0][0], "the ledger")
        if not isinstance(ledger, dict):
            raise StoreError(self._path, f"the ledger is a {type(ledger).__name__}, not a map")
        return ledger

    # ------------------------------------------------------------------ lanes

    def save_lanes(
        self,
        lanes: Mapping[tuple[str, str | None], Mapping[str, Any]],
        ledger: Mapping[str, Any] | None = None,
    ) -> None:
        """Store the encoded ``lanes`` (by ``(job, node)``; each replaces its row) and,
        if given, the ledger's own record (see :meth:`save_ledger`), in one transaction.

        Raises:
            TypeError: a body is not a mapping of plain (msgpack-able) values.
            StoreError: the write failed.
        """
        rows = []
        for (job, node), body in lanes.items():
            _check_name(job)
            if not isinstance(body, Mapping):
                raise TypeError(f"lane {job!r}/{node!r}: {type(body).__name__}, expected a mapping")
            rows.append((job, node or "", _pack(dict(body), f"lane {job!r}/{node!r}")))
        head = None if ledger is None else _pack(dict(ledger), "ledger")
        with self._write("saving ledger lanes") as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO lanes (job, node, body) VALUES (?, ?, ?)", rows
            )
            if head is not None:
                conn.execute("INSERT OR REPLACE INTO ledger (id, body) VALUES (1, ?)", (head,))

    def lanes(self) -> dict[tuple[str, str | None], dict[str, Any]]:
        """Every stored lane: ``(job, node or None)`` to its encoded form.

        Raises:
            StoreError: the read failed, or a row does not unpack to a mapping.
        """
        rows = self._read("reading ledger lanes", "SELECT job, node, body FROM lanes")
        found: dict[tuple[str, str | None], dict[str, Any]] = {}
        for job, node, body in rows:
            lane = self._unpack(body, f"lane {job!r}/{node!r}")
            if not isinstance(lane, dict):
                raise StoreError(self._path, f"lane {job!r}/{node!r} is not a map")
            found[(job, node or None)] = lane
        return found

    # ------------------------------------------------------------------ run history

    def save_runs(
        self,
        runs: Mapping[str, Sequence[Mapping[str, Any]]],
        keep: int,
        older_than: str | None = None,
    ) -> None:
        """Store the encoded run records of each job (``_history.encode_record``: each
        has ``tick``, ``lane`` and ``at``), replacing a record of the same tick and lane;
        then keep each of these jobs' newest ``keep`` by tick and, if ``older_than``
        (an ISO time in UTC) is given, drop every record made before it. One
        transaction.

        Raises:
            TypeError: a record is not a mapping of plain values with those fields.
            StoreError: the write failed.
        """
        rows = []
        for job, records in runs.items():
            _check_name(job)
            for record in records:
                if not isinstance(record, Mapping) or not isinstance(record.get("tick"), str):
                    raise TypeError(f"run record of {job!r}: expected an encoded record")
                lane = record.get("lane") or ""
                at = str(record.get("at") or "")
                rows.append((job, record["tick"], lane, at, _pack(dict(record), f"run of {job!r}")))
        if not rows and older_than is None:
            return
        with self._write("saving the run history") as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO runs (job, tick, lane, at, body) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            for job in runs:
                conn.execute(
                    "DELETE FROM runs WHERE job = ? AND rowid NOT IN (SELECT rowid FROM runs"
                    " WHERE job = ? ORDER BY tick DESC, lane DESC LIMIT ?)",
                    (job, job, keep),
                )
            if older_than is not None:
                conn.execute("DELETE FROM runs WHERE at < ?", (older_than,))

    def runs(self) -> list[dict[str, Any]]:
        """Every stored run record (encoded), in no particular order.

        Raises:
            StoreError: the read failed, or a row does not unpack to a mapping.
        """
        rows = self._read("reading the run history", "SELECT job, body FROM runs")
        found = []
        for job, body in rows:
            record = self._unpack(body, f"run record of {job!r}")
            if not isinstance(record, dict):
                raise StoreError(self._path, f"a run record of {job!r} is not a map")
            found.append(record)
        return found

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Close the file; further calls raise :class:`StoreError`. Closing twice is fine."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(self._path, "the store is closed")
        return self._conn

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        conn = self._live()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(self._path, f"{what} failed: {exc}") from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise StoreError(self._path, f"{what} failed: {exc}") from exc
        except BaseException:
            _rollback(conn)
            raise

    def _read(self, what: str, sql: str) -> list[Any]:
        try:
            return self._live().execute(sql).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(self._path, f"{what} failed: {exc}") from exc

    def _unpack(self, body: Any, what: str) -> Any:
        if not isinstance(body, bytes):
            raise StoreError(self._path, f"{what} is stored as {type(body).__name__}, not bytes")
        try:
            return msgpack.unpackb(body, raw=False, strict_map_key=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise StoreError(self._path, f"{what} does not unpack ({exc})") from exc


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"job name {name!r}: expected a non-empty string")


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


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
    for suffix in _SIDE_FILES:
        narrow(f"{path}{suffix}", 0o600, "scheduler store file")


def auto_path(data_dir: str | os.PathLike[str], name: str, node: str) -> Path:
    """Where ``store="auto"`` keeps scheduler ``name``'s store on ``node``:
    ``<data_dir>/otpkit/<name>@<node>.sqlite``. Makes the directories (``0700``; an
    existing ``otpkit`` directory open to others is narrowed) and first moves a store
    found at the old place, ``<data_dir>/<name>@<node>.sqlite`` (:func:`move_store`).
    If both exist, the new one is used and the old one left as it is (logged).

    Raises:
        StoreError: the directory cannot be made, or the old store cannot be moved.
    """
    base = Path(data_dir)
    state = base / STATE_DIR
    path = state / f"{name}@{node}.sqlite"
    try:
        make_private_dir(state)
    except OSError as exc:
        raise StoreError(path, f"cannot make its directory ({exc.strerror or exc})") from exc
    narrow(state, 0o700, "otpkit state directory")
    old = base / f"{name}@{node}.sqlite"
    if not old.exists():
        _remove_side_files(old)  # left by a crash just after a move
    elif path.exists():
        log.warning(
            "scheduler store %s is used; the store %s, where earlier versions kept it, "
            "is left as it is",
            path,
            old,
        )
    else:
        move_store(old, path)
    return path


def move_store(old: Path, new: Path) -> bool:
    """Move the store at ``old`` to ``new`` (a missing file, in an existing directory on
    the same file system): True once moved, False if there is no store at ``old``.

    The old store is first made whole: opened and checked as :meth:`Store.open` does,
    its WAL checkpointed into the database and closed, so that the database file alone
    holds every committed write; then that one file is renamed (atomic) and both
    directories are synced. A crash before the rename leaves the old store as it was
    (the next start moves it), after it the new one complete. Logs one INFO line.

    Raises:
        StoreError: the old store cannot be used (damaged, another application's, no
            permission: left as it is), is still in use, or cannot be renamed.
    """
    if not old.exists():
        return False
    if new.exists():
        raise StoreError(new, f"cannot move {str(old)!r} here: the file exists")
    with Store.open(old) as store:
        try:
            busy, _, _ = store._live().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(old, f"cannot write its WAL into it before moving it ({exc})") from exc
    wal = Path(f"{old}-wal")
    if busy or (wal.exists() and wal.stat().st_size > 0):
        raise StoreError(old, "still in use by another process: not moved")
    try:
        os.rename(old, new)
    except OSError as exc:
        raise StoreError(old, f"cannot move it to {str(new)!r} ({exc.strerror or exc})") from exc
    for directory in {new.parent, old.parent}:
        _sync_dir(directory)
    _remove_side_files(old)
    log.info("scheduler store %s moved to %s", old, new)
    return True


def _remove_side_files(old: Path) -> None:
    """The side files of a store moved away: its ``-shm`` (an index of the WAL, rebuilt
    by SQLite) and an empty ``-wal``; a WAL that still holds writes is left (logged)."""
    for suffix in _SIDE_FILES:
        side = Path(f"{old}{suffix}")
        try:
            size = side.stat().st_size
        except OSError:
            continue
        if suffix == "-shm" or size == 0:
            with contextlib.suppress(OSError):
                side.unlink()
        else:
            log.warning("%s is left without its store %s: not removed", side, old)


def _sync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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


def _stored_version(path: Path, conn: sqlite3.Connection, tables: set[str]) -> int:
    """The schema version the file names: this code's or an older one; else StoreError."""
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
    if version > SCHEMA_VERSION:
        raise StoreError(
            path,
            f"schema version {version} is newer than this otpkit reads ({SCHEMA_VERSION}): "
            "a downgrade after an upgrade; start the newer otpkit (the file is left as it is)",
        )
    return version


def _check_tables(path: Path, tables: set[str]) -> None:
    missing = [name for name in _TABLES if name not in tables]
    if missing:
        raise StoreError(
            path, f"schema version {SCHEMA_VERSION} without its tables {', '.join(missing)}"
        )


def _v1_to_v2(path: Path, conn: sqlite3.Connection) -> None:
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
            rows.append((job, node or "", _pack(body, f"lane {job!r}/{node!r}")))
        new_head = {"format": head["format"], "epoch": head["epoch"], "lanes": []}
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise StoreError(path, f"a version 1 ledger that cannot be migrated ({exc!r})") from exc
    conn.executemany("INSERT INTO lanes (job, node, body) VALUES (?, ?, ?)", rows)
    conn.execute("UPDATE ledger SET body = ? WHERE id = 1", (_pack(new_head, "ledger"),))


def _v2_to_v3(path: Path, conn: sqlite3.Connection) -> None:
    """Version 3 adds the run history (``runs``); an open claim of a lane may carry its
    attempt (``[tick, epoch, attempt, retry_at]``), which version 2 never wrote."""
    conn.execute(_RUNS_TABLE)


#: The migration steps: the one keyed ``n`` turns a store of version ``n`` into version
#: ``n + 1`` inside the opening transaction (a version raised without a change of the
#: tables or rows needs none). A step knows the shapes its two versions stored.
_STEPS: dict[int, Callable[[Path, sqlite3.Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3}


def _prepare(path: Path, conn: sqlite3.Connection, timeout: float) -> None:
    """Check the schema, create it in an empty database or migrate an older one; then
    WAL mode."""
    migrated: int | None = None
    try:
        tables = _tables(conn)
        if not tables or _stored_version(path, conn, tables) < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Another Store may have created or migrated the schema since we looked.
                tables = _tables(conn)
                if not tables:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO otpkit_schema (version) VALUES (?)", (SCHEMA_VERSION,)
                    )
                elif (old := _stored_version(path, conn, tables)) < SCHEMA_VERSION:
                    for version in range(old, SCHEMA_VERSION):
                        step = _STEPS.get(version)
                        if step is not None:
                            step(path, conn)
                    conn.execute("UPDATE otpkit_schema SET version = ?", (SCHEMA_VERSION,))
                    migrated = old
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            tables = _tables(conn)
        _check_tables(path, tables)
        if migrated is not None:
            log.info(
                "scheduler store %s: schema version %d migrated to %d",
                path,
                migrated,
                SCHEMA_VERSION,
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
