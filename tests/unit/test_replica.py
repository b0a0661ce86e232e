"""A scheduler replica (otpkit.scheduler._replica) and the pure parts it is built from.

Covers the ledger's batch operations (``claim_all``, ``finish_all``, ``accept_all``: the
same result as the single operations applied one by one), the replica's write
(``apply``), observe, merge and encoded form, the scheduler's ``pick_nodes`` and
``majority``, and ``Job``'s spec round trip. The last part plays the safety argument of
``_ledger``'s docstring at the replica level: three replicas, an old holder, a new one.
"""

from __future__ import annotations

import itertools
import json
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otpkit.scheduler import InvalidJob, Job
from otpkit.scheduler._engine import pick_nodes
from otpkit.scheduler._ledger import (
    OUTCOMES,
    ClaimKey,
    Lane,
    LaneUpdate,
    Ledger,
    LedgerError,
    accept,
    accept_all,
    claim,
    claim_all,
    finish,
    finish_all,
    highest,
    lane_update,
    observe,
    open_claims,
)
from otpkit.scheduler._ledger_codec import encode_update
from otpkit.scheduler._replica import (
    JobEntry,
    Replica,
    apply,
    decode_entry,
    decode_key,
    decode_replica,
    encode_entry,
    encode_key,
    encode_replica,
    merge,
    observe_replica,
    read_quorum,
)
from otpkit.scheduler._replication import majority

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
PLUS2 = timezone(timedelta(hours=2))


def at(second: int) -> datetime:
    return T0 + timedelta(seconds=second)


def wire(value: Any) -> Any:
    """``value`` after a trip through msgpack (tuples come back as lists)."""
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False)


# ---- helpers that build a holder's write, as the scheduler does


def lane_of(ledger: Ledger, key: ClaimKey) -> list[Any]:
    return ["lane", encode_update(lane_update(ledger, key))]


def job_of(
    name: str,
    spec: dict[str, Any] | None,
    stamp: tuple[int, int],
    origin: str = "runtime",
    since: datetime = T0,
) -> list[Any]:
    return ["job", name, encode_entry(JobEntry(spec, stamp, origin, since))]


def where_of(key: ClaimKey, node: str | None) -> list[Any]:
    return ["where", encode_key(key), node]


def spec(name: str, **changes: Any) -> dict[str, Any]:
    return Job(name, "* * * * *", "json:dumps", **changes).to_spec()


def claim_write(
    ledger: Ledger, epoch: int, placed: list[tuple[ClaimKey, str]]
) -> tuple[Ledger, list[Any]]:
    """Claim the keys of ``placed`` under ``epoch``: the new ledger and the write."""
    ledger, done = claim_all(ledger, [k for k, _ in placed], epoch)
    assert done == [k for k, _ in placed]
    lanes = {k.lane: k for k in done}
    updates = [lane_of(ledger, k) for k in lanes.values()]
    updates += [where_of(k, node) for k, node in placed]
    return ledger, updates


def finish_write(
    ledger: Ledger, epoch: int, keys: list[ClaimKey], outcome: str = "finished"
) -> tuple[Ledger, list[Any]]:
    ledger, done = finish_all(ledger, [(k, outcome) for k in keys], epoch)
    assert done == keys
    lanes = {k.lane: k for k in done}
    updates = [lane_of(ledger, k) for k in lanes.values()]
    updates += [where_of(k, None) for k in done]
    return ledger, updates


# --------------------------------------------------------------------------------------
# ledger batches: claim_all, finish_all, accept_all agree with the single operations
# --------------------------------------------------------------------------------------

JOBS = ["a", "b"]
NODES = [None, "n1"]
ticks = st.builds(
    lambda second, zone: at(second).astimezone(zone),
    st.integers(0, 12),
    st.sampled_from([UTC, PLUS2]),
)
keys = st.builds(ClaimKey, st.sampled_from(JOBS), ticks, st.sampled_from(NODES))


def _build(steps: list[tuple[ClaimKey, int, bool]]) -> Ledger:
    state = Ledger()
    for key, epoch, done in steps:
        state, _ = claim(state, key, epoch)
        if done:
            state, _ = finish(state, key, "finished", epoch)
    return state


ledgers = st.lists(st.tuples(keys, st.integers(0, 3), st.booleans()), max_size=15).map(_build)


def claim_one_by_one(state: Ledger, batch: list[ClaimKey], epoch: int) -> tuple[Ledger, list]:
    done = []
    for key in batch:
        state, ok = claim(state, key, epoch)
        if ok:
            done.append(key)
    return state, done


@settings(max_examples=300, deadline=None)
@given(ledgers, st.lists(keys, max_size=12), st.integers(0, 4))
def test_claim_all_agrees_with_claim_one_by_one(state: Ledger, batch: list[ClaimKey], epoch: int):
    expected, expected_done = claim_one_by_one(state, batch, epoch)
    got, done = claim_all(state, batch, epoch)
    assert got == expected
    assert done == expected_done
    assert all(key.at.tzinfo is UTC for key in done)  # the checked form, in UTC
    if not done:
        assert got is state
    if epoch < state.epoch:
        assert done == []


@settings(max_examples=300, deadline=None)
@given(
    ledgers,
    st.lists(st.tuples(keys, st.sampled_from(OUTCOMES)), max_size=12),
    st.integers(0, 4),
)
def test_finish_all_agrees_with_finish_one_by_one(
    state: Ledger, items: list[tuple[ClaimKey, str]], epoch: int
):
    expected, expected_done = state, []
    for key, outcome in items:
        expected, ok = finish(expected, key, outcome, epoch)
        if ok:
            expected_done.append(key)
    got, done = finish_all(state, items, epoch)
    assert got == expected
    assert done == expected_done
    if not done:
        assert got is state


