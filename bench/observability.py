"""What the node's one log writer and its metrics cost, against the design it replaced.

Figures (``python -m bench.observability [--quick]``):

* ``log_records_per_s``: 4 processes forked from a program with a ``LogWriter`` each log
  records (one line, or a 20 KB traceback) as fast as they can; the writer writes them
  to a file in the text format; the time runs until the last record is in the file.
  Peer, same run: no writer - the 4 processes write their formatted lines straight into
  one pipe (what a container's stderr is) through a ``logging.StreamHandler``, copied
  to a file - and how many of its lines came out torn (a write over the pipe's atomic
  4 KiB is split, and pieces of different processes interleave).
* ``metric_update_us``: one ``metrics.gauge`` call in a sending process (a datagram).
* ``exposition_ms_1000_jobs``: ``/metrics`` of a node with 1,000 jobs' series (the run
  counter by outcome, two histograms, three counters each), as ``otpkit run`` builds it.

Each figure is the median of ``--runs`` runs, with the spread.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prometheus_client

from otpkit import metrics
from otpkit.actors import _logs

PROCESSES = 4


def _children(body: Callable[[], None]) -> float:
    """Run ``body`` in PROCESSES forked children at once; seconds until all ended."""
    began = time.perf_counter()
    pids = []
    for _ in range(PROCESSES):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                body()
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    return time.perf_counter() - began


def _payload(big: bool) -> tuple[str, Any]:
    if not big:
        return "a record of an ordinary size: job=report tick=2026-12-05T12:00:00Z", None
    try:
        raise ValueError("x" * 20_000)
    except ValueError as exc:
        return "a large traceback", (type(exc), exc, exc.__traceback__)


def through_writer(count: int, big: bool, workdir: Path) -> tuple[float, int]:
    """(records/s, records in the file) through the node's writer."""
    path = workdir / "writer.log"
    path.unlink(missing_ok=True)
    writer = _logs.LogWriter("bench@127.0.0.1", str(path))
    message, exc_info = _payload(big)

    def body() -> None:
        root = logging.getLogger()
        root.handlers[:] = [_logs.SinkHandler()]
        root.setLevel(logging.INFO)
        log = logging.getLogger("bench")
        for _ in range(count):
            log.info(message, exc_info=exc_info)

    began = time.perf_counter()
    _children(body)
    writer.forked()
    deadline = time.monotonic() + 60
    want = PROCESSES * count
    while time.monotonic() < deadline and _records(path) < want:
        time.sleep(0.005)
    took = time.perf_counter() - began  # until the last record is in the file
    written = _records(path)
    writer.close()
    return want / took, written


def _records(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for line in f if line[:4].isdigit())


def direct(count: int, big: bool, workdir: Path) -> tuple[float, int]:
    """(records/s, torn lines) without a writer: every process writes its lines to one
    pipe (a container's stderr), which a thread copies into a file."""
    path = workdir / "direct.log"
    path.unlink(missing_ok=True)
    message, exc_info = _payload(big)
    read_end, write_end = os.pipe()

    def copy() -> None:
        with open(path, "wb") as out:
            while chunk := os.read(read_end, 1 << 16):
                out.write(chunk)

    copier = threading.Thread(target=copy)
    copier.start()

    def body() -> None:
        os.close(read_end)
        stream = os.fdopen(write_end, "w", encoding="utf-8")
        handler = logging.StreamHandler(stream)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
        )
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        log = logging.getLogger("bench")
        for _ in range(count):
            log.info(message, exc_info=exc_info)
        stream.close()

    began = time.perf_counter()
    _children(body)
    os.close(write_end)
    copier.join()
    took = time.perf_counter() - began
    os.close(read_end)
    torn = 0
    for line in path.read_bytes().splitlines():
        # a record's line, a traceback's line, or its last line: anything else is torn
        if not (
            line[:4].isdigit()
            or line.startswith((b"Traceback", b"  "))
            or line == b"ValueError: " + b"x" * 20_000
        ):
            torn += 1
    return PROCESSES * count / took, torn


def metric_update_us(count: int) -> float:
    """One update's cost in the sending process."""
    service = metrics.Service()
    try:
        began = time.perf_counter()
        for i in range(count):
            metrics.gauge("otpkit_quorum_members", None, i % 7)
        return (time.perf_counter() - began) / count * 1e6
    finally:
        service.close()


def exposition_ms(jobs: int) -> float:
    """``/metrics`` of 1,000 jobs' series, as ``otpkit run`` builds it (no ``_created``)."""
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    service = metrics.Service()
    try:
        for j in range(jobs):
            labels = {"scheduler": "s", "job": f"job-{j}"}
            for outcome in ("finished", "failed"):
                service.apply(_update(1, "otpkit_job_runs_total", [*labels.values(), outcome]))
            for name in ("otpkit_job_run_duration_seconds", "otpkit_job_fire_lateness_seconds"):
                service.apply(_update(3, name, list(labels.values()), 0.2))
            for name in (
                "otpkit_job_ticks_missed_total",
                "otpkit_job_ticks_skipped_total",
                "otpkit_job_retries_total",
            ):
                service.apply(_update(1, name, list(labels.values())))
        began = time.perf_counter()
        service.exposition()
        return (time.perf_counter() - began) * 1000
    finally:
        service.close()


def _update(op: int, name: str, values: list[str], value: float = 1.0) -> bytes:
    import msgpack  # noqa: PLC0415

    return bytes(msgpack.packb([op, name, values, value]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer records, 3 runs")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    count = 2_000 if args.quick else 10_000
    got: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="otpkit-bench-") as tmp:
        work = Path(tmp)
        for _ in range(runs):
            for big in (False, True):
                n = count if not big else count // 20
                kind = "tracebacks_20kb" if big else "lines"
                rate, written = through_writer(n, big, work)
                got.setdefault(f"log_{kind}_per_s", []).append(rate)
                got.setdefault(f"log_{kind}_lost", []).append(PROCESSES * n - written)
                rate, torn = direct(n, big, work)
                got.setdefault(f"peer_log_{kind}_per_s", []).append(rate)
                got.setdefault(f"peer_log_{kind}_torn", []).append(torn)
            got.setdefault("metric_update_us", []).append(metric_update_us(20_000))
            got.setdefault("exposition_ms_1000_jobs", []).append(exposition_ms(1000))

    def med(name: str) -> float:
        return statistics.median(got[name])

    for name, values in sorted(got.items()):
        print(
            f"{name}: median {med(name):.1f} (min {min(values):.1f}, max {max(values):.1f})",
            file=sys.stderr,
        )
    for kind in ("lines", "tracebacks_20kb"):
        value, peer = med(f"log_{kind}_per_s"), med(f"peer_log_{kind}_per_s")
        row = {
            "figure": f"log_{kind}_per_s",
            "value": round(value),
            "unit": "records/s",
            "peer": "direct_to_pipe",
            "peer_value": round(peer),
            "ratio": round(value / peer, 2),
            "lost": max(got[f"log_{kind}_lost"]),
            "peer_torn_lines": max(got[f"peer_log_{kind}_torn"]),
        }
        print(json.dumps(row))
    for name, unit in (("metric_update_us", "us"), ("exposition_ms_1000_jobs", "ms")):
        print(json.dumps({"figure": name, "value": round(med(name), 2), "unit": unit}))


if __name__ == "__main__":
    main()
