"""The S3 backend (MinIO or any S3) through the minio client.

Uploads stream: the bytes go to a temporary key with multipart upload while their sha256
is computed, then are copied server-side to ``sha256/<aa>/<bb>/<digest>``; so a 1 GiB
artifact never sits in memory and a half-written object never carries a real address.

The minio client's failures that mean the store is away (a refused or dropped connection,
retries exhausted, a 5xx or an S3 "try again later" code: what ``outage_of`` calls an
object store outage) leave this module as StoreUnavailable, an OSError, whatever the call;
every other failure (a missing key, a refused credential) passes as the client raised it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import uuid
from collections.abc import Iterable, Iterator
from typing import BinaryIO, TypeVar, cast

from minio import Minio
from minio.commonconfig import CopySource
from minio.datatypes import Object
from minio.error import S3Error

from vigil.activities.artifacts.store import (
    CHUNK,
    ArtifactNotFound,
    StoredObject,
    StoreUnavailable,
    _verified,
    check_sha,
    chunks_of,
)
from vigil.activities.failures import OBJECT_STORE, outage_of

PART_SIZE = 16 * 1024 * 1024

T = TypeVar("T")


@contextlib.contextmanager
def _reaching() -> Iterator[None]:
    """Raise an outage of the store met inside as StoreUnavailable (the client's error as
    its cause); anything else unchanged."""
    try:
        yield
    except StoreUnavailable:
        raise
    except Exception as exc:
        outage = outage_of(exc)
        if outage is None or outage.part != OBJECT_STORE:
            raise
        raise StoreUnavailable(outage.message, exc) from exc


def _reached(items: Iterator[T]) -> Iterator[T]:
    """``items``, drawn from the store (a download's body, a listing) as above."""
    with _reaching():
        yield from items


class _ChunkReader(io.RawIOBase):
    """A file-like view over an iterator of chunks that hashes what passes through."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = bytearray()
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        # A bytearray grows in place, so assembling a 16 MiB part copies each byte once.
        while size < 0 or len(self._buf) < size:
            try:
                block = next(self._it)
            except StopIteration:
                break
            self.digest.update(block)
            self.size += len(block)
            self._buf.extend(block)
        if size < 0 or size >= len(self._buf):
            out = bytes(self._buf)
            self._buf.clear()
        else:
            out = bytes(self._buf[:size])
            del self._buf[:size]
        return out


class S3Store:
    scheme = "s3"

    def __init__(self, client: Minio, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @staticmethod
    def key_for(sha256: str) -> str:
        check_sha(sha256)
        return f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def uri(self, sha256: str) -> str:
        return f"s3://{self.bucket}/{self.key_for(sha256)}"

    def put_stream(self, chunks: Iterable[bytes]) -> StoredObject:
        with _reaching():
            return self._put_stream(chunks)

    def _put_stream(self, chunks: Iterable[bytes]) -> StoredObject:
        reader = _ChunkReader(chunks)
        tmp_key = f"tmp/{uuid.uuid4().hex}"
        self.client.put_object(
            self.bucket, tmp_key, cast(BinaryIO, reader), length=-1, part_size=PART_SIZE
        )
        try:
            sha = reader.digest.hexdigest()
            key = self.key_for(sha)
            if not self._exists_key(key):
                self.client.copy_object(self.bucket, key, CopySource(self.bucket, tmp_key))
        finally:
            with contextlib.suppress(S3Error):
                self.client.remove_object(self.bucket, tmp_key)
        return StoredObject(sha, reader.size, self.uri(sha))

    def put_bytes(self, data: bytes) -> StoredObject:
        with _reaching():
            return self._put_bytes(data)

    def _put_bytes(self, data: bytes) -> StoredObject:
        sha = hashlib.sha256(data).hexdigest()
        key = self.key_for(sha)
        if not self._exists_key(key):
            if len(data) <= PART_SIZE:
                # Small objects: one PUT straight to the final key is atomic on S3.
                self.client.put_object(self.bucket, key, io.BytesIO(data), length=len(data))
            else:
                return self._put_stream(chunks_of(data))
        return StoredObject(sha, len(data), self.uri(sha))

    def _exists_key(self, key: str) -> bool:
        try:
            with _reaching():
                self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return False
            raise
        return True

    def open(self, sha256: str) -> Iterator[bytes]:
        key = self.key_for(sha256)
        try:
            with _reaching():
                response = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise ArtifactNotFound(sha256) from exc
            raise

        def stream() -> Iterator[bytes]:
            try:
                yield from _reached(response.stream(CHUNK))
            finally:
                response.close()
                response.release_conn()

        return _verified(stream(), sha256)

    def open_range(self, sha256: str, start: int, length: int) -> Iterator[bytes]:
        if length <= 0:
            return iter(())
        key = self.key_for(sha256)
        try:
            with _reaching():
                response = self.client.get_object(self.bucket, key, offset=start, length=length)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise ArtifactNotFound(sha256) from exc
            raise

        def stream() -> Iterator[bytes]:
            try:
                yield from _reached(response.stream(CHUNK))
            finally:
                response.close()
                response.release_conn()

        return stream()

    def get_bytes(self, sha256: str) -> bytes:
        return b"".join(self.open(sha256))

    def exists(self, sha256: str) -> bool:
        return self._exists_key(self.key_for(sha256))

    def delete(self, sha256: str) -> None:
        self.remove_key(self.key_for(sha256))

    def remove_key(self, key: str) -> None:
        with _reaching():
            self.client.remove_object(self.bucket, key)

    def listing(self, prefix: str) -> Iterator[Object]:
        """The objects whose keys start with ``prefix``, in key order."""
        return _reached(self.client.list_objects(self.bucket, prefix=prefix, recursive=True))

    def list_digests(self) -> Iterator[str]:
        for obj in self.listing("sha256/"):
            name = (obj.object_name or "").rsplit("/", 1)[-1]
            if len(name) == 64:
                yield name
