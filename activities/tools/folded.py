"""The folded step's activity side: tool calls run by ``call_model`` (workflows/folding.py).

Each folded call goes through the very code of the ``run_tool`` activity, with the input
the workflow would have sent it (result at ``seq + 1 + index``, idempotent on that seq and
on the ``tool:{step}:{index}`` event), so a retried ``call_model`` returns the recorded
results and runs nothing twice once it is recorded. The leading calls that change nothing
(``SessionActivities._answers_before_reply``) are answered before the reply and recorded
with it; one of them that fails there is not run again here: the fold stops at it. Whatever is not
plain (a tool that asks for a retry, an outage) stops the fold: the workflow runs that call
and the later ones with their own ``run_tool`` activity, and its retry policy.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable

from vigil.activities.record import store as record
from vigil.activities.record.lean import Statements
from vigil.schema.payloads import CallModelInput, CallModelOutput, RunToolInput, RunToolOutput

log = logging.getLogger("vigil.activities")

UNANSWERED = "error: no result: the session ended before this call answered"
"""The ending's answer to a call of a step it closed: the call may not have run, or it
may have been running then and finished after (its ``tool_call`` event, written after
the end, says what it did). Before 2026-12-06 it read "not run", which such a call
belied."""
_STEPS_READ = 10_000
"""Messages read back when closing a step: a batch writes far fewer."""


def call_input(arg: CallModelInput, index: int) -> RunToolInput:
    """What the workflow would send ``run_tool`` for call ``index`` of this step's reply."""
    return RunToolInput(
        session_id=arg.session_id,
        agent_id=arg.agent_id,
        step=arg.step,
        seq=arg.seq + 1 + index,
        model_seq=arg.seq,
        call_index=index,
        agent_version=arg.agent_version,
    )


async def run_leading_calls(
    run_tool: Callable[[RunToolInput], Awaitable[RunToolOutput]],
    arg: CallModelInput,
    out: CallModelOutput,
) -> list[RunToolOutput]:
    """Run the reply's leading calls to ``arg.fold_tools``, in order; their results.
    The first ``out.folded`` are answered already (recorded with the reply)."""
    allowed = set(arg.fold_tools or [])
    results: list[RunToolOutput] = list(out.folded)
    for call in out.tool_calls[len(results) :]:
        if not call.valid or call.name not in allowed:
            break
        try:
            result = await run_tool(call_input(arg, call.index))
        except Exception as exc:  # the call's own activity retries it as it always did
            log.info(
                "folded call %s of step %s handed back: %s",
                call.index,
                arg.step,
                exc,
                extra={"session_id": arg.session_id},
            )
            break
        results.append(result)
        if result.control is not None:
            break  # the workflow waits or ends here: later calls come after that
    return results


def plain(out: CallModelOutput) -> bool:
    """Whether a step is plain: its reply called tools, and each call is answered in the
    model call (none invalid, handed back, or handled by the workflow). After a plain
    step the workflow has nothing to do but take the next one."""
    return (
        bool(out.tool_calls)
        and len(out.folded) == len(out.tool_calls)
        and all(call.valid for call in out.tool_calls)
        and all(done.control is None and done.recorded for done in out.folded)
    )


BATCH_BYTES = 128 * 1024
"""A step batch takes no further step once its outputs hold about this much text: they
travel in one local activity's result (and its marker in history)."""


def output_size(out: CallModelOutput) -> int:
    """About how many bytes a step's output takes in a batch's result."""
    size = 200 + len(out.content_preview)
    for call in out.tool_calls:
        size += 100 + len(call.name) + len(call.arguments_preview) + len(call.error or "")
    for done in out.folded:
        size += 100 + len(done.preview)
    return size


@dataclasses.dataclass(frozen=True)
class ClosedStep:
    """What closing a step the session ended inside left to do."""

    rest: list[record.NewMessage]
    """The messages still to write (answers filled in, the workflow's later ones moved)."""
    inserted: int
    """Messages written already."""
    last_step: int | None
    """The last step the record holds from the open step on (None: no reply there, the
    ending's stand-in at the open step's seq instead)."""


async def close_open_step(
    db: Statements,
    session_id: str,
    agent_id: str,
    model_seq: int,
    messages: list[record.NewMessage],
) -> ClosedStep:
    """Close a folded step the session ended inside, with the steps its model call went
    on to (a low-latency batch): the messages up to ``model_seq`` are written, every tool
    call of a reply recorded from there on gets an answer (its result if the model
    activity wrote one, else ``UNANSWERED``), and the workflow's later messages move after
    all of it, at the last step recorded if that is past theirs (the workflow learns of
    a batch's steps only when its call returns)."""
    # A model call still running writes a step only while it holds the session's row
    # (record.append_reply): what it wrote before is read below, and what it would write
    # after finds this ending in its place.
    await record.lock_session(db, session_id)
    head = [m for m in messages if m.seq <= model_seq]
    # Written first: a model activity still running either recorded its reply already or
    # now finds this one there (and runs none of its calls).
    inserted = await record.append_messages(db, session_id, agent_id, head)
    written = {
        m.seq: m
        for m in await record.messages_page(
            db, session_id, after_seq=model_seq - 1, limit=_STEPS_READ
        )
    }
    # The steps from ``model_seq`` on: a reply, its calls' answers, the next step's reply
    # right after them, and so on; what follows the last of them (this ending's own
    # messages, written by an earlier try) is not a step, so a retried ending moves its
    # messages to the same seqs again.
    top, seq, step = model_seq, model_seq, None
    # The ending's own stand-in for a reply never recorded is no step taken.
    stand_in = next((m for m in head if m.seq == model_seq and m.role == "assistant"), None)
    last_step: int | None = None
    fillers: list[record.NewMessage] = []
    while (reply := written.get(seq)) is not None and reply.role == "assistant":
        if step is not None and reply.step != step + 1:
            break
        step = reply.step
        if not (
            stand_in is not None
            and seq == model_seq
            and reply.content == stand_in.content
            and not reply.tool_calls
        ):
            last_step = step
        calls = reply.tool_calls or []
        for i, call in enumerate(calls):
            if seq + 1 + i not in written:
                fillers.append(
                    record.NewMessage(
                        seq=seq + 1 + i,
                        role="tool",
                        content=UNANSWERED,
                        step=reply.step,
                        name=_plain(str(call.get("name", ""))),
                        tool_call_id=str(call.get("id", "")),
                    )
                )
        top = seq + len(calls)
        seq = top + 1
    later = [m for m in messages if m.seq > model_seq]
    moved = [
        dataclasses.replace(m, seq=m.seq + top - model_seq, step=max(m.step, last_step or 0))
        for m in later
    ]
    return ClosedStep([*fillers, *moved], inserted, last_step)


def _plain(name: str) -> str:
    """A model-chosen name the plain ``name`` column can store."""
    text = name.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text[:200]
