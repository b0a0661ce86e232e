"""The protocols of the scheduler's processes (worker and replica, task pool and its
workers) and of the admin service: every message the code itself sends fits them, a
malformed one is refused with a clear problem (never a crash), and the pure parts a
message reaches (``_ledger``, ``_replica``, ``_pool``'s parsers, ``JobEvent.from_wire``,
``manual_tick``) raise only the errors their callers catch, whatever value they get.

The senders are the real code: the holder's and the pool's methods run in this process
on objects made without a runtime, with ``actors.send``, ``multi_call`` and the timers
replaced by a recorder (what they were asked to send is what is checked); the runtime
API and the shell's commands run with their transport replaced the same way.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otpkit import actors
from otpkit.actors import Pid, Ref, shapes
from otpkit.admin import _service as admin
from otpkit.scheduler import Job, JobEvent
from otpkit.scheduler import _api as api
from otpkit.scheduler import _client as client
from otpkit.scheduler import _events as events
from otpkit.scheduler import _messages as smsg
from otpkit.scheduler import _pool as pool
from otpkit.scheduler import _pool_outbox as pool_outbox
from otpkit.scheduler import _replication as replication
from otpkit.scheduler import _scheduler as sched
from otpkit.scheduler._ledger import (
    MAX_STAMP,
    ClaimKey,
    Ledger,
    LedgerError,
    claim_all,
    lane_update,
)
from otpkit.scheduler._ledger_codec import (
    decode_ledger,
    decode_update,
    encode_ledger,
    encode_update,
)
from otpkit.scheduler._member import Member
from otpkit.scheduler._peers import Peers
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
)
from otpkit.shell import _client as shell_client
from otpkit.shell import _commands as commands

ME = "a@127.0.0.1"
PEER = "b@127.0.0.1"
HOLDER = Pid(ME, 7, 4100, 12)
POOL = Pid(ME, 7, 4200, 13)
WORKER = Pid(ME, 7, 4300, 14)
REMOTE = Pid(PEER, 3, 5100, 15)
NOW = datetime.now(UTC).replace(microsecond=0)
KEY = ("job", NOW, None)
#: a job whose task imports everywhere (json is in the standard library)
JOB = Job("job", "* * * * *", "json:dumps", args=[[1, 2]], kwargs={"indent": 2}, timeout=30)
EAST = timezone(timedelta(hours=23, minutes=59))
WEST = timezone(-timedelta(hours=23, minutes=59))
#: aware times that exist but are outside the years 1-9999 once in UTC
OUT_OF_RANGE = [datetime(1, 1, 1, tzinfo=EAST), datetime(9999, 12, 31, 23, tzinfo=WEST)]


# --------------------------------------------------------------------------------------
# a recorder in place of the runtime: what the code sends, and to whom
# --------------------------------------------------------------------------------------


@dataclass
class Wire:
    """What was sent: ``(dest, msg)`` plain messages, ``(dests, request)`` calls, timers."""

    sent: list[tuple[Any, Any]] = field(default_factory=list)
    calls: list[tuple[Any, Any]] = field(default_factory=list)
    timers: list[Any] = field(default_factory=list)
    #: the answer each call gets, by the request's tag (multi_call: one per dest)
    answers: dict[str, Any] = field(default_factory=dict)

    def to(self, dest: Any) -> list[Any]:
        return [msg for d, msg in self.sent if d == dest]


class _Runtime:
    node = type("NodeIdentity", (), {"name": ME, "creation": 7})()

    def is_local(self, pid: Pid) -> bool:
        return pid.node == ME and pid.creation == 7


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Iterator[Wire]:
    w = Wire()
    timer = iter(range(1, 1 << 30))

    def send(dest: Any, msg: Any) -> None:
        w.sent.append((dest, msg))

    def multi_call(dests: list[Any], request: Any, timeout: float = 5.0, **_: Any) -> list[Any]:
        w.calls.append((list(dests), request))
        answer = w.answers.get(request[0] if request[0] != "$sr" else request[1])
        return [("ok", answer) if answer is not None else ("timeout", None) for _ in dests]

    def call(dest: Any, request: Any, timeout: float = 5.0) -> Any:
        w.calls.append(([dest], request))
        return w.answers.get("call")

    def send_after(delay: float, msg: Any) -> int:
        w.timers.append(msg)
        return next(timer)

    monkeypatch.setattr(actors, "send", send)
    monkeypatch.setattr(actors, "multi_call", multi_call)
    monkeypatch.setattr(actors, "call", call)
    monkeypatch.setattr(actors, "send_after", send_after)
    monkeypatch.setattr(actors, "cancel_timer", lambda timer: True)
    monkeypatch.setattr(actors, "monitor", lambda pid: Ref(ME, 7, 1))
    monkeypatch.setattr(actors, "demonitor", lambda ref, flush=False: True)
    monkeypatch.setattr(actors, "runtime", _Runtime)
    monkeypatch.setattr(pool_outbox, "whereis_name", lambda name: HOLDER)
    monkeypatch.setattr(client, "whereis_name", lambda name: HOLDER)
    yield w


def holder(policy: str = "availability") -> sched.SchedulerWorker:
    """A scheduler worker of node ``ME`` acting as the holder (no runtime: its sends go
    to the recorder)."""
    w = sched.SchedulerWorker.__new__(sched.SchedulerWorker)
    w.me, w.node = HOLDER, ME
    w.cfg = sched.SchedulerConfig("sched", (JOB,), policy, None)
    w.svc, w.pool_svc = smsg.replica_name("sched"), pool.pool_name("sched")
    w.member = Member("sched", ME, None, lambda problem: True)
    w.member.synced = True
    w.bus = events.EventBus("sched", ME, w._broadcast)
    w.peers = Peers(up={PEER}, with_replica={PEER})
    w.rng, w.has_dist = random.Random(1), True
    w.drops = shapes.DropLog(logging.getLogger("test"))
    w.active, w.epoch, w.fenced = True, 3, False
    w._reset_holder()
    return w


def task_pool() -> pool.TaskPool:
    """A task pool of node ``ME`` with one idle worker (no runtime: see :func:`holder`)."""
    p = pool.TaskPool.__new__(pool.TaskPool)
    p.pid = POOL
    p.scheduler, p.max_concurrency, p.queue_limit, p.node = "sched", 1, 10, ME
    p.incarnation, p.max_epoch = "i", 0
    p.idle, p.busy, p.running, p.queue, p.queued = pool.deque([WORKER]), {}, {}, pool.deque(), set()
    p.outbox, p.respawn_armed = pool_outbox.Outbox("sched", ME), False
    p.active, p.dying, p.strays = {}, {}, set()
    p.drops = shapes.DropLog(logging.getLogger("test"))
    p.load = pool.PoolLoad("sched")
    return p


def fits(protocol: shapes.Protocol, msg: Any) -> None:
    assert protocol.problem(msg) is None, (protocol.owner, msg)


def sched_call_fits(request: Any) -> None:
    fits(smsg.CALLS, request)
    fits(smsg.REPLICA_CALLS if request[0] == "$sr" else smsg.CLIENT_CALLS, request[1:])


# --------------------------------------------------------------------------------------
# every message the code sends fits its receiver's protocol
# --------------------------------------------------------------------------------------


def test_a_holder_s_rounds_runs_acks_and_events_fit(wire: Wire) -> None:
    """Recovery, a runtime job change, a manual run, a pool's report and its ack, the
    check of open claims, a sync and a hello: each request to a replica fits
    ``REPLICA_CALLS``, each run and ack ``pool.CASTS``, each state call ``pool.CALLS``,
    each hello and event the scheduler's ``INFOS``."""
    wire.answers = {
        "observe": {"replica": encode_replica(Replica()), "boot": None, "synced": True},
        "apply": {"ok": True, "synced": True},
        "sync": {"ok": True, "synced": True},
        "state": {"running": [], "queued": [], "outbox": []},
    }
    w = holder()
    w._recover()
    assert w.writer.recovered
    other = Job("other", "@hourly", "json:loads").to_spec()
    assert w.handle_request(("$sc", "add", other), None) == ("ok", True)
    assert w.handle_request(("$sc", "deactivate", "other"), None) == ("ok", True)
    answer = w.handle_request(("$sc", "run", "job", datetime.now(UTC)), None)
    assert answer[0] == "ok" and len(answer[1]) == 1
    run = wire.to((w.pool_svc, PEER)) or wire.to((w.pool_svc, ME))
    assert run and run[0][0] == "run"
    key = pool.parse_key(run[0][1]["key"])
    w.handle_info(("run_started", PEER, key, time.time()))
    w.handle_info(("run_done", PEER, key, "finished", time.time(), time.time(), None))
    w.finishes.flush()
    w.writer.sync([PEER])
    w.finishes.check_open()
    w._hello(PEER)

    requests = [req for _, req in wire.calls]
    ops = {req[1] for req in requests if req[0] == "$sr"}
    assert ops == {"observe", "apply", "sync"}
    for dests, request in wire.calls:
        if request[0] == "$sr":
            sched_call_fits(request)
        else:
            assert dests == [(w.pool_svc, n) for n in sorted({ME, PEER})]
            fits(pool.CALLS, request)
    to_pools = [m for d, m in wire.sent if d[0] == w.pool_svc]
    assert {m[0] for m in to_pools} == {"run", "ack"}
    for msg in to_pools:
        fits(pool.CASTS, msg)
        fits(pool.INFOS, msg)
    to_replicas = [m for d, m in wire.sent if d[0] == w.svc]
    assert {m[0] for m in to_replicas} == {"$hello", "$event"}
    for msg in to_replicas:
        fits(smsg.INFOS, msg)
    for msg in wire.timers:  # the holder's own: objects, which no other node can send
        assert isinstance(msg, sched._Timer) and msg.kind in sched.TIMER_KINDS


