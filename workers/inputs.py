"""What people type, checked in one place: durations, times, export formats, schedules.

The CLI and the HTTP API both parse their input here, so ``15m`` or ``--since 2h`` mean
the same thing through either face and are refused with the same message. Every
function raises :class:`BadArgument` (exit code 2 in the CLI, 422 in the API) for input
the caller can fix; none lets a ``ValueError`` or ``OverflowError`` escape.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from vigil.schema.limits import session_input_error, start_error
from vigil.schema.payloads import Budget, StartSessionInput, ToolPolicy
from vigil.workers.agents import start_overrides
from vigil.workers.client import OVERLAP, BadArgument

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
"""Duration suffixes: seconds, minutes, hours, days, weeks."""

AGO = re.compile(r"[0-9]+(\.[0-9]+)?[smhdw]")
"""A duration back from now, as ``--since`` takes it: ``2h``, ``1.5h``, ``3d``."""

MAX_DURATION = timedelta(days=366 * 100)
"""The longest duration accepted anywhere (a century): past it is a typo, or an overflow."""

EXPORT_FORMATS: dict[str, Literal["jsonl", "md"]] = {"jsonl": "jsonl", "md": "md", "markdown": "md"}
"""Transcript export formats, by the names accepted for them."""

SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
"""A session id chosen by a caller: letters, digits and ``. _ : -``, at most 200 (the
record's ids). Each is one path segment of the API (no ``/``, never ``.`` or ``..``,
nothing a client would re-encode) and a workflow id."""

SCHEDULE_RUN_SUFFIX = len("-run-2026-12-06T02:00:00Z")
"""What each run's session id adds to its schedule's id: ``-run-`` and the run's time, as
Temporal names a scheduled workflow (RFC 3339, whole seconds, UTC)."""
MAX_SCHEDULE_ID = 200 - SCHEDULE_RUN_SUFFIX
SCHEDULE_ID = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._:-]{{0,{MAX_SCHEDULE_ID - 1}}}$")
"""A schedule id: as a session id, but short enough that its runs' ids are session ids."""

RESERVED_SESSION_IDS = re.compile(
    r"-key-[0-9a-f]{32}(-[1-9][0-9]*)?$"  # a conversation key's sessions (workers/keyed.py)
    r"|-key-[A-Za-z0-9_-]+-[0-9a-f]{12}$"  # the session a start trigger gives a key
    r"|-trigger-[0-9a-f]{16}$"  # a trigger's session of one delivery (workers/hooks.py)
    r"|-run-\d{4}-\d{2}-\d{2}T[0-9:.]+(Z|[+-]\d{2}:\d{2})$"  # a schedule's run
)
"""Ids of the forms vigil gives sessions it starts by itself. A keyed message joins the
session running under its key's id, whoever started it: a caller taking one could read
another agent's conversation (or block a scheduled run)."""

OverlapName = Literal[
    "skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"
]


