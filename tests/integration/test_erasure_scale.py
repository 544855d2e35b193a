"""Erasing a session reads about what it changes, however much the triggers keep: each
trigger keeps the answer it gave every delivery (naming the session it acted on, or why it
refused), and the erasure takes the erased sessions out of the answers that name them. The
retention sweep erases session after session, so a read of every answer per erasure grows
with the triggers' whole history. The rows the statements' plans read are counted, never
timed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.support.plans import explain, own_database, rows_read
from vigil.activities.record.erasure import TRIGGER_ANSWERS, TRIGGER_REFUSALS
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration

KEPT = 20_000
"""Answers of deliveries that started other sessions."""
REFUSED = 80
"""Refusals kept, each naming a session (s-1 to s-80: s-7's words are in s-70's)."""


@pytest.fixture
async def database(stack: Stack) -> AsyncIterator[async_sessionmaker[DbSession]]:
    async with own_database(stack, "vigil_test_erasure_scale") as sessionmaker:
        yield sessionmaker


@pytest.mark.parametrize("plans", ["force_custom_plan", "force_generic_plan"])
async def test_the_trigger_answers_of_an_erased_session_are_found_by_index(
    database: async_sessionmaker[DbSession], plans: str
) -> None:
    trigger = f"t-{uuid.uuid4().hex[:8]}"
    async with database() as db, db.begin():
        await db.execute(
            text(
                "INSERT INTO triggers (name, agent_id, action, secret_nonce, "
                "secret_ciphertext, secret_key_id) VALUES (:t, 'ops', 'start', '', '', 'k')"
            ),
            {"t": trigger},
        )
        # Every delivery's answer names its session; a few deliveries have none yet.
        await db.execute(
            text(
                "INSERT INTO trigger_deliveries (trigger_name, delivery_id, body_sha256, "
                "state, result) SELECT :t, 'd-' || n, 'x', 'done', "
                "CASE WHEN n % 100 = 0 THEN NULL "
                "ELSE jsonb_build_object('session_id', 's-' || n) END "
                "FROM generate_series(1, CAST(:n AS int)) AS n"
            ),
            {"t": trigger, "n": KEPT},
        )
        await db.execute(
            text(
                "INSERT INTO trigger_deliveries (trigger_name, delivery_id, body_sha256, "
                "state, status_code, result) SELECT :t, 'r-' || n, 'x', 'done', 409, "
                "jsonb_build_object('error', jsonb_build_object('code', 'refused', "
                "'message', format('session %L has ended (completed)', 's-' || n))) "
                "FROM generate_series(1, CAST(:n AS int)) AS n"
            ),
            {"t": trigger, "n": REFUSED},
        )
        await db.execute(text("ANALYZE trigger_deliveries"))

    async with database() as db:
        await db.begin()
        await db.execute(text(f"SET LOCAL plan_cache_mode = {plans}"))
        answers = await explain(db, TRIGGER_ANSWERS.text, {"s": ["s-7", "s-4242"]})
        refusals = await explain(db, TRIGGER_REFUSALS.text, {"s": ["s-7", "s-4242"], "a": "ops"})
        await db.rollback()
    # The two answers it changes; the trigger's refusals, each with the ids it is searched
    # for; not the 20,000 answers kept.
    for plan, most in ((answers, 10), (refusals, 5 * REFUSED)):
        read = rows_read(plan["Plan"])
        assert read <= most, read
    # What they change: the two answers; s-7's refusal alone (not s-70's to s-79's).
    async with database() as db:
        await db.begin()
        changed = await db.execute(TRIGGER_ANSWERS, {"s": ["s-7", "s-4242"]})
        refused = await db.execute(TRIGGER_REFUSALS, {"s": ["s-7", "s-4242"], "a": "ops"})
        assert (changed.rowcount, refused.rowcount) == (2, 1)  # type: ignore[attr-defined]
        await db.rollback()


def _nodes(node: dict[str, object]) -> list[dict[str, object]]:
    children = node.get("Plans", [])
    assert isinstance(children, list)
    return [node, *(n for child in children for n in _nodes(child))]
