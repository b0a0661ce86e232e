"""The quorum of the ``"majority"`` policy: agreed membership, leases with epochs, and
fencing, decided by a pure core (``_core``) inside a thin actor (``_actor``) that every
dist node runs under its kernel as ``otpkit_quorum``.

The functions below ask this node's quorum actor; Singletons and the scheduler use them.
"""

from otpkit.quorum._actor import (
    QUORUM_NAME,
    Quorum,
    StoreError,
    acquire,
    effects,
    fence,
    key_status,
    leave,
    members,
    notices,
    outside,
    post_notice,
    ready_gate,
    recover,
    release,
    set_expected_size,
    status,
    subscribe,
)
from otpkit.quorum._core import Lease, LeaseGranted, LeaseLost, QuorumConfig

__all__ = [
    "QUORUM_NAME",
    "Lease",
    "LeaseGranted",
    "LeaseLost",
    "Quorum",
    "QuorumConfig",
    "StoreError",
    "acquire",
    "effects",
    "fence",
    "key_status",
    "leave",
    "members",
    "notices",
    "outside",
    "post_notice",
    "ready_gate",
    "recover",
    "release",
    "set_expected_size",
    "status",
    "subscribe",
]
