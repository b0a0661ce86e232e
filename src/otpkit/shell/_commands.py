"""The admin commands, shared by the shell and the one-shots: each turns its words into
requests to the admin service and its answer into ``(value, text)`` - the value for
``--json``, the text for a person."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from otpkit import admin
from otpkit.scheduler import DEFAULT_NAME
from otpkit.shell import _format
from otpkit.shell._client import AdminClient

__all__ = [
    "COMMANDS",
    "MAX_SECONDS",
    "SHELL_ONLY",
    "Command",
    "Options",
    "UsageError",
    "check_usage",
    "execute",
    "help_text",
    "parse_ospid",
    "parse_size",
]


class UsageError(Exception):
    """A command was given the wrong words; the message is its one-line usage."""


#: The largest os pid Linux gives (``PID_MAX_LIMIT``); a larger number names no process.
MAX_OSPID = 4_194_304
#: The expected cluster sizes the admin service takes (``quorum_expected``).
MAX_EXPECTED = 1000
#: Seconds a duration or timeout argument may give (waits longer overflow the clock).
MAX_SECONDS = 86400.0


def parse_ospid(text: str) -> tuple[str | None, int]:
    """A pid argument as ``(node or None, os pid)``, the os pid in 1..:data:`MAX_OSPID`.

    Raises:
        UsageError: not a pid, or a number no process has (one line).
    """
    try:
        node, ospid = admin.parse_pid(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if ospid > MAX_OSPID:
        raise UsageError(f"pid {text!r}: out of range (an os pid is 1 to {MAX_OSPID})")
    return node, ospid


def parse_size(text: str) -> int:
    """A cluster size argument, 1..:data:`MAX_EXPECTED`.

    Raises:
        UsageError: not a number in that range (one line).
    """
    word = text.strip()
    if not (word.isascii() and word.isdigit()) or not 0 < int(word) <= MAX_EXPECTED:
        raise UsageError(f"{text!r}: expected a number of nodes, 1 to {MAX_EXPECTED}")
    return int(word)


@dataclass(frozen=True)
class Options:
    scheduler: str = DEFAULT_NAME


Runner = Callable[[AdminClient, Sequence[str], Options], tuple[Any, str]]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str
    min_args: int
    max_args: int
    run: Runner
    #: what each argument names, for tab completion: sup, child, job, name, node, pid
    kinds: tuple[str, ...] = ()
    #: more lines for ``help COMMAND``
    details: str = ""


def _now() -> datetime:
    return datetime.now(UTC)


def _node_arg(args: Sequence[str], index: int) -> str | None:
    return args[index] if len(args) > index else None


def _nodes(c: AdminClient, a: Sequence[str], o: Options) -> tuple[Any, str]:
    data = c.request("nodes")
    return data, _format.render_nodes(data)


def _quorum(c: AdminClient, a: Sequence[str], o: Options) -> tuple[Any, str]:
    data = c.request("quorum", node=_node_arg(a, 0))
    return data, _format.render_quorum(data)


def _quorum_expected(c: AdminClient, a: Sequence[str], o: Options) -> tuple[Any, str]:
    data = c.request("quorum_expected", parse_size(a[0]))
    return data, _format.render_quorum(data)


def _quorum_recover(c: AdminClient, a: Sequence[str], o: Options) -> tuple[Any, str]:
    data = c.request("quorum_recover")
    return data, _format.render_quorum(data)


def _tree(c: AdminClient, a: Sequence[str], o: Options) -> tuple[Any, str]:
    node = _node_arg(a, 0)
    data = c.request("tree", node=node)
    return data, f"{node or c.target}\n{_format.render_tree(data)}"


def _which(c: AdminClient, a: Sequence[str], o: Options) -> tuple[Any, str]:
    data = c.request("which_children", a[0], node=_node_arg(a, 1))
    head = f"{data['sup']} {admin.pid_text(data['pid'])}"
    return data, f"{head}\n{_format.render_children(data['children'])}"


def _count(c: AdminClient, a: Sequence[str], o: Options) -> tuple[Any, str]:
    data = c.request("count_children", a[0], node=_node_arg(a, 1))
    return data, f"{data['sup']}: {_format.render_counts(data['counts'])}"


def _names(c: AdminClient, a: Sequence[str], o: Options) -> tuple[Any, str]:
    data = c.request("names")
    return data, _format.render_names(data)


def _whereis(c: AdminClient, a: Sequence[str], o: Options) -> tuple[Any, str]:
    pid = c.request("whereis", a[0])
    if pid is None:
        return None, f"{a[0]}: not registered"
    return pid, f"{a[0]}: {admin.pid_text(pid)} on {pid.node}"


def _jobs(c: AdminClient, a: Sequence[str], o: Options) -> tuple[Any, str]:
    data = c.request("jobs", o.scheduler)
    return data, _format.render_jobs(data, _now())


def _job(c: AdminClient, a: Sequence[str], o: Options) -> tuple[Any, str]:
    data = c.request("job", a[0], o.scheduler)
    return data, _format.render_job(data, _now())


def _run(c: AdminClient, a: Sequence[str], o: Options) -> tuple[Any, str]:
    keys = c.request("run", a[0], o.scheduler)
    if not keys:
        return keys, f"{a[0]}: this run was already taken"
    # a manual run's lane is "@manual", or "@manual:<node>" for run_strategy "all"
    lanes = [str(k[2]).removeprefix("@manual").lstrip(":") for k in keys if len(k) > 2]
    where = ", ".join(lane for lane in lanes if lane)
    at = admin.fmt_time(keys[0][1]) if len(keys[0]) > 1 else "?"
    return keys, f"{a[0]}: run at {at}" + (f" ({where})" if where else "")


def _state(op: str) -> Runner:
    def run(c: AdminClient, a: Sequence[str], o: Options) -> tuple[Any, str]:
        changed = c.request(op, a[0], o.scheduler)
        word = "activated" if op == "activate" else "deactivated"
        already = "active" if op == "activate" else "inactive"
        text = f"{a[0]}: {word}" if changed else f"{a[0]}: already {already}"
        return bool(changed), text

    return run


def _restart(c: AdminClient, a: Sequence[str], o: Options) -> tuple[Any, str]:
    data = c.request("restart", a[0], a[1], node=_node_arg(a, 2))
    return data, f"{data['id']} restarted as {admin.pid_text(data['pid'])}"


def _terminate(c: AdminClient, a: Sequence[str], o: Options) -> tuple[Any, str]:
    data = c.request("terminate", a[0], a[1], node=_node_arg(a, 2))
    return data, f"{data['id']} terminated"


def _kill(c: AdminClient, a: Sequence[str], o: Options) -> tuple[Any, str]:
    node, ospid = parse_ospid(a[0])
    data = c.request("kill", ospid, node=node)
    return data, f"killed {admin.pid_text(data['pid'])}"


COMMANDS: dict[str, Command] = {
    cmd.name: cmd
    for cmd in (
        Command("nodes", "nodes", "the cluster's nodes, hidden ones, quorum members", 0, 0, _nodes),
        Command(
            "quorum",
            "quorum [NODE]",
            "the majority policy's configuration, store, and why it cannot grant (if so)",
            0,
            1,
            _quorum,
            ("node",),
        ),
        Command(
            "quorum_expected",
            "quorum_expected N",
            "have the quorum decide N as the expected cluster size",
            1,
            1,
            _quorum_expected,
            ("size",),
        ),
        Command(
            "quorum_recover",
            "quorum_recover",
            "a new configuration of the connected nodes, when a majority lost their stores",
            0,
            0,
            _quorum_recover,
            (),
            "Only when the old members are gone for good (their stores lost): run while"
            "\nthey still run elsewhere, it makes two clusters.",
        ),
        Command(
            "tree",
            "tree [NODE]",
            "the supervision tree (pids, child ids, restart types, restart counts)",
            0,
            1,
            _tree,
            ("node",),
        ),
        Command(
            "which_children",
            "which_children SUP [NODE]",
            "a supervisor's children (SUP: kernel, a child id, a path a/b, or a pid)",
            1,
            2,
            _which,
            ("sup", "node"),
        ),
        Command(
            "count_children",
            "count_children SUP [NODE]",
            "a supervisor's child counts",
            1,
            2,
            _count,
            ("sup", "node"),
        ),
        Command("names", "names", "the global names and their pids", 0, 0, _names),
        Command("whereis", "whereis NAME", "the pid of a global name", 1, 1, _whereis, ("name",)),
        Command("jobs", "jobs", "every job: next fire, last run, state, holder", 0, 0, _jobs),
        Command("job", "job JOB", "one job in full", 1, 1, _job, ("job",)),
        Command("run", "run JOB", "fire a job now, once", 1, 1, _run, ("job",)),
        Command(
            "activate", "activate JOB", "let a job fire again", 1, 1, _state("activate"), ("job",)
        ),
        Command(
            "deactivate",
            "deactivate JOB",
            "stop a job firing",
            1,
            1,
            _state("deactivate"),
            ("job",),
        ),
        Command(
            "restart",
            "restart SUP CHILD [NODE]",
            "stop a child (if running) and start it again",
            2,
            3,
            _restart,
            ("sup", "child", "node"),
        ),
        Command(
            "terminate",
            "terminate SUP CHILD [NODE]",
            "stop a child (its spec is kept)",
            2,
            3,
            _terminate,
            ("sup", "child", "node"),
        ),
        Command(
            "kill",
            "kill PID",
            "kill an actor (a drill): <app@host.ospid>, or an os pid of the connected node",
            1,
            1,
            _kill,
            ("pid",),
            "Not the kernel, Thespian's admin or logger, nor the admin service (it would halt"
            "\nthe node). The pid is the os pid as it is now: if the actor you saw has died,"
            "\nthe number may name another actor of that node (check with tree first).",
        ),
    )
}

#: Commands the shell runs itself (streams, help, leaving), with their usage and help.
SHELL_ONLY = {
    "events": ("events [COUNT] [SECONDS]", "live tail of node, registry, supervisor, job events"),
    "help": ("help [COMMAND]", "this list, or one command's usage"),
    "quit": ("quit", "leave the shell (also exit, Ctrl-D)"),
}


def execute(client: AdminClient, words: Sequence[str], options: Options) -> tuple[Any, str]:
    """Run one command line (already split into words).

    Raises:
        UsageError: an unknown command or wrong number of words (one line).
        RequestError: the admin service refused it (one line).
        LostConnection: the target is gone.
    """
    command = check_usage(words)
    return command.run(client, list(words[1:]), options)


def check_usage(words: Sequence[str]) -> Command:
    """The command ``words`` name, once its words are right (checked before anything is
    asked of a node).

    Raises:
        UsageError: an unknown command, a wrong number of words, a malformed pid or a
            number out of range.
    """
    name, args = words[0], list(words[1:])
    command = COMMANDS.get(name)
    if command is None:
        raise UsageError(f"unknown command {name!r} (help lists them)")
    if not command.min_args <= len(args) <= command.max_args:
        raise UsageError(f"usage: {command.usage}")
    for kind, arg in zip(command.kinds, args, strict=False):
        if kind == "pid":
            parse_ospid(arg)
        elif kind == "size":
            parse_size(arg)
    return command


def help_text(name: str | None = None) -> str:
    """Every command with its usage, or one command's usage and help."""
    table = {n: (c.usage, c.help) for n, c in COMMANDS.items()} | SHELL_ONLY
    if name is not None:
        if name not in table:
            raise UsageError(f"unknown command {name!r} (help lists them)")
        usage, text = table[name]
        details = COMMANDS[name].details if name in COMMANDS else ""
        more = "".join(f"\n    {line}" for line in details.splitlines())
        return f"{usage}\n    {text}{more}"
    width = max(len(u) for u, _ in table.values())
    return "\n".join(f"{u.ljust(width)}  {t}" for u, t in table.values())