def lanes_stamped(epoch: int) -> st.SearchStrategy[LaneUpdate]:
    def make(job: str, node: str | None, high: int, opened: set[int], seq: int) -> LaneUpdate:
        ticks_open = tuple((at(t), epoch) for t in sorted(opened) if t <= high)
        return LaneUpdate(job, node, Lane(at(high), ticks_open, (epoch, seq)))

    return st.builds(
        make,
        st.sampled_from(JOBS),
        st.sampled_from(NODES),
        st.integers(0, 6),
        st.sets(st.integers(0, 6), max_size=3),
        st.integers(1, 4),
    )


member_ledgers = st.integers(0, 3).flatmap(
    lambda epoch: st.lists(lanes_stamped(epoch), max_size=4).map(
        lambda updates: Ledger(epoch, {u.key: u.lane for u in updates})
    )
)


@settings(max_examples=300, deadline=None)
@given(
    member_ledgers,
    st.integers(0, 4).flatmap(lambda e: st.lists(lanes_stamped(e), max_size=6)),
)
def test_accept_all_of_one_writes_lanes_agrees_with_accept_one_by_one(
    state: Ledger, batch: list[LaneUpdate]
):
    # One write's lanes carry the writer's epoch (as in ``apply``): same state as
    # accepting them one by one; refused as a whole iff that epoch is below the state's.
    expected = state
    for update in batch:
        expected, _ = accept(expected, update)
    got, ok = accept_all(state, batch)
    assert got == expected
    assert ok == all(update.lane.stamp[0] >= state.epoch for update in batch)
    if not ok:
        assert got is state


def test_accept_all_of_mixed_epochs_agrees_with_accept_one_by_one():
    newer = LaneUpdate("a", None, Lane(at(1), ((at(1), 2),), (2, 1)))
    older = LaneUpdate("b", None, Lane(at(1), ((at(1), 1),), (1, 1)))
    one_by_one, ok_newer = accept(Ledger(), newer)
    one_by_one, ok_older = accept(one_by_one, older)
    assert (ok_newer, ok_older) == (True, False)
    got, _ = accept_all(Ledger(), [newer, older])
    assert set(got.lanes) == {("a", None)}
    assert got == one_by_one


@pytest.mark.parametrize("outcome", ["missed", "skipped"])
def test_the_outcomes_missed_and_skipped_close_a_claim(outcome: str):
    assert outcome in OUTCOMES
    key = ClaimKey("j", at(3))
    state, done = claim_all(Ledger(), [key], 1)
    assert done == [key]
    closed, ok = finish(state, key, outcome, 1)
    assert ok
    assert open_claims(closed) == ()
    assert highest(closed, "j") == at(3)
    batch, done = finish_all(state, [(key, outcome)], 1)
    assert done == [key]
    assert batch == closed


def test_finish_all_checks_every_outcome_before_it_closes_anything():
    key = ClaimKey("j", at(3))
    state, _ = claim_all(Ledger(), [key], 1)
    with pytest.raises(ValueError, match="outcome 'lost'"):
        finish_all(state, [(key, "finished"), (key, "lost")], 1)
    assert open_claims(state) == (key,)


def test_claim_all_refuses_the_whole_batch_under_an_old_epoch():
    state = observe(Ledger(), 3)
    assert claim_all(state, [ClaimKey("j", at(1)), ClaimKey("k", at(1))], 2) == (state, [])
    with pytest.raises(ValueError, match="aware datetime"):
        claim_all(state, [("j", datetime(2026, 1, 1))], 2)  # checked even when refused


def test_claim_all_takes_one_claim_per_tick_and_keeps_order():
    batch = [
        ClaimKey("j", at(2)),
        ClaimKey("j", at(2).astimezone(PLUS2)),  # the same instant: refused
        ClaimKey("j", at(1)),  # below the batch's high: refused
        ClaimKey("j", at(4)),
        ClaimKey("j", at(4), "n1"),  # another lane
    ]
    state, done = claim_all(Ledger(), batch, 1)
    assert done == [ClaimKey("j", at(2)), ClaimKey("j", at(4)), ClaimKey("j", at(4), "n1")]
    assert state.lanes[("j", None)] == Lane(at(4), ((at(2), 1), (at(4), 1)), (1, 2))
    assert state.lanes[("j", "n1")] == Lane(at(4), ((at(4), 1),), (1, 1))
    assert state.epoch == 1


# --------------------------------------------------------------------------------------
# keys and entries on the wire
# --------------------------------------------------------------------------------------


def test_encode_key_is_job_iso_utc_time_and_node():
    assert encode_key(ClaimKey("j", at(5).astimezone(PLUS2), "n1")) == [
        "j",
        "2026-01-01T10:00:05+00:00",
        "n1",
    ]
    assert encode_key(ClaimKey("j", at(5))) == ["j", "2026-01-01T10:00:05+00:00", None]


@pytest.mark.parametrize(
    "value",
    [
        ["j", "2026-01-01T10:00:05+00:00", "n1"],
        ("j", "2026-01-01T12:00:05+02:00", "n1"),
        ["j", at(5), "n1"],
        ["j", at(5).astimezone(PLUS2), "n1"],
    ],
)
def test_decode_key_takes_iso_strings_and_aware_datetimes(value: Any):
    key = decode_key(value)
    assert key == ClaimKey("j", at(5), "n1")
    assert key.at.tzinfo is UTC


def test_decode_key_without_node_and_round_trip():
    assert decode_key(["j", at(5)]) == ClaimKey("j", at(5), None)
    key = ClaimKey("job", at(7), "n@10.0.0.1")
    assert decode_key(encode_key(key)) == key
    assert decode_key(wire(encode_key(key))) == key


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("j", "expected \\[job, at, node\\]"),
        (["j"], "expected \\[job, at, node\\]"),
        (["j", at(1), "n", "x"], "expected \\[job, at, node\\]"),
        (["", at(1)], "job, expected a non-empty string"),
        ([5, at(1)], "job, expected a non-empty string"),
        (["j", datetime(2026, 1, 1, 10)], "at, expected an aware time"),
        (["j", "2026-01-01T10:00:00"], "expected a time with its offset"),
        (["j", "yesterday"], "yesterday"),
        (["j", 1767261600], "expected an ISO 8601 time"),
        (["j", at(1), ""], "node, expected None or a string"),
        (["j", at(1), 5], "node, expected None or a string"),
    ],
)
def test_decode_key_refuses_malformed_keys(value: Any, match: str):
    with pytest.raises(LedgerError, match=match):
        decode_key(value)


