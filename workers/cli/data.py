"""`vigil` commands for what sessions leave behind: erasure, archive and restore, sweeping,
retention, reconciling. The work is done by the ``workers.governance`` service and the
client."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from vigil.workers.cli.artifacts import artifact_app
from vigil.workers.cli.common import (
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    AllowUnknownAgentOpt,
    ByOpt,
    JsonOpt,
    StateOpt,
    _duration,
    by_default,
    database_refused,
    emit,
    err,
    fail,
    nothing,
    out,
    plain,
    run_client,
    unreachable,
    vet_agents,
    warn,
    when,
)

if TYPE_CHECKING:
    from vigil.activities.erasure import ErasurePlan
    from vigil.activities.record.retention import RetentionPolicy
    from vigil.workers.client import VigilClient
    from vigil.workers.governance import Governance


def _governance(client: VigilClient) -> Governance:
    # Imported when a command of this module runs: every other command starts faster.
    from vigil.workers.governance import Governance

    return Governance(client)


retention_app = typer.Typer(
    help="Per-agent retention: archive and erase ended sessions on a schedule.",
    no_args_is_help=True,
)


# --- erasure ---------------------------------------------------------------------------


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


def _describe(plan: ErasurePlan) -> None:
    scope = plan.scope
    err.print(f"erase {scope.kind} {scope.subject} (cannot be undone):", markup=False)
    err.print(
        f"  {_n(len(scope.session_ids), 'session')}, {_n(scope.messages, 'message')}, "
        f"{_n(scope.events, 'event')}, {_n(scope.artifact_links, 'artifact link')}, "
        f"{_n(scope.archives, 'archive')}, {_n(scope.memories, 'memory', 'memories')}; "
        f"{_n(len(plan.runs), 'workflow run')}"
        + (f", {_n(len(plan.schedules), 'schedule')}" if plan.schedules else ""),
        markup=False,
    )
    if scope.definitions:
        err.print(
            f"  and {_n(scope.definitions, 'row')} of its definition, versions, triggers, "
            "webhooks, policy, artifact holds and embedder records",
            markup=False,
        )
    if scope.merge_notes:
        err.print(
            f"  and its words merged into {scope.merge_notes} of the agent's other memories",
            markup=False,
        )
    if scope.deliveries:
        err.print(f"  and {_n(scope.deliveries, 'webhook attempt')} naming it", markup=False)


def erase(
    session_arg: Annotated[
        str | None,
        typer.Argument(
            metavar="[SESSION]", help="Erase this session (as --session).", show_default=False
        ),
    ] = None,
    session: Annotated[str | None, typer.Option("--session", help="Erase this session.")] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="Erase this agent and all it has.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    by: ByOpt = "",
    reason: Annotated[str | None, typer.Option(help="Why (kept in the receipt).")] = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Erase a session, or an agent, from every store; leaves only an erasure receipt."""
    from vigil.workers.governance import Subject

    if session_arg is not None:
        if session is not None and session != session_arg:
            fail(f"two sessions named: {session_arg!r} and --session {session!r}", EXIT_USAGE)
        session = session_arg
    if (session is None) == (agent is None):
        fail("give exactly one of a session (SESSION or --session) or --agent", EXIT_USAGE)
    subject = Subject("session", session) if session is not None else Subject("agent", agent or "")

    async def go(client: VigilClient) -> None:
        governance = _governance(client)
        if not yes:
            _describe(await governance.erasure_plan(subject))
            try:
                confirmed = typer.confirm("Erase it?", err=True)
            except typer.Abort:  # no answer (standard input ended): the prompt's line ends
                err.print()
                confirmed = False
            if not confirmed:
                fail("not erased: answer y, or give --yes", EXIT_FAILED)

        def waiting(runs: int) -> None:
            err.print(
                f"waiting for Temporal to delete {_n(runs, 'workflow run')} "
                f"(up to {governance.eraser.delete_wait_seconds:.0f} s) ...",
                markup=False,
            )

        from asyncpg import PostgresError
        from sqlalchemy.exc import DBAPIError

        # What stops it midway (PostgreSQL, the object store) may come after Temporal
        # deleted the runs: the record is erased in one transaction, or not at all.
        unfinished = (
            f"the erasure of {subject.kind} {subject.id} did not finish (Temporal's runs "
            "of it may be deleted already; the record is not erased): run it again once "
            "this is mended: "
        )
        try:
            receipt = await governance.erase(
                subject, by=by or by_default(), reason=reason, waiting=waiting
            )
        except (DBAPIError, PostgresError) as exc:
            database_refused(exc, prefix=unfinished)
        except OSError as exc:
            fail(unfinished + unreachable(client.settings, exc), EXIT_UNREACHABLE)
        if deleting := receipt.counts.get("workflow_runs_still_deleting"):
            err.print(
                f"Temporal is still deleting {_n(deleting, 'workflow run')}: "
                f"{'its history goes' if deleting == 1 else 'their histories go'} shortly "
                "(the record is erased; the receipt is kept)",
                markup=False,
            )
        counts = ", ".join(f"{k} {v}" for k, v in sorted(receipt.counts.items()) if v)
        emit(
            asdict(receipt),
            as_json,
            lambda: out.print(
                f"erased {subject.kind} {subject.id}: {counts or 'nothing left to remove'} "
                f"(receipt {receipt.id})",
                markup=False,
            ),
        )

    run_client(go, state_dir)


