"""``Schedule`` against an independent cron evaluator: random expressions, seven zones,
start instants around daylight-saving transitions, the same fire times.

The reference is cronsim 2.9 (Pēteris Caune, the evaluator of Healthchecks.io, a cron
monitoring service): "CronSim tries to match Debian's cron as closely as possible,
including its quirky behaviour during DST transitions" (its README). Its parser and
matcher are its own, sharing no code with croniter. It takes the day-of-month/day-of-week
rule from the first character of each field, as Debian's ``entry.c`` sets
``DOM_STAR``/``DOW_STAR``; a job whose minute or hour starts with ``*`` follows real
time, any other (5-field) job fires once per wall-clock match, at the end of a
spring-forward gap and at the first of two fall-back occurrences: the rule
``_schedule`` states. It knows seconds (first), ``L``, ``nL`` and ``n#k``.

What the comparison gives cronsim, each by a definition in ``_schedule``'s docstring:
``*`` for ``?`` and ``nL`` for croniter's ``Ln`` (cronsim has neither spelling); only
the fire times after the start (cronsim takes a fixed-time job's start as a naive wall
time, so from the second pass of a repeated hour it starts over in the first pass,
before the start); and for a 6-field job whose minute and hour are fixed, cronsim's own
fixed-time handling switched on (cronsim keeps it to 5 fields, as Debian has no seconds;
``Schedule`` applies the rule by the minute and hour fields, whatever the second).

``EXCLUDED`` names the three classes where cronsim's answer is not Debian's rule (two
in its real-time mode, one for seconds in a spring-forward gap), each with an example;
in them ``Schedule`` is checked against a walk of real time by that rule instead
(:func:`cronsim_wrong`). Any other difference fails the test.

``OTPKIT_CRON_EXPRESSIONS=N`` sizes the run: each expression is checked in every zone
from two starts, each before a transition of that zone. CI's short form is 150
expressions (2,100 cases); the ``soak`` form is 10,000 or more. The seed is 14 unless
``OTPKIT_CRON_SEED`` sets another (it is printed: a run replays with it).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim, CronSimError

from otpkit.scheduler import Schedule, ScheduleError

EXPRESSIONS = int(os.environ.get("OTPKIT_CRON_EXPRESSIONS", "150"))

ZONES = [
    "UTC",
    "Europe/Berlin",  # 02:00 -> 03:00, 03:00 -> 02:00
    "America/New_York",  # 02:00 -> 03:00, 02:00 -> 01:00
    "Australia/Sydney",  # southern hemisphere: October forward, April back
    "America/Santiago",  # at midnight: 00:00 -> 01:00, 00:00 -> 23:00 the day before
    "Australia/Lord_Howe",  # 30 minutes: 02:00 -> 02:30, 02:00 -> 01:30
    "Europe/Dublin",  # tzdata's negative DST: winter is the "saving" offset
]
#: The fire times compared from a start: until the first past ``PAST_TRANSITION``
#: after the transition the start was drawn before, at most ``FIRES``.
FIRES = 400
PAST_TRANSITION = timedelta(hours=3)
NEAR = timedelta(hours=2)
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


def transitions(zone: str, first: datetime, end: datetime) -> list[datetime]:
    """The instants (UTC, whole minutes) in ``[first, end)`` a zone's UTC offset
    changed."""
    tz, out = ZoneInfo(zone), []
    t = first
    while t < end:
        nxt = t + timedelta(hours=1)
        if nxt.astimezone(tz).utcoffset() != t.astimezone(tz).utcoffset():
            low, high = t, nxt
            while high - low > timedelta(minutes=1):
                mid = low + (high - low) / 2
                if mid.astimezone(tz).utcoffset() == nxt.astimezone(tz).utcoffset():
                    high = mid
                else:
                    low = mid
            out.append(high.replace(second=0, microsecond=0))
        t = nxt
    return out


TRANSITIONS = {
    zone: transitions(zone, datetime(2025, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC))
    for zone in ZONES
}


# --------------------------------------------------------------------------------------
# random expressions
# --------------------------------------------------------------------------------------


def value(rng: random.Random, low: int, high: int, names: list[str] | None, first: int) -> str:
    """A value of the field, a third of the time as its name (in any case)."""
    n = rng.randint(low, high)
    if names and rng.random() < 0.35 and 0 <= n - first < len(names):
        name = names[n - first]
        return rng.choice([name, name.lower(), name.title()])
    return str(n)


def number(text: str, names: list[str] | None, first: int) -> int:
    if text.isdigit():
        return int(text)
    return [n.upper() for n in names or []].index(text.upper()) + first


def term(rng: random.Random, low: int, high: int, names: list[str] | None, first: int) -> str:
    """A value (sometimes with a step: the value to the field's end), a range (a fifth
    with equal ends, 40% with a step), ``*`` or ``*/n``."""
    kind = rng.random()
    if kind < 0.3:
        text = value(rng, low, high, names, first)
        if rng.random() < 0.1:
            text += f"/{rng.randint(1, high - low + 1)}"
        return text
    if kind < 0.8:
        a = value(rng, low, high, names, first)
        b = a if rng.random() < 0.2 else value(rng, number(a, names, first), high, names, first)
        text = f"{a}-{b}"
        if rng.random() < 0.4:
            text += f"/{rng.randint(1, high - low + 1)}"
        return text
    return "*" if rng.random() < 0.3 else f"*/{rng.randint(1, high - low + 1)}"


def field(
    rng: random.Random,
    low: int,
    high: int,
    names: list[str] | None = None,
    first: int = 0,
    star: float = 0.3,
) -> str:
    if rng.random() < star:
        return "*"
    count = 1 if rng.random() < 0.65 else rng.randint(2, 4)
    return ",".join(term(rng, low, high, names, first) for _ in range(count))


def day_of_month(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.08:
        return "L"
    if kind < 0.12:
        return f"{field(rng, 1, 31, star=0)},L"
    if kind < 0.15:
        return "?"
    return field(rng, 1, 31, star=0.45)


def day_of_week(rng: random.Random) -> str:
    """Vixie's 0-7 with names, or ``nL``/``Ln`` and ``n#k`` terms: alone, in lists, or
    with plain terms."""
    kind = rng.random()
    specials = []
    for _ in range(rng.randint(1, 2)):
        day = value(rng, 0, 7, DAYS, 0)
        if rng.random() < 0.5 and day.isdigit():
            specials.append(rng.choice([f"{day}L", f"{day}l", f"L{day}"]))
        else:
            specials.append(f"{day}#{rng.randint(1, 5)}")
    if kind < 0.12:
        return ",".join(specials)
    if kind < 0.16:
        return ",".join([*specials, term(rng, 0, 7, DAYS, 0)])
    if kind < 0.19:
        return "?"
    return field(rng, 0, 7, DAYS, star=0.45)


HOURS_NEAR_TRANSITIONS = ["0", "1", "2", "3", "23", "0-3", "1-2", "2-2", "*/2", "1-3/2", "22-23"]


def expression(rng: random.Random) -> str:
    """A random valid expression: 5 fields, or (a sixth of the time) 6 with a second.
    Half of them have their hours where the zones change their clocks."""
    if rng.random() < 0.5:
        hour = field(rng, 0, 23)
    else:
        hour = ",".join(rng.choice(HOURS_NEAR_TRANSITIONS) for _ in range(rng.randint(1, 2)))
    fields = [
        field(rng, 0, 59),
        hour,
        day_of_month(rng),
        field(rng, 1, 12, MONTHS, 1, star=0.6),
        day_of_week(rng),
    ]
    if rng.random() < 1 / 6:
        fields.insert(0, field(rng, 0, 59, star=0.2))
    return " ".join(fields)


# --------------------------------------------------------------------------------------
# the two evaluators
# --------------------------------------------------------------------------------------


def for_cronsim(expr: str) -> str:
    """The expression as cronsim spells it: ``*`` for ``?``, ``nL`` for ``Ln``."""
    fields = ["*" if f == "?" else f for f in expr.split()]
    fields[-1] = ",".join(
        f"{t[1:]}L" if t[:1] in ("l", "L") and t[1:].isdigit() else t for t in fields[-1].split(",")
    )
    return " ".join(fields)


def reference(expr: str, zone: str, start: datetime, until: datetime) -> list[datetime] | None:
    """cronsim's fire times after ``start``, in UTC, up to the first past ``until`` or
    ``FIRES`` of them; None if it refuses the expression or finds no fire time (it
    looks 50 years ahead)."""
    text = for_cronsim(expr)
    try:
        it = CronSim(text, start.astimezone(ZoneInfo(zone)))
    except CronSimError:
        return None
    fields = text.split()
    if len(fields) == 6 and zone != "UTC" and not real_time(expr):
        # cronsim's fixed-time handling, which its constructor keeps to 5 fields
        it.fixup_tz = it.dt.tzinfo
        it.dt = it.dt.replace(tzinfo=None)
    out: list[datetime] = []
    try:
        while len(out) < FIRES and (not out or out[-1] <= until):
            t = next(it).astimezone(UTC)
            if t > start:  # see the module docstring
                out.append(t)
    except StopIteration:
        pass
    return out or None


def ours(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    out: list[datetime] = []
    t = start
    while len(out) < count:
        nxt = schedule.next_after(t)
        assert nxt is not None
        out.append(nxt)
        t = nxt
    return out


def real_time(expr: str) -> bool:
    minute, hour = expr.split()[-5:-3]
    return minute.startswith("*") or hour.startswith("*")


# --------------------------------------------------------------------------------------
# where cronsim is not Debian
# --------------------------------------------------------------------------------------

#: The classes left out of the comparison with cronsim, each with an example; in them
#: :func:`cronsim_wrong` checks ``Schedule`` against a walk of real time instead. The
#: first two are in cronsim's real-time mode (a minute or hour starting with ``*``),
#: which steps hours and days in local time without checking that the hour or midnight
#: it lands on exists. Debian's ``cron.c`` runs such a job in every real minute whose
#: wall-clock time matches (crontab(5): "Jobs that run more frequently [than hourly]
#: are scheduled normally"; when time moved back it still runs the wildcard jobs,
#: ``find_jobs(..., TRUE, FALSE)``): twice in a repeated half hour, not at all in a
#: missing one. The third is outside Debian, which has no seconds.
EXCLUDED = {
    "half-hour transition": (
        "On the day of a 30-minute transition (Australia/Lord_Howe) cronsim steps whole "
        "hours from one side of it, lands at :30 and skips the first half of an hour: "
        "'* 13 * * *' from 2027-10-02 12:00 UTC gives 13:30 +11:00 on 2027-10-03, not "
        "13:00; '35 * * * *' skips 01:35 +10:30 (15:05 UTC) in the half hour 2027-04-04 "
        "repeats; '* 0 * * *' from 2027-10-02 15:30 UTC gives 00:30 on 2027-10-04: the "
        "wrong hour start lasts into the next day."
    ),
    "midnight gap": (
        "On a day whose midnight a spring-forward gap skips (America/Santiago, 00:00 -> "
        "01:00) cronsim starts the day at the missing 00:00: '* */9 * * SUN' fires at "
        "2027-09-05 04:00 UTC, a 00:00 -04:00 no clock showed (it is 01:00 -03:00), and "
        "'* 1-3/2 L * SUN' steps from there to 02:00 and skips 01:00-01:59."
    ),
    "second in a gap": (
        "A 6-field fixed-time job whose wall time a spring-forward gap skips: Debian runs "
        "a skipped job 'immediately' (crontab(5)) and ``Schedule`` at the transition; "
        "cronsim's fixed-time handling, switched on here, moves the wall time by whole "
        "minutes and keeps its second: '25 14 2 * * *' in Europe/Berlin on 2026-03-29 "
        "at 03:00:25 +02:00, not 03:00:00; '5 0,14 2,3 * * *' at 03:00:05 only, once "
        "for the skipped 02:00:05 and 02:14:05 and the real 03:00:05 together."
    ),
}


def matcher(expr: str) -> Callable[[datetime], bool]:
    """Whether a wall time matches, by cronsim's own parsed fields and day matcher."""
    it = CronSim(for_cronsim(expr), datetime(2026, 1, 1))

    def match(w: datetime) -> bool:
        return (
            w.second in it.seconds
            and w.minute in it.minutes
            and w.hour in it.hours
            and w.month in it.months
            and it.match_day(w.date())
        )

    return match


