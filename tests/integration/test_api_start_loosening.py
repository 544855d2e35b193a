"""A token below admin may narrow what an agent's definition allows when it starts a
session, never loosen it: replacing the definition's system prompt or raising one of its
budget limits is a 403 naming the field (on both start routes), lowering a limit is
anyone's, and an admin token may do both."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer, running_api
from tests.support.api_sessions import api_for, define, wait_status
from tests.support.llm_stub import Reply
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with api_for(cli) as server:
        yield server


def test_a_control_token_cannot_loosen_the_definition(cli: CLIStack, api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as admin:
        agent = define(admin, "loosen")  # a system prompt, budget max_steps = 5
    goal = cli.plan(Reply.text("hello"))
    keyed = f"/v1/agents/{agent}/keys/k1/messages"
    with api.client(api.token(Scope.CONTROL, owner="carol")) as http:
        for path, body, field in (
            (
                "/v1/sessions",
                {"agent": agent, "goal": goal, "system_prompt": "obey"},
                "system_prompt",
            ),
            (keyed, {"text": "hi", "system_prompt": "obey"}, "system_prompt"),
            (
                "/v1/sessions",
                {"agent": agent, "goal": goal, "budget": {"max_steps": 6}},
                "budget.max_steps",
            ),
            (keyed, {"text": "hi", "budget": {"max_steps": 500}}, "budget.max_steps"),
        ):
            r = http.post(path, json=body)
            assert r.status_code == 403, (path, body, r.text)
            assert r.json()["error"]["code"] == "forbidden"
            assert field in r.json()["error"]["message"], r.text
        assert http.get("/v1/sessions", params={"agent": agent}).json()["items"] == []
        narrowed = http.post(
            "/v1/sessions",
            json={
                "agent": agent,
                "goal": goal,
                "budget": {"max_steps": 3, "max_tokens": 100_000, "max_cost_usd": 1.5},
            },
        )
        assert narrowed.status_code == 201, narrowed.text  # lowering (or adding) a limit
    with api.client(api.token(Scope.ADMIN)) as admin:
        replaced = admin.post(
            "/v1/sessions",
            json={
                "agent": agent,
                "goal": goal,
                "system_prompt": "Another prompt. Goal: {goal}",
                "budget": {"max_steps": 50},
            },
        )
        assert replaced.status_code == 201, replaced.text


def test_a_control_token_cannot_drop_the_approvals_a_tool_gets_by_its_effects(
    cli: CLIStack, api: ApiServer
) -> None:
    # approval = "auto": http_fetch has external effects, so each call waits for a person;
    # an approve_tools list without it would run them unasked.
    name = f"auto-{uuid.uuid4().hex[:8]}"
    spec = f"name: {name}\ntools:\n  - name: http_fetch\n  - name: remember\n"
    with api.client(api.token(Scope.ADMIN)) as admin:
        applied = admin.post(
            "/v1/agents", content=spec, headers={"Content-Type": "application/yaml"}
        )
        assert applied.status_code == 201, applied.text
    goal = cli.plan(Reply.text("hello"))
    with api.client(api.token(Scope.CONTROL)) as http:
        for body in ({"approve_tools": []}, {"approve_tools": ["remember"]}):
            r = http.post("/v1/sessions", json={"agent": name, "goal": goal, **body})
            assert r.status_code == 403, (body, r.text)
            assert "http_fetch" in r.json()["error"]["message"], r.text
        kept = http.post(
            "/v1/sessions", json={"agent": name, "goal": goal, "approve_tools": ["http_fetch"]}
        )
        assert kept.status_code == 201, kept.text


def test_a_control_token_cannot_drop_a_never_tools_approval_rules(
    cli: CLIStack, api: ApiServer
) -> None:
    # approval = "never" beside approve_when: a call that meets a rule waits for a person
    # (the rule wins); an approve_tools list without the tool ran every call unasked.
    name = f"never-{uuid.uuid4().hex[:8]}"
    spec = (
        f"name: {name}\ntools:\n  - name: http_fetch\n    approval: never\n"
        "    approve_when:\n      - argument: url\n        host_not_in: [trusted.test]\n"
    )
    with api.client(api.token(Scope.ADMIN)) as admin:
        applied = admin.post(
            "/v1/agents", content=spec, headers={"Content-Type": "application/yaml"}
        )
        assert applied.status_code == 201, applied.text
    goal = cli.plan(Reply.text("hello"))
    with api.client(api.token(Scope.CONTROL)) as http:
        r = http.post("/v1/sessions", json={"agent": name, "goal": goal, "approve_tools": []})
        assert r.status_code == 403 and "http_fetch" in r.json()["error"]["message"], r.text


def test_an_approval_list_naming_a_tool_the_agent_lacks_is_refused(
    cli: CLIStack, api: ApiServer
) -> None:
    """An approval list replaces the definition's rules: one whose only name is a typo
    left every tool unasked, for an admin (who may loosen) without a word. A name the
    agent has no tool for is refused, as in an allowed-tools list."""
    name = f"typo-{uuid.uuid4().hex[:8]}"
    spec = f"name: {name}\ntools:\n  - name: write_artifact\n    approval: always\n"
    goal = cli.plan(Reply.text("hello"))
    with api.client(api.token(Scope.ADMIN)) as admin:
        applied = admin.post(
            "/v1/agents", content=spec, headers={"Content-Type": "application/yaml"}
        )
        assert applied.status_code == 201, applied.text
        started = admin.post(
            "/v1/sessions", json={"agent": name, "goal": goal, "approve_tools": ["wirte_artifact"]}
        )
        scheduled = admin.post(
            "/v1/schedules",
            json={
                "id": f"typo-{uuid.uuid4().hex[:8]}",
                "agent": name,
                "goal": "g",
                "every": "1h",
                "paused": True,
                "require_approval": ["wirte_artifact"],
            },
        )
    for refused in (started, scheduled):
        assert refused.status_code == 422, refused.text
        message = refused.json()["error"]["message"]
        assert "'wirte_artifact'" in message and "write_artifact" in message, message


def test_a_session_says_which_version_of_its_agent_it_runs(cli: CLIStack, api: ApiServer) -> None:
    """The record kept the agent version a session runs (a redirect moves it), but neither
    the API's session page nor `vigil show --json` said it."""
    name = f"versioned-{uuid.uuid4().hex[:8]}"
    with api.client(api.token(Scope.ADMIN)) as admin:
        for prompt in ("First. {goal}", "Second. {goal}"):
            spec = f'name: {name}\nsystem_prompt: "{prompt}"\n'
            applied = admin.post(
                "/v1/agents", content=spec, headers={"Content-Type": "application/yaml"}
            )
            assert applied.status_code == 201, applied.text
        started = admin.post(
            "/v1/sessions", json={"agent": name, "goal": cli.plan(Reply.text("done"))}
        )
        assert started.status_code == 201, started.text
        sid = started.json()["id"]
        wait_status(admin, sid, "completed")
        page = admin.get(f"/v1/sessions/{sid}").json()["session"]
    assert page["agent_version"] == 2, page
    shown = cli.vigil.json("show", sid)["session"]
    assert shown["agent_version"] == 2, shown


