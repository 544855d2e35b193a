"""How recall searches. The vector half reads the HNSW index of the embedder's
dimension, with an ``hnsw.ef_search`` that follows the agent's memory count
(``ef_search_for``) and an exact scan behind it; the full-text half runs a plain query
as a ladder of steps (``text_ladder``), steered by PostgreSQL's statistics on the words
of ``memories.tsv``, through ``vigil_memory_text_search``. This module holds that SQL and
the ladder; ``MemoryStore.recall`` (``activities.memory.store``) runs them. The checks
that a kept recall result is still live are here too.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import BigInteger, DateTime, String, TextClause, bindparam
from sqlalchemy.dialects.postgresql import ARRAY

from vigil.activities.memory.provenance import ACTIVE_FOR_RECALL
from vigil.activities.record.lean import Statements
from vigil.activities.record.sql import sql

TEXT_SCAN_LIMIT = 2000
"""Default for ``MemoryStore.text_scan_limit``: matching rows ranked per ladder step."""
COMMON_WORD_ROWS = 1000
"""Default for ``MemoryStore.common_word_rows``: a word in more rows than this (in the
whole table, by PostgreSQL's statistics) is common, and the ladder's steps try the
combinations holding a rarer word first (``text_ladder``)."""

EF_SEARCH_MAX = 1000
"""pgvector's upper bound for hnsw.ef_search."""

_RECALLED_COLUMNS = ", m.kind, m.subject, m.content, m.importance, m.created_at, m.superseded_by"
"""What recall reads of each memory, with its id, in the search that finds it."""


def _with_kinds(statement: TextClause, kinds: list[str] | None) -> TextClause:
    if kinds:
        return statement.bindparams(bindparam("kinds", type_=ARRAY(String)))
    return statement


def _vector_sql(dim: int, filters: str, *, exact: bool, columns: str = "") -> str:
    # The dimension is written into the SQL as a literal: only then can the planner prove
    # ``dim = <n>`` and use the partial HNSW index built for that dimension. The exact
    # form orders by the bare column, which no index serves. Ties are broken by id in
    # Python: a second sort key here would put a sort above the index scan.
    d = int(dim)
    if exact:
        distance = "m.embedding <=> CAST(:vector AS vector)"
    else:
        distance = f"m.embedding::vector({d}) <=> CAST(:vector AS vector({d}))"
    return f"""
        SELECT m.id, {distance} AS distance{columns}
        FROM memories m
        WHERE m.dim = {d} AND {filters}
        ORDER BY {distance}
        LIMIT :n
    """


def _checked_vector_sql(dim: int, filters: str, columns: str) -> str:
    """Recall's index search with the agent's active embedder beside it, in one statement:
    one row with the embedder (``active_*``) and NULL hit columns when nothing is found."""
    return f"""
        SELECT a.embedder AS active_embedder, a.version AS active_version,
               a.dim AS active_dim, h.*
        FROM (SELECT 1) AS one
        {ACTIVE_FOR_RECALL}
        LEFT JOIN LATERAL ({_vector_sql(dim, filters, exact=False, columns=columns)}) AS h ON true
    """


def _count_sql(dim: int, filters: str) -> str:
    # Bounded: it stops at the number of candidates wanted.
    return f"""
        SELECT count(*) FROM (
            SELECT 1 FROM memories m WHERE m.dim = {int(dim)} AND {filters} LIMIT :n
        ) AS bounded
    """


_SEARCH_OPERATORS = re.compile(r'"|(?:^|\s)-\w|\bor\b', re.IGNORECASE)


def _has_search_operators(query: str) -> bool:
    """Whether the query uses web-search syntax: quotes, ``-word`` or ``or``."""
    return _SEARCH_OPERATORS.search(query) is not None


LADDER_TERMS = 8
"""A plain query's longest (most distinctive) words kept for the full-text ladder."""
LADDER_CLAUSES = 32
"""Ladder steps that would need more alternatives than this are skipped."""
EMPTY_STEP_ROWS = 0.1
"""Ladder steps expected to match fewer rows than this in the whole table are skipped."""
STATISTICS_TTL_SECONDS = 300.0
"""How long a store keeps the word statistics it read before reading them again."""
COUNT_TTL_SECONDS = 300.0
EF_SEARCH_BASE = 40
EF_SEARCH_BASE_ROWS = 5_000


def ef_search_for(rows: int, candidates: int) -> int:
    """``hnsw.ef_search`` for an agent with ``rows`` memories: ``40 * sqrt(rows / 5000)``,
    at least ``candidates`` (and 40), at most 1000.

    An HNSW search with a fixed ``ef_search`` finds a smaller share of the true nearest
    neighbours as the graph grows: on all-MiniLM-L6-v2 embeddings of real sentences,
    ef 40 gave recall@10 0.94 at 100k rows, ef 160 0.98. The square root keeps recall@10
    near 0.98 from 5k to 1M rows (ef 40 at 5k, 179 at 100k, 566 at 1M) for a latency
    that grows far slower than the table (``bench/memory_real_text.py`` prints both).
    ``MemoryStore(ef_search=...)`` (setting ``memory_ef_search``) fixes it instead.
    """
    scaled = math.ceil(EF_SEARCH_BASE * math.sqrt(max(rows, 0) / EF_SEARCH_BASE_ROWS))
    return min(EF_SEARCH_MAX, max(EF_SEARCH_BASE, candidates, scaled))


def _tsquery_term(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass(frozen=True)
class TextStatistics:
    """What PostgreSQL's statistics say about the words of ``memories.tsv``: the share of
    rows holding each of its most common lexemes (``pg_stats.most_common_elems``), a
    share no other lexeme reaches (the smallest one listed), and the table's row count."""

    shares: dict[str, float]
    floor: float
    rows: float

    def share(self, lexeme: str) -> float:
        return self.shares.get(lexeme, self.floor)

    def expected(self, lexemes: Sequence[str], at_least: int) -> float:
        """Rows expected to hold at least ``at_least`` of ``lexemes``, were words
        independent of each other."""
        # Probability of holding exactly j of the words so far, word by word.
        exactly = [1.0] + [0.0] * len(lexemes)
        for lexeme in lexemes:
            p = min(1.0, self.share(lexeme))
            for j in range(len(lexemes), 0, -1):
                exactly[j] = exactly[j] * (1.0 - p) + exactly[j - 1] * p
            exactly[0] *= 1.0 - p
        return self.rows * sum(exactly[at_least:])


def _ladder_words(lexemes: list[str]) -> list[str]:
    return sorted(set(lexemes), key=lambda w: (-len(w), w))[:LADDER_TERMS]


def text_ladder(
    lexemes: list[str],
    statistics: TextStatistics | None = None,
    common_rows: float = COMMON_WORD_ROWS,
    *,
    counts: Counter[str] | None = None,
) -> list[str]:
    """The steps of a plain query's full-text search, as tsquery texts: memories holding
    all ``lexemes``, then all but one, ..., then any two, then any one.

    Only the ``LADDER_TERMS`` longest lexemes take part (longer words are rarer, so they
    say more); a step needing more than ``LADDER_CLAUSES`` alternatives is skipped (the
    next one finds its rows too). The plain OR of every kept word is what candidates are
    ranked against (``text_ranking``).

    With ``statistics`` (each step walks the index entries of its words whether it finds
    anything or not, so the statistics steer which steps run):

    - a step of three words or more that no row is expected to match (fewer than
      ``EMPTY_STEP_ROWS`` in the whole table, were the words independent) is skipped:
      on real text most queries' upper steps find nothing. The any-two and any-one
      steps always run, so a row holding more words than expected (an agent's memories
      share topics) is still found, by the any-two step, where it ranks above rows
      holding two;
    - a step is split in two when some of its words are common (in more than
      ``common_rows`` rows, ``COMMON_WORD_ROWS`` by default): first the
      combinations holding a word that is not common, then those of common words only,
      which run only if the first part found too few. Rows sharing a rarer word with
      the query come first, as inverse document frequency would rank them, and the
      first part walks only the shorter entry lists (the index skips through the
      common words' lists).

    ``counts`` gains one ``predicted_empty`` per step the statistics left out and one
    ``split`` per step run in two parts.
    """
    words = _ladder_words(lexemes)
    common: set[str] = set()
    if statistics is not None:
        common = {w for w in words if statistics.share(w) * statistics.rows > common_rows}
    steps: list[str] = []
    for size in range(len(words), 0, -1):
        if size > 1 and math.comb(len(words), size) > LADDER_CLAUSES:
            continue
        if (
            size > 2
            and statistics is not None
            and statistics.expected(words, size) < EMPTY_STEP_ROWS
        ):
            if counts is not None:
                counts["predicted_empty"] += 1
            continue
        groups = list(itertools.combinations(words, size))
        rarer = [g for g in groups if not common.issuperset(g)]
        commoner = [g for g in groups if common.issuperset(g)]
        parts = [part for part in (rarer, commoner) if part]
        if counts is not None and len(parts) == 2:
            counts["split"] += 1
        for part in parts:
            clauses = [" & ".join(_tsquery_term(w) for w in group) for group in part]
            if size == 1:
                steps.append(" | ".join(clauses))
            else:
                steps.append(" | ".join(f"({clause})" for clause in clauses))
    return steps


def text_ranking(lexemes: list[str]) -> str:
    """The tsquery a plain query's candidates are ranked against: the OR of the words
    ``text_ladder`` keeps."""
    return " | ".join(_tsquery_term(w) for w in _ladder_words(lexemes))


_WORD_STATISTICS = sql(
    """
    SELECT CAST(CAST(s.most_common_elems AS text) AS text[]) AS lexemes,
           s.most_common_elem_freqs AS shares, c.reltuples AS rows
    FROM pg_stats s
    JOIN pg_namespace n ON n.nspname = s.schemaname
    JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename
    WHERE s.schemaname = current_schema() AND s.tablename = 'memories' AND s.attname = 'tsv'
    """
)
# Queries are folded as the stored words are (``vigil_fold``: NFKC, Unicode lower case).
_LEXEMES = sql("SELECT tsvector_to_array(to_tsvector('english', vigil_fold(:text)))")
_WEBSEARCH = sql("SELECT CAST(websearch_to_tsquery('english', vigil_fold(:text)) AS text)")

_TEXT_SEARCH_ROWS = sql(
    f"""
    SELECT s.id, s.rank_cd, s.level, {_RECALLED_COLUMNS.lstrip(", ")}
    FROM vigil_memory_text_search(
        CAST(:levels AS tsquery[]), CAST(:ranking AS tsquery), :kinds, :since, :until,
        :live_only, :n, :cap) WITH ORDINALITY AS s(id, rank_cd, level, found)
    JOIN memories m ON m.id = s.id AND m.agent_id = :agent_id
    ORDER BY s.found
    """
).bindparams(
    # Typed once here: a statement built per call is compiled per call.
    bindparam("levels", type_=ARRAY(String)),
    bindparam("kinds", type_=ARRAY(String)),
    bindparam("since", type_=DateTime(timezone=True)),
    bindparam("until", type_=DateTime(timezone=True)),
)


_LIVE_IDS = sql(
    """
    SELECT id FROM memories WHERE agent_id = :agent_id AND id = ANY(:ids)
    AND forgotten_at IS NULL AND superseded_by IS NULL
    """
).bindparams(bindparam("ids", type_=ARRAY(BigInteger)))


_LIVE_BOUNDED = sql(
    "SELECT live, blocked FROM vigil_live_memories(CAST(:ids AS bigint[]), "
    "CAST(:lock_ms AS integer))"
)


async def live_memories_bounded(
    db: Statements, ids: list[int], lock_ms: int | None
) -> set[int] | None:
    """Which of ``ids`` are live memories of the agent ``db`` acts for, waiting on a lock
    (DDL, ``LOCK TABLE``) at most ``lock_ms`` (``vigil_live_memories``, migration
    20261202_18: PostgreSQL bounds the wait, nothing is cancelled from the client); None
    when that bound was passed."""
    row = (await db.execute(_LIVE_BOUNDED, {"ids": ids, "lock_ms": lock_ms})).mappings().one()
    return None if row["blocked"] else set(row["live"])


_AGENT_COUNT = sql("SELECT count(*) FROM memories WHERE agent_id = :agent_id AND dim = :dim")
