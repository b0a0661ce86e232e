"""The system-process fuzz: malformed messages from a hidden node holding the cookie, sent
to every system process of a live three-node cluster (``tests/cluster/test_fuzz.py``;
``bench/hostile.py``'s ``fuzz_system_crashes``).

The messages follow the processes' own declarations: every module-level
:class:`otpkit.actors.shapes.Protocol` of ``src/otpkit`` (:func:`protocols`), each mapped
to the processes it guards by :data:`TARGETS` and sent as the kind its name says
(``CALLS``: calls, ``CASTS``: casts, ``INFOS``: plain messages). A Protocol that
:data:`TARGETS` does not know is an error (:func:`unknown_protocols`), so a new one is
never skipped silently. For each tag of each Protocol :func:`cases` makes the tag with
too few and too many fields, each field replaced by a value of another kind (None,
bools, 0, -1, 64-bit extremes and beyond, huge floats, NaN, "", a 100 KB str, bytes, [],
{}, deep lists, a Pid and a Ref of another node, aware datetimes), numbers at and past
their bounds, containers holding a bad item, the message as a list; then unknown tags,
and random msgpack values (:func:`random_value`) sent to every process as calls, casts
and plain messages. Everything is drawn from one seed, printed for a replay. A
valid-shaped message of a harmful operation is never sent (:data:`DENY`, each with its
reason); a malformed one of the same tag is.

It runs in three kinds of programs:

- the cluster's nodes: ``otpkit run tests.harness.fuzz:root`` (:func:`root`), a
  Scheduler whose job writes which node ran which tick to ``$FUZZ_TICKS`` every second,
  and a majority Singleton;
- the fuzzer: ``python -m tests.harness.fuzz --seed S --count N NAME@HOST:PORT ...``, a
  hidden node (as ``otpkit shell`` starts one) that reads every node's tree from its
  admin service, sends the messages, reads the trees again and prints one JSON line
  (:func:`fuzz`);
- the judge, in the test or the benchmark: :class:`FuzzCluster` starts the nodes,
  :func:`run` runs the fuzzer against them and returns what a user checks
  (:class:`Verdict`): crashes and abnormal ends in the nodes' logs (:func:`crashes`,
  :func:`exits`), processes restarted (every pid and restart count of the nodes' trees,
  the registry's helpers and the pool's workers, before and after), ticks missed or
  doubled (:func:`tick_problems`), and whether the cluster still answers.

``FuzzCluster(src=...)`` runs another otpkit tree (e.g. the release before the guards),
and ``--save-protocols`` / ``--protocols`` carry this tree's declarations to its fuzzer.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import pickle
import pkgutil
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from otpkit.actors import Pid, Ref, shapes

#: The scheduler of the cluster's application, its job, and the majority Singleton.
SCHEDULER = "fuzz"
JOB = "tick"
SINGLETON = "fuzz_single"
#: The cluster's cookie (at least 16 bytes).
COOKIE = "fuzz-suite-cookie-0123456789"
#: Seconds a fuzz call waits for its answer: a dropped call times out, which is fine.
CALL_TIMEOUT = 0.5
#: Seconds the calls to a process that let one time out are sent without waiting: a
#: process busy with a slow request (e.g. the admin service asked about a scheduler
#: that does not exist waits 10 s for it) must not hold the whole fuzz up.
BUSY = 5.0
#: Seconds the fuzz waits at its end for every process to read what it was sent.
DRAIN = 60.0
#: A node no one runs: pids and refs of it are "of another node" to every target.
GHOST = "ghost@192.0.2.1"

# ---------------------------------------------------------------------- the application


def root() -> list[Any]:
    """The cluster's application: the Scheduler ``fuzz`` (majority) with one job that
    records every second's tick (``tests.harness.scheduler_tasks:record`` into
    ``$FUZZ_TICKS``, on a random node of the cluster), and a majority Singleton of a
    plain SingletonWorker."""
    from otpkit import ChildSpec  # noqa: PLC0415 - the fuzzer program needs none of it
    from otpkit.registry import Singleton, SingletonWorker  # noqa: PLC0415
    from otpkit.scheduler import Job, Scheduler  # noqa: PLC0415

    job = Job(
        JOB,
        "* * * * * *",
        "tests.harness.scheduler_tasks:record",
        kwargs={"path": os.environ["FUZZ_TICKS"]},
        run_strategy="random",
    )
    return [
        Scheduler([job], name=SCHEDULER, max_concurrency=3),
        Singleton(ChildSpec("held", SingletonWorker), SINGLETON, policy="majority"),
    ]


# ---------------------------------------------------------------------- the declarations

#: The processes of a node, by role, as :func:`find_processes` finds them:
#: ``kernel``, ``dist``, ``global``, ``quorum``, ``admin``, ``discovery`` (the kernel's
#: children), ``merger`` and ``resolver`` (the registry's helpers: the global server's
#: child processes), ``supervisor`` (every supervisor: the kernel, the scheduler's, the
#: singleton managers), ``manager`` (singleton managers), ``singleton_worker`` (the
#: singletons' warm children: the scheduler's worker and the plain one), ``scheduler``
#: (the scheduler's worker and replica), ``pool`` (its task pool) and ``pool_worker``.
ROLES = (
    "kernel",
    "dist",
    "global",
    "quorum",
    "admin",
    "discovery",
    "merger",
    "resolver",
    "supervisor",
    "manager",
    "singleton_worker",
    "scheduler",
    "pool",
    "pool_worker",
)

#: The roles each Protocol guards, by ``module.ATTR``.
TARGETS: dict[str, tuple[str, ...]] = {
    "otpkit.quorum._actor.CALLS": ("quorum",),
    "otpkit.quorum._actor.INFOS": ("quorum",),
    "otpkit.registry._global.CALLS": ("global",),
    "otpkit.registry._global.INFOS": ("global",),
    "otpkit.registry._global.MERGER_INFOS": ("merger",),
    "otpkit.registry._global.RESOLVER_INFOS": ("resolver",),
    "otpkit.registry._singleton.MANAGER_CALLS": ("manager",),
    "otpkit.registry._singleton.MANAGER_INFOS": ("manager",),
    "otpkit.registry._singleton.WORKER_CALLS": ("singleton_worker",),
    "otpkit.discovery._poller.CALLS": ("discovery",),
    "otpkit.discovery._poller.INFOS": ("discovery",),
    "otpkit.distribution._actor.CALLS": ("dist",),
    "otpkit.supervision._supervisor.CALLS": ("supervisor",),
    "otpkit.supervision._supervisor.INFOS": ("supervisor",),
    "otpkit.node._node.KERNEL_CALLS": ("kernel",),
    "otpkit.scheduler._messages.CALLS": ("scheduler",),
    "otpkit.scheduler._messages.REPLICA_CALLS": ("scheduler",),
    "otpkit.scheduler._messages.CLIENT_CALLS": ("scheduler",),
    "otpkit.scheduler._messages.INFOS": ("scheduler",),
    "otpkit.scheduler._pool.CALLS": ("pool",),
    "otpkit.scheduler._pool.CASTS": ("pool",),
    "otpkit.scheduler._pool.INFOS": ("pool",),
    "otpkit.scheduler._pool.WORKER_INFOS": ("pool_worker",),
    "otpkit.admin._service.CALLS": ("admin",),
    "otpkit.admin._service.INFOS": ("admin",),
}

#: Protocols whose messages travel inside another's: sent after these leading items
#: (the scheduler's ``("$sr", op, ...)`` and ``("$sc", op, ...)``).
WRAPS: dict[str, tuple[Any, ...]] = {
    "otpkit.scheduler._messages.REPLICA_CALLS": ("$sr",),
    "otpkit.scheduler._messages.CLIENT_CALLS": ("$sc",),
}

#: Valid-shaped messages never sent, by ``(module.ATTR, leading items)`` (``()``: every
#: tag; the items of a wrapped Protocol's own message, see :data:`WRAPS`): each is a
#: real operation that would harm the cluster under test (or run code) if its arguments
#: were right. A message that starts with those items and fits the Protocol is never
#: sent; one that does not fit is sent like any other.
DENY: dict[tuple[str, tuple[Any, ...]], str] = {}


def _deny(attr: str, why: str, *prefixes: tuple[Any, ...]) -> None:
    for prefix in prefixes:
        DENY[(attr, prefix)] = why


_deny(
    "otpkit.quorum._actor.CALLS",
    "changes the quorum's configuration or expected size (an operator's act)",
    ("recover",),
    ("leave",),
    ("set_expected",),
)
_deny(
    "otpkit.quorum._actor.CALLS",
    "takes, fences or gives up a lease: a real key (the singletons') would move or void it",
    ("acquire",),
    ("fence",),
    ("release",),
)
_deny(
    "otpkit.quorum._actor.CALLS",
    "keeps the node's readiness probe at 503 while the fuzzer lives",
    ("ready_gate",),
)
_deny(
    "otpkit.quorum._actor.INFOS",
    "a member's greeting, vote, grant, release or fence: the quorum trusts its members, so "
    "a valid one (an epoch or a configuration version above the cluster's) is a real step",
    (),
)
_deny(
    "otpkit.registry._global.CALLS",
    "binds or unbinds names, takes or frees the cluster lock, marks nodes merged or runs "
    "resolvers: the registry's own steps",
    ("lock",),
    ("lock_probe",),
    ("commit",),
    ("unlock",),
    ("apply",),
    ("synced",),
    ("resolve",),
)
_deny(
    "otpkit.registry._global.INFOS",
    "a peer server's greeting: a valid one replaces the node's record of that peer",
    ("hello",),
)
_deny(
    "otpkit.registry._global.MERGER_INFOS",
    "starts a merge, which locks the whole cluster's name table",
    ("merge",),
)
_deny(
    "otpkit.registry._global.RESOLVER_INFOS",
    "runs the resolver the message names (code) on pids of the message",
    ("resolve",),
)
_deny(
    "otpkit.registry._singleton.WORKER_CALLS",
    "gives the active child other witnesses",
    ("$singleton_witness",),
)
_deny(
    "otpkit.distribution._actor.CALLS",
    "dials, drops or blocks links, or registers services: the node's own dist control",
    ("connect",),
    ("set_known",),
    ("disconnect",),
    ("drop_link",),
    ("service",),
    ("monitor_nodes",),
    ("monitor_witnesses",),
)
_deny(
    "otpkit.supervision._supervisor.CALLS",
    "starts, stops, restarts or deletes a child (the shell's acts; a child spec runs code)",
    ("start_child",),
    ("terminate_child",),
    ("restart_child",),
    ("delete_child",),
)
_deny(
    "otpkit.node._node.KERNEL_CALLS",
    "spawns a process running named code, or stops every child of the node",
    ("$spawn",),
    ("$stop",),
)
_deny(
    "otpkit.scheduler._messages.REPLICA_CALLS",
    "a replica write, observe or sync: a valid one (an epoch above the holder's) fences "
    "the real holder out, and its ticks are missed",
    ("apply",),
    ("observe",),
    ("sync",),
)
_deny(
    "otpkit.scheduler._messages.CLIENT_CALLS",
    "adds, deletes, (de)activates or runs jobs: a manual run or a deleted job changes the "
    "ticks the suite counts",
    ("add",),
    ("delete",),
    ("delete_all",),
    ("activate",),
    ("deactivate",),
    ("run",),
)
_deny(
    "otpkit.scheduler._messages.INFOS",
    "a run's reports: a valid one finishes a real claim",
    ("run_done",),
    ("run_started",),
)
_deny(
    "otpkit.scheduler._pool.CALLS",
    "with an epoch, raises the pool's floor: the real holder's runs are refused",
    ("state",),
)
_deny(
    "otpkit.scheduler._pool.CASTS",
    "runs the task the message names (code); an ack drops a real run's report",
    ("run",),
    ("ack",),
)
_deny(
    "otpkit.scheduler._pool.INFOS",
    "the casts again (the pool takes them as messages too), and a worker's reports: a "
    "valid one ends a real run's record",
    ("run",),
    ("ack",),
    ("started",),
    ("done",),
    ("$timeout",),
)
_deny(
    "otpkit.scheduler._pool.WORKER_INFOS",
    "runs the task the message names (code)",
    ("run",),
)
_deny(
    "otpkit.admin._service.CALLS",
    "asks a scheduler the message names: one that does not exist holds the service for "
    "its whole wait (SCHED_TIMEOUT, 10 s; events 2 s), which would only make the fuzz slow",
    ("jobs",),
    ("job",),
    ("events",),
)
_deny(
    "otpkit.admin._service.CALLS",
    "the shell's acts: kill, restart, terminate, the quorum's operator commands, manual "
    "runs and job changes, and forwards of them",
    *[
        (op,)
        for op in (
            "kill",
            "restart",
            "terminate",
            "quorum_expected",
            "quorum_recover",
            "run",
            "activate",
            "deactivate",
            "forward",
        )
    ],
)

_ATTR = re.compile(r"^(?:[A-Z][A-Z0-9]*_)?(CALLS|CASTS|INFOS)$")
#: How a Protocol's messages are sent, by the end of its name.
MODES = {"CALLS": "call", "CASTS": "cast", "INFOS": "info"}


def protocols(package: str = "otpkit") -> dict[str, shapes.Protocol]:
    """Every module-level Protocol of ``package``'s modules (each module imported, so the
    set follows the code), by ``module.ATTR``. One Protocol bound to several names (a
    module's ``INFOS = _core.MESSAGES``) is listed once: under the name :data:`TARGETS`
    knows, else the first name that says a kind of message, else the first."""
    pkg = importlib.import_module(package)
    names = [package] + [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}.")]
    seen: dict[int, list[str]] = {}
    objects: dict[int, shapes.Protocol] = {}
    for name in sorted(names):
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        for attr, value in sorted(vars(module).items()):
            if isinstance(value, shapes.Protocol):
                seen.setdefault(id(value), []).append(f"{name}.{attr}")
                objects[id(value)] = value
    found: dict[str, shapes.Protocol] = {}
    for key, keys in seen.items():
        best = [k for k in keys if k in TARGETS] or [k for k in keys if mode_of(k)] or keys
        found[best[0]] = objects[key]
    return dict(sorted(found.items()))


def mode_of(attr: str) -> str | None:
    """``call``, ``cast`` or ``info`` for a Protocol named ``[ACTOR_]CALLS`` (``CASTS``,
    ``INFOS``); None for any other name."""
    m = _ATTR.match(attr.rsplit(".", 1)[-1])
    return MODES[m[1]] if m else None


def unknown_protocols(found: Mapping[str, shapes.Protocol]) -> list[str]:
    """The Protocols the suite cannot send: no entry in :data:`TARGETS`, or a name that
    says no kind of message (calls, casts, plain messages)."""
    return sorted(k for k in found if k not in TARGETS or mode_of(k) is None)


def stale_entries(found: Mapping[str, shapes.Protocol]) -> list[str]:
    """:data:`DENY` entries whose Protocol or tag no longer exists (a renamed tag must
    not leave its harmful twin unguarded)."""
    stale = []
    for attr, prefix in DENY:
        proto = found.get(attr)
        if proto is not None and prefix and prefix[0] not in proto:
            stale.append(f"{attr} {prefix!r}")
    return sorted(stale)


def denied(found: Mapping[str, shapes.Protocol], roles: Iterable[str], msg: Any) -> bool:
    """True if ``msg`` is a valid-shaped message of a :data:`DENY` entry of any Protocol
    of these roles' processes (whatever kind of message it is sent as)."""
    if not isinstance(msg, tuple | list) or not msg:
        return False
    wanted = set(roles)
    for (attr, prefix), _why in DENY.items():
        proto = found.get(attr)
        if proto is None or not wanted & set(TARGETS.get(attr, ())):
            continue
        wrap = WRAPS.get(attr, ())
        if tuple(msg[: len(wrap)]) != wrap:
            continue
        inner = msg[len(wrap) :]
        if tuple(inner[: len(prefix)]) == prefix and proto.problem(inner) is None:
            return True
    return False


# ---------------------------------------------------------------------- values


def _deep(depth: int, leaf: Any = 0, kind: type = list) -> Any:
    value: Any = leaf
    for _ in range(depth):
        value = kind((value,))
    return value


def hostile_values(peer: str = GHOST) -> list[Any]:
    """Values of every kind a field might not expect (``peer``: a cluster node, for a pid
    of it that names no process). ``-2**63 - 1`` and ``2**64`` cannot be sent (the
    sender's codec refuses them): they are here to show that."""
    return [
        None,
        True,
        False,
        0,
        -1,
        1,
        2**31,
        2**63 - 1,
        -(2**63),
        2**63,
        2**64 - 1,
        -(2**63) - 1,
        2**64,
        1.5,
        -0.0,
        1e308,
        -1e308,
        math.inf,
        -math.inf,
        math.nan,
        5e-324,
        "",
        "x",
        "\x00",
        "é" * 40,
        "x" * 100_000,
        b"",
        b"\x00\xff" * 8,
        [],
        (),
        {},
        {"k": None},
        {1: 2, (1, 2): [3]},
        [None] * 3,
        _deep(60),
        _deep(60, kind=tuple),
        Pid(GHOST, 1, 2, 3),
        Pid(peer, 7, 999_999, 1),
        Ref(GHOST, 1, 12345),
        Ref(peer, 7, 2**70),
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime(2021, 3, 28, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")),
        datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-23), "far")),
    ]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A random msgpack-able value (containers at most 6 deep)."""
    pick = rng.randrange(16 if depth < 6 else 11)
    if pick == 0:
        return None
    if pick == 1:
        return rng.random() < 0.5
    if pick == 2:
        return rng.choice([0, -1, 1, 2**63 - 1, -(2**63), 2**64 - 1, rng.randrange(-1000, 1000)])
    if pick == 3:
        return rng.randrange(-(2**63), 2**64)
    if pick == 4:
        return rng.choice([math.nan, math.inf, -math.inf, 1e308, rng.uniform(-1e9, 1e9)])
    if pick == 5:
        n = rng.choice([0, 1, 5, 40, 300])
        return "".join(
            chr(rng.choice([rng.randrange(32, 127), rng.randrange(0xA0, 0xD7FF)])) for _ in range(n)
        )
    if pick == 6:
        return rng.randbytes(rng.choice([0, 1, 8, 64]))
    if pick == 7:
        return Pid(
            rng.choice([GHOST, "", "a@b"]),
            rng.randrange(2**62),
            rng.randrange(2**31),
            rng.randrange(2**40),
        )
    if pick == 8:
        return Ref(rng.choice([GHOST, "x@y"]), rng.randrange(2**62), rng.randrange(-(2**80), 2**80))
    if pick == 9:
        return datetime.fromtimestamp(rng.uniform(-2e9, 2e10), UTC)
    if pick == 10:
        return rng.choice(["run", "state", "$sr", "$sc", "hello", "lock", "watch", "tree", "$tick"])
    n = rng.choice([0, 1, 2, 3, 5])
    if pick in (11, 12):
        return [random_value(rng, depth + 1) for _ in range(n)]
    if pick in (13, 14):
        return tuple(random_value(rng, depth + 1) for _ in range(n))
    keys = [random_value(rng, 5) for _ in range(n)]
    out: dict[Any, Any] = {}
    for key in keys:
        with contextlib.suppress(TypeError):  # an unhashable key: left out
            out[key] = random_value(rng, depth + 1)
    return out


def valid_values(kind: Any, peer: str = GHOST) -> list[Any]:
    """A few values of ``kind`` (its edges first), or ``[]`` if none can cross nodes."""
    if isinstance(kind, type):
        simple: dict[type, list[Any]] = {
            int: [0, 1, -1, 2**63 - 1],
            float: [0.5, 0, -1e300],
            str: ["", "x"],
            bytes: [b"", b"x"],
            bool: [True, False],
            dict: [{}, {"k": 1}],
            list: [[], [1]],
            tuple: [(), (1,)],
            Pid: [Pid(GHOST, 1, 2, 3), Pid(peer, 7, 999_999, 1)],
            Ref: [Ref(GHOST, 1, 5)],
            datetime: [datetime(2000, 1, 1, tzinfo=UTC)],
        }
        return simple.get(kind, [])
    if isinstance(kind, shapes.Int):
        mid = min(max(0, kind.lo), kind.hi)
        return _uniq([kind.lo, kind.hi, mid, min(mid + 1, kind.hi)])
    if isinstance(kind, shapes.Num):
        mid = min(max(0.0, kind.lo), kind.hi)
        return _uniq([kind.lo, kind.hi, mid, (kind.lo + kind.hi) / 2])
    if isinstance(kind, shapes.Str):
        return _uniq(
            ["x" * kind.min_len, "y" * max(kind.min_len, min(kind.max_len, 1)), "z" * kind.max_len]
        )
    if isinstance(kind, shapes.Seq):
        items = valid_values(kind.item, peer)
        out: list[Any] = [[]]
        if items and kind.max_len >= 1:
            out.append([items[0]])
            out.append(tuple(items[: min(kind.max_len, len(items))]))
        return out
    if isinstance(kind, shapes.Tup):
        parts = [valid_values(k, peer) for k in kind.items]
        if any(not p for p in parts):
            return []
        return [tuple(p[0] for p in parts), tuple(p[-1] for p in parts)]
    if isinstance(kind, shapes.Map):
        keys, values = valid_values(kind.key, peer), valid_values(kind.value, peer)
        out = [{}]
        with contextlib.suppress(TypeError):
            if keys and values and kind.max_len >= 1:
                out.append({keys[0]: values[-1]})
        return out
    if isinstance(kind, shapes.Opt):
        return [None, *valid_values(kind.kind, peer)]
    if isinstance(kind, shapes.Either):
        return [v for k in kind.kinds for v in valid_values(k, peer)[:2]]
    if isinstance(kind, shapes.Const):
        return list(kind.values)
    # ANY: whatever the handler copes with
    return [None, 0, "x", [], {"k": 1}, Pid(peer, 7, 999_999, 1)]


def _uniq(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if not any(type(v) is type(o) and v == o for o in out):
            out.append(v)
    return out


def invalid_values(kind: Any, peer: str = GHOST) -> list[Any]:
    """Values that do not fit ``kind``: the hostile ones it refuses, numbers just past
    its bounds, a str or a container one longer than allowed, a container with a bad
    item."""
    out = [v for v in hostile_values(peer) if shapes.problem(v, kind) is not None]
    if isinstance(kind, shapes.Int):
        out += [kind.lo - 1, kind.hi + 1, float(kind.lo), True]
    elif isinstance(kind, shapes.Num):
        out += [kind.lo * 2 - 1, kind.hi * 2 + 1, math.nan]
    elif isinstance(kind, shapes.Str) and kind.max_len < 200_000:
        out += ["x" * (kind.max_len + 1)]
    elif isinstance(kind, shapes.Seq):
        bad = [v for v in hostile_values(peer) if shapes.problem(v, kind.item) is not None]
        good = valid_values(kind.item, peer)
        out += [[b] for b in bad[:6]]
        if good and kind.max_len < 20_000:
            out.append([good[0]] * (kind.max_len + 1))
    elif isinstance(kind, shapes.Tup):
        for i, k in enumerate(kind.items):
            base = valid_values(kind, peer)
            bad = invalid_values(k, peer)[:3]
            if base:
                out += [tuple(b if j == i else v for j, v in enumerate(base[0])) for b in bad]
    elif isinstance(kind, shapes.Map):
        keys, values = valid_values(kind.key, peer), valid_values(kind.value, peer)
        for b in invalid_values(kind.value, peer)[:3]:
            if keys:
                with contextlib.suppress(TypeError):
                    out.append({keys[0]: b})
        for b in invalid_values(kind.key, peer)[:3]:
            if values:
                with contextlib.suppress(TypeError):
                    out.append({b: values[0]})
    return [v for v in out if shapes.problem(v, kind) is not None]


# ---------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Case:
    """One message to send: to the processes of ``roles``, as ``mode``; ``source`` is
    the Protocol (``module.ATTR``) it was made from, or ``"random"``."""

    source: str
    tag: str
    roles: tuple[str, ...]
    mode: str
    msg: Any


def cases(attr: str, proto: shapes.Protocol, peer: str = GHOST) -> dict[str, list[Any]]:
    """Every systematic malformed (and valid-shaped edge) message of ``proto``, by tag;
    ``"?"`` holds the messages of no tag of it. :data:`DENY` is applied by the caller."""
    out: dict[str, list[Any]] = {}
    for tag, shape in proto.shapes.items():
        fields = [valid_values(k, peer) for k in shape.fields]
        if any(not f for f in fields):
            # a field no other node can send (a local object): only its arity is fuzzed
            fields = [f or [None] for f in fields]
        base = [f[0] for f in fields]
        msgs: list[Any] = [
            (tag,),
            tuple([tag, *base[:-1]]),
            (tag, *base, None),
            (tag, *[None] * (len(base) + 5)),
        ]
        if shape.optional:
            msgs.append((tag, *base[: len(base) - shape.optional]))
        msgs.append([tag, *base])  # a list where a tuple is expected
        for i, kind in enumerate(shape.fields):
            for value in invalid_values(kind, peer):
                msgs.append(tuple([tag, *base[:i], value, *base[i + 1 :]]))
            for value in fields[i][1:]:
                msgs.append(tuple([tag, *base[:i], value, *base[i + 1 :]]))
        out[tag] = msgs
    first = next(iter(proto.shapes), "x")
    out["?"] = [
        ("no_such_tag",),
        ("no_such_tag", 1, 2),
        (first.upper(),),
        (first.encode(),),
        (1, first),
        (None,),
        (),
        [],
        first,
        None,
        0,
        {"tag": first},
        Pid(peer, 7, 999_999, 1),
    ]
    return {tag: [wrapped(attr, m) for m in msgs] for tag, msgs in out.items()}


def wrapped(attr: str, msg: Any) -> Any:
    """``msg`` of the Protocol ``attr`` as it is sent: inside its carrier's items
    (:data:`WRAPS`), if it has one."""
    wrap = WRAPS.get(attr)
    if wrap is None:
        return msg
    if isinstance(msg, list):
        return [*wrap, *msg]
    return (*wrap, *msg) if isinstance(msg, tuple) else (*wrap, msg)


def plan(
    found: Mapping[str, shapes.Protocol], count: int, seed: int, peer: str = GHOST
) -> tuple[list[Case], int]:
    """``count`` messages drawn from ``seed``, and how many valid-shaped harmful ones were
    left out (:data:`DENY`): the systematic cases of each Protocol's tags in turn (round
    robin over every (Protocol, tag), so a short run touches every tag), then random
    msgpack values and random fields to every role in every mode. At least a fifth of
    the messages are random."""
    rng = random.Random(seed)
    skipped = 0
    buckets: list[tuple[str, str, list[Any]]] = []
    for attr in sorted(found):
        if attr not in TARGETS or mode_of(attr) is None:
            continue
        for tag, msgs in cases(attr, found[attr], peer).items():
            kept = [m for m in msgs if not denied(found, TARGETS[attr], m)]
            skipped += len(msgs) - len(kept)
            rng.shuffle(kept)
            buckets.append((attr, tag, kept))
    systematic: list[Case] = []
    want = count - count // 5 if buckets else 0
    index = 0
    while len(systematic) < want and any(b[2] for b in buckets):
        attr, tag, msgs = buckets[index % len(buckets)]
        index += 1
        if msgs:
            mode = mode_of(attr)
            assert mode is not None
            systematic.append(Case(attr, tag, TARGETS[attr], mode, msgs.pop()))
    shaped = [(a, p) for a, p in sorted(found.items()) if a in TARGETS and mode_of(a) and p.shapes]
    out = list(systematic)
    while len(out) < count:
        roll = rng.random()
        mode = rng.choice(["call", "cast", "info"])
        if roll < 0.4 or not shaped:
            msg = random_value(rng)
            role = rng.choice(ROLES)
            if denied(found, (role,), msg):
                skipped += 1
            else:
                out.append(Case("random", "?", (role,), mode, msg))
            continue
        attr, proto = rng.choice(shaped)
        tag = rng.choice(list(proto.shapes))
        n = len(proto.shapes[tag].fields) + rng.choice([-1, 0, 0, 0, 1])
        msg = wrapped(attr, (tag, *[random_value(rng) for _ in range(max(n, 0))]))
        if denied(found, TARGETS[attr], msg):
            skipped += 1
        else:
            own = mode_of(attr)
            assert own is not None
            out.append(Case(attr, tag, TARGETS[attr], rng.choice([own, mode]), msg))
    rng.shuffle(out)
    return out[:count], skipped


# ---------------------------------------------------------------------- the fuzzer


@dataclass
class Proc:
    """A process the fuzzer sends to."""

    node: str
    path: str
    roles: tuple[str, ...]
    pid: Pid


#: The roles of the application's processes, by their path in the node's tree.
APP_ROLES = {
    f"scheduler:{SCHEDULER}": ("supervisor",),
    f"scheduler:{SCHEDULER}/pool": ("pool",),
    f"scheduler:{SCHEDULER}/singleton": ("supervisor", "manager"),
    f"scheduler:{SCHEDULER}/singleton/scheduler": ("singleton_worker", "scheduler"),
    f"singleton:{SINGLETON}": ("supervisor", "manager"),
    f"singleton:{SINGLETON}/held": ("singleton_worker",),
}
#: The service name each role is reached by (besides its pid).
SERVICES = {
    "global": "otpkit_global",
    "quorum": "otpkit_quorum",
    "admin": "otpkit_admin",
    "scheduler": f"otpkit_sched:{SCHEDULER}",
    "pool": f"otpkit_pool:{SCHEDULER}",
}


def _children_of(ospid: int) -> list[int]:
    """The OS processes whose parent is ``ospid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[1]) == ospid and fields[0] != b"Z":
            out.append(int(entry))
    return sorted(out)