def test_entry_round_trip_and_deleted():
    live = JobEntry(spec("j"), (2, 3), "config", at(1).astimezone(PLUS2))
    gone = JobEntry(None, (2, 4), "runtime", at(2))
    for entry in (live, gone):
        assert decode_entry(encode_entry(entry), "j") == entry
        assert decode_entry(wire(encode_entry(entry)), "j") == entry
        assert decode_entry(json.loads(json.dumps(encode_entry(entry))), "j") == entry
    assert encode_entry(live)["since"] == "2026-01-01T10:00:01+00:00"
    assert not live.deleted
    assert gone.deleted


GOOD_ENTRY = {"spec": {"name": "j"}, "stamp": [1, 1], "origin": "runtime", "since": T0.isoformat()}


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([1, 2], "job entry 'j': expected a mapping"),
        ({**GOOD_ENTRY, "spec": [1]}, "job entry 'j': spec \\[1\\], expected a mapping or None"),
        ({**GOOD_ENTRY, "stamp": [1]}, "job entry 'j': stamp \\[1\\], expected \\[epoch, seq\\]"),
        ({**GOOD_ENTRY, "stamp": [1, -1]}, "job entry 'j': stamp"),
        ({**GOOD_ENTRY, "stamp": [True, 1]}, "job entry 'j': stamp"),
        ({**GOOD_ENTRY, "stamp": [1.0, 1]}, "job entry 'j': stamp"),
        ({**GOOD_ENTRY, "stamp": "1,1"}, "job entry 'j': stamp"),
        ({k: v for k, v in GOOD_ENTRY.items() if k != "stamp"}, "job entry 'j': stamp None"),
        ({**GOOD_ENTRY, "origin": "cli"}, "job entry 'j': origin 'cli', expected one of"),
        ({k: v for k, v in GOOD_ENTRY.items() if k != "since"}, "job entry 'j' since: None"),
        ({**GOOD_ENTRY, "since": "2026-01-01T10:00:00"}, "job entry 'j' since: .*offset"),
        ({**GOOD_ENTRY, "since": "soon"}, "job entry 'j' since: 'soon'"),
    ],
)
def test_decode_entry_names_what_is_malformed(value: Any, match: str):
    with pytest.raises(LedgerError, match=match):
        decode_entry(value, "j")


def test_decode_entry_copies_the_spec():
    raw = {**GOOD_ENTRY, "spec": {"name": "j"}}
    entry = decode_entry(raw, "j")
    raw["spec"]["name"] = "changed"
    assert entry.spec == {"name": "j"}
    assert entry == JobEntry({"name": "j"}, (1, 1), "runtime", T0)


# --------------------------------------------------------------------------------------
# the replica's encoded form
# --------------------------------------------------------------------------------------


def _replica(steps: list[tuple[ClaimKey, int, bool]], entries: list[tuple[str, int, bool]]):
    ledger = _build(steps)
    jobs = {
        name: JobEntry(None if deleted else spec(name), (seq // 3, seq), "runtime", at(seq))
        for name, seq, deleted in entries
    }
    where = {key: f"w{i}" for i, key in enumerate(open_claims(ledger))}
    epochs = {
        ClaimKey(job, tick, node): epoch
        for (job, node), lane in ledger.lanes.items()
        for tick, epoch in lane.open
    }
    return Replica(ledger, jobs, where, epochs)


replicas = st.builds(
    _replica,
    st.lists(st.tuples(keys, st.integers(0, 3), st.booleans()), max_size=15),
    st.lists(st.tuples(st.sampled_from(["x", "y", "z"]), st.integers(1, 9), st.booleans())),
)


@settings(max_examples=150, deadline=None)
@given(replicas)
def test_replica_round_trips_through_msgpack_and_json(rep: Replica):
    encoded = encode_replica(rep)
    assert decode_replica(encoded) == rep
    assert decode_replica(wire(encoded)) == rep
    assert decode_replica(json.loads(json.dumps(encoded))) == rep


def test_replica_encoded_form():
    key = ClaimKey("j", at(1), "n1")
    ledger, _ = claim(Ledger(), key, 2)
    rep = Replica(ledger, {"j": JobEntry(None, (2, 5), "config", T0)}, {key: "n1@host"}, {key: 2})
    encoded = encode_replica(rep)
    assert encoded["epoch"] == 2
    assert encoded["jobs"] == {
        "j": {"spec": None, "stamp": [2, 5], "origin": "config", "since": T0.isoformat()}
    }
    # each where carries the epoch of the write that set it (its claim's epoch)
    assert encoded["where"] == [["j", "2026-01-01T10:00:01+00:00", "n1", "n1@host", 2]]
    assert decode_replica(encoded) == rep


def test_decode_replica_without_jobs_and_where_is_the_ledger_alone():
    ledger, _ = claim(Ledger(), ClaimKey("j", at(1)), 1)
    encoded = encode_replica(Replica(ledger))
    del encoded["jobs"], encoded["where"]
    assert decode_replica(encoded) == Replica(ledger, {}, {})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"jobs": [1]}, "replica jobs: list, expected a mapping"),
        ({"jobs": {"j": {"stamp": [1, 1]}}}, "job entry 'j': origin"),
        ({"where": [["j", T0.isoformat(), None]]}, "replica where: .*expected \\[job, at, node"),
        ({"where": [["j", T0.isoformat(), None, 5]]}, "replica where"),
        ({"where": [["j", "noon", None, "n1"]]}, "claim key"),
        ({"epoch": -1}, "ledger epoch"),
        ({"format": 2}, "format 2"),
    ],
)
def test_decode_replica_names_what_is_malformed(change: dict[str, Any], match: str):
    with pytest.raises(LedgerError, match=match):
        decode_replica({**encode_replica(Replica()), **change})


