"""Backup schedules: an interval or a cron expression in UTC, when the next run is due, and the
recovery point a schedule promises. Pure (times are wall-clock seconds passed in).

* :func:`parse_schedule`: an interval (``6h``, ``every 30m``) or a five-field cron
  expression in UTC (``0 3 * * *``, ``*/15 * * * 1-5``, ``@daily``);
* :func:`next_run` says when the next backup (or drill) is due, :func:`next_fire` when a
  cron fires next, :func:`promised_rpo` the longest gap between two runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fivenines.core.backup import DURATION, UNIT, ScheduleError, fmt_seconds

_MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *"}
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 7))
_NAMES = {
    3: {m: i + 1 for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])},
    4: {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}


@dataclass(frozen=True, slots=True)
class Interval:
    """Every ``seconds``, counted from the last successful run."""

    seconds: float

    def __str__(self) -> str:
        return f"every {fmt_seconds(self.seconds)}"


@dataclass(frozen=True, slots=True)
class Cron:
    """A five-field cron expression, in UTC. Day of month and day of week: when both are
    restricted a day matching either fires (as in cron)."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday .. 6
    any_day: bool  # day of month is *
    any_weekday: bool  # day of week is *

    def __str__(self) -> str:
        return f"cron {self.text} (UTC)"

    def day_matches(self, t: datetime) -> bool:
        dom = t.day in self.days
        dow = (t.weekday() + 1) % 7 in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return dow
        if self.any_weekday:
            return dom
        return dom or dow


Schedule = Interval | Cron

def _cron_field(text: str, index: int) -> frozenset[int]:
    name, lo, hi = _FIELDS[index]
    values: set[int] = set()

    def num(tok: str) -> int:
        tok = tok.lower()
        names = _NAMES.get(index, {})
        if tok in names:
            return names[tok]
        if not tok.isdigit():
            valid = f"{lo}-{hi}" + (f" or a name ({', '.join(names)})" if names else "")
            raise ScheduleError(f"{name} field: {tok!r} is not a number; use {valid}")
        v = int(tok)
        if not lo <= v <= hi:
            raise ScheduleError(f"{name} field: {v} is out of range {lo}-{hi}")
        return v

    for part in text.split(","):
        if not part:
            raise ScheduleError(f"{name} field: empty item in {text!r}")
        rng, _, step_s = part.partition("/")
        step = 1
        if step_s:
            if not step_s.isdigit() or int(step_s) == 0:
                raise ScheduleError(f"{name} field: step {step_s!r} must be a whole number of at least 1")
            step = int(step_s)
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            x, _, y = rng.partition("-")
            a, b = num(x), num(y)
            if a > b:
                raise ScheduleError(f"{name} field: range {rng!r} goes backwards")
        else:
            a = num(rng)
            b = hi if step_s else a
        values.update(range(a, b + 1, step))
    if index == 4 and 7 in values:
        values.discard(7)
        values.add(0)  # 7 is Sunday too
    return frozenset(values)


def parse_schedule(text: str) -> Schedule:
    """An interval (``6h``, ``every 30m``) or a cron expression (five fields, UTC; ``@daily``).

    >>> parse_schedule("every 6h"), parse_schedule("90s")
    (Interval(seconds=21600.0), Interval(seconds=90.0))
    >>> str(parse_schedule("*/15 3 * * mon-fri"))
    'cron */15 3 * * mon-fri (UTC)'
    >>> parse_schedule("0 25 * * *")
    Traceback (most recent call last):
    ...
    fivenines.core.backup.ScheduleError: hour field: 25 is out of range 0-23
    """
    if not isinstance(text, str) or not text.strip():
        raise ScheduleError("a schedule is an interval such as 6h (or every 30m) or a cron expression "
                            "such as '0 3 * * *'")
    t = " ".join(text.strip().split())
    t = _MACROS.get(t.lower(), t)
    m = DURATION.match(t.lower().removeprefix("every "))
    if m:
        seconds = float(m.group(1)) * UNIT[m.group(2)]
        if seconds < 1:
            raise ScheduleError(f"{text!r}: an interval must be at least 1s")
        return Interval(seconds)
    parts = t.split(" ")
    if len(parts) != 5:
        raise ScheduleError(f"{text!r} is neither an interval (6h, every 30m) nor a cron expression: cron has "
                            f"5 fields (minute hour day-of-month month day-of-week), got {len(parts)}")
    sets = [_cron_field(p, i) for i, p in enumerate(parts)]
    cron = Cron(t, sets[0], sets[1], sets[2], sets[3], sets[4], parts[2] == "*", parts[4] == "*")
    try:
        next_fire(cron, 0.0)
    except ScheduleError:
        raise ScheduleError(f"{text!r} never fires (no such day: check day of month against month)") from None
    return cron


