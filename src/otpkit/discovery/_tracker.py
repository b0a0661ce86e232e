"""The peer tracker: turns a stream of lookup results into "whom to keep dialling".

Pure state, no I/O, no clock: the dist layer's poller feeds it one ``LookupResult`` per
poll and acts on the ``TrackerUpdate`` it gets back.

Rules (see ARCHITECTURE.md, *Discovery*; the opposite of libcluster's ``Kubernetes.DNS``
strategy, which disconnects everyone on one failed query):

* a good result adds its new peers at once;
* a peer missing from ``prune_after`` consecutive good results is pruned (no longer
  desired); a peer that shows up again before that starts counting from zero;
* a failed result changes nothing and does not count toward pruning (good, failed, good
  results count as two consecutive good results);
* this node's own name (``self_name``) is never desired;
* peers are tracked by node name. A known name that comes back with another address
  (a StatefulSet pod restarted with a new IP) replaces the old entry at once and is
  reported in ``added`` with its new address; the old address is not reported as pruned,
  since the name is still desired. Of two entries with one name in a single result, the
  one already desired is kept, else the lowest (host, port).

Discovery never decides liveness: pruning only stops redialling; dist heartbeats decide
whether a connected peer is up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from otpkit.discovery._strategies import LookupResult, Peer

__all__ = ["PeerTracker", "TrackerUpdate"]


@dataclass(frozen=True, slots=True)
class TrackerUpdate:
    """What one result changed. ``desired`` is the full set to stay connected to."""

    added: frozenset[Peer]
    pruned: frozenset[Peer]
    desired: frozenset[Peer]


class PeerTracker:
    def __init__(self, prune_after: int = 3, self_name: str | None = None) -> None:
        if isinstance(prune_after, bool) or not isinstance(prune_after, int) or prune_after < 1:
            raise ValueError(f"prune_after must be an int >= 1, not {prune_after!r}")
        self.prune_after = prune_after
        self.self_name = self_name
        self._desired: dict[str, Peer] = {}
        self._misses: dict[str, int] = {}
        self._settled = False

    @property
    def settled(self) -> bool:
        """True once a good result has been seen (the first full picture of the cluster)."""
        return self._settled

    @property
    def desired(self) -> frozenset[Peer]:
        return frozenset(self._desired.values())

    def misses(self, name: str) -> int:
        """Consecutive good results that have lacked the desired peer ``name`` (0 if
        present in the last one or not desired)."""
        return self._misses.get(name, 0)

    def update(self, result: LookupResult) -> TrackerUpdate:
        if not result.ok:
            return TrackerUpdate(frozenset(), frozenset(), self.desired)
        self._settled = True
        current = self._by_name(result.peers)
        added: set[Peer] = set()
        for name, peer in current.items():
            if self._desired.get(name) != peer:
                added.add(peer)
                self._desired[name] = peer
            self._misses[name] = 0
        pruned: set[Peer] = set()
        for name in [n for n in self._desired if n not in current]:
            self._misses[name] = self._misses.get(name, 0) + 1
            if self._misses[name] >= self.prune_after:
                pruned.add(self._desired.pop(name))
                del self._misses[name]
        return TrackerUpdate(frozenset(added), frozenset(pruned), self.desired)

    def _by_name(self, peers: Iterable[Peer]) -> dict[str, Peer]:
        grouped: dict[str, list[Peer]] = {}
        for peer in peers:
            if peer.name != self.self_name:
                grouped.setdefault(peer.name, []).append(peer)
        chosen: dict[str, Peer] = {}
        for name, candidates in grouped.items():
            known = self._desired.get(name)
            if known is not None and known in candidates:
                chosen[name] = known
            else:
                chosen[name] = min(candidates, key=lambda p: (p.host, p.port))
        return chosen

    def __repr__(self) -> str:
        return (
            f"PeerTracker(prune_after={self.prune_after}, settled={self._settled}, "
            f"desired={sorted(self._desired)!r})"
        )
