"""The integration tests' stack for scripts (recording histories, benches) outside pytest.

Same state folder and ports as ``tests/conftest.py``, so one test stack serves both; each
script gets a database of its own, so it never disturbs a test run's database::

    with scratch_stack("vigil_bench") as settings:
        asyncio.run(main(settings))
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg

from vigil.workers.db import migrate_sync
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
# The test stack's ports, shared by tests/conftest.py, the test support and the benches.
# VIGIL_TEST_PORT_OFFSET moves them all, so two checkouts can test side by side.
_OFFSET = int(os.environ.get("VIGIL_TEST_PORT_OFFSET", "0"))
TEST_PORTS = {
    "temporal_port": 17233 + _OFFSET,
    "temporal_ui_port": 18233 + _OFFSET,
    "postgres_port": 15433 + _OFFSET,
    "minio_port": 19000 + _OFFSET,
    "minio_console_port": 19001 + _OFFSET,
    "codec_port": 18234 + _OFFSET,
    "api_port": 18240 + _OFFSET,
}


def test_stack_settings(database_url: str | None = None, **extra: object) -> Settings:
    state = Path(os.environ.get("VIGIL_TEST_STATE_DIR", str(ROOT / ".vigil-test")))
    return Settings(  # type: ignore[arg-type]
        state_dir=state, with_minio=True, database_url=database_url, **{**TEST_PORTS, **extra}
    )


async def recreate_database(
    base_url: str, name: str, *, drop_only: bool = False, collation: str | None = None
) -> str:
    """Database ``name`` on ``base_url``'s server, dropped and created empty again (only
    dropped with ``drop_only``), sorting text by ``collation`` when one is named (the
    server's default otherwise); its URL."""
    server = base_url.rsplit("/", 1)[0]
    conn = await asyncpg.connect(server + "/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            locale = (
                f" LC_COLLATE '{collation}' LC_CTYPE '{collation}' TEMPLATE template0"
                if collation
                else ""
            )
            await conn.execute(f'CREATE DATABASE "{name}"{locale}')
    finally:
        await conn.close()
    return f"{server}/{name}"


@contextlib.contextmanager
def scratch_stack(
    database: str, stack_settings: Callable[..., Settings] = test_stack_settings
) -> Iterator[Settings]:
    """Start the test stack if needed, give it a fresh migrated ``database``, yield settings
    pointing at both; stop the stack afterwards if it was not running before. Synchronous:
    call it outside any event loop. ``stack_settings`` picks the stack (the cluster test
    stack: ``tests.support.cluster.cluster_settings``)."""
    stack = Stack(stack_settings())
    was_running = all(part.running for part in stack.status())
    stack.up()
    try:
        base = stack.settings.endpoints().database_url
        if base is None:
            raise RuntimeError("the test stack has no database")
        url = asyncio.run(recreate_database(base, database))
        migrate_sync(url)
        state = stack.settings.resolved_state_dir
        yield stack_settings(url, artifact_dir=state / f"{database}-artifacts")
    finally:
        if not was_running and not os.environ.get("VIGIL_TEST_KEEP_STACK"):
            stack.down()


if __name__ == "__main__":
    # `python -m tests.support.teststack`: build what is missing and start the test stack,
    # outside pytest's per-test timeout (a cold Go build takes minutes).
    Stack(test_stack_settings()).up()
