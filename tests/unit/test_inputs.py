"""workers/inputs.py: what the CLI and the API accept as durations, times, formats and
schedules, and that everything else is a BadArgument (never a ValueError or overflow)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vigil.schema.payloads import StartSessionInput
from vigil.workers import inputs
from vigil.workers.api.artifacts import byte_range
from vigil.workers.client import BadArgument
from vigil.workers.keyed import keyed_session_id


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1w", 604800),
     ("1.5h", 5400), (" 3m ", 180), ("0", 0)],
)  # fmt: skip
def test_durations(raw: str, seconds: float) -> None:
    assert inputs.parse_duration(raw, "--every") == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "raw", ["", "h", "abc", "1x", "-5m", "nan", "inf", "1e400", "9" * 400 + "d", "1e12w"]
)
def test_bad_durations_are_bad_arguments(raw: str) -> None:
    with pytest.raises(BadArgument, match="--every"):
        inputs.parse_duration(raw, "--every")


def test_an_interval_must_be_more_than_zero() -> None:
    with pytest.raises(BadArgument, match="more than 0"):
        inputs.parse_duration("0s", "--every", allow_zero=False)


def test_since_is_a_duration_back_or_an_iso_time() -> None:
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert inputs.parse_since("2h", now=now) == now - timedelta(hours=2)
    assert inputs.parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert inputs.parse_since("2026-11-01T00:00:00+01:00") == datetime(2026, 10, 31, 23, tzinfo=UTC)
    assert inputs.parse_since(None) is None
    # A decimal, as every other duration takes it (`1.5h` read as a bad ISO time).
    assert inputs.parse_since("1.5h", now=now) == now - timedelta(minutes=90)
    assert inputs.parse_since(" 0.5d ", now=now) == now - timedelta(hours=12)
    for bad in ("yesterday", "9" * 30 + "d", "2h30", "1.h", ".5h", "1.5.2h", "-1h", "1e3h"):
        with pytest.raises(BadArgument, match="--since"):
            inputs.parse_since(bad)


def test_export_formats() -> None:
    assert inputs.export_format("markdown") == "md"
    assert inputs.export_format("jsonl") == "jsonl"
    with pytest.raises(BadArgument, match="jsonl or md"):
        inputs.export_format("pdf")


def test_schedule_timing_wants_exactly_one_of_cron_and_every() -> None:
    with pytest.raises(BadArgument, match="exactly one"):
        inputs.schedule_timing(cron=None, every=None)
    with pytest.raises(BadArgument, match="exactly one"):
        inputs.schedule_timing(cron="* * * * *", every="1h")
    timing = inputs.schedule_timing(cron="0 9 * * MON-FRI", every=None, time_zone="Europe/Paris")
    assert (timing.cron, timing.every, timing.overlap) == ("0 9 * * MON-FRI", None, "skip")
    with pytest.raises(BadArgument, match="overlap"):
        inputs.schedule_timing(cron=None, every="1h", overlap="sometimes")
    with pytest.raises(BadArgument, match="time zone"):
        inputs.schedule_timing(cron="* * * * *", every=None, time_zone="Mars/Olympus")
    with pytest.raises(BadArgument, match="cron"):
        inputs.schedule_timing(cron="every day", every=None)


@pytest.mark.parametrize("cron", ["0 0 2 * * *", "0 0 2 * * * 2027"])
def test_a_cron_of_more_than_five_fields_is_refused(cron: str) -> None:
    """Temporal reads a sixth field as the year, where a seconds-first cron means 02:00
    daily by '0 0 2 * * *': it ran monthly, on the 2nd."""
    with pytest.raises(BadArgument, match="give five") as refused:
        inputs.schedule_timing(cron=cron, every=None)
    assert "'0 2 * * *' for 02:00 daily" in str(refused.value)
    assert inputs.schedule_timing(cron="@daily", every=None).cron == "@daily"


@pytest.mark.parametrize(
    "cron",
    ["0 2 31 2 *", "0 2 30 FEB *", "0 2 31 4,6,9,11 *", "0 2 30-31 2 *", "0 2 31 APR-JUN/2 *"],
)
def test_a_cron_that_never_fires_is_refused(cron: str) -> None:
    """No month it names has the day it names: the schedule was made and never ran."""
    with pytest.raises(BadArgument, match="never fires") as refused:
        inputs.schedule_timing(cron=cron, every=None)
    assert cron in str(refused.value)


@pytest.mark.parametrize(
    "cron",
    ["0 2 29 2 *", "0 2 31 1-2 *", "0 2 31 */2 *", "0 2 30 * *", "0 2 31 2 MON", "0 2 L 2 *",
     "0 2 31 JAN,FEB *", "*/5 * * * *"],
)  # fmt: skip
def test_a_cron_that_fires_some_day_is_taken(cron: str) -> None:
    """Feb 29 comes in leap years; a day of the week named too is Temporal's to judge."""
    assert inputs.schedule_timing(cron=cron, every=None).cron == cron


