"""A job's schedule: a cron expression in a time zone, and its fire times in UTC.

Pure: no clock is read here. Every time in and out is an aware ``datetime``; fire times
are whole seconds in UTC.

Forms (Quantum's, which are Quartz's order): 5 fields ``minute hour day-of-month month
day-of-week``; 6 fields with the **second first**; or an alias: ``@yearly`` =
``@annually`` (``0 0 1 1 *``), ``@monthly`` (``0 0 1 * *``), ``@weekly``
(``0 0 * * 0``), ``@daily`` = ``@midnight`` (``0 0 * * *``), ``@hourly`` (``0 * * * *``),
``@minutely`` (``* * * * *``), ``@secondly`` (``* * * * * *``), and ``@reboot``: no
fire time at all (``reboot`` is true; the scheduler runs it once per cluster start).

The fields mean what crontab(5) of Vixie cron (Debian's cron) says: values, ranges
``a-b`` (``23-23`` is 23), steps ``*/n`` and ``a-b/n``, lists, month and day names
(``JAN``-``DEC``, ``SUN``-``SAT``, any case), day of week 0-7 with 0 and 7 both Sunday.
Day of month and day of week: when either field starts with ``*`` a day must match both
(``1 0 */10 * 2-6``: the 1st, 11th, 21st and 31st that fall on Tuesday to Saturday),
otherwise either (``0 0 13 * FRI``: every 13th and every Friday). A 6-field expression's
second matches on its own, under the same rules for the rest. Beyond Vixie cron: ``L``
in day of month (its last day), ``nL`` (or ``Ln``) and ``n#k`` in day of week (the last
weekday ``n`` of the month, its ``k``-th), each a term of its field under the same
day rule, and in one list with plain days (``1,2#3``: Mondays and the third Tuesday);
``?`` (Quartz's "no value") in day of month or day of week is ``*``, so ``0 0 ? * MON``
is every Monday; ``a/n`` steps from ``a`` to the field's last value (7 in day of week,
as for ``*/n``); a range ``a-b`` with ``b`` below ``a`` wraps (``22-2`` hours: 22, 23,
0, 1, 2). croniter parses the fields and finds the next matching wall time;
``_croniter_field`` and ``_croniter_exprs`` give it the fields in the form where it
answers as above (``tests/unit/test_croniter_bugs.py`` pins each place croniter alone
answers otherwise).

Daylight saving time follows Vixie cron (``cron.c``). A job whose minute or hour field
starts with ``*`` (``*``, ``*/n``; ``real_time`` is true) follows real time: it fires at
every instant whose local wall-clock time matches - in each real pass of an hour that
fall-back repeats, and not at all at wall times a spring-forward gap skips (no real
instant has them). Any other job fires once per matching wall-clock time: at its first
occurrence when fall-back makes it ambiguous, and at the first instant after the gap
(the transition itself) when spring-forward skips it. Several wall times that land on
one instant (02:00 in a gap and 03:00 after it, for ``0 1-3 * * *``) fire once there:
fire times are instants, strictly increasing.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from otpkit.errors import OtpkitError

__all__ = ["ALIASES", "FIELDS", "Schedule", "ScheduleError"]

#: The fields of a 6-field expression, in order (a 5-field one has no ``second``).
FIELDS = ("second", "minute", "hour", "day of month", "month", "day of week")

_EXPECTED = (
    "0-59",
    "0-59",
    "0-23",
    "1-31, L or ?",
    "1-12 or JAN-DEC",
    "0-7, SUN-SAT, n#k, nL or ?",
)

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
    "@minutely": "* * * * *",
    "@secondly": "* * * * * *",
}
_REBOOT = "@reboot"
_SECOND = timedelta(seconds=1)
_UTC_NAMES = frozenset({"UTC", "Etc/UTC"})


class ScheduleError(OtpkitError, ValueError):
    """A schedule or its time zone is not valid; ``job``, ``field`` and ``value`` name it.

    ``field`` is one of :data:`FIELDS`, ``"fields"`` (their count), ``"alias"``,
    ``"expression"`` (fields valid alone that never meet, as ``0 0 30 2 *``) or
    ``"timezone"``. The message reads ``job 'x': schedule '61 * * * *': minute '61' ...``.
    """

    def __init__(self, job: Any, field: str, value: Any, message: str) -> None:
        where = f"job {job!r}: " if job is not None else ""
        super().__init__(f"{where}{message}")
        self.job = job
        self.field = field
        self.value = value


def load_zone(timezone: Any, job: Any = None) -> ZoneInfo:
    """The ``ZoneInfo`` of an IANA zone name; :class:`ScheduleError` naming it if unknown."""
    if not isinstance(timezone, str) or not timezone:
        raise ScheduleError(
            job, "timezone", timezone, f"timezone {timezone!r}: expected an IANA zone name"
        )
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:  # ValueError: not a zone key at all
        raise ScheduleError(
            job,
            "timezone",
            timezone,
            f"timezone {timezone!r}: unknown; expected an IANA zone name "
            f"such as 'UTC' or 'Europe/Berlin'",
        ) from exc


def _croniter_form(fields: tuple[str, ...]) -> str:
    """croniter's order: it takes a sixth field as the second, last."""
    if len(fields) == 5:
        return " ".join(fields)
    return " ".join((*fields[1:], fields[0]))


