"""``otpkit run`` as a real command: each bad setting gives one line naming it and a
non-zero exit; a running node stops cleanly on SIGTERM, leaving no process behind; its
probes answer live and ready (ready only once it has joined its peers); and the
Kubernetes example's application runs as its manifest configures it."""

from __future__ import annotations

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

from otpkit.cli import main
from otpkit.node._probes import ClusterView, join_problem, ready_problem
from otpkit.settings import SettingError, cookie_from
from tests.harness.polling import wait_until
from tests.harness.processes import REPO_ROOT, alive, child_env

pytestmark = pytest.mark.cluster

APP = "tests.harness.otpkit_run_app"  # the application ``otpkit run`` starts
APP_FILE = REPO_ROOT / "tests" / "harness" / "otpkit_run_app.py"
EXAMPLE = REPO_ROOT / "examples" / "kubernetes"


def run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full = child_env()
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DIST = {
    "OTPKIT_NODE_NAME": "a@127.0.0.1",
    "OTPKIT_DIST_PORT": "4370",
    "OTPKIT_COOKIE": "cli-cookie-0123456",
}


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["run", "nocolon"], {"OTPKIT_NODE_NAME": "a@127.0.0.1"}, "target"),
        (["run", "nosuch_mod:root"], {"OTPKIT_NODE_NAME": "a@127.0.0.1"}, "target"),
        (["run", f"{APP}:missing"], {"OTPKIT_NODE_NAME": "a@127.0.0.1"}, "target"),
        (["run", f"{APP}:not_a_tree"], {"OTPKIT_NODE_NAME": "a@127.0.0.1"}, "target"),
        (["run", f"{APP}:root"], {}, "OTPKIT_NODE_NAME"),
        (["run", f"{APP}:root"], {"OTPKIT_NODE_NAME": "nohost"}, "OTPKIT_NODE_NAME"),
        (["run", f"{APP}:root"], {"OTPKIT_APP": "a", "POD_IP": "not-an-ip"}, "POD_IP"),
        (
            ["run", f"{APP}:root"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_DIST_PORT": "http"},
            "OTPKIT_DIST_PORT",
        ),
        (
            ["run", f"{APP}:root"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_DIST_PORT": "70000"},
            "OTPKIT_DIST_PORT",
        ),
        (
            ["run", f"{APP}:root"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_DISCOVERY": "dns-a:svc.local"},
            "OTPKIT_COOKIE",
        ),
        (
            ["run", f"{APP}:root"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_DISCOVERY": "consul:svc"},
            "OTPKIT_DISCOVERY",
        ),
        (
            ["run", f"{APP}:root", "--cookie-file", "/nonexistent/cookie"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_DIST_PORT": "4370"},
            "OTPKIT_COOKIE_FILE",
        ),
        (
            ["run", f"{APP}:root"],
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


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (
            ["run", f"{APP}:root"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_PROBE_PORT": "http"},
            "OTPKIT_PROBE_PORT",
        ),
        (
            ["run", f"{APP}:root", "--probe-port", "0"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1"},
            "OTPKIT_PROBE_PORT",
        ),
        (
            ["run", f"{APP}:root"],
            {**DIST, "OTPKIT_PROBE_PORT": "4370"},
            "OTPKIT_PROBE_PORT",
        ),
        (
            ["run", f"{APP}:root"],
            {**DIST, "OTPKIT_EXPECTED_SIZE": "three"},
            "OTPKIT_EXPECTED_SIZE",
        ),
        (
            ["run", f"{APP}:root", "--expected-size", "0"],
            DIST,
            "OTPKIT_EXPECTED_SIZE",
        ),
        (
            ["run", f"{APP}:root"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_EXPECTED_SIZE": "3"},
            "OTPKIT_EXPECTED_SIZE",
        ),
        (
            ["run", f"{APP}:root"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_SETTLE_TIMEOUT": "soon"},
            "OTPKIT_SETTLE_TIMEOUT",
        ),
        (
            ["run", f"{APP}:root"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_DATA_DIR": f"{APP_FILE}/data"},
            "OTPKIT_DATA_DIR",
        ),
        (
            ["run", f"{APP}:root"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_LOG_FORMAT": "xml"},
            "OTPKIT_LOG_FORMAT",
        ),
        (
            ["run", f"{APP}:root"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_LOG_LEVEL": "loud"},
            "OTPKIT_LOG_LEVEL",
        ),
        (
            ["run", f"{APP}:root", "--probe-port", "8080"],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_PROBE_BIND": "10.0.0.1,pod"},
            "OTPKIT_PROBE_BIND",
        ),
        (  # an address this host does not have
            ["run", f"{APP}:root", "--probe-port", str(_free_port())],
            {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_PROBE_BIND": "192.0.2.1"},
            "OTPKIT_PROBE_BIND",
        ),
    ],
)
def test_a_bad_cluster_or_probe_setting_is_one_line_naming_it(args, env, names, capsys):
    """The same check in this process (each row costs no interpreter start)."""
    assert main(args, env) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert lines[0].startswith(f"otpkit: {names}: "), lines[0]
    assert out.out == ""


def test_a_probe_port_in_use_is_one_line_naming_it(capsys):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"OTPKIT_NODE_NAME": "a@127.0.0.1", "OTPKIT_PROBE_PORT": str(port)}
        assert main(["run", f"{APP}:root"], env) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"otpkit: OTPKIT_PROBE_PORT: {port}: "), lines


def run_cli_app(
    tmp_path: Path, name: str, extra: dict[str, str]
) -> tuple[subprocess.Popen[str], Path]:
    """``otpkit run tests.harness.otpkit_run_app:root`` as node ``name``; its worker writes
    to the marks file. Its stderr (every log line of the node) goes to ``<tmp>/stderr``,
    which nothing must leave unread: a full pipe would stop the node's log writer."""
    marks = tmp_path / "marks"
    env = {
        **child_env(),
        "CLI_APP_OUT": str(marks),
        "OTPKIT_NODE_NAME": name,
        "OTPKIT_LOG_DIR": str(tmp_path),
        "OTPKIT_DATA_DIR": str(tmp_path / "data"),
        **extra,
    }
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otpkit", "run", f"{APP}:root"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    return proc, marks


def first_worker(marks: Path) -> int:
    """The os pid of the app's worker, once it has started."""
    line = wait_until(
        lambda: marks.exists() and marks.read_text().strip(), 60, what="the worker starts"
    )
    return int(line.split()[1])


def test_sigterm_stops_the_node_within_its_grace_and_leaves_no_process(tmp_path):
    port = free_port()
    proc, marks = run_cli_app(
        tmp_path,
        "cli@127.0.0.1",
        {"OTPKIT_GRACE": "20", "OTPKIT_PROBE_PORT": str(port), "CLI_APP_STOP_DELAY": "1.5"},
    )
    try:
        worker = first_worker(marks)
        assert alive(worker)
        # no dist: ready as soon as the node runs
        wait_until(lambda: probe(port, "/healthz/ready") == (200, "ready"), 10, what="ready")
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # while the tree stops (the worker takes 1.5 s), not ready but live
        wait_until(
            lambda: probe(port, "/healthz/ready") == (503, "not ready: stopping"),
            10,
            what="not ready while stopping",
        )
        assert probe(port, "/healthz/live") == (200, "live: stopping")
        assert proc.wait(30) == 0, (tmp_path / "stderr").read_text()
        assert time.monotonic() - began < 20
        wait_until(lambda: not alive(worker), 10, what="the worker's process is gone")
        assert f"stopped {worker} shutdown" in marks.read_text()
        out = proc.stdout.read() if proc.stdout else ""
        assert "otpkit: node cli@127.0.0.1 running" in out and "stopped in" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# ---------------------------------------------------------------------- the decision


def view(discovered=(), connected=(), merged=(), settled=True) -> ClusterView:
    return ClusterView(settled, frozenset(discovered), frozenset(connected), frozenset(merged))


def test_joined_means_settled_every_discovered_peer_connected_and_merged():
    assert join_problem(view(settled=False)) == "discovery has had no good answer yet"
    assert join_problem(view(["b", "c"], ["b"], ["b"])) == "not connected to c"
    assert join_problem(view(["b"], ["b", "c"], ["b"])) == "registry not merged with c"
    assert join_problem(view(["b"], ["b", "c"], ["b", "c"])) is None
    assert join_problem(view()) is None  # a lone node: its answer named only itself
    many = join_problem(view([f"n{i}" for i in range(5)]))
    assert many == "not connected to n0, n1, n2 and 2 more"


def test_ready_once_joined_or_settle_timeout_until_stopping():
    waiting = view(["b"])
    assert ready_problem("starting", False, 0, 30, None) == "starting"
    assert ready_problem("running", False, 0, 30, None) is None  # no dist: ready once started
    assert ready_problem("running", False, 3, 30, waiting) == (
        "not connected to b (3 s of the 30 s settle timeout)"
    )
    assert ready_problem("running", False, 30, 30, waiting) is None  # waited long enough
    assert ready_problem("running", True, 3, 30, waiting) is None  # joined once: stays ready
    assert ready_problem("running", False, 1, 30, view(["b"], ["b"], ["b"])) is None
    assert ready_problem("running", False, 1, 30, "dist did not answer").startswith("dist did")
    assert ready_problem("stopping", True, 99, 30, None) == "stopping"
    with pytest.raises(ValueError, match="phase"):
        ready_problem("paused", False, 0, 30, None)


# ---------------------------------------------------------------------- probes, for real


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def probe(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
    """(status, body) of GET ``path`` on the probe port of the node at ``host``; (0, why)
    if nothing answered."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()
    except (urllib.error.URLError, ConnectionError) as exc:
        return 0, str(exc)


class Nodes:
    """``otpkit run`` processes started by a test; every one is stopped at the end,
    SIGKILLed if SIGTERM was not enough (the node's processes die with it)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self, key: str, target: str, env: dict[str, str], pythonpath: Path = REPO_ROOT
    ) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("OTPKIT_")}
        full.pop("POD_IP", None)
        full["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
        # each node's stores in this test's directory (not the default ./otpkit-data)
        full["OTPKIT_DATA_DIR"] = str(self.tmp_path / f"data-{key}")
        full.update(env)
        with open(self.tmp_path / f"{key}.out", "wb") as out:
            self.procs[key] = subprocess.Popen(
                [sys.executable, "-m", "otpkit", "run", target],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full,
            )

    def output(self, key: str) -> str:
        return (self.tmp_path / f"{key}.out").read_text()

    def stop(self, key: str, timeout: float = 30) -> int:
        proc = self.procs[key]
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    started = Nodes(tmp_path)
    try:
        yield started
    finally:
        started.close()


def test_ready_waits_for_the_discovered_peer_and_live_follows_the_kernel(nodes, tmp_path):
    dist = {"a": free_port(), "b": free_port()}
    probes = {"a": free_port(), "b": free_port()}
    common = {
        "OTPKIT_COOKIE": "probe-test-cookie-0123456789",
        "OTPKIT_DISCOVERY": f"static:a@127.0.0.1:{dist['a']},b@127.0.0.1:{dist['b']}",
        "OTPKIT_SETTLE_TIMEOUT": "120",  # b's absence, not a timeout, decides below
        "OTPKIT_LOG_DIR": str(tmp_path),
        "CLI_APP_OUT": str(tmp_path / "marks"),
    }

    def env(key: str) -> dict[str, str]:
        return {
            **common,
            "OTPKIT_NODE_NAME": f"{key}@127.0.0.1",
            "OTPKIT_DIST_PORT": str(dist[key]),
            "OTPKIT_PROBE_PORT": str(probes[key]),
        }

    nodes.start("a", f"{APP}:root", env("a"))
    status, body = wait_until(
        lambda: (r := probe(probes["a"], "/healthz/live"))[1].startswith("live: kernel") and r,
        60,
        what="a's kernel answers the liveness probe",
    )
    assert status == 200, body
    kernel = int(re.fullmatch(r"live: kernel (\d+) answered in \d+ ms", body)[1])  # type: ignore[index]
    assert probe(probes["a"], "/healthz/nope")[0] == 404
    # a runs, but b (named by discovery) is down: not ready, and the reason says why
    status, body = wait_until(
        lambda: (r := probe(probes["a"], "/healthz/ready"))[0] == 503 and "b@" in r[1] and r,
        30,
        what="a reports b missing",
    )
    assert body.startswith("not ready: not connected to b@127.0.0.1 ("), body
    assert probe(probes["a"], "/healthz/ready")[0] == 503

    nodes.start("b", f"{APP}:root", env("b"))
    for key in ("a", "b"):
        wait_until(
            lambda k=key: probe(probes[k], "/healthz/ready") == (200, "ready"),
            60,
            what=f"{key} is ready once both joined",
        )

    # a kernel that cannot answer (stopped) is not live; live again once it runs
    os.kill(kernel, signal.SIGSTOP)
    try:
        status, body = wait_until(
            lambda: (r := probe(probes["a"], "/healthz/live"))[0] == 503 and r,
            10,
            what="the stopped kernel fails the liveness probe",
        )
        assert body == f"not live: kernel {kernel} did not answer in 1 s", body
        assert probe(probes["a"], "/healthz/ready") == (200, "ready")  # joined: stays ready
    finally:
        os.kill(kernel, signal.SIGCONT)
    wait_until(lambda: probe(probes["a"], "/healthz/live")[0] == 200, 10, what="live again")

    assert nodes.stop("b") == 0, nodes.output("b")
    assert nodes.stop("a") == 0, nodes.output("a")


# ---------------------------------------------------------------------- examples/kubernetes


def manifests() -> dict[str, dict[str, Any]]:
    """The example's manifests by kind (PyYAML: a development dependency, for this)."""
    import yaml  # noqa: PLC0415 - only these tests read YAML

    docs = [d for f in sorted(EXAMPLE.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    return {d["kind"]: d for d in docs}


def container_env(statefulset: dict[str, Any], pod: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet makes it: downward-API values from
    ``pod``, ``$(VAR)`` replaced by the variables defined before it."""
    env: dict[str, str] = {}
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    for var in container["env"]:
        if "valueFrom" in var:
            env[var["name"]] = pod[var["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], var["value"])
    return env


def test_the_kubernetes_manifests_agree_with_each_other():
    m = manifests()
    sts, svc, pdb = m["StatefulSet"], m["Service"], m["PodDisruptionBudget"]
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = container_env(
        sts, {"metadata.name": "myapp-0", "metadata.namespace": "ns", "status.podIP": "10.0.0.7"}
    )
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # discovery: SRV records of the headless service, which lists pods not ready yet
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert spec["serviceName"] == svc["metadata"]["name"] == "myapp-headless"
    (svc_port,) = svc["spec"]["ports"]
    assert svc_port["port"] == ports["dist"] == int(env["OTPKIT_DIST_PORT"])
    assert (
        env["OTPKIT_DISCOVERY"]
        == f"dns-srv:_{svc_port['name']}._tcp.myapp-headless.ns.svc.cluster.local"
    )
    # the node's name is the SRV target DnsSrv names the pod by; dist listens on its IP
    assert env["OTPKIT_NODE_NAME"] == "myapp@myapp-0.myapp-headless.ns.svc.cluster.local"
    assert env["POD_IP"] == "10.0.0.7"
    # a majority of the replicas; the hand-over fits the grace, which fits the kubelet's
    assert int(env["OTPKIT_EXPECTED_SIZE"]) == spec["replicas"] == 3
    assert int(env["OTPKIT_GRACE"]) + 5 <= pod["terminationGracePeriodSeconds"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    # probes on the probe port
    assert int(env["OTPKIT_PROBE_PORT"]) == ports["probe"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": "probe"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz/live", "port": "probe"}
    # Prometheus scrapes /metrics on the probe port
    notes = spec["template"]["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/path"] == "/metrics"
    assert int(notes["prometheus.io/port"]) == ports["probe"]
    # the store on the pod's own volume; the cookie from the Secret, as a file
    mounts = {v["name"]: v["mountPath"] for v in container["volumeMounts"]}
    assert mounts["data"] == env["OTPKIT_DATA_DIR"]
    assert [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]] == ["data"]
    (cookie,) = [v for v in pod["volumes"] if v["name"] == "cookie"]
    (item,) = cookie["secret"]["items"]
    assert env["OTPKIT_COOKIE_FILE"] == f"{mounts['cookie']}/{item['path']}"
    assert "OTPKIT_COOKIE" not in env
    # the image: zone files, and the SIGTERM reaching otpkit run (exec form)
    dockerfile = (EXAMPLE / "Dockerfile").read_text()
    assert re.search(r"apt-get install .*\btzdata\b", dockerfile)
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "otpkit", "run"]' in dockerfile
    assert 'CMD ["myapp.tree:root"]' in dockerfile


def test_the_kubernetes_example_runs_as_its_manifest_sets_it(nodes, tmp_path):
    """Three nodes of ``myapp.tree:root`` with the manifest's environment, except what
    needs a cluster (the DNS names and the ports: loopback addresses, a static peer list
    and free ports here): each becomes ready, the job runs once per tick, and when the
    holder's pod is deleted (SIGTERM) another node takes the ticks over, none run twice."""
    sts = manifests()["StatefulSet"]
    hosts = [f"127.0.81.{i + 1}" for i in range(3)]
    dist = [free_port() for _ in hosts]
    probes = [free_port() for _ in hosts]
    (tmp_path / "cookie").write_text("example-cookie-0123456789\n")
    (tmp_path / "cookie").chmod(0o440)  # as the Secret is mounted (defaultMode 0440)
    peers = ",".join(f"myapp@{h}:{p}" for h, p in zip(hosts, dist, strict=True))
    for i, host in enumerate(hosts):
        pod = {"metadata.name": f"myapp-{i}", "metadata.namespace": "default", "status.podIP": host}
        env = container_env(sts, pod)
        assert env["OTPKIT_EXPECTED_SIZE"] == "3"
        env.update(
            OTPKIT_NODE_NAME=f"myapp@{host}",
            OTPKIT_DISCOVERY=f"static:{peers}",
            OTPKIT_DIST_PORT=str(dist[i]),
            OTPKIT_PROBE_PORT=str(probes[i]),
            OTPKIT_COOKIE_FILE=str(tmp_path / "cookie"),
            OTPKIT_DATA_DIR=str(tmp_path / f"data-{i}"),
            OTPKIT_LOG_DIR=str(tmp_path / "log"),
            MYAPP_SCHEDULE="* * * * * *",  # every second
        )
        nodes.start(f"myapp-{i}", "myapp.tree:root", env, pythonpath=EXAMPLE)
    for i in range(3):
        wait_until(
            lambda i=i: probe(probes[i], "/healthz/ready", hosts[i]) == (200, "ready"),
            60,
            what=f"myapp-{i} is ready",
        )

    def runs() -> list[tuple[str, str]]:
        """(tick, node) of each run, from the nodes' logs (the task's output)."""
        found = []
        for log in (tmp_path / "log").glob("*.log"):
            found += re.findall(r"myapp: hello from (\S+) for the tick (\S+)", log.read_text())
        return sorted((tick, node) for node, tick in found)

    first = wait_until(lambda: len(r := runs()) >= 3 and r, 30, what="three ticks run")
    holder = first[-1][1]
    assert "+01:00" in first[0][0] or "+02:00" in first[0][0]  # Europe/Berlin: tzdata
    index = hosts.index(holder.split("@")[1])
    assert nodes.stop(f"myapp-{index}") == 0, nodes.output(f"myapp-{index}")
    after = wait_until(
        lambda: [r for r in runs() if r[1] != holder] or None, 30, what="another node runs the job"
    )
    ticks = [tick for tick, _ in runs()]
    assert len(ticks) == len(set(ticks)), runs()
    new_holder = after[0][1]
    for i, host in enumerate(hosts):  # the standby first: the holder then hands over to none
        if f"myapp@{host}" not in (holder, new_holder):
            assert nodes.stop(f"myapp-{i}") == 0, nodes.output(f"myapp-{i}")
    new_index = hosts.index(new_holder.split("@")[1])
    assert nodes.stop(f"myapp-{new_index}") == 0, nodes.output(f"myapp-{new_index}")
    ticks = [tick for tick, _ in runs()]
    assert len(ticks) == len(set(ticks)), runs()
    for i in range(3):
        # beside the quorum's state, private (see test_file_modes)
        assert list((tmp_path / f"data-{i}" / "otpkit").glob("*.sqlite")), f"myapp-{i}: no store"


def test_the_cookie_flag_wins_over_the_environment(tmp_path: Path) -> None:
    f = tmp_path / "cookie"
    f.write_text("from-file-0123456789\n")
    f.chmod(0o600)
    env = "from-env-0123456789"
    assert cookie_from(str(f), {"OTPKIT_COOKIE": env}) == b"from-file-0123456789"
    assert cookie_from(None, {"OTPKIT_COOKIE": env, "OTPKIT_COOKIE_FILE": str(f)}) == (env.encode())
    assert cookie_from(None, {"OTPKIT_COOKIE_FILE": str(f)}) == b"from-file-0123456789"
    with pytest.raises(SettingError) as missing:
        cookie_from(None, {})
    assert missing.value.setting == "OTPKIT_COOKIE"


def test_a_node_whose_kernel_dies_ends_otpkit_run_with_status_1(tmp_path):
    """The kernel gone (killed here; in life: its restart intensity spent) is the node
    gone: ``otpkit run`` says so and exits 1, so the pod restarts instead of a process that
    goes on saying it runs."""
    port = free_port()
    proc, marks = run_cli_app(tmp_path, "halt@127.0.0.1", {"OTPKIT_PROBE_PORT": str(port)})
    try:
        worker = first_worker(marks)
        body = wait_until(
            lambda: (a := probe(port, "/healthz/live"))[0] == 200 and "answered" in a[1] and a[1],
            15,
            what="a live answer naming the kernel",
        )
        kernel = int(body.split()[2])
        os.kill(kernel, signal.SIGKILL)
        assert proc.wait(30) == 1
        err = (tmp_path / "stderr").read_text()
        assert f"otpkit: node halt@127.0.0.1 halted: its kernel (os pid {kernel}) is gone" in err
        wait_until(lambda: not alive(worker), 10, what="the worker's process is gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_stalled_probe_clients_do_not_block_probes_and_are_cut_off():
    """Clients that connect and send nothing hold no probe up, and are cut off after
    REQUEST_TIMEOUT (probes answer from memory: no client of the port makes the node
    work; at most MAX_CONNECTIONS are served at once)."""
    from otpkit.node import _probes  # noqa: PLC0415 - the limits under test

    server = _probes.ProbeServer(free_port(), host="127.0.0.1")
    idle: list[socket.socket] = []
    try:
        for _ in range(10):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        began = time.monotonic()
        assert probe(server.port, "/healthz/live") == (200, "live: starting")
        assert probe(server.port, "/healthz/ready") == (503, "not ready: starting")
        assert time.monotonic() - began < 1.0
        for s in idle:  # each is closed by the server, without an answer
            s.settimeout(_probes.REQUEST_TIMEOUT * 5)
            assert s.recv(1) == b""
        assert time.monotonic() - began < _probes.REQUEST_TIMEOUT * 5
    finally:
        for s in idle:
            s.close()
        server.close()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"format": 9}', "format 9 is newer than this otpkit reads (1)"),
        ("{not json", "cannot read it: "),
    ],
)
def test_a_quorum_store_it_cannot_use_stops_the_start_in_one_line(tmp_path, content, says):
    """A store the node cannot read (corrupt, or written by a newer otpkit) is not taken
    for no store (that would make it a new member that forgot its promises): the start
    stops with one line naming the file, and status 1."""
    store = tmp_path / "data" / "otpkit" / "quorum@a@127.0.0.1.json"
    store.parent.mkdir(parents=True)
    store.write_text(content)
    proc, _marks = run_cli_app(
        tmp_path,
        "a@127.0.0.1",
        {"OTPKIT_DIST_PORT": str(free_port()), "OTPKIT_COOKIE": "cli-cookie-0123456"},
    )
    proc.communicate(timeout=60)
    err = (tmp_path / "stderr").read_text()
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"otpkit: quorum store {store}: "), lines
    assert says in lines[-1]
    # before it, the node's own records (stderr is its log): the quorum's refusal
    assert any(" ERROR a@127.0.0.1 Quorum[" in line for line in lines), err


# ---------------------------------------------------------------------- bad numbers


def test_a_pid_or_number_out_of_range_is_one_line_and_the_shell_stays(nodes, tmp_path):
    """``otpkit kill 99999999999999999999 --connect ...`` printed a traceback (the number
    cannot travel to the node); now it is one line and status 2, as any bad argument,
    and in the shell one line, after which the shell goes on."""
    dist, probes = free_port(), free_port()
    cookie = "bad-numbers-cookie-0123456789"
    nodes.start(
        "a",
        f"{APP}:root",
        {
            "OTPKIT_NODE_NAME": "a@127.0.0.1",
            "OTPKIT_DIST_PORT": str(dist),
            "OTPKIT_PROBE_PORT": str(probes),
            "OTPKIT_COOKIE": cookie,
            "OTPKIT_LOG_DIR": str(tmp_path),
            "CLI_APP_OUT": str(tmp_path / "marks"),
        },
    )
    wait_until(lambda: probe(probes, "/healthz/ready") == (200, "ready"), 60, what="a is ready")
    env = {"OTPKIT_COOKIE": cookie, "HOME": str(tmp_path)}
    target = f"127.0.0.1:{dist}"
    for args, says in [
        (["kill", "99999999999999999999"], "pid '99999999999999999999': out of range"),
        (["kill", "<a@127.0.0.1.4194305>"], "out of range (an os pid is 1 to 4194304)"),
        (["quorum_expected", "99999999999999999999"], "expected a number of nodes, 1 to 1000"),
        (["events", "--for", "1e300"], "otpkit: --for: 1e+300: expected seconds"),
    ]:
        out = run([*args, "--connect", target], env)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], (args, out.stderr)
    session = subprocess.run(
        [sys.executable, "-m", "otpkit", "shell", "--connect", target],
        input="kill 99999999999999999999\nquorum_expected 0\nevents 1 inf\nnodes\nquit\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**child_env(), **env},
        check=False,
    )
    assert session.returncode == 0, (session.stdout, session.stderr)
    assert "Traceback" not in session.stdout + session.stderr
    said = session.stdout
    assert "pid '99999999999999999999': out of range" in said, said
    assert "'0': expected a number of nodes, 1 to 1000" in said, said
    assert "usage: events [COUNT] [SECONDS]" in said, said
    assert "a@127.0.0.1" in said.split("usage: events", 1)[1], "nodes answered after them"
