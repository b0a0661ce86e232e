"""Schedules (otpkit.scheduler._schedule): forms, aliases, errors and fire times.

The field syntax and the day-of-month/day-of-week rule are pinned here by hand and in
``test_croniter_bugs.py`` (each place croniter alone answers otherwise);
``test_schedule_differential.py`` compares random expressions with cronsim.

The DST pins are lists of UTC fire times written by hand from Vixie cron's rule (stated in
``_schedule``'s docstring), not from the code: in Europe/Berlin (CET +01 / CEST +02;
2026-03-29 01:00 UTC 02:00 -> 03:00; 2026-10-25 01:00 UTC 03:00 -> 02:00) and
America/New_York (EST -05 / EDT -04; 2026-03-08 07:00 UTC 02:00 -> 03:00; 2026-11-01
06:00 UTC 02:00 -> 01:00). A second oracle simulates the cron daemon minute by minute
(``vixie``), and hypothesis checks the same in zones with odd transitions (30 minutes,
at midnight).
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from otpkit.scheduler import ALIASES, Schedule, ScheduleError
from otpkit.scheduler._schedule import _croniter_exprs, _croniter_field

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
MINUTE = timedelta(minutes=1)


def utc(text: str) -> datetime:
    """``"2026-03-29 01:00"`` (or with seconds) as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(expr: str, tz: str, start: str, end: str) -> list[str]:
    return [
        t.strftime("%Y-%m-%d %H:%M:%S" if t.second else "%Y-%m-%d %H:%M")
        for t in Schedule.parse(expr, tz).fire_times(utc(start), utc(end))
    ]


def minutes(day: str, hour: int, first: int = 0, last: int = 59) -> list[str]:
    return [f"{day} {hour:02}:{m:02}" for m in range(first, last + 1)]


# --------------------------------------------------------------------------------------
# forms and aliases
# --------------------------------------------------------------------------------------


def test_five_fields():
    s = Schedule.parse("30 2 * * *")
    assert s.fields == ("0", "30", "2", "*", "*", "*")
    assert not s.reboot
    assert s.next_after(utc("2026-01-01 00:00")) == utc("2026-01-01 02:30")
    assert s.next_after(utc("2026-01-01 02:30")) == utc("2026-01-02 02:30")


def test_six_fields_put_the_second_first():
    s = Schedule.parse("15 30 2 * * *")
    assert s.fields == ("15", "30", "2", "*", "*", "*")
    assert s.next_after(utc("2026-01-01 00:00")) == utc("2026-01-01 02:30:15")
    every_10s = Schedule.parse("*/10 * * * * *")
    assert fires("*/10 * * * * *", "UTC", "2026-01-01 00:00:05", "2026-01-01 00:00:35") == [
        "2026-01-01 00:00:10",
        "2026-01-01 00:00:20",
        "2026-01-01 00:00:30",
    ]
    assert every_10s.real_time


def test_names_ranges_lists_steps_and_day_or():
    assert fires("0 9 * JAN MON-FRI", "UTC", "2026-01-01", "2026-01-06") == [
        "2026-01-01 09:00",  # a Thursday
        "2026-01-02 09:00",
        "2026-01-05 09:00",
    ]
    assert fires("0 0 13 * FRI", "UTC", "2026-02-09", "2026-02-16") == [
        "2026-02-13 00:00",  # day of month OR day of week, as Vixie cron
    ]
    assert fires("5,10-12/2 0 1 1 *", "UTC", "2026-01-01", "2026-01-02") == [
        "2026-01-01 00:05",
        "2026-01-01 00:10",
        "2026-01-01 00:12",
    ]
    assert fires("0 0 L 2 *", "UTC", "2028-01-01", "2028-12-31") == ["2028-02-29 00:00"]
    assert fires("0 0 * * 1#2", "UTC", "2026-03-01", "2026-04-01") == ["2026-03-09 00:00"]


