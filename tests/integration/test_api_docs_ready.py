"""The docs page works offline (every asset it names is served by the API itself), and
readiness reports the object store on both backends."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urljoin

import pytest

from tests.support.api import running_api
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


def test_docs_page_and_every_asset_load_from_the_api(settings: Settings) -> None:
    with running_api(settings) as api, api.client() as http:
        page = http.get("/v1/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        assert "http://" not in html and "https://" not in html and "//cdn" not in html
        refs = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assert len(refs) >= 4, refs  # stylesheet, icon, script, the OpenAPI document
        for ref in refs:
            target = urljoin(f"{api.base_url}/v1/docs", ref)
            assert target.startswith(f"{api.base_url}/v1/"), ref
            got = http.get(target)
            assert got.status_code == 200, (ref, got.status_code)
            assert len(got.content) > 100, ref
        script = http.get("/v1/docs/assets/swagger-ui-bundle.js")
        assert "SwaggerUIBundle" in script.text
        assert "openapi" in http.get("/v1/openapi.json").json()
        assert http.get("/v1/docs/assets/../../openapi.json").status_code in (200, 404)
        assert http.get("/v1/docs/assets/%2e%2e/%2e%2e/pyproject.toml").status_code == 404


@pytest.mark.parametrize("backend", ["fs", "s3"])
def test_readiness_reports_the_object_store(settings: Settings, backend: str) -> None:
    ok = settings.model_copy(update={"artifact_backend": backend})
    with running_api(ok) as api, api.client() as http:
        ready = http.get("/v1/ready")
        assert ready.status_code == 200, ready.text
        checks = {c["name"]: c["ok"] for c in ready.json()["checks"]}
        assert checks == {"postgres": True, "temporal": True, "object_store": True}
    broken = (
        {"artifact_backend": "s3", "s3_bucket": "no-such-bucket-here"}
        if backend == "s3"
        else {"artifact_backend": "fs", "artifact_dir": Path("/proc/vigil-no-such-dir")}
    )
    with running_api(settings.model_copy(update=broken)) as api, api.client() as http:
        down = http.get("/v1/ready")
        assert down.status_code == 503
        body = down.json()
        assert body["ready"] is False
        store = next(c for c in body["checks"] if c["name"] == "object_store")
        assert store["ok"] is False and store["detail"]
        # Asked without a token: it named the folder (or bucket) it could not use.
        assert store["detail"] == "down (the API's log says why)", store