def parse_duration(raw: str | None, what: str, *, allow_zero: bool = True) -> timedelta | None:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d``, ``1w`` (decimals allowed) as a timedelta."""
    if raw is None:
        return None
    text = raw.strip()
    hint = f"bad {what} {raw!r}: use seconds or a duration like 90s, 15m, 2h, 1d"
    scale = 1
    if text[-1:] in UNITS:
        scale = UNITS[text[-1]]
        text = text[:-1]
    try:
        seconds = float(text) * scale
    except ValueError:
        raise BadArgument(hint) from None
    if not math.isfinite(seconds):
        raise BadArgument(hint)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "more than 0"
        raise BadArgument(f"bad {what} {raw!r}: must be {bound}")
    if seconds > MAX_DURATION.total_seconds():
        raise BadArgument(f"bad {what} {raw!r}: at most {MAX_DURATION.days} days")
    return timedelta(seconds=seconds)


def parse_since(
    raw: str | None, what: str = "--since", *, now: datetime | None = None
) -> datetime | None:
    """An ISO time (naive means UTC), or a duration back from now (``2h``, ``3d``)."""
    if raw is None:
        return None
    text = raw.strip()
    if AGO.fullmatch(text):
        ago = parse_duration(text, what)
        assert ago is not None
        return (now or datetime.now(UTC)) - ago
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadArgument(
            f"bad {what} {raw!r}: use an ISO time or a duration like 2h, 3d"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def export_format(raw: str) -> Literal["jsonl", "md"]:
    """The export format a name stands for (``jsonl``, ``md`` or ``markdown``)."""
    fmt = EXPORT_FORMATS.get(raw)
    if fmt is None:
        raise BadArgument(f"unknown export format {raw!r}: jsonl or md")
    return fmt


def check_schedule_id(schedule_id: str) -> str:
    if not SCHEDULE_ID.fullmatch(schedule_id):
        raise BadArgument(
            f"bad schedule id {schedule_id[:80]!r}: 1 to {MAX_SCHEDULE_ID} letters, digits "
            "or . _ : - (starting with a letter or digit; each run's id adds "
            f"{SCHEDULE_RUN_SUFFIX} characters)"
        )
    return schedule_id


def check_session_id(session_id: str | None) -> str | None:
    """A session id a caller chose for a new session (None: vigil makes one)."""
    if session_id is not None and not SESSION_ID.fullmatch(session_id):
        raise BadArgument(
            f"bad session id {session_id[:80]!r}: 1 to 200 letters, digits or . _ : - "
            "(starting with a letter or digit)"
        )
    if session_id is not None and RESERVED_SESSION_IDS.search(session_id):
        raise BadArgument(
            f"bad session id {session_id[:80]!r}: ids ending in -key-<32 hex digits>, "
            "-key-<key>-<12 hex digits>, -trigger-<16 hex digits> or -run-<time> are "
            "reserved for the sessions of keys, triggers and schedules"
        )
    return session_id


def check_time_zone(name: str | None) -> str | None:
    if name is None:
        return None
    try:
        if not name or any(unicodedata.category(c).startswith("C") for c in name):
            raise ValueError(name)
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise BadArgument(
            f"unknown time zone {name[:80]!r}: use an IANA name like Europe/Paris"
        ) from None
    return name


def check_cron(expression: str | None) -> str | None:
    """A light check (Temporal checks the fields themselves when the schedule is made)."""
    if expression is None:
        return None
    fields = expression.split()
    named = expression.strip().startswith("@")
    if (
        not expression.strip()
        or len(expression) > 200
        or (not named and not 5 <= len(fields) <= 7)
        or any(unicodedata.category(c).startswith("C") for c in expression)
    ):
        raise BadArgument(f"bad cron expression {expression[:80]!r}: e.g. '0 9 * * MON-FRI'")
    if named and fields[0] != "@every" and expression.strip() not in CRON_MACROS:
        # Temporal knows these (and @every); @reboot and the rest came back as its own
        # "does not have 5-7 fields", where five fields or a macro is what is taken.
        raise BadArgument(
            f"unknown cron macro {expression.strip()[:80]!r}: one of {', '.join(CRON_MACROS)}, "
            "or five fields (minute hour day-of-month month day-of-week)"
        )
    if not named and any(_step_of_zero(field) for field in fields):
        raise BadArgument(
            f"bad cron expression {expression[:80]!r}: a step of 0 ('*/0') never moves on; "
            "e.g. '*/15 * * * *' for every 15 minutes"
        )
    if not named and len(fields) != 5:
        # Temporal reads more fields as seconds first and the year last (a sixth is the
        # year), where many cron dialects read a sixth as seconds: '0 0 2 * * *' meant
        # for 02:00 daily runs on the 2nd of each month. Five fields say one thing.
        raise BadArgument(
            f"cron expression {expression[:80]!r} has {len(fields)} fields: give five "
            "(minute hour day-of-month month day-of-week), e.g. '0 2 * * *' for 02:00 daily"
        )
    if not named and _never_fires(fields[2], fields[3], fields[4]):
        raise BadArgument(
            f"cron expression {expression!r} never fires: no month it names has the day of "
            "the month it names"
        )
    return expression


CRON_MACROS = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
"""The macros a cron may be (as Temporal reads them; ``@every`` is left to it)."""


def _step_of_zero(field: str) -> bool:
    """Whether a cron field steps by 0 somewhere (``*/0``, ``1-5/00``)."""
    return any(
        "/" in part and part.rsplit("/", 1)[1].isascii() and part.rsplit("/", 1)[1].isdigit()
        and int(part.rsplit("/", 1)[1]) == 0
        for part in field.split(",")
    )  # fmt: skip


def cron_note(expression: str | None) -> str | None:
    """What to tell of a cron that names both a day of the month and a day of the week:
    Temporal runs it on days that are both, where classic cron runs on either."""
    fields = (expression or "").split()
    # A field that begins with * (*/2 too) classic cron reads as unrestricted: it ANDs
    # then, as Temporal does, and there is nothing to tell.
    if len(fields) != 5 or fields[2][:1] in ("*", "?") or fields[4][:1] in ("*", "?"):
        return None
    return (
        f"it runs only on days that are both day {fields[2]} of the month and {fields[4]} "
        "(classic cron runs on either: for that, create two schedules)"
    )


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The earliest time a schedule's backfill starts a run for."""

