"""Private files and directories: what a node writes to disk is its user's alone.

The quorum's state, the schedulers' stores (with SQLite's ``-wal`` and ``-shm`` files)
and the log files hold what a job runs with and what the cluster promised: they are
made ``0600`` in directories made ``0700``, whatever the umask. A file or directory that
otpkit keeps and finds open to more than its user is narrowed, with one WARNING line (a
second start finds it narrowed: the line comes once). A directory the user gave that
already exists (a volume's root, a log directory) is the user's and is left as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat

__all__ = [
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "make_private_dir",
    "narrow",
    "private_file",
    "too_open",
]

log = logging.getLogger("otpkit.node")

#: The mode of every directory otpkit makes for its files.
PRIVATE_DIR = 0o700
#: The mode of every file otpkit keeps state or logs in.
PRIVATE_FILE = 0o600


def too_open(mode: int, allowed: int) -> bool:
    """Whether the permission bits of ``mode`` (``st_mode``) grant more than ``allowed``."""
    return bool(stat.S_IMODE(mode) & ~allowed & 0o7777)


def make_private_dir(path: str | os.PathLike[str]) -> list[str]:
    """Make the directory ``path`` and its missing parents, each ``0700`` whatever the
    umask; an existing one is left as it is. Returns the directories made, outermost
    first.

    Raises:
        OSError: one cannot be made (no permission, a file in the way).
    """
    missing: list[str] = []
    where = os.path.abspath(os.fspath(path))
    while not os.path.isdir(where):
        missing.append(where)
        parent = os.path.dirname(where)
        if parent == where:
            break
        where = parent
    made = []
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIR)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise
            continue  # made by another process meanwhile: it decided its mode
        os.chmod(directory, PRIVATE_DIR)  # the umask may have taken bits off
        made.append(directory)
    return made


def narrow(path: str | os.PathLike[str], allowed: int, what: str) -> bool:
    """Take from the existing ``path`` any permission beyond ``allowed``, logging one
    WARNING naming ``what`` it is; True if it was narrowed. A missing file is no error;
    one that cannot be changed (owned by another user) is logged and left."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    if not too_open(mode, allowed):
        return False
    new = stat.S_IMODE(mode) & allowed
    try:
        os.chmod(path, new)
    except OSError as exc:
        log.warning(
            "%s %s is mode %04o, open to others, and cannot be narrowed (%s)",
            what,
            os.fspath(path),
            stat.S_IMODE(mode),
            exc.strerror or exc,
        )
        return False
    log.warning(
        "%s %s was mode %04o, open to others: now %04o",
        what,
        os.fspath(path),
        stat.S_IMODE(mode),
        new,
    )
    return True


def private_file(path: str | os.PathLike[str], what: str) -> None:
    """Create the file ``path`` empty and ``0600`` if it is missing, else narrow it to
    ``0600`` (see :func:`narrow`).

    Raises:
        OSError: it cannot be created (its directory is missing or not writable).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        narrow(path, PRIVATE_FILE, what)
        return
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, PRIVATE_FILE)  # the umask may have taken bits off
    finally:
        os.close(fd)
