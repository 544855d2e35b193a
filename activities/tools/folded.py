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

NOT_RUN = "error: not run: the session ended first"


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


async def close_open_step(
    db: Statements,
    session_id: str,
    agent_id: str,
    model_seq: int,
    messages: list[record.NewMessage],
) -> tuple[list[record.NewMessage], int]:
    """Close a folded step the session ended inside: the messages up to ``model_seq`` are
    written, every tool call of the reply recorded there gets an answer (its result if the
    model activity wrote one, else ``NOT_RUN``), and the batch's later messages move after
    those answers. Returns the messages still to write and how many were written here."""
    head = [m for m in messages if m.seq <= model_seq]
    # Written first: a model activity still running either recorded its reply already or
    # now finds this one there (and runs none of its calls).
    inserted = await record.append_messages(db, session_id, agent_id, head)
    found = await record.messages_by_seq(db, session_id, [model_seq])
    calls = (found[0].tool_calls or []) if found else []
    later = [m for m in messages if m.seq > model_seq]
    if not calls:
        return later, inserted
    answered = {
        m.seq
        for m in await record.messages_by_seq(
            db, session_id, [model_seq + 1 + i for i in range(len(calls))]
        )
    }
    step = found[0].step
    fillers = [
        record.NewMessage(
            seq=model_seq + 1 + i,
            role="tool",
            content=NOT_RUN,
            step=step,
            name=_plain(str(call.get("name", ""))),
            tool_call_id=str(call.get("id", "")),
        )
        for i, call in enumerate(calls)
        if model_seq + 1 + i not in answered
    ]
    moved = [dataclasses.replace(m, seq=m.seq + len(calls)) for m in later]
    return [*fillers, *moved], inserted


def _plain(name: str) -> str:
    """A model-chosen name the plain ``name`` column can store."""
    text = name.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text[:200]
