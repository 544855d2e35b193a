"""Every error the API returns is JSON: ``{"error": {"code": ..., "message": ...}}``.

Codes are stable strings a program can branch on; messages are for people. Bad input is a
4xx, never a 500: a 500 means a defect in vigil and says nothing about the request.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from asyncpg.exceptions import PostgresError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DataError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from temporalio.service import RPCError

from vigil.activities.failures import outage_of
from vigil.workers.client import (
    BadArgument,
    Forbidden,
    NotFound,
    NotRecordedYet,
    NotTakenYet,
    NoWorker,
    Refused,
    SessionIdTaken,
    UnknownAgent,
    UnknownSchedule,
    UnknownSession,
    Unreachable,
    VigilError,
)
from vigil.workers.db import POOL_WAIT_SECONDS
from vigil.workers.liveness import is_unreachable, temporal_down

log = logging.getLogger("vigil.api")

FASTAPI_BODY_UNREAD = "There was an error parsing the body"
"""What FastAPI says of a JSON body it could not decode (bytes that are not UTF-8, or
nesting deeper than the decoder's recursion allows: the cause says which)."""
TOO_DEEP_BODY = "the body's JSON nests too deeply to be read"
"""How every route refuses a JSON body too deep to read."""
NOT_UTF8_BODY = "the body is not UTF-8, as JSON must be"
"""How every route refuses a JSON body that is not UTF-8 (bytes that are not, or UTF-16
or UTF-32 text)."""


def unreadable_json(cause: BaseException | None) -> str:
    """What is wrong with a JSON body the decoder gave up on, by the decoder's error."""
    if isinstance(cause, RecursionError):
        return TOO_DEEP_BODY
    if isinstance(cause, UnicodeDecodeError):
        return NOT_UTF8_BODY
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        # Python's guard against quadratic int parsing (4,300 digits by default).
        return f"a number in the body has more than {sys.get_int_max_str_digits()} digits"
    if isinstance(cause, ValueError):
        return f"the body is not valid JSON: {cause}"
    return "the body could not be read as JSON"


# Stable error codes (clients branch on these; never rename one).
UNAUTHENTICATED = "unauthenticated"
INVALID_TOKEN = "invalid_token"
BAD_SIGNATURE = "bad_signature"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
UNKNOWN_SESSION = "unknown_session"
UNKNOWN_SCHEDULE = "unknown_schedule"
UNKNOWN_AGENT = "unknown_agent"
NOT_RECORDED_YET = "not_recorded_yet"
CONFLICT = "conflict"
REFUSED = "refused"
MALFORMED = "malformed_request"
INVALID = "invalid_request"
INVALID_AGENT = "invalid_agent_definition"
UNSUPPORTED_MEDIA = "unsupported_media_type"
TOO_LARGE = "payload_too_large"
RANGE_NOT_SATISFIABLE = "range_not_satisfiable"
METHOD_NOT_ALLOWED = "method_not_allowed"
TOO_MANY_STREAMS = "too_many_streams"
UNAVAILABLE = "unavailable"
NO_WORKER = "no_worker"
"""No worker polls the session's task queue: start one (the message says how)."""
INTERNAL = "internal_error"


class ErrorBody(BaseModel):
    code: str
    """A stable code, e.g. ``unknown_session``."""
    message: str
    """What went wrong, for a person."""
    details: list[dict[str, Any]] | None = None
    """For ``invalid_request``: where each problem is and what it is."""


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorBody


class ApiError(Exception):
    """Raised by routes for a response with a status and a stable code."""

    def __init__(
        self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    if status == 422 and details is None:
        # Every 422 says where and what, as a refused field does: a check of vigil's
        # after the request was parsed (an unknown kind, a subject too long in bytes)
        # names no field, so its message is the one problem.
        details = [{"loc": [], "msg": message, "type": "value_error"}]
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=details))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def api_error_response(exc: ApiError) -> JSONResponse:
    """The response of an ``ApiError`` (a 401 carries the bearer challenge)."""
    bearer = exc.status == 401 and exc.code != BAD_SIGNATURE
    headers = {"WWW-Authenticate": "Bearer"} if bearer else None
    return error_response(exc.status, exc.code, exc.message, details=exc.details, headers=headers)