def test_the_job_events_a_holder_sends_read_back_as_they_were() -> None:
    event = events.new_event("run_missed", "job", tick=NOW, extra={"first": NOW, "last": NOW})
    wire_form = event.to_wire()
    fits(smsg.INFOS, ("$event", wire_form))
    assert JobEvent.from_wire(wire_form) == event


def test_a_pool_s_messages_to_its_workers_and_the_holder_fit(wire: Wire) -> None:
    """A run as the holder sends it: the pool hands it to its worker (``WORKER_INFOS``)
    with a timeout timer (the pool's ``INFOS``), reports its start and end to the
    holder (the scheduler's ``INFOS``); a malformed run's report fits too."""
    p = task_pool()
    run = {
        "key": ["job", NOW, None],
        "task": JOB.task,
        "args": list(JOB.args),
        "kwargs": dict(JOB.kwargs),
        "timeout": JOB.timeout,
        "epoch": 5,
    }
    p.handle_info(("run", run))
    (to_worker,) = wire.to(WORKER)
    fits(pool.WORKER_INFOS, to_worker)
    (timeout,) = wire.timers
    fits(pool.INFOS, timeout)
    p.handle_info(("started", WORKER, to_worker[1], time.time()))
    p.handle_info(("done", WORKER, to_worker[1], "finished", time.time(), time.time(), None))
    p.handle_cast(("run", {**run, "key": ["bad", NOW, None], "kwargs": {1: "x" * 2000}}))
    p.outbox.resend()
    reports = wire.to(HOLDER)
    assert [m[0] for m in reports[:3]] == ["run_started", "run_done", "run_done"]
    for msg in reports:
        fits(smsg.INFOS, msg)
    assert reports[2][3] == "failed" and len(reports[2][6]) <= pool.ERROR_LIMIT
    for msg in wire.timers:
        fits(pool.INFOS, msg)
    state = p.handle_call(("state", 5), None)
    assert state["outbox"] and p.max_epoch == 5


