"""Messages to a long-lived session named by a key ("the session for customer 42").

One atomic call: Temporal's update-with-start sends the session's ``message`` update and
starts the session first when no session of that key runs. The session id is derived
from the agent and the key, so every client that names the same key reaches the same
session: two clients racing on a new key end with one session holding both messages
(the server starts it once; the other request's update joins the running session).

A key's session that has ended (the agent finished it, it ended idle, a budget ran out,
someone cancelled it) is never started again under its id: its record would continue as
if it were the same session. The next message starts the key's next session instead,
under the key's id with the generation appended (``...-key-<digest>-2``, ``-3``...): the
record says which generations exist and which ended, and Temporal, which refuses to
start an id twice, settles a race between two clients on a new generation as it does
on a new key.
"""

from __future__ import annotations

import asyncio
import hashlib
import unicodedata
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from temporalio.client import WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from vigil.schema import names
from vigil.schema.payloads import (
    FINAL_STATUSES,
    Ack,
    MessageInput,
    SessionStatus,
    StartSessionInput,
)
from vigil.workers import liveness
from vigil.workers.client import BadArgument, NoWorker, Refused, Unreachable, refuse_oversized
from vigil.workers.client_errors import NotAnswered
from vigil.workers.client_start import refuse_unknown_tools
from vigil.workers.liveness import no_worker

if TYPE_CHECKING:
    from vigil.activities.record.store import StoredMessage
    from vigil.workers.client import VigilClient

HANDLE_WAIT_SECONDS = 0.1
"""How long a failed start's handle is awaited for its error (set before the error is raised)."""
MAX_KEY = 200
"""A key names one conversation: an identifier, not text."""


def fits_key(key: str, *, from_sender: bool = False) -> bool:
    """Whether ``key`` may name a conversation: 1 to MAX_KEY characters, none a control
    (DEL and the C1 controls too, as U+0085, a line break to some readers). A key a
    trigger read from a sender's payload (``from_sender``) may hold DEL and C1 controls,
    as every key could before they were refused: text decoded with the wrong charset
    holds them (a right quote read as Latin-1 is three characters, one a C1 control), and
    such a key's conversation goes on."""
    if not 0 < len(key) <= MAX_KEY:
        return False
    if from_sender:
        return not any(ord(ch) < 0x20 for ch in key)
    return not any(unicodedata.category(ch) == "Cc" for ch in key)


MAX_GENERATION_TRIES = 20
"""New generations tried in one call when each in turn turns out to have ended (only a
session ended in Temporal but not in the record yet is skipped this way)."""


def keyed_session_id(agent_id: str, key: str, generation: int = 1) -> str:
    """The session id of ``key``'s session of ``agent_id``: readable prefix, exact digest;
    the key's later sessions (after one ended) carry their generation."""
    raw = f"{agent_id}\x1f{key}".encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(raw).hexdigest()[:32]
    slug = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in agent_id)[:60]
    first = f"{slug}-key-{digest}"
    return first if generation <= 1 else f"{first}-{generation}"


def default_goal(key: str) -> str:
    return f"Serve the conversation {key!r}: answer each message you receive."


@dataclass(frozen=True)
class KeyedMessage:
    session_id: str
    ack: Ack
    after_seq: int = -1
    """The session's last recorded seq before the message was sent: its answer comes
    after it (see :func:`answer`)."""
    follows: str | None = None
    """The key's session that had ended, when the message went to the key's next one."""
    started: bool = False
    """Whether no session ran under the id when the message was sent: this message's call
    started it (two calls racing on a new key may both say so)."""
    queued: bool = False
    """Sent as a signal while no worker polled the session's queue: Temporal keeps it for
    the next worker, whose session takes it (or refuses it in its record, as any signal)."""


