"""Artifacts over HTTP, on the filesystem store and on MinIO: streamed upload and download,
byte ranges (206, 416), ETag, the upload limit, names that look like paths, and access."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from tests.support.api import ApiServer, running_api
from vigil.activities.record.store import create_session
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.settings import Settings
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration

LIMIT = 256 * 1024
DATA = os.urandom(100_000)


@pytest.fixture(scope="module", params=["fs", "s3"])
def api(request: pytest.FixtureRequest, settings: Settings) -> Iterator[ApiServer]:
    local = settings.model_copy(
        update={"artifact_backend": request.param, "api_max_upload_bytes": LIMIT}
    )
    with running_api(local) as server:
        yield server


def in_db(settings: Settings, work: Callable[[DbSession], Awaitable[object]]) -> None:
    """``work`` in one transaction on the stack's database (a short-lived engine)."""

    async def go() -> None:
        url = settings.endpoints().database_url
        assert url is not None
        engine = make_engine(url, pool_size=1)
        try:
            async with make_sessionmaker(engine).begin() as db:
                await work(db)
        finally:
            await engine.dispose()

    asyncio.run(go())


def with_mime(settings: Settings, sha256: str, mime: str) -> None:
    in_db(
        settings,
        lambda db: db.execute(
            text("UPDATE artifacts SET mime_type = :m WHERE sha256 = :s"),
            {"m": mime, "s": sha256},
        ),
    )


def new_session(settings: Settings) -> tuple[str, str]:
    agent, session = f"art-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4().hex}"
    in_db(
        settings,
        lambda db: create_session(
            db, session_id=session, agent_id=agent, goal="g", status="running"
        ),
    )
    return agent, session


def url(session: str, name: str = "") -> str:
    base = f"/v1/sessions/{session}/artifacts"
    # Dots escaped too: an HTTP client would resolve a bare ".." segment away.
    return f"{base}/{quote(name, safe='').replace('.', '%2E')}" if name else base


def test_upload_list_download_and_ranges(api: ApiServer) -> None:
    agent, session = new_session(api.settings)
    sha = hashlib.sha256(DATA).hexdigest()
    with api.client(api.token(Scope.CONTROL, owner="uploader")) as http:
        put = http.put(
            url(session, "reports/out.bin"),
            content=DATA,
            headers={"Content-Type": "application/x-report"},
        )
        assert put.status_code == 201, put.text
        assert put.json()["sha256"] == sha and put.json()["size"] == len(DATA)

        listed = http.get(url(session)).json()["items"]
        assert [(a["name"], a["size"], a["mime_type"]) for a in listed] == [
            ("reports/out.bin", len(DATA), "application/x-report")
        ]

        whole = http.get(url(session, "reports/out.bin"))
        assert whole.status_code == 200
        assert whole.content == DATA
        assert whole.headers["etag"] == f'"{sha}"'
        assert whole.headers["content-length"] == str(len(DATA))
        assert whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["content-type"].startswith("application/x-report")

        n = len(DATA)
        for header, first, last in [
            ("bytes=0-0", 0, 0),
            ("bytes=10-99", 10, 99),
            ("bytes=99990-", 99990, n - 1),
            ("bytes=-16", n - 16, n - 1),
            ("bytes=5-999999999", 5, n - 1),
        ]:
            part = http.get(url(session, "reports/out.bin"), headers={"Range": header})
            assert part.status_code == 206, (header, part.text)
            assert part.content == DATA[first : last + 1], header
            assert part.headers["content-range"] == f"bytes {first}-{last}/{n}"
            assert part.headers["content-length"] == str(last - first + 1)

        # A media type with parameters (as the write_artifact tool stores it) is served
        # as stored, whole and in part.
        notes = b"plain words " + os.urandom(8).hex().encode()
        put = http.put(url(session, "notes.txt"), content=notes)
        assert put.status_code == 201, put.text
        with_mime(api.settings, hashlib.sha256(notes).hexdigest(), "text/plain; charset=utf-8")
        for headers in ({}, {"Range": "bytes=0-4"}):
            got = http.get(url(session, "notes.txt"), headers=headers)
            assert got.headers["content-type"].startswith("text/plain"), got.headers

        for header in (f"bytes={n}-", "bytes=-0", f"bytes={n + 5}-{n + 9}"):
            past = http.get(url(session, "reports/out.bin"), headers={"Range": header})
            assert past.status_code == 416, header
            assert past.headers["content-range"] == f"bytes */{n}"
            assert past.json()["error"]["code"] == "range_not_satisfiable"

        # Ranges we do not serve give the whole body; an old If-Range too.
        for headers in ({"Range": "bytes=0-1,5-6"}, {"Range": "lines=1-2"},
                        {"Range": "bytes=0-1", "If-Range": '"old"'}):  # fmt: skip
            full = http.get(url(session, "reports/out.bin"), headers=headers)
            assert (full.status_code, full.content) == (200, DATA), headers

        same = http.get(url(session, "reports/out.bin"), headers={"If-None-Match": f'"{sha}"'})
        assert same.status_code == 304 and same.content == b""

        # HEAD: the download's headers without its body (it was a 405), for a client
        # that checks an artifact's size or ETag before fetching it; a range's too.
        head = http.head(url(session, "reports/out.bin"))
        assert head.status_code == 200, head.text
        assert head.content == b""
        assert head.headers["content-length"] == str(n)
        assert head.headers["etag"] == f'"{sha}"'
        assert head.headers["content-type"].startswith("application/x-report")
        part = http.head(url(session, "reports/out.bin"), headers={"Range": "bytes=10-99"})
        assert part.status_code == 206 and part.content == b""
        assert part.headers["content-range"] == f"bytes 10-99/{n}"
        assert part.headers["content-length"] == "90"
        missing = http.head(url(session, "no-such.bin"))
        assert missing.status_code == 404 and missing.content == b""

    events = _events(api.settings, agent, session)
    assert ("artifact_uploaded", "uploader") in events  # named in the style of the rest
    # The API's event list filters by it, and refuses a kind no event has (it answered
    # an empty list, where other filters refuse what they do not know).
    with api.client(api.token(Scope.READ)) as http:
        listed = http.get(f"/v1/sessions/{session}/events", params={"kind": "artifact_uploaded"})
        assert listed.status_code == 200, listed.text
        assert {e["actor"] for e in listed.json()["items"]} == {"uploader"}
        bogus = http.get(f"/v1/sessions/{session}/events", params={"kind": "bogus_kind"})
        assert bogus.status_code == 422, bogus.text
        assert "unknown event kind 'bogus_kind'" in bogus.json()["error"]["message"]