@pytest.mark.parametrize(
    ("task", "args", "outcome"),
    [
        ("json:dumps", ([1],), "finished"),
        ("json:dumps", (), "failed"),  # the task raises
        ("nosuch.module:fn", (), "failed"),  # the task does not import
    ],
)
def test_a_worker_s_reports_fit_the_pool(wire: Wire, task: str, args: Any, outcome: str) -> None:
    worker = pool.Worker.__new__(pool.Worker)
    worker.pid, worker.pool = WORKER, POOL
    worker.drops = shapes.DropLog(logging.getLogger("test"))
    worker.handle_info(("run", KEY, task, args, {}))
    reports = wire.to(POOL)
    assert reports[-1][0] == "done" and reports[-1][3] == outcome
    for msg in reports:
        fits(pool.INFOS, msg)


def test_the_runtime_api_s_requests_fit(wire: Wire) -> None:
    wire.answers["call"] = ("ok", 0)
    client.add_job(JOB, "sched")
    client.delete_job("job", "sched")
    client.delete_all_jobs("sched")
    client.activate_job("job", "sched")
    client.deactivate_job("job", "sched")
    wire.answers["call"] = ("ok", [])
    client.jobs("sched")
    client.history("job", "sched")
    client.run_job("job", "sched")
    wire.answers["call"] = ("ok", None)
    client.find_job("job", "sched")
    wire.answers["call"] = True
    client.subscribe("sched", HOLDER)
    client.unsubscribe("sched", HOLDER)
    sent = [req for _, req in wire.calls]
    assert {req[1] for req in sent} == {*smsg.CLIENT_CALLS.shapes, "subscribe"}
    for request in sent:
        sched_call_fits(request)


