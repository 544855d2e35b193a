"""A conversation's idle time: from the agent definition unless the starter set it, and a
definition that does not name it keeps the content hash it was applied with."""

from __future__ import annotations

import hashlib

from vigil.schema.agents import AgentRuntime, AgentSpec, canonical_json, content_hash
from vigil.schema.limits import session_input_error
from vigil.schema.payloads import StartSessionInput
from vigil.workflows.agents import effective_input


def test_a_definition_without_an_idle_time_keeps_its_hash() -> None:
    spec = AgentSpec(name="chat")
    data = spec.model_dump(mode="json")
    for key in ("webhooks", "conversation_idle_seconds"):
        data.pop(key)
    for key in ("execution", "batch_ms"):
        data["model"].pop(key)
    before = hashlib.sha256(canonical_json(data).encode("ascii")).hexdigest()
    assert content_hash(spec) == before
    assert content_hash(AgentSpec(name="chat", conversation_idle_seconds=60)) != before
    batched = AgentSpec.model_validate({"name": "chat", "model": {"batch_ms": 0}})
    assert content_hash(batched) != before


def test_the_definition_gives_the_idle_time_unless_the_starter_did() -> None:
    runtime = AgentRuntime(agent_id="chat", version=1, conversation_idle_seconds=60)
    arg = StartSessionInput(agent_id="chat", goal="g", conversation=True)
    assert effective_input(arg, runtime).conversation_idle_seconds == 60
    own = arg.model_copy(
        update={"conversation_idle_seconds": 5, "overrides": ["conversation_idle_seconds"]}
    )
    assert effective_input(own, runtime).conversation_idle_seconds == 5
    undefined = AgentRuntime(agent_id="chat")
    assert effective_input(arg, undefined).conversation_idle_seconds is None  # 24 hours


def test_an_idle_time_out_of_range_is_refused_at_start() -> None:
    arg = StartSessionInput(agent_id="chat", goal="g", conversation=True)
    too_long = arg.model_copy(update={"conversation_idle_seconds": 1e12})
    assert (session_input_error(too_long) or "").startswith("conversation_idle_seconds: ")
