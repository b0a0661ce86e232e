"""Tasks for the scheduler tests (``"tests.harness.scheduler_tasks:record"``): each
appends its own record of the run to a file."""

from __future__ import annotations

import os
import random
import time

import otpkit
from otpkit.scheduler import current_run


def _line(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)


def record(path: str, seconds: float = 0.0) -> None:
    """Append ``tick node pid start end`` (the tick as an ISO time) after ``seconds``."""
    start = time.time()
    run = current_run()
    node = otpkit.self().node
    _line(path, f"start {run.tick.isoformat() if run else '-'} {node} {os.getpid()} {start}")
    if seconds:
        time.sleep(seconds)
    end = time.time()
    tick = run.tick.isoformat() if run else "-"
    lane = run.lane if run and run.lane else "-"
    _line(path, f"run {tick} {node} {os.getpid()} {start} {end} {lane}")


def fail(path: str) -> None:
    _line(path, f"fail {time.time()}")
    raise RuntimeError("the task failed on purpose")


def _tried(path: str, tick: str) -> int:
    """The failed attempts of ``tick`` already in the file (its ``try`` lines)."""
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.startswith(f"try {tick} "))


def flaky(path: str, fails: int) -> None:
    """Fail the first ``fails`` attempts of each tick, then succeed: each attempt appends
    ``try tick node pid start end`` (a failing one) or ``run tick node pid start end lane``.
    The attempts of one tick are told apart by the lines already in the file."""
    start = time.time()
    run = current_run()
    tick = run.tick.isoformat() if run else "-"
    node = otpkit.self().node
    tried = _tried(path, tick)
    if tried < fails:
        _line(path, f"try {tick} {node} {os.getpid()} {start} {time.time()}")
        raise RuntimeError(f"attempt {tried + 1} of {tick} fails on purpose")
    lane = run.lane if run and run.lane else "-"
    _line(path, f"run {tick} {node} {os.getpid()} {start} {time.time()} {lane}")


def dice(path: str, odds: float, seed: int) -> None:
    """Fail each attempt with probability ``odds``, drawn from ``seed``, the tick and the
    attempts of the tick already in the file (so a replay fails the same attempts);
    lines as :func:`flaky`."""
    start = time.time()
    run = current_run()
    tick = run.tick.isoformat() if run else "-"
    node = otpkit.self().node
    tried = _tried(path, tick)
    if random.Random(f"{seed}:{tick}:{tried}").random() < odds:
        _line(path, f"try {tick} {node} {os.getpid()} {start} {time.time()}")
        raise RuntimeError(f"attempt {tried + 1} of {tick} lost the draw")
    _line(path, f"run {tick} {node} {os.getpid()} {start} {time.time()} -")
