"""Payloads of catalog tool calls: what run_tool is told of the tool, and the queue probe.

Pure data like ``schema.payloads`` (workflow code imports it). ``ToolCallInput`` is a
``RunToolInput`` with the tool's catalog entry; a workflow that sends a plain
``RunToolInput`` (every recorded history) decodes into it unchanged.
"""

from __future__ import annotations

from vigil.schema.agents import McpServerSpec, ToolDescriptor
from vigil.schema.payloads import Payload, RunToolInput


class ToolCallInput(RunToolInput):
    """run_tool's input with the called tool's catalog entry (from the pinned agent)."""

    tool: ToolDescriptor | None = None
    """None: a built-in tool, as before agent catalogs."""
    mcp_server: McpServerSpec | None = None
    """The server of an ``mcp`` tool (its command or URL and credential name)."""


class ProbeToolQueueInput(Payload):
    task_queue: str


class ProbeToolQueueOutput(Payload):
    task_queue: str
    pollers: int
    """Workers that polled the queue for activities recently."""
    identities: list[str] = []
