"""Child specs and supervisor flags: plain data with OTP's defaults, checked at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from otpkit.errors import InvalidChildSpec, InvalidSupervisorFlags

RESTART_TYPES = ("permanent", "transient", "temporary")
CHILD_TYPES = ("worker", "supervisor")
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one")
AUTO_SHUTDOWN = ("never", "any_significant", "all_significant")
#: A worker's shutdown time when the spec gives none (OTP: 5000 ms).
DEFAULT_WORKER_SHUTDOWN = 5.0


@dataclass(frozen=True)
class ChildSpec:
    """How a supervisor starts, restarts and stops one child.

    * ``id``: unique among the supervisor's children (any hashable value).
    * ``start``: an :class:`~otpkit.Actor` subclass (or ``"package.module:Class"``) that
      the supervisor starts linked with ``args``/``kwargs``; or a function (or
      ``"package.module:function"``) run in the supervisor's process that must start
      *and link* the child, returning its pid, ``None`` for ignore,
      ``("already_started", pid)`` to adopt a process that already runs (the supervisor
      links to it and supervises it as this child), or ``("ok", pid, info)``.
    * ``restart``: ``"permanent"`` (always restarted), ``"transient"`` (restarted unless
      it exits ``normal``, ``shutdown`` or ``("shutdown", _)``), ``"temporary"`` (never;
      its spec is dropped when it ends).
    * ``shutdown``: seconds to wait after the ``shutdown`` exit signal before killing,
      ``"brutal_kill"``, or ``"infinity"``. Default 5 s for workers, ``"infinity"`` for
      supervisors (as OTP).
    * ``type``: ``"worker"`` or ``"supervisor"``; default from the actor class
      (``Supervisor`` subclasses are supervisors), else worker.
    * ``significant``: with the supervisor's ``auto_shutdown``, this child's own exit can
      end the supervisor. Invalid with ``permanent`` and with ``auto_shutdown="never"``.
    """

    id: Any
    start: Any
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    restart: str = "permanent"
    shutdown: Any = None
    type: str | None = None
    significant: bool = False

    @property
    def modules(self) -> list[str]:
        start = self.start
        if isinstance(start, str):
            return [start]
        return [f"{getattr(start, '__module__', '?')}:{getattr(start, '__qualname__', start)}"]


def child_spec(spec: ChildSpec | Mapping[str, Any]) -> ChildSpec:
    """A checked ChildSpec with its defaults filled in; a mapping works as OTP's map.

    Raises :class:`InvalidChildSpec` naming the field and the bad value. Unknown keys of
    a mapping are ignored, as OTP ignores them.
    """
    if isinstance(spec, Mapping):
        if "id" not in spec:
            raise InvalidChildSpec("id", None, "a child id (missing_id)")
        if "start" not in spec:
            raise InvalidChildSpec(
                "start", None, "an actor or start function (missing_start)", spec["id"]
            )
        known = {k: spec[k] for k in ChildSpec.__dataclass_fields__ if k in spec}
        spec = ChildSpec(**known)
    if not isinstance(spec, ChildSpec):
        raise InvalidChildSpec("spec", spec, "a ChildSpec or a mapping")
    cid = spec.id
    try:
        hash(cid)
    except TypeError:
        raise InvalidChildSpec("id", cid, "a hashable value") from None
    start = spec.start
    if not (callable(start) or (isinstance(start, str) and ":" in start)):
        raise InvalidChildSpec(
            "start", start, "an Actor subclass, a function, or 'package.module:name'", cid
        )
    if not isinstance(spec.args, (tuple, list)):
        raise InvalidChildSpec("args", spec.args, "a tuple", cid)
    if not isinstance(spec.kwargs, Mapping):
        raise InvalidChildSpec("kwargs", spec.kwargs, "a mapping", cid)
    if spec.restart not in RESTART_TYPES:
        raise InvalidChildSpec("restart", spec.restart, " | ".join(RESTART_TYPES), cid)
    ctype = spec.type
    if ctype is None:
        ctype = getattr(start, "otp_type", "worker") if isinstance(start, type) else "worker"
    if ctype not in CHILD_TYPES:
        raise InvalidChildSpec("type", ctype, "worker | supervisor", cid)
    shutdown = spec.shutdown
    if shutdown is None:
        shutdown = "infinity" if ctype == "supervisor" else DEFAULT_WORKER_SHUTDOWN
    if not (
        shutdown in ("brutal_kill", "infinity")
        or (isinstance(shutdown, (int, float)) and not isinstance(shutdown, bool) and shutdown >= 0)
    ):
        raise InvalidChildSpec(
            "shutdown", shutdown, "seconds >= 0, 'brutal_kill' or 'infinity'", cid
        )
    if not isinstance(spec.significant, bool):
        raise InvalidChildSpec("significant", spec.significant, "True or False", cid)
    if spec.significant and spec.restart == "permanent":
        raise InvalidChildSpec(
            "significant", True, "False for a permanent child (bad_combination)", cid
        )
    return replace(
        spec, args=tuple(spec.args), kwargs=dict(spec.kwargs), type=ctype, shutdown=shutdown
    )


@dataclass(frozen=True)
class SupFlags:
    """A supervisor's flags (OTP defaults: one_for_one, intensity 1, period 5 s, never).

    ``period`` is in seconds and may be fractional: the window is measured with the
    monotonic clock at full resolution. (OTP counts whole seconds, so its 5 s window is
    really 5 to 6 s.)
    """

    strategy: str = "one_for_one"
    intensity: int = 1
    period: float = 5
    auto_shutdown: str = "never"


def sup_flags(flags: SupFlags | Mapping[str, Any] | None) -> SupFlags:
    """Checked flags; unknown keys of a mapping are ignored (OTP's sup_flags test)."""
    if flags is None:
        return SupFlags()
    if isinstance(flags, Mapping):
        flags = SupFlags(**{k: flags[k] for k in SupFlags.__dataclass_fields__ if k in flags})
    if not isinstance(flags, SupFlags):
        raise InvalidSupervisorFlags("flags", flags, "SupFlags or a mapping (invalid_type)")
    if flags.strategy not in STRATEGIES:
        raise InvalidSupervisorFlags("strategy", flags.strategy, " | ".join(STRATEGIES))
    if (
        not isinstance(flags.intensity, int)
        or isinstance(flags.intensity, bool)
        or flags.intensity < 0
    ):
        raise InvalidSupervisorFlags("intensity", flags.intensity, "an integer >= 0")
    if (
        not isinstance(flags.period, (int, float))
        or isinstance(flags.period, bool)
        or not flags.period > 0
    ):  # "not >" also refuses NaN
        raise InvalidSupervisorFlags("period", flags.period, "seconds > 0")
    if flags.auto_shutdown not in AUTO_SHUTDOWN:
        raise InvalidSupervisorFlags(
            "auto_shutdown", flags.auto_shutdown, " | ".join(AUTO_SHUTDOWN)
        )
    if flags.strategy == "simple_one_for_one" and flags.auto_shutdown != "never":
        raise InvalidSupervisorFlags(
            "auto_shutdown", flags.auto_shutdown, "never with simple_one_for_one (bad_combination)"
        )
    return flags


def check_specs(flags: SupFlags, specs: list[ChildSpec | Mapping[str, Any]]) -> list[ChildSpec]:
    """Check every spec and the rules that span them (unique ids, significant, sofo)."""
    if not isinstance(specs, (list, tuple)):
        raise InvalidChildSpec("children", specs, "a list of child specs")
    checked = [child_spec(s) for s in specs]
    seen: set[Any] = set()
    for spec in checked:
        if spec.id in seen:
            raise InvalidChildSpec("id", spec.id, "unique ids (duplicate_child_name)", spec.id)
        seen.add(spec.id)
        if spec.significant and flags.auto_shutdown == "never":
            raise InvalidChildSpec(
                "significant", True, "False when auto_shutdown is never (bad_combination)", spec.id
            )
    if flags.strategy == "simple_one_for_one" and len(checked) != 1:
        raise InvalidChildSpec(
            "children", len(checked), "exactly one spec for simple_one_for_one (bad_start_spec)"
        )
    return checked
