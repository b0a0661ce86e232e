"""``otpkit run`` as a real command: each bad setting gives one line naming it and a
non-zero exit; a running node stops cleanly on SIGTERM, leaving no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _util import alive, wait_until

pytestmark = pytest.mark.cluster

HERE = Path(__file__).parent


def run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for key in list(full):
        if key.startswith("OTPKIT_") or key == "POD_IP":
            del full[key]
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "otpkit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["run", "nocolon"], {"OTPKIT_NODE_NAME": "a@127.0.0.1"}, "target"),
        (["run", "nosuch_mod:root"], {"OTPKIT_NODE_NAME": "a@127.0.0.1"}, "target"),
        (["run", "cli_app:missing"], {"OTPKIT_NODE_NAME": "a@127.0.0.1"}, "target"),
        (["run", "cli_app:not_a_tree"], {"OTPKIT_NODE_NAME": "a@127.0.0.1"}, "target"),
        (["run", "cli_app:root"], {}, "OTPKIT_NODE_NAME"),
        (["run", "cli_app:root"], {"OTPKIT_NODE_NAME": "nohost"}, "OTPKIT_NODE_NAME"),
        (["run", "cli_app:root"], {"OTPKIT_APP": "a", "POD_IP": "not-an-ip"}, "POD_IP"),
        (
            ["run", "cli_app:root"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_DIST_PORT": "http"},
            "OTPKIT_DIST_PORT",
        ),
        (
            ["run", "cli_app:root"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_DIST_PORT": "70000"},
            "OTPKIT_DIST_PORT",
        ),
        (
            ["run", "cli_app:root"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_DISCOVERY": "dns-a:svc.local"},
            "OTPKIT_COOKIE",
        ),
        (
            ["run", "cli_app:root"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_DISCOVERY": "consul:svc"},
            "OTPKIT_DISCOVERY",
        ),
        (
            ["run", "cli_app:root", "--cookie-file", "/nonexistent/cookie"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_DIST_PORT": "4370"},
            "OTPKIT_COOKIE_FILE",
        ),
        (
            ["run", "cli_app:root"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_GRACE": "-1"},
            "OTPKIT_GRACE",
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(args, env, names):
    out = run(args, env)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"otpkit: {names}: "), lines[0]
    assert out.stdout == ""


def test_sigterm_stops_the_node_within_its_grace_and_leaves_no_process(tmp_path):
    marks = tmp_path / "marks"
    env = {
        **os.environ,
        "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "CLI_APP_OUT": str(marks),
        "OTPKIT_NODE_NAME": "cli@127.0.0.1",
        "OTPKIT_LOG_DIR": str(tmp_path),
        "OTPKIT_GRACE": "20",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpkit", "run", "cli_app:root"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = wait_until(
            lambda: marks.exists() and marks.read_text().strip(), 60, what="the worker starts"
        )
        worker = int(line.split()[1])
        assert alive(worker)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() - began < 20
        wait_until(lambda: not alive(worker), 10, what="the worker's process is gone")
        assert f"stopped {worker} shutdown" in marks.read_text()
        out = proc.stdout.read() if proc.stdout else ""
        assert "otpkit: node cli@127.0.0.1 running" in out and "stopped in" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
