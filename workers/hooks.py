"""Triggers and webhooks as services, used by the CLI (`vigil trigger`, `vigil webhook`)
and the HTTP API (``POST /v1/triggers/{name}``, ``GET /v1/triggers``,
``GET /v1/webhooks/deliveries``).

A trigger maps a signed JSON body to an agent: ``start`` a session (goal from
``goal_template``), or ``message`` / ``wake`` the session for a key read from the body
(``key_field``). The session for a key has a deterministic id (the agent and the key),
so a ``message`` to a key without a session starts one, and two deliveries racing for
a new key end in one session.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import WorkflowExecutionStatus

from vigil.activities.credentials import ENV_PREFIX, SecretBox, check_name
from vigil.activities.hooks import signing, templates
from vigil.activities.hooks.urls import url_problem
from vigil.activities.record import agents as agent_rows
from vigil.activities.record import hooks as rows
from vigil.activities.record.hooks import TriggerDelivery, TriggerRow, WebhookAttempt, WebhookRow
from vigil.schema.agents import NAME_PATTERN
from vigil.schema.hooks import TRIGGER_ACTIONS, WEBHOOK_EVENTS
from vigil.schema.payloads import Ack
from vigil.workers import keyed
from vigil.workers.client import (
    RUNNING_STATUSES,
    BadArgument,
    NotFound,
    NoWorker,
    Refused,
    UnknownAgent,
    UnknownSession,
    VigilClient,
    said_status,
)
from vigil.workers.credentials import is_stored
from vigil.workers.models import ConfigError, secret_box
from vigil.workers.settings import Settings

__all__ = [
    "FireResult",
    "NewTrigger",
    "TriggerDelivery",
    "TriggerRow",
    "TriggerService",
    "WebhookAttempt",
    "WebhookRow",
    "WebhookService",
]

STALE_CLAIM_SECONDS = 120.0
"""A delivery still pending after this long (its request died) may be acted on again."""
MAX_DELIVERY_ID = 200
MAX_KEY = 500


@dataclass(frozen=True)
class NewTrigger:
    trigger: TriggerRow
    secret: str
    """Shown once; only its sealed form is stored."""


@dataclass(frozen=True)
class FireResult:
    trigger: str
    delivery_id: str
    action: str
    outcome: str
    """``started``, ``messaged``, ``woken`` or ``exists`` (start of a key that has one)."""
    session_id: str
    queued: bool = False
    """The message or wake was left with Temporal as a signal while no worker polled: the
    session takes it (or records why it refused it) once a worker runs it."""


def _box(settings: Settings) -> SecretBox:
    box = secret_box(settings, create=settings.stack_info() is not None)
    if box is None:
        raise ConfigError(
            "no key for stored secrets: set VIGIL_SECRET_KEY to 32 random bytes in base64 "
            "(e.g. `openssl rand -base64 32`), the same for workers, the API and the CLI"
        )
    return box


def _slug(text: str, size: int) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text)[:size]


def key_session_id(agent_id: str, key: str) -> str:
    """The session a ``start`` trigger begins for ``key`` of ``agent_id`` (once per key);
    ``message`` and ``wake`` triggers reach it while it runs, and the key's conversation
    (workers/keyed.py) otherwise."""
    digest = hashlib.sha256(f"{agent_id}\0{key}".encode()).hexdigest()[:12]
    return f"{_slug(agent_id, 60)}-key-{_slug(key, 40)}-{digest}"


def delivery_key(body: Any, key_field: str) -> str:
    """The key a delivery's ``key_field`` holds: a string as it is, a number as its JSON
    text. So ``5`` and ``"5"`` name the same key, on purpose (an id sent as a number by
    one sender and as a string by another is one customer); ``5.0`` is the key ``"5.0"``.

    Anything else is refused (BadArgument, a 422), as an empty string is: a ``null``
    (a missing id) would otherwise be the key ``"null"``, shared with every other delivery
    without one and with the string ``"null"``; a boolean, an object or a list names no
    one key either, nor is a number that is none (``NaN``; ``1e400``, read as infinity).
    TemplateError when the body has no such field."""
    value = templates.lookup(body, key_field)
    if isinstance(value, str):
        key = value
    elif (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and math.isfinite(value)
    ):
        key = templates.as_text(value)
    elif isinstance(value, float):  # NaN, or a number too large for a double (1e400)
        raise BadArgument(
            f"the key field {key_field!r} must hold 1 to {MAX_KEY} characters "
            f"(a string, or a number), not {templates.as_text(value)}"
        )
    else:
        kinds = {type(None): "null", bool: "a boolean", dict: "an object", list: "a list"}
        kind = kinds.get(type(value), type(value).__name__)
        raise BadArgument(
            f"the key field {key_field!r} must hold 1 to {MAX_KEY} characters "
            f"(a string, or a number), not {kind}"
        )
    if not 0 < len(key) <= MAX_KEY:
        raise BadArgument(f"the key field {key_field!r} must hold 1 to {MAX_KEY} characters")
    return key


def delivery_request_id(row: TriggerRow, delivery_id: str) -> str:
    """The request id of what a delivery sends a session (a message, a wake): one per
    delivery of this trigger (a trigger made again under its name is another), within
    a control's ``MAX_REQUEST_ID``."""
    made = row.created_at.isoformat()
    digest = hashlib.sha256(f"{row.name}\0{made}\0{delivery_id}".encode()).hexdigest()
    return f"trigger-{digest[:32]}"


