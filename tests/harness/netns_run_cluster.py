"""``otpkit run`` nodes in network namespaces, driven as an operator drives pods.

Built on :mod:`tests.harness.netns_cluster` (the hub, dnsmasq, the node namespaces, the
cuts): each node here is a real ``python -m otpkit run tests.harness.netns_run_cluster:root``
process in namespace ``<tag>-n<i>`` as ``myapp@10.10.0.i``, set up as the Kubernetes
example's StatefulSet sets a pod up::

    otpkit run tests.harness.netns_run_cluster:root --name myapp@10.10.0.i
        --discovery dns-a:myapp-headless.default.svc.cluster.local --dist-port 4370
        --expected-size 3 --probe-port 8080 --data-dir <workdir>/data-<i> (kept across
        restarts of the node: its volume) --log-dir <workdir>/logs      (OTPKIT_COOKIE)

The namespace's ``/etc/resolv.conf`` names the hub's dnsmasq (``/etc/netns/<ns>/``,
which ``ip netns exec`` mounts over it), as a pod's names the cluster DNS. The
application (:func:`root`) is one ``Scheduler`` (policy ``majority``) with one job firing
every second; its task (:func:`tick`) appends ``<tick iso> <tick epoch> <node> <os pid>
<start epoch>`` to a file every node shares (namespaces share the file system), which
the tests read (:func:`read_runs`, :func:`ticks_run_twice`, :func:`gaps`, ...). Beside
the scheduler, the root runs an :class:`EventRecorder`: it subscribes to the scheduler's
events (``otpkit.scheduler.subscribe``) and appends each one as a JSON line to
``<workdir>/events<i>.<incarnation>.jsonl`` (and a ``$subscribed`` line each time it
subscribes), so that :func:`account` can check the issue's invariant for any window: no
tick ran twice, every tick missing from the run file is one the scheduler reported missed
or interrupted, and the ticks resume.

The deployment (``RunCluster.everyone``, the nodes whose A records dnsmasq serves) starts
as nodes 1..3 and may grow, shrink or swap nodes (:meth:`RunCluster.add_pods`,
:meth:`RunCluster.remove_pods`; a new index is a new namespace, a new IP and so a new node
name); ``RunCluster.expected_size`` is the ``--expected-size`` of the nodes started from
then on.

The test process talks to a node only as an operator or a kubelet would: signals to the
``otpkit run`` process (whose PID is the one ``ip netns exec`` was started as), the HTTP
probes (``/healthz/ready``) from inside the node's namespace, ``ss`` in the namespace (who
listens on the dist port; which dist links are established), and the task's file.

Clean-up (:func:`run_cluster_in`): every ``otpkit run`` process started is stopped by its
PID (SIGTERM, then SIGKILL), the ``/etc/netns/<ns>`` files made are removed, and the
cluster's ``down`` removes the namespaces, killing what is left inside them (processes
only these nodes started), dnsmasq and the guard route, also when the test failed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import otpkit
from otpkit import scheduler as otpkit_scheduler
from otpkit.scheduler import Job, JobEvent, Scheduler, current_run
from tests.harness.netns_cluster import (
    COOKIE,
    DIST_PORT,
    HEADLESS,
    HUB_IP,
    PREFIX,
    Cluster,
    _die_with_parent,
    _in_ns,
    _kill_if_in_ns,
    _ns_inode,
    cluster_in,
    ip_of,
    name_of,
    sh,
    socket_in,
)
from tests.harness.polling import wait_for
from tests.harness.processes import REPO_ROOT
from tests.harness.scheduler_ops import append_row, plain

TARGET = "tests.harness.netns_run_cluster:root"
TASK = "tests.harness.netns_run_cluster:tick"
TICKS_ENV = "NETNS_RUN_TICKS"  # the shared file the task appends to
SRC_ENV = "NETNS_OTPKIT_SRC"  # the otpkit source tree the nodes run (default: this repo's)
EVENTS_ENV = "NETNS_RUN_EVENTS"  # the file this incarnation's EventRecorder appends to
JOB = "tick"
PROBE_PORT = 8080
EXPECTED_SIZE = 3
#: the example StatefulSet's terminationGracePeriodSeconds: SIGKILL after this long
KUBELET_GRACE = 40.0
ETC_NETNS = Path("/etc/netns")


# --------------------------------------------------------------------------- the application
# (runs inside the nodes, on whichever otpkit source tree they were started with)


def root() -> Any:
    """The nodes' root: one majority Scheduler, one job every second, and (with
    ``$NETNS_RUN_EVENTS``) the recorder of its events."""
    path = os.environ[TICKS_ENV]
    job = Job(JOB, "* * * * * *", TASK, kwargs={"path": path})
    sched = Scheduler([job], policy="majority")
    events = os.environ.get(EVENTS_ENV)
    if not events:
        return sched
    return [sched, otpkit.ChildSpec("events", EventRecorder, (events,))]


class EventRecorder(otpkit.Actor):
    """Appends every scheduler event this node's scheduler process hands it to ``path``,
    one JSON object a line (``JobEvent.to_wire``, times as ISO text, plus ``seen_by``),
    and a ``{"kind": "$subscribed", ...}`` line each time it subscribes. It subscribes as
    soon as the scheduler's process is registered, and again when that process is
    replaced (it watches it), so an incarnation's file holds every event its node's
    scheduler process delivered while the recorder lived."""

    def init(self, path: str, name: str = otpkit_scheduler.DEFAULT_NAME) -> None:
        self.path = path
        self.name = name
        self.watch: Any = None
        otpkit.send_after(0.0, ("$subscribe",))

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, JobEvent):
            row = {k: plain(v) for k, v in msg.to_wire().items()}
            self._write(row)
        elif msg == ("$subscribe",):
            self._subscribe()
        elif isinstance(msg, otpkit.Down) and self.watch is not None and msg.ref == self.watch:
            self.watch = None
            self._write({"kind": "$unsubscribed", "at": time.time(), "reason": str(msg.reason)})
            self._subscribe()

    def _subscribe(self) -> None:
        pid = otpkit.whereis(f"otpkit_sched:{self.name}")
        if pid is not None:
            ref = otpkit.monitor(pid)
            try:
                otpkit_scheduler.subscribe(self.name, timeout=5.0)
            except otpkit.OtpkitError:
                otpkit.demonitor(ref, flush=True)
            else:
                self.watch = ref
                self._write({"kind": "$subscribed", "at": time.time(), "pid": repr(pid)})
                return
        otpkit.send_after(0.05, ("$subscribe",))

    def _write(self, row: dict[str, Any]) -> None:
        append_row(self.path, row)


def tick(path: str) -> None:
    """Append ``<tick iso> <tick epoch> <node> <os pid> <start epoch>`` (one write)."""
    started = time.time()
    run = current_run()
    node = otpkit.self().node
    when = run.tick if run is not None else None
    iso = when.isoformat() if when is not None else "-"
    epoch = f"{when.timestamp():.0f}" if when is not None else "-"
    line = f"{iso} {epoch} {node} {os.getpid()} {started:.3f}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the task's file


@dataclass(frozen=True)
class Run:
    """One line of the task's file: the scheduled tick, who ran it, when it started."""

    tick: str  # ISO time of the scheduled tick ("-" if the task saw no run context)
    node: str
    pid: int
    start: float

    @property
    def short(self) -> str:
        return short(self.node)

    @property
    def label(self) -> int | None:
        """The tick as epoch seconds (None if the task saw no run context)."""
        return label_of(self.tick)

    @property
    def lateness(self) -> float | None:
        """Seconds from the scheduled tick to the task's start."""
        label = self.label
        return None if label is None else self.start - label

    def __str__(self) -> str:
        return f"{self.tick} on {self.short} (pid {self.pid}) at {clock(self.start)}"


