"""The API admits live tokens only, within their scope, and every error is JSON."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.api import ApiServer, running_api
from tests.support.cli import known_agent, record_cli
from vigil.workers.cli.common import when
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[ApiServer]:
    with running_api(settings) as server:
        yield server


def test_health_and_readiness_need_no_token(api: ApiServer) -> None:
    with api.client() as http:
        assert http.get("/v1/health").json() == {"status": "ok"}
        ready = http.get("/v1/ready")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["ready"] is True
        assert {c["name"] for c in body["checks"]} == {"postgres", "temporal", "object_store"}


def test_unknown_route_is_a_json_404(api: ApiServer) -> None:
    with api.client() as http:
        r = http.get("/v1/no-such-thing")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_openapi_document_is_versioned(api: ApiServer) -> None:
    with api.client() as http:
        doc = http.get("/v1/openapi.json").json()
    assert doc["info"]["version"].startswith("1.")
    assert all(path.startswith("/v1/") for path in doc["paths"])


def test_missing_token_is_401_with_a_bearer_challenge(api: ApiServer) -> None:
    with api.client() as http:
        r = http.get("/v1/me")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize(
    "presented",
    ["nonsense", "vgl_aaaaaaaaaaaa_" + "x" * 43, "Basic dXNlcjpwYXNz"],
)
def test_wrong_token_is_401(api: ApiServer, presented: str) -> None:
    with api.client(presented) as http:
        r = http.get("/v1/me")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_token"


def test_right_id_wrong_secret_is_401(api: ApiServer) -> None:
    good = api.token(Scope.READ)
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    with api.client(forged) as http:
        assert http.get("/v1/me").status_code == 401


def test_two_authorization_headers_are_a_400(api: ApiServer) -> None:
    admin, reader = api.token(Scope.ADMIN), api.token(Scope.READ)
    with api.client() as http:
        for second in (reader, admin, "nonsense"):
            headers = [("Authorization", f"Bearer {admin}"), ("Authorization", f"Bearer {second}")]
            r = http.get("/v1/me", headers=headers)
            assert r.status_code == 400, (second, r.text)
            error = r.json()["error"]
            assert error["code"] == "malformed_request"
            assert "Authorization" in error["message"]
        one = http.get("/v1/me", headers=[("Authorization", f"Bearer {admin}")])
        assert one.status_code == 200, one.text


def test_live_token_acts_for_its_owner_until_revoked(api: ApiServer) -> None:
    token = api.token(Scope.CONTROL, owner="ana", agents=["ops"])
    with api.client(token) as http:
        me = http.get("/v1/me").json()
        assert me["owner"] == "ana"
        assert me["scope"] == "control"
        assert me["agents"] == ["ops"]
        api.revoke(me["token_id"])
        r = http.get("/v1/me")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_token"


def test_a_token_without_the_scope_is_403_naming_it(api: ApiServer) -> None:
    with api.client(api.token(Scope.READ)) as http:
        r = http.get("/v1/triggers")
    assert r.status_code == 403, r.text
    assert r.json()["error"]["message"] == "this needs an admin token; this one is read"


def test_cli_creates_lists_and_revokes_tokens(
    api: ApiServer, stack: Stack, database_url: str, tmp_path: Path
) -> None:
    vigil = record_cli(stack.settings.resolved_state_dir, database_url, tmp_path)
    made = vigil.json("token", "create", "--owner", "bo", "--scope", "admin", "--agents", "a,b")
    assert made["owner"] == "bo" and made["scope"] == "admin" and made["agents"] == ["a", "b"]
    token = made["token"]
    listed = vigil.json("token", "list")
    assert made["id"] in {t["id"] for t in listed}
    assert all("token" not in t and "secret_sha256" not in t for t in listed)
    with api.client(token) as http:
        assert http.get("/v1/me").json()["owner"] == "bo"
        # Its expiry and last use in the table too (they were in --json only).
        dated = vigil.json(
            "token", "create", "--owner", "cy", "--scope", "read", "--expires", "30d"
        )
        table = vigil.ok("token", "list").stdout
        row = next(ln for ln in table.splitlines() if made["id"] in ln)
        assert row.count("never") == 1 and "live" in row, table  # no expiry; used just now
        dated_row = next(ln for ln in table.splitlines() if dated["id"] in ln)
        assert dated_row.count("never") == 1, table  # never used
        assert when(datetime.fromisoformat(str(dated["expires_at"]))) in dated_row, table
        vigil.ok("token", "revoke", made["id"])
        assert http.get("/v1/me").status_code == 401
    assert made["id"] not in {t["id"] for t in vigil.json("token", "list")}
    gone = vigil("token", "revoke", "nosuchtoken1")
    assert gone.returncode == 4, gone.stderr
    bad = vigil("token", "create", "--owner", "bo", "--scope", "root")
    assert bad.returncode == 2 and "unknown scope" in bad.stderr
    # --agent as every other command spells it, repeatable; --agents a,b as before.
    one = vigil.json("token", "create", "--owner", "bo", "--agent", "ops")
    assert one["agents"] == ["ops"]
    two = vigil.json("token", "create", "--owner", "bo", "--agent", "a", "-a", "b,c")
    assert two["agents"] == ["a", "b", "c"]
    assert vigil.json("token", "create", "--owner", "bo")["agents"] is None
    # An agent no session can have (ids are 1-200 characters) is refused, not stored.
    long = vigil("token", "create", "--owner", "bo", "--agent", "x" * 201)
    assert long.returncode == 2 and "an agent id is 1 to 200 characters" in long.stderr


def test_cli_creates_a_token_that_expires(
    api: ApiServer, stack: Stack, database_url: str, tmp_path: Path
) -> None:
    """Tokens could expire (a stream ends when its token does), but no command made one
    that does."""
    vigil = record_cli(stack.settings.resolved_state_dir, database_url, tmp_path)
    before = datetime.now(UTC)
    made = vigil.json("token", "create", "--owner", "bo", "--expires", "2h")
    expires = datetime.fromisoformat(made["expires_at"])
    assert before + timedelta(hours=2) <= expires <= datetime.now(UTC) + timedelta(hours=2)
    with api.client(made["token"]) as http:
        assert http.get("/v1/me").status_code == 200
    for bad in ("0", "soon", "-1h"):
        refused = vigil("token", "create", "--owner", "bo", "--expires", bad)
        assert refused.returncode == 2 and "--expires" in refused.stderr, refused.stderr
    assert vigil.json("token", "create", "--owner", "bo")["expires_at"] is None


def test_a_token_for_an_agent_that_only_reads_as_a_known_one_is_refused(
    api: ApiServer, stack: Stack, database_url: str, tmp_path: Path
) -> None:
    """An agent id is matched exactly, so a token for ``Ops`` (or the same with a
    Cyrillic o) covers nothing of ``ops``: it was created without a word."""
    vigil = record_cli(stack.settings.resolved_state_dir, database_url, tmp_path)
    known = f"ops-{uuid.uuid4().hex[:8]}"
    known_agent(database_url, known)
    for look_alike, says in [
        (known.upper(), ""),
        ("\u043e" + known[1:], "it holds U+043E CYRILLIC SMALL LETTER O; "),
    ]:
        refused = vigil("token", "create", "--owner", "bo", "--agent", look_alike)
        assert refused.returncode == 2, refused.stderr
        assert f"no agent {look_alike!r} is known (no definition, no session); {says}" in (
            " ".join(refused.stderr.split())
        )
        assert f"did you mean {known!r}?" in refused.stderr
        taken = vigil.json(
            "token", "create", "--owner", "bo", "--agent", look_alike, "--allow-unknown-agent"
        )
        assert taken["agents"] == [look_alike]
    assert look_alike not in {
        a for t in vigil.json("token", "list")[:-1] for a in t["agents"] or []
    }
    # One for an agent to come is made, with a warning; one for the known agent quietly.
    later = vigil("token", "create", "--owner", "bo", "--agent", "not-yet-" + known)
    assert later.returncode == 0 and "warning: no agent" in later.stderr, later.stderr
    # A whole sentence (it stopped at "once it is").
    assert "the token covers it once it is started or defined" in " ".join(later.stderr.split())
    exact = vigil("token", "create", "--owner", "bo", "--agent", known)
    assert exact.returncode == 0 and "warning" not in exact.stderr, exact.stderr


BAD_BODIES = {
    "not JSON": b"{bad",
    "a key given twice": b'{"goal": "a", "goal": "b"}',
    "a lone surrogate": b'{"goal": "\\ud800"}',
    "nested too deeply": b"[" * 5000,
}
"""Bodies the API refuses whoever sends them (400 or 422, saying what is wrong)."""


@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_who_may_send_a_body_is_settled_before_what_is_wrong_with_it(
    api: ApiServer, body: bytes
) -> None:
    """A caller without a token heard what was wrong with its body (400 or 422) before it
    was asked who it is: a refusal of the caller comes first (401, then 403), as it does
    for unknown query parameters, and only a caller the route admits hears about its
    body."""
    json_body = {"Content-Type": "application/json"}
    with api.client() as http:
        r = http.post("/v1/sessions", content=body, headers=json_body)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == "unauthenticated", r.text
    with api.client("vgl_not_a_token") as http:
        r = http.post("/v1/sessions", content=body, headers=json_body)
        assert r.status_code == 401, r.text
    with api.client(api.token(Scope.READ)) as http:
        r = http.post("/v1/sessions", content=body, headers=json_body)
        assert r.status_code == 403, r.text  # a start needs a control token
    with api.client(api.token(Scope.CONTROL)) as http:
        r = http.post("/v1/sessions", content=body, headers=json_body)
        assert r.status_code in (400, 422), r.text
        assert r.json()["error"]["code"] in ("malformed_request", "invalid_request"), r.text


def test_a_body_over_the_limit_from_a_caller_without_a_token_is_401(api: ApiServer) -> None:
    """The body's size is told only to a caller the route admits: sized up front by its
    Content-Length, or counted as it comes (chunked, no length)."""
    big = b'{"goal": "' + b"x" * (4 * 1024 * 1024 + 10) + b'"}'

    def chunked() -> Iterator[bytes]:
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024]

    json_body = {"Content-Type": "application/json"}
    for token, status in ((None, 401), (api.token(Scope.CONTROL), 413)):
        with api.client(token) as http:
            sized = http.post("/v1/sessions", content=big, headers=json_body)
            counted = http.post("/v1/sessions", content=chunked(), headers=json_body)
        for r in (sized, counted):
            assert r.status_code == status, r.text[:300]
