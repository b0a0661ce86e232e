"""The runner every benchmark script runs under (not a benchmark itself): its roles,
statistics and figures, and the checks every run makes.

Every benchmark script runs in three roles (``python -m bench.NAME [--role ROLE]`` from
the repository root; roles are started the same way, with the root on ``PYTHONPATH``):

* the *driver* (no ``--role``): starts one subprocess per measured system, one after
  the other, collects their JSON results, prints a summary on stderr and one JSON line
  per figure on stdout;
* ``--role otpkit``: starts an otpkit node (one node per OS process) and measures it;
* ``--role thespian``: starts a raw Thespian ``multiprocTCPBase`` system (no otpkit) on
  its own admin port and measures the peer.

Each subprocess gets a unique marker in its environment. Every process forked from it
(Thespian's admin daemonizes itself into a new session, so neither the parent chain nor
the process group finds it) shows that marker in ``/proc/PID/environ``: the driver uses
it to prove that nothing is left behind, and the roles use it to find every process of
their system and to check that none of them holds a socket bound to anything but
loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tests.harness.processes import child_env, pids_with_env, python_module

MARKER_VAR = "OTPKIT_BENCH_TAG"


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return float(data[0])
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return float(data[lo] + (data[hi] - data[lo]) * (pos - lo))


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "min": float(min(values)),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": float(max(values)),
        "mean": float(sum(values) / len(values)),
    }


# --------------------------------------------------------------------------- figures


def figure(
    name: str,
    value: float,
    unit: str,
    peer: str | None = None,
    peer_value: float | None = None,
    digits: int = 3,
) -> dict[str, Any]:
    out: dict[str, Any] = {"figure": name, "value": round(value, digits), "unit": unit}
    if peer is not None and peer_value is not None:
        out["peer"] = peer
        out["peer_value"] = round(peer_value, digits)
        out["ratio"] = round(value / peer_value, 3) if peer_value else None
    return out


def emit(figures: Iterable[dict[str, Any]]) -> None:
    for fig in figures:
        print(json.dumps(fig), flush=True)


def say(*lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


def marker() -> str | None:
    return os.environ.get(MARKER_VAR)


def marked_pids(tag: str) -> list[int]:
    """Live (non-zombie) processes whose initial environment carries ``tag``."""
    return pids_with_env(MARKER_VAR, tag)


def my_system_pids(include_self: bool = False) -> list[int]:
    """Every process of this role's system (forked from it); this process only if asked."""
    tag = marker()
    if tag is None:
        return [os.getpid()] if include_self else []
    return [p for p in marked_pids(tag) if include_self or p != os.getpid()]


def check_loopback_only() -> list[str]:
    """Sockets of this role's processes (this one included) bound off loopback."""
    return non_loopback_sockets(my_system_pids(include_self=True))


def _socket_table() -> dict[int, tuple[str, str, int]]:
    """inode -> (proto, local address, local port) for every IP socket of the host."""
    table: dict[int, tuple[str, str, int]] = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/net/{proto}") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, inode = fields[1], int(fields[9])
            addr_hex, port_hex = local.split(":")
            raw = bytes.fromhex(addr_hex)
            if len(raw) == 4:
                addr = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                addr = socket.inet_ntop(socket.AF_INET6, words)
            table[inode] = (proto, addr, int(port_hex, 16))
    return table


_LOOPBACK = ("127.", "::1", "::ffff:127.")


def non_loopback_sockets(pids: Iterable[int]) -> list[str]:
    """Sockets of ``pids`` bound to a port on an address other than loopback."""
    table = _socket_table()
    bad = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if not target.startswith("socket:["):
                continue
            entry = table.get(int(target[8:-1]))
            if entry is None:
                continue  # a Unix socket
            proto, addr, port = entry
            if port and not addr.startswith(_LOOPBACK):
                bad.append(f"pid {pid}: {proto} {addr}:{port}")
    return bad


def pss_kb(pid: int) -> dict[str, int]:
    """Rss, Pss and USS (private clean + dirty) of one process, in kB."""
    out = {"rss": 0, "pss": 0, "uss": 0}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if not parts:
                continue
            if key == "Rss":
                out["rss"] = int(parts[0])
            elif key == "Pss":
                out["pss"] = int(parts[0])
            elif key in ("Private_Clean", "Private_Dirty"):
                out["uss"] += int(parts[0])
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- raw Thespian


