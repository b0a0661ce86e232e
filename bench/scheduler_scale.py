"""The scheduler with 10,000 jobs: idle CPU of its holder, and a burst of 2,000 runs
due in the same second, beside APScheduler 3 with the same jobs.

    python -m bench.scheduler_scale [--quick]

Jobs (configuration jobs of a ``Scheduler`` on 3 loopback nodes, 127.0.0.51-53,
``policy="majority"``, a SQLite store per node, pool of 10 workers per node):

* 8,000 *spread* jobs firing once an hour each (``S M * * * *``, a no-op task), spread
  over the hour's minutes and over the seconds of each minute that lie outside the
  idle window below (about 4.8 due per such second);
* 2,000 *burst* jobs ``0 * * * * *`` (second 0 of every minute; run_strategy local, so
  all on the holder's pool), whose task stamps its start (bench/_scheduler_tasks.py).

Each measured minute M: the burst at M:00, then the idle window M:15-M:45, in which no
job is due.

* ``scheduler_idle_cpu_pct_10k_jobs``: CPU time of the holder's SchedulerWorker OS
  process (``whereis_name("otpkit_scheduler").id``) over the idle window, as % of one
  CPU; the summary adds the holder's whole node and the cluster.
* ``dispatch_ticks_per_s``: the burst's runs / (last run's entry into its task - the
  tick): claimed, sent to the pool and started, bounded by the pool's 10 workers;
  only minutes in which every burst run started count (none: ``null`` with a note).

Two measured minutes (median of the two is the figure; both in the summary). CPU is
the first field of /proc/PID/task/*/schedstat (ns, all threads); the summary also gives
utime + stime from /proc/PID/stat (10 ms ticks). ``--quick``: 500 jobs (400 + 100), a
12 s cycle (burst every 12 s, idle window +3..+9 s), one cycle.

Peer ``apscheduler3``: APScheduler 3 (``BackgroundScheduler``, ``ThreadPoolExecutor(10)``,
``CronTrigger`` of the same expressions, in-memory job store, ``misfire_grace_time=None``)
in a process of its own, after ours: its process's CPU over the same windows, and the
burst's starts per second measured the same way.
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
from datetime import UTC, datetime
from typing import Any

from bench import _runner as c
from bench import _scheduler_driver as st
from tests.harness.polling import wait_until

POOL = 10
NAMES = [f"sc{i}@127.0.0.{51 + i}" for i in range(3)]


def plan(quick: bool) -> dict[str, int]:
    if quick:
        return {"jobs": 500, "burst": 100, "period": 12, "cycles": 1}
    return {"jobs": 10_000, "burst": 2000, "period": 60, "cycles": 2}


def layout(p: dict[str, int]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(burst jobs, spread jobs) as (name, 6-field cron expression)."""
    period, q = p["period"], p["period"] // 4
    burst_expr = "0 * * * * *" if period == 60 else f"*/{period} * * * * *"
    burst = [(f"b{i}", burst_expr) for i in range(p["burst"])]
    offsets = [*range(1, q), *range(3 * q + 1, period)]
    seconds = [k + o for k in range(0, 60, period) for o in offsets]
    slots = [(s, m) for m in range(60) for s in seconds]
    spread = []
    for i in range(p["jobs"] - p["burst"]):
        s, m = slots[i % len(slots)]
        spread.append((f"s{i}", f"{s} {m} * * * *"))
    return burst, spread


def cycle_starts(p: dict[str, int], lead_in: float) -> float:
    """The first burst instant at least ``lead_in`` seconds from now."""
    period = p["period"]
    return float(math.ceil((time.time() + lead_in) / period) * period)


def cpu_of(pids: list[int]) -> float:
    return sum(v for v in (st.proc_cpu_s(p) for p in pids) if v is not None)