def test_decode_replica_refuses_a_where_that_is_not_a_list():
    with pytest.raises(LedgerError, match="replica where"):
        decode_replica({**encode_replica(Replica()), "where": 5})


# --------------------------------------------------------------------------------------
# observe_replica
# --------------------------------------------------------------------------------------


def test_observe_replica_raises_the_epoch_and_keeps_the_rest():
    key = ClaimKey("j", at(1))
    ledger, _ = claim(Ledger(), key, 1)
    rep = Replica(ledger, {"j": JobEntry(spec("j"), (1, 1), "config", T0)}, {key: "n1"})
    seen, ok = observe_replica(rep, 3)
    assert ok
    assert seen.epoch == 3
    assert seen.ledger.lanes == rep.ledger.lanes
    assert (seen.jobs, seen.where) == (rep.jobs, rep.where)
    again, ok = observe_replica(seen, 3)  # the same epoch again: fine
    assert ok
    assert again.epoch == 3
    assert observe_replica(seen, 2) == (seen, False)


# --------------------------------------------------------------------------------------
# apply
# --------------------------------------------------------------------------------------


def test_apply_takes_lanes_jobs_and_where():
    key = ClaimKey("j", at(1))
    ledger, updates = claim_write(Ledger(), 1, [(key, "n1")])
    updates.append(job_of("j", spec("j"), (1, 1), "config"))
    rep, ok, changed = apply(Replica(), 1, wire(updates))
    assert ok
    assert changed == {"j"}
    assert rep.ledger == ledger
    assert rep.epoch == 1
    assert rep.where == {key: "n1"}
    assert rep.jobs == {"j": JobEntry(spec("j"), (1, 1), "config", T0)}
    assert rep.live_jobs() == dict(rep.jobs)


def test_apply_refuses_a_lower_epoch_as_a_whole():
    rep, _ = observe_replica(Replica(), 2)
    key = ClaimKey("j", at(1))
    _, updates = claim_write(Ledger(), 1, [(key, "n1")])
    updates.append(job_of("j", spec("j"), (1, 1)))
    assert apply(rep, 1, updates) == (rep, False, set())
    # Only jobs, or nothing at all: refused just the same.
    assert apply(rep, 1, [job_of("j", spec("j"), (1, 1))]) == (rep, False, set())
    assert apply(rep, 1, []) == (rep, False, set())


def test_apply_of_a_higher_epoch_observes_it():
    rep, ok, changed = apply(Replica(), 4, [job_of("j", spec("j"), (4, 1))])
    assert (ok, changed, rep.epoch) == (True, {"j"}, 4)
    rep, ok, changed = apply(rep, 5, [])
    assert (ok, changed, rep.epoch) == (True, set(), 5)
    assert apply(rep, 4, [])[1] is False


def test_apply_takes_a_lane_only_if_newer():
    key1, key2 = ClaimKey("j", at(1)), ClaimKey("j", at(2))
    l1, w1 = claim_write(Ledger(), 1, [(key1, "n1")])
    l2, w2 = claim_write(l1, 1, [(key2, "n1")])
    rep, ok, _ = apply(Replica(), 1, w2)
    assert ok
    assert rep.ledger.lanes[("j", None)] == l2.lanes[("j", None)]
    late, ok, _ = apply(rep, 1, w1[:1])  # a late copy of the first write's lane
    assert ok  # the write is fine; its stale lane is skipped
    assert late.ledger.lanes[("j", None)] == l2.lanes[("j", None)]
    assert open_claims(late.ledger) == (key1, key2)


def test_apply_keeps_the_newest_job_entry_and_reports_what_changed():
    rep, _, _ = apply(Replica(), 1, [job_of("j", spec("j"), (1, 2))])
    old = job_of("j", spec("j", state="inactive"), (1, 1))
    same, ok, changed = apply(rep, 1, [old])
    assert (ok, changed) == (True, set())
    assert same.jobs["j"].spec == spec("j")
    tie = job_of("j", spec("j", overlap=False), (1, 2))
    same, ok, changed = apply(rep, 1, [tie])
    assert (ok, changed) == (True, set())
    assert same.jobs["j"].spec == spec("j")
    newer = job_of("j", spec("j", overlap=False), (2, 1))
    changed_rep, ok, changed = apply(rep, 2, [newer])
    assert (ok, changed) == (True, {"j"})
    assert changed_rep.jobs["j"] == JobEntry(spec("j", overlap=False), (2, 1), "runtime", T0)


def test_a_tombstone_beats_older_live_entries():
    rep, _, _ = apply(
        Replica(), 1, [job_of("j", spec("j"), (1, 1)), job_of("k", spec("k"), (1, 1))]
    )
    rep, ok, changed = apply(rep, 2, [job_of("j", None, (2, 2))])
    assert (ok, changed) == (True, {"j"})
    assert rep.jobs["j"].deleted
    assert set(rep.live_jobs()) == {"k"}
    # A late copy of an older live entry does not bring the job back.
    rep, ok, changed = apply(rep, 2, [job_of("j", spec("j"), (1, 1))])
    assert (ok, changed) == (True, set())
    assert rep.jobs["j"] == JobEntry(None, (2, 2), "runtime", T0)
    # A newer entry does (the job added again).
    rep, ok, changed = apply(rep, 2, [job_of("j", spec("j"), (2, 3))])
    assert (ok, changed) == (True, {"j"})
    assert set(rep.live_jobs()) == {"j", "k"}


def test_apply_sets_and_drops_where():
    k1, k2 = ClaimKey("j", at(1)), ClaimKey("j", at(2), "n2")
    rep, ok, _ = apply(Replica(), 1, [where_of(k1, "n1"), where_of(k2, "n2")])
    assert ok
    assert rep.where == {k1: "n1", k2: "n2"}
    rep, ok, _ = apply(rep, 1, [where_of(k1, None), where_of(ClaimKey("x", at(9)), None)])
    assert ok
    assert rep.where == {k2: "n2"}
    # A key given with another offset is the same key.
    rep, ok, _ = apply(rep, 1, [["where", ["j", at(2).astimezone(PLUS2), "n2"], None]])
    assert ok
    assert rep.where == {}


