"""The messages of a scheduler process, as frozen dataclasses, and their one codec.

A scheduler process (``SchedulerWorker``, one per node) takes:

* the holder's rounds, ``("$sr", op, ...)``: :class:`Apply` a write, :class:`Observe`
  an epoch and answer the copy, :class:`Sync` the whole copy; and :class:`Subscribe`
  (a local pid to send job events to, or not);
* the runtime API's calls (``_client``), ``("$sc", op, ...)``, asked of the holder:
  :class:`AddJob`, :class:`DeleteJob`, :class:`DeleteAllJobs`, :class:`ActivateJob`,
  :class:`DeactivateJob`, :class:`FindJob`, :class:`ListJobs`, :class:`RunJob`;
* plain messages: :class:`Hello` (another node's scheduler process says it runs one),
  :class:`EventNote` (a job event from the holder), and the task pools' reports
  :class:`RunStarted` and :class:`RunDone`.

:func:`decode_call` and :func:`decode_info` check a message against the Protocols
below and make its dataclass (:class:`BadMessage` says why not); :func:`encode` makes
the tuple back. The tuples are the wire of every otpkit version since the protocols
were declared, so nodes of the previous version take them during a rolling update.
The holder's own timers are not messages of this module: they are Python objects
(``_scheduler._Timer``) no other node can send.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar

from otpkit.actors import Pid, shapes
from otpkit.scheduler._events import JobEvent
from otpkit.scheduler._ledger import ClaimKey
from otpkit.scheduler._pool import EPOCH, ERROR_LIMIT, JOB_NAME, NODE_NAME, RUN_KEY, WALL_TIME
from otpkit.scheduler._replica import decode_key

#: The default global name of the scheduler.
DEFAULT_NAME = "otpkit_scheduler"


def replica_name(scheduler: str) -> str:
    """The local name and dist service of a scheduler's per-node worker."""
    return f"otpkit_sched:{scheduler}"


# ---------------------------------------------------------------------- protocols

#: A holder's identity in its writes (``<pid>/<generation>``), and a boot token.
_HOLDER = shapes.Str(1024, min_len=1)
_BOOT = shapes.Opt(shapes.Str(256))

#: The ops of ``("$sr", op, ...)``: the holder's rounds to the replicas (``apply`` a
#: write, ``observe`` an epoch and answer the copy, ``sync`` the whole copy) and
#: ``subscribe`` (a local pid to send job events to, or not). Checked on the request
#: without its ``"$sr"``.
REPLICA_CALLS = shapes.Protocol(
    "scheduler replica call",
    shapes.Shape("apply", (EPOCH, shapes.Seq(shapes.Seq(shapes.ANY, 3), 1 << 20), _BOOT, _HOLDER)),
    shapes.Shape("observe", (EPOCH, _HOLDER)),
    shapes.Shape("sync", (EPOCH, _HOLDER, shapes.Map(shapes.Str(64), shapes.ANY, 64), _BOOT)),
    shapes.Shape("subscribe", (Pid, bool)),
)
#: The ops of ``("$sc", op, ...)``: the runtime API (``_client``), asked of the holder.
#: Checked on the request without its ``"$sc"``.
CLIENT_CALLS = shapes.Protocol(
    "scheduler client call",
    shapes.Shape("add", (shapes.Map(shapes.Str(64), shapes.ANY, 64),)),
    shapes.Shape("delete", (JOB_NAME,)),
    shapes.Shape("delete_all"),
    shapes.Shape("activate", (JOB_NAME,)),
    shapes.Shape("deactivate", (JOB_NAME,)),
    shapes.Shape("find", (JOB_NAME,)),
    shapes.Shape("jobs"),
    shapes.Shape("history", (JOB_NAME,)),
    shapes.Shape("run", (JOB_NAME, datetime)),
)
#: The calls a scheduler process serves besides the Singleton's (``SingletonWorker``):
#: ``("$sr", op, ...)`` (:data:`REPLICA_CALLS`) and ``("$sc", op, ...)``
#: (:data:`CLIENT_CALLS`). A request that does not fit is answered
#: ``("error", "BadRequest", why)``, the runtime API's form of an error.
CALLS = shapes.Protocol(
    "scheduler call",
    shapes.Shape("$sr", (shapes.Str(64),), more=True),
    shapes.Shape("$sc", (shapes.Str(64),), more=True),
)
#: What a task pool of this release adds to its reports (the attempt, whether the task
#: raised, its traceback's last lines): taken, not read yet.
_RUN_INFO = shapes.Map(shapes.Str(64), shapes.ANY, 16)
#: The plain messages a scheduler process takes besides ``NodeUp``, ``NodeDown``,
#: ``Down`` and its own timers: another node's scheduler saying it runs one
#: (``$hello``), a job event from the holder (``$event``) and the task pools' reports
#: (``run_done``, ``run_started``; a pool of the previous release sends them without
#: their last field).
INFOS = shapes.Protocol(
    "scheduler message",
    shapes.Shape("$hello", (NODE_NAME,)),
    shapes.Shape("$event", (shapes.Map(shapes.Str(64), shapes.ANY, 64),)),
    shapes.Shape(
        "run_done",
        (
            NODE_NAME,
            RUN_KEY,
            shapes.Str(64),
            shapes.Opt(WALL_TIME),
            WALL_TIME,
            shapes.Opt(shapes.Str(ERROR_LIMIT)),
            _RUN_INFO,
        ),
        optional=1,
    ),
    shapes.Shape("run_started", (NODE_NAME, RUN_KEY, WALL_TIME, _RUN_INFO), optional=1),
)


