"""Who a holder's write round counts (``_rounds.acks_needed``, ``is_ack``, ``tally``)
and how often a repeating trouble is logged (``Alarm``).

The rule: a write counts once a majority of the members have it *in their stores*. A
member whose store fails (disk full, read-only, damaged) answers that it failed: it is
not counted, refuses nothing and holds nobody back; the holder counts itself only when
its own store took the write. Checked exhaustively for 3 and 5 members, every holder,
every set of failing stores and every order of answers: a counted write is on the disks
of a majority (so every majority's merge has it, whoever restarts), and a write is
counted whenever the healthy stores are a majority - the finding of issue 12, where one
sick node's quick "failed" answer ended the round before the healthy member's ack.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest

from otpkit.scheduler._ledger import ClaimKey, Ledger, highest, open_claims
from otpkit.scheduler._replica import Replica, apply, merge
from otpkit.scheduler._rounds import (
    Alarm,
    Tally,
    acks_needed,
    alarm_clear,
    alarm_raise,
    is_ack,
    shortfall,
    tally,
)
from tests.unit.test_replica import at, claim_write, wire

OK = {"ok": True, "synced": True}
BEHIND = {"ok": True, "synced": False}
FULL = {"ok": False, "synced": False, "failed": "saving ledger lanes failed: disk is full"}


# --------------------------------------------------------------------------------------
# acks_needed
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "me", "saved", "needed"),
    [
        (["a", "b", "c"], "a", True, 1),  # the holder and one more: 2 of 3
        (["a", "b", "c"], "a", False, 2),  # its store failed: both others
        (["a", "b", "c", "d", "e"], "a", True, 2),
        (["a", "b", "c", "d", "e"], "a", False, 3),
        (["b", "c", "d"], "a", True, 2),  # not a member: a majority of the others
        (["b", "c", "d"], "a", False, 2),
        (["a"], "a", True, 0),  # alone and its store took it
        (["a"], "a", False, 1),  # alone and its store failed: no majority (0 others)
        (["a", "b"], "a", False, 2),  # more than there are others: cannot be
        ([], "a", True, 1),  # no member set yet: nothing is a majority
    ],
)
def test_acks_needed(members: list[str], me: str, saved: bool, needed: int) -> None:
    assert acks_needed(members, me, saved) == needed


def test_acks_needed_never_counts_a_holder_whose_store_failed() -> None:
    for size in range(1, 8):
        members = [f"n{i}" for i in range(size)]
        for me in members:
            assert acks_needed(members, me, False) == acks_needed(members, me, True) + 1
            assert acks_needed(members, me, True) + 1 == size // 2 + 1


# --------------------------------------------------------------------------------------
# is_ack and tally
# --------------------------------------------------------------------------------------


def test_only_a_stored_write_on_a_synced_copy_is_an_ack() -> None:
    assert is_ack(OK)
    assert not is_ack(BEHIND)
    assert not is_ack(FULL)  # a truthy dict that must not end a majority round
    assert not is_ack({"refused": 7})
    assert not is_ack({"ok": 1, "synced": True})
    assert not is_ack(None)
    assert not is_ack(True)


def test_tally_sorts_the_answers() -> None:
    asked = ["a", "b", "c", "d", "e", "f"]
    answers: dict[str, Any] = {
        "a": OK,
        "b": BEHIND,
        "c": FULL,
        "d": {"refused": 9},
        "e": {"refused": 12},
        # f: no answer
    }
    got = tally(asked, answers)
    assert got == Tally(
        acked=frozenset({"a"}),
        behind=frozenset({"b"}),
        failed={"c": "saving ledger lanes failed: disk is full"},
        refused=12,
        silent=frozenset({"f"}),
    )


def test_tally_of_an_answer_without_a_cause_or_of_no_mapping() -> None:
    got = tally(["a", "b", "c"], {"a": {"ok": False, "synced": False}, "b": "?", "c": {}})
    assert got.failed == {"a": "its store failed"}  # an older node's answer
    assert got.silent == frozenset({"b", "c"})
    assert tally(["a"], {"b": OK}) == Tally(silent=frozenset({"a"}))  # not asked: ignored


def test_shortfall_names_each_member_and_why() -> None:
    got = tally(["n2", "n3", "n4"], {"n3": FULL, "n4": BEHIND})
    assert shortfall(got, 2) == (
        "reached 0 of the 2 other members it needs (n3: its store fails (saving ledger "
        "lanes failed: disk is full); n4: not synced yet; n2: no answer)"
    )
    assert (
        shortfall(Tally(acked=frozenset({"x"})), 2) == "reached 1 of the 2 other members it needs"
    )


# --------------------------------------------------------------------------------------
# every holder, every set of failing stores, every order of answers
# --------------------------------------------------------------------------------------

KEY = ClaimKey("tick", at(5))


def write_round(
    names: Sequence[str], holder: str, failing: set[str], order: Sequence[str]
) -> tuple[bool, dict[str, Replica]]:
    """One claim written as the scheduler writes it: the holder's store first, then the
    others in ``order`` until ``is_ack`` answers reach ``acks_needed`` (the multi_call's
    early end; later answers are lost and, at worst, those members did not store it).
    Returns whether the holder counted it, and every node's *disk* copy."""
    disks = {n: Replica() for n in names}
    _, updates = claim_write(Ledger(), 1, [(KEY, holder)])
    updates = wire(updates)
    mine, ok, _ = apply(disks[holder], 1, updates)
    assert ok
    saved = holder not in failing
    if saved:
        disks[holder] = mine
    needed = acks_needed(names, holder, saved)
    answers: dict[str, Any] = {}
    for node in order:
        if sum(1 for a in answers.values() if is_ack(a)) >= needed:
            break  # the round ended: the rest are "timeout"
        if node in failing:
            answers[node] = FULL  # its store failed: memory only, lost at a restart
        else:
            disks[node], ok, _ = apply(disks[node], 1, updates)
            assert ok
            answers[node] = OK
    others = [n for n in names if n != holder]
    result = tally(others, answers)
    return len(result.acked) >= needed, disks