def _events(settings: Settings, agent: str, session: str) -> list[tuple[str, str | None]]:
    from vigil.activities.record.rls import acting_for
    from vigil.activities.record.store import list_events

    async def go() -> list[tuple[str, str | None]]:
        url_ = settings.endpoints().database_url
        assert url_ is not None
        engine = make_engine(url_, pool_size=1)
        try:
            async with acting_for(make_sessionmaker(engine), agent) as db:
                return [(e.kind, e.actor) for e in await list_events(db, session)]
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_upload_replaces_and_streams_without_a_length(api: ApiServer) -> None:
    _, session = new_session(api.settings)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(DATA), 7000):
            yield DATA[i : i + 7000]

    with api.client(api.token(Scope.CONTROL)) as http:
        assert http.put(url(session, "a.txt"), content=b"first").status_code == 201
        put = http.put(url(session, "a.txt"), content=chunks())
        assert put.status_code == 201, put.text
        assert http.get(url(session, "a.txt")).content == DATA
        assert len(http.get(url(session)).json()["items"]) == 1
        empty = http.put(url(session, "empty"), content=b"")
        assert empty.status_code == 201 and empty.json()["size"] == 0
        assert http.get(url(session, "empty"), headers={"Range": "bytes=0-"}).status_code == 416
        assert http.get(url(session, "empty")).content == b""


def test_uploads_over_the_limit_are_413_and_leave_nothing(api: ApiServer) -> None:
    _, session = new_session(api.settings)
    big = os.urandom(LIMIT + 1)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 32 * 1024):
            yield big[i : i + 32 * 1024]

    with api.client(api.token(Scope.CONTROL)) as http:
        declared = http.put(url(session, "big"), content=big)
        assert declared.status_code == 413, declared.text
        assert declared.json()["error"]["code"] == "payload_too_large"
        streamed = http.put(url(session, "big"), content=chunks())
        assert streamed.status_code == 413, streamed.text
        assert http.get(url(session)).json()["items"] == []
        assert http.get(url(session, "big")).status_code == 404
        at_limit = http.put(url(session, "big"), content=big[:LIMIT])
        assert at_limit.status_code == 201, at_limit.text


