"""Process identifiers, references and the messages the runtime itself delivers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Pid:
    """Identifies one otpkit process, cluster-wide.

    ``node`` is the node's name (``app@host``); ``creation`` changes on every start of that
    node, so a pid kept from an earlier incarnation never aliases a new process (pod IPs
    and StatefulSet names are reused). ``id`` is the OS process id of the actor's process
    and ``serial`` that process's start time in clock ticks: together they are unique on
    the host for the life of the node, even when the OS reuses process ids.

    Printed as ``<node.id>``; hashable; equal only when every field is.
    """

    node: str
    creation: int
    id: int
    serial: int

    def __repr__(self) -> str:
        return f"<{self.node}.{self.id}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # dataclasses' generic slot pickling walks fields() on every load: 5x slower
        return (Pid, (self.node, self.creation, self.id, self.serial))


@dataclass(frozen=True, slots=True)
class Ref:
    """A unique reference: a monitor, a call, a timer."""

    node: str
    creation: int
    n: int

    def __repr__(self) -> str:
        return f"#Ref<{self.node}.{self.n & 0xFFFFFFFF}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Ref, (self.node, self.creation, self.n))


@dataclass(frozen=True, slots=True)
class Down:
    """A monitored process ended: delivered exactly once per :func:`monitor` reference.

    ``reason`` is the exit reason, ``"noproc"`` when the process did not exist, and
    ``"noconnection"`` when its node could not be reached.
    """

    ref: Ref
    pid: Pid
    reason: Any


@dataclass(frozen=True, slots=True)
class ExitSignal:
    """An exit signal turned into a message because the receiver traps exits.

    Erlang's ``{'EXIT', Pid, Reason}``: a linked process ended, or someone called
    ``exit(self, reason)``.
    """

    pid: Pid
    reason: Any


@dataclass(frozen=True, slots=True)
class From:
    """Who is waiting for the reply to a ``call``: pass it to :func:`otpkit.reply`."""

    pid: Pid
    ref: Ref


def is_normal_exit(reason: Any) -> bool:
    """True for the reasons OTP treats as a clean end: normal, shutdown, (shutdown, _)."""
    if reason in ("normal", "shutdown"):  # a tuple: reasons may be unhashable
        return True
    return isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown"
