"""Memory over HTTP: hybrid search, add, a subject's history, forget (kept for history,
never recalled again), within each token's scope and agents; and `vigil memory forget`
and `history` from the CLI."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api import ApiServer, running_api
from tests.support.cli import explain, record_cli
from vigil.activities.memory.store import MemoryRecord, MemoryStore
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack
from vigil.workers.tokens import Scope
from vigil.workers.wiring import make_embedder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[ApiServer]:
    with running_api(settings) as server:
        yield server


def stored(settings: Settings, agent: str, memory_id: int) -> MemoryRecord | None:
    async def go() -> MemoryRecord | None:
        url = settings.endpoints().database_url
        assert url is not None
        engine = make_engine(url, pool_size=1)
        try:
            return await MemoryStore(make_sessionmaker(engine), make_embedder(settings)).get(
                agent, memory_id
            )
        finally:
            await engine.dispose()

    return asyncio.run(go())


def base(agent: str) -> str:
    return f"/v1/agents/{agent}/memory"


def test_add_search_and_forget(api: ApiServer) -> None:
    agent = f"mem-{uuid.uuid4().hex[:8]}"
    with api.client(api.token(Scope.CONTROL, agents=[agent])) as http:
        fact = http.post(
            base(agent),
            json={"content": "The billing database runs on port 6432", "subject": "billing db"},
        )
        assert fact.status_code == 201, fact.text
        assert fact.json()["action"] == "inserted"
        lesson = http.post(
            base(agent),
            json={"content": "Restart billing workers one at a time", "kind": "lesson"},
        )
        assert lesson.status_code == 201
        moved = http.post(
            base(agent),
            json={"content": "The billing database moved to port 5433", "subject": "billing db"},
        )
        assert moved.json()["action"] == "superseded"
        assert moved.json()["superseded_ids"] == [fact.json()["id"]]

        found = http.get(f"{base(agent)}/search", params={"q": "billing database port"})
        assert found.status_code == 200, found.text
        ids = [m["id"] for m in found.json()["items"]]
        assert ids[0] == moved.json()["id"] and fact.json()["id"] not in ids
        both = http.get(
            f"{base(agent)}/search", params={"q": "billing port", "include_superseded": "true"}
        ).json()["items"]
        assert {fact.json()["id"], moved.json()["id"]} <= {m["id"] for m in both}
        lessons = http.get(
            f"{base(agent)}/search", params={"q": "billing", "kind": "lesson", "limit": 5}
        ).json()["items"]
        assert [m["id"] for m in lessons] == [lesson.json()["id"]]

        # A control token may add but not forget.
        refused = http.delete(f"{base(agent)}/{moved.json()['id']}")
        assert refused.status_code == 403

    with api.client(api.token(Scope.ADMIN, owner="dpo")) as http:
        gone = http.delete(f"{base(agent)}/{moved.json()['id']}", params={"reason": "wrong port"})
        assert gone.status_code == 200, gone.text
        body = gone.json()
        assert (body["forgotten_by"], body["forget_reason"]) == ("dpo", "wrong port")
        assert body["forgotten_at"] is not None and body["content"].endswith("5433")
        assert body["restored_ids"] == [fact.json()["id"]]  # what it had superseded
        again = http.delete(f"{base(agent)}/{moved.json()['id']}")
        assert (again.status_code, again.json()["error"]["code"]) == (404, "not_found")
        assert "is already forgotten (by dpo at " in again.json()["error"]["message"]

        for params in ({"q": "billing database port"},
                       {"q": "billing database port", "include_superseded": "true"}):  # fmt: skip
            ids = [
                m["id"] for m in http.get(f"{base(agent)}/search", params=params).json()["items"]
            ]
            assert moved.json()["id"] not in ids, params
        # What it had superseded is current again: found without include_superseded.
        current = http.get(f"{base(agent)}/search", params={"q": "billing database port"})
        (hit,) = [m for m in current.json()["items"] if m["id"] == fact.json()["id"]]
        assert hit["superseded"] is False
        # The same words again are a new memory, not merged into the forgotten one; it
        # supersedes the restored one, as any new memory on the subject does.
        anew = http.post(
            base(agent),
            json={"content": "The billing database moved to port 5433", "subject": "billing db"},
        ).json()
        assert anew["action"] == "superseded" and anew["id"] != moved.json()["id"]
        assert anew["superseded_ids"] == [fact.json()["id"]]

    kept = stored(api.settings, agent, moved.json()["id"])
    assert kept is not None and kept.forgotten and kept.forgotten_by == "dpo"
    first = stored(api.settings, agent, fact.json()["id"])
    assert first is not None and first.superseded_by == anew["id"]
    assert first.metadata["superseded_by_forgotten"] == moved.json()["id"]


def test_forget_takes_its_reason_in_a_json_body_or_refuses_the_body(api: ApiServer) -> None:
    """A JSON body's reason was dropped without a word (``forget_reason`` null): the
    reason was a query parameter only. A body now gives it, or is refused for what it
    holds, as every body is; so is a body on a route that takes none."""
    with api.client(api.token(Scope.ADMIN, owner="dpo")) as http:
        agent = f"forget-body-{uuid.uuid4().hex[:8]}"
        ids = [
            http.post(base(agent), json={"content": f"note {n}", "subject": f"s{n}"}).json()["id"]
            for n in range(3)
        ]
        said = http.request("DELETE", f"{base(agent)}/{ids[0]}", json={"reason": "wrong"})
        assert said.status_code == 200, said.text
        assert said.json()["forget_reason"] == "wrong"
        for body in ({"reasn": "typo"}, {"reason": 5}, ["wrong"]):
            bad = http.request("DELETE", f"{base(agent)}/{ids[1]}", json=body)
            assert bad.status_code == 422, (body, bad.text)
        both = http.request(
            "DELETE", f"{base(agent)}/{ids[1]}", params={"reason": "a"}, json={"reason": "b"}
        )
        assert both.status_code == 422 and "reason" in both.json()["error"]["message"], both.text
        assert http.delete(f"{base(agent)}/{ids[1]}", params={"reason": "q"}).status_code == 200
        schedule = http.request("DELETE", "/v1/schedules/no-such-schedule", json={"why": "x"})
        assert schedule.status_code == 422, schedule.text
        assert "takes no body" in schedule.json()["error"]["message"], schedule.text


def test_forgetting_restores_the_newest_memory_no_one_forgot_in_either_order(
    api: ApiServer,
) -> None:
    """Forgetting a memory that is not current restores nothing; forgetting the current
    one then restores the newest memory of the chain no one forgot. Forgotten in this
    order (the middle first), the oldest stayed superseded by the forgotten middle one,
    and the subject had no current memory; forgotten newest first, the oldest came back:
    now both orders end alike."""
    for order in ((1, 2), (2, 1)):
        agent = f"mem-{uuid.uuid4().hex[:8]}"
        with api.client(api.token(Scope.ADMIN)) as http:
            ids = [
                http.post(base(agent), json={"content": text, "subject": "region"}).json()["id"]
                for text in ("We run in eu-west-1", "We run in eu-central-1", "We run in us-east-2")
            ]
            said = [http.delete(f"{base(agent)}/{ids[i]}").json() for i in order]
            if order == (1, 2):  # the middle is not current: nothing to restore
                assert [s["restored_ids"] for s in said] == [[], [ids[0]]], said
            else:  # each was current in its turn
                assert [s["restored_ids"] for s in said] == [[ids[1]], [ids[0]]], said
        oldest = stored(api.settings, agent, ids[0])
        assert oldest is not None and oldest.superseded_by is None, order
        assert oldest.forgotten_at is None


def test_scopes_agents_and_unknown_ids(api: ApiServer) -> None:
    agent = f"mem-{uuid.uuid4().hex[:8]}"
    with api.client(api.token(Scope.READ)) as http:
        assert http.get(f"{base(agent)}/search", params={"q": "x"}).json() == {"items": []}
        add = http.post(base(agent), json={"content": "x"})
        assert (add.status_code, add.json()["error"]["code"]) == (403, "forbidden")
    with api.client(api.token(Scope.ADMIN, agents=["other"])) as http:
        for r in (http.get(f"{base(agent)}/search", params={"q": "x"}),
                  http.post(base(agent), json={"content": "x"}),
                  http.delete(f"{base(agent)}/1")):  # fmt: skip
            assert r.status_code == 403, r.text
    with api.client(api.token(Scope.ADMIN)) as http:
        missing = http.delete(f"{base(agent)}/999999999")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
        mine = http.post(base(agent), json={"content": "only mine"}).json()["id"]
        other = f"mem-{uuid.uuid4().hex[:8]}"
        assert http.delete(f"{base(other)}/{mine}").status_code == 404  # another agent's id
        for bad in (f"{base(agent)}/0", f"{base(agent)}/{2**63}", f"{base(agent)}/abc"):
            assert http.delete(bad).status_code == 422, bad
        for params in ({}, {"q": ""}, {"q": "x", "limit": 0}, {"q": "x", "limit": 101},
                       {"q": "x", "kind": "bogus"}):  # fmt: skip
            r = http.get(f"{base(agent)}/search", params=params)
            assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request"), params
        unknown_kind = http.get(f"{base(agent)}/search", params={"q": "x", "kind": "bogus"})
        assert "unknown memory kind 'bogus'" in unknown_kind.json()["error"]["message"]
        # A check of vigil's after parsing gives details too, as every 422 does.
        (detail,) = unknown_kind.json()["error"]["details"]
        assert detail["loc"] == [] and "unknown memory kind 'bogus'" in detail["msg"]
        for body in ({}, {"content": ""}, {"content": "x", "importance": 2},
                     {"content": "nul \x00 inside"}, {"content": "   "},
                     {"content": "x", "extra": 1}):  # fmt: skip
            r = http.post(base(agent), json=body)
            assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request"), body
        # NaN (which Python's JSON takes) was told it "should be less than or equal to 1".
        nan = http.post(
            base(agent),
            content=b'{"content": "x", "importance": NaN}',
            headers={"Content-Type": "application/json"},
        )
        assert nan.status_code == 422, nan.text
        assert nan.json()["error"]["message"] == "importance: Input should be a finite number"
    with api.client() as http:
        assert http.get(f"{base(agent)}/search", params={"q": "x"}).status_code == 401


def test_cli_forget(api: ApiServer, stack: Stack, database_url: str, tmp_path: Path) -> None:
    agent = f"mem-{uuid.uuid4().hex[:8]}"
    with api.client(api.token(Scope.CONTROL)) as http:
        mid = http.post(base(agent), json={"content": "the deploy key lives in vault"}).json()["id"]
    vigil = record_cli(stack.settings.resolved_state_dir, database_url, tmp_path)
    done = vigil.json(
        "memory", "forget", str(mid), "--agent", agent, "--by", "ana", "--reason", "moved"
    )
    assert (done["id"], done["forgotten_by"], done["forget_reason"]) == (mid, "ana", "moved")
    assert vigil.json("memory", "search", "deploy key", "--agent", agent) == []
    unknown = vigil("memory", "forget", "424242424", "--agent", agent)
    assert unknown.returncode == 4, explain(unknown)
    again = vigil("memory", "forget", str(mid), "--agent", agent)
    assert again.returncode == 4, explain(again)
    assert f"memory {mid} of agent '{agent}' is already forgotten (by ana at " in again.stderr

    vigil.ok(
        "memory", "add", "the runbook lives in the wiki", "--agent", agent, "--subject", "runbook"
    )
    newer = vigil.json(
        "memory", "add", "the runbook moved to git", "--agent", agent, "--subject", "runbook"
    )
    (older_id,) = newer["superseded_ids"]
    shown = vigil.ok(
        "memory", "search", "runbook", "--agent", agent, "--all", env={"COLUMNS": "200"}
    )
    lines = {line.split()[1]: line for line in shown.stdout.splitlines() if line.split()[1:2]
             and line.split()[1].isdigit()}  # fmt: skip
    assert "superseded" in lines[str(older_id)] and "current" in lines[str(newer["id"])]
    forgot = vigil.ok("memory", "forget", str(newer["id"]), "--agent", agent)
    assert f"current again (it had superseded them): {older_id}" in forgot.stdout
    back = vigil.json("memory", "search", "runbook", "--agent", agent)
    assert [(m["id"], m["superseded"]) for m in back] == [(older_id, False)]
    record = stored(api.settings, agent, mid)
    assert record is not None and record.forgotten_by == "ana"


def test_a_subjects_history_over_http_and_from_the_cli(
    api: ApiServer, stack: Stack, database_url: str, tmp_path: Path
) -> None:
    agent = f"mem-{uuid.uuid4().hex[:8]}"
    decomposed = "Cafe\u0301 hours"  # "Café hours" with a combining accent
    with api.client(api.token(Scope.CONTROL, agents=[agent])) as http:
        ids = [
            http.post(base(agent), json={"content": text, "subject": subject}).json()["id"]
            for text, subject in (("The café opens at 8", "Café hours"),
                                  ("The café opens at 9", decomposed),
                                  ("Lunch is at noon", "lunch"))
        ]  # fmt: skip
        shown = http.get(f"{base(agent)}/history", params={"subject": "CAFÉ HOURS"})
        assert shown.status_code == 200, shown.text
        items = shown.json()["items"]
        assert [(m["id"], m["superseded_by"]) for m in items] == [(ids[0], ids[1]), (ids[1], None)]
        assert {m["subject"] for m in items} == {"Café hours"}
        # A page holds the newest `limit` versions; next_before pages back.
        newest = http.get(f"{base(agent)}/history", params={"subject": "café hours", "limit": 1})
        assert [m["id"] for m in newest.json()["items"]] == [ids[1]]
        assert newest.json()["next_before"] == ids[1]
        oldest = http.get(
            f"{base(agent)}/history", params={"subject": "café hours", "limit": 1, "before": ids[1]}
        )
        assert [m["id"] for m in oldest.json()["items"]] == [ids[0]]
        assert oldest.json()["next_before"] is None and shown.json()["next_before"] is None
        assert http.get(f"{base(agent)}/history", params={"subject": "nothing"}).json() == {
            "items": [],
            "next_before": None,
        }
        for params in ({}, {"subject": ""}, {"subject": "   "}, {"subject": "x" * 1001},
                       {"subject": "x", "kind": "bogus"}, {"subject": "nul \x00"},
                       {"subject": "x", "limit": 0}, {"subject": "x", "limit": 1001},
                       {"subject": "x", "before": 0}):  # fmt: skip
            r = http.get(f"{base(agent)}/history", params=params)
            assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request"), params
        other = http.get(f"{base('someone-else')}/history", params={"subject": "lunch"})
        assert other.status_code == 403, other.text
    vigil = record_cli(stack.settings.resolved_state_dir, database_url, tmp_path)
    vigil.ok("memory", "forget", str(ids[1]), "--agent", agent, "--by", "ana")
    chain = vigil.json("memory", "history", decomposed, "--agent", agent)
    assert [(m["id"], m["forgotten_by"]) for m in chain] == [(ids[0], None), (ids[1], "ana")]
    paged = vigil.ok("memory", "history", "café hours", "--agent", agent, "--limit", "1")
    assert f"older versions: --before {ids[1]}" in paged.stdout
    table = vigil.ok("memory", "history", "café hours", "--agent", agent, env={"COLUMNS": "200"})
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in table.stdout.splitlines()]
    rows = {row[0]: row for row in cells if row and row[0].isdigit()}
    assert rows[str(ids[0])][3] == "current", table.stdout
    assert rows[str(ids[1])][3] == "forgotten by ana", table.stdout
    # Over HTTP a forgotten memory is listed to an admin token only, as only an admin
    # forgets: to the others it is gone, as in search.
    for scope, listed in ((Scope.READ, [ids[0]]), (Scope.ADMIN, [ids[0], ids[1]])):
        with api.client(api.token(scope)) as http:
            got = http.get(f"{base(agent)}/history", params={"subject": "café hours"}).json()
        assert [m["id"] for m in got["items"]] == listed, scope
    # A page of one to a reader is the newest it may see, with no cursor naming the
    # forgotten one (it was an empty page, next_before the forgotten id).
    with api.client(api.token(Scope.READ)) as http:
        one = http.get(f"{base(agent)}/history", params={"subject": "café hours", "limit": 1})
    assert one.json() == {"items": [one.json()["items"][0]], "next_before": None}
    assert one.json()["items"][0]["id"] == ids[0]
    added = vigil.ok("memory", "add", "Lunch is at one now", "--agent", agent, "--subject", "LUNCH")
    assert f"added for agent '{agent}', superseding {ids[2]} (the same subject)" in added.stdout
    kinded = vigil.ok("memory", "history", "lunch", "--agent", agent, "--kind", "lesson")
    assert f"agent '{agent}' has no memory of kind 'lesson' about 'lunch'" in kinded.stdout
    for blank in ("", "   "):  # 422 over HTTP; it said "no memory about ''", exit 0
        empty = vigil("memory", "history", blank, "--agent", agent)
        assert empty.returncode == 2 and "the subject is empty" in empty.stderr, explain(empty)
    none = vigil.ok("memory", "history", "dinner", "--agent", agent)
    assert f"agent '{agent}' has no memory about 'dinner'" in none.stdout
    huge = vigil("memory", "history", "lunch", "--agent", agent, "--before", str(2**70))
    assert huge.returncode == 2 and "is out of range: 1 to" in huge.stderr, explain(huge)
    bad = vigil("memory", "history", "lunch", "--agent", agent, "--kind", "bogus")
    assert bad.returncode == 2 and "unknown memory kind 'bogus'" in bad.stderr, explain(bad)


SECRET = "Deploy with key sk-proj-ABCdef0123456789ghijklmnop and password=hunter2"


def test_secrets_are_redacted_before_a_memory_is_stored(api: ApiServer, settings: Settings) -> None:
    """Redaction was written and tested but no setting turned it on: an API key and a
    password given to memory were stored, and recalled into later prompts, as given.
    ``VIGIL_MEMORY_REDACT`` turns it on for every writer (off by default)."""
    agent = f"mem-redact-{uuid.uuid4().hex[:6]}"
    careful = settings.model_copy(update={"memory_redact": True})
    with running_api(careful) as on, on.client(on.token(Scope.ADMIN)) as http:
        added = http.post(base(agent), json={"content": SECRET})
        assert added.status_code == 201, added.text
        assert added.json()["redactions"] == {"api_key": 1, "secret": 1}, added.text
    record = stored(settings, agent, added.json()["id"])
    assert record is not None
    assert "hunter2" not in record.content and "sk-proj" not in record.content
    assert "[redacted:api_key]" in record.content, record.content

    with api.client(api.token(Scope.ADMIN)) as http:  # the default: kept as given
        kept = http.post(base(agent), json={"content": SECRET, "kind": "lesson"})
        assert kept.status_code == 201 and kept.json()["redactions"] == {}, kept.text
    record = stored(settings, agent, kept.json()["id"])
    assert record is not None and record.content == SECRET
