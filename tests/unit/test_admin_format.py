"""The admin commands' pure parts: child labels, pid parsing, finding a supervisor in a
tree, drawing trees and tables, times and JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from otpkit import Pid
from otpkit.admin import _views
from otpkit.shell import _format
from otpkit.shell._client import parse_target
from otpkit.shell._commands import COMMANDS, SHELL_ONLY, UsageError, help_text

N = "n2@127.0.0.2"


def pid(i: int, node: str = N) -> Pid:
    return Pid(node, 7, i, 100 + i)


def leaf(label: str, i: int, restarts: int = 0, restart: str = "permanent") -> dict:
    return {
        "id": label,
        "pid": pid(i),
        "type": "worker",
        "restart": restart,
        "restarts": restarts,
        "error": None,
        "children": None,
    }


def sup(label: str, i: int, children: list, restarts: int = 0) -> dict:
    return {
        "id": label,
        "pid": pid(i),
        "type": "supervisor",
        "restart": "permanent",
        "restarts": restarts,
        "error": None,
        "children": children,
    }


TREE = sup(
    "kernel",
    1,
    [
        leaf("dist", 2),
        leaf("admin", 3),
        sup(
            "scheduler:jobs",
            4,
            [leaf("pool", 5), sup("singleton", 6, [leaf("scheduler", 7, restarts=2)])],
        ),
        sup("app", 8, [leaf("worker", 9, restarts=1, restart="transient")]),
        sup("other", 10, [sup("singleton", 11, [])]),
    ],
)


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("dist", "dist"),
        (("scheduler", "jobs"), "scheduler:jobs"),
        (["a", ("b", 1)], "a:b:1"),
        (7, "7"),
        (None, "-"),
    ],
)
def test_id_label(value, label):
    assert _views.id_label(value) == label


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("<n2@127.0.0.2.1234>", ("n2@127.0.0.2", 1234)),
        ("n2@127.0.0.2.1234", ("n2@127.0.0.2", 1234)),
        ("1234", (None, 1234)),
        (" 42 ", (None, 42)),
    ],
)
def test_parse_pid(text, parsed):
    assert _views.parse_pid(text) == parsed


@pytest.mark.parametrize("text", ["", "abc", "<@h.5>", "n2@.5", "n2@host.x", "0", "-3", "a.12"])
def test_parse_pid_refuses_what_is_not_a_pid(text):
    with pytest.raises(ValueError, match=r"expected <app@host\.ospid> or an os pid"):
        _views.parse_pid(text)


def test_walk_gives_every_path():
    paths = [p for p, _ in _views.walk(TREE)]
    assert paths == [
        "",
        "dist",
        "admin",
        "scheduler:jobs",
        "scheduler:jobs/pool",
        "scheduler:jobs/singleton",
        "scheduler:jobs/singleton/scheduler",
        "app",
        "app/worker",
        "other",
        "other/singleton",
    ]


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("kernel", ""),
        ("/", ""),
        ("app", "app"),
        ("scheduler:jobs", "scheduler:jobs"),
        ("scheduler:jobs/singleton", "scheduler:jobs/singleton"),
        ("/other/singleton/", "other/singleton"),
        (f"<{N}.8>", "app"),
        ("8", "app"),
    ],
)
def test_find_supervisor(text, path):
    found = _views.find_supervisor(TREE, text)
    assert found.error == ""
    assert found.path == path
    assert found.node is not None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("singleton", "'singleton' names several supervisors: scheduler:jobs/singleton, other/"),
        ("worker", "'worker' is a worker, not a supervisor"),
        ("nosuch", f"no supervisor 'nosuch' in the tree of {N}"),
        ("9", f"no supervisor '9' in the tree of {N}"),
    ],
)
def test_find_supervisor_says_why_not(text, error):
    found = _views.find_supervisor(TREE, text)
    assert found.node is None
    assert found.error.startswith(error)


def test_find_child_by_label_then_pid():
    rows = [{"label": "a", "pid": pid(20)}, {"label": "b", "pid": pid(21)}]
    assert _views.find_child(rows, "b") is rows[1]
    assert _views.find_child(rows, "20") is rows[0]
    assert _views.find_child(rows, f"<{N}.21>") is rows[1]
    assert _views.find_child(rows, "c") is None


def test_child_rows_label_the_ids():
    rows = _views.child_rows(
        [{"id": ("x", 1), "pid": None, "type": "worker", "restart": "temporary", "restarts": 3}]
    )
    assert rows == [
        {"id": "x:1", "pid": None, "type": "worker", "restart": "temporary", "restarts": 3}
    ]


def test_render_tree_draws_branches_with_pids_types_and_restarts():
    assert _format.render_tree(TREE).splitlines() == [
        f"kernel  <{N}.1>  supervisor",
        f"├─ dist  <{N}.2>  worker permanent  restarts=0",
        f"├─ admin  <{N}.3>  worker permanent  restarts=0",
        f"├─ scheduler:jobs  <{N}.4>  supervisor permanent  restarts=0",
        f"│  ├─ pool  <{N}.5>  worker permanent  restarts=0",
        f"│  └─ singleton  <{N}.6>  supervisor permanent  restarts=0",
        f"│     └─ scheduler  <{N}.7>  worker permanent  restarts=2",
        f"├─ app  <{N}.8>  supervisor permanent  restarts=0",
        f"│  └─ worker  <{N}.9>  worker transient  restarts=1",
        f"└─ other  <{N}.10>  supervisor permanent  restarts=0",
        f"   └─ singleton  <{N}.11>  supervisor permanent  restarts=0",
    ]


def test_render_tree_shows_a_stopped_child_and_an_unreadable_supervisor():
    tree = sup(
        "kernel", 1, [{**leaf("w", 2), "pid": None}, {**sup("s", 3, []), "error": "no answer"}]
    )
    lines = _format.render_tree(tree).splitlines()
    assert lines[1] == "├─ w  -  worker permanent  restarts=0"
    assert lines[2] == f"└─ s  <{N}.3>  supervisor permanent  restarts=0  (no answer)"


def test_snapshot_keeps_the_children_of_a_supervisor_that_did_not_answer():
    before = _views.snapshot(TREE, {})
    assert before["app/worker"] == (f"<{N}.9>", 1)
    assert before["scheduler:jobs/singleton/scheduler"] == (f"<{N}.7>", 2)
    assert "" not in before
    # app is silent this time: its worker stays as it was, not "gone"
    silent = {**sup("app", 8, []), "error": f"{_views.NO_ANSWER} within 5 s"}
    tree = {**TREE, "children": [*TREE["children"][:3], silent, TREE["children"][4]]}
    assert _views.snapshot(tree, before) == before
    # a supervisor that ended while read has no children: they are gone
    ended = {**sup("app", 8, []), "error": "ended while read: killed"}
    tree = {**TREE, "children": [*TREE["children"][:3], ended, TREE["children"][4]]}
    after = _views.snapshot(tree, before)
    assert "app/worker" not in after and after["app"] == before["app"]
    # a silent root keeps everything seen before
    root = {**sup("kernel", 1, []), "error": _views.NO_ANSWER}
    assert _views.snapshot(root, before) == before


def test_render_table_pads_columns():
    assert _format.render_table(["A", "BB"], [["xxx", 1], ["y", 22]]).splitlines() == [
        "A    BB",
        "xxx  1",
        "y    22",
    ]


def test_render_nodes_marks_this_node_hidden_ones_and_members():
    text = _format.render_nodes(
        {"node": N, "nodes": ["n3@h"], "hidden": ["shell-1@h"], "members": [N, "n3@h"]}
    )
    assert text.splitlines() == [
        "NODE          SEEN AS    MEMBER",
        "n2@127.0.0.2  this node  yes",
        "n3@h          connected  yes",
        "shell-1@h     hidden     no",
    ]


def test_fmt_time_is_utc_with_the_distance_from_now():
    now = datetime(2026, 5, 1, 10, 0, 0, tzinfo=UTC)
    assert _views.fmt_time(now + timedelta(minutes=3, seconds=5), now) == (
        "2026-05-01 10:03:05Z (in 3m 5s)"
    )
    later = datetime(2026, 5, 2, 13, 0, 0, tzinfo=UTC)
    assert _views.fmt_time(later, now) == "2026-05-02 13:00:00Z (in 1d 3h)"
    assert _views.fmt_time(now - timedelta(seconds=2), now) == "2026-05-01 09:59:58Z (2s ago)"
    assert _views.fmt_time(None, now) == "-"
    berlin = datetime.fromisoformat("2026-05-01T12:00:00.250+02:00")
    assert _views.fmt_time(berlin) == "2026-05-01 10:00:00.250Z"


def test_render_jobs_shows_next_fire_last_run_state_and_holder():
    now = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    jobs = [
        {
            "name": "report",
            "schedule": "0 * * * *",
            "state": "active",
            "running": True,
            "next_at": datetime(2026, 5, 1, 11, 0, tzinfo=UTC),
            "last_run": {
                "tick": datetime(2026, 5, 1, 9, 0, tzinfo=UTC),
                "node": "n3@h",
                "outcome": "finished",
            },
            "holder": N,
        },
        {"name": "off", "schedule": "@daily", "state": "inactive", "next_at": None, "holder": N},
    ]
    lines = _format.render_jobs(jobs, now).splitlines()
    assert lines[0].split() == ["JOB", "SCHEDULE", "STATE", "NEXT", "FIRE", "LAST", "RUN", "HOLDER"]
    assert "active, running" in lines[1]
    assert "2026-05-01 11:00:00Z (in 1h 0m)" in lines[1]
    assert "2026-05-01 09:00:00Z (1h 0m ago) finished on n3@h" in lines[1]
    assert lines[1].endswith(N)
    assert lines[2].split()[:4] == ["off", "@daily", "inactive", "-"]
    assert _format.render_jobs([]) == "(no jobs)"


def test_plain_makes_answers_json_able():
    value = {
        "pid": pid(3),
        ("a", 1): [datetime(2026, 1, 1, tzinfo=UTC), (1, 2), b"x", None, 1.5, True],
    }
    assert json.loads(json.dumps(_format.plain(value))) == {
        "pid": f"<{N}.3>",
        "a:1": ["2026-01-01T00:00:00+00:00", [1, 2], "x", None, 1.5, True],
    }


def test_render_event():
    event = {"at": 0.5, "node": N, "kind": "registry", "text": "x registered"}
    assert _format.render_event(event) == f"00:00:00.500  {N}  registry    x registered"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.2:4370", (None, "127.0.0.2", 4370)),
        ("app@10.0.0.1:4370", ("app@10.0.0.1", "10.0.0.1", 4370)),
        ("myhost:1", (None, "myhost", 1)),
    ],
)
def test_parse_target(text, parsed):
    assert parse_target(text) == parsed


@pytest.mark.parametrize("text", ["", "host", "host:", ":4370", "host:http", "host:70000"])
def test_parse_target_refuses(text):
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_target(text)


def test_help_lists_every_command_and_refuses_an_unknown_one():
    text = help_text()
    for name in [*COMMANDS, *SHELL_ONLY]:
        assert name in text
    assert help_text("kill").startswith("kill PID\n")
    with pytest.raises(UsageError, match="unknown command 'x' \\(help lists them\\)"):
        help_text("x")
