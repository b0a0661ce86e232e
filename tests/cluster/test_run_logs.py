"""``otpkit run`` logs as a container's do: every record of the node on stderr, one line
each (a traceback on the lines after its record in text), written by one writer - so the
tracebacks of four processes logged at the same moment stay whole, and with
``--log-format json`` every line parses. No log file unless one is asked for. A program
that starts a node itself keeps its own ``logging``: the node's records reach its
handlers, which nothing replaces."""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.observe_app import STORM_SIZE
from tests.harness.polling import wait_for
from tests.harness.processes import REPO_ROOT, child_env

pytestmark = pytest.mark.cluster

#: A text record's first line: time, level, node, process, logger.
TEXT_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"
    r" (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<node>\S+@\S+)"
    r" (?P<actor>\S+)\[(?P<pid>\d+)\] (?P<logger>[\w.]+): (?P<message>.*)$"
)

#: How a task's printed line starts.
TASK_TAGS = r"^\[job=hello tick=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\] hello"


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Container:
    """``otpkit run`` with its stdout and stderr captured to files, as a container
    runtime captures them; its working directory and TMPDIR are the test's."""

    def __init__(self, tmp: Path, target: str, name: str, *flags: str, env: dict[str, str]):
        self.tmp = tmp
        self.out = tmp / "stdout"
        self.err = tmp / "stderr"
        self.work = tmp / "work"
        self.work.mkdir()
        cookie = tmp / "cookie"
        cookie.write_text(secrets.token_urlsafe(32))
        cookie.chmod(0o600)
        full = {k: v for k, v in child_env().items() if not k.startswith("OTPKIT_")}
        full.update(PYTHONPATH=str(REPO_ROOT), TMPDIR=str(tmp / "tmpdir"), OBS_OUT=str(tmp / "obs"))
        (tmp / "tmpdir").mkdir()
        full.update(env)
        args = [sys.executable, "-m", "otpkit", "run", target, "--name", name]
        args += ["--dist-port", str(free_port()), "--cookie-file", str(cookie)]
        args += ["--data-dir", str(tmp / "data"), *flags]
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(args, stdout=out, stderr=err, env=full, cwd=self.work)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def marks(self) -> list[str]:
        path = self.tmp / "obs"
        return path.read_text().splitlines() if path.exists() else []

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def write_go(path: Path, at: float) -> None:
    """Tell the storm processes when to log (written whole: renamed into place)."""
    part = path.with_suffix(".part")
    part.write_text(f"{at:.3f}")
    part.rename(path)


def records(text: str) -> list[dict[str, str]]:
    """The text format's records: each first line parsed, the lines after it (its
    traceback) in ``rest``. A line that is neither fails the test."""
    out: list[dict[str, str]] = []
    for line in text.splitlines():
        m = TEXT_LINE.match(line)
        if m:
            out.append({**m.groupdict(), "rest": ""})
            continue
        assert out, f"stderr starts with a line that is no record: {line!r}"
        assert line.startswith(("Traceback", "  ", "During", "The above")) or re.match(
            r"^\w+(\.\w+)*(Error|Exception)?:", line
        ), f"a line that is neither a record nor part of a traceback: {line!r}"
        out[-1]["rest"] += line + "\n"
    return out


def test_a_node_logs_to_stderr_with_its_tasks_lines_and_failed_runs(tmp_path):
    c = Container(tmp_path, "tests.harness.observe_app:root", "obs@127.0.0.1", env={})
    try:
        wait_for(
            lambda: len(c.marks()) >= 3 and "run_failed job=boom" in c.stderr(),
            60,
            "three runs of hello and a failed run of boom",
            diagnose=c.stderr,
        )
        assert c.stop() == 0, c.stderr()
        found = records(c.stderr())
        # the task's printed line, tagged with its job and tick, from the pool's worker
        printed = [
            r
            for r in found
            if r["logger"] == "otpkit.stdout" and "hello from the task" in r["message"]
        ]
        assert len(printed) >= 3, c.stderr()
        for r in printed:
            assert r["node"] == "obs@127.0.0.1"
            assert re.match(
                r"^\[job=hello tick=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\] hello", r["message"]
            )
            assert r["message"].endswith(f"in {r['pid']}")
        # a failed run: one ERROR record with the task's traceback below it
        failed = [
            r for r in found if r["level"] == "ERROR" and "run_failed job=boom" in r["message"]
        ]
        assert failed, c.stderr()
        assert failed[0]["rest"].startswith("Traceback (most recent call last):")
        assert "RuntimeError: boom: the task failed on purpose" in failed[0]["rest"]
        assert failed[0]["actor"] == "otpkit_sched:obs"
        # the node's own processes are named, the levels are INFO and up
        assert {"otpkit.quorum", "otpkit.scheduler"} <= {r["logger"] for r in found}
        assert all(r["level"] != "DEBUG" for r in found)
        # stdout: otpkit run's own three lines
        out = c.out.read_text()
        assert "otpkit: node obs@127.0.0.1 running" in out and "stopped in" in out, out
        # no log file anywhere it could have made one
        assert not list(c.work.rglob("*.log")), list(c.work.rglob("*"))
        assert not list((tmp_path / "tmpdir").iterdir())
        assert not list((tmp_path / "data").rglob("*.log"))
    finally:
        c.close()


