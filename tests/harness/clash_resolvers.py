"""Conflict resolvers for the registry tests, imported by the node processes as
``"tests.harness.clash_resolvers:<function>"`` (the repository root is on their
``PYTHONPATH``: :func:`tests.harness.processes.child_env`).

Each one first appends one JSON line to the file named by ``$OTPKIT_RESOLVER_LOG`` (set
by the test before it starts its nodes): ``{"resolver", "name", "other", "own", "node",
"os_pid"}``, pids as ``[node, creation, id, serial]``. A test counts the lines for a name
to check that a clash was resolved exactly once, where, and with which pids. One
``write`` of one short line to a file opened with ``O_APPEND`` is never interleaved.

The names follow OTP's ``global_SUITE``: ``resolve_first`` returns the first pid it is
given (the other partition's), ``resolve_second`` the second (its own side's).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from typing import Any

from otpkit import registry
from otpkit.actors._pid import Pid

LOG_ENV = "OTPKIT_RESOLVER_LOG"
DRIVER = "tests.harness.node_driver"  # python -m DRIVER NAME ...


def log_path() -> str:
    return os.environ.get(LOG_ENV) or os.path.join(
        tempfile.gettempdir(), "otpkit-resolver-calls.log"
    )


def _fields(pid: Any) -> Any:
    if isinstance(pid, Pid):
        return [pid.node, pid.creation, pid.id, pid.serial]
    return repr(pid)


def _log(resolver: str, name: Any, other: Any, own: Any) -> None:
    line = json.dumps(
        {
            "resolver": resolver,
            "name": name,
            "other": _fields(other),
            "own": _fields(own),
            "node": getattr(own, "node", None),
            "os_pid": os.getpid(),
        },
        default=repr,
    )
    fd = os.open(log_path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def resolve_first(name: Any, other: Pid, own: Pid) -> Pid:
    """The other partition's pid keeps the name."""
    _log("resolve_first", name, other, own)
    return other


def resolve_second(name: Any, other: Pid, own: Pid) -> Pid:
    """The resolving side's own pid keeps the name."""
    _log("resolve_second", name, other, own)
    return own


def bad_resolver(name: Any, other: Pid, own: Pid) -> str:
    """Not a pid: the name must go everywhere."""
    _log("bad_resolver", name, other, own)
    return "bad_answer"


def resolve_none(name: Any, other: Pid, own: Pid) -> None:
    """None: the name must go everywhere."""
    _log("resolve_none", name, other, own)


def exit_resolver(name: Any, other: Pid, own: Pid) -> Pid:
    """Raises: the other partition's pid must keep the name (OTP's exiting resolver)."""
    _log("exit_resolver", name, other, own)
    raise RuntimeError(f"exit_resolver for {name!r}")


def halt_second(name: Any, other: Pid, own: Pid) -> Pid:
    """Halts the node it runs on (``own``'s) before it answers: SIGKILL to the node's
    program, whose pid the test wrote to :func:`halt_targets_path` (the node's other
    processes die with it). OTP's ``halt_second``."""
    _log("halt_second", name, other, own)
    driver = _driver_pid(own.node)
    if driver is not None:
        os.kill(driver, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # this process dies with its node
            time.sleep(0.05)
    return other


def halt_targets_path() -> str:
    """``{node name: pid of its node_driver program}``, written by the test."""
    return log_path() + ".halt.json"


def _driver_pid(node: str) -> int | None:
    """The pid the test named for ``node``, if it still runs node_driver as ``node``."""
    try:
        with open(halt_targets_path(), encoding="utf-8") as f:
            pid = int(json.load(f)[node])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [arg.decode(errors="replace") for arg in f.read().split(b"\0")]
    except (OSError, KeyError, ValueError):
        return None
    if node in argv and DRIVER in argv:
        return pid
    return None


# the built-ins, counted


def counted_random_exit(name: Any, other: Pid, own: Pid) -> Any:
    _log("counted_random_exit", name, other, own)
    return registry.random_exit_name(name, other, own)


def counted_random_notify(name: Any, other: Pid, own: Pid) -> Any:
    _log("counted_random_notify", name, other, own)
    return registry.random_notify_name(name, other, own)


def counted_notify_all(name: Any, other: Pid, own: Pid) -> Any:
    _log("counted_notify_all", name, other, own)
    return registry.notify_all_name(name, other, own)


def read_calls(path: str | None = None) -> list[dict[str, Any]]:
    """Every call logged so far (in the test process)."""
    try:
        with open(path or log_path(), encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def hang(name: Any, other: Pid, own: Pid) -> Pid:
    """Never returns (within a test): the registry must give up on it and carry on."""
    _log("hang", name, other, own)
    time.sleep(3600)
    return own