@pytest.mark.parametrize("cron", ["0 2 \u00b2 * *", "0 2 31/\u00b2 2 *"])
def test_a_cron_with_digits_that_are_not_ascii_is_left_to_temporal(cron: str) -> None:
    """'\u00b2' is a digit to str.isdigit, not to int: the check raised ValueError (a 500)."""
    assert inputs.schedule_timing(cron=cron, every=None).cron == cron


def test_an_intervals_time_zone_and_a_jitter_past_it_are_refused() -> None:
    """`--every 1h --tz Europe/Paris` and `--every 1m --jitter 5m` were taken and did
    nothing, or moved each run past the next one's time."""
    with pytest.raises(BadArgument, match="--tz applies to --cron only"):
        inputs.schedule_timing(cron=None, every="1h", time_zone="Europe/Paris")
    with pytest.raises(BadArgument, match=r"^time_zone applies to cron only"):
        inputs.schedule_timing(cron=None, every="1h", time_zone="UTC", option="")
    with pytest.raises(BadArgument, match=r"--jitter \(5m\) must be shorter than --every \(1m\)"):
        inputs.schedule_timing(cron=None, every="1m", jitter="5m")
    assert inputs.schedule_timing(cron=None, every="1h", jitter="5m").jitter is not None
    # The Python client's schedules are checked alike.
    template = StartSessionInput(agent_id="a", goal="g")
    with pytest.raises(BadArgument, match="an interval has no time zone"):
        inputs.check_schedule(
            "s-1", template, cron=None, every=timedelta(hours=1), time_zone="UTC", note=None
        )


def test_a_backfill_window_is_checked() -> None:
    """A reversed window said "backfilled" and started nothing; a window of years started
    every run in it at once (110 sessions on a 2-core machine)."""
    noon = datetime(2026, 12, 5, 12, tzinfo=UTC)
    with pytest.raises(BadArgument, match="window is empty"):
        inputs.check_backfill(noon, noon - timedelta(hours=3), every_seconds=3600, cron=None)
    with pytest.raises(BadArgument, match="holds 1001 runs"):
        inputs.check_backfill(noon - timedelta(hours=1000), noon, every_seconds=3600, cron=None)
    with pytest.raises(BadArgument, match="more than 100 runs"):
        inputs.check_backfill(
            noon - timedelta(days=1), noon, every_seconds=None, cron="*/5 * * * *"
        )
    day = noon - timedelta(days=1)
    # Both ends included, as Temporal's backfill takes them: a day from noon to noon holds
    # 25 hourly runs.
    assert inputs.check_backfill(day, noon, every_seconds=3600, cron=None) == 25
    assert inputs.check_backfill(day, noon, every_seconds=None, cron="0 9,17 * * *") == 2
    # Macros and days of the week are counted too (2026-12-05 is a Saturday).
    with pytest.raises(BadArgument, match="more than 100 runs"):
        inputs.check_backfill(noon - timedelta(days=5), noon, every_seconds=None, cron="@hourly")
    weeks = noon - timedelta(weeks=4)
    assert inputs.check_backfill(weeks, noon, every_seconds=None, cron="0 9 * * MON") == 4
    assert inputs.check_backfill(weeks, noon, every_seconds=None, cron="@weekly") == 4
    # In the schedule's time zone: 03:00 in Paris is 02:00 UTC in winter.
    paris = inputs.check_backfill(
        noon - timedelta(hours=10), noon - timedelta(hours=9, minutes=30),
        every_seconds=None, cron="0 3 * * *", time_zone="Europe/Paris",
    )  # fmt: skip
    assert paris == 1
    # An interval's runs fall on its multiples since 1970: half an hour holds one run an
    # hour or none (it said "about 0" of the one it started).
    half = noon + timedelta(minutes=30)
    assert inputs.check_backfill(noon, half, every_seconds=3600, cron=None, now=half) == 1
    late = noon + timedelta(minutes=10)
    assert inputs.check_backfill(late, late + timedelta(minutes=30), every_seconds=3600,
                                 cron=None, now=half + timedelta(hours=1)) == 0  # fmt: skip
    # A cron it does not read is left to Temporal.
    assert inputs.check_backfill(day, noon, every_seconds=None, cron="0 9 L * *") is None


