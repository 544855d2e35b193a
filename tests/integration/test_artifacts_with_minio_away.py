"""MinIO away: artifacts say the object store is away, on every face, in one line.

The API answered a download 503 ``unavailable`` but an upload (``PUT``, streamed) 500
``internal_error``, and `vigil artifact get` printed urllib3's ``MaxRetryError``
traceback and exited 1. Now every artifact route that needs the store answers 503 naming
it (the list, which PostgreSQL alone serves, is served), the CLI says where the store is
and how to start it, exit 3, and the store itself reports its client's connection
failures as an OSError (as the filesystem's own failures are) that ``outage_of`` names.

MinIO is shared by the whole test run: stopped here, and started again whatever happens.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_api_artifacts import new_session, url
from tests.support.api import running_api
from tests.support.cli import Vigil, cli_env, explain, one_error_line
from tests.support.outage import PartOutage
from vigil.activities.artifacts.registry import put_artifact
from vigil.activities.artifacts.s3 import S3Store
from vigil.activities.failures import OBJECT_STORE, outage_of
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack
from vigil.workers.tokens import Scope
from vigil.workers.wiring import make_s3_client

# Stops a part of the shared test stack: runs alone, after the parallel phase.
pytestmark = [pytest.mark.integration, pytest.mark.disruptive]

DATA = os.urandom(25_000).hex().encode()  # text: `-o -` is read back as text


@pytest.fixture
def minio(stack: Stack) -> Iterator[PartOutage]:
    with PartOutage(stack, "minio").restoring() as outage:
        yield outage


def _endpoint(settings: Settings) -> tuple[str, int]:
    endpoint = settings.endpoints().s3_endpoint
    assert endpoint is not None
    host, port = endpoint.rsplit(":", 1)
    return host, int(port)


def _store_away(settings: Settings) -> str:
    """What every face says of the object store away: ``outage_of``'s line."""
    host, port = _endpoint(settings)
    return f"object store unavailable: connection refused ({host}:{port})"


def test_the_store_reports_minio_away_as_an_outage(
    s3_settings: Settings, minio: PartOutage
) -> None:
    store = S3Store(make_s3_client(s3_settings), s3_settings.s3_bucket)
    kept = store.put_bytes(DATA)
    minio.stop()
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("put_stream", lambda: store.put_stream(iter([b"during"]))),
        ("open", lambda: list(store.open(kept.sha256))),
        ("open_range", lambda: list(store.open_range(kept.sha256, 0, 10))),
        ("exists", lambda: store.exists(kept.sha256)),
        ("list_digests", lambda: list(store.list_digests())),
    ]
    for what, call in calls:
        with pytest.raises(OSError) as caught:
            call()
        outage = outage_of(caught.value)
        assert outage is not None and outage.part == OBJECT_STORE, (what, caught.value)
        assert outage.message == _store_away(s3_settings), what
        assert str(caught.value) == outage.message, what


def _unavailable(r: httpx.Response, settings: Settings) -> None:
    assert r.status_code == 503, (r.request.method, r.request.url, r.status_code, r.text)
    assert r.json()["error"] == {"code": "unavailable", "message": _store_away(settings)}


def test_every_artifact_route_answers_503_while_minio_is_away(
    s3_settings: Settings, minio: PartOutage, caplog: pytest.LogCaptureFixture
) -> None:
    _, session = new_session(s3_settings)
    with running_api(s3_settings) as api, api.client(api.token(Scope.CONTROL)) as http:
        assert http.put(url(session, "before.txt"), content=DATA).status_code == 201
        minio.stop()

        _unavailable(http.put(url(session, "during.txt"), content=b"x"), s3_settings)
        streamed = http.put(url(session, "during.bin"), content=iter([DATA[:9000], DATA[9000:]]))
        _unavailable(streamed, s3_settings)
        _unavailable(http.get(url(session, "before.txt")), s3_settings)
        _unavailable(http.get(url(session, "before.txt") + "?version=1"), s3_settings)
        ranged = http.get(url(session, "before.txt"), headers={"Range": "bytes=0-9"})
        _unavailable(ranged, s3_settings)
        listed = http.get(url(session))  # PostgreSQL alone serves it
        assert listed.status_code == 200, listed.text
        assert [a["name"] for a in listed.json()["items"]] == ["before.txt"]

        minio.start()
        again = http.put(url(session, "during.txt"), content=b"x")
        assert again.status_code == 201, again.text
        assert http.get(url(session, "before.txt")).content == DATA
    unhandled = [r.getMessage() for r in caplog.records if "unhandled error" in r.getMessage()]
    assert unhandled == []