#: An argument of each kind a shell command takes (``Command.kinds``).
ARGS = {
    "sup": "app",
    "child": "worker",
    "job": "job",
    "name": "x",
    "node": PEER,
    "pid": f"<{PEER}.4242>",
    "size": "3",
}


def test_every_shell_command_s_request_fits_the_admin_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each command of the shell, with its fewest and its most words (a node named:
    a ``forward``), and the event subscription of an interactive shell."""
    sent: list[Any] = []

    def ask_admin(target: str, request: Any, timeout: float, pids: Any) -> tuple[str, Any]:
        sent.append(request)
        return "ok", ("error", "recorded")

    monkeypatch.setattr(shell_client, "ask_admin", ask_admin)
    monkeypatch.setattr(shell_client.AdminClient, "check", lambda self: None)
    admin_client = shell_client.AdminClient(None, ME, None)
    for command in commands.COMMANDS.values():
        for count in {command.min_args, command.max_args}:
            words = [command.name, *(ARGS[kind] for kind in command.kinds[:count])]
            with pytest.raises(shell_client.RequestError):
                commands.execute(admin_client, words, commands.Options())
    with pytest.raises(shell_client.RequestError):
        admin_client.request("events", REMOTE, True, "sched")
    tags = {r[2][0] if r[0] == "forward" else r[0] for r in sent}
    assert tags >= set(admin.CALLS.shapes) - {"pid", "forward"}
    for request in sent:
        fits(admin.CALLS, request)
        if request[0] == "forward":
            fits(admin.CALLS, request[2])


@pytest.mark.parametrize("tag", sorted(admin.CALLS.shapes))
def test_each_admin_request_has_a_handler_that_takes_its_fields(tag: str) -> None:
    shape = admin.CALLS.shapes[tag]
    handler = getattr(admin.Admin, f"_op_{tag}")
    signature = inspect.signature(handler)
    least = len(shape.fields) - shape.optional
    for count in range(least, len(shape.fields) + 1):
        signature.bind(None, *range(count))


# --------------------------------------------------------------------------------------
# malformed messages: refused with a clear problem, at the top of each handler
# --------------------------------------------------------------------------------------

#: (protocol, message, words its problem says)
MALFORMED = [
    (smsg.CALLS, (), "() is not a tagged tuple"),
    (smsg.CALLS, ("$sr",), "'$sr' with 0 fields (expected 1)"),
    (smsg.CALLS, ("$zz", "apply"), "unknown scheduler call '$zz'"),
    (smsg.REPLICA_CALLS, ("subscribe", "not a pid", True), "field 1: 'not a pid' is not Pid"),
    (smsg.REPLICA_CALLS, ("subscribe", HOLDER, 1), "field 2: 1 is not bool"),
    (smsg.REPLICA_CALLS, ("apply", 1 << 62, [], None, "h"), "outside 0..4611686018427387903"),
    (smsg.REPLICA_CALLS, ("apply", -1, [], None, "h"), "field 1: -1 is outside"),
    (smsg.REPLICA_CALLS, ("apply", 1, [[1, 2, 3, 4]], None, "h"), "item 0: a list of 4 items"),
    (smsg.REPLICA_CALLS, ("observe", 1, ""), "a str of 0 characters"),
    (smsg.REPLICA_CALLS, ("sync", 1, "h", [], None), "field 3: [] is not a dict"),
    (smsg.CLIENT_CALLS, ("add", "job"), "field 1: 'job' is not a dict"),
    (smsg.CLIENT_CALLS, ("delete", ""), "a str of 0 characters"),
    (smsg.CLIENT_CALLS, ("run", "job", "2026-01-01"), "'2026-01-01' is not datetime"),
    (smsg.CLIENT_CALLS, ("jobs", "extra"), "'jobs' with 1 fields (expected 0)"),
    (smsg.INFOS, ("$hello", 3), "field 1: 3 is not str"),
    (smsg.INFOS, ("$sched", "wake", 1), "unknown scheduler message '$sched'"),
    (smsg.INFOS, ("run_done", PEER, KEY, "finished", None, None, None), "field 5: None"),
    (smsg.INFOS, ("run_done", PEER, ["job", "x", None], "ok", 1, 2, None), "'x' is not datetime"),
    (smsg.INFOS, ("run_started", PEER, KEY, float("nan")), "nan is not a number"),
    (pool.CALLS, ("bogus",), "unknown task pool call 'bogus'"),
    (pool.CALLS, ("state", "1"), "'1' is not int"),
    (pool.CALLS, ("state", True), "True is not int"),
    (pool.CASTS, ("run", "not a dict"), "'not a dict' is not a dict"),
    (pool.CASTS, ("ack", [["job", 1.5, None]]), "1.5 is not datetime"),
    (pool.INFOS, ("started", "x", KEY, 1.0), "'x' is not Pid"),
    (pool.INFOS, ("started", WORKER, KEY, "z"), "'z' is not a number"),
    (pool.INFOS, ("done", WORKER, KEY, "odd", 1, 2, None), "'odd' is not one of"),
    (pool.INFOS, ("$resend", "x"), "'$resend' with 1 fields (expected 0)"),
    (pool.WORKER_INFOS, ("run", [1], "t", (), {}), "a tuple of 1 items (expected 3)"),
    (pool.WORKER_INFOS, ("run", KEY, "t", "args", {}), "'args' is not tuple and"),
    (admin.CALLS, ("frob",), "unknown admin request 'frob'"),
    (admin.CALLS, ("kill", 0), "0 is outside 1..2147483647"),
    (admin.CALLS, ("kill", 99999999999999999999), "is outside 1..2147483647"),
    (admin.CALLS, ("events", "pid", True), "'pid' is not Pid"),
    (admin.CALLS, ("quorum_expected", 0), "0 is outside 1..1000"),
    (admin.CALLS, ("forward", PEER, "nodes"), "'nodes' is not a list"),
    (admin.CALLS, ("tree", "extra"), "'tree' with 1 fields (expected 0)"),
    (admin.INFOS, ("$poll",), "unknown admin message '$poll'"),
]


@pytest.mark.parametrize(("protocol", "msg", "said"), MALFORMED)
def test_a_malformed_message_is_refused_with_its_problem(
    protocol: shapes.Protocol, msg: Any, said: str
) -> None:
    why = protocol.problem(msg)
    assert why is not None and said in why, why


def test_the_scheduler_answers_a_malformed_call_with_the_api_s_error(wire: Wire) -> None:
    """The issue's finding: ``subscribe`` with a non-pid crashed the worker. Now every
    malformed call gets ``("error", "BadRequest", why)`` (which the runtime API raises
    as a ValueError), and a pid of another node is refused (events are objects only
    this node's processes can take)."""
    w = holder()
    for request in [
        ("$sr", "subscribe", "not a pid", True),
        ("$sr", "apply", "1", [], None, "h"),
        ("$sr", "nosuch"),
        ("$sc", "run", "job", "now"),
        "garbage",
    ]:
        answer = w.handle_request(request, None)
        assert answer[:2] == ("error", "BadRequest") and answer[2].startswith("bad scheduler")
    answer = w.handle_request(("$sr", "subscribe", REMOTE, True), None)
    assert answer[:2] == ("error", "BadRequest") and "not a process of node" in answer[2]
    assert w.bus.subscribers == {}
    assert w.handle_request(("$sr", "subscribe", HOLDER, True), None) is True
    assert list(w.bus.subscribers) == [HOLDER]
    wire.answers["call"] = ("error", "BadRequest", "bad scheduler replica call: no")
    with pytest.raises(ValueError, match="bad scheduler replica call"):
        client.subscribe("sched", REMOTE)


def test_a_manual_run_far_ahead_or_out_of_range_is_refused(wire: Wire) -> None:
    w = holder()
    w.member.rep = Replica(jobs={"job": JobEntry(JOB.to_spec(), (1, 1), "config", NOW)})
    w.writer.recovered = True
    for at in [*OUT_OF_RANGE, datetime.now(UTC) + timedelta(days=2)]:
        kind, error, text = w.handle_request(("$sc", "run", "job", at), None)
        assert (kind, error) == ("error", "ValueError") and text.startswith("run_job: at"), text
    assert w.member.rep.ledger.lanes == {} and wire.calls == []


def test_a_pool_answers_a_malformed_call_and_drops_a_malformed_message(
    wire: Wire, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's finding: the pool raised on any call but ``state``. Now a call gets
    an error, and a flood of malformed messages costs one WARNING line."""
    p = task_pool()
    for request in [("bogus",), ("state", "1"), ("state", 1, 2), "state"]:
        answer = p.handle_call(request, None)
        assert answer[0] == "error" and answer[1].startswith("bad task pool call: ")
    caplog.set_level(logging.DEBUG, "test")
    for i in range(200):
        p.handle_info(("started", WORKER, KEY, f"not a time {i}"))
        p.handle_cast(("ack", [["job", i, None]]))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "task pool of 'sched'" in warnings[0].getMessage()
    assert p.busy == {} and list(p.idle) == [WORKER] and wire.sent == []


def test_a_run_with_an_out_of_range_tick_is_dropped_not_a_crash(wire: Wire) -> None:
    p = task_pool()
    for at in OUT_OF_RANGE:
        p.handle_cast(("run", {"key": ["job", at, None], "task": "json:dumps"}))
    assert p.queue == pool.deque() and wire.sent == []


def test_a_run_timeout_of_any_length_is_armed_in_steps(wire: Wire) -> None:
    """A timeout the job takes (any finite number of seconds) is armed as timers a
    runtime can hold; the run times out only after the last step."""
    p = task_pool()
    p.handle_info(("run", {"key": ["job", NOW, None], "task": "json:dumps", "timeout": 1e300}))
    busy = p.busy[WORKER]
    assert wire.timers[-1][0] == "$timeout" and busy.rest > 1e299
    p.handle_info(wire.timers[-1])
    assert p.busy[WORKER] is busy and len(wire.timers) == 2  # armed again, not killed
    step, rest = pool.timer_step(1e300)
    assert step == 86_400.0 and rest == 1e300 - step
    assert pool.timer_step(2.5) == (2.5, 0.0)


def test_the_admin_service_answers_a_malformed_request() -> None:
    service = admin.Admin.__new__(admin.Admin)
    for request in [(), ("frob",), ("kill", "1"), ("kill",), ("events", 1, True), [1]]:
        kind, text = service.handle_call(request, None)
        assert kind == "error" and text.startswith("bad admin request: "), text


# --------------------------------------------------------------------------------------
# the pure parts a message reaches raise only what their callers catch
# --------------------------------------------------------------------------------------

zones = st.builds(
    timezone, st.timedeltas(-timedelta(hours=23, minutes=59), timedelta(hours=23, minutes=59))
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 63), (1 << 64) - 1),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.datetimes(timezones=zones),
    st.sampled_from([HOLDER, REMOTE, Ref(PEER, 3, 9)]),
    st.sampled_from(["2026-01-01T00:00:00+00:00", "0001-01-01T00:00:00+05:00", "x"]),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=4),
    ),
    max_leaves=12,
)


def corrupt(value: Any) -> st.SearchStrategy[Any]:
    """``value`` with some of its parts (or all of it) replaced by random values."""
    if isinstance(value, dict):
        inner: st.SearchStrategy[Any] = st.fixed_dictionaries(
            {k: corrupt(v) for k, v in value.items()}
        )
    elif isinstance(value, list | tuple):
        kind = type(value)
        inner = st.tuples(*(corrupt(v) for v in value)).map(kind)
    else:
        inner = st.just(value)
    return st.one_of(inner, inner, inner, values)


def a_replica() -> Replica:
    key = ClaimKey("job", NOW, None)
    ledger, _ = claim_all(Ledger(), [key], 5)
    entry = JobEntry(JOB.to_spec(), (5, 1), "config", NOW)
    return Replica(ledger, {"job": entry}, {key: PEER}, {key: 5})


REPLICA = a_replica()
WRITE = [
    ["lane", encode_update(lane_update(REPLICA.ledger, ClaimKey("job", NOW, None)))],
    ["job", "job", encode_entry(REPLICA.jobs["job"])],
    ["where", encode_key(ClaimKey("job", NOW, None)), PEER],
]


@settings(max_examples=150, deadline=None)
@given(corrupt(encode_replica(REPLICA)))
def test_decode_replica_raises_only_ledger_error(value: Any) -> None:
    with contextlib.suppress(LedgerError):
        decode_replica(value)


@settings(max_examples=150, deadline=None)
@given(corrupt(WRITE), st.integers(0, MAX_STAMP))
def test_apply_raises_only_ledger_error_and_leaves_the_replica_as_it_was(
    updates: Any, epoch: int
) -> None:
    before = encode_replica(REPLICA)
    with contextlib.suppress(LedgerError):
        apply(REPLICA, epoch, updates)
    assert encode_replica(REPLICA) == before


@settings(max_examples=120, deadline=None)
@given(corrupt(["job", NOW, "n1"]), corrupt(encode_entry(REPLICA.jobs["job"])))
def test_decode_key_and_entry_raise_only_ledger_error(key: Any, entry: Any) -> None:
    for decode, value in ((decode_key, key), (decode_entry, entry)):
        with contextlib.suppress(LedgerError):
            decode(value)


@settings(max_examples=120, deadline=None)
@given(corrupt(encode_ledger(REPLICA.ledger)), corrupt(WRITE[0][1]))
def test_decode_ledger_and_update_raise_only_ledger_error(ledger: Any, update: Any) -> None:
    for decode, value in ((decode_ledger, ledger), (decode_update, update)):
        with contextlib.suppress(LedgerError):
            decode(value)


@settings(max_examples=120, deadline=None)
@given(
    corrupt({"key": ["job", NOW, None], "task": "m:f", "args": [], "kwargs": {}, "timeout": 1.0})
)
def test_a_pool_s_parsers_raise_only_value_error(run: Any) -> None:
    if pool.CASTS.problem(("run", run)) is not None:
        return
    with contextlib.suppress(ValueError):
        pool.parse_run(pool.parse_key(run.get("key")), run)


@settings(max_examples=120, deadline=None)
@given(corrupt(events.new_event("run_finished", "job", tick=NOW, duration=1.5).to_wire()))
def test_a_job_event_from_the_wire_is_checked_field_by_field(value: Any) -> None:
    if not isinstance(value, dict) or smsg.INFOS.problem(("$event", value)) is not None:
        return
    try:
        event = JobEvent.from_wire(value)
    except ValueError:
        return
    assert isinstance(event.kind, str) and isinstance(event.job, str)
    assert event.tick is None or event.tick.utcoffset() is not None
    assert event.duration is None or isinstance(event.duration, float)
    assert isinstance(event.extra, dict)


@settings(max_examples=120, deadline=None)
@given(values)
def test_manual_tick_raises_only_value_error(at: Any) -> None:
    try:
        tick = api.manual_tick(at, NOW)
    except ValueError:
        return
    assert tick.tzinfo == UTC and tick - NOW <= timedelta(seconds=api.RUN_AHEAD)


@pytest.mark.parametrize("at", OUT_OF_RANGE)
def test_times_outside_the_years_1_to_9999_in_utc_are_ledger_errors(at: datetime) -> None:
    with pytest.raises(LedgerError, match="outside the years 1-9999"):
        decode_key(["job", at, None])
    with pytest.raises(LedgerError, match="outside the years 1-9999"):
        decode_key(["job", at.isoformat(), None])
    lane = ["job", None, at.isoformat(), [], 1, 1]
    with pytest.raises(LedgerError, match="outside the years 1-9999"):
        decode_update({"format": 1, "lane": lane})
    with pytest.raises(ValueError, match="outside the years 1-9999"):
        pool.parse_key(["job", at, None])
    with pytest.raises(ValueError, match="outside the years 1-9999"):
        claim_all(Ledger(), [("job", at)], 1)


def test_epochs_and_stamps_above_2_62_are_refused() -> None:
    """A forged epoch near 2**64 would leave a holder no epoch to write under, nor a
    sequence number msgpack can carry."""
    big = MAX_STAMP + 1
    lane = ["job", None, NOW.isoformat(), [], big, 1]
    with pytest.raises(LedgerError, match="stamp epoch"):
        decode_update({"format": 1, "lane": lane})
    with pytest.raises(LedgerError, match="ledger epoch"):
        decode_ledger({"format": 1, "epoch": big, "lanes": []})
    with pytest.raises(LedgerError, match="stamp"):
        decode_entry({"spec": None, "stamp": [1, big], "origin": "config", "since": "2026-01-01"})
    with pytest.raises(ValueError, match="epoch"):
        apply(REPLICA, big, [])
    assert replication.write_epoch(MAX_STAMP, 3) > MAX_STAMP  # what raise_epoch refuses


# --------------------------------------------------------------------------------------
# any message that fits: the handler's body does not raise
# --------------------------------------------------------------------------------------


def fitting(kind: Any) -> st.SearchStrategy[Any]:
    """Values of ``kind`` (a field's kind in a Shape): what passes its check, the edges
    of its ranges and the names this file's processes know included."""
    if kind is shapes.ANY:
        return values
    if isinstance(kind, shapes.Int):
        return st.one_of(st.integers(kind.lo, kind.hi), st.sampled_from([kind.lo, kind.hi]))
    if isinstance(kind, shapes.Num):
        return st.one_of(st.floats(kind.lo, kind.hi), st.sampled_from([kind.lo, kind.hi]))
    if isinstance(kind, shapes.Str):
        known = [s for s in ("job", PEER, ME) if kind.min_len <= len(s) <= kind.max_len]
        text = st.text(min_size=kind.min_len, max_size=min(kind.max_len, 30))
        return st.one_of(text, st.sampled_from(known)) if known else text
    if isinstance(kind, shapes.Seq):
        return st.lists(fitting(kind.item), max_size=min(kind.max_len, 4))
    if isinstance(kind, shapes.Tup):
        return st.tuples(*map(fitting, kind.items))
    if isinstance(kind, shapes.Map):
        return st.dictionaries(fitting(kind.key), fitting(kind.value), max_size=4)
    if isinstance(kind, shapes.Opt):
        return st.one_of(st.none(), fitting(kind.kind))
    if isinstance(kind, shapes.Either):
        return st.one_of(*map(fitting, kind.kinds))
    if isinstance(kind, shapes.Const):
        return st.sampled_from(kind.values)
    by_type: dict[Any, st.SearchStrategy[Any]] = {
        int: st.one_of(st.integers(0, 3), st.integers(-(1 << 63), (1 << 64) - 1)),
        str: st.text(max_size=30),
        bool: st.booleans(),
        dict: st.dictionaries(st.text(max_size=8), values, max_size=4),
        tuple: st.lists(values, max_size=4).map(tuple),
        list: st.lists(values, max_size=4),
        Pid: st.sampled_from([HOLDER, REMOTE, WORKER, POOL]),
        datetime: st.one_of(st.datetimes(timezones=zones), st.just(NOW)),
    }
    return by_type[kind]


def messages(protocol: shapes.Protocol, *prefix: Any) -> st.SearchStrategy[tuple[Any, ...]]:
    """Messages of ``protocol`` (after ``prefix``) whose fields fit their kinds."""

    def of(shape: shapes.Shape) -> st.SearchStrategy[tuple[Any, ...]]:
        counts = range(len(shape.fields) - shape.optional, len(shape.fields) + 1)
        return st.sampled_from(counts).flatmap(
            lambda n: st.tuples(*map(fitting, shape.fields[:n])).map(
                lambda fields: (*prefix, shape.tag, *fields)
            )
        )

    return st.sampled_from(list(protocol.shapes.values())).flatmap(of)


def a_busy_holder() -> sched.SchedulerWorker:
    """A recovered holder of one job with an open claim sent to ``PEER``."""
    w = holder()
    w.member.rep, w.writer.recovered, w.writer.wepoch = REPLICA, True, 5
    w.engine.job_lanes = {"job": {None}}
    w.engine.queue.add("job", NOW)
    return w


VALID_RUN = {"key": ["job", NOW, None], "task": "json:dumps", "args": [[1]], "timeout": 5.0}


#: the recorder is shared by the examples of one test: they only add to it
_SHARED_WIRE = [HealthCheck.function_scoped_fixture]


@settings(max_examples=150, deadline=None, suppress_health_check=_SHARED_WIRE)
@given(
    st.lists(
        st.one_of(
            messages(smsg.INFOS),
            messages(smsg.REPLICA_CALLS, "$sr"),
            messages(smsg.CLIENT_CALLS, "$sc"),
            # the holder's own timers (its generation is 1) and a manual run of its job
            st.sampled_from(sched.TIMER_KINDS).map(lambda kind: sched._Timer(kind, 1)),
            fitting(datetime).map(lambda at: ("$sc", "run", "job", at)),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_a_scheduler_process_takes_any_message_that_fits(
    wire: Wire, msgs: list[tuple[Any, ...]]
) -> None:
    wire.answers = {"apply": {"ok": True, "synced": True}, "state": {"running": []}}
    w = a_busy_holder()
    for msg in msgs:
        if isinstance(msg, tuple) and msg[0] in ("$sr", "$sc"):
            w.handle_request(msg, None)
        else:
            w.handle_info(msg)


@settings(max_examples=150, deadline=None, suppress_health_check=_SHARED_WIRE)
@given(
    st.lists(
        st.one_of(
            messages(pool.INFOS),
            messages(pool.CALLS),
            corrupt(VALID_RUN).map(lambda run: ("run", run)),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_a_task_pool_takes_any_message_that_fits(wire: Wire, msgs: list[tuple[Any, ...]]) -> None:
    p = task_pool()
    for msg in msgs:
        if pool.CALLS.problem(msg) is None:
            p.handle_call(msg, None)
        else:
            p.handle_info(msg)
            p.handle_cast(msg)
