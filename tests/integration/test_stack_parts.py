"""Each part of the stack works for real: Temporal, PostgreSQL + pgvector, MinIO, filesystem."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import numpy as np
import pytest
from pydantic import SecretStr
from temporalio.client import Client

from tests.support.greeter import Greeted, Greeter, Greeting, greet
from vigil.activities.artifacts.s3 import S3Store
from vigil.activities.artifacts.store import ArtifactCorrupt, FilesystemStore
from vigil.workers.settings import STACK_PORTS, Settings, asyncpg_dsn
from vigil.workers.stack import Stack
from vigil.workers.stack.procs import postgres_answers
from vigil.workers.temporal import new_worker
from vigil.workers.wiring import make_s3_client

pytestmark = pytest.mark.integration


async def test_workflow_runs_an_activity_on_the_dev_server(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue=task_queue, workflows=[Greeter], activities=[greet]):
        result = await client.execute_workflow(
            Greeter.run,
            Greeting(name="vigil"),
            id=f"greet-{uuid.uuid4()}",
            task_queue=task_queue,
            result_type=Greeted,
        )
    assert result == Greeted(text="hello vigil", attempt=1)


async def test_vector_round_trip_and_hnsw_nearest_neighbour(database_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    agent = f"agent-{uuid.uuid4()}"
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(300, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    try:
        await conn.executemany(
            "INSERT INTO memories (agent_id, kind, content, dim, embedding) "
            "VALUES ($1, 'fact', $2, 384, $3::vector)",
            [(agent, f"memory {i}", str(v.tolist())) for i, v in enumerate(vectors)],
        )
        row = await conn.fetchrow(
            "SELECT embedding::text AS e FROM memories WHERE agent_id=$1 AND content='memory 5'",
            agent,
        )
        back = np.array([float(x) for x in row["e"].strip("[]").split(",")], dtype=np.float32)
        assert np.allclose(back, vectors[5], atol=1e-6)

        query = vectors[42] + 0.01 * rng.normal(size=384).astype(np.float32)
        sql = (
            "SELECT content, agent_id FROM memories WHERE dim = 384 "
            "ORDER BY embedding::vector(384) <=> $1::vector(384) LIMIT 3"
        )
        await conn.execute("ANALYZE memories")
        await conn.execute("SET enable_seqscan = off")
        plan = await conn.fetch("EXPLAIN " + sql, str(query.tolist()))
        assert "ix_memories_embedding_384" in "\n".join(r[0] for r in plan)
        nearest = await conn.fetch(sql, str(query.tolist()))
        assert nearest[0]["agent_id"] == agent
        assert nearest[0]["content"] == "memory 42"
    finally:
        await conn.close()


def test_object_round_trips_through_minio(s3_settings: Settings) -> None:
    store = S3Store(make_s3_client(s3_settings), s3_settings.s3_bucket)
    data = os.urandom(3 * 1024 * 1024 + 17)
    first = store.put_bytes(data)
    again = store.put_stream(iter([data[:1000], data[1000:]]))
    assert first.sha256 == again.sha256 and first.size == len(data)
    assert store.exists(first.sha256)
    assert store.get_bytes(first.sha256) == data
    assert first.sha256 in set(store.list_digests())


def test_object_round_trips_through_the_filesystem(tmp_path: object) -> None:
    from pathlib import Path

    store = FilesystemStore(Path(str(tmp_path)))
    data = b"\x00binary\xff" * 1000
    obj = store.put_bytes(data)
    assert store.get_bytes(obj.sha256) == data
    assert store.put_bytes(data) == obj  # deduplicated
    assert list(store.tmp.iterdir()) == []  # no temp file left behind
    # Corruption on disk is caught by the checksum on read.
    store.path_for(obj.sha256).write_bytes(b"tampered")
    with pytest.raises(ArtifactCorrupt):
        store.get_bytes(obj.sha256)


def test_the_stack_publishes_its_ports_for_commands_run_without_them(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `stack up` was started with is found by a later command given only its state
    folder (tests/unit/test_stack_ports.py: how settings adopt them)."""
    info = stack.settings.stack_info()
    assert info is not None and info.ports is not None
    assert info.ports == {name: getattr(stack.settings, name) for name in STACK_PORTS}
    for name in STACK_PORTS:
        monkeypatch.delenv(f"VIGIL_{name.upper()}", raising=False)
    for name in ("VIGIL_TEMPORAL_ADDRESS", "TEMPORAL_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    adopted = Settings(state_dir=stack.settings.state_dir)
    assert adopted.endpoints().temporal_address == stack.settings.endpoints().temporal_address


def test_status_shows_a_running_minio_and_the_filesystem_store_beside_it(stack: Stack) -> None:
    """After `stack up --with-minio` (the test stack's MinIO) with the filesystem backend,
    `stack status` without --with-minio hid MinIO, and `up` itself dropped the store row."""
    assert stack.minio.running(), "the test stack runs MinIO"
    for with_minio in (True, False):
        settings = stack.settings.model_copy(
            update={"with_minio": with_minio, "artifact_backend": "fs"}
        )
        parts = {p.name: p for p in Stack(settings).status()}
        assert parts["minio"].running, (with_minio, parts)
        assert parts["artifacts"].detail == str(settings.endpoints().artifact_dir), parts


def test_status_names_where_the_parts_log(stack: Stack, database_url: str, tmp_path: Path) -> None:
    """No command and no output said where the stack's parts write their logs."""
    from tests.support.cli import explain, record_cli

    vigil = record_cli(stack.settings.resolved_state_dir, database_url, tmp_path)
    done = vigil("stack", "status")
    assert done.returncode == 0, explain(done)
    said = " ".join(done.stdout.split())
    logs = stack.settings.resolved_state_dir / "logs"
    assert f"Logs of the parts it runs: {logs} (" in said, said
    assert "postgres.log" in said and "temporal.log" in said, said


def test_status_asks_postgresql_whether_it_answers(stack: Stack, database_url: str) -> None:
    """A PostgreSQL stopped with SIGSTOP still has the kernel take connections on its
    port: `stack status` said it was up while every command waited on it; one given by
    DATABASE_URL was shown up without being asked."""
    url = urlsplit(database_url)
    assert url.hostname is not None and url.port is not None
    assert postgres_answers(url.port, url.hostname)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # takes connections, never answers: as a stopped server
        port = silent.getsockname()[1]
        assert not postgres_answers(port, timeout=0.5)
        hung = f"postgresql://vigil:x@127.0.0.1:{port}/vigil"
        external = Stack(stack.settings.model_copy(update={"database_url": SecretStr(hung)}))
        (pg,) = [p for p in external.status() if p.name == "postgres"]
        assert (pg.mode, pg.running) == ("external", False)
        assert pg.detail == f"127.0.0.1:{port} (DATABASE_URL)"
    assert not postgres_answers(port, timeout=0.5)  # closed now
