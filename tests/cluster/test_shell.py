"""``otpkit shell`` and the one-shot commands against a live 3-node cluster on loopback.

The shell runs as a real subprocess under a pty (readline and all) and joins as a hidden
node; each command's output must hold the facts a cluster node states itself through
its own API (the scheduler's holder, a job's next fire time, the tree's children). A
job's runs are counted in its own output file. The shell's node must never show up as
a member, a name holder or a job runner.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.harness.node_process import NodeProc, free_port
from tests.harness.polling import wait_until
from tests.harness.processes import REPO_ROOT

pytestmark = pytest.mark.cluster

COOKIE = "shell-test-cookie"
BOUND = 30.0
NODE = "tests.harness.shell_target_node"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]")


def shell_node(name: str, log_dir: str, cookie: str, config: str) -> NodeProc:
    """A ``tests.harness.shell_target_node`` node (scheduler + ``app`` supervisor), driven
    like NodeProc."""
    return NodeProc(name, log_dir, cookie, extra_args=(config,), wait=False, module=NODE)


def env_for(home: Path, cookie: str | None = COOKIE, tmp: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTPKIT_")}
    if tmp is not None:
        env["TMPDIR"] = str(tmp)
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    env["HOME"] = str(home)
    env["TERM"] = "dumb"
    if cookie is not None:
        env["OTPKIT_COOKIE"] = cookie
    return env


class Cluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.out = workdir / "drill.out"
        self.nodes: list[NodeProc] = []
        self.lone: NodeProc | None = None

    def start(self) -> None:
        record = {"task": "tests.harness.scheduler_tasks:record", "kwargs": {"path": str(self.out)}}
        config = {
            "policy": "majority",
            "store": None,
            "settle_timeout": 1.0,
            "max_concurrency": 2,
            "jobs": [
                {"name": "nightly", "schedule": "0 3 * * *", **record, "state": "active"},
                {"name": "drill", "schedule": "@yearly", **record, "state": "inactive"},
            ],
        }
        path = self.workdir / "sched.json"
        path.write_text(json.dumps(config))
        for i in (2, 3, 4):
            self.nodes.append(shell_node(f"n{i}@127.0.0.{i}", str(self.workdir), COOKIE, str(path)))
        # a node of a cluster of its own (another cookie): the one whose death a shell sees
        self.lone = shell_node("n5@127.0.0.5", str(self.workdir), "lone-cookie-0123", "-")
        for node in [*self.nodes, self.lone]:
            node.wait_ready()
        for a in self.nodes:
            for b in self.nodes:
                if a is not b:
                    a.cmd(op="connect", name=b.name, host=b.host, port=b.port)

    @property
    def n2(self) -> NodeProc:
        return self.nodes[0]

    def target(self, node: NodeProc | None = None) -> str:
        node = node or self.n2
        return f"{node.host}:{node.port}"

    def holder(self) -> str | None:
        views = {n.cmd(op="sched_holder") for n in self.nodes}
        return views.pop() if len(views) == 1 else None

    def runs(self) -> list[list[str]]:
        if not self.out.exists():
            return []
        return [
            line.split() for line in self.out.read_text().splitlines() if line.startswith("run ")
        ]

    def close(self) -> None:
        for node in [*self.nodes, *([self.lone] if self.lone else [])]:
            node.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("shell"))
    try:
        c.start()
        wait_until(c.holder, BOUND, interval=0.1, what="one scheduler holder everywhere")
        # the holder answers the runtime API (it has recovered)
        wait_until(
            lambda: isinstance(c.n2.cmd(op="sched_jobs", t=2), list),
            BOUND,
            interval=0.1,
            what="the scheduler answers",
        )
        yield c
    finally:
        c.close()


def oneshot(
    cluster: Cluster, *args: str, cookie: str | None = COOKIE, target: str | None = None
) -> subprocess.CompletedProcess[str]:
    connect = ["--connect", target or cluster.target()]
    return subprocess.run(
        [sys.executable, "-m", "otpkit", *args, *connect],
        capture_output=True,
        text=True,
        timeout=60,
        env=env_for(cluster.workdir, cookie),
        check=False,
    )


class PtyShell:
    """``python -m otpkit shell --connect ...`` on a pty; :meth:`cmd` types a line and
    returns what came before the next prompt."""

    def __init__(
        self, cluster: Cluster, target: str, cookie: str, node: str, tmp: Path | None = None
    ) -> None:
        self.prompt = f"otpkit({node})> "
        master, slave = os.openpty()
        self.master = master
        self.buf = ""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otpkit", "shell", "--connect", target],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env_for(cluster.workdir, cookie, tmp),
            start_new_session=True,
            close_fds=True,
        )
        os.close(slave)
        self.banner = self.read_until(self.prompt, BOUND)
        found = re.search(r"as hidden node (\S+)", self.banner)
        assert found, self.banner
        self.name = found.group(1)

    def read_until(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while pattern not in self.buf:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {pattern!r} within {timeout}s; got {self.buf[-2000:]!r}"
            ready, _, _ = select.select([self.master], [], [], min(remaining, 0.5))
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the shell ended and closed the pty
                data = b""
            if not data:
                raise AssertionError(f"the shell ended before {pattern!r}: {self.buf[-2000:]!r}")
            self.buf += ANSI.sub("", data.decode(errors="replace")).replace("\r", "")
        end = self.buf.index(pattern) + len(pattern)
        text, self.buf = self.buf[:end], self.buf[end:]
        return text

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def cmd(self, line: str, timeout: float = BOUND) -> str:
        self.send(line)
        return self.read_until(self.prompt, timeout)

    def wait_exit(self, timeout: float) -> int:
        # drain the pty meanwhile: a full pty would block the shell's last words
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                with contextlib.suppress(OSError):
                    data = os.read(self.master, 65536)
                    self.buf += ANSI.sub("", data.decode(errors="replace")).replace("\r", "")
        with contextlib.suppress(OSError):
            while select.select([self.master], [], [], 0.1)[0]:
                data = os.read(self.master, 65536)
                if not data:
                    break
                self.buf += ANSI.sub("", data.decode(errors="replace")).replace("\r", "")
        return self.proc.wait(1)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        with contextlib.suppress(OSError):
            os.close(self.master)


def utc_text(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def line_of(text: str, word: str) -> str:
    """The first line of ``text`` that starts with ``word`` (a table row)."""
    for line in text.splitlines():
        if line.startswith(f"{word} "):
            return line
    raise AssertionError(f"no line for {word!r} in:\n{text}")


def child_line(tree: str, child: str) -> str:
    """The line of the child ``child`` in a drawn tree."""
    for line in tree.splitlines():
        if re.search(rf"─ {re.escape(child)}  [<-]", line):
            return line
    raise AssertionError(f"no child {child!r} in:\n{tree}")


def one_line(out: str) -> str:
    """The shell's answer in ``out`` (what :meth:`PtyShell.cmd` returned), which must
    be one line."""
    lines = [line for line in out.splitlines()[1:-1] if line.strip()]
    assert len(lines) == 1, out
    return lines[0]


def parent_of(ospid: int) -> int:
    stat = Path(f"/proc/{ospid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def children_of(ospid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                if parent_of(int(entry.name)) == ospid:
                    found.append(int(entry.name))
    return found


def test_the_shell_session(cluster: Cluster) -> None:
    n2, n3 = cluster.nodes[0], cluster.nodes[1]
    shell = PtyShell(cluster, cluster.target(), COOKIE, n2.name)
    try:
        # nodes: the cluster, and the shell only as a hidden node
        out = shell.cmd("nodes")
        for n in cluster.nodes:
            assert n.name in out
        assert re.search(rf"{re.escape(shell.name)}\s+hidden\s+no", out), out

        # tree: the kernel's children, the scheduler's and the application's
        tree = shell.cmd("tree")
        for child in ("dist", "global", "quorum", "admin", "scheduler:otpkit_scheduler"):
            assert f"├─ {child}  <{n2.name}." in tree, tree
        for child in ("pool", "singleton", "scheduler", "worker"):
            assert f"─ {child}  <{n2.name}." in tree, tree
        assert "└─ app  <" in tree
        worker = re.search(rf"worker  <({re.escape(n2.name)}\.\d+)>", tree)
        assert worker, tree
        assert "restarts=0" in child_line(tree, "worker")

        out = shell.cmd("which_children app")
        assert "worker" in out and "permanent" in out
        out = shell.cmd("count_children scheduler:otpkit_scheduler")
        assert "specs=2  active=2  supervisors=1  workers=1" in out, out

        # whereis / names: the scheduler's holder as the cluster states it
        holder = cluster.holder()
        assert holder is not None
        out = shell.cmd("whereis otpkit_scheduler")
        assert f"on {holder}" in out, out
        assert f"<{holder}." in line_of(shell.cmd("names"), "otpkit_scheduler")

        # jobs: the next fire time the scheduler's API gives
        api = {j["name"]: j for j in n3.cmd(op="sched_jobs")}
        out = shell.cmd("jobs")
        nightly = line_of(out, "nightly")
        assert utc_text(api["nightly"]["next_at"]) in nightly, out
        assert holder in nightly
        assert "inactive" in line_of(out, "drill")
        assert "03:00:00Z" in shell.cmd("job nightly")

        # a bad command, a bad argument: one line each, and the session goes on
        out = shell.cmd("frobnicate now")
        assert "unknown command 'frobnicate' (help lists them)" in out
        assert "usage: whereis NAME" in shell.cmd("whereis")
        assert "no supervisor 'nosuch'" in shell.cmd("which_children nosuch")
        assert "no job 'nosuch'" in shell.cmd("run nosuch")
        assert "pid 'abc'" in shell.cmd("kill abc")
        assert "which_children SUP" in shell.cmd("help")

        # run: the job fires exactly once, not on the shell's node
        before = len(cluster.runs())
        assert "drill: run at" in shell.cmd("run drill")
        wait_until(lambda: len(cluster.runs()) == before + 1, BOUND, what="the drill ran")
        wait_until(
            lambda: "finished" in line_of(shell.cmd("jobs"), "drill"), BOUND, what="run recorded"
        )
        runs = cluster.runs()
        assert len(runs) == before + 1
        assert runs[-1][2] in {n.name for n in cluster.nodes}

        # deactivate / activate
        assert "drill: activated" in shell.cmd("activate drill")
        assert "drill: already active" in shell.cmd("activate drill")
        assert "drill: deactivated" in shell.cmd("deactivate drill")

        # kill a worker: its supervisor restarts it, and the tree shows the count rise
        assert f"killed <{worker.group(1)}>" in shell.cmd(f"kill <{worker.group(1)}>")
        wait_until(
            lambda: "restarts=1" in child_line(shell.cmd("tree"), "worker"),
            BOUND,
            what="the worker's restart count rose",
        )
        assert "worker restarted as <" in shell.cmd("restart app worker")
        assert "worker terminated" in shell.cmd("terminate app worker")
        assert "worker  -  worker permanent" in shell.cmd("tree")
        assert "worker restarted as <" in shell.cmd("restart app worker")
        # the node's own machinery is refused, one line each, and the node stays: the
        # kernel, Thespian's admin (the kernel's parent) and logger, the admin service
        kernel = int(re.search(rf"kernel  <{re.escape(n2.name)}\.(\d+)>", tree).group(1))
        thespian = parent_of(kernel)
        logger = [p for p in children_of(thespian) if p != kernel]
        admin = re.search(rf"admin  <{re.escape(n2.name)}\.(\d+)>", tree)
        assert admin and logger, (tree, logger)
        for ospid, said in [
            (thespian, "is Thespian's admin process of node"),
            (logger[0], "is Thespian's logger of node"),
            (kernel, "that is the node's kernel"),
            (int(admin.group(1)), "that is the admin service itself"),
        ]:
            assert said in one_line(shell.cmd(f"kill {ospid}")), ospid
        # so are the kernel's system children: the admin answering, dist, quorum, ...
        for act, child in [("restart", "admin"), ("terminate", "dist"), ("restart", "quorum")]:
            out = one_line(shell.cmd(f"{act} kernel {child}"))
            assert f"{act}: {child} is a system process of node {n2.name}" in out, out
        assert n3.name in shell.cmd("nodes")
        assert {thespian, kernel, *logger} <= set(n2.cmd(op="pids"))
        # another node's tree, through the connected one
        assert f"├─ admin  <{n3.name}." in shell.cmd(f"tree {n3.name}")

        # the shell's node is a hidden peer only: no member, holder or runner
        assert n2.cmd(op="hidden_nodes") == [shell.name]
        for n in cluster.nodes:
            assert shell.name not in n.cmd(op="nodes")
            assert shell.name not in n.cmd(op="quorum_members")[1]
            table = n.cmd(op="table")
            assert all(pid[0] != shell.name for pid in table.values()), table
        assert all(run[2] != shell.name for run in cluster.runs())

        # events: a global name registered meanwhile shows up
        # (other events may come first; Ctrl-C ends the tail)
        shell.send("events 0 60")
        shell.read_until("Ctrl-C stops)", BOUND)
        pid = n3.cmd(op="spawn")
        assert n3.cmd(op="register", name="shell_drill_name", pid=pid) is True
        shell.read_until("shell_drill_name registered to <n3@", BOUND)
        shell.proc.send_signal(signal.SIGINT)
        shell.read_until(shell.prompt, BOUND)
        assert "shell_drill_name" in shell.cmd("names")

        shell.send("quit")
        assert shell.wait_exit(BOUND) == 0
    finally:
        shell.close()
    # the shell left: no hidden node stays behind
    wait_until(lambda: n2.cmd(op="hidden_nodes") == [], BOUND, what="the shell's node gone")


def test_one_shots(cluster: Cluster) -> None:
    n2 = cluster.n2
    res = oneshot(cluster, "nodes", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["node"] == n2.name
    assert sorted([data["node"], *data["nodes"]]) == sorted(n.name for n in cluster.nodes)
    assert sorted(data["members"]) == sorted(n.name for n in cluster.nodes)
    assert len(data["hidden"]) == 1 and data["hidden"][0].startswith("shell-")

    res = oneshot(cluster, "quorum")
    assert res.returncode == 0, res.stderr
    lines = dict(line.split(None, 1) for line in res.stdout.strip().splitlines())
    assert lines["node"] == n2.name and lines["member"] == "yes"
    assert lines["config"].split(": ", 1)[1] == ", ".join(sorted(n.name for n in cluster.nodes))
    assert lines["problem"] == "-" and lines["rejoin"] == "-"
    res = oneshot(cluster, "quorum_expected", "many")
    assert res.returncode != 0 and "'many': expected a number of nodes" in res.stderr

    res = oneshot(cluster, "tree", "--json")
    tree = json.loads(res.stdout)
    ids = [c["id"] for c in tree["children"]]
    assert ids[:4] == ["dist", "global", "quorum", "admin"]
    assert "scheduler:otpkit_scheduler" in ids and "app" in ids

    holder = cluster.holder()
    res = oneshot(cluster, "whereis", "otpkit_scheduler", "--json")
    assert json.loads(res.stdout).startswith(f"<{holder}.")
    res = oneshot(cluster, "names")
    assert "otpkit_scheduler" in res.stdout and holder in res.stdout

    res = oneshot(cluster, "jobs", "--json")
    jobs = {j["name"]: j for j in json.loads(res.stdout)}
    api = {j["name"]: j for j in n2.cmd(op="sched_jobs")}
    assert jobs["nightly"]["next_at"] == api["nightly"]["next_at"]
    assert jobs["nightly"]["holder"] == holder

    before = len(cluster.runs())
    res = oneshot(cluster, "run", "drill")
    assert res.returncode == 0 and "drill: run at" in res.stdout, res.stderr
    wait_until(lambda: len(cluster.runs()) == before + 1, BOUND, what="the one-shot run")

    res = oneshot(cluster, "job", "nosuch")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "otpkit: job: no job 'nosuch' in scheduler 'otpkit_scheduler'"
    ]


def test_bad_settings_and_a_wrong_cookie(cluster: Cluster) -> None:
    res = oneshot(cluster, "nodes", cookie=None)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "otpkit: OTPKIT_COOKIE: missing (or set OTPKIT_COOKIE_FILE / --cookie-file)"
    ]
    res = oneshot(cluster, "nodes", target="nowhere")
    assert res.returncode == 2 and res.stderr.startswith("otpkit: --connect: 'nowhere'")
    # bad words and settings: status 2, found before dialling (nothing listens there)
    for words, said in [
        (("tree", "a", "b", "c"), "otpkit: usage: tree [NODE]"),
        (("kill", "abc"), "otpkit: pid 'abc': expected <app@host.ospid> or an os pid"),
        (("nodes", "--timeout", "inf"), "otpkit: --timeout: inf: expected seconds > 0"),
    ]:
        res = oneshot(cluster, *words, target=f"127.0.0.1:{free_port('127.0.0.1')}")
        assert res.returncode == 2, (words, res.stderr)
        assert res.stderr.startswith(said), (words, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    res = oneshot(cluster, "nodes", cookie="not-the-cookie-0123456789")
    assert res.returncode == 3
    assert res.stderr.strip().splitlines() == [
        f"otpkit: {cluster.n2.name} at {cluster.target()} refused the handshake: wrong cookie"
    ]
    # nothing stays connected (the one-shots before it have gone as well)
    wait_until(lambda: cluster.n2.cmd(op="hidden_nodes") == [], BOUND, what="no hidden node")


def test_interrupts_and_a_lost_connection(cluster: Cluster) -> None:
    """Ctrl-C ends a slow command, not the shell; the target's death ends a shell at
    once, whether it is idle or waiting for a request, and leaves no scratch dir."""
    lone = cluster.lone
    assert lone is not None
    stops = cluster.workdir / "sleeper.stops"

    def stopped(n: int) -> bool:
        return stops.exists() and len(stops.read_text().splitlines()) >= n

    tmp = {}
    for which in ("idle", "busy"):
        tmp[which] = cluster.workdir / f"tmp-{which}"
        tmp[which].mkdir()
    idle = PtyShell(cluster, cluster.target(lone), "lone-cookie-0123", lone.name, tmp["idle"])
    busy = PtyShell(cluster, cluster.target(lone), "lone-cookie-0123", lone.name, tmp["busy"])
    try:
        assert lone.name in idle.cmd("nodes")
        assert any(tmp["idle"].glob("otpkit-shell-*"))  # the scratch dir looked for below
        # Ctrl-C during a slow restart (the sleeper's stop takes 3 s): back at the prompt
        busy.send("restart app sleeper")
        wait_until(lambda: stopped(1), BOUND, interval=0.05, what="the sleeper stopping")
        busy.proc.send_signal(signal.SIGINT)
        assert "interrupted" in busy.read_until(busy.prompt, 5)
        assert busy.proc.poll() is None
        # the next slow request (queued behind that restart) is under way when the node
        # dies: the shell says so at once, not after the request's 40 s timeout
        busy.send("terminate app sleeper")
        wait_until(lambda: stopped(2), BOUND, interval=0.05, what="the sleeper stopping again")
        killed = time.monotonic()
        lone.kill9()
        assert busy.wait_exit(BOUND) == 3
        assert time.monotonic() - killed < 5.0
        assert f"connection to {lone.name} lost" in busy.buf
        assert idle.wait_exit(BOUND) == 3
        assert f"connection to {lone.name} lost" in idle.buf
        for which, shell in (("idle", idle), ("busy", busy)):
            assert not list(tmp[which].glob("otpkit-shell-*")), (which, shell.buf)
    finally:
        idle.close()
        busy.close()
        cluster.lone = None
        lone.close()
