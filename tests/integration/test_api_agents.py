"""Agents over HTTP: a definition applied as TOML, YAML or JSON is validated and versioned
as `vigil agent apply` does it (unchanged content adds no version, problems come back at
their line), and listed, shown and versioned back; tokens see only their agents."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer
from tests.support.api_sessions import agent_yaml, api_for
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration

YAML = {"Content-Type": "application/yaml"}
TOML = {"Content-Type": "application/toml"}


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with api_for(cli) as server:
        yield server


def _name() -> str:
    return f"ag-{uuid.uuid4().hex[:8]}"


def test_apply_versions_and_reads(api: ApiServer) -> None:
    name = _name()
    with api.client(api.token(Scope.ADMIN, owner="ana")) as http:
        first = http.post("/v1/agents", content=agent_yaml(name), headers=YAML)
        assert first.status_code == 201, first.text
        assert first.json()["version"] == 1 and first.json()["created"] is True

        same = http.post("/v1/agents", content=agent_yaml(name), headers=YAML)
        assert same.status_code == 200, same.text
        assert same.json() == {**first.json(), "created": False}

        toml = (
            f'name = "{name}"\nsystem_prompt = "Goal: {{goal}}"\n'
            '[[tools]]\nname = "http_fetch"\napproval = "always"\n[budget]\nmax_steps = 7\n'
        )
        second = http.post("/v1/agents", content=toml, headers=TOML)
        assert second.status_code == 201 and second.json()["version"] == 2, second.text

        spec = {"name": name, "tools": [{"name": "http_fetch"}], "budget": {"max_steps": 9}}
        third = http.post("/v1/agents", json={"spec": spec})
        assert third.status_code == 201 and third.json()["version"] == 3, third.text
        as_text = http.post("/v1/agents", json={"text": json.dumps(spec), "format": "json"})
        assert as_text.status_code == 200 and as_text.json()["version"] == 3, as_text.text

        newest = http.get(f"/v1/agents/{name}").json()
        assert newest["version"] == 3 and newest["spec"]["budget"]["max_steps"] == 9
        assert "http_fetch" in [t["name"] for t in newest["tools"]]
        versions = http.get(f"/v1/agents/{name}/versions").json()["items"]
        assert [v["version"] for v in versions] == [1, 2, 3]
        assert {v["created_by"] for v in versions} == {"ana"}
        v2 = http.get(f"/v1/agents/{name}/versions/2").json()
        assert v2["spec"]["budget"]["max_steps"] == 7
        listed = {a["name"]: a for a in http.get("/v1/agents").json()["items"]}
        assert listed[name]["newest"] == 3 and listed[name]["versions"] == 3

        for path in (f"/v1/agents/{name}/versions/9", "/v1/agents/no-such-agent"):
            missing = http.get(path)
            assert missing.status_code == 404, path
            assert missing.json()["error"]["code"] == "unknown_agent"


def test_bad_definitions_are_refused_at_their_line(api: ApiServer) -> None:
    name = _name()
    with api.client(api.token(Scope.ADMIN)) as http:
        bad = f"name: {name}\nbudget:\n  max_steps: lots\ntools:\n  - name: no_such_tool\n"
        r = http.post("/v1/agents", content=bad, headers=YAML)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_agent_definition"
        lines = {d["loc"][0]: d["line"] for d in error["details"] if d["loc"]}
        assert lines["budget.max_steps"] == 3, error
        assert http.get(f"/v1/agents/{name}").status_code == 404  # nothing stored

        broken = http.post("/v1/agents", content="name = [", headers=TOML)
        assert broken.status_code == 422, broken.text
        # A few hundred bytes of nested aliases standing for 9**9 values: refused as they
        # are counted, where their expansion held the API (every route) for minutes.
        bomb = [f"name: {name}", 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
        bomb += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 10)]
        refused = http.post("/v1/agents", content="\n".join(bomb), headers=YAML)
        assert refused.status_code == 422, refused.text
        assert "through its aliases" in refused.json()["error"]["message"], refused.text
        assert (
            http.post(
                "/v1/agents", content=b"{nope", headers={"Content-Type": "application/json"}
            ).status_code
            == 400
        )
        both = http.post("/v1/agents", json={"text": "x", "spec": {"name": name}})
        assert both.status_code == 422
        nul = http.post("/v1/agents", json={"text": f"name: {name}\x00\n", "format": "yaml"})
        assert nul.status_code == 422, nul.text
        other = http.post("/v1/agents", content="x", headers={"Content-Type": "text/plain"})
        assert (
            other.status_code == 415 and other.json()["error"]["code"] == "unsupported_media_type"
        )


def test_unknown_fields_in_a_json_body_are_refused(api: ApiServer) -> None:
    name = _name()
    with api.client(api.token(Scope.ADMIN)) as http:
        spec = {"name": name, "budget": {"max_steps": 3}}
        for body in (
            {"spec": spec, "dry_run": True},
            {"text": json.dumps(spec), "format": "json", "fromat": "yaml"},
        ):
            r = http.post("/v1/agents", json=body)
            assert r.status_code == 422, r.text
            error = r.json()["error"]
            assert error["code"] == "invalid_request", error
            [unknown] = [k for k in body if k not in ("spec", "text", "format")]
            assert unknown in error["message"], error
            assert http.get(f"/v1/agents/{name}").status_code == 404  # nothing stored
        # Inside `spec` the definition's own fields are checked as a file's are.
        inner = http.post("/v1/agents", json={"spec": {**spec, "budgett": 1}})
        assert inner.status_code == 422, inner.text
        assert "budgett" in inner.json()["error"]["message"]
        assert http.post("/v1/agents", json={"spec": spec}).status_code == 201


def test_a_lone_surrogate_in_a_definition_is_422_and_stores_nothing(api: ApiServer) -> None:
    name = _name()
    # JSON's "\ud800" (and YAML's) parse to text that UTF-8 cannot hold.
    as_json = b'{"spec": {"name": "%s", "description": "half \\ud800 a pair"}}' % name.encode()
    as_text = {"text": f'name: {name}\ndescription: "half \\ud800"\n', "format": "yaml"}
    answers = []
    with api.client(api.token(Scope.ADMIN)) as http:
        for body, media in (
            (as_json, "application/json"),
            (json.dumps(as_text).encode(), "application/json"),
            (as_text["text"].encode(), "application/yaml"),
        ):
            answers.append(http.post("/v1/agents", content=body, headers={"Content-Type": media}))
        for r in answers:
            assert r.status_code == 422, [(a.status_code, a.text) for a in answers]
            assert "surrogate" in r.json()["error"]["message"], r.text
        assert http.get(f"/v1/agents/{name}").status_code == 404  # nothing stored
        pair = {"spec": {"name": name, "description": "a pair \U0001f600 is fine"}}
        assert http.post("/v1/agents", json=pair).status_code == 201


def test_a_definition_nested_too_deeply_is_refused_not_a_500(api: ApiServer) -> None:
    """A YAML or TOML body nested a thousand levels deep was a 500 (RecursionError); a
    JSON body too deep to read said only that it was not valid JSON."""
    name = _name()
    deep = "[" * 1000 + "]" * 1000
    with api.client(api.token(Scope.ADMIN)) as http:
        for body, media in (
            (f"name: {name}\nx: {deep}\n", "application/yaml"),
            (f'name = "{name}"\nx = {deep}\n', "application/toml"),
        ):
            r = http.post("/v1/agents", content=body.encode(), headers={"Content-Type": media})
            assert r.status_code == 422, r.text
            error = r.json()["error"]
            assert error["code"] == "invalid_agent_definition", error
            assert "nests deeper than 64 levels" in error["message"], error
        nested = "[" * 5000 + "]" * 5000
        spec = f'{{"spec": {{"name": "{name}", "x": {nested}}}}}'
        r = http.post(
            "/v1/agents", content=spec.encode(), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["message"] == "the body's JSON nests too deeply to be read"
        assert http.get(f"/v1/agents/{name}").status_code == 404


def test_scopes_and_agent_filters(api: ApiServer) -> None:
    mine, theirs = _name(), _name()
    with api.client(api.token(Scope.ADMIN)) as admin:
        for name in (mine, theirs):
            assert admin.post("/v1/agents", content=agent_yaml(name), headers=YAML).is_success
    with api.client(api.token(Scope.CONTROL)) as control:
        r = control.post("/v1/agents", content=agent_yaml(_name()), headers=YAML)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    with api.client(api.token(Scope.ADMIN, agents=[mine])) as scoped:
        names = {a["name"] for a in scoped.get("/v1/agents").json()["items"]}
        assert mine in names and theirs not in names
        assert scoped.get(f"/v1/agents/{mine}").status_code == 200
        for path in (f"/v1/agents/{theirs}", f"/v1/agents/{theirs}/versions"):
            assert scoped.get(path).status_code == 404, path
        refused = scoped.post("/v1/agents", content=agent_yaml(theirs, max_steps=2), headers=YAML)
        assert refused.status_code == 403, refused.text
    with api.client() as anonymous:
        assert anonymous.get("/v1/agents").status_code == 401


def test_an_agent_the_token_does_not_cover_reads_as_an_unknown_one(api: ApiServer) -> None:
    mine, theirs, nobody = _name(), _name(), _name()
    with api.client(api.token(Scope.ADMIN)) as admin:
        for name in (mine, theirs):
            assert admin.post("/v1/agents", content=agent_yaml(name), headers=YAML).is_success

    def answer(http: httpx.Client, method: str, path: str, name: str) -> tuple[int, object]:
        r = http.request(method, path.format(name), json={"text": "hi", "content": "x"})
        return r.status_code, json.loads(r.text.replace(name, "NAME"))

    with api.client(api.token(Scope.ADMIN, agents=[mine])) as scoped:
        for path in ("/v1/agents/{}", "/v1/agents/{}/versions", "/v1/agents/{}/versions/1"):
            hidden = answer(scoped, "GET", path, theirs)
            assert hidden == answer(scoped, "GET", path, nobody), path  # nothing leaks
            status, body = hidden
            assert status == 404 and body["error"]["code"] == "unknown_agent", hidden
            # `theirs` has a definition: the answer must not say it has none.
            assert "no definition" not in body["error"]["message"], hidden
        for method, path in (
            ("GET", "/v1/agents/{}/memory/search?q=x"),
            ("POST", "/v1/agents/{}/memory"),
            ("POST", "/v1/agents/{}/keys/k/messages"),
        ):
            assert answer(scoped, method, path, theirs) == answer(scoped, method, path, nobody)


def test_a_connection_the_server_does_not_have_is_warned_of(api: ApiServer) -> None:
    """As `vigil agent apply`: applied, with a warning that sessions will wait for a
    worker set up for the connection (the API server has only its default one here)."""
    name = _name()
    spec = {"name": name, "model": {"connection": "nowhere"}}
    with api.client(api.token(Scope.ADMIN)) as http:
        applied = http.post("/v1/agents", json={"spec": spec})
        plain = http.post("/v1/agents", json={"spec": {"name": _name()}})
    assert applied.status_code == 201, applied.text
    (warning,) = applied.json()["warnings"]
    assert warning.startswith("model connection 'nowhere' is not configured here (known: ")
    assert plain.status_code == 201 and plain.json()["warnings"] == [], plain.text
