"""Python tools: ``@vigil.tool`` on a typed, documented async function.

The decorator turns a typed, documented async function into a ``PythonTool``: a pydantic
model generated from its type hints validates the arguments and gives the JSON schema the
model sees, the docstring gives the descriptions, and the declared effects set the default
approval rule (``external`` needs a human's approval). A parameter typed ``ToolContext``
is not an argument: the worker injects the call's context there.

A worker loads such tools with ``activities.tools.loader`` and runs them through
``activities.tools.runner``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from temporalio import activity

from vigil.activities.tools.docstrings import parse_docstring, schema_without_titles
from vigil.schema.agents import Effects, ToolDescriptor

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession as DbSession
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from vigil.activities.artifacts.registry import ArtifactRef
    from vigil.activities.artifacts.store import ArtifactStore

P = ParamSpec("P")
R = TypeVar("R")

TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
"""What every model provider accepts as a function name (no dots: OpenAI and Anthropic
refuse them)."""
DATA_LIMIT = 16 * 1024
"""A tool's structured result is kept in the record's event up to this size (as JSON)."""


class ToolRetry(Exception):
    """Raise from a tool for a failure worth another attempt (a busy service, a lock).

    The call is retried as a new activity attempt, with the same idempotency key, up to
    the tool's ``max_attempts``; then the message goes back to the model as the tool's
    error. Any other exception goes back to the model at once.
    """

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class ToolArgumentsInvalid(ValueError):
    """The model's arguments do not fit the tool's parameters; goes back to the model."""


@dataclass(frozen=True)
class SessionArtifacts:
    """The session's artifact store as a tool sees it: named, content-addressed, recorded."""

    store: ArtifactStore
    sessionmaker: async_sessionmaker[DbSession]
    agent_id: str
    session_id: str

    async def put(
        self, name: str, data: bytes | str, mime_type: str = "application/octet-stream"
    ) -> ArtifactRef:
        """Store ``data`` under ``name`` in this session (a str is stored as UTF-8 text)."""
        from vigil.activities.artifacts.registry import put_artifact

        if isinstance(data, str):
            data = data.encode("utf-8")
            if mime_type == "application/octet-stream":
                mime_type = "text/plain; charset=utf-8"
        return await put_artifact(
            self.store,
            self.sessionmaker,
            agent_id=self.agent_id,
            session_id=self.session_id,
            name=name,
            data=data,
            mime_type=mime_type,
        )

    async def get(self, name: str) -> bytes:
        """The bytes of this session's artifact ``name`` (verified against its sha256)."""
        from vigil.activities.artifacts.registry import get_artifact

        _ref, data = await get_artifact(
            self.store,
            self.sessionmaker,
            agent_id=self.agent_id,
            session_id=self.session_id,
            name=name,
        )
        return data


@dataclass(frozen=True)
class ToolContext:
    """What a Python tool may know of the call it serves; ask for it with a parameter
    typed ``vigil.ToolContext``.

    External effects run at least once: a worker can die after the effect and before the
    result is recorded, and the call then runs again. ``idempotency_key`` is the same on
    every attempt of one call and differs between calls, so a tool that passes it on (an
    ``Idempotency-Key`` header, a unique column) makes itself exactly-once.
    """

    session_id: str
    agent_id: str
    step: int
    tool: str
    call_id: str
    """The model's id of this tool call."""
    idempotency_key: str
    attempt: int = 1
    """1 on the first attempt, then 2, 3, ... on retries."""
    artifacts: SessionArtifacts | None = None
    """The session's artifacts (None when the tool is called outside a worker)."""

    def heartbeat(self, *details: Any) -> None:
        """Tell Temporal the tool is alive (vigil also heartbeats on its own while it runs);
        a no-op outside a worker. ``details`` show in Temporal UI's pending activity after
        vigil's own, which carry what the call's earlier attempts left: the next attempt
        reads them back as ``temporalio.activity.info().heartbeat_details[1:]``."""
        if activity.in_activity():
            # Imported here: a module of tools imports this one, and needs no database.
            from vigil.activities import guard

            guard.beat(*details)


def idempotency_key(session_id: str, step: int, call_index: int) -> str:
    """Stable across retries and worker crashes, unique per tool call of a session."""
    return f"vigil:{session_id}:{step}:{call_index}"


