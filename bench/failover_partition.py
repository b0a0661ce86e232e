"""Singleton fail-over across a silent partition, in network namespaces (needs root).

    python -m bench.failover_partition [--quick]

Three nodes ``myapp@10.10.0.1..3`` find each other through a real dnsmasq; an nftables
cut isolates the singleton's holder (its packets are dropped, its sockets stay open: a
silent failure). The clock runs from the cut until a node of the majority side logs its
child's activation. ``failover_partition_ms_p50`` under ``policy="availability"`` (the
failure detector: 3 s without ticks, then one election) and
``failover_partition_majority_ms_p50`` (the old lease must expire first: term 3 s +
margin 0.5 s). No peer: Erlang's failure detector would wait ``net_ticktime`` (60 s by
default) before ``global`` reacts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import _runner as c
from tests.harness.netns_cluster import cluster_in, name_of
from tests.harness.polling import wait_for


def marks(path: Path) -> list[list[str]]:
    try:
        return [line.split() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def run(policy: str, runs: int) -> list[float]:
    out: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="otpkit-bench-part-") as tmp,
        cluster_in(Path(tmp)) as cluster,
    ):
        path = Path(tmp) / "marks"
        cluster.set_records([1, 2, 3])
        nodes = [
            cluster.start(i, extra=("--singleton", policy, str(path)), wait=False)
            for i in (1, 2, 3)
        ]
        for n in nodes:
            n.wait_ready()
        cluster.wait_view(cluster.parts([1, 2, 3]), 30)
        every = sorted(name_of(i) for i in (1, 2, 3))
        for _ in range(runs):
            if policy == "majority":
                wait_for(
                    lambda: all(n.cmd(op="quorum_members")[1] == every for n in nodes),
                    60,
                    "members",
                )

            def agreed_holder() -> str | None:
                views = {tuple(n.cmd(op="whereis", name="single") or ()) for n in nodes}
                return views.pop()[0] if len(views) == 1 and () not in views else None

            holder = wait_for(agreed_holder, 60, "one holder everywhere")
            h = next(i for i in (1, 2, 3) if name_of(i) == holder)
            before = len(marks(path))
            cluster.isolate(h)
            t0 = time.time()
            rows = wait_for(
                lambda before=before, holder=holder: [
                    r for r in marks(path)[before:] if r[0] == "activate" and r[2] != holder
                ],
                30,
                "the majority side takes over",
            )
            out.append((float(rows[0][1]) - t0) * 1000)
            cluster.heal()
            cluster.wait_view(cluster.parts([1, 2, 3]), 30)
            time.sleep(4.0)  # let the old holder stand down and the lease settle
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 1
    runs = 3 if args.quick else 8
    figures = {}
    for policy, key in (
        ("availability", "failover_partition_ms_p50"),
        ("majority", "failover_partition_majority_ms_p50"),
    ):
        values = run(policy, runs)
        print(f"{policy}: {c.summary(values)}", file=sys.stderr)
        figures[key] = c.percentile(values, 50)
    for key, value in figures.items():
        print(json.dumps({"figure": key, "value": round(value, 1), "unit": "ms"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
