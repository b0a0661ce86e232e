"""The admin service: a system actor on every dist node that answers the shell.

It is reached as the dist service ``otpkit_admin`` (``multi_call([("otpkit_admin",
node)], request)``) and answers ``("ok", value)`` or ``("error", "one line")``; a
value is plain data (dicts, lists, strings, numbers, pids, aware times). Requests:

==================================  =================================================
``("nodes",)``                      ``{"node", "nodes", "hidden", "members",
                                    "singletons"}`` (each singleton as this node's
                                    watchdog sees it: ``{"name", "policy", "holder",
                                    "no_holder_for", "reason"}``)
``("tree",)``                       the node's supervision tree (see ``_format``)
``("which_children", SUP)``         ``{"sup", "pid", "children": [row]}``
``("count_children", SUP)``         ``{"sup", "pid", "counts"}``
``("names",)``                      ``[{"name", "pid"}]``
``("whereis", NAME)``               a pid or None
``("jobs", SCHED)``                 the scheduler's job rows (next fire, last run, ...)
``("job", NAME, SCHED)``            one row
``("run" | "activate" |             what the scheduler's API returns
"deactivate", NAME, SCHED)``
``("restart", SUP, CHILD)``         ``{"id", "pid"}``: stopped if running, started
``("terminate", SUP, CHILD)``       ``{"id"}``
``("kill", OSPID)``                 ``{"pid"}``: exit(pid, "kill") of an actor of the
                                    node (not the kernel, Thespian's admin or logger,
                                    nor this service); OSPID as it is now
``("events", PID, ON)``             start/stop sending event dicts to PID
``("forward", NODE, REQUEST)``      REQUEST asked of NODE's admin service (not a
                                    forward again)
``("pid",)``                        the service's own pid (see :func:`ask_admin`)
``("quorum",)``                     the quorum's status (``otpkit.quorum.status``)
``("quorum_expected", N)``          the quorum decides N as the expected size
``("quorum_recover",)``             a new configuration without the lost majority
                                    (``otpkit.quorum.recover``); then the status
==================================  =================================================

A bad request is answered with an error line; nothing a client sends can make the
service crash (a crashing system actor counts against the kernel, whose give-up halts
the node). Every request is checked against :data:`CALLS` first (``("error", "bad admin
request: ...")``); a plain message that is not the service's own (:data:`INFOS`) is
dropped with one WARNING a minute. ``events`` subscribers get ``{"at", "node", "kind",
"text"}`` dicts: node up/down (``monitor_nodes``), global names bound/unbound and
supervisor children started/restarted/gone (both read every ``EVENT_POLL`` seconds,
only while someone listens), and the scheduler's job events.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from otpkit import actors
from otpkit import distribution as dist
from otpkit.actors import Actor, Down, From, Pid, shapes
from otpkit.admin import _views
from otpkit.distribution import NodeDown, NodeUp
from otpkit.errors import CallTimeout, Exit, NodeError, OtpkitError, SupervisorError

log = logging.getLogger("otpkit.admin")

#: The admin service's local name and dist service name.
ADMIN_NAME = "otpkit_admin"
#: Seconds between two reads of the name table and the tree while events are watched.
EVENT_POLL = 0.5
#: Seconds a supervisor may take to list its children.
SUP_TIMEOUT = 5.0
#: Seconds a scheduler request may take (it retries across a fail-over meanwhile).
SCHED_TIMEOUT = 10.0
#: Seconds a restart or terminate may take.
ACT_TIMEOUT = 30.0


#: A supervisor or a child as the shell names it (a path, an id, a pid's text).
_LABEL = shapes.Str(1024)
#: A scheduler's name, and a job's (``Job`` does not bound it).
_SCHEDULER = shapes.Str(64, min_len=1)
_JOB = shapes.Str(65_536, min_len=1)

#: The requests the service answers (see the module), lists taken as tuples.
CALLS = shapes.Protocol(
    "admin request",
    shapes.Shape("nodes"),
    shapes.Shape("tree"),
    shapes.Shape("which_children", (_LABEL,)),
    shapes.Shape("count_children", (_LABEL,)),
    shapes.Shape("names"),
    shapes.Shape("whereis", (shapes.ANY,)),  # any global name: the registry checks it
    shapes.Shape("jobs", (_SCHEDULER,)),
    shapes.Shape("job", (_JOB, _SCHEDULER)),
    shapes.Shape("run", (_JOB, _SCHEDULER)),
    shapes.Shape("activate", (_JOB, _SCHEDULER)),
    shapes.Shape("deactivate", (_JOB, _SCHEDULER)),
    shapes.Shape("restart", (_LABEL, _LABEL)),
    shapes.Shape("terminate", (_LABEL, _LABEL)),
    shapes.Shape("kill", (shapes.Int(1, (1 << 31) - 1),)),
    shapes.Shape("events", (Pid, bool, _SCHEDULER), optional=1),
    # the request is checked where it is served (another node may know more of them)
    shapes.Shape("forward", (shapes.Str(255, min_len=1), shapes.Seq(shapes.ANY, 16))),
    shapes.Shape("pid"),
    shapes.Shape("quorum"),
    shapes.Shape("quorum_expected", (shapes.Int(1, 1000),)),
    shapes.Shape("quorum_recover"),
    lists=True,
)
#: The service's own plain messages (besides NodeUp, NodeDown, Down and JobEvent): the
#: timer of the event poll.
#: The admin service takes no plain message from anyone: its poll timer is a Python
#: object (:data:`_POLL`), which no other node can send, so no sender multiplies it.
INFOS = shapes.Protocol("admin message")


class _PollTimer:
    """The event poll's timer message (see :meth:`Admin._on_poll`)."""


