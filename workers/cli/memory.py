"""An agent's long-term memory: `vigil memory search | add | history | forget | reindex`."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from vigil.workers.cli.common import (
    EXIT_USAGE,
    AgentOpt,
    AllowUnknownAgentOpt,
    ByOpt,
    JsonOpt,
    StateOpt,
    by_default,
    emit,
    fail,
    nothing,
    out,
    run_client,
    stdin_text,
    table,
    vet_agents,
    warn,
)
from vigil.workers.cli.memory_reindex import memory_reindex

if TYPE_CHECKING:
    from vigil.activities.memory.records import MemoryRecord
    from vigil.workers.client import VigilClient

memory_app = typer.Typer(help="An agent's long-term memory.", no_args_is_help=True)


@memory_app.command("search")
def memory_search(
    query: str,
    agent: AgentOpt = "default",
    k: Annotated[int, typer.Option("-k", help="At most this many memories.")] = 10,
    include_superseded: Annotated[bool, typer.Option("--all", help="Include superseded.")] = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hybrid search (vector + full text) of an agent's long-term memory."""

    async def go(client: VigilClient) -> None:
        found = await client.memory_search(agent, query, k=k, include_superseded=include_superseded)

        def human() -> None:
            if not found:
                hint = (
                    "searched the memory of agent 'default'; name another with --agent"
                    if agent == "default"
                    else f"searched the memory of agent {agent!r}"
                )
                nothing(f"no memories match {query!r}", hint)
                return
            # Only with --all can a row be superseded: then a state column says which.
            state = include_superseded
            columns = ["id", "kind", "subject", *(["state"] if state else []), "score", "content"]
            rows = [
                (
                    m.id,
                    m.kind,
                    m.subject or "-",
                    *([("superseded" if m.superseded else "current")] if state else []),
                    f"{m.score:.4f}",
                    m.content,
                )
                for m in found
            ]
            out.print(table(columns, rows))

        emit([asdict(m) for m in found], as_json, human)

    run_client(go, state_dir)


@memory_app.command("add")
def memory_add(
    content: str,
    agent: AgentOpt = "default",
    kind: Annotated[str, typer.Option(help="fact, reflection or lesson")] = "fact",
    subject: Annotated[
        str | None,
        typer.Option(help="What it is about: a newer memory about the same subject supersedes it."),
    ] = None,
    importance: Annotated[float, typer.Option(help="0 to 1: how much it weighs in recall.")] = 0.5,
    allow_unknown: AllowUnknownAgentOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a memory (merged with a near-duplicate, or superseding one about the same subject).

    CONTENT `-` reads it from standard input."""

    if content == "-":
        content = stdin_text()
    if kind not in ("fact", "reflection", "lesson"):  # as the client's MEMORY_KINDS
        fail(f"unknown memory kind {kind!r}; one of fact, reflection, lesson", EXIT_USAGE)
    if not 0.0 <= importance <= 1.0:
        fail(f"--importance {importance} is outside 0..1", EXIT_USAGE)

    async def go(client: VigilClient) -> None:
        unknown = await vet_agents(
            client.db, [agent], allow_unknown=allow_unknown, then="; it will recall the memory"
        )
        result = await client.memory_add(
            agent, content, kind=kind, subject=subject, importance=importance
        )
        warn(unknown)

        def human() -> None:
            whose = f" of agent {agent!r}" if result.action == "merged" else f" for agent {agent!r}"
            out.print(Text(result.said(whose)))

        emit(asdict(result), as_json, human)

    run_client(go, state_dir)


@memory_app.command("history")
def memory_history(
    subject: str,
    agent: AgentOpt = "default",
    kind: Annotated[str | None, typer.Option(help="Only this kind (fact, reflection...).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="The newest this many.")] = 100,
    before: Annotated[
        int | None, typer.Option(min=1, help="Only versions older than this memory id.")
    ] = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What an agent knew about SUBJECT over time, oldest first: each memory superseded by
    the next, forgotten ones included (the newest 100 unless --limit; --before ID pages
    back). The subject is compared without case (and in Unicode's NFKC form, so "Café"
    spelled either way is one subject)."""

    async def go(client: VigilClient) -> None:
        page = await client.memory_history(agent, subject, kind=kind, limit=limit, before=before)
        found = page.items

        def state(m: MemoryRecord) -> str:
            if m.forgotten_at is not None:
                return f"forgotten by {m.forgotten_by or 'unknown'}"
            return f"superseded by {m.superseded_by}" if m.superseded_by else "current"

        def human() -> None:
            if not found:
                of_kind = f" of kind {kind!r}" if kind else ""
                nothing(
                    f"agent {agent!r} has no memory{of_kind} about {subject!r}",
                    "`vigil memory search` finds memories by their words",
                )
                return
            rows = [
                (m.id, m.kind, f"{m.created_at:%Y-%m-%d %H:%M:%S}", state(m), m.content)
                for m in found
            ]
            out.print(table(["id", "kind", "written", "state", "content"], rows))
            if page.next_before is not None:
                out.print(f"older versions: --before {page.next_before}")

        emit([asdict(m) for m in found], as_json, human)

    run_client(go, state_dir)


@memory_app.command("forget")
def memory_forget(
    memory_id: Annotated[int, typer.Argument(min=1, help="The memory's id (memory search).")],
    agent: AgentOpt = "default",
    reason: Annotated[str | None, typer.Option(help="Why (recorded with it).")] = None,
    by: ByOpt = "",
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Forget a memory: never recalled again, kept with who forgot it, when and why.

    The memories it had superseded are current again. A memory the agent does not have,
    or one already forgotten, is an error (exit 4)."""
    who = by or by_default()

    async def go(client: VigilClient) -> None:
        done = await client.memory_forget(agent, memory_id, by=who, reason=reason)
        record = done.record
        restored = list(done.restored_ids)

        def human() -> None:
            out.print(
                f"memory {record.id} of {agent} forgotten by {record.forgotten_by} "
                f"at {record.forgotten_at:%Y-%m-%d %H:%M:%S}"
            )
            if restored:
                ids = ", ".join(str(i) for i in restored)
                out.print(f"current again (it had superseded them): {ids}")

        emit(
            {
                "id": record.id,
                "agent_id": record.agent_id,
                "forgotten_at": record.forgotten_at.isoformat(),
                "forgotten_by": record.forgotten_by,
                "forget_reason": record.forget_reason,
                "restored_ids": restored,
            },
            as_json,
            human,
        )

    run_client(go, state_dir)


memory_app.command("reindex")(memory_reindex)
