"""How every session activity fails: short messages, outages apart from failure budgets.

``@guarded`` wraps an activity method. Whatever the body raises leaves as an
``ApplicationError`` with a one-line message and no chained traceback (the worker's log
keeps the traceback), so Temporal UI and ``describe`` show the cause instead of "Failure
exceeds size limit.". Then:

- PostgreSQL or the object store being away (``activities.failures.outage_of``) is an
  ``InfrastructureUnavailable`` failure: retried on a schedule of its own and never
  counted. Once an attempt gets through, the worker logs how long the part was away and
  the session records an ``infrastructure_recovered`` event (best effort).
- Any other failure counts against the activity's own budget, ``max_failures`` of its
  input (set by the workflow, which then lets Temporal retry without limit): when it is
  used up the failure is made non-retryable. Attempts that ended without a word (a lost
  worker, a timeout) count too, from the next attempt's start, which gives up at once when
  they spent the budget. Attempts cut off by their worker's shutdown (a deploy) do not
  count, up to ``CUT_OFFS_FORGIVEN`` a call. Without ``max_failures`` Temporal's retry
  policy counts.

What one attempt leaves for the next (outage count, since when) travels in the
activity's heartbeat details, which Temporal hands to the next attempt; so a long
activity must heartbeat through ``beat()``, which carries them. A local activity (the
low-latency mode) has no heartbeat: its ledger stays with the activity's owner in the
worker (``LocalLedgers``), where its retries run, and it counts its own failures; a retry
that lands on another worker (the first was lost) starts a fresh ledger and count.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from vigil.activities.failures import Outage, WorkerNotReady, describe, outage_of, short
from vigil.activities.record import store as record
from vigil.schema import event_kinds, names
from vigil.workflows import constants as c

# Temporal's activity logger: each line names the workflow (the session) and the attempt.
log = activity.logger

EVENT_RECOVERED = event_kinds.INFRASTRUCTURE_RECOVERED

A = TypeVar("A")
R = TypeVar("R")
S = TypeVar("S")


@dataclass
class Ledger:
    """The activity's earlier attempts, as far as budgets and outages are concerned."""

    outages: int = 0
    """Attempts that failed because our infrastructure was away (never counted)."""
    streak: int = 0
    """Outage failures in a row (the backoff of the next outage retry)."""
    part: str | None = None
    down_since: float | None = None
    """Epoch seconds when the current outage was first met; None when there was none."""
    up_at: float | None = None
    """When an attempt first got through after it."""
    last: str | None = None
    failures: int = 0
    """A local activity's own failures so far (a regular one counts from its attempt)."""
    begun: int = 0
    """A local activity's attempts begun on this worker (those that ended without a
    word, neither failure nor outage, count as failures at the next one's start)."""
    cut_off: int = 0
    """Attempts cut off by their worker's shutdown (not counted as failures)."""
    tool_details: tuple[Any, ...] = field(default=(), compare=False)
    """A Python tool's own heartbeat details (``ToolContext.heartbeat``), the last it gave
    or those an earlier attempt left: every heartbeat of the attempt carries them after
    the ledger, so vigil's own heartbeats do not erase them. Not part of ``details``."""

    @property
    def uncounted(self) -> int:
        """A regular activity's attempts that are not failures: outages and cut-offs."""
        return self.outages + self.cut_off

    @classmethod
    def from_details(cls, details: Sequence[Any]) -> Ledger:
        raw = details[0] if details else None
        if not isinstance(raw, dict):
            return cls()
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        try:
            return cls(**known)
        except TypeError:
            return cls()

    def details(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "tool_details"}

    def heartbeat(self) -> None:
        """Heartbeat this ledger, then the tool's own details."""
        activity.heartbeat(self.details(), *self.tool_details)

    def met(self, outage: Outage, now: float) -> None:
        if self.down_since is None or self.up_at is not None:
            self.down_since, self.up_at = now, None
        self.outages += 1
        self.streak += 1
        self.part, self.last = outage.part, outage.message

    def got_through(self, began: float) -> None:
        self.streak = 0
        if self.down_since is not None and self.up_at is None:
            self.up_at = began


