"""Agents: list, show, versions, and apply a definition (``vigil agent apply`` over HTTP).

``POST /agents`` takes the text of an agent file, TOML or YAML by its content type
(``application/toml``, ``application/yaml``), or JSON: ``{"text": ..., "format": ...}``
or ``{"spec": {...}}``. It is validated and stored exactly as `vigil agent apply` does
a file (workers/agents.py): problems come back as 422 ``invalid_agent_definition`` with
one detail per problem and its line; an unchanged definition adds no version (200), a
changed one adds the next (201).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from vigil.workers.agents import (
    AgentError,
    AgentNotFound,
    AgentService,
    AgentVersionInfo,
    InvalidAgentFiles,
    applying_service,
)
from vigil.workers.api.auth import Admin, Reader, check_agent
from vigil.workers.api.deps import Client, RequestBody
from vigil.workers.api.errors import (
    INVALID,
    INVALID_AGENT,
    MALFORMED,
    TOO_DEEP_BODY,
    UNKNOWN_AGENT,
    UNSUPPORTED_MEDIA,
    ApiError,
    ErrorResponse,
)
from vigil.workers.models import ConfigError
from vigil.workers.tokens import Principal

if TYPE_CHECKING:
    from vigil.activities.agents.files import LoadedAgent

router = APIRouter(tags=["agents"])

TEXT_TYPES = {
    "application/toml": "toml",
    "text/toml": "toml",
    "text/x-toml": "toml",
    "application/yaml": "yaml",
    "application/x-yaml": "yaml",
    "text/yaml": "yaml",
    "text/x-yaml": "yaml",
}


class AgentSummary(BaseModel):
    name: str
    versions: int
    newest: int
    content_hash: str
    description: str
    updated_at: datetime


class AgentVersionBrief(BaseModel):
    name: str
    version: int
    content_hash: str
    created_at: datetime
    created_by: str | None
    source: str | None


class AgentVersion(AgentVersionBrief):
    spec: dict[str, Any]
    """The definition, as stored (canonical JSON of the file's fields)."""
    tools: list[dict[str, Any]]
    """The tool catalog pinned with this version."""


class ApplyRequest(RequestBody):
    """Give the file's ``text`` (with its ``format``), or the ``spec`` as a JSON object."""

    text: str | None = None
    format: Literal["toml", "yaml", "json"] = "toml"
    spec: dict[str, Any] | None = None
    """Open here on purpose: the definition's fields are checked as a file's are, by the
    agent file's parser, which refuses an unknown one at its line."""


class Applied(BaseModel):
    name: str
    version: int
    content_hash: str
    created: bool
    """False: the definition matched the newest version; nothing was added."""
    warnings: list[str] = []
    """What may keep its sessions from running (a model connection this server does not
    have configured); applied nonetheless."""


def _brief(v: AgentVersionInfo) -> AgentVersionBrief:
    return AgentVersionBrief(
        name=v.name,
        version=v.version,
        content_hash=v.content_hash,
        created_at=v.created_at,
        created_by=v.created_by,
        source=v.source,
    )


def _full(v: AgentVersionInfo) -> AgentVersion:
    return AgentVersion(
        **_brief(v).model_dump(),
        spec=v.spec.model_dump(mode="json"),
        tools=[t.model_dump(mode="json") for t in v.tools],
    )


def _service(client: Client) -> AgentService:
    return AgentService(client.db)


def _not_found(exc: AgentError) -> ApiError:
    return ApiError(404, UNKNOWN_AGENT, str(exc))


def _hidden(who: Principal, name: str) -> None:
    """A token that does not cover the agent sees it as absent: one answer whether the
    agent is defined or not (nothing leaks), and true in both cases (it does not say
    "has no definition" of an agent that has one)."""
    if not who.sees_agent(name):
        raise ApiError(404, UNKNOWN_AGENT, f"no agent {name!r} among those this token covers")


class AgentList(BaseModel):
    items: list[AgentSummary]


class AgentVersions(BaseModel):
    items: list[AgentVersionBrief]
    """Oldest first."""


@router.get("/agents", response_model=AgentList, summary="Every defined agent")
async def list_agents(who: Reader, client: Client) -> AgentList:
    rows = await _service(client).list_agents()
    return AgentList(
        items=[
            AgentSummary(
                name=r.name,
                versions=r.versions,
                newest=r.newest,
                content_hash=r.content_hash,
                description=r.description,
                updated_at=r.updated_at,
            )
            for r in rows
            if who.sees_agent(r.name)
        ]
    )


@router.get("/agents/{name}", response_model=AgentVersion, summary="An agent's newest version")
async def show_agent(name: str, who: Reader, client: Client) -> AgentVersion:
    _hidden(who, name)
    try:
        return _full(await _service(client).show(name))
    except AgentNotFound as exc:
        raise _not_found(exc) from None


@router.get(
    "/agents/{name}/versions",
    response_model=AgentVersions,
    summary="Every version of an agent, oldest first",
)
async def agent_versions(name: str, who: Reader, client: Client) -> AgentVersions:
    _hidden(who, name)
    try:
        return AgentVersions(items=[_brief(v) for v in await _service(client).history(name)])
    except AgentNotFound as exc:
        raise _not_found(exc) from None


@router.get(
    "/agents/{name}/versions/{version}",
    response_model=AgentVersion,
    summary="One version of an agent",
)
async def agent_version(
    name: str,
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],
    who: Reader,
    client: Client,
) -> AgentVersion:
    _hidden(who, name)
    if version < 1:
        raise ApiError(404, UNKNOWN_AGENT, f"agent {name!r} has no version {version}")
    try:
        return _full(await _service(client).show(name, version))
    except AgentNotFound as exc:
        raise _not_found(exc) from None


