"""The example's task: one line per tick in the node's log (stderr: `kubectl logs`)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import otpkit
from myapp.tree import ZONE
from otpkit.scheduler import current_run


def hello() -> None:
    """Say which node ran which tick (the tick in the job's zone)."""
    run = current_run()
    tick = run.tick.astimezone(ZoneInfo(ZONE)).isoformat() if run is not None else "-"
    print(f"myapp: hello from {otpkit.self().node} for the tick {tick}", flush=True)
