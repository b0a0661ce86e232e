"""Prevention of overlapping partitions, as a pure decision (see ARCHITECTURE.md,
*Partitions*).

When the link between two nodes breaks, every third node that is linked to both would
join two partitions that cannot talk. Each such node drops the same one of the two -
the one with the larger name - and does not link to it again until the pair is linked
again (or until it loses the one it kept). Only links that *failed* are reported; a
node's own drops are not, so the decision never cascades: each cut ends in maximal,
fully connected parts.

A report is acted on only ``down_after + tick`` after it arrived, and only if the link
is still reported broken and this node is still linked to both: when one node is cut
off from all, the others lose it themselves within ``down_after``, and a report that a
heal made stale is withdrawn (``regained``) before it takes effect.
"""

from __future__ import annotations

from collections.abc import Collection


def overlap_victim(
    me: str, reporter: str, lost: str, connected: Collection[str]
) -> tuple[str, str] | None:
    """``reporter`` lost its link to ``lost``: return ``(victim, keeper)`` if this node,
    linked to both, must drop (and block) ``victim`` to keep ``keeper``, else None."""
    if me in (reporter, lost):
        return None
    victim, keeper = max(reporter, lost), min(reporter, lost)
    # only a node linked to both joins two partitions; one that lost either itself is
    # no bridge, and blocking there would keep the victim out after the heal
    if keeper not in connected or victim not in connected:
        return None
    return victim, keeper