def _pid_of(like: Pid, ospid: int) -> Pid | None:
    """The pid of the local OS process ``ospid`` on ``like``'s node (the cluster runs on
    this host)."""
    from otpkit import actors  # noqa: PLC0415

    serial = actors.process_start_ticks(ospid)
    return None if serial is None else Pid(like.node, like.creation, ospid, serial)


def find_processes(node: str, tree: Mapping[str, Any]) -> list[Proc]:
    """Every process of ``node`` the fuzz sends to, from its admin service's tree (and,
    for the registry's helpers and the pool's workers, from ``/proc`` and the pool)."""
    import otpkit  # noqa: PLC0415
    from otpkit.admin import _views  # noqa: PLC0415

    found: list[Proc] = []
    for path, entry in _views.walk(tree):
        pid = entry.get("pid")
        if not isinstance(pid, Pid):
            continue
        if not path:
            found.append(Proc(node, "kernel", ("kernel", "supervisor"), pid))
        elif path in ("dist", "global", "quorum", "admin", "discovery"):
            found.append(Proc(node, path, (path,), pid))
        elif path in APP_ROLES:
            found.append(Proc(node, path, APP_ROLES[path], pid))
        elif entry.get("type") == "supervisor":
            found.append(Proc(node, path, ("supervisor",), pid))
    by_role = {p.roles[0]: p for p in found}
    glob = by_role.get("global")
    if glob is not None:
        linked: list[Any] = []
        with contextlib.suppress(Exception):
            linked = otpkit.process_info(glob.pid, timeout=2.0)["links"]
        for ospid in _children_of(glob.pid.id):
            pid = _pid_of(glob.pid, ospid)
            if pid is not None:
                role = "merger" if pid in linked else "resolver"
                found.append(Proc(node, f"global/{role}", (role,), pid))
    pool = by_role.get("pool")
    if pool is not None:
        with contextlib.suppress(Exception):
            state = otpkit.call(pool.pid, ("state",), timeout=2.0)
            for pid in state.get("workers", ()):
                if isinstance(pid, Pid):  # by os pid: the pool lists idle ones first
                    found.append(Proc(node, f"{pool.path}/worker.{pid.id}", ("pool_worker",), pid))
    return found


