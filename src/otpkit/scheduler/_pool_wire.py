"""The task pool's messages and the pure rules of its runs: no processes, no clock.

A pool's name (:func:`pool_name`) and the check of its arguments
(:func:`check_pool_args`); what it takes, as Protocols (:data:`INFOS`, :data:`CASTS`,
:data:`CALLS`, a worker's :data:`WORKER_INFOS`) and the shapes of their fields, which
the scheduler's own messages reuse; a run and its report (:class:`Run`,
:class:`Report`); the parsers of a run and of an ack's item (:func:`parse_key`,
:func:`parse_id`, :func:`parse_run`, :func:`parse_ack`); whether a run is taken
(:func:`admission`), the report of a worker killed on its timeout
(:func:`killed_report`), the timers of a run's timeout (:func:`timeout_delay`,
:func:`timer_step`) and the text of a task's failure (:func:`failure_text`). The actor
is :class:`~otpkit.scheduler._pool.TaskPool`; its reports to the holder are in
:mod:`~otpkit.scheduler._pool_outbox`.

**Runs.** The holder of the scheduler asks for a run with ``("run", run)`` (a plain
message or a cast); ``run`` is a dict::

    {"key": [job, at, node], "task": "module:function", "args": [...],
     "kwargs": {...}, "timeout": seconds | None, "epoch": int, "attempt": int}

``key`` names the tick: ``job`` (a non-empty str), ``at`` (its tick, an aware datetime)
and ``node`` (a non-empty str or None). Keys compare as tuples ``(job, at, node)`` with
``at`` in UTC; every key the pool sends is such a plain tuple. ``attempt`` (1 to
:data:`~otpkit.scheduler._ledger.MAX_ATTEMPT`, default 1: the previous release sends
none) numbers the tick's attempts; a run is ``(key, attempt)``. A run that is queued,
running or unacknowledged in the outbox is ignored (dispatching twice runs once); a run
of a key another attempt of which is queued or running is dropped (a tick runs one
attempt at a time); another attempt of a key whose report waits in the outbox is a new
run. A message that is not a run with a well-formed key and attempt is logged and
dropped; a run with a good key but another bad field finishes at once as ``"failed"``,
naming the field.

**Introspection.** ``call(pool, ("state",))`` returns ``{"running": [key...],
"queued": [key...], "attempts": [[job, at, node, attempt]...], "outbox": [[key,
outcome, start, end, error, attempt]...], "incarnation": str, "workers": [pid...]}``:
``running`` and ``queued`` list keys (any attempt), ``attempts`` the attempt of each
running and queued run; ``incarnation`` is unique per start of the pool, so a new
holder can tell a pool that lost its runs (restarted) from one that still has them.

**Malformed messages.** Every message, cast and call is checked against the pool's
protocol (:data:`INFOS`, :data:`CASTS`, :data:`CALLS`; a worker's: :data:`WORKER_INFOS`)
before it is acted on: a call that does not fit is answered
``("error", "bad task pool call: ...")``, a message or cast is dropped with one WARNING a
minute (counting the rest). A run's dict is judged by its fields as above. The pool's
own timer for a killed worker is a Python object, which no other process can send.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from otpkit.actors import Pid, shapes
from otpkit.scheduler._history import ERROR_TAIL, MAX_JOB_NAME, tail
from otpkit.scheduler._ledger import MAX_ATTEMPT, MAX_STAMP

__all__ = [
    "ACK_ITEM",
    "ATTEMPT",
    "CALLS",
    "CASTS",
    "DEATH_WAIT",
    "EPOCH",
    "ERROR_LIMIT",
    "INFOS",
    "JOB_NAME",
    "NODE_NAME",
    "RUN_KEY",
    "TRACEBACK",
    "WALL_TIME",
    "WORKER_INFOS",
    "Report",
    "Run",
    "RunId",
    "RunKey",
    "admission",
    "check_pool_args",
    "describe",
    "failure_text",
    "killed_report",
    "parse_ack",
    "parse_attempt",
    "parse_id",
    "parse_key",
    "parse_run",
    "pool_name",
    "timeout_delay",
    "timer_step",
]

#: The longest error text a report carries.
ERROR_LIMIT = 500
#: Seconds a worker killed on a timeout has to be seen gone before its run is reported
#: ``failed`` instead of ``timed_out``.
DEATH_WAIT = 5.0
#: The longest timer the pool arms at once: a longer run timeout is armed in steps.
_TIMER_STEP = 86_400.0

#: A tick's identity: ``(job, at in UTC, node or None)``.
RunKey = tuple[str, datetime, str | None]
#: A run's identity: its tick's key and its attempt.
RunId = tuple[RunKey, int]

_PREFIX = "otpkit_pool:"
# local names are at most 48 characters (otpkit.register)
_MAX_SCHEDULER = 48 - len(_PREFIX)


def pool_name(scheduler: str) -> str:
    """The local name and dist service of ``scheduler``'s task pool on every node."""
    return f"{_PREFIX}{scheduler}"


