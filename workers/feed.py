"""The live feed of a process: ONE PostgreSQL LISTEN connection, any number of followers.

Migration ``20261130_08`` notifies ``vigil_feed`` of every new message, new event and
status change, naming the row, never its content; ``call_model`` notifies the agent's
token channel of the model's tokens as they are generated. :class:`Feed` holds one
connection that LISTENs to the feed channel (and to the token channel of each agent
someone follows) and fans what arrives out to its followers in memory:

- A notification about a session nobody here follows costs nothing but its parsing.
- A notification about a followed session is read from the record ONCE (one query per
  kind per batch of notifications, acting for the agent under row-level security),
  whatever the number of followers, and queued to each of them.
- A follower of all of an agent's sessions is not handed rows one by one: their sessions
  commit rows in another order than their ids, so a row notified now may have a larger id
  than one still being written. A notification nudges it to read the record after its
  cursor up to where it has settled (``record.feed.settled_bound``), so its position is
  one a resume continues from exactly.
- A follower registers first, then catches up from the record after its cursor, then
  takes its queue, dropping what the catch-up already gave it: no gap and no duplicate
  at the seam. A follower whose queue overflows, or every follower when the LISTEN
  connection was lost and came back, catches up again from its own cursor.

Tokens are ephemeral: delivered live to followers that want them, never replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.failures import describe
from vigil.activities.record import erasure as record_erasure
from vigil.activities.record import feed as record_feed
from vigil.activities.record.feed import FeedCursor, FeedItem
from vigil.activities.record.retry import is_transient_db_error
from vigil.activities.record.rls import acting_for
from vigil.schema import names
from vigil.schema.payloads import FINAL_STATUSES
from vigil.workers.settings import asyncpg_dsn

# The stdlib logger (structlog renders it in processes that configured it): importing
# structlog would slow every CLI command that follows a session.
log = logging.getLogger("vigil.feed")

FINAL = frozenset(s.value for s in FINAL_STATUSES)
ERASED = "erased"
"""The last status of a followed session that was erased meanwhile (no row is left)."""
GONE_CHECK_SECONDS = 5.0
"""How often a quiet session's follower asks whether the session is still recorded."""
QUEUE_SIZE = 2000
"""Entries a follower may fall behind by before it is sent back to the record."""
RECONNECT_SECONDS = 1.0


@dataclass(frozen=True)
class Token:
    """Model text as it is generated (not recorded; ``attempt`` grows on a retry)."""

    session_id: str
    seq: int
    """The seq the message will have once recorded."""
    attempt: int
    index: int
    text: str


@dataclass(frozen=True)
class StatusChange:
    session_id: str
    status: str
    step: int
    summary: str | None

    @property
    def final(self) -> bool:
        return self.status in FINAL or self.status == ERASED


@dataclass(frozen=True)
class Idle:
    """Nothing arrived for the follower's ``idle`` seconds (time for a heartbeat)."""


@dataclass(frozen=True)
class AgentErased:
    """The followed agent was erased: nothing it recorded is left (an agent's stream ends)."""

    agent_id: str


@dataclass(frozen=True)
class Away:
    """The record did not answer a read of the stream (PostgreSQL down or restarting): the
    stream waits ``retry_in`` seconds and reads again from where it got to."""

    why: str
    retry_in: float


FeedEntry = FeedItem | Token | StatusChange | Idle | AgentErased | Away

AWAY_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
"""The waits between a stream's reads while the record does not answer (the last one
repeated for as long as the outage lasts)."""


SETTLE_POLL_SECONDS = (0.002, 0.25)
"""The first and the longest wait between two looks at whether the writes an agent's
stream waits for have ended (a write commits within milliseconds as a rule)."""


class _Resync:
    """Queue marker: catch up from the record again (entries may have been lost)."""


_RESYNC = _Resync()


@dataclass(eq=False)
class _Follower:
    agent_id: str
    session_id: str | None
    tokens: bool
    queue: asyncio.Queue[FeedEntry | _Resync] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_SIZE)
    )
    nudged: bool = False
    """A follower of an agent's sessions: a catch-up is queued (its rows are read from the
    record up to where it has settled, never delivered from notifications one by one)."""


@dataclass(frozen=True)
class _Note:
    """One notification of a followed session, waiting to be resolved and delivered."""

    session_id: str
    agent_id: str
    kind: str
    """``message``, ``event``, ``status`` or ``token``."""
    key: Any
    """The row id (message, event), None (status) or the Token itself."""


