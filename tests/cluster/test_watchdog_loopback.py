"""The watchdog that speaks, on three ``otpkit run`` nodes of the Kubernetes example's
application (a majority Scheduler), with the example's settings (expected size 3,
probes), on loopback.

A wedge with a majority connected: the quorum actors of the two nodes other than the
holder's are frozen (SIGSTOP), so every node stays connected but no lease can be
granted. The holder's node loses its lease, and then says so: one ERROR line per lease
term naming the nodes its grant rounds wait for, the shell's ``nodes`` shows it, and a
``no_holder`` job event reaches the ``events`` stream; its readiness stays 200 (it
reaches a majority). Thawed, a holder is back and an INFO line says after how long.

Outside a majority: the other two nodes frozen whole. The lone node says nothing about
the singleton (a minority side is meant to have no holder), and its readiness probe
answers 503 with the reason once two terms have passed, 200 again once the two are back.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.polling import wait_until
from tests.harness.processes import REPO_ROOT

pytestmark = pytest.mark.cluster

EXAMPLE = REPO_ROOT / "examples" / "kubernetes"
COOKIE = "watchdog-cookie-0123456789"
HOSTS = [f"127.0.83.{i}" for i in (1, 2, 3)]
TERM = 3.5  # the lease term with its margin (QuorumConfig's defaults)
BOUND = 60.0  # a wide bound, for a loaded 2-core machine
SCHED = "otpkit_scheduler"
WATCHDOG = "singleton 'otpkit_scheduler' has no active holder for"
EVENTS = [sys.executable, "-m", "otpkit", "events", "--json", "--for", "40"]


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def probe(port: int, host: str) -> tuple[int, str]:
    """(status, body) of GET /healthz/ready on the node's own address (a node on a
    loopback address binds only that one); (0, why) if nothing answered."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz/ready", timeout=5) as r:
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        return 0, str(exc)


def shell_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTPKIT_")}
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    env["HOME"] = str(tmp_path)
    env["OTPKIT_COOKIE"] = COOKIE
    return env


