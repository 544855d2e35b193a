"""`vigil erase` removes a subject from every store and leaves only a receipt.

A real session (worker process, LLM stub, artifacts in MinIO) carries a marker in its
goal, the model's words, a tool's arguments and output (a claim-checked one too), an
artifact, a memory it asked for and the memory of its outcome; it is archived. After
`vigil erase`, the marker is in no PostgreSQL table, no object of the store (archives
decompressed) and no Temporal history, and the receipt says what was removed. What
another session still refers to (bytes both wrote) stays.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from tests.integration.conftest import CLIStack
from tests.support.cli import (
    CLI,
    ROOT,
    SessionScripts,
    Vigil,
    WorkerProcess,
    cli_env,
    explain,
    poll,
)
from tests.support.llm_stub import LLMStub, Reply
from vigil.activities.artifacts.s3 import S3Store
from vigil.activities.record import retention
from vigil.schema import names
from vigil.workers.credentials import CredentialService
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack
from vigil.workers.wiring import make_embedder, make_s3_client

pytestmark = pytest.mark.integration

SHARED = "bytes two sessions wrote alike\n"


@pytest.fixture(scope="module")
def s3cli(
    stack: Stack, database_url: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CLIStack]:
    """A worker process storing artifacts in MinIO, with a small inline limit so that a
    tool's output is claim-checked into the store."""
    task_queue = f"tq-erase-{uuid.uuid4()}"
    tmp = tmp_path_factory.mktemp("erase")
    scripts = SessionScripts()
    with LLMStub() as stub:
        stub.default = scripts
        env = cli_env(
            database_url=database_url,
            state_dir=stack.settings.resolved_state_dir,
            task_queue=task_queue,
            model_url=stub.url_openai,
            artifact_dir=tmp / "artifacts",
            VIGIL_ARTIFACT_BACKEND="s3",
            VIGIL_INLINE_LIMIT_BYTES="256",
        )
        worker = WorkerProcess(env, tmp / "worker.log").start()
        local = settings.model_copy(
            update={
                "task_queue": task_queue,
                "artifact_dir": tmp / "artifacts",
                "artifact_backend": "s3",
            }
        )
        try:
            yield CLIStack(stub, scripts, Vigil(env), worker, local, database_url)
        finally:
            code = worker.stop()
        assert code == 0, worker.log()[-3000:]
        assert "Traceback" not in worker.log(), worker.log()[-3000:]


def _marked_session(cli: CLIStack, agent: str, marker: str) -> str:
    """Run a session that spreads ``marker`` everywhere; returns its id."""
    notes = f"notes-{marker}.txt"
    cli.scripts.scripts[marker] = [
        Reply.tool_call(
            "write_artifact",
            {"name": notes, "content": f"{marker} " + "private notes " * 40},
            content=f"writing the notes on {marker}",
        ),
        Reply.tool_call("write_artifact", {"name": "shared.txt", "content": SHARED}),
        Reply.tool_call(
            "remember",
            {"content": f"the code word is {marker}; " + "keep it safe " * 30, "subject": marker},
        ),
        Reply.tool_call("read_artifact", {"name": notes, "max_chars": 400}),
        # Its output, over the worker's inline limit, is stored as an artifact.
        Reply.tool_call("recall", {"query": "code word"}),
        Reply.tool_call("finish", {"summary": f"done with {marker}"}),
    ]
    return _run(cli, agent, f"plan the trip {marker}")