def label_of(iso: Any) -> int | None:
    """An ISO time (a tick) as whole epoch seconds, or None."""
    if not isinstance(iso, str) or iso in ("", "-"):
        return None
    try:
        return round(datetime.fromisoformat(iso).timestamp())
    except ValueError:
        return None


def read_runs(path: Path) -> list[Run]:
    """Every run in the file, by start time (a line being written is skipped)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    rows = []
    for raw in text.splitlines():
        f = raw.split()
        if len(f) == 5:
            with contextlib.suppress(ValueError):
                rows.append(Run(f[0], f[2], int(f[3]), float(f[4])))
    return sorted(rows, key=lambda r: r.start)


def short(node: str) -> str:
    """``myapp@10.10.0.2`` -> ``n2``."""
    return f"n{node.rsplit('.', 1)[-1]}"


def index_of(node: str) -> int:
    return int(node.rsplit(".", 1)[-1])


def clock(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")[:-3]


def ticks_run_twice(runs: Iterable[Run]) -> dict[str, list[str]]:
    """``{tick: [node, ...]}`` for every scheduled tick that ran more than once."""
    by_tick: dict[str, list[str]] = {}
    for r in runs:
        by_tick.setdefault(r.tick, []).append(r.short)
    return {t: nodes for t, nodes in by_tick.items() if len(nodes) > 1}


def shared_seconds(runs: Iterable[Run]) -> dict[str, list[str]]:
    """Wall-clock seconds in which runs of two or more nodes started (two holders)."""
    by_second: dict[int, set[str]] = {}
    for r in runs:
        by_second.setdefault(math.floor(r.start), set()).add(r.short)
    return {clock(s): sorted(n) for s, n in sorted(by_second.items()) if len(n) > 1}


def holder_changes(runs: list[Run]) -> list[tuple[Run, Run]]:
    """Consecutive runs (by start) on different nodes: where the ticks moved."""
    return [(a, b) for a, b in itertools.pairwise(runs) if a.node != b.node]


@dataclass(frozen=True)
class Gap:
    seconds: float
    after: Run | None  # None: the window's start
    before: Run | None  # None: the window's end (still no run then)

    def __str__(self) -> str:
        a = str(self.after) if self.after else "window start"
        b = str(self.before) if self.before else "window end"
        return f"{self.seconds:.2f} s between [{a}] and [{b}]"


def gaps(runs: list[Run], since: float, until: float) -> list[Gap]:
    """Gaps between consecutive run starts over [since, until]: from the last run before
    ``since`` (or ``since``) to the first in the window, between those in it, and from the
    last to ``until``. The largest is how long no tick started."""
    before = [r for r in runs if r.start < since]
    inside = [r for r in runs if since <= r.start <= until]
    points: list[tuple[float, Run | None]] = [
        (before[-1].start, before[-1]) if before else (since, None),
        *((r.start, r) for r in inside),
    ]
    out = [Gap(b[0] - a[0], a[1], b[1]) for a, b in itertools.pairwise(points)]
    out.append(Gap(until - points[-1][0], points[-1][1], None))
    return out


def largest_gap(runs: list[Run], since: float, until: float) -> Gap:
    return max(gaps(runs, since, until), key=lambda g: g.seconds)


def steady_holder(runs: list[Run], since: float, count: int = 2) -> str | None:
    """The node that ran the last ``count`` runs started after ``since``, if one did."""
    recent = [r for r in runs if r.start > since][-count:]
    nodes = {r.node for r in recent}
    return nodes.pop() if len(recent) == count and len(nodes) == 1 else None


def label_gaps(runs: Iterable[Run], since: float, until: float) -> list[tuple[int, int]]:
    """Consecutive tick labels ``(a, b)`` (sorted, each once) over the window: from the
    last label before ``since`` to the first one after ``until`` (those included)."""
    labels = sorted({r.label for r in runs if r.label is not None})
    lo = max((x for x in labels if x < since), default=None)
    hi = min((x for x in labels if x > until), default=None)
    inside = [x for x in labels if (lo is None or x >= lo) and (hi is None or x <= hi)]
    return list(itertools.pairwise(inside))


# --------------------------------------------------------------------------- the events


def read_events(workdir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the job's events any node's recorder wrote, once each by ``id``, by time; the
    recorders' ``$subscribed``/``$unsubscribed`` lines, each with its ``file``)."""
    seen: dict[str, dict[str, Any]] = {}
    marks: list[dict[str, Any]] = []
    for path in sorted(workdir.glob("events*.jsonl")):
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        for raw in text.splitlines():
            try:
                ev = json.loads(raw)
            except ValueError:
                continue  # a line being written
            if not isinstance(ev, dict):
                continue
            if str(ev.get("kind", "")).startswith("$"):
                marks.append({**ev, "file": path.name})
            elif ev.get("job") == JOB and ev.get("id"):
                seen.setdefault(ev["id"], ev)
    return sorted(seen.values(), key=lambda e: e.get("at") or 0.0), marks


