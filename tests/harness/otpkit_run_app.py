"""An application for the ``otpkit run`` tests (``otpkit run
tests.harness.otpkit_run_app:root``): a supervisor with one worker that writes
its OS pid to the file named by ``CLI_APP_OUT`` and ``stopped`` when it is shut down,
``CLI_APP_STOP_DELAY`` seconds (default 0) after it was asked to."""

from __future__ import annotations

import os
import time
from typing import Any

import otpkit
from otpkit import Actor, ChildSpec, Supervisor


class Worker(Actor):
    def init(self) -> None:
        otpkit.trap_exit(True)  # terminate runs on shutdown
        self.path = os.environ["CLI_APP_OUT"]
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"started {os.getpid()}\n")

    def terminate(self, reason: Any) -> None:
        time.sleep(float(os.environ.get("CLI_APP_STOP_DELAY", "0")))
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"stopped {os.getpid()} {reason}\n")


root = ChildSpec(
    "app", Supervisor, kwargs={"children": [ChildSpec("worker", Worker)], "strategy": "one_for_one"}
)


def not_a_tree() -> Any:
    return 42
