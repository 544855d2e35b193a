"""A Python tool for vigil: an async function with type hints, a docstring and
``@vigil.tool``. Load it into a worker with ``vigil worker --tools examples.ops_tools.tools``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pydantic import BaseModel

import vigil


class BigFile(BaseModel):
    path: str
    bytes: int


class DiskUsage(BaseModel):
    root: str
    files: int
    bytes: int
    biggest: list[BigFile]


@vigil.tool(effects="none", timeout_seconds=60)
async def disk_usage(path: str = ".", top: int = 5) -> DiskUsage:
    """Measure the files under a folder: how many, how big, and the biggest ones.

    Args:
        path: The folder to measure, relative to the worker's working folder.
        top: How many of the biggest files to list.
    """
    root, sizes = await asyncio.to_thread(_sizes, path)
    biggest = sorted(sizes.items(), key=lambda kv: kv[1], reverse=True)[: max(0, top)]
    return DiskUsage(
        root=str(root),
        files=len(sizes),
        bytes=sum(sizes.values()),
        biggest=[BigFile(path=p, bytes=n) for p, n in biggest],
    )


def _sizes(path: str) -> tuple[Path, dict[str, int]]:
    here = Path.cwd().resolve()
    root = (here / path).resolve()
    if not root.is_relative_to(here):  # an absolute path, or one that climbs out
        raise vigil.ToolFailed(f"{path} is outside the worker's working folder")
    if not root.is_dir():
        raise vigil.ToolFailed(f"{path} is not a folder")
    sizes: dict[str, int] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            full = Path(folder, name)
            try:
                if not full.is_symlink():
                    sizes[str(full.relative_to(root))] = full.stat().st_size
            except OSError:
                continue  # vanished or unreadable: not worth failing the whole walk
    return root, sizes