def test_a_control_token_cannot_take_an_older_looser_version(cli: CLIStack, api: ApiServer) -> None:
    """The check compared the start with the version the caller chose, and any caller could
    choose an older one: version 1 without the approval rule version 2 added ran
    ``write_artifact`` unasked, started, sent to a key, or redirected onto. Below admin,
    only the newest version may be chosen."""
    name = f"older-{uuid.uuid4().hex[:8]}"
    loose = f"name: {name}\ntools:\n  - name: write_artifact\n"
    strict = f"name: {name}\ntools:\n  - name: write_artifact\n    approval: always\n"
    goal = cli.plan(Reply.text("hello"))
    with api.client(api.token(Scope.ADMIN)) as admin:
        for spec in (loose, strict):
            applied = admin.post(
                "/v1/agents", content=spec, headers={"Content-Type": "application/yaml"}
            )
            assert applied.status_code == 201, applied.text
        asks = Reply.tool_call("write_artifact", {"name": "w.txt", "content": "x"})
        running = admin.post(
            "/v1/sessions", json={"agent": name, "goal": cli.plan(asks, Reply.text("done"))}
        )
        assert running.status_code == 201, running.text
        sid = running.json()["id"]
    with api.client(api.token(Scope.CONTROL, agents=[name])) as http:
        for path, body in (
            ("/v1/sessions", {"agent": name, "goal": goal, "agent_version": 1}),
            (f"/v1/agents/{name}/keys/k1/messages", {"text": "hi", "agent_version": 1}),
            (f"/v1/sessions/{sid}/redirect", {"goal": "again", "agent_version": 1}),
        ):
            r = http.post(path, json=body)
            assert r.status_code == 403, (path, r.text)
            assert r.json()["error"]["code"] == "forbidden"
            # The name quoted once ("agent 'x''s newest" read as a doubled quote).
            said = r.json()["error"]["message"]
            assert said.startswith(
                f"agent_version: 1 is not the newest version (2) of agent {name!r}"
            ), said
            assert "newest" in r.json()["error"]["message"], r.text
        assert [
            s["id"] for s in http.get("/v1/sessions", params={"agent": name}).json()["items"]
        ] == [sid]
        newest = http.post("/v1/sessions", json={"agent": name, "goal": goal, "agent_version": 2})
        assert newest.status_code == 201, newest.text  # the newest, named, is anyone's
    with api.client(api.token(Scope.ADMIN)) as admin:
        older = admin.post("/v1/sessions", json={"agent": name, "goal": goal, "agent_version": 1})
        assert older.status_code == 201, older.text  # an admin's choice
        assert admin.post(f"/v1/sessions/{sid}/cancel").status_code in (200, 202)


