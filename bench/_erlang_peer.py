"""Erlang/OTP peer of the registry benchmarks: ``global`` on 3 nodes on loopback.

Not a benchmark on its own: a bench script calls these functions in the same run as
its otpkit measurement and reports them as ``peer: "erlang_otp"``. (Run directly,
``python -m bench._erlang_peer [--quick]`` prints them as JSON lines, ``value`` null.)

* ``available()`` - ``erl``, ``erlc`` and ``epmd`` are installed (Debian ``erlang-base``).
* ``registry_latency(runs)`` -> ``register_ms_p50``: ``global:register_name/2`` called
  on node A for a pid living on node B, then ``unregister_name`` (not timed), ``runs``
  times after 20 unmeasured rounds; ``whereis_us_p50``: ``global:whereis_name/1`` from a
  process on A, ``runs`` samples of ``loop`` back-to-back calls, per call.
* ``failover(runs)`` -> ``failover_sigkill_ms_p50/p99``: Highlander singleton, one
  contender per node (``register_name(single, self())``; the losers monitor the holder
  and retry on ``'DOWN'``). SIGKILL of the holder's whole VM (``beam.smp``) -> a survivor's
  ``register_name`` returned ``yes``: the kill time is ``time.time()`` just before
  ``os.kill``, the win time ``os:system_time(nanosecond)`` right after ``yes`` - both the
  OS wall clock of this machine. The killed node is restarted between runs. Kernel
  defaults (``net_ticktime`` 60 s): the dead VM's sockets are closed by the kernel,
  so the survivors see ``nodedown`` at once and the tick never matters.
* ``heal(names, runs)`` -> ``heal_<names>_names_ms_p50``: partitions {A} and {B, C},
  never connected (3 fresh nodes per run); ``names`` names registered on each side for
  its own pids (on A; on B), then A ``net_kernel:connect_node(B)``; done when A, B and C
  each hold ``names`` names and the same name -> pid map on all three (``detail`` also
  gets when ``connect_node`` returned and when A first saw both B and C). Measured on A
  (``erlang:monotonic_time``) by a poll that sleeps 1 ms between rounds (a round takes
  ~1 ms with 1 name, ~10 ms with 1000); A reads C's view through B so that the poll
  itself opens no connection. Default resolver (``random_exit_name``). Even with one
  name this takes ~230 ms, consistent with OTP 25's global.erl: its locker process
  waits 200 ms before it tries to lock while it knows no other node (``loop_the_locker``),
  as A does here.

Every node is ``erl -noshell -name X@127.0.0.1 -setcookie <random> -start_epmd false``
against a private ``epmd -port P -address 127.0.0.1`` (``ERL_EPMD_PORT=P``),
distribution bound to 127.0.0.1 (``inet_dist_use_interface``); the module
``bench/erlang/global_bench.erl`` is compiled with ``erlc`` into a temporary directory at
each call. Nodes report back only through files in that directory; their stdout/stderr
go to log files there (a crash dump too). Every process started (epmd, each VM and its
``erl_child_setup``) is ended in ``finally``; the directory is removed after a success
and kept (its path in the error) after a failure, or always with ``OTPKIT_BENCH_KEEP=1``.
Every wait is bounded. Once the nodes are up, a check that no socket of these processes
is bound off loopback runs; a violation fails the call.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from bench import _runner as c

PEER = "erlang_otp"
HOST = "127.0.0.1"
ERL_MODULE = "global_bench"
ERL_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "erlang", "global_bench.erl")

UNITS = {
    "register_ms_p50": "ms",
    "whereis_us_p50": "us",
    "failover_sigkill_ms_p50": "ms",
    "failover_sigkill_ms_p99": "ms",
}

BOOT_TIMEOUT = 60.0  # one VM boot, connect and global:sync (a loaded 2-core host)
EVENT_TIMEOUT = 30.0  # a failover, a settle


def available() -> bool:
    return all(shutil.which(p) for p in ("erl", "erlc", "epmd")) and os.path.exists(ERL_SOURCE)


# --------------------------------------------------------------------------- processes


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":
        return None
    return int(fields[19])


def _children(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of the children of ``pid`` (a VM's ``erl_child_setup``)."""
    out = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                for child in f.read().split():
                    st = _start_time(int(child))
                    if st is not None:
                        out.append((int(child), st))
    return out