@dataclass(frozen=True)
class PythonTool(Generic[P, R]):
    """A function marked with ``@vigil.tool``; calling it calls the function."""

    fn: Callable[P, Awaitable[R]]
    name: str
    description: str
    arguments: type[BaseModel]
    """Generated from the type hints; validates the model's arguments."""
    context_parameter: str | None
    effects: Effects
    timeout_seconds: float | None
    max_attempts: int | None
    task_queue: str | None
    parameters: dict[str, Any] = field(repr=False)
    """JSON Schema of the arguments, as the model sees it."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        return self.fn(*args, **kwargs)

    def describe(self) -> ToolDescriptor:
        return describe_python_tool(self)

    def validate(self, arguments: dict[str, Any]) -> BaseModel:
        """The arguments as the generated model; ToolArgumentsInvalid with a short reason."""
        try:
            return self.arguments.model_validate(arguments)
        except ValidationError as exc:
            raise ToolArgumentsInvalid(_short_errors(self.name, exc)) from None

    async def invoke(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        """Validate ``arguments`` and call the function (with ``context`` if it asks)."""
        values = self.validate(arguments)
        kwargs: dict[str, Any] = {
            str(info.alias): getattr(values, field)
            for field, info in type(values).model_fields.items()
        }
        if self.context_parameter is not None:
            kwargs[self.context_parameter] = context
        return await self.fn(**kwargs)  # type: ignore[call-arg]


def describe_python_tool(tool: PythonTool[Any, Any]) -> ToolDescriptor:
    """The catalog entry of a Python tool (the agent file may override approval, timeout
    and attempts)."""
    return ToolDescriptor(
        name=tool.name,
        kind="python",
        description=tool.description,
        parameters=tool.parameters,
        effects=tool.effects,
        task_queue=tool.task_queue,
        timeout_seconds=tool.timeout_seconds,
        max_attempts=tool.max_attempts,
    )


# --- the decorator -----------------------------------------------------------------------


@overload
def tool(fn: Callable[P, Awaitable[R]], /) -> PythonTool[P, R]: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    effects: Effects = "internal",
    timeout_seconds: float | None = None,
    max_attempts: int | None = None,
    task_queue: str | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], PythonTool[P, R]]: ...


def tool(
    fn: Callable[P, Awaitable[R]] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    effects: Effects = "internal",
    timeout_seconds: float | None = None,
    max_attempts: int | None = None,
    task_queue: str | None = None,
) -> PythonTool[P, R] | Callable[[Callable[P, Awaitable[R]]], PythonTool[P, R]]:
    """Make an async function a vigil tool: ``@vigil.tool`` or ``@vigil.tool(...)``.

    effects: ``none`` (reads only), ``internal`` (changes vigil's own state) or
    ``external`` (reaches other systems; needs a human's approval unless the agent file
    says otherwise). timeout_seconds / max_attempts: per call, and attempts for
    ``vigil.ToolRetry``. task_queue: the queue of the tool workers that load it.
    """

    def wrap(f: Callable[P, Awaitable[R]]) -> PythonTool[P, R]:
        return _make_tool(
            f,
            name=name,
            description=description,
            effects=effects,
            timeout_seconds=timeout_seconds,
            max_attempts=max_attempts,
            task_queue=task_queue,
        )

    return wrap if fn is None else wrap(fn)


def _make_tool(
    fn: Callable[P, Awaitable[R]],
    *,
    name: str | None,
    description: str | None,
    effects: Effects,
    timeout_seconds: float | None,
    max_attempts: int | None,
    task_queue: str | None,
) -> PythonTool[P, R]:
    tool_name: str = name or str(getattr(fn, "__name__", ""))
    where = f"@vigil.tool {tool_name or fn!r}"
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"{where}: needs an async function (async def)")
    if not TOOL_NAME.fullmatch(tool_name):
        raise ValueError(f"{where}: a tool name is letters, digits, _ and -, at most 64")
    if effects not in ("none", "internal", "external"):
        raise ValueError(f"{where}: effects is none, internal or external, not {effects!r}")
    if timeout_seconds is not None and timeout_seconds <= 0:
        raise ValueError(f"{where}: timeout_seconds must be positive")
    if max_attempts is not None and not 1 <= max_attempts <= 100:
        raise ValueError(f"{where}: max_attempts is between 1 and 100")
    summary, param_docs = parse_docstring(inspect.getdoc(fn) or "")
    hints = get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    context_parameter: str | None = None
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise TypeError(f"{where}: parameter {param.name} must be a named parameter")
        if param.name not in hints:
            raise TypeError(f"{where}: parameter {param.name} needs a type hint")
        hint = hints[param.name]
        if hint is ToolContext:
            context_parameter = param.name
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        # Fields are named apart from their parameters (which are the aliases): a parameter
        # called `schema` or `json` must not shadow the model's own attributes.
        fields[f"p{len(fields)}"] = (
            hint,
            Field(default, alias=param.name, description=param_docs.get(param.name)),
        )
    model = create_model(
        f"{tool_name}_arguments",
        __config__=ConfigDict(extra="forbid", protected_namespaces=()),
        **fields,
    )
    text = description if description is not None else summary
    return PythonTool(
        fn=fn,
        name=tool_name,
        description=text,
        arguments=model,
        context_parameter=context_parameter,
        effects=effects,
        timeout_seconds=timeout_seconds,
        max_attempts=max_attempts,
        task_queue=task_queue,
        parameters=schema_without_titles(model.model_json_schema()),
    )


def _short_errors(name: str, exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    more = f" (and {exc.error_count() - limit} more)" if exc.error_count() > limit else ""
    return f"invalid arguments for {name}: " + "; ".join(parts) + more