def test_a_control_token_cannot_drop_the_default_approvals_of_an_undefined_agent(
    cli: CLIStack,
) -> None:
    """With undefined agents allowed, a session of one runs the built-in tools under the
    default policy (http_fetch waits for a person): a control token's empty approve_tools
    ran its fetches unasked, where a defined agent's gates are kept."""
    settings = cli.settings.model_copy(update={"allow_undefined_agents": True})
    with running_api(settings) as api:
        agent = f"undefined-{uuid.uuid4().hex[:8]}"
        goal = cli.plan(Reply.text("hello"))
        keyed = f"/v1/agents/{agent}/keys/k1/messages"
        with api.client(api.token(Scope.CONTROL, owner="carol")) as http:
            for path, body in (
                ("/v1/sessions", {"agent": agent, "goal": goal, "approve_tools": []}),
                ("/v1/sessions", {"agent": agent, "goal": goal, "approve_tools": ["remember"]}),
                (keyed, {"text": "hi", "approve_tools": []}),
            ):
                r = http.post(path, json=body)
                assert r.status_code == 403, (path, body, r.text)
                assert "http_fetch" in r.json()["error"]["message"], r.text
            kept = http.post(
                "/v1/sessions",
                json={"agent": agent, "goal": goal, "approve_tools": ["http_fetch", "remember"]},
            )
            assert kept.status_code == 201, kept.text  # the gate kept, one more added
            wait_status(http, kept.json()["id"], "completed")
        with api.client(api.token(Scope.ADMIN)) as admin:
            dropped = admin.post(
                "/v1/sessions", json={"agent": agent, "goal": goal, "approve_tools": []}
            )
            assert dropped.status_code == 201, dropped.text
