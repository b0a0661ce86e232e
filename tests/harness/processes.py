"""Child processes of the tests and benchmarks: the repository root, how a helper module
is started as a program (``python -m tests.harness.<module>``, or ``bench.<module>``) with
the root on its ``PYTHONPATH``, whether an OS process still lives, and which ones carry a
variable in their environment (a run's marker).

It imports nothing of otpkit: the benchmarks' raw-Thespian roles use it too."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the repository root first on
    ``PYTHONPATH``: the child, and every process it forks, imports ``tests.harness`` and
    ``bench`` (and ``"module:function"`` names in them) wherever it runs."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def python_module(module: str, *args: str) -> list[str]:
    """The command line running ``module`` as a program: ``python -m module *args``."""
    return [sys.executable, "-m", module, *args]


def alive(ospid: int) -> bool:
    """True if the OS process exists and is not a zombie (its state in /proc/PID/stat)."""
    try:
        with open(f"/proc/{ospid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :][:1] != b"Z"


def pids_with_env(var: str, value: str) -> list[int]:
    """Live (non-zombie) processes whose initial environment has ``var=value``."""
    needle = f"{var}={value}".encode() + b"\0"
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        zombie = stat[stat.rindex(b")") + 2 :][:1] == b"Z"
        if (env.startswith(needle) or b"\0" + needle in env) and not zombie:
            out.append(int(entry))
    return sorted(out)
