"""croniter's answers that are not cron's, and ``Schedule``'s guard for each.

croniter (7.0.0) parses ``Schedule``'s fields and finds the next matching wall time;
``otpkit.scheduler._schedule`` hands it the fields in a form where its answer is
Vixie/Debian cron's (``_croniter_field``, ``_croniter_exprs``). Each bug has two tests:
``test_croniter_...`` asserts croniter's own wrong answer as of today, so that an
upgrade that fixes or changes it fails here - then re-check the guard named in the
test's docstring in ``_schedule.py`` (it may have become unneeded, or wrong) - and
``test_schedule_...`` asserts the right answer through ``Schedule``. The right answers
are from crontab(5) and Debian's ``entry.c``/``cron.c``, worked out by hand with a
calendar (2026-01-01 is a Thursday).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from croniter import CroniterBadDateError, CroniterError, croniter

from otpkit.scheduler import Schedule

START = datetime(2026, 1, 1)


def raw(expr: str, count: int = 4, **kwargs: bool) -> list[str]:
    """croniter's next ``count`` fire times from 2026-01-01 00:00, as text."""
    it = croniter(expr, START, **kwargs)
    return [f"{it.get_next(datetime):%Y-%m-%d %H:%M}" for _ in range(count)]


def fires(expr: str, count: int = 4) -> list[str]:
    """``Schedule``'s next ``count`` fire times from 2026-01-01 00:00 UTC, as text."""
    schedule, out, t = Schedule.parse(expr), [], datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(count):
        nxt = schedule.next_after(t)
        assert nxt is not None
        out.append(f"{nxt:%Y-%m-%d %H:%M}")
        t = nxt
    return out


# --------------------------------------------------------------------------------------
# 1. A range whose two ends are equal is read as the whole field.
# --------------------------------------------------------------------------------------


def test_croniter_reads_an_equal_end_range_as_the_whole_field():
    """croniter widens ``a-a`` (and ``a-a/n``, ``MON-MON#k``) to the field's whole range
    on purpose (its comment: an equal range "means the whole cycle"). Guard:
    ``_croniter_term`` gives croniter the one value. If this fails, croniter changed:
    re-check that guard."""
    assert raw("* 23-23 * * *") == [  # every minute, not only in hour 23
        "2026-01-01 00:01",
        "2026-01-01 00:02",
        "2026-01-01 00:03",
        "2026-01-01 00:04",
    ]
    assert raw("0 0 1 8-8 *", 1) == ["2026-02-01 00:00"]  # February for August
    assert raw("0 0 * * 5-5", 2) == ["2026-01-02 00:00", "2026-01-03 00:00"]  # any day
    assert raw("0 8-8/3 * * *", 2) == ["2026-01-01 03:00", "2026-01-01 06:00"]  # 0-23/3
    assert raw("0 0 * * MON-MON#2", 2) == ["2026-01-08 00:00", "2026-01-09 00:00"]


def test_schedule_reads_an_equal_end_range_as_its_one_value():
    assert fires("* 23-23 * * *", 2) == ["2026-01-01 23:00", "2026-01-01 23:01"]
    assert fires("0 0 1 8-8 *", 1) == ["2026-08-01 00:00"]
    assert fires("0 0 * * 5-5", 2) == ["2026-01-02 00:00", "2026-01-09 00:00"]  # Fridays
    assert fires("0 8-8/3 * * *", 2) == ["2026-01-01 08:00", "2026-01-02 08:00"]
    assert fires("0 0 * * MON-MON#2", 2) == ["2026-01-12 00:00", "2026-02-09 00:00"]
    assert fires("0 0 * jan-JAN 7-7", 2) == ["2026-01-04 00:00", "2026-01-11 00:00"]
    assert fires("52-56 8-18/3 * * 5-5", 6)[4:] == ["2026-01-02 08:56", "2026-01-02 11:52"]


# --------------------------------------------------------------------------------------
# 2. Day of month and day of week: OR-ed even when one starts with "*".
# --------------------------------------------------------------------------------------


