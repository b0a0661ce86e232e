"""Job (otpkit.scheduler._job): defaults, normal forms, and an error for each bad field
that names the job and the field."""

from __future__ import annotations

import dataclasses
import functools
import json
import pickle
from typing import Any

import pytest

from otpkit.scheduler import InvalidJob, Job, Schedule, ScheduleError
from otpkit.scheduler._job import load_task, task_ref


def module_level_task(x: int = 0) -> int:
    return x + 1


class Tasks:
    @staticmethod
    def nested(x: int = 0) -> int:
        return x + 2


def test_defaults():
    job = Job("report", "0 3 * * *", "json:dumps")
    assert job.schedule == Schedule.parse("0 3 * * *")
    assert job.task == "json:dumps"
    assert (job.args, job.kwargs, job.state, job.overlap) == ((), {}, "active", True)
    assert (job.run_strategy, job.timezone, job.misfire) == ("local", "UTC", "run_once")
    assert (job.misfire_grace, job.timeout) == (1.0, None)
    assert job.load_task() is json.dumps


def test_normal_forms():
    job = Job(
        "report",
        "15 30 2 * * *",
        json.dumps,
        args=[1, 2],
        kwargs={"indent": 2},
        state="inactive",
        overlap=False,
        run_strategy=["a@10.0.0.1", "b@10.0.0.2"],
        timezone="Europe/Berlin",
        misfire="skip",
        misfire_grace=0,
        timeout=30,
    )
    assert job.task == "json:dumps"
    assert job.schedule == Schedule.parse("15 30 2 * * *", "Europe/Berlin")
    assert job.args == (1, 2)
    assert job.run_strategy == ("a@10.0.0.1", "b@10.0.0.2")
    assert job.misfire_grace == 0.0 and isinstance(job.misfire_grace, float)
    assert job.timeout == 30.0
    kwargs = {"k": 1}
    copy = Job("j", "@daily", "json:dumps", kwargs=kwargs)
    kwargs["k"] = 2
    assert copy.kwargs == {"k": 1}


@pytest.mark.parametrize("strategy", ["local", "random", "all"])
def test_run_strategies(strategy: str):
    assert Job("j", "@hourly", "json:dumps", run_strategy=strategy).run_strategy == strategy


def test_tasks_by_reference():
    assert Job("j", "@hourly", module_level_task).task == f"{__name__}:module_level_task"
    assert Job("j", "@hourly", Tasks.nested).task == f"{__name__}:Tasks.nested"
    assert Job("j", "@hourly", "json:JSONEncoder.encode").load_task() is json.JSONEncoder.encode
    assert task_ref(print) == "builtins:print"
    assert load_task("os.path:join")("a", "b") == "a/b"


def test_a_schedule_object_in_the_jobs_timezone():
    berlin = Schedule.parse("30 2 * * *", "Europe/Berlin")
    assert Job("j", berlin, "json:dumps", timezone="Europe/Berlin").schedule is berlin
    with pytest.raises(InvalidJob, match=r"job 'j': schedule=.*timezone 'UTC'"):
        Job("j", berlin, "json:dumps")


def test_value_behaviour():
    job = Job("j", "*/5 * * * *", module_level_task, args=(1,), timezone="America/New_York")
    assert pickle.loads(pickle.dumps(job)) == job
    moved = dataclasses.replace(job, state="inactive")
    assert (moved.state, moved.name, moved.schedule) == ("inactive", "j", job.schedule)
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.state = "inactive"  # type: ignore[misc]
    with pytest.raises(InvalidJob, match="state"):
        dataclasses.replace(job, state="paused")


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------


def nested_factory() -> Any:
    def inner() -> None:
        return None

    return inner


def in_main() -> None:
    return None


in_main.__module__ = "__main__"

BAD_FIELDS: list[tuple[str, Any, str]] = [
    ("args", "abc", "a tuple or list"),
    ("args", 5, "a tuple or list"),
    ("kwargs", [("a", 1)], "a mapping with string keys"),
    ("kwargs", {1: 2}, "a mapping with string keys"),
    ("state", "paused", "'active' or 'inactive'"),
    ("state", None, "'active' or 'inactive'"),
    ("overlap", 1, "True or False"),
    ("overlap", "no", "True or False"),
    ("run_strategy", "everywhere", "'local', 'random', 'all' or a non-empty list"),
    ("run_strategy", [], "non-empty list"),
    ("run_strategy", ["a@h", "a@h"], "distinct node names"),
    ("run_strategy", ["a@h", ""], "distinct node names"),
    ("run_strategy", ["a@h", 3], "distinct node names"),
    ("run_strategy", None, "non-empty list"),
    ("misfire", "later", "'run_once' or 'run_all' or 'skip'"),
    ("misfire_grace", -1, "finite number of seconds >= 0"),
    ("misfire_grace", float("nan"), "finite number"),
    ("misfire_grace", "1", "finite number"),
    ("misfire_grace", True, "finite number"),
    ("timeout", 0, "None or a finite number of seconds > 0"),
    ("timeout", -5, "> 0"),
    ("timeout", float("inf"), "> 0"),
    ("timeout", "30", "> 0"),
    ("max_attempts", 0, "an int in 1..100"),
    ("max_attempts", 101, "an int in 1..100"),
    ("max_attempts", 2.0, "an int in 1..100"),
    ("max_attempts", True, "an int in 1..100"),
    ("backoff", 5, "(base, max) seconds"),
    ("backoff", (0, 10), "0 < base <= max"),
    ("backoff", (10, 1), "0 < base <= max"),
    ("backoff", (1, float("inf")), "finite"),
    ("backoff", (1, 2, 3), "(base, max) seconds"),
    ("backoff", "1,2", "(base, max) seconds"),
]


