"""The quorum's promises on disk: what a core stores, what a restart with and without
its store makes of a member, and the file the actor keeps (``quorum._actor.QuorumStore``)."""

from __future__ import annotations

import json
import os
import random
import stat
from pathlib import Path
from typing import Any

import pytest

from otpkit.quorum._actor import QuorumStore, StoreError
from otpkit.quorum._core import (
    STATE_FORMAT,
    Lease,
    LeaseLost,
    Persist,
    QuorumConfig,
    QuorumCore,
    Send,
    StateError,
    decode_state,
    encode_state,
)
from tests.unit.test_quorum import FAST, NAMES, Sim


def stored(core: QuorumCore) -> dict[str, Any]:
    """What the actor would read back from the file the core's state was written to."""
    return decode_state(json.loads(json.dumps(encode_state(core))))


def restart(sim: Sim, name: str, keep_store: bool) -> None:
    """``name``'s process ends (its peers see its sockets close) and starts again, with
    its store or as a new member."""
    old = sim.cores[name]
    sim.kill(name)
    state = stored(old) if keep_store else None
    sid = old.me[1] if keep_store else old.me[1] + 1000
    sim.cores[name] = QuorumCore((name, sid), FAST, sim.now, random.Random(9), state)
    sim.dead.discard(name)
    for other in sim.cores:
        if other != name and other not in sim.dead:
            sim.perform(other, sim.cores[other].node_up(name, sim.now))
            sim.perform(name, sim.cores[name].node_up(other, sim.now))


def ask(sim: Sim, name: str) -> Any:
    """``name`` asks for the lease, as a standby does, until answered (bounded)."""
    tok = sim.acquire(name, timeout=0.5)
    end = sim.now + 5.0
    while tok not in sim.replies:
        assert sim.now < end, f"{name}'s acquire was never answered"
        while sim.net:
            sim.deliver(0)
        sim.tick(0.05)
    sim.tick(0.05)  # time goes on also when the answer was at once
    return sim.replies[tok]


def holder_within(sim: Sim, seconds: float, candidates: list[str]) -> tuple[str, Lease] | None:
    """Candidates ask as a Singleton's standbys do, until one holds or ``seconds`` pass."""
    end = sim.now + seconds
    while sim.now < end:
        tokens = {n: sim.acquire(n, timeout=0.5) for n in candidates if n not in sim.dead}
        while not all(t in sim.replies for t in tokens.values()) and sim.now < end:
            while sim.net:
                sim.deliver(0)
            sim.tick(0.05)
            assert len(sim.holders()) <= 1
        for n, t in tokens.items():
            if isinstance(sim.replies.get(t), Lease):
                return n, sim.replies[t]
    return None


def test_a_change_of_promises_is_persisted_before_anything_is_sent():
    sim = Sim(NAMES, FAST)
    outs = sim.cores["a@h"].tick(sim.now + FAST.settle + 0.1)  # founds: prepare
    assert isinstance(outs[0], Persist) and any(isinstance(o, Send) for o in outs)
    assert outs[0].state["max_round"] == 1
    assert not any(isinstance(o, Persist) for o in sim.cores["a@h"].tick(sim.now + 2.4))


def test_every_node_restarted_at_once_with_its_store_gets_the_lease_back():
    """Overlapping restarts (finding 1): with their stores the nodes are the same
    members, so the quorum resumes by itself."""
    sim = Sim(NAMES, FAST)
    sim.settle(1.0)
    version = sim.cores["a@h"].version
    got = holder_within(sim, 2.0, NAMES)
    assert got is not None
    for name in NAMES:  # each process ends and a new one starts before the others return
        restart(sim, name, keep_store=True)
    assert all(c.version == version and c.restored for c in sim.cores.values())
    # the old holder's grant is not known to have ended (it did not release): its term
    # runs from the restart; then one holder, with a higher epoch
    got2 = holder_within(sim, 2 * (FAST.term + FAST.margin) + FAST.settle, NAMES)
    assert got2 is not None and got2[1].epoch > got[1].epoch
    assert {c.version for c in sim.cores.values()} == {version}


def test_every_node_restarted_at_once_without_its_store_is_no_majority():
    """The same without stores: the new members are not the configuration's members, so
    no lease is granted - the operator's case (a majority of lost stores)."""
    sim = Sim(NAMES, FAST)
    sim.settle(1.0)
    for name in NAMES:
        restart(sim, name, keep_store=False)
    assert holder_within(sim, 2 * (FAST.term + FAST.margin) + FAST.settle, NAMES) is None
    assert all(c.rejoin_problem() for c in sim.cores.values())