@pytest.mark.parametrize(
    "name", ["../../../etc/passwd", "a/../../b", "/abs/path", "%2e%2e/x", "C:/win/x"]
)
def test_path_like_names_are_labels_only(api: ApiServer, name: str, tmp_path: Path) -> None:
    _, session = new_session(api.settings)
    with api.client(api.token(Scope.CONTROL)) as http:
        put = http.put(url(session, name), content=b"label only")
        assert put.status_code == 201, put.text
        assert put.json()["name"] == name
        assert http.get(url(session, name)).content == b"label only"
        assert [a["name"] for a in http.get(url(session)).json()["items"]] == [name]
    if api.settings.artifact_backend == "fs":
        root = api.settings.endpoints().artifact_dir
        outside = [p for p in root.parent.iterdir() if p.name == "passwd"]
        assert outside == []
        stored = [p for p in root.rglob("*") if p.is_file() and p.read_bytes() == b"label only"]
        assert stored and all(p.name == hashlib.sha256(b"label only").hexdigest() for p in stored)


@pytest.mark.parametrize(
    "name", ["a\x00b", "tab\there", "bell\x07", " ", "x" * 256, "line\nbreak", "cr\r"]
)
def test_unacceptable_names_are_422(api: ApiServer, name: str) -> None:
    _, session = new_session(api.settings)
    with api.client(api.token(Scope.CONTROL)) as http:
        put = http.put(url(session, name), content=b"x")
        assert put.status_code == 422, put.text
        assert put.json()["error"]["code"] == "invalid_request"
        assert http.get(url(session, name)).status_code == 422


@pytest.mark.parametrize("name", [".", "..", "a/..", "dir/.", "a\\b", "C:\\win\\x"])
def test_names_no_file_can_have_are_422(api: ApiServer, name: str) -> None:
    _, session = new_session(api.settings)
    with api.client(api.token(Scope.CONTROL)) as http:
        put = http.put(url(session, name), content=b"x")
        assert put.status_code == 422, put.text
        error = put.json()["error"]
        assert error["code"] == "invalid_request"
        assert ("backslash" if "\\" in name else "'.' or '..'") in error["message"], error
        assert http.get(url(session)).json()["items"] == []


def test_access_and_unknown_ids(api: ApiServer) -> None:
    agent, session = new_session(api.settings)
    with api.client(api.token(Scope.CONTROL)) as http:
        assert http.put(url(session, "f"), content=b"x").status_code == 201
        assert http.get(url("no-such-session")).status_code == 404
        assert http.get(url("no-such-session", "f")).status_code == 404
        assert http.put(url("no-such-session", "f"), content=b"x").status_code == 404
        missing = http.get(url(session, "nope"))
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    with api.client(api.token(Scope.READ)) as http:
        assert http.get(url(session, "f")).content == b"x"
        put = http.put(url(session, "f"), content=b"y")
        assert put.status_code == 403 and put.json()["error"]["code"] == "forbidden"
    with api.client(api.token(Scope.ADMIN, agents=["someone-else"])) as http:
        for r in (http.get(url(session)), http.get(url(session, "f")),
                  http.put(url(session, "f"), content=b"y")):  # fmt: skip
            assert r.status_code == 404, r.text
    with api.client(api.token(Scope.READ, agents=[agent])) as http:
        assert http.get(url(session, "f")).content == b"x"
    with api.client() as http:
        assert http.get(url(session, "f")).status_code == 401
        assert http.put(url(session, "f"), content=b"y").status_code == 401


@pytest.mark.parametrize(
    ("name", "sent", "stored"),
    [
        # curl --data-binary sends the form type by itself: an artifact is never a form.
        ("notes.md", "application/x-www-form-urlencoded", "text/markdown"),
        ("data.json", "application/x-www-form-urlencoded", "application/json"),
        ("blob.unknownext", "application/x-www-form-urlencoded", "application/octet-stream"),
        # No type at all (curl -T, most HTTP clients with raw bytes): the name's, if any.
        ("report.csv", None, "text/csv"),
        ("plain", None, "application/octet-stream"),
        # A type the client chose is kept as it is.
        ("notes.md", "text/plain", "text/plain"),
    ],
)
def test_an_upload_without_a_real_type_takes_its_names(
    api: ApiServer, name: str, sent: str | None, stored: str
) -> None:
    _, session = new_session(api.settings)
    body = f"{uuid.uuid4()}: {name}".encode()  # content of its own: the type is not shared
    headers = {"Content-Type": sent} if sent is not None else {}
    with api.client(api.token(Scope.CONTROL)) as http:
        put = http.put(url(session, name), content=body, headers=headers)
        assert put.status_code == 201, put.text
        assert put.json()["mime_type"] == stored
        got = http.get(url(session, name))
        assert got.content == body
        assert got.headers["content-type"].split(";")[0] == stored


