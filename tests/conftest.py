"""Fixtures for the real stack: Temporal dev server, PostgreSQL + pgvector, MinIO.

The test stack lives in its own state folder and on its own ports, so a developer's demo
stack keeps running beside it. It is started once per test run (or reused when it is
already up, e.g. started by `make test`) and stopped at the end unless it was running
before.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from temporalio.client import Client

from tests.support.teststack import TEST_PORTS
from vigil.workers.db import make_engine, make_sessionmaker, migrate_sync
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack
from vigil.workers.temporal import connect

ROOT = Path(__file__).resolve().parent.parent

# The CLI writes the commands in its hints as it was started (`uv run vigil` under
# `uv run`, which sets UV); the tests run it as a plain `vigil`, whatever started pytest.
os.environ.pop("UV", None)


def _base_settings(**extra: object) -> Settings:
    state = os.environ.get("VIGIL_TEST_STATE_DIR", str(ROOT / ".vigil-test"))
    return Settings(  # type: ignore[arg-type]
        state_dir=Path(state),
        with_minio=True,
        **{**TEST_PORTS, **extra},
    )


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    settings = _base_settings()
    the_stack = Stack(settings)
    was_running = all(part.running for part in the_stack.status())
    the_stack.up()
    yield the_stack
    if not was_running and not os.environ.get("VIGIL_TEST_KEEP_STACK"):
        the_stack.down()


@pytest.fixture(scope="session")
def database_url(stack: Stack) -> str:
    """A fresh database for this test run, migrated by Alembic."""
    base = stack.settings.endpoints().database_url
    assert base is not None
    name = f"vigil_test_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"

    async def recreate() -> None:
        conn = await asyncpg.connect(base.rsplit("/", 1)[0] + "/postgres")
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(recreate())
    url = base.rsplit("/", 1)[0] + "/" + name
    migrate_sync(url)
    return url


@pytest.fixture(scope="session")
def settings(stack: Stack, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings pointing at the test stack, with a filesystem store in a temp folder."""
    return _base_settings(
        database_url=database_url,
        artifact_dir=tmp_path_factory.mktemp("artifacts"),
    )


@pytest.fixture(scope="session")
def s3_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"artifact_backend": "s3"})


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(database_url)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[DbSession]:
    return make_sessionmaker(engine)


@pytest.fixture(scope="session")
async def client(stack: Stack) -> Client:
    return await connect(stack.settings)


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


def _utf8_safe(value: object) -> object:
    """``value`` with every string made UTF-8 encodable (lone surrogates escaped)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_utf8_safe(k): _utf8_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_utf8_safe(v) for v in value)
    return value


@pytest.hookimpl(hookwrapper=True)
def pytest_report_to_serializable(config: pytest.Config, report: object) -> Iterator[None]:
    """Tests feed vigil lone surrogates on purpose, and what they log can hold them: a
    parallel worker sends its reports to the controller as UTF-8, so escape them first."""
    outcome = yield
    data = outcome.get_result()  # type: ignore[attr-defined]
    if data is not None:
        outcome.force_result(_utf8_safe(data))  # type: ignore[attr-defined]


WATCHDOG_LEAD = 20.0
"""Seconds before pytest-timeout stops a test at which every asyncio task's stack is
printed: the timeout's own dump shows only threads, and an awaiting test's main thread
sits in the event loop's select, which says nothing of what it waits for."""


def _timeout_of(request: pytest.FixtureRequest) -> float:
    marker = request.node.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(request.config.getini("timeout") or 0)


def _print_tasks(loop: asyncio.AbstractEventLoop, name: str) -> None:
    out = io.StringIO()
    tasks = asyncio.all_tasks(loop)
    print(f"--- {name}: {len(tasks)} asyncio tasks still pending ---", file=out)
    for task in tasks:
        print(f"task {task.get_name()}: {task.get_coro()!r}", file=out)
        task.print_stack(limit=30, file=out)
    sys.stderr.write(out.getvalue())
    sys.stderr.flush()


@pytest.fixture(autouse=True)
async def _asyncio_watchdog(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Where each pending task of a test that is about to time out stands, printed with
    the test's captured output."""
    seconds = _timeout_of(request)
    loop = asyncio.get_running_loop()
    timer = None
    if seconds > WATCHDOG_LEAD:
        timer = threading.Timer(
            seconds - WATCHDOG_LEAD,
            lambda: loop.call_soon_threadsafe(_print_tasks, loop, request.node.nodeid),
        )
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
