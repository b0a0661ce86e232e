"""Test helpers: poll for a condition with a deadline, never a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from otpkit.actors._runtime import proc_stat

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


def alive(ospid: int) -> bool:
    """True if the OS process exists and is not a zombie."""
    fields = proc_stat(ospid)
    return fields is not None and fields[0] != b"Z"