def delivery_session_id(
    agent_id: str, trigger: str, delivery_id: str, made: datetime | None = None
) -> str:
    """The session a keyless ``start`` delivery starts (the same if it is acted on again).
    ``made``, the trigger's creation time, is in it so that a trigger deleted and made
    again under its name (its deliveries forgotten with it) starts new sessions for the
    delivery ids its senders use again; None: the form from before (``fire`` still finds
    a session a delivery started under it)."""
    made_part = "" if made is None else f"\0{made.isoformat()}"
    digest = hashlib.sha256(f"{trigger}{made_part}\0{delivery_id}".encode()).hexdigest()[:16]
    return f"{_slug(agent_id, 60)}-trigger-{digest}"


class TriggerService:
    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[DbSession]) -> None:
        self.settings = settings
        self.db = sessionmaker

    # --- managing triggers -----------------------------------------------------------------

    async def create(
        self,
        name: str,
        *,
        agent_id: str,
        action: str,
        goal_template: str | None = None,
        message_template: str | None = None,
        key_field: str | None = None,
        by: str = "",
    ) -> NewTrigger:
        _check_trigger(name, agent_id, action, goal_template, message_template, key_field)
        if (why := await agent_rows.new_agent_id_problem(self.db, agent_id)) is not None:
            raise BadArgument(why)
        if action != "wake":  # a wake starts nothing: it wakes the key's session
            await self._startable(agent_id)
        secret = secrets.token_urlsafe(32)
        sealed = _box(self.settings).seal(rows.sealed_name(name), secret)
        async with self.db.begin() as db:
            row = await rows.insert_trigger(
                db,
                name=name,
                agent_id=agent_id,
                action=action,
                goal_template=goal_template,
                message_template=message_template,
                key_field=key_field,
                secret=sealed,
                created_by=by,
            )
        if row is None:
            raise BadArgument(f"a trigger named {name!r} exists (delete it or rotate its secret)")
        return NewTrigger(row, secret)

    async def _startable(self, agent_id: str) -> None:
        """Refuse a trigger whose agent no session could start with (no definition, and
        agents without one not allowed): each of its deliveries would be refused."""
        from vigil.workers.agents import AgentError, AgentService

        try:
            await AgentService(self.db).require_startable(
                agent_id, None, allow_undefined=self.settings.allow_undefined_agents
            )
        except AgentError as exc:
            raise UnknownAgent(str(exc)) from None

    async def list_triggers(self, agents: frozenset[str] | None = None) -> list[TriggerRow]:
        """Every trigger, or (``agents`` not None) those of these agents."""
        async with self.db() as db:
            return await rows.list_triggers(db, sorted(agents) if agents is not None else None)

    @staticmethod
    def _named(name: str) -> str:
        """``name``, when a trigger could have it; NotFound otherwise, without asking the
        record (a NUL, which PostgreSQL refuses to even compare, reached it from the
        unauthenticated delivery route as a 500)."""
        if not re.fullmatch(NAME_PATTERN, name):
            raise NotFound(f"no trigger named {name!r}")
        return name

    async def get(self, name: str) -> TriggerRow:
        async with self.db() as db:
            row = await rows.get_trigger(db, self._named(name))
        if row is None:
            raise NotFound(f"no trigger named {name!r}")
        return row

    async def delete(self, name: str) -> None:
        async with self.db.begin() as db:
            if not await rows.delete_trigger(db, self._named(name)):
                raise NotFound(f"no trigger named {name!r}")

    async def rotate_secret(self, name: str) -> NewTrigger:
        self._named(name)
        secret = secrets.token_urlsafe(32)
        sealed = _box(self.settings).seal(rows.sealed_name(name), secret)
        async with self.db.begin() as db:
            if not await rows.replace_secret(db, name, sealed):
                raise NotFound(f"no trigger named {name!r}")
            row = await rows.get_trigger(db, name)
        assert row is not None
        return NewTrigger(row, secret)

    # --- deliveries --------------------------------------------------------------------------

    def signature_error(
        self, row: TriggerRow, timestamp: str | None, signature: str | None, body: bytes
    ) -> str | None:
        """Why the request is not signed with the trigger's secret, or None."""
        secret = _box(self.settings).open(row.secret)
        return signing.check(secret, timestamp, signature, body)

    async def claim(
        self, row: TriggerRow, delivery_id: str, timestamp: str, body: bytes
    ) -> tuple[TriggerDelivery, bool]:
        """(the delivery, True when this request acts on it)."""
        digest = signing.body_digest(timestamp, body)
        async with self.db.begin() as db:
            return await rows.claim_delivery(
                db, row.name, delivery_id[:MAX_DELIVERY_ID], digest, STALE_CLAIM_SECONDS
            )

    async def finish(self, delivery: TriggerDelivery, status: int, result: dict[str, Any]) -> None:
        async with self.db.begin() as db:
            await rows.finish_delivery(db, delivery.id, status, result)

    async def release(self, delivery: TriggerDelivery) -> None:
        async with self.db.begin() as db:
            await rows.release_delivery(db, delivery.id)

    async def fire(
        self, client: VigilClient, row: TriggerRow, delivery_id: str, body: Any
    ) -> FireResult:
        """Act on one delivery: start, message or wake (VigilError for what refuses it)."""
        try:
            goal = templates.render(row.goal_template, body) if row.goal_template else None
            text = templates.render(row.message_template, body) if row.message_template else None
            key = delivery_key(body, row.key_field) if row.key_field else None
        except templates.TemplateError as exc:
            raise BadArgument(str(exc)) from None
        by = f"trigger:{row.name}"
        # The delivery names its message or wake: acted on again (its request died before
        # its result was kept), the session takes it once.
        named = delivery_request_id(row, delivery_id)

        def result(outcome: str, session_id: str, queued: bool = False) -> FireResult:
            return FireResult(row.name, delivery_id, row.action, outcome, session_id, queued)

        if key is None:  # a start without a key: one new session per delivery
            sid = delivery_session_id(row.agent_id, row.name, delivery_id, row.created_at)
            if await _status(client, sid) is None:
                earlier = delivery_session_id(row.agent_id, row.name, delivery_id)
                if await _started_since(client, earlier, row.created_at):
                    # Started for this very trigger under the id's earlier form (acted on
                    # again across an upgrade): the same session, as before (an ended one
                    # refused as under the new form).
                    await _status(client, earlier)
                    return result("started", earlier)
                await _start(client, row.agent_id, goal or text or "", sid)
            return result("started", sid)
        started_id = key_session_id(row.agent_id, key)
        if row.action == "start":
            # One session per key, never started again once it has ended (its own ids:
            # a conversation of the key is not it).
            status = await _status(client, started_id)
            if status is None and await _start(client, row.agent_id, goal or "", started_id):
                return result("started", started_id)
            return result("exists", started_id)
        if await client.temporal_status(started_id) in RUNNING_STATUSES:
            # A session a start trigger began for the key (or a message trigger, before
            # they reached the key's conversation) takes its messages and wakes while it runs.
            if row.action == "wake":
                queued = await _durably(
                    client.wake, started_id, by=by, reason=text or "", request_id=named
                )
                return result("woken", started_id, queued)
            queued = await _durably(client.say, started_id, text or "", by=by, request_id=named)
            return result("messaged", started_id, queued)
        if not keyed.fits_key(key, from_sender=True):
            # Longer than a conversation's key (or with control characters): as before.
            if row.action == "wake":
                raise UnknownSession(f"no session for key {key!r} of agent {row.agent_id!r}")
            if await _start(client, row.agent_id, goal or text or "", started_id):
                queued = False
                if goal and text:  # the goal from its template: the text is the first message
                    queued = await _durably(client.say, started_id, text, by=by, request_id=named)
                return result("started", started_id, queued)
            queued = await _durably(client.say, started_id, text or "", by=by, request_id=named)
            return result("messaged", started_id, queued)
        if row.action == "message":
            # The key's conversation, as `vigil message --key` and the API reach it: started
            # with the goal when none runs (the text its first message), the key's next
            # session once one has ended.
            sent = await keyed.message_by_key(
                client,
                row.agent_id,
                key,
                text or "",
                by=by,
                goal=goal,
                tell_started=True,
                queue_without_worker=True,
                from_sender=True,
                request_id=named,
            )
            outcome = "started" if sent.started else "messaged"
            return result(outcome, sent.session_id, sent.queued)
        generation = await keyed.current_generation(client, row.agent_id, key)
        sid = keyed.keyed_session_id(row.agent_id, key, generation)
        if await client.temporal_status(sid) not in RUNNING_STATUSES:
            raise UnknownSession(f"no running session for key {key!r} of agent {row.agent_id!r}")
        queued = await _durably(client.wake, sid, by=by, reason=text or "", request_id=named)
        return result("woken", sid, queued)


