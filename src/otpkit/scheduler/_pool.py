"""The per-node task pool: pre-spawned worker processes that run a scheduler's tasks.

One :class:`TaskPool` per scheduler and node, under that node's supervision
(:func:`pool_child_spec`). It is reached locally by its name :func:`pool_name` and from
other nodes as the dist service of the same name: ``send((pool_name(s), node), msg)``
(on a node that runs dist; without it the pool is local only).

**Runs.** The holder of the scheduler asks for a run with ``("run", run)`` (a plain
message or a cast); ``run`` is a dict::

    {"key": [job, at, node], "task": "module:function", "args": [...],
     "kwargs": {...}, "timeout": seconds | None, "epoch": int}

``key`` names the run: ``job`` (a non-empty str), ``at`` (its tick, an aware datetime)
and ``node`` (a non-empty str or None). Keys compare as tuples ``(job, at, node)`` with
``at`` in UTC; every key the pool sends is such a plain tuple. A run whose key is
queued, running or unacknowledged in the outbox is ignored (dispatching twice runs
once). A message that is not a run with a well-formed key is logged and dropped; a run
with a good key but another bad field finishes at once as ``"failed"``, naming the field.

**Execution.** ``max_concurrency`` worker processes are spawned (linked) when the pool
starts, and exactly that many are kept alive. A run goes to an idle worker, else waits
in a FIFO queue of at most ``queue_limit`` runs; a run that finds the queue full
finishes at once as ``"failed"`` with error ``"pool queue full"``. The worker imports
the task (:func:`~otpkit.scheduler._job.load_task`), sleeps until ``at`` if the run came
early (wall clock), takes ``start = time.time()``, tells the pool it started and calls
``task(*args, **kwargs)``: entry into the task function is the run's start. The run
ends ``"finished"``, or ``"failed"`` with ``repr(exception)[:500]`` as its error (the
worker lives on). A task that does not import fails the same way, without a start.

**Timeout.** When a run is handed to a worker with a ``timeout``, the pool arms a timer
of ``max(0, at - now) + timeout`` seconds; if the run is still on that worker when it
fires, the worker is killed (``exit(pid, "kill")``: SIGKILL, a busy task cannot delay
it), a replacement is spawned and the run ends ``"timed_out"``. A worker that dies
mid-run for any other reason ends its run ``"failed"`` with the exit reason, and is
replaced too.

**Reports.** A run that ends goes to the outbox as ``(key, outcome, start, end,
error)``: ``start`` is ``None`` if the task function was never entered, ``error`` is
``None`` for ``"finished"``. The pool sends each entry to the scheduler's holder (the
pid of the global name ``scheduler``, if bound) as::

    ("run_started", node, key, start)                      # once, best effort
    ("run_done", node, key, outcome, start, end, error)    # until acknowledged

where ``node`` is this pool's node name and ``error`` at most :data:`ERROR_LIMIT`
characters. ``run_done`` goes when the run ends and again every :data:`RESEND_EVERY`
seconds (up to half as much more: a tick checks every ``RESEND_EVERY / 2``) while
unacknowledged, to whoever holds the name then; the holder answers ``("ack", [key,
...])`` (a plain message or a cast, keys as lists or tuples) and the pool drops those
entries. A holder must treat a repeated ``run_done`` as one.

**Introspection.** ``call(pool, ("state",))`` returns ``{"running": [key...],
"queued": [key...], "outbox": [[key, outcome, start, end, error]...], "incarnation":
str, "workers": [pid...]}``; ``incarnation`` is unique per start of the pool, so a new
holder can tell a pool that lost its runs (restarted) from one that still has them.

**Malformed messages.** Every message, cast and call is checked against the pool's
protocol (:data:`INFOS`, :data:`CASTS`, :data:`CALLS`; a worker's: :data:`WORKER_INFOS`)
before it is acted on: a call that does not fit is answered
``("error", "bad task pool call: ...")``, a message or cast is dropped with one WARNING a
minute (counting the rest). A run's dict is judged by its fields as above.

**Stop.** ``terminate`` kills every worker and waits until none is left; running tasks
die with them (the holder will find their claims open and report them interrupted).
Workers are also children of the pool's OS process, killed by the kernel if it dies.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from otpkit import actors
from otpkit import distribution as dist
from otpkit.actors import Actor, ExitSignal, From, Pid, proc_stat, shapes
from otpkit.distribution import NET_NAME
from otpkit.errors import OtpkitError
from otpkit.registry import whereis_name
from otpkit.scheduler import _context
from otpkit.scheduler._job import load_task
from otpkit.scheduler._ledger import MAX_STAMP
from otpkit.supervision import ChildSpec

__all__ = [
    "CALLS",
    "CASTS",
    "EPOCH",
    "ERROR_LIMIT",
    "INFOS",
    "JOB_NAME",
    "NODE_NAME",
    "RESEND_EVERY",
    "RUN_KEY",
    "WALL_TIME",
    "WORKER_INFOS",
    "RunKey",
    "TaskPool",
    "parse_key",
    "pool_child_spec",
    "pool_name",
]

log = logging.getLogger("otpkit.scheduler")

#: Seconds between two sends of an unacknowledged ``run_done``.
RESEND_EVERY = 0.5
#: The longest error text a report carries.
ERROR_LIMIT = 500
#: Seconds ``terminate`` waits for killed workers to be gone.
_REAP_WAIT = 2.0
#: Seconds before a failed worker spawn is tried again.
_RESPAWN_AFTER = 1.0
_PREFIX = "otpkit_pool:"
# local names are at most 48 characters (otpkit.register)
_MAX_SCHEDULER = 48 - len(_PREFIX)

#: The longest timer the pool arms at once: a longer run timeout is armed in steps.
_TIMER_STEP = 86_400.0
#: The longest sleep of a worker waiting for its tick (it sleeps again until the tick).
_SLEEP_STEP = 60.0

#: A run's identity: ``(job, at in UTC, node or None)``.
RunKey = tuple[str, datetime, str | None]

# ---------------------------------------------------------------------- protocols

#: A job's name (``Job`` does not bound it; this keeps out only absurd ones).
JOB_NAME = shapes.Str(65_536, min_len=1)
#: A node's name (``app@host``: at most 255 characters, see the handshake).
NODE_NAME = shapes.Str(255, min_len=1)
#: A scheduler's write epoch (``era * 2**32 + lease``), as the ledger takes it.
EPOCH = shapes.Int(0, MAX_STAMP)
#: A wall-clock time in seconds since 1970 (``time.time()``), up to the year 5138.
WALL_TIME = shapes.Num(0, 1e11)
#: A run's key as the pool sends it and the holder acks it: ``[job, at, node]`` (its
#: node: None, a node's name, or a manual run's lane, ``@manual:<node>``).
RUN_KEY = shapes.Tup((JOB_NAME, datetime, shapes.Opt(shapes.Str(1024, min_len=1))))

#: The casts a pool takes (also as plain messages): a run from the holder (a dict, its
#: fields judged by :func:`parse_key` and :func:`parse_run`), the holder's ack.
CASTS = shapes.Protocol(
    "task pool cast",
    shapes.Shape("run", (shapes.Map(shapes.Str(64), shapes.ANY, 64),)),
    shapes.Shape("ack", (shapes.Seq(RUN_KEY),)),
)
#: The plain messages a pool takes: its casts, its workers' reports and its own timers.
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
        ),
    ),
    shapes.Shape("$timeout", (Pid, RUN_KEY)),
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


def pool_name(scheduler: str) -> str:
    """The local name and dist service of ``scheduler``'s task pool on every node."""
    return f"{_PREFIX}{scheduler}"


