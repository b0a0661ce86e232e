"""The scheduler's majority replication (``_replication`` and ``_member``), without
processes: members, each with its real SQLite store, and holders' writers, wired by an
in-memory transport that carries each round as its wire tuple (``encode`` then
``decode_call``) and drops it for a node that is cut off.

What a user relies on: a write counts once a majority of healthy stores took it; a
member whose store fails is neither an ack nor a refusal, and counts again once it is
synced; a member that observed a newer holder's epoch refuses the old holder (fencing),
and the old holder cannot go above it without its lease confirmed; a new holder's read
waits for a majority and starts from the newest copies.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from otpkit.errors import OtpkitError
from otpkit.scheduler._member import Member
from otpkit.scheduler._messages import Apply, ReplicaCall, decode_call, encode
from otpkit.scheduler._replica import Replica
from otpkit.scheduler._replication import Read, Writer, write_epoch
from otpkit.scheduler._store import Store

NAME = "sched"
SINCE = datetime(2026, 1, 1, tzinfo=UTC)


def spec(version: int) -> dict[str, Any]:
    return {"name": "job", "schedule": "* * * * *", "task": "json:dumps", "args": [version]}


class Cluster:
    """Members ``m0``.. with their stores in ``root``, and the writers of holders on
    them. A node in ``cut`` neither sends nor answers; ``fenced`` says whether a lease
    is confirmed when a writer asks (``fence``)."""

    def __init__(self, root: Path, size: int) -> None:
        self.root = root
        self.nodes = [f"m{i}" for i in range(size)]
        self.stores: dict[str, Store] = {}
        self.members: dict[str, Member] = {}
        self.gates: dict[str, list[str | None]] = {n: [] for n in self.nodes}
        self.cut: set[str] = set()
        self.fenced = True
        self.fences: list[Any] = []
        self.timers: list[tuple[str, str, float | None]] = []
        self.superseded: list[str] = []
        self.blockers: dict[str, sqlite3.Connection] = {}
        for node in self.nodes:
            self.replace(node)

    def replace(self, node: str, file: str | None = None) -> Member:
        """A new member on ``node``, with the store ``file`` (default: the node's)."""
        path = self.root / (file or f"{node}.sqlite")
        self.stores[node] = Store.open(path, timeout=0.05)

        def gate(problem: str | None) -> bool:
            self.gates[node].append(problem)
            return True

        member = Member(NAME, node, self.stores[node], gate)
        member.start(gated=True)
        self.members[node] = member
        return member

    def close(self) -> None:
        for blocker in self.blockers.values():
            blocker.close()
        for store in self.stores.values():
            store.close()

    def block(self, node: str) -> None:
        """Hold the write lock of ``node``'s store: its writes fail (SQLite's "database
        is locked") until :meth:`unblock`."""
        blocker = sqlite3.connect(self.stores[node].path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        self.blockers[node] = blocker

    def unblock(self, node: str) -> None:
        self.blockers.pop(node).close()

    def ask(self, sender: str) -> Callable[..., list[tuple[str, Mapping[str, Any]]]]:
        def ask(
            nodes: list[str],
            request: ReplicaCall,
            enough: int | None,
            counts: Callable[[Any], bool],
            timeout: float,
        ) -> list[tuple[str, Mapping[str, Any]]]:
            got = []
            for node in nodes:
                if sender in self.cut or node in self.cut:
                    continue
                answer = self.members[node].handle(decode_call(encode(request)))
                if isinstance(answer, Mapping):
                    got.append((node, answer))
            return got

        return ask

    def writer(self, node: str, lease: int, gen: int = 1) -> Writer:
        def fence(effect: Any, timeout: float) -> bool:
            self.fences.append(effect)
            return self.fenced

        return Writer(
            self.members[node],
            holder=f"<{node}.1>/{gen}",
            policy="majority",
            round_timeout=1.0,
            ask=self.ask(node),
            members=lambda: list(self.nodes),
            connected=lambda: set(self.nodes) - {node} - self.cut,
            lease=lambda: lease,
            fence=fence,
            later=lambda kind, delay: self.timers.append((node, kind, delay)),
            on_superseded=lambda: self.superseded.append(node),
        )

    def recover(self, writer: Writer) -> Read:
        """A holder's recovery: the read, then one write to a majority."""
        read = writer.read()
        if read.ok and writer.write([], force=True):
            writer.established()
        return read

    def set_job(self, writer: Writer, version: int | None) -> bool:
        return writer.write([writer.job_update("job", spec_or_none(version), "runtime", SINCE)])

    def version(self, node: str) -> int | None:
        """The job's version in ``node``'s copy; its store, read back, holds the same."""
        memory = version_in(self.members[node].rep)
        stored = version_in(Member(NAME, node, self.stores[node], lambda problem: True).rep)
        assert stored == memory, f"{node}: {stored} in its store, {memory} in memory"
        return memory


def spec_or_none(version: int | None) -> dict[str, Any] | None:
    return None if version is None else spec(version)


def version_in(rep: Replica) -> int | None:
    entry = rep.jobs.get("job")
    return None if entry is None or entry.spec is None else int(entry.spec["args"][0])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, 3)
    yield c
    c.close()


def test_a_new_cluster_recovers_and_every_member_is_synced(cluster: Cluster) -> None:
    writer = cluster.writer("m0", lease=1)
    assert cluster.recover(writer).ok and writer.recovered
    assert writer.epoch == 1
    for node in cluster.nodes:
        member = cluster.members[node]
        assert member.synced and member.rep.epoch == 1
        # each node's readiness: held at start, released once in sync
        assert cluster.gates[node][-1] is None
    assert cluster.set_job(writer, 1)
    assert [cluster.version(n) for n in cluster.nodes] == [1, 1, 1]


def test_a_write_counts_once_a_healthy_majority_took_it(cluster: Cluster) -> None:
    writer = cluster.writer("m0", lease=1)
    assert cluster.recover(writer).ok
    cluster.cut = {"m1", "m2"}
    assert not cluster.set_job(writer, 1), "the holder alone is no majority"
    assert writer.member.rep.jobs.get("job") is None, "memory unchanged by a failed write"
    cluster.cut = {"m2"}
    assert cluster.set_job(writer, 1)
    assert [cluster.version(n) for n in ("m1", "m2")] == [1, None]
    # the holder counts itself only when its own store took the write: with its store
    # failing, one member's ack is no longer enough
    cluster.block("m0")
    assert not cluster.set_job(writer, 2)
    cluster.cut = set()
    assert cluster.set_job(writer, 2)
    assert [cluster.version(n) for n in ("m1", "m2")] == [2, 2]
    assert cluster.superseded == []


def test_a_member_whose_store_fails_is_neither_an_ack_nor_a_refusal(cluster: Cluster) -> None:
    writer = cluster.writer("m0", lease=1)
    assert cluster.recover(writer).ok
    cluster.block("m1")
    update = writer.job_update("job", spec(1), "runtime", SINCE)
    answer = cluster.members["m1"].handle(Apply(writer.epoch, [update], None, writer.holder))
    assert answer["ok"] is False and answer["synced"] is False and "locked" in answer["failed"]
    assert cluster.members["m1"].problem() is not None
    assert cluster.gates["m1"][-1] is not None, "its node is not ready while it fails"
    cluster.cut = {"m2"}
    assert not cluster.set_job(writer, 1), "a failing store is no ack"
    assert writer.recovered and cluster.superseded == [], "nor a refusal"
    cluster.cut = set()
    assert cluster.set_job(writer, 1)  # m2 acks
    # the store works again: the member is behind (it missed writes), so the holder
    # syncs it, and it counts again
    cluster.unblock("m1")
    cluster.cut = {"m2"}
    assert cluster.set_job(writer, 2)
    member = cluster.members["m1"]
    assert member.synced and member.problem() is None and cluster.version("m1") == 2
    assert cluster.gates["m1"][-1] is None


def test_a_copy_behind_is_synced_after_the_write(cluster: Cluster) -> None:
    """A member whose store was lost (a new, empty file) takes a write but cannot count:
    the write stands on the others, and the holder syncs the new copy after it."""
    writer = cluster.writer("m0", lease=1)
    assert cluster.recover(writer).ok
    assert cluster.set_job(writer, 1)
    cluster.replace("m2", file="m2-new.sqlite")
    assert cluster.set_job(writer, 2)
    assert cluster.timers == [("m0", "sync", None)]
    assert not cluster.members["m2"].synced
    writer.sync_due()
    member = cluster.members["m2"]
    assert member.synced and cluster.version("m2") == 2
    assert member.rep.jobs["job"].stamp == cluster.members["m0"].rep.jobs["job"].stamp


def test_a_member_that_observed_a_newer_holder_refuses_the_old_one(cluster: Cluster) -> None:
    """The old holder (lease 1, paused or cut off) comes back after a new holder (lease
    2) recovered on a majority: its writes are refused by every member of that majority,
    so by every majority; it steps back, and cannot go above the new epoch without its
    lease confirmed."""
    old = cluster.writer("m0", lease=1)
    assert cluster.recover(old).ok and cluster.set_job(old, 1)
    cluster.cut = {"m0"}
    new = cluster.writer("m1", lease=2)
    assert cluster.recover(new).ok and new.epoch > old.epoch
    assert cluster.set_job(new, 2)
    cluster.cut = set()
    assert not cluster.set_job(old, 3)
    assert cluster.superseded == ["m0"] and not old.recovered
    assert [cluster.version(n) for n in ("m1", "m2")] == [2, 2]
    # the old holder's read must go above the epoch it was refused with: a new era,
    # which its lease (no longer the quorum's) cannot confirm
    cluster.fenced = False
    read = old.read()
    assert read == Read(False, 0.5)
    assert cluster.fences == [["era", write_epoch(new.epoch, 1)]]
    assert [cluster.version(n) for n in ("m1", "m2")] == [2, 2]


def test_raise_epoch_takes_a_new_era_only_with_the_lease_confirmed(cluster: Cluster) -> None:
    writer = cluster.writer("m0", lease=5)
    assert writer.raise_epoch(3) and writer.epoch == 5 and cluster.fences == []
    # a member saw lease epoch 7 (of this era): the quorum's epochs started again, or
    # this holder was superseded; only a confirmed lease may write above it
    cluster.fenced = False
    assert not writer.raise_epoch(7) and writer.epoch == 5
    cluster.fenced = True
    assert writer.raise_epoch(7) and writer.epoch == (1 << 32) + 5
    assert cluster.fences == [["era", (1 << 32) + 5]] * 2

    def restarting(effect: Any, timeout: float) -> bool:
        raise OtpkitError("the quorum actor is restarting")

    writer.fence = restarting
    assert not writer.raise_epoch((1 << 32) + 9)
    assert writer.epoch == (1 << 32) + 5


def test_the_recovery_read_waits_for_a_majority_and_merges_the_newest_copies(
    cluster: Cluster,
) -> None:
    old = cluster.writer("m0", lease=1)
    assert cluster.recover(old).ok
    cluster.cut = {"m2"}
    assert cluster.set_job(old, 1)  # m0, m1
    cluster.cut = {"m1"}
    assert cluster.set_job(old, 2)  # m0, m2: m1 still has version 1
    assert [cluster.version(n) for n in cluster.nodes] == [2, 1, 2]
    # m0 is gone; a new holder on m1 alone has no majority: it waits
    cluster.cut = {"m0", "m2"}
    new = cluster.writer("m1", lease=2)
    assert new.read() == Read(False, 0.2)
    assert cluster.version("m1") == 1
    cluster.cut = {"m0"}
    assert cluster.recover(new).ok
    assert cluster.version("m1") == 2, "the newest copy wins the merge"
    assert cluster.set_job(new, 3)
    assert [cluster.version(n) for n in ("m1", "m2")] == [3, 3]


def test_a_write_of_an_old_epoch_is_refused_at_the_member(cluster: Cluster) -> None:
    """Fencing at one member, the round as it comes from the wire: an ``apply`` below
    the epoch it observed, or at it from another holder, is refused with that epoch."""
    holder = cluster.writer("m0", lease=4)
    assert cluster.recover(holder).ok
    member = cluster.members["m1"]
    update = holder.job_update("job", spec(1), "runtime", SINCE)
    stale = encode(Apply(3, [update], None, "<m2.1>/1"))
    assert member.handle(decode_call(stale)) == {"refused": 4}
    other = encode(Apply(4, [update], None, "<m2.1>/1"))
    assert member.handle(decode_call(other)) == {"refused": 4}
    assert member.rep.jobs.get("job") is None
    mine = encode(Apply(4, [update], None, holder.holder))
    assert member.handle(decode_call(mine)) == {"ok": True, "synced": True}
