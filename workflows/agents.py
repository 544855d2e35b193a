"""What a session's pinned agent definition decides (deterministic, no I/O).

The session resolves its ``AgentRuntime`` once per run (``vigil.resolve_agent``); the
pure functions here apply it: the definition's settings where the starter set none, the
tool catalog (allowed tools, approval rules), and the checks an approval's edited
arguments must pass before the decision is accepted. Where a call runs is
``workflows.tool_routing``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import workflow

from vigil.schema.agents import AgentRuntime, ToolDescriptor
from vigil.schema.payloads import Budget, StartSessionInput, ToolCallRef, ToolPolicy
from vigil.schema.tools import BUILTIN_TOOLS
from vigil.schema.tools import needs_approval as builtin_needs_approval

with workflow.unsafe.imports_passed_through():
    # Deterministic validation, imported once outside the sandbox.
    from vigil.schema.arguments import argument_validator, fit_errors


def defined(runtime: AgentRuntime | None) -> bool:
    return runtime is not None and runtime.version is not None


def model_call_fields(runtime: AgentRuntime | None) -> dict[str, Any]:
    """What ``call_model`` needs of the definition: names and numbers only."""
    if runtime is None or runtime.version is None:
        return {}
    return {
        "agent_version": runtime.version,
        "connection": runtime.model.connection,
        "model": runtime.model.model,
        "temperature": runtime.model.temperature,
        "fallback": runtime.model.fallback,
        "context_tokens": runtime.context.tokens,
        "recall": runtime.memory.recall,
    }


def effective_input(arg: StartSessionInput, runtime: AgentRuntime) -> StartSessionInput:
    """``arg`` with the definition's settings wherever the starter did not override them
    (``arg.overrides``). An agent without a definition keeps ``arg`` as it is."""
    if runtime.version is None:
        return arg
    over = set(arg.overrides or [])
    updates: dict[str, Any] = {}
    if runtime.budget is not None and "budget" not in over:
        kept = {
            name: getattr(arg.budget, name)
            for name in Budget.model_fields
            if f"budget.{name}" in over
        }
        updates["budget"] = runtime.budget.model_copy(update=kept)
    if runtime.system_prompt is not None and "system_prompt" not in over:
        updates["system_prompt"] = runtime.system_prompt
    if "context_messages" not in over:
        updates["context_messages"] = runtime.context.messages
    if runtime.model.max_tokens is not None and "max_tokens_per_call" not in over:
        updates["max_tokens_per_call"] = runtime.model.max_tokens
    if (
        runtime.approval_timeout_seconds is not None
        and "policy.approval_timeout_seconds" not in over
    ):
        updates["policy"] = arg.policy.model_copy(
            update={"approval_timeout_seconds": runtime.approval_timeout_seconds}
        )
    if runtime.conversation_idle_seconds is not None and "conversation_idle_seconds" not in over:
        updates["conversation_idle_seconds"] = runtime.conversation_idle_seconds
    return arg.model_copy(update=updates)


ALWAYS_OFFERED = "finish"
"""The tool a starter's ``allowed`` list cannot take away (only the session's own end)."""


def tool_names(runtime: AgentRuntime | None, policy: ToolPolicy) -> list[str]:
    """The tools the model is offered: the catalog (or every built-in without a
    definition), narrowed by the starter's ``allowed`` list; ``finish``, which changes
    nothing outside the session, whatever the list (a session whose model could not
    finish was failed for its refused calls)."""
    if runtime is not None and runtime.version is not None:
        names = [t.name for t in runtime.tools]
    else:
        names = list(BUILTIN_TOOLS)
    allowed = policy.allowed
    return [n for n in names if allowed is None or n in allowed or n == ALWAYS_OFFERED]


def descriptor(runtime: AgentRuntime | None, name: str) -> ToolDescriptor | None:
    if runtime is not None and runtime.version is not None:
        return next((t for t in runtime.tools if t.name == name), None)
    info = BUILTIN_TOOLS.get(name)
    if info is None:
        return None
    return ToolDescriptor(
        name=info.name,
        description=info.description,
        parameters=info.parameters,
        effects=info.effects,
        handled_by=info.handled_by,
    )


def needs_approval(
    runtime: AgentRuntime | None,
    policy: ToolPolicy,
    call: ToolCallRef,
    *,
    rules_over_never: Callable[[], bool] = lambda: False,
) -> bool:
    """The starter's explicit list wins; else the tool's rule in the catalog: ``always``,
    ``never``, or ``auto`` (its ``approve_when`` rules when it has some, otherwise
    external effects). ``rules_over_never``, asked only for a call that meets a rule of a
    tool that says ``never``: whether the rule wins (``PATCH_RULES_OVER_NEVER``; before,
    the call ran)."""
    if not defined(runtime) or policy.require_approval is not None:
        return builtin_needs_approval(call.name, policy.require_approval)
    tool = descriptor(runtime, call.name)
    if tool is None:
        return False
    if tool.approval == "never" and tool.approve_when and call.rule_matched:
        return rules_over_never()
    if tool.approval != "auto":
        return tool.approval == "always"
    if tool.approve_when:
        return bool(call.rule_matched)
    return tool.effects == "external"


def edited_arguments_error(
    runtime: AgentRuntime | None,
    tool: str,
    arguments: dict[str, Any],
    *,
    strict: bool = True,
    linear: bool = True,
) -> str | None:
    """Why a human's edited arguments cannot be run by ``tool``; None when they fit.
    ``strict``: integers as ``schema.arguments`` counts them (False: as JSON Schema does,
    as they were checked before ``PATCH_WHOLE_NUMBERS``). ``linear``: patterns matched in
    linear time (False: by Python's ``re``, before ``PATCH_LINEAR_PATTERNS``)."""
    found = descriptor(runtime, tool)
    if found is None:
        return f"tool {tool!r} is not in this session's catalog"
    if not found.parameters:
        return None
    validator = argument_validator(found.parameters, strict=strict, linear=linear)
    try:
        errors = fit_errors(validator, arguments)
    except (ArithmeticError, ValueError, TypeError, RecursionError) as exc:
        # A number the schema's keywords cannot take (``multipleOf`` of a float and an
        # integer of hundreds of digits, or Infinity): a refusal, not a failed task.
        return f"edited_arguments cannot be checked against {tool}'s schema: {exc}"
    if errors is None:
        return None
    return f"edited_arguments do not fit {tool}'s schema {errors}"
