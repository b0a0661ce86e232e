"""Cross-node throughput: call round trips and a one-way message stream over dist.

Every node is an OS process of its own on a loopback address of its own (127.0.0.31 and
.32); the two otpkit nodes use the default dist settings (tick 1 s, no TLS).

``dist_roundtrip_per_s``: a caller actor on node A performs ``otpkit.call(echo, i)`` to
an echo actor on node B one after the other, inside one ``handle_call``, for 5 s (1 s with
``--quick``) after a 0.5 s warm-up; round trips per second over that span, and each call
timed (p50 in the summary). Peer ``tcp_blocking_floor``: two plain Python processes on
127.0.0.33 and .34, blocking sockets with TCP_NODELAY, a request and its echo framed with
the same 4-byte big-endian length prefix and of the size of otpkit's call frame (125
bytes), timed the same way in the same run: what Python and the kernel cost with nothing
else in the way.

``dist_stream_msgs_per_s``: a streamer actor on A sends N ``("seq", i)`` messages to a
counter actor on B with ``otpkit.send`` in a loop inside one handler, as fast as it can;
the counter checks the order, and when it has all N it sends ``("done", t)`` to the
program that started node A. Messages per second from the first send (A's clock) to the
last receipt (B's clock; both CLOCK_MONOTONIC of this host); the median of 3 streams of
100 k (one of 20 k with ``--quick``). Peer ``erlang_otp``: the same stream between two
Erlang nodes over Erlang distribution (``erlang-base``; nodes on 127.0.0.35 and .36 with
``-start_epmd false -erl_epmd_port``, so no epmd runs): a sender ``!``-s N ``{seq, I}``
tuples to a registered receiver on the other node, which replies when it has all of them;
the Erlang module is written and compiled into a temporary directory at run time, and the
clocks are ``os:system_time`` on both ends. Without ``erl`` the figure has no peer.

    python -m bench.dist_throughput [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Any

from bench import _runner as c
from tests.harness.processes import python_module

ROUNDTRIP_S, QUICK_ROUNDTRIP_S = 5.0, 1.0
WARMUP_S = 0.5
STREAM_N, QUICK_STREAM_N = 100_000, 20_000
STREAMS, QUICK_STREAMS = 3, 1
GOAL_ROUNDTRIPS, GOAL_STREAM = 1300.0, 20_000.0
COOKIE = "otpkit-bench-dist"
HOST_A, HOST_B = "127.0.0.31", "127.0.0.32"  # otpkit nodes
HOST_TCP_CLIENT, HOST_TCP_SERVER = "127.0.0.33", "127.0.0.34"
HOST_ERL_TX, HOST_ERL_RX = "127.0.0.35", "127.0.0.36"
FRAME_BODY = 121  # + the 4-byte prefix = otpkit's dist frame of a call of a small int
ROLES = ("otpkit", "otpkit-b", "tcp", "tcp-server", "erlang")
ROLE = c.peek_role()  # each role imports only its own system


def _plan(quick: bool) -> tuple[float, int, int]:
    if quick:
        return QUICK_ROUNDTRIP_S, QUICK_STREAM_N, QUICK_STREAMS
    return ROUNDTRIP_S, STREAM_N, STREAMS


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run (< 30 s)")
    ap.add_argument("--role", choices=ROLES, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)  # sub-roles only
    ap.add_argument("--ready", help=argparse.SUPPRESS)  # sub-roles only
    return ap.parse_args()


# --------------------------------------------------------------------------- helpers


def free_port(*hosts: str) -> int:
    """A TCP port free on every one of ``hosts`` (bounded number of tries)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = int(s.getsockname()[1])
            ok = True
            for host in hosts[1:]:
                with socket.socket() as t:
                    try:
                        t.bind((host, port))
                    except OSError:
                        ok = False
            if ok:
                return port
    raise RuntimeError(f"no port free on all of {hosts}")


