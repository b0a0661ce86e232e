"""Driver side of the scheduler benchmarks (imported by the benchmark scripts, never by
a task run): a loopback cluster of ``tests.harness.node_driver`` nodes booted with a
Scheduler, its holder, the tasks' stamps (``bench._scheduler_tasks``) and the ticks the
pools logged, CPU time of a process, CPU spinners, and the check that nothing is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from datetime import datetime
from typing import Any

from bench import _runner as c
from tests.harness.node_process import NodeProc, mesh
from tests.harness.processes import child_env, python_module


def read_stamps(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


_STARTED = re.compile(
    r"run started: job '(?P<job>[^']*)' tick (?P<tick>\S+) node \S+ "
    r"\((?P<late>-?[\d.]+) s after the tick\) on <(?P<pid>[^>]*)>"
)


def pool_log_ticks(log_paths: list[str]) -> dict[tuple[int, str], list[tuple[float, float]]]:
    """(worker OS pid, job) -> [(tick, start)] from the pools' ``run started`` log lines:
    the tick of a stamp when ``current_run()`` gave none (start to the millisecond)."""
    out: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for path in log_paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.readlines()
        except FileNotFoundError:
            continue
        for line in lines:
            m = _STARTED.search(line)
            if m is None:
                continue
            tick = datetime.fromisoformat(m["tick"]).timestamp()
            ospid = int(m["pid"].rsplit(".", 1)[1])
            out.setdefault((ospid, m["job"]), []).append((tick, tick + float(m["late"])))
    return out


def fill_ticks(stamps: list[dict[str, Any]], log_paths: list[str]) -> dict[str, int]:
    """Give each stamp without a tick the one its pool logged; how many came from where."""
    logged: dict[tuple[int, str], list[tuple[float, float]]] | None = None
    source = {"current_run": 0, "pool_log": 0, "none": 0}
    for row in stamps:
        if row.get("tick") is not None:
            source["current_run"] += 1
            continue
        if logged is None:
            logged = pool_log_ticks(log_paths)
        best = min(
            logged.get((row["pid"], row.get("job") or row.get("arg")), []),
            key=lambda ts: abs(ts[1] - row["start"]),
            default=None,
        )
        if best is not None and abs(best[1] - row["start"]) < 0.05:
            row["tick"] = best[0]
            row["job"] = row.get("job") or row.get("arg")
            source["pool_log"] += 1
        else:
            source["none"] += 1
    return source


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of one OS process (all its threads), in seconds, from
    /proc/PID/stat: clock ticks of 10 ms (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_cpu_ns_s(pid: int) -> float | None:
    """CPU time of one OS process's live threads in seconds, to the nanosecond (the
    first field of /proc/PID/task/TID/schedstat, summed; None if it is gone)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


class Spinners:
    """``count`` processes that each burn one CPU (started here, killed by their pid)."""

    def __init__(self, count: int) -> None:
        self.procs = [
            subprocess.Popen(
                python_module("bench._scheduler_tasks"),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=child_env(),
            )
            for _ in range(count)
        ]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def config_path(log_dir: str, name: str, config: dict[str, Any], store: bool) -> str:
    """Write ``name``'s scheduler config (tests.harness.scheduler_ops.scheduler_spec) to a
    file: ``config`` plus, with ``store``, an SQLite file of its own (kept across a
    restart of the node)."""
    cfg = dict(config)
    cfg["store"] = os.path.join(log_dir, f"{name}.sqlite") if store else None
    path = os.path.join(log_dir, f"{name}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f)
    return path


def start_node(name: str, log_dir: str, config: dict[str, Any], store: bool) -> Any:
    """A node_driver with the scheduler, started (not yet ready: ``wait_ready``)."""
    path = config_path(log_dir, name, config, store)
    return NodeProc(name, log_dir, wait=False, extra_args=("--scheduler", path))


def start_cluster(names: list[str], log_dir: str, config: dict[str, Any], store: bool) -> list:
    """The nodes ``names``, started side by side, ready and meshed (closed on a failure)."""
    nodes = [start_node(n, log_dir, config, store) for n in names]
    try:
        for node in nodes:
            node.wait_ready()
        mesh(nodes)
    except BaseException:
        for node in nodes:
            node.close()
        raise
    return nodes


def holder(nodes: list[Any]) -> Any:
    """The node every node names as the scheduler's holder, or None."""
    views = {n.cmd(op="sched_holder") for n in nodes}
    if len(views) != 1:
        return None
    view = views.pop()
    return next((n for n in nodes if view and n.name == view), None)


def check_left(tag: str, timeout: float = 15.0) -> None:
    """Wait until no process of this run (marked with ``tag``) is left; kill and raise
    after ``timeout`` seconds (SIGKILLed node processes take a moment to be gone)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in c.marked_pids(tag) if p != os.getpid()]
        if not left:
            return
        if time.monotonic() > deadline:
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            raise RuntimeError(f"processes left behind (killed now): {left}")
        time.sleep(0.1)