def test_retry_fields():
    job = Job("flaky", "* * * * *", "json:dumps", max_attempts=3, backoff=[2, 60])
    assert (job.max_attempts, job.backoff) == (3, (2.0, 60.0))
    assert job.to_spec()["max_attempts"] == 3
    assert job.to_spec()["backoff"] == [2.0, 60.0]
    assert Job.from_spec(job.to_spec()) == job
    plain = Job("plain", "* * * * *", "json:dumps")
    assert (plain.max_attempts, plain.backoff) == (1, (1.0, 300.0))
    # left out at their defaults, so the previous release's from_spec reads the spec
    assert "max_attempts" not in plain.to_spec()
    assert "backoff" not in plain.to_spec()


@pytest.mark.parametrize(("field", "value", "expected"), BAD_FIELDS)
def test_bad_fields_name_job_and_field(field: str, value: Any, expected: str):
    with pytest.raises(InvalidJob) as info:
        Job("nightly", "@daily", "json:dumps", **{field: value})
    assert str(info.value).startswith(f"job 'nightly': {field}={value!r}; expected ")
    assert expected in str(info.value)
    assert (info.value.job, info.value.field) == ("nightly", field)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", ["", None, 7])
def test_bad_name(name: Any):
    with pytest.raises(InvalidJob, match=r"name=.*; expected a non-empty string"):
        Job(name, "@daily", "json:dumps")


BAD_TASKS: list[tuple[Any, str]] = [
    ("json.dumps", "'package.module:function'"),
    ("json:", "'package.module:function'"),
    (":dumps", "'package.module:function'"),
    ("no_such_module_xyz:run", "an importable module"),
    ("json:no_such_function", "it has no 'no_such_function'"),
    ("json:decoder.nope", "it has no 'decoder.nope'"),
    ("os:sep", "a callable; 'sep' is str"),
    (lambda: None, "module-level function"),
    (nested_factory(), "module-level function"),
    (functools.partial(json.dumps, indent=2), "module-level function"),
    (in_main, "module-level function"),
    (42, "module-level function"),
]


@pytest.mark.parametrize(("task", "expected"), BAD_TASKS)
def test_bad_tasks(task: Any, expected: str):
    with pytest.raises(InvalidJob) as info:
        Job("nightly", "@daily", task)
    assert str(info.value).startswith("job 'nightly': task=")
    assert expected in str(info.value)
    assert info.value.field == "task"


def test_a_callable_whose_name_leads_elsewhere():
    def impostor() -> None:
        return None

    impostor.__qualname__ = "module_level_task"
    with pytest.raises(InvalidJob, match="names another object"):
        Job("nightly", "@daily", impostor)


def test_bad_schedule_and_timezone_name_job_and_field():
    with pytest.raises(ScheduleError) as info:
        Job("nightly", "61 * * * *", "json:dumps")
    assert str(info.value).startswith("job 'nightly': schedule '61 * * * *': minute '61'")
    assert (info.value.job, info.value.field) == ("nightly", "minute")
    with pytest.raises(ScheduleError) as info:
        Job("nightly", "@daily", "json:dumps", timezone="Mars/Base")
    assert str(info.value).startswith("job 'nightly': timezone 'Mars/Base': unknown")
    assert info.value.field == "timezone"
    with pytest.raises(ScheduleError, match="job 'nightly': schedule '@often': unknown alias"):
        Job("nightly", "@often", "json:dumps")
    with pytest.raises(ScheduleError, match="timezone 'Mars/Base'"):
        Job("nightly", Schedule.parse("@daily"), "json:dumps", timezone="Mars/Base")


def test_errors_pickle():
    with pytest.raises(InvalidJob) as info:
        Job("nightly", "@daily", "json:dumps", state="paused")
    copy = pickle.loads(pickle.dumps(info.value))
    assert (str(copy), copy.job, copy.field, copy.value) == (
        str(info.value),
        "nightly",
        "state",
        "paused",
    )