def start_sub(role: str, port: int, ready: str) -> subprocess.Popen[bytes]:
    """This script in a sub-role, in a process of its own (stdio to a file; stdin a
    pipe whose closing tells it to stop). It inherits this role's marker."""
    log = open(os.path.join(c.workdir(), f"{role}.log"), "ab")  # noqa: SIM115
    try:
        return subprocess.Popen(
            python_module(__spec__.name, "--role", role, "--port", str(port), "--ready", ready),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
        )
    finally:
        log.close()


def wait_ready(path: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise RuntimeError(f"{path}: the process ended first (status {proc.returncode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)
    with open(path) as f:
        info: dict[str, Any] = json.load(f)
    return info


def write_ready(path: str, info: dict[str, Any]) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(info, f)
    os.replace(path + ".tmp", path)


def wait_stdin_eof(limit: float = 1800) -> None:
    """Block until the parent closes our stdin (bounded)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sys.stdin.buffer], [], [], 1.0)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            return


def stop_sub(proc: subprocess.Popen[bytes], pids: list[int]) -> None:
    """Close its stdin (it stops its node and exits); kill by pid what is left."""
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def latency_summary(lat_ns: list[int], seconds: float) -> dict[str, Any]:
    us = [t / 1e3 for t in lat_ns]
    return {"per_s": len(us) / seconds, "n": len(us), "seconds": seconds, **_pcts(us)}


def _pcts(us: list[float]) -> dict[str, float]:
    return {f"p{q}_us": c.percentile(us, q) for q in (10, 50, 90, 99)}


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    """utime + stime (clock ticks, all threads) of each live process of ``pids``."""
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        out[pid] = int(fields[11]) + int(fields[12])
    return out


def cpu_us_per_item(
    before: dict[int, int], after: dict[int, int], parts: dict[str, int], items: int
) -> dict[str, float]:
    """CPU time (us) per item of each named process, and of all the others ("rest")."""
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    used = {pid: after[pid] - before.get(pid, 0) for pid in after}
    out = {name: used.pop(pid, 0) * tick_us / items for name, pid in parts.items()}
    out["rest"] = sum(used.values()) * tick_us / items
    return out


# --------------------------------------------------------------------------- otpkit

if ROLE in ("otpkit", "otpkit-b"):
    import otpkit
    from otpkit import distribution as dist

    NET_NAME = "otpkit_net"  # the dist process's local name (otpkit.distribution._actor)

    class Echo(otpkit.Actor):
        def handle_call(self, request: Any, from_: Any) -> Any:
            return request

    class Counter(otpkit.Actor):
        """Counts ``("seq", i)``; tells ``to`` when it has ``want`` of them."""

        def init(self) -> None:
            self.want, self.got, self.out_of_order, self.to = 0, 0, 0, None

        def handle_call(self, request: Any, from_: Any) -> Any:
            _, self.want, self.to = request
            self.got = self.out_of_order = 0
            return "ok"

        def handle_info(self, msg: Any) -> None:
            if msg[1] != self.got:
                self.out_of_order += 1
            self.got += 1
            if self.got == self.want:
                otpkit.send(self.to, ("done", time.monotonic_ns(), self.got, self.out_of_order))

    class Caller(otpkit.Actor):
        """Calls ``target`` back to back for ``warmup`` then ``seconds``; returns the
        measured calls' durations (ns) and the measured span (s)."""

        def handle_call(self, request: Any, from_: Any) -> Any:
            _, target, warmup, seconds = request
            i = 0
            end = time.monotonic() + warmup
            while time.monotonic() < end:
                otpkit.call(target, i)
                i += 1
            out = []
            t_start = time.perf_counter_ns()
            end_ns = t_start + int(seconds * 1e9)
            t1 = t_start
            while t1 < end_ns:
                t0 = t1
                otpkit.call(target, i)
                t1 = time.perf_counter_ns()
                out.append(t1 - t0)
                i += 1
            return out, (t1 - t_start) / 1e9, i

    class Streamer(otpkit.Actor):
        def handle_call(self, request: Any, from_: Any) -> Any:
            _, target, n = request
            t0 = time.monotonic_ns()
            for i in range(n):
                otpkit.send(target, ("seq", i))
            return t0, time.monotonic_ns()


def pid_fields(pid: Any) -> list[Any]:
    return [pid.node, pid.creation, pid.id, pid.serial]


def run_otpkit_b(port: int, ready: str) -> None:
    """Node B: an echo and a counter actor; stops when stdin closes."""
    node = otpkit.Node(
        f"benchdistb@{HOST_B}", cookie=COOKIE, dist_port=port, log_dir=c.workdir()
    ).start()
    try:
        echo, counter = node.spawn(Echo), node.spawn(Counter)
        write_ready(
            ready,
            {
                "name": f"benchdistb@{HOST_B}",
                "echo": pid_fields(echo),
                "counter": pid_fields(counter),
                "dist": otpkit.whereis(NET_NAME).id,  # the process of B's dist thread
                "pids": node.os_pids(),
            },
        )
        wait_stdin_eof()
    finally:
        node.stop()


def run_otpkit(quick: bool) -> dict[str, Any]:
    """Node A (this process) against node B (a sub-process)."""
    seconds, n, streams = _plan(quick)
    port_a, port_b = free_port(HOST_A), free_port(HOST_B)
    ready = os.path.join(c.workdir(), "b-ready.json")
    proc_b = start_sub("otpkit-b", port_b, ready)
    b_pids: list[int] = []
    try:
        node = otpkit.Node(
            f"benchdista@{HOST_A}", cookie=COOKIE, dist_port=port_a, log_dir=c.workdir()
        ).start()
        try:
            info = wait_ready(ready, proc_b)
            b_pids = info["pids"]
            dist.connect_node(info["name"], HOST_B, port_b)
            deadline = time.monotonic() + 10
            while dist.nodes() != [info["name"]]:
                if time.monotonic() > deadline:
                    raise RuntimeError("node A did not connect to node B within 10 s")
                time.sleep(0.01)
            echo, counter = otpkit.Pid(*info["echo"]), otpkit.Pid(*info["counter"])
            caller, streamer = node.spawn(Caller), node.spawn(Streamer)
            non_loopback = c.check_loopback_only()
            pids = node.os_pids() + b_pids
            dist_a = otpkit.whereis(NET_NAME).id
            cpu0 = cpu_ticks(pids)
            lat, span, calls = otpkit.call(caller, ("run", echo, WARMUP_S, seconds), seconds + 120)
            parts = {"caller": caller.id, "dist A": dist_a, "dist B": info["dist"], "echo": echo.id}
            rt_cpu = cpu_us_per_item(cpu0, cpu_ticks(pids), parts, calls)
            runs = []
            cpu0 = cpu_ticks(pids)
            for _ in range(streams):
                otpkit.call(counter, ("expect", n, node.pid), 10)
                t0, t_sent = otpkit.call(streamer, ("stream", counter, n), 600)
                msg = node.receive(600)
                if not (isinstance(msg, tuple) and msg[0] == "done"):
                    raise RuntimeError(f"the counter answered {msg!r}")
                _, t_last, got, out_of_order = msg
                if got != n or out_of_order:
                    raise RuntimeError(f"stream: {got} of {n} arrived, {out_of_order} out of order")
                runs.append(
                    {
                        "msgs_per_s": n / ((t_last - t0) / 1e9),
                        "send_s": (t_sent - t0) / 1e9,
                        "total_s": (t_last - t0) / 1e9,
                    }
                )
            parts = {
                "streamer": streamer.id,
                "dist A": dist_a,
                "dist B": info["dist"],
                "counter": counter.id,
            }
            stream_cpu = cpu_us_per_item(cpu0, cpu_ticks(pids), parts, n * streams)
            return {
                "roundtrip": latency_summary(lat, span),
                "roundtrip_cpu_us": rt_cpu,
                "stream_cpu_us": stream_cpu,
                "streams": runs,
                "n": n,
                "non_loopback": non_loopback,
            }
        finally:
            node.stop()
    finally:
        stop_sub(proc_b, b_pids)


# --------------------------------------------------------------------------- TCP floor

_PREFIX = struct.Struct(">I")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = sock.recv(n, socket.MSG_WAITALL)
    if len(data) != n:
        raise EOFError("connection closed")
    return data


def run_tcp_server(port: int, ready: str) -> None:
    """Echo each length-prefixed frame back, until the client closes (bounded by a
    socket timeout)."""
    with socket.socket() as lsock:
        lsock.bind((HOST_TCP_SERVER, port))
        lsock.listen(1)
        lsock.settimeout(60)
        write_ready(ready, {"pids": [os.getpid()]})
        conn, _ = lsock.accept()
        with conn:
            conn.settimeout(60)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                try:
                    head = _recv_exact(conn, 4)
                except EOFError:
                    return
                body = _recv_exact(conn, _PREFIX.unpack(head)[0])
                conn.sendall(head + body)


def run_tcp(quick: bool) -> dict[str, Any]:
    """The client (this process) against the echo server (a sub-process)."""
    seconds, _, _ = _plan(quick)
    port = free_port(HOST_TCP_SERVER)
    ready = os.path.join(c.workdir(), "tcp-ready.json")
    proc = start_sub("tcp-server", port, ready)
    try:
        wait_ready(ready, proc)
        with socket.socket() as sock:
            sock.bind((HOST_TCP_CLIENT, 0))  # its own source address, as a dist node's
            sock.settimeout(30)
            sock.connect((HOST_TCP_SERVER, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            non_loopback = c.check_loopback_only()
            frame = _PREFIX.pack(FRAME_BODY) + os.urandom(FRAME_BODY)
            end = time.monotonic() + WARMUP_S
            while time.monotonic() < end:
                sock.sendall(frame)
                _recv_exact(sock, len(frame))
            lat = []
            t_start = time.perf_counter_ns()
            end_ns = t_start + int(seconds * 1e9)
            t1 = t_start
            while t1 < end_ns:
                t0 = t1
                sock.sendall(frame)
                head = _recv_exact(sock, 4)
                _recv_exact(sock, _PREFIX.unpack(head)[0])
                t1 = time.perf_counter_ns()
                lat.append(t1 - t0)
        return {
            "roundtrip": latency_summary(lat, (t1 - t_start) / 1e9),
            "frame_bytes": len(frame),
            "non_loopback": non_loopback,
        }
    finally:
        stop_sub(proc, [])


# --------------------------------------------------------------------------- Erlang/OTP

ERL_MODULE = "otpkit_bench_stream"
ERL_SOURCE = """\
-module(otpkit_bench_stream).
-export([rx/1, tx/4]).

%% The receiver: registered as bench_rx; counts {seq, I} in order, replies when done.
rx(Ready) ->
    register(bench_rx, self()),
    ok = file:write_file(Ready, "ready"),
    rx_wait().

rx_wait() ->
    receive
        {expect, N, From} -> From ! ready, rx_count(N, 0, From);
        stop -> ok
    end.

rx_count(N, N, From) ->
    From ! {done, os:system_time(nanosecond), N},
    rx_wait();
rx_count(N, I, From) ->
    receive
        {seq, I} -> rx_count(N, I + 1, From);
        {seq, J} -> exit({out_of_order, I, J})
    end.

%% The sender: Rounds streams of N messages; writes one line per stream to Out:
%% first send, last send, last receipt (os:system_time, ns).
tx(Node, N, Rounds, Out) ->
    true = net_kernel:connect_node(Node),
    Rx = {bench_rx, Node},
    Lines = [stream(Rx, N) || _ <- lists:seq(1, Rounds)],
    Release = erlang:system_info(otp_release),
    ok = file:write_file(Out, ["otp ", Release, "\\n" | Lines]),
    Rx ! stop,
    halt(0).

stream(Rx, N) ->
    Rx ! {expect, N, self()},
    receive ready -> ok after 10000 -> exit(no_ready) end,
    T0 = os:system_time(nanosecond),
    send_loop(Rx, 0, N),
    T1 = os:system_time(nanosecond),
    receive {done, T2, N} -> io_lib:format("~b ~b ~b~n", [T0, T1, T2])
    after 600000 -> exit(no_done)
    end.

send_loop(_, N, N) -> ok;
send_loop(Rx, I, N) -> Rx ! {seq, I}, send_loop(Rx, I + 1, N).
"""


def _erl_node(name: str, host: str, port: int, wd: str, expr: str) -> subprocess.Popen[bytes]:
    log = open(os.path.join(wd, f"{name}.log"), "ab")  # noqa: SIM115
    try:
        return subprocess.Popen(
            [
                "erl",
                "-name",
                f"{name}@{host}",
                "-setcookie",
                COOKIE,
                "-noshell",
                "-start_epmd",
                "false",
                "-erl_epmd_port",
                str(port),
                "-kernel",
                "inet_dist_use_interface",
                "{" + host.replace(".", ",") + "}",
                "-pa",
                wd,
                "-eval",
                expr,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    finally:
        log.close()


def _end(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()  # the emulator halts on SIGTERM
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def run_erlang(quick: bool) -> dict[str, Any]:
    _, n, streams = _plan(quick)
    wd = c.workdir()
    if shutil.which("erl") is None or shutil.which("erlc") is None:
        return {"missing": True}
    src = os.path.join(wd, f"{ERL_MODULE}.erl")
    with open(src, "w") as f:
        f.write(ERL_SOURCE)
    subprocess.run(["erlc", "-o", wd, src], check=True, timeout=120, capture_output=True)
    # without epmd: each node listens on this port on its own address
    port = free_port(HOST_ERL_TX, HOST_ERL_RX)
    ready, out = os.path.join(wd, "erl-ready"), os.path.join(wd, "erl-out.txt")
    rx = tx = None
    try:
        rx = _erl_node("benchrx", HOST_ERL_RX, port, wd, f'{ERL_MODULE}:rx("{ready}")')
        deadline = time.monotonic() + 60
        while not os.path.exists(ready):
            if rx.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Erlang receiver did not start (log in {wd})")
            time.sleep(0.02)
        tx = _erl_node(
            "benchtx",
            HOST_ERL_TX,
            port,
            wd,
            f"{ERL_MODULE}:tx('benchrx@{HOST_ERL_RX}', {n}, {streams}, \"{out}\")",
        )
        non_loopback: set[str] = set()
        deadline = time.monotonic() + 600
        while tx.poll() is None:
            non_loopback.update(c.check_loopback_only())
            if time.monotonic() > deadline:
                raise RuntimeError("the Erlang sender did not finish within 600 s")
            time.sleep(0.1)
        if tx.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"the Erlang sender failed (status {tx.returncode}; log in {wd})")
        with open(out) as f:
            lines = f.read().split("\n")
        runs = []
        for line in lines[1:]:
            if line.strip():
                t0, t1, t2 = (int(x) for x in line.split())
                runs.append(
                    {
                        "msgs_per_s": n / ((t2 - t0) / 1e9),
                        "send_s": (t1 - t0) / 1e9,
                        "total_s": (t2 - t0) / 1e9,
                    }
                )
        return {
            "streams": runs,
            "n": n,
            "release": lines[0].split()[-1],
            "non_loopback": sorted(non_loopback),
        }
    finally:
        _end(tx)
        _end(rx)


# --------------------------------------------------------------------------- driver


def _median_rate(runs: list[dict[str, Any]]) -> float:
    return c.percentile([r["msgs_per_s"] for r in runs], 50)


def _stream_line(label: str, runs: list[dict[str, Any]]) -> str:
    rates = [r["msgs_per_s"] for r in runs]
    sends = [r["send_s"] / r["total_s"] for r in runs]
    return (
        f"  {label:26}{c.percentile(rates, 50):12,.0f} msg/s median of {len(runs)}"
        f" (min {min(rates):,.0f}, max {max(rates):,.0f}); sending took"
        f" {100 * c.percentile(sends, 50):.0f}% of the span"
    )


def _cpu_line(label: str, cpu: dict[str, float]) -> str:
    parts = ", ".join(f"{name} {us:.0f}" for name, us in cpu.items())
    return f"  {label}, us: {parts}; total {sum(cpu.values()):.0f} (the host has 2 CPUs)"


def _met(value: float, goal: float) -> str:
    return "met" if value >= goal else "NOT met"


def main() -> int:
    args = parse_args()
    if args.role == "otpkit-b":
        run_otpkit_b(args.port, args.ready)
        return 0
    if args.role == "tcp-server":
        run_tcp_server(args.port, args.ready)
        return 0
    if args.role:
        return c.role_main(args, {"otpkit": run_otpkit, "tcp": run_tcp, "erlang": run_erlang})
    load = c.HostLoad()
    floor = c.run_role(__spec__.name, "tcp", args.quick)
    ours = c.run_role(__spec__.name, "otpkit", args.quick)
    erl = c.run_role(__spec__.name, "erlang", args.quick)
    rt, fl = ours["roundtrip"], floor["roundtrip"]
    keys = ("p10_us", "p50_us", "p90_us", "p99_us")
    stream = _median_rate(ours["streams"])
    lines = [
        f"cross-node call round trips ({rt['seconds']:.1f} s of back-to-back calls each):",
        f"  {'':26}{'per s':>12}" + "".join(f"{k[:-3] + ' us':>10}" for k in keys),
        *(
            f"  {label:26}{s['per_s']:12,.0f}" + "".join(f"{s[k]:10.1f}" for k in keys)
            for label, s in (
                ("otpkit call A -> B", rt),
                (f"TCP floor ({floor['frame_bytes']} B frames)", fl),
            )
        ),
        f"  otpkit / floor: {rt['per_s'] / fl['per_s']:.2f} of the floor's rate;"
        f" goal >= {GOAL_ROUNDTRIPS:,.0f}/s: {_met(rt['per_s'], GOAL_ROUNDTRIPS)}",
        _cpu_line("otpkit CPU per round trip", ours["roundtrip_cpu_us"]),
        f"one-way stream of ('seq', i), {ours['n']:,} messages per stream:",
        _stream_line("otpkit send A -> B", ours["streams"]),
        _cpu_line("otpkit CPU per message", ours["stream_cpu_us"]),
    ]
    peer_value = None
    if erl.get("missing"):
        lines.append("  erlang_otp: not measured - erl/erlc missing (apt-get install erlang-base)")
    else:
        peer_value = _median_rate(erl["streams"])
        lines += [
            _stream_line(f"Erlang/OTP {erl['release']} !", erl["streams"]),
            f"  otpkit / Erlang: {stream / peer_value:.3f}",
        ]
    lines += [
        f"  goal >= {GOAL_STREAM:,.0f} msg/s: {_met(stream, GOAL_STREAM)}",
        load.line(),
        f"  otpkit measured: {ours['otpkit']}",
    ]
    c.say(*lines)
    c.emit(
        [
            c.figure(
                "dist_roundtrip_per_s", rt["per_s"], "1/s", "tcp_blocking_floor", fl["per_s"], 1
            ),
            c.figure(
                "dist_stream_msgs_per_s",
                stream,
                "msg/s",
                None if peer_value is None else "erlang_otp",
                peer_value,
                0,
            ),
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
