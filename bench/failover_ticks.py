"""A per-second job through repeated SIGKILLs of the scheduler holder's node.

    python -m bench.failover_ticks [--quick]

3 loopback nodes (127.0.0.61-63), ``policy="majority"``, a SQLite store per node (the
restarted node opens its own again), pool of 4; one job ``* * * * * *`` whose task stamps
its tick (``current_run()``) and its entry (bench/_scheduler_tasks.py). 12 rounds (2 with
``--quick``): wait until all three nodes name one holder, every node is a quorum member
again and the job has fired on the holder, then 4 s (a restarted member grants nothing
new for term + margin, as in bench/failover.py) and a random 0-1 s (the kill lands
anywhere in the second); SIGKILL every process of the holder's node at once; wait for
the next run's entry; start the killed node again and re-mesh.

* ``failover_tick_gap_s_p50``: per kill, the first run entry after the kill minus the
  last run entry before it (all runs of the job, on any node).
* ``failover_duplicate_ticks``: ticks entered more than once over the whole run (goal 0).

The summary adds every gap, the ticks between the two runs that never started, the
first run's lateness (a late first run is a catch-up of a missed tick), and the events
(every node subscribed; the union by event id): ``run_interrupted`` (open claims whose
run died with the node) and ``run_missed`` (with the ticks they span). No peer:
APScheduler has no fail-over, and Erlang's is measured by bench/failover.py.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import random
import shutil
import signal
import tempfile
import time
import uuid
from datetime import datetime
from typing import Any

from bench import _runner as c
from bench import _scheduler_driver as st
from tests.harness.node_process import mesh
from tests.harness.polling import wait_until

NAMES = [f"ft{i}@127.0.0.{61 + i}" for i in range(3)]
JOB = "tick"


def members_whole(nodes: list[Any]) -> bool:
    views = [n.cmd(op="quorum_members") for n in nodes]
    return all(len(v[1]) == 3 for v in views) and len({v[0] for v in views}) == 1


def run(kills: int) -> dict[str, Any]:
    log_dir = tempfile.mkdtemp(prefix="otpkit-bench-ftick-")
    path = os.path.join(log_dir, "stamps")
    job = {
        "name": JOB,
        "schedule": "* * * * * *",
        "task": "bench._scheduler_tasks:stamp",
        "args": [path, JOB],
    }
    config = {"policy": "majority", "jobs": [job], "max_concurrency": 4, "lead": 0.05}
    rng = random.Random()
    nodes = st.start_cluster(NAMES, log_dir, config, store=True)
    rounds: list[dict[str, Any]] = []
    restarts = collections.Counter()

    def subscribe(node: Any) -> None:
        events = os.path.join(log_dir, f"events-{node.name}-{restarts[node.name]}")
        node.cmd(op="sched_events", path=events)

    try:
        for n in nodes:
            subscribe(n)
        for _ in range(kills):
            h = wait_until(lambda nodes=nodes: st.holder(nodes), timeout=60, what="one holder")
            wait_until(
                lambda nodes=nodes: members_whole(nodes), timeout=60, what="3 quorum members"
            )
            t = time.time()
            wait_until(
                lambda h=h, t=t: any(
                    r["node"] == h.name and r["start"] > t for r in st.read_stamps(path)
                ),
                timeout=30,
                what=f"the job fires on {h.name}",
            )
            time.sleep(4.0 + rng.random())
            pids = [h.proc.pid, *h.cmd(op="pids")]
            t_kill = time.time()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_until(
                lambda t_kill=t_kill: any(r["start"] > t_kill for r in st.read_stamps(path)),
                timeout=60,
                what="a run after the kill",
            )
            rounds.append({"holder": h.name, "t_kill": t_kill})
            h.proc.wait(30)
            h.close()
            restarts[h.name] += 1
            fresh = st.start_node(h.name, log_dir, config, store=True).wait_ready()
            nodes = [fresh if n is h else n for n in nodes]
            mesh(nodes)
            subscribe(fresh)
        time.sleep(3.0)  # the last round's finishes and events
        rounds_after = st.holder(nodes)
    finally:
        for n in nodes:
            n.close()
    stamps = st.read_stamps(path)
    source = st.fill_ticks(stamps, [os.path.join(log_dir, f"{n}.log") for n in NAMES])
    events: dict[str, dict[str, Any]] = {}
    for name in os.listdir(log_dir):
        if name.startswith("events-"):
            for e in st.read_stamps(os.path.join(log_dir, name)):
                events[e["id"]] = e
    return {
        "rounds": rounds,
        "stamps": stamps,
        "events": list(events.values()),
        "tick_source": source,
        "holder_at_end": rounds_after.name if rounds_after else None,
        "log_dir": log_dir,
    }


def analyse(result: dict[str, Any]) -> dict[str, Any]:
    stamps = sorted(result["stamps"], key=lambda r: r["start"])
    per_kill = []
    for rnd in result["rounds"]:
        t_kill = rnd["t_kill"]
        before = [r for r in stamps if r["start"] <= t_kill]
        after = [r for r in stamps if r["start"] > t_kill]
        if not before or not after:
            continue
        last, first = before[-1], after[0]
        lost = []
        if last.get("tick") is not None and first.get("tick") is not None:
            ticks = {r["tick"] for r in stamps if r.get("tick") is not None}
            lost = [
                t for t in range(int(last["tick"]) + 1, int(first["tick"])) if float(t) not in ticks
            ]
        per_kill.append(
            {
                "holder": rnd["holder"],
                "gap_s": first["start"] - last["start"],
                "kill_to_next_s": first["start"] - t_kill,
                "next_on": first["node"],
                "next_lateness_s": None
                if first.get("tick") is None
                else first["start"] - first["tick"],
                "ticks_never_started": len(lost),
            }
        )
    seen = collections.Counter(r["tick"] for r in stamps if r.get("tick") is not None)
    duplicates = sorted(t for t, k in seen.items() if k > 1)
    kinds = collections.Counter(e["kind"] for e in result["events"])
    interrupted = sorted(
        datetime.fromisoformat(e["tick"]).timestamp()
        for e in result["events"]
        if e["kind"] == "run_interrupted"
    )
    missed_ticks = 0
    for e in result["events"]:
        if e["kind"] != "run_missed":
            continue
        extra = e.get("extra") or {}
        first, last = extra.get("first") or e["tick"], extra.get("last") or e["tick"]
        span = datetime.fromisoformat(last) - datetime.fromisoformat(first)
        missed_ticks += int(span.total_seconds()) + 1
    return {
        "per_kill": per_kill,
        "gaps": [k["gap_s"] for k in per_kill],
        "duplicates": duplicates,
        "runs": len(stamps),
        "event_kinds": dict(kinds),
        "interrupted_ticks": len(interrupted),
        "interrupted_started": sum(1 for t in interrupted if seen.get(t)),
        "missed_ticks": missed_ticks,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="2 kills")
    args = ap.parse_args()
    tag = uuid.uuid4().hex
    os.environ[c.MARKER_VAR] = tag
    keep = bool(os.environ.get("OTPKIT_BENCH_KEEP"))
    load = c.HostLoad()
    result = run(2 if args.quick else 12)
    st.check_left(tag)
    a = analyse(result)
    lines = [f"failover_ticks: {len(result['rounds'])} kills, 3 nodes majority, store per node"]
    for k in a["per_kill"]:
        lines.append(
            "  kill {holder}: gap {gap_s:.3f} s, kill->next {kill_to_next_s:.3f} s on {next_on},"
            " next run's lateness {lat}, ticks never started {ticks_never_started}".format(
                lat="-" if k["next_lateness_s"] is None else f"{k['next_lateness_s']:.3f} s", **k
            )
        )
    if a["gaps"]:
        lines.append(f"  gap s {c.summary(a['gaps'])}")
    lines += [
        f"  runs {a['runs']}, duplicate ticks {a['duplicates']}, tick source"
        f" {result['tick_source']}, holder at the end {result['holder_at_end']}",
        f"  events {a['event_kinds']}: interrupted ticks {a['interrupted_ticks']} (of which"
        f" entered before the kill: {a['interrupted_started']}), missed ticks"
        f" {a['missed_ticks']}",
        f"  node logs: {result['log_dir']}" + ("" if keep else " (removed)"),
        load.line(),
    ]
    c.say(*lines)
    if not keep:
        shutil.rmtree(result["log_dir"], ignore_errors=True)
    c.emit(
        [
            c.figure("failover_tick_gap_s_p50", c.percentile(a["gaps"], 50), "s"),
            c.figure("failover_duplicate_ticks", len(a["duplicates"]), "ticks"),
        ]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
