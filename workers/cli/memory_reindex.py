"""`vigil memory reindex`: re-embed an agent's memories with another embedder, online.

The work is ``activities.memory.reindex.Reindexer``; this face builds the embedder from
the settings (the same ``VIGIL_EMBEDDER`` names) and shows progress: a progress bar in a
terminal, a plain line per percent to a pipe, a JSON object per batch with ``--json``.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vigil.workers.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    AgentOpt,
    JsonOpt,
    StateOpt,
    fail,
    out,
    run_db,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession as DbSession
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from vigil.activities.memory.reindex import ReindexProgress
    from vigil.workers.settings import Settings

EMBEDDERS = ("hashing", "openai", "local")


def _as_dict(p: ReindexProgress) -> dict[str, Any]:
    return {
        "agent_id": p.agent_id,
        "embedder": p.target.name,
        "version": p.target.version,
        "dim": p.target.dim,
        "previous": None if p.previous is None else p.previous.name,
        "total": p.total,
        "done": p.done,
        "resumed": p.resumed,
        "state": p.state,
    }


class _Plain:
    """One line per percent of progress (and the first and last), for pipes and logs."""

    def __init__(self) -> None:
        self._last = -1

    def __call__(self, p: ReindexProgress) -> None:
        percent = 100 if p.total == 0 else p.done * 100 // p.total
        if percent == self._last and p.state == "building":
            return
        self._last = percent
        what = "switched" if p.switched else "embedded"
        out.print(f"{p.agent_id}: {what} {p.done}/{p.total} ({percent}%) with {p.target.name}")


def memory_reindex(
    embedder: Annotated[
        str, typer.Option("--embedder", help="The new embedder: hashing, openai or local.")
    ],
    agent: AgentOpt = "default",
    dim: Annotated[
        int | None,
        typer.Option("--dim", min=8, help="Dimensions (hashing, openai); as configured if unset."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=4096, help="Memories embedded at a time.")
    ] = 64,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-embed an agent's memories with another embedder, online.

    Recall keeps the old vectors until the new ones are complete, then switches at once.
    Run it again to continue after an interruption."""
    if embedder not in EMBEDDERS:
        fail(f"unknown embedder {embedder!r}; one of {', '.join(EMBEDDERS)}", EXIT_USAGE)

    async def go(settings: Settings, sessionmaker: async_sessionmaker[DbSession]) -> None:
        from vigil.activities.memory.embedders import (
            MINILM_DIM,
            EmbedderUnavailable,
            EmbeddingError,
        )
        from vigil.activities.memory.provenance import environment_for
        from vigil.activities.memory.reindex import Reindexer
        from vigil.workers.wiring import make_embedder

        size = MINILM_DIM if embedder == "local" else (dim or settings.embedding_dim)
        chosen = settings.model_copy(update={"embedder": embedder, "embedding_dim": size})
        try:
            built = make_embedder(chosen)
        except (EmbedderUnavailable, ValueError) as exc:
            fail(str(exc), EXIT_USAGE)
        reindexer = Reindexer(sessionmaker, built, batch_size=batch_size)
        try:
            if as_json:

                def line(p: ReindexProgress) -> None:
                    sys.stdout.write(json.dumps(_as_dict(p)) + "\n")
                    sys.stdout.flush()

                done = await reindexer.run(agent, line)
            elif out.is_terminal:
                done = await _with_bar(reindexer, agent)
            else:
                done = await reindexer.run(agent, _Plain())
        except EmbeddingError as exc:
            fail(f"embedding failed (run the command again to continue): {exc}", EXIT_FAILED)
        finally:
            await built.aclose()
        if not as_json:
            out.print(
                f"agent {agent} recalls with {done.target}; workers need "
                f"{environment_for(done.target)}"
            )

    run_db(go, state_dir)


async def _with_bar(reindexer: Any, agent: str) -> ReindexProgress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=out,
    ) as bar:
        task = bar.add_task(f"{agent}: embedding", total=None)

        def show(p: ReindexProgress) -> None:
            label = "switched" if p.switched else f"embedding with {p.target.name}"
            bar.update(task, total=p.total, completed=p.done, description=f"{agent}: {label}")

        result: ReindexProgress = await reindexer.run(agent, show)
        return result
