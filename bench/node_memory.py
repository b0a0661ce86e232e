"""Memory of an idle node: total PSS of all its OS processes.

otpkit: a node (admin, logger, kernel) with one Supervisor of 10 idle worker children,
started under the kernel; after it has settled, the PSS (``/proc/PID/smaps_rollup``) of
every process in ``node.os_pids()`` is summed. PSS splits each shared page among the
processes that map it, so the sum is what the node really costs (RSS would count the
pages shared through fork once per process).

Peer ``thespian_raw``: raw Thespian multiprocTCPBase with the same tree - a root actor
made by this program (as the kernel is), which creates a supervisor-like actor, which
creates 10 idle workers: admin + logger + 12 actors, the same 14 processes.

Both are measured the same way while the program that started them is alive (it shares
pages with them too, and is not counted). Figures are in MiB.

    python -m bench.node_memory [--quick]
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from bench import _runner as c

WORKERS = 10
SETTLE_S, QUICK_SETTLE_S = 3.0, 1.0
SAMPLES, QUICK_SAMPLES = 5, 2
ROLE = c.peek_role()  # each role imports only its own system


def _measure(pids: list[int], quick: bool) -> dict[str, Any]:
    """Sum Rss/Pss/USS over ``pids``; several samples 0.5 s apart, the median total kept."""
    samples = []
    for i in range(QUICK_SAMPLES if quick else SAMPLES):
        if i:
            time.sleep(0.5)
        per = {pid: c.pss_kb(pid) for pid in pids}
        samples.append(per)
    samples.sort(key=lambda per: sum(v["pss"] for v in per.values()))
    per = samples[len(samples) // 2]
    return {
        "pids": pids,
        "per_process_kb": {str(p): v for p, v in per.items()},
        "pss_kb": sum(v["pss"] for v in per.values()),
        "rss_kb": sum(v["rss"] for v in per.values()),
        "uss_kb": sum(v["uss"] for v in per.values()),
        "starter_pss_kb": c.pss_kb(os.getpid())["pss"],
        "all_pss_samples_kb": [sum(v["pss"] for v in s.values()) for s in samples],
    }


# --------------------------------------------------------------------------- otpkit

if ROLE == "otpkit":
    import otpkit

    class IdleWorker(otpkit.Actor):
        def handle_call(self, request: Any, from_: Any) -> Any:
            return os.getpid()


def run_otpkit(quick: bool) -> dict[str, Any]:
    node = otpkit.Node("benchmem@127.0.0.1", log_dir=c.workdir())
    node.start()
    try:
        children = [otpkit.ChildSpec(f"w{i}", IdleWorker) for i in range(WORKERS)]
        sup = node.start_child(
            otpkit.ChildSpec("sup", otpkit.Supervisor, kwargs={"children": children})
        )
        rows = otpkit.which_children(sup)
        for row in rows:
            otpkit.call(row.pid, "ping")
        time.sleep(QUICK_SETTLE_S if quick else SETTLE_S)
        pids = sorted(node.os_pids())
        marked = c.my_system_pids()
        if sorted(marked) != pids:
            raise RuntimeError(f"node.os_pids() {pids} != processes forked from here {marked}")
        result = _measure(pids, quick)
        result["non_loopback"] = c.check_loopback_only()
        return result
    finally:
        node.stop()


# --------------------------------------------------------------------------- raw Thespian

if ROLE == "thespian":
    from thespian.actors import Actor as ThespianActor

    class RawWorker(ThespianActor):
        def receiveMessage(self, msg: Any, sender: Any) -> None:  # noqa: N802
            if msg == "ping":
                self.send(sender, ("pong", os.getpid()))

    class RawSup(ThespianActor):
        def __init__(self) -> None:
            super().__init__()
            self.asker: Any = None
            self.pids: list[int] = []

        def receiveMessage(self, msg: Any, sender: Any) -> None:  # noqa: N802
            if isinstance(msg, tuple) and msg[0] == "start":
                self.asker = sender
                for _ in range(msg[1]):
                    self.send(self.createActor(RawWorker), "ping")
                self.expected = msg[1]
            elif isinstance(msg, tuple) and msg[0] == "pong":
                self.pids.append(msg[1])
                if len(self.pids) == self.expected:
                    self.send(self.asker, ("ready", [os.getpid(), *self.pids]))

    class RawRoot(ThespianActor):
        def __init__(self) -> None:
            super().__init__()
            self.asker: Any = None

        def receiveMessage(self, msg: Any, sender: Any) -> None:  # noqa: N802
            if isinstance(msg, tuple) and msg[0] == "start":
                self.asker = sender
                self.send(self.createActor(RawSup), ("start", msg[1]))
            elif isinstance(msg, tuple) and msg[0] == "ready":
                self.send(self.asker, ("ready", [os.getpid(), *msg[1]]))


def run_thespian(quick: bool) -> dict[str, Any]:
    asys = c.start_raw_system(c.workdir())
    try:
        root = asys.createActor(RawRoot)
        ready = asys.ask(root, ("start", WORKERS), 60)
        if not (isinstance(ready, tuple) and ready[0] == "ready"):
            raise RuntimeError(f"raw tree did not start: {ready!r}")
        actor_pids = ready[1]
        time.sleep(QUICK_SETTLE_S if quick else SETTLE_S)
        pids = c.my_system_pids()
        if not set(actor_pids) <= set(pids) or len(pids) != len(actor_pids) + 2:
            raise RuntimeError(f"expected admin + logger + {actor_pids}, found {pids}")
        result = _measure(pids, quick)
        result["non_loopback"] = c.check_loopback_only()
        return result
    finally:
        c.stop_raw_system(asys)


# --------------------------------------------------------------------------- driver


def _mib(kb: float) -> float:
    return kb / 1024.0


def main() -> int:
    args = c.parse_args(__doc__.splitlines()[0])
    if args.role:
        return c.role_main(args, {"otpkit": run_otpkit, "thespian": run_thespian})
    load = c.HostLoad()
    raw = c.run_role(__spec__.name, "thespian", args.quick)
    ours = c.run_role(__spec__.name, "otpkit", args.quick)
    n, rn = len(ours["pids"]), len(raw["pids"])
    lines = [f"idle node memory ({WORKERS} workers under a supervisor), MiB:"]
    lines.append(
        f"  {'':14}{'procs':>6}{'PSS':>9}{'PSS/proc':>10}{'USS':>9}{'RSS':>9}{'starter PSS':>13}"
    )
    for label, r in (("otpkit", ours), ("raw thespian", raw)):
        k = len(r["pids"])
        lines.append(
            f"  {label:14}{k:6d}{_mib(r['pss_kb']):9.1f}{_mib(r['pss_kb']) / k:10.2f}"
            f"{_mib(r['uss_kb']):9.1f}{_mib(r['rss_kb']):9.1f}{_mib(r['starter_pss_kb']):13.1f}"
        )
    lines.append(
        f"  PSS ratio {ours['pss_kb'] / raw['pss_kb']:.2f}; PSS samples (MiB): otpkit "
        + ", ".join(f"{_mib(s):.1f}" for s in ours["all_pss_samples_kb"])
        + "; raw "
        + ", ".join(f"{_mib(s):.1f}" for s in raw["all_pss_samples_kb"])
    )
    lines.append(load.line())
    lines.append(f"  otpkit measured: {ours['otpkit']}")
    c.say(*lines)
    c.emit(
        [
            c.figure(
                "node_pss_mb", _mib(ours["pss_kb"]), "MiB", "thespian_raw", _mib(raw["pss_kb"]), 2
            ),
            c.figure("node_process_count", n, "processes", "thespian_raw", rn, 0),
            c.figure(
                "node_pss_per_process_mb",
                _mib(ours["pss_kb"]) / n,
                "MiB",
                "thespian_raw",
                _mib(raw["pss_kb"]) / rn,
                2,
            ),
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
