"""Storage benchmark: message appends into PostgreSQL and artifact PUT/GET per backend.

Prints figures and ratios side by side; it asserts nothing about time. It runs against
the test stack (``.vigil-test``, the test ports; started if it is not up) in a database
of its own, ``vigil_bench_storage``, created fresh and migrated with Alembic.

    uv run python bench/storage.py                     # defaults
    uv run python bench/storage.py --single-rows 5000 --copy-rows 200000 --large-mib 512

Messages: one row per transaction through ``append_messages`` (what an activity does
per message), ``append_messages`` batched in one transaction, and asyncpg's binary
``COPY`` (``copy_records_to_table``) in batches. Artifacts: small (4 KiB) objects as
objects/s and large (256 MiB) ones as MiB/s, for raw disk (Python write+fsync for small
files, ``dd ... conv=fsync`` for large), the filesystem store and MinIO. Reads of files
are made cold by evicting them from the page cache (``posix_fadvise DONTNEED``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from tests.support.teststack import TEST_PORTS  # noqa: E402
from vigil.activities.artifacts.s3 import S3Store  # noqa: E402
from vigil.activities.artifacts.store import FilesystemStore  # noqa: E402
from vigil.activities.record.store import NewMessage, append_messages, create_session  # noqa: E402
from vigil.workers.db import make_engine, make_sessionmaker, migrate_sync  # noqa: E402
from vigil.workers.settings import Settings, asyncpg_dsn  # noqa: E402
from vigil.workers.stack import Stack  # noqa: E402
from vigil.workers.wiring import make_s3_client  # noqa: E402

MiB = 1024 * 1024
DB_NAME = "vigil_bench_storage"
BUCKET = "vigil-bench"
CONTENT = (
    "The agent looked at the quarterly figures and found that revenue grew while costs "
    "stayed flat; it proposes to check the invoices of March before writing the summary."
)


@dataclass
class Row:
    section: str
    subject: str
    value: float
    unit: str
    baseline: str | None = None
    """The subject of the row this one is compared with (same section)."""


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


async def _atimed(coro: object) -> float:
    started = time.perf_counter()
    await coro  # type: ignore[misc]
    return time.perf_counter() - started


def _evict(path: Path) -> None:
    """Drop a file's pages from the page cache so the next read comes from disk."""
    paths = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for item in paths:
        fd = os.open(item, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _generated(size: int, seed: bytes) -> Iterator[bytes]:
    """Distinct 1 MiB chunks (so nothing deduplicates), produced on demand."""
    base = hashlib.sha256(seed).digest() * (MiB // 32)
    for index in range(size // MiB):
        yield index.to_bytes(8, "little") + base[8:]


# --------------------------------------------------------------------------------------
# Messages


async def bench_messages(url: str, args: argparse.Namespace) -> list[Row]:
    engine = make_engine(url, pool_size=2)
    sessionmaker = make_sessionmaker(engine)
    rows: list[Row] = []
    section = "message append"
    agent = "bench-agent"

    async def new_session() -> str:
        session = f"bench-{uuid.uuid4()}"
        async with sessionmaker() as db, db.begin():
            await create_session(db, session_id=session, agent_id=agent, goal="b", status="running")
        return session

    try:
        session = await new_session()

        async def single() -> None:
            for seq in range(args.single_rows):
                async with sessionmaker() as db, db.begin():
                    await append_messages(db, session, agent, [NewMessage(seq, "user", CONTENT)])

        seconds = await _atimed(single())
        base = "1 row / transaction (append_messages)"
        rows.append(Row(section, base, args.single_rows / seconds, "rows/s"))

        session = await new_session()

        async def batched() -> None:
            for start in range(0, args.batch_rows, args.batch):
                batch = [
                    NewMessage(seq, "user", CONTENT)
                    for seq in range(start, min(start + args.batch, args.batch_rows))
                ]
                async with sessionmaker() as db, db.begin():
                    await append_messages(db, session, agent, batch)

        seconds = await _atimed(batched())
        rows.append(
            Row(
                section,
                f"{args.batch} rows / transaction (append_messages)",
                args.batch_rows / seconds,
                "rows/s",
                base,
            )
        )

        session = await new_session()
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:

            async def copy() -> None:
                for start in range(0, args.copy_rows, args.batch):
                    records = [
                        (session, agent, seq, "user", CONTENT, 0, 0)
                        for seq in range(start, min(start + args.batch, args.copy_rows))
                    ]
                    async with conn.transaction():
                        await conn.copy_records_to_table(
                            "messages",
                            records=records,
                            columns=[
                                "session_id",
                                "agent_id",
                                "seq",
                                "role",
                                "content",
                                "content_enc",
                                "step",
                            ],
                        )

            seconds = await _atimed(copy())
        finally:
            await conn.close()
        rows.append(
            Row(
                section,
                f"COPY, {args.batch} rows / transaction (asyncpg)",
                args.copy_rows / seconds,
                "rows/s",
                base,
            )
        )
    finally:
        await engine.dispose()
    return rows


# --------------------------------------------------------------------------------------
# Artifacts


def bench_small(
    args: argparse.Namespace, raw_dir: Path, fs: FilesystemStore, s3: S3Store
) -> list[Row]:
    section = f"small objects ({args.small_size // 1024} KiB)"
    count = args.small_count
    payloads = [os.urandom(args.small_size) for _ in range(count)]
    rows: list[Row] = []

    raw_paths = [raw_dir / f"small-{i}" for i in range(count)]

    def raw_put() -> None:
        for path, data in zip(raw_paths, payloads, strict=True):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    def raw_get() -> None:
        for path in raw_paths:
            path.read_bytes()

    raw_label = "raw disk (write+fsync / read)"
    rows.append(Row(section + " PUT", raw_label, count / _timed(raw_put), "objects/s"))
    _evict(raw_dir)
    rows.append(Row(section + " GET", raw_label, count / _timed(raw_get), "objects/s"))

    shas: list[str] = []

    def fs_put() -> None:
        shas.extend(fs.put_bytes(data).sha256 for data in payloads)

    def fs_get() -> None:
        for sha in shas:
            fs.get_bytes(sha)

    rows.append(
        Row(section + " PUT", "filesystem store", count / _timed(fs_put), "objects/s", raw_label)
    )
    _evict(fs.objects)
    rows.append(
        Row(section + " GET", "filesystem store", count / _timed(fs_get), "objects/s", raw_label)
    )

    s3_shas: list[str] = []

    def s3_put() -> None:
        s3_shas.extend(s3.put_bytes(data).sha256 for data in payloads)

    def s3_get() -> None:
        for sha in s3_shas:
            s3.get_bytes(sha)

    rows.append(
        Row(section + " PUT", "MinIO (S3Store)", count / _timed(s3_put), "objects/s", raw_label)
    )
    rows.append(
        Row(section + " GET", "MinIO (S3Store)", count / _timed(s3_get), "objects/s", raw_label)
    )
    return rows


def bench_large(
    args: argparse.Namespace, raw_dir: Path, fs: FilesystemStore, s3: S3Store, minio_data: Path
) -> list[Row]:
    size: int = args.large_mib * MiB
    section = f"large object ({args.large_mib} MiB)"
    rows: list[Row] = []

    def rate(seconds: float) -> float:
        return size / MiB / seconds

    def hash_all() -> None:
        digest = hashlib.sha256()
        for block in _generated(size, b"hash"):
            digest.update(block)

    hash_seconds = _timed(hash_all)
    rows.append(Row(section + " CPU", "sha256 of generated chunks", rate(hash_seconds), "MiB/s"))

    raw = raw_dir / "large.bin"
    dd = shutil.which("dd") or "dd"
    raw_label = "raw disk (dd bs=1M conv=fsync)"
    seconds = _timed(
        lambda: subprocess.run(
            [dd, "if=/dev/zero", f"of={raw}", "bs=1M", f"count={args.large_mib}", "conv=fsync"],
            check=True,
            capture_output=True,
        )
    )
    rows.append(Row(section + " PUT", raw_label, rate(seconds), "MiB/s"))
    _evict(raw)
    seconds = _timed(
        lambda: subprocess.run(
            [dd, f"if={raw}", "of=/dev/null", "bs=1M"],
            check=True,
            capture_output=True,
        )
    )
    rows.append(Row(section + " GET", raw_label, rate(seconds), "MiB/s"))
    raw.unlink()

    def drain(chunks: Iterator[bytes]) -> None:
        for _ in chunks:
            pass

    stored = None

    def fs_put() -> None:
        nonlocal stored
        stored = fs.put_stream(_generated(size, os.urandom(16)))

    rows.append(
        Row(
            section + " PUT",
            "filesystem store (hash+fsync+rename)",
            rate(_timed(fs_put)),
            "MiB/s",
            raw_label,
        )
    )
    assert stored is not None
    sha = stored.sha256
    _evict(fs.path_for(sha))
    rows.append(
        Row(
            section + " GET",
            "filesystem store (verified)",
            rate(_timed(lambda: drain(fs.open(sha)))),
            "MiB/s",
            raw_label,
        )
    )
    fs.delete(sha)

    def s3_put() -> None:
        nonlocal stored
        stored = s3.put_stream(_generated(size, os.urandom(16)))

    rows.append(
        Row(
            section + " PUT",
            "MinIO (multipart + server copy)",
            rate(_timed(s3_put)),
            "MiB/s",
            raw_label,
        )
    )
    sha = stored.sha256
    with contextlib.suppress(OSError):
        _evict(minio_data / BUCKET / s3.key_for(sha))
    rows.append(
        Row(
            section + " GET",
            "MinIO (verified)",
            rate(_timed(lambda: drain(s3.open(sha)))),
            "MiB/s",
            raw_label,
        )
    )
    s3.delete(sha)
    return rows


# --------------------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    headers = ("what", "subject", "figure", "vs baseline")
    lines = []
    for row in rows:
        base = next(
            (r for r in rows if r.section == row.section and r.subject == row.baseline), None
        )
        if base is not None:
            ratio = f"{row.value / base.value:.2f}x"
        elif any(r.section == row.section and r.baseline == row.subject for r in rows):
            ratio = "(baseline)"
        else:
            ratio = ""
        lines.append((row.section, row.subject, f"{row.value:,.0f} {row.unit}", ratio))
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    print(fmt.format(*headers))
    print("  ".join("-" * w for w in widths))
    previous = None
    for line in lines:
        if previous is not None and line[0].split()[0] != previous:
            print()
        print(fmt.format(*line))
        previous = line[0].split()[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--single-rows", type=int, default=3000, help="messages appended one per transaction"
    )
    parser.add_argument(
        "--batch-rows",
        type=int,
        default=30000,
        help="messages appended by append_messages in batches",
    )
    parser.add_argument("--copy-rows", type=int, default=100000, help="messages COPYed in")
    parser.add_argument("--batch", type=int, default=1000, help="rows per batch / transaction")
    parser.add_argument("--small-count", type=int, default=1000, help="small objects")
    parser.add_argument("--small-size", type=int, default=4096, help="bytes per small object")
    parser.add_argument("--large-mib", type=int, default=256, help="MiB of the large object")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args(argv)

    state = Path(os.environ.get("VIGIL_TEST_STATE_DIR", str(ROOT / ".vigil-test")))
    settings = Settings(
        state_dir=state, with_minio=True, artifact_backend="s3", s3_bucket=BUCKET
    ).model_copy(update=TEST_PORTS)
    stack = Stack(settings, say=lambda line: print(f"  stack: {line}"))
    if not all(part.running for part in stack.status()):
        stack.up()
    base_url = settings.endpoints().database_url
    assert base_url is not None
    url = base_url.rsplit("/", 1)[0] + "/" + DB_NAME

    async def recreate(drop_only: bool = False) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(base_url.rsplit("/", 1)[0] + "/postgres"))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
            if not drop_only:
                await conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        finally:
            await conn.close()

    asyncio.run(recreate())
    migrate_sync(url)
    print(
        f"vigil storage benchmark: {os.cpu_count()} CPUs, database {DB_NAME}, "
        f"MinIO {settings.endpoints().s3_endpoint}\n"
    )

    bench_root = state / "bench-storage"
    shutil.rmtree(bench_root, ignore_errors=True)
    raw_dir = bench_root / "raw"
    raw_dir.mkdir(parents=True)
    fs = FilesystemStore(bench_root / "store")
    client = make_s3_client(settings)
    if not client.bucket_exists(BUCKET):
        client.make_bucket(BUCKET)
    s3 = S3Store(client, BUCKET)
    rows: list[Row] = []
    try:
        rows += asyncio.run(bench_messages(url, args))
        rows += bench_small(args, raw_dir, fs, s3)
        rows += bench_large(args, raw_dir, fs, s3, state / "minio" / "data")
    finally:
        shutil.rmtree(bench_root, ignore_errors=True)
        for obj in client.list_objects(BUCKET, recursive=True):
            client.remove_object(BUCKET, obj.object_name)
        client.remove_bucket(BUCKET)
        if not args.keep:
            asyncio.run(recreate(drop_only=True))
    print_table(rows)
    print(
        "\nWall-clock figures. On a small shared VM they move by 2-3x between runs (other"
        "\nprocesses, the hypervisor's disk cache): compare rows of one run, not runs."
    )


if __name__ == "__main__":
    main()