async def message_by_key(
    client: VigilClient,
    agent_id: str,
    key: str,
    text: str,
    *,
    by: str,
    goal: str | None = None,
    task_queue: str | None = None,
    agent_version: int | None = None,
    allow_undefined: bool | None = None,
    may_loosen: bool = True,
    sees_agent: Callable[[str], bool] | None = None,
    awaits_answer: bool = False,
    tell_started: bool = False,
    queue_without_worker: bool = False,
    from_sender: bool = False,
    request_id: str | None = None,
    **start: Any,
) -> KeyedMessage:
    """Send ``text`` to ``key``'s session of ``agent_id``, starting it (with ``goal`` and
    the ``start`` settings of ``start_session``) when it does not run yet. ``may_loosen``
    and ``sees_agent`` as ``start_session``'s. ``awaits_answer``: the caller passes the result to
    :func:`answer`, so its ``after_seq`` is read before sending (one more read).
    ``tell_started``: whether this call started the session is asked of Temporal first
    (one more call; ``KeyedMessage.started``). ``queue_without_worker``: when no worker
    polls the queue, the message is sent as a signal (with the session's start when none
    runs), which Temporal keeps until a worker takes it, instead of refused at once; the
    ack then says so (``KeyedMessage.queued``). ``from_sender``: the key is a trigger's
    (``fits_key``). ``request_id``: the sender's name for the message (a new one when
    None): sent again under it, the session takes it once."""
    if not fits_key(key, from_sender=from_sender):
        raise BadArgument(f"a key is 1 to {MAX_KEY} characters, without control characters")
    # Named: sent again as a signal when its update goes unanswered (below), taken once.
    message = MessageInput(text=text, by=by, request_id=request_id or uuid.uuid4().hex)
    refuse_oversized(message)
    found = await client.require_agent(
        agent_id, agent_version, allow_undefined, sees_agent=sees_agent
    )
    goal = goal or default_goal(key)
    # conversation: the key's session answers message after message.
    arg = client.start_input(
        agent_id, goal, agent_version=agent_version, conversation=True, **start
    )
    if not may_loosen:
        client.refuse_loosening(
            agent_id, found, start.get("policy"), start.get("budget"), start.get("system_prompt")
        )
        if agent_version is not None:
            await client.refuse_older_version(agent_id, found)
    refuse_unknown_tools(agent_id, start.get("policy"), found)
    queue = task_queue or client.settings.task_queue
    # Update-with-start waits for a worker to take the message: say at once there is none,
    # or (``queue_without_worker``) leave the message with Temporal for the next worker.
    queued = not await client.pollers(queue)
    if queued and not queue_without_worker:
        raise NoWorker(
            no_worker(
                queue,
                client.settings.task_queue,
                what=f"the session of key {key!r} cannot take the message",
            )
        )
    options = client.start_options(agent_id, goal)
    generation, follows = await _current_generation(client, agent_id, key)
    for _ in range(MAX_GENERATION_TRIES):
        session_id = keyed_session_id(agent_id, key, generation)
        # The key's session: started when none runs, never started again once it ended.
        start_kwargs: dict[str, Any] = {
            "id": session_id,
            "task_queue": queue,
            "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
            "id_reuse_policy": WorkflowIDReusePolicy.REJECT_DUPLICATE,
            **options,
        }
        after = await _last_seq(client, agent_id, session_id) if awaits_answer else -1
        started = tell_started and await client.temporal_status(session_id) is None
        if queued:
            ack = await _queue(client, session_id, message, arg, start_kwargs)
        else:
            operation: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
                names.WORKFLOW_SESSION, arg, **start_kwargs
            )
            try:
                ack = await _send(client, session_id, message, operation)
            except NotAnswered:
                # Temporal keeps an unanswered update in memory only: the message goes
                # again as a signal, into the session's history (taken once).
                ack = await _queue(
                    client,
                    session_id,
                    message,
                    arg,
                    start_kwargs,
                    said=(
                        "queued: no worker answered within "
                        f"{liveness.CONTROL_WAIT_SECONDS:.0f} s; the message is in the "
                        "session's history, and the session takes it once a worker runs it"
                    ),
                )
        if ack is not None:
            return KeyedMessage(session_id, ack, after, follows, started, queued or ack.queued)
        generation += 1  # that session has ended: the key's next one takes the message
        follows = session_id
    raise Refused(
        f"the sessions of key {key!r} kept ending before they took the message; send it again"
    )


async def answer(
    client: VigilClient,
    sent: KeyedMessage,
    text: str,
    *,
    by: str,
    on_approval: Callable[[], Awaitable[None]] | None = None,
) -> StoredMessage | None:
    """The reply that answers ``text`` sent by ``by`` (``sent``: what
    :func:`message_by_key` returned): the first assistant message without tool calls
    recorded after it. None when the session ends first (the agent finished it, a budget
    or the deadline ran out, someone cancelled it, a call failed for good: the reply its
    end writes in the place of the one that never came answers nobody). ``on_approval``
    is awaited when the session asks for an approval meanwhile."""
    ours: int | None = None
    async for message in client.follow(
        sent.session_id, after_seq=sent.after_seq, on_approval=on_approval
    ):
        if ours is None:
            if message.role == "user" and message.name == by and message.content == text:
                ours = message.seq
        elif (
            message.role == "assistant"
            and not message.tool_calls
            and not (message.content or "").startswith(names.NO_REPLY)
        ):
            return message
    return None


