"""The catalog's decisions: approval rules on arguments, call digests, edited arguments
checked against the schema, and a definition's settings under the starter's overrides."""

from __future__ import annotations

from vigil.activities.agents.catalog import describe_tools, rules_match
from vigil.schema.agents import AgentRuntime, AgentSpec, ArgumentRule, call_digest
from vigil.schema.payloads import Budget, StartSessionInput, ToolCallRef, ToolPolicy
from vigil.workflows import agents as policy

SPEC = AgentSpec.model_validate(
    {
        "name": "a",
        "tools": [
            {
                "name": "http_fetch",
                "approve_when": [{"argument": "url", "host_not_in": ["ok.test"]}],
            },
            {"name": "write_artifact", "approval": "always", "timeout_seconds": 5},
            {
                "name": "remember",
                "approve_when": [{"argument": "content", "matches": "(?i)secret"}],
            },
            {"name": "read_artifact"},
        ],
        "budget": {"max_steps": 7, "max_cost_usd": 1.5},
        "context": {"messages": 11},
        "model": {"max_tokens": 300},
        "approval_timeout_seconds": 60,
    }
)
TOOLS = {t.name: t for t in describe_tools(SPEC)}
RUNTIME = AgentRuntime(
    agent_id="a",
    version=3,
    tools=list(TOOLS.values()),
    system_prompt="be brief",
    model=SPEC.model,
    context=SPEC.context,
    budget=SPEC.budget,
    approval_timeout_seconds=60,
)


def _call(name: str, matched: bool | None = None) -> ToolCallRef:
    return ToolCallRef(index=0, call_id="c", name=name, valid=True, rule_matched=matched)


def test_host_rules() -> None:
    fetch = TOOLS["http_fetch"]
    assert rules_match(fetch, {"url": "https://ok.test/page"}) is False
    assert rules_match(fetch, {"url": "https://evil.test/"}) is True
    assert rules_match(fetch, {"url": "not a url"}) is True
    assert rules_match(TOOLS["remember"], {"content": "my SECRET plan"}) is True
    assert rules_match(TOOLS["remember"], {"content": "weather"}) is False
    assert rules_match(TOOLS["read_artifact"], {"name": "x"}) is None


def test_port_in_host_list() -> None:
    rule = ArgumentRule(argument="url", host_not_in=["127.0.0.1:8080"])
    tool = TOOLS["http_fetch"].model_copy(update={"approve_when": [rule]})
    assert rules_match(tool, {"url": "http://127.0.0.1:8080/x"}) is False
    assert rules_match(tool, {"url": "http://127.0.0.1:9090/x"}) is True


def test_who_needs_approval() -> None:
    default = ToolPolicy()
    assert policy.needs_approval(RUNTIME, default, _call("http_fetch", True))
    assert not policy.needs_approval(RUNTIME, default, _call("http_fetch", False))
    assert policy.needs_approval(RUNTIME, default, _call("write_artifact"))
    assert not policy.needs_approval(RUNTIME, default, _call("read_artifact"))
    # The starter's explicit list wins over the catalog.
    explicit = ToolPolicy(require_approval=["read_artifact"])
    assert policy.needs_approval(RUNTIME, explicit, _call("read_artifact"))
    assert not policy.needs_approval(RUNTIME, explicit, _call("write_artifact"))


def test_digest_is_canonical() -> None:
    a = call_digest("http_fetch", {"url": "u", "n": [1, {"b": 2, "a": 1}]})
    b = call_digest("http_fetch", {"n": [1, {"a": 1, "b": 2}], "url": "u"})
    assert a == b and len(a) == 64
    assert a != call_digest("http_fetch", {"url": "v", "n": [1, {"a": 1, "b": 2}]})
    assert a != call_digest("other", {"url": "u", "n": [1, {"a": 1, "b": 2}]})


def test_edited_arguments_against_the_schema() -> None:
    assert policy.edited_arguments_error(RUNTIME, "http_fetch", {"url": "https://x"}) is None
    error = policy.edited_arguments_error(RUNTIME, "http_fetch", {"url": 5})
    assert error is not None and "at url" in error
    extra = policy.edited_arguments_error(RUNTIME, "http_fetch", {"url": "https://x", "u": 1})
    assert extra is not None and "Additional properties" in extra
    # Without a definition the built-in schemas apply.
    assert policy.edited_arguments_error(None, "http_fetch", {}) is not None


def test_definition_settings_and_overrides() -> None:
    plain = StartSessionInput(agent_id="a", goal="g")
    merged = policy.effective_input(plain, RUNTIME)
    assert merged.budget.max_steps == 7 and merged.budget.max_cost_usd == 1.5
    assert merged.system_prompt == "be brief"
    assert merged.context_messages == 11 and merged.max_tokens_per_call == 300
    assert merged.policy.approval_timeout_seconds == 60
    mine = StartSessionInput(
        agent_id="a",
        goal="g",
        budget=Budget(max_steps=2),
        system_prompt="mine",
        overrides=["budget.max_steps", "system_prompt"],
    )
    merged = policy.effective_input(mine, RUNTIME)
    assert merged.budget.max_steps == 2 and merged.budget.max_cost_usd == 1.5
    assert merged.system_prompt == "mine"
    # No definition: the input as it is.
    assert policy.effective_input(plain, AgentRuntime(agent_id="a")) == plain


def test_a_bare_host_is_trusted_on_its_schemes_port_only() -> None:
    rule = ArgumentRule(argument="url", host_not_in=["good.test"])
    tool = TOOLS["http_fetch"].model_copy(update={"approve_when": [rule]})
    assert rules_match(tool, {"url": "https://good.test/x"}) is False
    assert rules_match(tool, {"url": "https://good.test:443/x"}) is False
    assert rules_match(tool, {"url": "http://good.test:80/x"}) is False
    for other_port in ("http://good.test:8080/", "https://good.test:22/", "good.test:6379"):
        assert rules_match(tool, {"url": other_port}) is True, other_port


def test_a_rule_reads_a_list_or_object_argument_as_written() -> None:
    rule = ArgumentRule(argument="to", matches="@münchen\\.de|пароль")
    tool = TOOLS["remember"].model_copy(update={"approve_when": [rule]})
    assert rules_match(tool, {"to": ["chef@münchen.de"]}) is True
    assert rules_match(tool, {"to": {"note": "мой пароль"}}) is True
    assert rules_match(tool, {"to": ["chef@berlin.de"]}) is False
    # Written escaped, a rule still matches the text JSON gives: either form asks.
    escaped = ArgumentRule(argument="to", matches="\\\\u00fc")
    tool = TOOLS["remember"].model_copy(update={"approve_when": [escaped]})
    assert rules_match(tool, {"to": ["ü"]}) is True