def _check_args(scheduler: Any, max_concurrency: Any, queue_limit: Any) -> None:
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


def pool_child_spec(
    scheduler: str, max_concurrency: int = 10, queue_limit: int = 10_000
) -> ChildSpec:
    """The child spec (id ``"pool"``) of ``scheduler``'s :class:`TaskPool`.

    Raises:
        ValueError: naming the argument with a bad value.
    """
    _check_args(scheduler, max_concurrency, queue_limit)
    return ChildSpec(id="pool", start=TaskPool, args=(scheduler, max_concurrency, queue_limit))


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


@dataclass(frozen=True)
class Report:
    """How a run ended: an outbox entry."""

    key: RunKey
    outcome: str
    start: float | None
    end: float
    error: str | None

    def entry(self) -> list[Any]:
        return [self.key, self.outcome, self.start, self.end, self.error]


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
    return Run(key, task, tuple(args), dict(kwargs), timeout, epoch)


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


def _describe(key: RunKey) -> str:
    job, at, node = key
    return f"job {job!r} tick {at.isoformat()} node {node}"


# ---------------------------------------------------------------------- the worker


class _Worker(Actor):
    """One pre-spawned process that runs one task at a time for its pool.

    Messages from the pool: ``("run", key, task, args, kwargs)``. To the pool:
    ``("started", worker, key, start)`` right before the task is called, and
    ``("done", worker, key, outcome, start, end, error)`` when it returns or raises.
    """

    def init(self, pool: Pid) -> None:
        self.pool = pool
        self.drops = shapes.DropLog(log)

    def handle_call(self, request: Any, from_: From) -> Any:
        why = "a task pool worker answers no call"
        self.drops.dropped(f"{self.pid.node}: task pool worker {self.pid!r}", request, why)
        return shapes.bad_request(WORKER_INFOS.owner, why)

    def handle_cast(self, msg: Any) -> None:
        why = "a task pool worker takes no cast"
        self.drops.dropped(f"{self.pid.node}: task pool worker {self.pid!r}", msg, why)

    def handle_info(self, msg: Any) -> None:
        why = WORKER_INFOS.problem(msg)
        if why is not None:
            self.drops.dropped(f"{self.pid.node}: task pool worker {self.pid!r}", msg, why)
            return
        _, key, task, args, kwargs = msg
        self._run(key, task, args, kwargs)

    def _run(self, key: RunKey, task: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            fn = load_task(task, key[0])
        except Exception as exc:  # load_task names the reference; an import may raise anything
            error = str(exc) if isinstance(exc, OtpkitError) else repr(exc)
            end = time.time()
            actors.send(
                self.pool, ("done", self.pid, key, "failed", None, end, error[:ERROR_LIMIT])
            )
            return
        due = key[1].timestamp()
        # the holder may dispatch ahead of the tick: wait here, not in the task (in
        # steps: a sleep of years overflows)
        while (ahead := due - time.time()) > 0:
            time.sleep(min(ahead, _SLEEP_STEP))
        _context._enter(_context.RunInfo(key[0], key[1], key[2]))
        start = time.time()
        actors.send(self.pool, ("started", self.pid, key, start))
        try:
            fn(*args, **kwargs)
        except (Exception, SystemExit) as exc:  # a task's failure must not end the worker
            end = time.time()
            actors.send(self.pool, ("done", self.pid, key, "failed", start, end, _error_text(exc)))
            return
        finally:
            _context._enter(None)
        actors.send(self.pool, ("done", self.pid, key, "finished", start, time.time(), None))


# ---------------------------------------------------------------------- the pool


@dataclass
class _Busy:
    """A worker's current run."""

    run: Run
    timer: int | None
    start: float | None = None
    #: seconds of the run's timeout left after its current timer (see timer_step)
    rest: float = 0.0


class TaskPool(Actor):
    """A scheduler's task pool on one node (see the module for the full contract).

    Args:
        scheduler: the scheduler's name: its holder is the global name ``scheduler``.
        max_concurrency: worker processes, so runs at once (>= 1).
        queue_limit: runs that may wait for a worker (>= 0).

    Raises:
        ValueError: from ``init``, naming the bad argument (the start fails).
    """

    def init(self, scheduler: str, max_concurrency: int = 10, queue_limit: int = 10_000) -> None:
        _check_args(scheduler, max_concurrency, queue_limit)
        self.scheduler = scheduler
        self.max_concurrency = max_concurrency
        self.queue_limit = queue_limit
        self.node = self.pid.node
        self.incarnation = uuid.uuid4().hex
        self.max_epoch = 0  # the highest scheduler epoch seen: older runs are refused
        self.idle: deque[Pid] = deque()
        self.busy: dict[Pid, _Busy] = {}
        self.running: dict[RunKey, Pid] = {}
        self.queue: deque[Run] = deque()
        self.queued: set[RunKey] = set()
        self.outbox: dict[RunKey, Report] = {}
        self.last_sent: dict[RunKey, float] = {}
        self.resend_armed = False
        self.respawn_armed = False
        self.drops = shapes.DropLog(log)
        actors.trap_exit(True)
        actors.register(pool_name(scheduler))
        if actors.whereis(NET_NAME) is not None:
            dist.register_service(pool_name(scheduler))
        for _ in range(max_concurrency):
            self.idle.append(self._spawn_worker())
        log.info(
            "%s: task pool %r of %r started (%d workers, queue limit %d)",
            self.node,
            self.pid,
            scheduler,
            max_concurrency,
            queue_limit,
        )

    # ------------------------------------------------------------------ callbacks

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, ExitSignal):
            self._on_exit(msg.pid, msg.reason)
            return
        why = INFOS.problem(msg)
        if why is not None:
            self._drop(msg, why)
            return
        tag = msg[0]
        if tag == "started":
            self._on_started(msg[1], msg[2], msg[3])
        elif tag == "done":
            self._on_done(msg[1], Report(msg[2], msg[3], msg[4], msg[5], msg[6]))
        elif tag == "$timeout":
            self._on_timeout(msg[1], msg[2])
        elif tag == "$resend":
            self.resend_armed = False
            self._resend()
        elif tag == "$respawn":
            self.respawn_armed = False
            self._fill_workers()
            self._dispatch()
        else:
            self._on_cast(msg)

    def handle_cast(self, msg: Any) -> None:
        why = CASTS.problem(msg)
        if why is not None:
            self._drop(msg, why)
            return
        self._on_cast(msg)

    def _on_cast(self, msg: tuple[Any, ...]) -> None:
        """A run or an ack (a cast or a plain message), its shape checked."""
        if msg[0] == "run":
            self._on_run(msg[1])
        else:
            self._on_ack(msg[1])

    def handle_call(self, request: Any, from_: From) -> Any:
        why = CALLS.problem(request)
        if why is not None:
            return shapes.bad_request(CALLS.owner, why)
        if len(request) == 2:
            # a new holder is about to judge the runs it cannot see: from now on a run
            # sent under an older epoch (a paused old holder's) is refused
            self.max_epoch = max(self.max_epoch, request[1])
        return {
            "running": list(self.running),
            "queued": [run.key for run in self.queue],
            "outbox": [report.entry() for report in self.outbox.values()],
            "incarnation": self.incarnation,
            "workers": [*self.idle, *self.busy],
        }

    def terminate(self, reason: Any) -> None:
        workers = [*self.idle, *self.busy]
        for pid in workers:
            actors.unlink(pid)
            actors.exit(pid, "kill")
        deadline = time.monotonic() + _REAP_WAIT
        while any(_exists(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.005)
        if self.busy:
            log.info(
                "%s: task pool of %r stopping (%r): %d running runs killed",
                self.node,
                self.scheduler,
                reason,
                len(self.busy),
            )

    # ------------------------------------------------------------------ runs

    def _drop(self, msg: Any, why: str) -> None:
        """Log a malformed message (rate-limited: one WARNING a minute, with a count)."""
        self.drops.dropped(f"{self.node}: task pool of {self.scheduler!r}", msg, why)

    def _on_run(self, value: Any) -> None:
        if not isinstance(value, dict):
            self._drop(value, "a run is a dict")
            return
        try:
            key = parse_key(value.get("key"))
        except ValueError as exc:
            self._drop(value, str(exc))
            return
        if key in self.running or key in self.queued or key in self.outbox:
            log.debug("%s: %s dispatched again: ignored", self.node, _describe(key))
            return
        try:
            run = parse_run(key, value)
        except ValueError as exc:
            log.warning("%s: %s: malformed run: %s", self.node, _describe(key), exc)
            error = f"malformed run: {exc}"[:ERROR_LIMIT]
            self._finish(Report(key, "failed", None, time.time(), error))
            return
        if run.epoch < self.max_epoch:
            log.warning(
                "%s: %s refused: sent under epoch %s, a newer holder (epoch %s) took over",
                self.node,
                _describe(key),
                run.epoch,
                self.max_epoch,
            )
            return
        self.max_epoch = run.epoch
        if len(self.queue) >= self.queue_limit and not self.idle:
            log.error(
                "%s: %s failed: pool queue full (%d runs waiting)",
                self.node,
                _describe(key),
                len(self.queue),
            )
            self._finish(Report(key, "failed", None, time.time(), "pool queue full"))
            return
        self.queue.append(run)
        self.queued.add(key)
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand queued runs to idle workers, oldest first."""
        while self.queue and self.idle:
            run = self.queue.popleft()
            self.queued.discard(run.key)
            worker = self.idle.popleft()
            timer, rest = None, 0.0
            if run.timeout is not None:
                step, rest = timer_step(timeout_delay(run.key[1], run.timeout, time.time()))
                timer = actors.send_after(step, ("$timeout", worker, run.key))
            self.busy[worker] = _Busy(run, timer, rest=rest)
            self.running[run.key] = worker
            actors.send(worker, ("run", run.key, run.task, run.args, run.kwargs))

    def _on_started(self, worker: Any, key: Any, start: Any) -> None:
        busy = self.busy.get(worker)
        if busy is None or busy.run.key != key:
            return  # a killed worker's last word
        busy.start = start
        job, at, node = busy.run.key
        log.info(
            "%s: run started: job %r tick %s node %s (%.3f s after the tick) on %r",
            self.node,
            job,
            at.isoformat(),
            node,
            start - at.timestamp(),
            worker,
        )
        self._tell_holder(("run_started", self.node, busy.run.key, start))

    def _on_done(self, worker: Any, report: Report) -> None:
        busy = self.busy.get(worker)
        if busy is None or busy.run.key != report.key:
            return  # a killed worker's last word
        self._release(worker, busy)
        self.idle.append(worker)
        self._finish(report)
        self._dispatch()

    def _on_timeout(self, worker: Pid, key: RunKey) -> None:
        busy = self.busy.get(worker)
        if busy is None or busy.run.key != key:
            return  # the run ended in time
        if busy.rest > 0:
            step, busy.rest = timer_step(busy.rest)
            busy.timer = actors.send_after(step, ("$timeout", worker, key))
            return
        busy.timer = None
        self._release(worker, busy)
        actors.unlink(worker)
        actors.exit(worker, "kill")
        error = f"timed out after {busy.run.timeout} s: worker {worker!r} killed"
        self._finish(Report(key, "timed_out", busy.start, time.time(), error))
        self._fill_workers()
        self._dispatch()

    def _on_exit(self, pid: Pid, reason: Any) -> None:
        if pid in self.idle:
            self.idle.remove(pid)
            log.warning(
                "%s: task pool of %r: idle worker %r exited (%r); replacing it",
                self.node,
                self.scheduler,
                pid,
                reason,
            )
        elif pid in self.busy:
            busy = self.busy[pid]
            self._release(pid, busy)
            error = f"worker {pid!r} exited: {reason!r}"[:ERROR_LIMIT]
            self._finish(Report(busy.run.key, "failed", busy.start, time.time(), error))
        else:
            return  # a worker killed on a timeout, already replaced
        self._fill_workers()
        self._dispatch()

    def _release(self, worker: Pid, busy: _Busy) -> None:
        del self.busy[worker]
        self.running.pop(busy.run.key, None)
        if busy.timer is not None:
            actors.cancel_timer(busy.timer)

    # ------------------------------------------------------------------ workers

    def _spawn_worker(self) -> Pid:
        pid = actors.spawn_link(_Worker, self.pid)
        assert pid is not None  # _Worker.init never returns IGNORE
        return pid

    def _fill_workers(self) -> None:
        """Spawn workers until there are ``max_concurrency``; retry later on a failure."""
        while len(self.idle) + len(self.busy) < self.max_concurrency:
            try:
                self.idle.append(self._spawn_worker())
            except (OtpkitError, OSError) as exc:
                log.error(
                    "%s: task pool of %r could not spawn a worker (%s); again in %.1f s",
                    self.node,
                    self.scheduler,
                    exc,
                    _RESPAWN_AFTER,
                )
                if not self.respawn_armed:
                    self.respawn_armed = True
                    actors.send_after(_RESPAWN_AFTER, ("$respawn",))
                return

    # ------------------------------------------------------------------ reports

    def _finish(self, report: Report) -> None:
        job, at, node = report.key
        duration = None if report.start is None else report.end - report.start
        log.info(
            "%s: run %s: job %r tick %s node %s duration %s%s",
            self.node,
            report.outcome,
            job,
            at.isoformat(),
            node,
            "-" if duration is None else f"{duration:.3f} s",
            "" if report.error is None else f": {report.error}",
        )
        self.outbox[report.key] = report
        self._send_done(report)
        if not self.resend_armed:
            self.resend_armed = True
            actors.send_after(RESEND_EVERY / 2, ("$resend",))

    def _send_done(self, report: Report) -> None:
        self.last_sent[report.key] = time.monotonic()
        self._tell_holder(
            (
                "run_done",
                self.node,
                report.key,
                report.outcome,
                report.start,
                report.end,
                report.error,
            )
        )

    def _resend(self) -> None:
        """Send again what is unacknowledged since :data:`RESEND_EVERY` seconds."""
        if not self.outbox:
            return
        due = time.monotonic() - RESEND_EVERY
        for key, report in self.outbox.items():
            if self.last_sent.get(key, 0.0) <= due:
                self._send_done(report)
        self.resend_armed = True
        actors.send_after(RESEND_EVERY / 2, ("$resend",))

    def _on_ack(self, keys: Any) -> None:
        if not isinstance(keys, list | tuple):
            self._drop(keys, "an ack carries a list of keys")
            return
        for value in keys:
            try:
                key = parse_key(value)
            except ValueError as exc:
                self._drop(value, str(exc))
                continue
            self.outbox.pop(key, None)
            self.last_sent.pop(key, None)

    def _tell_holder(self, msg: tuple[Any, ...]) -> None:
        holder = whereis_name(self.scheduler)
        if holder is None:
            return
        try:
            actors.send(holder, msg)
        except (TypeError, ValueError) as exc:  # a value the wire cannot carry
            log.error(
                "%s: task pool of %r could not report to %r: %s",
                self.node,
                self.scheduler,
                holder,
                exc,
            )


def _exists(pid: Pid) -> bool:
    """True while the OS process ``pid`` names runs (a zombie has ended; a recycled OS
    pid is another process)."""
    fields = proc_stat(pid.id)
    return fields is not None and fields[0] != b"Z" and int(fields[19]) == pid.serial
