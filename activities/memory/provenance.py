"""Which embedder an agent's memory vectors come from, and the refusal to mix two.

Every memory records the embedder (name, version, dimensions) that produced its vector,
and ``memory_embedders`` names, per agent, the one embedder its recall compares with
(``active``). A process configured with another embedder is refused, on recall and on
remember alike, with a message naming both and the command that re-embeds the memories
(``vigil memory reindex``), so two vector spaces are never mixed silently. A worker
refuses to start when its embedder is a plain change of settings (no agent's memories come
from it) and names, when it starts, the agents still on another (``check_embedder``).

Every query on ``memory_embedders`` and ``memory_vectors`` lives here and in
``activities.memory.reindex``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.memory.embedders import Embedder
from vigil.activities.record.lean import Statements

DEFAULT_DIM = 384
"""``VIGIL_EMBEDDING_DIM``'s default."""
DEFAULT_VERSION = "1"
"""Version of an embedder that does not declare one."""
MAX_LISTED = 5
"""How many agents a refusal at start names."""


@dataclass(frozen=True)
class EmbedderIdentity:
    """What produced a vector: an embedder's name, version and dimensions."""

    name: str
    version: str
    dim: int

    def __str__(self) -> str:
        return f"{self.name} (version {self.version}, {self.dim} dimensions)"

    def same_space(self, other: EmbedderIdentity) -> bool:
        return (self.name, self.version, self.dim) == (other.name, other.version, other.dim)


def identity_of(embedder: Embedder) -> EmbedderIdentity:
    """The identity an embedder records with its vectors (version ``1`` unless declared)."""
    version = getattr(embedder, "version", DEFAULT_VERSION)
    return EmbedderIdentity(embedder.name, str(version), int(embedder.dim))


def setting_for(name: str) -> str:
    """The ``VIGIL_EMBEDDER`` / ``--embedder`` value that builds the embedder ``name``."""
    for prefix, setting in (("hashing-", "hashing"), ("openai:", "openai"), ("local:", "local")):
        if name.startswith(prefix):
            return setting
    return name


def _dim_is_default(identity: EmbedderIdentity) -> bool:
    return identity.dim == DEFAULT_DIM or identity.name.startswith("local:")


def reindex_command(agent_id: str, target: EmbedderIdentity) -> str:
    """The command that re-embeds ``agent_id``'s memories with ``target``."""
    dim = "" if _dim_is_default(target) else f" --dim {target.dim}"
    return f"vigil memory reindex --agent {agent_id} --embedder {setting_for(target.name)}{dim}"


def environment_for(identity: EmbedderIdentity) -> str:
    """The settings that configure ``identity`` again."""
    dim = "" if _dim_is_default(identity) else f" VIGIL_EMBEDDING_DIM={identity.dim}"
    return f"VIGIL_EMBEDDER={setting_for(identity.name)}{dim}"


class EmbedderMismatch(RuntimeError):
    """The agent's memories come from another embedder than the one configured.

    Not a ``ValueError`` on purpose: a session step that meets it is retried (with
    backoff) until the workers run with the right embedder, it does not fail.
    """

    def __init__(self, agent_id: str, stored: EmbedderIdentity, configured: EmbedderIdentity):
        self.agent_id = agent_id
        self.stored = stored
        self.configured = configured
        super().__init__(
            f"agent {agent_id!r} has memories embedded with {stored}, but this process is "
            f"configured with {configured}; vectors of two embedders cannot be compared. "
            f"Re-embed them with `{reindex_command(agent_id, configured)}`, or configure "
            f"{environment_for(stored)} again"
        )


class EmbedderNotReady(RuntimeError):
    """Worker start refused: some agents' memories come from another embedder."""


_ACTIVE = text(
    """
    SELECT embedder, version, dim FROM memory_embedders
    WHERE agent_id = :agent_id AND state = 'active'
    """
)

ACTIVE_FOR_RECALL = "LEFT JOIN memory_embedders a ON a.agent_id = :agent_id AND a.state = 'active'"
"""Joined to ``(SELECT 1)`` in recall's vector search: the agent's active embedder, read
in the same statement (``a.embedder``, ``a.version``, ``a.dim``; NULL when it has none)."""


_ACTIVE_SETTING_EF = text(
    "SELECT a.embedder, a.version, a.dim, set_config('hnsw.ef_search', :ef, true) AS ef "
    f"FROM (SELECT 1) AS one {ACTIVE_FOR_RECALL}"
)

ACTIVE_SHARED_SQL = """
    SELECT embedder, version, dim FROM memory_embedders
    WHERE agent_id = :agent_id AND state = 'active'
    FOR SHARE
    """
"""The agent's active embedder, share-locked (a part of other statements too)."""
_ACTIVE_SHARED = text(ACTIVE_SHARED_SQL)

_ADOPT = text(
    """
    INSERT INTO memory_embedders (agent_id, embedder, version, dim, state, activated_at)
    VALUES (:agent_id, :embedder, :version, :dim, 'active', now())
    ON CONFLICT DO NOTHING
    """
)