_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTHS = {name: i for i, name in enumerate(_MONTH_NAMES, 1)}
_DAYS = {name: i for i, name in enumerate(_DAY_NAMES)}
#: A range term: its two ends, then an optional step and (day of week) ``#k``.
_RANGE = re.compile(r"([^-/#]+)-([^-/#]+)(?:/([1-9][0-9]*))?(#[^#]*)?", re.ASCII)
_LAST_DAY = re.compile(r"([0-7])[lL]", re.ASCII)
_START_STEP = re.compile(r"([^-/#*]+)/([^/]*)", re.ASCII)


def _number(text: str, names: dict[str, int]) -> int | None:
    """A field value's number (digits or a name, any case); None if it is neither."""
    if text.isascii() and text.isdigit():
        return int(text)
    return names.get(text.lower())


def _croniter_term(term: str, index: int) -> str:
    """One term of a field's list: see :func:`_croniter_field`."""
    if index == 5:
        start = _START_STEP.fullmatch(term)
        if start is not None:
            term = f"{start[1]}-7/{start[2]}"
        if _LAST_DAY.fullmatch(term):
            return "L" + term[0]
    bounds = _RANGE.fullmatch(term)
    if bounds is not None:
        names = _MONTHS if index == 4 else _DAYS if index == 5 else {}
        low, high = _number(bounds[1], names), _number(bounds[2], names)
        if low is not None and low == high:
            return bounds[1] + (bounds[4] or "")
    return term


def _croniter_field(value: str, index: int) -> str:
    """A field (``index`` into :data:`FIELDS`) as croniter must see it to read it as the
    module says: ``?`` is ``*``; a range whose two ends are one value (``23-23``,
    ``8-8/3``, ``MON-mon``, ``MON-MON#2``) is that value, which croniter would read as
    the whole field; in day of week, ``nL`` is croniter's ``Ln`` and ``a/n`` is
    ``a-7/n`` (croniter stops at 6, Saturday). Anything else is left for croniter to
    accept or refuse."""
    if value == "?" and index in (3, 5):
        return "*"
    return ",".join(_croniter_term(term, index) for term in value.split(","))


def _parts(value: str, index: int) -> list[str]:
    """A day field (as :func:`_croniter_field` gives it) split where croniter cannot
    mix its terms: values, ranges and steps in one part, ``L`` terms (and in day of week
    ``#`` terms) in the other. In day of week croniter refuses the mix, or drops the
    plain days that are also ``#`` or ``L`` days; in day of month it counts ``L`` as a
    day, so 30 days and ``L`` (``2-31,L``) are "all 31": every day."""
    if index not in (3, 5):
        return [value]
    plain: list[str] = []
    special: list[str] = []
    for term in value.split(","):
        last = term[:1] in ("l", "L") or (index == 5 and "#" in term)
        (special if last else plain).append(term)
    return [",".join(part) for part in (plain, special) if part]


