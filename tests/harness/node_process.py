"""A node as a separate OS process (``tests.harness.node_driver``, or another driver that
speaks its protocol: one JSON request per line on stdin, one ``{"ok": ...}`` answer per
line on stdout), driven by the cluster tests: :class:`NodeProc`, :func:`mesh` and
:func:`free_port`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Mapping
from typing import Any

from tests.harness.polling import wait_until
from tests.harness.processes import alive, child_env, python_module

DRIVER = "tests.harness.node_driver"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def proc_tcp() -> list[list[str]]:
    """The rows of /proc/net/tcp, split (local address, remote, state, ... inode)."""
    with open("/proc/net/tcp") as f:
        return [line.split() for line in f.read().splitlines()[1:]]


def hexaddr(ip: str, port: int) -> str:
    """An IPv4 address and port as /proc/net/tcp writes them."""
    return "{:08X}:{:04X}".format(int.from_bytes(socket.inet_aton(ip), "little"), port)


class NodeProc:
    """``python -m tests.harness.node_driver NAME PORT LOG_DIR COOKIE *extra`` (or another
    driver ``module`` taking the same arguments and answering the same ops) started and
    ready, with the repository root on its ``PYTHONPATH``.

    ``info`` is its ready line (the node's os ``pids``; ``echo``, the pid of an echo
    process, from ``node_driver``); ``log_path`` the node's log file. :meth:`cmd` may be
    called from several threads. :meth:`close` kills the driver and every os pid of the
    node (``graceful=True``: it first lets the driver stop its node in order). With
    ``wait=False`` the constructor returns at once (start several nodes side by side),
    and :meth:`wait_ready` waits for the ready line.
    """

    def __init__(
        self,
        name: str,
        log_dir: str,
        cookie: str = "test-cookie-0123456789",
        extra_args: tuple[str, ...] = (),
        wait: bool = True,
        module: str = DRIVER,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.host = name.split("@")[1]
        self.port = free_port(self.host)
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.info: dict[str, Any] = {}
        self.echo: list[Any] = []
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            python_module(module, name, str(self.port), log_dir, cookie, *extra_args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**child_env(), **(env or {})},
        )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> NodeProc:
        try:
            line = self.proc.stdout.readline() if self.proc.stdout else ""
            assert line, f"{self.name} did not start"
            self.info = json.loads(line)
        except BaseException:
            self.close()
            raise
        self.echo = self.info.get("echo", [])
        return self

    def cmd(self, **kw: Any) -> Any:
        assert self.proc.stdin and self.proc.stdout
        with self.lock:
            self.proc.stdin.write(json.dumps(kw) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        assert line, f"{self.name} ended (exit status {self.proc.poll()})"
        reply = json.loads(line)
        assert "ok" in reply, reply
        return reply["ok"]

    def alive(self) -> bool:
        """The driver and every os process of the node still run."""
        return self.proc.poll() is None and all(alive(p) for p in self.info["pids"])

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def all_pids(self) -> list[int]:
        """The driver's os pid and every os pid of its node."""
        return [self.proc.pid, *self.info.get("pids", [])]

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the driver and every os process of the node (SIGSTOP freezes
        the whole node, SIGCONT thaws it)."""
        for pid in self.all_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def dist_ospid(self) -> int:
        """The os process of the node that holds its dist listening socket."""
        where = hexaddr(self.host, self.port)
        inode = next(r[9] for r in proc_tcp() if r[1] == where and r[3] == "0A")
        for pid in self.info["pids"]:
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return int(pid)
        raise AssertionError(f"no process of {self.name} holds its dist socket")

    def kill_node(self) -> None:
        """SIGKILL the driver and every os process of the node at once (a crashed host).

        Every process is stopped (SIGSTOP) before any is killed: one kill at a time,
        the process killed first (the driver, often a lease's holder) would be seen gone
        by the others, still running - the quorum would release the holder's lease as it
        is meant to when a holder ends, which a crashed host never does."""
        self.signal(signal.SIGSTOP)  # nothing of the node runs from here on
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def term(self) -> None:
        """SIGTERM the driver: it stops the node in order (a pod's termination)."""
        os.kill(self.proc.pid, signal.SIGTERM)

    def close(self, graceful: bool = False) -> None:
        if graceful and self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # the driver stops its node in order
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        for pid in self.info.get("pids", []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def mesh(nodes: list[NodeProc]) -> None:
    a = nodes[0]
    for other in nodes[1:]:
        a.cmd(op="connect", name=other.name, host=other.host, port=other.port)
    for n in nodes:
        want = sorted(m.name for m in nodes if m is not n)
        wait_until(
            lambda n=n, want=want: n.cmd(op="nodes") == want,
            timeout=10,
            what=f"{n.name} sees the full mesh",
        )
