"""The operations suite's figures (issue 12), on real ``otpkit run`` nodes in network
namespaces with a real dnsmasq (needs root, ``dnsmasq-base`` and ``nftables``).

    python -m bench.operations [--quick] [--only FIGURE ...]

The scenarios are the suite's own (``tests/harness/operations.py``, which
``tests/netns/test_quorum_operations_netns.py`` runs as tests): three nodes as the
Kubernetes example's StatefulSet runs them (``tests/harness/netns_run_cluster.py``), a
majority Scheduler with one per-second job whose runs go to one file, a recorder of the
scheduler's events on every node. They run one after the other on one cluster (a new
one after a scenario that found a problem), each from a healthy cluster (every node
ready and meshed, one node ticking), and each checks the issue's invariant over its
window: no tick ran twice, every tick missing from the run file was reported missed or
interrupted, the ticks resume.

* ``rolling_restart_missed_ticks`` (goal 0) and ``rolling_restart_lateness_ms_max``
  (goal <= 250; run start - tick over the roll, the hand-over runs included): (a) two
  rounds of a rolling restart, the next node SIGTERMed as soon as the previous one
  answers ready (one round with ``--quick``).
* ``overlap_restart_recovery_s``: (b) every node SIGTERMed at once and each started again
  once it exited; from a majority of the new processes answering ``/healthz/live`` to the
  run that ends the gap in the ticks, 0 if that was earlier (goal <= 2 * (term +
  margin) + settle = 12 s).
* ``nonholder_cut_missed_ticks`` (goal 0): (f) a node that does not run the ticks cut
  off (nftables) for 10 s, healed, 6 s more.
* ``sigstop_failover_label_gap_s_max`` (goal <= term + 1 s = 4 s): (g) every process of
  the holder's node SIGSTOPped 8 s then SIGCONTed, 10 times (2 with ``--quick``); the
  largest difference between consecutive tick labels in the run file over the freezes.
* ``minority_disk_full_missed_ticks`` (goal 0) and ``rolling_update_missed_ticks``
  (goal 0): scenarios (h) and (i), built with their tests
  (``tests/netns/test_operations_disk_netns.py``, ``..._upgrade_netns.py``). They make
  clusters of their own (tmpfs data dirs; a next-release build) and plug in through
  :data:`PLUGINS`: ``tests.harness.operations_disk:plugin`` and
  ``tests.harness.operations_upgrade:plugin``, each a function ``(workdir: Path, quick:
  bool) -> Outcome`` that puts its figure in ``Outcome.figures``. A plug-in that cannot
  be imported prints its figure with value ``null`` and a ``note``.

Each figure's line is ``{"figure", "value", "unit"}`` (no peer: no other system runs these
operations). The summary on stderr has every scenario's report, its wall time, and the
problems it found (the exit status is 1 if any). The nodes' files (logs, run file,
events) are kept after a run with problems, and with ``OTPKIT_BENCH_KEEP=1``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import operations as ops
from tests.harness.netns_run_cluster import RunCluster, run_cluster_in
from tests.harness.operations import Outcome


@dataclass(frozen=True)
class Scenario:
    """A scenario on the shared cluster and the figures (with units) it yields."""

    name: str
    figures: dict[str, str]
    run: Callable[[RunCluster, bool], Outcome]


SCENARIOS = [
    Scenario(
        "(a) rolling restart",
        {"rolling_restart_missed_ticks": "ticks", "rolling_restart_lateness_ms_max": "ms"},
        lambda rc, quick: ops.rolling_restart(rc, rounds=1 if quick else 2),
    ),
    Scenario(
        "(b) overlapping restart",
        {"overlap_restart_recovery_s": "s"},
        lambda rc, quick: ops.overlapping_restart(rc),
    ),
    Scenario(
        "(f) non-holder cut",
        {"nonholder_cut_missed_ticks": "ticks"},
        lambda rc, quick: ops.nonholder_cut(rc, seconds=10.0),
    ),
    Scenario(
        "(g) SIGSTOP of the holder's node",
        {"sigstop_failover_label_gap_s_max": "s"},
        lambda rc, quick: ops.sigstop_holder(rc, freezes=2 if quick else 10, seconds=8.0),
    ),
]


@dataclass(frozen=True)
class Plugin:
    """A scenario that makes its own cluster: ``target`` names a function
    ``(workdir: Path, quick: bool) -> Outcome`` as ``"module:function"``."""

    figure: str
    unit: str
    target: str


#: The hooks of scenarios (h) and (i), each built with its test: a target that cannot be
#: imported yields a ``null`` figure with a note.
PLUGINS = [
    Plugin("minority_disk_full_missed_ticks", "ticks", "tests.harness.operations_disk:plugin"),
    Plugin("rolling_update_missed_ticks", "ticks", "tests.harness.operations_upgrade:plugin"),
]


def load(target: str) -> Callable[[Path, bool], Outcome] | None:
    module, _, attr = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    return fn if callable(fn) else None


def line(figure: str, value: Any, unit: str, note: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"figure": figure, "value": value, "unit": unit}
    if note:
        out["note"] = note
    return out


def say(*lines: str) -> None:
    for text in lines:
        print(text, file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one round, two freezes")
    ap.add_argument("--only", nargs="*", default=None, help="these figures' scenarios only")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 1
    wanted = set(args.only) if args.only else None
    keep = bool(os.environ.get("OTPKIT_BENCH_KEEP"))
    load_before = os.getloadavg()[0]
    figures: list[dict[str, Any]] = []
    failed: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="otpkit-bench-ops-"))
    t0 = time.time()
    try:
        chosen = [s for s in SCENARIOS if wanted is None or wanted & set(s.figures)]
        clusters = contextlib.ExitStack()
        rc: RunCluster | None = None
        with clusters:
            for n, s in enumerate(chosen):
                if rc is None:  # the first one, or the last one went wrong: a new cluster
                    work = tmp / f"cluster{n}"
                    work.mkdir()
                    rc = clusters.enter_context(run_cluster_in(work))
                    ops.boot(rc)
                try:
                    out = s.run(rc, args.quick)
                except AssertionError as exc:  # the harness gave up (diagnostics inside)
                    failed.append(f"{s.name}: {exc}")
                    figures += [
                        line(f, None, u, "the scenario did not finish")
                        for f, u in s.figures.items()
                    ]
                    out = None
                if out is not None:
                    say(out.text(), *(f"  PROBLEM: {p}" for p in out.problems))
                    failed += [f"{s.name}: {p}" for p in out.problems]
                    figures += [line(f, out.figures.get(f), u) for f, u in s.figures.items()]
                if out is None or out.problems:
                    say(f"(after {s.name}: a new cluster for the next scenario)")
                    clusters.close()
                    rc = None
        for p in PLUGINS:
            if wanted is not None and p.figure not in wanted:
                continue
            fn = load(p.target)
            if fn is None:
                figures.append(line(p.figure, None, p.unit, f"not built: no {p.target}"))
                continue
            work = tmp / p.figure
            work.mkdir()
            try:
                out = fn(work, args.quick)
            except AssertionError as exc:
                failed.append(f"{p.figure}: {exc}")
                figures.append(line(p.figure, None, p.unit, "the scenario did not finish"))
                continue
            say(out.text(), *(f"  PROBLEM: {x}" for x in out.problems))
            failed += [f"{p.figure}: {x}" for x in out.problems]
            figures.append(line(p.figure, out.figures.get(p.figure), p.unit))
    finally:
        say(
            f"operations: {time.time() - t0:.0f} s; loadavg(1 min) {load_before:.2f} before, "
            f"{os.getloadavg()[0]:.2f} after; nodes' files: {tmp}"
            + ("" if keep or failed else " (removed)")
        )
        if not (keep or failed):
            with contextlib.suppress(OSError):
                shutil.rmtree(tmp)
    for fig in figures:
        print(json.dumps(fig), flush=True)
    if failed:
        say("problems:", *failed)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
