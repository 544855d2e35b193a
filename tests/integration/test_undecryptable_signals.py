"""A control signal whose payload says it is encrypted but cannot be decrypted is refused
and recorded like any malformed input, and the session goes on.

Temporal takes such a signal from anyone (``temporal workflow signal --input-meta
encoding=binary/encrypted`` without the codec, a key id nobody has, ciphertext that is not
the key's): the worker's codec hands it on as an undecryptable stand-in, never as data.
The session still answers, counts and records the refusal, refuses an update carrying one
with a clear reason, can be approved and completes. The codec server refuses the same
payloads. The refusal leaves a marker in the history, so the history replays alike on a
worker that has the key and on one that has not.
"""

from __future__ import annotations

import base64
import subprocess
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.worker import Replayer

from tests.support.cli import TEMPORAL_ADDRESS
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    events,
    eventually,
    raw_json,
    running_worker,
    session_input,
    start,
    state,
    stub_settings,
    transcript,
    until,
)
from vigil.schema import names
from vigil.schema.payloads import (
    Ack,
    ApproveInput,
    MessageInput,
    SessionResult,
    SessionStatus,
)
from vigil.workers.codec import ENCODING, META_KEY_ID, codec_token
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack
from vigil.workers.temporal import connect, workflow_runner
from vigil.workflows.session import AgentSession

pytestmark = pytest.mark.integration

K1 = "k1:" + base64.b64encode(b"1" * 32).decode()
K2 = "k2:" + base64.b64encode(b"2" * 32).decode()


def _cfg(settings: Settings, stub: LLMStub, **extra: object) -> Settings:
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"}),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    return stub_settings(settings, stub.url_openai, http_allow=stub.host_port, **extra)


async def _sealed(client: Client, value: object) -> Payload:
    """``value`` as ``client`` seals it (encoded by its converter and codec)."""
    [payload] = await client.data_converter.encode([value])
    assert payload.metadata["encoding"] == ENCODING
    return payload


def _relabelled(sealed: Payload, key_id: bytes) -> Payload:
    out = Payload()
    out.CopyFrom(sealed)
    out.metadata[META_KEY_ID] = key_id
    return out


def _garbled(sealed: Payload) -> Payload:
    out = Payload()
    out.CopyFrom(sealed)
    out.data = sealed.data[:12] + bytes(b ^ 0x5A for b in sealed.data[12:])
    return out


def _temporal_cli_signal(stack: Stack, session_id: str) -> None:
    """The plain `temporal` CLI, no codec: JSON that only claims to be encrypted."""
    binary = stack.temporal.binary(lambda _: None)
    done = subprocess.run(
        [
            str(binary),
            "workflow",
            "signal",
            "--workflow-id",
            session_id,
            "--name",
            names.SIG_MESSAGE,
            "--input",
            '{"text":"hi","by":"x"}',
            "--input-meta",
            "encoding=binary/encrypted",
            "--address",
            TEMPORAL_ADDRESS,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


async def test_undecryptable_signals_are_refused_and_the_session_goes_on(
    stack: Stack,
    client: Client,
    settings: Settings,
    task_queue: str,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    good = await _sealed(client, MessageInput(text="sealed right", by="x"))
    approve = await _sealed(client, ApproveInput(approval_id="a1-0", by="mallory"))
    # (signal, payload, words the recorded reason must hold)
    bad: list[tuple[str, RawValue, list[str]]] = [
        (
            names.SIG_MESSAGE,
            raw_json('{"text":"hi","by":"x"}', encoding=ENCODING),
            ["key '', which is not configured"],
        ),
        (
            names.SIG_MESSAGE,
            RawValue(_relabelled(good, b"k-nobody-has")),
            ["key 'k-nobody-has', which is not configured"],
        ),
        (names.SIG_MESSAGE, RawValue(_garbled(good)), ["wrong key or altered payload"]),
        # An approval nobody could read never approves.
        (names.SIG_APPROVE, RawValue(_garbled(approve)), ["wrong key or altered payload"]),
    ]
    with LLMStub() as stub:
        async with running_worker(client, _cfg(settings, stub), task_queue):
            handle = await start(client, task_queue, session_input("fetch the page"))
            await approval_pending(handle, sessionmaker)
            for name, payload, _ in bad:
                await handle.signal(name, payload)
            _temporal_cli_signal(stack, handle.id)
            count = len(bad) + 1
            st = await eventually(handle, lambda s: s.rejected_inputs == count)
            assert st.status == SessionStatus.WAITING_APPROVAL and not st.paused
            assert [p.approval_id for p in st.pending_approvals] == ["a1-0"]

            async def recorded() -> list[object] | None:
                found = await events(sessionmaker, handle.id, "rejected_input")
                return found if len(found) >= count else None

            rejected = await until(recorded, what="rejected_input events")
            # An update carrying one is refused by the validator with the reason.
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update(
                    names.UPD_APPROVE, RawValue(_garbled(approve)), result_type=Ack
                )
            assert "could not be decrypted" in str(refused.value.cause)
            assert (await state(handle)).rejected_inputs == count
            # The session still works: approved, it completes.
            await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="alice"))
            result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED
    cli_words = ["key '', which is not configured"]
    expected = [(name, words) for name, _, words in bad] + [(names.SIG_MESSAGE, cli_words)]
    for (name, words), ev in zip(expected, rejected, strict=True):
        assert ev.payload["signal"] == name  # type: ignore[attr-defined]
        reason = ev.reason  # type: ignore[attr-defined]
        assert reason.startswith("payload could not be decrypted: "), reason
        for word in words:
            assert word in reason, (word, reason)
    # Nothing of it reached the transcript, and the approval is alice's.
    messages = await transcript(sessionmaker, handle.id)
    assert [m.content for m in messages if m.role == "user"] == ["fetch the page"]
    (decided,) = await events(sessionmaker, handle.id, "approval_decided")
    assert decided.actor == "alice"

    # The codec server refuses the same payloads, with the reason, never hands them out.
    token = codec_token(stack.settings)
    url = f"http://{stack.settings.codec_host}:{stack.settings.codec_port}/t/{token}/decode"
    async with httpx.AsyncClient(timeout=10) as http:
        for _, payload, words in bad:
            body = json_format.MessageToJson(Payloads(payloads=[payload.payload]))
            answer = await http.post(url, content=body)
            assert answer.status_code == 400, answer.text
            assert words[0] in answer.json()["detail"], answer.text


async def test_a_refused_signal_replays_refused_once_the_key_is_known(
    settings: Settings, task_queue: str, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """A signal sealed with a key the worker lacks is refused; a worker given the key
    later replays the history to the same end (the refusal's marker says so)."""
    k1 = settings.model_copy(update={"payload_keys": SecretStr(K1), "payload_key_id": None})
    both = settings.model_copy(
        update={"payload_keys": SecretStr(f"{K1},{K2}"), "payload_key_id": "k2"}
    )
    worker_client, newer_client = await connect(k1), await connect(both)
    with LLMStub() as stub:
        async with running_worker(worker_client, _cfg(k1, stub), task_queue):
            handle = await start(worker_client, task_queue, session_input("fetch the page"))
            await approval_pending(handle, sessionmaker)
            newer = newer_client.get_workflow_handle(handle.id)
            await newer.signal(names.SIG_MESSAGE, MessageInput(text="under k2", by="bob"))
            st = await eventually(handle, lambda s: s.rejected_inputs == 1)
            assert st.status == SessionStatus.WAITING_APPROVAL
            await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="alice"))
            result: SessionResult = await handle.result()
    assert result.status == SessionStatus.COMPLETED
    (ev,) = await events(sessionmaker, handle.id, "rejected_input")
    assert ev.reason is not None and "key 'k2', which is not configured" in ev.reason
    messages = await transcript(sessionmaker, handle.id)
    assert "under k2" not in [m.content for m in messages]

    history = await handle.fetch_history()
    for client in (worker_client, newer_client):  # without the key, and with it
        replayer = Replayer(
            workflows=[AgentSession],
            data_converter=client.data_converter,
            workflow_runner=workflow_runner(sandboxed=True),
        )
        await replayer.replay_workflow(history)


