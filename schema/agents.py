"""Agent definitions and the tool catalog: the shapes users write and the workflow reads.

An agent is a named, versioned definition written as a TOML or YAML file in a user's
repository (``AgentSpec``) and applied into PostgreSQL, each change an immutable version.
A session pins the version it started with; what the workflow needs of it travels as
``AgentRuntime`` (names and small metadata only: no credential, never a secret).

Pure data like ``schema.payloads``: no SQLAlchemy, no I/O, so workflow code may import it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from vigil.schema.hooks import WebhookEvent
from vigil.schema.payloads import MAX_CONTEXT_MESSAGES, Budget

Effects = Literal["none", "internal", "external"]
ApprovalMode = Literal["auto", "always", "never"]
"""auto: a tool with external effects needs approval, others do not."""
ToolKind = Literal["builtin", "python", "mcp"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"

MAX_AGENT_VERSION = 2**31 - 1
"""The largest version an agent definition can have (the record keeps it as an integer);
vigil's faces take no agent version past it, and no definition has one."""
AGENT_VERSIONS = f"versions are 1 to {MAX_AGENT_VERSION}"


def agent_version_error(version: int) -> str | None:
    """Why no definition can have ``version`` (None: one may): the one range check of an
    agent version, for the client, the update's validator and the version's read."""
    if 1 <= version <= MAX_AGENT_VERSION:
        return None
    return f"agent version {version} is out of range: {AGENT_VERSIONS}"


class Spec(BaseModel):
    """A part of an agent file: unknown keys are errors, so a typo never goes unnoticed;
    numbers are strict (``true`` or ``"100"`` is an error, not 1 or 100)."""

    model_config = ConfigDict(extra="forbid")

    PROSE: ClassVar[frozenset[str]] = frozenset()
    """Fields of free text that may hold NUL, as a conversation's text may."""

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any, info: ValidationInfo) -> Any:
        """A name, a model, a command, a URL being applied: no NUL (an escaped ``\\u0000``
        in a file), which no program, provider or header takes and a listing cannot show."""
        if applying(info) and info.field_name not in cls.PROSE and _holds_nul(value):
            raise ValueError("must not contain NUL characters")
        return value


APPLYING = {"applying": True}
"""The validation context of a definition being applied (an agent file, the API's body):
the checks added after versions were stored run only then, so a stored version, and the
runtime a session reads from it (which holds its model and memory settings), always
validate as they did when applied."""


def applying(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get("applying"))


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    return False


class ModelSettings(Spec):
    connection: str = Field(default="default", pattern=NAME_PATTERN)
    """A named model connection (provider kind, base URL, credential name) on the worker."""
    model: str | None = None
    """The provider's model name; the connection's default when unset."""
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000, strict=True)
    fallback: str | None = Field(default=None, pattern=NAME_PATTERN)
    """Connection used when the first keeps failing."""
    execution: Literal["activity", "local"] | None = None
    """How the session runs the model call: ``activity`` (the default) or ``local``, a
    local activity on the session's worker (fewer server round trips, lower latency; see
    the README's low-latency mode for what it costs)."""
    batch_ms: int | None = Field(default=None, ge=0, le=5000, strict=True)
    """How long (ms) one model call may go on taking the steps that follow while each is
    plain (step batches, in either mode); human input waits up to about this past the
    step it would have cut in after. 0: one step a call. Unset: 100."""


class ArgumentRule(Spec):
    """A call needs approval when one of its arguments looks like this."""

    argument: str = Field(min_length=1, max_length=200)
    """Top-level argument name."""
    matches: str | None = Field(default=None, max_length=1000)
    """Regular expression searched in the argument's text."""
    host_not_in: list[str] | None = None
    """For URL arguments: any host (``host`` or ``host:port``) outside this list."""


class ToolEntry(Spec):
    """One tool an agent may use: a built-in, a Python tool loaded by a worker, or
    ``server.tool`` of one of the agent's MCP servers."""

    name: str = Field(min_length=1, max_length=200)
    approval: ApprovalMode = "auto"
    approve_when: list[ArgumentRule] = Field(default_factory=list)
    timeout_seconds: float | None = Field(default=None, gt=0, le=24 * 3600, strict=True)
    max_attempts: int | None = Field(default=None, ge=1, le=100, strict=True)


class McpServerSpec(Spec):
    """An MCP server: a command speaking stdio, or a streamable HTTP URL."""

    name: str = Field(pattern=NAME_PATTERN)
    command: list[str] | None = None
    url: str | None = None
    credential: str | None = None
    """Name of the credential sent as a bearer token (HTTP)."""
    env: dict[str, str] = Field(default_factory=dict)
    tools: list[str] | None = None
    """Which of its tools the agent may use; all when unset."""
    approval: ApprovalMode = "auto"
    timeout_seconds: float | None = Field(default=None, gt=0, le=24 * 3600, strict=True)


class ContextSettings(Spec):
    messages: int = Field(default=40, ge=1, le=MAX_CONTEXT_MESSAGES, strict=True)
    tokens: int | None = Field(default=None, ge=256, le=2_000_000, strict=True)


class MemorySettings(Spec):
    recall: int = Field(default=5, ge=0, le=100, strict=True)
    read: list[str] = Field(default_factory=list)
    """Not supported: an agent recalls only its own memories. Refused when applied."""
    write: str | None = None
    """Not supported: an agent remembers under its own id. Refused when applied."""

    @field_validator("read", "write", mode="after")
    @classmethod
    def _own_namespace_only(cls, value: Any, info: ValidationInfo) -> Any:
        """Shared namespaces were declared but never used (an agent read and wrote only
        its own memories whatever they said): refused rather than taken and ignored.
        Versions applied before read back as they were (the check runs only when
        applying)."""
        if value and applying(info):
            raise ValueError(
                "shared memory namespaces are not supported: an agent recalls and "
                "remembers only its own memories (remove memory.read and memory.write)"
            )
        return value