_POLL = _PollTimer()

#: Why each of the kernel's system children may not be stopped from the shell.
_SYSTEM_WHY = {
    "admin": "it is the service answering this shell",
    "dist": "it carries every connection of the node, this shell's too",
    "global": "it holds the node's part of the global name table",
    "quorum": "it holds the node's quorum membership and leases",
    "discovery": "it finds and connects the cluster's nodes",
}


class AdminError(Exception):
    """A request the service refuses; the message is the one line the shell shows."""


class Admin(Actor):
    """The node's admin service (see the module); a child of the node's kernel."""

    def init(self, system_children: frozenset[str] = frozenset()) -> None:
        rt = actors.runtime()
        #: the kernel's children the node needs (see _app_child)
        self.system_children = frozenset(system_children)
        self.node = rt.node.name
        self.kernel: Pid | None = rt.parent
        self.subscribers: dict[Pid, Any] = {}
        #: other nodes' admin services, by node (see ask_admin)
        self.peers: dict[str, Pid] = {}
        self.names: dict[Any, Pid] = {}
        self.procs: dict[str, tuple[str, int]] = {}
        self.polling = False
        self.watching_nodes = False
        self.watching_jobs: set[str] = set()
        self.drops = shapes.DropLog(log)
        actors.register(ADMIN_NAME)
        dist.register_service(ADMIN_NAME)

    # ------------------------------------------------------------------ calls

    def handle_call(self, request: Any, from_: From) -> Any:
        why = CALLS.problem(request)
        if why is not None:
            return shapes.bad_request(CALLS.owner, why)
        try:
            return ("ok", self._call(request[0], tuple(request[1:])))
        except AdminError as exc:
            return ("error", str(exc))
        except (OtpkitError, ValueError, TypeError, KeyError, IndexError, OSError) as exc:
            # an unexpected error of one request must not take the service down
            log.warning("%s: admin request %.120r failed: %r", self.node, request, exc)
            return ("error", f"{type(exc).__name__}: {exc}")

    def _call(self, op: str, args: tuple[Any, ...]) -> Any:
        """Serve a request that fits :data:`CALLS` (each of its tags has an ``_op_``)."""
        handler: Callable[..., Any] = getattr(self, f"_op_{op}")
        return handler(*args)

    def _op_forward(self, node: str, request: Any) -> Any:
        if not request:
            raise AdminError("forward: an empty request")
        if request[0] == "forward":
            # A -> B -> A would wait on itself: each admin serves one request at a time
            raise AdminError("forward: a forwarded request may not forward again")
        if node == self.node:
            why = CALLS.problem(request)
            if why is not None:
                raise AdminError(shapes.bad_request(CALLS.owner, why)[1])
            return self._call(request[0], tuple(request[1:]))
        if node not in dist.nodes():
            raise AdminError(f"node {node!r} is not connected to {self.node}")
        kind, answer = ask_admin(node, tuple(request), ACT_TIMEOUT + 5, self.peers)
        if kind == "exit":
            raise AdminError(f"node {node}'s admin service did not answer ({answer})")
        if kind != "ok":
            raise AdminError(f"node {node} did not answer ({kind})")
        if isinstance(answer, tuple | list) and len(answer) == 2 and answer[0] == "ok":
            return answer[1]
        raise AdminError(str(answer[1]) if isinstance(answer, tuple | list) else str(answer))

    def _op_pid(self) -> Pid:
        return actors.self()

    # ------------------------------------------------------------------ reads

    def _op_nodes(self) -> dict[str, Any]:
        from otpkit import quorum as _quorum  # noqa: PLC0415 - a dist node's only

        members: list[str] | None
        try:
            version, names = _quorum.members(timeout=2.0)
            members = names if version else []
        except (Exit, CallTimeout, NodeError):
            members = None
        try:
            singletons = _views.singleton_rows(_quorum.notices(timeout=2.0), time.monotonic())
        except (Exit, CallTimeout, NodeError):
            singletons = []
        return {
            "node": self.node,
            "nodes": dist.nodes(),
            "hidden": dist.hidden_nodes(),
            "members": members,
            "singletons": singletons,
        }

    def _op_quorum(self) -> dict[str, Any]:
        from otpkit import quorum as _quorum  # noqa: PLC0415 - a dist node's only

        return _quorum.status(timeout=2.0)

    def _op_quorum_expected(self, size: Any) -> dict[str, Any]:
        from otpkit import quorum as _quorum  # noqa: PLC0415 - a dist node's only

        if not _quorum.set_expected_size(size, timeout=5.0):
            raise AdminError(f"the quorum did not decide expected size {size} (no majority?)")
        return _quorum.status(timeout=2.0)

    def _op_quorum_recover(self) -> dict[str, Any]:
        from otpkit import quorum as _quorum  # noqa: PLC0415 - a dist node's only

        return _quorum.recover(timeout=5.0)

    def _op_tree(self) -> dict[str, Any]:
        if self.kernel is None:
            raise AdminError(f"{self.node}: no kernel to read")
        tree: dict[str, Any] = self._subtree("kernel", self.kernel, "supervisor", "permanent", 0)
        return tree

    def _subtree(self, label: str, pid: Any, kind: str, restart: str, restarts: int) -> Any:
        node: dict[str, Any] = {
            "id": label,
            "pid": pid,
            "type": kind,
            "restart": restart,
            "restarts": restarts,
            "error": None,
            "children": None,
        }
        if kind != "supervisor":
            return node
        node["children"] = []
        if not isinstance(pid, Pid):
            return node
        if pid.node != self.node:
            node["error"] = f"on {pid.node}: tree {pid.node}"
            return node
        try:
            rows = _views.child_rows(actors.call(pid, ("which_children_ext",), SUP_TIMEOUT))
        except CallTimeout:
            node["error"] = f"{_views.NO_ANSWER} within {SUP_TIMEOUT:g} s"
            return node
        except Exit as exc:
            node["error"] = f"ended while read: {exc}"
            return node
        node["children"] = [
            self._subtree(r["id"], r["pid"], r["type"], r["restart"], r["restarts"]) for r in rows
        ]
        return node

    def _sup(self, text: Any) -> tuple[str, Pid]:
        found = _views.find_supervisor(self._op_tree(), str(text))
        if found.node is None:
            raise AdminError(found.error)
        pid = found.node.get("pid")
        if not isinstance(pid, Pid):
            raise AdminError(f"supervisor {text!r} is not running ({_views.pid_text(pid)})")
        return found.path or "kernel", pid

    def _op_which_children(self, sup: Any) -> dict[str, Any]:
        path, pid = self._sup(sup)
        rows = _views.child_rows(actors.call(pid, ("which_children_ext",), SUP_TIMEOUT))
        return {"sup": path, "pid": pid, "children": rows}

    def _op_count_children(self, sup: Any) -> dict[str, Any]:
        from otpkit.supervision import count_children  # noqa: PLC0415

        path, pid = self._sup(sup)
        return {"sup": path, "pid": pid, "counts": count_children(pid, SUP_TIMEOUT)}

    def _op_names(self) -> list[dict[str, Any]]:
        table = self._table()
        return [{"name": name, "pid": table[name]} for name in sorted(table, key=_views.id_label)]

    def _op_whereis(self, name: Any) -> Pid | None:
        from otpkit.registry import whereis_name  # noqa: PLC0415

        return whereis_name(name)

    def _table(self) -> dict[Any, Pid]:
        from otpkit.registry import name_table  # noqa: PLC0415

        return name_table()

    # ------------------------------------------------------------------ jobs

    def _op_jobs(self, scheduler: str) -> list[dict[str, Any]]:
        from otpkit.scheduler import jobs  # noqa: PLC0415 - nodes without jobs skip it

        return jobs(str(scheduler), SCHED_TIMEOUT)

    def _op_job(self, name: str, scheduler: str) -> dict[str, Any]:
        for row in self._op_jobs(scheduler):
            if row.get("name") == name:
                return row
        raise AdminError(f"no job {name!r} in scheduler {scheduler!r}")

    def _op_run(self, name: str, scheduler: str) -> list[Any]:
        from otpkit.scheduler import run_job  # noqa: PLC0415

        return run_job(str(name), str(scheduler), SCHED_TIMEOUT)

    def _op_activate(self, name: str, scheduler: str) -> bool:
        from otpkit.scheduler import activate_job  # noqa: PLC0415

        return activate_job(str(name), str(scheduler), SCHED_TIMEOUT)

    def _op_deactivate(self, name: str, scheduler: str) -> bool:
        from otpkit.scheduler import deactivate_job  # noqa: PLC0415

        return deactivate_job(str(name), str(scheduler), SCHED_TIMEOUT)

    # ------------------------------------------------------------------ acts

    def _child(self, sup: Any, child: Any) -> tuple[str, Pid, Mapping[str, Any], Any]:
        path, pid = self._sup(sup)
        raw = actors.call(pid, ("which_children_ext",), SUP_TIMEOUT)
        rows = [{**r, "label": _views.id_label(r.get("id"))} for r in raw]
        row = _views.find_child(rows, str(child))
        if row is None:
            labels = ", ".join(str(r["label"]) for r in rows) or "none"
            raise AdminError(f"{path} has no child {child!r} (children: {labels})")
        # a dynamic supervisor's children are known by pid only
        key = row["pid"] if row.get("id") is None and isinstance(row.get("pid"), Pid) else row["id"]
        return path, pid, row, key

    def _app_child(self, op: str, sup: Any, child: Any) -> tuple[str, Pid, Mapping[str, Any], Any]:
        """:meth:`_child`, refusing the kernel's system children (``Node`` adds them and names them
        at ``init``):
        stopping one would end this very request (admin), cut the node off (dist) or
        take its names and votes away (global, quorum, discovery) with no one to start
        it again. Any child of the application stays allowed; ``kill`` is the drill for
        a system process (its kernel restarts it)."""
        path, pid, row, key = self._child(sup, child)
        if pid == self.kernel and row.get("id") in self.system_children:
            why = _SYSTEM_WHY.get(str(row["id"]), "the node needs it")
            raise AdminError(
                f"{op}: {row['label']} is a system process of node {self.node} ({why}); "
                "only the application's children can be restarted or terminated"
            )
        return path, pid, row, key

    def _op_restart(self, sup: Any, child: Any) -> dict[str, Any]:
        from otpkit.supervision import restart_child, terminate_child  # noqa: PLC0415

        _path, pid, row, key = self._app_child("restart", sup, child)
        try:
            if isinstance(row.get("pid"), Pid):
                terminate_child(pid, key, ACT_TIMEOUT)
            new = restart_child(pid, key, ACT_TIMEOUT)
        except SupervisorError as exc:
            raise AdminError(f"restart of {row['label']} failed: {exc.args[0]!r}") from None
        if isinstance(new, tuple):
            new = new[0]
        return {"id": row["label"], "pid": new}

    def _op_terminate(self, sup: Any, child: Any) -> dict[str, Any]:
        from otpkit.supervision import terminate_child  # noqa: PLC0415

        _path, pid, row, key = self._app_child("terminate", sup, child)
        try:
            terminate_child(pid, key, ACT_TIMEOUT)
        except SupervisorError as exc:
            raise AdminError(f"terminate of {row['label']} failed: {exc.args[0]!r}") from None
        return {"id": row["label"]}

    def _op_kill(self, ospid: int) -> dict[str, Any]:
        pid = self._killable(ospid)
        actors.exit(pid, "kill")
        log.warning("%s: admin: killed %r (a drill, from the shell)", self.node, pid)
        return {"pid": pid}

    def _killable(self, ospid: int) -> Pid:
        """The pid of ``ospid`` if it is an otpkit process of this node that a drill may
        kill: not this service, the kernel, nor Thespian's admin (the kernel's parent)
        or logger, whose death halts the node or its logging.

        Raises:
            AdminError: naming what ``ospid`` is instead.
        """
        rt = actors.runtime()
        if ospid == os.getpid():
            raise AdminError("kill: that is the admin service itself")
        if self.kernel is not None and ospid == self.kernel.id:
            raise AdminError("kill: that is the node's kernel (it would halt the node)")
        serial = actors.process_start_ticks(ospid)
        try:
            ours = serial is not None and os.getpgid(ospid) == actors.node_pgid()
        except ProcessLookupError:
            ours = False
        if not ours or serial is None:
            raise AdminError(f"kill: no process {ospid} of node {self.node}")
        thespian = _parent_ospid(self.kernel.id) if self.kernel is not None else None
        if ospid == thespian:
            raise AdminError(
                f"kill: {ospid} is Thespian's admin process of node {self.node} "
                "(the kernel's parent: it would halt the node)"
            )
        pid = Pid(self.node, rt.node.creation, ospid, serial)
        if not _is_actor(pid):
            what = "Thespian's logger" if _parent_ospid(ospid) == thespian else "not an actor"
            raise AdminError(f"kill: {ospid} is {what} of node {self.node}, not an otpkit process")
        return pid

    # ------------------------------------------------------------------ events

    def _op_events(self, pid: Pid, on: bool, scheduler: str | None = None) -> str:
        """Start (``on``) or stop sending event dicts to ``pid``, with the job events of
        ``scheduler`` (default: the scheduler package's ``DEFAULT_NAME``)."""
        if not on:
            ref = self.subscribers.pop(pid, None)
            if ref is not None:
                actors.demonitor(ref, flush=True)
            return "ok"
        if pid not in self.subscribers:
            self.subscribers[pid] = actors.monitor(pid)
        if not self.watching_nodes:
            dist.monitor_nodes(True)
            self.watching_nodes = True
        from otpkit.scheduler import DEFAULT_NAME, subscribe  # noqa: PLC0415 - as _op_jobs

        scheduler = DEFAULT_NAME if scheduler is None else scheduler
        if scheduler not in self.watching_jobs:
            try:
                subscribe(str(scheduler), actors.self(), timeout=2.0)
                self.watching_jobs.add(scheduler)
            except (Exit, CallTimeout, NodeError):
                pass  # this node runs no such scheduler: no job events from here
        if not self.polling:
            self.names = self._table()
            self.procs = self._procs()
            self.polling = True
            actors.send_after(EVENT_POLL, _POLL)
        return "ok"

    def handle_cast(self, msg: Any) -> None:
        self.drops.dropped(f"{self.node}: admin", msg, "the admin service takes no cast")

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, _PollTimer):
            self._on_poll()
            return
        if not isinstance(msg, NodeUp | NodeDown | Down) and type(msg).__name__ != "JobEvent":
            self.drops.dropped(f"{self.node}: admin", msg, INFOS.problem(msg) or "not expected")
            return
        if not self.subscribers:
            return
        try:
            if isinstance(msg, NodeUp):
                self._emit("node", f"node {msg.node} up")
            elif isinstance(msg, NodeDown):
                self._emit("node", f"node {msg.node} down ({msg.reason})")
            elif isinstance(msg, Down):
                self.subscribers.pop(msg.pid, None)
            elif type(msg).__name__ == "JobEvent":
                self._job_event(msg)
        except (OtpkitError, ValueError, TypeError, KeyError, OSError) as exc:
            log.warning("%s: admin event %.120r failed: %r", self.node, msg, exc)

    def _on_poll(self) -> None:
        """One read of the name table and the tree while someone listens; the next is
        armed whatever this one raised (else the events would stop for good)."""
        if not self.subscribers:
            self.polling = False
            return
        try:
            self._poll()
        except (AdminError, OtpkitError, ValueError, TypeError, KeyError, OSError) as exc:
            log.warning("%s: admin event poll failed: %r", self.node, exc)
        finally:
            actors.send_after(EVENT_POLL, _POLL)

    def _job_event(self, event: Any) -> None:
        parts = [f"{event.kind} {event.job}" if event.job else event.kind]  # no_holder: none
        if event.tick is not None:
            parts.append(f"tick {_views.fmt_time(event.tick)}")
        if event.node:
            parts.append(f"on {event.node}")
        if event.duration is not None:
            parts.append(f"{event.duration:.3f} s")
        if event.error:
            parts.append(f"error: {event.error}")
        at = getattr(event, "at", None)
        self._emit("job", " ".join(parts), at if isinstance(at, int | float) and at else None)

    def _poll(self) -> None:
        names = self._table()
        for name in sorted(set(self.names) | set(names), key=_views.id_label):
            old, new = self.names.get(name), names.get(name)
            if old != new:
                label = _views.id_label(name)
                if new is None:
                    self._emit("registry", f"{label} unregistered (was {old!r})")
                else:
                    self._emit("registry", f"{label} registered to {new!r}")
        self.names = names
        procs = self._procs()
        for path in sorted(set(self.procs) | set(procs)):
            old_p, new_p = self.procs.get(path), procs.get(path)
            if old_p == new_p:
                continue
            if new_p is None:
                self._emit("supervisor", f"{path} gone (was {old_p[0] if old_p else '-'})")
            elif old_p is None:
                self._emit("supervisor", f"{path} started as {new_p[0]}")
            elif old_p[1] != new_p[1]:
                self._emit(
                    "supervisor",
                    f"{path} restarted: {old_p[0]} -> {new_p[0]} (restarts={new_p[1]})",
                )
            else:
                self._emit("supervisor", f"{path} is now {new_p[0]}")
        self.procs = procs

    def _procs(self) -> dict[str, tuple[str, int]]:
        return _views.snapshot(self._op_tree(), self.procs)

    def _emit(self, kind: str, text: str, at: float | None = None) -> None:
        """Send an event to every subscriber; ``at`` is when it happened (default now)."""
        event = {"at": at or time.time(), "node": self.node, "kind": kind, "text": text}
        for pid in list(self.subscribers):
            actors.send(pid, event)


