"""`vigil agent apply` stores each change as a new immutable version (an unchanged file
adds none); list, show, history and diff read them back; a bad file is refused with its
line and field, and nothing is stored."""

from __future__ import annotations

import getpass
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.support.cli import Vigil, cli_env
from vigil.activities.record import agents as agent_rows
from vigil.activities.record.rls import acting_for
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vigil(stack: Stack, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Vigil:
    """The CLI against the test database (no worker needed: agents live in PostgreSQL)."""
    tmp = tmp_path_factory.mktemp("agents")
    return Vigil(
        cli_env(
            database_url=database_url,
            state_dir=stack.settings.resolved_state_dir,
            task_queue="unused",
            model_url="http://127.0.0.1:9/v1",
            artifact_dir=tmp / "artifacts",
        )
    )


def agent_file(folder: Path, name: str, *, steps: int = 10, prompt: str = "Be brief.") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\n'
        'description = "test agent"\n'
        f'system_prompt = "{prompt} Goal: {{goal}}"\n'
        '\n[[tools]]\nname = "read_artifact"\n'
        f"\n[budget]\nmax_steps = {steps}\n"
    )
    return path


async def test_versions_unchanged_apply_and_diff(vigil: Vigil, tmp_path: Path) -> None:
    name = f"writer-{uuid.uuid4().hex[:8]}"
    path = agent_file(tmp_path, name)
    (first,) = vigil.json("agent", "apply", str(path), "--by", "alice")
    assert first["name"] == name and first["version"] == 1 and first["created"] is True

    (again,) = vigil.json("agent", "apply", str(path))
    assert again["version"] == 1 and again["created"] is False
    assert again["content_hash"] == first["content_hash"]

    agent_file(tmp_path, name, steps=20)
    (second,) = vigil.json("agent", "apply", str(tmp_path))  # a folder works too
    assert second["version"] == 2 and second["created"] is True
    assert second["content_hash"] != first["content_hash"]

    history = vigil.json("agent", "history", name)
    assert [(v["version"], v["created_by"]) for v in history] == [
        (1, "alice"),
        (2, getpass.getuser()),
    ]

    shown = vigil.json("agent", "show", name)
    assert shown["version"] == 2 and shown["spec"]["budget"]["max_steps"] == 20
    assert [t["name"] for t in shown["tools"]] == ["read_artifact", "finish"]
    older = vigil.json("agent", "show", name, "--version", "1")
    assert older["spec"]["budget"]["max_steps"] == 10

    diff = vigil.json("agent", "diff", name)
    assert (diff["old"], diff["new"]) == (1, 2)
    changed = [ln for ln in diff["lines"] if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
    assert changed == ['-    "max_steps": 10,', '+    "max_steps": 20,']
    same = vigil.json("agent", "diff", name, "2", "2")
    assert same["lines"] == []
    alone = vigil.ok("agent", "diff", name, "1", "1").stdout
    assert alone.strip() == f"{name} has one version (v1): nothing to compare yet", alone

    listed = {a["name"]: a for a in vigil.json("agent", "list")}
    assert listed[name]["newest"] == 2 and listed[name]["versions"] == 2
    readable = vigil.ok("agent", "list").stdout
    assert name in readable and "test agent" in readable


async def test_a_bad_file_names_line_and_field_and_stores_nothing(
    vigil: Vigil, tmp_path: Path
) -> None:
    good = agent_file(tmp_path, f"good-{uuid.uuid4().hex[:8]}")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"name: bad-{uuid.uuid4().hex[:8]}\nmodel:\n  temperature: 9\ntools:\n  - name: teleport\n"
    )
    done = vigil("agent", "apply", str(good), str(bad))
    assert done.returncode == 2, done
    assert f"{bad}:3: model.temperature: Input should be less than or equal to 2" in done.stderr
    assert "Traceback" not in done.stderr
    # All files are checked before any is stored.
    assert vigil("agent", "show", good.stem).returncode == 4


