"""The client's base layer: its settings, the Temporal client and the record's engine
(made on first use), the live feed, the workers polling a queue, and Temporal's failures
about a session turned into VigilErrors (``_rpc``).

Part of VigilClient (workers/client.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from vigil.schema import names
from vigil.schema.payloads import FINAL_STATUSES
from vigil.workers import liveness
from vigil.workers.client_errors import (
    BadArgument,
    NotAnswered,
    NoWorker,
    PayloadKeysMissing,
    Refused,
    UnknownSession,
    Unreachable,
    VigilError,
    temporal_refusal,
)
from vigil.workers.client_views import RUNNING_STATUSES, said_status
from vigil.workers.codec import PayloadKeyError
from vigil.workers.liveness import (
    is_unreachable,
    live_pollers,
    no_worker,
    temporal_down,
)
from vigil.workers.settings import Endpoints, Settings
from vigil.workers.temporal import PayloadUnreadable, client_runtime, connect

if TYPE_CHECKING:
    # Imported where they are used: a control command needs Temporal alone, and the
    # record's modules (SQLAlchemy) would double its start.
    from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
    from sqlalchemy.ext.asyncio import AsyncSession as DbSession

    from vigil.workers.agents import KnownVersions
    from vigil.workers.feed import Feed


CLIENT_DB_POOL_SIZE = 8
"""PostgreSQL connections a client may keep open (a command's few statements run one after
another, so a command opens one or two); the API server keeps ``api_db_pool_size``. None
is opened past them: a request waits for one, where a connection opened past the pool
was closed again once the burst had passed (a server process and its authentication for
each, several per burst of starts)."""


class _VigilClientCore:
    def __init__(
        self,
        settings: Settings,
        temporal: Client,
        engine: AsyncEngine | None = None,
        *,
        db_pool_size: int = CLIENT_DB_POOL_SIZE,
    ) -> None:
        self.settings = settings
        self.temporal = temporal
        self._engine = engine
        self._db_pool_size = db_pool_size
        self._db: async_sessionmaker[DbSession] | None = None
        self._feed: Feed | None = None
        self._feed_lock = asyncio.Lock()
        self._endpoints: Endpoints | None = None
        self._versions: KnownVersions | None = None

    def endpoints(self) -> Endpoints:
        """The settings' endpoints, read once per client: each read opens the stack's
        state file, and every start wants them (a running API starts many)."""
        if self._endpoints is None:
            self._endpoints = self.settings.endpoints()
        return self._endpoints

    @classmethod
    async def connect(
        cls, settings: Settings, *, db_pool_size: int = CLIENT_DB_POOL_SIZE
    ) -> _VigilClientCore:
        """A client whose Temporal connection is made on first use: commands that need only
        PostgreSQL (show, export, search, memory, artifacts) work while Temporal is down.
        ``db_pool_size``: the PostgreSQL connections it keeps (the API server's setting)."""
        endpoints = settings.endpoints()
        try:
            temporal = await connect(settings, lazy=True, runtime=client_runtime())
        except PayloadKeyError as exc:
            raise BadArgument(f"bad configuration: {exc}") from exc
        except Exception as exc:
            raise Unreachable(temporal_down(endpoints.temporal_address)) from exc
        if endpoints.database_url is None:
            raise Unreachable(settings.no_database())
        return cls(settings, temporal, db_pool_size=db_pool_size)

    @property
    def engine(self) -> AsyncEngine:
        """The record's engine, made on first use (a control command never needs it)."""
        if self._engine is None:
            from vigil.workers.db import make_engine

            url = self.settings.endpoints().database_url
            if url is None:
                raise Unreachable(self.settings.no_database())
            self._engine = make_engine(
                url,
                pool_size=self._db_pool_size,
                max_overflow=0,
                connect_timeout=self.settings.db_connect_seconds,
            )
        return self._engine

    @property
    def db(self) -> async_sessionmaker[DbSession]:
        if self._db is None:
            from vigil.workers.db import make_sessionmaker

            self._db = make_sessionmaker(self.engine)
        return self._db

    async def close(self) -> None:
        if self._feed is not None:
            await self._feed.close()
        if self._engine is not None:
            await self._engine.dispose()

    async def live_feed(self) -> Feed:
        """This process's live feed (workers/feed.py): one LISTEN connection, started on
        first use and shared by every follower."""
        async with self._feed_lock:
            if self._feed is None:
                url = self.settings.endpoints().database_url
                if url is None:
                    raise Unreachable(self.settings.no_database())
                from vigil.workers.feed import Feed

                try:
                    self._feed = await Feed(url, self.db).start()
                except Exception as exc:  # refused, unreachable, bad credentials
                    raise Unreachable(f"cannot listen to the record: {exc}") from exc
            return self._feed

    async def __aenter__(self) -> _VigilClientCore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def temporal_down(self) -> str:
        return temporal_down(self.settings.endpoints().temporal_address)

    @contextlib.asynccontextmanager
    async def plain_errors(self) -> AsyncIterator[None]:
        """Turn "Temporal is not there" raised anywhere inside (this client, or code using
        ``client.temporal`` directly) into one whole line a person can act on."""
        try:
            yield
        except VigilError:
            raise
        except Exception as exc:
            if is_unreachable(exc):
                raise Unreachable(self.temporal_down()) from None
            raise

    # --- workers ----------------------------------------------------------------------

    async def pollers(self, task_queue: str | None = None) -> list[str]:
        """Identities of the workers polling ``task_queue`` (the configured one by default)."""
        async with self.plain_errors():
            return await live_pollers(self.temporal, task_queue or self.settings.task_queue)

    async def require_worker(self, task_queue: str, *, what: str, grace: float = 0.0) -> None:
        """Raise NoWorker (with the command that starts one) when nobody polls the queue,
        asked again for ``grace`` seconds first (a control's: a Temporal server just
        restarted lists no poller until its workers poll again, and a control right after
        the restart was refused, "no worker is polling", while the worker reconnected)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + grace
        while not await self.pollers(task_queue):
            if loop.time() >= until:
                raise NoWorker(no_worker(task_queue, self.settings.task_queue, what=what))
            await asyncio.sleep(0.25)

    async def _describe_live(
        self,
        session_id: str,
        *,
        what: str,
        visible: Callable[[str | None], bool] | None = None,
    ) -> Any:
        """Describe the session and, when it runs, make sure a worker polls its task queue,
        so what follows never waits for a worker that is not there. ``visible`` (whether
        the caller may know of a session of the agent Temporal names for it, None when it
        names none): if not, UnknownSession, said as for an id nobody knows."""
        desc = await self._rpc(session_id, self.handle(session_id).describe())
        if visible is not None and not visible(desc.typed_search_attributes.get(names.SA_AGENT)):
            raise UnknownSession(f"no session with id {session_id!r}")
        if desc.status == WorkflowExecutionStatus.RUNNING:
            await self.require_worker(
                desc.task_queue,
                what=what.format(id=session_id),
                grace=liveness.POLLER_GRACE_SECONDS,
            )
        return desc

    async def bounded(self, session_id: str, coro: Awaitable[Any], what: str) -> Any:
        """A control or a query, bounded: a worker that polls but does not answer (busy,
        stuck) is reported instead of waited for without end."""
        try:
            return await asyncio.wait_for(
                self._rpc(session_id, coro), liveness.CONTROL_WAIT_SECONDS
            )
        except TimeoutError:
            raise NotAnswered(
                f"session {session_id} did not answer the {what} within "
                f"{liveness.CONTROL_WAIT_SECONDS:.0f} s although a worker polls its queue; "
                "it may be busy: try again, or send it with --signal"
            ) from None

    def handle(self, session_id: str) -> WorkflowHandle[Any, Any]:
        if not session_id:  # Temporal's own refusal ("WorkflowId is not set") said nothing
            raise UnknownSession(f"no session with id {session_id!r}")
        return self.temporal.get_workflow_handle(session_id)

    async def _rpc(self, session_id: str, coro: Any) -> Any:
        try:
            return await coro
        except RuntimeError as exc:
            if is_unreachable(exc):
                raise Unreachable(self.temporal_down()) from None
            raise
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                # Temporal says NOT_FOUND for an id it never saw, for a control sent to a
                # session that has ended, and for an update it held for the worker while
                # the session closed: the record, then Temporal, tell them apart.
                status = await self.temporal_status(session_id)
                if status in RUNNING_STATUSES:
                    # It runs (a request that met a hand-over to the session's next run,
                    # say): nothing was taken; Temporal's words, and that it may be resent.
                    raise Refused(
                        f"session {session_id} did not take it ({exc.message}); send it again"
                    ) from exc
                ended = await self._ended(session_id, status)
                if ended is None:
                    raise UnknownSession(f"no session with id {session_id!r}") from exc
                raise Refused(
                    f"refused by session {session_id}: the session has ended ({ended})"
                ) from exc
            if is_unreachable(exc):
                raise Unreachable(self.temporal_down()) from None
            raise temporal_refusal(exc) from exc
        except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
            raise NotAnswered(
                f"session {session_id} did not answer in time (its worker may be busy or "
                "gone); Temporal may still hand it the request when a worker runs it: check "
                f"`vigil show {session_id}` before sending it again"
            ) from exc
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            message = getattr(cause, "message", None) or str(cause)
            raise Refused(f"refused by session {session_id}: {message}") from exc
        except (WorkflowQueryFailedError, WorkflowQueryRejectedError) as exc:
            raise VigilError(f"session {session_id} did not answer the query: {exc}") from exc
        except PayloadUnreadable as exc:
            raise PayloadKeysMissing(
                f"session {session_id} answered, but this client cannot read the answer (so "
                f"whether it took what was sent; `vigil show {session_id}` says): {exc}"
            ) from None

    async def call(self, session_id: str, coro: Any) -> Any:
        """Await a Temporal call about ``session_id``, its failures as VigilErrors."""
        return await self._rpc(session_id, coro)

    async def _ended(self, session_id: str, status: WorkflowExecutionStatus | None) -> str | None:
        """How a closed session ended, as `show` says it: the record's status (a session
        that ends `failed` returns normally, so Temporal calls it completed); Temporal's
        own word (``status``), in the record's spelling, when the record has no final
        status yet (a session closed before a worker recorded its end); None when neither
        knows the session."""
        from vigil.activities.record import store as record

        async with self.db() as db:
            row = await record.get_session(db, session_id)
        if row is not None and row.status in {s.value for s in FINAL_STATUSES}:
            return str(row.status)
        if status is not None:
            return said_status(status)
        return None if row is None else "closed"

    async def temporal_status(self, session_id: str) -> WorkflowExecutionStatus | None:
        """Temporal's status of ``session_id``; None when Temporal has no such workflow."""
        try:
            desc = await self.handle(session_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise Unreachable(f"Temporal did not answer: {exc.message}") from exc
        return desc.status or WorkflowExecutionStatus.RUNNING

    async def temporal_started_at(self, session_id: str) -> datetime | None:
        """When Temporal started ``session_id``'s first run (a session continues as new
        runs: its latest began later); None when it has no such workflow, or no longer
        holds that first run."""
        try:
            desc = await self.handle(session_id).describe()
            first = desc.raw_description.workflow_execution_info.first_run_id
            if first and first != desc.run_id:
                desc = await self.temporal.get_workflow_handle(session_id, run_id=first).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise Unreachable(f"Temporal did not answer: {exc.message}") from exc
        return desc.start_time
