"""`vigil secret set/list/delete`: the value goes in through standard input, is stored
sealed (not as text), and is never printed by any command; a worker resolves it for the
model connection that names it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.support.cli import Vigil, cli_env
from vigil.activities.credentials import (
    CredentialError,
    CredentialResolver,
    SecretBox,
    new_key_text,
    parse_key,
)
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration


KEY = new_key_text()


@pytest.fixture(scope="module")
def vigil(stack: Stack, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Vigil:
    tmp = tmp_path_factory.mktemp("secrets")
    return Vigil(
        cli_env(
            database_url=database_url,
            state_dir=stack.settings.resolved_state_dir,
            task_queue="unused",
            model_url="http://127.0.0.1:9/v1",
            artifact_dir=tmp / "artifacts",
            VIGIL_SECRET_KEY=KEY,
        )
    )


def outputs(*runs: object) -> str:
    return "\n".join(f"{r.stdout}\n{r.stderr}" for r in runs)  # type: ignore[attr-defined]


async def test_set_list_delete_never_show_the_value(
    vigil: Vigil, sessionmaker: async_sessionmaker[DbSession], tmp_path: Path
) -> None:
    name = f"api-key-{uuid.uuid4().hex[:8]}"
    value = f"sk-{uuid.uuid4().hex}"
    created = vigil("secret", "set", name, "--json", input=value + "\n")
    assert created.returncode == 0, created.stderr
    replaced = vigil("secret", "set", name, input=value + "x\n")
    assert replaced.returncode == 0 and f"credential {name} replaced" in replaced.stdout
    listed = vigil("secret", "list", "--json")
    readable = vigil("secret", "list")
    assert name in listed.stdout and name in readable.stdout
    assert value not in outputs(created, replaced, listed, readable)

    async with sessionmaker() as db:
        row = (
            await db.execute(
                text("SELECT ciphertext, key_id FROM credentials WHERE name = :n"), {"n": name}
            )
        ).one()
    assert value.encode() not in bytes(row.ciphertext)

    empty = vigil("secret", "set", name, input="")
    assert empty.returncode == 2 and "no value given" in empty.stderr
    bad = vigil("secret", "set", "env:HOME", input="x\n")
    assert bad.returncode == 2 and "names an environment variable" in bad.stderr

    deleted = vigil("secret", "delete", name)
    assert deleted.returncode == 0
    again = vigil("secret", "delete", name)
    assert again.returncode == 4 and f"no credential named {name!r}" in again.stderr
    assert name not in vigil("secret", "list").stdout


async def test_a_worker_opens_it_with_the_same_key_only(
    vigil: Vigil, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    name = f"sealed-{uuid.uuid4().hex[:8]}"
    assert vigil("secret", "set", name, input="open sesame\n").returncode == 0
    same = CredentialResolver(sessionmaker, SecretBox(parse_key(KEY)))
    assert await same.resolve(name) == "open sesame"
    other = CredentialResolver(sessionmaker, SecretBox(parse_key(new_key_text())))
    with pytest.raises(CredentialError, match=f"credential '{name}' was sealed with another"):
        await other.resolve(name)
    keyless = CredentialResolver(sessionmaker, None)
    with pytest.raises(CredentialError, match="VIGIL_SECRET_KEY is not set"):
        await keyless.resolve(name)
