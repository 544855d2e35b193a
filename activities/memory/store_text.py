"""The memory store's full-text searches: recall's candidates from the GIN index, a plain
query run as a ladder of steps (``text_ladder``) through ``vigil_memory_text_search``,
the ladder steered by PostgreSQL's word statistics on ``memories.tsv``, read at most once
a while per store, and the search run on a connection of its own bound to the agent so
hybrid recall can run it beside the vector search. A layer of ``MemoryStore``
(``activities.memory.store``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from vigil.activities.memory.search import (
    _LEXEMES,
    _TEXT_SEARCH_ROWS,
    _WEBSEARCH,
    _WORD_STATISTICS,
    STATISTICS_TTL_SECONDS,
    TextStatistics,
    text_ladder,
    text_ranking,
)
from vigil.activities.memory.store_writes import _MemoryWrites
from vigil.activities.record.lean import Statements
from vigil.activities.record.rls import bound_acting_for


class _TextRecall(_MemoryWrites):
    """Recall's full-text searches (a layer of MemoryStore)."""

    async def _text_candidates(
        self,
        db: Statements,
        *,
        agent_id: str,
        query: str,
        any_term: bool,
        statistics: TextStatistics | None = None,
        kinds: list[str] | None,
        since: datetime | None,
        until: datetime | None,
        live_only: bool,
        n: int,
    ) -> list[Any]:
        """The current agent's best full-text matches, at most ``n``, best first.

        A plain query (``any_term``) runs as a ladder (``text_ladder``): memories holding
        all its words, then all but one, ..., then any one, stopping once ``n`` are found;
        a query with search syntax runs as written. Each step ranks at most
        ``text_scan_limit`` matching rows, so common words cannot make recall read the
        agent's whole memory. Under the policies PostgreSQL could not use the GIN index
        for the match (``tsv @@ query`` is not leakproof, so it must run after the
        policy's filter), so the search runs in ``vigil_memory_text_search``, a SECURITY
        DEFINER function that searches only the agent named by the transaction's own
        setting and returns ids (read afterwards under the policies).
        """
        if any_term:
            lexemes = list((await db.execute(_LEXEMES, {"text": query})).scalar_one() or [])
            # A word in more rows than a step ranks is common whatever the setting says: a
            # step holding it could otherwise fill its cap before reaching rarer words.
            common = min(self.common_word_rows, self.text_scan_limit)
            levels = text_ladder(lexemes, statistics, common, counts=self.text_steps)
            ranking = text_ranking(lexemes)
        else:
            ranking = (await db.execute(_WEBSEARCH, {"text": query})).scalar_one() or ""
            levels = [ranking] if ranking else []
        if not levels:
            return []  # only stop words: nothing to match
        self.text_steps["sent"] += len(levels)
        return list(
            await db.execute(
                _TEXT_SEARCH_ROWS,
                {
                    "agent_id": agent_id,
                    "levels": levels,
                    "ranking": ranking,
                    "kinds": kinds,
                    "since": since,
                    "until": until,
                    "live_only": live_only,
                    "n": n,
                    "cap": self.text_scan_limit,
                },
            )
        )

    async def _read_text_statistics(self) -> TextStatistics | None:
        """The word statistics of ``memories.tsv`` (None where there are none yet, or this
        connection's role may not read them), read at most once per
        ``STATISTICS_TTL_SECONDS``.

        They are read outside the agent's role: ``pg_stats`` shows nothing of a table
        whose row-level security applies to the reader. They describe the whole table,
        every agent's rows, as the GIN index the ladder walks does.
        """
        now = time.monotonic()
        if self._statistics is not None and now - self._statistics[1] < STATISTICS_TTL_SECONDS:
            return self._statistics[0]
        async with self._sessionmaker() as db:
            row = (await db.execute(_WORD_STATISTICS)).one_or_none()
        read: TextStatistics | None = None
        if row is not None and row.lexemes and row.shares and row.rows > 0:
            # most_common_elem_freqs lists one share per lexeme, then a minimum, maximum
            # (and null share): only the pairs are taken.
            shares = dict(zip(row.lexemes, row.shares, strict=False))
            read = TextStatistics(shares, min(shares.values()), float(row.rows))
        self._statistics = (read, now)
        return read

    async def _text_alone(
        self, agent_id: str, search: Callable[[Statements], Awaitable[list[Any]]]
    ) -> list[Any]:
        """``search`` acting for ``agent_id`` on a connection bound to it (its statements,
        the query's words then the search, need not share a transaction)."""
        async with bound_acting_for(self._engine, agent_id) as db:
            return await search(db)
