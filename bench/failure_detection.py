"""Failure detection over dist: node death, a silent partition, and the heal.

Every node is an OS process of its own (``--role node``) on a loopback address of its own,
with the default dist settings (tick 1 s, down_after 3 s, redial every 0.5 s). A watcher
actor in each node subscribes with ``dist.monitor_nodes()`` and stamps every
``NodeUp``/``NodeDown`` it gets with CLOCK_MONOTONIC (shared by every process of the host);
this program drives the nodes over a Unix socket each and never sends anything between
nodes itself (no application traffic: its commands are local to each node).

``nodedown_after_sigkill_ms``: three nodes (A, B and a fresh victim per run); SIGKILL the
program that started the victim (otpkit kills the rest of its processes); time from just
before ``kill`` until *both* others have their ``NodeDown`` (the summary shows the first
one too).

``nodedown_after_partition_ms``: nodes A, B, C on 127.0.0.41-.43; a silent cut of one
of them (A, B, C in turn: dist's rules depend on name order) from the other two: an
nftables table (``inet``, hook input, on ``lo``) drops every packet between its address
and theirs (the nodes bind their own source address, so the cut is exact; nothing is
refused, packets vanish). Time from just before ``nft`` is run until all four
``NodeDown`` messages (both ends of both cut links) are in. The summary also says whether the
two nodes on the same side stayed linked while the cut lasted (they should: each cut
must end in maximal, fully connected parts). Needs root and ``nft`` (``apt-get install -y
nftables``); without them the partition figures are skipped with a note.

``mesh_reformed_after_heal_ms``: the cut stays for a while after the last ``NodeDown`` (a
different time in each run, spread over 0.25-5.75 s, 0.25-1.25 s with ``--quick``, so the
heal meets the nodes' redial attempts at every phase), then the table is deleted; time
from just before the delete until the last ``NodeUp`` that makes every node's
``dist.nodes()`` the full mesh again (checked with ``nodes()`` on every node, and again
0.5 s later: the mesh must stay whole). A run whose mesh is not whole within 10 s (2.5 s
with ``--quick``) counts as never re-formed (longer than any other run in the
percentiles; the figure is ``null`` with a ``note`` if that is where the median falls),
and the next run starts from three fresh nodes. As a diagnostic the summary shows the
same cut and heal with two nodes only (no third party, so no overlap prevention: only the
redial at work; not with ``--quick``).

10 runs each (3 with ``--quick``); median and spread in the summary.

    python -m bench.failure_detection [--quick]
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
import time
from typing import Any

from bench import _runner as c
from tests.harness.processes import python_module

RUNS, QUICK_RUNS = 10, 3
HOLD_SPAN, QUICK_HOLD_SPAN = 5.5, 1.0  # the cut is held 0.25 s + a share of this span
PAIR_RUNS = {False: 10, True: 0}  # the two-node cut (a diagnostic, in the summary only)
HEAL_BOUND, QUICK_HEAL_BOUND = 10.0, 2.5  # a mesh not whole by then has not re-formed
GOAL_HEAL_MS = 1000.0
COOKIE = "otpkit-bench-fd-cookie"
HOSTS = {"A": "127.0.0.41", "B": "127.0.0.42", "C": "127.0.0.43"}
VICTIM_HOST = "127.0.0.{}"  # 50 + run
TABLE_PREFIX = "otpkit_bench_fd_"
ROLE = c.peek_role()  # each role imports only its own system


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run (< 30 s)")
    ap.add_argument("--role", choices=("otpkit", "node"), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--name", help=argparse.SUPPRESS)  # role node only
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ctl", help=argparse.SUPPRESS)
    return ap.parse_args()


# --------------------------------------------------------------------------- a node

if ROLE == "node":
    import otpkit
    from otpkit import distribution as dist

    class Watcher(otpkit.Actor):
        """Records ``[kind, node, t_ns]`` for every NodeUp/NodeDown of this node."""

        def init(self) -> None:
            self.events: list[list[Any]] = []
            dist.monitor_nodes(True)

        def handle_info(self, msg: Any) -> None:
            t = time.monotonic_ns()
            if isinstance(msg, dist.NodeUp | dist.NodeDown):
                self.events.append([type(msg).__name__, msg.node, t])

        def handle_call(self, request: Any, from_: Any) -> Any:
            return self.events[request[1] :]


def run_node(name: str, port: int, path: str) -> None:
    """One node; serves this script's commands on the Unix socket ``path`` (JSON lines)
    and writes ``path.json`` once it listens."""
    wd = c.workdir()
    node = otpkit.Node(name, cookie=COOKIE, dist_port=port, log_dir=wd).start()
    try:
        watcher = node.spawn(Watcher)
        # made after the node's processes were forked: none of them holds it
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as lsock:
            lsock.bind(path)
            lsock.listen(1)
            lsock.settimeout(120)
            ready = {"name": name, "main": os.getpid(), "pids": node.os_pids(), "ctl": path}
            with open(path + ".json.tmp", "w") as f:
                json.dump(ready, f)
            os.replace(path + ".json.tmp", path + ".json")
            conn, _ = lsock.accept()
        with conn, conn.makefile("rwb") as stream:
            conn.settimeout(3600)  # the driver's runs are bounded; this only ends a stray
            for raw in stream:
                cmd = json.loads(raw)
                op = cmd["op"]
                if op == "stop":
                    break
                if op == "nodes":
                    result: Any = dist.nodes()
                elif op == "events":
                    result = otpkit.call(watcher, ("events", cmd["since"]))
                elif op == "connect":
                    dist.connect_node(cmd["name"], cmd["host"], cmd["port"])
                    result = "ok"
                elif op == "disconnect":
                    dist.disconnect_node(cmd["name"])
                    result = "ok"
                else:
                    raise ValueError(op)
                stream.write(json.dumps({"ok": result}).encode() + b"\n")
                stream.flush()
    finally:
        node.stop()


# --------------------------------------------------------------------------- the driver's view


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class NodeProc:
    """``--role node`` in a process of its own, and the connection that drives it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.host = name.split("@")[1]
        self.port = free_port(self.host)
        self.info: dict[str, Any] = {}
        self.sock: socket.socket | None = None
        self.stream: Any = None
        self.seen = 0  # events already fetched
        self.events: list[list[Any]] = []
        wd = c.workdir()
        # a path of its own per incarnation (a node restarted under its name gets a new one)
        self.ctl = os.path.join(wd, f"{name}.{os.urandom(4).hex()}.ctl")
        with open(os.path.join(wd, f"{name}.out"), "ab") as log:
            self.proc = subprocess.Popen(
                python_module(
                    __spec__.name,
                    "--role",
                    "node",
                    "--name",
                    name,
                    "--port",
                    str(self.port),
                    "--ctl",
                    self.ctl,
                ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def attach(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.ctl + ".json"):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} ended at start (status {self.proc.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start within {timeout} s")
            time.sleep(0.02)
        with open(self.ctl + ".json") as f:
            self.info = json.load(f)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.ctl)
        self.stream = self.sock.makefile("rwb")

    def cmd(self, **kw: Any) -> Any:
        self.stream.write(json.dumps(kw).encode() + b"\n")
        self.stream.flush()
        line = self.stream.readline()
        if not line:
            raise RuntimeError(f"{self.name} ended (status {self.proc.poll()})")
        return json.loads(line)["ok"]

    def fetch(self) -> list[list[Any]]:
        """Every event so far (kind, node, t_ns)."""
        new = self.cmd(op="events", since=self.seen)
        self.seen += len(new)
        self.events += new
        return self.events

    def connect(self, other: NodeProc) -> None:
        self.cmd(op="connect", name=other.name, host=other.host, port=other.port)

    def pids(self) -> list[int]:
        return [self.proc.pid, *self.info.get("pids", [])]

    def close(self) -> None:
        """Stop it politely if it listens; then kill by pid whatever of it is left."""
        if self.stream is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.stream.write(b'{"op": "stop"}\n')
                self.stream.flush()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        for closable in (self.stream, self.sock):
            if closable is not None:
                with contextlib.suppress(OSError):
                    closable.close()
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def wait_for(what: str, cond: Any, timeout: float, period: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(period)


def full_mesh(nodes: list[NodeProc]) -> bool:
    return all(n.cmd(op="nodes") == sorted(m.name for m in nodes if m is not n) for n in nodes)


def first_event(node: NodeProc, kind: str, peer: str, since: int) -> int | None:
    for k, name, t in node.events:
        if k == kind and name == peer and t >= since:
            return int(t)
    return None


def all_alive_pids_gone(pids: list[int]) -> bool:
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            if stat[stat.rindex(b")") + 2 :][:1] != b"Z":
                return False
    return True


# --------------------------------------------------------------------------- nftables


def _nft(script: str) -> float:
    """Run an nft script; return how long the command took (s)."""
    t0 = time.monotonic()
    subprocess.run(["nft", "-f", "-"], input=script.encode(), check=True, timeout=30)
    return time.monotonic() - t0


def cut_script(table: str, island: str, others: list[str]) -> str:
    rest = ", ".join(others)
    return (
        f"table inet {table} {{\n"
        "  chain input {\n"
        "    type filter hook input priority 0; policy accept;\n"
        f'    iifname "lo" ip saddr {island} ip daddr {{ {rest} }} drop\n'
        f'    iifname "lo" ip saddr {{ {rest} }} ip daddr {island} drop\n'
        "  }\n"
        "}\n"
    )


def _tables() -> list[str]:
    out = subprocess.run(
        ["nft", "list", "tables", "inet"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return [line.split()[-1] for line in out.splitlines() if line.strip()]


def delete_table(table: str) -> None:
    if table in _tables():
        subprocess.run(["nft", "delete", "table", "inet", table], timeout=30, check=False)


def sweep_stale_tables() -> None:
    """Tables of an earlier run of this script whose process is gone (name ends in its pid)."""
    for name in _tables():
        pid = name[len(TABLE_PREFIX) :]
        if name.startswith(TABLE_PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["nft", "delete", "table", "inet", name], timeout=30, check=False)


def partition_support() -> str:
    """Why the partition figures cannot run here, or ''."""
    if os.geteuid() != 0:
        return "not root (nftables needs CAP_NET_ADMIN): run as root"
    if shutil.which("nft") is None:
        return "nft missing: apt-get install -y nftables"
    return ""


# --------------------------------------------------------------------------- the runs


def hold_times(runs: int, span: float) -> list[float]:
    """How long each run holds the cut after the last NodeDown: 0.25 s + a low-discrepancy
    spread over ``span`` (golden-ratio steps), the same in every run of the script."""
    return [0.25 + span * ((0.5 + i * 0.6180339887) % 1.0) for i in range(runs)]


def censored_percentile(values: list[float | None], q: float) -> float | None:
    """Percentile where None is a run that never finished (larger than any value); None
    if the percentile falls on such a run."""
    data = sorted(math.inf if v is None else v for v in values)
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    if math.isinf(data[lo]) or (pos > lo and math.isinf(data[hi])):
        return None
    return float(data[lo] + (data[hi] - data[lo]) * (pos - lo))


def start_nodes(keys: str) -> list[NodeProc]:
    """The nodes ``keys`` of HOSTS (e.g. "ABC"), started at once and fully meshed."""
    nodes: list[NodeProc] = []
    try:
        for key in keys:
            nodes.append(NodeProc(f"fd{key.lower()}@{HOSTS[key]}"))
        for n in nodes:
            n.attach()
        for other in nodes[1:]:
            nodes[0].connect(other)
        wait_for(f"the mesh of {keys}", lambda: full_mesh(nodes), 30, 0.01)
    except BaseException:
        for n in nodes:
            n.close()
        raise
    return nodes


def heal_time(nodes: list[NodeProc], t_heal: int, bound: float) -> tuple[float | None, int]:
    """ms from ``t_heal`` to the last NodeUp that made the mesh whole (it must stay whole
    0.5 s), or None if it is not whole within ``bound`` s; and how often it broke again."""
    deadline = time.monotonic() + bound
    flaps = 0
    while time.monotonic() < deadline:
        if not full_mesh(nodes):
            time.sleep(0.005)
            continue
        t_full = time.monotonic_ns()
        time.sleep(0.5)
        if not full_mesh(nodes):
            flaps += 1
            continue
        ups = []
        for n in nodes:
            n.fetch()
            ups += [t for k, _, t in n.events if k == "NodeUp" and t_heal <= t <= t_full]
        if not ups:
            raise RuntimeError("the mesh is whole after the heal, but no NodeUp came")
        return (max(ups) - t_heal) / 1e6, flaps
    return None, flaps


def partition_runs(
    nodes: list[NodeProc], keys: str, runs: int, span: float, bound: float
) -> dict[str, Any]:
    """Cut each node in turn from the others, then heal. ``nodes`` is replaced in place
    (fresh nodes ``keys``) after a run whose mesh did not re-form."""
    table = f"{TABLE_PREFIX}{os.getpid()}"
    out: dict[str, Any] = {
        "detect_ms": [],
        "detect_first_ms": [],
        "heal_ms": [],
        "island": [],
        "survivors_linked": [],
        "hold_s": [],
        "nft_s": [],
        "flaps": 0,
        "bound_s": bound,
    }
    try:
        for i, hold in enumerate(hold_times(runs, span)):
            island = nodes[i % len(nodes)]  # each in turn: the rules depend on name order
            others = [n for n in nodes if n is not island]
            script = cut_script(table, island.host, [n.host for n in others])
            for n in nodes:
                n.fetch()
            t_cut = time.monotonic_ns()
            out["nft_s"].append(_nft(script))
            pairs = [(n, island) for n in others] + [(island, n) for n in others]

            def downs(pairs: list[tuple[NodeProc, NodeProc]] = pairs, t: int = t_cut) -> Any:
                for n in nodes:
                    n.fetch()
                got = [first_event(p, "NodeDown", q.name, t) for p, q in pairs]
                return got if all(g is not None for g in got) else None

            got = wait_for("NodeDown on both sides of the cut", downs, 30, 0.05)
            out["detect_ms"].append((max(got) - t_cut) / 1e6)
            out["detect_first_ms"].append((min(got) - t_cut) / 1e6)
            out["island"].append(island.name.split("@")[0])
            time.sleep(hold)
            out["hold_s"].append(hold)
            # the nodes on one side of the cut should still be linked (maximal parts)
            out["survivors_linked"].append(full_mesh(others))
            for n in nodes:
                n.fetch()
            t_heal = time.monotonic_ns()
            delete_table(table)
            out["nft_s"].append((time.monotonic_ns() - t_heal) / 1e9)
            took, flaps = heal_time(nodes, t_heal, bound)
            out["heal_ms"].append(took)
            out["flaps"] += flaps
            if took is None and i < runs - 1:  # the next run must begin with a whole mesh
                for n in nodes:
                    n.close()
                nodes[:] = start_nodes(keys)
    finally:
        delete_table(table)
    return out


def sigkill_runs(a: NodeProc, b: NodeProc, runs: int, victims: list[NodeProc]) -> dict[str, Any]:
    both, first, gone = [], [], []
    for i in range(runs):
        v = NodeProc(f"fdvictim{i}@{VICTIM_HOST.format(50 + i)}")
        victims.append(v)
        v.attach()
        v.connect(a)
        wait_for("the victim in the mesh", lambda v=v: full_mesh([a, b, v]), 30, 0.01)
        for n in (a, b):
            n.fetch()
        t0 = time.monotonic_ns()
        os.kill(v.proc.pid, signal.SIGKILL)

        def downs(v: NodeProc = v, t0: int = t0) -> Any:
            for n in (a, b):
                n.fetch()
            got = [first_event(n, "NodeDown", v.name, t0) for n in (a, b)]
            return got if all(g is not None for g in got) else None

        got = wait_for("NodeDown of the killed node", downs, 30, 0.01)
        both.append((max(got) - t0) / 1e6)
        first.append((min(got) - t0) / 1e6)
        v.proc.wait(10)
        t_gone = wait_for(
            "every process of the killed node gone",
            lambda v=v: all_alive_pids_gone(v.info["pids"]) and time.monotonic_ns(),
            30,
            0.005,
        )
        gone.append((t_gone - t0) / 1e6)
        for n in (a, b):  # stop redialling it
            n.cmd(op="disconnect", name=v.name)
    return {"both_ms": both, "first_ms": first, "all_gone_ms": gone}


def run_otpkit(quick: bool) -> dict[str, Any]:
    runs = QUICK_RUNS if quick else RUNS
    span = QUICK_HOLD_SPAN if quick else HOLD_SPAN
    bound = QUICK_HEAL_BOUND if quick else HEAL_BOUND
    nodes: list[NodeProc] = []
    victims: list[NodeProc] = []
    result: dict[str, Any] = {"runs": runs}
    try:
        nodes[:] = start_nodes("ABC")
        result["non_loopback"] = c.check_loopback_only()
        skip = partition_support()
        if skip:
            result["partition_skipped"] = skip
        else:
            sweep_stale_tables()
            result["partition"] = partition_runs(nodes, "ABC", runs, span, bound)
        gone = nodes.pop()  # A and B from here on
        gone.close()
        for n in nodes:  # stop redialling it
            n.cmd(op="disconnect", name=gone.name)
        if not full_mesh(nodes):  # the last cut left them apart
            for n in nodes:
                n.close()
            nodes[:] = start_nodes("AB")
        if not skip and PAIR_RUNS[quick]:
            # the same with two nodes: no third party, so only the redial at work
            result["pair"] = partition_runs(nodes, "AB", PAIR_RUNS[quick], span, bound)
            if not full_mesh(nodes):
                for n in nodes:
                    n.close()
                nodes[:] = start_nodes("AB")
        # the sigkill runs use three nodes too: A, B and each victim
        result["sigkill"] = sigkill_runs(nodes[0], nodes[1], runs, victims)
        result["non_loopback"] += c.check_loopback_only()
        return result
    finally:
        for n in nodes + victims:
            n.close()


# --------------------------------------------------------------------------- driver


def _row(label: str, values: list[float]) -> str:
    if not values:
        return f"  {label:34}" + f"{'-':>9}" * 5
    pcts = (min(values), *(c.percentile(values, q) for q in (10, 50, 90)), max(values))
    return f"  {label:34}" + "".join(f"{v:9.0f}" for v in pcts)


def _heal_text(heal: list[float | None], islands: list[str]) -> str:
    """Each run's heal time (ms), grouped by the node that was cut off."""
    return ", ".join(
        f"{name} cut off: "
        + " ".join(
            "never" if h is None else f"{h:.0f}"
            for h, isl in zip(heal, islands, strict=True)
            if isl == name
        )
        for name in sorted(set(islands))
    )


def _partition_lines(part: dict[str, Any], pair: dict[str, Any] | None) -> list[str]:
    heal: list[float | None] = part["heal_ms"]
    done = [h for h in heal if h is not None]
    heal_p50 = censored_percentile(heal, 50)
    kept = sum(part["survivors_linked"])
    lines = [
        _row("3 nodes: cut -> NodeDown, all 4 ends", part["detect_ms"]),
        _row("  ... on the first end", part["detect_first_ms"]),
        _row(f"  heal -> full mesh ({len(done)} re-formed)", done),
        f"  heal by run, ms ({_heal_text(heal, part['island'])}); 'never': not whole and"
        f" stable {part['bound_s']:g} s after the heal (fresh nodes for the next run)",
        f"  mesh re-formed in {len(done)} of {len(heal)} runs; p50 over all runs (one that"
        " never re-formed counts as longer than any): "
        + ("none (most never re-formed)" if heal_p50 is None else f"{heal_p50:.0f} ms")
        + f"; goal <= {GOAL_HEAL_MS:.0f} ms: "
        + ("met" if heal_p50 is not None and heal_p50 <= GOAL_HEAL_MS else "NOT met"),
        f"  the two nodes on one side of the cut stayed linked while it lasted in {kept} of"
        f" {len(heal)} runs (maximal parts: should be all); a re-formed mesh broke again"
        f" within 0.5 s {part['flaps']} time(s)",
        f"  the cut was held {min(part['hold_s']):.2f}-{max(part['hold_s']):.2f} s after the"
        f" last NodeDown; nft took {1e3 * max(part['nft_s']):.0f} ms at most",
    ]
    if pair is not None:
        pheal: list[float | None] = pair["heal_ms"]
        pdone = [h for h in pheal if h is not None]
        lines += [
            _row("2 nodes (diagnostic): cut -> down", pair["detect_ms"]),
            _row(f"  heal -> linked ({len(pdone)} re-formed)", pdone),
            f"  heal by run, ms ({_heal_text(pheal, pair['island'])})",
        ]
    return lines


def main() -> int:
    args = parse_args()
    if args.role == "node":
        run_node(args.name, args.port, args.ctl)
        return 0
    if args.role:
        return c.role_main(args, {"otpkit": run_otpkit})
    load = c.HostLoad()
    ours = c.run_role(__spec__.name, "otpkit", args.quick)
    kill = ours["sigkill"]
    lines = [
        f"failure detection over dist, {ours['runs']} runs each, ms:",
        f"  {'':34}" + "".join(f"{k:>9}" for k in ("min", "p10", "p50", "p90", "max")),
        _row("SIGKILL -> NodeDown on both peers", kill["both_ms"]),
        _row("  ... on the first peer", kill["first_ms"]),
        _row("  ... every process of it gone", kill["all_gone_ms"]),
    ]
    figures = [
        c.figure("nodedown_after_sigkill_ms_p50", c.percentile(kill["both_ms"], 50), "ms", digits=1)
    ]
    part = ours.get("partition")
    if part is None:
        lines.append(f"  partition and heal: skipped - {ours.get('partition_skipped')}")
    else:
        lines += _partition_lines(part, ours.get("pair"))
        detect = c.figure(
            "nodedown_after_partition_ms_p50", c.percentile(part["detect_ms"], 50), "ms", digits=1
        )
        heal_p50 = censored_percentile(part["heal_ms"], 50)
        if heal_p50 is None:
            heal = {"figure": "mesh_reformed_after_heal_ms_p50", "value": None, "unit": "ms"}
        else:
            heal = c.figure("mesh_reformed_after_heal_ms_p50", heal_p50, "ms", digits=1)
        never = sum(h is None for h in part["heal_ms"])
        if never:
            heal["note"] = (
                f"no full mesh within {part['bound_s']:g} s in {never} of"
                f" {len(part['heal_ms'])} runs"
            )
        figures += [detect, heal]
    lines += [load.line(), f"  otpkit measured: {ours['otpkit']}"]
    c.say(*lines)
    c.emit(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