def test_croniter_ors_the_day_fields_when_one_starts_with_a_star():
    """With its default ``day_or=True`` croniter OR-s day of month and day of week
    whenever both are restricted; Vixie cron AND-s them when either field starts with
    ``*`` (``DOM_STAR``/``DOW_STAR`` in ``entry.c``, tested in ``cron.c``). croniter's
    ``implement_cron_bug=True`` follows cron for this, ``day_or=False`` always AND-s.
    Guard: ``_croniter_exprs`` decides AND or OR itself and reads every expression with
    ``day_or=False``. If this fails, croniter changed: re-check that guard."""
    assert raw("1 0 */10 * 2-6", 3) == [  # the 1st, then any Tuesday to Saturday
        "2026-01-01 00:01",
        "2026-01-02 00:01",
        "2026-01-03 00:01",
    ]
    assert raw("1 0 */10 * 2-6", 3, day_or=False) == [
        "2026-01-01 00:01",
        "2026-01-21 00:01",
        "2026-01-31 00:01",
    ]


def test_schedule_ands_the_day_fields_when_one_starts_with_a_star():
    # the 1st, 11th, 21st and 31st that fall on Tuesday to Saturday
    assert fires("1 0 */10 * 2-6") == [
        "2026-01-01 00:01",  # Thursday
        "2026-01-21 00:01",  # Wednesday
        "2026-01-31 00:01",  # Saturday
        "2026-02-11 00:01",  # Wednesday
    ]
    assert fires("0 0 13 * */5", 3) == [  # a 13th that is a Sunday or a Friday
        "2026-02-13 00:00",
        "2026-03-13 00:00",
        "2026-09-13 00:00",
    ]
    assert fires("0 0 13 * FRI", 3) == [  # neither starts with "*": either
        "2026-01-02 00:00",
        "2026-01-09 00:00",
        "2026-01-13 00:00",
    ]


# --------------------------------------------------------------------------------------
# 3. Day of week "#" or "L" with a restricted day of month: AND-ed, or no date at all.
# --------------------------------------------------------------------------------------


def test_croniter_ands_nth_and_last_weekdays_with_the_day_of_month():
    """croniter keeps ``#`` and ``L`` terms apart from the day-of-week field, so its
    ``day_or=True`` split still applies them to the day-of-month side: ``0 0 15 * 5#3``
    (the 15th, or the third Friday) fires on third Fridays only, and ``0 0 15 * L5``
    (the 15th, or the last Friday) finds no date at all. Guard:
    ``_croniter_exprs`` gives croniter each side of the OR as an expression of its own.
    If this fails, croniter changed: re-check that guard."""
    assert raw("0 0 15 * 5#3", 2) == ["2026-01-16 00:00", "2026-02-20 00:00"]
    with pytest.raises(CroniterBadDateError):
        raw("0 0 15 * L5", 1)


def test_schedule_ors_nth_and_last_weekdays_with_the_day_of_month():
    assert fires("0 0 15 * 5#3", 3) == [
        "2026-01-15 00:00",
        "2026-01-16 00:00",  # third Friday
        "2026-02-15 00:00",
    ]
    assert fires("0 0 15 * L5", 3) == [
        "2026-01-15 00:00",
        "2026-01-30 00:00",  # last Friday
        "2026-02-15 00:00",
    ]
    # with a "*" they are AND-ed, as any day-of-week term: a 1st, 16th or 31st that is
    # a third Friday (15th to 21st), so a 16th
    assert fires("0 0 */15 * 5#3", 2) == ["2026-01-16 00:00", "2026-10-16 00:00"]


# --------------------------------------------------------------------------------------
# 4. "nL" (Quartz's spelling of the last weekday n) is refused.
# --------------------------------------------------------------------------------------


def test_croniter_refuses_quartzs_last_weekday_spelling():
    """croniter spells "the last Friday" ``L5`` and refuses Quartz's ``5L``, which
    ``Schedule``'s error messages have always named. Guard: ``_croniter_term`` turns
    ``nL`` into ``Ln``. If this fails, croniter changed: re-check that guard (that
    croniter's ``5L``, if it now reads one, is the last Friday)."""
    with pytest.raises(CroniterError):
        raw("0 0 * * 5L", 1)
    assert raw("0 0 * * L5", 1) == ["2026-01-30 00:00"]


def test_schedule_reads_both_spellings_of_the_last_weekday():
    assert fires("0 0 * * 5L", 2) == ["2026-01-30 00:00", "2026-02-27 00:00"]
    assert fires("0 0 * * 5l", 2) == fires("0 0 * * L5", 2) == fires("0 0 * * 5L", 2)
    assert fires("0 0 * * 0L", 1) == fires("0 0 * * 7L", 1) == ["2026-01-25 00:00"]


# --------------------------------------------------------------------------------------
# 5. Plain day-of-week terms mixed with "#" or "L" terms.
# --------------------------------------------------------------------------------------


