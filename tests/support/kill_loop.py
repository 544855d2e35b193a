"""The kill loop: many sessions on a worker process that is SIGKILLed at random moments and
restarted each time, then a checker that reads everything the sessions left behind.

Each session's scripted model (the LLM stub, over HTTP) asks at every step for three tools
(``write_artifact``, ``remember``, ``http_fetch``) and finishes at the last step; the
session then stores its outcome as a memory. Kills land wherever the worker happens to be:
in a model call, a tool, a record, a workflow task. The checker knows what every session
must hold once, and reports per concern (transcripts, tool results, events, artifacts,
memories) every gap and every duplicate it finds.

Used by ``tests/integration/test_kill_loop.py`` (small) and ``bench/kill_loop.py`` (large).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.cli import SessionScripts
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import assert_whole, events, session_row, transcript
from tests.support.worker_proc import WorkerForks
from vigil.activities.artifacts.store import FilesystemStore
from vigil.activities.record.store import StoredMessage
from vigil.schema.payloads import (
    Budget,
    SessionResult,
    SessionStatus,
    StartSessionInput,
    ToolPolicy,
)
from vigil.workflows.session import AgentSession

CONCERNS = ("transcripts", "tool_results", "events", "artifacts", "memories")
USAGE = (120, 9)


@dataclass(frozen=True)
class LoopPlan:
    sessions: int = 6
    steps: int = 8
    """Model calls per session; all but the last ask for three tools, the last finishes."""
    kills: int = 12
    seed: int = field(default_factory=lambda: random.randrange(1 << 30))
    gap: tuple[float, float] = (0.4, 1.6)
    """Seconds a fresh worker lives (uniform) before it is killed."""
    hang: tuple[float, float] = (0.05, 0.6)
    """Seconds each model reply takes (uniform), so kills also land inside model calls."""


@dataclass
class SessionPlan:
    """What one session is asked to do, hence what its record must hold exactly once."""

    session_id: str
    agent_id: str
    tag: str
    goal: str
    steps: int
    artifacts: dict[str, str]
    """name -> content."""
    facts: list[str]
    urls: list[str]


@dataclass
class LoopRun:
    plan: LoopPlan
    sessions: list[SessionPlan]
    results: list[SessionResult]
    kills: int
    seconds: float
    artifact_dir: Path


def _words(rng: random.Random, n: int) -> str:
    """Random tokens: texts built from them are never near-duplicates of each other."""
    return " ".join(f"w{rng.getrandbits(24):06x}" for _ in range(n))


def plan_session(scripts: SessionScripts, stub_url: str, plan: LoopPlan, index: int) -> SessionPlan:
    """Script one session in the stub and return what it must leave behind."""
    rng = random.Random(f"{plan.seed}-{index}")
    tag = f"kl{plan.seed:x}s{index}"
    replies: list[Reply] = []
    artifacts: dict[str, str] = {}
    facts: list[str] = []
    urls: list[str] = []
    for step in range(1, plan.steps):
        name = f"step{step}.txt"
        artifacts[name] = f"{tag} artifact of step {step}: {_words(rng, 12)}"
        # Distinct random words: no two facts are near-duplicates that memory would merge.
        facts.append(f"{tag} learned at step {step} that {_words(rng, 10)}")
        urls.append(f"{stub_url}/{tag}/{step}")
        reply = Reply.tool_calls(
            ("write_artifact", {"name": name, "content": artifacts[name]}),
            ("remember", {"content": facts[-1], "kind": "fact"}),
            ("http_fetch", {"url": urls[-1]}),
            usage=USAGE,
        )
        replies.append(Reply.hang(rng.uniform(*plan.hang), then=reply))
    finish = Reply.tool_call("finish", {"summary": f"{tag} all steps done"}, usage=USAGE)
    replies.append(Reply.hang(rng.uniform(*plan.hang), then=finish))
    goal = scripts.plan(*replies, label=f"kill loop session {tag}:")
    return SessionPlan(
        session_id=f"kill-loop-{tag}-{uuid.uuid4().hex[:6]}",
        agent_id=f"agent-{tag}",
        tag=tag,
        goal=goal,
        steps=plan.steps,
        artifacts=artifacts,
        facts=facts,
        urls=urls,
    )


def worker_env(
    base: dict[str, str],
    *,
    database_url: str,
    temporal_address: str,
    state_dir: Path,
    task_queue: str,
    model_url: str,
    artifact_dir: Path,
) -> dict[str, str]:
    """The environment of every worker process of the loop."""
    return {
        **base,
        "DATABASE_URL": database_url,
        "TEMPORAL_ADDRESS": temporal_address,
        "VIGIL_STATE_DIR": str(state_dir),
        "VIGIL_TASK_QUEUE": task_queue,
        "VIGIL_MODEL_PROVIDER": "openai",
        "VIGIL_MODEL_BASE_URL": model_url,
        "VIGIL_MODEL_NAME": "stub-model",
        "VIGIL_MODEL_TIMEOUT_SECONDS": "10",
        # The stub's own host:port only (a port-less entry allows port 80 alone).
        "VIGIL_HTTP_ALLOW": model_url.split("//", 1)[1].split("/", 1)[0],
        "VIGIL_ARTIFACT_BACKEND": "fs",
        "VIGIL_ARTIFACT_DIR": str(artifact_dir),
        "VIGIL_LOG_LEVEL": "ERROR",
    }


async def run_loop(
    client: Client,
    stub: LLMStub,
    env: dict[str, str],
    plan: LoopPlan,
    *,
    task_queue: str,
    log: Path,
    say: Callable[[str], None] = lambda _: None,
    timeout: float = 600,  # noqa: ASYNC109 - a budget for the whole loop
) -> LoopRun:
    """Start the sessions, kill the worker ``plan.kills`` times (or until every session has
    ended), leave the last worker running until all are done."""
    rng = random.Random(plan.seed)
    scripts = SessionScripts()
    stub.default = scripts
    sessions = [plan_session(scripts, stub.url, plan, i) for i in range(plan.sessions)]
    started = time.monotonic()
    forks = await WorkerForks.start(env, log)
    everything: asyncio.Future[list[SessionResult]] | None = None
    try:
        worker = await forks.fork()
        handles = [
            await client.start_workflow(
                AgentSession.run,
                StartSessionInput(
                    agent_id=s.agent_id,
                    goal=s.goal,
                    policy=ToolPolicy(require_approval=[]),
                    budget=Budget(max_steps=plan.steps + 5),
                    heartbeat_seconds=2,
                    context_messages=400,
                ),
                id=s.session_id,
                task_queue=task_queue,
            )
            for s in sessions
        ]
        everything = asyncio.ensure_future(asyncio.gather(*(h.result() for h in handles)))
        kills = 0
        while kills < plan.kills and not everything.done():
            await asyncio.wait({everything}, timeout=rng.uniform(*plan.gap))
            if everything.done():
                break
            await worker.sigkill()
            kills += 1
            say(f"kill {kills}/{plan.kills} at {time.monotonic() - started:.1f}s")
            worker = await forks.fork()
        results = await asyncio.wait_for(everything, timeout)
    finally:
        if everything is not None and not everything.done():
            everything.cancel()
        await forks.close()
    return LoopRun(
        plan=plan,
        sessions=sessions,
        results=list(results),
        kills=kills,
        seconds=time.monotonic() - started,
        artifact_dir=Path(env["VIGIL_ARTIFACT_DIR"]),
    )


# --- the checker ---------------------------------------------------------------------------


async def check(run: LoopRun, db: async_sessionmaker[DbSession]) -> dict[str, list[str]]:
    """Every gap or duplicate found, per concern; all lists empty means whole."""
    found: dict[str, list[str]] = {concern: [] for concern in CONCERNS}
    store = FilesystemStore(run.artifact_dir)
    for s, result in zip(run.sessions, run.results, strict=True):
        if (result.status, result.steps) != (SessionStatus.COMPLETED, s.steps):
            found["transcripts"].append(f"{s.tag}: ended {result.status.value} at {result.steps}")
        messages = await transcript(db, s.session_id)
        _check_transcript(s, messages, found["transcripts"])
        _check_tool_results(s, messages, found["tool_results"])
        await _check_events(s, db, found["events"])
        await _check_artifacts(s, db, store, found["artifacts"])
        await _check_memories(s, db, found["memories"])
    return found


def _check_transcript(s: SessionPlan, messages: list[StoredMessage], out: list[str]) -> None:
    try:
        assert_whole(messages)
    except AssertionError as exc:
        out.append(f"{s.tag}: {str(exc).splitlines()[0][:300]}")
    # goal + per tool step (assistant + 3 results) + finish call and result + final note
    want = 1 + (s.steps - 1) * 4 + 3
    if len(messages) != want:
        out.append(f"{s.tag}: {len(messages)} messages, expected {want}")


def _check_tool_results(s: SessionPlan, messages: list[StoredMessage], out: list[str]) -> None:
    results = Counter(m.tool_call_id for m in messages if m.role == "tool")
    by_id = {m.tool_call_id: m for m in messages if m.role == "tool"}
    calls = [c for m in messages if m.role == "assistant" for c in (m.tool_calls or [])]
    for call_id, n in results.items():
        if n != 1:
            out.append(f"{s.tag}: tool call {call_id} answered {n} times")
    names = Counter(c["name"] for c in calls)
    want = {"write_artifact": s.steps - 1, "remember": s.steps - 1, "http_fetch": s.steps - 1}
    if {k: names[k] for k in want} != want or names["finish"] != 1:
        out.append(f"{s.tag}: tool calls {dict(names)}, expected {want} and one finish")
    for call in calls:
        answer = by_id.get(call["id"])
        if answer is None:
            out.append(f"{s.tag}: {call['name']} {call['id']} has no result")
            continue
        content = answer.content or ""
        args = call.get("arguments") or {}
        if isinstance(args, str):
            args = json.loads(args)
        if call["name"] == "write_artifact":
            sha = hashlib.sha256(s.artifacts[args["name"]].encode()).hexdigest()
            ok = content.startswith(f"stored artifact '{args['name']}'") and sha in content
        elif call["name"] == "remember":
            ok = content.startswith("memory ")
        elif call["name"] == "http_fetch":
            # The stub answers any GET with a 404 that names the path it was asked for.
            path = str(args["url"]).removeprefix(s.urls[0].rsplit("/", 2)[0])
            ok = args["url"] in s.urls and content.startswith("HTTP 404") and path in content
        else:
            ok = True
        if not ok:
            out.append(f"{s.tag}: {call['name']} result {content[:120]!r}")


async def _check_events(s: SessionPlan, db: async_sessionmaker[DbSession], out: list[str]) -> None:
    rows = await events(db, s.session_id)
    keys = Counter(e.key for e in rows)
    for key, n in keys.items():
        if n != 1:
            out.append(f"{s.tag}: event {key} recorded {n} times")
    model = {e.key for e in rows if e.kind == "model_call"}
    if model != {f"model:{n}" for n in range(1, s.steps + 1)}:
        out.append(f"{s.tag}: model_call events {sorted(model)}")
    tools = {e.key for e in rows if e.kind == "tool_call"}
    want = {f"tool:{step}:{i}" for step in range(1, s.steps) for i in range(3)}
    if tools != want:
        out.append(
            f"{s.tag}: tool_call events missing {sorted(want - tools)[:5]}, "
            f"extra {sorted(tools - want)[:5]}"
        )
    row = await session_row(db, s.session_id)
    tokens_in = sum(int(e.payload.get("tokens_in", 0)) for e in rows if e.kind == "model_call")
    if (row.status, row.step) != ("completed", s.steps) or row.tokens_in != tokens_in:
        out.append(
            f"{s.tag}: sessions row {row.status} step {row.step} tokens_in {row.tokens_in}, "
            f"events say {tokens_in}"
        )
    if tokens_in != s.steps * USAGE[0]:
        out.append(f"{s.tag}: {tokens_in} input tokens counted, expected {s.steps * USAGE[0]}")


async def _sql(db: async_sessionmaker[DbSession], sql: str, **params: Any) -> list[Any]:
    async with db() as session:
        return list((await session.execute(text(sql), params)).all())


async def _check_artifacts(
    s: SessionPlan, db: async_sessionmaker[DbSession], store: FilesystemStore, out: list[str]
) -> None:
    links = await _sql(
        db,
        "SELECT l.name, l.sha256, a.size FROM artifact_links l "
        "LEFT JOIN artifacts a ON a.sha256 = l.sha256 WHERE l.session_id = :sid",
        sid=s.session_id,
    )
    names = Counter(name for name, _, _ in links)
    for name, n in names.items():
        if n != 1:
            out.append(f"{s.tag}: artifact {name} linked {n} times")
    if set(names) != set(s.artifacts):
        out.append(f"{s.tag}: artifacts {sorted(names)}, expected {sorted(s.artifacts)}")
    for name, sha, size in links:
        content = s.artifacts.get(name, "").encode()
        if sha != hashlib.sha256(content).hexdigest() or size != len(content):
            out.append(f"{s.tag}: artifact {name} is {sha[:12]} ({size} bytes), not its content")
            continue
        try:
            if store.get_bytes(sha) != content:
                out.append(f"{s.tag}: artifact {name} reads back different bytes")
        except Exception as exc:
            out.append(f"{s.tag}: artifact {name} unreadable: {exc}")


async def _check_memories(
    s: SessionPlan, db: async_sessionmaker[DbSession], out: list[str]
) -> None:
    rows = await _sql(
        db,
        "SELECT kind, content, superseded_by, "
        "coalesce((metadata->>'merge_count')::int, 0) FROM memories "
        "WHERE agent_id = :agent",
        agent=s.agent_id,
    )
    facts = Counter(content for kind, content, _, _ in rows if kind == "fact")
    for fact in s.facts:
        if facts[fact] != 1:
            out.append(f"{s.tag}: fact of step {fact.split()[4]} stored {facts[fact]} times")
    extra = set(facts) - set(s.facts)
    if extra:
        out.append(f"{s.tag}: {len(extra)} unexpected facts")
    outcomes = [r for r in rows if r[0] == "reflection"]
    if len(outcomes) != 1:
        out.append(f"{s.tag}: {len(outcomes)} outcome memories, expected 1")
    for kind, content, superseded_by, merges in rows:
        if merges:
            # Same content again from the same session: the call ran twice.
            out.append(f"{s.tag}: {kind} {content[:50]!r} written {1 + merges} times (merged)")
        if superseded_by is not None:
            out.append(f"{s.tag}: {kind} {content[:50]!r} superseded")
