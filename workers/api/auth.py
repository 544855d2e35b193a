"""Bearer-token authentication and scope checks, as FastAPI dependencies.

``Depends(require(Scope.CONTROL))`` gives a route the request's :class:`Principal` or
answers 401 (no token, or not a live one) / 403 (the token's scope is too small) / 400
(two Authorization headers).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vigil.workers.api import strict_query
from vigil.workers.api.errors import (
    FORBIDDEN,
    INVALID_TOKEN,
    MALFORMED,
    UNAUTHENTICATED,
    ApiError,
)
from vigil.workers.tokens import Principal, Scope, TokenService

_bearer = HTTPBearer(auto_error=False, description="A personal access token (`vigil token create`)")


def tokens_of(request: Request) -> TokenService:
    service: TokenService = request.app.state.tokens
    return service


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting tokens of ``scope`` or more."""

    async def principal(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        sent = len(request.headers.getlist("authorization"))
        if sent > 1:
            # Which one counts would depend on the server in front of us: refuse both.
            raise ApiError(
                400, MALFORMED, f"send one Authorization header; this request has {sent}"
            )
        if credentials is None or not credentials.credentials:
            raise ApiError(401, UNAUTHENTICATED, "send a token: Authorization: Bearer vgl_...")
        who = await tokens_of(request).verify(credentials.credentials)
        if who is None:
            raise ApiError(401, INVALID_TOKEN, "the token is unknown, expired or revoked")
        if not who.may(scope):
            raise ApiError(
                403,
                FORBIDDEN,
                f"this needs {scope.with_article} token; this one is {who.scope.label}",
            )
        request.state.principal = who
        strict_query.refuse_deferred(request)
        return who

    return strict_query.gate(principal)


def check_agent(who: Principal, agent_id: str) -> None:
    """403 unless the token covers ``agent_id`` (for requests that name the agent)."""
    if not who.sees_agent(agent_id):
        raise ApiError(403, FORBIDDEN, f"this token does not cover agent {agent_id!r}")


Reader = Annotated[Principal, Depends(require(Scope.READ))]
Controller = Annotated[Principal, Depends(require(Scope.CONTROL))]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
