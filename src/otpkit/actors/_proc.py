"""Reading ``/proc``: is an OS process alive, and is it still the one we knew (a pid
reused by a later process has another start time)."""

from __future__ import annotations

import os

__all__ = ["proc_stat", "process_alive", "process_start_ticks"]


def proc_stat(ospid: int | str) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or None
    if there is no such process."""
    try:
        with open(f"/proc/{ospid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()


def process_alive(ospid: int, start_ticks: int) -> bool:
    """The OS process ``ospid`` that started at ``start_ticks`` still runs (not a zombie,
    not a later process under a reused id). One read of /proc/PID/stat, about 15 us."""
    try:
        fd = os.open(f"/proc/{ospid}/stat", os.O_RDONLY)
    except OSError:
        return False
    try:
        stat = os.read(fd, 1024)
    except OSError:
        return False
    finally:
        os.close(fd)
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[0] not in (b"Z", b"X") and int(fields[19]) == start_ticks


def process_start_ticks(ospid: int) -> int | None:
    """The start time of an OS process in clock ticks, or None if it does not exist."""
    fields = proc_stat(ospid)
    return None if fields is None else int(fields[19])
