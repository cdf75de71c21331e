"""A schedule as a pure function from a time to the next times, its time zone explicit.

    Schedule.parse("30 2 * * *", "Europe/Paris").next_after(t)   -> the next time after t
    schedule.times_between(start, end)                            -> every time in [start, end)
    due_times(schedule, last, now, recover)                       -> what to fire now

Cron expressions are parsed and matched by `cronsim` (we write no cron parser): 5 fields,
or 6 with the seconds FIRST (as Kestra's `withSeconds` and Quartz), and the `@daily`
family, expanded here. cronsim was chosen over croniter because it follows Debian's cron
(see docs/design/server.md for the comparison); this module adds what it leaves out.

Daylight saving time is handled as Debian's cron handles it (`man 8 cron`):

- An expression whose minute and hour fields are both fixed (neither starts with `*`,
  like `30 2 * * *` or `@daily`) runs on the wall clock. A time that does not exist
  (spring forward: 02:30 in Paris on the last Sunday of March) runs once, right after
  the jump (03:00); a time that occurs twice (fall back) runs once, the first time.
- Any other expression (`0 * * * *`, `*/15 * * * *`) runs on real time: it runs at each
  real time whose wall clock matches, so an hourly job runs once in each real hour,
  twice at "02:00" on the fall-back night and never at "02:00" on the spring one.

cronsim applies the first rule to 5-field expressions only; here it applies to 6-field
ones too (the seconds field does not count), so one rule holds for every schedule.

Every function takes and returns timezone-aware datetimes; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import takewhile
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

from runner.messages import did_you_mean, shorten

__all__ = [
    "ALIASES",
    "ON_TIME",
    "RecoverMissed",
    "Schedule",
    "ScheduleError",
    "due_times",
    "parse_timezone",
]

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The `@` names Debian's cron knows, as the expressions they stand for (`@reboot` has
no times, so it is not a schedule)."""

_ACCEPTED = (
    "use 5 fields (minute hour day-of-month month day-of-week), 6 with seconds first "
    "(second minute hour day-of-month month day-of-week), or one of " + ", ".join(ALIASES)
)
_FIELD_NAMES = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")

# Where every schedule is checked to fire at least once (cronsim looks 50 years ahead).
_REFERENCE = datetime(2000, 1, 1)

ON_TIME = timedelta(seconds=60)
"""How late a scheduled time may be fired and still count as on time rather than missed:
a server under load, or one that just won a lease, wakes a little after the time."""


class ScheduleError(ValueError):
    """A cron expression or time zone that cannot be used; the message is for people.

    A ValueError, so that pydantic validators report it as the field's problem.
    """


class RecoverMissed(StrEnum):
    """What to fire for scheduled times that passed while nothing fired them (no server
    ran, or the flow was paused)."""

    ALL = "all"  # every missed time, oldest first
    LAST = "last"  # only the most recent missed time
    NONE = "none"  # none: the schedule goes on from the next time


