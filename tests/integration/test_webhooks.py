"""Outbound webhooks: a session's events reach the agent's webhooks signed, a receiver
that is down gets them later (Temporal retries the delivery activity with backoff),
and every attempt is recorded and listed by the API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer, running_api
from tests.support.cli import explain
from tests.support.llm_stub import Reply
from tests.support.sessions import until
from tests.support.webhook_receiver import Receiver, webhook_receiver
from vigil.activities.hooks import signing
from vigil.activities.record import store
from vigil.workers.client import VigilClient
from vigil.workers.client_errors import BadArgument
from vigil.workers.credentials import CredentialService
from vigil.workers.hooks import WebhookService
from vigil.workers.tokens import Scope, TokenService

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with running_api(cli.settings) as server:
        yield server


@pytest.fixture
async def vigil_client(cli: CLIStack) -> AsyncIterator[VigilClient]:
    client = await VigilClient.connect(cli.settings)
    try:
        yield client
    finally:
        await client.close()


async def add_webhook(
    cli: CLIStack,
    sessionmaker: async_sessionmaker[DbSession],
    agent: str,
    receiver: Receiver,
    events: str,
) -> str:
    """A webhook of ``agent`` to ``receiver`` (via `vigil webhook add`); its secret."""
    secret = f"whsec-{uuid.uuid4().hex}"
    credential = f"hook-{uuid.uuid4().hex[:8]}"
    await CredentialService(cli.settings, sessionmaker).set(credential, secret)
    added = cli.vigil.json(
        "webhook", "add", "--agent", agent, "--url", receiver.url, "--events", events,
        "--secret", credential,
    )  # fmt: skip
    assert added["secret_ref"] == credential and secret not in str(added)
    return secret


async def attempts(
    api: ApiServer, sessionmaker: async_sessionmaker[DbSession], **query: str
) -> list[dict[str, object]]:
    token = (await TokenService(sessionmaker).create("tester", scope=Scope.ADMIN)).token
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
        r = await http.get(
            "/v1/webhooks/deliveries", params=query, headers={"Authorization": f"Bearer {token}"}
        )
    assert r.status_code == 200, r.text
    rows: list[dict[str, object]] = r.json()["items"]
    return rows


async def ended(sessionmaker: async_sessionmaker[DbSession], sid: str) -> bool:
    async with sessionmaker() as db:
        row = await store.get_session(db, sid)
    return row is not None and row.finished_at is not None


async def test_session_ended_is_delivered_with_a_signature_the_receiver_can_check(
    cli: CLIStack,
    api: ApiServer,
    vigil_client: VigilClient,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent = f"agent-hook-{uuid.uuid4().hex[:6]}"
    with webhook_receiver() as receiver:
        secret = await add_webhook(cli, sessionmaker, agent, receiver, "session_ended")
        started = await vigil_client.start_session(agent, cli.plan(Reply.text("all done")))
        sid = started.id
        (got,) = await until(receiver.delivered, within=60, what="session_ended delivered")
    headers = got.headers
    ts, sig = headers["x-vigil-timestamp"], headers["x-vigil-signature"]
    assert signing.check(secret, ts, sig, got.body) is None
    assert signing.check("another secret", ts, sig, got.body) is not None
    body = got.json()
    assert body["event"] == headers["x-vigil-event"] == "session_ended"
    assert body["session_id"] == sid and body["agent_id"] == agent
    first_id = body["delivery_id"]
    assert first_id == headers["x-vigil-delivery"]
    assert first_id.startswith(f"{sid}:") and first_id.endswith(":ended")
    assert body["data"]["status"] == "completed" and body["data"]["summary"] == "all done"
    await until(lambda: ended(sessionmaker, sid), within=30, what="session recorded as ended")
    (row,) = await attempts(api, sessionmaker, session=sid)
    assert row["outcome"] == "delivered" and row["status_code"] == 200
    assert row["event"] == "session_ended" and row["attempt"] == 1 and row["url"] == receiver.url

    # Erased and started again under its id: its events are new deliveries, with new ids
    # (the same ones were taken as repeats by a receiver that drops them).
    cli.vigil.ok("erase", "--session", sid, "--yes")
    with webhook_receiver() as again:
        await add_webhook(cli, sessionmaker, agent, again, "session_ended")
        await vigil_client.start_session(agent, cli.plan(Reply.text("done again")), session_id=sid)
        (second,) = await until(again.delivered, within=60, what="the new session_ended")
    assert second.json()["data"]["summary"] == "done again"
    assert second.json()["delivery_id"] != first_id


async def test_a_receiver_down_for_a_while_gets_the_events_later_and_every_attempt_is_recorded(
    cli: CLIStack,
    api: ApiServer,
    vigil_client: VigilClient,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent = f"agent-hook-{uuid.uuid4().hex[:6]}"
    plan = cli.plan(Reply.tool_call("ask_human", {"question": "Ship it?"}), Reply.text("shipped"))
    with webhook_receiver(fail_first=2) as receiver:
        await add_webhook(cli, sessionmaker, agent, receiver, "human_asked,session_ended")
        sid = (await vigil_client.start_session(agent, plan)).id
        (asked,) = await until(receiver.delivered, within=60, what="human_asked delivered")
        assert asked.json()["event"] == "human_asked"
        assert asked.json()["data"]["question"] == "Ship it?"
        # The session waited for its human all along, whatever the receiver did.
        assert (await vigil_client.state(sid)).status.value == "waiting_human"
        await vigil_client.say(sid, "yes", by="alice")
        await until(
            lambda: len(receiver.delivered()) == 2, within=60, what="session_ended delivered"
        )
    assert [r.answered for r in receiver.requests] == [503, 503, 200, 200]
    rows = await attempts(api, sessionmaker, agent=agent)
    asked_rows = [
        (r["attempt"], r["outcome"], r["status_code"]) for r in rows if r["event"] == "human_asked"
    ]
    assert asked_rows == [(1, "failed", 503), (2, "failed", 503), (3, "delivered", 200)]
    assert all("HTTP 503" in str(r["error"]) for r in rows if r["outcome"] == "failed")
    ended_rows = [(r["attempt"], r["outcome"]) for r in rows if r["event"] == "session_ended"]
    assert ended_rows == [(1, "delivered")]
    assert {r["session_id"] for r in rows} == {sid}
    assert await attempts(api, sessionmaker, agent=f"{agent}-other") == []


async def test_an_agent_files_webhook_hears_of_the_approval_and_a_dead_one_holds_nothing_up(
    cli: CLIStack,
    api: ApiServer,
    vigil_client: VigilClient,
    sessionmaker: async_sessionmaker[DbSession],
    tmp_path: Path,
) -> None:
    agent = f"agent-hookfile-{uuid.uuid4().hex[:6]}"
    credential = f"hook-{uuid.uuid4().hex[:8]}"
    await CredentialService(cli.settings, sessionmaker).set(credential, "whsec-file")
    with webhook_receiver() as receiver:
        (tmp_path / f"{agent}.toml").write_text(
            f'name = "{agent}"\n'
            '[[tools]]\nname = "http_fetch"\napproval = "always"\n'
            f'[[webhooks]]\nurl = "{receiver.url}"\nevents = ["approval_requested"]\n'
            f'secret = "{credential}"\n'
        )
        cli.vigil.json("agent", "apply", str(tmp_path / f"{agent}.toml"))
        # Nobody listens on port 1: every attempt fails, and the session must not care.
        dead = cli.vigil.json(
            "webhook", "add", "--agent", agent, "--url", "http://127.0.0.1:1/hook",
            "--events", "approval_requested,session_ended", "--secret", credential,
        )  # fmt: skip
        plan = cli.plan(
            Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/page"}), Reply.text("fetched")
        )
        sid = (await vigil_client.start_session(agent, plan)).id
        (got,) = await until(receiver.delivered, within=60, what="approval_requested delivered")
        data = got.json()["data"]
        assert got.json()["event"] == "approval_requested" and data["tool"] == "http_fetch"
        assert signing.check("whsec-file", got.headers["x-vigil-timestamp"],
                             got.headers["x-vigil-signature"], got.body) is None  # fmt: skip
        await vigil_client.approve(sid, data["approval_id"], by="alice")
        result = await vigil_client.result(sid, timeout=60)
        assert result is not None and result.status.value == "completed"
        assert len(receiver.requests) == 1  # session_ended is not this webhook's event
    rows = await attempts(api, sessionmaker, session=sid)
    mine = [r for r in rows if r["webhook"] != f"w{dead['id']}"]
    assert [(r["webhook"], r["event"], r["outcome"]) for r in mine] == [
        ("v1.0", "approval_requested", "delivered")
    ]
    dead_rows = [r for r in rows if r["webhook"] == f"w{dead['id']}"]
    assert dead_rows and all(r["outcome"] == "failed" for r in dead_rows)
    assert {r["event"] for r in dead_rows} <= {"approval_requested", "session_ended"}
    assert all("ConnectError" in str(r["error"]) for r in dead_rows)
    cli.vigil.ok("webhook", "remove", str(dead["id"]))


async def test_events_given_in_several_options_all_count(
    cli: CLIStack, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """`--events a --events b` (before: only b was kept, silently) and commas alike."""
    credential = f"hook-{uuid.uuid4().hex[:8]}"
    await CredentialService(cli.settings, sessionmaker).set(credential, "whsec-several")
    added = cli.vigil.json(
        "webhook", "add", "--agent", f"agent-{uuid.uuid4().hex[:6]}",
        "--url", "http://127.0.0.1:1/hook", "--secret", credential,
        "--events", "session_ended", "--events", "approval_requested,human_asked",
    )  # fmt: skip
    assert sorted(added["events"]) == ["approval_requested", "human_asked", "session_ended"]
    cli.vigil.ok("webhook", "remove", str(added["id"]))


async def test_a_receiver_that_hangs_holds_up_none_of_the_other_webhooks(
    cli: CLIStack,
    api: ApiServer,
    vigil_client: VigilClient,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent = f"agent-hook-{uuid.uuid4().hex[:6]}"
    with webhook_receiver(hang=True) as hanging, webhook_receiver() as receiver:
        # The hanging webhook is added first, so it is the first one an attempt posts to.
        await add_webhook(cli, sessionmaker, agent, hanging, "session_ended")
        await add_webhook(cli, sessionmaker, agent, receiver, "session_ended")
        sid = (await vigil_client.start_session(agent, cli.plan(Reply.text("done")))).id
        (got,) = await until(receiver.delivered, within=60, what="session_ended delivered")
        assert got.json()["session_id"] == sid
        # The other receiver got the event while the hanging one still held its request:
        # no attempt of the hanging webhook's had ended (it ends at the POST's timeout).
        await until(lambda: hanging.held == 1, within=30, what="the hanging receiver's request")
        rows = await attempts(api, sessionmaker, session=sid)
        assert [r["url"] for r in rows if r["outcome"] != "delivered"] == []

        async def timed_out() -> list[dict[str, object]]:
            rows = await attempts(api, sessionmaker, session=sid)
            return [r for r in rows if r["url"] == hanging.url]

        (gave_up, *_) = await until(timed_out, within=60, what="the hanging POST timed out")
        assert gave_up["outcome"] == "failed" and "Timeout" in str(gave_up["error"])
    rows = await attempts(api, sessionmaker, session=sid)
    delivered = [(r["attempt"], r["outcome"]) for r in rows if r["url"] == receiver.url]
    assert delivered == [(1, "delivered")] and len(receiver.requests) == 1


async def test_a_webhook_is_never_sent_to_a_link_local_address(
    cli: CLIStack,
    api: ApiServer,
    vigil_client: VigilClient,
    sessionmaker: async_sessionmaker[DbSession],
    tmp_path: Path,
) -> None:
    """Cloud instance metadata answers on a link-local address (169.254.169.254): a
    webhook there would post to it, and its answer would be kept in the delivery's record
    for whoever may list deliveries."""
    agent = f"agent-hook-{uuid.uuid4().hex[:6]}"
    credential = f"hook-{uuid.uuid4().hex[:8]}"
    await CredentialService(cli.settings, sessionmaker).set(credential, "whsec-x")
    for url, shown in (
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local"),
        ("http://[fe80::1]:8080/hook", "fe80::1 is a link-local"),
        ("http://[::ffff:169.254.169.254]/hook", "169.254.169.254 is a link-local"),
        ("http://224.0.0.1/hook", "224.0.0.1 is a multicast"),
        ("http://[fd00:ec2::254]/latest", "fd00:ec2::254 is a cloud metadata"),
        ("http://[64:ff9b::a9fe:a9fe]/", "169.254.169.254 is a link-local"),  # NAT64
        # A network's own NAT64 prefix: its IPv4 address may sit in the middle bits.
        ("http://[64:ff9b:1:a9fe:a9:fe00:808:808]/", "is a local NAT64"),
        ("http://[2002:a9fe:a9fe::]/", "169.254.169.254 is a link-local"),  # 6to4
        ("http://0.0.0.0:8080/", "0.0.0.0 is an unspecified"),
        # A name's root dot: taken, then each POST failed to resolve and was retried.
        ("http://169.254.169.254./x", "169.254.169.254 is a link-local"),
    ):
        refused = cli.vigil(
            "webhook", "add", "--agent", agent, "--url", url, "--events", "session_ended",
            "--secret", credential,
        )  # fmt: skip
        assert refused.returncode == 2, explain(refused)
        assert f"{shown} address: no webhook is sent there" in refused.stderr, refused.stderr
    for url in ("http://0251.0376.0251.0376/hook", "http://[zz]/hook",
                "http://\uff11\uff16\uff19.254.169.254/", "http://127.0.0.1:99999/",
                "http://127.0.0.1:65536/hook", "http://127.0.0.1:0/hook"):  # fmt: skip
        invalid = cli.vigil(
            "webhook", "add", "--agent", agent, "--url", url, "--events", "session_ended",
            "--secret", credential,
        )  # fmt: skip
        assert invalid.returncode == 2 and "bad webhook URL" in invalid.stderr, explain(invalid)
    # Too long: it said "an http or https URL", which it is.
    long_url = "https://hooks.example.com/" + "p" * 9000
    too_long = cli.vigil(
        "webhook", "add", "--agent", agent, "--url", long_url, "--events", "session_ended",
        "--secret", credential,
    )  # fmt: skip
    assert too_long.returncode == 2, explain(too_long)
    said = " ".join(too_long.stderr.split())
    assert "9,026 characters, over the 2,000 a webhook's URL may have" in said, said
    (tmp_path / f"{agent}.toml").write_text(
        f'name = "{agent}"\n[[webhooks]]\nurl = "http://169.254.169.254/hook"\n'
        f'events = ["session_ended"]\nsecret = "{credential}"\n'
    )
    applied = cli.vigil("agent", "apply", str(tmp_path / f"{agent}.toml"))
    assert applied.returncode != 0, explain(applied)
    assert "169.254.169.254 is a link-local address" in applied.stderr, applied.stderr
    # A name that resolves to one (here a number the resolver reads as 169.254.169.254)
    # is taken when added, and every delivery to it is refused before it connects.
    named = cli.vigil.json(
        "webhook", "add", "--agent", agent, "--url", "http://0xa9fea9fe/hook",
        "--events", "session_ended", "--secret", credential,
    )  # fmt: skip
    # A port no socket has, in a webhook kept before it was refused when added: the
    # delivery refuses it and records so (it failed every attempt unrecorded).
    async with sessionmaker.begin() as db:
        bad_port = (
            await db.execute(
                text(
                    "INSERT INTO webhooks (agent_id, url, events, secret_ref) VALUES "
                    "(:a, 'http://127.0.0.1:99999/hook', '{session_ended}', :s) RETURNING id"
                ),
                {"a": agent, "s": credential},
            )
        ).scalar_one()
    sid = (await vigil_client.start_session(agent, cli.plan(Reply.text("done")))).id

    async def port_rows() -> list[dict[str, object]]:
        rows = await attempts(api, sessionmaker, session=sid)
        return [r for r in rows if r["webhook"] == f"w{bad_port}"]

    (row,) = await until(port_rows, within=60, what="the delivery to a bad port refused")
    assert (row["outcome"], row["attempt"]) == ("rejected", 1)
    assert row["error"] == "not sent: not a valid URL: port 99999 is outside 1-65535"

    async def refused_rows() -> list[dict[str, object]]:
        rows = await attempts(api, sessionmaker, session=sid)
        return [r for r in rows if r["webhook"] == f"w{named['id']}"]

    (row,) = await until(refused_rows, within=60, what="the delivery refused")
    assert (row["outcome"], row["status_code"], row["attempt"]) == ("rejected", None, 1)
    assert row["error"] == (
        "not sent: 0xa9fea9fe resolves to 169.254.169.254, a link-local address: "
        "no webhook is sent there"
    )
    cli.vigil.ok("webhook", "remove", str(named["id"]))


async def test_one_url_added_twice_at_once_or_spelled_otherwise_is_one_webhook(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """Adds of one URL at the same moment all found none and all went in (each
    event then posted twice), and the same receiver spelled with another case or its
    default port was taken as a new one."""
    agent = f"racing-{uuid.uuid4().hex[:8]}"
    hooks = WebhookService(sessionmaker)
    url = "https://hooks.example.com/in"
    for _ in range(3):  # rounds, as the adds may come one after the other by luck
        added = await asyncio.gather(
            *[hooks.add(agent, url, ["session_ended"], "env:PATH") for _ in range(4)],
            return_exceptions=True,
        )
        refused = [a for a in added if isinstance(a, BadArgument)]
        assert len(refused) == 3, added
        (kept,) = await hooks.list_webhooks(agent)
        for spelled in ("HTTPS://Hooks.Example.COM:443/in", "https://hooks.example.com:443/in"):
            with pytest.raises(BadArgument, match=f"has webhook {kept.id} for this URL"):
                await hooks.add(agent, spelled, ["session_ended"], "env:PATH")
        await hooks.remove(kept.id)
    # Another path, port or scheme is another receiver.
    for other in ("https://hooks.example.com/in/", "https://hooks.example.com:8443/in"):
        await hooks.add(agent, other, ["session_ended"], "env:PATH")
    assert len(await hooks.list_webhooks(agent)) == 2
