"""A node for the shell tests: node_driver's driver (same JSON ops over stdin/stdout),
booted with a Scheduler (a JSON config, as ``--scheduler``) and an application
supervisor ``app`` with one ``worker`` beside it - the processes the shell inspects,
kills and restarts. Config ``-`` boots only an ``app`` with a ``sleeper`` whose stop
takes 3 s (a slow request for the shell).

Usage: python -m tests.harness.shell_target_node NAME PORT LOG_DIR COOKIE CONFIG
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import otpkit
from otpkit import Actor, ChildSpec, Supervisor
from tests.harness.node_driver import serve
from tests.harness.scheduler_ops import scheduler_spec

MODULE = "tests.harness.shell_target_node"  # its children's start functions, by name


class Worker(Actor):
    """An application worker that does nothing: something to kill and restart."""


class Sleeper(Actor):
    """A worker whose stop takes ``seconds`` (it traps exits): while a shell restarts or
    terminates it, that request is slow. Each stop appends a line to ``marker``."""

    def init(self, marker: str, seconds: float) -> None:
        otpkit.trap_exit(True)
        self.marker = marker
        self.seconds = seconds

    def terminate(self, reason: Any) -> None:
        with open(self.marker, "a") as f:
            f.write(f"stopping {reason}\n")
        time.sleep(self.seconds)


def children(config: str, log_dir: str) -> list[Any]:
    if config == "-":
        marker = os.path.join(log_dir, "sleeper.stops")
        sleeper = ChildSpec(
            "sleeper", f"{MODULE}:Sleeper", kwargs={"marker": marker, "seconds": 3.0}, shutdown=60
        )
        return [ChildSpec("app", Supervisor, kwargs={"children": [sleeper]}, type="supervisor")]
    app = ChildSpec(
        "app",
        Supervisor,
        kwargs={"children": [ChildSpec("worker", f"{MODULE}:Worker")], "intensity": 5},
        type="supervisor",
    )
    return [scheduler_spec(config), app]


def main() -> None:
    name, port, log_dir, cookie, config = sys.argv[1:6]
    kids = children(config, log_dir)
    node = otpkit.Node(
        name, cookie=cookie, dist_port=int(port), log_dir=log_dir, children=kids
    ).start()
    serve(node, name)


if __name__ == "__main__":
    main()
