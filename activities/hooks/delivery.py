"""Delivering a session's events to webhooks: the ``vigil.deliver_webhooks`` activity.

The webhooks of an event are read from the configuration at each attempt (the agent
file's ``[[webhooks]]`` of the session's pinned version, and those added with `vigil
webhook add`): the workflow names no URL, so only configured URLs are ever called.
Each attempt POSTs the signed JSON body (``activities.hooks.signing``) to every webhook
not yet settled for this delivery, all at once, and records each outcome in
``webhook_deliveries`` as it comes (a receiver that hangs holds up none of the others);
when one failed, the activity fails and Temporal retries it with backoff (the others are
not sent again). A receiver's 4xx other than 408/429 refuses the delivery for good, and so
does a host that is or resolves to a link-local address (cloud metadata lives there),
checked as each POST connects, and connected to at the address checked
(``activities.hooks.urls.webhook_client``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from vigil.activities.agents.runtime import AgentVersions
from vigil.activities.credentials import CredentialError
from vigil.activities.hooks import signing
from vigil.activities.hooks.urls import WebhookRefused, url_problem
from vigil.activities.record import erasure as erasure_rows
from vigil.activities.record import hooks as hook_rows
from vigil.activities.record.lean import engine_of, lean_statements
from vigil.schema import names
from vigil.schema.agents import AgentSpec, WebhookSpec
from vigil.schema.hooks import NotifyInput, NotifyOutput

POST_TIMEOUT_SECONDS = 10.0
USER_AGENT = "vigil-webhooks/1"
RETRYABLE_STATUS = {408, 429}


@dataclass(frozen=True)
class Target:
    key: str
    """``v<version>.<index>`` for an agent file's webhook, ``w<id>`` for an added one."""
    url: str
    events: list[str]
    secret_ref: str


def spec_targets(version: int | None, spec: dict[str, Any] | None) -> list[Target]:
    """The webhooks an agent version's spec (as stored JSON) names."""
    if version is None or not spec or not spec.get("webhooks"):
        return []
    return hook_targets(version, [WebhookSpec.model_validate(w) for w in spec["webhooks"]])


def hook_targets(version: int | None, hooks: list[WebhookSpec] | None) -> list[Target]:
    """The targets of a version's validated webhooks."""
    if version is None or not hooks:
        return []
    return [Target(f"v{version}.{i}", h.url, list(h.events), h.secret) for i, h in enumerate(hooks)]


class WebhookTargets:
    """Which webhooks an agent has: its pinned version's and the added ones."""

    def __init__(
        self, sessionmaker: async_sessionmaker[DbSession], versions: AgentVersions
    ) -> None:
        self._sessionmaker = sessionmaker
        self._versions = versions

    async def of(
        self, agent_id: str, version: int | None, spec: AgentSpec | None = None
    ) -> list[Target]:
        if spec is not None:
            from_spec = hook_targets(version, spec.webhooks)  # validated already
        elif version is not None:
            row = await self._versions.get(agent_id, version)
            from_spec = spec_targets(version, row.spec if row is not None else None)
        else:
            from_spec = []
        # One statement on a pooled connection as the login role: no session, no
        # transaction around it (a session start reads this).
        async with lean_statements(engine_of(self._sessionmaker)) as db:
            added = await hook_rows.list_webhooks(db, agent_id)
        return from_spec + [Target(f"w{w.id}", w.url, w.events, w.secret_ref) for w in added]

    async def events(self, agent_id: str, version: int | None, spec: AgentSpec | None) -> list[str]:
        """The events some webhook of the agent listens to, sorted."""
        targets = await self.of(agent_id, version, spec)
        return sorted({e for t in targets for e in t.events})


def body_of(arg: NotifyInput) -> bytes:
    return json.dumps(
        {
            "delivery_id": arg.delivery_id,
            "event": arg.event,
            "session_id": arg.session_id,
            "agent_id": arg.agent_id,
            "agent_version": arg.agent_version,
            "occurred_at": arg.occurred_at.isoformat(),
            "data": arg.data,
        },
        sort_keys=True,
        ensure_ascii=False,
    ).encode("utf-8")