def tree_of(node: str, timeout: float = 10.0) -> dict[str, Any]:
    """``node``'s supervision tree, from its admin service."""
    from otpkit.admin import ask_admin  # noqa: PLC0415

    kind, answer = ask_admin(node, ("tree",), timeout, {})
    if kind != "ok" or not (isinstance(answer, tuple | list) and answer[0] == "ok"):
        raise RuntimeError(f"{node}: no tree ({kind} {answer!r:.200})")
    tree: dict[str, Any] = answer[1]
    return tree


def snapshot(nodes: Sequence[str]) -> dict[str, Any]:
    """Every fuzzed process by ``node path``: its pid and (in the tree) restart count; a
    node whose tree cannot be read is ``node -``: unreachable."""
    from otpkit.admin import _views  # noqa: PLC0415

    out: dict[str, Any] = {}
    for node in nodes:
        try:
            tree = tree_of(node, timeout=5.0)
        except Exception as exc:
            out[f"{node} -"] = f"unreachable: {_short(exc)}"
            continue
        restarts = {p: int(e.get("restarts", 0)) for p, e in _views.walk(tree)}
        for proc in find_processes(node, tree):
            out[f"{node} {proc.path}"] = [repr(proc.pid), restarts.get(proc.path, 0)]
    return out


@dataclass
class Tally:
    """What the fuzzer sent and heard."""

    sent: int = 0
    by_mode: dict[str, int] = field(default_factory=dict)
    by_role: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)
    #: calls that timed out, by role
    timeouts: dict[str, int] = field(default_factory=dict)
    #: the first calls that timed out: [node, path, message]
    slow: list[list[str]] = field(default_factory=list)
    unsendable: int = 0
    unreached: int = 0
    #: calls whose target ended meanwhile: [node, path, reason, message]
    ended: list[list[str]] = field(default_factory=list)

    def add(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


def _short(value: Any, limit: int = 160) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Targets:
    """The processes the fuzz sends to, read again from the nodes' trees at most every
    ``every`` seconds when one is found gone; a node no longer connected is left out."""

    def __init__(self, nodes: Sequence[str], every: float = 2.0) -> None:
        self.nodes = list(nodes)
        self.every = every
        self.procs: list[Proc] = []
        self.lost: set[str] = set()
        self.at = -math.inf

    def refresh(self, force: bool = False) -> None:
        from otpkit import distribution as dist  # noqa: PLC0415

        now = time.monotonic()
        if not force and now - self.at < self.every:
            return
        self.at = now
        try:
            connected = set(dist.nodes(timeout=2.0))
        except Exception:
            connected = set(self.nodes) - self.lost
        procs: list[Proc] = []
        for node in self.nodes:
            if node not in connected:
                self.lost.add(node)
                continue
            try:
                procs += find_processes(node, tree_of(node, timeout=3.0))
            except Exception:
                procs += [p for p in self.procs if p.node == node]
        self.procs = procs


def send_all(targets: Targets, todo: list[Case], tally: Tally) -> None:
    """Send every case to one process of its roles (the nodes taken in turn), by pid or,
    every other time, by the role's service name; calls wait :data:`CALL_TIMEOUT` (none
    for :data:`BUSY` seconds after one timed out). A call whose process ended looks the
    processes up again."""
    import otpkit  # noqa: PLC0415

    turn = 0
    backlog: dict[Pid, int] = {}
    busy: dict[Pid, float] = {}  # until when calls to a slow process are not waited for
    for case in todo:
        candidates = [p for p in targets.procs if set(p.roles) & set(case.roles)]
        if not candidates:
            tally.unreached += 1
            continue
        turn += 1
        proc = candidates[turn % len(candidates)]
        role = next(r for r in case.roles if r in proc.roles)
        named = SERVICES.get(role) if turn % 2 else None
        dest: Any = (named, proc.node) if named else proc.pid
        try:
            if case.mode == "call" and busy.get(proc.pid, 0.0) > time.monotonic():
                # sent all the same (a reply that comes later is dropped)
                otpkit.multi_call([dest], case.msg, 0.0)
                tally.add(tally.answers, "unwaited")
            elif case.mode == "call":
                ((kind, value),) = otpkit.multi_call([dest], case.msg, CALL_TIMEOUT)
                tally.add(tally.answers, kind)
                if kind == "timeout":
                    busy[proc.pid] = time.monotonic() + BUSY
                    tally.add(tally.timeouts, role)
                    if len(tally.slow) < 20:
                        tally.slow.append([proc.node, proc.path, _short(case.msg)])
                elif kind == "exit":
                    tally.ended.append([proc.node, proc.path, _short(value), _short(case.msg)])
                    targets.refresh()
            elif case.mode == "cast":
                otpkit.cast(proc.pid, case.msg)
            else:
                otpkit.send(dest, case.msg)
        except (TypeError, ValueError, OverflowError):
            tally.unsendable += 1  # the sender's codec refused it (an int past 64 bits)
            continue
        tally.sent += 1
        tally.add(tally.by_mode, case.mode)
        tally.add(tally.by_role, role)
        tally.add(tally.by_source, case.source)
        if case.mode != "call":
            backlog[proc.pid] = backlog.get(proc.pid, 0) + 1
            if backlog[proc.pid] >= 25:
                backlog[proc.pid] = 0
                if _drain(proc.pid) is False:
                    targets.refresh()


def _drain(pid: Pid, bound: float = 5.0, below: int = 10) -> bool:
    """Wait (at most ``bound`` s) until fewer than ``below`` messages wait in ``pid``'s
    mailbox: plain messages and casts are not answered, and must not pile up faster than
    a process reads them. False if the process is gone."""
    import otpkit  # noqa: PLC0415
    from otpkit.errors import CallTimeout  # noqa: PLC0415

    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        try:
            info = otpkit.process_info(pid, timeout=1.0)
        except CallTimeout:
            continue  # busy in a handler: still there
        except Exception:
            return False
        if int(info.get("message_queue_len", 0)) < below:
            return True
        time.sleep(0.02)
    return True


def normal_answers(nodes: Sequence[str]) -> dict[str, Any]:
    """What a user asks after the fuzz, per node: its admin service's ``nodes`` (it sees
    the other two), and the scheduler's job rows."""
    from otpkit.admin import ask_admin  # noqa: PLC0415

    out: dict[str, Any] = {}
    for node in nodes:
        kind, answer = ask_admin(node, ("nodes",), 10.0, {})
        seen = answer[1]["nodes"] if kind == "ok" and answer[0] == "ok" else None
        kind, answer = ask_admin(node, ("jobs", SCHEDULER), 15.0, {})
        jobs = (
            [row.get("name") for row in answer[1]]
            if kind == "ok" and answer[0] == "ok"
            else f"{kind} {_short(answer)}"
        )
        out[node] = {"nodes": seen, "jobs": jobs}
    return out


def fuzz(
    targets: Sequence[str],
    count: int,
    seed: int,
    found: Mapping[str, shapes.Protocol] | None = None,
    settle: float = 2.0,
) -> dict[str, Any]:
    """Run the fuzz from this program as a hidden node against ``targets``
    (``NAME@HOST:PORT``), with the Protocols ``found`` (default: this program's
    :func:`protocols`); the JSON-able report :func:`run` reads."""
    import tempfile  # noqa: PLC0415

    import otpkit  # noqa: PLC0415
    from otpkit import distribution as dist  # noqa: PLC0415

    nodes: list[str] = []
    addresses: list[tuple[str, str, int]] = []
    for text in targets:
        name, _, port_text = text.rpartition(":")
        nodes.append(name)
        addresses.append((name, name.split("@", 1)[1], int(port_text)))
    found = protocols() if found is None else found
    todo, skipped = plan(found, count, seed, peer=nodes[0])
    log_dir = tempfile.mkdtemp(prefix="otpkit-fuzz-")
    host = addresses[0][1]
    config = dist.DistConfig(host, 0, COOKIE.encode(), hidden=True)
    node = otpkit.Node(f"fuzzer-{os.getpid()}@{host}", dist=config, log_dir=log_dir).start()
    try:
        for name, host_addr, port in addresses:
            dist.connect_node(name, host_addr, port)
        deadline = time.monotonic() + 20
        while set(nodes) - set(dist.nodes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        before = snapshot(nodes)
        if any(v for k, v in before.items() if k.endswith(" -")):
            raise RuntimeError(f"a node cannot be read before the fuzz: {before}")
        reach = Targets(nodes)
        reach.refresh(force=True)
        tally = Tally()
        began = time.monotonic()
        send_all(reach, todo, tally)
        took = time.monotonic() - began
        # what was sent is read before the trees are: every mailbox drained
        reach.refresh(force=True)
        deadline = time.monotonic() + DRAIN
        for proc in reach.procs:
            _drain(proc.pid, bound=max(1.0, deadline - time.monotonic()), below=1)
        time.sleep(settle)  # a crash's restart takes a moment to show in the tree
        after = snapshot(nodes)
        normal = normal_answers(nodes)
    finally:
        node.stop(timeout=10.0)
        shutil.rmtree(log_dir, ignore_errors=True)
    changed = sorted(
        f"{key}: {before[key]} -> {after.get(key)}"
        for key in before
        if after.get(key) != before[key]
    )
    return {
        "seed": seed,
        "planned": len(todo),
        "denied": skipped,
        "sent": tally.sent,
        "unsendable": tally.unsendable,
        "unreached": tally.unreached,
        "seconds": round(took, 1),
        "protocols": sorted(found),
        "by_mode": tally.by_mode,
        "by_role": tally.by_role,
        "by_source": tally.by_source,
        "answers": tally.answers,
        "timeouts": tally.timeouts,
        "slow": tally.slow,
        "ended": tally.ended,
        "processes": len(before),
        "lost": sorted(reach.lost),
        "changed": changed,
        "new": sorted(set(after) - set(before)),
        "normal": normal,
    }


# ---------------------------------------------------------------------- the cluster


def free_ports(n: int) -> list[int]:
    """``n`` different TCP ports free on every address (all held open while chosen)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("0.0.0.0", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


#: What a crashing handler logs (``actors/_host.py`` ``_dispatch``).
CRASH = re.compile(r"(?P<pid><[^<>]*>) \((?P<cls>\w+)\) crashed handling (?P<msg>.*)$")


def crashes(log_dir: Path) -> list[dict[str, str]]:
    """Every ``crashed handling`` line of the nodes' logs: the process, its class and
    the message it crashed on, with the exception (the traceback's last line)."""
    out = []
    for log in sorted(log_dir.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            m = CRASH.search(line)
            if m is None:
                continue
            error = ""
            for later in lines[i + 1 : i + 80]:
                if later and not later.startswith((" ", "Traceback")):
                    error = later
                    break
            out.append(
                {
                    "log": log.name,
                    "process": m["cls"],
                    "pid": m["pid"],
                    "message": m["msg"][:300],
                    "error": error[:300],
                }
            )
    return out


#: What a process that ends abnormally logs (``_host.py`` ``_finish``), and a halt.
EXIT = re.compile(r"(?P<pid><[^<>]*>) \((?P<cls>\w+)\) exited: (?P<reason>.*)$|the node halts")


def exits(log_dir: Path) -> list[str]:
    """Every abnormal end of a process logged by the nodes (a crash's too), and every
    halt of a node: ``log: line``."""
    out = []
    for log in sorted(log_dir.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if EXIT.search(line):
                out.append(f"{log.name}: {line[:300]}")
    return out


def ticks(path: Path) -> list[tuple[float, str]]:
    """``(tick as a POSIX time, node)`` of each run the job recorded."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "run" and parts[1] != "-":  # "-": no tick
            out.append((datetime.fromisoformat(parts[1]).timestamp(), parts[2]))
    return sorted(out)


def tick_problems(runs: Sequence[tuple[float, str]], first: float, last: float) -> list[str]:
    """Ticks from ``first`` to ``last`` (whole seconds) that never ran, and any tick that
    ran more than once."""
    seen: dict[int, list[str]] = {}
    for at, node in runs:
        seen.setdefault(round(at), []).append(node)

    def text(t: int) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")

    problems = [
        f"tick {text(t)} ran {len(n)} times ({', '.join(n)})"
        for t, n in sorted(seen.items())
        if len(n) > 1
    ]
    for t in range(math.ceil(first), math.floor(last) + 1):
        if t not in seen:
            problems.append(f"tick {text(t)} never ran")
    return problems


class FuzzCluster:
    """Three ``otpkit run tests.harness.fuzz:root`` nodes on 127.0.83.1-3 with static
    discovery, expected size 3 and probe ports; their logs, stores and the job's ticks
    under ``workdir``. ``src``: another otpkit source tree to run (a release before this
    one), first on the nodes' ``PYTHONPATH``. :meth:`close` stops each node (SIGTERM,
    then SIGKILL)."""

    HOSTS = ("127.0.83.1", "127.0.83.2", "127.0.83.3")

    def __init__(self, workdir: Path, src: str | None = None) -> None:
        self.workdir = workdir
        self.src = src
        self.log_dir = workdir / "log"
        self.ticks_file = workdir / "ticks"
        ports = free_ports(2 * len(self.HOSTS))
        self.ports, self.probes = ports[: len(self.HOSTS)], ports[len(self.HOSTS) :]
        self.names = [f"fuzz@{h}" for h in self.HOSTS]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def targets(self) -> list[str]:
        return [f"{n}:{p}" for n, p in zip(self.names, self.ports, strict=True)]

    def env(self) -> dict[str, str]:
        """The environment of the cluster's programs (and the fuzzer's)."""
        from tests.harness.processes import child_env  # noqa: PLC0415

        env = {k: v for k, v in child_env().items() if not k.startswith("OTPKIT_")}
        if self.src is not None:
            env["PYTHONPATH"] = f"{self.src}{os.pathsep}{env['PYTHONPATH']}"
        return env

    def start(self) -> None:
        peers = ",".join(self.targets)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(self.names):
            env = self.env()
            env.update(
                OTPKIT_NODE_NAME=name,
                OTPKIT_DIST_PORT=str(self.ports[i]),
                OTPKIT_PROBE_PORT=str(self.probes[i]),
                OTPKIT_COOKIE=COOKIE,
                OTPKIT_DISCOVERY=f"static:{peers}",
                OTPKIT_EXPECTED_SIZE="3",
                OTPKIT_DATA_DIR=str(self.workdir / f"data{i}"),
                OTPKIT_LOG_DIR=str(self.log_dir),
                FUZZ_TICKS=str(self.ticks_file),
            )
            with open(self.workdir / f"node{i}.out", "wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "otpkit", "run", "tests.harness.fuzz:root"],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                )

    def ready(self) -> bool:
        """Every node answers its readiness probe 200, and the job has run a tick."""
        import urllib.request  # noqa: PLC0415

        for host, port in zip(self.HOSTS, self.probes, strict=True):
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/healthz/ready", timeout=2) as r:
                    if r.status != 200:
                        return False
            except OSError:
                return False
        return bool(ticks(self.ticks_file))

    def alive(self) -> list[bool]:
        return [p.poll() is None for p in self.procs]

    def output(self) -> str:
        return "".join(
            (self.workdir / f"node{i}.out").read_text(errors="replace")
            for i in range(len(self.procs))
        )

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


@dataclass
class Verdict:
    """A fuzz run against a live cluster, as a user checks it: ``report`` is the
    fuzzer's (what it sent, what it heard, the processes whose pid or restart count
    changed, the answers to normal requests afterwards)."""

    report: dict[str, Any]
    crashes: list[dict[str, str]]
    exits: list[str]
    tick_problems: list[str]
    ticks_checked: int
    seconds: float
    alive: list[bool]

    @property
    def restarted(self) -> list[str]:
        return list(self.report.get("changed", []))

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "crashes": self.crashes,
            "exits": self.exits,
            "restarted": self.restarted,
            "tick_problems": self.tick_problems,
            "ticks_checked": self.ticks_checked,
            "alive": self.alive,
            **{k: v for k, v in self.report.items() if k != "changed"},
        }


def run(
    cluster: FuzzCluster,
    count: int,
    seed: int,
    timeout: float = 1800.0,
    protocols_file: str | None = None,
) -> Verdict:
    """Fuzz a started, ready ``cluster`` with ``count`` messages from ``seed`` (the
    fuzzer a program of its own, with the cluster's source tree; ``protocols_file``: the
    Protocols saved by another tree, see :func:`main`) and judge it: the crash lines of
    its logs, the processes restarted, the ticks from the fuzz's start to its end (each
    must run exactly once), and the nodes still alive."""
    from tests.harness.polling import wait_for  # noqa: PLC0415
    from tests.harness.processes import python_module  # noqa: PLC0415

    extra = ["--protocols", protocols_file] if protocols_file else []
    began = time.time()
    out = subprocess.run(
        python_module(
            "tests.harness.fuzz",
            "--seed",
            str(seed),
            "--count",
            str(count),
            *extra,
            *cluster.targets,
        ),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cluster.env(),
        check=False,
    )
    ended = time.time()
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"the fuzzer failed ({out.returncode}): {out.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(lines[-1])
    # the tick of the fuzz's last second has run (or never will)
    with contextlib.suppress(AssertionError):
        wait_for(lambda: any(t >= ended for t, _ in ticks(cluster.ticks_file)), 10, "the last tick")
    first, last = math.ceil(began) + 1, math.floor(ended)
    return Verdict(
        report=report,
        crashes=crashes(cluster.log_dir),
        exits=exits(cluster.log_dir),
        tick_problems=tick_problems(ticks(cluster.ticks_file), first, last),
        ticks_checked=max(0, last - first + 1),
        seconds=ended - began,
        alive=cluster.alive(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The fuzzer's program: fuzz the nodes named (``NAME@HOST:PORT``) and print the
    report as one JSON line; ``--save-protocols FILE`` only writes this tree's Protocols
    (a pickle), which ``--protocols FILE`` reads in a program running an older tree (the
    same suite against the release before the guards)."""
    parser = argparse.ArgumentParser(prog="python -m tests.harness.fuzz")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--protocols", help="read the Protocols from this file")
    parser.add_argument("--save-protocols", help="write this tree's Protocols to this file")
    parser.add_argument("targets", nargs="*", help="NAME@HOST:PORT of each node")
    args = parser.parse_args(argv)
    if args.save_protocols:
        with open(args.save_protocols, "wb") as f:
            pickle.dump(protocols(), f)
        return 0
    found = None
    if args.protocols:
        with open(args.protocols, "rb") as f:
            found = pickle.load(f)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"fuzz seed {seed} (replay: --seed {seed})", file=sys.stderr, flush=True)
    report = fuzz(args.targets, args.count, seed, found)
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
