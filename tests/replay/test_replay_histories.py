"""Every committed history replays on today's AgentSession; an incompatible one fails.

Replays run inside Temporal's workflow sandbox, which also stops a non-deterministic call
(the clock, random, I/O) at run time: workers run sessions without it for speed
(``worker_workflow_sandbox``), so this is where such a call in vigil's workflows is caught.
Every history replays without the sandbox too, as workers run them.

No server needed: the Replayer runs the workflow code against the recorded events. A
failure here means a change would break sessions already running; make it compatible
(``workflow.patched``) or, for a deliberate versioned change, re-record the histories with
``uv run python -m tests.replay.record_histories``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import RestrictedWorkflowAccessError
from temporalio.workflow import NondeterminismError

from tests.replay.incompatible import INCOMPATIBLE, RandomBeforeEachStep
from vigil.schema import names
from vigil.schema.names import (
    PATCH_CANCEL_AT_THE_START,
    PATCH_CONVERSATION_IDLE,
    PATCH_CONVERSATION_LATE_MESSAGE,
    PATCH_END_OUTLIVES_CANCEL,
    PATCH_INPUT_AT_THE_END,
    PATCH_INPUT_BEFORE_RUN,
    PATCH_LAST_REDIRECT_WINS,
    PATCH_LINE_TEXT_NUL,
    PATCH_LOCAL_CALL_MOVES,
    PATCH_MESSAGE_BEFORE_END,
    PATCH_REDIRECT_BACK_DURING_MOVE,
    PATCH_REDIRECT_QUEUE_LIMIT,
    PATCH_START_ATTRIBUTES,
    PATCH_STEP_BATCHES,
    PATCH_UNDECRYPTABLE_SIGNAL,
)
from vigil.schema.payloads import SessionStatus
from vigil.workers.client import local_activity_data
from vigil.workers.settings import Settings
from vigil.workers.temporal import data_converter, workflow_runner
from vigil.workflows.session import AgentSession

HISTORIES = Path(__file__).resolve().parent / "histories"
PATHS = sorted(HISTORIES.glob("*.json"))
# Scenarios added after every patch the older recordings below stand for: recorded on
# today's code only.
LATEST = {
    "finish_failed",
    "undecryptable_signal",
    "conversation_first_run",
    "conversation_last_run",
    "client_start_first_run",
    "client_start_last_run",
    "conversation_idle",
    "conversation_late_message",
    "message_at_the_end",
    "cancel_during_the_end",
    "redirect_queue_full",
    "last_redirect_wins",
    "redirect_with_the_start",
    "redirect_to_its_own_version_at_start",
    "wake_before_run",
    "cancel_at_the_start",
    "redirect_back_during_move",
    "input_at_the_end",
    "end_of_a_refused_task",
    "step_batches",
    "hand_back_with_input",
    "hand_back_waits",
    "late_approval",
    "cancel_inside_a_batch",
    "local_call_moves",
    "line_text_nul",
    "whole_numbers",
    "default_step_batches",
    "pause_state_signals",
    "tool_failed_for_good",
    "linear_patterns",
    "rules_over_never",
    "delivery_per_chain",
    "named_requests",
    "named_requests_across_runs_first_run",
    "named_requests_across_runs_last_run",
    "runs_take_a_step_first_run",
    "runs_take_a_step_last_run",
    "prompt_follows_goal",
    "prompt_follows_goal_across_runs_first_run",
    "prompt_follows_goal_across_runs_last_run",
    "earlier_session_id",
    "pause_holds_idle",
    "finite_edits",
    "batch_wait_step_first_run",
    "batch_wait_step_last_run",
    "ask_after_queued_first_run",
    "ask_after_queued_last_run",
    "move_takes_later_goal",
    "carried_provider_wait_first_run",
    "carried_provider_wait_last_run",
}
EXPECTED = {
    "tools_finish",
    "approval_approve",
    "pause_resume",
    "continue_as_new_first_run",
    "continue_as_new_last_run",
    "budget_exhausted",
    "wait_until",
    "provider_rejected",
    "hand_over_waiting_first_run",
    "hand_over_waiting_last_run",
    "budgeted_retries",
    "agent_definition",
    "agent_python_mcp_tools",
    "transcript_ui",
    "webhooks",
    "cancel_by",
    "folded_step",
    "local_model_calls",
    *LATEST,
}
# Histories recorded before the outcome-memory step was added (workflow.patched): they
# must keep replaying, which is what lets sessions started by older code run to the end.
OLDER_CODE = "pre_outcome_memory__"
# Recorded before the cancel event named who cancelled (PATCH_CANCEL_ACTOR).
OLDER_CANCEL = "pre_cancel_actor__"
# Recorded before the low-latency mode's bookkeeping became local (PATCH_LOCAL_RECORDS).
OLDER_LOCAL = "pre_local_records__"
# Recorded before lean bookkeeping (PATCH_LEAN_BOOKKEEPING): every scenario, since every
# new session takes it (the agent resolved locally, the opening and the outcome's memory
# riding with records, the older patches implied instead of asked).
OLDER_LEAN = "pre_lean_bookkeeping__"
# Recorded before local bookkeeping in every mode (PATCH_LOCAL_BOOKKEEPING): every
# scenario, since every new session takes it (the default mode's records and the outcome's
# memory as local activities).
OLDER_LOCAL_BOOKS = "pre_local_bookkeeping__"
# Recorded before quiet steps (PATCH_QUIET_STEPS): every scenario, since every new session
# takes it (the step's search attribute no longer updated after every step).
OLDER_QUIET = "pre_quiet_steps__"
# Recorded before an approval's decision was written before the call it decided ran
# (PATCH_DECISION_FIRST): the scenarios that decide an approval.
OLDER_DECISION = "pre_decision_first__"
# Recorded before a message taken during the step that would end the session was answered
# (PATCH_MESSAGE_BEFORE_END): that session ended on the step and left the message out.
OLDER_MESSAGE = "pre_message_at_the_end__"
# Recorded before input handled ahead of a run's code was checked as any other, and before
# a cancel at the start was recorded (PATCH_INPUT_BEFORE_RUN, PATCH_CANCEL_AT_THE_START):
# the early redirect was refused, the early wake forgotten (a second one woke the
# session), the cancelled session left no record.
OLDER_EARLY = "pre_input_before_run__"
EARLY = {
    "redirect_with_the_start",
    "redirect_to_its_own_version_at_start",
    "wake_before_run",
    "cancel_at_the_start",
}
# Recorded before a redirect back to the running version, sent while the session read the
# version an earlier redirect moved it to, moved it back (PATCH_REDIRECT_BACK_DURING_MOVE).
OLDER_BACK = "pre_redirect_back__"
# Recorded before signals that reached a session once it had ended were refused and
# recorded (PATCH_INPUT_AT_THE_END).
OLDER_END_INPUT = "pre_input_at_the_end__"
# Recorded before a low-latency model call went on to the plain steps after its own
# (PATCH_STEP_BATCHES).
OLDER_BATCHES = "pre_step_batches__"
# Recorded before a run set only the search attributes it changes, and none its start set
# (PATCH_START_ATTRIBUTES, which every new session takes): the scenarios whose path it
# changes (a start by vigil's client, a run continued as new, step batches implied).
OLDER_ATTRIBUTES = "pre_start_attributes__"
# Recorded before a step a batch handed back on a provider's Retry-After waited it out
# (PATCH_HANDED_BACK_WAITS): it was taken again at once.
OLDER_WAITS = "pre_handed_back_waits__"
ATTRIBUTES = {
    "client_start_first_run",
    "client_start_last_run",
    "continue_as_new_first_run",
    "continue_as_new_last_run",
    "step_batches",
    "local_model_calls",
}
DECIDING = {
    "approval_approve",
    "hand_over_waiting_last_run",
    "agent_definition",
    "agent_python_mcp_tools",
    "transcript_ui",
    "webhooks",
}
# Payload encryption on, as every worker runs: histories written in plain (before
# encryption) must still replay, since a plain payload decodes as it is.
CONVERTER = data_converter(
    Settings(payload_keys="replay:" + "A" * 43 + "=", payload_key_id="replay")
)
# Scenarios added after the outcome-memory step, with no recording from before it.
NEWER = {
    "hand_over_waiting_first_run",
    "hand_over_waiting_last_run",
    "budgeted_retries",
    "agent_definition",
    "agent_python_mcp_tools",
    "transcript_ui",
    "webhooks",
    "cancel_by",
    "folded_step",
    "local_model_calls",
    *LATEST,
}


def _replayer(workflow: type, *, sandboxed: bool = True) -> Replayer:
    return Replayer(
        workflows=[workflow],
        data_converter=CONVERTER,
        workflow_runner=workflow_runner(sandboxed=sandboxed),
    )


def _history(path: Path) -> WorkflowHistory:
    # The file holds the events only. The workflow id matters only to histories that
    # start child workflows (their ids derive from it): those are recorded under this id.
    stem = path.stem.split("__")[-1]  # an older recording: the scenario's own id
    return WorkflowHistory.from_json(f"replay-{stem}", path.read_text())


def test_the_recorded_scenarios_are_all_here() -> None:
    older_prefixes = (
        OLDER_CODE,
        OLDER_CANCEL,
        OLDER_LOCAL,
        OLDER_LEAN,
        OLDER_LOCAL_BOOKS,
        OLDER_QUIET,
        OLDER_DECISION,
        OLDER_MESSAGE,
        OLDER_EARLY,
        OLDER_BACK,
        OLDER_END_INPUT,
        OLDER_BATCHES,
        OLDER_ATTRIBUTES,
        OLDER_WAITS,
    )
    current = {p.stem for p in PATHS if not p.stem.startswith(older_prefixes)}
    older = {p.stem.removeprefix(OLDER_CODE) for p in PATHS if p.stem.startswith(OLDER_CODE)}
    older_cancel = {
        p.stem.removeprefix(OLDER_CANCEL) for p in PATHS if p.stem.startswith(OLDER_CANCEL)
    }
    assert current == EXPECTED
    assert older == EXPECTED - NEWER
    assert older_cancel == {"cancel_by"}
    older_local = {
        p.stem.removeprefix(OLDER_LOCAL) for p in PATHS if p.stem.startswith(OLDER_LOCAL)
    }
    assert older_local == {"local_model_calls"}
    older_lean = {p.stem.removeprefix(OLDER_LEAN) for p in PATHS if p.stem.startswith(OLDER_LEAN)}
    assert older_lean == EXPECTED - LATEST
    older_books = {
        p.stem.removeprefix(OLDER_LOCAL_BOOKS)
        for p in PATHS
        if p.stem.startswith(OLDER_LOCAL_BOOKS)
    }
    assert older_books == EXPECTED - LATEST
    older_quiet = {
        p.stem.removeprefix(OLDER_QUIET) for p in PATHS if p.stem.startswith(OLDER_QUIET)
    }
    assert older_quiet == EXPECTED - LATEST
    older_decision = {
        p.stem.removeprefix(OLDER_DECISION) for p in PATHS if p.stem.startswith(OLDER_DECISION)
    }
    assert older_decision == DECIDING
    older_message = {
        p.stem.removeprefix(OLDER_MESSAGE) for p in PATHS if p.stem.startswith(OLDER_MESSAGE)
    }
    assert older_message == {"message_at_the_end"}
    older_early = {
        p.stem.removeprefix(OLDER_EARLY) for p in PATHS if p.stem.startswith(OLDER_EARLY)
    }
    assert older_early == EARLY
    older_back = {p.stem.removeprefix(OLDER_BACK) for p in PATHS if p.stem.startswith(OLDER_BACK)}
    assert older_back == {"redirect_back_during_move"}
    older_end_input = {
        p.stem.removeprefix(OLDER_END_INPUT) for p in PATHS if p.stem.startswith(OLDER_END_INPUT)
    }
    assert older_end_input == {"input_at_the_end"}
    older_batches = {
        p.stem.removeprefix(OLDER_BATCHES) for p in PATHS if p.stem.startswith(OLDER_BATCHES)
    }
    assert older_batches == {"local_model_calls"}
    older_attributes = {
        p.stem.removeprefix(OLDER_ATTRIBUTES) for p in PATHS if p.stem.startswith(OLDER_ATTRIBUTES)
    }
    assert older_attributes == ATTRIBUTES
    older_waits = {
        p.stem.removeprefix(OLDER_WAITS) for p in PATHS if p.stem.startswith(OLDER_WAITS)
    }
    assert older_waits == {"hand_back_waits"}


def _patches(history: WorkflowHistory) -> list[str]:
    """The patch ids the history's markers hold, in order."""
    return [
        json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]


