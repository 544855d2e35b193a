"""The interactive docs page, ``/v1/docs``, working with no internet.

Swagger UI's script, stylesheet and icon come from the ``fastapi-offline`` package's
bundled copy and are served by the API itself under ``/v1/docs/assets``; the page names
no other origin (and Swagger UI's online validator badge is switched off).
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"
"""swagger-ui-bundle.js, swagger-ui.css, favicon.png (and ReDoc) as the package ships them."""


def install(app: FastAPI, prefix: str) -> None:
    """Serve ``{prefix}/docs`` and its assets (neither is part of the OpenAPI document)."""
    assets = f"{prefix}/docs/assets"
    app.mount(assets, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get(f"{prefix}/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=f"{prefix}/openapi.json",
            title="vigil API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
        )