@pytest.mark.parametrize("size", [3, 5])
def test_a_counted_write_is_on_a_majority_of_disks_and_a_healthy_majority_counts_it(
    size: int,
) -> None:
    names = [f"n{i}" for i in range(size)]
    need = size // 2 + 1
    cases = 0
    for holder in names:
        others = [n for n in names if n != holder]
        for count in range(size + 1):
            for failing in map(set, itertools.combinations(names, count)):
                for order in itertools.permutations(others):
                    counted, disks = write_round(names, holder, failing, order)
                    cases += 1
                    healthy = size - len(failing)
                    # liveness: the healthy stores are a majority -> the write stands,
                    # whatever the sick ones answered and in whatever order
                    assert counted == (healthy >= need), (holder, failing, order)
                    if not counted:
                        continue
                    # safety: every node restarts from its disk; any majority's merge
                    # has the claim (a new holder never claims the tick again)
                    for readers in itertools.combinations(names, need):
                        merged = merge(disks[r] for r in readers)
                        assert highest(merged.ledger, "tick") == at(5), (holder, failing, readers)
                        assert KEY in open_claims(merged.ledger)
    assert cases == size * 2**size * len(list(itertools.permutations(range(size - 1))))


def test_the_old_rule_lost_a_write_when_the_holders_own_store_failed() -> None:
    """Why the holder must not count itself without its store: holder n0's disk is
    full, n1 acks, the round ends (one ack was all the old rule asked for); n0 restarts
    from its disk and, with n2, is a majority without the claim."""
    names = ["n0", "n1", "n2"]
    disks = {n: Replica() for n in names}
    _, updates = claim_write(Ledger(), 1, [(KEY, "n0")])
    disks["n1"], ok, _ = apply(disks["n1"], 1, wire(updates))
    assert ok
    old_rule = len(names) // 2  # majority - 1, the holder counted whatever its store did
    assert old_rule == 1  # ... so n1's ack was enough
    assert highest(merge([disks["n0"], disks["n2"]]).ledger, "tick") is None
    assert acks_needed(names, "n0", saved_here=False) == 2  # the rule now: n2 too


# --------------------------------------------------------------------------------------
# Alarm: once per episode, then every so often
# --------------------------------------------------------------------------------------


def test_an_alarm_logs_the_first_failure_then_every_period() -> None:
    alarm = Alarm()
    logged = []
    for second in range(0, 130):  # one failure a second for 130 s
        alarm, due = alarm_raise(alarm, float(second), "disk is full", every=60.0)
        if due:
            logged.append(second)
    assert logged == [0, 60, 120]
    assert (alarm.since, alarm.last, alarm.count, alarm.unlogged) == (0.0, 129.0, 130, 9)
    quiet, ended = alarm_clear(alarm, 130.0)
    assert quiet == Alarm() and ended == alarm
    assert alarm_clear(quiet, 131.0) == (quiet, None)  # nothing to end


def test_an_alarm_logs_a_new_cause_at_once_and_a_new_episode_afresh() -> None:
    alarm, due = alarm_raise(Alarm(), 0.0, "disk is full")
    assert due
    alarm, due = alarm_raise(alarm, 1.0, "disk is full")
    assert not due
    alarm, due = alarm_raise(alarm, 2.0, "attempt to write a readonly database")
    assert due and alarm.since == 0.0 and alarm.count == 3
    alarm, _ = alarm_clear(alarm, 3.0)
    alarm, due = alarm_raise(alarm, 4.0, "disk is full")
    assert due and alarm.since == 4.0 and alarm.count == 1


def test_trouble_that_comes_and_goes_is_one_episode_until_it_stays_away() -> None:
    """Every other write fails for a minute (a nearly full disk): one line, not one
    pair per failure; the episode ends only after ``quiet`` seconds without a failure."""
    alarm, lines = Alarm(), 0
    for second in range(60):
        if second % 2 == 0:
            alarm, due = alarm_raise(alarm, float(second), "disk is full", every=60.0)
            lines += due
        else:
            alarm, ended = alarm_clear(alarm, float(second), quiet=5.0)
            assert ended is None
    assert lines == 1 and alarm.count == 30 and alarm.last == 58.0
    assert alarm_clear(alarm, 62.9, quiet=5.0) == (alarm, None)
    quiet, ended = alarm_clear(alarm, 63.0, quiet=5.0)
    assert quiet == Alarm() and ended is not None
    assert (ended.since, ended.last, ended.count) == (0.0, 58.0, 30)
