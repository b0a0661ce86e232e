"""``otpkit.dist``: the public name of :mod:`otpkit.distribution` (node-to-node links), kept
so that ``from otpkit import dist`` and ``dist.nodes()`` read as in Erlang. The package
itself is not called ``dist``: that folder name is build output to packaging tools and to
the usual Python ``.gitignore``."""

from otpkit.distribution import (
    Dist,
    DistConfig,
    NodeDown,
    NodeUp,
    connect_node,
    disconnect_node,
    hidden_nodes,
    monitor_nodes,
    nodes,
    register_service,
    versions,
)

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