_LEDGER: contextvars.ContextVar[Ledger | None] = contextvars.ContextVar(
    "vigil_ledger", default=None
)


class LocalLedgers:
    """The ledgers of an owner's local activities between their attempts (newest last).
    An activity class that runs local activities holds one as ``local_ledgers``."""

    KEPT = 10_000

    def __init__(self) -> None:
        self._by_key: OrderedDict[tuple[str, str, str], Ledger] = OrderedDict()

    def get(self, key: tuple[str, str, str]) -> Ledger | None:
        return self._by_key.get(key)

    def keep(self, key: tuple[str, str, str], ledger: Ledger) -> None:
        self._by_key[key] = ledger
        self._by_key.move_to_end(key)
        while len(self._by_key) > self.KEPT:
            self._by_key.popitem(last=False)

    def drop(self, key: tuple[str, str, str]) -> None:
        self._by_key.pop(key, None)


def _local_key(info: activity.Info, arg: Any) -> tuple[str, str, str]:
    """One local activity across its attempts. Not its activity id: the SDK gives a retry
    that waited on a durable timer (past the local retry threshold) a new one. The run,
    the activity type and the call's own seq (a model call's; the other local activities
    run one at a time in a run) stay the same."""
    return (info.workflow_run_id or "", info.activity_type, str(getattr(arg, "seq", "")))


def _local_ledgers(owner: Any) -> LocalLedgers | None:
    ledgers = getattr(owner, "local_ledgers", None)
    return ledgers if isinstance(ledgers, LocalLedgers) else None


def _ledger_of(owner: Any, info: activity.Info, arg: Any) -> Ledger:
    """What the earlier attempts left: the heartbeat details, or the owner's note (left in
    place, so an attempt that ends without a word, timed out or cancelled, still passes on
    what the ones before it met)."""
    if not info.is_local:
        ledger = Ledger.from_details(info.heartbeat_details)
        ledger.tool_details = tuple(info.heartbeat_details[1:])
        return ledger
    ledgers = _local_ledgers(owner)
    key = _local_key(info, arg)
    found = ledgers.get(key) if ledgers is not None else None
    if found is None:
        found = Ledger()
        if ledgers is not None:
            ledgers.keep(key, found)
    return found


def _keep(ledger: Ledger) -> None:
    """Leave the ledger for the next attempt of a regular activity (a local activity's
    stays with its owner)."""
    if not activity.info().is_local:
        ledger.heartbeat()


def _done(owner: Any, arg: Any) -> None:
    """No attempt follows: forget a local activity's ledger."""
    info = activity.info()
    ledgers = _local_ledgers(owner)
    if info.is_local and ledgers is not None:
        ledgers.drop(_local_key(info, arg))


def beat(*details: Any) -> None:
    """Heartbeat, carrying the attempt's ledger (a heartbeat without it would erase it),
    then ``details`` (a Python tool's own, ``ToolContext.heartbeat``), or, without them,
    the tool's last. A local activity has no heartbeat: nothing to do."""
    if activity.info().is_local:
        return
    ledger = _LEDGER.get() or Ledger()
    if details:
        ledger.tool_details = details
    if ledger.tool_details or ledger.uncounted:
        ledger.heartbeat()
    else:
        activity.heartbeat()


def outage_delay(streak: int) -> timedelta:
    """Backoff of outage retries: doubling from the initial interval up to the maximum."""
    initial = c.INFRA_RETRY_INITIAL.total_seconds()
    ceiling = c.INFRA_RETRY_MAX.total_seconds()
    return timedelta(seconds=min(ceiling, initial * 2 ** max(0, min(streak - 1, 30))))


