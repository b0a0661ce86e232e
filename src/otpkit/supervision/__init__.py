"""Supervision trees: OTP's supervisor, DynamicSupervisor, and their API."""

from __future__ import annotations

from typing import Any

from otpkit import actors
from otpkit.actors import Pid
from otpkit.errors import SupervisorError
from otpkit.supervision._decisions import (
    add_restart,
    auto_shutdown_due,
    needs_restart,
    restart_plan,
)
from otpkit.supervision._spec import ChildSpec, SupFlags, check_specs, child_spec, sup_flags
from otpkit.supervision._supervisor import ChildInfo, DynamicSupervisor, Supervisor

__all__ = [
    "ChildInfo",
    "ChildSpec",
    "DynamicSupervisor",
    "SupFlags",
    "Supervisor",
    "add_restart",
    "auto_shutdown_due",
    "check_specs",
    "child_spec",
    "count_children",
    "delete_child",
    "get_childspec",
    "needs_restart",
    "restart_child",
    "restart_plan",
    "start_child",
    "sup_flags",
    "terminate_child",
    "which_children",
]

DEFAULT_TIMEOUT = 60.0


def _unwrap(result: Any) -> Any:
    if not isinstance(result, tuple) or not result:
        raise SupervisorError(("bad_reply", result))
    if result[0] == "ok":
        if len(result) == 1:
            return None
        if len(result) == 2:
            return result[1]
        return result[1:]
    raise SupervisorError(result[1] if len(result) > 1 else result)


def start_child(sup: Pid | str, spec_or_args: Any, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Add and start a child. Returns its pid, None if its start ignored, or
    ``(pid, info)`` when the start returned info. For ``simple_one_for_one`` pass the
    extra arguments (a tuple) instead of a spec. Raises :class:`SupervisorError` with
    OTP's reason: ``("already_started", pid)``, ``"already_present"``, ``(reason, spec)``.
    """
    return _unwrap(actors.call(sup, ("start_child", spec_or_args), timeout))


def terminate_child(sup: Pid | str, key: Any, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Stop a child (by id; by pid under ``simple_one_for_one``). Idempotent."""
    _unwrap(actors.call(sup, ("terminate_child", key), timeout))


def restart_child(sup: Pid | str, child_id: Any, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Start again a child whose spec is kept but which is not running."""
    return _unwrap(actors.call(sup, ("restart_child", child_id), timeout))


def delete_child(sup: Pid | str, child_id: Any, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Forget the spec of a child that is not running."""
    _unwrap(actors.call(sup, ("delete_child", child_id), timeout))


def which_children(sup: Pid | str, timeout: float = DEFAULT_TIMEOUT) -> list[ChildInfo]:
    """``[ChildInfo(id, pid | "restarting" | None, type, modules)]``, newest first."""
    rows: list[ChildInfo] = actors.call(sup, ("which_children",), timeout)
    return rows


def count_children(sup: Pid | str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, int]:
    """``{"specs", "active", "supervisors", "workers"}`` as OTP counts them."""
    counts: dict[str, int] = actors.call(sup, ("count_children",), timeout)
    return counts


def get_childspec(sup: Pid | str, key: Any, timeout: float = DEFAULT_TIMEOUT) -> ChildSpec:
    """The full spec of a child, defaults filled in."""
    spec: ChildSpec = _unwrap(actors.call(sup, ("get_childspec", key), timeout))
    return spec