def check_pool_args(scheduler: Any, max_concurrency: Any, queue_limit: Any) -> None:
    """Check the arguments of a task pool (see ``TaskPool``).

    Raises:
        ValueError: naming the argument with a bad value.
    """
    if (
        not isinstance(scheduler, str)
        or not scheduler
        or len(scheduler) > _MAX_SCHEDULER
        or "/" in scheduler
        or "\0" in scheduler
    ):
        raise ValueError(
            f"scheduler={scheduler!r}: expected a non-empty str of at most "
            f"{_MAX_SCHEDULER} characters without '/' or NUL"
        )
    if (
        not isinstance(max_concurrency, int)
        or isinstance(max_concurrency, bool)
        or max_concurrency < 1
    ):
        raise ValueError(f"max_concurrency={max_concurrency!r}: expected an int >= 1")
    if not isinstance(queue_limit, int) or isinstance(queue_limit, bool) or queue_limit < 0:
        raise ValueError(f"queue_limit={queue_limit!r}: expected an int >= 0")


# ---------------------------------------------------------------------- protocols

#: A job's name (``Job`` does not bound it; this keeps out only absurd ones).
JOB_NAME = shapes.Str(MAX_JOB_NAME, min_len=1)
#: A node's name (``app@host``: at most 255 characters, see the handshake).
NODE_NAME = shapes.Str(255, min_len=1)
#: A scheduler's write epoch (``era * 2**32 + lease``), as the ledger takes it.
EPOCH = shapes.Int(0, MAX_STAMP)
#: A wall-clock time in seconds since 1970 (``time.time()``), up to the year 5138.
WALL_TIME = shapes.Num(0, 1e11)
#: A run's key as the pool sends it and the holder acks it: ``[job, at, node]`` (its
#: node: None, a node's name, or a manual run's lane, ``@manual:<node>``).
RUN_KEY = shapes.Tup((JOB_NAME, datetime, shapes.Opt(shapes.Str(1024, min_len=1))))
#: An attempt of a tick, as the ledger numbers them.
ATTEMPT = shapes.Int(1, MAX_ATTEMPT)
#: A failure's traceback as a report carries it (its last lines).
TRACEBACK = shapes.Opt(shapes.Str(ERROR_TAIL))
#: An item of an ack: a key (every attempt of it) or a key and an attempt.
ACK_ITEM = shapes.Either((RUN_KEY, shapes.Tup((*RUN_KEY.items, ATTEMPT))))

