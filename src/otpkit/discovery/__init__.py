"""Discovery: which peers this node should connect to.

Strategies (``DnsA``, ``DnsSrv``, ``Static``) do one lookup per ``lookup()`` call and
return a ``LookupResult``; a ``PeerTracker`` turns successive results into the set of
peers to keep dialling, pruning only after several consecutive good answers lack a peer
and never on a failed lookup. The ``Discoverer`` actor polls a strategy every
``poll_interval`` and hands the tracker's peer set to whoever the node names (dist's
connection manager); liveness is decided by dist heartbeats, never here.

dnspython is loaded on first use of a strategy, the tracker or the ``Responder`` (the
demo's embedded DNS server), not by importing this
package: every process of a node imports it, and only nodes that discover pay ~2 MiB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from otpkit.discovery._poller import DISCOVERY_NAME, Discoverer

if TYPE_CHECKING:
    from otpkit.discovery._responder import Responder
    from otpkit.discovery._strategies import (
        DnsA,
        DnsSrv,
        LookupResult,
        Peer,
        Static,
        Strategy,
    )
    from otpkit.discovery._tracker import PeerTracker, TrackerUpdate

__all__ = [
    "DISCOVERY_NAME",
    "Discoverer",
    "DnsA",
    "DnsSrv",
    "LookupResult",
    "Peer",
    "PeerTracker",
    "Responder",
    "Static",
    "Strategy",
    "TrackerUpdate",
]

_STRATEGIES = frozenset({"DnsA", "DnsSrv", "LookupResult", "Peer", "Static", "Strategy"})
_TRACKER = frozenset({"PeerTracker", "TrackerUpdate"})


def __getattr__(name: str) -> Any:
    if name in _STRATEGIES:
        from otpkit.discovery import _strategies  # noqa: PLC0415 - loads dnspython

        return getattr(_strategies, name)
    if name == "Responder":
        from otpkit.discovery import _responder  # noqa: PLC0415 - loads dnspython

        return _responder.Responder
    if name in _TRACKER:
        from otpkit.discovery import _tracker  # noqa: PLC0415 - loads dnspython

        return getattr(_tracker, name)
    raise AttributeError(f"module 'otpkit.discovery' has no attribute {name!r}")
