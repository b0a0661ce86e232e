"""The discovery poller: the actor each discovering node runs under its kernel."""

from __future__ import annotations

import logging
from typing import Any

from otpkit import actors
from otpkit.actors import Actor, shapes

__all__ = ["CALLS", "DISCOVERY_NAME", "INFOS", "Discoverer"]

log = logging.getLogger("otpkit.discovery")

#: The local name of the poller; ``call(DISCOVERY_NAME, "settled")`` and ``"peers"``.
DISCOVERY_NAME = "otpkit_discovery"

#: The calls the poller answers; a bare tag (``"settled"``) is the same call as its
#: one-tuple.
CALLS = shapes.Protocol("discovery call", shapes.Shape("settled"), shapes.Shape("peers"))

#: The poller takes no plain message: its timer is a Python object.
INFOS = shapes.Protocol("discovery message")


class _Poll:
    """The poller's timer (no other process can send one)."""


class Discoverer(Actor):
    """Polls a discovery strategy and hands ``sink`` (dist's connection manager, by name or
    pid) the set of peers to keep dialling, as ``call(sink, ("set_known", {name: (host,
    port)}))``.

    A failed lookup changes nothing; a peer leaves the set only after ``prune_after``
    good answers in a row lacked it (discovery never decides liveness: dist does).
    """

    def init(self, strategy: Any, poll_interval: float, prune_after: int, sink: Any) -> None:
        # imported here: dnspython costs every process of a node ~2 MiB, and only nodes
        # that discover pay for it
        from otpkit.discovery._tracker import PeerTracker  # noqa: PLC0415

        self.strategy = strategy
        self.sink = sink
        self.poll_interval = poll_interval
        self.tracker = PeerTracker(prune_after, actors.self().node)
        self.drops = shapes.DropLog(log)
        actors.register(DISCOVERY_NAME)
        self._poll()

    def _poll(self) -> None:
        result = self.strategy.lookup()
        if not result.ok:
            log.warning(
                "%s: discovery lookup failed (%s): %s",
                actors.self().node,
                self.strategy,
                result.error,
            )
        update = self.tracker.update(result)
        if update.added or update.pruned:
            log.info(
                "%s: discovery: +%s -%s",
                actors.self().node,
                sorted(p.name for p in update.added),
                sorted(p.name for p in update.pruned),
            )
        if result.ok:
            peers = {p.name: (p.host, p.port) for p in update.desired}
            actors.call(self.sink, ("set_known", peers))
        actors.send_after(self.poll_interval, _Poll())

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, _Poll):
            self._poll()
        else:
            why = INFOS.problem(msg) or "not expected"
            self.drops.dropped(f"{actors.self().node}: discovery", msg, why)

    def handle_cast(self, msg: Any) -> None:
        why = "the discovery poller takes no cast"
        self.drops.dropped(f"{actors.self().node}: discovery", msg, why)

    def handle_call(self, request: Any, from_: Any) -> Any:
        why = CALLS.problem((request,) if type(request) is str else request)
        if why is not None:
            self.drops.dropped(f"{actors.self().node}: discovery", request, why)
            return shapes.bad_request(CALLS.owner, why)
        if request in ("settled", ("settled",)):
            return self.tracker.settled
        return sorted(p.name for p in self.tracker.desired)  # "peers"
