"""The other nodes as one scheduler process knows them.

``up``: the nodes connected now (``NodeUp``/``NodeDown``). ``down``: each node lost,
why and when (the finish tracker gives a run on a lost node up after ``lost_after``
seconds, at once if the node is gone for good). ``with_replica``: the nodes seen
running this scheduler (they said hello or answered a round): with ``up``, the only
nodes a run is sent to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Peers"]


@dataclass
class Peers:
    """The other nodes (see the module); this process's node is in none of the sets."""

    up: set[str] = field(default_factory=set)
    down: dict[str, tuple[str, float]] = field(default_factory=dict)
    with_replica: set[str] = field(default_factory=set)
    #: the dist protocol of each node seen (``NodeUp.version``, ``dist.versions()``)
    versions: dict[str, int] = field(default_factory=dict)

    def node_up(self, node: str, version: int = 0) -> None:
        self.up.add(node)
        self.down.pop(node, None)
        if version:
            self.versions[node] = version

    def any_older(self, nodes: list[str], version: int) -> bool:
        """Whether one of ``nodes`` was seen speaking a protocol below ``version`` (a
        rolling update is under way: send only what the previous release reads)."""
        return any(0 < self.versions.get(n, version) < version for n in nodes)

    def node_down(self, node: str, reason: str, at: float) -> None:
        """``node`` was lost at ``at`` (monotonic) for ``reason``."""
        self.up.discard(node)
        self.with_replica.discard(node)
        self.down[node] = (reason, at)

    def targets(self) -> set[str]:
        """The connected nodes that run this scheduler (this one not included)."""
        return self.up & self.with_replica