def test_the_day_fields_are_anded_when_either_starts_with_a_star():
    # Vixie cron (entry.c DOM_STAR/DOW_STAR): "*", "*/n" or "*,..." in either field
    # means a day must match both; otherwise it must match either.
    assert fires("0 0 */10 * 2-6", "UTC", "2026-01-01", "2026-03-01") == [
        "2026-01-01 00:00",  # Thursday
        "2026-01-21 00:00",  # Wednesday
        "2026-01-31 00:00",  # Saturday
        "2026-02-11 00:00",  # Wednesday
        "2026-02-21 00:00",  # Saturday
    ]
    assert fires("0 0 1-10 * *,MON", "UTC", "2026-01-01", "2026-02-01") == [
        f"2026-01-{d:02} 00:00" for d in range(1, 11)
    ]
    assert fires("0 0 1,L * 1#1", "UTC", "2026-01-01", "2026-02-10") == [
        "2026-01-01 00:00",
        "2026-01-05 00:00",  # first Monday
        "2026-01-31 00:00",
        "2026-02-01 00:00",
        "2026-02-02 00:00",
    ]
    # the same for a 6-field expression
    assert fires("30 0 0 */10 * 2-6", "UTC", "2026-01-01", "2026-01-31") == [
        "2026-01-01 00:00:30",
        "2026-01-21 00:00:30",
    ]


def test_a_question_mark_is_a_star():
    # Quartz's "no value" in one day field: read as "*", so the other field decides
    assert Schedule.parse("0 0 ? * MON").next_after(utc("2026-01-01")) == utc("2026-01-05")
    assert Schedule.parse("0 0 15 * ?").next_after(utc("2026-01-01")) == utc("2026-01-15")
    assert fires("0 0 ? * MON", "UTC", "2026-01-01", "2026-03-01") == fires(
        "0 0 * * MON", "UTC", "2026-01-01", "2026-03-01"
    )


def test_equal_ends_names_in_any_case_and_sunday_as_seven():
    assert fires("0 23-23 1 1 *", "UTC", "2026-01-01", "2026-01-02") == ["2026-01-01 23:00"]
    assert fires("0 8-8/3 1 1 *", "UTC", "2026-01-01", "2026-01-02") == ["2026-01-01 08:00"]
    assert fires("0 0 1 aug-Aug *", "UTC", "2026-01-01", "2027-01-01") == ["2026-08-01 00:00"]
    sundays = fires("0 0 * * 0", "UTC", "2026-01-01", "2026-02-01")
    assert len(sundays) == 4
    for spelling in ("7", "sun", "Sun", "7-7", "SUN-sun", "0,7", "6-7/1", "*/7"):
        days = fires(f"0 0 * * {spelling}", "UTC", "2026-01-01", "2026-02-01")
        assert set(days) <= set(fires("0 0 * * 6,0", "UTC", "2026-01-01", "2026-02-01"))
        assert set(sundays) <= set(days), spelling


def test_fields_as_croniter_gets_them():
    cases = [
        ("23-23", 2, "23"),
        ("8-8/3", 2, "8"),
        ("5,10-10,12-14", 1, "5,10,12-14"),
        ("aug-AUG", 4, "aug"),
        ("MON-mon", 5, "MON"),
        ("mon-MON#2", 5, "mon#2"),
        ("7-7", 5, "7"),
        ("0-7", 5, "0-7"),  # not equal ends: every day
        ("5L", 5, "L5"),
        ("L5", 5, "L5"),
        ("5/2", 5, "5-7/2"),
        ("5/2", 1, "5/2"),  # croniter reads it to the field's end
        ("?", 3, "*"),
        ("?", 5, "*"),
        ("?", 1, "?"),  # refused by croniter: minute has no "?"
        ("5-5/0", 1, "5-5/0"),  # a zero step stays for croniter to refuse
        ("5-5/x", 1, "5-5/x"),
    ]
    for value, index, want in cases:
        assert _croniter_field(value, index) == want, (value, index)
    assert _croniter_exprs(("1", "0", "*/10", "*", "2-6")) == ("1 0 */10 * 2-6",)
    assert _croniter_exprs(("0", "0", "13", "*", "FRI")) == ("0 0 13 * *", "0 0 * * FRI")
    assert _croniter_exprs(("0", "0", "*", "*", "1,2#3,5L")) == (
        "0 0 * * 1",
        "0 0 * * 2#3,L5",
    )
    assert _croniter_exprs(("0", "0", "15", "*", "1,2#3")) == (
        "0 0 15 * *",
        "0 0 * * 1",
        "0 0 * * 2#3",
    )
    assert _croniter_exprs(("30", "0", "0", "?", "*", "MON")) == ("0 0 * * MON 30",)
    assert _croniter_exprs(("0", "0", "2-31,L", "*", "*/2,1#1")) == (
        "0 0 2-31 * */2",
        "0 0 2-31 * 1#1",
        "0 0 L * */2",
        "0 0 L * 1#1",
    )