#: The casts a pool takes (also as plain messages): a run from the holder (a dict, its
#: fields judged by :func:`parse_id` and :func:`parse_run`), the holder's ack.
CASTS = shapes.Protocol(
    "task pool cast",
    shapes.Shape("run", (shapes.Map(shapes.Str(64), shapes.ANY, 64),)),
    shapes.Shape("ack", (shapes.Seq(ACK_ITEM),)),
)
#: The plain messages a pool takes besides ``NodeUp``, ``NodeDown`` and its timer for a
#: killed worker: its casts, its workers' reports (``done`` with whether the task raised
#: and its traceback) and its own timers.
INFOS = shapes.Protocol(
    "task pool message",
    *CASTS.shapes.values(),
    shapes.Shape("started", (Pid, RUN_KEY, WALL_TIME)),
    shapes.Shape(
        "done",
        (
            Pid,
            RUN_KEY,
            shapes.Const(("finished", "failed")),
            shapes.Opt(WALL_TIME),
            WALL_TIME,
            shapes.Opt(shapes.Str(ERROR_LIMIT)),
            bool,
            TRACEBACK,
        ),
        optional=2,
    ),
    shapes.Shape("$timeout", (Pid, RUN_KEY, ATTEMPT)),
    shapes.Shape("$resend"),
    shapes.Shape("$respawn"),
)
#: The calls a pool answers: its state, with the epoch of the holder asking (refuse
#: runs of older holders from then on).
CALLS = shapes.Protocol("task pool call", shapes.Shape("state", (EPOCH,), optional=1))
#: What a pool's worker process takes: a run (key, task, args, kwargs), as checked by
#: the pool (so no run the pool hands over is refused).
WORKER_INFOS = shapes.Protocol(
    "task pool worker message",
    shapes.Shape("run", (RUN_KEY, str, shapes.Either((tuple, list)), dict)),
)


# ---------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Run:
    """A run request, checked."""

    key: RunKey
    task: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    timeout: float | None
    epoch: int
    attempt: int = 1

    @property
    def id(self) -> RunId:
        return (self.key, self.attempt)


@dataclass(frozen=True)
class Report:
    """How a run ended: an outbox entry."""

    key: RunKey
    outcome: str
    start: float | None
    end: float
    error: str | None
    attempt: int = 1
    raised: bool = False
    traceback: str | None = None

    @property
    def id(self) -> RunId:
        return (self.key, self.attempt)

    def entry(self) -> list[Any]:
        """The entry as ``("state",)`` lists it."""
        return [self.key, self.outcome, self.start, self.end, self.error, self.attempt]


def parse_key(value: Any) -> RunKey:
    """``value`` (a list or tuple ``[job, at, node]``) as a :data:`RunKey`, ``at`` in UTC.

    Raises:
        ValueError: naming the bad part.
    """
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ValueError(f"key {value!r}: expected [job, at, node]")
    job, at, node = value
    if not isinstance(job, str) or not job:
        raise ValueError(f"key {value!r}: job {job!r}, expected a non-empty str")
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ValueError(f"key {value!r}: at {at!r}, expected an aware datetime")
    if node is not None and (not isinstance(node, str) or not node):
        raise ValueError(f"key {value!r}: node {node!r}, expected None or a non-empty str")
    try:
        utc = at.astimezone(UTC)
    except OverflowError:  # 0001-01-01 east of UTC, 9999-12-31 west of it
        raise ValueError(f"key {value!r}: at {at!r}, outside the years 1-9999 in UTC") from None
    return (job, utc, node)


