"""A session whose transcript was archived and pruned: `show`, `export` and the API's
session read say so (where, when, how much) and how to bring it back, instead of an empty
transcript that looks like lost data; a copy (no prune) and a restored session read as
before."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer
from tests.support.api_sessions import api_for
from tests.support.cli import explain
from tests.support.llm_stub import Reply
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration


def _ended_session(cli: CLIStack) -> str:
    goal = cli.plan(Reply.tool_call("finish", {"summary": "archived later"}))
    end = cli.vigil.json(
        "start", goal, "--agent", f"arch-read-{uuid.uuid4().hex[:8]}", "--wait", timeout=120
    )
    assert end["status"] == "completed", end
    return str(end["id"])


def test_show_and_export_say_the_transcript_was_archived(cli: CLIStack) -> None:
    sid = _ended_session(cli)
    restore = f"vigil restore {sid}"

    cli.vigil.json("archive", sid)  # a copy: the transcript stays, nothing to say
    assert cli.vigil.json("show", sid)["archived"] is None
    moved = cli.vigil.json("archive", sid, "--prune")

    shown = cli.vigil.json("show", sid)
    assert shown["messages"] == []
    archived = shown["archived"]
    assert archived["uri"] == moved["uri"], archived
    assert archived["messages"] == moved["messages"] and archived["events"] == moved["events"]
    assert archived["archived_at"] and archived["restore"] == restore, archived

    human = cli.vigil.ok("show", sid).stdout
    assert "archived" in human and moved["uri"] in human and restore in human, human

    jsonl = cli.vigil.ok("export", sid)
    header = json.loads(jsonl.stdout.splitlines()[0])
    assert header["session"]["archive_uri"] == moved["uri"], header
    assert "archived" in jsonl.stderr and restore in jsonl.stderr, explain(jsonl)
    assert "Traceback" not in jsonl.stderr

    md = cli.vigil.ok("export", sid, "-f", "md")
    assert "**Archived:**" in md.stdout and restore in md.stdout, md.stdout
    assert moved["uri"] in md.stdout

    cli.vigil.json("restore", sid)
    shown = cli.vigil.json("show", sid)
    assert shown["archived"] is None and shown["messages"], shown
    again = cli.vigil.ok("export", sid, "-f", "md")
    assert again.stderr == "" and "**Archived:**" not in again.stdout, explain(again)


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with api_for(cli) as server:
        yield server


def test_the_api_session_read_says_the_transcript_was_archived(
    cli: CLIStack, api: ApiServer
) -> None:
    sid = _ended_session(cli)
    moved = cli.vigil.json("archive", sid, "--prune")
    with api.client(api.token(Scope.ADMIN)) as http:
        shown = http.get(f"/v1/sessions/{sid}").json()
        assert shown["messages"] == [], shown
        archived = shown["archived"]
        assert archived["uri"] == moved["uri"] and archived["messages"] == moved["messages"]
        assert archived["archived_at"] and archived["restore"] == f"vigil restore {sid}"
        # The transcript's and the events' pages say so too: they read as empty, as if
        # the session had said and done nothing.
        for page in ("transcript", "events"):
            read = http.get(f"/v1/sessions/{sid}/{page}").json()
            assert read["items"] == [] and read["archived"] == archived, (page, read)
        cli.vigil.json("restore", sid)
        assert http.get(f"/v1/sessions/{sid}").json()["archived"] is None
        for page in ("transcript", "events"):
            read = http.get(f"/v1/sessions/{sid}/{page}").json()
            assert read["items"] and read["archived"] is None, (page, read)