ALIAS_FIRST = {
    "@yearly": "2027-01-01 00:00",
    "@annually": "2027-01-01 00:00",
    "@monthly": "2026-06-01 00:00",
    "@weekly": "2026-05-17 00:00",  # Sunday
    "@daily": "2026-05-15 00:00",
    "@midnight": "2026-05-15 00:00",
    "@hourly": "2026-05-14 13:00",
    "@minutely": "2026-05-14 12:35",
    "@secondly": "2026-05-14 12:34:57",
}


@pytest.mark.parametrize("alias", sorted(ALIAS_FIRST))
def test_aliases(alias: str):
    s = Schedule.parse(alias)
    assert s.next_after(utc("2026-05-14 12:34:56.5")) == utc(ALIAS_FIRST[alias])
    assert s == Schedule.parse(ALIASES[alias])
    assert Schedule.parse(alias.upper()) == s


def test_aliases_cover_quantums_list():
    assert {*ALIASES, "@reboot"} == {
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
        "@minutely",
        "@secondly",
        "@reboot",
    }


def test_reboot_has_no_fire_time():
    s = Schedule.parse("@reboot", BERLIN)
    assert s.reboot
    assert not s.real_time
    assert s.fields == ()
    assert s.next_after(utc("2026-01-01 00:00")) is None
    assert list(s.fire_times(utc("2026-01-01 00:00"), utc("2027-01-01 00:00"))) == []


def test_real_time_is_a_minute_or_hour_field_starting_with_a_star():
    real = ["* 2 * * *", "*/15 2 * * *", "0 * * * *", "0 */2 * * *", "0 0 * * * *", "@hourly"]
    fixed = ["30 2 * * *", "0 1-3 * * *", "0-59 2 * * *", "* 30 2 * * *", "@daily", "0 0 * * *"]
    assert all(Schedule.parse(e).real_time for e in real)
    assert not any(Schedule.parse(e).real_time for e in fixed)


def test_whitespace_is_free():
    assert Schedule.parse("  30\t2 *  * *  ") == Schedule.parse("30 2 * * *")


def test_value_behaviour():
    s = Schedule.parse("*/15 2 * * *", BERLIN)
    assert s == Schedule.parse("*/15 2 * * *", BERLIN)
    assert s != Schedule.parse("*/15 2 * * *", NEW_YORK)
    assert hash(s) == hash(Schedule.parse("*/15 2 * * *", BERLIN))
    assert Schedule.parse("0 * * * *") == Schedule.parse("0 0 * * * *")
    copy = pickle.loads(pickle.dumps(s))
    assert copy == s
    assert copy.next_after(utc("2026-10-25 00:50")) == utc("2026-10-25 01:00")
    assert repr(s) == "Schedule('*/15 2 * * *', timezone='Europe/Berlin')"
    with pytest.raises(AttributeError):
        s.expr = "* * * * *"  # type: ignore[misc]


def test_times_in_and_out():
    s = Schedule.parse("0 * * * *", BERLIN)
    plus5 = timezone(timedelta(hours=5))
    out = s.next_after(datetime(2026, 1, 1, 12, 30, tzinfo=plus5))
    assert out == utc("2026-01-01 08:00")
    assert out is not None and out.tzinfo is UTC
    # A fire time is strictly after t, at any sub-second.
    assert s.next_after(utc("2026-01-01 08:00")) == utc("2026-01-01 09:00")
    assert s.next_after(utc("2026-01-01 07:59:59.999999")) == utc("2026-01-01 08:00")
    with pytest.raises(ValueError, match="naive"):
        s.next_after(datetime(2026, 1, 1))
    # fire_times is [start, end)
    assert fires("0 * * * *", "UTC", "2026-01-01 08:00", "2026-01-01 10:00") == [
        "2026-01-01 08:00",
        "2026-01-01 09:00",
    ]


def test_leap_day_waits_for_a_leap_year():
    assert Schedule.parse("0 0 29 2 *").next_after(utc("2096-03-01")) == utc("2104-02-29 00:00")


