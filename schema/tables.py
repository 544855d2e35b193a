"""SQLAlchemy 2 tables of the session record, memory and artifacts.

The migrations in ``schema/migrations`` are the source of truth for the database;
these mapped classes mirror them for typed queries.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Interval,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSONB, list[Any]: JSONB}


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AgentVersion(Base):
    """One immutable version of an agent's definition (a trigger refuses UPDATE/DELETE)."""

    __tablename__ = "agent_versions"

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column()
    tools: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    source: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Credential(Base):
    """A named secret, encrypted with AES-GCM (the key lives in settings, never here)."""

    __tablename__ = "credentials"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Session(Base):
    """One agent session; its id is the Temporal workflow id."""

    __tablename__ = "sessions"
    # Lists page newest first by (created_at, id): workers/api, activities/record/sessions.py.
    __table_args__ = (
        Index("ix_sessions_created_at_id", "created_at", "id"),
        # One agent's sessions newest first, a page at a time (migration 20261204_21).
        Index("ix_sessions_agent_id_created_at_id", "agent_id", "created_at", "id"),
        # A conversation's sessions by their id's prefix, in any locale (migration
        # 20261204_21; workers/keyed.py).
        Index("ix_sessions_id_prefix", "id", postgresql_ops={"id": "text_pattern_ops"}),
        # The retention sweep's ranges per agent, ended and not archived (migration
        # 20261205_22; activities/record/retention.py).
        Index(
            "ix_sessions_agent_id_finished_at_id",
            "agent_id",
            "finished_at",
            "id",
            postgresql_where=text("finished_at IS NOT NULL"),
        ),
        Index(
            "ix_sessions_unarchived_agent_id_finished_at_id",
            "agent_id",
            "finished_at",
            "id",
            postgresql_where=text("finished_at IS NOT NULL AND archive_uri IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"))
    goal: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32), index=True)
    step: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    run_count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    schedule_id: Mapped[str | None] = mapped_column(String(200), index=True)
    agent_version: Mapped[int | None] = mapped_column(Integer)
    """The agent definition's version the session runs (None: no definition)."""
    tokens_in: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    tokens_out: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cost_usd: Mapped[float] = mapped_column(Numeric(14, 6), default=0, server_default="0")
    summary: Mapped[str | None] = mapped_column(Text)
    archive_uri: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Message(Base):
    """Append-only transcript; (session_id, seq) is the idempotency key."""

    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("session_id", "seq"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(String(200), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(32))
    content: Mapped[str] = mapped_column(Text, default="", server_default="")
    content_enc: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    """0: stored as is; 1: escaped by schema.textcodec (held NUL or lone surrogates)."""
    name: Mapped[str | None] = mapped_column(Text)
    tool_calls: Mapped[list[Any] | None] = mapped_column(JSONB)
    tool_call_id: Mapped[str | None] = mapped_column(Text)
    step: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    tsv: Mapped[Any] = mapped_column(TSVECTOR, server_default=None, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Event(Base):
    """Model calls, tool calls, approvals and human actions; (session_id, key) is unique."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("session_id", "key"),
        # A session's newest event of a kind in one probe, ordered so that no plan walks
        # the primary key backwards for it (migration 20261204_20).
        Index("ix_events_session_id_kind_newest", "session_id", "kind", text("(-id)")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(String(200), index=True)
    key: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    step: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    actor: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Artifact(Base):
    """Content-addressed bytes in the object store; the row follows the durable write."""

    __tablename__ = "artifacts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mime_type: Mapped[str] = mapped_column(Text, default="application/octet-stream")
    storage_uri: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ArtifactHolder(Base):
    """An agent whose work stored these bytes: it may link them and read their row."""

    __tablename__ = "artifact_holders"

    sha256: Mapped[str] = mapped_column(
        ForeignKey("artifacts.sha256", ondelete="CASCADE"), primary_key=True
    )
    agent_id: Mapped[str] = mapped_column(String(200), primary_key=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ArtifactLink(Base):
    """Which agent/session refers to an artifact, under which name."""

    __tablename__ = "artifact_links"
    __table_args__ = (UniqueConstraint("session_id", "name"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(String(200), index=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(ForeignKey("artifacts.sha256"), index=True)
    mime_type: Mapped[str | None] = mapped_column(Text)
    """The type the session gave this name (None, from before it was kept: the content's)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Memory(Base):
    """Long-term memory: an embedding (any dimension, stored in ``dim``) and a tsvector."""

    __tablename__ = "memories"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(Text)
    subject_key: Mapped[str | None] = mapped_column(Text)
    """The subject in NFKC form, case-folded, for matching (``activities.memory.values``)."""
    content: Mapped[str] = mapped_column(Text)
    importance: Mapped[float] = mapped_column(Float, default=0.5, server_default="0.5")
    dim: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[Any] = mapped_column(Vector())
    embedder: Mapped[str] = mapped_column(Text)
    """Name of the embedder that produced ``embedding`` (provenance)."""
    embedder_version: Mapped[str] = mapped_column(Text)
    tsv: Mapped[Any] = mapped_column(TSVECTOR, nullable=True)
    source_session_id: Mapped[str | None] = mapped_column(String(200))
    superseded_by: Mapped[int | None] = mapped_column(ForeignKey("memories.id"))
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    forgotten_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """Set when a person forgot the memory: kept for history, never recalled again."""
    forgotten_by: Mapped[str | None] = mapped_column(Text)
    forget_reason: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class MemoryEmbedder(Base):
    """Per agent: the embedder its recall compares with (``active``), one being built by a
    reindex (``building``, with progress) and earlier ones (``retired``)."""

    __tablename__ = "memory_embedders"

    agent_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    embedder: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[str] = mapped_column(Text, primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MemoryVector(Base):
    """A vector of a reindex in progress, beside the live one until the switch."""

    __tablename__ = "memory_vectors"

    memory_id: Mapped[int] = mapped_column(
        ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True
    )
    agent_id: Mapped[str] = mapped_column(String(200))
    embedder: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[str] = mapped_column(Text, primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[Any] = mapped_column(Vector())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ErasureReceipt(Base):
    """What an erasure removed, when and at whose request: all it leaves behind."""

    __tablename__ = "erasure_receipts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    subject_kind: Mapped[str] = mapped_column(String(16))
    """``session`` or ``agent``."""
    subject_id: Mapped[str] = mapped_column(String(200), index=True)
    requested_by: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    erased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")


class RetentionPolicy(Base):
    """How long an agent's ended sessions stay hot (archive) and stay at all (erase)."""

    __tablename__ = "retention_policies"

    agent_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    archive_after: Mapped[timedelta | None] = mapped_column(Interval)
    erase_after: Mapped[timedelta | None] = mapped_column(Interval)
    updated_by: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class MemoryWrite(Base):
    """The result of a keyed memory write; a retried write returns it (idempotency)."""

    __tablename__ = "memory_writes"

    agent_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    write_key: Mapped[str] = mapped_column(Text, primary_key=True)
    session_id: Mapped[str | None] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    memory_id: Mapped[int] = mapped_column(
        ForeignKey("memories.id", ondelete="CASCADE"), index=True
    )
    action: Mapped[str] = mapped_column(String(16))
    similarity: Mapped[float | None] = mapped_column(Float)
    superseded_ids: Mapped[list[int]] = mapped_column(
        ARRAY(BigInteger), default=list, server_default="{}"
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