def vigil_status(exc: VigilError) -> tuple[int, str]:
    # Most specific first: NotRecordedYet is an UnknownSession is a NotFound.
    table: list[tuple[type[VigilError], int, str]] = [
        (NoWorker, 409, NO_WORKER),
        (NotTakenYet, 409, NO_WORKER),
        (Forbidden, 403, FORBIDDEN),
        (NotRecordedYet, 404, NOT_RECORDED_YET),
        (UnknownSession, 404, UNKNOWN_SESSION),
        (UnknownSchedule, 404, UNKNOWN_SCHEDULE),
        (UnknownAgent, 404, UNKNOWN_AGENT),
        (NotFound, 404, NOT_FOUND),
        (Refused, 409, REFUSED),
        (SessionIdTaken, 409, CONFLICT),
        (BadArgument, 422, INVALID),
        (Unreachable, 503, UNAVAILABLE),
    ]
    for kind, status, code in table:
        if isinstance(exc, kind):
            return status, code
    return 400, INVALID


def vigil_message(exc: VigilError) -> str:
    """What the API tells of ``exc``: whose session holds a taken id is not said (a token
    may be scoped to other agents; a trigger's sender has no say in it)."""
    return exc.message(reveal=False) if isinstance(exc, SessionIdTaken) else str(exc)


def _read_as_json(content_type: str) -> bool:
    """Whether FastAPI reads a body of this type as JSON (``application/json`` or a
    ``+json`` type; ``text/json`` is not)."""
    mime = content_type.split(";")[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


def _body_unread(errors: list[Any]) -> bool:
    """Whether the route's JSON body was not there to read (missing, or not an object
    because it came as something other than JSON)."""
    return any(
        tuple(e.get("loc", ()))[:1] == ("body",)
        and e.get("type") in ("missing", "model_attributes_type", "dict_type")
        and len(tuple(e.get("loc", ()))) == 1
        for e in errors
    )


def _details(errors: Any) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        out.append(
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
        )
    return out


def _away(request: Request, exc: BaseException) -> str | None:
    """What a failure says is away (PostgreSQL, the object store, Temporal), in the line a
    503 carries; None when it is anything else."""
    if isinstance(exc, PoolTimeout):
        # Every connection of the API's pool stayed in use past the pool's wait (a burst
        # past api_db_pool_size, long exports): PostgreSQL itself answers.
        size = request.app.state.settings.api_db_pool_size
        return (
            f"all {size} of the API's PostgreSQL connections (api_db_pool_size) stayed in "
            f"use for {POOL_WAIT_SECONDS} s; try again shortly"
        )
    outage = outage_of(exc)
    if outage is not None:
        return outage.message  # it names the part
    if is_unreachable(exc):  # as the client's plain_errors says it
        return temporal_down(request.app.state.settings.endpoints().temporal_address)
    return None


CallerRefusal = Callable[[Request], Awaitable[ApiError | None]]
"""The refusal of a request's caller by its route (``auth.caller_refusal``)."""


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _methods_of_path(request: Request) -> list[str]:
    """Every method some route serves at the request's path (each asked of the routes as
    a request of it: included routers nest theirs)."""
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.router.routes
        )
    ]