# --------------------------------------------------------------------------------------
# errors name the job and the field
# --------------------------------------------------------------------------------------

BAD = [
    ("61 * * * *", "minute", "job 'x': schedule '61 * * * *': minute '61' is not valid"),
    ("* 24 * * *", "hour", "hour '24' is not valid; expected 0-23"),
    ("* * 32 * *", "day of month", "day of month '32' is not valid"),
    ("* * 0 * *", "day of month", "day of month '0' is not valid"),
    ("* * * 13 *", "month", "month '13' is not valid; expected 1-12 or JAN-DEC"),
    ("* * * FOO *", "month", "month 'FOO' is not valid"),
    ("* * * * 8", "day of week", "day of week '8' is not valid"),
    ("60 * * * * *", "second", "second '60' is not valid; expected 0-59"),
    ("* * * * * 8", "day of week", "day of week '8' is not valid"),
    ("*/0 * * * *", "minute", "minute '*/0' is not valid"),
    ("5-1x * * * *", "minute", "minute '5-1x' is not valid"),
    ("? * * * *", "minute", "minute '?' is not valid"),
    ("H * * * *", "minute", "minute 'H' is not valid"),
    ("* * * *", "fields", "schedule '* * * *': 4 fields; expected 5"),
    ("* * * * * * *", "fields", "7 fields; expected 5"),
    ("", "fields", "schedule '': 0 fields"),
    ("@fortnightly", "alias", "schedule '@fortnightly': unknown alias; expected one of @yearly"),
    ("0 0 30 2 *", "expression", "schedule '0 0 30 2 *': never fires"),
    ("0 0 31 4,6,9,11 *", "expression", "never fires"),
    ("0 0 */20 * 0#4", "expression", "never fires"),  # AND-ed: a 1st or 21st, 22nd-28th
    ("5-5/0 * * * *", "minute", "minute '5-5/0' is not valid"),
    ("* * * ? *", "month", "month '?' is not valid"),
    ("* * * * 8L", "day of week", "day of week '8L' is not valid"),
    ("* * * * 1#6", "day of week", "day of week '1#6' is not valid"),
    ("* * * * 1,2#6", "day of week", "day of week '1,2#6' is not valid"),
]


@pytest.mark.parametrize(("expr", "field", "words"), BAD)
def test_bad_expressions_name_job_and_field(expr: str, field: str, words: str):
    with pytest.raises(ScheduleError) as info:
        Schedule.parse(expr, job="x")
    assert info.value.field == field
    assert info.value.job == "x"
    assert str(info.value).startswith("job 'x': ")
    assert words in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_timezone():
    with pytest.raises(ScheduleError) as info:
        Schedule.parse("* * * * *", "Mars/Base", job="x")
    assert str(info.value).startswith("job 'x': timezone 'Mars/Base': unknown")
    assert info.value.field == "timezone"
    for bad in ("../etc/passwd", "", None, "utc "):
        with pytest.raises(ScheduleError, match="timezone"):
            Schedule.parse("* * * * *", bad)  # type: ignore[arg-type]


def test_without_a_job_and_not_a_string():
    with pytest.raises(ScheduleError) as info:
        Schedule.parse("61 * * * *")
    assert str(info.value).startswith("schedule '61 * * * *': minute '61'")
    with pytest.raises(ScheduleError, match="expected a cron expression string"):
        Schedule.parse(5, job="x")  # type: ignore[arg-type]


def test_errors_pickle():
    with pytest.raises(ScheduleError) as info:
        Schedule.parse("61 * * * *", job="x")
    copy = pickle.loads(pickle.dumps(info.value))
    assert (str(copy), copy.job, copy.field, copy.value) == (
        str(info.value),
        "x",
        "minute",
        "61",
    )


# --------------------------------------------------------------------------------------
# DST pins (hand-written, see the module docstring)
# --------------------------------------------------------------------------------------

