"""The discovery poller: the actor each discovering node runs under its kernel."""

from __future__ import annotations

import logging
from typing import Any

from otpkit import actors
from otpkit.actors import Actor

__all__ = ["DISCOVERY_NAME", "Discoverer"]

log = logging.getLogger("otpkit.discovery")

#: The local name of the poller; ``call(DISCOVERY_NAME, "settled")`` and ``"peers"``.
DISCOVERY_NAME = "otpkit_discovery"


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
        actors.send_after(self.poll_interval, "poll")

    def handle_info(self, msg: Any) -> None:
        if msg == "poll":
            self._poll()
        else:
            super().handle_info(msg)

    def handle_call(self, request: Any, from_: Any) -> Any:
        if request == "settled":
            return self.tracker.settled
        if request == "peers":
            return sorted(p.name for p in self.tracker.desired)
        return super().handle_call(request, from_)
