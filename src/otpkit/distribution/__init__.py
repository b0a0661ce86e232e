"""Distribution: authenticated node-to-node links (msgpack frames, cookie handshake, ticks).

Public as :mod:`otpkit.dist`. The first ``__all__`` block is the user's API; the second
is the internal surface other otpkit layers use (the node wires ``Dist`` and
``DistHooks``; the scheduler checks that a job crosses the wire with ``encode_term``;
the shell probes a peer), never the private modules.
"""

from __future__ import annotations

from typing import Any

from otpkit import actors
from otpkit.distribution._actor import NET_NAME, Dist
from otpkit.distribution._codec import encode as encode_term
from otpkit.distribution._core import PEER_GONE, DistConfig, NodeDown, NodeUp, WitnessDown
from otpkit.distribution._hooks import DistHooks
from otpkit.distribution._probe import ProbeError, probe_peer
from otpkit.distribution._witness import Witness
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
    "versions",
]

# the internal surface (see the module's docstring)
__all__ += [
    "NET_NAME",
    "PEER_GONE",
    "DistHooks",
    "ProbeError",
    "Witness",
    "WitnessDown",
    "drop_link",
    "encode_term",
    "monitor_witnesses",
    "probe_peer",
    "witness_info",
]


def _net() -> Any:
    pid = actors.whereis(NET_NAME)
    if pid is None:
        raise NodeError("this node runs no dist (start it with a cookie and a dist port)")
    return pid


def _ask(request: tuple[Any, ...], timeout: float) -> Any:
    """Call the dist process; its refusal of a malformed request is a ValueError here."""
    answer = actors.call(_net(), request, timeout)
    if type(answer) is tuple and len(answer) == 2 and answer[0] == "error":
        raise ValueError(str(answer[1]))
    return answer


def nodes(timeout: float = 5.0) -> list[str]:
    """The names of the (visible) nodes this node is connected to."""
    result: list[str] = _ask(("nodes",), timeout)
    return result


def versions(timeout: float = 5.0) -> dict[str, int]:
    """The dist protocol each connected (visible) node speaks, by name: a process that
    sends a message a node of the previous release does not know asks this first (a
    rolling update mixes the two; see ``PROTOCOL_VERSION``)."""
    result: dict[str, int] = _ask(("versions",), timeout)
    return result


def hidden_nodes(timeout: float = 5.0) -> list[str]:
    """The hidden nodes (admin shells) connected to this node."""
    result: list[str] = _ask(("hidden_nodes",), timeout)
    return result


def connect_node(name: str, host: str, port: int, timeout: float = 5.0) -> None:
    """Dial ``name`` at ``host:port`` and keep redialling it while it is known."""
    _ask(("connect", name, host, port), timeout)


def disconnect_node(name: str, timeout: float = 5.0) -> None:
    """Drop the connection to ``name`` and stop redialling it."""
    _ask(("disconnect", name), timeout)


def drop_link(name: str, reason: str, timeout: float = 5.0) -> bool:
    """Drop the link to ``name`` as if its ticks had stopped (it is redialled): a node
    that did not answer a cluster round in time is left out of the cluster, as OTP's
    ``global`` keeps a change on every connected node or none."""
    result: bool = _ask(("drop_link", name, reason), timeout)
    return result


def monitor_nodes(on: bool = True, timeout: float = 5.0) -> None:
    """Deliver ``NodeUp(name)`` / ``NodeDown(name, reason)`` messages to the caller."""
    _ask(("monitor_nodes", actors.self(), on), timeout)


def monitor_witnesses(on: bool = True, timeout: float = 5.0) -> None:
    """Deliver ``WitnessDown`` messages to the caller (the quorum: see ``_witness``)."""
    _ask(("monitor_witnesses", actors.self(), on), timeout)


def witness_info(timeout: float = 5.0) -> dict[str, Any]:
    """What a local process needs to dial witnesses (``Witness.update``): the node's
    identity and cookie, and its visible peers' dist addresses."""
    info: dict[str, Any] = _ask(("witness_info",), timeout)
    return info


def register_service(name: str, pid: Any = None, timeout: float = 5.0) -> None:
    """Let other nodes reach ``pid`` (default: the caller) as ``send((name, node), msg)``.

    Only processes registered so are reachable by name from another node (OTP's
    ``{Name, Node} ! Msg``, kept to the node's system services).
    """
    _ask(("service", name, pid or actors.self()), timeout)
