"""Call round trip: the starting program -> an actor, and an actor -> an actor inside a
handler.

otpkit: ``otpkit.call(echo, i)`` from the program that started the node, timed one by one
(``call_roundtrip_us``); and a caller actor that, on one request, performs N
``otpkit.call``s to the echo actor from inside its ``handle_call``, times each and returns
the timings (``call_in_handler_roundtrip_us``).

Peer ``thespian_ask``: raw Thespian multiprocTCPBase, ``ActorSystem().ask(echo, i)`` to an
echo actor that sends the message back. The raw actor -> actor round trip (an actor that
sends to the echo actor and sends the next message when the reply arrives) is measured
too and shown in the summary.

Each series is timed after a warm-up of its own; the request is a small int.

    python -m bench.call_latency [--quick]
"""

from __future__ import annotations

import sys
import time
from typing import Any

from bench import _runner as c

SAMPLES, QUICK_SAMPLES = 2000, 200
WARMUP, QUICK_WARMUP = 200, 50
ROLE = c.peek_role()  # each role imports only its own system


def _sizes(quick: bool) -> tuple[int, int]:
    return (QUICK_SAMPLES, QUICK_WARMUP) if quick else (SAMPLES, WARMUP)


# --------------------------------------------------------------------------- otpkit

if ROLE == "otpkit":
    import otpkit

    class Echo(otpkit.Actor):
        def handle_call(self, request: Any, from_: Any) -> Any:
            return request

    class Caller(otpkit.Actor):
        def handle_call(self, request: Any, from_: Any) -> Any:
            _, target, n, warmup = request
            out = []
            for i in range(warmup + n):
                t0 = time.perf_counter_ns()
                otpkit.call(target, i)
                t1 = time.perf_counter_ns()
                if i >= warmup:
                    out.append(t1 - t0)
            return out


def run_otpkit(quick: bool) -> dict[str, Any]:
    n, warmup = _sizes(quick)
    node = otpkit.Node("benchcall@127.0.0.1", log_dir=c.workdir())
    node.start()
    try:
        echo = node.spawn(Echo)
        caller = node.spawn(Caller)
        non_loopback = c.check_loopback_only()
        external = []
        for i in range(warmup + n):
            t0 = time.perf_counter_ns()
            otpkit.call(echo, i)
            t1 = time.perf_counter_ns()
            if i >= warmup:
                external.append((t1 - t0) / 1e3)
        in_handler = [t / 1e3 for t in otpkit.call(caller, ("bench", echo, n, warmup), 600)]
        return {"external_us": external, "in_handler_us": in_handler, "non_loopback": non_loopback}
    finally:
        node.stop()


# --------------------------------------------------------------------------- raw Thespian

if ROLE == "thespian":
    from thespian.actors import Actor as ThespianActor

    class RawEcho(ThespianActor):
        def receiveMessage(self, msg: Any, sender: Any) -> None:  # noqa: N802
            self.send(sender, msg)

    class RawPinger(ThespianActor):
        """Actor -> actor round trips: the next request goes out when the reply is in."""

        def __init__(self) -> None:
            super().__init__()
            self.run: dict[str, Any] | None = None

        def receiveMessage(self, msg: Any, sender: Any) -> None:  # noqa: N802
            if isinstance(msg, tuple) and msg[:1] == ("bench",):
                _, echo, n, warmup = msg
                self.run = {
                    "asker": sender,
                    "echo": echo,
                    "n": n,
                    "warmup": warmup,
                    "i": 0,
                    "out": [],
                    "t0": time.perf_counter_ns(),
                }
                self.send(echo, 0)
            elif isinstance(msg, int) and self.run is not None:
                run = self.run
                t1 = time.perf_counter_ns()
                if run["i"] >= run["warmup"]:
                    run["out"].append(t1 - run["t0"])
                run["i"] += 1
                if run["i"] < run["warmup"] + run["n"]:
                    run["t0"] = time.perf_counter_ns()
                    self.send(run["echo"], run["i"])
                else:
                    self.run = None
                    self.send(run["asker"], ("done", run["out"]))


def run_thespian(quick: bool) -> dict[str, Any]:
    n, warmup = _sizes(quick)
    asys = c.start_raw_system(c.workdir())
    try:
        echo = asys.createActor(RawEcho)
        pinger = asys.createActor(RawPinger)
        non_loopback = c.check_loopback_only()
        ask = []
        for i in range(warmup + n):
            t0 = time.perf_counter_ns()
            reply = asys.ask(echo, i, 10)
            t1 = time.perf_counter_ns()
            if reply != i:
                raise RuntimeError(f"ask {i}: got {reply!r}")
            if i >= warmup:
                ask.append((t1 - t0) / 1e3)
        done = asys.ask(pinger, ("bench", echo, n, warmup), 600)
        if not (isinstance(done, tuple) and done[0] == "done"):
            raise RuntimeError(f"pinger: {done!r}")
        actor = [t / 1e3 for t in done[1]]
        return {"ask_us": ask, "actor_us": actor, "non_loopback": non_loopback}
    finally:
        c.stop_raw_system(asys)


# --------------------------------------------------------------------------- driver


def main() -> int:
    args = c.parse_args(__doc__.splitlines()[0])
    if args.role:
        return c.role_main(args, {"otpkit": run_otpkit, "thespian": run_thespian})
    load = c.HostLoad()
    raw = c.run_role(__spec__.name, "thespian", args.quick)
    ours = c.run_role(__spec__.name, "otpkit", args.quick)
    ext, inh = c.summary(ours["external_us"]), c.summary(ours["in_handler_us"])
    ask, act = c.summary(raw["ask_us"]), c.summary(raw["actor_us"])
    keys = ("min", "p50", "p90", "p99", "max")
    c.say(
        f"call round trip, {ext['n']} samples per series (after warm-up), us:",
        f"  {'':34}" + "".join(f"{k:>9}" for k in keys),
        *(
            f"  {label:34}" + "".join(f"{s[k]:9.1f}" for k in keys)
            for label, s in (
                ("otpkit program -> actor call", ext),
                ("otpkit actor -> actor (in handler)", inh),
                ("thespian ask (program -> actor)", ask),
                ("thespian actor -> actor", act),
            )
        ),
        f"  p50 ratios: program->actor {ext['p50'] / ask['p50']:.2f} x ask, in-handler "
        f"{inh['p50'] / ask['p50']:.2f} x ask, {inh['p50'] / act['p50']:.2f} x raw actor->actor",
        load.line(),
        f"  otpkit measured: {ours['otpkit']}",
    )
    c.emit(
        [
            c.figure("call_roundtrip_us_p50", ext["p50"], "us", "thespian_ask", ask["p50"], 1),
            c.figure("call_roundtrip_us_p99", ext["p99"], "us", "thespian_ask", ask["p99"], 1),
            c.figure(
                "call_in_handler_roundtrip_us_p50", inh["p50"], "us", "thespian_ask", ask["p50"], 1
            ),
            c.figure(
                "call_in_handler_roundtrip_us_p99", inh["p99"], "us", "thespian_ask", ask["p99"], 1
            ),
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
