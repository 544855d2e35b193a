"""The artifact store interface and the filesystem backend.

Artifacts are content-addressed by sha256. Only the digest ever becomes a path or key,
so names that come from agents or tools cannot reach the store's namespace at all.
Blocking I/O: activities call these through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from vigil.activities.failures import errno_of

CHUNK = 1024 * 1024
_SHA = re.compile(r"^[0-9a-f]{64}$")


class ArtifactError(Exception):
    """Base of artifact store failures."""


class ArtifactNotFound(ArtifactError):
    pass


class UnknownArtifact(ArtifactNotFound):
    """No artifact has that name (or digest) where it was looked for: no row, where
    ArtifactNotFound itself may also be a row whose bytes the store no longer holds."""


class ArtifactCorrupt(ArtifactError):
    """The bytes read back do not hash to their address."""


class StoreUnavailable(OSError):
    """The store did not answer, or answered that it cannot serve now: an outage, not a
    fault of the request or of the bytes (so never an ArtifactError, which callers turn
    into a tool's or a request's failure).

    An OSError, as the filesystem backend's own failures are, so every face that reports a
    server being away says this one is: the API's 503 ``unavailable``, the CLI's one line
    and exit 3, an activity's wait for the part to come back (``activities.failures``).
    The message is the outage's line; ``errno`` is the refused connection's, when one was
    refused; the client library's error is the cause."""

    def __init__(self, message: str, cause: BaseException) -> None:
        super().__init__(message)
        self.errno = errno_of(cause)


@dataclass(frozen=True)
class StoredObject:
    sha256: str
    size: int
    uri: str


def check_sha(sha256: str) -> str:
    if not _SHA.fullmatch(sha256):
        raise ArtifactError(f"not a sha256 digest: {sha256[:80]!r}")
    return sha256


def chunks_of(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]


def read_chunks(handle: BinaryIO) -> Iterator[bytes]:
    while block := handle.read(CHUNK):
        yield block


class ArtifactStore(Protocol):
    """One interface, two backends (filesystem, S3). A store that is away raises an
    OSError (StoreUnavailable from S3, the disk's own from the filesystem)."""

    scheme: str

    def put_stream(self, chunks: Iterable[bytes]) -> StoredObject: ...

    def put_bytes(self, data: bytes) -> StoredObject: ...

    def open(self, sha256: str) -> Iterator[bytes]:
        """Yields the content in chunks; raises ArtifactCorrupt at the end on a bad digest."""
        ...

    def open_range(self, sha256: str, start: int, length: int) -> Iterator[bytes]:
        """Yields ``length`` bytes from ``start`` (a part cannot be checked against the
        digest: a client asking for ranges verifies the whole it assembles)."""
        ...

    def get_bytes(self, sha256: str) -> bytes: ...

    def exists(self, sha256: str) -> bool: ...

    def delete(self, sha256: str) -> None: ...

    def list_digests(self) -> Iterator[str]: ...


class FilesystemStore:
    """sha256-addressed files: temp file, fsync, rename, so no partial file is ever visible."""

    scheme = "file"

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.objects = self.root / "sha256"
        self.tmp = self.root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        check_sha(sha256)
        return self.objects / sha256[:2] / sha256[2:4] / sha256

    def uri(self, sha256: str) -> str:
        return f"file://{self.path_for(sha256)}"

    def put_stream(self, chunks: Iterable[bytes]) -> StoredObject:
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="put-")
        try:
            with os.fdopen(fd, "wb") as out:
                for block in chunks:
                    digest.update(block)
                    size += len(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            target = self.path_for(sha)
            if target.exists() and target.stat().st_size == size:
                os.unlink(tmp_name)  # deduplicated: the same bytes are already there
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_name, target)
                _fsync_dir(target.parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        return StoredObject(sha, size, self.uri(sha))

    def put_bytes(self, data: bytes) -> StoredObject:
        return self.put_stream(chunks_of(data))

    def open(self, sha256: str) -> Iterator[bytes]:
        path = self.path_for(sha256)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError as exc:
            raise ArtifactNotFound(sha256) from exc
        return _verified(read_chunks_closing(handle), sha256)

    def open_range(self, sha256: str, start: int, length: int) -> Iterator[bytes]:
        path = self.path_for(sha256)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError as exc:
            raise ArtifactNotFound(sha256) from exc
        if length <= 0:
            handle.close()
            return iter(())
        handle.seek(start)
        return _bounded(read_chunks_closing(handle), length)

    def get_bytes(self, sha256: str) -> bytes:
        return b"".join(self.open(sha256))

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).exists()

    def delete(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path_for(sha256).unlink()

    def list_digests(self) -> Iterator[str]:
        for path in self.objects.glob("*/*/*"):
            if _SHA.fullmatch(path.name):
                yield path.name


def read_chunks_closing(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        yield from read_chunks(handle)


def _bounded(chunks: Iterator[bytes], length: int) -> Iterator[bytes]:
    """The first ``length`` bytes of ``chunks``."""
    left = length
    try:
        for block in chunks:
            if left <= 0:
                return
            yield block[:left]
            left -= len(block)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _verified(chunks: Iterator[bytes], sha256: str) -> Iterator[bytes]:
    digest = hashlib.sha256()
    for block in chunks:
        digest.update(block)
        yield block
    if digest.hexdigest() != sha256:
        raise ArtifactCorrupt(f"artifact {sha256} failed its checksum on read")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
