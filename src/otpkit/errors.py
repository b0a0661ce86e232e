"""The one exception hierarchy of otpkit.

Every message names the bad value and what was expected, so that a log line is enough to
find the mistake.
"""

from __future__ import annotations

from typing import Any


def _rebuild(cls: type[OtpkitError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class OtpkitError(Exception):
    """Base class of every error otpkit raises on purpose.

    Errors cross process boundaries (a start that fails, a supervisor's refusal), and
    their constructors do not take their own ``args``: they pickle field by field.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, dict(self.__dict__))


class Exit(OtpkitError):
    """A process this caller depended on exited; ``reason`` is its exit reason.

    Raised by :func:`otpkit.call` when the callee exits (or never existed: ``"noproc"``,
    or its node is unreachable: ``"noconnection"``) before it replied.
    """

    def __init__(self, reason: Any, pid: Any = None) -> None:
        super().__init__(reason, pid)
        self.reason = reason
        self.pid = pid

    def __str__(self) -> str:
        who = f" {self.pid!r}" if self.pid is not None else ""
        return f"process{who} exited: {self.reason!r}"


class CallTimeout(OtpkitError):
    """``call`` got no reply within its timeout; a reply that comes later is dropped."""

    def __init__(self, pid: Any, request: Any, timeout: float) -> None:
        super().__init__(pid, request, timeout)
        self.pid = pid
        self.request = request
        self.timeout = timeout

    def __str__(self) -> str:
        return f"call to {self.pid!r} timed out after {self.timeout}s (request {self.request!r})"


class NoRuntime(OtpkitError):
    """An otpkit call was made in a process that is neither an actor nor a started node."""


class LoadError(OtpkitError, ValueError):
    """A ``"package.module:attr"`` reference names no object (``otpkit.actors.load_object``).

    ``target`` is the reference, ``module`` and ``attr`` its two sides, and ``problem``
    what is wrong: ``"form"`` (no ``:``, or nothing on one side of it), ``"import"`` (the
    module raised ImportError, kept as ``cause``) or ``"attribute"`` (the module has no
    attribute path ``attr``; the AttributeError is ``cause``).
    """

    def __init__(
        self,
        target: str,
        problem: str,
        module: str = "",
        attr: str = "",
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(target, problem)
        self.target = target
        self.problem = problem
        self.module = module
        self.attr = attr
        self.cause = cause

    def __str__(self) -> str:
        if self.problem == "form":
            return f"{self.target!r}: expected 'package.module:name'"
        if self.problem == "import":
            return f"{self.target!r}: cannot import {self.module!r} ({self.cause})"
        return f"{self.target!r}: {self.module!r} has no {self.attr!r}"


class StartError(OtpkitError):
    """A process (or a supervisor's child) failed to start; ``reason`` says why.

    ``reason`` follows OTP: ``("already_started", pid)``, ``("bad_return", value)``, the
    exception ``init`` raised, ``("shutdown", ("failed_to_start_child", id, why))`` for a
    supervisor whose child failed during its start, ...
    """

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"start failed: {self.reason!r}"


class AlreadyStarted(StartError):
    """The name is already held by ``pid`` (OTP's ``{error, {already_started, Pid}}``)."""

    def __init__(self, pid: Any) -> None:
        super().__init__(("already_started", pid))
        self.pid = pid


class BadName(OtpkitError, ValueError):
    """A local name is not a valid name, or is already registered."""


class InvalidChildSpec(OtpkitError, ValueError):
    """A child spec field has a bad value; ``field`` and ``value`` name it."""

    def __init__(self, field: str, value: Any, expected: str, child_id: Any = None) -> None:
        where = f" of child {child_id!r}" if child_id is not None else ""
        super().__init__(f"invalid child spec{where}: {field}={value!r}; expected {expected}")
        self.field = field
        self.value = value
        self.child_id = child_id


class InvalidSupervisorFlags(OtpkitError, ValueError):
    """A supervisor flag has a bad value; ``field`` and ``value`` name it."""

    def __init__(self, field: str, value: Any, expected: str) -> None:
        super().__init__(f"invalid supervisor flag: {field}={value!r}; expected {expected}")
        self.field = field
        self.value = value


class SupervisorError(OtpkitError):
    """A supervisor API call was refused, with OTP's error term as ``reason``.

    ``reason`` is one of ``"not_found"``, ``"running"``, ``"restarting"``,
    ``"already_present"``, ``"simple_one_for_one"``, or a start error.
    """

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"supervisor refused: {self.reason!r}"


class NodeError(OtpkitError):
    """The node could not be started, or it is not running. ``reason``: why the kernel
    did not start (its start error), when that is the cause."""

    reason: Any = None


class FrameError(OtpkitError):
    """A frame failed authentication, was oversize or malformed; its connection is closed."""


class NoSuchName(OtpkitError):
    """``registry.send`` to a global name that is not registered (OTP's ``badarg``)."""

    def __init__(self, name: Any, msg: Any = None) -> None:
        super().__init__(f"no process is registered as {name!r}")
        self.name = name
        self.msg = msg


class SchedulerUnavailable(OtpkitError):
    """A scheduler request found no active scheduler (or no majority) before its
    timeout; the message says what it last saw."""


class UnknownJob(OtpkitError, KeyError):
    """The scheduler has no job of that name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown job"
