"""Alembic environment: async, driven by the URL vigil hands it (never a module global)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config

from vigil.schema.tables import Base

config = context.config
target_metadata = Base.metadata

if not config.get_main_option("sqlalchemy.url"):
    # Run by hand (`uv run alembic upgrade head`): use the same settings as vigil.
    from vigil.workers.settings import Settings, sqlalchemy_url

    _url = Settings().endpoints().database_url
    if _url is None:
        raise SystemExit("no database: set DATABASE_URL or run `vigil stack up` first")
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(_url).replace("%", "%%"))


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    # vigil's upgrade (workers/db.py) waits for a table's lock this long at a time, so an
    # ALTER held up by an open transaction never holds the table's other users off for long.
    lock_timeout_ms = config.attributes.get("lock_timeout_ms")
    settings = {} if lock_timeout_ms is None else {"lock_timeout": str(int(lock_timeout_ms))}
    engine = async_engine_from_config(
        config.get_section(config.config_ini_section) or {},
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
        connect_args={"server_settings": settings},
    )
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