def ask_admin(
    node: str, request: tuple[Any, ...], timeout: float, pids: dict[str, Pid]
) -> tuple[str, Any]:
    """``request`` asked of ``node``'s admin service, as :func:`multi_call` answers it.

    The call goes to the service's pid (cached in ``pids``, looked up once by name), not
    to its name: a call to a pid is watched, so a node lost meanwhile answers
    ``("exit", "noconnection")`` at once, where a call by name waits its whole
    ``timeout``. A service that restarted since it was looked up (``noproc``: the
    request never reached it) is looked up again and asked once more.
    """
    kind: str = "timeout"
    answer: Any = None
    for _attempt in range(2):
        pid = pids.get(node)
        if pid is None:
            kind, answer = actors.multi_call([(ADMIN_NAME, node)], ("pid",), min(timeout, 5.0))[0]
            if kind != "ok":
                return kind, answer
            if not (
                isinstance(answer, tuple | list) and len(answer) == 2 and answer[0] == "ok"
            ) or not isinstance(answer[1], Pid):
                return "ok", answer  # the service's refusal, for the caller to show
            pid = pids[node] = answer[1]
        kind, answer = actors.multi_call([pid], request, timeout)[0]
        if kind == "ok":
            return kind, answer
        pids.pop(node, None)
        if (kind, answer) != ("exit", "noproc"):
            return kind, answer
    return kind, answer


def _parent_ospid(ospid: int) -> int | None:
    """The os pid of ``ospid``'s parent, or None if there is no such process."""
    fields = actors.proc_stat(ospid)
    return None if fields is None else int(fields[1])


def _is_actor(pid: Pid) -> bool:
    """True if ``pid`` is a live otpkit process of this node: its runtime listens at the
    address every local pid is reached at (Thespian's own processes have none). The
    probe is a connect and a close, which the process ignores."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(actors.address_of(pid))
    except OSError:
        return False
    finally:
        sock.close()
    return True


__all__ = ["ADMIN_NAME", "CALLS", "INFOS", "Admin", "AdminError", "ask_admin"]