def _cli(stack: Stack, settings: Settings, tmp_path: Path) -> Vigil:
    url_ = settings.endpoints().database_url
    assert url_ is not None
    return Vigil(
        cli_env(
            database_url=url_,
            state_dir=stack.settings.resolved_state_dir,
            task_queue=f"tq-away-{uuid.uuid4().hex[:8]}",
            model_url="http://127.0.0.1:1/v1",
            artifact_dir=tmp_path / "artifacts",
            VIGIL_ARTIFACT_BACKEND="s3",
            VIGIL_S3_BUCKET=settings.s3_bucket,
        )
    )


def _stored(settings: Settings, name: str, data: bytes = DATA) -> str:
    """A new session holding the artifact ``name`` (``data``) in MinIO; its id."""
    agent, session = new_session(settings)
    store = S3Store(make_s3_client(settings), settings.s3_bucket)

    async def go() -> None:
        url_ = settings.endpoints().database_url
        assert url_ is not None
        engine = make_engine(url_, pool_size=1)
        try:
            await put_artifact(
                store,
                make_sessionmaker(engine),
                agent_id=agent,
                session_id=session,
                name=name,
                data=data,
            )
        finally:
            await engine.dispose()

    asyncio.run(go())
    return session


def test_the_cli_says_the_store_is_away_in_one_line(
    stack: Stack, s3_settings: Settings, minio: PartOutage, tmp_path: Path
) -> None:
    session = _stored(s3_settings, "kept.bin")
    # Bytes of its own: an erasure deletes an object no other session refers to.
    erased = _stored(s3_settings, "own.bin", b"erase me " + uuid.uuid4().bytes)
    vigil = _cli(stack, s3_settings, tmp_path)
    before = vigil("artifact", "get", session, "kept.bin", "-o", "-")
    assert before.returncode == 0, explain(before)
    minio.stop()
    kept = str(tmp_path / "kept.bin")

    host, port = _endpoint(s3_settings)
    line = (
        f"error: cannot reach the object store at {host}:{port} (Connection refused); "
        "start it with `vigil stack up` (or check VIGIL_S3_ENDPOINT)"
    )
    calls = [
        ("artifact", "get", session, "kept.bin", "-o", "-"),
        ("artifact", "get", session, "kept.bin", "-o", kept),
        ("artifact", "sweep", "--dry-run"),
    ]
    for args, done in zip(calls, vigil.many(*calls, timeout=120), strict=True):
        assert done.returncode == 3, (args, explain(done))
        assert one_error_line(done) == line, (args, explain(done))
    assert not list(tmp_path.glob("kept.bin*"))  # no file, whole or partial
    # An erasure stopped by the store: it said only that the store was away, not that the
    # erasure was left unfinished (Temporal's runs of it may be gone already).
    stopped = vigil("erase", erased, "--yes", timeout=120)
    assert stopped.returncode == 3, explain(stopped)
    said = one_error_line(stopped)
    assert said.startswith(f"error: the erasure of session {erased} did not finish"), said
    assert "run it again once this is mended" in said and line[len("error: ") :] in said, said
    listed: subprocess.CompletedProcess[str] = vigil("artifact", "list", session, "--json")
    assert listed.returncode == 0, explain(listed)
    assert "kept.bin" in listed.stdout

    minio.start()
    back = vigil("artifact", "get", session, "kept.bin", "-o", kept)
    assert back.returncode == 0, explain(back)
    assert hashlib.sha256((tmp_path / "kept.bin").read_bytes()).hexdigest() == (
        hashlib.sha256(DATA).hexdigest()
    )