def _result(history: WorkflowHistory) -> dict[str, Any]:
    """The session's result."""
    [done] = [
        e.workflow_execution_completed_event_attributes
        for e in history.events
        if e.HasField("workflow_execution_completed_event_attributes")
    ]
    result: dict[str, Any] = json.loads(done.result.payloads[0].data)
    return result


def _ended(history: WorkflowHistory) -> str:
    """The status in the session's result."""
    return str(_result(history)["status"])


def test_the_newest_histories_hold_the_paths_they_are_named_for() -> None:
    # A re-recording that missed its path would still replay: say what each must hold.
    assert _ended(_history(HISTORIES / "finish_failed.json")) == SessionStatus.FAILED.value
    undecryptable = _history(HISTORIES / "undecryptable_signal.json")
    refused = [p for p in _patches(undecryptable) if p.startswith(PATCH_UNDECRYPTABLE_SIGNAL)]
    # The 1st and 3rd signals were refused; the 2nd (readable) was taken between them.
    assert refused == [f"{PATCH_UNDECRYPTABLE_SIGNAL}-1", f"{PATCH_UNDECRYPTABLE_SIGNAL}-3"]
    assert _ended(undecryptable) == SessionStatus.COMPLETED.value
    # A conversation's later run took over the wait for the next message, then finished.
    assert _ended(_history(HISTORIES / "conversation_last_run.json")) == "completed"
    # The client's start carried the definition: the first run read none, the next did.
    first, last = (
        [
            data["activity_type"]
            for e in _history(HISTORIES / f"client_start_{run}.json").events
            if (data := local_activity_data(e)) is not None
        ]
        for run in ("first_run", "last_run")
    )
    assert names.ACT_RESOLVE_AGENT not in first and names.ACT_CALL_MODEL in first
    assert last[0] == names.ACT_RESOLVE_AGENT
    # A conversation that got no message within its idle time ended completed; those
    # recorded before the idle time (conversation_*_run) carry no marker of it.
    idle = _history(HISTORIES / "conversation_idle.json")
    assert PATCH_CONVERSATION_IDLE in _patches(idle)
    assert _ended(idle) == SessionStatus.COMPLETED.value
    # Its idle time passing under a pause held it until the resume; unpaused, no marker.
    held = _history(HISTORIES / "pause_holds_idle.json")
    assert names.PATCH_PAUSE_HOLDS_IDLE in _patches(held)
    assert _ended(held) == SessionStatus.COMPLETED.value
    assert names.PATCH_PAUSE_HOLDS_IDLE not in _patches(idle)
    for run in ("first", "last"):
        older = _history(HISTORIES / f"conversation_{run}_run.json")
        assert PATCH_CONVERSATION_IDLE not in _patches(older)
        assert PATCH_CONVERSATION_LATE_MESSAGE not in _patches(older)
    # A message sent while the model answered was answered by the next step.
    late = _history(HISTORIES / "conversation_late_message.json")
    assert PATCH_CONVERSATION_LATE_MESSAGE in _patches(late)
    # A message taken while the model gave its last answer: one more step answered it;
    # recorded before, the session ended on that answer without it.
    answered = _history(HISTORIES / "message_at_the_end.json")
    dropped = _history(HISTORIES / f"{OLDER_MESSAGE}message_at_the_end.json")
    assert PATCH_MESSAGE_BEFORE_END in _patches(answered)
    assert PATCH_MESSAGE_BEFORE_END not in _patches(dropped)
    assert (_result(answered)["steps"], _result(dropped)["steps"]) == (2, 1)
    # Cancelled while its end was written: written again, the session completed.
    held = _history(HISTORIES / "cancel_during_the_end.json")
    assert PATCH_END_OUTLIVES_CANCEL in _patches(held)
    assert _ended(held) == SessionStatus.COMPLETED.value
    # Redirect signals past the queue's limit were refused; a redirect back to the
    # running version cancelled the move an earlier one asked for.
    for name, patch in (
        ("redirect_queue_full", PATCH_REDIRECT_QUEUE_LIMIT),
        ("last_redirect_wins", PATCH_LAST_REDIRECT_WINS),
    ):
        history = _history(HISTORIES / f"{name}.json")
        assert patch in _patches(history), name
        assert _ended(history) == SessionStatus.COMPLETED.value
    # Input handled before the run's code started: a redirect sent with the start was
    # taken (the definition read again for version 2; before: refused), a wake update in a
    # reset run's first task woke the sleep it took over (before: a second wake was needed).
    for name in EARLY - {"cancel_at_the_start"}:
        now, then = (_history(HISTORIES / f"{prefix}{name}.json") for prefix in ("", OLDER_EARLY))
        assert PATCH_INPUT_BEFORE_RUN in _patches(now), name
        assert PATCH_INPUT_BEFORE_RUN not in _patches(then), name
        assert _ended(now) == _ended(then) == SessionStatus.COMPLETED.value
    redirected, stayed = (
        _history(HISTORIES / f"{prefix}redirect_with_the_start.json")
        for prefix in ("", OLDER_EARLY)
    )
    assert (
        _local(redirected, names.ACT_RESOLVE_AGENT),
        _local(stayed, names.ACT_RESOLVE_AGENT),
    ) == (2, 1)
    # Named the version it starts on: taken (before: refused, as above), and no move: the
    # definition read once.
    stayed_on = _history(HISTORIES / "redirect_to_its_own_version_at_start.json")
    assert _local(stayed_on, names.ACT_RESOLVE_AGENT) == 1
    woken, forgot = (
        _history(HISTORIES / f"{prefix}wake_before_run.json") for prefix in ("", OLDER_EARLY)
    )
    assert (_updates(woken), _updates(forgot)) == (1, 2)
    # Cancelled before a worker first ran it: the end was written (local activities after
    # the agent's resolution); before, the workflow was cancelled with nothing recorded.
    now, then = (
        _history(HISTORIES / f"{prefix}cancel_at_the_start.json") for prefix in ("", OLDER_EARLY)
    )
    assert PATCH_CANCEL_AT_THE_START in _patches(now)
    assert PATCH_CANCEL_AT_THE_START not in _patches(then)
    assert (_local(now, names.ACT_RECORD), _local(then, names.ACT_RECORD)) == (1, 0)
    for history in (now, then):
        assert history.events[-1].HasField("workflow_execution_canceled_event_attributes")
    # Redirected back while the move to version 2 was read: moved back, a third read of a
    # definition (version 1 again); before, it stayed on version 2.
    now, then = (
        _history(HISTORIES / f"{prefix}redirect_back_during_move.json")
        for prefix in ("", OLDER_BACK)
    )
    assert PATCH_REDIRECT_BACK_DURING_MOVE in _patches(now)
    assert PATCH_REDIRECT_BACK_DURING_MOVE not in _patches(then)
    assert (_local(now, names.ACT_RESOLVE_AGENT), _local(then, names.ACT_RESOLVE_AGENT)) == (3, 2)
    assert _ended(now) == _ended(then) == SessionStatus.COMPLETED.value
    # A message and a pause signalled while the end was written: refused and written after
    # it (one more record write); before, neither was recorded.
    now, then = (
        _history(HISTORIES / f"{prefix}input_at_the_end.json") for prefix in ("", OLDER_END_INPUT)
    )
    assert PATCH_INPUT_AT_THE_END in _patches(now)
    assert PATCH_INPUT_AT_THE_END not in _patches(then)
    assert (_local(now, names.ACT_RECORD), _local(then, names.ACT_RECORD)) == (3, 2)
    assert _ended(now) == _ended(then) == SessionStatus.COMPLETED.value
    # The end written by a task Temporal refused: the retry's write of the message was
    # refused (the record holds the end), and the session ended as recorded.
    refused_task = _history(HISTORIES / "end_of_a_refused_task.json")
    failed = [
        e.activity_task_failed_event_attributes.failure.application_failure_info.type
        for e in refused_task.events
        if e.HasField("activity_task_failed_event_attributes")
    ]
    assert failed == [names.ERR_ENDED_IN_RECORD]
    assert _ended(refused_task) == SessionStatus.COMPLETED.value
    # Four steps of the low-latency mode in one model call; before batches, and in a
    # session whose first call outlasted the window, a call a step. Batches were asked
    # for until the start's attributes patch, which implies them.
    for prefix in ("", OLDER_ATTRIBUTES):
        batches = _history(HISTORIES / f"{prefix}step_batches.json")
        assert (_local(batches, names.ACT_CALL_MODEL), _result(batches)["steps"]) == (1, 4)
    assert _patches(_history(HISTORIES / "step_batches.json")) == [PATCH_START_ATTRIBUTES]
    assert PATCH_STEP_BATCHES in _patches(
        _history(HISTORIES / f"{OLDER_ATTRIBUTES}step_batches.json")
    )
    now, then = (
        _history(HISTORIES / f"{prefix}local_model_calls.json")
        for prefix in (OLDER_ATTRIBUTES, OLDER_BATCHES)
    )
    assert PATCH_STEP_BATCHES in _patches(now)
    assert PATCH_STEP_BATCHES not in _patches(then)
    assert _local(now, names.ACT_CALL_MODEL) == _local(then, names.ACT_CALL_MODEL) == 2
    # The default mode's batch: the four steps in one regular activity (the patch asked
    # first, as every new session does; the default mode's folded step recorded before
    # it: one call a step).
    default = _history(HISTORIES / "default_step_batches.json")
    assert _patches(default) == [names.PATCH_DEFAULT_STEP_BATCHES]
    assert (_scheduled(default, names.ACT_CALL_MODEL), _result(default)["steps"]) == (1, 4)
    assert _local(default, names.ACT_CALL_MODEL) == 0
    folded = _history(HISTORIES / "folded_step.json")
    assert names.PATCH_DEFAULT_STEP_BATCHES not in _patches(folded)
    assert _scheduled(folded, names.ACT_CALL_MODEL) == _result(folded)["steps"]
    # A low-latency call its worker was not set up for: moved to a regular activity
    # (asked only then), which ran once a credential was there.
    moves = _history(HISTORIES / "local_call_moves.json")
    assert _patches(moves) == [PATCH_START_ATTRIBUTES, PATCH_LOCAL_CALL_MOVES]
    assert _local(moves, names.ACT_CALL_MODEL) == 1
    assert [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in moves.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ] == [names.ACT_CALL_MODEL]
    assert _ended(moves) == SessionStatus.COMPLETED.value
    # Signals whose one-line text held NUL: refused (asked only then), the session ended
    # on its first goal.
    nul = _history(HISTORIES / "line_text_nul.json")
    assert _patches(nul) == [
        PATCH_START_ATTRIBUTES,
        PATCH_LINE_TEXT_NUL,
        names.PATCH_DECISION_FIRST,
    ]
    assert _ended(nul) == SessionStatus.COMPLETED.value
    # A resume while not paused and a pause while paused: refused (asked only then).
    pause_state = _history(HISTORIES / "pause_state_signals.json")
    assert names.PATCH_PAUSE_STATE_SIGNALS in _patches(pause_state)
    assert _ended(pause_state) == SessionStatus.COMPLETED.value
    # A tool call whose activity failed for good: its error back to the model (asked only
    # then), the session went on to finish.
    gave_up = _history(HISTORIES / "tool_failed_for_good.json")
    assert names.PATCH_TOOL_FAILED_FOR_GOOD in _patches(gave_up)
    assert _ended(gave_up) == SessionStatus.COMPLETED.value
    # An approval signal edited to an integer no float holds: refused (asked only then).
    whole = _history(HISTORIES / "whole_numbers.json")
    assert names.PATCH_WHOLE_NUMBERS in _patches(whole)
    assert _ended(whole) == SessionStatus.COMPLETED.value
    # An approval signal edited to NaN: refused (asked only then).
    finite = _history(HISTORIES / "finite_edits.json")
    assert names.PATCH_FINITE_EDITS in _patches(finite)
    assert _ended(finite) == SessionStatus.COMPLETED.value
    # An approval in a batch's second step handed over with that step (asked only then).
    batch_wait = _history(HISTORIES / "batch_wait_step_first_run.json")
    assert names.PATCH_BATCH_WAIT_STEP in _patches(batch_wait)
    # A message queued before a question waited for the next step (asked only then).
    queued = _history(HISTORIES / "ask_after_queued_first_run.json")
    assert names.PATCH_ASK_AFTER_QUEUED in _patches(queued)
    # A goal-only redirect while a move was read filled the moved prompt (asked then).
    later_goal = _history(HISTORIES / "move_takes_later_goal.json")
    assert names.PATCH_MOVE_TAKES_LATER_GOAL in _patches(later_goal)
    # A handed-back step's wait handed over to the next run with the time it waits for.
    carried = _history(HISTORIES / "carried_provider_wait_first_run.json")
    assert names.PATCH_CARRIED_PROVIDER_WAIT in _patches(carried)
    waited_on = _history(HISTORIES / "carried_provider_wait_last_run.json")
    assert _ended(waited_on) == SessionStatus.COMPLETED.value
    # The next run waits out the rest of the 20 s before it asks the provider again.
    timers = [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        for e in waited_on.events
        if e.HasField("timer_started_event_attributes")
    ]
    assert timers and timers[0].total_seconds() > 5, timers
    # An approval signal's edited arguments checked with patterns in linear time.
    linear = _history(HISTORIES / "linear_patterns.json")
    assert names.PATCH_LINEAR_PATTERNS in _patches(linear)
    assert _ended(linear) == SessionStatus.COMPLETED.value
    # Webhook deliveries whose ids name the session's chain of runs.
    chained = _history(HISTORIES / "delivery_per_chain.json")
    assert names.PATCH_DELIVERY_PER_CHAIN in _patches(chained)
    # A tool marked never with a rule the call meets: it waited for approval.
    ruled = _history(HISTORIES / "rules_over_never.json")
    assert names.PATCH_RULES_OVER_NEVER in _patches(ruled)
    assert _ended(ruled) == SessionStatus.COMPLETED.value
    # A batch's step handed back while a message waited: taken again alone (a third
    # call, not a batch that goes on without the message), then the step that answers it.
    hand_back = _history(HISTORIES / "hand_back_with_input.json")
    assert (_local(hand_back, names.ACT_CALL_MODEL), _result(hand_back)["steps"]) == (3, 3)
    # A batch's step handed back by a 429 with Retry-After: a timer before it is taken
    # again (asked only then).
    waits = _history(HISTORIES / "hand_back_waits.json")
    assert names.PATCH_HANDED_BACK_WAITS in _patches(waits)
    assert sum(e.HasField("timer_started_event_attributes") for e in waits.events) == 1
    assert (_local(waits, names.ACT_CALL_MODEL), _result(waits)["steps"]) == (2, 3)
    at_once = _history(HISTORIES / f"{OLDER_WAITS}hand_back_waits.json")
    assert names.PATCH_HANDED_BACK_WAITS not in _patches(at_once)
    assert not any(e.HasField("timer_started_event_attributes") for e in at_once.events)
    # An approval taken after its expiry (no worker at the expiry): refused as input, the
    # timeout rejects the call (asked only then).
    late = _history(HISTORIES / "late_approval.json")
    assert names.PATCH_NO_DECISION_PAST_EXPIRY in _patches(late)
    assert _ended(late) == SessionStatus.COMPLETED.value
    # Cancelled inside a batch that recorded two steps: the ending's record says the last
    # step it found, and the session's last update of its step says 2.
    inside = _history(HISTORIES / "cancel_inside_a_batch.json")
    assert inside.events[-1].HasField("workflow_execution_canceled_event_attributes")
    steps_set = [
        json.loads(u.search_attributes.indexed_fields["VigilStep"].data)
        for e in inside.events
        if "VigilStep"
        in (
            u := e.upsert_workflow_search_attributes_event_attributes
        ).search_attributes.indexed_fields
    ]
    assert steps_set[-1] == 2
    # Started by vigil's client, which set the attributes the session would set first,
    # or continued as new, which holds the last run's: a run sets only those that
    # changed; before, its first update set all four again. (The plain Temporal client
    # started continue_as_new's first run with none: it sets them all, as before.)
    for name in ("client_start_first_run", "client_start_last_run", "continue_as_new_last_run"):
        now, then = (
            _history(HISTORIES / f"{name}.json"),
            _history(HISTORIES / f"{OLDER_ATTRIBUTES}{name}.json"),
        )
        assert _patches(now)[0] == PATCH_START_ATTRIBUTES, name
        assert PATCH_START_ATTRIBUTES not in _patches(then), name
        assert _vigil_attributes_set(now) < _vigil_attributes_set(then), name