def walk_real_time(expr: str, zone: str, after: datetime, until: datetime) -> list[datetime]:
    """A real-time job's fire times in ``(after, until]`` by the definition: every real
    second whose local wall-clock time matches (tried minute by minute first)."""
    tz, match = ZoneInfo(zone), matcher(expr)
    u = after.replace(second=0, microsecond=0)
    out = []
    while u <= until:
        w = u.astimezone(tz)
        if match(w.replace(second=0)) or (
            len(expr.split()) == 6 and any(match(w.replace(second=s)) for s in range(1, 60))
        ):
            out += [u + timedelta(seconds=s) for s in range(60) if match(w.replace(second=s))]
        u += timedelta(minutes=1)
    return [t for t in out if after < t <= until]


def walk_fixed_time(expr: str, zone: str, after: datetime, until: datetime) -> list[datetime]:
    """A fixed-time job's fire times in ``(after, until]`` as the daemon runs it, second
    by second: once at each second whose wall clock moved past a matching wall time
    since the second before (not when it went back). ``after`` must not be in the second
    pass of a repeat."""
    tz, match = ZoneInfo(zone), matcher(expr)
    seen = after.astimezone(tz).replace(tzinfo=None, microsecond=0)
    u = after.replace(microsecond=0) + timedelta(seconds=1)
    out = []
    while u <= until:
        now = u.astimezone(tz).replace(tzinfo=None)
        w = seen + timedelta(seconds=1)
        while w <= now and not match(w):
            w += timedelta(seconds=1)
        if w <= now:
            out.append(u)
        seen = max(seen, now)
        u += timedelta(seconds=1)
    return out