def test_a_backfill_window_is_in_the_past_and_after_1970() -> None:
    """A window at the year 9999 was a traceback (an overflow counting its cron runs); one
    before 1970 said "backfilled (about 2 runs)" and Temporal started none of them, or
    only those from 1970 on; a window still to come started its runs at once, under the
    ids of the runs the schedule would start then."""
    now = datetime(2026, 12, 6, 1, tzinfo=UTC)
    day = timedelta(days=1)
    for start, end, why in (
        (now + day, now + 2 * day, "in the past"),
        (now - day, now + day, "in the past"),
        (datetime(9999, 12, 30, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC), "past"),
        (datetime(1, 1, 1, tzinfo=UTC), datetime(1, 1, 3, tzinfo=UTC), "1970"),
        (datetime(1969, 12, 30, tzinfo=UTC), datetime(1970, 1, 2, tzinfo=UTC), "1970"),
    ):
        for cron, every in (("0 3 * * *", None), (None, 3600.0)):
            with pytest.raises(BadArgument, match=why):
                inputs.check_backfill(start, end, every_seconds=every, cron=cron, now=now)
    assert (
        inputs.check_backfill(now - 2 * day, now, every_seconds=None, cron="0 3 * * *", now=now)
        == 2
    )
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert inputs.check_backfill(epoch, epoch + day, every_seconds=3600, cron=None, now=now) == 25
    # A time without an offset is UTC, as Temporal reads it (it raised TypeError).
    naive = now.replace(tzinfo=None)
    assert inputs.check_backfill(naive - day, naive, every_seconds=3600, cron=None, now=now) == 25


def test_schedule_ids_and_templates() -> None:
    assert inputs.check_schedule_id("nightly-report.v2") == "nightly-report.v2"
    for bad in ("", "-x", "a/b", "a b", "x" * 201, "nightly\n"):
        with pytest.raises(BadArgument):
            inputs.check_schedule_id(bad)
    template = inputs.schedule_template(agent="ops", goal="report", max_steps=5, agent_version=2)
    assert (template.agent_id, template.budget.max_steps, template.agent_version) == ("ops", 5, 2)
    with pytest.raises(BadArgument, match="goal"):
        inputs.schedule_template(agent="ops", goal="x" * 10_000_000)


