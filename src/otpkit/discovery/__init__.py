"""Discovery: which peers this node should connect to (DESIGN §5).

Strategies (``DnsA``, ``DnsSrv``, ``Static``) do one lookup per ``lookup()`` call and
return a ``LookupResult``; a ``PeerTracker`` turns successive results into the set of
peers to keep dialling, pruning only after several consecutive good answers lack a peer
and never on a failed lookup. Polling (``poll_interval``) and connecting are the dist
layer's job; liveness is decided by dist heartbeats, never here.
"""

from otpkit.discovery._strategies import DnsA, DnsSrv, LookupResult, Peer, Static, Strategy
from otpkit.discovery._tracker import PeerTracker, TrackerUpdate

__all__ = [
    "DnsA",
    "DnsSrv",
    "LookupResult",
    "Peer",
    "PeerTracker",
    "Static",
    "Strategy",
    "TrackerUpdate",
]
