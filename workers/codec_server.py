"""`vigil codec-server`: Temporal's remote codec protocol over HTTP, for Temporal UI and the
``temporal`` CLI to show an authorised operator decrypted payloads.

``POST /decode`` and ``POST /encode`` take and return ``{"payloads": [...]}`` (the JSON form
of ``temporal.api.common.v1.Payloads``). Every call needs the access token, either as
``Authorization: Bearer <token>`` (``temporal ... --codec-auth "Bearer <token>"``) or, for a
browser UI that cannot add a header, in the path: ``/t/<token>/decode``. CORS admits the
Temporal UI's origin only (plus ``VIGIL_CODEC_CORS_ORIGINS``).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from vigil.workers.codec import PayloadKeyError
from vigil.workers.settings import Settings

MAX_BODY_BYTES = 64 * 1024 * 1024
"""A history page of payloads fits well below this; anything bigger is refused unread."""
TOKEN_PATH = "/t/{token}"


def ui_origins(settings: Settings) -> list[str]:
    """Browser origins allowed to call the codec server: Temporal UI's, then the extras."""
    origins: list[str] = []
    ui = settings.endpoints().temporal_ui
    if ui:
        parts = urlsplit(ui)
        origin = f"{parts.scheme}://{parts.netloc}"
        origins.append(origin)
        # The same UI reached as localhost or 127.0.0.1 is one UI to its operator.
        for a, b in (("127.0.0.1", "localhost"), ("localhost", "127.0.0.1")):
            if parts.hostname == a:
                origins.append(origin.replace(a, b, 1))
    origins += [o.strip().rstrip("/") for o in settings.codec_cors_origins.split(",") if o.strip()]
    return list(dict.fromkeys(origins))


def create_app(codec: PayloadCodec, token: str, origins: Sequence[str]) -> FastAPI:
    """The codec server for ``codec`` guarded by ``token``."""
    if not token:
        raise ValueError("the codec server needs an access token")
    app = FastAPI(title="vigil codec server", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=["POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Namespace"],
        allow_credentials=True,
    )
    expected = token.encode()

    def authorise(request: Request, path_token: str | None) -> None:
        given = path_token
        if given is None:
            scheme, _, value = request.headers.get("authorization", "").partition(" ")
            given = value.strip() if scheme.lower() == "bearer" else None
        if not given:
            raise HTTPException(
                401, "an access token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        if not hmac.compare_digest(given.encode(), expected):
            raise HTTPException(403, "wrong access token")

    async def payloads_of(request: Request) -> Payloads:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise HTTPException(413, f"body over {MAX_BODY_BYTES} bytes")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"body over {MAX_BODY_BYTES} bytes")
        try:
            return json_format.Parse(body, Payloads())
        except (json_format.ParseError, ValueError) as exc:
            raise HTTPException(400, f"not a payloads document: {str(exc)[:200]}") from None

    def reply(payloads: Sequence[Payload]) -> Response:
        doc = json_format.MessageToJson(Payloads(payloads=payloads))
        return Response(doc, media_type="application/json")

    async def decode(request: Request, path_token: str | None) -> Response:
        authorise(request, path_token)
        payloads = await payloads_of(request)
        try:
            return reply(await codec.decode(payloads.payloads))
        except PayloadKeyError as exc:
            raise HTTPException(400, str(exc)) from None

    async def encode(request: Request, path_token: str | None) -> Response:
        authorise(request, path_token)
        payloads = await payloads_of(request)
        return reply(await codec.encode(payloads.payloads))

    @app.post("/decode")
    async def decode_bearer(request: Request) -> Response:
        return await decode(request, None)

    @app.post("/encode")
    async def encode_bearer(request: Request) -> Response:
        return await encode(request, None)

    @app.post(TOKEN_PATH + "/decode")
    async def decode_in_path(request: Request, token: str) -> Response:
        return await decode(request, token)

    @app.post(TOKEN_PATH + "/encode")
    async def encode_in_path(request: Request, token: str) -> Response:
        return await encode(request, token)

    return app


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the codec server in the foreground until interrupted."""
    import uvicorn

    from vigil.workers.codec import codec_token, payload_codec

    codec = payload_codec(settings)
    if codec is None:
        raise PayloadKeyError(
            "no payload keys: set VIGIL_PAYLOAD_KEYS or run `vigil stack up` to generate one"
        )
    token = codec_token(settings, create=True)
    assert token is not None
    app = create_app(codec, token, ui_origins(settings))
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
