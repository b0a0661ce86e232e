"""Scenario (i) of issue 12's operations suite: a rolling update to the next release.

The next release is this code with its dist protocol, quorum state format and
scheduler schema versions one higher (:func:`tests.harness.versions.next_release`): what
a release that changed all three looks like to the cluster. A StatefulSet's rolling
update (``kubectl set image``) replaces one pod at a time, from the highest index down:
SIGTERM, wait for the exit, start on the new build, the next one as soon as it answers
``/healthz/ready`` 200. Like the other scenarios (``tests/harness/operations.py``) it
returns an :class:`~tests.harness.operations.Outcome`; its figure is
``rolling_update_missed_ticks`` (ticks of the roll missing from the run file; goal 0).
:func:`rolling_update` runs on a booted cluster (the test's); :func:`plugin` makes its
own, as ``bench/operations.py``'s plug-ins do.

Besides the suite's invariant (no tick twice, every missing tick reported missed or
interrupted, the ticks resume) it checks what versions add: while the cluster runs both
releases every node has a dist link to every other (``RunCluster.meshed``), no node
logged a version refusal, and each updated node migrated its stores forward (the log
lines, and the versions in the files afterwards).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from tests.harness.netns_run_cluster import (
    RunCluster,
    clock,
    largest_gap,
    name_of,
    run_cluster_in,
)
from tests.harness.operations import Outcome, boot, close_books, healthy, restart
from tests.harness.polling import wait_for
from tests.harness.versions import current, next_release

#: A mixed cluster is meshed as soon as a node is ready (ready means joined: every
#: discovered peer connected); this only bounds the poll on a loaded box.
MESH_BOUND = 20.0
#: What every version refusal line says (``distribution._handshake``).
REFUSAL = "otpkit protocol"


def store_versions(rc: RunCluster, i: int) -> tuple[int | None, list[int]]:
    """(the format of node ``i``'s quorum file, the schema version of each of its
    scheduler stores), read from its data dir (a read-only SQLite connection)."""
    quorum = rc.data_dir(i) / "otpkit" / f"quorum@{name_of(i)}.json"
    try:
        fmt = json.loads(quorum.read_text()).get("format")
    except (OSError, ValueError):
        fmt = None
    schemas = []
    data = rc.data_dir(i)
    for path in sorted([*data.glob("*.sqlite"), *data.glob("otpkit/*.sqlite")]):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            schemas.append(int(conn.execute("SELECT version FROM otpkit_schema").fetchone()[0]))
        finally:
            conn.close()
    return fmt, schemas


def rolling_update(rc: RunCluster, new: Path) -> Outcome:
    """(i) Replace each node of a healthy cluster running ``rc.source`` by one running
    ``new`` (the next release), one at a time at a StatefulSet's pace."""
    out = Outcome("(i) rolling update to the next release")
    old = rc.source
    versions = {what: (current(what, old), current(what, new)) for what in ("protocol",)}
    versions.update({w: (current(w, old), current(w, new)) for w in ("state", "schema")})
    healthy(rc)
    t0 = out.started = time.time()
    out.report.append(
        f"update starts at {clock(t0)}: "
        + ", ".join(f"{w} {a} -> {b}" for w, (a, b) in versions.items())
    )
    order = sorted(rc.everyone, reverse=True)
    for k, i in enumerate(order):
        rc.source = new
        restart(rc, i, out, t0)
        if k < len(order) - 1:  # both releases run now
            t = time.time()
            try:
                wait_for(rc.meshed, MESH_BOUND, "every node linked to every other", 0.2)
            except AssertionError:
                out.problems.append(
                    f"with {k + 1} of {len(order)} nodes updated the dist mesh is not whole "
                    f"after {MESH_BOUND:.0f} s: {[sorted(rc.links(j)) for j in rc.everyone]}"
                )
            else:
                out.report.append(
                    f"  {k + 1} of {len(order)} updated: every node linked to every other "
                    f"(+{time.time() - t:.1f} s after ready)"
                )
    t_done = time.time()
    tally = close_books(rc, out, t0, t_done)
    out.report.append(
        f"  update done at +{t_done - t0:.1f} s; largest gap between run starts: "
        f"{largest_gap(rc.runs(), t0, t_done)}"
    )
    out.figures["rolling_update_missed_ticks"] = tally.missed
    for i in rc.everyone:
        refusals = [ln for ln in rc.log(i).splitlines() if REFUSAL in ln]
        if refusals:
            out.problems.append(f"n{i} logged version refusals: {refusals[:3]}")
        fmt, schemas = store_versions(rc, i)
        want_state, want_schema = versions["state"][1], versions["schema"][1]
        out.report.append(f"  n{i}: quorum store format {fmt}, scheduler schema {schemas}")
        if fmt != want_state or not schemas or set(schemas) != {want_schema}:
            out.problems.append(
                f"n{i}'s stores are not of the new release: quorum format {fmt} (want "
                f"{want_state}), scheduler schema {schemas} (want {want_schema})"
            )
        migrated = [
            f"{label} {was} migrated to {now}"
            for label, (was, now) in (
                ("format", versions["state"]),
                ("schema version", versions["schema"]),
            )
            if was != now  # a release that keeps a format migrates nothing
        ]
        log = rc.log(i)
        missing = [line for line in migrated if line not in log]
        if missing:
            out.problems.append(f"n{i} did not log its stores' migration: {missing}")
    return out.done()


def plugin(workdir: Path, quick: bool = False) -> Outcome:
    """``bench/operations.py``'s plug-in: a cluster of its own in ``workdir`` on this
    repository's code (or ``$NETNS_OTPKIT_SRC``), booted, rolled to the next release
    built from it (``quick`` changes nothing: one roll is the short form)."""
    (workdir / "cluster").mkdir(parents=True, exist_ok=True)
    with run_cluster_in(workdir / "cluster") as rc:
        new = next_release(workdir / "next", source=rc.source)
        boot(rc)
        return rolling_update(rc, new)
