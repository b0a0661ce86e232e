"""dist: authenticated node-to-node links (msgpack frames, cookie handshake, ticks)."""

from __future__ import annotations

from typing import Any

from otpkit.actors import _api
from otpkit.distribution._actor import NET_NAME, Dist
from otpkit.distribution._core import DistConfig, NodeDown, NodeUp
from otpkit.errors import NodeError

__all__ = [
    "Dist",
    "DistConfig",
    "NodeDown",
    "NodeUp",
    "connect_node",
    "disconnect_node",
    "hidden_nodes",
    "monitor_nodes",
    "nodes",
    "register_service",
]


def _net() -> Any:
    pid = _api.whereis(NET_NAME)
    if pid is None:
        raise NodeError("this node runs no dist (start it with a cookie and a dist port)")
    return pid


def nodes(timeout: float = 5.0) -> list[str]:
    """The names of the (visible) nodes this node is connected to."""
    result: list[str] = _api.call(_net(), ("nodes",), timeout)
    return result


def hidden_nodes(timeout: float = 5.0) -> list[str]:
    """The hidden nodes (admin shells) connected to this node."""
    result: list[str] = _api.call(_net(), ("hidden_nodes",), timeout)
    return result


def connect_node(name: str, host: str, port: int, timeout: float = 5.0) -> None:
    """Dial ``name`` at ``host:port`` and keep redialling it while it is known."""
    _api.call(_net(), ("connect", name, host, port), timeout)


def disconnect_node(name: str, timeout: float = 5.0) -> None:
    """Drop the connection to ``name`` and stop redialling it."""
    _api.call(_net(), ("disconnect", name), timeout)


def monitor_nodes(on: bool = True, timeout: float = 5.0) -> None:
    """Deliver ``NodeUp(name)`` / ``NodeDown(name, reason)`` messages to the caller."""
    _api.call(_net(), ("monitor_nodes", _api.self(), on), timeout)


def register_service(name: str, pid: Any = None, timeout: float = 5.0) -> None:
    """Let other nodes reach ``pid`` (default: the caller) as ``send((name, node), msg)``.

    Only processes registered so are reachable by name from another node (OTP's
    ``{Name, Node} ! Msg``, kept to the node's system services).
    """
    _api.call(_net(), ("service", name, pid or _api.self()), timeout)
