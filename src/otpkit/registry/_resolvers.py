"""Conflict resolvers: the built-ins, and how a resolver travels (as an importable name).

A resolver is called as ``resolve(name, other_pid, own_pid)`` on the node where
``own_pid`` lives, in a process of its own, when the registry finds ``name`` bound to two
pids after two partitions meet. It returns the pid that keeps the name everywhere, or
anything else (``None``) to unregister it; if it raises, ``other_pid`` keeps the name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from otpkit import actors
from otpkit.actors import Pid
from otpkit.errors import LoadError

log = logging.getLogger("otpkit.registry")

Resolver = Callable[[Any, Pid, Pid], Any]


def _order(pid1: Pid, pid2: Pid) -> tuple[Pid, Pid]:
    """(min, max) by node name, then by pid: OTP's ``minmax``, so "random" is in fact the
    same choice on every node."""
    key1 = (pid1.node, pid1.id, pid1.serial)
    key2 = (pid2.node, pid2.id, pid2.serial)
    return (pid1, pid2) if key1 <= key2 else (pid2, pid1)


def random_exit_name(name: Any, pid1: Pid, pid2: Pid) -> Pid:
    """The default: keep the pid on the smaller-named node; kill the other (its links and
    supervisor see ``"killed"``)."""
    keep, lose = _order(pid1, pid2)
    log.info("global: name conflict on %r: terminating %r", name, lose)
    actors.exit(lose, "kill")
    return keep


def random_notify_name(name: Any, pid1: Pid, pid2: Pid) -> Pid:
    """Keep the pid on the smaller-named node; tell the other
    ``("global_name_conflict", name)``; it keeps running without the name."""
    keep, lose = _order(pid1, pid2)
    actors.send(lose, ("global_name_conflict", name))
    return keep


def notify_all_name(name: Any, pid1: Pid, pid2: Pid) -> None:
    """Unregister the name; tell both ``("global_name_conflict", name, other_pid)``."""
    actors.send(pid1, ("global_name_conflict", name, pid2))
    actors.send(pid2, ("global_name_conflict", name, pid1))


BUILTIN = {
    "random_exit_name": random_exit_name,
    "random_notify_name": random_notify_name,
    "notify_all_name": notify_all_name,
}
DEFAULT = "otpkit.registry:random_exit_name"


def resolver_name(resolve: str | Resolver | None) -> str:
    """The importable name of ``resolve``, checked now (a registration must not carry a
    resolver that cannot be found when a partition heals)."""
    if resolve is None:
        return DEFAULT
    if isinstance(resolve, str):
        if resolve in BUILTIN:
            return f"otpkit.registry:{resolve}"
        load_resolver(resolve)
        return resolve
    if callable(resolve):
        module = getattr(resolve, "__module__", None)
        qualname = getattr(resolve, "__qualname__", "")
        if resolve in BUILTIN.values():
            return f"otpkit.registry:{resolve.__name__}"
        candidate = f"{module}:{qualname}"
        if module and module != "__main__" and "<" not in qualname:
            try:
                if load_resolver(candidate) is resolve:
                    return candidate
            except ValueError:
                pass
        raise ValueError(
            f"resolver {resolve!r}: resolvers travel by name, so give a module-level "
            "function of an importable module, or its name as 'package.module:function'"
        )
    raise TypeError(f"resolver {resolve!r}: expected a function or 'package.module:function'")


def load_resolver(name: str) -> Resolver:
    """The function named ``"package.module:function"``; ValueError naming what is wrong."""
    module_name, _, attr = name.partition(":")
    try:
        target: Any = actors.load_object(name)
    except LoadError as exc:
        if exc.problem == "form":
            raise ValueError(f"resolver {name!r}: expected 'package.module:function'") from None
        if exc.problem == "import":
            raise ValueError(
                f"resolver {name!r}: cannot import {module_name!r}: {exc.cause}"
            ) from exc.cause
        target = None
    if target is None:  # a missing attribute, or one that is None
        raise ValueError(f"resolver {name!r}: {module_name!r} has no {attr!r}")
    if not callable(target):
        raise ValueError(f"resolver {name!r}: {attr!r} is not callable")
    resolver: Resolver = target
    return resolver
