"""No malformed message takes a system process down: a hidden node holding the cookie
sends thousands of malformed calls, casts and plain messages to every system process
of a live three-node cluster (``otpkit run`` nodes running a Scheduler whose job records
every second's tick, and a majority Singleton), and afterwards no process crashed or was
restarted, every tick of the fuzz ran exactly once, and the cluster still answers.

The messages come from the processes' own declarations (module-level
``shapes.Protocol`` constants, see ``tests/harness/fuzz.py``): the first tests check
that the suite knows every one of them and how to reach it, and that it never sends a
valid-shaped harmful message.

``OTPKIT_FUZZ_MESSAGES=N`` sizes the run: CI's short form is 1,800; the ``soak`` form is
20,000 or more. ``OTPKIT_FUZZ_SEED`` replays a run (the seed is printed).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from otpkit.actors import shapes
from tests.harness import fuzz
from tests.harness.polling import wait_for

pytestmark = pytest.mark.cluster

MESSAGES = int(os.environ.get("OTPKIT_FUZZ_MESSAGES", "1800"))


def test_every_protocol_has_a_target_and_every_system_process_a_protocol():
    found = fuzz.protocols()
    assert found, "no shapes.Protocol in src/otpkit"
    assert fuzz.unknown_protocols(found) == [], (
        "a Protocol the fuzz suite cannot send: add it to tests/harness/fuzz.py TARGETS"
    )
    assert sorted(set(fuzz.TARGETS) - set(found)) == [], "a TARGETS entry names no Protocol"
    assert fuzz.stale_entries(found) == [], "a DENY entry names a tag no Protocol has"
    covered = {role for attr in found for role in fuzz.TARGETS[attr]}
    assert covered == set(fuzz.ROLES), (
        f"system processes without a Protocol: {set(fuzz.ROLES) - covered}"
    )


def test_the_plan_touches_every_tag_and_sends_no_harmful_valid_message():
    found = fuzz.protocols()
    todo, skipped = fuzz.plan(found, MESSAGES, 7)
    assert len(todo) == MESSAGES and skipped > 0
    assert todo == fuzz.plan(found, MESSAGES, 7)[0]  # a seed replays the run
    for case in todo:
        assert not fuzz.denied(found, case.roles, case.msg), case
    touched = {(c.source, c.tag) for c in todo}
    for attr, proto in found.items():
        for tag in proto.shapes:
            assert (attr, tag) in touched, f"{attr} {tag!r} never fuzzed"
    modes = {c.mode for c in todo}
    assert modes == {"call", "cast", "info"}
    # most are malformed; each Protocol's cases are refused by the Protocol itself
    for attr, proto in found.items():
        wrap = fuzz.WRAPS.get(attr, ())
        for tag, msgs in fuzz.cases(attr, proto).items():
            refused = [m for m in msgs if proto.problem(m[len(wrap) :] if wrap else m)]
            assert refused, f"{attr} {tag!r}: no malformed case"


def test_values_and_ticks_are_judged_as_documented():
    for kind in (shapes.Int(0, 10), shapes.Str(4, 1), shapes.Seq(int, 2), shapes.Opt(str)):
        for value in fuzz.valid_values(kind):
            assert shapes.problem(value, kind) is None, (kind, value)
        assert fuzz.invalid_values(kind)
        for value in fuzz.invalid_values(kind):
            assert shapes.problem(value, kind) is not None, (kind, value)
    rng = random.Random(1)
    for _ in range(200):
        fuzz.random_value(rng)  # never raises
    runs = [(100.0, "a"), (101.0, "b"), (101.0, "c"), (103.0, "a")]
    assert fuzz.tick_problems(runs, 100, 103) == [
        "tick 00:01:41 ran 2 times (b, c)",
        "tick 00:01:42 never ran",
    ]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[fuzz.FuzzCluster]:
    started = fuzz.FuzzCluster(tmp_path)
    try:
        started.start()

        def ready() -> bool:
            assert all(started.alive()), f"a node ended: {started.output()[-3000:]}"
            return started.ready()

        wait_for(ready, 90, "every node ready and a tick run", 0.2)
        yield started
    finally:
        started.close()


@pytest.mark.soak
def test_malformed_messages_crash_no_system_process(cluster):
    seed = int(os.environ.get("OTPKIT_FUZZ_SEED", random.randrange(2**32)))
    print(f"fuzz seed {seed} (OTPKIT_FUZZ_SEED={seed} replays it), {MESSAGES} messages")
    verdict = fuzz.run(cluster, MESSAGES, seed)
    report = verdict.report
    print(
        json.dumps(
            {
                k: report[k]
                for k in ("sent", "denied", "unsendable", "seconds", "by_mode", "answers")
            }
        )
    )
    assert verdict.crashes == [], f"{len(verdict.crashes)} crashes:\n" + "\n".join(
        f"{c['log']}: {c['process']} crashed on {c['message'][:160]}: {c['error'][:160]}"
        for c in verdict.crashes[:20]
    )
    assert verdict.exits == [], "\n".join(verdict.exits[:20])
    assert verdict.restarted == [] and report["new"] == [], verdict.restarted
    assert all(verdict.alive), cluster.output()[-3000:]
    assert report["lost"] == [] and report["unreached"] == 0
    assert report["sent"] + report["unsendable"] == MESSAGES
    assert report["processes"] >= 3 * len(fuzz.ROLES)
    assert verdict.ticks_checked >= 3
    assert verdict.tick_problems == [], verdict.tick_problems
    for node, answer in report["normal"].items():
        assert sorted(answer["nodes"]) == sorted(set(cluster.names) - {node}), answer
        assert answer["jobs"] == [fuzz.JOB], answer