class WebhookActivities:
    """The delivery activity; built by the worker with its clients."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[DbSession],
        targets: WebhookTargets,
        resolve_secret: Callable[[str], Awaitable[str]],
        http: httpx.AsyncClient,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._targets = targets
        self._resolve = resolve_secret
        self._http = http

    def all(self) -> list[Callable[..., Any]]:
        return [self.deliver_webhooks]

    async def _post(
        self, target: Target, body: bytes, arg: NotifyInput
    ) -> tuple[str, int | None, str | None]:
        """(outcome, HTTP status, error) of one POST."""
        try:
            secret = await self._resolve(target.secret_ref)
        except CredentialError as exc:
            return "failed", None, str(exc)  # may be set later: retried
        if (refused := url_problem(target.url)) is not None:
            return "rejected", None, f"not sent: {refused}"
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            signing.DELIVERY_HEADER: arg.delivery_id,
            signing.EVENT_HEADER: arg.event,
            **signing.signed_headers(secret, body),
        }
        try:
            response = await self._http.post(
                target.url,
                content=body,
                headers=headers,
                timeout=POST_TIMEOUT_SECONDS,
                follow_redirects=False,
            )
        except WebhookRefused as exc:  # an address its host resolved to, when connecting
            return "rejected", None, f"not sent: {exc}"
        except httpx.InvalidURL as exc:
            return "rejected", None, f"not sent: not a valid URL: {str(exc)[:300]}"
        except httpx.TimeoutException as exc:
            waited = f"no answer within {POST_TIMEOUT_SECONDS:g} s"
            return "failed", None, f"{type(exc).__name__}: {waited}"
        except httpx.HTTPError as exc:
            return "failed", None, f"{type(exc).__name__}: {str(exc)[:300]}"
        except Exception as exc:  # recorded and retried, as a failed POST is
            # Not httpx's own (a connect that failed in its task group): the attempt is
            # recorded all the same, naming the cause rather than the group around it.
            while isinstance(exc, ExceptionGroup) and exc.exceptions:
                exc = exc.exceptions[0]
            return "failed", None, f"{type(exc).__name__}: {str(exc)[:300]}"
        code = response.status_code
        if 200 <= code < 300:
            return "delivered", code, None
        reason = f"HTTP {code}: {response.text[:200]}"
        if code >= 500 or code in RETRYABLE_STATUS:
            return "failed", code, reason
        return "rejected", code, reason

    async def _erased(self, arg: NotifyInput) -> bool:
        async with self._sessionmaker() as db:
            return await erasure_rows.erased_since(
                db, arg.session_id, arg.agent_id, arg.occurred_at
            )

    async def _deliver(
        self, target: Target, body: bytes, arg: NotifyInput
    ) -> tuple[str, str] | None:
        """POST to one webhook and record the attempt: (outcome, what went wrong), None when the
        session was erased meanwhile (nothing is kept of it then)."""
        outcome, code, error = await self._post(target, body, arg)
        async with self._sessionmaker.begin() as db:
            await erasure_rows.held_from_erasure(db, arg.agent_id, arg.session_id)
            if await erasure_rows.erased_since(db, arg.session_id, arg.agent_id, arg.occurred_at):
                return None  # erased while it was posted: nothing is kept of it
            await hook_rows.record_attempt(
                db,
                delivery_id=arg.delivery_id,
                webhook=target.key,
                agent_id=arg.agent_id,
                session_id=arg.session_id,
                event=arg.event,
                url=target.url,
                attempt=activity.info().attempt,
                outcome=outcome,
                status_code=code,
                error=error,
            )
        return outcome, f"{target.key}: {error}"

    @activity.defn(name=names.ACT_DELIVER_WEBHOOKS)
    async def deliver_webhooks(self, arg: NotifyInput) -> NotifyOutput:
        targets = [
            t
            for t in await self._targets.of(arg.agent_id, arg.agent_version)
            if arg.event in t.events
        ]
        async with self._sessionmaker() as db:
            settled = await hook_rows.settled_webhooks(db, arg.delivery_id)
        pending = [t for t in targets if t.key not in settled]
        out = NotifyOutput()
        if not pending or await self._erased(arg):
            return out  # erased meanwhile: what it would tell is no one's any more
        # Every webhook at once, each recorded as it answers: a receiver that hangs until
        # the POST's timeout holds up none of the others.
        body = body_of(arg)
        # Each POST ends inside this attempt, whatever another's did: none is left
        # running to answer after the attempt was retried.
        outcomes = await asyncio.gather(
            *(self._deliver(t, body, arg) for t in pending), return_exceptions=True
        )
        failed: list[str] = []
        for target, got in zip(pending, outcomes, strict=True):
            if isinstance(got, BaseException):
                if not isinstance(got, Exception):
                    raise got  # cancelled: the attempt ends
                failed.append(f"{target.key}: {type(got).__name__}: {str(got)[:200]}")
                continue
            if got is None:
                return out
            outcome, error = got
            if outcome == "delivered":
                out.delivered += 1
            elif outcome == "rejected":
                out.rejected += 1
            else:
                failed.append(error)
        if failed:
            raise ApplicationError(
                f"{len(failed)} webhook(s) did not take {arg.event}: " + "; ".join(failed)[:500],
                type=names.ERR_WEBHOOK_UNDELIVERED,
                # Expected while a receiver is down: retried, recorded, logged without a trace.
                category=ApplicationErrorCategory.BENIGN,
            )
        return out