PINS = [
    # ---- Europe/Berlin, spring forward 2026-03-29: 02:00-02:59 local do not exist
    (BERLIN, "30 2 * * *", "2026-03-28 00:00", "2026-03-31 00:00",
     ["2026-03-28 01:30", "2026-03-29 01:00", "2026-03-30 00:30"]),
    (BERLIN, "0 * * * *", "2026-03-28 22:30", "2026-03-29 03:30",
     ["2026-03-28 23:00", "2026-03-29 00:00", "2026-03-29 01:00", "2026-03-29 02:00",
      "2026-03-29 03:00"]),
    (BERLIN, "*/15 2 * * *", "2026-03-28 00:00", "2026-03-31 00:00",
     ["2026-03-28 01:00", "2026-03-28 01:15", "2026-03-28 01:30", "2026-03-28 01:45",
      "2026-03-30 00:00", "2026-03-30 00:15", "2026-03-30 00:30", "2026-03-30 00:45"]),
    (BERLIN, "0 1-3 * * *", "2026-03-28 00:00", "2026-03-30 22:00",
     ["2026-03-28 00:00", "2026-03-28 01:00", "2026-03-28 02:00",
      "2026-03-29 00:00", "2026-03-29 01:00",
      "2026-03-29 23:00", "2026-03-30 00:00", "2026-03-30 01:00"]),
    (BERLIN, "* 2 * * *", "2026-03-28 12:00", "2026-03-29 23:00", []),
    # ---- Europe/Berlin, fall back 2026-10-25: 02:00-02:59 local happen twice
    (BERLIN, "30 2 * * *", "2026-10-24 00:00", "2026-10-27 00:00",
     ["2026-10-24 00:30", "2026-10-25 00:30", "2026-10-26 01:30"]),
    (BERLIN, "0 * * * *", "2026-10-24 22:30", "2026-10-25 03:30",
     ["2026-10-24 23:00", "2026-10-25 00:00", "2026-10-25 01:00", "2026-10-25 02:00",
      "2026-10-25 03:00"]),
    (BERLIN, "*/15 2 * * *", "2026-10-24 12:00", "2026-10-26 00:00",
     ["2026-10-25 00:00", "2026-10-25 00:15", "2026-10-25 00:30", "2026-10-25 00:45",
      "2026-10-25 01:00", "2026-10-25 01:15", "2026-10-25 01:30", "2026-10-25 01:45"]),
    (BERLIN, "0 1-3 * * *", "2026-10-24 12:00", "2026-10-26 00:00",
     ["2026-10-24 23:00", "2026-10-25 00:00", "2026-10-25 02:00"]),
    (BERLIN, "* 2 * * *", "2026-10-24 12:00", "2026-10-25 23:00",
     minutes("2026-10-25", 0) + minutes("2026-10-25", 1)),
    # ---- America/New_York, spring forward 2026-03-08: 02:00-02:59 local do not exist
    (NEW_YORK, "30 2 * * *", "2026-03-07 00:00", "2026-03-10 00:00",
     ["2026-03-07 07:30", "2026-03-08 07:00", "2026-03-09 06:30"]),
    (NEW_YORK, "0 * * * *", "2026-03-08 04:30", "2026-03-08 09:30",
     ["2026-03-08 05:00", "2026-03-08 06:00", "2026-03-08 07:00", "2026-03-08 08:00",
      "2026-03-08 09:00"]),
    (NEW_YORK, "*/15 2 * * *", "2026-03-07 00:00", "2026-03-10 00:00",
     ["2026-03-07 07:00", "2026-03-07 07:15", "2026-03-07 07:30", "2026-03-07 07:45",
      "2026-03-09 06:00", "2026-03-09 06:15", "2026-03-09 06:30", "2026-03-09 06:45"]),
    (NEW_YORK, "0 1-3 * * *", "2026-03-07 00:00", "2026-03-10 00:00",
     ["2026-03-07 06:00", "2026-03-07 07:00", "2026-03-07 08:00",
      "2026-03-08 06:00", "2026-03-08 07:00",
      "2026-03-09 05:00", "2026-03-09 06:00", "2026-03-09 07:00"]),
    (NEW_YORK, "* 2 * * *", "2026-03-07 12:00", "2026-03-09 05:00", []),
    # ---- America/New_York, fall back 2026-11-01: 01:00-01:59 local happen twice
    (NEW_YORK, "30 2 * * *", "2026-10-31 00:00", "2026-11-03 00:00",
     ["2026-10-31 06:30", "2026-11-01 07:30", "2026-11-02 07:30"]),
    (NEW_YORK, "0 * * * *", "2026-11-01 03:30", "2026-11-01 08:30",
     ["2026-11-01 04:00", "2026-11-01 05:00", "2026-11-01 06:00", "2026-11-01 07:00",
      "2026-11-01 08:00"]),
    (NEW_YORK, "*/15 2 * * *", "2026-10-31 12:00", "2026-11-02 00:00",
     ["2026-11-01 07:00", "2026-11-01 07:15", "2026-11-01 07:30", "2026-11-01 07:45"]),
    (NEW_YORK, "0 1-3 * * *", "2026-10-31 12:00", "2026-11-02 00:00",
     ["2026-11-01 05:00", "2026-11-01 07:00", "2026-11-01 08:00"]),
    (NEW_YORK, "* 2 * * *", "2026-10-31 12:00", "2026-11-02 00:00",
     minutes("2026-11-01", 7)),
    # ---- New York's repeated hour is 01:xx: fixed fires once, wildcard twice
    (NEW_YORK, "30 1 * * *", "2026-10-31 12:00", "2026-11-02 00:00", ["2026-11-01 05:30"]),
    (NEW_YORK, "*/30 1 * * *", "2026-10-31 12:00", "2026-11-02 00:00",
     ["2026-11-01 05:00", "2026-11-01 05:30", "2026-11-01 06:00", "2026-11-01 06:30"]),
    # ---- a fixed job with a second field: the gap's 60 seconds fire once, at 03:00
    (BERLIN, "* 30 2 * * *", "2026-03-29 00:00", "2026-03-29 02:00", ["2026-03-29 01:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("tz", "expr", "start", "end", "expected"), PINS)
def test_dst_pins(tz: str, expr: str, start: str, end: str, expected: list[str]):
    assert fires(expr, tz, start, end) == expected


def test_next_after_inside_a_repeat():
    fixed = Schedule.parse("30 2 * * *", BERLIN)
    # 01:15 UTC is 02:15 CET, the second pass: 02:30 fired at its first occurrence.
    assert fixed.next_after(utc("2026-10-25 01:15")) == utc("2026-10-26 01:30")
    assert fixed.next_after(utc("2026-10-25 00:15")) == utc("2026-10-25 00:30")
    hours = Schedule.parse("0 1-3 * * *", BERLIN)
    assert hours.next_after(utc("2026-10-25 00:00")) == utc("2026-10-25 02:00")
    assert hours.next_after(utc("2026-10-25 01:00")) == utc("2026-10-25 02:00")
    wild = Schedule.parse("*/15 2 * * *", BERLIN)
    # From the first pass the next is still in it; from its end, the second pass.
    assert wild.next_after(utc("2026-10-25 00:20")) == utc("2026-10-25 00:30")
    assert wild.next_after(utc("2026-10-25 00:50")) == utc("2026-10-25 01:00")
    assert wild.next_after(utc("2026-10-25 01:50")) == utc("2026-10-26 01:00")


def test_a_utc_schedule_ignores_every_zone():
    assert fires("30 2 * * *", "UTC", "2026-03-29 00:00", "2026-03-30 00:00") == [
        "2026-03-29 02:30"
    ]


# --------------------------------------------------------------------------------------
# oracle: the cron daemon, minute by minute
# --------------------------------------------------------------------------------------


def matcher(expr: str) -> Callable[[datetime], bool]:
    """Whether a wall time matches a 5-field expression of values, ranges, lists and
    steps (croniter expands the fields; day of month and day of week are OR-ed when both
    are restricted)."""
    (mins, hours, doms, months, dows), _ = croniter.expand(expr)

    def allowed(values: list[Any], value: int) -> bool:
        return values == ["*"] or value in values

    def match(w: datetime) -> bool:
        dom, dow = allowed(doms, w.day), allowed(dows, w.isoweekday() % 7)
        day = dom or dow if "*" not in (doms[0], dows[0]) else dom and dow
        return (
            allowed(mins, w.minute) and allowed(hours, w.hour) and allowed(months, w.month) and day
        )

    return match


def vixie(expr: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    """Fire times of a 5-field job as Vixie cron's daemon produces them, waking each
    real minute: a wildcard job runs when the wall clock matches now; a fixed-time job
    runs once for every wall minute the clock moved past since it last woke (none when
    the clock went back)."""
    zone = ZoneInfo(tz)
    minute, hour = expr.split()[:2]
    wildcard = minute.startswith("*") or hour.startswith("*")
    match = matcher(expr)

    def wall(u: datetime) -> datetime:
        return u.astimezone(zone).replace(tzinfo=None)

    out = []
    seen = wall(start - MINUTE)
    u = start
    while u < end:
        now = wall(u)
        if wildcard:
            hit = match(now)
        else:
            hit, m = False, seen + MINUTE
            while m <= now:
                hit = hit or match(m)
                m += MINUTE
            seen = max(seen, now)
        if hit:
            out.append(u)
        u += MINUTE
    return out


def transitions(tz: str, year: int = 2026) -> list[datetime]:
    zone, out = ZoneInfo(tz), []
    t = datetime(year, 1, 1, tzinfo=UTC)
    while t.year == year:
        nxt = t + timedelta(minutes=30)
        if nxt.astimezone(zone).utcoffset() != t.astimezone(zone).utcoffset():
            out.append(nxt)
        t = nxt
    return out


ZONES = [BERLIN, NEW_YORK, "Australia/Lord_Howe", "America/Santiago", "Pacific/Chatham"]
TRANSITIONS = {tz: transitions(tz) for tz in ZONES}
MINUTE_EXPRS = [
    "30 2 * * *",
    "0 * * * *",
    "*/15 2 * * *",
    "0 1-3 * * *",
    "* 2 * * *",
    "30 1 * * *",
    "0 0 * * *",
    "59 23 * * *",
    "5,35 1-3 * * *",
    "*/20 0-3 * * *",
    "0 */2 * * *",
    "15 2-3 * * 0",
    "45 1 * * *",
    "0,30 * * * *",
]


@settings(max_examples=300, deadline=None)
@given(
    tz=st.sampled_from(ZONES),
    which=st.integers(0, 1),
    expr=st.sampled_from(MINUTE_EXPRS),
    lead=st.integers(0, 300),
)
def test_fire_times_match_the_cron_daemon(tz: str, which: int, expr: str, lead: int):
    transition = TRANSITIONS[tz][which]
    start = transition - timedelta(minutes=lead + 120)
    end = transition + timedelta(hours=4)
    assert list(Schedule.parse(expr, tz).fire_times(start, end)) == vixie(expr, tz, start, end)


# --------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------

ANY_EXPRS = [*MINUTE_EXPRS, "* 30 2 * * *", "*/7 * 2 * * *", "0 0 1 * *", "@secondly"]


@st.composite
def near_a_transition(draw: st.DrawFn) -> tuple[str, datetime]:
    tz = draw(st.sampled_from([*ZONES, "UTC", "Asia/Kolkata"]))
    anchors = TRANSITIONS.get(tz) or [datetime(2026, 6, 1, tzinfo=UTC)]
    anchor = draw(st.sampled_from(anchors))
    seconds = draw(st.integers(-4 * 3600, 4 * 3600))
    return tz, anchor + timedelta(seconds=seconds, microseconds=draw(st.integers(0, 999_999)))


@settings(max_examples=150, deadline=None)
@given(expr=st.sampled_from(ANY_EXPRS), where=near_a_transition(), frac=st.floats(0, 1))
def test_next_after_is_the_next_fire_time(expr: str, where: tuple[str, datetime], frac: float):
    tz, t = where
    s = Schedule.parse(expr, tz)
    first = s.next_after(t)
    assert first is not None and first > t and first.microsecond == 0
    second = s.next_after(first)
    assert second is not None and second > first
    # No fire time lies between t and first: from anywhere before it, first is next.
    probe = t + (first - t) * frac
    if probe < first:
        assert s.next_after(probe) == first


@settings(max_examples=60, deadline=None)
@given(
    expr=st.sampled_from(MINUTE_EXPRS),
    where=near_a_transition(),
    cuts=st.lists(st.integers(0, 6 * 3600), max_size=4),
)
def test_no_tick_is_returned_twice_across_any_split(
    expr: str, where: tuple[str, datetime], cuts: list[int]
):
    tz, start = where
    s = Schedule.parse(expr, tz)
    end = start + timedelta(hours=6)
    whole = list(s.fire_times(start, end))
    points = [start, *sorted(start + timedelta(seconds=c) for c in cuts), end]
    pieces = [t for a, b in itertools.pairwise(points) for t in s.fire_times(a, b)]
    assert pieces == whole
    assert len(set(whole)) == len(whole)
    assert all(a < b for a, b in itertools.pairwise(whole))
