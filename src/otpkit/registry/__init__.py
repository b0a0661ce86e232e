"""registry: the cluster-wide name table (OTP ``global``) and the Singleton.

Every node runs a replica (:class:`~otpkit.registry._global.Global`, a system actor).
The functions here act for the calling process (an actor, or the program that started the
node):

* ``register_name(name, pid, resolve=None) -> bool``: bind ``name`` to ``pid`` on every
  connected node, or on none (under the cluster lock). False if the name is taken, or if
  ``pid`` already holds another global name.
* ``re_register_name(name, pid, resolve=None)``: bind it whatever it was bound to.
* ``unregister_name(name)``; ``whereis_name(name) -> Pid | None`` (a read of this node's
  replica in shared memory: no message); ``send(name, msg)`` (``NoSuchName`` if unbound);
  ``registered_names()``; ``sync()``; ``set_lock`` / ``del_lock`` / ``trans``;
  ``disconnect()``.

A name goes when its process ends, or its node goes down. When partitions meet, a name
bound to two pids is resolved once: the smaller-named node of the first pair to merge
calls the resolver stored with its own side's registration, as ``resolve(name,
other_pid, own_pid)``, on ``own_pid``'s node. It returns the pid that keeps the name on
every node; any other value unregisters the name; if it raises (or its node halts
meanwhile), ``other_pid`` keeps it. Resolvers travel by name: a module-level function,
or ``"package.module:function"``; the built-ins are :func:`random_exit_name` (the
default), :func:`random_notify_name` and :func:`notify_all_name`.

Names are strings (or other values msgpack can carry: ints, tuples of these).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from otpkit import actors
from otpkit.actors import Pid
from otpkit.errors import NoSuchName
from otpkit.registry import _global, _shared
from otpkit.registry._global import (
    GLOBAL_NAME,
    Global,
    NameChanged,
    local_server,
    locked_change,
    release_on,
    set_lock_on,
)
from otpkit.registry._join import ClusterView, ClusterViewError, cluster_view, join_problem
from otpkit.registry._resolvers import (
    notify_all_name,
    random_exit_name,
    random_notify_name,
    resolver_name,
)
from otpkit.registry._shared import close as close_shared_table
from otpkit.registry._shared import create as create_shared_table
from otpkit.registry._singleton import (
    IS_ACTIVE,
    Activate,
    Deactivate,
    HolderBack,
    NoHolder,
    Singleton,
    SingletonManager,
    SingletonWorker,
    keep_smaller_node,
)

__all__ = [
    "GLOBAL_NAME",
    "IS_ACTIVE",
    "Activate",
    "Deactivate",
    "Global",
    "HolderBack",
    "NameChanged",
    "NoHolder",
    "Singleton",
    "SingletonManager",
    "SingletonWorker",
    "del_lock",
    "disconnect",
    "keep_smaller_node",
    "name_table",
    "notify_all_name",
    "random_exit_name",
    "random_notify_name",
    "re_register_name",
    "register_name",
    "registered_names",
    "send",
    "set_lock",
    "sync",
    "trans",
    "unregister_name",
    "whereis_name",
]

# the internal surface other otpkit layers use (the node makes and closes the shared
# table; the readiness probe asks this node's registry server)
__all__ += ["close_shared_table", "create_shared_table", "local_server"]
# whether this node has joined its cluster (a Singleton's first election, the readiness
# probe)
__all__ += ["ClusterView", "ClusterViewError", "cluster_view", "join_problem"]

T = TypeVar("T")


def _check_name(name: Any) -> Any:
    if not _global.valid_name(name):
        raise TypeError(f"global name {name!r}: expected a str, int, bytes or a tuple of these")
    return name


def _check_pid(pid: Any) -> Pid:
    if not isinstance(pid, Pid):
        raise TypeError(f"pid {pid!r}: expected a Pid")
    return pid


def register_name(
    name: Any, pid: Pid, resolve: str | Callable[..., Any] | None = None, timeout: float = 30.0
) -> bool:
    """Bind ``name`` to ``pid`` on every connected node (or none); False if the name is
    taken or ``pid`` already has a global name. ``resolve`` is stored with the
    registration for when partitions meet (see the module)."""
    _check_name(name)
    _check_pid(pid)
    resolver = resolver_name(resolve)

    def decide(why_not: str | None) -> tuple[list[Any], bool]:
        if why_not is not None:
            return [], False
        return [(name, (pid, resolver))], True

    return locked_change(("check", name, pid), decide, timeout)


def re_register_name(
    name: Any, pid: Pid, resolve: str | Callable[..., Any] | None = None, timeout: float = 30.0
) -> bool:
    """Bind ``name`` to ``pid`` on every connected node, whatever it was bound to."""
    _check_name(name)
    _check_pid(pid)
    resolver = resolver_name(resolve)
    return locked_change(None, lambda _: ([(name, (pid, resolver))], True), timeout)


def unregister_name(name: Any, timeout: float = 30.0) -> None:
    """Remove ``name`` on every connected node (nothing if it is not bound)."""
    _check_name(name)
    locked_change(None, lambda _: ([(name, None)], None), timeout)


def whereis_name(name: Any) -> Pid | None:
    """The pid bound to ``name`` in this node's replica, or None (no message: a read of
    the node's shared table)."""
    return _global.whereis(_check_name(name))


