"""Heal of a split with clashing global names: from the reconnect until every node holds
the same table, beside Erlang/OTP's ``global``.

    python -m bench.heal [--quick]

Three loopback nodes: A alone, B and C connected. The same names are bound on both sides
(to a pid on A, and to a pid on B), then A dials B; the clock stops when the three
replicas agree (same names, same pids) - redial, merge, one resolver call per clash
(the default ``random_exit_name``) and the writes included. Figures
``heal_1_name_ms_p50`` and ``heal_1000_names_ms_p50``; peer ``erlang_otp``
(bench/_erlang_peer.py) in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

from bench import _erlang_peer
from bench import _runner as c
from tests.harness.node_process import NodeProc
from tests.harness.polling import wait_until


def one_heal(names: int) -> float:
    log_dir = tempfile.mkdtemp(prefix="otpkit-bench-heal-")
    a, b, cc = nodes = [NodeProc(f"h{i}@127.0.0.{i + 2}", log_dir, wait=False) for i in range(3)]
    try:
        for n in nodes:
            n.wait_ready()
        b.cmd(op="connect", name=cc.name, host=cc.host, port=cc.port)
        wait_until(lambda: b.cmd(op="nodes") == [cc.name], timeout=10)
        b.cmd(op="gsync")
        a.cmd(op="bench_many", prefix="n", count=names, pid=a.cmd(op="spawn"))
        b.cmd(op="bench_many", prefix="n", count=names, pid=b.cmd(op="spawn"))
        wait_until(lambda: cc.cmd(op="bench_agree")[0] == names, timeout=30)
        t0 = time.perf_counter()
        a.cmd(op="connect", name=b.name, host=b.host, port=b.port)
        deadline = t0 + 60
        while time.perf_counter() < deadline:
            views = [n.cmd(op="bench_agree") for n in nodes]
            if views[0][0] == names and all(v == views[0] for v in views):
                return (time.perf_counter() - t0) * 1000
        raise RuntimeError(f"no agreement in 60 s: {views}")
    finally:
        for n in nodes:
            n.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    plan = {1: 3 if args.quick else 10, 1000: 1 if args.quick else 3}
    rows = []
    for names, runs in plan.items():
        ours = [one_heal(names) for _ in range(runs)]
        key = f"heal_{names}_name{'s' if names > 1 else ''}_ms_p50"
        peer = _erlang_peer.heal(names, runs) if _erlang_peer.available() else {}
        peer_value = next(iter(peer.values()), None)
        print(f"otpkit {key}: {c.summary(ours)}; erlang {peer}", file=sys.stderr)
        row: dict[str, object] = {"figure": key, "value": round(c.percentile(ours, 50), 1)}
        row["unit"] = "ms"
        if peer_value:
            row.update(
                peer="erlang_otp",
                peer_value=round(peer_value, 1),
                ratio=round(c.percentile(ours, 50) / peer_value, 2),
            )
        rows.append(row)
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
