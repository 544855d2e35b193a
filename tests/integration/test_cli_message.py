"""`vigil message AGENT --key KEY TEXT`: the message goes to the key's session (started by
the first one), prints the session id, and with --wait prints the reply that answers it,
or how the session ended when it ended first."""

from __future__ import annotations

import json
import queue
import threading
import uuid

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import explain, read_record
from tests.support.llm_stub import Reply
from vigil.workers.keyed import keyed_session_id

pytestmark = pytest.mark.integration


def test_message_by_key_then_wait_for_the_answer(cli: CLIStack) -> None:
    agent = f"desk-{uuid.uuid4().hex[:8]}"
    goal = cli.plan(
        Reply.text("first answer"),
        Reply.tool_call("write_artifact", {"name": "order.md", "content": "ships today"}),
        Reply.text("your order ships today"),
        Reply.tool_call("finish", {"summary": "helped"}),
    )
    sid = keyed_session_id(agent, "cust-9")
    sent = cli.vigil.json("message", agent, "--key", "cust-9", "where is my order?", "--goal", goal)
    assert sent["session_id"] == sid and sent["accepted"] is True, sent
    assert sent["follows"] is None, "the key's first session follows none"

    # --wait prints the reply that answers this message, past the tool call it made first.
    # --idle shapes a new session only: to the running one it is said to be left unused
    # (it was dropped without a word).
    done = cli.vigil.ok(
        "message", agent, "-k", "cust-9", "any news?", "--by", "ana", "--wait", "--idle", "5m"
    )
    assert (
        f"warning: only a key's new session takes --idle: {sid} was running, and keeps its own"
        in " ".join(done.stderr.split())
    ), explain(done)
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith(f"session {sid}"), explain(done)
    assert lines[-1] == "your order ships today", explain(done)

    # The agent ends the conversation instead of answering: --wait says how it ended, in
    # one JSON document (it printed two: the message's, then the end's).
    ended = cli.vigil("message", agent, "-k", "cust-9", "bye", "--wait", "--json")
    assert ended.returncode == 0, explain(ended)
    result = json.loads(ended.stdout)
    assert result["session_id"] == sid and result["answer"] is None
    assert result["end"]["id"] == sid and result["end"]["status"] == "completed", result

    _, transcript, _ = read_record(cli.database_url, sid)
    users = [(m.content, m.name) for m in transcript if m.role == "user"]
    assert [u[0] for u in users] == [goal, "where is my order?", "any news?", "bye"]
    assert users[2][1] == "ana"

    # The key's session has ended: the next message starts its next one, and says so.
    nxt = cli.vigil.ok("message", agent, "-k", "cust-9", "hello again", "--goal", goal)
    assert "warning" not in nxt.stderr, explain(nxt)  # its --goal started this one
    second = keyed_session_id(agent, "cust-9", 2)
    assert nxt.stdout.splitlines()[:2] == [
        f"session {second}: message queued for the next step",
        f"  a new session of key 'cust-9': {sid} had ended",
    ], explain(nxt)
    cli.vigil.ok("cancel", second)


def test_message_input_is_checked_before_sending(cli: CLIStack) -> None:
    bad = cli.vigil("message", "desk", "--key", "k", "hi", "--idle", "0")
    assert bad.returncode == 2 and "--idle" in bad.stderr, explain(bad)
    missing = cli.vigil("message", "desk", "hi")
    assert missing.returncode == 2 and "--key" in missing.stderr, explain(missing)
    # DEL and the C1 controls (U+0085 is a line break to some readers) were taken.
    for key in ("a\tb", "a\x7fb", "a\x85b", "\x9b"):
        control = cli.vigil("message", "desk", "--key", key, "hi")
        assert control.returncode == 2 and "control characters" in control.stderr, (
            key,
            explain(control),
        )


def test_wait_names_the_approval_it_waits_for_and_how_to_answer_it(cli: CLIStack) -> None:
    """While the answer waits for an approval, --wait says which one and prints the
    commands that answer it (they work as printed), then the answer."""
    agent = f"desk-{uuid.uuid4().hex[:8]}"
    fetch = Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"})
    goal = cli.plan(fetch, Reply.text("fetched it"), Reply.tool_call("finish", {"summary": "bye"}))
    waiting = cli.vigil.popen("message", agent, "--key", "k1", "get it", "--goal", goal, "--wait")
    lines: queue.Queue[str] = queue.Queue()
    assert waiting.stderr is not None
    threading.Thread(
        target=lambda: [lines.put(line) for line in waiting.stderr], daemon=True
    ).start()
    try:
        hint = ""
        while "approve" not in hint:
            hint = lines.get(timeout=60)
        sid = keyed_session_id(agent, "k1")
        assert f"{sid} waits for approval a1-0 (http_fetch" in hint, hint
        command = hint.split(": ", 1)[1].split(", or ")[0].split()
        assert command[-4:] == ["vigil", "approve", sid, "a1-0"], hint
        cli.vigil.ok(*command[-3:])
        out, _ = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
    assert waiting.returncode == 0
    assert out.strip().splitlines()[-1] == "fetched it", out