def test_croniter_cannot_mix_plain_and_nth_weekdays():
    """croniter refuses a day-of-week list that mixes plain days with ``#``/``L`` terms
    (``1,2#3``), and when every plain day is also a ``#``/``L`` day (``5,5#3``) it
    accepts the list and drops the plain days. Guard: ``_parts`` gives it
    the two kinds in expressions of their own. If this fails, croniter changed:
    re-check that guard."""
    with pytest.raises(CroniterError):
        raw("0 0 * * 1,2#3", 1)
    assert raw("0 0 * * 5,5#3", 2) == ["2026-01-16 00:00", "2026-02-20 00:00"]


def test_schedule_mixes_plain_and_nth_weekdays():
    assert fires("0 0 * * 5,5#3", 3) == [  # every Friday
        "2026-01-02 00:00",
        "2026-01-09 00:00",
        "2026-01-16 00:00",
    ]
    assert fires("0 0 * 1 1,2#3", 4) == [  # January's Mondays and its third Tuesday
        "2026-01-05 00:00",
        "2026-01-12 00:00",
        "2026-01-19 00:00",
        "2026-01-20 00:00",
    ]
    assert fires("0 0 * * SAT,L1", 3) == [
        "2026-01-03 00:00",
        "2026-01-10 00:00",
        "2026-01-17 00:00",
    ]
    assert fires("0 0 * 1 SAT,L1", 6)[4:] == ["2026-01-26 00:00", "2026-01-31 00:00"]


# --------------------------------------------------------------------------------------
# 6. A day of week "a/n" stops at 6.
# --------------------------------------------------------------------------------------


def test_croniter_stops_a_day_of_week_start_and_step_at_saturday():
    """croniter reads ``a/n`` as ``a``-to-the-field's-end``/n`` and ends day of week at
    6, where ``*`` (``*/n``) ends at 7 in Vixie cron: ``5/2`` is Friday only, where
    ``5-7/2`` is Friday and Sunday. (Vixie cron has no ``a/n``; cronsim and Quartz end
    it at the last day number.) Guard: ``_croniter_term`` writes ``a-7/n``. If this
    fails, croniter changed: re-check that guard."""
    assert raw("0 0 * * 5/2", 2) == ["2026-01-02 00:00", "2026-01-09 00:00"]


def test_schedule_ends_a_day_of_week_start_and_step_at_seven():
    assert fires("0 0 * * 5/2", 3) == [  # Friday and Sunday
        "2026-01-02 00:00",
        "2026-01-04 00:00",
        "2026-01-09 00:00",
    ]
    assert fires("0 0 * * 5/2", 6) == fires("0 0 * * 5-7/2", 6)


# --------------------------------------------------------------------------------------
# 7. Thirty days of month and "L" are read as every day.
# --------------------------------------------------------------------------------------


def test_croniter_reads_thirty_days_and_last_as_every_day():
    """croniter counts ``L`` as one more day of month, so a list of 30 days and ``L``
    (``2-31,L``: not the 1st) has 31 entries, which it reads as ``*`` - the 1st
    included - when day of week is ``*``. Guard: ``_parts`` gives croniter ``L`` in an
    expression of its own. If this fails, croniter changed: re-check that guard."""
    assert croniter.expand("19 2 2-31,L * *")[0][2] == ["*"]
    assert raw("0 0 2-31,L * *", 31)[29:] == ["2026-01-31 00:00", "2026-02-01 00:00"]
    assert raw("0 0 1-15,17-31,L * *", 15)[13:] == ["2026-01-15 00:00", "2026-01-16 00:00"]


def test_schedule_reads_thirty_days_and_last_as_those_days():
    assert fires("0 0 2-31,L * *", 31)[29:] == ["2026-01-31 00:00", "2026-02-02 00:00"]
    assert fires("0 0 1-15,17-31,L * *", 15)[13:] == ["2026-01-15 00:00", "2026-01-17 00:00"]
    # and OR-ed with a day of week: the 2nd to the last, or a 1st that is a Thursday
    assert fires("0 0 2-31,L * THU", 31)[29:] == ["2026-01-31 00:00", "2026-02-02 00:00"]
    september = fires("0 0 2-31,L 9,10 THU", 30)  # 2026-09-01 is a Tuesday
    assert september[0] == "2026-09-02 00:00"
    assert september[28:] == ["2026-09-30 00:00", "2026-10-01 00:00"]