def wait_for(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


# --------------------------------------------------------------------------- otpkit


def cpu_table(pids: dict[int, str]) -> dict[int, float]:
    return {p: v for p in pids if (v := st.proc_cpu_ns_s(p)) is not None}


def top_cpu(before: dict[int, float], after: dict[int, float], owner: dict[int, str], span: float):
    used = sorted(((after[p] - before[p], p) for p in after if p in before), reverse=True)
    return [f"{owner[p]}/{p} {100 * u / span:.1f}%" for u, p in used[:4]]


def holder_of(nodes: list[Any]) -> tuple[Any, int] | None:
    """(NodeProc, OS pid of its SchedulerWorker) of the holder every node names."""
    views = {tuple(n.cmd(op="bench_sched_holder_pid") or ()) for n in nodes}
    if len(views) != 1:
        return None
    view = views.pop()
    node = next((n for n in nodes if view and n.name == view[0]), None)
    return None if node is None else (node, int(view[1]))


def measure_otpkit(quick: bool) -> dict[str, Any]:
    p = plan(quick)
    q = p["period"] // 4
    log_dir = tempfile.mkdtemp(prefix="otpkit-bench-scale-")
    path = os.path.join(log_dir, "stamps")
    burst, spread = layout(p)
    jobs = [
        {"name": n, "schedule": e, "task": "bench._scheduler_tasks:stamp", "args": [path, n]}
        for n, e in burst
    ] + [{"name": n, "schedule": e, "task": "bench._scheduler_tasks:noop"} for n, e in spread]
    config = {"policy": "majority", "jobs": jobs, "max_concurrency": POOL}
    t0 = time.time()
    nodes = st.start_cluster(NAMES, log_dir, config, store=True)
    out: dict[str, Any] = {"log_dir": log_dir, "cycles": [], "t0": t0}
    events = os.path.join(log_dir, "events")
    try:
        out["boot_s"] = time.time() - t0
        h, _ = wait_until(lambda: holder_of(nodes), timeout=600, interval=0.5, what="a holder")
        listed = wait_until(
            lambda: (
                isinstance(r := h.cmd(op="sched_jobs", t=10), list)
                and (not r or r[0] != "error")
                and r
            ),
            timeout=900,
            interval=1.0,
            what="the holder answers jobs()",
        )
        out["jobs_listed"] = len(listed)
        out["recovered_s"] = time.time() - t0
        wait_until(
            lambda: (
                (hp := holder_of(nodes)) is not None
                and not hp[0].cmd(op="bench_sched_pool_state")["queued"]
            ),
            timeout=300,
            interval=0.5,
            what="the catch-up runs are through",
        )
        out["steady_s"] = time.time() - t0
        for n in nodes:
            if n is not h:
                n.cmd(op="sched_events", path=events)
                break
        owner = {pid: n.name.split("@")[0] for n in nodes for pid in n.cmd(op="pids")}
        m = cycle_starts(p, 2.0)
        for _ in range(p["cycles"]):
            wait_for(m - 1.0)
            hp = holder_of(nodes)
            burst0 = cpu_table(owner)
            wait_for(m + q)
            hp_window = holder_of(nodes)
            burst1 = cpu_table(owner)
            t_b = time.time() - (m - 1.0)
            cy: dict[str, Any] = {"tick": m, "holder": None if hp is None else [hp[0].name, hp[1]]}
            if hp_window is not None:
                h, holder_ospid = hp_window
                cy["holder_window"] = [h.name, holder_ospid]
                mine = [pid for pid, name in owner.items() if h.name.startswith(name + "@")]
                before = (
                    st.proc_cpu_ns_s(holder_ospid),
                    cpu_of(mine),
                    cpu_of(list(owner)),
                    time.time(),
                    st.proc_cpu_s(holder_ospid),
                )
                cy["pool_at_window"] = h.cmd(op="bench_sched_pool_state")
                idle0 = cpu_table(owner)
                wait_for(m + 3 * q)
                idle1 = cpu_table(owner)
                after = (
                    st.proc_cpu_ns_s(holder_ospid),
                    cpu_of(mine),
                    cpu_of(list(owner)),
                    time.time(),
                    st.proc_cpu_s(holder_ospid),
                )
                span = after[3] - before[3]
                ok = before[0] is not None and after[0] is not None
                cy.update(
                    {
                        "idle_cpu_pct": 100 * (after[0] - before[0]) / span if ok else None,
                        "idle_cpu_pct_stat": 100 * (after[4] - before[4]) / span if ok else None,
                        "holder_node_cpu_pct": 100 * (after[1] - before[1]) / span,
                        "cluster_cpu_pct": 100 * (after[2] - before[2]) / span,
                        "window_s": span,
                        "holder_after_window": (holder_of(nodes) or (None,))[0] is h,
                        "idle_top": top_cpu(idle0, idle1, owner, span),
                    }
                )
            else:
                wait_for(m + 3 * q)
            rows = [r for r in st.read_stamps(path) if r.get("tick") == m]
            starts = sorted(r["start"] for r in rows)
            iso = datetime.fromtimestamp(m, UTC).isoformat()
            seen = [e for e in st.read_stamps(events) if e["job"][0] == "b" and e["tick"] == iso]
            finished = [e["at"] for e in seen if e["kind"] == "run_finished"]
            cy.update(
                {
                    "burst_started": len(rows),
                    "burst_distinct": len({r["arg"] for r in rows}),
                    "first_start_s": starts[0] - m if starts else None,
                    "last_start_s": starts[-1] - m if starts else None,
                    "events": dict(collections.Counter(e["kind"] for e in seen)),
                    "last_finish_event_s": max(finished) - m if finished else None,
                    "burst_top": top_cpu(burst0, burst1, owner, t_b),
                }
            )
            out["cycles"].append(cy)
            m += p["period"]
    finally:
        for n in nodes:
            n.close()
    return out


# --------------------------------------------------------------------------- peer

_BURST: list[tuple[str, float]] = []


def peer_burst(name: str) -> None:
    start = time.time()
    _BURST.append((name, start))


def peer_noop() -> None:
    pass


def measure_apscheduler(quick: bool) -> dict[str, Any]:
    import apscheduler  # noqa: PLC0415 - peer role only
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED  # noqa: PLC0415
    from apscheduler.executors.pool import ThreadPoolExecutor  # noqa: PLC0415
    from apscheduler.schedulers.background import BackgroundScheduler  # noqa: PLC0415
    from apscheduler.triggers.cron import CronTrigger  # noqa: PLC0415

    p = plan(quick)
    q = p["period"] // 4
    trouble: collections.Counter[str] = collections.Counter()

    def listen(event: Any) -> None:
        trouble["missed" if event.code == EVENT_JOB_MISSED else "max_instances"] += 1

    def trigger(expr: str) -> CronTrigger:
        sec, minute, hour, day, month, dow = expr.split()
        return CronTrigger(
            second=sec,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=dow,
            timezone=UTC,
        )

    sched = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(POOL)},
        job_defaults={"coalesce": False, "max_instances": 1, "misfire_grace_time": None},
        timezone=UTC,
    )
    sched.add_listener(listen, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    burst, spread = layout(p)
    t0 = time.time()
    for name, expr in burst:
        sched.add_job(peer_burst, trigger(expr), args=[name], id=name)
    for name, expr in spread:
        sched.add_job(peer_noop, trigger(expr), id=name)
    sched.start()
    out: dict[str, Any] = {"add_s": time.time() - t0, "cycles": []}
    m = cycle_starts(p, 2.0)
    for _ in range(p["cycles"]):
        wait_for(m + q)
        b0, s0, t_0 = st.proc_cpu_ns_s(os.getpid()), st.proc_cpu_s(os.getpid()), time.time()
        wait_for(m + 3 * q)
        b1, s1, t_1 = st.proc_cpu_ns_s(os.getpid()), st.proc_cpu_s(os.getpid()), time.time()
        starts = sorted(s for _, s in _BURST if m <= s < m + p["period"])
        out["cycles"].append(
            {
                "tick": m,
                "idle_cpu_pct": 100 * ((b1 or 0) - (b0 or 0)) / (t_1 - t_0),
                "idle_cpu_pct_stat": 100 * ((s1 or 0) - (s0 or 0)) / (t_1 - t_0),
                "window_s": t_1 - t_0,
                "burst_started": len(starts),
                "first_start_s": starts[0] - m if starts else None,
                "last_start_s": starts[-1] - m if starts else None,
            }
        )
        m += p["period"]
    sched.shutdown(wait=True)
    out["events"] = dict(trouble)
    out["version"] = apscheduler.__version__
    out["non_loopback"] = c.check_loopback_only()
    return out


# --------------------------------------------------------------------------- driver


def rate(cycle: dict[str, Any]) -> float | None:
    last = cycle.get("last_start_s")
    return cycle["burst_started"] / last if last else None


def median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return c.percentile(got, 50) if got else None


def fig(
    name: str, value: float | None, unit: str, peer: float | None, digits: int, note: str = ""
) -> dict[str, Any]:
    if value is None:
        out: dict[str, Any] = {"figure": name, "value": None, "unit": unit}
        if peer is not None:
            out.update(peer="apscheduler3", peer_value=round(peer, digits), ratio=None)
        out["note"] = note or "not measured"
        return out
    return c.figure(name, value, unit, "apscheduler3", peer, digits)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="500 jobs, one 12 s cycle")
    ap.add_argument("--role", choices=("apscheduler",), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        c.write_result(args.out, measure_apscheduler(args.quick))
        return 0
    tag = uuid.uuid4().hex
    os.environ[c.MARKER_VAR] = tag
    keep = bool(os.environ.get("OTPKIT_BENCH_KEEP"))
    load = c.HostLoad()
    ours = measure_otpkit(args.quick)
    peer = c.run_role(__spec__.name, "apscheduler", args.quick, timeout=1200)
    st.check_left(tag)
    p = plan(args.quick)
    lines = [
        f"scheduler_scale: {p['jobs']} jobs ({p['burst']} burst every {p['period']} s),"
        f" 3 nodes majority, pool {POOL}",
        f"otpkit: nodes ready {ours['boot_s']:.1f} s, holder answered jobs() with"
        f" {ours.get('jobs_listed')} jobs at {ours.get('recovered_s', math.nan):.1f} s,"
        f" catch-up through at {ours.get('steady_s', math.nan):.1f} s",
    ]
    for cy in ours["cycles"]:
        lines.append(f"  cycle {cy} rate {rate(cy)}")
    lines.append(f"apscheduler {peer.get('version')}: jobs added in {peer['add_s']:.1f} s")
    for cy in peer["cycles"]:
        lines.append(f"  cycle {cy} rate {rate(cy)}")
    lines.append(f"  peer events {peer.get('events')}")
    lines.append(f"  node logs: {ours['log_dir']}" + ("" if keep else " (removed)"))
    lines.append(load.line())
    c.say(*lines)
    if not keep:
        shutil.rmtree(ours["log_dir"], ignore_errors=True)
    idle = median([cy.get("idle_cpu_pct") for cy in ours["cycles"]])
    peer_idle = median([cy.get("idle_cpu_pct") for cy in peer["cycles"]])
    full = p["burst"]
    speed = median([rate(cy) for cy in ours["cycles"] if cy["burst_started"] == full])
    peer_speed = median([rate(cy) for cy in peer["cycles"] if cy["burst_started"] == full])
    c.emit(
        [
            fig("scheduler_idle_cpu_pct_10k_jobs", idle, "%", peer_idle, 3),
            fig(
                "dispatch_ticks_per_s",
                speed,
                "runs/s",
                peer_speed,
                1,
                f"no measured burst had all {full} runs started",
            ),
        ]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