async def test_unknown_agent_and_version(vigil: Vigil, tmp_path: Path) -> None:
    name = f"lonely-{uuid.uuid4().hex[:8]}"
    done = vigil("agent", "show", name)
    assert done.returncode == 4 and f"agent {name!r} has no definition" in done.stderr
    vigil.ok("agent", "apply", str(agent_file(tmp_path, name)))
    done = vigil("agent", "show", name, "--version", "7")
    assert done.returncode == 4 and "has no version 7 (newest: 1)" in done.stderr


async def test_versions_are_immutable(
    vigil: Vigil, tmp_path: Path, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    name = f"fixed-{uuid.uuid4().hex[:8]}"
    vigil.ok("agent", "apply", str(agent_file(tmp_path, name)))
    for statement in (
        "UPDATE agent_versions SET content_hash = 'x' WHERE agent_id = :a",
        "DELETE FROM agent_versions WHERE agent_id = :a",
    ):
        with pytest.raises(DBAPIError, match="immutable"):
            async with sessionmaker.begin() as db:
                await db.execute(text(statement), {"a": name})


async def test_an_agent_reads_only_its_own_versions(
    vigil: Vigil, tmp_path: Path, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    mine, theirs = f"mine-{uuid.uuid4().hex[:8]}", f"theirs-{uuid.uuid4().hex[:8]}"
    vigil.ok("agent", "apply", str(agent_file(tmp_path, mine)), str(agent_file(tmp_path, theirs)))
    async with acting_for(sessionmaker, mine) as db:
        assert (await agent_rows.newest_version(db, mine)) is not None
        assert (await agent_rows.newest_version(db, theirs)) is None
        assert [a.agent_id for a in await agent_rows.list_agents(db)] == [mine]
        # Stored credentials are system data: an agent's role sees none of them.
        with pytest.raises(DBAPIError, match="permission denied"):
            await db.execute(text("SELECT count(*) FROM credentials"))


def test_a_connection_not_configured_here_is_warned_of_at_apply(
    vigil: Vigil, tmp_path: Path
) -> None:
    """A mistyped `[model] connection` was stored without a word, and each session of
    the agent then waited for a worker set up for a connection none has. Applied where
    the connections are configured (as the workers are), a name none of them has is
    said at once; it is still applied (workers elsewhere may have it), exit 0."""
    name = f"typo-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n\n[model]\nconnection = "opneai"\nfallback = "backup"\n')
    env = {
        "VIGIL_MODEL_CONNECTIONS": (
            '{"openai": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"},'
            ' "backup": {"kind": "scripted"}}'
        )
    }
    (applied,) = vigil.json("agent", "apply", str(path), env=env)
    assert applied["created"] is True
    (warning,) = applied["warnings"]
    assert "model connection 'opneai' is not configured here" in warning, warning
    assert "known: backup, default, openai" in warning, warning
    human = vigil.ok("agent", "apply", str(path), env=env)
    assert "unchanged (v1)" in human.stdout
    assert "model connection 'opneai' is not configured here" in human.stderr, human.stderr
    # Configured as named: nothing to say.
    path.write_text(f'name = "{name}"\n\n[model]\nconnection = "openai"\n')
    (fixed,) = vigil.json("agent", "apply", str(path), env=env)
    assert (fixed["version"], fixed["warnings"]) == (2, [])


async def test_a_file_nested_too_deeply_is_a_bad_file(vigil: Vigil, tmp_path: Path) -> None:
    """A TOML file nested a thousand levels deep ended in a RecursionError's traceback."""
    deep = tmp_path / "deep.toml"
    deep.write_text(f'name = "deep-{uuid.uuid4().hex[:8]}"\nx = ' + "[" * 1000 + "]" * 1000)
    done = vigil("agent", "apply", str(deep))
    assert done.returncode == 2, done
    assert f"{deep}: nests deeper than 64 levels" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
