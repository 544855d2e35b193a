"""Payload encryption end to end: what Temporal stores is ciphertext, the codec reads it back.

A session runs on the test stack, whose key the stack generated; its goal, a human's
messages (signal and update) and a tool's argument carry markers. The history read from
the server without the codec holds none of them (search attributes aside: they are not
payloads, and the goal's search attribute stays plain by design); with the codec, through
the codec server and through ``temporal workflow show --codec-endpoint`` they are there.
"""

from __future__ import annotations

import base64
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.history.v1 import History
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    outlast_step_batch,
    running_worker,
    session_input,
    start,
    stub_settings,
    until,
)
from vigil.schema import names
from vigil.schema.payloads import Ack, MessageInput, SessionResult, SessionStatus, ToolPolicy
from vigil.workers.client import LOCAL_ACTIVITY_MARKER
from vigil.workers.codec import ENCODING, META_KEY_ID, codec_token, load_keyring, payload_codec
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack
from vigil.workers.temporal import DATA_CONVERTER, connect, workflow_runner
from vigil.workflows.session import AgentSession

pytestmark = pytest.mark.integration


def _payloads(message: Message) -> Iterator[Payload]:
    """Every Payload inside a protobuf message, search attributes left out."""
    if message.DESCRIPTOR.full_name == "temporal.api.common.v1.SearchAttributes":
        return
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            items = value.values()
        elif field.is_repeated:
            items = value
        else:
            items = [value]
        for item in items:
            if isinstance(item, Message):
                yield from _payloads(item)


def _without_search_attributes(history: WorkflowHistory) -> bytes:
    """The raw history as the server sends it, minus the search attributes (plain by design)."""
    raw = History(events=history.events)
    for event in raw.events:
        # Touching a oneof member that is not set would switch the event's attributes to
        # it and wipe the real ones: look first.
        for kind in (
            "workflow_execution_started_event_attributes",
            "upsert_workflow_search_attributes_event_attributes",
        ):
            if event.HasField(kind):
                getattr(event, kind).ClearField("search_attributes")
    return raw.SerializeToString() + json_format.MessageToJson(raw).encode()


class Markers:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.goal = f"goal-marker-{tag}"
        self.human_signal = f"human-signal-{tag}"
        self.human_update = f"human-update-{tag}"
        self.argument = f"tool-arg-{tag}"

    def all(self) -> list[str]:
        return [self.goal, self.human_signal, self.human_update, self.argument]


async def _run_session(
    client: Client, settings: Settings, stub: LLMStub, task_queue: str, marks: Markers
) -> str:
    """Step 1 is held until two human messages are in; it writes an artifact whose content
    is the argument marker, step 2 finishes."""
    gate = threading.Event()
    calls = iter(
        [
            Reply.tool_call("write_artifact", {"name": "n.txt", "content": marks.argument}),
            Reply.tool_call("finish", {"summary": "sealed and done"}),
        ]
    )

    def respond(_body: Any) -> Reply:
        gate.wait(20)
        return next(calls, Reply.text("unexpected extra call"))

    stub.default = respond
    policy = ToolPolicy(require_approval=[])
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input(marks.goal, policy=policy))
        await until(lambda: len(stub.requests) >= 1, what="first model call")
        await handle.signal(names.SIG_MESSAGE, MessageInput(text=marks.human_signal, by="ana"))
        ack = await handle.execute_update(
            names.UPD_MESSAGE, MessageInput(text=marks.human_update, by="ana"), result_type=Ack
        )
        assert ack.accepted
        await outlast_step_batch()
        gate.set()
        result: SessionResult = await handle.result()
    assert (result.status, result.summary) == (SessionStatus.COMPLETED, "sealed and done")
    return handle.id


@pytest.fixture(scope="module")
def marks() -> Markers:
    return Markers()


@pytest.fixture(scope="module")
async def session_id(client: Client, settings: Settings, marks: Markers) -> str:
    with LLMStub() as stub:
        return await _run_session(client, settings, stub, f"tq-{uuid.uuid4()}", marks)


