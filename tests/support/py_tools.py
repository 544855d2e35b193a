"""Python tools for the tests, loaded by workers with ``--tools tests.support.py_tools``."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field

import vigil


class Count(BaseModel):
    words: int
    lines: int


@vigil.tool(effects="none")
async def word_count(text: str, min_length: int = 1) -> Count:
    """Count the words and lines of a text.

    Args:
        text: The text to count.
        min_length: Words shorter than this are not counted.
    """
    words = [w for w in text.split() if len(w) >= min_length]
    return Count(words=len(words), lines=len(text.splitlines()))


@vigil.tool(timeout_seconds=0.5)
async def sleepy(seconds: float) -> str:
    """Sleep, then say so."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}s"


@vigil.tool
async def explode(message: str) -> str:
    """Raise an ordinary exception (a tool's bug)."""
    raise RuntimeError(message)


@vigil.tool
async def quit_process(code: int) -> str:
    """Call ``sys.exit`` (a library written for the command line may)."""
    sys.exit(code)


@vigil.tool
async def interrupted() -> str:
    """Raise KeyboardInterrupt (a library that turns a signal it caught into one may)."""
    raise KeyboardInterrupt


@vigil.tool(max_attempts=3)
async def flaky(journal: str, failures: int, ctx: vigil.ToolContext) -> str:
    """Ask for a retry ``failures`` times, writing each attempt and its idempotency key to
    the ``journal`` file; then succeed."""
    await asyncio.to_thread(_append, Path(journal), f"{ctx.attempt} {ctx.idempotency_key}\n")
    if ctx.attempt <= failures:
        raise vigil.ToolRetry("the service is busy", retry_after_seconds=0.1)
    return f"done on attempt {ctx.attempt}"


@vigil.tool(max_attempts=2)
async def held_then_busy(journal: str, ctx: vigil.ToolContext) -> str:
    """Write each attempt's number to ``journal``. The first holds for a minute (its
    worker stops under it), the second asks for a retry, the third answers."""
    await asyncio.to_thread(_append, Path(journal), f"{ctx.attempt}\n")
    if ctx.attempt == 1:
        await asyncio.sleep(60)
    if ctx.attempt == 2:
        raise vigil.ToolRetry("the service is busy", retry_after_seconds=0.1)
    return f"done on attempt {ctx.attempt}"


def _append(path: Path, line: str) -> None:
    with path.open("a") as f:
        f.write(line)


@vigil.tool(effects="external")
async def save_note(name: str, text: str, ctx: vigil.ToolContext) -> str:
    """Store a note as an artifact of the session."""
    assert ctx.artifacts is not None
    ref = await ctx.artifacts.put(name, text)
    return f"saved {ref.name} ({ref.size} bytes) for {ctx.session_id} step {ctx.step}"


@vigil.tool
async def whoami() -> dict[str, int]:
    """The process id of the worker that ran the call."""
    return {"pid": os.getpid()}


@vigil.tool(effects="none")
async def ratio(numerator: float, denominator: float) -> dict[str, float]:
    """numerator / denominator, as a float: NaN for 0/0, infinite for x/0."""
    if denominator == 0:
        return {"ratio": float("nan") if numerator == 0 else float("inf") * numerator}
    return {"ratio": numerator / denominator}


@vigil.tool(effects="none")
async def pay(amount: Annotated[float, Field(multiple_of=0.01)]) -> str:
    """Pay an amount to the cent.

    Args:
        amount: How much, in whole cents.
    """
    return f"paid {amount:.2f}"