def bug_days(zone: str, near: datetime) -> list[tuple[datetime, datetime]]:
    """The instants ``[first, end)`` of the first two ``EXCLUDED`` classes within two
    days of ``near``: from the local midnight before a 30-minute transition, or from a
    transition that skips a midnight, to the second local midnight after it (cronsim
    carries the wrong hour start over into the next day when that day matches)."""
    tz, out = ZoneInfo(zone), []
    for t in transitions(zone, near - timedelta(days=2), near + timedelta(days=1)):
        before, after = (t - timedelta(seconds=1)).astimezone(tz), t.astimezone(tz)
        shift = after.utcoffset() - before.utcoffset()  # type: ignore[operator]
        midnight = before.date() != after.date() and after.hour + after.minute > 0
        if abs(shift) == timedelta(minutes=30) or midnight:
            day = datetime.combine(after.date(), datetime.min.time())
            first = t if midnight else day.replace(tzinfo=tz).astimezone(UTC)
            end = (day + timedelta(days=2)).replace(tzinfo=tz).astimezone(UTC)
            out.append((first, end))
    return out


def gap_minutes(zone: str, near: datetime) -> list[tuple[datetime, datetime]]:
    """The instants ``[first, end)`` of the third ``EXCLUDED`` class within a day of
    ``near``: the minute after a spring-forward transition."""
    tz, out = ZoneInfo(zone), []
    for t in transitions(zone, near - timedelta(days=1), near + timedelta(days=1)):
        offsets = [u.astimezone(tz).utcoffset() for u in (t - timedelta(seconds=1), t)]
        if offsets[1] > offsets[0]:  # type: ignore[operator]
            out.append((t, t + timedelta(minutes=1)))
    return out