def send(name: Any, msg: Any) -> Pid:
    """Send ``msg`` to the process bound to ``name``; its pid. ``NoSuchName`` if none."""
    pid = whereis_name(name)
    if pid is None:
        raise NoSuchName(name, msg)
    actors.send(pid, msg)
    return pid


def name_table() -> dict[Any, Pid]:
    """Every name of this node's replica with its pid (one read of the shared table)."""
    table = _shared.read()
    if table is None:
        return {n: p for n in registered_names() if (p := whereis_name(n)) is not None}
    return dict(table)


def registered_names() -> list[Any]:
    """Every name in this node's replica."""
    table = _shared.read()
    if table is not None:
        return list(table)
    names: list[Any] = actors.call(local_server(), ("names",))
    return names


def sync(timeout: float = 30.0) -> list[str]:
    """Wait until this node has merged its table with every node it is connected to;
    the names of those nodes."""
    return _global.sync_now(timeout)


def set_lock(
    resource: Any,
    requester: Any = None,
    nodes: list[str] | None = None,
    retries: int | None = None,
) -> bool:
    """Take the cluster lock ``resource`` for ``requester`` (default: the caller) on
    ``nodes`` (default: this node and every node it knows). Several processes may hold
    one lock for the same requester; each must :func:`del_lock`. With ``retries``,
    give up after that many refused attempts (0: try once) and return False; otherwise
    wait, backing off at random. Released when the holder ends or its node goes down."""
    targets = _targets(nodes)
    held = set_lock_on(targets, resource, requester or actors.self(), retries)
    return held is not None


def del_lock(resource: Any, requester: Any = None, nodes: list[str] | None = None) -> None:
    """Release what :func:`set_lock` took for the caller."""
    release_on(_targets(nodes), resource, requester or actors.self())


def trans(
    resource: Any,
    fn: Callable[[], T],
    requester: Any = None,
    nodes: list[str] | None = None,
    retries: int | None = None,
) -> T | str:
    """Run ``fn`` holding the lock; its result, or ``"aborted"`` if the lock was not
    taken within ``retries``. The lock is released however ``fn`` ends."""
    if not set_lock(resource, requester, nodes, retries):
        return "aborted"
    try:
        return fn()
    finally:
        del_lock(resource, requester, nodes)


def disconnect(timeout: float = 10.0) -> list[str]:
    """Leave the cluster: drop the connection to every visible node (and stop
    redialling them); the nodes disconnected. Hidden connections stay."""
    from otpkit import distribution as dist  # noqa: PLC0415

    gone = dist.nodes(timeout)
    for node in gone:
        dist.disconnect_node(node, timeout)
    deadline = time.monotonic() + timeout
    while dist.nodes(timeout) and time.monotonic() < deadline:
        time.sleep(0.01)
    return gone


def _targets(nodes: list[str] | None) -> dict[str, Pid]:
    servers: dict[str, Pid] = actors.call(local_server(), ("targets",))
    if nodes is None:
        return servers
    return {n: servers[n] for n in nodes if n in servers}
