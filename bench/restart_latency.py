"""Supervisor restart latency: SIGKILL a worker, time until its replacement answers.

otpkit: a one_for_one Supervisor (intensity 1e6 per 1 s, so it never gives up) with one
worker. Each round: SIGKILL the worker's OS pid, then poll ``which_children`` until it
shows a new pid and ``otpkit.call`` that pid; the round ends when the call returns.

Peer ``thespian_floor``: raw Thespian multiprocTCPBase, no otpkit. A parent actor holds
one child; this program asks the parent for the child's OS pid, SIGKILLs it, and waits
(``ActorSystem.listen``); on ``ChildActorExited`` the parent at once creates a new child
and sends it a message; the child's first reply (to the parent, forwarded here) ends the
round. That is the least any supervisor built on Thespian's process handling can do.

Both clocks start just before ``os.kill``. Each worker/child also records when its
constructor ran (CLOCK_MONOTONIC, shared by all processes), which splits a round into
"kill -> replacement process runs its init" and "init -> answer reaches this program".

    python -m bench.restart_latency [--quick]
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from bench import _runner as c

ROUNDS, QUICK_ROUNDS = 200, 30
WARMUP, QUICK_WARMUP = 5, 2
GOAL_RATIO = 1.3


def _rounds(quick: bool) -> tuple[int, int]:
    return (QUICK_ROUNDS, QUICK_WARMUP) if quick else (ROUNDS, WARMUP)


# --------------------------------------------------------------------------- otpkit

# Each role imports only its own system: the raw Thespian peer must not carry otpkit's
# modules (its actors are forked from this program and would share them).
ROLE = c.peek_role()

if ROLE == "otpkit":
    import otpkit

    class Worker(otpkit.Actor):
        def init(self) -> None:
            self.born = time.monotonic_ns()

        def handle_call(self, request: Any, from_: Any) -> Any:
            return (os.getpid(), self.born)


def run_otpkit(quick: bool) -> dict[str, Any]:
    rounds, warmup = _rounds(quick)
    node = otpkit.Node("benchrestart@127.0.0.1", log_dir=c.workdir())
    node.start()
    try:
        sup = node.start_child(
            otpkit.ChildSpec(
                "sup",
                otpkit.Supervisor,
                kwargs={
                    "children": [otpkit.ChildSpec("worker", Worker)],
                    "strategy": "one_for_one",
                    "intensity": 1_000_000,
                    "period": 1,
                },
            )
        )
        non_loopback = c.check_loopback_only()
        current = otpkit.which_children(sup)[0].pid
        otpkit.call(current, "ping")
        total, to_init, polls = [], [], []
        for i in range(warmup + rounds):
            old = current
            t0 = time.monotonic_ns()
            os.kill(old.id, signal.SIGKILL)
            deadline = time.monotonic() + 10
            n_polls = 0
            while True:
                n_polls += 1
                pid = otpkit.which_children(sup, timeout=10)[0].pid
                if isinstance(pid, otpkit.Pid) and pid != old:
                    try:
                        ospid, born = otpkit.call(pid, "ping", timeout=10)
                    except otpkit.Exit:
                        continue
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no replacement for {old!r} within 10 s")
                time.sleep(0.0002)
            t1 = time.monotonic_ns()
            assert ospid == pid.id
            current = pid
            if i >= warmup:
                total.append((t1 - t0) / 1e6)
                to_init.append((born - t0) / 1e6)
                polls.append(n_polls)
        return {
            "total_ms": total,
            "kill_to_init_ms": to_init,
            "polls": polls,
            "non_loopback": non_loopback,
        }
    finally:
        node.stop()


# --------------------------------------------------------------------------- raw Thespian

if ROLE == "thespian":
    from thespian.actors import Actor as ThespianActor
    from thespian.actors import ChildActorExited

    class FloorChild(ThespianActor):
        def __init__(self) -> None:
            self.born = time.monotonic_ns()
            super().__init__()

        def receiveMessage(self, msg: Any, sender: Any) -> None:  # noqa: N802
            if msg == "ping":
                self.send(sender, ("pong", os.getpid(), self.born))

    class FloorParent(ThespianActor):
        def __init__(self) -> None:
            super().__init__()
            self.child: Any = None
            self.asker: Any = None

        def receiveMessage(self, msg: Any, sender: Any) -> None:  # noqa: N802
            if msg == "start":
                self.child = self.createActor(FloorChild)
                self.send(sender, "started")
            elif msg == "getpid":
                self.asker = sender
                self.send(self.child, "ping")
            elif isinstance(msg, ChildActorExited):
                if self.child is not None and msg.childAddress == self.child:
                    self.child = self.createActor(FloorChild)
                    self.send(self.child, "ping")
            elif isinstance(msg, tuple) and msg[:1] == ("pong",) and self.asker is not None:
                self.send(self.asker, msg)


def run_thespian(quick: bool) -> dict[str, Any]:
    rounds, warmup = _rounds(quick)
    asys = c.start_raw_system(c.workdir())
    try:
        parent = asys.createActor(FloorParent)
        if asys.ask(parent, "start", 10) != "started":
            raise RuntimeError("the floor parent did not start")
        non_loopback = c.check_loopback_only()
        reply = asys.ask(parent, "getpid", 10)
        total, to_init = [], []
        for i in range(warmup + rounds):
            if not (isinstance(reply, tuple) and reply[0] == "pong"):
                raise RuntimeError(f"unexpected reply {reply!r}")
            old = reply[1]
            t0 = time.monotonic_ns()
            os.kill(old, signal.SIGKILL)
            reply = asys.listen(10)
            t1 = time.monotonic_ns()
            if not (isinstance(reply, tuple) and reply[0] == "pong" and reply[1] != old):
                raise RuntimeError(f"round {i}: no replacement answered ({reply!r})")
            if i >= warmup:
                total.append((t1 - t0) / 1e6)
                to_init.append((reply[2] - t0) / 1e6)
        return {"total_ms": total, "kill_to_init_ms": to_init, "non_loopback": non_loopback}
    finally:
        c.stop_raw_system(asys)


# --------------------------------------------------------------------------- driver


def main() -> int:
    args = c.parse_args(__doc__.splitlines()[0])
    if args.role:
        return c.role_main(args, {"otpkit": run_otpkit, "thespian": run_thespian})
    load = c.HostLoad()
    floor = c.run_role(__spec__.name, "thespian", args.quick)
    ours = c.run_role(__spec__.name, "otpkit", args.quick)
    o, f = c.summary(ours["total_ms"]), c.summary(floor["total_ms"])
    oi, fi = c.summary(ours["kill_to_init_ms"]), c.summary(floor["kill_to_init_ms"])
    ratio = o["p50"] / f["p50"]
    c.say(
        f"restart latency, {o['n']} rounds each (after warm-up), ms:",
        f"  {'':16}{'min':>8}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}",
        *(
            f"  {label:16}" + "".join(f"{s[k]:8.2f}" for k in ("min", "p50", "p90", "p99", "max"))
            for label, s in (
                ("otpkit total", o),
                ("  kill->init", oi),
                ("thespian floor", f),
                ("  kill->init", fi),
            )
        ),
        f"  otpkit polls of which_children per round: p50 {c.percentile(ours['polls'], 50):.0f},"
        f" max {max(ours['polls'])}",
        f"  p50 ratio {ratio:.2f} (goal <= {GOAL_RATIO}): "
        + ("met" if ratio <= GOAL_RATIO else "NOT met"),
        load.line(),
        f"  otpkit measured: {ours['otpkit']}",
    )
    c.emit(
        [
            c.figure("restart_latency_ms_p50", o["p50"], "ms", "thespian_floor", f["p50"]),
            c.figure("restart_latency_ms_p99", o["p99"], "ms", "thespian_floor", f["p99"]),
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
