"""VigilClient used directly, as a script would: start, state, controls (acknowledged or
refused), list with Temporal's status, transcript paging, follow, and UnknownSession."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.integration.conftest import CLIStack
from tests.support.llm_stub import Reply
from tests.support.teststack import TEST_PORTS
from vigil.schema import names
from vigil.schema.payloads import SessionStatus, ToolPolicy
from vigil.workers.client import (
    BadArgument,
    Refused,
    UnknownSchedule,
    UnknownSession,
    VigilClient,
)

pytestmark = pytest.mark.integration
NEEDS_APPROVAL = ToolPolicy(require_approval=["http_fetch"])


@pytest.fixture
async def client(cli: CLIStack) -> AsyncIterator[VigilClient]:
    vigil = await VigilClient.connect(cli.settings)
    try:
        yield vigil
    finally:
        await vigil.close()


async def until_pending(client: VigilClient, session_id: str, approval_id: str) -> None:
    async def waiting() -> bool:
        try:
            current = await client.state(session_id)
        except UnknownSession:  # started, not yet picked up
            return False
        return approval_id in [a.approval_id for a in current.pending_approvals]

    deadline = asyncio.get_running_loop().time() + 30
    while not await waiting():
        assert asyncio.get_running_loop().time() < deadline, f"{session_id}: no {approval_id}"
        await asyncio.sleep(0.1)


def agent() -> str:
    return f"api-{uuid.uuid4().hex[:8]}"


async def test_state_controls_and_list(cli: CLIStack, client: VigilClient) -> None:
    who = agent()
    goal = cli.plan(
        Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"}), Reply.text("understood")
    )
    started = await client.start_session(who, goal, policy=NEEDS_APPROVAL)
    assert (
        started.ui_url
        == f"http://127.0.0.1:{TEST_PORTS['temporal_ui_port']}/namespaces/default/workflows/{started.id}"
    )
    sid = started.id
    await until_pending(client, sid, "a1-0")

    current = await client.state(sid)
    assert (current.status, current.step, current.goal) == (SessionStatus.WAITING_APPROVAL, 1, goal)
    with pytest.raises(Refused, match=r"unknown approval id 'a7-7' \(pending: a1-0\)") as refused:
        await client.approve(sid, "a7-7", by="ana")
    assert refused.value.exit_code == 2
    with pytest.raises(Refused, match="the session is not paused"):
        await client.resume(sid, by="ana")

    ack = await client.pause(sid, by="ana", reason="look first")
    assert ack is not None and ack.accepted and ack.message == "paused"
    assert (await client.state(sid)).paused is True
    with pytest.raises(Refused, match="already paused"):
        await client.pause(sid, by="ana")
    ack = await client.say(sid, "the host is down anyway", by="ana")
    assert ack is not None and ack.message == "message queued for the next step"
    ack = await client.reject(sid, "a1-0", by="ana", reason="host is down")
    assert ack is not None and ack.message == "rejected a1-0"
    assert await client.resume(sid, by="ana", wait=False) is None  # a signal: no ack

    result = await client.result(sid, timeout=60)
    assert result is not None
    assert (result.status, result.steps, result.summary) == (
        SessionStatus.COMPLETED,
        2,
        "understood",
    )
    [row] = await client.list_sessions(agent=who)
    assert (row.id, row.status, row.temporal_status) == (sid, "completed", "completed")
    assert await client.list_sessions(agent=who, status="running") == []
    kinds = [e.kind for e in await client.events(sid)]
    for kind in (
        "session_paused",
        "human_message",
        "approval_decided",
        "session_resumed",
        "session_ended",
    ):
        assert kind in kinds, kinds


async def test_follow_yields_messages_as_they_land(cli: CLIStack, client: VigilClient) -> None:
    goal = cli.plan(
        Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"}),
        Reply.tool_call("finish", {"summary": "followed"}),
    )
    sid = (await client.start_session(agent(), goal, policy=NEEDS_APPROVAL)).id
    seen: list[tuple[int, str]] = []
    first_two = asyncio.Event()

    async def follow() -> None:
        async for msg in client.follow(sid, poll_seconds=0.1):
            seen.append((msg.seq, msg.role))
            if len(seen) == 2:
                first_two.set()

    task = asyncio.create_task(follow())
    async with asyncio.timeout(30):
        await first_two.wait()
    # Streamed while the session still waits: nothing has ended, follow keeps going.
    await until_pending(client, sid, "a1-0")
    assert not task.done() and seen == [(0, "user"), (1, "assistant")]

    ack = await client.approve(sid, "a1-0", by="ana")
    assert ack is not None and ack.accepted and ack.message == "approved a1-0"
    async with asyncio.timeout(60):
        await task  # ends by itself once the session has ended and all is read
    assert [s for s, _ in seen] == list(range(len(seen)))
    assert [r for _, r in seen] == ["user", "assistant", "tool", "assistant", "tool", "system"]
    assert len(await client.transcript(sid)) == len(seen)


async def test_transcript_paging(cli: CLIStack, client: VigilClient) -> None:
    goal = cli.plan(
        *[Reply.tool_call("recall", {"query": f"q{i}"}) for i in range(4)], Reply.text("paged")
    )
    sid = (await client.start_session(agent(), goal)).id
    result = await client.result(sid, timeout=60)
    assert result is not None and result.status == SessionStatus.COMPLETED

    whole = await client.transcript(sid)
    assert len(whole) == 11  # goal, 4 x (call, result), the answer, the end
    pages, after = [], -1
    while page := await client.transcript(sid, after_seq=after, limit=3):
        pages.append(page)
        after = page[-1].seq
    assert [len(p) for p in pages] == [3, 3, 3, 2]
    assert [m.seq for p in pages for m in p] == [m.seq for m in whole] == list(range(11))
    assert await client.transcript(sid, after_seq=10) == []
    assert (await client.transcript(sid, after_seq=4, limit=2))[0].seq == 5


async def test_unknown_ids(client: VigilClient) -> None:
    sid = f"missing-{uuid.uuid4().hex[:8]}"
    for call in (
        client.state(sid),
        client.approve(sid, "a1-0", by="x"),
        client.pause(sid, by="x"),
        client.say(sid, "hi", by="x", wait=False),
        client.cancel(sid),
        client.history(sid),
        client.require_session(sid),
        client.result(sid),
    ):
        with pytest.raises(UnknownSession, match=f"no session with id '{sid}'") as info:
            await call
        assert info.value.exit_code == 4
    with pytest.raises(UnknownSession):
        async for _ in client.export(sid):
            pass
    for op in (
        client.describe_schedule(sid),
        client.trigger_schedule(sid),
        client.schedule_runs(sid),
    ):
        with pytest.raises(UnknownSchedule, match=f"no schedule with id '{sid}'"):
            await op


@pytest.mark.parametrize(
    "bad",
    [
        "{u}" + "s" * 201,  # past the record's column: every write failed, for good
        "{u}/b",  # no API path could name it
        "{u} space",
        "{u}-key-" + "0" * 32,  # the form of a conversation key's sessions
        "{u}-run-2026-12-05T10:00:00Z",  # a schedule run's
    ],
)
async def test_a_chosen_session_id_is_checked_as_the_cli_and_api_check_it(
    cli: CLIStack, client: VigilClient, bad: str
) -> None:
    """The Python client took any session id: one of 300 characters started a session
    whose record no write could make and whose cancel never ended it; others no API path
    could reach, or the forms vigil gives the sessions of keys and schedules. It now
    refuses them before starting anything, as `vigil start --id` and the API do."""
    bad = bad.replace("{u}", uuid.uuid4().hex[:8])
    with pytest.raises(BadArgument, match="bad session id"):
        await client.start_session(agent(), "x", session_id=bad, allow_undefined=True)
    assert await client.temporal_status(bad) is None  # nothing started


@pytest.mark.parametrize("setting", [{"max_steps": 2}, {"budgett": {"max_steps": 1}}])
async def test_a_setting_the_start_does_not_know_is_refused(
    cli: CLIStack, client: VigilClient, setting: dict[str, object]
) -> None:
    """``start_session(..., max_steps=2)`` started a session with the agent's own budget:
    the start input dropped what it did not know, a misspelt budget or tool rule too (the
    API refuses such a body with 422, the CLI has no such option)."""
    sid = f"{agent()}-{uuid.uuid4().hex[:8]}"
    with pytest.raises(TypeError, match=f"unknown session settings: {next(iter(setting))}"):
        await client.start_session(agent(), "x", session_id=sid, allow_undefined=True, **setting)
    assert await client.temporal_status(sid) is None  # nothing started


async def test_vigils_own_start_of_a_keys_session_takes_any_letter(
    cli: CLIStack, client: VigilClient
) -> None:
    """A start trigger gives a key's session an id holding the key, in any letters
    (``ops-key-müller-<digest>``): the check of a chosen id, which only vigil's own starts
    skip, refused it once the client checked ids."""
    from vigil.workers.hooks import key_session_id

    sid = key_session_id(agent(), f"müller-{uuid.uuid4().hex[:6]}")
    started = await client.start_session(
        agent(), "x", session_id=sid, allow_undefined=True, own_form=True
    )
    assert started.id == sid
    await client.temporal.get_workflow_handle(sid).terminate("test done")


async def test_the_readmes_python_example_and_a_started_session_for_an_id(
    cli: CLIStack, client: VigilClient
) -> None:
    """As the README's "From Python" shows it: start, the result, the transcript. Given
    the started session itself instead of its id, ``result`` said None (as for a cancelled
    session) where ``transcript`` raised a TypeError: both refuse it now."""
    started = await client.start_session(agent(), cli.plan(Reply.text("all quiet")))
    result = await client.result(started.id, timeout=60)
    assert result is not None and result.status == SessionStatus.COMPLETED
    said = [(m.role, m.content) for m in await client.transcript(started.id)]
    assert ("assistant", "all quiet") in said, said
    with pytest.raises(TypeError):
        await client.result(started, timeout=60)  # type: ignore[arg-type]


async def test_a_long_goal_keeps_the_sessions_memo_small(
    cli: CLIStack, client: VigilClient
) -> None:
    # Temporal warns of a memo past 2 KiB; a goal may be 32 K characters (up to 128 KB).
    goal = cli.plan(Reply.text("done")) + " " + "日" * 12_000 + " THE-END"
    started = await client.start_session(agent(), goal)
    desc = await client.temporal.get_workflow_handle(started.id).describe()
    assert desc.raw_description.workflow_execution_info.memo.ByteSize() < 2048
    memo = await desc.memo()
    assert goal.startswith(memo["goal"].rstrip("…")) and len(memo["goal"]) < len(goal)
    await client.temporal.get_workflow_handle(started.id).result()
    transcript = await client.transcript(started.id)
    assert transcript[0].content == goal  # the record keeps the goal whole


async def test_a_long_goal_in_any_script_starts_and_redirects(
    cli: CLIStack, client: VigilClient
) -> None:
    # Search attributes are JSON with non-ASCII escaped (6 bytes a character here), and
    # Temporal refuses a value past 2 KiB: 400 such characters refused the start, and a
    # redirect to them failed the session's workflow task on every retry.
    goal = cli.plan(Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"}))
    started = await client.start_session(agent(), f"{goal} {'測' * 400}", policy=NEEDS_APPROVAL)
    await until_pending(client, started.id, "a1-0")
    await client.redirect(started.id, "🌊" * 3000 + " map the lakes", by="ops")
    handle = client.temporal.get_workflow_handle(started.id)
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        shown = (await handle.describe()).typed_search_attributes.get(names.SA_GOAL)
        if shown is not None and shown.startswith("🌊"):
            break
        assert asyncio.get_running_loop().time() < deadline, f"goal shown: {shown!r:.80}"
        await asyncio.sleep(0.2)
    assert shown.endswith("…") and len(json.dumps(shown)) <= 2048
    assert (await client.state(started.id)).pending_approvals  # the session goes on
