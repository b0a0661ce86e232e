"""The per-node task pool: pre-spawned worker processes that run a scheduler's tasks.

One :class:`TaskPool` per scheduler and node, under that node's supervision
(:func:`pool_child_spec`). It is reached locally by its name :func:`pool_name` and from
other nodes as the dist service of the same name: ``send((pool_name(s), node), msg)``
(on a node that runs dist; without it the pool is local only).

The pool's parts: this module is the actor (its runs, workers and timeouts);
:mod:`~otpkit.scheduler._pool_wire` its messages (**Runs**, **Introspection**,
**Malformed messages**) and the pure rules of its runs;
:mod:`~otpkit.scheduler._pool_worker` the worker process;
:mod:`~otpkit.scheduler._pool_outbox` its reports to the holder (**Reports**).

**Execution.** ``max_concurrency`` worker processes are spawned (linked) when the pool
starts, and exactly that many are kept alive. A run goes to an idle worker, else waits
in a FIFO queue of at most ``queue_limit`` runs; a run that finds the queue full
finishes at once as ``"failed"`` with error ``"pool queue full"``. The worker imports
the task (:func:`~otpkit.scheduler._job.load_task`), sleeps until ``at`` if the run came
early (wall clock), takes ``start = time.time()``, tells the pool it started and calls
``task(*args, **kwargs)``: entry into the task function is the run's start. The run
ends ``"finished"``, or ``"failed"`` with ``repr(exception)[:500]`` as its error and
the traceback's last lines (:func:`~otpkit.scheduler._pool_wire.failure_text`; the
worker lives on). A task that does not import fails the same way, without a start. Both
are *raised* failures, which a holder may retry; no other failure is.

**Timeout.** When a run is handed to a worker with a ``timeout``, the pool arms a timer
of ``max(0, at - now) + timeout`` seconds; if the run is still on that worker when it
fires, the worker is killed (``exit(pid, "kill")``: SIGKILL, a busy task cannot delay
it) and a replacement is spawned at once. The run stays listed as running until the
killed worker's exit is seen: then it ends ``"timed_out"``. A worker whose exit is not
seen within :data:`DEATH_WAIT` seconds, and which ``/proc`` still shows, ends its run
``"failed"`` (``"did not die"``) and is left out of the pool (killed again at stop), so
a run is never reported over, and retried, while its task may still run. A worker that
dies mid-run for any other reason ends its run ``"failed"`` with the exit reason, and
is replaced too.

**Stop.** ``terminate`` kills every worker and waits until none is left; running tasks
die with them (the holder will find their claims open and report them interrupted).
Workers are also children of the pool's OS process, killed by the kernel if it dies.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from typing import Any

from otpkit import actors
from otpkit import distribution as dist
from otpkit.actors import Actor, ExitSignal, From, Pid, shapes
from otpkit.distribution import NET_NAME, NodeDown, NodeUp
from otpkit.errors import OtpkitError
from otpkit.scheduler._metrics import PoolLoad
from otpkit.scheduler._pool_outbox import Outbox
from otpkit.scheduler._pool_wire import (
    CALLS,
    CASTS,
    DEATH_WAIT,
    EPOCH,
    ERROR_LIMIT,
    INFOS,
    JOB_NAME,
    NODE_NAME,
    RUN_KEY,
    WALL_TIME,
    WORKER_INFOS,
    Report,
    Run,
    RunId,
    RunKey,
    admission,
    check_pool_args,
    describe,
    killed_report,
    parse_id,
    parse_key,
    parse_run,
    pool_name,
    timeout_delay,
    timer_step,
)
from otpkit.scheduler._pool_worker import Busy, DeathCheck, Dying, Worker, exists
from otpkit.supervision import ChildSpec

# the pool's own names, and those of _pool_wire that the scheduler's messages, the fuzz
# suite (the Protocols, by ``_pool.ATTR``) and the tests take from here
__all__ = [
    "CALLS",
    "CASTS",
    "DEATH_WAIT",
    "EPOCH",
    "ERROR_LIMIT",
    "INFOS",
    "JOB_NAME",
    "NODE_NAME",
    "RUN_KEY",
    "WALL_TIME",
    "WORKER_INFOS",
    "TaskPool",
    "parse_key",
    "pool_child_spec",
    "pool_name",
]

log = logging.getLogger("otpkit.scheduler")

#: Seconds ``terminate`` waits for killed workers to be gone.
_REAP_WAIT = 2.0
#: Seconds before a failed worker spawn is tried again.
_RESPAWN_AFTER = 1.0


def pool_child_spec(
    scheduler: str, max_concurrency: int = 10, queue_limit: int = 10_000
) -> ChildSpec:
    """The child spec (id ``"pool"``) of ``scheduler``'s :class:`TaskPool`.

    Raises:
        ValueError: naming the argument with a bad value.
    """
    check_pool_args(scheduler, max_concurrency, queue_limit)
    return ChildSpec(id="pool", start=TaskPool, args=(scheduler, max_concurrency, queue_limit))


# ---------------------------------------------------------------------- the pool


class TaskPool(Actor):
    """A scheduler's task pool on one node (the contract: the module and its parts).

    Args:
        scheduler: the scheduler's name: its holder is the global name ``scheduler``.
        max_concurrency: worker processes, so runs at once (>= 1).
        queue_limit: runs that may wait for a worker (>= 0).

    Raises:
        ValueError: from ``init``, naming the bad argument (the start fails).
    """

    def init(self, scheduler: str, max_concurrency: int = 10, queue_limit: int = 10_000) -> None:
        check_pool_args(scheduler, max_concurrency, queue_limit)
        self.scheduler = scheduler
        self.max_concurrency = max_concurrency
        self.queue_limit = queue_limit
        self.node = self.pid.node
        self.incarnation = uuid.uuid4().hex
        self.max_epoch = 0  # the highest scheduler epoch seen: older runs are refused
        self.idle: deque[Pid] = deque()
        self.busy: dict[Pid, Busy] = {}
        # runs handed to a worker, until their end is known (a killed worker's too)
        self.running: dict[RunId, Pid] = {}
        self.queue: deque[Run] = deque()
        self.queued: set[RunId] = set()
        self.active: dict[RunKey, int] = {}  # the attempt of each queued or running key
        self.dying: dict[Pid, Dying] = {}
        self.strays: set[Pid] = set()  # killed workers that did not die
        self.respawn_armed = False
        self.drops = shapes.DropLog(log)
        self.load = PoolLoad(scheduler)  # the node's gauges of queued and running runs
        actors.trap_exit(True)
        actors.register(pool_name(scheduler))
        versions = None
        if actors.whereis(NET_NAME) is not None:
            dist.register_service(pool_name(scheduler))
            dist.monitor_nodes(True)
            versions = dist.versions()
        self.outbox = Outbox(scheduler, self.node, versions)
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
        if isinstance(msg, NodeUp):
            self.outbox.node_up(msg.node, msg.version)
            return
        if isinstance(msg, NodeDown):
            self.outbox.node_down(msg.node)
            return
        if isinstance(msg, DeathCheck):
            self._on_death_check(msg.worker)
            return
        why = INFOS.problem(msg)
        if why is not None:
            self._drop(msg, why)
            return
        tag = msg[0]
        if tag == "started":
            self._on_started(msg[1], msg[2], msg[3])
        elif tag == "done":
            self._on_done(msg[1], msg[2:])
        elif tag == "$timeout":
            self._on_timeout(msg[1], msg[2], msg[3])
        elif tag == "$resend":
            self.outbox.resend()
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
        runs = [*self.running, *(run.id for run in self.queue)]
        return {
            "running": [key for key, _ in self.running],
            "queued": [run.key for run in self.queue],
            "attempts": [[*key, attempt] for key, attempt in runs],
            "outbox": self.outbox.entries(),
            "incarnation": self.incarnation,
            "workers": [*self.idle, *self.busy],
        }

    def terminate(self, reason: Any) -> None:
        workers = [*self.idle, *self.busy, *self.dying, *self.strays]
        for pid in workers:
            actors.unlink(pid)
            actors.exit(pid, "kill")
        deadline = time.monotonic() + _REAP_WAIT
        while any(exists(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.005)
        self.load.update(0, 0)  # nothing waits or runs here any more
        if self.busy or self.dying:
            log.info(
                "%s: task pool of %r stopping (%r): %d running runs killed",
                self.node,
                self.scheduler,
                reason,
                len(self.busy) + len(self.dying),
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
            run_id = parse_id(value)
        except ValueError as exc:
            self._drop(value, str(exc))
            return
        key, attempt = run_id
        verdict = admission(run_id, (self.running, self.queued, self.outbox), self.active)
        if verdict == "again":
            log.debug("%s: %s dispatched again: ignored", self.node, describe(key, attempt))
            return
        if verdict == "busy":
            why = f"attempt {self.active[key]} of this tick is queued or running"
            self._drop(value, why)
            return
        try:
            run = parse_run(key, value)
        except ValueError as exc:
            log.warning("%s: %s: malformed run: %s", self.node, describe(key, attempt), exc)
            error = f"malformed run: {exc}"[:ERROR_LIMIT]
            self._finish(Report(key, "failed", None, time.time(), error, attempt))
            return
        if run.epoch < self.max_epoch:
            log.warning(
                "%s: %s refused: sent under epoch %s, a newer holder (epoch %s) took over",
                self.node,
                describe(key, attempt),
                run.epoch,
                self.max_epoch,
            )
            return
        self.max_epoch = run.epoch
        if len(self.queue) >= self.queue_limit and not self.idle:
            log.error(
                "%s: %s failed: pool queue full (%d runs waiting)",
                self.node,
                describe(key, attempt),
                len(self.queue),
            )
            self._finish(Report(key, "failed", None, time.time(), "pool queue full", attempt))
            return
        self.queue.append(run)
        self.queued.add(run.id)
        self.active[key] = attempt
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand queued runs to idle workers, oldest first."""
        while self.queue and self.idle:
            run = self.queue.popleft()
            self.queued.discard(run.id)
            worker = self.idle.popleft()
            timer, rest = None, 0.0
            if run.timeout is not None:
                step, rest = timer_step(timeout_delay(run.key[1], run.timeout, time.time()))
                timer = actors.send_after(step, ("$timeout", worker, run.key, run.attempt))
            self.busy[worker] = Busy(run, timer, rest=rest)
            self.running[run.id] = worker
            actors.send(worker, ("run", run.key, run.task, run.args, run.kwargs))
        self.load.update(len(self.queue), len(self.running))

    def _on_started(self, worker: Any, key: Any, start: Any) -> None:
        busy = self.busy.get(worker)
        if busy is None or busy.run.key != key:
            return  # a killed worker's last word
        busy.start = start
        run = busy.run
        log.info(
            "%s: run started: %s (%.3f s after the tick) on %r",
            self.node,
            describe(run.key, run.attempt),
            start - run.key[1].timestamp(),
            worker,
        )
        self.outbox.started(run.key, start, run.attempt)

    def _on_done(self, worker: Any, fields: tuple[Any, ...]) -> None:
        """A worker's ``done``: ``fields`` are its key, outcome, start, end, error and
        (this code's workers) whether the task raised and its traceback."""
        busy = self.busy.get(worker)
        key, outcome, start, end, error = fields[:5]
        if busy is None or busy.run.key != key:
            return  # a killed worker's last word
        raised = bool(fields[5]) if len(fields) > 5 else False
        trace = fields[6] if len(fields) > 6 else None
        self._release(worker, busy)
        self.idle.append(worker)
        self._finish(Report(key, outcome, start, end, error, busy.run.attempt, raised, trace))
        self._dispatch()

    def _on_timeout(self, worker: Pid, key: RunKey, attempt: int) -> None:
        busy = self.busy.get(worker)
        if busy is None or busy.run.id != (key, attempt):
            return  # the run ended in time
        if busy.rest > 0:
            step, busy.rest = timer_step(busy.rest)
            busy.timer = actors.send_after(step, ("$timeout", worker, key, attempt))
            return
        busy.timer = None
        self._release(worker, busy)
        # the run stays running until the worker's exit is seen (it is still linked)
        timer = actors.send_after(DEATH_WAIT, DeathCheck(worker))
        self.dying[worker] = Dying(busy.run, busy.start, timer)
        actors.exit(worker, "kill")
        log.warning(
            "%s: %s timed out after %s s: worker %r killed",
            self.node,
            describe(key, attempt),
            busy.run.timeout,
            worker,
        )
        self._fill_workers()
        self._dispatch()

    def _on_death_check(self, worker: Pid) -> None:
        """:data:`DEATH_WAIT` seconds after ``worker`` was killed, its exit not seen."""
        dying = self.dying.pop(worker, None)
        if dying is None:
            return
        gone = not exists(worker)
        if not gone:
            self.strays.add(worker)
            log.error(
                "%s: task pool of %r: worker %r (os pid %d) did not die within %g s of its "
                "kill; its run is reported failed and the process left out of the pool",
                self.node,
                self.scheduler,
                worker,
                worker.id,
                DEATH_WAIT,
            )
        self._finish(killed_report(dying.run, dying.start, time.time(), worker, gone))

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
            report = Report(
                busy.run.key, "failed", busy.start, time.time(), error, busy.run.attempt
            )
            self._finish(report)
        elif pid in self.dying:
            dying = self.dying.pop(pid)
            actors.cancel_timer(dying.timer)
            self._finish(killed_report(dying.run, dying.start, time.time(), pid, gone=True))
            return  # replaced when it was killed
        elif pid in self.strays:
            self.strays.discard(pid)
            log.info(
                "%s: task pool of %r: worker %r exited at last", self.node, self.scheduler, pid
            )
            return
        else:
            return
        self._fill_workers()
        self._dispatch()

    def _release(self, worker: Pid, busy: Busy) -> None:
        del self.busy[worker]
        if busy.timer is not None:
            actors.cancel_timer(busy.timer)

    # ------------------------------------------------------------------ workers

    def _spawn_worker(self) -> Pid:
        pid = actors.spawn_link(Worker, self.pid)
        assert pid is not None  # Worker.init never returns IGNORE
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
        """``report``'s run is over: it leaves the running runs and goes to the outbox."""
        self.running.pop(report.id, None)
        if self.active.get(report.key) == report.attempt:
            del self.active[report.key]
        duration = None if report.start is None else report.end - report.start
        log.info(
            "%s: run %s: %s duration %s%s",
            self.node,
            report.outcome,
            describe(report.key, report.attempt),
            "-" if duration is None else f"{duration:.3f} s",
            "" if report.error is None else f": {report.error}",
        )
        self.outbox.add(report)
        self.load.update(len(self.queue), len(self.running))

    def _on_ack(self, items: Any) -> None:
        if not isinstance(items, list | tuple):
            self._drop(items, "an ack carries a list of keys")
            return
        for value, why in self.outbox.ack(items):
            self._drop(value, why)