def _scheduled(history: WorkflowHistory, activity_type: str) -> int:
    """How many regular activities of ``activity_type`` the history scheduled."""
    return sum(
        e.activity_task_scheduled_event_attributes.activity_type.name == activity_type
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    )


def _local(history: WorkflowHistory, activity_type: str) -> int:
    """How many of the history's local activities were of ``activity_type``."""
    return sum(
        1
        for e in history.events
        if (data := local_activity_data(e)) is not None and data["activity_type"] == activity_type
    )


def _vigil_attributes_set(history: WorkflowHistory) -> int:
    """How many of vigil's own search attributes the history's updates set, in all."""
    upserts = [e.upsert_workflow_search_attributes_event_attributes for e in history.events]
    return sum(k.startswith("Vigil") for u in upserts for k in u.search_attributes.indexed_fields)


def _updates(history: WorkflowHistory) -> int:
    """The updates the history accepted."""
    return sum(
        1
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    )


@pytest.mark.parametrize("sandboxed", [True, False], ids=["sandboxed", "as-workers-run"])
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
async def test_history_replays(path: Path, sandboxed: bool) -> None:
    result = await _replayer(AgentSession, sandboxed=sandboxed).replay_workflow(
        _history(path), raise_on_replay_failure=False
    )
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure!r}"