async def _definition(request: Request) -> tuple[str, str]:
    """(text, format) of the definition in the request body."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    raw = await request.body()
    if media in TEXT_TYPES:
        try:
            return raw.decode("utf-8"), TEXT_TYPES[media]
        except UnicodeDecodeError:
            raise ApiError(400, MALFORMED, "the body is not UTF-8 text") from None
    if media != "application/json":
        raise ApiError(
            415,
            UNSUPPORTED_MEDIA,
            f"send application/json, application/toml or application/yaml, not {media!r}",
        )
    try:
        body = ApplyRequest.model_validate_json(raw)
    except ValidationError as exc:
        broken = [e for e in exc.errors() if e.get("type") == "json_invalid"]
        if broken:
            why = str((broken[0].get("ctx") or {}).get("error", ""))
            if why.startswith("recursion limit exceeded"):
                raise ApiError(400, MALFORMED, TOO_DEEP_BODY) from None  # as every route
            raise ApiError(400, MALFORMED, "the body is not valid JSON (UTF-8)") from None
        raise
    if (body.text is None) == (body.spec is None):
        raise ApiError(422, INVALID, "give exactly one of `text` (with `format`) or `spec`")
    if body.spec is not None:
        return json.dumps(body.spec, indent=2, ensure_ascii=False), "json"
    assert body.text is not None
    return body.text, body.format


_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ApplyRequest.model_json_schema()},
            "application/toml": {"schema": {"type": "string"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


@router.post(
    "/agents",
    response_model=Applied,
    status_code=201,
    summary="Apply an agent definition (a new version when it changed)",
    openapi_extra=_BODY_DOC,
    responses={
        200: {"model": Applied, "description": "Unchanged: the newest version is kept"},
        415: {"model": ErrorResponse, "description": "Not JSON, TOML or YAML"},
    },
)
async def apply_agent(request: Request, who: Admin, client: Client) -> JSONResponse:
    text, kind = await _definition(request)
    try:
        service = applying_service(client.settings, client.db)
        # Parsed on a thread: a large file would hold every other request meanwhile.
        loaded: LoadedAgent = await asyncio.to_thread(service.parse_text, text, kind)
        check_agent(who, loaded.spec.name)
        [applied] = await service.apply_loaded([loaded], by=who.actor)
    except InvalidAgentFiles as exc:
        details = [
            {"loc": [p.field] if p.field else [], "line": p.line, "msg": p.message}
            for error in exc.errors
            for p in error.problems
        ]
        raise ApiError(422, INVALID_AGENT, str(exc), details=details) from None
    except (AgentError, ConfigError) as exc:
        raise ApiError(422, INVALID_AGENT, str(exc)) from None
    body = Applied(
        name=applied.name,
        version=applied.version,
        content_hash=applied.content_hash,
        created=applied.created,
        warnings=applied.warnings,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=201 if applied.created else 200)
