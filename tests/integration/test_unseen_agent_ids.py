"""An agent id holding a character that cannot be seen is refused wherever one is named.

``o\u200bps`` (a zero-width space inside) was shown as ``ops`` by `token list` and
`retention show`, and taken by every command with only a warning or none: a token, a
retention policy or memories for an agent that reads as another, and sessions started
under it. Controls, format characters (zero-width, the soft hyphen, bidi overrides) and
line separators are refused as they are in artifact names.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.api import ApiServer, running_api
from tests.support.cli import explain, record_cli
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
        ]  # fmt: skip
        for args, done in zip(calls, vigil.many(*calls), strict=True):
            assert done.returncode == 2, explain(done)
            said = " ".join(done.stderr.split())
            assert f"holds {unseen}" in said and "an agent id holds no control" in said, (
                args,
                said,
            )


def test_the_api_refuses_memories_for_an_agent_id_no_agent_can_have(api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as http:
        for agent, unseen in UNSEEN.items():
            r = http.post(f"/v1/agents/{quote(agent, safe='')}/memory", json={"content": "x"})
            assert r.status_code == 422, (agent, r.status_code, r.text)
            assert f"holds {unseen}" in r.json()["error"]["message"]