async def test_the_sandbox_stops_a_nondeterministic_call_the_events_would_not_show() -> None:
    history = _history(HISTORIES / "tools_finish.json")
    plain = await _replayer(RandomBeforeEachStep, sandboxed=False).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert plain.replay_failure is None  # the same commands: only the sandbox can tell
    caught = await _replayer(RandomBeforeEachStep).replay_workflow(
        history, raise_on_replay_failure=False
    )
    # The replayer reports the failed workflow task as text: the sandbox's error by name.
    assert "Cannot access random.random" in str(caught.replay_failure)
    assert RestrictedWorkflowAccessError.__name__ in str(caught.replay_failure)


# What the replay failure says for each incompatible variant.
WHY = {
    "TimerBeforeEachStep": "Timer machine does not handle this event",
    "RenamedRecordActivity": "does not match activity type of local activity command",
}


@pytest.mark.parametrize("workflow", INCOMPATIBLE, ids=[w.__name__ for w in INCOMPATIBLE])
async def test_incompatible_change_is_caught(workflow: type) -> None:
    history = _history(HISTORIES / "tools_finish.json")
    result = await _replayer(workflow).replay_workflow(history, raise_on_replay_failure=False)
    assert isinstance(result.replay_failure, NondeterminismError), repr(result.replay_failure)
    assert WHY[workflow.__name__] in str(result.replay_failure)
    with pytest.raises(NondeterminismError):
        await _replayer(workflow).replay_workflow(history)