def guarded(fn: Callable[[S, A], Awaitable[R]]) -> Callable[[S, A], Awaitable[R]]:
    """Wrap an activity method ``(self, arg) -> result`` (see the module docstring). Its
    owner's ``sessionmaker``, if any, records the recovery event."""

    @functools.wraps(fn)
    async def run(self: S, arg: A) -> R:
        ledger = _ledger_of(self, activity.info(), arg)
        token = _LEDGER.set(ledger)
        began = time.time()
        try:
            _count_silent_attempts(ledger, arg)
            result = await fn(self, arg)
        except asyncio.CancelledError:
            _note_shutdown(ledger)
            raise
        except Exception as exc:
            failure = _failure(exc, ledger, arg, began)
            if failure.non_retryable:
                _done(self, arg)
            raise failure from None
        finally:
            _LEDGER.reset(token)
        _done(self, arg)
        ledger.got_through(began)
        if ledger.down_since is not None:
            await _recovered(self, arg, ledger)
        return result

    return run


CUT_OFFS_FORGIVEN = 3
"""Attempts of one call cut off by a worker's shutdown that are not counted; those past
them count as failures (a call whose worker is stopped under it again and again, say by
a liveness probe that the call itself fails, is not retried for ever)."""


def _note_shutdown(ledger: Ledger) -> None:
    """A regular activity cut off by its worker's shutdown leaves that in its ledger (in
    a last heartbeat), so the attempt it is retried as does not count this one. (A local
    activity's retry runs on the worker its workflow moves to, which starts a ledger and
    a count of its own.)"""
    details = activity.cancellation_details()
    if activity.info().is_local or details is None or not details.worker_shutdown:
        return
    if ledger.cut_off >= CUT_OFFS_FORGIVEN:
        return
    ledger.cut_off += 1
    ledger.heartbeat()


def counted_attempt() -> int:
    """This attempt's number as a call's failure budget counts it: the attempts before it
    that met an outage of our own parts or were cut off by their worker's shutdown are
    not counted. A tool's own ``max_attempts`` (``ToolRetry``) is spent by this number."""
    info = activity.info()
    ledger = _LEDGER.get()
    if ledger is None or info.is_local:
        return info.attempt
    return max(1, info.attempt - ledger.uncounted)


def _count_silent_attempts(ledger: Ledger, arg: Any) -> None:
    """Count the attempts before this one that ended without a word (their time limit
    passed, or their worker was lost) against ``max_failures``: each raised nothing, so
    only the next attempt can count it, and a call timing out on every attempt would
    otherwise be retried for ever. Raises the failure that ends the retries when the
    budget is spent."""
    info = activity.info()
    if info.is_local:
        if info.attempt == 1:
            # The same call issued again (its workflow left this worker's cache, or was
            # cancelled and asked again): the attempt before it was not lost, only left.
            ledger.begun = ledger.failures + ledger.outages
        ledger.failures += max(0, ledger.begun - ledger.failures - ledger.outages)
        ledger.begun += 1
        spent = ledger.failures
    else:
        spent = info.attempt - 1 - ledger.uncounted
    budget = getattr(arg, "max_failures", None)
    if isinstance(budget, int) and info.attempt > 1 and spent >= budget:
        raise ApplicationError(
            f"failed {spent} times, the last without a result (its time limit passed, or "
            "its worker was lost), giving up",
            type=names.ERR_ACTIVITY_FAILED,
            non_retryable=True,
        )