def test_apply_leaves_the_replica_it_was_given_unchanged():
    rep, _, _ = apply(
        Replica(), 1, [job_of("j", spec("j"), (1, 1)), where_of(ClaimKey("j", at(1)), "n")]
    )
    jobs, where = dict(rep.jobs), dict(rep.where)
    _, updates = claim_write(rep.ledger, 1, [(ClaimKey("j", at(2)), "n")])
    updates += [job_of("j", None, (1, 2)), where_of(ClaimKey("j", at(1)), None)]
    new, ok, _ = apply(rep, 1, updates)
    assert ok
    assert (dict(rep.jobs), dict(rep.where), rep.ledger.lanes) == (jobs, where, {})
    assert new.jobs["j"].deleted
    assert new.where == {ClaimKey("j", at(2)): "n"}


def _stamped(stamp: tuple[int, int]) -> dict[str, Any]:
    ledger, _ = claim(Ledger(), ClaimKey("j", at(1)), 1)
    update = encode_update(lane_update(ledger, ClaimKey("j", at(1))))
    update["lane"][4], update["lane"][5] = stamp
    return update


@pytest.mark.parametrize(
    ("update", "match"),
    [
        ("lane", "replica update 'lane': expected a tagged list"),
        ([], "replica update \\[\\]: expected a tagged list"),
        (["lane"], "unknown kind or shape"),
        (["lane", {}, 1], "unknown kind or shape"),
        (["lane", {"format": 1}], "encoded lane update: missing lane"),
        (["lane", {"format": 1, "lane": ["j"]}], "lane update: \\['j'\\], expected \\[job"),
        (["lane", _stamped((3, 1))], "lane update stamped \\(3, 1\\) above epoch 2"),
        (["job", 5, {}], "unknown kind or shape"),
        (["job", "j"], "unknown kind or shape"),
        (["job", "j", {"stamp": [1, 1], "origin": "runtime"}], "job entry 'j' since"),
        (["job", "j", {**GOOD_ENTRY, "origin": "x"}], "job entry 'j': origin 'x'"),
        (["where", ["j"], "n1"], "claim key \\['j'\\]"),
        (["where", ["j", "2026-01-01T10:00:00"], "n1"], "claim key .*offset"),
        (["where", ["j", T0.isoformat()]], "unknown kind or shape"),
        (["delete", "j"], "replica update .*unknown kind or shape"),
    ],
)
def test_apply_refuses_malformed_updates_naming_the_part(update: Any, match: str):
    good = job_of("ok", spec("ok"), (2, 1))
    with pytest.raises(LedgerError, match=match):
        apply(Replica(), 2, [good, update])


def test_apply_refuses_a_where_whose_node_is_not_a_string():
    with pytest.raises(LedgerError, match="where"):
        apply(Replica(), 1, [where_of(ClaimKey("j", at(1)), 5)])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# merge
# --------------------------------------------------------------------------------------


def test_merge_of_no_replicas():
    with pytest.raises(ValueError, match="no replicas"):
        merge([])


def test_merge_takes_the_newest_lanes_and_jobs_and_the_where_of_open_claims():
    k1, k2, k3 = ClaimKey("j", at(1)), ClaimKey("j", at(2)), ClaimKey("k", at(1), "n3")
    ledger, w1 = claim_write(Ledger(), 1, [(k1, "n1"), (k2, "n2"), (k3, "n3")])
    ledger, w2 = finish_write(ledger, 1, [k1])
    a, _, _ = apply(
        Replica(), 1, [*w1, job_of("x", spec("x"), (1, 1)), job_of("y", spec("y"), (1, 1))]
    )
    b, _, _ = apply(a, 1, [*w2, job_of("x", None, (1, 2))])
    # a is older: it still has k1 open and its where, and job x live.
    assert a.where[k1] == "n1"
    assert b.where == {k2: "n2", k3: "n3"}
    for copies in ([a, b], [b, a]):
        merged = merge(copies)
        assert merged.ledger == ledger
        assert open_claims(merged.ledger) == (k2, k3)
        assert merged.where == {k2: "n2", k3: "n3"}
        assert merged.jobs["x"] == JobEntry(None, (1, 2), "runtime", T0)  # the tombstone
        assert set(merged.live_jobs()) == {"y"}


def test_merge_of_equal_job_stamps_keeps_the_first_and_the_highest_epoch():
    a = Replica(observe(Ledger(), 1), {"j": JobEntry(spec("j"), (1, 1), "config", T0)})
    b = Replica(
        observe(Ledger(), 3), {"j": JobEntry(spec("j", overlap=False), (1, 1), "runtime", T0)}
    )
    assert merge([a, b]).jobs["j"].origin == "config"
    assert merge([b, a]).jobs["j"].origin == "runtime"
    assert merge([a, b]).epoch == 3


def test_merge_drops_where_of_claims_not_open_and_of_claims_it_does_not_know():
    key = ClaimKey("j", at(1))
    ledger, w = claim_write(Ledger(), 1, [(key, "n1")])
    ledger, f = finish_write(ledger, 1, [key])
    stale, _, _ = apply(Replica(), 1, [w[1]])  # took the where, missed the lane
    done, _, _ = apply(Replica(), 1, f[:1])  # took the finished lane, not the drop
    assert stale.where == {key: "n1"}
    assert merge([stale]).where == {}
    assert merge([stale, done]).where == {}
    assert highest(merge([stale, done]).ledger, "j") == at(1)


