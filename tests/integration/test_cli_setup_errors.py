"""Mistakes in a worker's setup and a part that is down, said in one line with what to do:
no traceback, the exit code of the kind of mistake (2 a usage or setup mistake, 3 a part
that cannot be reached), and `vigil doctor` finds the same setup mistakes a worker would
refuse to start on."""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support.cli import Vigil, cli_env, explain, one_error_line

pytestmark = pytest.mark.integration

BAD_JSON = '{"scripted": '
BAD_KIND = json.dumps({"mine": {"kind": "telepathy"}})


@pytest.fixture
def vigil(database_url: str, tmp_path: Path) -> Vigil:
    return Vigil(
        cli_env(
            database_url=database_url,
            state_dir=tmp_path / "state",
            task_queue=f"tq-setup-{uuid.uuid4().hex[:8]}",
            model_url="http://127.0.0.1:9/v1",
            artifact_dir=tmp_path / "artifacts",
        )
    )


@pytest.mark.parametrize(
    ("connections", "says"),
    [
        (BAD_JSON, "error: bad configuration: VIGIL_MODEL_CONNECTIONS is not JSON: "),
        (BAD_KIND, "error: bad configuration: model connection 'mine': kind: "),
    ],
    ids=["not-json", "unknown-kind"],
)
def test_a_worker_refuses_bad_model_connections_in_one_line(
    vigil: Vigil, connections: str, says: str
) -> None:
    env = {"VIGIL_MODEL_CONNECTIONS": connections}
    done = vigil("worker", env=env, timeout=120)
    assert done.returncode == 2, explain(done)
    assert one_error_line(done).startswith(says), explain(done)

    doctor = vigil("doctor", "--json", env=env, timeout=120)
    assert doctor.returncode == 1, explain(doctor)
    (models,) = [c for c in json.loads(doctor.stdout) if c["check"] == "connections"]
    assert models["ok"] is False
    assert models["detail"].startswith(says.removeprefix("error: bad configuration: "))


def test_doctor_lists_the_model_connections(vigil: Vigil) -> None:
    env = {"VIGIL_MODEL_CONNECTIONS": json.dumps({"other": {"kind": "scripted"}})}
    doctor = vigil("doctor", "--json", env=env, timeout=120)
    (models,) = [c for c in json.loads(doctor.stdout) if c["check"] == "connections"]
    assert models == {"part": "models", "check": "connections", "ok": True,
                      "detail": "default, other"}  # fmt: skip


def test_postgres_down_is_named_with_what_starts_it(vigil: Vigil) -> None:
    dead = "postgresql://vigil:x@127.0.0.1:1/vigil"
    listed = vigil("list", env={"DATABASE_URL": dead})
    assert listed.returncode == 3, explain(listed)
    assert one_error_line(listed) == (
        "error: cannot reach PostgreSQL at 127.0.0.1:1 (Connection refused); start it with "
        "`vigil stack up` (or check DATABASE_URL)"
    )


def test_a_worker_refused_by_postgres_says_so_in_one_line(vigil: Vigil, database_url: str) -> None:
    url = urlsplit(database_url)
    wrong = url._replace(netloc=f"vigil-nobody:wrong@{url.hostname}:{url.port}")
    done = vigil("worker", env={"DATABASE_URL": urlunsplit(wrong)}, timeout=120)
    assert done.returncode == 3, explain(done)
    line = one_error_line(done)
    assert line.startswith("error: worker could not start: PostgreSQL refused: "), line
    assert "wrong" not in line  # never the password


def test_a_worker_that_finds_no_temporal_says_so_as_the_cli_does(vigil: Vigil) -> None:
    """It printed the SDK's connect error (``Failed client connect: Server connection
    error: tonic::transport::Error(Transport, ConnectError(...))``), naming no fix."""
    done = vigil("worker", env={"TEMPORAL_ADDRESS": "127.0.0.1:1"}, timeout=120)
    assert done.returncode == 3, explain(done)
    assert one_error_line(done) == (
        "error: worker could not start: Temporal at 127.0.0.1:1 is not answering; start it "
        "with `vigil stack up` (or check TEMPORAL_ADDRESS)"
    )


def test_doctors_hints_are_written_as_the_cli_was_started(vigil: Vigil) -> None:
    down = {"TEMPORAL_ADDRESS": "127.0.0.1:1"}
    plain = vigil("doctor", "--json", env=down, timeout=120)
    under_uv = vigil("doctor", "--json", env={**down, "UV": "/usr/bin/uv"}, timeout=120)
    hints = [
        next(c["detail"] for c in json.loads(done.stdout) if c["check"] == "reachable")
        for done in (plain, under_uv)
    ]
    assert "start it with `vigil stack up`" in hints[0], hints
    assert "start it with `uv run vigil stack up`" in hints[1], hints