_OTHERS = text(
    """
    SELECT agent_id, embedder, version, dim FROM memory_embedders
    WHERE state = 'active' AND (embedder, version, dim) <> (:embedder, :version, :dim)
    ORDER BY agent_id
    """
)


async def active_embedder(db: DbSession, agent_id: str) -> EmbedderIdentity | None:
    """The agent's active embedder, or None when it has none yet (no memories)."""
    row = (await db.execute(_ACTIVE, {"agent_id": agent_id})).one_or_none()
    return EmbedderIdentity(row.embedder, row.version, row.dim) if row is not None else None


def require_identity(
    agent_id: str,
    configured: EmbedderIdentity,
    embedder: str | None,
    version: str | None,
    dim: int | None,
) -> None:
    """Refuse recall when the agent's active embedder (as read; None: it has none yet) is
    not ``configured``."""
    if embedder:
        stored = EmbedderIdentity(embedder, str(version), int(dim or 0))
        if not stored.same_space(configured):
            raise EmbedderMismatch(agent_id, stored, configured)


async def require_for_recall(
    db: Statements, agent_id: str, configured: EmbedderIdentity, *, ef_search: int
) -> None:
    """Refuse recall when the agent's memories come from another embedder; the same
    statement sets ``hnsw.ef_search`` for the rest of the transaction (recall's vector
    search follows it: one round trip fewer)."""
    row = (
        await db.execute(_ACTIVE_SETTING_EF, {"agent_id": agent_id, "ef": str(int(ef_search))})
    ).one()
    require_identity(agent_id, configured, row.embedder, row.version, row.dim)


async def require_for_write(
    db: Statements,
    agent_id: str,
    configured: EmbedderIdentity,
    *,
    active: EmbedderIdentity | None = None,
) -> None:
    """Refuse a write of a vector from another embedder than the agent's; an agent without
    one adopts ``configured``. The active row stays share-locked until the transaction
    ends, so a reindex cannot switch the agent between this check and the insert.
    ``active``: the agent's active embedder, read already in this transaction with
    ``ACTIVE_SHARED_SQL`` (share-locked so): checked without a statement.
    """
    if active is not None:
        if not active.same_space(configured):
            raise EmbedderMismatch(agent_id, active, configured)
        return
    params = {"agent_id": agent_id}
    row = (await db.execute(_ACTIVE_SHARED, params)).one_or_none()
    if row is None:
        await db.execute(
            _ADOPT,
            {
                **params,
                "embedder": configured.name,
                "version": configured.version,
                "dim": configured.dim,
            },
        )
        row = (await db.execute(_ACTIVE_SHARED, params)).one()
    stored = EmbedderIdentity(row.embedder, row.version, row.dim)
    if not stored.same_space(configured):
        raise EmbedderMismatch(agent_id, stored, configured)


async def agents_on_other_embedders(
    sessionmaker: async_sessionmaker[DbSession], configured: EmbedderIdentity
) -> list[tuple[str, EmbedderIdentity]]:
    """Every agent whose active embedder is not ``configured`` (system work, all agents)."""
    async with sessionmaker() as db:
        rows = await db.execute(
            _OTHERS,
            {"embedder": configured.name, "version": configured.version, "dim": configured.dim},
        )
        return [(r.agent_id, EmbedderIdentity(r.embedder, r.version, r.dim)) for r in rows]


async def check_embedder(
    sessionmaker: async_sessionmaker[DbSession], embedder: Embedder
) -> list[tuple[str, EmbedderIdentity]]:
    """Refuse to start when the configured embedder is a plain change of settings: agents
    have memories, none of them from this embedder. When some agents are on it and others
    not (a reindex rolled out agent by agent), start, and return the others: each of them
    is refused on its own recall and remember, with the command that re-embeds it."""
    configured = identity_of(embedder)
    others = await agents_on_other_embedders(sessionmaker, configured)
    if not others or await _any_agent_on(sessionmaker, configured):
        return others
    listed = "; ".join(f"{agent} has {stored}" for agent, stored in others[:MAX_LISTED])
    more = f" and {len(others) - MAX_LISTED} more" if len(others) > MAX_LISTED else ""
    agent, stored = others[0]
    raise EmbedderNotReady(
        f"the configured embedder is {configured}, but no agent's memories come from it and "
        f"{len(others)} agent(s) have memories from another: {listed}{more}. Re-embed each "
        f"with `{reindex_command(agent, configured)}` (per agent), or configure "
        f"{environment_for(stored)} again"
    )


_ON = text(
    """
    SELECT EXISTS (SELECT 1 FROM memory_embedders WHERE state = 'active'
                   AND (embedder, version, dim) = (:embedder, :version, :dim))
    """
)


async def _any_agent_on(
    sessionmaker: async_sessionmaker[DbSession], configured: EmbedderIdentity
) -> bool:
    async with sessionmaker() as db:
        found = await db.execute(
            _ON, {"embedder": configured.name, "version": configured.version, "dim": configured.dim}
        )
        return bool(found.scalar())
