"""A scheduled job: plain data, checked field by field when it is made.

Jobs travel (to the scheduler's holder, to the task pool's nodes) and persist (the
ledger's store), so every field is a plain value: the schedule is a :class:`Schedule`
(which pickles as its expression), and the task is kept as its ``"module:function"``
reference, resolved where it runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from otpkit.actors import load_object
from otpkit.errors import LoadError, OtpkitError
from otpkit.scheduler._plan import MISFIRE_POLICIES
from otpkit.scheduler._schedule import Schedule, load_zone

__all__ = ["RUN_STRATEGIES", "STATES", "InvalidJob", "Job", "load_task", "task_ref"]

STATES = ("active", "inactive")
#: A job's ``backoff`` unless given: 1 s, doubling, at most 5 minutes.
DEFAULT_BACKOFF = (1.0, 300.0)
#: The most attempts a job may ask for per tick.
MAX_ATTEMPTS = 100
RUN_STRATEGIES = ("local", "random", "all")


class InvalidJob(OtpkitError, ValueError):
    """A job field has a bad value; ``job``, ``field`` and ``value`` name it.

    A bad ``schedule`` or ``timezone`` raises :class:`ScheduleError` instead, which names
    the cron field too.
    """

    def __init__(self, job: Any, field: str, value: Any, expected: str) -> None:
        super().__init__(f"job {job!r}: {field}={value!r}; expected {expected}")
        self.job = job
        self.field = field
        self.value = value


def load_task(ref: str, job: Any = None) -> Callable[..., Any]:
    """The callable named ``"package.module:function"`` (``function`` may be dotted).

    Raises:
        InvalidJob: naming ``job`` and field ``task``: a malformed reference, a module
            that does not import, a missing attribute or one that is not callable.
    """
    try:
        target: Any = load_object(ref)
    except LoadError as exc:
        if exc.problem == "form":
            expected = "'package.module:function' or a module-level function"
        elif exc.problem == "import":
            expected = f"an importable module ({exc.cause})"
        else:
            expected = f"a function of {exc.module!r}; it has no {exc.attr!r}"
        raise InvalidJob(job, "task", ref, expected) from (
            exc.cause if exc.problem == "import" else None
        )
    if not callable(target):
        attr = ref.partition(":")[2]
        raise InvalidJob(job, "task", ref, f"a callable; {attr!r} is {type(target).__name__}")
    task: Callable[..., Any] = target
    return task


def task_ref(task: Any, job: Any = None) -> str:
    """The ``"module:function"`` reference of ``task``, checked to import back to it.

    Raises:
        InvalidJob: ``task`` is neither such a string nor a module-level callable of an
            importable module (a lambda, a nested function, a ``partial``, or a function
            of ``__main__``, which other processes cannot import).
    """
    if isinstance(task, str):
        load_task(task, job)
        return task
    expected = (
        "'package.module:function' or a module-level function of an importable module "
        "(tasks run in other processes, which find them by name)"
    )
    if not callable(task):
        raise InvalidJob(job, "task", task, expected)
    module = getattr(task, "__module__", None)
    qualname = getattr(task, "__qualname__", "")
    if not module or module == "__main__" or not qualname or "<" in qualname:
        raise InvalidJob(job, "task", task, expected)
    ref = f"{module}:{qualname}"
    if load_task(ref, job) is not task:
        raise InvalidJob(job, "task", task, f"{expected}; {ref!r} names another object")
    return ref


def _seconds(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, init=False)
class Job:
    """A job: what runs (``task(*args, **kwargs)``), when (``schedule``), where and how.

    Args:
        name: a non-empty string, unique among the scheduler's jobs.
        schedule: a cron expression (5 fields, 6 with the second first, or an @alias; see
            :class:`Schedule`) or a :class:`Schedule` in the same ``timezone``.
        task: ``"package.module:function"`` or a module-level function; kept as its
            reference.
        args, kwargs: the task's arguments (a sequence; a mapping with string keys).
        state: ``"active"`` or ``"inactive"`` (kept, never fired).
        overlap: whether a run may start while the previous one is still running.
        run_strategy: where a run executes: ``"local"`` (the scheduler's node),
            ``"random"`` (one connected node), ``"all"`` (each connected node), or a
            non-empty list of node names.
        timezone: the IANA zone the schedule's wall-clock times are read in.
        misfire: ``"run_once"``, ``"run_all"`` or ``"skip"`` (see :func:`plan_misfires`).
        misfire_grace: seconds a tick may be late and still count as on time (>= 0).
        timeout: seconds a run may last before the pool stops it, or None for no limit.
        max_attempts: attempts per tick (1: no retry). A failed attempt is retried when
            its task raised, or timed out and its worker was killed; a run whose outcome
            is unknown (its node lost or cut off) is ``interrupted`` and never retried.
        backoff: ``(base, max)`` seconds: attempt ``n + 1`` waits a random time in
            ``[d / 2, d]`` after attempt ``n`` failed, ``d = min(max, base * 2 ** (n - 1))``.

    Raises:
        InvalidJob: naming the job and the field with a bad value.
        ScheduleError: a bad schedule or timezone, naming the job and the cron field.
    """

    name: str
    schedule: Schedule
    task: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: str
    overlap: bool
    run_strategy: str | tuple[str, ...]
    timezone: str
    misfire: str
    misfire_grace: float
    timeout: float | None
    max_attempts: int
    backoff: tuple[float, float]

    def __init__(
        self,
        name: str,
        schedule: Schedule | str,
        task: str | Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        state: str = "active",
        overlap: bool = True,
        run_strategy: str | Sequence[str] = "local",
        timezone: str = "UTC",
        misfire: str = "run_once",
        misfire_grace: float = 1.0,
        timeout: float | None = None,
        max_attempts: int = 1,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidJob(name, "name", name, "a non-empty string")
        values = {
            "name": name,
            "schedule": _schedule(name, schedule, timezone),
            "task": task_ref(task, name),
            "args": _args(name, args),
            "kwargs": _kwargs(name, kwargs),
            "state": _one_of(name, "state", state, STATES),
            "overlap": _bool(name, "overlap", overlap),
            "run_strategy": _run_strategy(name, run_strategy),
            "timezone": timezone,
            "misfire": _one_of(name, "misfire", misfire, MISFIRE_POLICIES),
            "misfire_grace": _grace(name, misfire_grace),
            "timeout": _timeout(name, timeout),
            "max_attempts": _attempts(name, max_attempts),
            "backoff": _backoff(name, backoff),
        }
        for field, value in values.items():
            object.__setattr__(self, field, value)

    def load_task(self) -> Callable[..., Any]:
        """The task function (imported by its reference)."""
        return load_task(self.task, self.name)

    def to_spec(self) -> dict[str, Any]:
        """The job as plain values (for the wire and the store); :meth:`from_spec` back."""
        spec: dict[str, Any] = {
            "name": self.name,
            "schedule": self.schedule.expr,
            "task": self.task,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "state": self.state,
            "overlap": self.overlap,
            "run_strategy": (
                self.run_strategy if isinstance(self.run_strategy, str) else list(self.run_strategy)
            ),
            "timezone": self.timezone,
            "misfire": self.misfire,
            "misfire_grace": self.misfire_grace,
            "timeout": self.timeout,
        }
        # left out at their defaults: the previous release reads such a spec back
        # (its from_spec refuses fields it does not know)
        if self.max_attempts != 1:
            spec["max_attempts"] = self.max_attempts
        if self.backoff != DEFAULT_BACKOFF:
            spec["backoff"] = list(self.backoff)
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Job:
        """The job :meth:`to_spec` made; checked again (``InvalidJob`` names the field)."""
        if not isinstance(spec, Mapping):
            raise InvalidJob(None, "spec", spec, "a mapping of job fields")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(str(k) for k in spec if k not in known)
        if unknown:
            raise InvalidJob(spec.get("name"), unknown[0], spec[unknown[0]], "a Job field")
        if "name" not in spec:
            raise InvalidJob(None, "name", None, "a non-empty string")
        return cls(**spec)

    def replace(self, **changes: Any) -> Job:
        """A copy with ``changes`` applied (checked as a new job)."""
        return Job.from_spec({**self.to_spec(), **changes})


def _schedule(name: str, schedule: Any, timezone: Any) -> Schedule:
    load_zone(timezone, name)
    if isinstance(schedule, Schedule):
        if schedule.timezone != timezone:
            raise InvalidJob(
                name,
                "schedule",
                schedule,
                f"a schedule in the job's timezone {timezone!r} (or a cron string)",
            )
        return schedule
    return Schedule.parse(schedule, timezone, job=name)


def _args(name: str, args: Any) -> tuple[Any, ...]:
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise InvalidJob(name, "args", args, "a tuple or list of arguments")
    return tuple(args)


def _kwargs(name: str, kwargs: Any) -> dict[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise InvalidJob(name, "kwargs", kwargs, "a mapping with string keys")
    return dict(kwargs)


def _one_of(name: str, field: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidJob(name, field, value, " or ".join(repr(a) for a in allowed))
    return value


def _bool(name: str, field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidJob(name, field, value, "True or False")
    return value


def _run_strategy(name: str, value: Any) -> str | tuple[str, ...]:
    expected = "'local', 'random', 'all' or a non-empty list of distinct node names"
    if isinstance(value, str):
        if value not in RUN_STRATEGIES:
            raise InvalidJob(name, "run_strategy", value, expected)
        return value
    if not isinstance(value, Sequence) or not value:
        raise InvalidJob(name, "run_strategy", value, expected)
    nodes = tuple(value)
    if not all(isinstance(n, str) and n for n in nodes) or len(set(nodes)) != len(nodes):
        raise InvalidJob(name, "run_strategy", value, expected)
    return nodes


def _grace(name: str, value: Any) -> float:
    if not _seconds(value) or value < 0:
        raise InvalidJob(name, "misfire_grace", value, "a finite number of seconds >= 0")
    return float(value)


def _timeout(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if not _seconds(value) or value <= 0:
        raise InvalidJob(name, "timeout", value, "None or a finite number of seconds > 0")
    return float(value)


def _attempts(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ATTEMPTS:
        raise InvalidJob(name, "max_attempts", value, f"an int in 1..{MAX_ATTEMPTS}")
    return value


def _backoff(name: str, value: Any) -> tuple[float, float]:
    expected = "(base, max) seconds, finite, 0 < base <= max <= 86400"
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != 2:
        raise InvalidJob(name, "backoff", value, expected)
    base, cap = value
    if not (_seconds(base) and _seconds(cap) and 0 < base <= cap <= 86_400):
        raise InvalidJob(name, "backoff", value, expected)
    return (float(base), float(cap))