def _answering(cli: CLIStack, answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `vigil ...` with ``answer`` typed at its prompt."""
    return subprocess.run(
        [*CLI, *args],
        env=cli.vigil.env,
        cwd=ROOT,
        input=answer,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _run(cli: CLIStack, agent: str, goal: str) -> str:
    end = cli.vigil.json("start", goal, "--agent", agent, "--wait", timeout=120)
    assert end["status"] == "completed", end
    return str(end["id"])


async def _tables_holding(database_url: str, marker: str) -> dict[str, int]:
    """Rows of every table of the database whose text holds ``marker``."""
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as db:
            tables = (
                await db.execute(
                    text(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
                    )
                )
            ).scalars()
            found = {}
            for table in list(tables):
                n = (
                    await db.execute(
                        text(f'SELECT count(*) FROM "{table}" x WHERE x::text ILIKE :m'),
                        {"m": f"%{marker}%"},
                    )
                ).scalar_one()
                if n:
                    found[table] = int(n)
            return found
    finally:
        await engine.dispose()


def _objects_holding(settings: Settings, marker: str) -> list[str]:
    """Objects of the MinIO bucket (and files of the filesystem store) holding ``marker``,
    gzip archives decompressed."""
    needle = marker.encode()

    def holds(data: bytes) -> bool:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        return needle in data

    store = S3Store(make_s3_client(settings), settings.s3_bucket)
    found = []
    for obj in store.client.list_objects(store.bucket, recursive=True):
        response = store.client.get_object(store.bucket, obj.object_name or "")
        try:
            if holds(response.read()):
                found.append(f"s3:{obj.object_name}")
        finally:
            response.close()
            response.release_conn()
    root = settings.endpoints().artifact_dir
    for path in root.rglob("*") if root.exists() else []:
        if path.is_file() and holds(path.read_bytes()):
            found.append(str(path))
    return found


async def _histories_holding(client: Client, task_queue: str, marker: str) -> list[str]:
    """Workflow runs on the task queue whose history holds ``marker`` anywhere."""
    found = []
    async for wf in client.list_workflows(f"TaskQueue = '{task_queue}'"):
        handle = client.get_workflow_handle(wf.id, run_id=wf.run_id)
        history = await handle.fetch_history()
        raw = b"".join(event.SerializeToString() for event in history.events)
        if marker.encode() in raw:
            found.append(f"{wf.id}/{wf.run_id}")
    return found


async def _gone_from_temporal(client: Client, workflow_id: str) -> bool:
    """Deleted from the server and from its visibility store. Temporal deletes an
    execution asynchronously (the request returns before the rows are gone, and a loaded
    server takes seconds), so callers poll this."""
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        assert exc.status == RPCStatusCode.NOT_FOUND
        return [wf async for wf in client.list_workflows(f"WorkflowId = '{workflow_id}'")] == []
    return False


def _everywhere(cli: CLIStack, client: Client, marker: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        return {
            "postgres": await _tables_holding(cli.database_url, marker),
            "temporal": await _histories_holding(client, cli.settings.task_queue, marker),
        }

    found = asyncio.run(go())
    found["objects"] = _objects_holding(cli.settings, marker)
    return found


def test_erasing_a_session_leaves_only_its_receipt(s3cli: CLIStack, client: Client) -> None:
    cli = s3cli
    agent = f"erase-{uuid.uuid4().hex[:8]}"
    marker = f"zq{uuid.uuid4().hex[:12]}"
    session = _marked_session(cli, agent, marker)
    keeper = cli.plan(
        Reply.tool_call("write_artifact", {"name": "shared.txt", "content": SHARED}),
        Reply.tool_call("finish", {"summary": "kept"}),
        label="keep the shared bytes",
    )
    kept = _run(cli, agent, keeper)
    archived = cli.vigil.json("archive", session, "--prune")
    assert archived["pruned"] and archived["messages"] >= 10

    before = _everywhere(cli, client, marker)
    assert {"sessions", "memories", "artifact_links"} <= set(before["postgres"])
    assert before["temporal"] and len(before["objects"]) >= 3  # notes, tool output, archive

    receipt = cli.vigil.json("erase", "--session", session, "--yes", "--by", "dpo")
    assert receipt["subject_kind"] == "session" and receipt["subject_id"] == session
    assert receipt["requested_by"] == "dpo"
    counts = receipt["counts"]
    assert counts["sessions"] == 1 and counts["archives"] == 1
    assert counts["memories"] == 2  # the one it asked for, and its outcome
    assert counts["artifacts"] == 2  # the notes and the claim-checked read of them
    assert counts["objects"] == 3 and counts["workflow_runs"] >= 1

    poll(lambda: asyncio.run(_gone_from_temporal(client, session)), 60, "deleted in Temporal")
    assert _everywhere(cli, client, marker) == {"postgres": {}, "temporal": [], "objects": []}
    [listed] = cli.vigil.json("erasures", "--subject", session)
    assert listed["id"] == receipt["id"] and listed["counts"] == counts

    # What another session refers to stays: its record, and the bytes both wrote.
    shared = cli.vigil.json("artifact", "get", kept, "shared.txt", "-o", "/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode), "artifact get replaced /dev/null"
    assert shared["size"] == len(SHARED)
    export = cli.vigil.ok("export", kept, "-f", "jsonl")
    assert "keep the shared bytes" in export.stdout

    # Erasing again finds nothing to erase (the session named as every other command
    # names one: `vigil erase ID` took no id, only --session).
    again = cli.vigil("erase", session, "--yes")
    assert again.returncode == 4 and "nothing to erase" in again.stderr, explain(again)
    both = cli.vigil("erase", session, "--session", "another", "--yes")
    assert both.returncode == 2 and "two sessions named" in both.stderr, explain(both)


def _versions_session(cli: CLIStack, agent: str, key: str, name: str, *contents: str) -> str:
    """A session that writes ``name`` once with each of ``contents``, then finishes."""
    cli.scripts.scripts[key] = [
        *[Reply.tool_call("write_artifact", {"name": name, "content": c}) for c in contents],
        Reply.tool_call("finish", {"summary": "written"}),
    ]
    return _run(cli, agent, f"write {name} {key}")


async def _artifact_rows(database_url: str, sha: str) -> int:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as db:
            n = await db.execute(
                text("SELECT count(*) FROM artifacts WHERE sha256 = :s"), {"s": sha}
            )
            return int(n.scalar_one())
    finally:
        await engine.dispose()


def test_erasing_an_archived_session_removes_its_artifacts_earlier_versions(
    s3cli: CLIStack,
) -> None:
    """Pruning deletes a session's events, and the earlier versions of its artifacts were
    found only there: erasing a session archived with --prune left an earlier version's
    row and bytes for good. Its release of the agent's hold went too far the other way:
    an earlier version that only another pruned session named lost its bytes."""
    cli = s3cli
    agent = f"erase-versions-{uuid.uuid4().hex[:8]}"
    marker = f"zq{uuid.uuid4().hex[:12]}"
    secret = _versions_session(
        cli, agent, marker, "notes.txt", f"{marker} the first draft", "the clean copy"
    )
    kept_old = f"an earlier version another session keeps {uuid.uuid4().hex}"
    other = uuid.uuid4().hex
    keeper = _versions_session(cli, agent, f"k{other}", "kept.txt", kept_old, "its newer one")
    sharer = _versions_session(cli, agent, f"s{other}", "same.txt", kept_old)
    for session in (secret, keeper):
        assert cli.vigil.json("archive", session, "--prune")["pruned"]

    cli.vigil.json("erase", "--session", secret, "--yes")
    assert _objects_holding(cli.settings, marker) == [], "the first draft's bytes stay"
    assert asyncio.run(_tables_holding(cli.database_url, marker)) == {}

    cli.vigil.json("erase", "--session", sharer, "--yes")
    sha = hashlib.sha256(kept_old.encode()).hexdigest()
    assert asyncio.run(_artifact_rows(cli.database_url, sha)) == 1
    assert S3Store(make_s3_client(cli.settings), cli.settings.s3_bucket).exists(sha)
    cli.vigil.ok("restore", keeper)
    got = cli.vigil.ok("artifact", "get", keeper, "kept.txt", "--version", "1", "-o", "-")
    assert got.stdout == kept_old


async def _memories_of(database_url: str, agent: str) -> list[dict[str, Any]]:
    """The agent's memories as stored, with each vector."""
    engine = make_engine(database_url)
    try:
        async with engine.connect() as db:
            rows = await db.execute(
                text(
                    "SELECT id, content, source_session_id, metadata, embedding::text AS v "
                    "FROM memories WHERE agent_id = :a ORDER BY id"
                ),
                {"a": agent},
            )
            return [{**row._asdict(), "v": json.loads(row.v)} for row in rows]
    finally:
        await engine.dispose()


def test_what_another_session_merged_into_an_erased_memory_stays(s3cli: CLIStack) -> None:
    """Session B remembers a near-duplicate of what session A remembered: it merges into
    A's memory as a note. Erasing A removes A's words, and B's note becomes the memory
    (its words, its session, a vector of its words, a new id), still recalled."""
    cli = s3cli
    agent = f"erase-merge-{uuid.uuid4().hex[:8]}"
    first_words = "User prefers dark mode in the editor"
    later_words = "user prefers DARK mode in the editor!"

    def remembering(words: str, label: str) -> str:
        plan = cli.plan(
            Reply.tool_call("remember", {"content": words}),
            Reply.tool_call("finish", {"summary": f"{label} {uuid.uuid4().hex}"}),
            label=label,
        )
        return _run(cli, agent, plan)

    first = remembering(first_words, "the first preference")
    later = remembering(later_words, "the same preference again")
    [merged] = [
        m for m in asyncio.run(_memories_of(cli.database_url, agent))
        if m["content"] == first_words
    ]  # fmt: skip
    assert merged["source_session_id"] == first
    assert [n["source_session_id"] for n in merged["metadata"]["merges"]] == [later]

    receipt = cli.vigil.json("erase", "--session", first, "--yes")
    # Its outcome goes; the merged memory is handed on to the later session.
    assert receipt["counts"]["memories"] == 1
    assert receipt["counts"]["memories_handed_on"] == 1

    after = asyncio.run(_memories_of(cli.database_url, agent))
    [kept] = [m for m in after if m["content"] == later_words]
    assert kept["id"] != merged["id"] and kept["source_session_id"] == later
    assert "merges" not in kept["metadata"] and "merge_count" not in kept["metadata"]
    assert first_words not in json.dumps(after) and first not in json.dumps(after)
    [vector] = asyncio.run(make_embedder(cli.settings).embed([later_words]))
    assert kept["v"] == pytest.approx(vector, abs=1e-6)  # a vector of B's words now
    found = cli.vigil.json("memory", "search", "dark mode editor", "--agent", agent)
    assert [m["content"] for m in found][:1] == [later_words]


def _erase_after_ten_years(database_url: str, agent: str) -> None:
    """A retention policy for ``agent``, set on the record alone: `vigil retention set`
    would also point the namespace's one retention schedule at this test's queue, under
    test_cli_retention.py running beside it on another test worker."""

    async def go() -> None:
        engine = make_engine(database_url, pool_size=1)
        try:
            async with make_sessionmaker(engine).begin() as db:
                await retention.set_policy(
                    db, agent, archive_after=None, erase_after=timedelta(days=3650), by="test"
                )
        finally:
            await engine.dispose()

    asyncio.run(go())


def test_erasing_an_agent_asks_first_then_removes_all_it_had(
    s3cli: CLIStack, client: Client, tmp_path: Path
) -> None:
    cli = s3cli
    agent, other = f"erase-agent-{uuid.uuid4().hex[:8]}", f"erase-other-{uuid.uuid4().hex[:8]}"
    marker = f"zq{uuid.uuid4().hex[:12]}"
    # A definition (its versions are immutable rows) goes with the agent too.
    spec = tmp_path / f"{agent}.toml"
    spec.write_text(
        f'name = "{agent}"\nsystem_prompt = "You plan trips ({marker}). Goal: {{goal}}"\n'
        "tools = ["
        + ", ".join(f'{{ name = "{t}" }}' for t in ("write_artifact", "read_artifact", "remember"))
        + ', { name = "recall" }, { name = "finish" }]\n'
    )
    cli.vigil.ok("agent", "apply", str(spec))
    first = _marked_session(cli, agent, marker)
    second = _run(cli, agent, cli.plan(Reply.text(f"another word on {marker}"), label="more"))
    untouched = _run(cli, other, cli.plan(Reply.text("not mine"), label="elsewhere"))
    _erase_after_ten_years(cli.database_url, agent)
    assert any(p["agent_id"] == agent for p in cli.vigil.json("retention", "show"))

    refused = _answering(cli, "n\n", "erase", "--agent", agent)
    assert refused.returncode == 1, explain(refused)
    assert "2 sessions" in refused.stderr and "cannot be undone" in refused.stderr
    assert _everywhere(cli, client, marker)["postgres"]  # nothing was erased

    confirmed = _answering(cli, "y\n", "erase", "--agent", agent, "--json")
    assert confirmed.returncode == 0, explain(confirmed)
    receipt = json.loads(confirmed.stdout)
    assert receipt["subject_kind"] == "agent" and receipt["counts"]["sessions"] == 2
    assert receipt["counts"]["agents"] == 1

    for session in (first, second):
        poll(lambda s=session: asyncio.run(_gone_from_temporal(client, s)), 60, "deleted")
    assert _everywhere(cli, client, marker) == {"postgres": {}, "temporal": [], "objects": []}
    assert asyncio.run(_tables_holding(cli.database_url, agent)) == {
        "erasure_receipts": 1
    }  # the receipt names whom it erased, nothing else does
    assert all(p["agent_id"] != agent for p in cli.vigil.json("retention", "show"))
    assert "not mine" in cli.vigil.ok("export", untouched).stdout
    unknown = cli.vigil("erase", "--agent", f"nobody-{uuid.uuid4().hex[:6]}", "--yes")
    assert unknown.returncode == 4 and "nothing to erase" in unknown.stderr, explain(unknown)


def test_an_agent_with_only_a_definition_and_a_trigger_is_erased(
    s3cli: CLIStack, tmp_path: Path
) -> None:
    """An agent that never ran a session still has rows to erase: its definition, and a
    trigger that would start its sessions. It was "nothing to erase"."""
    cli = s3cli
    agent = f"erase-lonely-{uuid.uuid4().hex[:8]}"
    spec = tmp_path / f"{agent}.toml"
    spec.write_text(f'name = "{agent}"\nsystem_prompt = "Goal: {{goal}}"\n')
    cli.vigil.ok("agent", "apply", str(spec))
    trigger = f"lonely-{uuid.uuid4().hex[:6]}"
    cli.vigil.ok("trigger", "create", trigger, "--agent", agent, "--goal-template", "x {a}")

    asked = _answering(cli, "n\n", "erase", "--agent", agent)
    assert asked.returncode == 1, explain(asked)
    assert asked.stderr.endswith("error: not erased: answer y, or give --yes\n"), asked.stderr
    # No terminal, nothing on standard input: "Erase it? [y/N]:aborted", on one line.
    unasked = cli.vigil("erase", "--agent", agent, input="")
    assert unasked.returncode == 1, explain(unasked)
    prompt, said = unasked.stderr.splitlines()[-2:]
    assert (prompt.rstrip(), said) == (
        "Erase it? [y/N]:",
        "error: not erased: answer y, or give --yes",
    ), unasked.stderr
    assert "0 sessions" in asked.stderr and "0 workflow runs" in asked.stderr, asked.stderr
    assert "3 rows of its definition, versions, triggers" in asked.stderr, asked.stderr

    receipt = cli.vigil.json("erase", "--agent", agent, "--yes", "--reason", "never ran")
    counts = receipt["counts"]
    assert (counts["agents"], counts["agent_versions"], counts["triggers"]) == (1, 1, 1)
    listed = cli.vigil.ok("erasures", "--subject", agent).stdout
    assert "never ran" in listed, listed
    assert counts["sessions"] == 0
    assert asyncio.run(_tables_holding(cli.database_url, agent)) == {"erasure_receipts": 1}
    again = cli.vigil("erase", "--agent", agent, "--yes")
    assert again.returncode == 4 and "nothing to erase" in again.stderr, explain(again)


def test_erasing_an_agent_stops_its_webhook_deliveries_and_removes_its_hooks(
    s3cli: CLIStack, client: Client
) -> None:
    """A delivery still retrying when its agent was erased went on: it sent the erased
    session's end (its summary) to the webhook after the erasure, and its attempts, its
    workflow, the agent's webhooks and triggers (with their deliveries) all stayed."""
    cli = s3cli
    agent = f"erase-hooks-{uuid.uuid4().hex[:8]}"
    marker = f"zq{uuid.uuid4().hex[:12]}"
    secret = f"hook-secret-{uuid.uuid4().hex[:8]}"  # a worker's credential, not the agent's
    asyncio.run(_stored_credential(cli, secret))
    # Nothing listens on port 9: each attempt fails and the delivery retries.
    cli.vigil.ok(
        "webhook", "add", "--agent", agent, "--url", "http://127.0.0.1:9/hook",
        "--events", "session_ended", "--secret", secret,
    )  # fmt: skip
    cli.vigil.ok(
        "trigger", "create", f"{agent}-t", "--agent", agent, "--action", "start",
        "--goal-template", "triage {title}",
    )  # fmt: skip
    session = _run(cli, agent, cli.plan(Reply.text(f"done with {marker}"), label="hooked"))
    hook = f"{session}~webhook~ended"
    poll(lambda: asyncio.run(_attempted(cli.database_url, session)), 60, "a delivery attempt")

    cli.vigil.ok("erase", "--agent", agent, "--yes")

    poll(lambda: asyncio.run(_gone_from_temporal(client, hook)), 60, "the delivery deleted")
    assert asyncio.run(_tables_holding(cli.database_url, agent)) == {"erasure_receipts": 1}
    assert _everywhere(cli, client, marker) == {"postgres": {}, "temporal": [], "objects": []}
    assert all(t["name"] != f"{agent}-t" for t in cli.vigil.json("trigger", "list"))


async def _stored_credential(cli: CLIStack, name: str) -> None:
    engine = make_engine(cli.database_url)
    try:
        await CredentialService(cli.settings, make_sessionmaker(engine)).set(name, "whsec-x")
    finally:
        await engine.dispose()


async def _attempted(database_url: str, session_id: str) -> bool:
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as db:
            found = await db.execute(
                text("SELECT count(*) FROM webhook_deliveries WHERE session_id = :s"),
                {"s": session_id},
            )
            return bool(found.scalar_one())
    finally:
        await engine.dispose()


def test_erasing_an_agent_whose_schedule_runs_every_second_leaves_none_of_its_runs(
    s3cli: CLIStack, client: Client
) -> None:
    """The erasure listed the agent's runs before it deleted its schedules: a run a
    schedule started in between (or one too new for Temporal's listing) went on, and
    wrote the erased agent's row and session again after the receipt."""
    cli = s3cli
    agent = f"erase-ticking-{uuid.uuid4().hex[:8]}"
    goal = cli.plan(Reply.text("tick"), label=f"tick {agent}")
    schedule = f"tick-{uuid.uuid4().hex[:8]}"
    cli.vigil.ok("schedule", "create", schedule, "--goal", goal, "--agent", agent, "--every", "1s")
    poll(lambda: len(cli.vigil.json("list", "--agent", agent)) >= 2, 60, "two scheduled sessions")
    receipt = cli.vigil.json("erase", "--agent", agent, "--yes")
    assert receipt["counts"]["schedules"] == 1

    async def left() -> list[str]:
        query = f"{names.SA_AGENT.name} = '{agent}'"
        return [f"{wf.id} {wf.status}" async for wf in client.list_workflows(query)]

    # Each run goes (Temporal deletes in the background), and none starts again.
    poll(lambda: asyncio.run(left()) == [], 60, "no run of the erased agent")
    time.sleep(3)
    assert asyncio.run(left()) == []
    assert asyncio.run(_tables_holding(cli.database_url, agent)) == {"erasure_receipts": 1}


def test_erasing_an_agent_takes_its_tokens_and_counts_its_retention_policy(
    s3cli: CLIStack, tmp_path: Path
) -> None:
    """A token scoped to the erased agent stayed, naming it, and covered any agent defined
    later under that name; the agent's retention policy went uncounted (`erase --agent`
    of an agent with a policy alone said "nothing left to remove")."""
    cli = s3cli
    agent, other = (f"erase-tok-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for name in (agent, other):
        spec = tmp_path / f"{name}.toml"
        spec.write_text(f'name = "{name}"\nsystem_prompt = "Goal: {{goal}}"\n')
        cli.vigil.ok("agent", "apply", str(spec))
    alone = cli.vigil.json("token", "create", "--owner", "bo", "--agent", agent)
    both = cli.vigil.json("token", "create", "--owner", "bo", "--agent", f"{agent},{other}")
    cli.vigil.ok("retention", "set", "--agent", agent, "--erase-after", "365d")

    receipt = cli.vigil.json("erase", "--agent", agent, "--yes")
    counts = receipt["counts"]
    assert (counts["api_tokens"], counts["api_tokens_narrowed"]) == (1, 1), counts
    assert counts["retention_policies"] == 1, counts
    assert asyncio.run(_tables_holding(cli.database_url, agent)) == {"erasure_receipts": 1}
    listed = {t["id"]: t for t in cli.vigil.json("token", "list", "--all")}
    assert alone["id"] not in listed
    assert listed[both["id"]]["agents"] == [other]