def _end_child(pid: int, start: int, grace: float = 2.0) -> None:
    """End a recorded child once it is orphaned; only the very process recorded."""
    deadline = time.monotonic() + grace
    while _start_time(pid) == start and time.monotonic() < deadline:
        time.sleep(0.01)  # erl_child_setup exits by itself when its VM is gone
    if _start_time(pid) == start:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _reap(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _erl_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _erl_atom(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Cluster:
    """A private epmd, the compiled module, and the nodes started against them."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="otpkit-erlpeer-")
        self.cookie = uuid.uuid4().hex
        self.epmd: subprocess.Popen[bytes] | None = None
        self.epmd_port = 0
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kids: dict[str, list[tuple[int, int]]] = {}
        self.ended: list[tuple[subprocess.Popen[bytes], list[tuple[int, int]]]] = []
        self.ok = False
        self.otp = "?"

    # -- lifecycle

    def __enter__(self) -> _Cluster:
        try:
            subprocess.run(
                ["erlc", "-o", self.dir, ERL_SOURCE], check=True, timeout=120, capture_output=True
            )
            self._start_epmd()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.ok = exc_type is None
        self.close()

    def _log(self, name: str) -> Any:
        return open(os.path.join(self.dir, name), "ab")

    def _start_epmd(self) -> None:
        for _ in range(5):
            port = c.free_port()
            with self._log("epmd.log") as log:
                proc = subprocess.Popen(
                    ["epmd", "-port", str(port), "-address", HOST],
                    cwd=self.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            deadline = time.monotonic() + 10
            while proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
                    self.epmd, self.epmd_port = proc, port
                    return
                time.sleep(0.02)
            _reap(proc)
        raise RuntimeError(f"epmd did not start (log in {self.dir})")

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        for proc, kids in self.ended:
            _reap(proc)
            for pid, start in kids:
                _end_child(pid, start)
        if self.epmd is not None:
            _reap(self.epmd, signal.SIGTERM)
            self.epmd = None
        if self.ok and not os.environ.get("OTPKIT_BENCH_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- nodes

    @staticmethod
    def node(short: str) -> str:
        return f"{short}@{HOST}"

    def start(self, short: str, call: str) -> None:
        """Start node ``short`` evaluating ``global_bench:<call>``."""
        env = dict(
            os.environ,
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_CRASH_DUMP=os.path.join(self.dir, f"{short}-erl_crash.dump"),
        )
        with self._log(f"{short}.log") as log:
            self.procs[short] = subprocess.Popen(
                [
                    "erl",
                    "-noshell",
                    "-name",
                    self.node(short),
                    "-setcookie",
                    self.cookie,
                    "-start_epmd",
                    "false",
                    "-kernel",
                    "inet_dist_use_interface",
                    "{" + HOST.replace(".", ",") + "}",
                    "-pa",
                    self.dir,
                    "-eval",
                    f"{ERL_MODULE}:{call}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.dir,
            )
        self.kids[short] = []

    def pid(self, short: str) -> int:
        return self.procs[short].pid

    def stop(self, short: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(short)
        kids = self.kids.pop(short, []) or _children(proc.pid)
        _reap(proc, sig)
        for pid, start in kids:
            _end_child(pid, start)

    def kill_now(self, short: str) -> None:
        """SIGKILL the VM at once (no reaping here: the caller times what follows)."""
        proc = self.procs.pop(short)
        kids = self.kids.pop(short, []) or _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        self.ended.append((proc, kids))

    def reap_ended(self) -> None:
        for proc, kids in self.ended:
            _reap(proc)
            for pid, start in kids:
                _end_child(pid, start)
        self.ended.clear()

    def _failed(self, what: str) -> RuntimeError:
        err = os.path.join(self.dir, "error")
        detail = ""
        if os.path.exists(err):
            with open(err) as f:
                detail = ": " + f.read(2000)
        return RuntimeError(f"{what} (logs in {self.dir}){detail}")

    def check_alive(self, shorts: Iterable[str]) -> None:
        for s in shorts:
            proc = self.procs[s]
            if proc.poll() is not None:
                raise self._failed(f"Erlang node {s} exited with status {proc.returncode}")

    def wait_ready(
        self, shorts: Iterable[str], run_dir: str, timeout: float = BOOT_TIMEOUT
    ) -> None:
        shorts = list(shorts)
        deadline = time.monotonic() + timeout
        for s in shorts:
            path = os.path.join(run_dir, f"{self.node(s)}.ready")
            while not os.path.exists(path):
                self.check_alive(shorts)
                if time.monotonic() > deadline:
                    raise self._failed(f"Erlang node {s} not ready within {timeout:g} s")
                time.sleep(0.01)
            self.kids[s] = _children(self.pid(s))
        self.check_loopback()

    def check_loopback(self) -> None:
        pids = [p.pid for p in self.procs.values()]
        pids += [k for kids in self.kids.values() for k, _ in kids]
        if self.epmd is not None:
            pids.append(self.epmd.pid)
        bad = c.non_loopback_sockets(pids)
        if bad:
            raise RuntimeError(f"Erlang peer bound off loopback: {bad}")

    def wait_result(self, short: str, run_dir: str, timeout: float) -> dict[str, list[int]]:
        """The ``result`` file of a measuring node, once it has halted."""
        path = os.path.join(run_dir, "result")
        proc = self.procs[short]
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if not self.kids[short]:
                self.kids[short] = _children(proc.pid)
            if time.monotonic() > deadline:
                raise self._failed(f"Erlang node {short} did not finish within {timeout:g} s")
            time.sleep(0.01)
        if proc.returncode != 0 or not os.path.exists(path):
            raise self._failed(f"Erlang node {short} failed (status {proc.returncode})")
        self.procs.pop(short)
        self.ended.append((proc, self.kids.pop(short, [])))
        out: dict[str, list[int]] = {}
        with open(path) as f:
            for line in f:
                key, *vals = line.split()
                if key == "otp":
                    self.otp = " ".join(vals)
                else:
                    out[key] = [int(v) for v in vals]
        return out


def _p(values: list[float], q: float) -> float:
    return c.percentile(values, q)


def _fill(detail: dict[str, Any] | None, **items: Any) -> None:
    if detail is not None:
        detail.update(items)


# --------------------------------------------------------------------------- latency


def registry_latency(
    runs: int, loop: int = 10_000, detail: dict[str, Any] | None = None
) -> dict[str, float]:
    """p50 of ``global:register_name/2`` (ms) and of one ``global:whereis_name/1`` (us)."""
    t0 = time.monotonic()
    with _Cluster() as cl:
        d = cl.dir
        peers = f"[{_erl_atom(cl.node('b'))}, {_erl_atom(cl.node('c'))}]"
        for s in ("b", "c"):
            cl.start(s, f"idle({_erl_str(d)}, [])")
        cl.wait_ready(("b", "c"), d)
        cl.start("a", f"latency({_erl_str(d)}, {peers}, {runs}, {loop})")
        res = cl.wait_result("a", d, BOOT_TIMEOUT + 0.05 * runs + 2e-5 * loop * runs)
        otp = cl.otp
    register_ms = [v / 1e6 for v in res["register_ns"]]
    whereis_us = [v / 1e3 / loop for v in res["whereis_loop_ns"]]
    _fill(
        detail,
        register_ms=register_ms,
        whereis_us=whereis_us,
        otp=otp,
        seconds=time.monotonic() - t0,
    )
    return {"register_ms_p50": _p(register_ms, 50), "whereis_us_p50": _p(whereis_us, 50)}


# --------------------------------------------------------------------------- failover


def _hl_state(cl: _Cluster, live: Iterable[str]) -> dict[str, list[str]]:
    """Each live node's failover log since its latest ``start``."""
    out = {}
    for s in live:
        path = os.path.join(cl.dir, f"{cl.node(s)}.hl")
        lines: list[str] = []
        with contextlib.suppress(OSError), open(path) as f:
            lines = [ln for ln in f.read().split("\n") if ln]
        starts = [i for i, ln in enumerate(lines) if ln == "start"]
        out[s] = lines[starts[-1] + 1 :] if starts else []
    return out


def _settled(cl: _Cluster, live: list[str], timeout: float = EVENT_TIMEOUT) -> str:
    """Wait until one live node holds ``single`` and the others wait on it; the holder."""
    deadline = time.monotonic() + timeout
    while True:
        state = _hl_state(cl, live)
        last = {s: (ev[-1] if ev else "") for s, ev in state.items()}
        holders = [s for s, ev in last.items() if ev.startswith("win ")]
        if len(holders) == 1:
            h = holders[0]
            if all(last[s] == f"wait {cl.node(h)}" for s in live if s != h):
                return h
        cl.check_alive(live)
        if time.monotonic() > deadline:
            raise cl._failed(f"failover: no settled singleton within {timeout:g} s: {last}")
        time.sleep(0.005)


def failover(runs: int, detail: dict[str, Any] | None = None) -> dict[str, float]:
    """SIGKILL of the singleton holder's VM -> a survivor holds it (ms, wall clock)."""
    t0 = time.monotonic()
    shorts = ["a", "b", "c"]
    samples: list[float] = []
    victims: list[str] = []
    with _Cluster() as cl:
        d = cl.dir

        def start(s: str, peers: list[str]) -> None:
            atoms = ", ".join(_erl_atom(cl.node(p)) for p in peers)
            cl.start(s, f"highlander({_erl_str(d)}, [{atoms}])")

        for s in shorts:
            start(s, [p for p in shorts if p != s])
        cl.wait_ready(shorts, d)
        for _ in range(runs):
            holder = _settled(cl, shorts)
            survivors = [s for s in shorts if s != holder]
            before = {s: len(ev) for s, ev in _hl_state(cl, survivors).items()}
            t_kill = time.time()
            cl.kill_now(holder)
            deadline = time.monotonic() + EVENT_TIMEOUT
            won: list[int] = []
            while not won:
                state = _hl_state(cl, survivors)
                won = [
                    int(ev.split()[1])
                    for s in survivors
                    for ev in state[s][before[s] :]
                    if ev.startswith("win ")
                ]
                if won:
                    break
                cl.check_alive(survivors)
                if time.monotonic() > deadline:
                    raise cl._failed(f"failover: no survivor won within {EVENT_TIMEOUT:g} s")
                time.sleep(0.002)
            samples.append((min(won) / 1e9 - t_kill) * 1e3)
            victims.append(holder)
            cl.reap_ended()
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(d, f"{cl.node(holder)}.ready"))
            start(holder, survivors)
            cl.wait_ready([holder], d)
        _settled(cl, shorts)
    _fill(detail, failover_ms=samples, victims=victims, seconds=time.monotonic() - t0)
    return {"failover_sigkill_ms_p50": _p(samples, 50), "failover_sigkill_ms_p99": _p(samples, 99)}


# --------------------------------------------------------------------------- heal


def heal(names: int, runs: int, detail: dict[str, Any] | None = None) -> dict[str, float]:
    """{A} and {B, C}, ``names`` clashing names each side; connect -> one map everywhere."""
    t0 = time.monotonic()
    samples: list[float] = []
    polls: list[int] = []
    connect: list[float] = []
    mesh: list[float] = []
    timeout_ms = int(1000 * (EVENT_TIMEOUT + 0.05 * names))
    with _Cluster() as cl:
        b, cnode = _erl_atom(cl.node("b")), _erl_atom(cl.node("c"))
        for i in range(runs):
            rd = os.path.join(cl.dir, f"run{i}")
            os.mkdir(rd)
            cl.start("c", f"idle({_erl_str(rd)}, [])")
            cl.start("b", f"heal_side({_erl_str(rd)}, {cnode}, {names})")
            cl.start("a", f"heal_main({_erl_str(rd)}, {b}, {cnode}, {names}, {timeout_ms})")
            cl.wait_ready(["c", "b"], rd, BOOT_TIMEOUT + 0.05 * names)
            res = cl.wait_result("a", rd, BOOT_TIMEOUT + 2 * timeout_ms / 1000)
            samples.append(res["heal_ns"][0] / 1e6)
            connect.append(res["connect_ns"][0] / 1e6)
            mesh.append(res["mesh_ns"][0] / 1e6)
            polls.append(res["polls"][0])
            cl.stop("b")
            cl.stop("c")
            cl.reap_ended()
    _fill(
        detail,
        heal_ms=samples,
        connect_ms=connect,
        mesh_ms=mesh,
        polls=polls,
        seconds=time.monotonic() - t0,
    )
    return {f"heal_{names}_names_ms_p50": _p(samples, 50)}


# --------------------------------------------------------------------------- main


def _unit(key: str) -> str:
    return UNITS.get(key, "ms")


def _spread(values: list[float]) -> str:
    return (
        f"min {min(values):.3f}  p50 {_p(values, 50):.3f}  p90 {_p(values, 90):.3f}"
        f"  max {max(values):.3f}  (n={len(values)})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run (~30 s)")
    args = ap.parse_args()
    if not available():
        c.say("erlang_otp: not measured - erl/erlc/epmd missing (apt-get install erlang-base)")
        return 1
    plan: list[tuple[str, Callable[..., dict[str, float]], tuple[int, ...], str]] = (
        [
            ("registry_latency", registry_latency, (50,), "register_ms"),
            ("failover", failover, (3,), "failover_ms"),
            ("heal 1 name", heal, (1, 2), "heal_ms"),
            ("heal 1000 names", heal, (1000, 2), "heal_ms"),
        ]
        if args.quick
        else [
            ("registry_latency", registry_latency, (500,), "register_ms"),
            ("failover", failover, (20,), "failover_ms"),
            ("heal 1 name", heal, (1, 10), "heal_ms"),
            ("heal 1000 names", heal, (1000, 10), "heal_ms"),
        ]
    )
    # mark the Erlang processes as this run's, so that the host line does not count
    # them as foreign load (a bench role has its own marker already)
    os.environ.setdefault(c.MARKER_VAR, f"erlpeer-{uuid.uuid4().hex}")
    load = c.HostLoad()
    figures: list[dict[str, Any]] = []
    for label, fn, fargs, key in plan:
        detail: dict[str, Any] = {}
        out = fn(*fargs, detail=detail)
        c.say(f"{label}{fargs}: {detail['seconds']:.1f} s")
        c.say(f"  {key}: {_spread(detail[key])}")
        if "otp" in detail:
            c.say(f"  Erlang/OTP {detail['otp']}")
        if "whereis_us" in detail:
            c.say(f"  whereis_us: {_spread(detail['whereis_us'])}")
        for extra in ("connect_ms", "mesh_ms"):
            if extra in detail:
                c.say(f"  {extra}: {_spread(detail[extra])}")
        if "victims" in detail:
            c.say(f"  victims: {' '.join(detail['victims'])}")
        for k, v in out.items():
            figures.append(
                {
                    "figure": k,
                    "value": None,
                    "unit": _unit(k),
                    "peer": PEER,
                    "peer_value": round(v, 3),
                    "ratio": None,
                }
            )
    c.say(load.line())
    for fig in figures:
        print(json.dumps(fig), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
