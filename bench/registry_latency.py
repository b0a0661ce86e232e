"""Global registry latency on 3 loopback nodes, beside Erlang/OTP's ``global``.

    python -m bench.registry_latency [--quick]

* ``register_ms_p50``: ``register_name`` from node A for a pid on node B (cluster lock
  on 3 nodes, one write round, unlock), timed inside node A's program.
* ``whereis_us_p50``: ``whereis_name`` from an application actor (another process than
  the registry), per call, averaged over batches of calls.

Peer: ``erlang_otp`` (``global:register_name/2`` and ``global:whereis_name/1`` on 3
Erlang nodes, bench/_erlang_peer.py), measured in the same run when ``erl`` is installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

from bench import _erlang_peer
from bench import _runner as c
from tests.harness.node_process import NodeProc, mesh


def measure_otpkit(runs: int, whereis_samples: int) -> dict[str, float]:
    log_dir = tempfile.mkdtemp(prefix="otpkit-bench-reg-")
    nodes = [NodeProc(f"r{i}@127.0.0.{i + 2}", log_dir, wait=False) for i in range(3)]
    try:
        for n in nodes:
            n.wait_ready()
        mesh(nodes)
        for n in nodes:
            n.cmd(op="gsync")
        target = nodes[1].cmd(op="spawn")
        nodes[0].cmd(op="bench_register", pid=target, n=20)  # warm the connections
        register = nodes[0].cmd(op="bench_register", pid=target, n=runs)
        assert nodes[0].cmd(op="register", name="probe", pid=target)
        wait_all = [n.cmd(op="gsync") for n in nodes]
        del wait_all
        whereis = nodes[0].cmd(op="bench_whereis", name="probe", samples=whereis_samples, per=1000)
    finally:
        for n in nodes:
            n.close()
    return {
        "register_ms_p50": c.percentile(register, 50),
        "register_ms_p90": c.percentile(register, 90),
        "whereis_us_p50": c.percentile(whereis, 50),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = 50 if args.quick else 300
    ours = measure_otpkit(runs, 20 if args.quick else 100)
    peer: dict[str, float] = {}
    if _erlang_peer.available():
        peer = _erlang_peer.registry_latency(runs)
    print(f"otpkit: {ours}\nerlang: {peer}", file=sys.stderr)
    for key, unit in (("register_ms_p50", "ms"), ("whereis_us_p50", "us")):
        row: dict[str, object] = {"figure": key, "value": round(ours[key], 3), "unit": unit}
        if key in peer:
            row.update(
                peer="erlang_otp",
                peer_value=round(peer[key], 3),
                ratio=round(ours[key] / peer[key], 2),
            )
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
