"""Supervisor and DynamicSupervisor: OTP's ``supervisor`` behaviour.

Contract (predict every restart from this text):

* **Start.** ``setup(...)`` returns ``(flags, children)`` (or ``IGNORE``). Flags and specs
  are checked first; a bad one fails the start with :class:`InvalidSupervisorFlags` or
  :class:`InvalidChildSpec` naming the field. Children start one by one in list order,
  each linked; a child whose start returns ignore is kept with no pid (a temporary one
  is dropped). If a child fails to start, the ones already started are stopped in
  reverse order and the supervisor's start fails with
  ``("shutdown", ("failed_to_start_child", id, reason))``.
* **A child exits** (the supervisor traps exits; the exit signal carries the reason).
  ``permanent`` children are always restarted, ``transient`` ones unless the reason is
  ``normal``, ``shutdown`` or ``("shutdown", _)``, ``temporary`` ones never (their spec
  is dropped). Each restart is counted *before* it is tried: if the count of restarts in
  the last ``period`` seconds (monotonic clock, full resolution; the edge is inclusive)
  would exceed ``intensity``, the supervisor gives up: it stops all children in reverse
  start order and exits with ``"shutdown"``. A restart whose start fails marks the child
  ``"restarting"`` and is tried again at once, and every try counts: a child that cannot
  start exhausts the intensity.
* **Strategies.** ``one_for_one``: only that child. ``one_for_all``: the others are
  stopped in reverse start order, then all start again in order. ``rest_for_one``: the
  children started after it are stopped (reverse order), then it and they start again.
  ``simple_one_for_one``: children are instances of one spec added by ``start_child``
  with extra arguments; only the exited one restarts.
* **Shutdown** of a child: ``"brutal_kill"`` kills it; a number sends exit ``shutdown``
  and kills after that many seconds; ``"infinity"`` waits. The supervisor watches with a
  monitor, so a child that unlinked cannot hang it. Its own shutdown stops static
  children one by one in reverse start order, and dynamic children all at once under one
  deadline.
* **auto_shutdown.** ``any_significant``: the supervisor exits ``shutdown`` when a
  significant child ends by itself and is not restarted; ``all_significant``: when the
  last such child has. Children stopped by the supervisor never count.
* **Start functions** may return an existing pid as ``("already_started", pid)``; the
  supervisor links to it and supervises it as that child (the seed recipe relies on
  this). A start that *raises* :class:`AlreadyStarted` is an error, passed through
  unwrapped (OTP's ``already_started_outside_supervisor``).
* **Stray messages.** A call that is not of :data:`CALLS` is answered ``("error",
  "bad supervisor call: ...")``; a cast or a plain message is dropped (one WARNING a
  minute). A caller of another node gets its answer as plain data (:func:`wire_value`:
  rows as tuples, a spec or an exception as its repr).
* **Metrics.** Each restart the supervisor tries (a failed one too, as the restart
  window counts it) adds one to ``otpkit_supervisor_restarts_total``, labelled by the
  supervisor and the child (:func:`restart_labels`).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from otpkit import actors, metrics
from otpkit.actors import (
    IGNORE,
    INFO,
    Actor,
    Down,
    ExitSignal,
    From,
    Pid,
    Ref,
    Stop,
    is_normal_exit,
    reason_of,
    shapes,
)
from otpkit.errors import AlreadyStarted, InvalidChildSpec, LoadError, OtpkitError, StartError
from otpkit.supervision._decisions import (
    add_restart,
    auto_shutdown_due,
    needs_restart,
    restart_plan,
)
from otpkit.supervision._spec import ChildSpec, SupFlags, check_specs, child_spec, sup_flags

log = logging.getLogger("otpkit.supervision")

_TIMEOUT = object()
_keys = itertools.count(1)

#: The ``child`` label of a DynamicSupervisor's restarts: its children's ids are the
#: caller's, and may not be bounded.
DYNAMIC_CHILD = "(dynamic)"
# the longest label value sent (the metrics service takes at most 256 characters)
_LABEL_MAX = 200

# The os pid of the supervisor that forks a child now and the child's id: a forked
# supervisor reads its id in its parent here (see restart_labels)
_starting: tuple[int, Any] | None = None

#: The calls every supervisor answers (its API; ``which_children`` and
#: ``count_children`` are also asked from other nodes). A child's id, a pid or a spec
#: may be any value: the supervisor looks it up or checks it as a spec.
CALLS = shapes.Protocol(
    "supervisor call",
    shapes.Shape("which_children"),
    shapes.Shape("which_children_ext"),
    shapes.Shape("count_children"),
    shapes.Shape("start_child", (shapes.ANY,)),
    shapes.Shape("terminate_child", (shapes.ANY,)),
    shapes.Shape("restart_child", (shapes.ANY,)),
    shapes.Shape("delete_child", (shapes.ANY,)),
    shapes.Shape("get_childspec", (shapes.ANY,)),
)

#: A supervisor takes no plain message: its children's exits, its monitors' ``Down``
#: and its own retries are Python objects; anything else is dropped.
INFOS = shapes.Protocol("supervisor message")

# the deepest a reply to another node is copied; below, a value is sent as its repr
_WIRE_DEPTH = 32


def wire_value(value: Any, _depth: int = 0) -> Any:
    """``value`` as plain data that can be sent to another node: tuples (a
    :class:`ChildInfo` row too), lists and dicts of None, bool, int (64-bit), float,
    str, bytes, :class:`Pid` and :class:`Ref`; anything else (a :class:`ChildSpec`, an
    exception, a class) as its repr."""
    kind = type(value)
    if value is None or kind in (bool, float, str, bytes, Pid, Ref):
        return value
    if kind is int:
        return value if -(1 << 63) <= value < 1 << 64 else repr(value)
    if _depth < _WIRE_DEPTH:
        if isinstance(value, tuple):
            return tuple(wire_value(v, _depth + 1) for v in value)
        if isinstance(value, list):
            return [wire_value(v, _depth + 1) for v in value]
        if isinstance(value, dict):
            return {wire_value(k, _depth + 1): wire_value(v, _depth + 1) for k, v in value.items()}
    return repr(value)


def restart_labels(
    names: list[str], id_in_parent: Any, kind: str, child_id: Any, dynamic: bool
) -> dict[str, str]:
    """The labels of one restart in ``otpkit_supervisor_restarts_total``.

    ``supervisor``: the supervisor's first registered name (``names``), else its child
    id in the supervisor that started it (``id_in_parent``; None if none did, as for the
    kernel), else its class name (``kind``). ``child``: the restarted child's id - a
    ``simple_one_for_one``'s children share their template's - except under a
    DynamicSupervisor (``dynamic``), whose children's ids are the caller's and need not
    be bounded: :data:`DYNAMIC_CHILD`. An id that is not a str is shown as its repr;
    a value is cut at 200 characters."""
    if names:
        supervisor = names[0]
    elif id_in_parent is not None:
        supervisor = _label(id_in_parent)
    else:
        supervisor = kind
    child = DYNAMIC_CHILD if dynamic else _label(child_id)
    return {"supervisor": supervisor[:_LABEL_MAX], "child": child}


def _label(value: Any) -> str:
    return (value if isinstance(value, str) else repr(value))[:_LABEL_MAX]


class ChildInfo(NamedTuple):
    """One row of ``which_children``: OTP's ``{Id, Child, Type, Modules}``.

    ``pid`` is the child's pid, ``"restarting"`` during a failing restart, or None when
    the spec is kept without a process.
    """

    id: Any
    pid: Pid | str | None
    type: str
    modules: list[str]


@dataclass(eq=False)
class _Child:
    spec: ChildSpec
    pid: Pid | str | None = None
    extra: tuple[Any, ...] = ()
    restarts: int = 0
    key: int = 0
    #: the pid it had when it last exited: how a restarting dynamic child is named
    old_pid: Pid | None = None

    def __post_init__(self) -> None:
        self.key = next(_keys)

    @property
    def alive(self) -> bool:
        return isinstance(self.pid, Pid)


@dataclass(frozen=True)
class _TryAgain:
    key: int


def _resolve(start: Any) -> Any:
    if isinstance(start, str):
        try:
            return actors.load_object(start)
        except LoadError as exc:
            # the child's start fails with the import's own error as its reason
            raise exc if exc.cause is None else exc.cause from None
    return start


def start_spec(
    spec: ChildSpec, extra: tuple[Any, ...] = (), dynamic: bool = False
) -> tuple[Any, ...]:
    """Start one child of the calling supervisor: ("ok", pid[, info]) | ("ignore",) |
    ("error", reason). Runs in the supervisor's process. A DynamicSupervisor's child
    (``dynamic``) that is a supervisor itself labels its restarts :data:`DYNAMIC_CHILD`
    unless it has a registered name: its id is the caller's, unbounded."""
    global _starting
    _starting = (os.getpid(), DYNAMIC_CHILD if dynamic else spec.id)  # inherited by it
    try:
        return _start_spec(spec, extra)
    finally:
        _starting = None


