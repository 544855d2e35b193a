"""A trigger's key field names one key only as a string or a number: a ``null`` (or an
object, a list, a boolean) there is refused with 422 as an empty string is, and starts or
messages nothing (before: ``null`` was the key ``"null"``, so a customer whose id was
missing and a customer whose id was the string ``"null"`` shared one session). So is a
number that is no finite number (``NaN``, or ``1e400`` read as infinity)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer, running_api
from tests.support.triggers import create, deliver

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with running_api(cli.settings) as server:
        yield server


@pytest.fixture
async def http(api: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        yield client


async def sessions_of(sessionmaker: async_sessionmaker[DbSession], agent: str) -> list[str]:
    async with sessionmaker() as db:
        rows = await db.execute(text("SELECT id FROM sessions WHERE agent_id = :a"), {"a": agent})
        return [r[0] for r in rows]


# NaN and the infinities: JSON senders that write them (Python's json does) gave the keys
# "NaN", "Infinity" and "-Infinity", each shared by every delivery that overflowed.
NOT_A_KEY: list[Any] = [
    None, {"n": 1}, {}, [1], [], True, False, "", float("nan"), float("inf"), float("-inf")
]  # fmt: skip


@pytest.mark.parametrize("action", ["message", "start", "wake"])
async def test_a_key_that_is_no_string_or_number_is_refused(
    cli: CLIStack,
    http: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[DbSession],
    action: str,
) -> None:
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    name, secret = create(
        cli,
        "--agent", agent, "--action", action, "--key-field", "customer.id",
        "--goal-template", "Support customer {customer.id}", "--message-template", "{text}",
    )  # fmt: skip
    for i, value in enumerate(NOT_A_KEY):
        body = {"customer": {"id": value}, "text": "hello"}
        r = await deliver(http, name, body, secret, delivery=f"d-{i}")
        assert r.status_code == 422, (value, r.text)
        error = r.json()["error"]
        assert error["code"] == "invalid_request", r.text
        message = error["message"]
        assert "'customer.id'" in message and "must hold 1 to 500 characters" in message, r.text
    assert await sessions_of(sessionmaker, agent) == []
    cli.vigil.ok("trigger", "delete", name)
