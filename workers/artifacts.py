"""A session's artifacts as a typed service: list, look up, read (whole or a range), upload.

The HTTP API streams through this; bytes are never held whole. Uploads go through the
same registry path as a tool's output (validated name, content-addressed, the link
written acting for the session's agent) and are recorded as an event with the person's
name as actor.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator

from vigil.activities.artifacts.registry import (
    ArtifactRef,
    InvalidArtifactName,
    iterate_in_thread,
    list_artifacts,
    put_artifact,
    validate_name,
)
from vigil.activities.artifacts.store import ArtifactNotFound, ArtifactStore
from vigil.activities.artifacts.versions import NoSuchVersion, resolve_version, version_counts
from vigil.activities.record.rls import acting_for
from vigil.activities.record.store import NewEvent, record_events
from vigil.schema import event_kinds
from vigil.workers.client import BadArgument, NotFound, VigilClient
from vigil.workers.wiring import make_store


async def _stream(head: bytes | None, rest: Iterator[bytes]) -> AsyncIterator[bytes]:
    if head is None:
        return
    yield head
    async for block in iterate_in_thread(rest):
        yield block


class UploadTooLarge(Exception):
    """The upload went past the size limit while streaming."""


class ArtifactService:
    """Artifacts of sessions the caller has already checked it may see."""

    def __init__(self, client: VigilClient, store: ArtifactStore | None = None) -> None:
        self.client = client
        self.store = store or make_store(client.settings)

    async def list(self, agent_id: str, session_id: str) -> list[ArtifactRef]:
        return await list_artifacts(self.client.db, agent_id=agent_id, session_id=session_id)

    async def versions(self, agent_id: str, session_id: str) -> Counter[str]:
        """How many versions each of the session's names has had (absent: 1)."""
        return await version_counts(self.client.db, agent_id=agent_id, session_id=session_id)

    async def resolve(
        self, agent_id: str, session_id: str, name: str, version: int | None = None
    ) -> ArtifactRef:
        """The artifact ``name`` of the session: its newest bytes, or its ``version``."""
        try:
            return await resolve_version(
                self.client.db, agent_id=agent_id, session_id=session_id, name=name, version=version
            )
        except InvalidArtifactName as exc:
            raise BadArgument(str(exc)) from exc
        except NoSuchVersion as exc:
            raise NotFound(f"session {session_id!r}: {exc}") from exc
        except ArtifactNotFound as exc:
            raise NotFound(f"session {session_id!r} has no artifact {name!r}") from exc

    async def read(
        self, ref: ArtifactRef, start: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes of ``ref`` (verified against its digest when read whole), or ``length``
        bytes from ``start``. Opened before the first byte is sent, so a missing object or
        an unreachable store is an error response, not a cut stream."""

        def opened() -> tuple[Iterator[bytes], bytes | None]:
            # The first block is read here: a started generator closes its file or its
            # connection however the response ends (an unstarted one would leak it).
            if length is None:
                chunks = self.store.open(ref.sha256)
            else:
                chunks = self.store.open_range(ref.sha256, start, length)
            return chunks, next(chunks, None)

        try:
            chunks, head = await asyncio.to_thread(opened)
        except ArtifactNotFound as exc:
            raise NotFound(
                f"the bytes of artifact {ref.name!r} are missing from the store"
            ) from exc
        # A store that is away raised an OSError (StoreUnavailable from S3): the API answers
        # it 503 naming the object store, as an upload's, by the one rule of outages.
        return _stream(head, chunks)

    async def upload(
        self,
        agent_id: str,
        session_id: str,
        name: str,
        body: AsyncIterator[bytes],
        *,
        mime_type: str,
        limit: int,
        by: str,
    ) -> ArtifactRef:
        """Stream ``body`` into the store under ``name`` (UploadTooLarge past ``limit``
        bytes: nothing is linked then)."""
        try:
            validate_name(name, new=True)
        except InvalidArtifactName as exc:
            raise BadArgument(str(exc)) from exc
        loop = asyncio.get_running_loop()

        async def next_block() -> bytes | None:
            try:
                return await anext(body)
            except StopAsyncIteration:
                return None

        def blocks() -> Iterator[bytes]:
            # Runs in the store's worker thread, pulling one block at a time from the loop.
            seen = 0
            while (
                block := asyncio.run_coroutine_threadsafe(next_block(), loop).result()
            ) is not None:
                seen += len(block)
                if seen > limit:
                    raise UploadTooLarge(f"the upload is over {limit} bytes")
                if block:
                    yield block

        ref = await put_artifact(
            self.store,
            self.client.db,
            agent_id=agent_id,
            session_id=session_id,
            name=name,
            chunks=blocks(),
            mime_type=mime_type,
        )
        async with acting_for(self.client.db, agent_id) as db:
            await record_events(
                db,
                session_id,
                agent_id,
                [
                    NewEvent(
                        key=f"artifact.uploaded:{uuid.uuid4().hex}",
                        kind=event_kinds.ARTIFACT_UPLOADED,
                        actor=by,
                        payload={"name": name, "sha256": ref.sha256, "size": ref.size},
                    )
                ],
            )
        return ref
