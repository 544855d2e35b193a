"""``GET /v1/me``: who the presented token acts for (a client checks its token with it)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from vigil.workers.api.auth import Reader

router = APIRouter(tags=["access"])


class Me(BaseModel):
    token_id: str
    owner: str
    """Recorded as the actor of every human action taken with this token."""
    scope: str
    agents: list[str] | None
    """The agents the token covers; null for all."""


@router.get("/me", response_model=Me, summary="The token's owner, scope and agents")
async def me(who: Reader) -> Me:
    return Me(
        token_id=who.token_id,
        owner=who.owner,
        scope=who.scope.label,
        agents=sorted(who.agents) if who.agents is not None else None,
    )