def cronsim_wrong(case: Case, got: list[datetime], theirs: list[datetime]) -> bool:
    """True if every difference between the two lists lies in an ``EXCLUDED`` class's
    instants for the job, and there ``Schedule`` gives the fire times of the walk."""
    if real_time(case.expr):
        windows, walk = bug_days, walk_real_time
    elif len(case.expr.split()) == 6:
        windows, walk = gap_minutes, walk_fixed_time
    else:
        return False
    while True:
        n = min(len(got), len(theirs))
        got, theirs = got[:n], theirs[:n]
        k = next((i for i in range(n) if got[i] != theirs[i]), None)
        if k is None:
            return True
        disputed = min(got[k], theirs[k])
        found = windows(case.zone, disputed)
        window = next((w for w in found if w[0] <= disputed < w[1]), None)
        if window is None:
            return False
        after = max(got[k - 1] if k else case.start, window[0] - timedelta(seconds=1))
        until = min(window[1] - timedelta(microseconds=1), got[-1])
        if [t for t in got if after < t <= until] != walk(case.expr, case.zone, after, until):
            return False
        got = [t for t in got if t >= window[1]]
        theirs = [t for t in theirs if t >= window[1]]


# --------------------------------------------------------------------------------------
# the comparison
# --------------------------------------------------------------------------------------


