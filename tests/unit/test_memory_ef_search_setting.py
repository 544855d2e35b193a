"""VIGIL_MEMORY_EF_SEARCH reaches the memory store: 0 follows the table, a number fixes it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from vigil.activities.memory.embedders import HashingEmbedder
from vigil.workers.settings import Settings
from vigil.workers.wiring import make_memory_store


def test_the_default_follows_the_memory_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIGIL_MEMORY_EF_SEARCH", raising=False)
    sessionmaker = async_sessionmaker(create_async_engine("postgresql+asyncpg://x@127.0.0.1/x"))
    store = make_memory_store(Settings(), sessionmaker, HashingEmbedder(384))
    assert store.ef_search is None


def test_a_number_fixes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_MEMORY_EF_SEARCH", "200")
    sessionmaker = async_sessionmaker(create_async_engine("postgresql+asyncpg://x@127.0.0.1/x"))
    store = make_memory_store(Settings(), sessionmaker, HashingEmbedder(384))
    assert store.ef_search == 200


def test_out_of_pgvector_range_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_MEMORY_EF_SEARCH", "5000")
    with pytest.raises(ValidationError):
        Settings()
