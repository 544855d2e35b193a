"""vigil: durable autonomous AI agents on Temporal, PostgreSQL/pgvector and an object store.

``vigil`` is the one supported import. Its subpackages follow the repository's layout
(``vigil.workflows``, ``vigil.activities``, ``vigil.workers``, ``vigil.schema``); the
names users need are re-exported here and loaded on first use, so ``import vigil`` stays
cheap and safe inside Temporal's workflow sandbox.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute); imported lazily on first access
_EXPORTS: dict[str, tuple[str, str]] = {
    "VigilClient": ("vigil.workers.client", "VigilClient"),
    "Settings": ("vigil.workers.settings", "Settings"),
    "StartSessionInput": ("vigil.schema.payloads", "StartSessionInput"),
    "SessionStatus": ("vigil.schema.payloads", "SessionStatus"),
    "Budget": ("vigil.schema.payloads", "Budget"),
    "ToolPolicy": ("vigil.schema.payloads", "ToolPolicy"),
    "AgentSpec": ("vigil.schema.agents", "AgentSpec"),
    "tool": ("vigil.activities.tools.python", "tool"),
    "ToolContext": ("vigil.activities.tools.python", "ToolContext"),
    "ToolRetry": ("vigil.activities.tools.python", "ToolRetry"),
    "ToolFailed": ("vigil.activities.tools.registry", "ToolFailed"),
    "PythonTool": ("vigil.activities.tools.python", "PythonTool"),
}

if TYPE_CHECKING:
    from vigil.activities.tools.python import PythonTool, ToolContext, ToolRetry, tool
    from vigil.activities.tools.registry import ToolFailed
    from vigil.schema.agents import AgentSpec
    from vigil.schema.payloads import Budget, SessionStatus, StartSessionInput, ToolPolicy
    from vigil.workers.client import VigilClient
    from vigil.workers.settings import Settings

__all__ = [
    "AgentSpec",
    "Budget",
    "PythonTool",
    "SessionStatus",
    "Settings",
    "StartSessionInput",
    "ToolContext",
    "ToolFailed",
    "ToolPolicy",
    "ToolRetry",
    "VigilClient",
    "__version__",
    "tool",
]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'vigil' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