def test_merge_keeps_the_where_of_the_claim_that_is_open_not_of_an_old_holders():
    key = ClaimKey("j", at(1))
    m = [Replica(), Replica(), Replica()]
    # Holder 1 claims key on n1; the write reaches only m2 (no majority: never started).
    _, w1 = claim_write(Ledger(), 1, [(key, "n1")])
    m[2], ok, _ = apply(m[2], 1, w1)
    assert ok
    # Holder 2 reads m0 and m1, does not see it, claims key on n2: a majority, started.
    for i in (0, 1):
        m[i], ok = observe_replica(m[i], 2)
        assert ok
    base = observe(merge([m[0], m[1]]).ledger, 2)
    _, w2 = claim_write(base, 2, [(key, "n2")])
    for i in (0, 1):
        m[i], ok, _ = apply(m[i], 2, w2)
        assert ok
    # Holder 3 (on m2's node: its own copy first) reads m2 and m0.
    for i in (2, 0):
        m[i], ok = observe_replica(m[i], 3)
    merged = merge([m[2], m[0]])
    assert merged.ledger.lanes[("j", None)].open == ((at(1), 2),)  # holder 2's claim
    assert merged.where == {key: "n2"}  # where it runs; got "n1"


# --------------------------------------------------------------------------------------
# the safety argument at the replica level: three replicas, two holders
# --------------------------------------------------------------------------------------

MAJORITIES = list(itertools.combinations(range(3), 2))


@pytest.mark.parametrize("readers", MAJORITIES)
@pytest.mark.parametrize("writers", MAJORITIES)
def test_a_new_holder_keeps_every_majority_write_and_fences_the_old_holder(
    writers: tuple[int, int], readers: tuple[int, int]
):
    members = [Replica(), Replica(), Replica()]
    (outside,) = set(range(3)) - set(writers)

    def send(epoch: int, updates: list[Any], to: Any) -> set[int]:
        took = set()
        for m in to:
            members[m], ok, _ = apply(members[m], epoch, wire(updates))
            if ok:
                took.add(m)
        return took

    # Holder 1: jobs everywhere, then claims and finishes that reach the majority only.
    k1, k2, k3 = ClaimKey("j", at(1)), ClaimKey("j", at(2)), ClaimKey("k", at(1), "n3")
    jobs = [job_of(n, spec(n), (1, 1), "config") for n in ("j", "k", "gone")]
    assert send(1, jobs, range(3)) == {0, 1, 2}
    old = Ledger()
    old, w = claim_write(old, 1, [(k1, "n1"), (k2, "n2")])
    assert send(1, w, writers) == set(writers)
    old, w = finish_write(old, 1, [k1])
    assert send(1, w, writers) == set(writers)
    old, w = claim_write(old, 1, [(k3, "n3")])
    assert send(1, [*w, job_of("gone", None, (1, 2))], writers) == set(writers)
    # ... and one claim that reaches the member outside the majority only.
    k4 = ClaimKey("m", at(1))
    old, w = claim_write(old, 1, [(k4, "n4")])
    assert send(1, w, [outside]) == {outside}

    # Holder 2: each reader observes epoch 2, then the readers' copies are merged.
    copies = []
    for m in readers:
        members[m], ok = observe_replica(members[m], 2)
        assert ok
        copies.append(decode_replica(wire(encode_replica(members[m]))))  # the observe answer
    merged = merge(copies)
    assert merged.epoch == 2
    assert highest(merged.ledger, "j") == at(2)
    assert highest(merged.ledger, "k", "n3") == at(1)
    survived = outside in readers  # the minority claim: in the merge iff its copy was read
    assert highest(merged.ledger, "m") == (at(1) if survived else None)
    expected_open = (k2, k3, k4) if survived else (k2, k3)
    assert open_claims(merged.ledger) == expected_open
    expected_where = {k2: "n2", k3: "n3"} | ({k4: "n4"} if survived else {})
    assert merged.where == expected_where
    assert merged.jobs["gone"] == JobEntry(None, (1, 2), "runtime", T0)
    assert set(merged.live_jobs()) == {"j", "k"}
    # The new holder never claims an accepted tick again.
    new = observe(merged.ledger, 2)
    for key in (k1, k2, k3):
        assert claim(new, key, 2) == (new, False)

    # The old holder's next writes: refused by each reader, so by every majority.
    k5 = ClaimKey("j", at(3))
    old, w = claim_write(old, 1, [(k5, "n5")])
    took = send(1, [*w, job_of("j", None, (1, 2))], range(3))
    assert took == set(range(3)) - set(readers)
    assert len(took) < majority(["a", "b", "c"])

    # The new holder writes under epoch 2 to every member; then all refuse epoch 1.
    new, w = claim_write(new, 2, [(ClaimKey("j", at(4)), "n1")])
    assert send(2, w, range(3)) == {0, 1, 2}
    _, w = claim_write(old, 1, [(ClaimKey("j", at(5)), "n1")])
    assert send(1, w, range(3)) == set()
    final = merge(members)
    assert highest(final.ledger, "j") == at(4)
    assert ClaimKey("j", at(5)) not in open_claims(final.ledger)
    # The old holder's deletion of "j" reached one member only (no majority): a write
    # like that may survive, and it does here, where every copy is read.
    assert final.jobs["j"] == JobEntry(None, (1, 2), "runtime", T0)
    assert set(final.live_jobs()) == {"k"}
    assert set(merge(members[m] for m in readers).live_jobs()) == {"j", "k"}