async def _durably(
    control: Callable[..., Awaitable[Ack | None]], *args: Any, **kwargs: Any
) -> bool:
    """A delivery's message or wake: as an update, which a worker takes (or refuses) at
    once; while no worker polls the session's queue, as a signal, which Temporal keeps for
    the next one (a sender's delivery is not refused because no worker runs); an update
    no worker answers in time goes again as a signal too (the client's). Whether it was
    left as a signal."""
    try:
        ack = await control(*args, **kwargs)
    except NoWorker:
        await control(*args, wait=False, **kwargs)
        return True
    return bool(ack is not None and ack.queued)


async def _status(client: VigilClient, session_id: str) -> WorkflowExecutionStatus | None:
    """The session's Temporal status; None when there is no such workflow."""
    status = await client.temporal_status(session_id)
    if status is not None and status not in RUNNING_STATUSES:
        raise Refused(f"session {session_id!r} has ended ({said_status(status)})")
    return status


async def _started_since(client: VigilClient, session_id: str, since: datetime) -> bool:
    """Whether a session ``session_id`` was started (its first run) at ``since`` or
    later."""
    started = await client.temporal_started_at(session_id)
    return started is not None and started >= since


async def _start(client: VigilClient, agent_id: str, goal: str, session_id: str) -> bool:
    """Start ``session_id``; False when another delivery started it first."""
    try:
        await client.start_session(agent_id, goal, session_id=session_id, own_form=True)
    except BadArgument:
        if await _status(client, session_id) is not None:
            return False
        raise
    return True


