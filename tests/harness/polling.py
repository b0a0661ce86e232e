"""Waiting for a condition: poll it with a deadline, never a bare sleep.

``wait_until`` (a default bound, for the loopback tiers) and ``wait_for`` (the bound and
what is awaited always given, with an optional ``diagnose`` for the failure message)
return the condition's first truthy value; ``hold`` checks that one stays true."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(
    cond: Callable[[], T], timeout: float = 10.0, interval: float = 0.01, what: str = ""
) -> T:
    """Poll ``cond`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not true within {timeout}s: {what or cond} (last: {last!r})")


def wait_for(
    cond: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.05,
    diagnose: Callable[[], str] | None = None,
) -> T:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = cond()
        if last:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    extra = f"\n{diagnose()}" if diagnose else ""
    raise AssertionError(f"not true within {timeout}s: {what} (last: {last!r}){extra}")


def hold(
    cond: Callable[[], T],
    seconds: float,
    what: str,
    interval: float = 0.1,
    diagnose: Callable[[], str] | None = None,
) -> int:
    """Check ``cond`` again and again for ``seconds``; fail at the first falsy answer.
    Returns how many checks passed (at least one)."""
    deadline = time.monotonic() + seconds
    checks = 0
    while True:
        last = cond()
        if not last:
            extra = f"\n{diagnose()}" if diagnose else ""
            raise AssertionError(
                f"stopped being true after {checks} checks: {what} (last: {last!r}){extra}"
            )
        checks += 1
        if time.monotonic() >= deadline:
            return checks
        time.sleep(interval)
