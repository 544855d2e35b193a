"""A session's artifacts: list, download (streamed, with ``Range``), upload (streamed).

Downloads carry ``ETag`` (the sha256), ``Content-Length`` and ``Accept-Ranges``; one
byte range gives 206 with ``Content-Range``, a range past the end 416. Uploads stream
from the request into the store (never held in memory) up to ``api_max_upload_bytes``.
A session the token's agents do not cover is answered as if absent (404).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from vigil.activities.artifacts.registry import (
    DEFAULT_MIME,
    MAX_NAME_CHARS,
    MEDIA_TYPE,
    ArtifactRef,
    is_media_type,
    type_of_name,
)
from vigil.activities.record.store import SessionRow
from vigil.workers.api import urls as _urls  # noqa: F401 - {x:text} in the paths below
from vigil.workers.api.auth import Controller, Reader
from vigil.workers.api.deps import SessionId, visible_session
from vigil.workers.api.errors import (
    INVALID,
    MALFORMED,
    RANGE_NOT_SATISFIABLE,
    TOO_LARGE,
    UNSUPPORTED_MEDIA,
    ApiError,
    ErrorResponse,
    error_response,
)
from vigil.workers.artifacts import ArtifactService, UploadTooLarge
from vigil.workers.client import VigilClient
from vigil.workers.tokens import Principal

router = APIRouter(tags=["artifacts"])

ArtifactName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_NAME_CHARS,
        description="The artifact's name (may hold slashes; it is a label, never a path)",
    ),
]


_FORM = "application/x-www-form-urlencoded"
"""What ``curl --data-binary`` sends when told no type; an artifact is never a form."""
_RANGE = re.compile(r"bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)", re.IGNORECASE)
_BINARY: dict[str, Any] = {"schema": {"type": "string", "format": "binary"}}


class ArtifactOut(BaseModel):
    session_id: str
    name: str
    sha256: str
    size: int
    mime_type: str
    created_at: datetime | None
    version: int = 1
    """1 for the name's first bytes, one more each time new bytes were written over it;
    ``GET .../artifacts/{name}?version=N`` downloads an earlier one."""


class ArtifactList(BaseModel):
    items: list[ArtifactOut]


def _client(request: Request) -> VigilClient:
    client: VigilClient = request.app.state.client
    return client


def _service(request: Request) -> ArtifactService:
    service: ArtifactService | None = getattr(request.app.state, "artifacts", None)
    if service is None:
        service = ArtifactService(_client(request))
        request.app.state.artifacts = service
    return service


def _out(ref: ArtifactRef, version: int) -> ArtifactOut:
    return ArtifactOut(
        session_id=ref.session_id,
        name=ref.name,
        sha256=ref.sha256,
        size=ref.size,
        mime_type=ref.mime_type,
        created_at=ref.created_at,
        version=version,
    )


async def _session(request: Request, who: Principal, session_id: str) -> SessionRow:
    return await visible_session(_client(request), who, session_id)


def _position(digits: str) -> str:
    """A range's number, its leading zeros gone and one past any size at most (a number of
    thousands of digits is no error of the client's, and ``int`` refuses it)."""
    digits = digits.lstrip("0") or "0"
    return digits if len(digits) <= 19 else str(1 << 63)


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The one range ``header`` asks of ``size`` bytes as (first, last), inclusive; None
    to send everything (no range, several, or a header we do not read); ValueError when
    it cannot be satisfied."""
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = (_position(n) if n else n for n in match.groups())
    if not first and not last:
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise ValueError("empty suffix range")
        return max(0, size - suffix), size - 1
    start = int(first)
    if last and int(last) < start:
        return None  # syntactically invalid: ignored, as RFC 9110 says
    if start >= size:
        raise ValueError("range starts past the end")
    return start, min(int(last), size - 1) if last else size - 1


@router.get(
    "/sessions/{session_id}/artifacts",
    response_model=ArtifactList,
    summary="A session's artifacts, by name",
)
async def list_artifacts(request: Request, session_id: SessionId, who: Reader) -> ArtifactList:
    row = await _session(request, who, session_id)
    service = _service(request)
    refs = await service.list(row.agent_id, session_id)
    versions = await service.versions(row.agent_id, session_id)
    return ArtifactList(items=[_out(r, versions.get(r.name, 1)) for r in refs])


@router.get(
    "/sessions/{session_id}/artifacts/{name:text}",
    response_class=StreamingResponse,
    summary="Download an artifact (streamed; one byte range with Range)",
    responses={
        200: {"description": "The whole artifact", "content": {"*/*": _BINARY}},
        206: {"description": "The requested byte range", "content": {"*/*": _BINARY}},
        304: {"description": "Not modified (If-None-Match names the ETag)"},
        416: {"model": ErrorResponse, "description": "The range is past the end"},
    },
)
async def download_artifact(
    request: Request,
    session_id: SessionId,
    name: ArtifactName,
    who: Reader,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    """The newest bytes of the name, or its ``version`` (1: the first bytes written under
    it; each write of new bytes over it is the next)."""
    row = await _session(request, who, session_id)
    service = _service(request)
    ref = await service.resolve(row.agent_id, session_id, name, version)
    etag = f'"{ref.sha256}"'
    filename = ref.name.rsplit("/", 1)[-1] or "artifact"
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename, safe='')}",
    }
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    span: tuple[int, int] | None = None
    if wanted is not None and (if_range is None or if_range.strip() == etag):
        try:
            span = byte_range(wanted, ref.size)
        except ValueError:
            return error_response(
                416,
                RANGE_NOT_SATISFIABLE,
                f"the artifact has {ref.size} bytes; range {wanted[:80]!r} is past its end",
                headers={"Content-Range": f"bytes */{ref.size}", **headers},
            )
    # Anything else (quotes, line breaks, kept before uploads were checked) is served as
    # DEFAULT_MIME.
    media = ref.mime_type if MEDIA_TYPE.fullmatch(ref.mime_type) else DEFAULT_MIME
    first, last = span or (0, ref.size - 1)
    headers["Content-Length"] = str(last - first + 1)
    status = 200 if span is None else 206
    if span is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{ref.size}"
    if request.method == "HEAD":
        return Response(status_code=status, media_type=media, headers=headers)
    body = (
        await service.read(ref)
        if span is None
        else await service.read(ref, first, last - first + 1)
    )
    return StreamingResponse(body, status_code=status, media_type=media, headers=headers)


@router.head(
    "/sessions/{session_id}/artifacts/{name:text}",
    response_class=Response,
    summary="An artifact's download headers (size, ETag, type, range), without its bytes",
    responses={
        200: {"description": "The whole artifact's headers", "content": {"*/*": {}}},
        206: {"description": "The requested byte range's headers", "content": {"*/*": {}}},
        304: {"description": "Not modified (If-None-Match names the ETag)"},
        416: {"description": "The range is past the end"},
    },
)
async def artifact_headers(
    request: Request,
    session_id: SessionId,
    name: ArtifactName,
    who: Reader,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    """What ``GET`` answers, without reading the bytes: a client can check an
    artifact's size or ETag before it downloads it."""
    return await download_artifact(request, session_id, name, who, version)


