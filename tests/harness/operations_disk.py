"""Scenario (h) of issue 12's operations suite: one node's data dir on a full disk.

Each node's ``--data-dir`` is a small tmpfs of its own (:func:`disk_cluster_in`: 16 MiB,
mounted before the node starts; its scheduler's SQLite store and its quorum's promises
live there). While the cluster runs, :func:`full_disk` fills one of them to the last
byte with a file, keeps it full for ``seconds``, then deletes the file (the heal) -
first on a node that does not run the ticks, then on the holder's own node:

* a full store on a **non-holder** holds nobody back: the holder and the other healthy
  member are a majority of stores (the finding: the sick node's quick "failed" answer
  ended the write round before the healthy member's ack, and 7 ticks were missed);
* a full store on the **holder** is not counted as a copy: the holder then needs both
  other members' acks - still a healthy majority - and goes on (no hand-over, so no
  gap: the quorum's lease renewals write nothing to disk).

Each time it checks the suite's invariant (no tick twice, every tick missing from the run
file reported missed or interrupted, the ticks resume: ``close_books``), that the holder
ran every tick of the window with no gap over 2.5 s, that the sick node logged an ERROR
naming its store and the cause - a few lines, not one per write - and that, once healed,
it logged that its replica is in sync again (the holder synced it). The figure is
``minority_disk_full_missed_ticks`` (ticks of both windows missing from the run file;
goal 0). Like the other scenarios it returns an :class:`~tests.harness.operations.Outcome`;
:func:`plugin` makes its own cluster, as ``bench/operations.py``'s plug-ins do.

Everything the scenario makes is removed afterwards, whatever happened: the filler file
with its tmpfs, the mounts after the nodes are stopped.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.harness.netns_run_cluster import (
    RunCluster,
    clock,
    index_of,
    largest_gap,
    pause_until,
    run_cluster_in,
    short,
)
from tests.harness.operations import IN_SYNC, Outcome, boot, close_books, healthy
from tests.harness.polling import wait_for

TMPFS_SIZE = "16m"
SICK_SECONDS = 15.0
GAP_BOUND = 2.5  # the ticks go on: as around a non-holder's cut (scenario f)
ERROR_BOUND = 20.0  # the sick node's first write after the fill fails (one a second)
IN_SYNC_BOUND = 30.0  # after the heal: a write succeeds, the holder syncs the copy
#: the sick node's store ERROR (one per episode, then one a minute; a new cause: one more)
STORE_ERROR = re.compile(r" ERROR .*its store (\S+) (?:still )?cannot be written \((.+?)\)")
MAX_ERROR_LINES = 3
SHORT_WRITE = "other members it needs"  # the holder's WARNING: a write fell short
QUORUM_ERROR = "cannot be written (No space left"  # the quorum store's ERROR
FILLER = "filler"


# --------------------------------------------------------------------------- the mounts


def mount_tmpfs(where: Path, size: str = TMPFS_SIZE) -> None:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        check=True,
        capture_output=True,
        text=True,
    )


def unmount(where: Path) -> str | None:
    """Unmount ``where`` (lazily if something still has it open); why not, or None."""
    why = ""
    for argv in (["umount", str(where)], ["umount", "-l", str(where)]):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return None
        why = done.stderr.strip()
    return f"{where}: {why}"


def is_mount(where: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(where)], check=False).returncode == 0


@contextlib.contextmanager
def disk_cluster_in(workdir: Path) -> Iterator[RunCluster]:
    """:func:`run_cluster_in` with each node's data dir a tmpfs of its own (no node
    started); afterwards the nodes are stopped first, then the mounts are removed,
    whatever happened."""
    mounted: list[Path] = []
    workdir.mkdir(parents=True, exist_ok=True)
    with run_cluster_in(workdir) as rc:
        try:
            for i in rc.everyone:
                mount_tmpfs(rc.data_dir(i))
                mounted.append(rc.data_dir(i))
            yield rc
        finally:
            rc.close()  # the nodes first: their stores are on the mounts
            left = [why for where in mounted if (why := unmount(where))]
            assert not left, f"tmpfs mounts not removed: {left}"
    still = [str(where) for where in mounted if is_mount(where)]
    assert not still, f"still mounted: {still}"


def fill(directory: Path) -> int:
    """Fill the file system of ``directory`` to the last byte with one file; its size."""
    chunk = b"\xa5" * (1 << 20)
    written = 0
    fd = os.open(directory / FILLER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with contextlib.suppress(OSError):  # ENOSPC: full
            while True:
                written += os.write(fd, chunk)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return written


def free(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (directory / FILLER).unlink()


# --------------------------------------------------------------------------- the scenario


def store_errors(rc: RunCluster, i: int, since_line: int) -> list[tuple[str, str]]:
    """(store path, cause) of each store ERROR node ``i`` logged after line ``since_line``."""
    rows = rc.log(i).splitlines()[since_line:]
    return [(m.group(1), m.group(2)) for r in rows if (m := STORE_ERROR.search(r))]


def sick_episode(rc: RunCluster, out: Outcome, sick: int, holder: str, seconds: float) -> int:
    """Fill node ``sick``'s data dir for ``seconds``, then free it; check what a user
    checks (problems and figures into ``out``). Returns the ticks missed."""
    h = index_of(holder)
    role = "the holder" if sick == h else f"a non-holder (holder {short(holder)})"
    log_lines = len(rc.log(sick).splitlines())
    holder_lines = len(rc.log(h).splitlines())
    in_sync_before = rc.log(sick).count(IN_SYNC)
    t_fill = time.time()
    try:
        size = fill(rc.data_dir(sick))
        wait_for(
            lambda: store_errors(rc, sick, log_lines),
            ERROR_BOUND,
            f"n{sick} logs an ERROR naming its store",
            0.2,
            rc.diagnostics,
        )
        t_error = time.time()
        pause_until(t_fill + seconds)
    finally:
        free(rc.data_dir(sick))
    t_heal = time.time()
    synced = wait_for(
        lambda: rc.log(sick).count(IN_SYNC) > in_sync_before and time.time(),
        IN_SYNC_BOUND,
        f"n{sick} logs that its replica is in sync again",
        0.2,
        rc.diagnostics,
    )
    runs = rc.runs()
    window = [r for r in runs if t_fill <= r.start <= t_heal]
    strangers = [str(r) for r in window if r.node != holder]
    gap = largest_gap(runs, t_fill, t_heal)
    errors = store_errors(rc, sick, log_lines)
    shorts = sum(1 for r in rc.log(h).splitlines()[holder_lines:] if SHORT_WRITE in r)
    quorum_errors = sum(1 for r in rc.log(sick).splitlines()[log_lines:] if QUORUM_ERROR in r)
    out.report += [
        f"n{sick}, {role}: data dir full ({size >> 20} MiB filler) at {clock(t_fill)}, "
        f"store ERROR after {t_error - t_fill:.1f} s, freed at +{t_heal - t_fill:.1f} s, "
        f"in sync again {synced - t_heal:.1f} s after",
        f"  largest gap: {gap}",
        f"  n{sick}'s store ERROR lines: {len(errors)} {sorted(set(errors))}",
        f"  n{sick}'s quorum store ERROR lines: {quorum_errors} (it writes nothing while no "
        "lease changes hands)",
        f"  {short(holder)}'s WARNING lines of writes that fell short: {shorts}",
    ]
    if strangers:
        out.problems.append(
            f"n{sick} full: ticks ran on other nodes than {short(holder)}: {strangers}"
        )
    if gap.seconds > GAP_BOUND:
        out.problems.append(f"n{sick} full: no tick for {gap.seconds:.1f} s (> {GAP_BOUND} s)")
    store = str(rc.data_dir(sick))
    if not all(path.startswith(store) and "full" in cause for path, cause in errors):
        out.problems.append(f"n{sick}'s store ERROR does not name its store and the full disk")
    if len(errors) > MAX_ERROR_LINES:
        out.problems.append(
            f"n{sick} logged {len(errors)} store ERROR lines in {seconds:.0f} s "
            f"(> {MAX_ERROR_LINES}: one per episode, not one per write)"
        )
    tally = close_books(rc, out, t_fill, t_heal)
    return tally.missed


def full_disk(rc: RunCluster, seconds: float = SICK_SECONDS) -> Outcome:
    """(h) On a cluster made by :func:`disk_cluster_in` and booted: a non-holder's data
    dir full for ``seconds``, freed; then the holder's. Figure:
    ``minority_disk_full_missed_ticks`` (goal 0)."""
    out = Outcome(f"(h) one node's data dir full for {seconds:.0f} s, twice")
    holder = healthy(rc)
    other = min(i for i in rc.everyone if i != index_of(holder))
    missed = sick_episode(rc, out, other, holder, seconds)
    holder = rc.wait_ticking(time.time(), 30, count=2)
    missed += sick_episode(rc, out, index_of(holder), holder, seconds)
    out.figures["minority_disk_full_missed_ticks"] = missed
    return out.done()


def plugin(workdir: Path, quick: bool = False) -> Outcome:
    """``bench/operations.py``'s plug-in: a cluster of its own in ``workdir`` whose data
    dirs are tmpfs mounts, booted, then :func:`full_disk` (``quick`` changes nothing:
    two 15 s episodes are the short form)."""
    with disk_cluster_in(workdir / "cluster") as rc:
        boot(rc)
        return full_disk(rc)
