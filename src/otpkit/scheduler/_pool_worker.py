"""A task pool's worker process, and the pool's records of its workers.

:class:`Worker` is spawned (linked) by :class:`~otpkit.scheduler._pool.TaskPool`, which
keeps ``max_concurrency`` of them alive, hands each run to an idle one and kills one
whose run overran its timeout. The worker imports the task, waits for its tick, calls it
and reports its start and end to the pool; a task's failure (an exception, or a task
that does not import) ends the run, never the worker. The pool notes a worker's run in
a :class:`Busy`, a worker it killed in a :class:`Dying` until its exit is seen or its
:class:`DeathCheck` timer fires, and asks :func:`exists` whether one is really gone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from otpkit import actors
from otpkit.actors import Actor, From, Pid, proc_stat, shapes
from otpkit.errors import OtpkitError
from otpkit.scheduler import _context
from otpkit.scheduler._job import load_task
from otpkit.scheduler._pool_wire import ERROR_LIMIT, WORKER_INFOS, Run, RunKey, failure_text

log = logging.getLogger("otpkit.scheduler")

#: The longest sleep of a worker waiting for its tick (it sleeps again until the tick).
_SLEEP_STEP = 60.0


class Worker(Actor):
    """One pre-spawned process that runs one task at a time for its pool.

    Messages from the pool: ``("run", key, task, args, kwargs)``. To the pool:
    ``("started", worker, key, start)`` right before the task is called, and
    ``("done", worker, key, outcome, start, end, error, raised, traceback)`` when it
    returns or raises (or its task does not import).
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
            _, trace = failure_text(exc)
            end = time.time()
            actors.send(
                self.pool,
                ("done", self.pid, key, "failed", None, end, error[:ERROR_LIMIT], True, trace),
            )
            return
        due = key[1].timestamp()
        # the holder may dispatch ahead of the tick: wait here, not in the task (in
        # steps: a sleep of years overflows)
        while (ahead := due - time.time()) > 0:
            time.sleep(min(ahead, _SLEEP_STEP))
        _context._enter(_context.RunInfo(key[0], key[1], key[2]))
        # what the task logs or prints is tagged with its job and tick
        actors.set_tags(job=key[0], tick=key[1].isoformat().replace("+00:00", "Z"))
        start = time.time()
        actors.send(self.pool, ("started", self.pid, key, start))
        try:
            fn(*args, **kwargs)
        except (Exception, SystemExit) as exc:  # a task's failure must not end the worker
            end = time.time()
            error, trace = failure_text(exc)
            actors.send(
                self.pool, ("done", self.pid, key, "failed", start, end, error, True, trace)
            )
            return
        finally:
            _context._enter(None)
            actors.drain_stdio()  # a last line without its newline, still tagged
            actors.set_tags(job=None, tick=None)
        actors.send(
            self.pool, ("done", self.pid, key, "finished", start, time.time(), None, False, None)
        )


# ---------------------------------------------------------------------- the pool's records


@dataclass
class Busy:
    """A worker's current run."""

    run: Run
    timer: int | None
    start: float | None = None
    #: seconds of the run's timeout left after its current timer (see timer_step)
    rest: float = 0.0


@dataclass(frozen=True)
class Dying:
    """A worker killed on its run's timeout, whose exit is not seen yet."""

    run: Run
    start: float | None
    timer: int


@dataclass(frozen=True)
class DeathCheck:
    """The pool's timer: ``DEATH_WAIT`` seconds after it killed ``worker``."""

    worker: Pid


def exists(pid: Pid) -> bool:
    """True while the OS process ``pid`` names runs (a zombie has ended; a recycled OS
    pid is another process)."""
    fields = proc_stat(pid.id)
    return fields is not None and fields[0] != b"Z" and int(fields[19]) == pid.serial
