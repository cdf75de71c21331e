"""Schedules: next times, times between two dates, and what to fire after missed times.

Daylight saving time follows Debian's cron: an expression with a fixed minute and hour
runs on the wall clock (a time that does not exist runs once right after the jump; a
time that occurs twice runs once); any other runs on real time. Every expected time is
written with its UTC offset, which tells the two passes of a fall-back hour apart.

Europe/Paris, 2024: spring forward on Sunday 31 March (02:00 CET -> 03:00 CEST), fall back
on Sunday 27 October (03:00 CEST -> 02:00 CET). Australia/Lord_Howe moves by 30 minutes:
forward on 6 October 2024 (02:00 -> 02:30, +10:30 -> +11:00), back on 7 April 2024
(02:00 -> 01:30).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.triggers.schedule import (
    ALIASES,
    ON_TIME,
    RecoverMissed,
    Schedule,
    ScheduleError,
    due_times,
)

PARIS = ZoneInfo("Europe/Paris")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")


def at(text: str) -> datetime:
    """An ISO time with its offset, e.g. `2024-10-27T02:30:00+02:00`."""
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None
    return parsed


def shown(times: tuple[datetime, ...] | list[datetime]) -> list[str]:
    return [t.isoformat() for t in times]


def local(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=zone, fold=fold)  # type: ignore[misc]


# --- daylight saving time ----------------------------------------------------------------

SPRING = (local(PARIS, 2024, 3, 31, 0), local(PARIS, 2024, 3, 31, 4))
FALL = (local(PARIS, 2024, 10, 27, 0), local(PARIS, 2024, 10, 27, 4))


@pytest.mark.parametrize(
    ("cron", "window", "expected"),
    [
        # Spring forward: 02:00-03:00 does not exist.
        pytest.param("30 2 * * *", SPRING, ["2024-03-31T03:00:00+02:00"], id="spring-fixed"),
        pytest.param("0 2 * * *", SPRING, ["2024-03-31T03:00:00+02:00"], id="spring-fixed-hour"),
        pytest.param(
            "0 2,3 * * *",
            SPRING,
            ["2024-03-31T03:00:00+02:00"],
            id="spring-missing-time-and-next-one-run-once",
        ),
        pytest.param(
            "0 * * * *",
            SPRING,
            ["2024-03-31T00:00:00+01:00", "2024-03-31T01:00:00+01:00", "2024-03-31T03:00:00+02:00"],
            id="spring-hourly-runs-each-real-hour",
        ),
        pytest.param(
            "*/15 * * * *",
            SPRING,
            [f"2024-03-31T0{h}:{m:02}:00+01:00" for h in (0, 1) for m in (0, 15, 30, 45)]
            + [f"2024-03-31T03:{m:02}:00+02:00" for m in (0, 15, 30, 45)],
            id="spring-every-15-minutes",
        ),
        pytest.param("0 30 2 * * *", SPRING, ["2024-03-31T03:00:00+02:00"], id="spring-seconds"),
        pytest.param(
            "30 30 2 * * *",
            SPRING,
            ["2024-03-31T03:00:00+02:00"],
            id="spring-seconds-run-at-the-jump-not-30s-after",
        ),
        pytest.param(
            "*/20 30 2 * * *",
            SPRING,
            ["2024-03-31T03:00:00+02:00"],
            id="spring-several-missing-seconds-run-once",
        ),
        pytest.param("@daily", SPRING, ["2024-03-31T00:00:00+01:00"], id="spring-daily"),
        # Fall back: 02:00-03:00 occurs twice (CEST +02:00, then CET +01:00).
        pytest.param("30 2 * * *", FALL, ["2024-10-27T02:30:00+02:00"], id="fall-fixed-once"),
        pytest.param(
            "0 * * * *",
            FALL,
            [
                "2024-10-27T00:00:00+02:00",
                "2024-10-27T01:00:00+02:00",
                "2024-10-27T02:00:00+02:00",
                "2024-10-27T02:00:00+01:00",
                "2024-10-27T03:00:00+01:00",
            ],
            id="fall-hourly-runs-each-real-hour",
        ),
        pytest.param(
            "*/15 * * * *",
            FALL,
            [f"2024-10-27T0{h}:{m:02}:00+02:00" for h in (0, 1, 2) for m in (0, 15, 30, 45)]
            + [f"2024-10-27T0{h}:{m:02}:00+01:00" for h in (2, 3) for m in (0, 15, 30, 45)],
            id="fall-every-15-minutes",
        ),
        pytest.param("0 30 2 * * *", FALL, ["2024-10-27T02:30:00+02:00"], id="fall-seconds"),
        pytest.param(
            "*/20 30 2 * * *",
            FALL,
            [
                "2024-10-27T02:30:00+02:00",
                "2024-10-27T02:30:20+02:00",
                "2024-10-27T02:30:40+02:00",
            ],
            id="fall-seconds-in-the-first-pass-only",
        ),
        pytest.param("@daily", FALL, ["2024-10-27T00:00:00+02:00"], id="fall-daily"),
        # A seconds field with a wildcard minute runs on real time, like `* * * * *`.
        pytest.param(
            "*/30 * * * * *",
            (local(PARIS, 2024, 3, 31, 1, 59), local(PARIS, 2024, 3, 31, 3, 1)),
            [
                "2024-03-31T01:59:00+01:00",
                "2024-03-31T01:59:30+01:00",
                "2024-03-31T03:00:00+02:00",
                "2024-03-31T03:00:30+02:00",
            ],
            id="spring-every-30-seconds",
        ),
        pytest.param(
            "*/30 * * * * *",
            (local(PARIS, 2024, 10, 27, 2, 59), local(PARIS, 2024, 10, 27, 2, 1, fold=1)),
            [
                "2024-10-27T02:59:00+02:00",
                "2024-10-27T02:59:30+02:00",
                "2024-10-27T02:00:00+01:00",
                "2024-10-27T02:00:30+01:00",
            ],
            id="fall-every-30-seconds",
        ),
        # Lord Howe moves its clock by 30 minutes.
        pytest.param(
            "15 2 * * *",
            (local(LORD_HOWE, 2024, 10, 6, 0), local(LORD_HOWE, 2024, 10, 6, 4)),
            ["2024-10-06T02:30:00+11:00"],
            id="half-hour-spring-fixed",
        ),
        pytest.param(
            "0 * * * *",
            (local(LORD_HOWE, 2024, 10, 6, 0), local(LORD_HOWE, 2024, 10, 6, 4)),
            ["2024-10-06T00:00:00+10:30", "2024-10-06T01:00:00+10:30", "2024-10-06T03:00:00+11:00"],
            id="half-hour-spring-hourly",
        ),
        pytest.param(
            "45 1 * * *",
            (local(LORD_HOWE, 2024, 4, 7, 0), local(LORD_HOWE, 2024, 4, 7, 4)),
            ["2024-04-07T01:45:00+11:00"],
            id="half-hour-fall-fixed-once",
        ),
        pytest.param(
            "*/30 * * * *",
            (local(LORD_HOWE, 2024, 4, 7, 0, 30), local(LORD_HOWE, 2024, 4, 7, 2, 1)),
            [
                "2024-04-07T00:30:00+11:00",
                "2024-04-07T01:00:00+11:00",
                "2024-04-07T01:30:00+11:00",
                "2024-04-07T01:30:00+10:30",
                "2024-04-07T02:00:00+10:30",
            ],
            id="half-hour-fall-every-30-minutes",
        ),
    ],
)
def test_daylight_saving_time_as_debian_cron(
    cron: str, window: tuple[datetime, datetime], expected: list[str]
) -> None:
    zone = window[0].tzinfo
    assert isinstance(zone, ZoneInfo)
    schedule = Schedule.parse(cron, zone)
    assert shown(schedule.times_between(*window)) == expected
    # next_after walks the same times one by one, from just before the window. (Compared
    # in UTC: within one zone Python compares wall clocks, and 02:00 CET < 02:59 CEST.)
    walked: list[datetime] = []
    t: datetime | None = window[0] - timedelta(microseconds=1)
    while t is not None and (t := schedule.next_after(t)) is not None:
        if t.astimezone(UTC) >= window[1].astimezone(UTC):
            break
        walked.append(t)
    assert shown(walked) == expected


@pytest.mark.parametrize(
    ("cron", "zone", "after", "expected"),
    [
        pytest.param("30 2 * * *", "UTC", "2024-03-31T00:00:00+00:00", "2024-03-31T02:30:00+00:00"),
        pytest.param("30 2 * * *", "UTC", "2024-10-27T02:30:00+00:00", "2024-10-28T02:30:00+00:00"),
        # Kolkata is UTC+05:30 all year: 02:00 there is 20:30 UTC the day before.
        pytest.param(
            "0 2 * * *", "Asia/Kolkata", "2024-03-30T12:00:00+00:00", "2024-03-31T02:00:00+05:30"
        ),
        # ... and minute 30 there is a whole hour in UTC.
        pytest.param(
            "30 * * * *", "Asia/Kolkata", "2024-03-30T11:45:00+00:00", "2024-03-30T17:30:00+05:30"
        ),
        # The answer is in the schedule's zone, whatever zone the question was in.
        pytest.param(
            "0 2 * * *", "Europe/Paris", "2024-06-01T12:00:00-04:00", "2024-06-02T02:00:00+02:00"
        ),
    ],
)
def test_next_after_in_utc_and_in_a_half_hour_zone(
    cron: str, zone: str, after: str, expected: str
) -> None:
    found = Schedule.parse(cron, zone).next_after(at(after))
    assert found is not None and found.isoformat() == expected


# --- cron syntax -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "after", "expected"),
    [
        # seconds FIRST, as Kestra's withSeconds: second 5 of minute 0 of each hour
        ("5 0 * * * *", "2024-01-01T10:00:00+00:00", "2024-01-01T10:00:05+00:00"),
        ("*/10 * * * * *", "2024-01-01T10:00:05+00:00", "2024-01-01T10:00:10+00:00"),
        ("0 0 12 * * MON", "2024-01-01T13:00:00+00:00", "2024-01-08T12:00:00+00:00"),
        ("0 12 * * MON", "2024-01-01T13:00:00+00:00", "2024-01-08T12:00:00+00:00"),
        # strictly after: a time that is scheduled gives the next one
        ("0 * * * *", "2024-01-01T10:00:00+00:00", "2024-01-01T11:00:00+00:00"),
        ("0 * * * *", "2024-01-01T09:59:59.999999+00:00", "2024-01-01T10:00:00+00:00"),
        # extras cronsim knows: last day, last weekday, nth weekday of the month
        ("0 0 L * *", "2024-02-01T00:00:00+00:00", "2024-02-29T00:00:00+00:00"),
        ("0 0 LW * *", "2024-03-01T00:00:00+00:00", "2024-03-29T00:00:00+00:00"),
        ("0 0 * * MON#1", "2024-01-02T00:00:00+00:00", "2024-02-05T00:00:00+00:00"),
        # day-of-month OR day-of-week when both are restricted (as cron does)
        ("0 0 13 * FRI", "2024-01-01T00:00:00+00:00", "2024-01-05T00:00:00+00:00"),
        ("  0   2 * * *  ", "2024-01-01T00:00:00+00:00", "2024-01-01T02:00:00+00:00"),
    ],
)
def test_cron_fields(cron: str, after: str, expected: str) -> None:
    assert Schedule.parse(cron).next_after(at(after)) == at(expected)


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("@yearly", "2025-01-01T00:00:00+01:00"),
        ("@annually", "2025-01-01T00:00:00+01:00"),
        ("@monthly", "2024-07-01T00:00:00+02:00"),
        ("@weekly", "2024-06-16T00:00:00+02:00"),  # 2024-06-12 is a Wednesday
        ("@daily", "2024-06-13T00:00:00+02:00"),
        ("@midnight", "2024-06-13T00:00:00+02:00"),
        ("@hourly", "2024-06-12T11:00:00+02:00"),
        ("@DAILY", "2024-06-13T00:00:00+02:00"),
    ],
)
def test_aliases(alias: str, expected: str) -> None:
    schedule = Schedule.parse(alias, "Europe/Paris")
    assert schedule.next_after(local(PARIS, 2024, 6, 12, 10, 30)) == at(expected)
    assert schedule.cron == alias
    assert alias.lower() in ALIASES


@pytest.mark.parametrize(
    ("cron", "timezone", "message"),
    [
        (
            "61 * * * *",
            "UTC",
            "cron '61 * * * *': the minute field '61' is not valid; use 5 fields",
        ),
        ("* 61 * * * *", "UTC", "the minute field '61' is not valid"),
        ("61 * * * * *", "UTC", "the second field '61' is not valid"),
        ("0 0 * 13 *", "UTC", "the month field '13' is not valid"),
        ("0 0 * * MON#6", "UTC", "the day-of-week field 'MON#6' is not valid"),
        ("*/0 * * * *", "UTC", "the minute field '*/0' is not valid"),
        ("0 0 30 2 *", "UTC", "the day-of-month '30' never occurs in the month field '2'"),
        ("0 0 ? * MON", "UTC", "cron writes '*' where Quartz writes '?'"),
        ("* * *", "UTC", "cron '* * *' has 3 fields; use 5 fields"),
        ("0 0 0 1 1 * 2024", "UTC", "has 7 fields"),
        ("", "UTC", "has 0 fields"),
        ("@reboot", "UTC", "cron '@reboot' is not a schedule name; use 5 fields"),
        ("@dayly", "UTC", "(did you mean '@daily'?)"),
        ("* * */20 * 1L", "UTC", "never matches a date"),
        (
            "0 2 * * *",
            "Europe/Pariss",
            "unknown time zone 'Europe/Pariss' (did you mean 'Europe/Paris'?)",
        ),
        ("0 2 * * *", "Europe", "unknown time zone 'Europe'"),
        ("0 2 * * *", "../../etc/passwd", "use an IANA name such as 'Europe/Paris'"),
        ("0 2 * * *", "+02:00", "unknown time zone '+02:00'"),
        ("0 2 * * *", "", "unknown time zone ''"),
    ],
)
def test_bad_schedules_say_what_is_accepted(cron: str, timezone: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        Schedule.parse(cron, timezone)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "*",
                "*/5",
                "0",
                "1",
                "7",
                "59",
                "60",
                "1-5",
                "5-1",
                "1,2",
                "L",
                "LW",
                "1L",
                "L5",
                "MON#2",
                "#",
                "-",
                "/",
                "?",
                "JAN",
                "SUN-MON",
                "1-2/3",
                "x",
                "",
                "5/0",
                "2/3",
            ]
        ),
        min_size=1,
        max_size=7,
    ),
    st.sampled_from(["UTC", "Europe/Paris", "Australia/Lord_Howe"]),
)
def test_any_expression_is_a_schedule_or_a_schedule_error(fields: list[str], zone: str) -> None:
    """Whatever a user writes, the answer is a schedule or a message, never a crash."""
    try:
        schedule = Schedule.parse(" ".join(fields), zone)
    except ScheduleError:
        return
    start = datetime(2024, 3, 30, tzinfo=UTC)
    times = schedule.upcoming(start, 5)
    assert times and all(t.tzinfo is schedule.timezone for t in times)
    assert [t.astimezone(UTC) for t in times] == sorted({t.astimezone(UTC) for t in times})
    assert times[0] > start


def test_times_must_be_timezone_aware() -> None:
    schedule = Schedule.parse("0 2 * * *")
    with pytest.raises(ValueError, match="must be a timezone-aware datetime"):
        schedule.next_after(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="end must be"):
        schedule.times_between(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1))


# --- backfills: every time in [start, end) -------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "zone", "start", "end", "count", "first", "last"),
    [
        (
            "@daily",
            "Europe/Paris",
            local(PARIS, 2019, 1, 1),
            local(PARIS, 2020, 1, 1),
            365,
            "2019-01-01T00:00:00+01:00",
            "2019-12-31T00:00:00+01:00",
        ),
        (
            "0 0 1 * *",
            "Europe/Paris",
            local(PARIS, 2019, 1, 1),
            local(PARIS, 2020, 1, 1),
            12,
            "2019-01-01T00:00:00+01:00",
            "2019-12-01T00:00:00+01:00",
        ),
        (
            "@monthly",
            "UTC",
            datetime(2019, 1, 1, tzinfo=UTC),
            datetime(2019, 12, 31, tzinfo=UTC),
            12,
            "2019-01-01T00:00:00+00:00",
            "2019-12-01T00:00:00+00:00",
        ),
        # A leap year, through both DST changes: each day once, the missing 02:30 at 03:00.
        (
            "30 2 * * *",
            "Europe/Paris",
            local(PARIS, 2024, 1, 1),
            local(PARIS, 2025, 1, 1),
            366,
            "2024-01-01T02:30:00+01:00",
            "2024-12-31T02:30:00+01:00",
        ),
        (
            "0 * * * *",
            "Europe/Paris",
            local(PARIS, 2024, 1, 1),
            local(PARIS, 2025, 1, 1),
            366 * 24,  # real hours: the spring day has 23, the autumn one 25
            "2024-01-01T00:00:00+01:00",
            "2024-12-31T23:00:00+01:00",
        ),
    ],
)
def test_times_between_a_year(
    cron: str, zone: str, start: datetime, end: datetime, count: int, first: str, last: str
) -> None:
    times = Schedule.parse(cron, zone).times_between(start, end)
    assert len(times) == count
    assert (times[0].isoformat(), times[-1].isoformat()) == (first, last)
    instants = [t.astimezone(UTC) for t in times]
    assert instants == sorted(set(instants)), "oldest first, each time once"


def test_times_between_is_half_open_and_dates_in_the_schedule_zone() -> None:
    schedule = Schedule.parse("@daily", "Europe/Paris")
    times = schedule.times_between(local(PARIS, 2019, 3, 1), local(PARIS, 2019, 3, 4))
    assert shown(times) == [
        "2019-03-01T00:00:00+01:00",
        "2019-03-02T00:00:00+01:00",
        "2019-03-03T00:00:00+01:00",
    ]
    # The bounds may be in another zone: they are instants.
    assert (
        schedule.times_between(at("2019-03-01T00:00:00+01:00"), at("2019-03-01T00:00:00+01:00"))
        == ()
    )
    assert (
        len(
            schedule.times_between(at("2019-02-28T23:00:00+00:00"), at("2019-03-01T00:00:00+00:00"))
        )
        == 1
    )
    assert schedule.times_between(local(PARIS, 2019, 3, 4), local(PARIS, 2019, 3, 1)) == ()


def test_seconds_over_a_day() -> None:
    times = Schedule.parse("*/15 * * * * *").times_between(
        datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)
    )
    assert len(times) == 4 * 60 * 24


# --- the latest time at or before ----------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "zone", "t", "expected"),
    [
        ("0 * * * *", "UTC", datetime(2024, 1, 1, 10, tzinfo=UTC), "2024-01-01T10:00:00+00:00"),
        ("0 * * * *", "UTC", datetime(2024, 1, 1, 10, 59, tzinfo=UTC), "2024-01-01T10:00:00+00:00"),
        (
            "*/10 * * * * *",
            "UTC",
            datetime(2024, 1, 1, 10, 0, 9, 999, tzinfo=UTC),
            "2024-01-01T10:00:00+00:00",
        ),
        # In the second pass of the fall-back hour, today's 02:30 (first pass) is the latest.
        (
            "30 2 * * *",
            "Europe/Paris",
            local(PARIS, 2024, 10, 27, 2, 15, fold=1),
            "2024-10-27T02:30:00+02:00",
        ),
        (
            "30 2 * * *",
            "Europe/Paris",
            local(PARIS, 2024, 10, 27, 2, 15, fold=0),
            "2024-10-26T02:30:00+02:00",
        ),
        (
            "0 * * * *",
            "Europe/Paris",
            local(PARIS, 2024, 10, 27, 2, 15, fold=1),
            "2024-10-27T02:00:00+01:00",
        ),
        (
            "30 2 * * *",
            "Europe/Paris",
            local(PARIS, 2024, 3, 31, 3, 10),
            "2024-03-31T03:00:00+02:00",
        ),
        (
            "30 2 * * *",
            "Europe/Paris",
            local(PARIS, 2024, 3, 31, 1, 59),
            "2024-03-30T02:30:00+01:00",
        ),
        (
            "15 2 * * *",
            "Australia/Lord_Howe",
            local(LORD_HOWE, 2024, 10, 6, 2, 45),
            "2024-10-06T02:30:00+11:00",
        ),
    ],
)
def test_latest_at_or_before(cron: str, zone: str, t: datetime, expected: str) -> None:
    latest = Schedule.parse(cron, zone).latest_at_or_before(t)
    assert latest is not None and latest.isoformat() == expected


# --- what to fire now: recover_missed ------------------------------------------------------

HOURLY = Schedule.parse("0 * * * *")
ALL, LAST, NONE = RecoverMissed.ALL, RecoverMissed.LAST, RecoverMissed.NONE


def utc(hour: int, minute: int = 0, second: int = 0, day: int = 1) -> datetime:
    return datetime(2024, 1, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("last", "now", "recover", "expected"),
    [
        # On time: the loop woke 30 s after 13:00; nothing was missed.
        (utc(12), utc(13, 0, 30), ALL, [utc(13)]),
        (utc(12), utc(13, 0, 30), LAST, [utc(13)]),
        (utc(12), utc(13, 0, 30), NONE, [utc(13)]),
        # 11:00 and 12:00 were missed; 13:00 is 30 s old, so on time.
        (utc(10), utc(13, 0, 30), ALL, [utc(11), utc(12), utc(13)]),
        (utc(10), utc(13, 0, 30), LAST, [utc(13)]),
        (utc(10), utc(13, 0, 30), NONE, [utc(13)]),
        # Now 13:05: 13:00 too is missed.
        (utc(10), utc(13, 5), ALL, [utc(11), utc(12), utc(13)]),
        (utc(10), utc(13, 5), LAST, [utc(13)]),
        (utc(10), utc(13, 5), NONE, []),
        # Nothing due since the last one fired.
        (utc(13), utc(13, 30), ALL, []),
        (utc(13), utc(13, 30), LAST, []),
        (utc(13), utc(13, 30), NONE, []),
        # Now exactly on a time: it is due (times owed are in (last, now]).
        (utc(12), utc(13), NONE, [utc(13)]),
        # A clock behind the last time fired owes nothing.
        (utc(14), utc(13, 0, 30), ALL, []),
        # Never fired (a new trigger): only an on-time time, never the past.
        (None, utc(13, 0, 30), ALL, [utc(13)]),
        (None, utc(13, 0, 30), LAST, [utc(13)]),
        (None, utc(13, 5), ALL, []),
        (None, utc(13, 5), LAST, []),
        (None, utc(13, 5), NONE, []),
    ],
)
def test_due_times(
    last: datetime | None, now: datetime, recover: RecoverMissed, expected: list[datetime]
) -> None:
    assert list(due_times(HOURLY, last, now, recover)) == expected


@pytest.mark.parametrize(
    ("recover", "expected"),
    [
        (
            ALL,
            [
                "2024-01-02T02:00:00+01:00",
                "2024-01-03T02:00:00+01:00",
                "2024-01-04T02:00:00+01:00",
                "2024-01-05T02:00:00+01:00",
            ],
        ),
        (LAST, ["2024-01-05T02:00:00+01:00"]),
        (NONE, []),
    ],
)
def test_unpausing_follows_recover_missed(recover: RecoverMissed, expected: list[str]) -> None:
    """Paused after the 1 January run, unpaused on 5 January at 10:00."""
    nightly = Schedule.parse("0 2 * * *", "Europe/Paris")
    times = due_times(nightly, local(PARIS, 2024, 1, 1, 2), local(PARIS, 2024, 1, 5, 10), recover)
    assert shown(times) == expected


def test_due_times_across_the_fall_back_hour() -> None:
    """Real-time schedules fire in both passes; a fixed time fires in the first only."""
    last = local(PARIS, 2024, 10, 27, 1, 30)
    now = local(PARIS, 2024, 10, 27, 2, 30, fold=1)
    assert shown(due_times(HOURLY_PARIS, last, now, ALL)) == [
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T02:00:00+01:00",
    ]
    fixed = Schedule.parse("30 2 * * *", "Europe/Paris")
    assert shown(due_times(fixed, last, now, ALL)) == ["2024-10-27T02:30:00+02:00"]
    assert due_times(fixed, local(PARIS, 2024, 10, 27, 2, 30), now, ALL) == ()


HOURLY_PARIS = Schedule.parse("0 * * * *", "Europe/Paris")


def test_on_time_is_a_parameter() -> None:
    now = utc(13, 2)
    assert due_times(HOURLY, utc(12), now, NONE) == ()
    assert due_times(HOURLY, utc(12), now, NONE, on_time=timedelta(minutes=5)) == (utc(13),)
    assert timedelta(seconds=1) < ON_TIME <= timedelta(minutes=5)


def test_all_on_a_long_outage_of_a_seconds_schedule_is_every_time() -> None:
    every_second = Schedule.parse("* * * * * *")
    times = due_times(every_second, utc(10), utc(11), ALL)
    assert len(times) == 3600
    assert due_times(every_second, utc(10), utc(11), LAST) == (utc(11),)


# --- against cronsim's own Debian emulation -------------------------------------------------

_MINUTES = ["0", "30", "*/15", "*", "0,30", "15-45/15", "59"]
_HOURS = ["2", "1-3", "*", "*/2", "2,3", "0", "3"]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(_MINUTES),
    st.sampled_from(_HOURS),
    st.sampled_from([SPRING, FALL]),
    st.integers(min_value=0, max_value=239),
)
def test_five_field_times_are_cronsims_debian_times(
    minute: str, hour: str, day: tuple[datetime, datetime], offset: int
) -> None:
    """cronsim emulates Debian's DST handling for 5-field expressions (and only those):
    from a start before the change, the times here are the same as cronsim's."""
    cron = f"{minute} {hour} * * *"
    start = day[0] - timedelta(hours=2) + timedelta(minutes=offset)
    end = day[1] + timedelta(hours=2)
    expected = []
    for t in CronSim(cron, start - timedelta(microseconds=1)):
        if t.astimezone(UTC) >= end.astimezone(UTC):
            break
        expected.append(t.isoformat())
    assert shown(Schedule.parse(cron, PARIS).times_between(start, end)) == expected
