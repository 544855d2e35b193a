"""Python tools that run on task queues of their own (tool workers), for the tests of
sessions whose tools only a ``vigil worker --tools-only`` process serves."""

from __future__ import annotations

import os

import vigil

TOOLS_QUEUE = "vigil-test-tool-worker"
"""Served by the tools-only worker process of tests/integration/test_tools_only_worker.py."""
NOBODY_QUEUE = "vigil-test-no-tool-worker"
"""Served by no worker, ever."""


@vigil.tool(effects="none", task_queue=TOOLS_QUEUE)
async def worker_pid() -> dict[str, int]:
    """The process id of the worker that ran the call."""
    return {"pid": os.getpid()}


@vigil.tool(effects="none", task_queue=NOBODY_QUEUE)
async def render_frames(count: int = 1) -> str:
    """Render frames on a GPU machine."""
    return f"rendered {count}"