@dataclass
class TickFate:
    """Everything the run file and the events say about one tick (``label``)."""

    label: int
    runs: list[Run] = field(default_factory=list)
    missed: int = 0
    interrupted: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)  # run_failed, run_timed_out

    def problem(self) -> str | None:
        if len(self.runs) > 1:
            return f"ran {len(self.runs)} times"
        if self.runs and self.missed:
            return "ran, and was reported missed"
        if self.failed:
            return "; ".join(self.failed)
        if not self.runs and not (self.missed or self.interrupted or self.skipped):
            return "missing from the run file, and reported neither missed nor interrupted"
        return None

    @property
    def final(self) -> bool:
        """A problem that waiting cannot mend (a tick run twice, ...)."""
        return len(self.runs) > 1 or bool(self.runs and self.missed) or bool(self.failed)

    def __str__(self) -> str:
        ran = ", ".join(str(r) for r in self.runs) or "-"
        return (
            f"{clock(self.label)} ran: {ran}; missed {self.missed}, interrupted "
            f"{self.interrupted}, skipped {self.skipped}"
        )


@dataclass
class Tally:
    """The fate of every tick labelled in ``[since, until]`` (see :func:`tally`)."""

    since: float
    until: float
    fates: dict[int, TickFate]
    twice: dict[str, list[str]]  # over the whole run file: {tick: [node, ...]}
    resumed: Run | None  # the first run labelled after ``until``
    marks: list[dict[str, Any]]

    @property
    def bad(self) -> list[TickFate]:
        return [f for _, f in sorted(self.fates.items()) if f.problem()]

    @property
    def ran(self) -> int:
        return sum(1 for f in self.fates.values() if f.runs)

    @property
    def missed(self) -> int:
        """Ticks of the window missing from the run file (reported or not)."""
        return sum(1 for f in self.fates.values() if not f.runs)

    @property
    def interrupted(self) -> int:
        return sum(1 for f in self.fates.values() if f.interrupted)

    @property
    def final(self) -> bool:
        return bool(self.twice) or any(f.final for f in self.fates.values())

    @property
    def problems(self) -> list[str]:
        out = []
        if self.twice:
            out.append(
                f"{len(self.twice)} ticks ran more than once: {dict(list(self.twice.items())[:10])}"
            )
        bad = self.bad
        if bad:
            kinds: dict[str, int] = {}
            for f in bad:
                kinds[str(f.problem())] = kinds.get(str(f.problem()), 0) + 1
            out.append(
                f"{len(bad)} of the {len(self.fates)} ticks from {clock(self.since)} to "
                f"{clock(self.until)} are not accounted for ({kinds}):\n"
                + "\n".join(f"  {f}: {f.problem()}" for f in bad[:15])
                + (f"\n  ... and {len(bad) - 15} more" if len(bad) > 15 else "")
                + f"\n  recorders: {self.subscriptions()}"
            )
        if self.resumed is None:
            out.append(f"no tick labelled after {clock(self.until)} ran: the ticks did not resume")
        return out

    def subscriptions(self) -> list[str]:
        return [f"{m['file']} {m['kind']} at {clock(float(m.get('at') or 0))}" for m in self.marks]

    def summary(self) -> str:
        gone = [f for f in self.fates.values() if not f.runs]
        told = sum(1 for f in gone if f.missed or f.skipped)
        cut = sum(1 for f in gone if f.interrupted and not (f.missed or f.skipped))
        return (
            f"{len(self.fates)} ticks from {clock(self.since)} to {clock(self.until)}: "
            f"{self.ran} ran, {len(gone)} did not ({told} reported missed, {cut} interrupted, "
            f"{len(gone) - told - cut} unreported); resumed with "
            f"{self.resumed if self.resumed else 'NOTHING'}"
        )


