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

This module owns :class:`Store` (the reads and writes), the schema version it writes
(:data:`SCHEMA_VERSION`, with its migration steps) and the store's place on disk; the
checks, the schema and the migrations that opening a file runs are ``_store_schema``'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import msgpack  # type: ignore[import-untyped]

from otpkit.actors import make_private_dir, narrow
from otpkit.scheduler._store_schema import (
    SIDE_FILES,
    Step,
    StoreError,
    connect,
    pack,
    rollback,
    v1_to_v2,
    v2_to_v3,
)

__all__ = ["SCHEMA_VERSION", "STATE_DIR", "Store", "StoreError", "auto_path", "move_store"]

log = logging.getLogger("otpkit.scheduler")

#: The schema version this code writes; it reads this one and older ones (migrated
#: forward when opened), never a newer one. Raise it with any change of the tables or of
#: what a row holds, and add the step from the previous version (in ``_store_schema``)
#: to ``_STEPS``.
SCHEMA_VERSION = 3
#: The migration steps: the one keyed ``n`` turns a store of version ``n`` into version
#: ``n + 1`` inside the opening transaction (a version raised without a change of the
#: tables or rows needs none). A step knows the shapes its two versions stored.
_STEPS: dict[int, Step] = {1: v1_to_v2, 2: v2_to_v3}

#: The directory of a data dir that otpkit keeps its state in (the quorum's too).
STATE_DIR = "otpkit"


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
        return cls(where, connect(where, timeout, SCHEMA_VERSION, _STEPS))

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
        body = pack(dict(job), f"job {name!r}")
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
            rows.append((name, pack(dict(job), f"job {name!r}")))
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
        """Store the encoded ledger (``_ledger_codec.encode_ledger``), replacing the old one.

        Raises:
            TypeError: ``ledger`` is not a mapping of plain (msgpack-able) values.
            StoreError: the write failed.
        """
        if not isinstance(ledger, Mapping):
            raise TypeError(f"ledger: {type(ledger).__name__}, expected a mapping")
        body = pack(dict(ledger), "ledger")
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
            rows.append((job, node or "", pack(dict(body), f"lane {job!r}/{node!r}")))
        head = None if ledger is None else pack(dict(ledger), "ledger")
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
                rows.append((job, record["tick"], lane, at, pack(dict(record), f"run of {job!r}")))
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
            rollback(conn)
            raise StoreError(self._path, f"{what} failed: {exc}") from exc
        except BaseException:
            rollback(conn)
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
    for suffix in SIDE_FILES:
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