def _start_spec(spec: ChildSpec, extra: tuple[Any, ...]) -> tuple[Any, ...]:
    rt: Any = actors.runtime()
    try:
        start = _resolve(spec.start)
    except Exception as exc:
        return ("error", reason_of(exc))
    args = (*spec.args, *extra)
    if isinstance(start, type) and issubclass(start, Actor):
        result: tuple[Any, ...] = rt.spawn(start, args, dict(spec.kwargs), link=True)
        return result
    try:
        res = start(*args, **spec.kwargs)
    except AlreadyStarted as exc:
        return ("error", ("already_started", exc.pid))
    except StartError as exc:
        return ("error", exc.reason)
    except Exception as exc:
        log.error("start function of child %r raised", spec.id, exc_info=True)
        return ("error", reason_of(exc))
    if isinstance(res, Pid):
        rt.link(res)
        return ("ok", res)
    if res is None or res is IGNORE:
        return ("ignore",)
    if isinstance(res, tuple) and res:
        if res[0] == "already_started" and len(res) == 2 and isinstance(res[1], Pid):
            rt.link(res[1])
            return ("ok", res[1])
        if res[0] == "ok" and len(res) in (2, 3) and isinstance(res[1], Pid):
            rt.link(res[1])
            return res
        if res[0] == "ok" and len(res) == 2 and res[1] is None:
            return ("ignore",)
        if res[0] == "error" and len(res) == 2:
            return res
    # anything else is the error itself, as OTP's do_start_child_i makes it {error, What}
    log.error("start function of child %r returned %r", spec.id, res)
    return ("error", res)