class Pod:
    """One ``otpkit run myapp.tree:root`` node, as the example's StatefulSet starts it."""

    def __init__(self, tmp_path: Path, i: int, peers: str, dist: list[int]) -> None:
        self.tmp_path = tmp_path
        self.host = HOSTS[i]
        self.name = f"myapp@{self.host}"
        self.dist = dist[i]
        self.probe = free_port("0.0.0.0")
        self.log_path = tmp_path / "log" / f"{self.name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTPKIT_")}
        env.pop("POD_IP", None)
        env.update(
            PYTHONPATH=f"{EXAMPLE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            OTPKIT_NODE_NAME=self.name,
            OTPKIT_DIST_PORT=str(self.dist),
            OTPKIT_DISCOVERY=f"static:{peers}",
            OTPKIT_EXPECTED_SIZE="3",
            OTPKIT_PROBE_PORT=str(self.probe),
            OTPKIT_COOKIE=COOKIE,
            OTPKIT_DATA_DIR=str(tmp_path / f"data-{i}"),
            OTPKIT_LOG_DIR=str(tmp_path / "log"),
            MYAPP_SCHEDULE="0 3 1 1 *",  # no tick during the test: the holder is the point
        )
        with open(tmp_path / f"pod-{i}.out", "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "otpkit", "run", "myapp.tree:root"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.frozen: list[int] = []

    @property
    def target(self) -> str:
        return f"{self.host}:{self.dist}"

    def shell(self, *words: str) -> str:
        """A one-shot shell command against this node; its output (status 0 asserted)."""
        res = subprocess.run(
            [sys.executable, "-m", "otpkit", *words, "--connect", self.target],
            capture_output=True,
            text=True,
            timeout=60,
            env=shell_env(self.tmp_path),
            check=False,
        )
        assert res.returncode == 0, (words, res.stdout, res.stderr)
        return res.stdout

    def nodes(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self.shell("nodes", "--json"))
        return answer

    def log_lines(self, text: str, level: str) -> list[str]:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        return [line for line in lines if f" {level} " in line and text in line]

    def os_pid_of(self, child: str) -> int:
        """The OS pid of the kernel's child ``child`` (``kernel`` for the kernel), as the
        shell's tree states it."""
        tree = json.loads(self.shell("tree", "--json"))
        if child == "kernel":
            text = tree["pid"]
        else:
            text = next(c["pid"] for c in tree["children"] if c["id"] == child)
        found = re.fullmatch(rf"<{re.escape(self.name)}\.(\d+)>", text)
        assert found, text
        return int(found[1])

    def freeze(self, ospids: list[int]) -> None:
        for pid in ospids:
            os.kill(pid, signal.SIGSTOP)
        self.frozen += ospids

    def thaw(self) -> None:
        for pid in self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.frozen = []

    def whole(self) -> list[int]:
        """Every OS process of this node: ``otpkit run`` and the node's process group."""
        pgid = os.getpgid(self.os_pid_of("kernel"))
        assert pgid != os.getpgrp(), "the node shares the test's process group"
        group = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    stat = (entry / "stat").read_text()
                    if int(stat[stat.rindex(")") + 2 :].split()[2]) == pgid:
                        group.append(int(entry.name))
        assert group, pgid
        return [self.proc.pid, *group]

    def close(self) -> None:
        self.thaw()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[list[Pod]]:
    dist = [free_port(h) for h in HOSTS]
    peers = ",".join(f"myapp@{h}:{p}" for h, p in zip(HOSTS, dist, strict=True))
    started: list[Pod] = []
    try:
        for i in range(3):
            started.append(Pod(tmp_path, i, peers, dist))
        yield started
    finally:
        for pod in started:
            pod.close()


def holder_of(pod: Pod) -> str | None:
    rows = [s for s in pod.nodes().get("singletons", ()) if s["name"] == SCHED]
    return rows[0]["holder"] if rows and rows[0]["no_holder_for"] is None else None


def json_values(text: str) -> list[dict[str, Any]]:
    """The JSON objects printed one after the other in ``text`` (an unfinished last one
    is left out)."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) >= 0:
        try:
            value, at = decoder.raw_decode(text, at)
        except ValueError:
            break
        values.append(value)
    return values


def stamp(line: str) -> float:
    """The time of a log line (``YYYY-MM-DDTHH:MM:SS.mmmZ ...``), in seconds."""
    found = re.match(r"\d{4}-\d\d-\d\dT(\d\d):(\d\d):(\d\d)\.(\d{3})Z", line)
    assert found, line
    h, m, s, ms = (int(x) for x in found.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def test_a_wedged_singleton_says_why_and_a_node_outside_a_majority_is_not_ready(pods, tmp_path):
    t0 = time.monotonic()
    for pod in pods:
        wait_until(
            lambda p=pod: probe(p.probe, p.host) == (200, "ready"), BOUND, 0.2, f"{pod.name} ready"
        )
    holder = wait_until(lambda: holder_of(pods[0]), BOUND, 0.5, "a scheduler holder")
    a = next(p for p in pods if p.name == holder)
    others = [p for p in pods if p is not a]
    print(f"\nready, {a.name} holds the scheduler after {time.monotonic() - t0:.1f} s")
    out = a.shell("nodes")
    assert re.search(rf"^{SCHED}\s+majority\s+{re.escape(a.name)}$", out, re.M), out

    # -- the wedge: every node connected, the other two's quorum actors frozen
    events_out = tmp_path / "events.out"
    with open(events_out, "w") as sink:
        events = subprocess.Popen(
            [*EVENTS, "--connect", a.target],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=shell_env(tmp_path),
        )
    try:
        for pod in others:
            pod.freeze([pod.os_pid_of("quorum")])
        wedged = time.monotonic()
        first = wait_until(
            lambda: a.log_lines(WATCHDOG, "ERROR"), 2 * TERM + 30, 0.2, "the watchdog's ERROR"
        )[0]
        print(f"first ERROR {time.monotonic() - wedged:.1f} s after the wedge:\n{first}")
        silent = ", ".join(sorted(p.name for p in others))
        assert f"3 nodes connected (2 make a majority): waiting for {silent}: " in first, first
        assert "no answer to the grant round of epoch" in first, first
        # the gap is over two terms when it is first said (the lease ran out first)
        said = float(re.search(r"no active holder for (\d+) s", first)[1])  # type: ignore[index]
        assert said >= 2 * TERM - 1, first

        # the shell's nodes: the singleton's line says it, with the reason
        out = a.shell("nodes")
        line = next(x for x in out.splitlines() if x.startswith(SCHED))
        print(f"the shell's nodes:\n{out}")
        assert re.search(rf"majority\s+no holder for \d+ s: waiting for {silent}: ", line), out
        # the node reaches a majority (dist links up): ready all along
        assert probe(a.probe, a.host) == (200, "ready")

        # one line per term: count them over a window of three terms after the first
        window_end = stamp(first) + 3 * TERM + 0.5
        wait_until(
            lambda: (
                stamp(a.log_lines(WATCHDOG, "ERROR")[-1]) >= window_end - TERM - 0.5
                and len(a.log_lines(WATCHDOG, "ERROR")) >= 3
            ),
            6 * TERM + 20,
            0.2,
            "three ERROR lines",
        )
        times = [stamp(x) for x in a.log_lines(WATCHDOG, "ERROR")]
        in_window = [t for t in times if t <= window_end]
        gaps = [y - x for x, y in itertools.pairwise(times)]
        print(f"ERROR lines at +{[round(t - times[0], 2) for t in times]}")
        assert all(g >= TERM - 0.1 for g in gaps), gaps  # never two within a term
        assert 2 <= len(in_window) <= 4, times  # and they keep coming, about one per term

        # the event stream: a no_holder job event from this node's watchdog
        def no_holder_event() -> dict[str, Any] | None:
            for event in json_values(events_out.read_text()):
                if event.get("kind") == "job" and event["text"].startswith("no_holder "):
                    return event
            return None

        event = wait_until(no_holder_event, 20, 0.2, "a no_holder event")
        assert event["node"] == a.name, event
        assert f"error: waiting for {silent}: " in event["text"], event

        # thawed: a holder again, and one INFO line says after how long
        for pod in others:
            pod.thaw()
        back = wait_until(
            lambda: a.log_lines("singleton 'otpkit_scheduler' has a holder again after", "INFO"),
            BOUND,
            0.2,
            "the INFO line",
        )
        print(back[0])
        assert len(back) == 1, back
        again = wait_until(lambda: holder_of(a), BOUND, 0.5, "the holder in the shell's nodes")
        assert again in {p.name for p in pods}
    finally:
        if events.poll() is None:
            events.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            events.wait(10)
        if events.poll() is None:
            events.kill()
            events.wait(10)

    # -- outside a majority: the other two frozen whole
    errors_before = len(a.log_lines(WATCHDOG, "ERROR"))
    for pod in others:
        pod.freeze(pod.whole())
    frozen = time.monotonic()
    _status, body = wait_until(
        lambda: (r := probe(a.probe, a.host))[0] == 503 and r, 3 + 2 * TERM + 30, 0.2, "503 outside"
    )
    print(f"503 after {time.monotonic() - frozen:.1f} s: {body}")
    found = re.fullmatch(r"not ready: outside a majority for (\d+) s: (.*)", body)
    assert found, body
    assert int(found[1]) >= 2 * TERM - 0.5, body
    down = ", ".join(sorted(p.name for p in others))
    assert found[2] == f"no majority: 1 of the 2 members needed are connected (down: {down})"
    assert time.monotonic() - frozen >= 2 * TERM  # never before two terms
    # a minority side is meant to have no holder: the watchdog says nothing there
    assert len(a.log_lines(WATCHDOG, "ERROR")) == errors_before
    for pod in others:
        pod.thaw()
    wait_until(lambda: probe(a.probe, a.host) == (200, "ready"), BOUND, 0.2, "ready again")
    print(f"whole test {time.monotonic() - t0:.1f} s")