def erasures(
    subject: Annotated[str | None, typer.Option(help="Only this session or agent.")] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=100_000, help="At most this many receipts.")
    ] = 100,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List erasure receipts, newest first."""

    async def go(client: VigilClient) -> None:
        receipts = await _governance(client).receipts(subject, limit)

        def human() -> None:
            table = Table("id", "what", "when", "by", "why", "counts")
            for r in receipts:
                counts = ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items()) if v)
                table.add_row(
                    *plain(
                        r.id,
                        f"{r.subject_kind} {r.subject_id}",
                        when(r.erased_at),
                        r.requested_by,
                        r.reason or "-",
                        counts,
                    )
                )
            out.print(table)

        emit([asdict(r) for r in receipts], as_json, human)

    run_client(go, state_dir)


# --- archive, restore, sweep --------------------------------------------------------------


def archive(
    session_id: str,
    prune: Annotated[
        bool, typer.Option("--prune", help="Also remove its messages and events from PostgreSQL.")
    ] = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Archive an ended session to the object store (with --prune: move it there)."""

    async def go(client: VigilClient) -> None:
        done = await _governance(client).archive(session_id, prune=prune)
        verb = "archived and pruned" if done.pruned else "archived (copy)"
        emit(
            asdict(done),
            as_json,
            lambda: out.print(
                f"{session_id} {verb}: {done.messages} messages, {done.events} events, "
                f"{done.size} bytes at {done.uri}",
                markup=False,
            ),
        )

    run_client(go, state_dir)