def test_the_upload_answer_is_what_is_served(api: ApiServer) -> None:
    """The same bytes again, under another name or the same one, with another type: the
    answer gives the type list, GET and download serve, and the link's time (not null)."""
    _, session = new_session(api.settings)
    data = os.urandom(1000)
    with api.client(api.token(Scope.CONTROL, owner="uploader")) as http:
        first = http.put(url(session, "a.bin"), content=data, headers={"Content-Type": "x/one"})
        assert first.status_code == 201, first.text
        for name in ("b.bin", "a.bin"):
            put = http.put(url(session, name), content=data, headers={"Content-Type": "x/two"})
            assert put.status_code == 201, put.text
            listed = {a["name"]: a for a in http.get(url(session)).json()["items"]}
            served = http.get(url(session, name)).headers["content-type"].split(";")[0]
            answer = put.json()
            assert answer["mime_type"] == listed[name]["mime_type"] == served, (answer, served)
            assert answer["created_at"] is not None
            assert answer["created_at"] == listed[name]["created_at"]


def test_a_replaced_artifact_keeps_every_version_reachable(api: ApiServer) -> None:
    _, session = new_session(api.settings)
    one, two = b"version one " + os.urandom(8), b"version two " + os.urandom(8)
    with api.client(api.token(Scope.CONTROL)) as http:
        assert http.put(url(session, "notes.md"), content=one).json()["version"] == 1
        assert http.put(url(session, "notes.md"), content=two).json()["version"] == 2
        assert http.put(url(session, "other.txt"), content=b"alone").status_code == 201
        listed = {a["name"]: a for a in http.get(url(session)).json()["items"]}
        assert (listed["notes.md"]["version"], listed["other.txt"]["version"]) == (2, 1)
        assert http.get(url(session, "notes.md")).content == two
        first = http.get(url(session, "notes.md"), params={"version": 1})
        assert first.status_code == 200, first.text
        assert first.content == one
        assert first.headers["etag"] == f'"{hashlib.sha256(one).hexdigest()}"'
        assert http.get(url(session, "notes.md"), params={"version": 2}).content == two
        assert http.get(url(session, "other.txt"), params={"version": 1}).content == b"alone"
        past = http.get(url(session, "notes.md"), params={"version": 3})
        assert past.status_code == 404, past.text
        assert "2 versions" in past.json()["error"]["message"]


def test_uploads_of_one_name_at_once_are_each_told_their_own_version(api: ApiServer) -> None:
    """The version an upload answered with was counted after its write, so an upload that
    landed meanwhile was counted too: parallel uploads were told versions that held other
    uploads' bytes, some the same one."""
    from concurrent.futures import ThreadPoolExecutor

    _, session = new_session(api.settings)
    token = api.token(Scope.CONTROL)

    def upload(i: int) -> tuple[bytes, int]:
        body = f"upload {i}\n".encode()
        with api.client(token) as http:
            put = http.put(url(session, "race.txt"), content=body)
        assert put.status_code == 201, put.text
        return body, int(put.json()["version"])

    with ThreadPoolExecutor(8) as pool:
        told = list(pool.map(upload, range(8)))
    assert sorted(version for _, version in told) == list(range(1, 9)), told
    with api.client(token) as http:
        for body, version in told:
            got = http.get(url(session, "race.txt"), params={"version": version})
            assert got.content == body, (version, got.content, body)


def test_an_uploads_charset_is_kept_and_a_form_upload_is_refused(api: ApiServer) -> None:
    """The Content-Type's parameters were dropped, so Latin-1 text came back labelled
    UTF-8; ``curl -F file=@x`` stored the whole multipart envelope as the artifact."""
    _, session = new_session(api.settings)
    with api.client(api.token(Scope.CONTROL)) as http:
        put = http.put(
            url(session, "latin1.txt"),
            content="caf\u00e9".encode("latin-1"),
            headers={"Content-Type": "text/plain; charset=iso-8859-1"},
        )
        assert put.status_code == 201, put.text
        got = http.get(url(session, "latin1.txt"))
        assert got.headers["content-type"] == "text/plain; charset=iso-8859-1"
        assert got.text == "caf\u00e9"
        form = http.put(url(session, "rep.txt"), files={"file": ("rep.txt", b"report")})
        assert form.status_code == 415, form.text
        assert "--data-binary" in form.json()["error"]["message"]
        assert http.get(url(session, "rep.txt")).status_code == 404