def _failure(exc: Exception, ledger: Ledger, arg: Any, began: float) -> ApplicationError:
    info = activity.info()
    if (
        isinstance(exc, WorkerNotReady)
        and info.is_local
        and info.activity_type == names.ACT_CALL_MODEL
    ):
        # Retried here it would stay here (a local activity runs where its workflow task
        # runs): the workflow moves the call to a regular activity instead.
        log.warning("%s; the call moves to a regular activity", exc)
        return ApplicationError(
            short(str(exc)),
            type=names.ERR_WORKER_NOT_READY,
            non_retryable=True,
            category=ApplicationErrorCategory.BENIGN,
        )
    outage = outage_of(exc)
    if outage is not None:
        ledger.met(outage, began)
        wait = outage_delay(ledger.streak)
        log.warning(
            "%s; %s attempt %s retries in %.0f s",
            outage.message,
            info.activity_type,
            info.attempt,
            wait.total_seconds(),
        )
        _keep(ledger)
        # Benign: the line above says it; the SDK then logs the attempt without a
        # traceback (it logged one on every retry of an outage that may last minutes).
        return ApplicationError(
            outage.message,
            type=names.ERR_INFRA_UNAVAILABLE,
            next_retry_delay=wait,
            category=ApplicationErrorCategory.BENIGN,
        )

    ledger.got_through(began)
    if info.is_local:
        ledger.failures += 1
    if ledger.uncounted:
        _keep(ledger)
    delay: timedelta | None = None
    category = ApplicationErrorCategory.UNSPECIFIED
    details: tuple[Any, ...] = ()
    if isinstance(exc, ApplicationError):
        details = tuple(exc.details)
        message, kind = short(exc.message), exc.type or names.ERR_ACTIVITY_FAILED
        retryable, delay = not exc.non_retryable, exc.next_retry_delay
        category = exc.category  # BENIGN: expected (a tool's retry), logged without a trace
    else:
        log.error("%s failed: %s", info.activity_type, describe(exc), exc_info=exc)
        message, kind, retryable = describe(exc), names.ERR_ACTIVITY_FAILED, True
    budget = getattr(arg, "max_failures", None)
    # A local activity counts its own failures: its attempt number also counts attempts
    # whose ledger a lost worker took with it, which must not be spent as failures.
    failures = ledger.failures if info.is_local else info.attempt - ledger.uncounted
    if retryable and isinstance(budget, int) and failures >= budget:
        message = short(f"{message} (failed {failures} times, giving up)")
        retryable = False
        category = ApplicationErrorCategory.UNSPECIFIED  # the end of the call: said in full
    return ApplicationError(
        message,
        *details,
        type=kind,
        non_retryable=not retryable,
        next_retry_delay=delay,
        category=category,
    )


async def _recovered(owner: Any, arg: Any, ledger: Ledger) -> None:
    """Log the outage this activity rode out and record it in the session (best effort)."""
    info = activity.info()
    assert ledger.down_since is not None
    up_at = ledger.up_at or time.time()
    down = round(max(0.0, up_at - ledger.down_since), 3)
    session_id, agent_id = getattr(arg, "session_id", None), getattr(arg, "agent_id", None)
    payload = {
        "part": ledger.part,
        "down_seconds": down,
        "failed_attempts": ledger.outages,
        "activity": info.activity_type,
        "last_error": ledger.last,
    }
    log.warning(
        "%s is back after %.1f s; %s went on after %s failed attempts",
        ledger.part,
        down,
        info.activity_type,
        ledger.outages,
    )
    sessionmaker = getattr(owner, "sessionmaker", None)
    if not (isinstance(session_id, str) and isinstance(agent_id, str) and sessionmaker):
        return
    try:
        async with sessionmaker.begin() as db:
            await record.record_events(
                db,
                session_id,
                agent_id,
                [
                    record.NewEvent(
                        key=f"infra:{info.workflow_run_id}:{info.activity_id}",
                        kind=EVENT_RECOVERED,
                        step=int(getattr(arg, "step", 0) or 0),
                        payload=payload,
                    )
                ],
            )
    except Exception as exc:
        log.warning("could not record the recovery: %s", describe(exc))


@contextlib.asynccontextmanager
async def heartbeating(every: float | None = None) -> AsyncIterator[None]:
    """Heartbeat in the background so worker loss and cancellation are noticed quickly.

    The interval derives from the activity's own heartbeat timeout (a third of it), so a
    healthy worker is never mistaken for a lost one, whatever the session configured.
    The first beat comes after one interval, not at the start: an activity that ends
    sooner (most model calls) costs the server no heartbeat, and the server's timeout
    runs from the activity's start either way.
    """
    if activity.info().is_local:
        # A local activity has no heartbeat: its workflow task is what the SDK keeps alive.
        yield
        return
    if every is None:
        timeout = activity.info().heartbeat_timeout
        every = max(0.1, timeout.total_seconds() / 3) if timeout else 10.0

    async def beating() -> None:
        while True:
            await asyncio.sleep(every)
            beat()  # carries what earlier attempts left

    task = asyncio.create_task(beating())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
