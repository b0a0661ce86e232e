"""The supervisor's decisions as pure functions of plain values (no processes, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from otpkit.actors import is_normal_exit


def add_restart(
    restarts: Sequence[float], now: float, intensity: int, period: float
) -> tuple[bool, tuple[float, ...]]:
    """Count one restart at ``now``; say whether it stays within the intensity.

    As OTP's ``add_restart``: the restart is counted before it is attempted; restarts
    older than ``period`` seconds drop out of the window (inclusive at the edge); the
    (intensity+1)-th restart inside the window is refused. Returns ``(allowed, window)``.
    """
    window = (now, *(r for r in restarts if r >= now - period))
    return len(window) <= intensity, window


def needs_restart(restart: str, reason: Any) -> bool:
    """Whether a child of this restart type is restarted after exiting with ``reason``."""
    if restart == "permanent":
        return True
    if restart == "transient":
        return not is_normal_exit(reason)
    return False


def restart_plan(strategy: str, order: Sequence[Any], failed: Any) -> tuple[list[Any], list[Any]]:
    """Which children a strategy stops and starts again when ``failed`` exits.

    ``order`` is the start order of the supervisor's children. Returns ``(stop, start)``:
    the siblings to stop, in reverse start order, and the children to start, in start
    order (``failed`` included).
    """
    if strategy in ("one_for_one", "simple_one_for_one"):
        return [], [failed]
    index = list(order).index(failed)
    if strategy == "one_for_all":
        affected = list(order)
    elif strategy == "rest_for_one":
        affected = list(order)[index:]
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    stop = [cid for cid in reversed(affected) if cid != failed]
    return stop, affected


def auto_shutdown_due(
    auto_shutdown: str,
    significant: bool,
    restarted: bool,
    other_significant_alive: bool,
) -> bool:
    """Whether a child that ended by itself makes the supervisor shut down.

    Only a significant child that ended on its own and is not restarted counts (a
    transient one exiting normally, a temporary one for any reason). ``any_significant``
    shuts down on the first; ``all_significant`` when no other significant child is
    left alive.
    """
    if auto_shutdown == "never" or not significant or restarted:
        return False
    if auto_shutdown == "any_significant":
        return True
    return not other_significant_alive