def test_session_ids_a_caller_may_choose() -> None:
    assert inputs.check_session_id(None) is None
    for good in ("ops-20261203-1", "a..b", "nightly:2026-12-03T09:00:00Z", "x" * 200):
        assert inputs.check_session_id(good) == good
    for bad in ("", ".", "..", "a/b", "-x", "a b", "a%2Fb", "naïve", "a\x00b", "x" * 201, "ab\n"):
        with pytest.raises(BadArgument, match="bad session id"):
            inputs.check_session_id(bad)
    for reserved in (keyed_session_id("ops", "customer-42"), "nightly-run-2026-12-04T09:00:00Z"):
        with pytest.raises(BadArgument, match="reserved"):
            inputs.check_session_id(reserved)
    assert inputs.check_session_id("my-key-notes") == "my-key-notes"


@pytest.mark.parametrize(
    ("header", "size", "span"),
    [
        ("bytes=0-0", 10, (0, 0)),
        ("bytes=2-5", 10, (2, 5)),
        ("bytes=5-", 10, (5, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=8-100", 10, (8, 9)),
        ("bytes=5-2", 10, None),  # invalid: ignored
        ("bytes=0-1,4-5", 10, None),  # several ranges: the whole body
        ("items=0-1", 10, None),
        ("bytes=-", 10, None),
        # Past Python's 4,300 digits for int(): read as "unsatisfiable" (a 416).
        ("bytes=0-" + "9" * 5000, 10, (0, 9)),
        ("bytes=-" + "9" * 5000, 10, (0, 9)),
        ("bytes=5-" + "0" * 5000 + "7", 10, (5, 7)),
        # Spaces around the range and the unit's case, as a trailing space already was.
        ("bytes= 0-1", 10, (0, 1)),
        ("bytes=0-1 ", 10, (0, 1)),
        ("Bytes=2-3", 10, (2, 3)),
        ("bytes = 4 - 5", 10, (4, 5)),
    ],
)
def test_byte_ranges(header: str, size: int, span: tuple[int, int] | None) -> None:
    assert byte_range(header, size) == span


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=10-", 10), ("bytes=-0", 10), ("bytes=0-", 0), ("bytes=" + "9" * 5000 + "-", 10)],
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(ValueError):
        byte_range(header, size)


def test_a_cron_naming_a_day_of_the_month_and_of_the_week_counts_days_that_are_both() -> None:
    """Temporal runs such a cron only on days that are both (Friday the 13th), where
    classic cron runs on either: a backfill counted either, 64 runs for one."""
    year = datetime(2027, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC)
    now = datetime(2028, 6, 1, tzinfo=UTC)
    assert inputs.check_backfill(*year, every_seconds=None, cron="0 0 13 * FRI", now=now) == 1
    assert inputs.check_backfill(*year, every_seconds=None, cron="0 9 1 * MON", now=now) == 3
    assert inputs.cron_note("0 0 13 * FRI") is not None
    assert "both day 13 of the month and FRI" in (inputs.cron_note("0 0 13 * FRI") or "")
    for either_one in ("0 0 13 * *", "0 9 * * MON", "@weekly", None, "0 0 */2 * MON"):
        assert inputs.cron_note(either_one) is None


@pytest.mark.parametrize("cron", ["@reboot", "@every_day", "@Daily"])
def test_an_unknown_cron_macro_is_refused_in_vigils_words(cron: str) -> None:
    """'@reboot' reached Temporal and came back as "CronString does not have 5-7 fields",
    where the README says five fields or a macro."""
    with pytest.raises(BadArgument, match="unknown cron macro") as refused:
        inputs.schedule_timing(cron=cron, every=None)
    assert "@daily" in str(refused.value) and "5-7" not in str(refused.value)
    for macro in inputs.CRON_MACROS:
        assert inputs.schedule_timing(cron=macro, every=None).cron == macro


@pytest.mark.parametrize("cron", ["*/0 * * * *", "0 1-5/00 * * *", "0 0 1,*/0 * *"])
def test_a_cron_stepping_by_zero_is_refused(cron: str) -> None:
    """Temporal answered "Minute has invalid Step" as its own error."""
    with pytest.raises(BadArgument, match="a step of 0"):
        inputs.schedule_timing(cron=cron, every=None)
    assert inputs.schedule_timing(cron="*/10 * * * *", every=None).cron == "*/10 * * * *"
