"""Property-based fuzzing of the whole API from its own OpenAPI document (schemathesis),
against a real uvicorn server with an admin token: no 5xx, and every response's status,
content type, headers and body as the document declares.

Bounded and seeded so that it takes a couple of minutes and finds the same cases each
run. Run it alone with ``pytest tests/integration/test_api_fuzz.py``; a failure prints
schemathesis' report with a curl command reproducing each case.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.api import running_api
from tests.support.teststack import scratch_stack
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
EXAMPLES = int(os.environ.get("VIGIL_FUZZ_EXAMPLES", "30"))
SEED = int(os.environ.get("VIGIL_FUZZ_SEED", "20261130"))


@pytest.mark.timeout(600)
def test_the_whole_api_holds_to_its_openapi_document(tmp_path: Path) -> None:
    # A database of its own: sessions other tests left without a worker would make
    # controls answer 409/503 by chance, and the fuzzer's writes stay out of their way.
    with scratch_stack("vigil_fuzz") as settings, running_api(settings) as api:
        token = api.token(Scope.ADMIN, owner="fuzzer")
        st = Path(sys.executable).with_name("st")
        done = subprocess.run(
            [
                str(st),
                "run",
                f"{api.base_url}/v1/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                ",".join(CHECKS),
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                str(SEED),
                "--phases",
                "examples,coverage,fuzzing",
                "--workers",
                "1",
                "--request-timeout",
                "30",
                "--suppress-health-check",
                "all",
                "--no-color",
                "--warnings",
                "off",
                # Event streams never end while their agent lives: their own tests hold them.
                "--exclude-path-regex",
                "/stream$",
            ],
            capture_output=True,
            text=True,
            timeout=540,
            cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        )
    report = done.stdout[-20000:] + done.stderr[-5000:]
    print(report)
    assert done.returncode == 0, report
