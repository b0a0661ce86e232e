"""Singleton fail-over on 3 loopback nodes, beside a Highlander-style singleton on
Erlang/OTP's ``global``.

    python -m bench.failover [--quick] [--majority-runs N] [--majority-only] [--no-stores]

* ``failover_sigkill_ms_p50`` / ``_p99``: every process of the holder's node SIGKILLed
  at once -> a standby's child logs its activation (``policy="availability"``; wall
  clock, both on this machine). Over >= 20 runs; the killed node is started again
  between runs.
* ``failover_sigkill_majority_ms_p50`` / ``_p90``: the same under ``policy="majority"``
  (the members grant a dead holder's lease at once when its sockets closed). Over
  ``--majority-runs`` kills (default 30, about 5.5 s each - the restart of the killed
  node, the member check, 4 s - so 30 take ~170 s on 2 cores). Each node keeps its
  quorum store in a data dir of its own (the README's deployment), so the node killed
  before comes back as the same member; ``--no-stores``: nodes without one (a restart
  is a new member, quiet for term + margin after it is added).
* ``handover_gap_ms_p50``: SIGTERM of the holder's node -> the old child logs
  ``deactivate`` ... the new one logs ``activate``.

Peer ``erlang_otp`` for the SIGKILL figures (bench/_erlang_peer.py). The silent
partition figure is bench/failover_partition.py (it needs root: network namespaces).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time

from bench import _erlang_peer
from bench import _runner as c
from tests.harness.node_process import NodeProc, mesh
from tests.harness.polling import wait_until


def marks(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        return []


def holder(nodes: list[NodeProc]) -> NodeProc | None:
    views = {tuple(n.cmd(op="whereis", name="single") or ()) for n in nodes}
    if len(views) != 1:
        return None
    view = views.pop()
    return next((n for n in nodes if view and n.name == view[0]), None)


def start(name: str, log_dir: str, path: str, policy: str, stores: bool) -> NodeProc:
    """One node; with ``stores`` it keeps its quorum store in a data dir of its own
    across its restarts (the README's deployment: a restarted node is the same member)."""
    env = {"OTPKIT_DATA_DIR": os.path.join(log_dir, "data", name)} if stores else {}
    return NodeProc(name, log_dir, wait=False, extra_args=("--singleton", policy, path), env=env)


def run(
    runs: int, handovers: int, policy: str = "availability", stores: bool = True
) -> dict[str, list[float]]:
    log_dir = tempfile.mkdtemp(prefix="otpkit-bench-failover-")
    print(f"{policy}: node logs and marks in {log_dir}", file=sys.stderr)
    path = os.path.join(log_dir, "marks")
    names = [f"f{i}@127.0.0.{i + 2}" for i in range(3)]
    nodes = [start(n, log_dir, path, policy, stores) for n in names]
    kills: list[float] = []
    gaps: list[float] = []
    try:
        for n in nodes:
            n.wait_ready()
        mesh(nodes)
        for i in range(runs + handovers):
            h = wait_until(lambda nodes=nodes: holder(nodes), timeout=60, what="one holder")
            for n in nodes:
                n.cmd(op="gsync")
            if policy == "majority":  # every node back in the quorum, at one version
                wait_until(
                    lambda nodes=nodes: (
                        len(st := [n.cmd(op="quorum_status") for n in nodes]) == 3
                        and all(s["member"] and s["rejoin"] is None for s in st)
                        and len({s["version"] for s in st}) == 1
                    ),
                    timeout=60,
                )
                time.sleep(4.0)  # a late member grants nothing new for term + margin
            before = len(marks(path))
            if i < runs:
                pids = [h.proc.pid, *h.cmd(op="pids")]
                t0 = time.time()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            else:
                os.kill(h.proc.pid, signal.SIGTERM)
            rows = wait_until(
                lambda before=before: [r for r in marks(path)[before:] if r[0] == "activate"],
                timeout=30,
                what="a standby activates",
            )
            if i < runs:
                kills.append((float(rows[0][1]) - t0) * 1000)
                print(
                    f"{policy} kill {i + 1}/{runs}: {h.name} at {t0:.6f} -> {rows[0][2]}"
                    f" active {kills[-1]:.1f} ms",
                    file=sys.stderr,
                )
            else:
                old = [r for r in marks(path)[before:] if r[0] == "deactivate"]
                gaps.append((float(rows[0][1]) - float(old[0][1])) * 1000)
            h.proc.wait(30)
            h.close()
            fresh = start(h.name, log_dir, path, policy, stores).wait_ready()
            nodes = [fresh if n is h else n for n in nodes]
            mesh(nodes)
    finally:
        for n in nodes:
            n.close()
    return {"kill": kills, "gap": gaps}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--majority-runs",
        type=int,
        default=None,
        metavar="N",
        help="SIGKILLs under policy='majority' (default 30, 3 with --quick; ~5.5 s each)",
    )
    parser.add_argument(
        "--no-stores",
        action="store_true",
        help="nodes without a data dir: each restart is a new quorum member",
    )
    parser.add_argument(
        "--majority-only",
        action="store_true",
        help="only the majority figures (no availability runs, no peer)",
    )
    args = parser.parse_args()
    runs, handovers = (5, 3) if args.quick else (20, 10)
    majority_runs = (
        args.majority_runs if args.majority_runs is not None else (3 if args.quick else 30)
    )
    if majority_runs < 1:
        parser.error("--majority-runs: expected N >= 1")
    figures: dict[str, float] = {}
    peer: dict[str, float] = {}
    if not args.majority_only:
        ours = run(runs, handovers, stores=not args.no_stores)
        print(
            f"otpkit kill {c.summary(ours['kill'])}\ngap {c.summary(ours['gap'])}", file=sys.stderr
        )
        figures["failover_sigkill_ms_p50"] = c.percentile(ours["kill"], 50)
        figures["failover_sigkill_ms_p99"] = c.percentile(ours["kill"], 99)
    majority = run(majority_runs, 0, "majority", stores=not args.no_stores)
    print(f"majority kill {c.summary(majority['kill'])}", file=sys.stderr)
    print(
        f"majority kills, sorted: {[round(k, 1) for k in sorted(majority['kill'])]}",
        file=sys.stderr,
    )
    figures["failover_sigkill_majority_ms_p50"] = c.percentile(majority["kill"], 50)
    figures["failover_sigkill_majority_ms_p90"] = c.percentile(majority["kill"], 90)
    if not args.majority_only:
        figures["handover_gap_ms_p50"] = c.percentile(ours["gap"], 50)
        peer = _erlang_peer.failover(runs) if _erlang_peer.available() else {}
        print(f"erlang {peer}", file=sys.stderr)
    for key, value in figures.items():
        row: dict[str, object] = {"figure": key, "value": round(value, 1), "unit": "ms"}
        if key in peer:
            row.update(
                peer="erlang_otp",
                peer_value=round(peer[key], 1),
                ratio=round(value / peer[key], 2),
            )
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
