"""The registry's decisions, as functions of plain values (OTP ``global``'s rules).

* :func:`check_register`: may ``name`` be bound to ``pid``? (``register_name``)
* :func:`exchange_plan`: two partitions meet; which names to copy, which clash.
* :func:`outcome`: what a resolver's answer means for a clash.
* :class:`LockTable`: the cluster lock's per-node state (``set_lock``/``del_lock``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from otpkit.actors import Pid


@dataclass(frozen=True)
class Entry:
    """One registration: the pid and the resolver stored with it (an importable name)."""

    pid: Pid
    resolver: str


def check_register(names: Mapping[Any, Entry], name: Any, pid: Pid) -> str | None:
    """Why ``register_name(name, pid)`` must answer False, or None if it may proceed:
    ``"taken"`` if the name is bound, ``"has_name"`` if the pid already holds another
    global name (OTP's ``check_dupname``)."""
    if name in names:
        return "taken"
    if any(entry.pid == pid for entry in names.values()):
        return "has_name"
    return None


@dataclass(frozen=True)
class Clash:
    """A name bound to two pids when two partitions meet. ``own`` is the registration
    of the side that resolves (the smaller-named node's); ``other`` the other side's."""

    name: Any
    own: Entry
    other: Entry


@dataclass(frozen=True)
class ExchangePlan:
    """What a merge of two name tables does: ``copy`` names known to one side only to
    the other; call a resolver once per ``clash``."""

    copy: dict[Any, Entry] = field(default_factory=dict)
    clashes: list[Clash] = field(default_factory=list)


def exchange_plan(own: Mapping[Any, Entry], other: Mapping[Any, Entry]) -> ExchangePlan:
    """Merge the resolving side's table ``own`` with the ``other`` side's.

    A name on one side only is copied to the other side. A name bound to the same pid on
    both sides is no clash, even if the resolvers differ (OTP-6341: ``name_die``); the
    resolving side's entry stays. A name bound to two pids is one clash.
    """
    plan = ExchangePlan()
    for name, entry in own.items():
        theirs = other.get(name)
        if theirs is None:
            plan.copy[name] = entry
        elif theirs.pid != entry.pid:
            plan.clashes.append(Clash(name, entry, theirs))
    for name, entry in other.items():
        if name not in own:
            plan.copy[name] = entry
    plan.clashes.sort(key=lambda c: repr(c.name))
    return plan


#: How a resolver's run ended.
RESOLVED, RAISED, UNREACHABLE = "resolved", "raised", "unreachable"


def outcome(clash: Clash, how: str, result: Any) -> Entry | None:
    """The entry that keeps the name everywhere after ``clash`` was resolved, or None
    when the name is unregistered everywhere.

    The resolver returns a pid: the other side's pid keeps the name, or its own side's
    does. It returns anything else (``None`` included): the name goes. It raises, or its
    node cannot be reached (it halted mid-resolution): the other side's pid keeps the
    name, as OTP's ``global_SUITE`` expects of an exiting resolver and of a ``badrpc``.
    """
    if how in (RAISED, UNREACHABLE):
        return clash.other
    if isinstance(result, Pid):
        if result == clash.other.pid:
            return clash.other
        if result == clash.own.pid:
            return clash.own
    return None


@dataclass
class _Lock:
    requester: Any
    holders: set[Pid] = field(default_factory=set)


class LockTable:
    """One node's view of the cluster locks (OTP ``global:set_lock``).

    A lock is a resource id held for one requester id; several processes may hold it for
    the same requester, and each must release it (``otp_1849``). A holder's death or its
    node going down releases what it held. No deadlock detection, as OTP.
    """

    def __init__(self) -> None:
        self._locks: dict[Any, _Lock] = {}

    def acquire(self, resource: Any, requester: Any, holder: Pid) -> bool:
        lock = self._locks.get(resource)
        if lock is None:
            self._locks[resource] = _Lock(requester, {holder})
            return True
        if lock.requester == requester:
            lock.holders.add(holder)
            return True
        return False

    def release(self, resource: Any, requester: Any, holder: Pid) -> bool:
        lock = self._locks.get(resource)
        if lock is None or lock.requester != requester or holder not in lock.holders:
            return False
        lock.holders.discard(holder)
        if not lock.holders:
            del self._locks[resource]
        return True

    def release_holders(self, gone: Iterable[Pid]) -> list[Any]:
        """Release everything the pids in ``gone`` held; the resources freed."""
        dead = set(gone)
        freed = []
        for resource, lock in list(self._locks.items()):
            lock.holders -= dead
            if not lock.holders:
                del self._locks[resource]
                freed.append(resource)
        return freed

    def holders(self) -> set[Pid]:
        return {pid for lock in self._locks.values() for pid in lock.holders}

    def held(self) -> dict[Any, tuple[Any, list[Pid]]]:
        return {
            resource: (lock.requester, sorted(lock.holders, key=repr))
            for resource, lock in self._locks.items()
        }
