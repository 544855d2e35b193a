"""Controlling a running session: approve, reject, pause, resume, say, redirect, wake (each
an update, or a signal with ``wait=False``) and cancel.

Part of VigilClient (workers/client.py), which re-exports every name.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from pydantic import BaseModel
from temporalio.client import WorkflowExecutionDescription, WorkflowExecutionStatus

from vigil.schema import cancel_reason, names
from vigil.schema.limits import input_error, line_text_error
from vigil.schema.payloads import (
    Ack,
    ApproveInput,
    Control,
    MessageInput,
    PauseInput,
    RedirectInput,
    RejectInput,
    ResumeInput,
    SessionStatus,
    WakeInput,
)
from vigil.workers import liveness
from vigil.workers.client_errors import BadArgument, NotAnswered, Refused, VigilError
from vigil.workers.client_history import SessionHistory


def refuse_oversized(value: BaseModel) -> None:
    """Refuse a control payload over the session's own limits before it is sent: Temporal
    would write it into the session's history even though the session refuses it."""
    error = input_error(value) or line_text_error(value)
    if error is not None:
        raise BadArgument(f"refused before sending: {error}")


class SessionControls(SessionHistory):
    """Controlling sessions (a layer of VigilClient)."""

    async def _control(
        self, session_id: str, update: str, signal: str, arg: Any, wait: bool
    ) -> Ack | None:
        refuse_oversized(arg)
        if isinstance(arg, Control) and arg.request_id is None:
            # Named, so the session takes it once however many ways it arrives (below).
            arg = arg.model_copy(update={"request_id": uuid.uuid4().hex})
        handle = self.handle(session_id)
        if wait:
            # An update waits for a worker to run it: with none polling, say so at once.
            await self._describe_live(session_id, what="session {id} cannot take the " + signal)
            try:
                ack: Ack = await self.bounded(
                    session_id, handle.execute_update(update, arg, result_type=Ack), signal
                )
            except NotAnswered:
                return await self._left_as_signal(session_id, signal, arg)
            return ack
        await self._rpc(session_id, handle.signal(signal, arg))
        return None

    async def _left_as_signal(self, session_id: str, signal: str, arg: Control) -> Ack:
        """The request as a signal, once its update went unanswered: Temporal keeps an
        update only in memory until a worker takes it (a restart of Temporal lost it),
        and writes a signal into the session's history at once. The session takes the
        request once, whichever way it comes first (both name its id)."""
        await self._rpc(session_id, self.handle(session_id).signal(signal, arg))
        status = SessionStatus.RUNNING
        with contextlib.suppress(VigilError, ValueError):
            status = SessionStatus((await self.require_session(session_id)).status)
        return Ack(
            accepted=False,
            status=status,
            message=(
                f"no worker answered within {liveness.CONTROL_WAIT_SECONDS:.0f} s: the {signal} is "
                "left with Temporal as a signal in the session's history (kept through a "
                "restart), and the session takes it once a worker runs it"
            ),
            queued=True,
        )

    async def approve(
        self,
        session_id: str,
        approval_id: str,
        *,
        by: str,
        note: str | None = None,
        edited_arguments: dict[str, Any] | None = None,
        wait: bool = True,
        digest: str | None = None,
    ) -> Ack | None:
        arg = ApproveInput(
            approval_id=approval_id,
            by=by,
            note=note,
            edited_arguments=edited_arguments,
            digest=digest,
        )
        return await self._control(session_id, names.UPD_APPROVE, names.SIG_APPROVE, arg, wait)

    async def reject(
        self, session_id: str, approval_id: str, *, by: str, reason: str = "", wait: bool = True
    ) -> Ack | None:
        arg = RejectInput(approval_id=approval_id, by=by, reason=reason)
        return await self._control(session_id, names.UPD_REJECT, names.SIG_REJECT, arg, wait)

    async def pause(
        self, session_id: str, *, by: str, reason: str = "", wait: bool = True
    ) -> Ack | None:
        return await self._control(
            session_id, names.UPD_PAUSE, names.SIG_PAUSE, PauseInput(by=by, reason=reason), wait
        )

    async def resume(self, session_id: str, *, by: str, wait: bool = True) -> Ack | None:
        return await self._control(
            session_id, names.UPD_RESUME, names.SIG_RESUME, ResumeInput(by=by), wait
        )

    async def say(
        self,
        session_id: str,
        text_: str,
        *,
        by: str,
        wait: bool = True,
        request_id: str | None = None,
    ) -> Ack | None:
        """``request_id``: the sender's name for the message (sent again under it, the
        session takes it once); None, a new one."""
        arg = MessageInput(text=text_, by=by, request_id=request_id)
        return await self._control(session_id, names.UPD_MESSAGE, names.SIG_MESSAGE, arg, wait)

    async def redirect(
        self,
        session_id: str,
        goal: str,
        *,
        by: str,
        wait: bool = True,
        agent_version: int | None = None,
        may_loosen: bool = True,
    ) -> Ack | None:
        """A new goal; with ``agent_version``, also that version of the agent's definition
        (``may_loosen`` False, an API token below admin: only its newest)."""
        running: int | None = None
        if agent_version is not None:
            row = await self.require_session(session_id)
            found = await self.require_agent(row.agent_id, agent_version, allow_undefined=False)
            if not may_loosen:
                await self.refuse_older_version(row.agent_id, found)
            # Asked before: a session the redirect wakes may move before it is asked after
            # (not known: the move is said as asked).
            with contextlib.suppress(VigilError):
                running = (await self.state(session_id)).agent_version
        ack = await self._control(
            session_id,
            names.UPD_REDIRECT,
            names.SIG_REDIRECT,
            RedirectInput(goal=goal, by=by, agent_version=agent_version),
            wait,
        )
        if ack is not None and ack.accepted and agent_version is not None:
            # The workflow says what it did to the goal; the move to the version is made
            # at the session's next step (recorded as agent_version_changed), and none
            # when the session runs that version already.
            moved = f"agent version {agent_version} from its next step"
            if running == agent_version:
                moved = f"it keeps agent version {agent_version}"
            ack = ack.model_copy(update={"message": f"{ack.message}; {moved}"})
        return ack

    async def wake(
        self,
        session_id: str,
        *,
        by: str,
        reason: str = "",
        wait: bool = True,
        request_id: str | None = None,
    ) -> Ack | None:
        arg = WakeInput(by=by, reason=reason, request_id=request_id)
        return await self._control(session_id, names.UPD_WAKE, names.SIG_WAKE, arg, wait)

    async def terminate(self, session_id: str, *, by: str = "", reason: str = "") -> str | None:
        """End a session at once, as Temporal's terminate does: for one no worker will
        take (or one stuck), where a cancel waits for a worker to write its end. Nothing of
        the session runs again; its record is closed as terminated (as ``vigil reconcile``
        closes one), its open step left as it was. The record's status after it (None: the
        session had no record yet: no worker ever took it)."""
        from vigil.workers.reconcile import reconcile

        handle = self.handle(session_id)
        await self._still_running(session_id)
        why = cancel_reason.reason_text(by, reason)
        await self._rpc(session_id, handle.terminate(reason=f"vigil terminate: {why}"))
        closed = await reconcile(self.temporal, self.db, session_ids=[session_id])
        return closed[0].status if closed else await self._ended(session_id, None)

    async def _still_running(self, session_id: str) -> WorkflowExecutionDescription:
        """Temporal's description of a session that still runs; Refused, saying how it
        ended, for one that has ended."""
        desc: WorkflowExecutionDescription = await self._rpc(
            session_id, self.handle(session_id).describe()
        )
        if desc.status not in (None, WorkflowExecutionStatus.RUNNING):
            raise Refused(
                f"session {session_id!r} has already ended "
                f"({await self._ended(session_id, WorkflowExecutionStatus(desc.status))})"
            )
        return desc

    async def cancel(self, session_id: str, *, by: str = "", reason: str = "") -> str:
        """Temporal's cancel; who and why travel as its reason (shown in the history, and
        read back by the workflow for the session's cancel event). The session's task
        queue, whose worker ends it. Who and why are held to a pause's limits (one line of
        text, no NUL) before anything is sent."""
        refuse_oversized(PauseInput(by=by or "unknown", reason=reason))
        handle = self.handle(session_id)
        # Temporal accepts a cancel of a closed workflow without complaint; say so instead.
        desc = await self._still_running(session_id)
        if desc.raw_description.workflow_extended_info.cancel_requested:
            # Temporal takes a second cancel without complaint too: it would do nothing.
            raise Refused(
                f"session {session_id!r} is being cancelled already; it ends once a worker "
                "has written its last records"
            )
        why = cancel_reason.reason_text(by, reason)  # the workflow reads who and why back
        await self._rpc(session_id, handle.cancel(reason=why))
        return str(desc.task_queue)
