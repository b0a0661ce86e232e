"""Run by the no-orphan and Thespian-door tests as ``python -m
tests.harness.nested_tree_node LOG_DIR [fragile]``: start a node with a two-level tree
(``app``: w1, w2 and ``inner``: w3, w4), print its pids as one JSON line, then answer
``ping`` lines until stdin closes (or it is killed)."""

from __future__ import annotations

import json
import os
import sys

import otpkit
from otpkit import Actor, ChildSpec, Supervisor


class Worker(Actor):
    def handle_call(self, request, from_):
        return os.getpid()


def main() -> None:
    log_dir = sys.argv[1]
    inner = ChildSpec(
        "inner",
        Supervisor,
        kwargs={"children": [ChildSpec("w3", Worker), ChildSpec("w4", Worker)]},
    )
    app = ChildSpec(
        "app",
        Supervisor,
        kwargs={"children": [ChildSpec("w1", Worker), ChildSpec("w2", Worker), inner]},
    )
    fragile = len(sys.argv) > 2 and sys.argv[2] == "fragile"
    node = otpkit.Node(
        "starter@127.0.0.1",
        children=[app],
        log_dir=log_dir,
        kernel_intensity=0 if fragile else 3,
    ).start()
    app_pid = otpkit.which_children(node.kernel)[0].pid
    rows = {c.id: c.pid for c in otpkit.which_children(app_pid)}
    inner_rows = {c.id: c.pid for c in otpkit.which_children(rows["inner"])}
    with open(f"/proc/{node.kernel.id}/stat") as f:
        kernel_ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    print(
        json.dumps(
            {
                "starter": os.getpid(),
                "admin": kernel_ppid,
                "kernel": node.kernel.id,
                "app": app_pid.id,
                "w1": rows["w1"].id,
                "w2": rows["w2"].id,
                "inner": rows["inner"].id,
                "w3": inner_rows["w3"].id,
                "w4": inner_rows["w4"].id,
                "all": node.os_pids(),
            }
        ),
        flush=True,
    )
    for line in sys.stdin:
        if line.strip() == "ping":
            try:
                print("pong", otpkit.call(rows["w1"], "ping", timeout=10), flush=True)
            except otpkit.OtpkitError as exc:
                print("error", exc, flush=True)
    node.stop()


if __name__ == "__main__":
    main()