_SEARCH_YEARS = 9  # Feb 29 can be 8 years away (2096 -> 2104)


def next_fire(schedule: Schedule, after: float) -> float:
    """The first firing time strictly after ``after`` (cron: whole minutes, UTC).

    >>> next_fire(parse_schedule("30 2 * * *"), 0.0)  # 1970-01-01 02:30 UTC
    9000.0
    >>> next_fire(parse_schedule("6h"), 100.0)
    21700.0
    """
    if isinstance(schedule, Interval):
        return after + schedule.seconds
    c = schedule
    t = datetime.fromtimestamp(math.floor(after / 60) * 60, UTC) + timedelta(minutes=1)
    limit = t + timedelta(days=366 * _SEARCH_YEARS)
    while t < limit:
        if t.month not in c.months:
            t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
        elif not c.day_matches(t):
            t = t.replace(hour=0, minute=0) + timedelta(days=1)
        elif t.hour not in c.hours:
            h = min((h for h in c.hours if h > t.hour), default=None)
            t = t.replace(hour=h, minute=0) if h is not None else t.replace(hour=0, minute=0) + timedelta(days=1)
        elif t.minute not in c.minutes:
            m = min((m for m in c.minutes if m > t.minute), default=None)
            t = t.replace(minute=m) if m is not None else t.replace(minute=0) + timedelta(hours=1)
        else:
            return t.timestamp()
    raise ScheduleError(f"cron {c.text!r} never fires")


def next_run(schedule: Schedule, *, last_ok: float | None, last_try: float | None, since: float,
             retry: float) -> float:
    """When the next run is due.

    ``last_ok``: the last successful run (None: none yet); ``last_try``: the last attempt;
    ``since``: when scheduling began (a cron schedule with no run yet fires at its next
    time after it; an interval schedule with no run yet is due at once). A failed attempt
    newer than the last success is retried ``retry`` seconds after it, not sooner.

    >>> s = parse_schedule("1h")
    >>> next_run(s, last_ok=None, last_try=None, since=50.0, retry=60.0)
    50.0
    >>> next_run(s, last_ok=1000.0, last_try=1000.0, since=0.0, retry=60.0)
    4600.0
    >>> next_run(s, last_ok=None, last_try=70.0, since=50.0, retry=60.0)
    130.0
    """
    if isinstance(schedule, Interval):
        due = since if last_ok is None else last_ok + schedule.seconds
    else:
        due = next_fire(schedule, since if last_ok is None else max(last_ok, since))
    if last_try is not None and (last_ok is None or last_try > last_ok):
        due = max(due, last_try + retry)
    return due


def promised_rpo(schedule: Schedule) -> float:
    """The longest time between two runs: the most data (in time) a loss can cost when every
    backup succeeds, not counting the time a backup takes.

    >>> promised_rpo(parse_schedule("6h")), promised_rpo(parse_schedule("0 3,9 * * *"))
    (21600.0, 64800.0)
    >>> promised_rpo(parse_schedule("0 0 * * 1-5")) / 86400  # Friday to Monday
    3.0
    >>> promised_rpo(parse_schedule("0 0 1 1 *")) / 86400  # a leap year
    366.0
    """
    if isinstance(schedule, Interval):
        return schedule.seconds
    start = datetime(2024, 1, 1, tzinfo=UTC).timestamp()  # a leap year, starting on a Monday
    end = start + 2 * 366 * 86400
    prev = next_fire(schedule, start - 60)  # a firing at the start counts: 2024-01-01 to 2025-01-01 is 366 days
    worst = 0.0
    for _ in range(20000):
        nxt = next_fire(schedule, prev)
        worst = max(worst, nxt - prev)
        if nxt > end:
            break
        prev = nxt
    return worst


__all__ = ["Cron", "Interval", "Schedule", "next_fire", "next_run", "parse_schedule", "promised_rpo"]