@dataclass
class Case:
    expr: str
    zone: str
    start: datetime
    near: datetime  # the transition the start was drawn before

    def __str__(self) -> str:
        return f"{self.expr!r} in {self.zone} after {self.start.isoformat()}"


def cases(seed: int, expressions: int) -> list[Case]:
    """Each expression in every zone, from two starts: a second to about two days
    (log-uniform) before one of two transitions of the zone (UTC: of Berlin)."""
    rng = random.Random(seed)
    out = []
    for _ in range(expressions):
        expr = expression(rng)
        for zone in ZONES:
            for near in rng.sample(TRANSITIONS[zone] or TRANSITIONS["Europe/Berlin"], 2):
                lead = timedelta(seconds=round(10 ** rng.uniform(0, 5.2)))
                fraction = timedelta(microseconds=rng.choice([0, rng.randint(1, 999_999)]))
                out.append(Case(expr, zone, near - lead + fraction, near))
    return out


def compare(case: Case) -> tuple[str, str | None, bool]:
    """A verdict - ``"same"``, ``"never fires"`` (both say so), ``"cronsim wrong"`` (see
    ``EXCLUDED``) or ``"mismatch"`` -, for a mismatch what differs, and whether a fire
    time compared lies within two hours of the transition."""
    theirs = reference(case.expr, case.zone, case.start, case.near + PAST_TRANSITION)
    near = theirs is not None and any(abs(t - case.near) <= NEAR for t in theirs)
    try:
        schedule = Schedule.parse(case.expr, case.zone)
    except ScheduleError as exc:
        if theirs is None and exc.field == "expression":
            return "never fires", None, near
        problem = f"{case}: Schedule refuses it ({exc}); cronsim fires at {theirs}"
        return "mismatch", problem, near
    if theirs is None:
        problem = f"{case}: cronsim refuses it or finds no fire time; Schedule fires"
        return "mismatch", problem, near
    got = ours(schedule, case.start, len(theirs))
    if got == theirs:
        return "same", None, near
    if cronsim_wrong(case, got, theirs):
        return "cronsim wrong", None, near
    i = next(i for i, (a, b) in enumerate(zip(got, theirs, strict=True)) if a != b)
    around = slice(max(0, i - 2), i + 3)
    problem = (
        f"{case}: fire {i}: Schedule {[str(t) for t in got[around]]}, "
        f"cronsim {[str(t) for t in theirs[around]]}"
    )
    return "mismatch", problem, near


@pytest.mark.soak
def test_schedule_gives_cronsims_fire_times():
    seed = int(os.environ.get("OTPKIT_CRON_SEED", "14"))
    print(f"cron seed {seed} (OTPKIT_CRON_SEED={seed} replays it), {EXPRESSIONS} expressions")
    began = time.monotonic()
    verdicts: Counter[str] = Counter()
    mismatches: list[str] = []
    near = 0
    for case in cases(seed, EXPRESSIONS):
        verdict, problem, close = compare(case)
        verdicts[verdict] += 1
        near += close and case.zone != "UTC"
        if problem is not None:
            mismatches.append(problem)
    total = sum(verdicts.values())
    print(
        f"{total} cases ({EXPRESSIONS} expressions x {len(ZONES)} zones x 2 starts) in "
        f"{time.monotonic() - began:.1f} s: {dict(verdicts)}; {near} with a fire time "
        f"compared within 2 h of a transition"
    )
    assert not mismatches, f"seed {seed}: {len(mismatches)} mismatches:\n" + "\n".join(
        mismatches[:20]
    )
    # most cases compare fire times; many of them near a transition
    assert verdicts["same"] + verdicts["cronsim wrong"] > 0.9 * total
    assert near > 0.15 * total