class WebhookSpec(Spec):
    """An HTTP endpoint told about a session's events (``[[webhooks]]`` in an agent file).

    Deliveries are POSTed with an HMAC-SHA256 signature made with ``secret``: ``env:VAR``
    (the worker's environment) or the name of a stored credential (`vigil secret set`).
    """

    url: str = Field(min_length=8, max_length=2000, pattern=r"^https?://[^\s]+$")
    events: list[WebhookEvent] = Field(min_length=1)
    secret: str = Field(min_length=1, max_length=300)


class SpecBudget(Budget):
    """A definition's budget (``[budget]``): a session's ``Budget``, its numbers strict as
    every number of an agent file is. ``Budget`` itself stays lax: Temporal decodes it
    from a session's history, where any starter may have written ``5.0`` or ``"5"``."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(default=50, strict=True)
    max_tokens: int | None = Field(default=None, strict=True)
    max_cost_usd: float | None = Field(default=None, strict=True)
    max_seconds: float | None = Field(default=None, strict=True)


class AgentSpec(Spec):
    """What a user writes in ``agents/NAME.toml`` (or ``.yaml``)."""

    PROSE: ClassVar[frozenset[str]] = frozenset({"system_prompt", "variables"})

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    model: ModelSettings = Field(default_factory=ModelSettings)
    system_prompt: str | None = None
    """A template: ``{goal}``, ``{agent}`` and the names in ``variables`` are filled in."""
    variables: dict[str, str] = Field(default_factory=dict)
    tools: list[ToolEntry] = Field(default_factory=list)
    mcp_servers: list[McpServerSpec] = Field(default_factory=list)
    budget: SpecBudget = Field(default_factory=SpecBudget)
    approval_timeout_seconds: float = Field(default=24 * 3600, gt=0, strict=True)
    conversation_idle_seconds: float | None = Field(default=None, gt=0, strict=True)
    """How long the session of a key waits for the next message before it ends completed
    (``conversation_idle`` event); 24 hours when unset."""
    context: ContextSettings = Field(default_factory=ContextSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    webhooks: list[WebhookSpec] | None = None
    """Notified when an approval is requested, a human is asked, or a session ends."""


# --- what the workflow receives -----------------------------------------------------------


class ToolDescriptor(BaseModel):
    """One tool as a session sees it, fixed by the pinned agent version."""

    model_config = ConfigDict(extra="ignore")

    name: str
    kind: ToolKind = "builtin"
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    """JSON Schema of the arguments (validated in the activity and for edited arguments)."""
    effects: Effects = "internal"
    approval: ApprovalMode = "auto"
    approve_when: list[ArgumentRule] = Field(default_factory=list)
    handled_by: Literal["activity", "workflow"] = "activity"
    task_queue: str | None = None
    """Run on this task queue (a tool worker); the session's own queue when unset."""
    timeout_seconds: float | None = None
    max_attempts: int | None = None
    server: str | None = None
    """The MCP server of an ``mcp`` tool."""


class AgentRuntime(BaseModel):
    """What the open activity resolves for a session from its pinned agent version."""

    model_config = ConfigDict(extra="ignore")

    agent_id: str
    version: int | None = None
    """None: an agent without a definition (vigil's built-in tools, the default model)."""
    content_hash: str | None = None
    system_prompt: str | None = None
    prompt_around_goal: list[str] | None = None
    """The system prompt's text around each ``{goal}`` of its template: the prompt for
    another goal (a redirect's) is ``goal.join(prompt_around_goal)``. None: the prompt
    does not hold the goal."""
    model: ModelSettings = Field(default_factory=ModelSettings)
    tools: list[ToolDescriptor] = Field(default_factory=list)
    context: ContextSettings = Field(default_factory=ContextSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    budget: Budget | None = None
    """The definition's default budget (None for an agent without a definition)."""
    approval_timeout_seconds: float | None = None
    conversation_idle_seconds: float | None = None
    """The definition's idle time of a conversation (None: the default, 24 hours)."""
    webhook_events: list[str] | None = None
    """The events some webhook of the agent listens to (None or empty: none); the workflow
    starts a delivery only for these."""


class ResolveAgentInput(BaseModel):
    """What the session asks of ``vigil.resolve_agent`` once per run."""

    model_config = ConfigDict(extra="ignore")

    session_id: str
    agent_id: str
    goal: str
    """Fills ``{goal}`` in the system prompt template."""
    version: int | None = None
    """The pinned version; None: the newest (or none when the agent has no definition)."""


# --- digests: what identifies a spec and a tool call --------------------------------------


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no spaces, ASCII (lone surrogates survive)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def content_hash(spec: AgentSpec) -> str:
    """sha256 of the canonical JSON of a validated spec (defaults filled in)."""
    data = spec.model_dump(mode="json")
    if data.get("webhooks") is None:
        # Specs written before webhooks existed keep the hash they were applied with.
        data.pop("webhooks", None)
    if data.get("model", {}).get("execution") is None:
        data["model"].pop("execution", None)  # likewise for specs from before it
    if data.get("model", {}).get("batch_ms") is None:
        data["model"].pop("batch_ms", None)  # likewise
    if data.get("conversation_idle_seconds") is None:
        data.pop("conversation_idle_seconds", None)  # likewise
    return hashlib.sha256(canonical_json(data).encode("ascii")).hexdigest()


def call_digest(tool: str, arguments: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a tool call: an approval is bound to it."""
    text = canonical_json({"tool": tool, "arguments": arguments})
    return hashlib.sha256(text.encode("ascii")).hexdigest()
