"""Export, search, memory and artifacts: what the client reads and writes in the record
alone (no Temporal).

Part of VigilClient (workers/client.py), which re-exports every name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vigil.schema.tools import MEMORY_KINDS
from vigil.workers.client_errors import (
    BadArgument,
    NotFound,
    Refused,
    UnknownArtifact,
    UnknownSession,
    VigilError,
)
from vigil.workers.settings import Settings

if TYPE_CHECKING:
    # Imported where they are used: a control command needs Temporal alone, and the
    # record's modules (SQLAlchemy) would double its start.
    from sqlalchemy.ext.asyncio import AsyncSession as DbSession
    from sqlalchemy.ext.asyncio import async_sessionmaker

MAX_RECALL = 100
"""The most memories one search returns: the API's ``limit`` and the CLI's ``-k``."""
MAX_MEMORY_ID = 2**63 - 1
"""The largest id a memory can have (the record's bigint): past it, an id names none."""


@dataclass(frozen=True)
class HistoryPage:
    """A page of a memory subject's history (``memory_history``)."""

    items: list[Any]
    """Oldest first (``MemoryRecord``)."""
    next_before: int | None
    """Older versions remain: the ``before`` that asks for them (None: none remain)."""


class _RecordExtras:
    """Export, search, memory and artifacts (mixed into VigilClient: workers/client.py)."""

    settings: Settings
    db: async_sessionmaker[DbSession]

    async def export(self, session_id: str, fmt: str = "jsonl") -> AsyncGenerator[str]:
        from vigil.activities.record import reads
        from vigil.activities.record.rls import acting_for
        from vigil.workers.inputs import export_format  # inputs imports this module

        fmt = export_format(fmt)
        agent = await self.agent_of(session_id)  # type: ignore[attr-defined]
        if agent is None:
            raise UnknownSession(f"no session with id {session_id!r}")
        async with self.db() as db, acting_for(db, agent):
            try:
                gen = (
                    reads.export_jsonl(db, session_id)
                    if fmt == "jsonl"
                    else reads.export_markdown(db, session_id)
                )
                async for chunk in gen:
                    yield chunk
            except reads.SessionNotFound as exc:
                raise UnknownSession(f"no session with id {session_id!r}") from exc

    async def search(self, agent_id: str, query: str, limit: int = 20) -> Any:
        from vigil.activities.record import reads

        _refuse_empty(query)
        async with self.db() as db:  # search_messages acts for the agent
            return await reads.search_messages(db, agent_id, query, limit=limit)

    @contextlib.asynccontextmanager
    async def _memory(self) -> AsyncIterator[Any]:
        """A memory store for one call; its embedder (and its HTTP client) closed after."""
        from vigil.workers.wiring import make_memory_store

        store = make_memory_store(self.settings, self.db)
        try:
            yield store
        finally:
            await store.embedder.aclose()

    async def memory_search(
        self,
        agent_id: str,
        query: str,
        k: int = 10,
        include_superseded: bool = False,
        kinds: list[str] | None = None,
    ) -> list[Any]:
        """The ``k`` (1 to ``MAX_RECALL``) memories of the agent that best answer ``query``."""
        _refuse_empty(query)
        if not 1 <= k <= MAX_RECALL:
            raise BadArgument(f"k {k} is out of range: 1 to {MAX_RECALL} memories")
        for kind in kinds or ():  # as memory_add: an unknown kind is a typo, not "none found"
            if kind not in MEMORY_KINDS:
                raise BadArgument(f"unknown memory kind {kind!r}; one of {', '.join(MEMORY_KINDS)}")
        from vigil.activities.memory.provenance import EmbedderMismatch

        try:
            async with self._memory() as memory:
                result: list[Any] = await memory.recall(
                    agent_id, query, k=k, include_superseded=include_superseded, kinds=kinds
                )
        except ValueError as exc:
            raise BadArgument(str(exc)) from exc
        except EmbedderMismatch as exc:
            raise Refused(str(exc)) from exc
        return result

    async def memory_forget(
        self, agent_id: str, memory_id: int, *, by: str, reason: str | None = None
    ) -> Any:
        """Forget one memory (kept for history, never recalled); the memories it had
        superseded are current again (``Forgotten.restored_ids``). NotFound if the agent
        has no such memory, or it was forgotten before (who forgot it, and when);
        BadArgument for an id no memory can have (as the API's 422)."""
        if not 1 <= memory_id <= MAX_MEMORY_ID:
            raise BadArgument(f"memory id {memory_id} is out of range: 1 to {MAX_MEMORY_ID}")
        try:
            async with self._memory() as memory:
                forgotten = await memory.forget(agent_id, memory_id, by=by, reason=reason)
        except ValueError as exc:
            raise BadArgument(str(exc)) from exc
        if forgotten is None:
            raise NotFound(f"agent {agent_id!r} has no memory {memory_id}")
        if not forgotten.now:
            was = forgotten.record
            when = f"{was.forgotten_at:%Y-%m-%d %H:%M:%S} UTC" if was.forgotten_at else "before"
            raise NotFound(
                f"memory {memory_id} of agent {agent_id!r} is already forgotten "
                f"(by {was.forgotten_by or 'unknown'} at {when})"
            )
        return forgotten

    async def memory_add(
        self,
        agent_id: str,
        content: str,
        *,
        kind: str = "fact",
        subject: str | None = None,
        importance: float = 0.5,
    ) -> Any:
        if kind not in MEMORY_KINDS:
            raise BadArgument(f"unknown memory kind {kind!r}; one of {', '.join(MEMORY_KINDS)}")
        from vigil.activities.record import agents as agent_rows

        if (why := await agent_rows.new_agent_id_problem(self.db, agent_id)) is not None:
            raise BadArgument(why)
        from vigil.activities.memory.provenance import EmbedderMismatch

        try:
            async with self._memory() as memory:
                return await memory.add(
                    agent_id, content, kind=kind, subject=subject, importance=importance
                )
        except ValueError as exc:
            raise BadArgument(str(exc)) from exc
        except EmbedderMismatch as exc:
            raise Refused(str(exc)) from exc

    async def memory_history(
        self,
        agent_id: str,
        subject: str,
        *,
        kind: str | None = None,
        limit: int = 100,
        before: int | None = None,
        include_forgotten: bool = True,
    ) -> HistoryPage:
        """The newest ``limit`` versions of what the agent knew about ``subject``
        (compared in Unicode's NFKC form, without case) older than memory ``before``,
        oldest first, each superseded by the next; forgotten ones are in it unless not
        ``include_forgotten`` (then neither the page nor its cursor names one).
        BadArgument for an unknown kind or a subject no memory can have."""
        if kind is not None and kind not in MEMORY_KINDS:
            raise BadArgument(f"unknown memory kind {kind!r}; one of {', '.join(MEMORY_KINDS)}")
        if before is not None and not 1 <= before <= MAX_MEMORY_ID:
            raise BadArgument(f"memory id {before} is out of range: 1 to {MAX_MEMORY_ID}")
        if not subject.strip():
            raise BadArgument("the subject is empty: name the subject whose history to show")
        try:
            async with self._memory() as memory:
                # One more than asked: whether older versions remain.
                found: list[Any] = await memory.history(
                    agent_id,
                    subject,
                    kind=kind,
                    limit=limit + 1,
                    before=before,
                    include_forgotten=include_forgotten,
                )
        except ValueError as exc:
            raise BadArgument(str(exc)) from exc
        if len(found) <= limit:
            return HistoryPage(found, None)
        page = found[1:]  # oldest first: the one more is the oldest
        return HistoryPage(page, page[0].id)

    async def artifact_download(
        self, session_id: str, name: str, dest: Any, version: int | None = None
    ) -> Any:
        """Stream an artifact to ``dest`` (a path, or a binary file such as stdout): its
        newest bytes, or its ``version`` (1: the first bytes written under the name);
        verified against its sha256. UnknownArtifact when the session has no such artifact
        (or version) or the store no longer holds its bytes."""
        from pathlib import Path

        from vigil.activities.artifacts.registry import iterate_in_thread
        from vigil.activities.artifacts.store import ArtifactError, ArtifactNotFound
        from vigil.activities.artifacts.versions import NoSuchVersion, resolve_version
        from vigil.workers.wiring import make_store

        row = await self.require_session(session_id)  # type: ignore[attr-defined]
        store = make_store(self.settings)
        try:
            ref = await resolve_version(
                self.db, agent_id=row.agent_id, session_id=session_id, name=name, version=version
            )
        except NoSuchVersion as exc:
            raise UnknownArtifact(f"session {session_id}: {exc}") from exc
        except ArtifactNotFound as exc:
            raise UnknownArtifact(f"session {session_id} has no artifact {name!r}") from exc
        except (ArtifactError, ValueError) as exc:
            raise BadArgument(f"artifact {name!r}: {exc}") from exc
        try:
            chunks = iterate_in_thread(await asyncio.to_thread(store.open, ref.sha256))
        except ArtifactNotFound as exc:
            uri_of = getattr(store, "uri", None)
            here = str(uri_of(ref.sha256)) if uri_of else f"{store.scheme}:"
            if not ref.storage_uri.startswith(f"{store.scheme}:") or (
                uri_of is not None and here != ref.storage_uri
            ):
                raise UnknownArtifact(
                    f"artifact {name!r} was stored at {ref.storage_uri}, before the artifact "
                    f"backend changed (now {self.settings.artifact_backend}: {here}); set "
                    "VIGIL_ARTIFACT_BACKEND back to where it was stored, or copy the object there"
                ) from exc
            raise UnknownArtifact(
                f"artifact {name!r} is recorded but its bytes are missing from {here}"
            ) from exc
        if hasattr(dest, "write"):  # a file object: written as the bytes stream
            try:
                async for chunk in chunks:
                    dest.write(chunk)
            except (ArtifactError, ValueError) as exc:
                raise VigilError(f"artifact {name!r}: {exc}") from exc
            dest.flush()
            return ref
        target = Path(dest)
        # A device or a pipe (/dev/null, /dev/stdout) is written into, never replaced.
        direct = target.exists() and not target.is_file()  # noqa: ASYNC240
        tmp = target if direct else target.with_name(target.name + ".part")
        try:
            # A local file written chunk by chunk as the download streams.
            with open(tmp, "wb") as handle:  # noqa: ASYNC230
                async for chunk in chunks:
                    handle.write(chunk)
        except (ArtifactError, ValueError) as exc:
            if not direct:
                tmp.unlink(missing_ok=True)
            raise VigilError(f"artifact {name!r}: {exc}") from exc
        if not direct:
            tmp.replace(target)
        return ref

    async def artifacts(self, session_id: str) -> list[Any]:
        from vigil.activities.artifacts.registry import list_artifacts

        row = await self.require_session(session_id)  # type: ignore[attr-defined]
        return await list_artifacts(self.db, agent_id=row.agent_id, session_id=session_id)


def _refuse_empty(query: str) -> None:
    """A search for nothing is a mistake, not a search that found nothing (the API's
    ``q`` takes at least one character too)."""
    if not query.strip():
        raise BadArgument("the query is empty: give the words to search for")