class Supervisor(Actor):
    """A supervisor process; see the module documentation for the exact contract.

    Use it directly - ``ChildSpec("sup", Supervisor, kwargs={"children": [...],
    "strategy": "one_for_all"})`` - or subclass it and override :meth:`setup` (OTP's
    ``init/1``). A subclass that starts and stops a child itself uses the hooks
    :meth:`_child_info`, :meth:`_ensure_child` and :meth:`_stop_child`, never the
    supervisor's own records of its children.
    """

    otp_type = "supervisor"
    dynamic = False

    def setup(
        self,
        children: list[ChildSpec | Mapping[str, Any]] | tuple[Any, ...] = (),
        strategy: str = "one_for_one",
        intensity: int = 1,
        period: float = 5,
        auto_shutdown: str = "never",
        flags: SupFlags | Mapping[str, Any] | None = None,
    ) -> Any:
        """Return ``(flags, children)``, or ``IGNORE`` to start nothing."""
        if flags is None:
            flags = SupFlags(strategy, intensity, period, auto_shutdown)
        return flags, list(children)

    # ------------------------------------------------------------------ start

    def init(self, *args: Any, **kwargs: Any) -> Any:
        actors.trap_exit(True)
        self._rt: Any = actors.runtime()
        self._drops = shapes.DropLog(log)
        self._children: list[_Child] = []
        self._by_pid: dict[Pid, _Child] = {}
        self._restarts: tuple[float, ...] = ()
        # the id this process has in the supervisor that forked it (its metrics' label)
        starting = _starting
        self._id_in_parent = (
            starting[1] if starting is not None and starting[0] == os.getppid() else None
        )
        result = self.setup(*args, **kwargs)
        if result is IGNORE:
            return IGNORE
        if not (isinstance(result, tuple) and len(result) == 2):
            raise Stop(("bad_return", ("setup", result)))
        self._flags = sup_flags(result[0])
        specs = check_specs(self._flags, list(result[1]))
        self._sofo = self._flags.strategy == "simple_one_for_one"
        self._dynamic = self._sofo or self.dynamic
        self._template = specs[0] if self._sofo else None
        if self._sofo:
            return None
        for spec in specs:
            child = _Child(spec)
            res = self._start(child)
            if res[0] == "error":
                log.error("%r: child %r failed to start: %r", self.pid, spec.id, res[1])
                self._stop_all()
                raise Stop(("shutdown", ("failed_to_start_child", spec.id, res[1])))
            if res[0] == "ignore" and spec.restart == "temporary":
                continue
            self._children.append(child)
        return None

    def _start(self, child: _Child) -> tuple[Any, ...]:
        res = start_spec(child.spec, child.extra, dynamic=self.dynamic)
        if res[0] == "ok":
            child.pid = res[1]
            self._by_pid[res[1]] = child
        elif res[0] == "ignore":
            child.pid = None
        return res

    # ------------------------------------------------------------------ exits

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, ExitSignal):
            child = self._by_pid.pop(msg.pid, None)
            if child is not None:
                child.old_pid = msg.pid
                self._child_exited(child, msg.reason)
        elif isinstance(msg, _TryAgain):
            for child in self._children:
                if child.key == msg.key and child.pid == "restarting":
                    self._restart(child)
                    break
        elif isinstance(msg, Down):
            pass  # a monitor from a shutdown that already ended
        else:
            self._drops.dropped(repr(self.pid), msg, INFOS.problem(msg) or "not expected")

    def handle_cast(self, msg: Any) -> None:
        self._drops.dropped(repr(self.pid), msg, "a supervisor takes no cast")

    def _child_exited(self, child: _Child, reason: Any) -> None:
        child.pid = None
        spec = child.spec
        if not is_normal_exit(reason):
            log.error("%r: child %r exited: %r", self.pid, spec.id, reason)
        if needs_restart(spec.restart, reason):
            self._restart(child)
            return
        if spec.restart == "temporary" or self._dynamic:
            self._remove(child)
        if auto_shutdown_due(
            self._flags.auto_shutdown,
            spec.significant,
            False,
            any(c.spec.significant and c.alive for c in self._children),
        ):
            log.info("%r: significant child %r ended; auto shutdown", self.pid, spec.id)
            raise Stop("shutdown")

    def _restart(self, child: _Child) -> None:
        flags = self._flags
        allowed, self._restarts = add_restart(
            self._restarts, time.monotonic(), flags.intensity, flags.period
        )
        if not allowed:
            log.error(
                "%r: reached_max_restart_intensity (%d in %ss) restarting %r; shutting down",
                self.pid,
                flags.intensity,
                flags.period,
                child.spec.id,
            )
            self._remove(child)
            raise Stop("shutdown")
        child.restarts += 1
        self._count_restart(child)
        strategy = flags.strategy
        if self._dynamic or strategy == "one_for_one":
            self._restart_one(child)
            return
        order = [c.spec.id for c in self._children]
        stop_ids, start_ids = restart_plan(strategy, order, child.spec.id)
        for cid in stop_ids:
            sibling = self._find(cid)
            if sibling is not None and sibling.alive:
                self._shutdown(sibling)
            if sibling is not None and sibling.spec.restart == "temporary":
                self._remove(sibling)
        for cid in start_ids:
            sibling = self._find(cid)
            if sibling is None or sibling.alive:
                continue
            res = self._start(sibling)
            if res[0] == "error":
                log.error("%r: restart of %r failed: %r", self.pid, cid, res[1])
                sibling.pid = "restarting"
                self._try_again(sibling)
                return

    def _count_restart(self, child: _Child) -> None:
        if metrics.enabled():
            labels = restart_labels(
                self._rt.registered_names(),
                self._id_in_parent,
                type(self).__name__,
                child.spec.id,
                self.dynamic,
            )
            metrics.inc("otpkit_supervisor_restarts_total", labels)

    def _restart_one(self, child: _Child) -> None:
        res = self._start(child)
        if res[0] == "error":
            log.error("%r: restart of %r failed: %r", self.pid, child.spec.id, res[1])
            child.pid = "restarting"
            self._try_again(child)
        elif res[0] == "ignore" and self._dynamic:
            self._remove(child)

    def _try_again(self, child: _Child) -> None:
        self._rt.mailbox.append((INFO, None, _TryAgain(child.key)))

    def _find(self, cid: Any) -> _Child | None:
        for child in self._children:
            if child.spec.id == cid:
                return child
        return None

    def _remove(self, child: _Child) -> None:
        if child in self._children:
            self._children.remove(child)
        if isinstance(child.pid, Pid):
            self._by_pid.pop(child.pid, None)

    # ------------------------------------------------------------------ shutdown

    def _shutdown(self, child: _Child) -> Any:
        """Stop one child as its spec says; return its exit reason."""
        pid = child.pid
        if not isinstance(pid, Pid):
            child.pid = None
            return None
        return self._shutdown_many([child])[0]

    def _shutdown_many(self, children: list[_Child]) -> list[Any]:
        """Stop children concurrently, each within its own shutdown time from now."""
        rt = self._rt
        now = time.monotonic()
        pending: dict[Any, tuple[_Child, Pid, float | None, bool]] = {}
        reasons: dict[int, Any] = {}
        for child in children:
            pid = child.pid
            if not isinstance(pid, Pid):
                continue
            self._by_pid.pop(pid, None)
            ref = rt.monitor(pid)
            shutdown = child.spec.shutdown
            if shutdown == "brutal_kill":
                rt.exit(pid, "kill")
                deadline = None
            else:
                rt.exit(pid, "shutdown")
                deadline = None if shutdown == "infinity" else now + float(shutdown)
            pending[ref] = (child, pid, deadline, shutdown == "brutal_kill")
        while pending:
            self._collect_downs(pending, reasons)
            if not pending:
                break
            now = time.monotonic()
            waits = []
            for ref, (child, pid, deadline, killed) in list(pending.items()):
                if deadline is not None and now >= deadline and not killed:
                    log.warning(
                        "%r: child %r did not stop in %ss; killing",
                        self.pid,
                        child.spec.id,
                        child.spec.shutdown,
                    )
                    rt.exit(pid, "kill")
                    pending[ref] = (child, pid, None, True)
                elif deadline is not None and not killed:
                    waits.append(deadline - now)
            rt.pump(min(waits) if waits else 0.5)
        out = []
        for child in children:
            out.append(reasons.get(child.key))
            child.pid = None
        return out

    def _collect_downs(
        self, pending: dict[Any, tuple[_Child, Pid, float | None, bool]], reasons: dict[int, Any]
    ) -> None:
        rt = self._rt
        if not rt.mailbox:
            return
        dead: set[Pid] = set()
        keep = []
        for item in rt.mailbox:
            msg = item[2] if item[0] == INFO else None
            if isinstance(msg, Down) and msg.ref in pending:
                child = pending.pop(msg.ref)[0]
                reasons[child.key] = msg.reason
                dead.add(msg.pid)
                continue
            keep.append(item)
        # the link's exit signal of a child we stopped is not news
        rt.mailbox.clear()
        rt.mailbox.extend(
            item
            for item in keep
            if not (item[0] == INFO and isinstance(item[2], ExitSignal) and item[2].pid in dead)
        )

    def _stop_all(self) -> None:
        alive = [c for c in self._children if c.alive]
        if self._dynamic:
            self._shutdown_many(alive)
        else:
            for child in reversed(alive):
                self._shutdown(child)

    def terminate(self, reason: Any) -> None:
        self._stop_all()

    # ------------------------------------------------------------------ hooks

    # For a subclass that starts and stops one of its children itself, outside the
    # restart strategy (the registry's SingletonManager: a cold singleton's child starts
    # only on the elected node, and a losing one is stopped). The child is named by its
    # spec's id; nothing done here counts against the restart intensity. A child that
    # exits by itself is still restarted as its spec says.

    def _child_info(self, cid: Any) -> ChildInfo | None:
        """The child ``cid`` as a ``which_children`` row (``pid`` is its pid,
        ``"restarting"`` or None), or None if the supervisor has no such child."""
        child = self._find(cid)
        if child is None:
            return None
        return ChildInfo(child.spec.id, child.pid, str(child.spec.type), child.spec.modules)

    def _ensure_child(self, spec: ChildSpec) -> tuple[Any, ...]:
        """Start the child ``spec`` names (by its id) unless it runs: ``("ok", pid)`` if
        it runs, else what its start returned (``("ok", pid[, info])``, ``("ignore",)``
        or ``("error", reason)``). A spec the supervisor does not have yet is added
        first and kept, without a pid if it did not start: a later call tries again."""
        child = self._find(spec.id)
        if child is None:
            child = _Child(spec)
            self._children.append(child)
        if child.alive:
            return ("ok", child.pid)
        return self._start(child)

    def _stop_all_children(self) -> None:
        """Stop every child as the supervisor's own exit does (in reverse start order,
        each as its ``shutdown`` says) and forget them all: the supervisor is left with
        no child and no spec."""
        self._stop_all()
        self._children.clear()

    def _stop_child(self, cid: Any) -> Any:
        """Stop the child ``cid`` as its spec's ``shutdown`` says and keep it, without a
        pid (it is not restarted); its exit reason, None if it was not running."""
        child = self._find(cid)
        if child is None:
            return None
        return self._shutdown(child)

    # ------------------------------------------------------------------ API

    def handle_call(self, request: Any, from_: From) -> Any:
        why = CALLS.problem(request)
        if why is not None:
            self._drops.dropped(repr(self.pid), request, why)
            return shapes.bad_request(CALLS.owner, why)
        result = getattr(self, f"_api_{request[0]}")(*request[1:])
        # rows and specs are Python objects: another node gets them as plain data
        return result if self._rt.is_local(from_.pid) else wire_value(result)

    def _api_which_children(self) -> list[ChildInfo]:
        return [
            ChildInfo(
                None if self._dynamic else c.spec.id,
                c.pid,
                str(c.spec.type),
                c.spec.modules,
            )
            for c in reversed(self._children)
        ]

    def _api_which_children_ext(self) -> list[dict[str, Any]]:
        """Rows for the shell's tree: restart type and restart count too."""
        return [
            {
                "id": c.spec.id,
                "pid": c.pid,
                "type": c.spec.type,
                "restart": c.spec.restart,
                "restarts": c.restarts,
                "modules": c.spec.modules,
            }
            for c in self._children
        ]

    def _api_count_children(self) -> dict[str, int]:
        children = self._children
        if self._sofo:
            assert self._template is not None
            n = len(children)
            restarting = sum(1 for c in children if c.pid == "restarting")
            sup = n if self._template.type == "supervisor" else 0
            return {"specs": 1, "active": n - restarting, "supervisors": sup, "workers": n - sup}
        return {
            "specs": len(children),
            "active": sum(1 for c in children if c.alive),
            "supervisors": sum(1 for c in children if c.spec.type == "supervisor"),
            "workers": sum(1 for c in children if c.spec.type == "worker"),
        }

    def _api_start_child(self, arg: Any) -> tuple[Any, ...]:
        if self._sofo:
            assert self._template is not None
            if not (arg is None or isinstance(arg, tuple | list)):
                why = f"'start_child' of simple_one_for_one: {arg!r:.60} is not a tuple"
                return shapes.bad_request(CALLS.owner, why)
            child = _Child(self._template, extra=tuple(arg) if arg is not None else ())
            res = self._start(child)
            if res[0] == "ok":
                self._children.append(child)
                return res
            if res[0] == "ignore":
                return ("ok", None)
            return res
        try:
            spec = child_spec(arg)
            if spec.significant and self._flags.auto_shutdown == "never":
                raise InvalidChildSpec(
                    "significant",
                    True,
                    "False when auto_shutdown is never (bad_combination)",
                    spec.id,
                )
        except OtpkitError as exc:
            return ("error", exc)
        return self._start_new(spec)

    def _start_new(self, spec: ChildSpec) -> tuple[Any, ...]:
        existing = self._find(spec.id) if not self.dynamic else None
        if existing is not None:
            if existing.alive:
                return ("error", ("already_started", existing.pid))
            return ("error", "already_present")
        child = _Child(spec)
        res = self._start(child)
        if res[0] == "ok":
            self._children.append(child)
            return res
        if res[0] == "ignore":
            if spec.restart != "temporary" and not self.dynamic:
                self._children.append(child)
            return ("ok", None)
        reason = res[1]
        if isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "already_started":
            return ("error", reason)
        return ("error", reason if self.dynamic else (reason, spec))

    def _lookup(self, key: Any) -> _Child | str | None:
        if self._dynamic:
            if not isinstance(key, Pid):
                return "simple_one_for_one" if self._sofo else None
            child = self._by_pid.get(key)
            if child is None:
                # a child in a failing restart loop is still known by its last pid
                for c in self._children:
                    if c.pid == "restarting" and c.old_pid == key:
                        return c
            return child
        return self._find(key)

    def _api_terminate_child(self, key: Any) -> tuple[Any, ...]:
        child = self._lookup(key)
        if isinstance(child, str):
            return ("error", child)
        if child is None:
            if self._dynamic and isinstance(key, Pid) and not self._pid_alive(key):
                return ("ok",)
            return ("error", "not_found")
        if child.alive:
            self._shutdown(child)
        child.pid = None
        if child.spec.restart == "temporary" or self._dynamic:
            self._remove(child)
        return ("ok",)

    def _pid_alive(self, pid: Pid) -> bool:
        return bool(self._rt.is_local(pid) and self._rt.connection_to(pid) is not None)

    def _api_restart_child(self, cid: Any) -> tuple[Any, ...]:
        if self._sofo:
            return ("error", "simple_one_for_one")
        child = self._find(cid)
        if child is None:
            return ("error", "not_found")
        if child.alive:
            return ("error", "running")
        if child.pid == "restarting":
            return ("error", "restarting")
        res = self._start(child)
        if res[0] == "ignore":
            return ("ok", None)
        return res

    def _api_delete_child(self, cid: Any) -> tuple[Any, ...]:
        if self._sofo:
            return ("error", "simple_one_for_one")
        child = self._find(cid)
        if child is None:
            return ("error", "not_found")
        if child.alive:
            return ("error", "running")
        if child.pid == "restarting":
            return ("error", "restarting")
        self._remove(child)
        return ("ok",)

    def _api_get_childspec(self, key: Any) -> tuple[Any, ...]:
        child = self._lookup(key)
        if child is None or isinstance(child, str):
            return ("error", "not_found")
        return ("ok", child.spec)