def _croniter_exprs(fields: tuple[str, ...]) -> tuple[str, ...]:
    """The croniter expressions (read with ``day_or=False``: every field must match)
    whose matches together are the schedule's. When day of month or day of week starts
    with ``*`` (or is ``?``) a day matches both: one expression per pair of their
    :func:`_parts`. Otherwise either: one per day-of-month part with day of week ``*``,
    and one per day-of-week part with day of month ``*``. (croniter's own
    ``day_or=True`` OR-s the two fields whenever both are restricted, ``*/10`` with
    ``2-6`` too, and AND-s them when day of week has ``#`` or ``L``.)"""
    offset = 6 - len(fields)
    *rest, dom, month, dow = (_croniter_field(v, i + offset) for i, v in enumerate(fields))
    dom_parts, dow_parts = _parts(dom, 3), _parts(dow, 5)
    if dom.startswith("*") or dow.startswith("*"):
        days = [(d, w) for d in dom_parts for w in dow_parts]
    else:
        days = [*((d, "*") for d in dom_parts), *(("*", w) for w in dow_parts)]
    return tuple(_croniter_form((*rest, d, month, w)) for d, w in days)


def _check_fields(expr: str, fields: tuple[str, ...], job: Any) -> tuple[str, ...]:
    """Each field alone, then the whole: the first error names its field. Returns the
    croniter expressions of :func:`_croniter_exprs` that ever match."""
    names = FIELDS if len(fields) == 6 else FIELDS[1:]
    expected = _EXPECTED if len(fields) == 6 else _EXPECTED[1:]
    offset = 6 - len(fields)
    for i, value in enumerate(fields):
        given = _croniter_field(value, i + offset)
        for part in _parts(given, i + offset):
            probe = ["*"] * len(fields)
            probe[i] = part
            try:
                croniter(_croniter_form(tuple(probe)))
            except CroniterError as exc:
                raise ScheduleError(
                    job,
                    names[i],
                    value,
                    f"schedule {expr!r}: {names[i]} {value!r} is not valid; expected "
                    f"{expected[i]}, as a value, range, list or step",
                ) from exc
    firing = []
    for text in _croniter_exprs(fields):
        try:
            croniter(text, datetime(2000, 1, 1), day_or=False).get_next(datetime)
        except CroniterBadDateError:
            continue  # this part never matches: another may
        except CroniterError as exc:
            raise ScheduleError(
                job, "expression", expr, f"schedule {expr!r}: not valid ({exc})"
            ) from exc
        firing.append(text)
    if not firing:
        raise ScheduleError(
            job,
            "expression",
            expr,
            f"schedule {expr!r}: never fires (no date has its day of month, month and "
            f"day of week); expected a date that exists",
        )
    return tuple(firing)


#: Parsed schedules by (expression, zone): checking an expression takes about a
#: millisecond (croniter), and 10,000 jobs often share a few expressions.
_PARSED: dict[tuple[str, str], Schedule] = {}
_PARSED_MAX = 100_000