def test_a_node_restarted_without_its_store_is_replaced_through_the_quorum():
    sim = Sim(NAMES, FAST)
    sim.settle(1.0)
    old_sid = sim.cores["c@h"].me[1]
    restart(sim, "c@h", keep_store=False)
    assert sim.cores["c@h"].rejoin_problem() is not None
    sim.settle(3.0)
    members = sim.cores["a@h"].members
    assert ("c@h", old_sid) not in members and sim.cores["c@h"].me in members
    assert sim.cores["c@h"].rejoin_problem() is None
    assert sim.cores["c@h"].quiet_until > sim.now - 1.0  # grants nothing new for a term


def test_a_restarted_member_is_back_once_its_peers_say_hello_at_its_version():
    sim = Sim(NAMES, FAST)
    sim.settle(1.0)
    restart(sim, "b@h", keep_store=True)
    assert sim.cores["b@h"].rejoin_problem() is not None  # no hello yet
    sim.settle(0.2)
    assert sim.cores["b@h"].rejoin_problem() is None
    assert sim.cores["b@h"].members == sim.cores["a@h"].members  # still a member


def test_a_standby_cut_off_does_not_cost_the_holder_its_lease():
    """Finding 3: a cut-off standby asks with rising epochs and grants itself; after the
    heal it must grant the holder's renewals again, and the holder never loses."""
    sim = Sim(NAMES, QuorumConfig(settle=0.2, remove_after=30.0, expected_size=3))
    sim.settle(1.0)
    got = holder_within(sim, 2.0, ["a@h"])
    assert got is not None
    for other in ("a@h", "c@h"):
        sim.set_link("b@h", other, False)
    t_end = sim.now + 2 * FAST.term
    while sim.now < t_end:  # b asks for the lease all along, as a standby does
        ask(sim, "b@h")
    assert sim.cores["b@h"].tops["k"] > got[1].epoch  # it did ask with higher epochs
    for other in ("a@h", "c@h"):
        sim.set_link("b@h", other, True)
    sim.settle(0.5)
    sim.cut.add(frozenset(("a@h", "c@h")))  # now the holder needs b's renewals
    t_end = sim.now + 2 * FAST.term
    while sim.now < t_end:
        ask(sim, "b@h")
    assert sim.holders() == ["a@h"]
    assert ("a@h", LeaseLost("k", got[1].epoch)) not in sim.events


def test_a_stored_state_round_trips_and_a_newer_format_is_refused():
    core = QuorumCore(("a@h", 7), QuorumConfig(expected_size=3), 0.0)
    state = stored(core)
    assert state["sid"] == 7 and state["expected"] == 3
    raw = encode_state(core)
    raw["format"] = STATE_FORMAT + 1
    with pytest.raises(StateError, match="newer"):
        decode_state(raw)
    with pytest.raises(StateError, match="malformed"):
        decode_state({"format": 1, "sid": "x"})
    with pytest.raises(StateError):
        decode_state([1, 2])


def test_a_held_epoch_is_stored_before_the_lease_is_reported_and_comes_back():
    """The epoch a node last held is stored (the Persist comes before the Reply and the
    LeaseGranted of its batch); a restarted node keeps it, so it never says that a
    grant of that epoch made no lease; a state stored without it reads as none held."""
    sim = Sim(NAMES, FAST)
    sim.settle(1.0)
    got = holder_within(sim, 2.0, ["a@h"])
    assert got is not None
    a = sim.cores["a@h"]
    assert a.holds == {"k": got[1].epoch}
    state = stored(a)
    assert state["holds"] == {"k": got[1].epoch}
    again = QuorumCore(a.me, FAST, sim.now, random.Random(1), state)
    assert again.holds == {"k": got[1].epoch}
    outs = again.receive(("check?", ("b@h", 2), "k", got[1].epoch), sim.now)
    assert outs == []  # held last: the grant runs out, never released on a question
    outs = again.receive(("check?", ("b@h", 2), "k", got[1].epoch - 1), sim.now)
    assert [o.msg[0] for o in outs if isinstance(o, Send)] == ["release"]
    raw = encode_state(a)
    del raw["holds"]
    assert decode_state(raw)["holds"] == {}


