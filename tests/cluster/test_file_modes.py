"""What a node writes to disk is its user's alone: ``otpkit run`` of the Kubernetes example
makes its data dir and log dir 0700 and the scheduler's store (with its WAL and shm
files), the quorum's state and the log files 0600 under the usual umask 022 (before: a
0755 data dir and 0644 files: every job's arguments world-readable). A store where
earlier versions kept it (``<data-dir>/<name>@<node>.sqlite``) is moved beside the
quorum's state with its ledger. And the example runs as a non-root uid with exactly a
Kubernetes Secret's modes (the cookie file 0440, root's, readable through the pod's
``fsGroup``), as its manifest runs it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import otpkit
from otpkit.scheduler._store import Store
from tests.harness.polling import wait_until
from tests.harness.processes import REPO_ROOT

pytestmark = pytest.mark.cluster

EXAMPLE = REPO_ROOT / "examples" / "kubernetes"
SRC = Path(otpkit.__file__).resolve().parents[1]  # the otpkit under test
COOKIE = "file-modes-cookie-0123456789"
#: the scheduler's store of the example's node ``myapp@127.0.0.1`` (default scheduler name)
STORE = "otpkit_scheduler@myapp@127.0.0.1.sqlite"
NOBODY = 65534
FS_GROUP = 10001  # the example's fsGroup


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def ready(port: int) -> bool:
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz/ready", timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def example_env(data: Path, log: Path, probe: int, cookie: dict[str, str]) -> dict[str, str]:
    """The manifest's environment for one pod on loopback (one replica: the files, not the
    cluster, are under test; a job every second)."""
    dist = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTPKIT_")}
    env.pop("POD_IP", None)
    env.update(
        PYTHONPATH=f"{EXAMPLE}{os.pathsep}{SRC}",
        PYTHONDONTWRITEBYTECODE="1",
        HOME=str(data),
        OTPKIT_NODE_NAME="myapp@127.0.0.1",
        OTPKIT_DISCOVERY=f"static:myapp@127.0.0.1:{dist}",
        OTPKIT_DIST_PORT=str(dist),
        OTPKIT_EXPECTED_SIZE="1",
        OTPKIT_PROBE_PORT=str(probe),
        OTPKIT_DATA_DIR=str(data),
        OTPKIT_LOG_DIR=str(log),
        OTPKIT_GRACE="25",
        MYAPP_SCHEDULE="* * * * * *",
        **cookie,
    )
    return env


class Pod:
    """One ``otpkit run myapp.tree:root``; stopped with SIGTERM at the end, SIGKILLed if
    that is not enough (the node's processes die with it)."""

    def __init__(self, command: list[str], env: dict[str, str], out: Path, **kw: Any) -> None:
        self.out = out
        with open(out, "wb") as f:
            self.proc = subprocess.Popen(
                [*command, "-m", "otpkit", "run", "myapp.tree:root"],
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
                **kw,
            )

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(40)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def output(self) -> str:
        return self.out.read_text()


@pytest.fixture
def pods() -> Iterator[list[Pod]]:
    started: list[Pod] = []
    try:
        yield started
    finally:
        for pod in started:
            pod.close()


def lanes(path: Path) -> dict[Any, Any]:
    with Store.open(path) as store:
        return {key: body["lane"] for key, body in store.lanes().items()}


def test_files_are_private_under_umask_022_and_an_old_store_is_moved(tmp_path, pods):
    data, log = tmp_path / "data", tmp_path / "log"  # missing: the node makes them
    probe = free_port()
    env = example_env(data, log, probe, {"OTPKIT_COOKIE": COOKIE})
    pods.append(Pod([sys.executable], env, tmp_path / "first.out", umask=0o022))
    wait_until(lambda: ready(probe), 60, interval=0.2, what="the node is ready")
    state = data / "otpkit"
    wait_until((state / f"{STORE}-wal").exists, 30, what="the store is written")
    wait_until(lambda: "myapp: hello from" in (log / "myapp@127.0.0.1.log").read_text(), 30)
    # while it runs: every file of the node, and its WAL and shm files
    assert (mode(data), mode(state), mode(log)) == (0o700, 0o700, 0o700)
    files = {p.name: mode(p) for p in state.iterdir()}
    assert {STORE, f"{STORE}-wal", f"{STORE}-shm", "quorum@myapp@127.0.0.1.json"} <= set(files)
    assert set(files.values()) == {0o600}, files
    logs = {p.name: mode(p) for p in log.iterdir()}
    assert set(logs) == {"myapp@127.0.0.1.log"}  # written by otpkit run's one writer
    assert set(logs.values()) == {0o600}, logs
    assert pods[0].stop() == 0, pods[0].output()

    # as an earlier version kept it: beside the data dir, 0644
    before = lanes(state / STORE)
    assert any(job == "hello" for job, _ in before), before
    old = data / STORE
    (state / STORE).rename(old)
    old.chmod(0o644)
    pods.append(Pod([sys.executable], env, tmp_path / "second.out", umask=0o022))
    wait_until(lambda: ready(probe), 60, interval=0.2, what="the node is ready again")
    assert not old.exists()
    assert mode(state / STORE) == 0o600
    text = (log / "myapp@127.0.0.1.log").read_text()
    assert f"scheduler store {old} moved to {state / STORE}" in text
    assert pods[1].stop() == 0, pods[1].output()
    after = lanes(state / STORE)
    for key, lane in before.items():  # every tick claimed before is still known
        assert after[key][0] >= lane[0], (key, lane, after.get(key))


# ---------------------------------------------------------------------- a non-root uid


def as_user(uid: int, groups: list[int], scratch: Path) -> list[str]:
    """The command prefix that runs this interpreter as ``uid`` with the supplementary
    ``groups``. When a directory above the interpreter is private (pyenv under /root),
    the command runs in a mount namespace of its own where that directory is a tmpfs
    holding only the interpreter's tree, bound back in place."""
    setpriv = [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        f"--groups={','.join(map(str, groups))}",
        "--inh-caps=-all",
    ]
    python = sys.executable
    prefix = Path(os.path.realpath(sys.base_prefix))
    hidden = next(
        (p for p in reversed(prefix.parents) if p != Path("/") and not mode(p) & 0o001), None
    )
    if hidden is None:
        return [*setpriv, python]
    keep = hidden / prefix.relative_to(hidden).parts[0]  # e.g. /root/.pyenv
    stash = scratch / "stash"
    stash.mkdir()
    script = (
        f'mount --bind "{keep}" "{stash}" && '
        f'mount -t tmpfs -o mode=0755,size=1m otpkit-test "{hidden}" && '
        f'mkdir -p "{keep}" && mount --bind "{stash}" "{keep}" && exec "$@"'
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            *setpriv, python]  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="root only: chown and setuid to another uid")
def test_the_example_runs_as_a_non_root_uid_with_a_secrets_modes(pods):
    for tool in ("setpriv", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} (util-linux) is missing")
    base = Path(tempfile.mkdtemp(prefix="otpkit-nonroot-", dir="/tmp"))
    try:
        base.chmod(0o755)  # the uid reaches its files; pytest's own tmp dir is root's
        secret = base / "etc-otpkit"  # a Secret's volume: root's, 0440, group fsGroup
        secret.mkdir()
        cookie = secret / "cookie"
        cookie.write_text(COOKIE + "\n")
        os.chown(cookie, 0, FS_GROUP)
        cookie.chmod(0o440)
        data = base / "data"  # the pod's volume: the uid's, group-writable for fsGroup
        data.mkdir()
        os.chown(data, NOBODY, FS_GROUP)
        data.chmod(0o2775)
        command = as_user(NOBODY, [FS_GROUP], base)
        check = subprocess.run(
            [*command, "-c", "import myapp.tree, otpkit.cli; print(__import__('os').getuid())"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": f"{EXAMPLE}{os.pathsep}{SRC}"},
            cwd=base,
            check=False,
        )
        if check.returncode != 0 or check.stdout.strip() != str(NOBODY):
            pytest.skip(f"this interpreter cannot run as uid {NOBODY}: {check.stderr[-300:]}")
        probe = free_port()
        env = example_env(
            data, data / "log", probe, {"OTPKIT_COOKIE_FILE": str(cookie)}
        )  # the manifest's: the log on the volume too
        pod = Pod(command, env, base / "pod.out", cwd=base, umask=0o022)
        pods.append(pod)
        wait_until(lambda: ready(probe), 60, interval=0.2, what=f"ready as uid {NOBODY}")
        status = Path(f"/proc/{pod.proc.pid}/status").read_text()
        assert f"\nUid:\t{NOBODY}\t" in status and str(FS_GROUP) in status.split("Groups:")[1]
        state = data / "otpkit"
        wait_until((state / f"{STORE}-wal").exists, 30, what="the store is written")
        assert (mode(state), state.stat().st_uid) == (0o700, NOBODY)
        files = {p.name: (mode(p), p.stat().st_uid) for p in state.iterdir()}
        assert {STORE, f"{STORE}-wal", f"{STORE}-shm", "quorum@myapp@127.0.0.1.json"} <= set(files)
        assert set(files.values()) == {(0o600, NOBODY)}, files
        assert {mode(p) for p in (data / "log").iterdir()} == {0o600}
        assert (mode(data), mode(cookie)) == (0o2775, 0o440)  # the user's and the Secret's
        assert pod.stop() == 0, pod.output()
    finally:
        shutil.rmtree(base, ignore_errors=True)
