"""Personal access tokens: created, listed, revoked and checked in one place, used by the
CLI (`vigil token ...`) and the HTTP API's authentication."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.record import agents as agent_rows
from vigil.activities.record import tokens as token_rows

PREFIX = "vgl"
_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
_TOKEN = re.compile(r"^vgl_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")


class Scope(IntEnum):
    """What a token may do; each scope includes the ones below it."""

    READ = 1
    """See agents, sessions, transcripts, events, memory, artifacts, schedules."""
    CONTROL = 2
    """Also start sessions and act on them: approve, reject, pause, message, cancel..."""
    ADMIN = 3
    """Also apply agents, manage schedules, triggers, webhooks and memory."""

    @classmethod
    def parse(cls, raw: str) -> Scope:
        try:
            return cls[raw.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown scope {raw!r}: use read, control or admin") from None

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def with_article(self) -> str:
        """The label after "a" or "an", as a sentence says it ("an admin", "a read")."""
        return ("an " if self.label[:1] in "aeiou" else "a ") + self.label


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: the token's owner, what it may do, and on which agents."""

    token_id: str
    owner: str
    scope: Scope
    agents: frozenset[str] | None
    """None: every agent."""

    def may(self, needed: Scope) -> bool:
        return self.scope >= needed

    def sees_agent(self, agent_id: str) -> bool:
        return self.agents is None or agent_id in self.agents

    @property
    def actor(self) -> str:
        """The name recorded for human actions taken with this token."""
        return self.owner


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown of a token: never its secret."""

    id: str
    owner: str
    name: str
    scope: str
    agents: list[str] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class NewToken:
    info: TokenInfo
    token: str
    """The whole token, shown once."""


def _digest(secret: str) -> bytes:
    # The secret is 256 random bits, so a plain SHA-256 is enough (no password stretching).
    return hashlib.sha256(secret.encode()).digest()


def _info(row: token_rows.TokenRow) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        owner=row.owner,
        name=row.name,
        scope=row.scope,
        agents=row.agents,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


@dataclass(frozen=True)
class UnknownAgent:
    """An agent a new token names that the record does not know (yet)."""

    agent_id: str
    like: str | None
    """A known agent it reads as (another case, or letters of another script)."""

    def describe(self) -> str:
        said = f"no agent {self.agent_id!r} is known (no definition, no session)"
        foreign = [c for c in self.agent_id if not c.isascii()]
        if foreign:
            c = foreign[0]
            said += f"; it holds U+{ord(c):04X} {unicodedata.name(c, 'an unnamed character')}"
        if self.like is not None:
            said += f"; did you mean {self.like!r}?"
        return said


async def _check_agents(db: async_sessionmaker[DbSession], agents: list[str]) -> None:
    for agent_id in agents:
        if (why := await agent_rows.new_agent_id_problem(db, agent_id)) is not None:
            raise ValueError(why)


async def unknown_agents(
    sessionmaker: async_sessionmaker[DbSession], agents: list[str]
) -> list[UnknownAgent]:
    """The agents of ``agents`` the record does not know, each with the known agent it
    reads as, if one does: an id is matched exactly. ValueError for an id no agent can
    have."""
    await _check_agents(sessionmaker, agents)
    if not agents:
        return []
    async with sessionmaker() as db:
        known = await agent_rows.agent_ids(db)
    exact = set(known)
    read: dict[str, str] = {}
    for k in known:
        read.setdefault(_reads_as(k), k)
    return [
        UnknownAgent(a, read.get(_reads_as(a))) for a in dict.fromkeys(agents) if a not in exact
    ]


def _reads_as(agent_id: str) -> str:
    """What an id reads as: case folded, each letter of another script taken for the
    Latin letter it is named after (CYRILLIC SMALL LETTER O: o)."""
    out = []
    for c in unicodedata.normalize("NFKC", agent_id).casefold():
        if not c.isascii():
            words = unicodedata.name(c, "").split()
            if len(words) >= 2 and words[-2] == "LETTER" and len(words[-1]) == 1:
                c = words[-1].lower()
        out.append(c)
    return "".join(out)


class TokenService:
    """Tokens over the record; the caller hands in a system sessionmaker."""

    def __init__(self, db: async_sessionmaker[DbSession]) -> None:
        self._db = db

    async def create(
        self,
        owner: str,
        *,
        scope: Scope,
        name: str = "",
        agents: list[str] | None = None,
        expires_at: datetime | None = None,
    ) -> NewToken:
        owner = owner.strip()
        if not owner or len(owner) > 200 or "\x00" in owner:
            raise ValueError("the owner must be 1-200 characters")
        if len(name) > 200 or "\x00" in name:
            raise ValueError("the name must be at most 200 characters")
        if agents is not None and not agents:
            # An empty list read as "every agent": a caller that meant some got all.
            raise ValueError("a token names at least one agent, or none for every agent")
        await _check_agents(self._db, agents or [])
        token_id = "".join(
            secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12)
        )
        secret = secrets.token_urlsafe(32)
        async with self._db() as db, db.begin():
            row = await token_rows.insert(
                db,
                token_id=token_id,
                owner=owner,
                name=name,
                secret_sha256=_digest(secret),
                scope=scope.label,
                agents=sorted(set(agents)) if agents else None,
                expires_at=expires_at,
            )
        return NewToken(info=_info(row), token=f"{PREFIX}_{token_id}_{secret}")

    async def list(self, *, include_revoked: bool = False) -> list[TokenInfo]:
        async with self._db() as db:
            return [
                _info(r) for r in await token_rows.list_all(db, include_revoked=include_revoked)
            ]

    async def revoke(self, token_id: str) -> bool:
        async with self._db() as db, db.begin():
            if await token_rows.get(db, token_id) is None:
                raise LookupError(f"no token {token_id!r}")
            return await token_rows.revoke(db, token_id)

    async def verify(self, token: str) -> Principal | None:
        """The principal a presented token stands for, or None when it is not a live token."""
        match = _TOKEN.fullmatch(token.strip())
        if match is None:
            return None
        token_id, secret = match.groups()
        async with self._db() as db, db.begin():
            row = await token_rows.get(db, token_id)
            if row is None or not hmac.compare_digest(row.secret_sha256, _digest(secret)):
                return None
            if row.revoked_at is not None:
                return None
            if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
                return None
            await token_rows.touch(db, token_id)
        return Principal(
            token_id=row.id,
            owner=row.owner,
            scope=Scope.parse(row.scope),
            agents=frozenset(row.agents) if row.agents is not None else None,
        )