class Feed:
    """One process's feed (see the module docstring). ``start`` before ``follow``."""

    def __init__(self, database_url: str, sessionmaker: async_sessionmaker[DbSession]) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._db = sessionmaker
        self._conn: asyncpg.Connection | None = None
        self._conn_lock = asyncio.Lock()
        self._by_session: dict[str, set[_Follower]] = {}
        self._by_agent: dict[str, set[_Follower]] = {}
        self._token_agents: dict[str, int] = {}
        """Agents whose token channel is listened to, with the number of followers."""
        self._channel_agent: dict[str, str] = {}
        self._pending: list[_Note] = []
        self._pump_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._chores: set[asyncio.Task[None]] = set()
        self._closed = False
        self.reads = 0
        """Record reads made for live delivery (not catch-ups): for the benchmark."""

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> Feed:
        await self._connect()
        self._supervisor = asyncio.create_task(self._supervise(), name="vigil-feed")
        return self

    async def close(self) -> None:
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._pump_task is not None:
            self._pump_task.cancel()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=5)
            self._conn = None

    @property
    def followers(self) -> int:
        return sum(len(f) for f in self._by_session.values()) + sum(
            len(f) for f in self._by_agent.values()
        )

    async def _connect(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self._dsn)
        conn.add_termination_listener(lambda _c: self._lost.set())
        await conn.add_listener(names.FEED_CHANNEL, self._on_notify)
        for agent in self._token_agents:
            await conn.add_listener(record_feed.token_channel(agent), self._on_notify)
        self._conn = conn
        self._lost.clear()

    async def _supervise(self) -> None:
        """Reconnect a lost LISTEN connection; followers then catch up from the record."""
        while not self._closed:
            await self._lost.wait()
            log.warning("feed connection lost; reconnecting")
            failures = 0
            while not self._closed:
                try:
                    async with self._conn_lock:
                        await self._connect()
                    break
                except (OSError, asyncpg.PostgresError) as exc:
                    # Said once an outage, then tried again less and less often, every
                    # 8 s at most (it said so every second while PostgreSQL was down).
                    failures += 1
                    said = log.warning if failures == 1 else log.debug
                    said("feed reconnect failed: %s; trying again", str(exc)[:200])
                    await asyncio.sleep(RECONNECT_SECONDS * 2 ** min(failures - 1, 3))
            for followers in [*self._by_session.values(), *self._by_agent.values()]:
                for follower in followers:
                    self._put(follower, _RESYNC)

    # --- following --------------------------------------------------------------------

    async def follow(
        self,
        agent_id: str,
        *,
        session_id: str | None = None,
        cursor: FeedCursor | None = None,
        tokens: bool = True,
        idle: float | None = None,
    ) -> AsyncIterator[FeedEntry]:
        """The entries of one session (``session_id``) or of all of ``agent_id``'s
        sessions after ``cursor``: first from the record, then live. The caller has
        checked that it may see ``agent_id``. A session's stream starts with its status
        and ends after the entries of its end; an agent's ends only when the agent is
        erased (``AgentErased``, noticed when the stream is idle, so only with ``idle``).
        With ``idle``, ``Idle()`` comes whenever nothing did for that long. While the
        record does not answer, ``Away`` comes before each wait to read again."""
        follower = _Follower(agent_id=agent_id, session_id=session_id, tokens=tokens)
        # The agent's erasures so far: a later one ends its stream (None: not read yet).
        erasures = await self._agent_erasures(agent_id) if session_id is None else None
        await self._register(follower)
        position = cursor or FeedCursor()
        step = 0  # the session's step as last seen, for the end of an erased one
        away = 0  # reads in a row the record did not answer
        try:
            while True:
                try:
                    # Status first: when it is final, every row of the session is already
                    # committed, so the catch-up below reads them all before the end.
                    ended = False
                    if session_id is not None:
                        status = await self._status(agent_id, session_id)
                        if status is not None:
                            step = status.step
                            yield status
                            ended = status.final
                    # Live entries the catch-up already gave are dropped by key, not by the
                    # cursor it reached (a session's stream; an agent's takes no rows live).
                    before = position
                    delivered: set[tuple[str, int]] = set()
                    async for item in self._catch_up(agent_id, session_id, position, idle):
                        if isinstance(item, Idle):  # waiting for the record to settle
                            yield item
                            continue
                        delivered.add((item.kind, item.key))
                        position = position.after(item)
                        yield item
                    away = 0
                    if ended:
                        return
                    quiet = idle if session_id is None or idle is not None else GONE_CHECK_SECONDS
                    async for entry in self._live(follower, before, delivered, quiet):
                        if isinstance(entry, _Resync):
                            break
                        if isinstance(entry, Idle) and session_id is None:
                            latest = await self._agent_erasures(agent_id)
                            if erasures is not None and latest is not None and latest > erasures:
                                yield AgentErased(agent_id)
                                return
                            erasures = erasures if latest is None else latest
                        if isinstance(entry, Idle) and session_id is not None:
                            # Erased meanwhile: no row, no notification of its end.
                            if await self._status(agent_id, session_id) is None:
                                yield StatusChange(
                                    session_id, ERASED, step, "the session was erased"
                                )
                                return
                            if idle is None:
                                continue
                        if isinstance(entry, StatusChange) and entry.final and session_id:
                            # A status is read as it stands when its notification is
                            # resolved, possibly before the notifications of the last rows
                            # are: the record has them all once the status is final.
                            async for item in self._catch_up(agent_id, session_id, position):
                                assert isinstance(item, FeedItem)  # a session's: no waits
                                position = position.after(item)  # an outage here: not again
                                if (item.kind, item.key) not in delivered:
                                    delivered.add((item.kind, item.key))
                                    yield item
                            yield entry
                            return
                        if isinstance(entry, FeedItem):
                            delivered.add((entry.kind, entry.key))
                            position = position.after(entry)
                        elif isinstance(entry, StatusChange) and entry.session_id == session_id:
                            step = entry.step
                        yield entry
                except Exception as exc:
                    # The record did not answer (PostgreSQL down or restarting): said, then
                    # read again from where the stream got to, for as long as it takes.
                    if not (is_transient_db_error(exc) or isinstance(exc, PoolTimeout)):
                        raise
                    wait = AWAY_RETRY_SECONDS[min(away, len(AWAY_RETRY_SECONDS) - 1)]
                    away += 1
                    yield Away(describe(exc), wait)
                    await asyncio.sleep(wait)
        finally:
            self._unregister(follower)

    async def _live(
        self,
        follower: _Follower,
        start: FeedCursor,
        delivered: set[tuple[str, int]],
        idle: float | None,
    ) -> AsyncIterator[FeedEntry | _Resync]:
        while True:
            try:
                entry = await asyncio.wait_for(follower.queue.get(), idle)
            except TimeoutError:
                yield Idle()
                continue
            if isinstance(entry, _Resync):
                follower.nudged = False  # a row notified from here on queues another
            if isinstance(entry, FeedItem) and (
                start.seen(entry) or (entry.kind, entry.key) in delivered
            ):
                continue  # the catch-up gave it already (or it is older than the cursor)
            yield entry
            if isinstance(entry, _Resync):
                return

    async def _catch_up(
        self, agent_id: str, session_id: str | None, cursor: FeedCursor, idle: float | None = None
    ) -> AsyncIterator[FeedItem | Idle]:
        """The record after ``cursor``; for an agent's sessions together, up to where it
        has settled, with ``Idle()`` every ``idle`` seconds while it waits for that."""
        until = None
        if session_id is None:  # the agent's sessions together: up to what has settled
            async with acting_for(self._db, agent_id) as db:
                settling = await record_feed.settled_bound(db, agent_id)
            async for quiet in self._settle(settling, idle):
                yield quiet
            until = settling.bound
        while True:
            async with acting_for(self._db, agent_id) as db:
                page = await record_feed.items_after(
                    db,
                    cursor,
                    session_id=session_id,
                    agent_id=None if session_id else agent_id,
                    until=until,
                )
            if not page:
                return
            for item in page:
                cursor = cursor.after(item)
                yield item

    async def _settle(
        self, settling: record_feed.Settling, idle: float | None
    ) -> AsyncIterator[Idle]:
        """Return once the writes ``settling`` found in flight have ended (polled, each
        poll its own short transaction: a write is never held up), with ``Idle()`` every
        ``idle`` seconds meanwhile (a stream's keepalive, and its token's check)."""
        clock = asyncio.get_running_loop().time
        wait, told = SETTLE_POLL_SECONDS[0], clock()
        while settling.writing:
            async with acting_for(self._db, settling.agent_id) as db:
                if not await record_feed.still_writing(db, settling):
                    return
            if idle is not None and clock() - told >= idle:
                told = clock()
                yield Idle()
            await asyncio.sleep(wait)
            wait = min(wait * 2, SETTLE_POLL_SECONDS[1])

    async def approvals_before(
        self, agent_id: str, session_id: str, cursor: FeedCursor
    ) -> list[FeedItem]:
        """The record before ``cursor`` that keeps a resumed reader in order
        (``record_feed.approvals_before``); nothing, and no transaction, from the start."""
        if cursor == FeedCursor():
            return []
        async with acting_for(self._db, agent_id) as db:
            return await record_feed.approvals_before(db, session_id, cursor)

    async def _agent_erasures(self, agent_id: str) -> int | None:
        """The agent's latest erasure receipt id (0: none); None when the database does
        not answer (an outage is not an erasure, and no baseline either)."""
        try:
            async with self._db() as db:
                return await record_erasure.last_agent_erasure(db, agent_id)
        except Exception as exc:
            log.warning("agent erasure check failed: %s", type(exc).__name__)
            return None

    async def _status(self, agent_id: str, session_id: str) -> StatusChange | None:
        async with acting_for(self._db, agent_id) as db:
            row = await record_feed.session_status(db, session_id)
        if row is None:
            return None
        return StatusChange(row.session_id, row.status, row.step, row.summary)

    async def _register(self, follower: _Follower) -> None:
        if follower.session_id is not None:
            self._by_session.setdefault(follower.session_id, set()).add(follower)
        else:
            self._by_agent.setdefault(follower.agent_id, set()).add(follower)
        if follower.tokens:
            agent = follower.agent_id
            self._token_agents[agent] = self._token_agents.get(agent, 0) + 1
            if self._token_agents[agent] == 1:
                channel = record_feed.token_channel(agent)
                self._channel_agent[channel] = agent
                async with self._conn_lock:
                    if self._conn is not None and not self._conn.is_closed():
                        await self._conn.add_listener(channel, self._on_notify)

    def _unregister(self, follower: _Follower) -> None:
        """Forget a follower. Synchronous, so it completes even in a cancelled task (a
        client that went away); the UNLISTEN it may need runs in a task of its own."""
        group = (
            self._by_session.get(follower.session_id)
            if follower.session_id is not None
            else self._by_agent.get(follower.agent_id)
        )
        if group is not None:
            group.discard(follower)
            if not group:
                if follower.session_id is not None:
                    self._by_session.pop(follower.session_id, None)
                else:
                    self._by_agent.pop(follower.agent_id, None)
        if not follower.tokens:
            return
        agent = follower.agent_id
        left = self._token_agents.get(agent, 1) - 1
        if left > 0:
            self._token_agents[agent] = left
            return
        self._token_agents.pop(agent, None)
        channel = record_feed.token_channel(agent)
        self._channel_agent.pop(channel, None)
        task = asyncio.create_task(self._unlisten(agent, channel))
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _unlisten(self, agent: str, channel: str) -> None:
        with contextlib.suppress(Exception):  # a lost connection forgot it anyway
            async with self._conn_lock:
                if agent in self._token_agents:
                    return  # followed again meanwhile
                if self._conn is not None and not self._conn.is_closed():
                    await self._conn.remove_listener(channel, self._on_notify)

    # --- fan-out ----------------------------------------------------------------------

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if not isinstance(data, dict) or not isinstance(data.get("s"), str):
            return
        session_id: str = data["s"]
        if channel == names.FEED_CHANNEL:
            agent = data.get("a")
            if not isinstance(agent, str) or not self._wanted(session_id, agent):
                return
            kind = data.get("k")
            if kind in ("message", "event") and isinstance(data.get("o"), int):
                # An agent's followers read the record up to where it has settled
                # (``record_feed.settled_bound``): a row committed now may have a larger id
                # than one another session has not yet committed.
                for follower in self._by_agent.get(agent, ()):
                    self._nudge(follower)
                if session_id in self._by_session:
                    self._enqueue(session_id, agent, (kind, data["o"]))
            elif kind == "status":
                self._enqueue(session_id, agent, ("status", None))
            return
        agent_of_channel = self._channel_agent.get(channel)
        if agent_of_channel is None or not self._wanted(session_id, agent_of_channel):
            return
        try:
            token = Token(
                session_id, int(data["q"]), int(data["t"]), int(data["n"]), str(data["d"])
            )
        except (KeyError, TypeError, ValueError):
            return
        self._enqueue(session_id, agent_of_channel, ("token", token))

    def _wanted(self, session_id: str, agent_id: str) -> bool:
        return session_id in self._by_session or agent_id in self._by_agent

    def _enqueue(self, session_id: str, agent_id: str, entry: tuple[str, Any]) -> None:
        self._pending.append(_Note(session_id, agent_id, *entry))
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        """Resolve what is pending (whatever arrived while the last batch was read, so
        batches grow with the load) and deliver it in notification order."""
        while self._pending:
            batch, self._pending = self._pending, []
            agents = sorted({note.agent_id for note in batch})
            results = await asyncio.gather(
                *(
                    self._resolve(agent, [n for n in batch if n.agent_id == agent])
                    for agent in agents
                ),
                return_exceptions=True,
            )
            resolved: dict[str, dict[tuple[str, Any], FeedEntry]] = {}
            for agent, result in zip(agents, results, strict=True):
                if isinstance(result, BaseException):  # the database away: back to it
                    log.warning("feed read failed for agent %s: %s", agent, str(result)[:200])
                    sessions = {n.session_id for n in batch if n.agent_id == agent}
                    for session_id in sessions:
                        self._deliver(session_id, agent, _RESYNC)
                    continue
                resolved[agent] = result
            sent_status: set[str] = set()
            for note in batch:
                found = resolved.get(note.agent_id)
                if found is None:
                    continue
                if note.kind == "token":
                    self._deliver(note.session_id, note.agent_id, note.key)
                elif note.kind == "status":
                    status = found.get(("status", note.session_id))
                    if status is not None and note.session_id not in sent_status:
                        sent_status.add(note.session_id)  # one read: where it stands now
                        self._deliver(note.session_id, note.agent_id, status)
                else:
                    item = found.get((note.kind, note.key))
                    if item is not None:
                        self._deliver(note.session_id, note.agent_id, item)

    async def _resolve(self, agent_id: str, notes: list[_Note]) -> dict[tuple[str, Any], FeedEntry]:
        """One transaction per agent and batch, whatever the number of followers."""
        message_ids = [n.key for n in notes if n.kind == "message"]
        event_ids = [n.key for n in notes if n.kind == "event"]
        status_of = sorted({n.session_id for n in notes if n.kind == "status"})
        found: dict[tuple[str, Any], FeedEntry] = {}
        if not (message_ids or event_ids or status_of):
            return found
        self.reads += 1
        async with acting_for(self._db, agent_id) as db:
            if message_ids or event_ids:
                for item in await record_feed.items_by_id(db, message_ids, event_ids):
                    found[(item.kind, item.key)] = item
            for now in await record_feed.session_statuses(db, status_of):
                found[("status", now.session_id)] = StatusChange(
                    now.session_id, now.status, now.step, now.summary
                )
        return found

    def _nudge(self, follower: _Follower) -> None:
        if not follower.nudged:
            follower.nudged = True
            self._put(follower, _RESYNC)

    def _deliver(self, session_id: str, agent_id: str, entry: FeedEntry | _Resync) -> None:
        for follower in (
            *self._by_session.get(session_id, ()),
            *self._by_agent.get(agent_id, ()),
        ):
            if isinstance(entry, Token) and not follower.tokens:
                continue
            if isinstance(entry, FeedItem) and follower.session_id is None:
                continue  # told by a nudge (``_on_notify``), read up to where it settled
            if follower.agent_id != agent_id and not isinstance(entry, _Resync):
                # An erased session's id taken by another agent's session: a stream
                # opened for the first must not carry the second's entries.
                continue
            self._put(follower, entry)

    @staticmethod
    def _put(follower: _Follower, entry: FeedEntry | _Resync) -> None:
        try:
            follower.queue.put_nowait(entry)
        except asyncio.QueueFull:
            # Too far behind: drop its queue and send it back to the record.
            while not follower.queue.empty():
                follower.queue.get_nowait()
            follower.queue.put_nowait(_RESYNC)
