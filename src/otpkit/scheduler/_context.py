"""The run a task is executing, for tasks that want to know their tick."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["RunInfo", "current_run"]


@dataclass(frozen=True)
class RunInfo:
    """The run in progress in this worker process: the ``job``, its ``tick`` (the
    scheduled instant, UTC), the ledger ``lane`` (a node name for ``run_strategy="all"``,
    ``"@manual"`` for ``run_job``, else None)."""

    job: str
    tick: datetime
    lane: str | None


_current: RunInfo | None = None


def current_run() -> RunInfo | None:
    """The run this task function is executing, or None outside a scheduled run."""
    return _current


def _enter(info: RunInfo | None) -> None:
    global _current
    _current = info