def tally(runs: list[Run], workdir: Path, since: float, until: float) -> Tally:
    """The fate of each tick labelled in ``[since, until]`` (the job fires every second)
    from the run file (``runs``) and every recorder's events in ``workdir``."""
    fates = {t: TickFate(t) for t in range(math.ceil(since), math.floor(until) + 1)}
    for r in runs:
        label = r.label
        if label is not None and label in fates:
            fates[label].runs.append(r)
    events, marks = read_events(workdir)
    for ev in events:
        kind = ev.get("kind")
        if kind == "run_missed":
            extra = ev.get("extra") or {}
            first = label_of(extra.get("first")) or label_of(ev.get("tick"))
            last = label_of(extra.get("last")) or first
            if first is None or last is None:
                continue
            for t in range(max(first, min(fates, default=first)), last + 1):
                if t in fates:
                    fates[t].missed += 1
            continue
        fate = fates.get(label_of(ev.get("tick")))  # type: ignore[arg-type]
        if fate is None:
            continue
        if kind == "run_interrupted":
            fate.interrupted += 1
        elif kind == "run_skipped":
            fate.skipped += 1
        elif kind in ("run_failed", "run_timed_out"):
            fate.failed.append(f"{kind}: {ev.get('error')}")
    resumed = min(
        (r for r in runs if r.label is not None and r.label > until),
        key=lambda r: r.label or 0,
        default=None,
    )
    return Tally(since, until, fates, ticks_run_twice(runs), resumed, marks)


ACCOUNT_SETTLE = 30.0  # ticks after ``until`` run, and the reports of earlier ones arrive


def settle_tally(
    rc: RunCluster, since: float, until: float, settle: float = ACCOUNT_SETTLE
) -> Tally:
    """:func:`tally` once every tick of the window is accounted for and a tick after
    ``until`` ran; at the latest after ``settle`` seconds (or at once when a problem
    appeared that waiting cannot mend: a tick run twice)."""
    deadline = time.monotonic() + settle
    while True:
        t = tally(rc.runs(), rc.workdir, since, until)
        if not t.problems or t.final or time.monotonic() >= deadline:
            return t
        time.sleep(0.5)


def account(
    rc: RunCluster, since: float, until: float, settle: float = ACCOUNT_SETTLE
) -> list[str]:
    """The issue's invariant over the ticks labelled in ``[since, until]`` (wall clock):
    no tick ran twice (in the whole run file); every tick missing from the run file is
    one the scheduler reported missed or interrupted (``run_missed``'s span,
    ``run_interrupted``); none ran and was reported missed, none failed; and the cluster
    resumes: a tick labelled after ``until`` runs. Waits up to ``settle`` seconds for
    late reports and the resumption. Returns the problems (empty: all accounted for)."""
    return settle_tally(rc, since, until, settle).problems


