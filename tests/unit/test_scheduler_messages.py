"""The scheduler's messages (``otpkit.scheduler._messages``): each wire tuple decodes to
its dataclass and encodes back to the same tuple, so nodes of the previous release
(which send and read these tuples) keep talking to this code during a rolling update;
a tuple that does not fit is refused with its problem; the holder's timers are not
among the messages another node can send.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from otpkit.actors import Pid
from otpkit.scheduler._events import new_event
from otpkit.scheduler._ledger import ClaimKey
from otpkit.scheduler._messages import (
    ActivateJob,
    AddJob,
    Apply,
    BadMessage,
    DeactivateJob,
    DeleteAllJobs,
    DeleteJob,
    EventNote,
    FindJob,
    Hello,
    ListJobs,
    Observe,
    RunDone,
    RunJob,
    RunStarted,
    Subscribe,
    Sync,
    decode_call,
    decode_info,
    encode,
)

NODE = "a@127.0.0.1"
PID = Pid(NODE, 7, 4100, 12)
AT = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
KEY = ["job", AT, None]
EARLY = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=23)))
SPEC = {"name": "job", "schedule": "* * * * *", "task": "json:dumps"}
UPDATE = ["job", "job", {"spec": None, "stamp": [1, 1], "origin": "config", "since": "x"}]

#: Each call as the previous release's code builds it, and its dataclass.
CALLS: list[tuple[tuple[Any, ...], Any]] = [
    (("$sr", "apply", 5, [UPDATE], "boot", "<a.1>/1"), Apply(5, [UPDATE], "boot", "<a.1>/1")),
    (("$sr", "apply", 5, [], None, "<a.1>/1"), Apply(5, [], None, "<a.1>/1")),
    (("$sr", "observe", 5, "<a.1>/1"), Observe(5, "<a.1>/1")),
    (("$sr", "sync", 5, "<a.1>/1", {"format": 1}, None), Sync(5, "<a.1>/1", {"format": 1}, None)),
    (("$sr", "subscribe", PID, True), Subscribe(PID, True)),
    (("$sc", "add", SPEC), AddJob(SPEC)),
    (("$sc", "delete", "job"), DeleteJob("job")),
    (("$sc", "delete_all"), DeleteAllJobs()),
    (("$sc", "activate", "job"), ActivateJob("job")),
    (("$sc", "deactivate", "job"), DeactivateJob("job")),
    (("$sc", "find", "job"), FindJob("job")),
    (("$sc", "jobs"), ListJobs()),
    (("$sc", "run", "job", AT), RunJob("job", AT)),
]


@pytest.mark.parametrize(("wire", "msg"), CALLS, ids=[wire[1] for wire, _ in CALLS])
def test_each_call_decodes_to_its_message_and_encodes_back(wire: tuple[Any, ...], msg: Any) -> None:
    assert decode_call(wire) == msg
    assert encode(msg) == wire


def test_each_plain_message_decodes_and_encodes_back() -> None:
    event = new_event("run_missed", "job", tick=AT, extra={"first": AT, "last": AT})
    key = ClaimKey("job", AT, None)
    infos: list[tuple[tuple[Any, ...], Any]] = [
        (("$hello", NODE), Hello(NODE)),
        (("$event", event.to_wire()), EventNote(event)),
        # the previous release's pool, and this release's (its report's info last)
        (("run_started", NODE, KEY, 1.5), RunStarted(NODE, key, 1.5)),
        (
            ("run_started", NODE, KEY, 1.5, {"attempt": 2}),
            RunStarted(NODE, key, 1.5, {"attempt": 2}),
        ),
        (
            ("run_done", NODE, KEY, "failed", 1.5, 2.5, "boom"),
            RunDone(NODE, key, "failed", 1.5, 2.5, "boom"),
        ),
        (
            ("run_done", NODE, KEY, "finished", None, 2.5, None, {"attempt": 1, "raised": False}),
            RunDone(NODE, key, "finished", None, 2.5, None, {"attempt": 1, "raised": False}),
        ),
    ]
    for wire, msg in infos:
        assert decode_info(wire) == msg, wire
        assert encode(msg) == wire, wire


def test_a_run_key_in_another_zone_is_read_in_utc() -> None:
    east = AT.astimezone(timezone(timedelta(hours=5)))
    msg = decode_info(("run_started", NODE, ("job", east, "n1"), 1.0))
    assert msg == RunStarted(NODE, ClaimKey("job", AT, "n1"), 1.0)


@pytest.mark.parametrize(
    ("request_", "said"),
    [
        ((), "bad scheduler call: () is not a tagged tuple"),
        (("$sr", "nosuch"), "bad scheduler replica call: unknown scheduler replica call 'nosuch'"),
        (("$sc", "run", "job", "now"), "bad scheduler client call: 'run' field 2: 'now'"),
        (("$sr", "observe", -1, "h"), "bad scheduler replica call: 'observe' field 1: -1"),
    ],
)
def test_a_call_that_does_not_fit_is_answered_with_its_problem(request_: Any, said: str) -> None:
    with pytest.raises(BadMessage) as caught:
        decode_call(request_)
    kind, error, text = caught.value.answer()
    assert (kind, error) == ("error", "BadRequest") and text.startswith(said), text


@pytest.mark.parametrize(
    ("msg", "said"),
    [
        # the holder's own timers were ("$sched", kind, generation) tuples, which any
        # node could send: now they are objects of the holder's process
        (("$sched", "wake", 1), "unknown scheduler message '$sched'"),
        (("$sched", "recover", 1), "unknown scheduler message '$sched'"),
        (("$event", {"kind": "run_missed", "tick": datetime(2026, 1, 1)}), "field 'tick'"),
        # fits the shape, but the key's tick is before the year 1 in UTC
        (("run_started", NODE, ["job", EARLY, None], 1.0), "outside the years 1-9999"),
        (
            ("run_done", NODE, KEY, "finished", 1.0, 2.0, None, {}, 4),
            "with 8 fields (expected 6..7)",
        ),
        (("$hello",), "'$hello' with 0 fields"),
    ],
)
def test_a_plain_message_that_does_not_fit_is_refused_with_its_problem(msg: Any, said: str) -> None:
    with pytest.raises(BadMessage) as caught:
        decode_info(msg)
    assert said in caught.value.why, caught.value.why