def test_doctor_says_where_postgresql_does_not_answer_and_what_to_do(vigil: Vigil) -> None:
    """It printed asyncpg's own ``[Errno 111] Connect call failed ('127.0.0.1', 1)``, where
    every other command names the part and how to start it."""
    down = {"DATABASE_URL": "postgresql://vigil:x@127.0.0.1:1/vigil"}
    doctor = vigil("doctor", "--json", env=down, timeout=120)
    (pg,) = [c for c in json.loads(doctor.stdout) if c["part"] == "postgres"]
    assert pg["ok"] is False
    assert pg["detail"] == (
        "cannot reach PostgreSQL at 127.0.0.1:1 (Connection refused); start it with "
        "`vigil stack up` (or check DATABASE_URL)"
    )


def test_doctor_fails_a_scripted_connection_whose_script_is_missing(
    vigil: Vigil, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "script.json"
    connection = {"kind": "scripted", "base_url": missing.as_uri(), "model": "scripted-1"}
    env = {"VIGIL_MODEL_CONNECTIONS": json.dumps({"scripted": connection})}
    doctor = vigil("doctor", "--json", env=env, timeout=120)
    assert doctor.returncode == 1, explain(doctor)
    (models,) = [c for c in json.loads(doctor.stdout) if c["check"] == "connections"]
    assert models["ok"] is False
    assert models["detail"] == f"model connection 'scripted': its script {missing} does not exist"


def test_a_trigger_or_webhook_that_could_never_work_is_refused_when_made(vigil: Vigil) -> None:
    """A trigger whose agent no session could start with, and a webhook whose stored
    secret is not set, were accepted: every delivery then failed (the webhook's for days)."""
    nobody = f"nobody-{uuid.uuid4().hex[:8]}"
    strict = {"VIGIL_ALLOW_UNDEFINED_AGENTS": "0"}
    trigger = vigil(
        "trigger", "create", f"t-{nobody}", "--agent", nobody, "--goal-template", "x", env=strict
    )
    assert trigger.returncode == 4, explain(trigger)
    assert one_error_line(trigger).startswith(f"error: agent {nobody!r} has no definition")
    # Its hint named `vigil start --undefined-agent` alone: no option of this command.
    assert one_error_line(trigger).endswith(
        "VIGIL_ALLOW_UNDEFINED_AGENTS=1 where sessions are started; `vigil start` and "
        "`vigil message` also take --undefined-agent)"
    ), one_error_line(trigger)
    assert nobody not in vigil("trigger", "list").stdout

    unset = f"unset-{nobody}"
    hook = vigil(
        "webhook", "add", "--agent", nobody, "--url", "http://127.0.0.1:1/hook",
        "--events", "session_ended", "--secret", unset,
    )  # fmt: skip
    assert hook.returncode == 2, explain(hook)
    assert one_error_line(hook) == (
        f"error: --secret: no stored credential named {unset!r}: set it first with "
        f"`vigil secret set {unset}`"
    )


def test_doctor_fails_a_connection_whose_credential_is_not_set_here(vigil: Vigil) -> None:
    """A connection whose `env:` credential this environment lacks passed doctor, and
    each model call of a worker started here then waited for it for good."""
    variable = f"VIGIL_TEST_UNSET_{uuid.uuid4().hex[:8].upper()}"
    connection = {
        "kind": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "credential": f"env:{variable}",
    }
    env = {"VIGIL_MODEL_CONNECTIONS": json.dumps({"stub": connection})}
    doctor = vigil("doctor", "--json", env=env, timeout=120)
    assert doctor.returncode == 1, explain(doctor)
    (models,) = [c for c in json.loads(doctor.stdout) if c["check"] == "connections"]
    assert models["ok"] is False
    assert models["detail"] == (
        f"model connection 'stub': its credential 'env:{variable}' is not set here "
        f"(export {variable} where workers run)"
    )
    given = vigil("doctor", "--json", env={**env, variable: "sk-x"}, timeout=120)
    (models,) = [c for c in json.loads(given.stdout) if c["check"] == "connections"]
    assert models["ok"] is True, models


def test_doctor_makes_no_artifact_store_where_none_is(vigil: Vigil, tmp_path: Path) -> None:
    """Run in a folder without a stack, doctor left an empty `.vigil/artifacts/sha256/`
    tree behind (its write probe made the store)."""
    root = tmp_path / "nowhere" / "artifacts"
    doctor = vigil("doctor", "--json", env={"VIGIL_ARTIFACT_DIR": str(root)}, timeout=120)
    (check,) = [c for c in json.loads(doctor.stdout) if c["part"] == "artifacts"]
    assert check["ok"] is True, check
    assert "is not there yet (made on the first write;" in check["detail"], check
    assert not root.exists() and not root.parent.exists()


def test_a_second_webhook_to_the_same_url_is_refused(vigil: Vigil) -> None:
    """The same URL added twice for an agent was taken: each event was posted twice."""
    agent = f"hooked-{uuid.uuid4().hex[:8]}"
    args = ("webhook", "add", "--agent", agent, "--url", "https://example.com/h", "--secret")
    first = vigil.json(*args, "env:PATH", "--events", "session_ended")
    again = vigil(*args, "env:PATH", "--events", "session_ended,human_asked")
    assert again.returncode == 2, explain(again)
    assert one_error_line(again) == (
        f"error: agent {agent!r} has webhook {first['id']} for this URL already "
        f"(session_ended); to change it, remove it first (`vigil webhook remove {first['id']}`)"
    )
    listed = vigil.json("webhook", "list", "--agent", agent)
    assert [w["id"] for w in listed] == [first["id"]]
    vigil.ok("webhook", "remove", str(first["id"]))


def test_doctor_names_an_agent_whose_model_connection_is_not_configured(
    vigil: Vigil, tmp_path: Path
) -> None:
    """An agent naming a connection no setting here has passed doctor, and each of its
    sessions then waited for a worker that has it."""
    name = f"unconnected-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n\n[model]\nconnection = "nowhere"\nfallback = "gone"\n')
    vigil.ok("agent", "apply", str(path))
    doctor = vigil("doctor", "--json", timeout=120)
    assert doctor.returncode == 1, explain(doctor)
    (check,) = [c for c in json.loads(doctor.stdout) if c["check"] == "agents' connections"]
    assert check["ok"] is False
    assert f"{name} (version 1) names connection 'nowhere'" in check["detail"], check
    assert f"{name} (version 1) names fallback 'gone'" in check["detail"], check
    connections = {
        n: {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
        for n in ("nowhere", "gone")
    }
    env = {"VIGIL_MODEL_CONNECTIONS": json.dumps(connections)}
    given = vigil("doctor", "--json", env=env, timeout=120)
    (check,) = [c for c in json.loads(given.stdout) if c["check"] == "agents' connections"]
    assert name not in check["detail"], check

    # Configured without a default model, where the agent names none: its sessions
    # waited for a worker whose connection had one, and doctor said all was well.
    for conf in connections.values():
        del conf["model"]
    env = {"VIGIL_MODEL_CONNECTIONS": json.dumps(connections)}
    modelless = vigil("doctor", "--json", env=env, timeout=120)
    (check,) = [c for c in json.loads(modelless.stdout) if c["check"] == "agents' connections"]
    assert check["ok"] is False
    assert (
        "a connection without a default model, and no model of the agent's own" in (check["detail"])
    ), check
    assert f"{name} (version 1) names connection 'nowhere'" in check["detail"], check
    assert f"{name} (version 1) names fallback 'gone'" in check["detail"], check
    # The agent's own model serves its connection (a fallback takes its connection's).
    path.write_text(
        f'name = "{name}"\n\n[model]\nconnection = "nowhere"\nmodel = "m"\nfallback = "gone"\n'
    )
    vigil.ok("agent", "apply", str(path))
    own = vigil("doctor", "--json", env=env, timeout=120)
    (check,) = [c for c in json.loads(own.stdout) if c["check"] == "agents' connections"]
    assert f"{name} (version 2) names connection" not in check["detail"], check
    assert f"{name} (version 2) names fallback 'gone'" in check["detail"], check


def test_doctor_shows_the_brackets_its_details_quote(vigil: Vigil, tmp_path: Path) -> None:
    """Doctor's table read each detail as markup: a models file's ``[other]`` table was
    named as `` is not a connection: write each as  (here )``."""
    models = tmp_path / "models.toml"
    models.write_text('[other]\nkind = "openai"\n')
    doctor = vigil("doctor", env={"VIGIL_MODELS_FILE": str(models)}, timeout=120)
    assert doctor.returncode == 1, explain(doctor)
    assert "[other] is not a connection: write each as [connections.NAME]" in doctor.stdout, (
        doctor.stdout
    )
    assert "(here [connections.other])" in doctor.stdout, doctor.stdout


@pytest.mark.parametrize(
    "command",
    [("list",), ("show", "s-x"), ("agent", "list"), ("memory", "search", "x", "--agent", "a")],
    ids=["list", "show", "agent-list", "memory-search"],
)
def test_a_database_that_refuses_the_login_is_one_line(
    vigil: Vigil, database_url: str, command: tuple[str, ...]
) -> None:
    """A wrong password (or database) printed a hundred lines of traceback, and no JSON
    error object with --json: only a refused connection was told in one line."""
    parts = urlsplit(database_url)
    wrong = parts._replace(
        netloc=f"{parts.username}:wrong-{uuid.uuid4().hex[:6]}@{parts.hostname}:{parts.port}"
    )
    env = {"DATABASE_URL": urlunsplit(wrong)}
    done = vigil(*command, env=env, timeout=120)
    assert done.returncode == 3, explain(done)
    assert one_error_line(done).startswith("error: PostgreSQL refused: "), explain(done)
    assert "password authentication failed" in done.stderr
    as_json = vigil(*command, "--json", env=env, timeout=120)
    assert as_json.returncode == 3, explain(as_json)
    error = json.loads(as_json.stderr)["error"]
    assert error["code"] == "unreachable" and "PostgreSQL refused" in error["message"]


def test_doctor_names_the_secrets_that_cannot_be_had_here(vigil: Vigil) -> None:
    """A connection naming a stored credential nobody stored, a webhook whose `env:`
    secret is not set, and one whose stored secret was deleted since it was added all
    passed doctor: every call waited, every delivery failed, seen only in the API's list
    of deliveries."""
    agent = f"secretive-{uuid.uuid4().hex[:8]}"
    stored, variable = f"HOOK_{uuid.uuid4().hex[:6]}", f"UNSET_{uuid.uuid4().hex[:6].upper()}"
    key = {"VIGIL_SECRET_KEY": base64.b64encode(os.urandom(32)).decode()}
    assert vigil("secret", "set", stored, input="whsec-x\n", env=key).returncode == 0
    kept = vigil.json(
        "webhook", "add", "--agent", agent, "--url", "https://hooks.example.com/a",
        "--events", "session_ended", "--secret", stored, "--allow-unknown-agent",
    )  # fmt: skip
    vigil.ok("secret", "delete", stored)
    unset = vigil.json(
        "webhook", "add", "--agent", agent, "--url", "https://hooks.example.com/b",
        "--events", "session_ended", "--secret", f"env:{variable}", "--allow-unknown-agent",
    )  # fmt: skip
    connections = {"vault": {"kind": "openai", "model": "m", "credential": "NOBODY_STORED"}}
    doctor = vigil(
        "doctor", "--json", env={"VIGIL_MODEL_CONNECTIONS": json.dumps(connections)}, timeout=120
    )
    assert doctor.returncode == 1, explain(doctor)
    (check,) = [c for c in json.loads(doctor.stdout) if c["check"] == "secrets named"]
    assert check["ok"] is False
    detail = check["detail"]
    assert f"webhook {kept['id']} of agent {agent}: no stored credential {stored!r}" in detail
    assert f"webhook {unset['id']} of agent {agent}: 'env:{variable}' is not set here" in detail
    assert "model connection 'vault': no stored credential 'NOBODY_STORED'" in detail
    for hook in (kept, unset):
        vigil.ok("webhook", "remove", str(hook["id"]))


def test_a_postgres_that_accepts_and_never_answers_is_named(vigil: Vigil) -> None:
    """A PostgreSQL that takes the connection and says nothing (stopped with SIGSTOP, or
    its host gone away): `vigil list` waited 61 s, then printed "cannot reach a server: "
    with nothing after the colon."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel takes connections; nobody ever answers them
        port = silent.getsockname()[1]
        hung = {"DATABASE_URL": f"postgresql://vigil:x@127.0.0.1:{port}/vigil"}
        # A command of the client's, and one of the record's alone (`token list` printed
        # "cannot reach PostgreSQL: " and nothing more).
        done = [vigil(*args, env=hung, timeout=120) for args in (("list",), ("token", "list"))]
        quick = vigil("token", "list", env={**hung, "VIGIL_DB_CONNECT_SECONDS": "2"})
    for said in done:
        assert said.returncode == 3, explain(said)
        assert one_error_line(said) == (
            f"error: cannot reach PostgreSQL at 127.0.0.1:{port} (no answer within 10 s); "
            "start it with `vigil stack up` (or check DATABASE_URL)"
        ), explain(said)
    assert "(no answer within 2 s)" in one_error_line(quick), explain(quick)