def install(app: FastAPI, caller_refusal: CallerRefusal) -> None:
    """Register the handlers that turn every failure into the one error shape. A body
    that could not be read is refused only once ``caller_refusal`` admitted the caller
    (its route reads it before it asks who the caller is)."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return api_error_response(exc)

    async def _caller_first(request: Request) -> JSONResponse | None:
        """The refusal of the caller, asked before a body is refused. A part that is away
        (PostgreSQL, for the token) raises to its own handler: 503, as on the route
        (``test_postgres_away_is_a_503``)."""
        refused = await caller_refusal(request)
        return None if refused is None else api_error_response(refused)

    @app.exception_handler(VigilError)
    async def _vigil_error(_: Request, exc: VigilError) -> JSONResponse:
        status, code = vigil_status(exc)
        return error_response(status, code, vigil_message(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        broken = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if broken is not None:
            if (refused := await _caller_first(request)) is not None:
                return refused
            why = (broken.get("ctx") or {}).get("error")
            at = broken.get("loc", ())[-1:]
            where = f" at character {at[0]}" if at and isinstance(at[0], int) else ""
            said = f": {why}{where}" if why else " (UTF-8)"
            return error_response(400, MALFORMED, f"the body is not valid JSON{said}")
        sent = request.headers.get("content-type", "")
        has_body = request.headers.get("content-length", "0") != "0" or (
            "transfer-encoding" in request.headers
        )
        if has_body and _body_unread(errors) and not _read_as_json(sent):
            # A JSON route's body sent as a form (`curl -d`) or without a type is not read
            # at all: say what it takes rather than that the body is not an object.
            return error_response(
                415,
                UNSUPPORTED_MEDIA,
                f"the body must be JSON, sent with Content-Type: application/json "
                f"(it came as {sent.split(';')[0] or 'no type'})",
            )
        details = _details(errors)
        first = details[0] if details else {"loc": [], "msg": "invalid"}
        where = ".".join(p for p in first["loc"] if p != "body") or "request"
        return error_response(422, INVALID, f"{where}: {first['msg']}", details=details)

    @app.exception_handler(ValidationError)
    async def _invalid_model(_: Request, exc: ValidationError) -> JSONResponse:
        details = _details(exc.errors())
        first = details[0] if details else {"loc": [], "msg": "invalid"}
        where = ".".join(first["loc"]) or "request"
        return error_response(422, INVALID, f"{where}: {first['msg']}", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: NOT_FOUND, 405: METHOD_NOT_ALLOWED, 413: TOO_LARGE}.get(
            exc.status_code, MALFORMED if exc.status_code < 500 else INTERNAL
        )
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == FASTAPI_BODY_UNREAD:
            if (refused := await _caller_first(request)) is not None:
                return refused
            detail = unreadable_json(exc.__cause__)
        headers = exc.headers
        if exc.status_code == 405 and (allowed := _methods_of_path(request)):
            # Starlette names the methods of the first route at the path alone (POST for
            # /sessions, which serves GET too).
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
            detail = f"{request.method} is not allowed here: {', '.join(allowed)}"
        return error_response(exc.status_code, code, detail, headers=headers)

    @app.exception_handler(DataError)
    async def _out_of_range(_: Request, exc: DataError) -> JSONResponse:
        # A value the database cannot hold (a number past its column's range, say) that
        # slipped past the request model: the caller's input, not a defect to hide.
        return error_response(422, INVALID, "a value is out of range for vigil's record")

    async def _maybe_away(request: Request, exc: Exception) -> JSONResponse:
        # Registered by type, not as the catch-all below: Starlette sends the catch-all's
        # answer and raises again, which drops the client's kept-alive connection.
        away = _away(request, exc)
        if away is None:
            raise exc  # to the catch-all: a 500
        log.warning("%s %s: %s", request.method, request.url.path, away)
        return error_response(503, UNAVAILABLE, away)

    for kind in (OSError, RuntimeError, SQLAlchemyError, RPCError, PostgresError):
        app.add_exception_handler(kind, _maybe_away)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(500, INTERNAL, "internal error (logged by the API)")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Malformed request",
        401: "Missing, unknown, expired or revoked token",
        403: "The token's scope or agents do not cover this",
        404: "Not found",
        409: "Refused in the current state",
        413: "Body too large",
        415: "A JSON body sent with another Content-Type",
        422: "Invalid request: a value, or a query parameter the route does not take",
        503: "A server vigil needs is unreachable",
    }.items()
}
"""Declared on every route so the OpenAPI document names the error shape."""