def _check_trigger(
    name: str,
    agent_id: str,
    action: str,
    goal_template: str | None,
    message_template: str | None,
    key_field: str | None,
) -> None:
    if not re.fullmatch(NAME_PATTERN, name):
        raise BadArgument(
            f"bad trigger name {name[:60]!r}: 1 to 100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    if not agent_id:
        raise BadArgument("name the agent (--agent)")
    if action not in TRIGGER_ACTIONS:
        raise BadArgument(f"unknown action {action!r}: use {', '.join(TRIGGER_ACTIONS)}")
    if action == "start" and not goal_template:
        raise BadArgument("a start trigger needs --goal-template")
    if action == "message" and not message_template:
        raise BadArgument("a message trigger needs --message-template")
    if action in ("message", "wake") and not key_field:
        raise BadArgument(f"a {action} trigger needs --key-field (which session to {action})")
    try:
        for template in (goal_template, message_template):
            if template is not None:
                templates.placeholders(template)
        if key_field is not None and len(templates.placeholders("{" + key_field + "}")) != 1:
            raise templates.TemplateError("bad key field")
    except templates.TemplateError as exc:
        raise BadArgument(str(exc)) from None


# --- webhooks ------------------------------------------------------------------------------


def same_url(a: str, b: str) -> bool:
    """Whether two webhook URLs name one receiver: scheme and host in any case, a port
    given or left at the scheme's, an empty path or "/"."""
    x, y = urlsplit(a), urlsplit(b)
    if x.scheme.lower() != y.scheme.lower() or x.hostname != y.hostname:
        return False
    default = {"http": 80, "https": 443}.get(x.scheme.lower())
    try:
        ports = (x.port or default, y.port or default)
    except ValueError:
        return a == b
    return ports[0] == ports[1] and (x.path or "/", x.query) == (y.path or "/", y.query)


MAX_WEBHOOK_URL = 2000
"""As an agent file's ``[[webhooks]]`` url takes (``schema.agents.WebhookSpec``)."""


class WebhookService:
    def __init__(self, sessionmaker: async_sessionmaker[DbSession]) -> None:
        self.db = sessionmaker

    async def add(self, agent_id: str, url: str, events: list[str], secret: str) -> WebhookRow:
        if (why := await agent_rows.new_agent_id_problem(self.db, agent_id)) is not None:
            raise BadArgument(why)
        if (why := url_problem(url)) is not None:
            raise BadArgument(f"bad webhook URL {url[:100]!r}: {why}")
        if len(url) > MAX_WEBHOOK_URL:
            raise BadArgument(
                f"bad webhook URL {url[:100]!r}...: {len(url):,} characters, over the "
                f"{MAX_WEBHOOK_URL:,} a webhook's URL may have"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadArgument(f"bad webhook URL {url[:100]!r}: an http or https URL")
        if parts.username or parts.password:
            raise BadArgument("a webhook URL must not hold credentials")
        unknown = [e for e in events if e not in WEBHOOK_EVENTS]
        if not events or unknown:
            raise BadArgument(f"events: one or more of {', '.join(WEBHOOK_EVENTS)}")
        if not secret.startswith(ENV_PREFIX) and check_name(secret) is not None:
            raise BadArgument(f"--secret: env:VAR or a stored credential's name ({secret[:60]!r})")
        # A stored credential is the same for every worker: one not set yet would make
        # every delivery fail for days. (An env:VAR is the worker's, not this shell's.)
        if not secret.startswith(ENV_PREFIX) and not await is_stored(self.db, secret):
            raise BadArgument(
                f"--secret: no stored credential named {secret!r}: set it first with "
                f"`vigil secret set {secret}`"
            )
        async with self.db.begin() as db:
            await rows.lock_agent_webhooks(db, agent_id)
            for kept in await rows.list_webhooks(db, agent_id):
                if same_url(kept.url, url):
                    # Two of one URL: each event would be posted there twice.
                    raise BadArgument(
                        f"agent {agent_id!r} has webhook {kept.id} for this URL already "
                        f"({', '.join(kept.events)}); to change it, remove it first "
                        f"(`vigil webhook remove {kept.id}`)"
                    )
            return await rows.insert_webhook(
                db, agent_id=agent_id, url=url, events=sorted(set(events)), secret_ref=secret
            )

    async def list_webhooks(self, agent_id: str | None = None) -> list[WebhookRow]:
        async with self.db() as db:
            return await rows.list_webhooks(db, agent_id)

    async def remove(self, webhook_id: int) -> None:
        async with self.db.begin() as db:
            if not await rows.delete_webhook(db, webhook_id):
                raise NotFound(f"no webhook {webhook_id}")

    async def deliveries(
        self,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        agents: frozenset[str] | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[WebhookAttempt]:
        """Attempts oldest first; ``agents`` (when not None) limits them to those agents'."""
        async with self.db() as db:
            return await rows.list_attempts(
                db,
                agent_id=agent_id,
                session_id=session_id,
                agents=sorted(agents) if agents is not None else None,
                after_id=after_id,
                limit=limit,
            )
