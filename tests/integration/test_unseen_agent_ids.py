"""An agent id holding a character that cannot be seen is refused wherever one is named.

``o\u200bps`` (a zero-width space inside) was shown as ``ops`` by `token list` and
`retention show`, and taken by every command with only a warning or none: a token, a
retention policy or memories for an agent that reads as another, and sessions started
under it. Controls, format characters (zero-width, the soft hyphen, bidi overrides) and
line separators are refused as they are in artifact names.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.api import ApiServer, running_api
from tests.support.cli import explain, known_agent, record_cli
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration

UNSEEN = {
    "o\u200bps": "U+200B ZERO WIDTH SPACE",
    "\u00adops": "U+00AD SOFT HYPHEN",
    "\u202eops": "U+202E RIGHT-TO-LEFT OVERRIDE",
    "x\x1b": "U+001B",
    "a\nb": "U+000A",
}


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[ApiServer]:
    with running_api(settings) as server:
        yield server


def test_every_command_that_names_an_agent_refuses_an_unseen_character(
    stack: Stack, database_url: str, tmp_path: Path
) -> None:
    vigil = record_cli(stack.settings.resolved_state_dir, database_url, tmp_path)
    for agent, unseen in UNSEEN.items():
        calls = [
            ("start", "a goal", "--agent", agent, "--undefined-agent"),
            ("token", "create", "--owner", "bo", "--agent", agent, "--allow-unknown-agent"),
            ("retention", "set", "--agent", agent, "--archive-after", "30d"),
            ("memory", "add", "a fact", "--agent", agent),
            ("webhook", "add", "--agent", agent, "--url", "https://example.com/h",
             "--events", "session_ended", "--secret", "env:NOTHING"),
            ("trigger", "create", "t-unseen", "--agent", agent, "--action", "start",
             "--goal-template", "Do {x}"),
            ("schedule", "create", "s-unseen", "--goal", "g", "--every", "1h", "--agent", agent),
            ("message", agent, "hello", "--key", "k", "--undefined-agent"),
        ]  # fmt: skip
        for args, done in zip(calls, vigil.many(*calls), strict=True):
            assert done.returncode == 2, explain(done)
            said = " ".join(done.stderr.split())
            assert f"holds {unseen}" in said and "which an agent id may not hold" in said, (
                args,
                said,
            )


def test_the_api_refuses_memories_for_an_agent_id_no_agent_can_have(api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as http:
        for agent, unseen in UNSEEN.items():
            r = http.post(f"/v1/agents/{quote(agent, safe='')}/memory", json={"content": "x"})
            assert r.status_code == 422, (agent, r.status_code, r.text)
            assert f"holds {unseen}" in r.json()["error"]["message"]


def test_an_agent_the_record_knows_keeps_its_id_and_joiners_are_taken(
    stack: Stack, database_url: str, tmp_path: Path
) -> None:
    """An agent an older build took under such an id keeps working under it (its tokens,
    memories); the zero-width joiner spells emoji sequences and Persian words."""
    vigil = record_cli(stack.settings.resolved_state_dir, database_url, tmp_path)
    old = f"o\u200bps-{uuid.uuid4().hex[:6]}"
    known_agent(database_url, old)
    assert vigil.json("token", "create", "--owner", "bo", "--agent", old)["agents"] == [old]
    vigil.ok("memory", "add", "still remembered", "--agent", old)
    joined = f"dev-\U0001f469\u200d\U0001f4bb-{uuid.uuid4().hex[:6]}"
    vigil.ok("memory", "add", "a fact", "--agent", joined)


def test_memory_and_webhook_commands_refuse_an_agent_that_reads_as_a_known_one(
    stack: Stack, database_url: str, tmp_path: Path
) -> None:
    """`vigil memory add --agent Helper` (the agent is `helper`) stored the memory for an
    agent nothing runs, and so did a webhook and a retention policy; a token for it was
    refused with "did you mean". Each says so now, and warns of an agent nobody knows."""
    vigil = record_cli(stack.settings.resolved_state_dir, database_url, tmp_path)
    known = f"helper-{uuid.uuid4().hex[:6]}"
    known_agent(database_url, known)
    lookalike = known.capitalize()
    hook = ("--url", "https://example.com/h", "--events", "session_ended")
    for args in (
        ("memory", "add", "a fact", "--agent", lookalike),
        ("webhook", "add", "--agent", lookalike, *hook, "--secret", "env:PATH"),
        # A retention policy under it would archive and erase nothing, unsaid.
        ("retention", "set", "--agent", lookalike, "--erase-after", "365d"),
    ):
        done = vigil(*args)
        assert done.returncode == 2, explain(done)
        said = " ".join(done.stderr.split())
        assert f"no agent {lookalike!r} is known" in said, said
        assert f"did you mean {known!r}?" in said and "--allow-unknown-agent" in said, said
    assert vigil.json("memory", "search", "fact", "--agent", lookalike) == []
    # One that reads as none: taken, with a warning.
    typo = f"hlpr-{uuid.uuid4().hex[:6]}"
    added = vigil("memory", "add", "a fact", "--agent", typo)
    assert added.returncode == 0, explain(added)
    assert f"warning: no agent {typo!r} is known" in " ".join(added.stderr.split())
    kept = vigil("retention", "set", "--agent", typo, "--erase-after", "365d")
    assert kept.returncode == 0, explain(kept)
    assert f"warning: no agent {typo!r} is known" in " ".join(kept.stderr.split())
    forced = vigil("memory", "add", "a fact", "--agent", lookalike, "--allow-unknown-agent")
    assert forced.returncode == 0, explain(forced)
    # The agent itself: no warning.
    assert "warning" not in vigil.ok("memory", "add", "a fact", "--agent", known).stderr


def test_a_session_of_an_undefined_agent_that_reads_as_a_known_one_is_refused(
    stack: Stack, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    """`vigil start --agent ops --undefined-agent` with a Cyrillic o (the agent is `ops`) started
    a session listed as if it were `ops`'s, and so did `Ops`, a keyed message and the API
    where undefined agents are allowed; the next token for it was then taken silently, as
    the record knew it. Each is refused now, naming the agent it reads as."""
    vigil = record_cli(stack.settings.resolved_state_dir, database_url, tmp_path)
    known = f"ops-{uuid.uuid4().hex[:6]}"
    known_agent(database_url, known)
    cyrillic = "\u043e" + known[1:]
    for args in (
        ("start", "a goal", "--agent", cyrillic, "--undefined-agent"),
        ("start", "a goal", "--agent", known.upper(), "--undefined-agent"),
        ("message", cyrillic, "hello", "--key", "k", "--undefined-agent"),
    ):
        done = vigil(*args)
        assert done.returncode == 2, explain(done)
        said = " ".join(done.stderr.split())
        assert f"did you mean {known!r}?" in said and "vigil agent apply" in said, (args, said)
    assert vigil.json("list", "--agent", cyrillic) == []
    allowing = settings.model_copy(update={"allow_undefined_agents": True})
    with running_api(allowing) as api, api.client(api.token(Scope.ADMIN)) as http:
        r = http.post("/v1/sessions", json={"agent": cyrillic, "goal": "g"})
        assert r.status_code == 422, r.text
        assert f"did you mean {known!r}?" in r.json()["error"]["message"]
        # A token made for the look-alike alone learns nothing of the agent it reads as,
        # and starts its own agent's sessions (it was made so on purpose).
        with api.client(api.token(Scope.CONTROL, agents=[cyrillic])) as theirs:
            own = theirs.post("/v1/sessions", json={"agent": cyrillic, "goal": "g"})
            assert own.status_code == 201, own.text
            with api.client(api.token(Scope.ADMIN)) as admin:
                admin.post(f"/v1/sessions/{own.json()['id']}/cancel", json={})


def test_an_empty_agent_id_makes_no_token_for_every_agent(
    stack: Stack, database_url: str, tmp_path: Path
) -> None:
    """`token create --agent ""` (a script's `--agent "$AGENT"`, the variable unset) made a
    token covering every agent: the empty id was dropped, leaving none named."""
    vigil = record_cli(stack.settings.resolved_state_dir, database_url, tmp_path)
    owner = f"empty-{uuid.uuid4().hex[:6]}"
    calls = [
        ("token", "create", "--owner", owner, "--scope", "admin", "--agent", given)
        for given in ("", " ", "ops,", ",")
    ]
    for args, done in zip(calls, vigil.many(*calls), strict=True):
        assert done.returncode == 2, (args, explain(done))
        assert "empty agent id" in " ".join(done.stderr.split()), (args, done.stderr)
    listed = vigil.json("token", "list")
    assert [t for t in listed if t["owner"] == owner] == []