async def _raw_history(stack: Stack, session_id: str) -> WorkflowHistory:
    """The history through a client with no codec: what the server stores."""
    plain = await Client.connect(
        stack.settings.endpoints().temporal_address, data_converter=DATA_CONVERTER
    )
    return await plain.get_workflow_handle(session_id).fetch_history()


async def test_history_on_the_server_holds_no_plaintext(
    stack: Stack, session_id: str, marks: Markers
) -> None:
    history = await _raw_history(stack, session_id)
    raw = _without_search_attributes(history)
    for marker in marks.all():
        assert marker.encode() not in raw, f"{marker} in plain in the history"
    # Markers are written by the SDK's core: a patch's holds only the patch's name (a
    # constant of vigil's code); a local activity's (the agent's definition) holds core's
    # own bookkeeping (type, attempt, time) and the activity's result, which went through
    # the codec like every other payload.
    markers = [e for e in history.events if e.marker_recorded_event_attributes.marker_name]
    kinds = {e.marker_recorded_event_attributes.marker_name for e in markers}
    assert kinds == {"core_patch", LOCAL_ACTIVITY_MARKER}
    results = [
        p
        for e in markers
        if e.marker_recorded_event_attributes.marker_name == LOCAL_ACTIVITY_MARKER
        for p in e.marker_recorded_event_attributes.details["result"].payloads
    ]
    assert results
    payloads = [p for e in history.events if e not in markers for p in _payloads(e)] + results
    assert len(payloads) > 10
    plain = [p for p in payloads if p.metadata.get("encoding") != ENCODING]
    assert not plain, f"payloads left in plain: {plain[:3]}"
    # The stack generated one key; every payload names it.
    ring = load_keyring(stack.settings)
    assert ring is not None
    assert {p.metadata[META_KEY_ID] for p in payloads} == {ring.current.encode()}


async def test_the_codec_reads_it_back(
    stack: Stack, settings: Settings, client: Client, session_id: str, marks: Markers
) -> None:
    history = await _raw_history(stack, session_id)
    codec = payload_codec(settings)
    assert codec is not None
    decoded = await codec.decode([p for e in history.events for p in _payloads(e)])
    text = b"".join(p.data for p in decoded)
    for marker in marks.all():
        assert marker.encode() in text, marker
    # The history replays with the codec, as a worker picking the session up would.
    replayer = Replayer(
        workflows=[AgentSession],
        data_converter=client.data_converter,
        workflow_runner=workflow_runner(sandboxed=True),
    )
    await replayer.replay_workflow(history)


def _codec_url(stack: Stack) -> str:
    return f"http://{stack.settings.codec_host}:{stack.settings.codec_port}"