class DynamicSupervisor(Supervisor):
    """Elixir's DynamicSupervisor: starts with no children; ``start_child`` takes a full
    spec each time; children are addressed by pid and stopped concurrently.

    ``setup`` options: ``intensity``, ``period``, ``max_children`` (default unlimited),
    ``extra_arguments`` (prepended to each child's args).
    """

    dynamic = True

    def setup(  # type: ignore[override]
        self,
        intensity: int = 3,
        period: float = 5,
        max_children: int | None = None,
        extra_arguments: tuple[Any, ...] = (),
    ) -> Any:
        self._max_children = max_children
        self._extra_arguments = tuple(extra_arguments)
        return SupFlags("one_for_one", intensity, period, "never"), []

    def _api_start_child(self, arg: Any) -> tuple[Any, ...]:
        if self._max_children is not None and len(self._children) >= self._max_children:
            return ("error", "max_children")
        try:
            spec = child_spec(arg)
        except OtpkitError as exc:
            return ("error", exc)
        if self._extra_arguments:
            spec = child_spec(
                ChildSpec(
                    spec.id,
                    spec.start,
                    (*self._extra_arguments, *spec.args),
                    spec.kwargs,
                    spec.restart,
                    spec.shutdown,
                    spec.type,
                    spec.significant,
                )
            )
        return self._start_new(spec)