def restore(session_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Put an archived session's messages and events back into PostgreSQL."""

    async def go(client: VigilClient) -> None:
        done = await _governance(client).restore(session_id)
        said = (
            f"{session_id} restored: {done.messages} messages, {done.events} events"
            if done.was_archived
            else f"{session_id} is not archived: nothing to restore"
        )
        emit(asdict(done), as_json, lambda: out.print(said, markup=False))

    run_client(go, state_dir)


@artifact_app.command("sweep")
def artifact_sweep(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report only; remove nothing.")
    ] = False,
    grace: Annotated[
        str, typer.Option(help="Leave objects younger than this (their row may be coming).")
    ] = "24h",
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove objects the database does not know (and stale uploads); report missing ones."""
    grace_td = _duration(grace, "--grace") or timedelta(0)

    async def go(client: VigilClient) -> None:
        report = await _governance(client).sweep(dry_run=dry_run, grace=grace_td)
        emit(asdict(report), as_json, lambda: out.print(report.summary(), markup=False))

    run_client(go, state_dir)


# --- retention -----------------------------------------------------------------------------


def _policy_dict(policy: RetentionPolicy) -> dict[str, Any]:
    def seconds(value: timedelta | None) -> float | None:
        return None if value is None else value.total_seconds()

    return {
        "agent_id": policy.agent_id,
        "archive_after_seconds": seconds(policy.archive_after),
        "erase_after_seconds": seconds(policy.erase_after),
        "updated_by": policy.updated_by,
        "updated_at": policy.updated_at.isoformat(),
    }


def _period(value: timedelta | None) -> str:
    if value is None:
        return "-"
    days, rest = divmod(value.total_seconds(), 86400)
    return f"{int(days)}d" if not rest else str(value)


@retention_app.command("set")
def retention_set(
    agent: Annotated[str, typer.Option("--agent", "-a", help="Agent id.")],
    archive_after: Annotated[
        str | None, typer.Option(help="Archive ended sessions after, e.g. 30d.")
    ] = None,
    erase_after: Annotated[
        str | None, typer.Option(help="Erase ended sessions after, e.g. 365d.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the agent's policy.")] = False,
    every: Annotated[str, typer.Option(help="How often the retention schedule runs.")] = "1h",
    by: ByOpt = "",
    allow_unknown: AllowUnknownAgentOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set an agent's retention policy; creates the `vigil-retention` schedule if needed.
    An agent the record does not know is warned of; one that reads as a known one
    (another case, letters of another script) is refused: a policy under a misspelt id
    would archive and erase nothing."""
    if clear == (archive_after is not None or erase_after is not None):
        fail("give --archive-after and/or --erase-after, or --clear", EXIT_USAGE)
    archive_td = _duration(archive_after, "--archive-after")
    erase_td = _duration(erase_after, "--erase-after")
    every_td = _duration(every, "--every")
    assert every_td is not None  # it has a default

    async def go(client: VigilClient) -> None:
        from vigil.workers.cli.sessions import warn_when_no_worker

        unknown = (
            []
            if clear
            else await vet_agents(
                client.db,
                [agent],
                allow_unknown=allow_unknown,
                then="; the policy applies to its sessions once it has some",
            )
        )
        done = await _governance(client).set_retention(
            agent,
            archive_after=archive_td,
            erase_after=erase_td,
            by=by or by_default(),
            every=every_td,
        )
        warn(
            f"ended retention run {run.workflow_id}: it waited on task queue "
            f"{run.task_queue!r}; the schedule starts its runs on {client.settings.task_queue!r}"
            for run in done.ended
        )
        await warn_when_no_worker(client, what="the retention schedule's runs wait until one does")
        policy = done.policy
        if policy is None:
            emit(
                {"agent_id": agent, "policy": None},
                as_json,
                lambda: out.print(f"retention policy of {agent} removed", markup=False),
            )
            return
        warn(unknown)
        emit(
            _policy_dict(policy),
            as_json,
            lambda: out.print(
                f"retention of {agent}: archive after {_period(policy.archive_after)}, "
                f"erase after {_period(policy.erase_after)}",
                markup=False,
            ),
        )

    run_client(go, state_dir)


@retention_app.command("show")
def retention_show(state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Show every agent's retention policy."""

    async def go(client: VigilClient) -> None:
        policies = await _governance(client).retention_policies()

        def human() -> None:
            if not policies:
                nothing(
                    "no retention policies: every session is kept",
                    "set one with `vigil retention set --agent NAME --archive-after 30d`",
                )
                return
            table = Table("agent", "archive after", "erase after", "set by", "set at")
            for p in policies:
                table.add_row(
                    *plain(
                        p.agent_id,
                        _period(p.archive_after),
                        _period(p.erase_after),
                        p.updated_by,
                        when(p.updated_at),
                    )
                )
            out.print(table)

        emit([_policy_dict(p) for p in policies], as_json, human)

    run_client(go, state_dir)


# --- reconcile -------------------------------------------------------------------------------


def reconcile(
    session_ids: Annotated[
        list[str] | None, typer.Argument(help="Only these sessions (default: every open one).")
    ] = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mark sessions whose workflow ended outside vigil as ended, and record why.

    A workflow terminated, timed out or deleted in Temporal never wrote its own end.
    Workers run this every VIGIL_RECONCILE_SECONDS too."""

    async def go(client: VigilClient) -> None:
        done = await client.reconcile(session_ids or None)

        def human() -> None:
            if not done:
                out.print("nothing to reconcile: every open session's workflow is running")
                return
            table = Table("session", "was", "now", "temporal", "why")
            for r in done:
                table.add_row(
                    *plain(r.session_id, r.previous_status, r.status, r.temporal_status, r.reason)
                )
            out.print(table)

        emit([asdict(r) for r in done], as_json, human)

    run_client(go, state_dir)


def register(app: typer.Typer) -> None:
    for command in (erase, erasures, archive, restore):
        app.command()(command)
    app.add_typer(retention_app, name="retention")
    app.command("reconcile")(reconcile)