def parse_timezone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (`Europe/Paris`, `UTC`), or ScheduleError naming it."""
    shown = shorten(repr(name))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        # ValueError: a path-like key (`/etc/passwd`, `../x`); OSError: a folder (`Europe`).
        hint = did_you_mean(name, available_timezones()) if len(name) < 100 else ""
        raise ScheduleError(
            f"unknown time zone {shown}{hint}; use an IANA name such as "
            "'Europe/Paris', 'America/New_York' or 'UTC'"
        ) from exc


@dataclass(frozen=True)
class Schedule:
    """A cron expression in a time zone. Build it with `Schedule.parse`."""

    cron: str
    """The expression as written (`@daily`, `0 30 2 * * *`)."""
    timezone: ZoneInfo
    expression: str = field(repr=False)
    """`cron` with an `@` name expanded: 5 or 6 fields."""
    wall_clock: bool = field(repr=False)
    """Minute and hour fixed: DST is handled on the wall clock (see the module doc)."""

    @classmethod
    def parse(cls, cron: str, timezone: str | ZoneInfo = "UTC") -> Schedule:
        """Check `cron` and `timezone`; raise ScheduleError saying what is accepted."""
        zone = timezone if isinstance(timezone, ZoneInfo) else parse_timezone(timezone)
        text = cron.strip()
        shown = shorten(repr(cron))
        if text.startswith("@"):
            expression = ALIASES.get(text.lower())
            if expression is None:
                raise ScheduleError(
                    f"cron {shown} is not a schedule name{did_you_mean(text.lower(), ALIASES)}; "
                    f"{_ACCEPTED}"
                )
        else:
            expression = " ".join(text.split())
        fields = expression.split()
        if len(fields) not in (5, 6):
            count = f"{len(fields)} field{'' if len(fields) == 1 else 's'}"
            raise ScheduleError(f"cron {shown} has {count}; {_ACCEPTED}")
        try:
            CronSim(expression, _REFERENCE)
        except CronSimError as exc:
            raise ScheduleError(f"cron {shown}: {_explain(fields, str(exc))}; {_ACCEPTED}") from exc
        except (ValueError, IndexError) as exc:  # cronsim trusts some shapes (`1-`, `L5`)
            raise ScheduleError(f"cron {shown} cannot be read ({exc}); {_ACCEPTED}") from exc
        minute, hour = fields[-5], fields[-4]
        schedule = cls(
            cron=cron,
            timezone=zone,
            expression=expression,
            wall_clock=not minute.startswith("*") and not hour.startswith("*"),
        )
        if schedule.next_after(_REFERENCE.replace(tzinfo=UTC)) is None:
            raise ScheduleError(f"cron {shown} never matches a date (checked 50 years ahead)")
        return schedule

    @property
    def has_seconds(self) -> bool:
        return len(self.expression.split()) == 6

    # --- the times -------------------------------------------------------------------

    def next_after(self, t: datetime) -> datetime | None:
        """The first scheduled time strictly after `t`, or None if there is none."""
        return next(self.iter_after(t), None)

    def upcoming(self, t: datetime, count: int) -> tuple[datetime, ...]:
        """The next `count` scheduled times after `t` (fewer if the schedule ends)."""
        times = self.iter_after(t)
        return tuple(time for time, _ in zip(times, range(count), strict=False))

    def times_between(self, start: datetime, end: datetime) -> tuple[datetime, ...]:
        """Every scheduled time in [start, end), oldest first (what a backfill runs)."""
        return tuple(self.iter_between(start, end))

    def iter_between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """`times_between`, one time at a time: a caller may stop (or count) early."""
        until = _utc(end, "end")
        times = self.iter_after(_utc(start, "start") - _TICK)
        return takewhile(lambda t: t.astimezone(UTC) < until, times)

    def latest_at_or_before(self, t: datetime) -> datetime | None:
        """The last scheduled time at or before `t`, or None if there is none (50 years)."""
        until = _utc(t, "t")
        found = self._reverse_from(until)
        if found is None:
            return None
        # cronsim's reverse walk is on the wall clock; in the second pass of a fall-back
        # hour it can land a day early. Walking forward from it corrects that.
        for later in self.iter_after(found):
            if later.astimezone(UTC) > until:
                break
            found = later
        return found

    def iter_after(self, t: datetime) -> Iterator[datetime]:
        """The scheduled times strictly after `t`, oldest first, in the schedule's zone."""
        after = _utc(t, "t")
        candidates: Iterator[datetime]
        if self.wall_clock or self.timezone.key == "UTC":
            # On the wall clock: cronsim walks naive local times, and each is placed on
            # the time line here (UTC has no gaps, so it takes the same, faster path).
            local = after.astimezone(self.timezone).replace(tzinfo=None)
            candidates = (self._place(naive) for naive in CronSim(self.expression, local))
        else:
            # On real time: cronsim steps through aware times itself.
            candidates = CronSim(self.expression, after.astimezone(self.timezone))
        latest = after
        for candidate in candidates:
            # Several times that do not exist all run right after the jump: once. A time
            # in the first pass of a fall-back hour is not run again in the second.
            # (Compared in UTC: within one zone, Python compares the wall clock, fold aside.)
            instant = candidate.astimezone(UTC)
            if instant > latest:
                yield candidate
                latest = instant

    def _place(self, naive: datetime) -> datetime:
        """A wall-clock time as a real time: the first of two; after the jump if none."""
        placed = naive.replace(tzinfo=self.timezone, fold=0)
        if placed.astimezone(UTC).astimezone(self.timezone).replace(tzinfo=None) == naive:
            return placed
        return _end_of_gap(naive, self.timezone)

    def _reverse_from(self, t: datetime) -> datetime | None:
        """A scheduled time at or before `t`, a UTC time (the latest, but see the caller)."""
        # cronsim's reverse walk starts one second before its start: start a second late.
        start = t.replace(microsecond=0) + _SECOND
        try:
            if self.wall_clock or self.timezone.key == "UTC":
                local = start.astimezone(self.timezone).replace(tzinfo=None)
                for naive in CronSim(self.expression, local, reverse=True):
                    placed = self._place(naive)
                    if placed.astimezone(UTC) <= t:
                        return placed
                return None
            for aware in CronSim(self.expression, start.astimezone(self.timezone), reverse=True):
                if aware.astimezone(UTC) <= t:
                    return aware
            return None
        except StopIteration:  # nothing in the 50 years cronsim looks through
            return None


