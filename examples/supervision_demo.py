"""A supervision tree you can watch: workers are killed and come back.

    python examples/supervision_demo.py

Starts a node (every actor is its own OS process) with this tree:

    kernel
    └── app        one_for_one, intensity 3 / 5 s
        ├── ticker     a worker that counts
        └── pair       one_for_all
            ├── left
            └── right

then SIGKILLs processes, the way an OOM killer or an operator would, and prints what
the supervisors did about it. It ends on its own and leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import otpkit
from otpkit import Actor, ChildSpec, Down, Supervisor

# This file is run as a script; let the node's processes import its actors by name.
sys.modules.setdefault("supervision_demo", sys.modules[__name__])


class Worker(Actor):
    def init(self, name: str) -> None:
        self.name = name
        self.count = 0

    def handle_call(self, request, from_):
        self.count += 1
        return f"{self.name} (os pid {os.getpid()}) answered {self.count} call(s)"


def running(ospid: int) -> bool:
    try:
        with open(f"/proc/{ospid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :][:1] != b"Z"  # a zombie is dead, not yet reaped


def tree(sup: otpkit.Pid, indent: str = "    ") -> None:
    for child in reversed(otpkit.which_children(sup)):
        print(f"{indent}{child.id:<8} {child.pid!r:<28} {child.type}")
        if child.type == "supervisor" and isinstance(child.pid, otpkit.Pid):
            tree(child.pid, indent + "    ")


def wait_for_new_pid(sup: otpkit.Pid, child_id: str, old: otpkit.Pid) -> otpkit.Pid:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for child in otpkit.which_children(sup):
            if child.id == child_id and isinstance(child.pid, otpkit.Pid) and child.pid != old:
                return child.pid
        time.sleep(0.005)
    raise SystemExit(f"{child_id} was not restarted")


def main() -> None:
    pair = ChildSpec(
        "pair",
        Supervisor,
        kwargs={
            "strategy": "one_for_all",
            "children": [
                ChildSpec("left", Worker, ("left",)),
                ChildSpec("right", Worker, ("right",)),
            ],
        },
    )
    app = ChildSpec(
        "app",
        Supervisor,
        kwargs={
            "strategy": "one_for_one",
            "intensity": 3,
            "period": 5,
            "children": [ChildSpec("ticker", Worker, ("ticker",)), pair],
        },
    )
    with otpkit.Node("demo@127.0.0.1", children=[app]) as node:
        app_pid = otpkit.which_children(node.kernel)[0].pid
        print(f"node {node.name} is up; its OS processes: {sorted(node.os_pids())}")
        print("the tree:")
        tree(app_pid)

        ticker = {c.id: c.pid for c in otpkit.which_children(app_pid)}["ticker"]
        print(f"\n1. call ticker: {otpkit.call(ticker, 'hello')}")
        started = time.perf_counter()
        os.kill(ticker.id, signal.SIGKILL)
        print(f"   kill -9 {ticker.id} (ticker)")
        new = wait_for_new_pid(app_pid, "ticker", ticker)
        took = (time.perf_counter() - started) * 1000
        print(
            f"   app restarted ticker as {new!r} in {took:.1f} ms; it says: "
            f"{otpkit.call(new, 'hello')}"
        )

        pair_pid = {c.id: c.pid for c in otpkit.which_children(app_pid)}["pair"]
        before = {c.id: c.pid for c in otpkit.which_children(pair_pid)}
        print(f"\n2. one_for_all: kill -9 {before['left'].id} (left); right goes too")
        os.kill(before["left"].id, signal.SIGKILL)
        wait_for_new_pid(pair_pid, "right", before["right"])
        wait_for_new_pid(pair_pid, "left", before["left"])
        tree(app_pid)

        print("\n3. keep killing ticker: app allows 3 restarts in 5 s (one is spent")
        print("   already); on the next it gives up, stops its children in reverse start")
        print("   order and exits 'shutdown'. The kernel then starts app again, fresh.")
        ref = otpkit.monitor(app_pid)
        down = None
        for i in range(6):
            current = {c.id: c.pid for c in otpkit.which_children(app_pid)}["ticker"]
            os.kill(current.id, signal.SIGKILL)
            print(f"   kill -9 {current.id} (ticker, #{i + 1})")
            try:
                wait_for_new_pid(app_pid, "ticker", current)
            except otpkit.Exit:
                down = node.receive(10)
                break
        assert isinstance(down, Down) and down.ref == ref
        print(f"   app {app_pid!r} exited: {down.reason!r}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            new_app = otpkit.which_children(node.kernel)[0].pid
            if isinstance(new_app, otpkit.Pid) and new_app != app_pid:
                break
            time.sleep(0.01)
        print(f"   kernel restarted app as {new_app!r}:")
        tree(new_app)
        pids = node.os_pids()
    left = [p for p in pids if running(p)]
    print(f"\nnode stopped; processes left behind: {len(left)}")


if __name__ == "__main__":
    main()