def test_json_lines_stay_whole_when_four_processes_log_large_tracebacks_at_once(tmp_path):
    c = Container(
        tmp_path,
        "tests.harness.observe_app:storm",
        "storm@127.0.0.1",
        "--log-format",
        "json",
        env={"OBS_GO": str(tmp_path / "go"), "OTPKIT_LOG_LEVEL": "warning"},
    )
    try:
        # all four processes are up: then they log at one moment, a second from now
        wait_for(
            lambda: len([m for m in c.marks() if m.startswith("ready")]) == 4,
            60,
            "the four storm processes ready",
            diagnose=c.stderr,
        )
        write_go(tmp_path / "go", time.time() + 1)
        wait_for(
            lambda: len([m for m in c.marks() if m.startswith("logged")]) == 4,
            60,
            "the four storm processes logged",
            diagnose=c.stderr,
        )
        assert c.stop() == 0, c.stderr()
        lines = c.stderr().splitlines()
        parsed = []
        for i, line in enumerate(lines):
            try:
                parsed.append(json.loads(line))
            except ValueError:
                pytest.fail(f"line {i + 1} of {len(lines)} is not JSON: {line[:300]!r}")
        storms = [p for p in parsed if str(p.get("message", "")).startswith("storm ")]
        assert sorted(p["message"] for p in storms) == [
            f"storm {i}: a large traceback" for i in range(4)
        ]
        pids = set()
        for p in storms:
            i = int(p["message"].split()[1].rstrip(":"))
            marker = f"storm-{i}-"
            trace = p["exc_info"]
            assert trace.startswith("Traceback (most recent call last):")
            whole = marker + "x" * (STORM_SIZE - 2 * len(marker)) + marker + "end"
            assert f"ValueError: {whole}" in trace  # the traceback's end, whole
            assert "in _deep" in trace and "Previous line repeated" in trace
            assert p["level"] == "ERROR" and p["node"] == "storm@127.0.0.1"
            assert p["logger"] == "observe_app" and p["actor"] == "Storm"
            pids.add(p["process"])
        assert len(pids) == 4  # four processes
        # OTPKIT_LOG_LEVEL=warning: nothing below WARNING
        assert {p["level"] for p in parsed} <= {"WARNING", "ERROR", "CRITICAL"}, {
            p["level"] for p in parsed
        }
    finally:
        c.close()


LIBRARY_USER = """
import logging, os, sys, time
import otpkit
from tests.harness.observe_app import storm

def marks(word):
    path = os.environ["OBS_OUT"]
    return open(path).read().count(word) if os.path.exists(path) else 0

def wait(word):
    deadline = time.monotonic() + 60
    while marks(word) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)


handler = logging.FileHandler(sys.argv[1])
handler.setFormatter(logging.Formatter("USER %(levelname)s %(name)s %(message)s"))
root = logging.getLogger()
root.addHandler(handler)
root.setLevel(logging.INFO)
node = otpkit.Node("lib@127.0.0.1", children=[storm()]).start()
try:
    wait("ready")
    with open(os.environ["OBS_GO"] + ".part", "w") as f:
        f.write(str(time.time() + 0.5))
    os.rename(os.environ["OBS_GO"] + ".part", os.environ["OBS_GO"])
    wait("logged")
    print("handlers kept:", root.handlers == [handler], flush=True)
finally:
    node.stop()
"""


def test_a_library_user_keeps_their_logging_and_gets_the_node_s_records(tmp_path):
    logfile = tmp_path / "user.log"
    env = {k: v for k, v in child_env().items() if not k.startswith("OTPKIT_")}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        OBS_OUT=str(tmp_path / "obs"),
        OBS_GO=str(tmp_path / "go"),
    )
    done = subprocess.run(
        [sys.executable, "-c", LIBRARY_USER, str(logfile)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "handlers kept: True" in done.stdout, done.stdout + done.stderr
    text = logfile.read_text()
    # each storm record came through the user's own handler and format, whole
    for i in range(4):
        assert f"USER ERROR observe_app storm {i}: a large traceback\n" in text
        assert f"storm-{i}-end" in text
    assert "USER INFO otpkit.node node lib@127.0.0.1 started" in text
    assert not list(tmp_path.rglob("lib@127.0.0.1.log"))
