"""Exports that their clients stop reading hold the API's PostgreSQL connections: each
export holds one until it is read to its end. Twenty slow exports (a read token is
enough) held the whole pool, and every other request waited 30 s and failed. Half the
pool streams exports at most; an export past that is a 503 at once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.api import ApiServer, running_api
from vigil.activities.record import store as record
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.settings import Settings
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[ApiServer]:
    # A pool of two: one export at a time.
    with running_api(settings.model_copy(update={"api_db_pool_size": 2})) as server:
        yield server


def _large_session(database_url: str) -> str:
    """A recorded session of about 60 MB of messages: more than the sockets buffer."""
    agent, sid = f"export-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4()}"
    words = "w" * 200_000

    async def go() -> None:
        engine = make_engine(database_url, pool_size=1)
        try:
            async with make_sessionmaker(engine).begin() as db:
                await record.create_session(
                    db, session_id=sid, agent_id=agent, goal="g", status="completed"
                )
                await record.append_messages(
                    db,
                    sid,
                    agent,
                    [
                        record.NewMessage(seq=n, role="assistant", content=f"{n} {words}")
                        for n in range(300)
                    ],
                )
        finally:
            await engine.dispose()

    asyncio.run(go())
    return sid


def test_an_export_past_half_the_pool_is_refused_while_the_others_stream(
    api: ApiServer, database_url: str
) -> None:
    sid = _large_session(database_url)
    with api.client(api.token(Scope.READ)) as http:
        with http.stream("GET", f"/v1/sessions/{sid}/export") as held:
            assert held.status_code == 200
            reading = held.iter_bytes()  # kept: a closed iterator closes the response
            next(reading)  # begun; then not read: it holds its connection

            def refused() -> bool:
                r = http.get(f"/v1/sessions/{sid}/export")
                return r.status_code == 503 and "exports" in r.json()["error"]["message"]

            deadline = time.monotonic() + 30
            while not refused():
                assert time.monotonic() < deadline, "the second export was not refused"
                time.sleep(0.2)
            # Other requests are served meanwhile.
            assert http.get(f"/v1/sessions/{sid}", params={"last": 0}).status_code == 200
        # Closed: the next export streams whole.
        deadline = time.monotonic() + 30
        while True:
            r = http.get(f"/v1/sessions/{sid}/export")
            if r.status_code == 200:
                break
            assert time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert r.text.count("\n") == 301  # the header and the 300 messages