def loopback_only_thespian() -> None:
    """Make raw Thespian bind its sockets to the address it advertises (127.0.0.1).

    Thespian 4.0.1 binds every socket to 0.0.0.0 (ARCHITECTURE.md, *Thespian traps*); the
    benchmarks must bind nothing but loopback. This changes the bind address only - no
    serializer, no other behaviour - so the peer stays raw Thespian.
    """
    os.environ["THESPIAN_BASE_IPADDR"] = "127.0.0.1"
    from thespian.system.transport import IPBase  # noqa: PLC0415 - raw role only

    IPBase.IPActorAddress.bindArgs = property(lambda self: (self.sockname,))


def raw_log_defs(log_path: str) -> dict[str, Any]:
    return {
        "version": 1,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "filename": log_path,
                "formatter": "plain",
                "level": "WARNING",
            }
        },
        "root": {"handlers": ["file"], "level": "WARNING"},
    }


def start_raw_system(workdir: str) -> Any:
    """A raw multiprocTCPBase system on a free loopback admin port."""
    loopback_only_thespian()
    os.environ["THESPLOG_FILE"] = os.path.join(workdir, "thespian-internal.log")
    os.environ.setdefault("THESPLOG_THRESHOLD", "WARNING")
    from thespian.actors import ActorSystem  # noqa: PLC0415 - raw role only

    return ActorSystem(
        "multiprocTCPBase",
        {"Admin Port": free_port()},
        logDefs=raw_log_defs(os.path.join(workdir, "thespian.log")),
        transientUnique=True,
    )


def stop_raw_system(asys: Any) -> None:
    """Shut the raw system down and wait until none of its processes is left."""
    with contextlib.suppress(Exception):
        asys.shutdown()
    deadline = time.monotonic() + 10
    left = my_system_pids()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = my_system_pids()
    for pid in left:  # should not happen; never leave anything behind
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- host load


def _cpu_times() -> tuple[int, int, int]:
    """(busy, total, steal) clock ticks of all CPUs."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - fields[3] - fields[4], total, fields[7]


def _proc_cpu_ticks() -> dict[tuple[int, int], int]:
    """(pid, start time) -> utime + stime in clock ticks, for every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        out[(int(entry), int(fields[19]))] = int(fields[11]) + int(fields[12])
    return out


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _is_ours(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"{MARKER_VAR}=".encode() in f.read()
    except OSError:
        return False


class HostLoad:
    """How busy the host was during a run, and how much of it was *other* processes.

    This benchmark shares the machine; a busy neighbour (a test suite, a CPU burner)
    shows up in every latency figure. A thread samples every process's CPU time four
    times a second; the CPU used by processes that are neither this driver nor marked as
    one of its roles is reported as foreign (a process that lives less than one sample
    period is missed, so this is a lower bound).
    """

    def __init__(self, period: float = 0.25) -> None:
        self.load_before = os.getloadavg()[0]
        self.busy0, self.total0, self.steal0 = _cpu_times()
        self.t0 = time.monotonic()
        self.foreign_ticks = 0
        self.foreign_by_name: dict[str, int] = {}
        self._ours: dict[tuple[int, int], bool] = {}
        self._last = _proc_cpu_ticks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(period,), daemon=True)
        self._thread.start()

    def _sample(self, period: float) -> None:
        while not self._stop.wait(period):
            now = _proc_cpu_ticks()
            for key, ticks in now.items():
                ours = self._ours.get(key)
                if ours is None:
                    ours = self._ours[key] = _is_ours(key[0])
                if not ours:
                    used = ticks - self._last.get(key, 0)
                    if used > 0:
                        self.foreign_ticks += used
                        name = _comm(key[0])
                        self.foreign_by_name[name] = self.foreign_by_name.get(name, 0) + used
            self._last = now

    def foreign_cpu_share(self) -> float:
        """Foreign CPU time so far, as a share of one CPU over the elapsed time."""
        elapsed = max(1e-9, time.monotonic() - self.t0)
        return self.foreign_ticks / os.sysconf("SC_CLK_TCK") / elapsed

    def line(self) -> str:
        self._stop.set()
        self._thread.join()
        busy1, total1, steal1 = _cpu_times()
        span = max(1, total1 - self.total0)
        ncpu = os.cpu_count() or 1
        return (
            f"  host: {ncpu} CPUs {100 * (busy1 - self.busy0) / span:.0f}% busy during the run"
            f" (steal {100 * (steal1 - self.steal0) / span:.1f}%); other processes used"
            f" {100 * self.foreign_cpu_share():.0f}% of one CPU (quiet: ~0%){self._top()};"
            f" loadavg(1 min) {self.load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
        )

    def _top(self) -> str:
        top = sorted(self.foreign_by_name.items(), key=lambda kv: -kv[1])[:3]
        if not top or not self.foreign_ticks:
            return ""
        parts = (f"{name} {100 * t / self.foreign_ticks:.0f}%" for name, t in top)
        return " [" + ", ".join(parts) + "]"