_SECOND = timedelta(seconds=1)
_TICK = timedelta(microseconds=1)


def _utc(t: datetime, name: str) -> datetime:
    """`t` in UTC, where comparisons mean real time; a naive `t` is a caller's mistake."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {t.isoformat()}")
    return t.astimezone(UTC)


def _end_of_gap(naive: datetime, zone: ZoneInfo) -> datetime:
    """The first real time after the clock jumped over the wall-clock time `naive`.

    For a time in a gap, fold=1 reads it with the offset after the jump (an instant
    before the jump) and fold=0 with the offset before (an instant after): the jump is
    between the two, found to the second by halving (12 steps for an hour).
    """
    low = int(naive.replace(tzinfo=zone, fold=1).timestamp())
    high = int(naive.replace(tzinfo=zone, fold=0).timestamp())
    after = datetime.fromtimestamp(high, zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == after:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, zone)


def _explain(fields: list[str], error: str) -> str:
    """cronsim's `Bad minute` as `the minute field '61' is not valid`."""
    names = _FIELD_NAMES if len(fields) == 6 else _FIELD_NAMES[1:]
    for name, value in zip(names, fields, strict=True):
        if error != f"Bad {name}":
            continue
        if "?" in value:  # Quartz writes `?` for "no day-of-month (or day-of-week)"
            return (
                f"the {name} field {value!r} is not valid; cron writes '*' where Quartz writes '?'"
            )
        if name == "day-of-month" and _valid(f"0 0 {value} * *"):
            return f"the day-of-month {value!r} never occurs in the month field {fields[-2]!r}"
        return f"the {name} field {value!r} is not valid"
    return error


def _valid(expression: str) -> bool:
    try:
        CronSim(expression, _REFERENCE)
    except CronSimError:
        return False
    return True


def due_times(
    schedule: Schedule,
    last: datetime | None,
    now: datetime,
    recover: RecoverMissed,
    *,
    on_time: timedelta = ON_TIME,
) -> tuple[datetime, ...]:
    """The scheduled times to fire at `now`, oldest first.

    `last` is the latest scheduled time already fired (or deliberately passed over), or
    the time the trigger was first seen if it never fired; the times owed are those in
    (last, now]. The most recent of them is on time if it is at most `on_time` old;
    the others were missed, and `recover` says what happens to them:

    - all:  every time owed, oldest first;
    - last: only the most recent one, on time or not;
    - none: only the most recent one, and only if it is on time.

    With `last` None nothing is owed from the past: only an on-time time fires, so a new
    trigger never runs times from before it existed. After unpausing a flow, pass the
    last time fired before the pause: what it missed then follows `recover`.
    """
    now = _utc(now, "now")
    since = None if last is None else _utc(last, "last")
    if since is not None and since >= now:
        return ()
    if recover is RecoverMissed.ALL and since is not None:
        return tuple(takewhile(lambda t: t.astimezone(UTC) <= now, schedule.iter_after(since)))
    latest = schedule.latest_at_or_before(now)
    if latest is None or (since is not None and latest.astimezone(UTC) <= since):
        return ()
    if recover is RecoverMissed.LAST and since is not None:
        return (latest,)
    return (latest,) if now - latest.astimezone(UTC) <= on_time else ()