class Cluster:
    """Replicas, holders by epoch, and writes in flight (lost, late, any order), through
    ``apply`` / ``observe_replica`` / ``merge``. Any holder may still send writes."""

    def __init__(self, rnd: random.Random, size: int) -> None:
        self.rnd = rnd
        self.size = size
        self.need = majority([f"m{i}" for i in range(size)])
        self.members = [Replica() for _ in range(size)]
        self.holders: list[list[Any]] = []  # [epoch, replica]
        self.inflight: list[tuple[int, int]] = []  # (member, write)
        self.writes: list[dict[str, Any]] = []
        self.finishes_sent: set[ClaimKey] = set()
        self.claims_sent: set[ClaimKey] = set()

    def majority_writes(self) -> list[dict[str, Any]]:
        return [w for w in self.writes if len(w["acks"]) >= self.need]

    def check(self, merged: Replica) -> None:
        opened = set(open_claims(merged.ledger))
        for w in self.majority_writes():
            for key in w["claims"]:
                high = highest(merged.ledger, key.job, key.node)
                assert high is not None and high >= key.at, key
                if key not in self.finishes_sent:
                    assert key in opened, key
            for key in w["finishes"]:
                assert key not in opened, key
            for name, stamp in w["jobs"]:
                assert merged.jobs[name].stamp >= stamp, (name, stamp)
        assert opened <= self.claims_sent
        assert set(merged.where) <= opened

    def send(self, holder: int, updates: list[Any], **facts: Any) -> None:
        epoch, rep = self.holders[holder]
        rep, ok, _ = apply(rep, epoch, updates)
        assert ok
        self.holders[holder][1] = rep
        self.writes.append({"epoch": epoch, "updates": wire(updates), "acks": set(), **facts})
        for member in range(self.size):
            if self.rnd.random() < 0.8:
                self.inflight.append((member, len(self.writes) - 1))

    def takeover(self) -> None:
        epoch = len(self.holders) + 1
        readers = self.rnd.sample(range(self.size), self.rnd.randint(self.need, self.size))
        for m in readers:
            self.members[m], ok = observe_replica(self.members[m], epoch)
            assert ok
        merged = merge(self.members[m] for m in readers)
        self.check(merged)
        self.holders.append([epoch, observe_replica(merged, epoch)[0]])

    def claim(self) -> None:
        index = self.pick_holder()
        epoch, rep = self.holders[index]
        job, node = self.rnd.choice(JOBS), self.rnd.choice(NODES)
        tick = (highest(rep.ledger, job, node) or T0) + timedelta(seconds=self.rnd.randint(-1, 2))
        key = ClaimKey(job, tick, node)
        ledger, done = claim_all(rep.ledger, [key], epoch)
        if done:
            updates = [lane_of(ledger, key), where_of(key, f"w{epoch}")]
            self.claims_sent.add(key)
            self.send(index, updates, claims=done, finishes=[], jobs=[])

    def finish(self) -> None:
        index = self.pick_holder()
        epoch, rep = self.holders[index]
        mine = list(open_claims(rep.ledger))
        if mine:
            key = self.rnd.choice(mine)
            ledger, done = finish_all(rep.ledger, [(key, self.rnd.choice(OUTCOMES))], epoch)
            assert done == [key]
            self.finishes_sent.add(key)
            updates = [lane_of(ledger, key), where_of(key, None)]
            self.send(index, updates, claims=[], finishes=done, jobs=[])

    def job(self) -> None:
        index = self.pick_holder()
        epoch, rep = self.holders[index]
        name = self.rnd.choice(["x", "y"])
        current = rep.jobs.get(name)
        stamp = (epoch, (current.stamp[1] if current else 0) + 1)
        body = None if self.rnd.random() < 0.4 else spec(name, overlap=self.rnd.random() < 0.5)
        self.send(index, [job_of(name, body, stamp)], claims=[], finishes=[], jobs=[(name, stamp)])

    def deliver(self) -> None:
        member, write = self.inflight.pop(self.rnd.randrange(len(self.inflight)))
        w = self.writes[write]
        self.members[member], ok, _ = apply(self.members[member], w["epoch"], w["updates"])
        if ok:
            w["acks"].add(member)

    def pick_holder(self) -> int:
        newest = len(self.holders) - 1
        return newest if self.rnd.random() < 0.7 else self.rnd.randrange(newest + 1)

    def step(self) -> None:
        roll = self.rnd.random()
        if not self.holders or roll < 0.05:
            self.takeover()
        elif roll < 0.3:
            self.claim()
        elif roll < 0.4:
            self.finish()
        elif roll < 0.5:
            self.job()
        elif roll < 0.55 and self.inflight:
            self.inflight.pop(self.rnd.randrange(len(self.inflight)))  # lost
        elif self.inflight:
            self.deliver()


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.sampled_from([3, 5]))
def test_every_majority_write_survives_in_any_majority_merge(seed: int, size: int):
    cluster = Cluster(random.Random(seed), size)
    for _ in range(250):
        cluster.step()
    while cluster.inflight:
        cluster.deliver()
    for count in range(cluster.need, size + 1):
        for readers in itertools.combinations(range(size), count):
            cluster.check(merge(cluster.members[m] for m in readers))


# --------------------------------------------------------------------------------------
# pick_nodes and majority
# --------------------------------------------------------------------------------------


def test_pick_nodes_local_is_this_node_only():
    assert pick_nodes("local", "me", ["b", "a"], random.Random(1)) == ["me"]
    assert pick_nodes("local", "me", [], random.Random(1)) == ["me"]


def test_pick_nodes_all_is_every_node_sorted_once():
    assert pick_nodes("all", "m", ["c", "a", "m", "a"], random.Random(1)) == ["a", "c", "m"]
    assert pick_nodes("all", "m", [], random.Random(1)) == ["m"]


def test_pick_nodes_random_is_one_node_of_the_cluster():
    seen = set()
    for seed in range(200):
        picked = pick_nodes("random", "m", {"a", "b"}, random.Random(seed))
        assert len(picked) == 1
        seen.update(picked)
    assert seen == {"a", "b", "m"}
    assert pick_nodes("random", "m", [], random.Random(3)) == ["m"]
    # The same rng state, the same pick.
    assert pick_nodes("random", "m", ["a", "b"], random.Random(7)) == pick_nodes(
        "random", "m", ["b", "a"], random.Random(7)
    )


