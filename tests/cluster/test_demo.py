"""``otpkit demo`` as a newcomer runs it: a real command, start to finish.

From its output: the ticks before the kill ran on the node it killed (the holder), the
ticks after the take-over on another node, no tick ran twice, and the last line says no
process is left. From the OS: every pid the demo named (each node's program and every
process of its node) is gone after the exit, so is every process whose command line
carries the run's id, and the run directory is removed. Ctrl-C mid-run stops everything
as cleanly. The demo's DNS responder is checked on its own at the end.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from otpkit.discovery import DnsA
from otpkit.discovery._responder import Responder
from tests.harness.polling import wait_until
from tests.harness.processes import alive

pytestmark = pytest.mark.cluster

TICK = re.compile(r"^\S+ tick (\d\d:\d\d:\d\d) ran on (\S+) \(pid \d+\)$")
NODE = re.compile(r"^node (\S+) pid (\d+) group (\d+) processes ([\d ]+)$")
RUN = re.compile(r"\(run ([0-9a-f]+)\)")
LAST = "stopping... no process left"


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTPKIT_")}
    env["TMPDIR"] = str(tmp_path)  # the run directory goes here: the test sees it removed
    return env


def demo_pids(lines: list[str]) -> list[int]:
    pids = []
    for line in lines:
        if m := NODE.match(line):
            pids.append(int(m[2]))
            pids.extend(int(p) for p in m[4].split())
    return pids


def processes_with(run_id: str) -> list[int]:
    """Live processes whose command line has ``--run run_id`` (every process of the
    demo's nodes is forked from ``otpkit demo --node NAME --run ID ...``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = any(a == b"--run" and b == run_id.encode() for a, b in itertools.pairwise(args))
        if ours and alive(int(entry)):
            found.append(int(entry))
    return found


def assert_nothing_left(lines: list[str], tmp_path: Path) -> None:
    assert lines[-1] == LAST, lines[-5:]
    run_id = RUN.search(lines[0])
    assert run_id, lines[0]
    pids = demo_pids(lines)
    assert len([line for line in lines if NODE.match(line)]) == 3, lines
    assert all(not alive(p) for p in pids), [p for p in pids if alive(p)]
    assert processes_with(run_id[1]) == []
    assert not list(tmp_path.glob("otpkit-demo-*")), "the run directory was left behind"


def test_the_demo_shows_a_take_over_and_leaves_no_process(tmp_path):
    began = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "otpkit", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=demo_env(tmp_path),
        check=False,
    )
    took = time.monotonic() - began
    print(f"\n{out.stdout}(demo took {took:.1f} s)")
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert took < 60
    lines = out.stdout.splitlines()
    kill = next(i for i, line in enumerate(lines) if line.startswith("killing "))
    killed = lines[kill].split()[1]
    over = next(i for i, line in enumerate(lines) if line.startswith("take-over: "))
    new = lines[over].split()[1]
    assert over > kill and new != killed

    before = [m.groups() for line in lines[:kill] if (m := TICK.match(line))]
    after = [m.groups() for line in lines[over:] if (m := TICK.match(line))]
    assert len(before) >= 4 and {node for _, node in before} == {killed}, before
    assert len(after) >= 4 and {node for _, node in after} == {new}, after
    # between the kill and the take-over line only ticks the killed node ran
    between = {m[2] for line in lines[kill:over] if (m := TICK.match(line))}
    assert between <= {killed}, between
    seconds = [m[1] for line in lines if (m := TICK.match(line))]
    assert len(seconds) == len(set(seconds)), "a tick ran twice"
    summary = " ".join(line for line in lines if line.startswith("summary: "))
    assert "run twice 0" in summary and "unaccounted 0" in summary, summary

    assert_nothing_left(lines, tmp_path)
    assert not [p for p in tmp_path.iterdir()], "the demo wrote into its working directory"


def test_ctrl_c_mid_run_stops_every_process(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpkit", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=demo_env(tmp_path),
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(
            lambda: any(TICK.match(line) for line in lines), 60, what="the demo's first tick"
        )
        proc.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        assert proc.wait(40) == 130, (lines, proc.stderr.read() if proc.stderr else "")
        print(f"\nstopped {time.monotonic() - stopped:.1f} s after Ctrl-C")
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "interrupted" in lines, lines
    assert not any(line.startswith("killing ") for line in lines)
    assert_nothing_left(lines, tmp_path)


def test_the_responder_answers_a_nxdomain_and_no_records():
    with Responder({"svc.demo.test": ["127.0.0.2", "127.0.0.3"], "empty.demo.test": []}) as ns:

        def ask(name: str, rdtype: str = "A") -> dns.message.Message:
            query = dns.message.make_query(name, rdtype)
            return dns.query.udp(query, "127.0.0.1", timeout=2, port=ns.port)

        found = DnsA(
            "svc.demo.test", app="demo", port=4370, nameserver="127.0.0.1", nameserver_port=ns.port
        ).lookup()
        assert found.ok and {p.name for p in found.peers} == {"demo@127.0.0.2", "demo@127.0.0.3"}
        answer = ask("svc.demo.test")
        assert answer.flags & dns.flags.AA and answer.answer[0].ttl == 0
        assert ask("nope.demo.test").rcode() == dns.rcode.NXDOMAIN
        for name, rdtype in (("empty.demo.test", "A"), ("svc.demo.test", "AAAA")):
            reply = ask(name, rdtype)
            assert reply.rcode() == dns.rcode.NOERROR and not reply.answer, reply
        assert ns.answer(b"not a dns packet") is None
        ns.set_records({"svc.demo.test": ["127.0.0.4"]})
        assert {rd.address for rd in ask("svc.demo.test").answer[0]} == {"127.0.0.4"}
    with pytest.raises(ValueError, match=r"svc\.demo\.test.*IPv4.*not-an-ip"):
        Responder({"svc.demo.test": ["not-an-ip"]})
