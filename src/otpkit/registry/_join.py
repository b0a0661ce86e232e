"""Has a node joined its cluster? The one decision a Singleton's first election and the
readiness probe of ``otpkit run`` both make (pure)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClusterView", "join_problem"]


@dataclass(frozen=True)
class ClusterView:
    """What a node knows of its cluster, each a set of node names other than its own.

    ``settled``: discovery has had a good answer (True without discovery);
    ``discovered``: the peers of the last answers; ``connected``: dist's visible nodes;
    ``merged``: the nodes the registry has merged its table with.
    """

    settled: bool
    discovered: frozenset[str]
    connected: frozenset[str]
    merged: frozenset[str]


def join_problem(view: ClusterView) -> str | None:
    """Why a node with this view has not joined its cluster yet, or None if it has.

    The test :class:`~otpkit.registry._singleton.SingletonManager` makes before its first
    election: settled, every discovered peer connected, every connected node merged.
    """
    if not view.settled:
        return "discovery has had no good answer yet"
    missing = sorted(view.discovered - view.connected)
    if missing:
        return f"not connected to {_names(missing)}"
    unmerged = sorted(view.connected - view.merged)
    if unmerged:
        return f"registry not merged with {_names(unmerged)}"
    return None


def _names(names: list[str], most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"