@pytest.mark.parametrize("listed", [["x", "a", "m"], ("x", "a", "m")])
def test_pick_nodes_of_a_list_is_one_of_its_nodes_that_is_up(listed: Any):
    seen = set()
    for seed in range(200):
        picked = pick_nodes(listed, "m", ["a", "b"], random.Random(seed))
        assert len(picked) == 1
        seen.update(picked)
    assert seen == {"a", "m"}  # "x" is down, "b" is not listed
    assert pick_nodes(["x"], "m", ["a"], random.Random(1)) == []
    assert pick_nodes(["b"], "m", ["a", "b"], random.Random(1)) == ["b"]
    assert pick_nodes(["m"], "m", [], random.Random(1)) == ["m"]


@pytest.mark.parametrize(("size", "need"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4)])
def test_majority(size: int, need: int):
    assert majority([f"n{i}" for i in range(size)]) == need


# --------------------------------------------------------------------------------------
# Job specs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "job",
    [
        Job("plain", "* * * * *", "json:dumps"),
        Job(
            "every",
            "15 30 2 * * *",
            "json:dumps",
            args=[1, "two", [3]],
            kwargs={"indent": 2},
            state="inactive",
            overlap=False,
            run_strategy=["a@10.0.0.1", "b@10.0.0.2"],
            timezone="Europe/Berlin",
            misfire="skip",
            misfire_grace=0,
            timeout=2.5,
        ),
        Job("random", "@hourly", "json:loads", run_strategy="random", timeout=None),
        Job("all", "*/5 * * * * *", "json:dumps", run_strategy="all", misfire="run_all"),
        Job("int_timeout", "0 3 * * *", "json:dumps", timeout=30, timezone="America/New_York"),
        Job("retried", "* * * * *", "json:dumps", max_attempts=3, backoff=(0.5, 10)),
    ],
    ids=lambda job: job.name,
)
def test_job_spec_round_trip(job: Job):
    spec_ = job.to_spec()
    # the retry fields only when set: the previous release reads such a spec back
    defaults = {"max_attempts", "backoff"} if job.max_attempts == 1 else set()
    assert set(spec_) == set(Job.__dataclass_fields__) - defaults
    assert Job.from_spec(spec_) == job
    assert Job.from_spec(wire(spec_)) == job
    assert Job.from_spec(json.loads(json.dumps(spec_))) == job
    assert wire(spec_) == json.loads(json.dumps(spec_))  # plain values only


def test_job_spec_field_forms():
    job = Job(
        "every",
        "15 30 2 * * *",
        "json:dumps",
        args=(1, 2),
        run_strategy=("a", "b"),
        timezone="Europe/Berlin",
        timeout=30,
    )
    spec_ = job.to_spec()
    assert spec_["schedule"] == "15 30 2 * * *"
    assert spec_["timezone"] == "Europe/Berlin"
    assert spec_["run_strategy"] == ["a", "b"]
    assert spec_["args"] == [1, 2]
    assert spec_["timeout"] == 30.0
    assert Job.from_spec(spec_).run_strategy == ("a", "b")
    assert Job("n", "@daily", "json:dumps").to_spec()["timeout"] is None
    assert Job("n", "@daily", "json:dumps", run_strategy="all").to_spec()["run_strategy"] == "all"


def test_from_spec_names_an_unknown_field():
    spec_ = {**Job("n", "@daily", "json:dumps").to_spec(), "retries": 3, "zz": 1}
    with pytest.raises(InvalidJob) as info:
        Job.from_spec(spec_)
    assert info.value.field == "retries"
    assert info.value.job == "n"
    assert info.value.value == 3


def test_from_spec_of_no_name_or_no_mapping():
    spec_ = Job("n", "@daily", "json:dumps").to_spec()
    del spec_["name"]
    with pytest.raises(InvalidJob) as info:
        Job.from_spec(spec_)
    assert info.value.field == "name"
    with pytest.raises(InvalidJob) as info:
        Job.from_spec(["n"])  # type: ignore[arg-type]
    assert info.value.field == "spec"
    with pytest.raises(InvalidJob) as info:
        Job.from_spec({**Job("n", "@daily", "json:dumps").to_spec(), "timeout": -1})
    assert info.value.field == "timeout"


def test_job_replace():
    job = Job("n", "15 30 2 * * *", "json:dumps", run_strategy=["a"], timezone="Europe/Berlin")
    off = job.replace(state="inactive")
    assert off.state == "inactive"
    assert job.state == "active"
    assert off.to_spec() == {**job.to_spec(), "state": "inactive"}
    assert off.replace(state="active") == job
    with pytest.raises(InvalidJob) as info:
        job.replace(state="paused")
    assert info.value.field == "state"
    with pytest.raises(InvalidJob) as info:
        job.replace(colour="red")
    assert info.value.field == "colour"


# --------------------------------------------------------------------- read_quorum

S, U = (True, False), (False, False)  # a synced copy, an unsynced one (both not empty)


def test_read_quorum_a_majority_of_synced_copies_is_enough() -> None:
    assert read_quorum(2, [S, S], all_answered=False, members=3) == "ok"
    assert read_quorum(3, [S, S, U], all_answered=False) == "wait"  # 2 of 3 needed synced


def test_read_quorum_one_synced_copy_when_fewer_than_a_majority_are_silent() -> None:
    # the holder synced only one other copy and died: every counted write is on it
    assert read_quorum(2, [S, U], all_answered=False, members=3) == "ok"
    # 5 members, 2 silent: any write's 3 synced takers include an answering one
    assert read_quorum(3, [S, U, U], all_answered=False, members=5) == "ok"
    # 3 silent could hold a whole write majority: wait
    assert read_quorum(3, [S, U], all_answered=False, members=5) == "wait"
    # no synced copy answered: nothing says the writes are here
    assert read_quorum(2, [U, U], all_answered=False, members=3) == "wait"
    # without the member count the rule is not used
    assert read_quorum(2, [S, U], all_answered=False) == "wait"


def test_read_quorum_a_new_cluster_and_a_minority() -> None:
    empty = (False, True)
    assert read_quorum(2, [empty, empty], all_answered=False, members=3) == "ok"
    assert read_quorum(2, [U, U, U], all_answered=True, members=3) == "minority"
