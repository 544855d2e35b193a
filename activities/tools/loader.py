"""Loading Python tools into a worker: modules named with ``--tools`` and the entry point
group ``vigil.tools``. The tools are the ``PythonTool`` objects found there; nothing is
registered in a module global."""

from __future__ import annotations

import importlib
import importlib.metadata
import types
from collections.abc import Sequence
from typing import Any

from vigil.activities.tools.python import PythonTool
from vigil.schema import names


class ToolLoadError(RuntimeError):
    """A module or entry point named as holding tools cannot be loaded."""


def tools_in(obj: object) -> list[PythonTool[Any, Any]]:
    """The tools an imported object holds: a module's ``PythonTool`` attributes, a tool, or
    a list of tools."""
    if isinstance(obj, PythonTool):
        return [obj]
    if isinstance(obj, types.ModuleType):
        return [v for v in vars(obj).values() if isinstance(v, PythonTool)]
    if isinstance(obj, list | tuple):
        return [t for item in obj for t in tools_in(item)]
    return []


def load_python_tools(
    modules: Sequence[str] = (), *, entry_points: bool = True
) -> dict[str, PythonTool[Any, Any]]:
    """Import ``modules`` (``pkg.mod`` or ``pkg.mod:attribute``) and, when ``entry_points``,
    every entry point of the group ``vigil.tools``; return their tools by name.

    Two different tools under one name are an error (the agent file could not say which).
    """
    found: dict[str, PythonTool[Any, Any]] = {}

    def add(source: str, obj: object) -> None:
        tools = tools_in(obj)
        if not tools:
            raise ToolLoadError(f"{source} holds no @vigil.tool functions")
        for t in tools:
            other = found.get(t.name)
            if other is not None and other.fn is not t.fn:
                raise ToolLoadError(f"two tools named {t.name!r} (the second from {source})")
            found[t.name] = t

    for spec in modules:
        add(spec, _import(spec))
    if entry_points:
        for ep in importlib.metadata.entry_points(group=names.ENTRY_POINT_TOOLS):
            try:
                obj = ep.load()
            except Exception as exc:
                raise ToolLoadError(f"entry point {ep.name} ({ep.value}): {exc}") from exc
            add(f"entry point {ep.name} ({ep.value})", obj)
    return found


def _import(spec: str) -> object:
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ToolLoadError(f"cannot import tools module {module_name!r}: {exc}") from exc
    if not attribute:
        return module
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ToolLoadError(f"module {module_name!r} has no attribute {attribute!r}") from None