async def _handled_message(handle: WorkflowHandle[Any, Any]) -> bool:
    """Whether the history holds the message signal and a workflow task completed after
    it (a signal sent during a workflow task shows only once that task completed)."""
    events = (await handle.fetch_history()).events
    for i, event in enumerate(events):
        if (
            event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
            and event.workflow_execution_signaled_event_attributes.signal_name == names.SIG_MESSAGE
        ):
            return any(
                e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in events[i:]
            )
    return False


async def test_a_taken_signal_that_no_longer_decrypts_fails_the_replay_loudly(
    settings: Settings, task_queue: str, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """The other way round: a signal the worker took (it had the key) is never turned into
    a refusal by a worker without the key; replaying there fails until it gets the key."""
    k1 = settings.model_copy(update={"payload_keys": SecretStr(K1), "payload_key_id": None})
    # The worker has both keys and seals with k1; only the message is sealed with k2.
    both = settings.model_copy(
        update={"payload_keys": SecretStr(f"{K1},{K2}"), "payload_key_id": "k1"}
    )
    sender = settings.model_copy(
        update={"payload_keys": SecretStr(f"{K1},{K2}"), "payload_key_id": "k2"}
    )
    client, without_k2 = await connect(both), await connect(k1)
    with LLMStub() as stub:
        async with running_worker(client, _cfg(both, stub), task_queue):
            handle = await start(client, task_queue, session_input("fetch the page"))
            await approval_pending(handle, sessionmaker)
            message = MessageInput(text="under k2", by="bob")
            await (
                (await connect(sender))
                .get_workflow_handle(handle.id)
                .signal(names.SIG_MESSAGE, message)
            )
            # The approval goes in a later workflow task than the message, so the replay
            # below fails on the message alone.
            await until(lambda: _handled_message(handle), what="the message handled")
            await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="alice"))
            result: SessionResult = await handle.result()
            assert (await state(handle)).rejected_inputs == 0
    assert result.status == SessionStatus.COMPLETED
    messages = await transcript(sessionmaker, handle.id)
    assert "under k2" in [m.content for m in messages]
    history = await handle.fetch_history()
    replayer = Replayer(
        workflows=[AgentSession],
        data_converter=without_k2.data_converter,
        workflow_runner=workflow_runner(sandboxed=True),
    )
    replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is not None
    assert "cannot be decrypted here" in str(replayed.replay_failure), replayed.replay_failure
    # With the key it replays.
    await Replayer(
        workflows=[AgentSession],
        data_converter=client.data_converter,
        workflow_runner=workflow_runner(sandboxed=True),
    ).replay_workflow(history)