# --------------------------------------------------------------------------- the nodes


@dataclass
class Incarnation:
    """One ``otpkit run`` process of node ``index``."""

    index: int
    number: int
    proc: subprocess.Popen[bytes]
    out: Path
    started: float
    stopped: float | None = None
    how: str = ""  # how it ended: "exit 0", "exit 1", "SIGKILL (kubelet)", ...
    expected: int = EXPECTED_SIZE  # its --expected-size
    events: Path | None = None  # its EventRecorder's file

    @property
    def running(self) -> bool:
        return self.proc.poll() is None


@dataclass
class RunCluster:
    """``otpkit run`` nodes in the namespaces of ``net``: at first the ``size`` (three)
    nodes 1..size; the deployment (``pods``) may change (scaling, a node replaced)."""

    net: Cluster
    source: Path
    size: int = EXPECTED_SIZE
    nodes: dict[int, Incarnation] = field(default_factory=dict)  # the current ones
    history: list[Incarnation] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # processes outliving an otpkit run
    resolv: list[Path] = field(default_factory=list)  # the /etc/netns/<ns> folders made
    made_etc_netns: bool = False
    pods: list[int] = field(default_factory=list)  # the deployment (default: 1..size)
    expected_size: int = EXPECTED_SIZE  # --expected-size of the nodes started from now on
    frozen: dict[int, list[int]] = field(default_factory=dict)  # SIGSTOPped os pids

    def __post_init__(self) -> None:
        if not self.pods:
            self.pods = list(range(1, self.size + 1))

    @property
    def workdir(self) -> Path:
        return self.net.workdir

    @property
    def ticks(self) -> Path:
        return self.workdir / "ticks"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def everyone(self) -> list[int]:
        """The deployment: the nodes meant to run now (dnsmasq serves their A records)."""
        return sorted(self.pods)

    @property
    def known(self) -> list[int]:
        """Every node of the deployment or started at some point."""
        return sorted(set(self.pods) | {inc.index for inc in self.history})

    def fresh(self, count: int = 1) -> list[int]:
        """``count`` node indices never used yet (new IPs, so new node names)."""
        top = max([*self.net.namespaces, *self.known], default=0)
        return list(range(top + 1, top + 1 + count))

    def ns(self, i: int) -> str:
        return self.net.namespaces[i]

    def data_dir(self, i: int) -> Path:
        return self.workdir / f"data-{i}"

    def runs(self) -> list[Run]:
        return read_runs(self.ticks)

    # ------------------------------------------------------------ set-up

    def configure_dns(self) -> None:
        """Each node namespace's resolv.conf names the hub's dnsmasq (as a pod's names
        the cluster DNS); ``ip netns exec`` mounts ``/etc/netns/<ns>/resolv.conf``."""
        self.made_etc_netns = self.made_etc_netns or not ETC_NETNS.exists()
        for i in self.everyone:
            self._resolv_conf(i)

    def _resolv_conf(self, i: int) -> None:
        folder = ETC_NETNS / self.ns(i)
        if folder in self.resolv:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.resolv.append(folder)
        (folder / "resolv.conf").write_text(f"nameserver {HUB_IP}\noptions timeout:1\n")

    def add_pods(self, indices: Iterable[int]) -> None:
        """Nodes ``indices`` join the deployment: a namespace each (made once, with its
        resolv.conf), and dnsmasq serves their A records too. None is started."""
        for i in indices:
            self.net.add_host(i)
            self._resolv_conf(i)
            if i not in self.pods:
                self.pods.append(i)
        self.net.set_records(self.everyone)

    def remove_pods(self, indices: Iterable[int]) -> None:
        """Nodes ``indices`` leave the deployment: their A records go (stop them first,
        as a StatefulSet does)."""
        gone = set(indices)
        self.pods = [i for i in self.pods if i not in gone]
        self.net.set_records(self.everyone)

    def env(self, i: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTPKIT_") and k != "POD_IP"}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(self.source), str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        env["OTPKIT_COOKIE"] = COOKIE
        env[TICKS_ENV] = str(self.ticks)
        return env

    # ------------------------------------------------------------ a pod's life

    def events_file(self, i: int, number: int) -> Path:
        """The file incarnation ``number`` of node ``i`` records its events in."""
        return self.workdir / f"events{i}.{number}.jsonl"

    def start(self, i: int, expected_size: int | None = None) -> Incarnation:
        """Start node ``i`` (the same name and data dir as any earlier incarnation) with
        ``--expected-size`` ``expected_size`` (default: ``self.expected_size``)."""
        old = self.nodes.get(i)
        assert old is None or not old.running, f"node {i} still runs (pid {old.proc.pid})"
        self.net.add_host(i)
        self._resolv_conf(i)
        self.log_dir.mkdir(exist_ok=True)
        self.data_dir(i).mkdir(exist_ok=True)
        number = sum(1 for inc in self.history if inc.index == i)
        out = self.workdir / f"node{i}.{number}.out"
        expected = self.expected_size if expected_size is None else expected_size
        argv = [
            *("ip", "netns", "exec", self.ns(i), sys.executable, "-m", "otpkit", "run", TARGET),
            *("--name", name_of(i), "--discovery", f"dns-a:{HEADLESS}"),
            *("--dist-port", str(DIST_PORT), "--expected-size", str(expected)),
            *("--probe-port", str(PROBE_PORT), "--data-dir", str(self.data_dir(i))),
            *("--log-dir", str(self.log_dir)),
        ]
        env = self.env(i)
        events = self.events_file(i, number)
        env[EVENTS_ENV] = str(events)
        with open(out, "wb") as f:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only a prctl call
            )
        inc = Incarnation(i, number, proc, out, time.time(), expected=expected, events=events)
        self.nodes[i] = inc
        self.history.append(inc)
        return inc

    def term(self, i: int) -> None:
        """SIGTERM node ``i``'s ``otpkit run`` (a pod deleted)."""
        self.nodes[i].proc.send_signal(signal.SIGTERM)

    def exited(self, i: int) -> bool:
        """True once node ``i``'s ``otpkit run`` ended; then whatever of the pod outlived
        it is ended too, as a container runtime does, and recorded in ``leftovers``."""
        inc = self.nodes[i]
        if inc.running:
            return False
        if inc.stopped is None:
            inc.stopped = time.time()
            code = inc.proc.returncode
            inc.how = inc.how or (f"exit {code}" if code >= 0 else f"signal {-code}")
            self._reap_pod(i)
        return True

    def wait_exit(self, i: int, grace: float = KUBELET_GRACE) -> str:
        """Wait for node ``i`` to end; SIGKILL it after ``grace`` (the kubelet's rule).
        Returns how it ended."""
        try:
            self.nodes[i].proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kubelet_kill(i)
        self.exited(i)
        return self.nodes[i].how

    def kubelet_kill(self, i: int) -> None:
        inc = self.nodes[i]
        if inc.running:
            inc.how = f"SIGKILL after {KUBELET_GRACE:.0f} s (kubelet)"
            inc.proc.kill()
            inc.proc.wait(10)

    def pod_pids(self, i: int) -> list[int]:
        """Every process in node ``i``'s namespace (``otpkit run`` and all it started:
        the namespace holds nothing else)."""
        ns = self.ns(i)
        inode = _ns_inode(ns)
        out = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        return sorted(int(p) for p in out if p.isdigit() and _in_ns(int(p), inode))

    def kill_pod(self, i: int) -> None:
        """SIGKILL every process of node ``i`` at once (a node lost with its pod), and
        wait until its ``otpkit run`` ended."""
        inc = self.nodes[i]
        inc.how = inc.how or "SIGKILL of every process"
        inode = _ns_inode(self.ns(i))
        for _ in range(5):  # a process forked meanwhile is found by the next pass
            pids = self.pod_pids(i)
            if not pids:
                break
            _kill_if_in_ns(pids, inode)
        inc.proc.wait(10)
        self.exited(i)

    def freeze(self, i: int) -> list[int]:
        """SIGSTOP every process of node ``i`` (``otpkit run`` and its children: a node
        whose VM or cgroup is frozen). Returns the pids stopped."""
        stopped: list[int] = self.frozen.setdefault(i, [])
        for _ in range(5):  # until a pass finds no process left running
            fresh = [p for p in self.pod_pids(i) if p not in stopped]
            if not fresh:
                break
            for pid in fresh:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        return list(stopped)

    def thaw(self, i: int) -> None:
        """SIGCONT every process :meth:`freeze` stopped (those still in the namespace)."""
        inode = _ns_inode(self.ns(i))
        for pid in self.frozen.pop(i, []):
            if _in_ns(pid, inode):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def _reap_pod(self, i: int) -> None:
        ns = self.ns(i)
        inode = _ns_inode(ns)

        def left() -> list[int]:
            out = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            return [int(p) for p in out if p.isdigit() and _in_ns(int(p), inode)]

        with contextlib.suppress(AssertionError):
            wait_for(lambda: not left(), 3.0, f"node {i}'s processes end", 0.05)
        rest = left()
        if rest:
            self.leftovers.append(f"n{i}: {len(rest)} processes outlived otpkit run: {rest}")
            _kill_if_in_ns(rest, inode)
            wait_for(lambda: not left(), 10.0, f"node {i}'s leftovers die", 0.05)

    # ------------------------------------------------------------ what an operator sees

    def probe(
        self, i: int, path: str = "/healthz/ready", host: str = "127.0.0.1"
    ) -> tuple[int, str]:
        """(status, body) of ``GET path`` on node ``i``'s probe port at ``host``, asked
        from inside its namespace; (0, why) when nothing answered."""
        try:
            sock = socket_in(self.ns(i), socket.SOCK_STREAM)
        except OSError as exc:
            return 0, str(exc)
        try:
            sock.settimeout(3.0)
            sock.connect((host, PROBE_PORT))
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        except OSError as exc:
            return 0, str(exc)
        finally:
            sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        fields = head.split()
        status = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
        return status, body.decode(errors="replace").strip()

    def live(self, i: int) -> bool:
        """Node ``i`` answers ``/healthz/live`` 200 (its kernel answers)."""
        return self.probe(i, "/healthz/live")[0] == 200

    def quorum(self, i: int, timeout: float = 30.0) -> dict[str, Any] | None:
        """Node ``i``'s quorum status as the operator sees it: ``otpkit quorum --connect
        <its dist address> --json`` run in its namespace (a hidden node of the shell);
        None if the command failed."""
        argv = [
            *("ip", "netns", "exec", self.ns(i), sys.executable, "-m", "otpkit", "quorum"),
            *("--connect", f"{ip_of(i)}:{DIST_PORT}", "--json", "--timeout", "5"),
        ]
        try:
            res = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env=self.env(i),
                cwd=self.workdir,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None
        if res.returncode != 0:
            return None
        try:
            value = json.loads(res.stdout)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def configured(
        self, indices: Iterable[int], expected: int, asked: Iterable[int] | None = None
    ) -> str | None:
        """None if each node of ``asked`` (default: ``indices``) says the quorum's members
        are exactly the nodes ``indices`` and its expected size is ``expected``; else what
        the first one that disagrees said."""
        indices = list(indices)
        want = sorted(name_of(i) for i in indices)
        for i in sorted(indices if asked is None else asked):
            status = self.quorum(i)
            if status is None:
                return f"n{i}: no answer to `otpkit quorum`"
            members = sorted(status.get("members") or [])
            if members != want or status.get("expected") != expected:
                return (
                    f"n{i}: v{status.get('version')} members {[short(m) for m in members]}, "
                    f"expected {status.get('expected')} (its setting {status.get('setting')})"
                )
        return None

    def wait_ready(self, indices: Iterable[int], timeout: float) -> dict[int, float]:
        """Wait until each node answers ``/healthz/ready`` 200; fail at once if one ends.
        Returns when each became ready (wall clock)."""
        waiting = set(indices)
        ready: dict[int, float] = {}

        def all_ready() -> bool:
            for i in sorted(waiting):
                if self.exited(i):
                    raise AssertionError(
                        f"node {i} ended ({self.nodes[i].how}) before it was ready{self.tail(i)}"
                    )
                if self.probe(i)[0] == 200:
                    ready[i] = time.time()
                    waiting.discard(i)
            return not waiting

        wait_for(
            all_ready,
            timeout,
            f"nodes {sorted(waiting)} answer /healthz/ready 200",
            0.1,
            lambda: f"{ {i: self.probe(i) for i in waiting} }\n{self.diagnostics()}",
        )
        return ready

    def dist_pid(self, i: int) -> int:
        """The OS pid of node ``i``'s dist process: the one listening on the dist port
        in its namespace (``ss -ltnp``), checked to be in that namespace."""
        out = sh(
            "ip", "netns", "exec", self.ns(i), "ss", "-Htlnp", "sport", "=", f":{DIST_PORT}"
        ).stdout
        pids = sorted({int(p) for p in re.findall(r"pid=(\d+)", out)})
        assert len(pids) == 1, f"node {i}: not one process listens on {DIST_PORT}: {out!r}"
        assert _in_ns(pids[0], _ns_inode(self.ns(i))), f"{pids[0]} is not in {self.ns(i)}"
        return pids[0]

    def links(self, i: int) -> set[int]:
        """The nodes node ``i`` has an established dist TCP link with (``ss`` in its
        namespace): connections of its dist process only (an active singleton's
        witnesses also reach the peers' dist ports, from another process)."""
        try:
            dist = self.dist_pid(i)
        except AssertionError:
            return set()  # no dist listens (it died, or the node is not up yet)
        out = sh("ip", "netns", "exec", self.ns(i), "ss", "-Htnp", "state", "established")
        peers = set()
        for line in out.stdout.splitlines():
            if f"pid={dist}," not in line:
                continue
            fields = [f for f in line.split() if not f.startswith("users:")]
            ends = [f.rpartition(":") for f in fields[-2:]]  # local, peer address
            if len(ends) != 2 or str(DIST_PORT) not in (ends[0][2], ends[1][2]):
                continue
            peer_ip = ends[1][0]
            if peer_ip.startswith("10.10.0.") and int(peer_ip.rsplit(".", 1)[1]) in self.known:
                peers.add(int(peer_ip.rsplit(".", 1)[1]))
        return peers

    def meshed(self, indices: Iterable[int] | None = None) -> bool:
        """Every node of ``indices`` (running) has a dist link to every other one."""
        group = set(self.everyone if indices is None else indices)
        return all(self.nodes[i].running and self.links(i) >= group - {i} for i in sorted(group))

    def wait_ticking(self, since: float, timeout: float, count: int = 2) -> str:
        """Wait until one node ran the last ``count`` runs started after ``since``;
        return its name."""
        name = wait_for(
            lambda: steady_holder(self.runs(), since, count),
            timeout,
            f"{count} runs in a row on one node after {clock(since)}",
            0.1,
            self.diagnostics,
        )
        return str(name)

    # ------------------------------------------------------------ diagnostics

    def log(self, i: int) -> str:
        try:
            return (self.log_dir / f"{name_of(i)}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, i: int, lines: int = 25) -> str:
        rows = [
            r
            for r in self.log(i).splitlines()
            if " ERROR " in r
            or " WARNING " in r
            or "quorum" in r
            or "singleton" in r.lower()
            or "scheduler" in r
        ]
        outs = [inc.out for inc in self.history if inc.index == i][-2:]
        text = "".join(f"\n--- {p.name} ---\n{p.read_text(errors='replace')[-1500:]}" for p in outs)
        return (
            f"\n--- n{i} log (quorum/singleton/scheduler/warnings, tail) ---\n"
            + "\n".join(rows[-lines:])
            + text
        )

    def diagnostics(self) -> str:
        runs = self.runs()
        lines = [
            f"last runs: {[str(r) for r in runs[-5:]]}",
            f"leftovers: {self.leftovers}",
            f"deployment: {self.everyone}; frozen: {sorted(self.frozen)}",
        ]
        shown = sorted(set(self.everyone) | {i for i, inc in self.nodes.items() if inc.running})
        for i in shown:
            inc = self.nodes.get(i)
            state = "-" if inc is None else ("running" if inc.running else inc.how)
            if i in self.frozen:
                lines.append(f"n{i} [{state}, frozen]")
                continue
            links: Any = "-"
            if inc is not None and inc.running:
                try:
                    links = sorted(self.links(i))
                except subprocess.SubprocessError as exc:
                    links = f"? {exc}"
            lines.append(f"n{i} [{state}] ready={self.probe(i)} links={links}")
        lines.extend(self.tail(i) for i in shown)
        return "\n".join(lines)

    # ------------------------------------------------------------ teardown

    def close(self, grace: float = 5.0) -> None:
        """Stop every ``otpkit run`` started (by its PID): SIGTERM, SIGKILL after
        ``grace``; remove the resolv.conf files made. Namespaces go with ``net.down``."""
        for i in list(self.frozen):
            self.thaw(i)
        running = [inc for inc in self.history if inc.running]
        for inc in running:
            with contextlib.suppress(ProcessLookupError):
                inc.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for inc in running:
            try:
                inc.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                inc.proc.kill()
                inc.proc.wait(10)
        for folder in self.resolv:
            shutil.rmtree(folder, ignore_errors=True)
        self.resolv.clear()
        if self.made_etc_netns:
            with contextlib.suppress(OSError):
                ETC_NETNS.rmdir()  # only if empty


def sweep_resolv_confs() -> list[str]:
    """Remove ``/etc/netns/otpk-*`` folders whose namespace is gone (a crashed run's)."""
    removed = []
    if ETC_NETNS.is_dir():
        for folder in ETC_NETNS.glob(f"{PREFIX}*"):
            if not Path("/run/netns", folder.name).exists():
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(str(folder))
    return removed


def default_source() -> Path:
    """The otpkit source tree the nodes run: ``$NETNS_OTPKIT_SRC``, else this repo's."""
    return Path(os.environ.get(SRC_ENV) or REPO_ROOT / "src")


@contextlib.contextmanager
def run_cluster_in(
    workdir: Path, source: Path | None = None, size: int = EXPECTED_SIZE
) -> Iterator[RunCluster]:
    """A hub, dnsmasq serving the A records of all ``size`` nodes, ``size`` node
    namespaces whose resolver is that dnsmasq; no node started. Everything is removed
    afterwards, whatever happens."""
    sweep_resolv_confs()
    with cluster_in(workdir, hosts=size) as net:
        cluster = RunCluster(net, source or default_source(), size)
        try:
            cluster.configure_dns()
            net.set_records(cluster.everyone)
            yield cluster
        finally:
            cluster.close()


def pause_until(deadline: float) -> None:
    """Let time pass until the wall-clock ``deadline``: a planned duration of a scenario
    (a cut that lasts 6 s), never a wait for a condition."""
    while (left := deadline - time.time()) > 0:
        time.sleep(min(left, 0.5))