async def test_codec_server_decodes_for_the_token_only(
    stack: Stack, session_id: str, marks: Markers
) -> None:
    history = await _raw_history(stack, session_id)
    first = history.events[0].workflow_execution_started_event_attributes.input
    body = json_format.MessageToJson(first)
    token = codec_token(stack.settings)
    assert token
    url = _codec_url(stack)
    async with httpx.AsyncClient(timeout=10) as http:
        missing = await http.post(f"{url}/decode", content=body)
        assert missing.status_code == 401
        wrong = await http.post(
            f"{url}/decode", content=body, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 403
        in_wrong_path = await http.post(f"{url}/t/nope/decode", content=body)
        assert in_wrong_path.status_code == 403
        for refused in (missing, wrong, in_wrong_path):
            assert marks.goal not in refused.text
        by_header = await http.post(
            f"{url}/decode", content=body, headers={"Authorization": f"Bearer {token}"}
        )
        by_path = await http.post(f"{url}/t/{token}/decode", content=body)
        for ok in (by_header, by_path):
            assert ok.status_code == 200, ok.text
            [payload] = json_format.Parse(ok.text, Payloads()).payloads
            assert payload.metadata["encoding"] == b"json/plain"
            assert marks.goal in payload.data.decode()
        # And encode is the inverse: what it seals, decode opens.
        sealed = await http.post(f"{url}/t/{token}/encode", content=by_path.text)
        assert sealed.status_code == 200
        [resealed] = json_format.Parse(sealed.text, Payloads()).payloads
        assert resealed.metadata["encoding"] == ENCODING
        assert marks.goal.encode() not in resealed.data
        reopened = await http.post(f"{url}/t/{token}/decode", content=sealed.text)
        assert reopened.json() == by_path.json()
        # Garbage is a 400, never a crash.
        bad = await http.post(f"{url}/t/{token}/decode", content=b"{not json")
        assert bad.status_code == 400


async def test_temporal_ui_is_pointed_at_the_codec_server(stack: Stack) -> None:
    ui = stack.settings.endpoints().temporal_ui
    token = codec_token(stack.settings)
    async with httpx.AsyncClient(timeout=10) as http:
        found = (await http.get(f"{ui}/api/v1/settings")).json()
        assert found["Codec"]["Endpoint"] == f"{_codec_url(stack)}/t/{token}"
        # The UI's origin may call the codec server from the browser; another may not.
        for origin, allowed in ((ui, True), ("http://evil.example", False)):
            preflight = await http.options(
                f"{_codec_url(stack)}/t/{token}/decode",
                headers={
                    "Origin": str(origin),
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type,x-namespace",
                },
            )
            got = preflight.headers.get("access-control-allow-origin")
            assert (got == origin) is allowed, (origin, preflight.status_code, got)


def _temporal(stack: Stack) -> Path:
    return stack.temporal.binary(lambda _: None)


def test_temporal_cli_shows_plaintext_with_the_codec_endpoint(
    stack: Stack, session_id: str, marks: Markers
) -> None:
    token = codec_token(stack.settings)
    base = [
        str(_temporal(stack)),
        "workflow",
        "show",
        "--workflow-id",
        session_id,
        "--address",
        stack.settings.endpoints().temporal_address,
        "-o",
        "json",
    ]

    def show(*extra: str) -> str:
        done = subprocess.run(
            [*base, *extra], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def payload_text(out: str) -> str:
        """The payloads' data of the printed history (proto JSON: data is base64)."""
        history = json_format.Parse(out, History(), ignore_unknown_fields=True)
        return "".join(
            p.data.decode(errors="replace") for e in history.events for p in _payloads(e)
        )

    plain = show()
    assert marks.goal not in plain and marks.goal not in payload_text(plain)
    decoded = payload_text(
        show("--codec-endpoint", _codec_url(stack), "--codec-auth", f"Bearer {token}")
    )
    for marker in marks.all():
        assert marker in decoded, marker


async def test_old_payloads_stay_readable_after_a_new_current_key(
    stack: Stack, settings: Settings
) -> None:
    k1 = "k1:" + base64.b64encode(b"1" * 32).decode()
    k2 = "k2:" + base64.b64encode(b"2" * 32).decode()
    before = settings.model_copy(update={"payload_keys": SecretStr(k1), "payload_key_id": None})
    after = settings.model_copy(
        update={"payload_keys": SecretStr(f"{k1},{k2}"), "payload_key_id": "k2"}
    )
    with LLMStub() as stub:
        old_id = await _run_session(
            await connect(before), before, stub, f"tq-{uuid.uuid4()}", Markers()
        )
        rotated = await connect(after)
        # A session sealed under k1 reads back whole once k2 is current ...
        old = rotated.get_workflow_handle(old_id, result_type=SessionResult)
        result = await old.result()
        assert result.summary == "sealed and done"
        # ... and new sessions are sealed under k2.
        stub.clear()
        new_id = await _run_session(rotated, after, stub, f"tq-{uuid.uuid4()}", Markers())

    def key_ids(history: WorkflowHistory) -> set[bytes]:
        found = {p.metadata.get(META_KEY_ID) for e in history.events for p in _payloads(e)}
        return found - {None}  # type: ignore[return-value]

    assert key_ids(await _raw_history(stack, old_id)) == {b"k1"}
    assert key_ids(await _raw_history(stack, new_id)) == {b"k2"}