class BadMessage(ValueError):
    """A message that does not fit its Protocol (``why`` says how)."""

    def __init__(self, protocol: shapes.Protocol, why: str) -> None:
        super().__init__(why)
        self.protocol = protocol
        self.why = why

    def answer(self) -> tuple[str, str, str]:
        """The answer to such a call: the runtime API's error."""
        return bad_answer(self.protocol, self.why)


def bad_answer(protocol: shapes.Protocol, why: str) -> tuple[str, str, str]:
    """The answer to a request that does not fit ``protocol``: the runtime API's error."""
    return ("error", "BadRequest", shapes.bad_request(protocol.owner, why)[1])


# ---------------------------------------------------------------------- the messages


class ReplicaCall:
    """A call of ``("$sr", op, ...)``; its fields follow ``op`` on the wire."""

    op: ClassVar[str]


class ClientCall:
    """A call of ``("$sc", op, ...)``; its fields follow ``op`` on the wire."""

    op: ClassVar[str]


class Info:
    """A plain message ``(tag, ...)``."""

    tag: ClassVar[str]


@dataclass(frozen=True)
class Apply(ReplicaCall):
    """Take ``updates`` (``["lane" | "job" | "where", ...]``) written under ``epoch`` by
    ``holder``, with the cluster's ``boot`` token."""

    op: ClassVar[str] = "apply"
    epoch: int
    updates: list[Any]
    boot: str | None
    holder: str


@dataclass(frozen=True)
class Observe(ReplicaCall):
    """Refuse every other holder's writes at or below ``epoch``, and answer the copy."""

    op: ClassVar[str] = "observe"
    epoch: int
    holder: str


@dataclass(frozen=True)
class Sync(ReplicaCall):
    """Take ``replica``, the holder's whole copy (``encode_replica``), and ``boot``."""

    op: ClassVar[str] = "sync"
    epoch: int
    holder: str
    replica: dict[str, Any]
    boot: str | None


@dataclass(frozen=True)
class Subscribe(ReplicaCall):
    """Send this node's job events to ``pid`` (``on``), or no longer."""

    op: ClassVar[str] = "subscribe"
    pid: Pid
    on: bool


@dataclass(frozen=True)
class AddJob(ClientCall):
    """Add the job of ``spec`` (``Job.to_spec``) or replace the job of its name."""

    op: ClassVar[str] = "add"
    spec: dict[str, Any]


@dataclass(frozen=True)
class DeleteJob(ClientCall):
    op: ClassVar[str] = "delete"
    name: str


@dataclass(frozen=True)
class DeleteAllJobs(ClientCall):
    op: ClassVar[str] = "delete_all"


@dataclass(frozen=True)
class ActivateJob(ClientCall):
    op: ClassVar[str] = "activate"
    name: str


@dataclass(frozen=True)
class DeactivateJob(ClientCall):
    op: ClassVar[str] = "deactivate"
    name: str


@dataclass(frozen=True)
class FindJob(ClientCall):
    op: ClassVar[str] = "find"
    name: str


@dataclass(frozen=True)
class ListJobs(ClientCall):
    op: ClassVar[str] = "jobs"


@dataclass(frozen=True)
class JobHistory(ClientCall):
    """The run history of ``name`` (protocol 4; a holder of protocol 3 answers it with
    a BadRequest)."""

    op: ClassVar[str] = "history"
    name: str


@dataclass(frozen=True)
class RunJob(ClientCall):
    """Run ``name`` once, at ``at`` (the caller's now: a retry names the same run)."""

    op: ClassVar[str] = "run"
    name: str
    at: datetime


@dataclass(frozen=True)
class Hello(Info):
    """``node``'s scheduler process runs this scheduler."""

    tag: ClassVar[str] = "$hello"
    node: str