def parse_attempt(value: Any) -> int:
    """``value`` as an attempt number (1 to ``MAX_ATTEMPT``).

    Raises:
        ValueError: naming the value.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ATTEMPT:
        raise ValueError(f"attempt={value!r}: expected an int in 1..{MAX_ATTEMPT}")
    return value


def parse_id(value: dict[Any, Any]) -> RunId:
    """The identity of the run ``value``: its key and its attempt (1 if it names none,
    as the previous release's holders send it).

    Raises:
        ValueError: naming the bad part.
    """
    return (parse_key(value.get("key")), parse_attempt(value.get("attempt", 1)))


def parse_run(key: RunKey, value: dict[Any, Any]) -> Run:
    """The run ``value`` (whose key is ``key``), every field checked.

    Raises:
        ValueError: naming the field with a bad value.
    """
    task = value.get("task")
    if not isinstance(task, str) or not task:
        raise ValueError(f"task={task!r}: expected 'package.module:function'")
    args = value.get("args", ())
    if not isinstance(args, list | tuple):
        raise ValueError(f"args={args!r}: expected a list")
    kwargs = value.get("kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ValueError(f"kwargs={kwargs!r}: expected a dict with str keys")
    timeout = value.get("timeout")
    if timeout is not None and (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ValueError(f"timeout={timeout!r}: expected None or a finite number of seconds > 0")
    epoch = value.get("epoch", 0)
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise ValueError(f"epoch={epoch!r}: expected an int >= 0")
    attempt = parse_attempt(value.get("attempt", 1))
    return Run(key, task, tuple(args), dict(kwargs), timeout, epoch, attempt)


def admission(run: RunId, known: Iterable[Container[RunId]], active: Mapping[RunKey, int]) -> str:
    """What a pool does with run ``run``: ``"again"`` if one of ``known`` holds it
    (queued, running or unacknowledged: dispatching twice runs once), ``"busy"`` if
    another attempt of its key is ``active`` (queued or running: a tick runs one attempt
    at a time), else ``"run"``."""
    if any(run in runs for runs in known):
        return "again"
    if run[0] in active:
        return "busy"
    return "run"


def parse_ack(value: Any) -> tuple[RunKey, int | None]:
    """An ack's item: ``[job, at, node]`` (every attempt: ``None``) or ``[job, at, node,
    attempt]``.

    Raises:
        ValueError: naming the bad part.
    """
    if isinstance(value, list | tuple) and len(value) == 4:
        return parse_key(value[:3]), parse_attempt(value[3])
    return parse_key(value), None


def killed_report(run: Run, start: float | None, end: float, worker: Pid, gone: bool) -> Report:
    """The report of ``run``, whose ``worker`` was killed on its timeout: ``"timed_out"``
    if the worker is known ``gone`` (its exit seen, or ``/proc`` shows no such process),
    else ``"failed"`` (it did not die: its task may still run, so nothing may retry it).
    Neither raised."""
    timeout = f"timed out after {run.timeout} s"
    if gone:
        error = f"{timeout}: worker {worker!r} killed"
        return Report(run.key, "timed_out", start, end, error[:ERROR_LIMIT], run.attempt)
    error = f"{timeout}: worker {worker!r} did not die within {DEATH_WAIT:g} s of its kill"
    return Report(run.key, "failed", start, end, error[:ERROR_LIMIT], run.attempt)


def timeout_delay(at: datetime, timeout: float, now: float) -> float:
    """Seconds from ``now`` (wall clock) until a run due ``at`` has overrun ``timeout``."""
    return max(0.0, at.timestamp() - now) + timeout


def timer_step(delay: float) -> tuple[float, float]:
    """A timer of ``delay`` seconds as its first step (at most :data:`_TIMER_STEP`, which
    any timer can hold) and the seconds left after it."""
    step = min(delay, _TIMER_STEP)
    return step, delay - step


def _error_text(value: Any) -> str:
    """``repr(value)`` cut to :data:`ERROR_LIMIT` (a ``repr`` that raises is named by its
    type: a task's odd exception must not end its worker)."""
    try:
        text = repr(value)
    except Exception:  # any repr may raise; the type still says what failed
        text = f"<{type(value).__name__}: repr failed>"
    return text[:ERROR_LIMIT]


def failure_text(exc: BaseException) -> tuple[str, str | None]:
    """``exc`` as a report carries it: its ``repr`` cut to :data:`ERROR_LIMIT` (the
    error), and the last lines of its traceback, causes included, at most
    ``ERROR_TAIL`` characters cut at a line start (None if it cannot be formatted)."""
    try:
        text: str | None = "".join(traceback.format_exception(exc)).rstrip("\n")
    except Exception:  # a task's odd exception must not end its worker
        text = None
    return _error_text(exc), tail(text)


def describe(key: RunKey, attempt: int = 1) -> str:
    """A run as the pool's log lines name it."""
    job, at, node = key
    more = f" attempt {attempt}" if attempt != 1 else ""
    return f"job {job!r} tick {at.isoformat()} node {node}{more}"
