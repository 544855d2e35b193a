"""Bearer-token authentication and scope checks, as FastAPI dependencies.

``Depends(require(Scope.CONTROL))`` gives a route the request's :class:`Principal` or
answers 401 (no token, or not a live one) / 403 (the token's scope is too small) / 400
(two Authorization headers).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from vigil.workers.api import strict_query
from vigil.workers.api.errors import (
    FORBIDDEN,
    INVALID_TOKEN,
    MALFORMED,
    UNAUTHENTICATED,
    ApiError,
)
from vigil.workers.api.limits import held_refusal
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
        who = await _admit(request, credentials.credentials if credentials else None, scope)
        request.state.principal = who
        _refuse_held_body(request)
        strict_query.refuse_deferred(request)
        return who

    setattr(principal, _NEEDS, scope)
    return strict_query.gate(principal)


_NEEDS = "_vigil_needs_scope"
"""The scope a route's token check (``require``) admits, kept on the check."""


async def _admit(request: Request, token: str | None, scope: Scope) -> Principal:
    """The caller presenting ``token``, if it is a live token of ``scope`` or more; else
    the ApiError that refuses it."""
    sent = len(request.headers.getlist("authorization"))
    if sent > 1:
        # Which one counts would depend on the server in front of us: refuse both.
        raise ApiError(400, MALFORMED, f"send one Authorization header; this request has {sent}")
    if not token:
        raise ApiError(401, UNAUTHENTICATED, "send a token: Authorization: Bearer vgl_...")
    who = await tokens_of(request).verify(token)
    if who is None:
        raise ApiError(401, INVALID_TOKEN, "the token is unknown, expired or revoked")
    if not who.may(scope):
        raise ApiError(
            403,
            FORBIDDEN,
            f"this needs {scope.with_article} token; this one is {who.scope.label}",
        )
    return who


def _needs(route: APIRoute) -> Scope | None:
    """The token scope ``route`` admits; None when it checks no token."""
    pending = [route.dependant]
    while pending:
        current = pending.pop(0)
        needs = getattr(current.call, _NEEDS, None)
        if isinstance(needs, Scope):
            return needs
        pending.extend(current.dependencies)
    return None


async def caller_refusal(request: Request) -> ApiError | None:
    """The refusal of the caller (401, 403) by the route ``request`` was routed to, when
    it checks a token and this caller's does not pass; None otherwise. Asked before a
    body the route could not read is refused (FastAPI reads it before the route's checks
    run), so that only a caller the route admits hears what is wrong with its body."""
    route = request.scope.get("route")
    needs = _needs(route) if isinstance(route, APIRoute) else None
    if needs is None:
        return None
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    try:
        await _admit(request, token if scheme.lower() == "bearer" else None, needs)
    except ApiError as exc:
        return exc
    return None


def _refuse_held_body(request: Request) -> None:
    held = held_refusal(request.state)
    if held is not None:
        status, code, message = held
        raise ApiError(status, code, message)


async def refuse_held_body(request: Request) -> None:
    """A dependency of every route: the refusal of the request's body the body checks
    held (``limits.HELD``), raised here on a route that checks no token, and by the token
    check once it admitted the caller on one that does."""
    route = request.scope.get("route")
    if not (isinstance(route, APIRoute) and _needs(route) is not None):
        _refuse_held_body(request)


def check_agent(who: Principal, agent_id: str) -> None:
    """403 unless the token covers ``agent_id`` (for requests that name the agent)."""
    if not who.sees_agent(agent_id):
        raise ApiError(403, FORBIDDEN, f"this token does not cover agent {agent_id!r}")


Reader = Annotated[Principal, Depends(require(Scope.READ))]
Controller = Annotated[Principal, Depends(require(Scope.CONTROL))]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
