"""Retries: whether a failed attempt is tried again, and when.

Pure. A job with ``max_attempts > 1`` gets another attempt of the same tick when an
attempt's outcome is known to be over: its task raised (``failed`` with ``raised``), or
it ran past its timeout and the pool saw its worker die after the kill (``timed_out``,
which the pool reports only then). An attempt whose outcome is unknown - its node lost
or cut off, its run gone from a pool that restarted - is ``interrupted`` and never tried
again: it may still be running. Each attempt is claimed in the ledger before it is sent
(``_ledger_attempts.start_all``), so a tick still has one run, made of its attempts.
"""

from __future__ import annotations

import random

__all__ = ["PROTOCOL_FEATURES", "RETRIED_OUTCOMES", "backoff_delay", "may_retry"]

#: The dist protocol whose nodes know attempts and the run history: while a member
#: speaks an older one (a rolling update from the previous release), the holder writes
#: neither, and a failed attempt is final.
PROTOCOL_FEATURES = 4
#: The outcomes an attempt may be retried after (see :func:`may_retry`).
RETRIED_OUTCOMES = ("failed", "timed_out")


def may_retry(outcome: str, raised: bool, attempt: int, max_attempts: int) -> bool:
    """Whether attempt ``attempt`` (1-based) that ended ``outcome`` gets another:
    attempts are left, and the attempt is known to be over: ``failed`` with ``raised``
    (the task, or importing it, raised; a worker that died mid-run is not retried), or
    ``timed_out`` (the pool reports that once its worker is gone)."""
    if attempt >= max_attempts:
        return False
    if outcome == "failed":
        return raised
    return outcome == "timed_out"


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds from the end of failed attempt ``attempt`` to the start of the next:
    exponential with jitter, a random value in ``[d / 2, d]`` with
    ``d = min(cap, base * 2 ** (attempt - 1))`` (half of it fixed, so a retry never
    comes at once; half random, so the retries of many ticks spread out)."""
    exponent = min(max(attempt - 1, 0), 64)
    ceiling = min(cap, base * (2.0**exponent))
    draw = (rng or random).random()
    return ceiling / 2 + draw * ceiling / 2