async def current_generation(client: VigilClient, agent_id: str, key: str) -> int:
    """The generation of the key's session a message would go to now (see
    :func:`message_by_key`): its newest recorded one, or the next when that has ended."""
    generation, _ended = await _current_generation(client, agent_id, key)
    return generation


async def _last_seq(client: VigilClient, agent_id: str, session_id: str) -> int:
    from vigil.activities.record import sessions as record
    from vigil.activities.record.rls import acting_for

    async with acting_for(client.db, agent_id) as db:
        return await record.last_seq(db, session_id)


async def _current_generation(
    client: VigilClient, agent_id: str, key: str
) -> tuple[int, str | None]:
    """The generation of the key's session a message goes to: its newest recorded one,
    or the one after it when that has ended (then also that ended session's id)."""
    from vigil.activities.record import sessions as record

    async with client.db() as db:
        found = await record.keyed_generations(db, agent_id, keyed_session_id(agent_id, key))
    if not found:
        return 1, None
    newest = max(found)
    session_id = keyed_session_id(agent_id, key, newest)
    if found[newest] in FINAL_STATUSES:
        return newest + 1, session_id
    # Recorded as going on: so it must be in Temporal. One Temporal no longer holds
    # (deleted by hand, or its retention passed) before a reconcile pass closed its record
    # is closed now: a message would start a new run under its id, whose writes meet the
    # record's seqs (the message acknowledged, and lost).
    from vigil.workers.reconcile import reconcile

    try:
        closed = await reconcile(client.temporal, client.db, session_ids=[session_id])
    except RPCError as exc:
        raise Unreachable(f"Temporal did not answer: {exc.message}") from exc
    if closed:
        return newest + 1, session_id
    # Closed meanwhile by another (a message sent at the same moment, a worker's pass):
    # read again, or this message would go to the id Temporal no longer holds.
    async with client.db() as db:
        again = await record.keyed_generations(db, agent_id, keyed_session_id(agent_id, key))
    if again.get(newest) in FINAL_STATUSES:
        return newest + 1, session_id
    return newest, None


async def _queue(
    client: VigilClient,
    session_id: str,
    message: MessageInput,
    arg: StartSessionInput,
    start_kwargs: dict[str, Any],
    said: str | None = None,
) -> Ack | None:
    """``message`` as a signal, with the session's start when none runs (signal-with-start,
    which needs no worker); None when the session of ``session_id`` has ended. ``said``:
    the acknowledgement's words (by default, that no worker polls the queue yet)."""
    try:
        await client.call(
            session_id,
            client.temporal.start_workflow(
                names.WORKFLOW_SESSION,
                arg,
                start_signal=names.SIG_MESSAGE,
                start_signal_args=[message],
                **start_kwargs,
            ),
        )
    except WorkflowAlreadyStartedError:
        return None
    return Ack(
        # Left for a worker to take: said as such when its update went unanswered (the
        # answer to a send with no worker polling was always accepted, queued).
        accepted=said is None,
        status=SessionStatus.RUNNING,
        message=said
        or f"queued: no worker polls task queue {start_kwargs['task_queue']!r} yet; "
        "the session takes the message when one does",
        queued=True,
    )


async def _send(
    client: VigilClient,
    session_id: str,
    message: MessageInput,
    operation: WithStartWorkflowOperation[Any, Any],
) -> Ack | None:
    """The session's acknowledgement; None when the session of ``session_id`` has ended
    (Temporal will not start it again) or is ending (its validator refuses)."""
    try:
        try:
            # Bounded as a control is: an update no worker takes waits in Temporal's memory.
            ack: Ack = await client.bounded(
                session_id,
                client.temporal.execute_update_with_start_workflow(
                    names.UPD_MESSAGE, message, start_workflow_operation=operation, result_type=Ack
                ),
                "message",
            )
        except Exception:
            # A failed start leaves its error on the operation too, for whoever awaits its
            # handle: taken here, or asyncio logs it as never retrieved once the operation
            # is collected.
            try:
                await asyncio.wait_for(operation.workflow_handle(), HANDLE_WAIT_SECONDS)
            except asyncio.CancelledError:
                # The operation's own, cancelled with the update it waited on (the bound
                # above); a cancel of this task goes on.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
            except Exception:  # its error, taken
                pass
            raise
    except WorkflowAlreadyStartedError:
        return None
    except Refused as exc:
        failed = exc.__cause__
        if isinstance(failed, WorkflowUpdateFailedError) and names.REFUSED_ENDED in str(exc):
            return None
        raise
    return ack