@router.put(
    "/sessions/{session_id}/artifacts/{name:text}",
    response_model=ArtifactOut,
    status_code=201,
    summary="Upload an artifact (streamed; a new version of the session's artifact of that name)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": _BINARY},
        }
    },
    responses={
        413: {"model": ErrorResponse, "description": "Over the upload limit"},
        415: {"model": ErrorResponse, "description": "A multipart form, not the file's bytes"},
    },
)
async def upload_artifact(
    request: Request, session_id: SessionId, name: ArtifactName, who: Controller
) -> ArtifactOut | JSONResponse:
    row = await _session(request, who, session_id)
    limit: int = request.app.state.settings.api_max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return error_response(413, TOO_LARGE, f"the upload is over {limit} bytes")
    sent = request.headers.get("content-type", "").strip()
    base, _, params = sent.partition(";")
    base = base.strip().lower()
    if base == "multipart/form-data":  # the file inside a form, not the file
        return error_response(
            415,
            UNSUPPORTED_MEDIA,
            "send the file's bytes as the body (curl --data-binary @FILE or -T FILE), "
            "not a multipart form",
        )
    # Kept with its parameters (a charset), as it is served again; parameters it cannot
    # serve back as sent (a quoted value) are dropped, as they all were before.
    mime = (
        type_of_name(name)
        if not base or base == _FORM
        else base + ("; " + params.strip() if params.strip() else "")
    )
    if not is_media_type(mime) and is_media_type(base):
        mime = base
    if not is_media_type(mime):
        raise ApiError(422, INVALID, f"Content-Type {sent[:80]!r} is not a media type")
    try:
        ref = await _service(request).upload(
            row.agent_id,
            session_id,
            name,
            aiter(request.stream()),
            mime_type=mime,
            limit=limit,
            by=who.actor,
        )
    except UploadTooLarge as exc:
        return error_response(413, TOO_LARGE, str(exc))
    except ClientDisconnect:  # nothing was linked; nobody is left to read an answer
        return error_response(400, MALFORMED, "the upload ended before its body did")
    return _out(ref, ref.version or 1)  # counted by the write itself (put_artifact)