@dataclass(frozen=True)
class EventNote(Info):
    """A job event the holder emitted, for this node's subscribers."""

    tag: ClassVar[str] = "$event"
    event: JobEvent


@dataclass(frozen=True)
class RunStarted(Info):
    """The run of ``key`` entered its task on ``node`` at ``start`` (wall time); ``info``
    (a pool of this release): ``{"attempt": n}``."""

    tag: ClassVar[str] = "run_started"
    node: str
    key: ClaimKey
    start: float
    info: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunDone(Info):
    """The run of ``key`` on ``node`` ended with ``outcome`` (a pool sends it again until
    a holder acknowledges it); ``info`` (a pool of this release): ``{"attempt": n,
    "raised": bool, "traceback": str | None}``."""

    tag: ClassVar[str] = "run_done"
    node: str
    key: ClaimKey
    outcome: str
    start: float | None
    end: float
    error: str | None
    info: dict[str, Any] | None = None


#: Any message of this module.
Message = ReplicaCall | ClientCall | Info

_REPLICA_TYPES: dict[str, type[ReplicaCall]] = {t.op: t for t in (Apply, Observe, Sync, Subscribe)}
_CLIENT_TYPES: dict[str, type[ClientCall]] = {
    t.op: t
    for t in (
        AddJob,
        DeleteJob,
        DeleteAllJobs,
        ActivateJob,
        DeactivateJob,
        FindJob,
        ListJobs,
        JobHistory,
        RunJob,
    )
}


# ---------------------------------------------------------------------- the codec


def decode_call(request: Any) -> ReplicaCall | ClientCall:
    """The call ``request`` is.

    Raises:
        BadMessage: it does not fit :data:`CALLS`, or its op :data:`REPLICA_CALLS` or
            :data:`CLIENT_CALLS` (:meth:`BadMessage.answer` is the answer to send).
    """
    why = CALLS.problem(request)
    if why is not None:
        raise BadMessage(CALLS, why)
    ops = REPLICA_CALLS if request[0] == "$sr" else CLIENT_CALLS
    why = ops.problem(request[1:])
    if why is not None:
        raise BadMessage(ops, why)
    types: dict[str, Any] = _REPLICA_TYPES if ops is REPLICA_CALLS else _CLIENT_TYPES
    call: ReplicaCall | ClientCall = types[request[1]](*request[2:])
    return call


def decode_info(msg: Any) -> Info:
    """The plain message ``msg`` is.

    Raises:
        BadMessage: it does not fit :data:`INFOS`, or a job event or a run key in it is
            malformed (the message says which field).
    """
    why = INFOS.problem(msg)
    if why is not None:
        raise BadMessage(INFOS, why)
    tag = msg[0]
    try:
        if tag == "$hello":
            return Hello(msg[1])
        if tag == "$event":
            return EventNote(JobEvent.from_wire(msg[1]))
        if tag == "run_started":
            return RunStarted(msg[1], decode_key(msg[2]), *msg[3:])
        return RunDone(msg[1], decode_key(msg[2]), *msg[3:])
    except (TypeError, ValueError) as exc:  # LedgerError is a ValueError
        raise BadMessage(INFOS, str(exc)) from None


def encode(msg: Message) -> tuple[Any, ...]:
    """The wire tuple of ``msg``: what :func:`decode_call` or :func:`decode_info` reads."""
    if isinstance(msg, EventNote):
        return (msg.tag, msg.event.to_wire())
    instance: Any = msg  # a dataclass: each message class is one
    values = [getattr(msg, f.name) for f in fields(instance)]
    if isinstance(msg, RunStarted | RunDone):
        values[1] = [msg.key.job, msg.key.at, msg.key.node]
        if msg.info is None:
            values.pop()  # the previous release's form
    if isinstance(msg, ReplicaCall):
        return ("$sr", msg.op, *values)
    if isinstance(msg, ClientCall):
        return ("$sc", msg.op, *values)
    return (msg.tag, *values)


__all__ = [
    "CALLS",
    "CLIENT_CALLS",
    "DEFAULT_NAME",
    "INFOS",
    "REPLICA_CALLS",
    "ActivateJob",
    "AddJob",
    "Apply",
    "BadMessage",
    "ClientCall",
    "DeactivateJob",
    "DeleteAllJobs",
    "DeleteJob",
    "EventNote",
    "FindJob",
    "Hello",
    "Info",
    "JobHistory",
    "ListJobs",
    "Message",
    "Observe",
    "ReplicaCall",
    "RunDone",
    "RunJob",
    "RunStarted",
    "Subscribe",
    "Sync",
    "bad_answer",
    "decode_call",
    "decode_info",
    "encode",
    "replica_name",
]
