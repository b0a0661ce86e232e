"""Applications for the logging tests of ``otpkit run``.

``root``: a scheduler with two jobs - ``hello`` prints a line and appends ``hello
<time>`` to the file named by ``OBS_OUT`` every second; ``boom`` raises every other
second.

``storm``: four processes that each write ``ready <pid>`` to ``OBS_OUT``, wait for the
file ``OBS_GO`` (a POSIX time, which the test writes once all four are ready), log a
traceback of about 20 KB at that moment, then write ``logged <pid>``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import otpkit
from otpkit import Actor, ChildSpec, Supervisor
from otpkit.scheduler import Job, Scheduler

log = logging.getLogger("observe_app")

#: What every storm traceback carries, so the test can find each one whole.
STORM_SIZE = 20_000


def hello() -> None:
    print(f"hello from the task in {os.getpid()}")
    with open(os.environ["OBS_OUT"], "a", encoding="utf-8") as f:
        f.write(f"hello {time.time():.3f}\n")


def boom() -> None:
    raise RuntimeError("boom: the task failed on purpose")


def root() -> list[Any]:
    return [
        Scheduler(
            name="obs",
            jobs=[
                Job("hello", "* * * * * *", "tests.harness.observe_app:hello"),
                Job("boom", "*/2 * * * * *", "tests.harness.observe_app:boom"),
            ],
        )
    ]


def _deep(n: int, payload: str) -> None:
    if n == 0:
        raise ValueError(payload)
    _deep(n - 1, payload)


class Storm(Actor):
    def init(self, index: int) -> None:
        self.index = index
        with open(os.environ["OBS_OUT"], "a", encoding="utf-8") as f:
            f.write(f"ready {os.getpid()}\n")
        otpkit.send_after(0.02, "poll")

    def handle_info(self, msg: Any) -> None:
        if msg == "poll":
            try:
                with open(os.environ["OBS_GO"], encoding="utf-8") as f:
                    at = float(f.read())
            except (OSError, ValueError):
                otpkit.send_after(0.02, "poll")
                return
            otpkit.send_after(max(0.0, at - time.time()), "go")
            return
        marker = f"storm-{self.index}-"
        payload = marker + "x" * (STORM_SIZE - 2 * len(marker)) + marker + "end"
        try:
            _deep(40, payload)
        except ValueError:
            log.exception("storm %d: a large traceback", self.index)
        with open(os.environ["OBS_OUT"], "a", encoding="utf-8") as f:
            f.write(f"logged {os.getpid()}\n")


def storm() -> ChildSpec:
    children = [ChildSpec(f"storm{i}", Storm, (i,)) for i in range(4)]
    return ChildSpec("storms", Supervisor, kwargs={"children": children})