class Schedule:
    """A parsed cron expression in a time zone; build it with :meth:`parse`.

    Attributes (read-only): ``expr`` (as given), ``timezone`` (IANA name), ``fields``
    (six strings, second first; ``"0"`` for a 5-field expression's second; empty for
    ``@reboot``), ``reboot``, ``real_time`` (the minute or hour field starts with ``*``:
    see the module's DST rule). Equal schedules have equal fields and zone. Pickles as its
    expression and zone.
    """

    __slots__ = (
        "_crons",
        "_lock",
        "_utc",
        "_zone",
        "expr",
        "fields",
        "real_time",
        "reboot",
        "timezone",
    )

    expr: str
    timezone: str
    fields: tuple[str, ...]
    reboot: bool
    real_time: bool
    _zone: ZoneInfo
    _utc: bool
    _crons: tuple[Any, ...]
    _lock: threading.Lock

    def __init__(
        self,
        expr: str,
        timezone: str,
        fields: tuple[str, ...],
        zone: ZoneInfo,
        crons: tuple[str, ...] = (),
    ) -> None:
        """Private: use :meth:`parse`, which validates (``crons``: see
        :func:`_check_fields`)."""
        for slot, value in (
            ("expr", expr),
            ("timezone", timezone),
            ("fields", (("0", *fields) if len(fields) == 5 else fields)),
            ("reboot", not fields),
            ("real_time", bool(fields) and any(f.startswith("*") for f in fields[-5:-3])),
            ("_zone", zone),
            ("_utc", timezone in _UTC_NAMES),
            ("_crons", tuple(croniter(text, day_or=False) for text in crons)),
            ("_lock", threading.Lock()),
        ):
            object.__setattr__(self, slot, value)

    @classmethod
    def parse(cls, expr: str, timezone: str = "UTC", job: Any = None) -> Schedule:
        """Parse ``expr`` (5 fields, 6 with the second first, or an alias) in ``timezone``.

        Raises:
            ScheduleError: naming ``job`` (when given) and the bad field: a value out of
                range or malformed, a wrong field count, an unknown alias, fields that
                never meet, or an unknown time zone.
        """
        if not isinstance(expr, str):
            raise ScheduleError(
                job, "expression", expr, f"schedule {expr!r}: expected a cron expression string"
            )
        cache_key = (expr, timezone) if isinstance(timezone, str) else None
        cached = _PARSED.get(cache_key) if cache_key is not None else None
        if cached is not None:
            return cached  # immutable: shared by every job with this schedule
        parsed = cls._parse(expr, timezone, job)
        if cache_key is not None:
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.clear()
            _PARSED[cache_key] = parsed
        return parsed

    @classmethod
    def _parse(cls, expr: str, timezone: str, job: Any) -> Schedule:
        zone = load_zone(timezone, job)
        text = " ".join(expr.split())
        if text.startswith("@"):
            alias = text.lower()
            if alias == _REBOOT:
                return cls(expr, timezone, (), zone)
            if alias not in ALIASES:
                raise ScheduleError(
                    job,
                    "alias",
                    expr,
                    f"schedule {expr!r}: unknown alias; expected one of "
                    f"{', '.join([*ALIASES, _REBOOT])}",
                )
            text = ALIASES[alias]
        fields = tuple(text.split())
        if len(fields) not in (5, 6):
            raise ScheduleError(
                job,
                "fields",
                expr,
                f"schedule {expr!r}: {len(fields)} fields; expected 5 (minute hour "
                f"day-of-month month day-of-week), 6 (second first) or an @alias",
            )
        crons = _check_fields(expr, fields, job)
        return cls(expr, timezone, fields, zone, crons)

    # ------------------------------------------------------------------ value behaviour

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Schedule is immutable (tried to set {name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return (self.fields, self.timezone) == (other.fields, other.timezone)

    def __hash__(self) -> int:
        return hash((self.fields, self.timezone))

    def __repr__(self) -> str:
        return f"Schedule({self.expr!r}, timezone={self.timezone!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return Schedule.parse, (self.expr, self.timezone)

    # ------------------------------------------------------------------ fire times

    def next_after(self, t: datetime) -> datetime | None:
        """The first fire time strictly after ``t``, in UTC; None for ``@reboot``.

        Raises:
            ValueError: ``t`` is naive.
        """
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError(f"next_after needs an aware datetime, got naive {t!r}")
        if self.reboot:
            return None
        # Fire times are whole seconds: after t is after t's second.
        t = t.astimezone(UTC).replace(microsecond=0)
        with self._lock:
            if self._utc:
                return self._cron_next(t.replace(tzinfo=None)).replace(tzinfo=UTC)
            if self.real_time:
                return self._next_real_time(t)
            return self._next_wall_time(t)

    def fire_times(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """The fire times in ``[start, end)``, in order (none for ``@reboot``)."""
        t = self.next_after(start - timedelta(microseconds=1))
        while t is not None and t < end:
            yield t
            t = self.next_after(t)

    # ------------------------------------------------------------------ internals
    # Walls are naive local wall-clock datetimes; instants are aware UTC datetimes.

    def _cron_next(self, wall: datetime) -> datetime:
        """The first wall time after ``wall`` that matches (croniter on naive times does
        plain calendar arithmetic: no DST)."""
        first: datetime | None = None
        for cron in self._crons:
            cron.set_current(wall, force=True)
            nxt: datetime = cron.get_next(datetime)
            if first is None or nxt < first:
                first = nxt
        assert first is not None  # a parsed schedule other than @reboot has a croniter
        return first

    def _wall(self, instant: datetime) -> datetime:
        return instant.astimezone(self._zone).replace(tzinfo=None)

    def _instants(self, wall: datetime) -> list[datetime]:
        """The instants showing ``wall``, in order: none in a gap, two in a repeat."""
        found: list[datetime] = []
        for fold in (0, 1):
            instant = wall.replace(tzinfo=self._zone, fold=fold).astimezone(UTC)
            if self._wall(instant) == wall and instant not in found:
                found.append(instant)
        return sorted(found)

    def _transition(self, before: datetime, after: datetime) -> datetime:
        """The first whole second in ``(before, after]`` with ``after``'s UTC offset;
        ``before`` has another, and one transition lies between them."""
        offset = after.astimezone(self._zone).utcoffset()
        low, high = 0, int((after - before).total_seconds())
        while high - low > 1:
            mid = (low + high) // 2
            if (before + timedelta(seconds=mid)).astimezone(self._zone).utcoffset() == offset:
                high = mid
            else:
                low = mid
        return before + timedelta(seconds=high)

    def _gap_end(self, wall: datetime) -> datetime:
        """The instant a spring-forward gap holding ``wall`` ends (the transition)."""
        a, b = (wall.replace(tzinfo=self._zone, fold=f).astimezone(UTC) for f in (0, 1))
        return self._transition(min(a, b), max(a, b))

    def _next_wall_time(self, t: datetime) -> datetime:
        """Fixed-time job: each matching wall time fires at the first instant whose wall
        clock has reached it, so the next fire is the first match past the highest wall
        time shown up to ``t``."""
        highest = self._wall(t)
        if t.astimezone(self._zone).fold == 1:
            # t is in the second pass of a repeat: the clock has already shown every wall
            # time up to the one just before the transition.
            first_pass = self._instants(highest)[0]
            highest = self._wall(self._transition(first_pass, t) - _SECOND)
        wall = self._cron_next(highest)
        instants = self._instants(wall)
        return instants[0] if instants else self._gap_end(wall)

    def _next_real_time(self, t: datetime) -> datetime:
        """Wildcard job: the first instant after ``t`` whose wall clock matches."""
        wall_t = self._wall(t)
        second_pass: datetime | None = None
        twins = self._instants(wall_t)
        if len(twins) == 2 and t == twins[0]:
            # t is in the first pass of a repeat: matches already passed come again
            # after the transition, before any later wall time past the repeat.
            transition = self._transition(t, twins[1])
            match = self._cron_next(self._wall(transition) - _SECOND)
            if match <= wall_t:
                second_pass = self._instants(match)[1]
        wall = wall_t
        while True:
            wall = self._cron_next(wall)
            later = [i for i in self._instants(wall) if i > t]
            if later:
                return later[0] if second_pass is None else min(later[0], second_pass)
            # wall is in a spring-forward gap: no instant shows it; go on after the gap.
            wall = self._wall(self._gap_end(wall)) - _SECOND
