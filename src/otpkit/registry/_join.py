"""Has a node joined its cluster? The one decision a Singleton's first election and the
readiness probe of ``otpkit run`` both make (:func:`join_problem`, pure), on the view
:func:`cluster_view` asks the node's services for."""

from __future__ import annotations

from dataclasses import dataclass

from otpkit import actors, distribution
from otpkit.discovery import DISCOVERY_NAME
from otpkit.errors import CallTimeout, Exit, NodeError, OtpkitError
from otpkit.quorum import QUORUM_NAME
from otpkit.registry import _global

__all__ = ["ClusterView", "ClusterViewError", "cluster_view", "join_problem"]


@dataclass(frozen=True)
class ClusterView:
    """What a node knows of its cluster, each a set of node names other than its own.

    ``settled``: discovery has had a good answer (True without discovery);
    ``discovered``: the peers of the last answers; ``connected``: dist's visible nodes;
    ``merged``: the nodes the registry has merged its table with; ``quorum``: why the
    node is not back in the majority policy's quorum (``quorum.rejoin_problem``), None
    if it is or runs none.
    """

    settled: bool
    discovered: frozenset[str]
    connected: frozenset[str]
    merged: frozenset[str]
    quorum: str | None = None


def join_problem(view: ClusterView) -> str | None:
    """Why a node with this view has not joined its cluster yet, or None if it has.

    The test :class:`~otpkit.registry._singleton.SingletonManager` makes before its first
    election: settled, every discovered peer connected, every connected node merged, and
    back in the quorum (a restarted node: a member again, at its peers' configuration).
    """
    if not view.settled:
        return "discovery has had no good answer yet"
    missing = sorted(view.discovered - view.connected)
    if missing:
        return f"not connected to {_names(missing)}"
    unmerged = sorted(view.connected - view.merged)
    if unmerged:
        return f"registry not merged with {_names(unmerged)}"
    return view.quorum


def _names(names: list[str], most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


class ClusterViewError(OtpkitError):
    """A service of the node did not answer :func:`cluster_view`: ``step`` names it
    (``"discovery"``, ``"dist"``, ``"the registry"``, ``"the quorum"``), ``cause`` is the error
    (:class:`CallTimeout`, :class:`Exit` or :class:`NodeError`)."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(step, cause)
        self.step = step
        self.cause = cause

    def __str__(self) -> str:
        return f"{self.step} did not answer ({type(self.cause).__name__}: {self.cause})"


def cluster_view(
    timeout: float,
    *,
    discovery: bool | None,
    dist: bool | None = True,
    dist_timeout: float | None = None,
    sync: bool = False,
    gates: bool = False,
) -> ClusterView:
    """This node's view of its cluster, asked of its services (discovery, dist, the
    registry, in that order), each question within ``timeout``.

    Args:
        discovery: True: ask the node's discovery; False: it runs none (the view is
            settled, with nothing discovered); None: ask, and take a node whose
            discovery does not exist (the call exits) as running none.
        dist: True: ask dist for its visible nodes; None: ask, and take a node without
            dist (NodeError) as connected to none.
        dist_timeout: the time dist's question may take, if not ``timeout``.
        sync: ``merged`` is what the registry answers once it has merged with every
            connected node (waiting up to ``timeout``) instead of what it has merged
            with now; asked only of a view that is otherwise joined (settled, every
            discovered peer connected), else ``merged`` is ``connected``: waiting for
            merges would not change :func:`join_problem`'s answer.
        gates: ``quorum`` also says why a local process keeps the node unready
            (``quorum.ready_gate``: a scheduler replica not in sync yet) - the
            readiness probe's question; a Singleton's election does not wait for it.

    Raises:
        ClusterViewError: a service did not answer (discovery or dist not running,
            when asked with True).
    """
    step = "discovery"
    try:
        settled, discovered = True, frozenset[str]()
        if discovery is not False:
            try:
                settled = bool(actors.call(DISCOVERY_NAME, "settled", timeout))
                discovered = frozenset(actors.call(DISCOVERY_NAME, "peers", timeout))
            except Exit:
                if discovery:
                    raise
                settled, discovered = True, frozenset()  # dist's own peers are the cluster
        me = actors.self().node
        step = "dist"
        try:
            nodes = distribution.nodes(timeout if dist_timeout is None else dist_timeout)
        except NodeError:
            if dist:
                raise
            nodes = []
        discovered, connected = discovered - {me}, frozenset(nodes) - {me}
        if sync:
            view = ClusterView(settled, discovered, connected, connected)
            if join_problem(view) is not None:
                return view
        step = "the registry"
        if sync:
            merged = frozenset(_global.sync_now(timeout))
        else:
            info = actors.call(_global.local_server(), ("info",), timeout)
            merged = frozenset(info["synced"])
        step = "the quorum"
        try:
            ask = "ready_problem" if gates else "rejoin_problem"
            problem = actors.call(QUORUM_NAME, (ask,), timeout)
        except Exit:
            problem = None  # a node without the quorum (hidden, or no dist)
    except (CallTimeout, Exit, NodeError) as exc:
        raise ClusterViewError(step, exc) from exc
    return ClusterView(settled, discovered, connected, merged - {me}, problem)