MAX_BACKFILL_RUNS = 100
"""A backfill starts every run of its window at once (overlap allow_all): more than this
is refused (backfill shorter windows one after another)."""


def check_backfill(
    start: datetime,
    end: datetime,
    *,
    every_seconds: float | None,
    cron: str | None,
    time_zone: str | None = None,
    now: datetime | None = None,
) -> int | None:
    """How many runs a backfill of ``start``..``end`` starts, as far as it can be counted
    (an interval, or a cron of five fields or a macro, in ``time_zone``; None otherwise);
    BadArgument for an empty window, one of more than MAX_BACKFILL_RUNS runs, one that is
    not over yet (its runs start on their own, when they are due) or one that begins
    before 1970 (Temporal's schedules start nothing before it)."""
    if start >= end:
        raise BadArgument(
            f"the backfill window is empty: --from {start.isoformat()} is not before "
            f"--to {end.isoformat()}"
        )
    # A time without its offset is UTC, as Temporal reads it.
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    if end > now:
        raise BadArgument(
            f"a backfill window must be in the past: --to {end.isoformat()} is after now "
            f"({now.isoformat(timespec='seconds')}); the runs still to come start on their own"
        )
    if start < EPOCH:
        raise BadArgument(
            f"a backfill window must begin in 1970 or later: --from {start.isoformat()} is "
            "before it (a schedule starts no run before 1970-01-01T00:00Z)"
        )
    runs: int | None = None
    many = ""
    if every_seconds:
        runs = _interval_runs(every_seconds, start, end)
        many = str(runs)
    elif cron is not None:
        runs = _cron_runs(cron, start, end, time_zone)
        many = f"more than {MAX_BACKFILL_RUNS}"  # counted only that far
    if runs is not None and runs > MAX_BACKFILL_RUNS:
        raise BadArgument(
            f"the backfill window holds {many} runs, all started at once: at most "
            f"{MAX_BACKFILL_RUNS}; backfill shorter windows one after another"
        )
    return runs


