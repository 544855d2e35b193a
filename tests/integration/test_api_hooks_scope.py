"""Triggers and webhook deliveries are listed only for the agents a token covers: a token
for other agents sees none of them, and naming an agent it does not cover is 403."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer, running_api
from vigil.activities.record import hooks as hook_rows
from vigil.workers.tokens import Scope, TokenService

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with running_api(cli.settings) as server:
        yield server


@pytest.fixture
async def http(api: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        yield client


async def bearer(
    sessionmaker: async_sessionmaker[DbSession], agents: list[str] | None = None
) -> dict[str, str]:
    """Headers with a new admin token covering ``agents`` (None: every agent)."""
    made = await TokenService(sessionmaker).create("tester", scope=Scope.ADMIN, agents=agents)
    return {"Authorization": f"Bearer {made.token}"}


async def record_attempt(
    sessionmaker: async_sessionmaker[DbSession], agent: str, session: str
) -> None:
    async with sessionmaker.begin() as db:
        await hook_rows.record_attempt(
            db,
            delivery_id=f"{session}:ended",
            webhook=f"hook-{uuid.uuid4().hex[:6]}",
            agent_id=agent,
            session_id=session,
            event="session_ended",
            url=f"https://{agent}.example/hook",
            attempt=1,
            outcome="delivered",
            status_code=200,
            error=None,
        )


async def test_triggers_are_listed_only_for_the_agents_the_token_covers(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    mine, theirs = (f"agent-tscope-{uuid.uuid4().hex[:6]}" for _ in range(2))
    names = {}
    for agent in (mine, theirs):
        names[agent] = f"t-{uuid.uuid4().hex[:8]}"
        cli.vigil.json("trigger", "create", names[agent], "--agent", agent, "--goal-template", "x")
    r = await http.get("/v1/triggers", headers=await bearer(sessionmaker, [mine]))
    assert r.status_code == 200, r.text
    assert {t["agent_id"] for t in r.json()["items"]} == {mine}
    r = await http.get("/v1/triggers", headers=await bearer(sessionmaker, [f"{mine}-other"]))
    assert r.status_code == 200 and r.json()["items"] == [], r.text
    r = await http.get("/v1/triggers", headers=await bearer(sessionmaker))
    assert {names[mine], names[theirs]} <= {t["name"] for t in r.json()["items"]}


async def test_webhook_deliveries_are_listed_only_for_the_agents_the_token_covers(
    http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    mine, theirs = (f"agent-wscope-{uuid.uuid4().hex[:6]}" for _ in range(2))
    sessions = {agent: f"{agent}-s1" for agent in (mine, theirs)}
    for agent, sid in sessions.items():
        await record_attempt(sessionmaker, agent, sid)
    scoped = await bearer(sessionmaker, [mine])
    r = await http.get("/v1/webhooks/deliveries", params={"limit": 1000}, headers=scoped)
    assert r.status_code == 200, r.text
    assert {row["agent_id"] for row in r.json()["items"]} == {mine}
    r = await http.get("/v1/webhooks/deliveries", params={"agent": mine}, headers=scoped)
    assert r.status_code == 200 and [row["session_id"] for row in r.json()["items"]] == [
        sessions[mine]
    ]
    r = await http.get("/v1/webhooks/deliveries", params={"agent": theirs}, headers=scoped)
    assert r.status_code == 403, r.text
    assert theirs in r.json()["error"]["message"] and sessions[theirs] not in r.text
    r = await http.get(
        "/v1/webhooks/deliveries", params={"session": sessions[theirs]}, headers=scoped
    )
    assert r.status_code == 200 and r.json()["items"] == [], r.text
    everyone = await bearer(sessionmaker)
    r = await http.get("/v1/webhooks/deliveries", params={"agent": theirs}, headers=everyone)
    assert [row["session_id"] for row in r.json()["items"]] == [sessions[theirs]]


async def test_webhook_deliveries_page_on_with_next_after(
    http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """A page cut at its limit says where the next begins (``next_after``, passed as
    ``after``); the last page says null. Before, the list was a bare array and a caller
    had to take the last row's id itself."""
    agent = f"agent-wpage-{uuid.uuid4().hex[:6]}"
    for n in range(3):
        await record_attempt(sessionmaker, agent, f"{agent}-s{n}")
    admin = await bearer(sessionmaker)
    params: dict[str, str | int] = {"agent": agent, "limit": 2}
    first = (await http.get("/v1/webhooks/deliveries", params=params, headers=admin)).json()
    assert len(first["items"]) == 2 and first["next_after"] == first["items"][-1]["id"]
    params["after"] = first["next_after"]
    rest = (await http.get("/v1/webhooks/deliveries", params=params, headers=admin)).json()
    assert [r["session_id"] for r in rest["items"]] == [f"{agent}-s2"]
    assert rest["next_after"] is None


async def test_webhook_deliveries_next_after_is_null_exactly_when_no_attempt_follows(
    http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """A page of attempts cut at its limit says where the next begins only when an attempt
    follows it: a last page exactly full says null (before, it pointed on to one empty
    page)."""
    admin = await bearer(sessionmaker)
    exact = f"agent-wfull-{uuid.uuid4().hex[:6]}"
    for n in range(2):
        await record_attempt(sessionmaker, exact, f"{exact}-s{n}")
    params: dict[str, str | int] = {"agent": exact, "limit": 2}
    full = (await http.get("/v1/webhooks/deliveries", params=params, headers=admin)).json()
    assert [r["session_id"] for r in full["items"]] == [f"{exact}-s0", f"{exact}-s1"]
    assert full["next_after"] is None

    over = f"agent-wover-{uuid.uuid4().hex[:6]}"
    for n in range(3):
        await record_attempt(sessionmaker, over, f"{over}-s{n}")
    params = {"agent": over, "limit": 2}
    cut = (await http.get("/v1/webhooks/deliveries", params=params, headers=admin)).json()
    assert [r["session_id"] for r in cut["items"]] == [f"{over}-s0", f"{over}-s1"]
    assert cut["next_after"] == cut["items"][-1]["id"]
    params["after"] = cut["next_after"]
    rest = (await http.get("/v1/webhooks/deliveries", params=params, headers=admin)).json()
    assert [r["session_id"] for r in rest["items"]] == [f"{over}-s2"]
    assert rest["next_after"] is None