def test_the_store_file_is_private_and_a_bad_one_names_itself(tmp_path: Path):
    store = QuorumStore(str(tmp_path), "a@h")
    assert store.load() is None
    core = QuorumCore(("a@h", 7), QuorumConfig(), 0.0)
    store.save(encode_state(core))
    assert stat.S_IMODE(os.stat(tmp_path / "otpkit").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    loaded = store.load()
    assert loaded is not None and loaded["sid"] == 7
    Path(store.path).write_text("{not json")
    with pytest.raises(StoreError, match=r"quorum store .*quorum@a@h\.json: cannot read"):
        store.load()
    Path(store.path).write_text(json.dumps({"format": 99}))
    with pytest.raises(StoreError, match="newer than this otpkit reads"):
        store.load()


def test_lease_options_given_to_a_singleton_or_a_scheduler_are_refused():
    """The majority lease is the node's quorum's: options given to one Singleton or
    Scheduler were never read; now they are refused, naming where they belong."""
    from otpkit.registry import Singleton  # noqa: PLC0415
    from otpkit.scheduler import Scheduler  # noqa: PLC0415
    from otpkit.supervision import ChildSpec  # noqa: PLC0415

    with pytest.raises(ValueError, match=r"expected_size.*QuorumConfig"):
        Singleton(ChildSpec("w", "tests.harness.registry_ops:Holder"), "s", expected_size=3)
    with pytest.raises(ValueError, match=r"term.*QuorumConfig"):
        Scheduler([], term=5.0)


def test_a_request_refused_for_a_holder_is_granted_when_that_holder_dies():
    """The survivors see the holder's sockets close a few ms apart: the first asks, the
    other refuses (its grant to the dead holder still runs) and grants as soon as it
    sees the close, instead of waiting for the candidate's round to time out."""
    sim = Sim(NAMES, QuorumConfig(settle=0.2, remove_after=30.0, expected_size=3))
    sim.settle(1.0)
    got = holder_within(sim, 2.0, ["a@h"])
    assert got is not None
    sim.dead.add("a@h")
    sim.close("c@h", "a@h")
    tok = sim.acquire("c@h", timeout=2.0)
    while sim.net:
        sim.deliver(0)
    assert tok not in sim.replies  # b refused: a's grant still runs at b
    sim.now += 0.02
    sim.close("b@h", "a@h")
    while sim.net:
        sim.deliver(0)
    lease = sim.replies.get(tok)
    assert isinstance(lease, Lease) and lease.epoch > got[1].epoch


def test_an_operator_recovers_a_configuration_whose_majority_lost_its_stores():
    sim = Sim(NAMES, FAST)
    sim.settle(1.0)
    for name in NAMES:
        restart(sim, name, keep_store=False)
    sim.settle(1.0)
    assert all(c.quorum_problem(sim.now) for c in sim.cores.values())
    assert "quorum_recover" in sim.cores["a@h"].quorum_problem(sim.now)
    sim.perform("a@h", sim.cores["a@h"].recover(sim.now))
    sim.settle(0.5)
    new = tuple(sorted(c.me for c in sim.cores.values()))
    assert all(c.members == new and c.quorum_problem(sim.now) is None for c in sim.cores.values())
    got = holder_within(sim, 2 * (FAST.term + FAST.margin) + FAST.settle, NAMES)
    assert got is not None


def test_the_expected_size_follows_a_majority_of_settings_or_an_operator():
    sim = Sim(NAMES, FAST)
    sim.settle(1.0)
    assert {c.expected for c in sim.cores.values()} == {3}
    token = ("set", 1)
    sim.perform("b@h", sim.cores["b@h"].set_expected(5, token, 2.0, sim.now))
    sim.settle(1.0)
    assert sim.replies[token] is True
    assert {(c.expected, c.basis) for c in sim.cores.values()} == {(5, 3)}
    sim.settle(2.0)  # the settings (3) agree on the basis: they do not undo it
    assert {c.expected for c in sim.cores.values()} == {5}
    for name in ("a@h", "b@h"):  # a rolling update sets 4 on a majority
        sim.cores[name].config = QuorumConfig(settle=0.2, remove_after=2.0, expected_size=4)
    sim.settle(2.0)
    assert {(c.expected, c.basis) for c in sim.cores.values()} == {(4, 4)}


def test_a_full_disk_never_replaces_the_stored_promises_with_a_truncated_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A nearly full disk takes part of a write (a short count, no error; tmpfs and ext4
    do) and then refuses the rest (ENOSPC): the save raises, the stored file is the
    last good one and the temporary file is gone. Short writes that all go through
    store the whole state."""
    store = QuorumStore(str(tmp_path), "a@h")
    core = QuorumCore(("a@h", 7), QuorumConfig(), 0.0)
    store.save(encode_state(core))
    good = Path(store.path).read_bytes()
    real_write = os.write
    room = [40]  # bytes the disk still takes

    def full_write(fd: int, data: Any) -> int:
        if room[0] <= 0:
            raise OSError(28, "No space left on device")
        n = real_write(fd, bytes(data[: min(7, room[0])]))
        room[0] -= n
        return n

    monkeypatch.setattr(os, "write", full_write)
    bigger = QuorumCore(("a@h", 7), QuorumConfig(expected_size=5), 0.0)
    with pytest.raises(OSError, match="No space left"):
        store.save(encode_state(bigger))
    assert Path(store.path).read_bytes() == good
    assert not Path(store.path + ".tmp").exists()
    loaded = store.load()
    assert loaded is not None and loaded["sid"] == 7
    room[0] = 10**9  # short writes only: all of it is written
    store.save(encode_state(bigger))
    monkeypatch.undo()
    assert json.loads(Path(store.path).read_text()) == json.loads(json.dumps(encode_state(bigger)))
