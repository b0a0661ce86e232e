"""The Actor behaviour: OTP's gen_server callbacks in Python."""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Final

from otpkit.actors._pid import From, Pid

log = logging.getLogger("otpkit.actors")


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name

    def __reduce__(self) -> str:
        return self._name


#: Returned by :meth:`Actor.init` to start nothing (OTP's ``ignore``).
IGNORE: Final = _Sentinel("IGNORE")
#: Returned by :meth:`Actor.handle_call` to reply later with :func:`otpkit.reply`.
NOREPLY: Final = _Sentinel("NOREPLY")

_NO_REPLY = object()


class Stop(Exception):
    """Raise from a handler (or from ``init``) to end the process with ``reason``.

    From ``handle_call``, ``reply`` (if given) is sent to the caller first. ``terminate``
    runs, then the process exits with ``reason``; linked processes and monitors see it.
    """

    def __init__(self, reason: Any = "normal", reply: Any = _NO_REPLY) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply

    @property
    def has_reply(self) -> bool:
        return self.reply is not _NO_REPLY


class Actor:
    """Base class of an otpkit process (OTP's ``gen_server``).

    One actor is one OS process. Override the callbacks you need:

    * ``init(*args, **kwargs)``: runs in the new process before its starter gets the
      pid. Return :data:`IGNORE` to start nothing; raise :class:`Stop` or any exception
      to fail the start with that reason.
    * ``handle_call(request, from_)``: return the reply, or :data:`NOREPLY` and answer
      later with ``otpkit.reply(from_, value)``.
    * ``handle_cast(msg)`` and ``handle_info(msg)``: plain messages, ``Down`` and
      ``ExitSignal`` (when trapping exits) arrive in ``handle_info``.
    * ``terminate(reason)``: runs when the actor stops by :class:`Stop`, by an exception
      in a handler, or - when it traps exits - by an exit signal from its parent, also
      when the parent dies in any way (``"killed"`` if it was killed). A process whose
      parent died has 5 s to end (``_host.ORPHAN_GRACE``), then it is killed.

    An exception in any handler crashes the actor: it exits with that exception as its
    reason. There is no retry. A process that does not trap exits and receives an abnormal
    exit signal (a linked process crashed) ends at once, without ``terminate``.
    """

    #: Set by the runtime before ``init`` runs.
    pid: Pid
    #: Reported in supervisors' which_children and the shell's tree.
    otp_type: ClassVar[str] = "worker"

    def init(self, *args: Any, **kwargs: Any) -> Any:
        return None

    def handle_call(self, request: Any, from_: From) -> Any:
        raise NotImplementedError(f"{type(self).__name__} got an unexpected call: {request!r}")

    def handle_cast(self, msg: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} got an unexpected cast: {msg!r}")

    def handle_info(self, msg: Any) -> None:
        log.warning("%r (%s) ignored an unexpected message: %r", self.pid, type(self).__name__, msg)

    def terminate(self, reason: Any) -> None:
        return None