# --------------------------------------------------------------------------- driver


def parse_args(description: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="short smoke run (< 20 s)")
    ap.add_argument("--role", choices=("otpkit", "thespian"), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    return ap.parse_args()


def write_result(path: str, result: dict[str, Any]) -> None:
    result.setdefault("non_loopback", [])
    with open(path + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(path + ".tmp", path)


def run_role(module: str, role: str, quick: bool, timeout: float = 900) -> dict[str, Any]:
    """Run ``python -m module --role role`` (a benchmark's ``__spec__.name``) in its own
    process (stdio to a file, never a pipe of ours: actor processes inherit it) and
    return its JSON result. Fails loudly if the
    role fails, leaves a process behind, or bound a non-loopback socket."""
    tag = uuid.uuid4().hex
    workdir = tempfile.mkdtemp(prefix=f"otpkit-bench-{role}-")
    out_path = os.path.join(workdir, "result.json")
    log_path = os.path.join(workdir, "role.log")
    env = child_env()
    env[MARKER_VAR] = tag
    env["THESPIAN_BASE_IPADDR"] = "127.0.0.1"
    env["OTPKIT_BENCH_WORKDIR"] = workdir
    cmd = python_module(module, "--role", role, "--out", out_path)
    if quick:
        cmd.append("--quick")
    started = time.monotonic()
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                timeout=timeout,
                check=False,
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = -999
    left = marked_pids(tag)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    elapsed = time.monotonic() - started
    if rc != 0 or not os.path.exists(out_path):
        with open(log_path, errors="replace") as f:
            tail = f.read()[-4000:]
        raise RuntimeError(f"role {role} failed (rc={rc}); log {log_path}:\n{tail}")
    with open(out_path) as f:
        result: dict[str, Any] = json.load(f)
    if left:
        raise RuntimeError(f"role {role} left processes behind: {left} (killed them)")
    if result.get("non_loopback"):
        raise RuntimeError(f"role {role} bound non-loopback sockets: {result['non_loopback']}")
    result["_elapsed_s"] = elapsed
    if os.environ.get("OTPKIT_BENCH_KEEP"):
        result["_log"] = log_path
    else:  # a failed run keeps its directory (the error names its log)
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def role_main(args: argparse.Namespace, roles: dict[str, Callable[[bool], dict[str, Any]]]) -> int:
    if args.role is None or args.out is None:
        raise SystemExit("--role needs --out")
    result = roles[args.role](args.quick)
    if args.role == "otpkit":
        result["otpkit"] = otpkit_source()
    write_result(args.out, result)
    return 0


def otpkit_source() -> str:
    """Which otpkit this process imported: its directory, and the git commit of the
    checkout it lives in (``+dirty`` if ``src/`` has uncommitted changes)."""
    import otpkit  # noqa: PLC0415 - only the otpkit role has it imported

    return tree_source(os.path.dirname(os.path.abspath(otpkit.__file__)))


def tree_source(pkg: str) -> str:
    """``pkg`` (an otpkit package directory) and the git commit of the checkout it lives
    in (``+dirty`` if ``src/`` has uncommitted changes); ``pkg`` alone outside git."""
    root = os.path.dirname(os.path.dirname(pkg))
    try:
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return pkg
    return f"{pkg} @ {head}{'+dirty' if dirty else ''}"


def workdir() -> str:
    return os.environ.get("OTPKIT_BENCH_WORKDIR") or tempfile.mkdtemp(prefix="otpkit-bench-")


def peek_role() -> str | None:
    """The ``--role`` of this invocation, read before the heavy imports happen."""
    argv = sys.argv
    for i, arg in enumerate(argv):
        if arg == "--role" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--role="):
            return arg.split("=", 1)[1]
    return None
