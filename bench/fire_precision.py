"""Fire precision of the scheduler under CPU load, beside APScheduler 3.

    python -m bench.fire_precision [--quick]

``fire_lateness_ms_p50`` / ``_p99``: entry into the task function minus the run's tick
(``current_run().tick``; the pool's ``run started`` log line if it gives none), over
every fire whose tick lies in the measured window. 3 loopback nodes (127.0.0.41-43),
``policy="majority"``, a SQLite store per node, pool of 8 workers, ``lead`` 0.05 s; 4
jobs ``* * * * * *`` (each fires every second, all 4 at the same instant) for 80 s:
320 fires (12 s, 48 fires with ``--quick``). Two processes spinning on the CPU (started
by this script once the cluster fires, killed at the end) load the 2-core box during
both systems' windows.

Peer ``apscheduler3``: APScheduler 3 (``BackgroundScheduler``, a ``ThreadPoolExecutor``
of 8, the same 4 jobs with ``CronTrigger(second="*")``, ``misfire_grace_time=None``) in
a process of its own, after ours, under the same two spinners; lateness measured the
same way, the tick being the cron's last fire time at or before the entry (APScheduler
passes none; the summary checks it against the scheduled times APScheduler submitted).
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench import _runner as c
from bench import _scheduler_driver as st
from tests.harness.polling import wait_until

JOBS = 4
POOL = 8
SPINNERS = 2
WARM_S = 3.0
NAMES = [f"fp{i}@127.0.0.{41 + i}" for i in range(3)]


def windows(quick: bool) -> float:
    return 12.0 if quick else 80.0


# --------------------------------------------------------------------------- otpkit


def measure_otpkit(quick: bool, start_load: Callable[[], None]) -> dict[str, Any]:
    log_dir = tempfile.mkdtemp(prefix="otpkit-bench-fire-")
    path = os.path.join(log_dir, "stamps")
    jobs = [
        {
            "name": f"fire{j}",
            "schedule": "* * * * * *",
            "task": "bench._scheduler_tasks:stamp",
            "args": [path, f"fire{j}"],
        }
        for j in range(JOBS)
    ]
    config = {"policy": "majority", "jobs": jobs, "max_concurrency": POOL, "lead": 0.05}
    duration = windows(quick)
    nodes = st.start_cluster(NAMES, log_dir, config, store=True)
    try:
        first = wait_until(lambda: st.holder(nodes), timeout=60, what="one holder")
        t_ready = time.time()
        wait_until(
            lambda: any(r["start"] > t_ready for r in st.read_stamps(path)),
            timeout=30,
            what="the jobs fire",
        )
        start_load()
        time.sleep(WARM_S)
        ws = math.ceil(time.time())
        we = ws + int(duration)
        time.sleep(max(0.0, we + 1.0 - time.time()))
        last = st.holder(nodes)
    finally:
        for n in nodes:
            n.close()
    rows = st.read_stamps(path)
    source = st.fill_ticks(rows, [n.log_path for n in nodes])
    inside = [r for r in rows if r.get("tick") is not None and ws <= r["tick"] < we]
    late = [(r["start"] - r["tick"]) * 1000 for r in inside]
    seen = collections.Counter((r["job"], r["tick"]) for r in inside)
    expected = {(f"fire{j}", float(t)) for j in range(JOBS) for t in range(ws, we)}
    return {
        "lateness_ms": late,
        "fires": len(inside),
        "expected": len(expected),
        "missing": len(expected - set(seen)),
        "duplicates": sum(1 for k in seen.values() if k > 1),
        "tick_source": source,
        "holder": [first.name, last.name if last else None],
        "log_dir": log_dir,
    }


# --------------------------------------------------------------------------- peer

_STARTS: dict[str, list[float]] = collections.defaultdict(list)


def peer_fire(name: str) -> None:
    start = time.time()
    _STARTS[name].append(start)


def measure_apscheduler(quick: bool) -> dict[str, Any]:
    from datetime import UTC  # noqa: PLC0415

    import apscheduler  # noqa: PLC0415 - peer role only
    from apscheduler.events import (  # noqa: PLC0415
        EVENT_JOB_MAX_INSTANCES,
        EVENT_JOB_MISSED,
        EVENT_JOB_SUBMITTED,
    )
    from apscheduler.executors.pool import ThreadPoolExecutor  # noqa: PLC0415
    from apscheduler.schedulers.background import BackgroundScheduler  # noqa: PLC0415
    from apscheduler.triggers.cron import CronTrigger  # noqa: PLC0415

    submitted: dict[str, set[float]] = collections.defaultdict(set)
    trouble = collections.Counter()

    def listen(event: Any) -> None:
        if event.code == EVENT_JOB_SUBMITTED:
            submitted[event.job_id].update(t.timestamp() for t in event.scheduled_run_times)
        elif event.code == EVENT_JOB_MISSED:
            trouble["missed"] += 1
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            trouble["max_instances"] += 1

    sched = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(POOL)},
        job_defaults={"coalesce": False, "max_instances": 1, "misfire_grace_time": None},
        timezone=UTC,
    )
    for j in range(JOBS):
        name = f"fire{j}"
        sched.add_job(peer_fire, CronTrigger(second="*", timezone=UTC), args=[name], id=name)
    sched.add_listener(listen, EVENT_JOB_SUBMITTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    duration = windows(quick)
    sched.start()
    time.sleep(WARM_S)
    ws = math.ceil(time.time())
    we = ws + int(duration)
    time.sleep(max(0.0, we + 1.0 - time.time()))
    sched.shutdown(wait=True)
    late: list[float] = []
    unmatched = 0
    seen: collections.Counter[tuple[str, float]] = collections.Counter()
    for name, starts in _STARTS.items():
        for start in starts:
            tick = float(math.floor(start))  # CronTrigger(second="*"): last fire <= start
            if not ws <= tick < we:
                continue
            if tick not in submitted[name]:
                unmatched += 1
            seen[(name, tick)] += 1
            late.append((start - tick) * 1000)
    expected = {(f"fire{j}", float(t)) for j in range(JOBS) for t in range(ws, we)}
    return {
        "lateness_ms": late,
        "fires": len(late),
        "expected": len(expected),
        "missing": len(expected - set(seen)),
        "duplicates": sum(1 for k in seen.values() if k > 1),
        "tick_not_submitted": unmatched,
        "events": dict(trouble),
        "version": apscheduler.__version__,
        "non_loopback": c.check_loopback_only(),
    }


# --------------------------------------------------------------------------- driver


def describe(label: str, result: dict[str, Any]) -> list[str]:
    s = c.summary(result["lateness_ms"]) if result["lateness_ms"] else {}
    stats = " ".join(f"{k} {v:.2f}" if k != "n" else f"n {v}" for k, v in s.items())
    extra = {
        k: result[k]
        for k in ("tick_source", "holder", "tick_not_submitted", "events", "version")
        if k in result
    }
    return [
        f"{label}: lateness ms {stats}",
        f"  fires {result['fires']} of {result['expected']} expected, missing"
        f" {result['missing']}, duplicate ticks {result['duplicates']} {extra}",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help=f"smoke run ({windows(True):.0f} s)")
    ap.add_argument("--role", choices=("apscheduler",), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        c.write_result(args.out, measure_apscheduler(args.quick))
        return 0
    tag = uuid.uuid4().hex
    os.environ[c.MARKER_VAR] = tag  # every process this run starts carries it
    load = c.HostLoad()
    spinners: list[st.Spinners] = []
    try:
        ours = measure_otpkit(args.quick, lambda: spinners.append(st.Spinners(SPINNERS)))
        peer = c.run_role(__spec__.name, "apscheduler", args.quick)
    finally:
        for s in spinners:
            s.stop()
    keep = bool(os.environ.get("OTPKIT_BENCH_KEEP"))
    st.check_left(tag)
    c.say(
        f"fire_precision: 3 nodes majority, {JOBS} jobs '* * * * * *', pool {POOL},"
        f" {SPINNERS} spinning processes, window {windows(args.quick):.0f} s",
        *describe("otpkit", ours),
        *describe(f"apscheduler {peer.get('version')}", peer),
        f"  node logs: {ours['log_dir']}" + ("" if keep else " (removed)"),
        load.line(),
    )
    if not keep:
        shutil.rmtree(ours["log_dir"], ignore_errors=True)
    figures = []
    for q in (50, 99):
        value = c.percentile(ours["lateness_ms"], q)
        peer_value = c.percentile(peer["lateness_ms"], q)
        figures.append(
            c.figure(f"fire_lateness_ms_p{q}", value, "ms", "apscheduler3", peer_value, 2)
        )
    c.emit(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
