"""The next-fire queue over many jobs: which job fires first, in O(log n) per change."""

from __future__ import annotations

import heapq
import itertools
from datetime import datetime

__all__ = ["FireQueue"]


class FireQueue:
    """Jobs by name, each with its next fire time; pops the due ones in fire order.

    A binary heap (``heapq``) with lazy deletion: ``update`` and ``remove`` leave the old
    entry in the heap, marked stale by its sequence number, and popping skips it. The
    heap is rebuilt from the live entries when stale ones outnumber them, so it never
    holds more than about twice the jobs. ``add``, ``update``, ``remove`` and each popped
    job cost O(log n) (amortized). Jobs due at the same instant pop in name order.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, str, int]] = []
        self._live: dict[str, tuple[datetime, int]] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, name: object) -> bool:
        return name in self._live

    def when(self, name: str) -> datetime:
        """The queued fire time of ``name``; KeyError if it is not queued."""
        return self._live[name][0]

    def add(self, name: str, at: datetime) -> None:
        """Queue ``name`` to fire at ``at``; ValueError if it is already queued."""
        if name in self._live:
            raise ValueError(f"job {name!r} is already queued (at {self._live[name][0]})")
        self._push(name, at)

    def update(self, name: str, at: datetime) -> None:
        """Move ``name`` to fire at ``at``; KeyError if it is not queued."""
        if name not in self._live:
            raise KeyError(name)
        self._push(name, at)

    def remove(self, name: str) -> None:
        """Take ``name`` out of the queue; KeyError if it is not queued."""
        del self._live[name]
        self._compact()

    def next_at(self) -> datetime | None:
        """The earliest queued fire time, or None when the queue is empty."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: datetime) -> list[tuple[datetime, str]]:
        """Take out every job due at or before ``now``: ``(at, name)`` in fire order."""
        due: list[tuple[datetime, str]] = []
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return due
            at, name, _ = heapq.heappop(self._heap)
            del self._live[name]
            due.append((at, name))

    def _push(self, name: str, at: datetime) -> None:
        seq = next(self._seq)
        self._live[name] = (at, seq)
        heapq.heappush(self._heap, (at, name, seq))
        self._compact()

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap and self._live.get(heap[0][1]) != (heap[0][0], heap[0][2]):
            heapq.heappop(heap)

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self._live) + 16:
            self._heap = [(at, name, seq) for name, (at, seq) in self._live.items()]
            heapq.heapify(self._heap)
