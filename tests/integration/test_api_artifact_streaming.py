"""A big artifact goes up and down through the API without ever sitting in memory, on
both stores: the process's resident memory grows by far less than the artifact."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from tests.integration.test_api_artifacts import new_session, url
from tests.integration.test_artifact_streaming import PeakRss
from tests.support.api import running_api
from vigil.workers.settings import Settings
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
SIZE = 256 * MiB
RSS_GROWTH = 160 * MiB  # the S3 client buffers 16 MiB parts; the whole would be 256


def blocks() -> Iterator[bytes]:
    block = hashlib.sha256(b"vigil").digest() * (MiB // 32)
    for i in range(SIZE // MiB):
        yield block[:-8] + i.to_bytes(8, "big")


@pytest.mark.parametrize("backend", ["fs", "s3"])
def test_big_upload_and_download_stream(settings: Settings, backend: str) -> None:
    expected = hashlib.sha256()
    for b in blocks():
        expected.update(b)
    local = settings.model_copy(update={"artifact_backend": backend})
    _, session = new_session(local)
    with running_api(local) as api, api.client(api.token(Scope.CONTROL)) as http:
        with PeakRss() as rss:
            put = http.put(url(session, "big.bin"), content=blocks(), timeout=300)
            assert put.status_code == 201, put.text
            assert put.json()["sha256"] == expected.hexdigest()
            got = hashlib.sha256()
            size = 0
            with http.stream("GET", url(session, "big.bin"), timeout=300) as down:
                assert down.status_code == 200
                assert down.headers["content-length"] == str(SIZE)
                for chunk in down.iter_bytes():
                    got.update(chunk)
                    size += len(chunk)
        assert (size, got.hexdigest()) == (SIZE, expected.hexdigest())
        assert rss.peak - rss.baseline < RSS_GROWTH, (rss.peak - rss.baseline) // MiB