def _interval_runs(every_seconds: float, start: datetime, end: datetime) -> int:
    """The times of an interval schedule from ``start`` to ``end``, both included, as
    Temporal's backfill takes them: its runs fall on the multiples of the interval since
    1970-01-01T00:00Z (a window of 30 minutes holds one run an hour or none, not "about
    0"). In whole microseconds, so a time on a multiple counts once."""
    every = max(1, round(every_seconds * 1_000_000))
    micro = timedelta(microseconds=1)
    first = -((EPOCH - start) // micro // every)  # the ceiling of (start - EPOCH) / every
    last = (end - EPOCH) // micro // every
    return max(0, last - first + 1)


_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


def _cron_runs(cron: str, start: datetime, end: datetime, time_zone: str | None) -> int | None:
    """The times of ``cron`` from ``start`` to ``end``, both included (as Temporal's
    backfill takes them), read in
    ``time_zone`` (UTC when unset); None for a cron this does not read. Past
    MAX_BACKFILL_RUNS it stops counting (the answer is then just over it)."""
    fields = _MACROS.get(cron.strip().lower(), cron).split()
    if len(fields) != 5:
        return None
    minutes = _cron_values(fields[0], 0, 59, ())
    hours = _cron_values(fields[1], 0, 23, ())
    days = _cron_values(fields[2], 1, 31, ())
    months = _cron_values(fields[3], 1, 12, _MONTHS)
    weekdays = _cron_values(fields[4], 0, 7, _WEEKDAYS)
    if None in (minutes, hours, days, months, weekdays):
        return None
    assert minutes and hours and days and months and weekdays
    sundays = {0, 7} & weekdays
    # A day of the month and a day of the week both named: Temporal runs on days that are
    # both (Friday the 13th), not on either as classic cron does.
    zone = ZoneInfo(time_zone) if time_zone else UTC
    first, last = start.astimezone(zone), end.astimezone(zone)
    times = sorted((h, m) for h in hours for m in minutes)
    runs, day = 0, first.date()
    while day <= last.date() and runs <= MAX_BACKFILL_RUNS:
        weekday = day.isoweekday() % 7
        on_day, on_weekday = day.day in days, weekday in weekdays or (weekday == 0 and sundays)
        if day.month in months and on_day and on_weekday:
            for hour, minute in times:
                at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
                runs += first <= at <= last
        day += timedelta(days=1)
    return runs


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_LONGEST = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
"""The most days each month has (February's in a leap year)."""


def _never_fires(days: str, months: str, weekdays: str) -> bool:
    """Whether no date has a day of the month in ``days`` in a month in ``months`` (a
    field this does not read, or any day of the week named, is left to Temporal)."""
    if weekdays not in ("*", "?"):
        return False
    day_set = _cron_values(days, 1, 31, ())
    month_set = _cron_values(months, 1, 12, _MONTHS)
    if day_set is None or month_set is None:
        return False
    return all(min(day_set) > _LONGEST[m - 1] for m in month_set)


def _cron_values(field: str, low: int, high: int, names: tuple[str, ...]) -> set[int] | None:
    """The values a cron field takes (``*``, ``N``, ``N-M``, a step, lists of them, the
    names of ``names`` from ``low``); None for anything else."""

    def number(text: str) -> int | None:
        upper = text.upper()
        if upper in names:
            return names.index(upper) + low
        return int(text) if text.isascii() and text.isdigit() else None

    values: set[int] = set()
    for item in field.split(","):
        span, _, step_text = item.partition("/")
        digits = step_text.isascii() and step_text.isdigit()
        step = int(step_text) if digits and int(step_text) > 0 else None
        if step_text and step is None:
            return None
        if span == "*":
            first, last = low, high
        else:
            start, dash, end = span.partition("-")
            first_or_none = number(start)
            last_or_none = number(end) if dash else first_or_none
            if first_or_none is None or last_or_none is None:
                return None
            first, last = first_or_none, last_or_none
            if step is not None and not dash:
                last = high  # N/S: from N on
        if not low <= first <= last <= high:
            return None
        values.update(range(first, last + 1, step or 1))
    return values or None


def check_overlap(name: str) -> str:
    if name not in OVERLAP:
        raise BadArgument(f"unknown overlap policy {name!r}; one of {', '.join(OVERLAP)}")
    return name


@dataclass(frozen=True)
class ScheduleTiming:
    """When a schedule runs, validated: exactly one of ``cron`` and ``every``."""

    cron: str | None
    every: timedelta | None
    time_zone: str | None
    jitter: timedelta | None
    catchup: timedelta | None
    overlap: str


def schedule_timing(
    *,
    cron: str | None,
    every: str | None,
    time_zone: str | None = None,
    jitter: str | None = None,
    catchup: str | None = None,
    overlap: str = "skip",
    option: str = "--",
) -> ScheduleTiming:
    """Check a schedule's timing as typed (``option`` prefixes names in messages)."""
    check_overlap(overlap)
    if (cron is None) == (every is None):
        raise BadArgument(f"give exactly one of {option}cron or {option}every")
    if every is not None and time_zone is not None:
        # An interval's runs fall on its multiples since 1970, the same in every zone.
        zone = f"{option}tz" if option else "time_zone"
        raise BadArgument(f"{zone} applies to {option}cron only: an interval has no time zone")
    timing = ScheduleTiming(
        cron=check_cron(cron),
        every=parse_duration(every, f"{option}every", allow_zero=False),
        time_zone=check_time_zone(time_zone),
        jitter=parse_duration(jitter, f"{option}jitter"),
        catchup=parse_duration(catchup, f"{option}catchup", allow_zero=False),
        overlap=overlap,
    )
    if timing.every is not None and timing.jitter is not None and timing.jitter >= timing.every:
        raise BadArgument(
            f"{option}jitter ({jitter}) must be shorter than {option}every ({every}): no run "
            "is delayed past the next one's time, so a longer one does nothing more"
        )
    return timing


def check_schedule(
    schedule_id: str,
    template: StartSessionInput,
    *,
    cron: str | None,
    every: timedelta | None,
    time_zone: str | None,
    note: str | None,
) -> None:
    """What ``schedule_timing`` and ``schedule_template`` check of a schedule as typed,
    checked again of one as given to the client (typed values: an interval, a start
    input), so a schedule made there runs as one made with the CLI or the API."""
    check_schedule_id(schedule_id)
    check_cron(cron)
    check_time_zone(time_zone)
    if every is not None and every <= timedelta(0):
        raise BadArgument(f"the interval must be positive, not {every}")
    if every is not None and time_zone is not None:
        raise BadArgument("a time zone applies to a cron only: an interval has no time zone")
    too_big = start_error(template.goal, template.system_prompt)
    if too_big is not None:
        raise BadArgument(f"refused: {too_big}")
    out_of_range = session_input_error(template)
    if out_of_range is not None:
        raise BadArgument(f"refused: {out_of_range}")
    if note is not None and "\x00" in note:
        raise BadArgument("refused: the note must not contain NUL characters")


def schedule_template(
    *,
    agent: str,
    goal: str,
    max_steps: int | None = None,
    require_approval: list[str] | None = None,
    agent_version: int | None = None,
) -> StartSessionInput:
    """The session every run of a schedule starts (its limits are the session's own)."""
    too_big = start_error(goal, None)
    if too_big is not None:
        raise BadArgument(f"refused: {too_big}")
    try:
        budget = Budget(**({"max_steps": max_steps} if max_steps is not None else {}))
        template = StartSessionInput(
            agent_id=agent,
            goal=goal,
            budget=budget,
            policy=ToolPolicy(require_approval=require_approval),
            agent_version=agent_version,
            overrides=start_overrides(budget, None, None, set()),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise BadArgument(
            f"bad argument: {where + ': ' if where else ''}{first.get('msg')}"
        ) from None
    out_of_range = session_input_error(template)
    if out_of_range is not None:
        raise BadArgument(f"refused: {out_of_range}")
    return template
