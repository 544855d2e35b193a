"""The API server's PostgreSQL pools: up to ``api_db_pool_size`` connections each, opened
as requests need them and kept. A burst past them waits for one: before, it opened as
many more and closed them once the burst had passed, so every burst of starts paid for
new server processes and their authentication. How the worker's pool keeps its size
through a burst: test_worker_db_pool.py."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event
from sqlalchemy.pool import QueuePool

from tests.support.api import running_api
from vigil.workers.settings import Settings
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration


def test_a_burst_of_requests_opens_no_connection_past_the_pool(settings: Settings) -> None:
    kept = 5
    with running_api(settings.model_copy(update={"api_db_pool_size": kept})) as api:
        token = api.token(Scope.ADMIN)
        assert api.app is not None
        pool = api.app.state.client.engine.sync_engine.pool
        assert isinstance(pool, QueuePool)
        opened: list[object] = []
        event.listen(pool, "connect", lambda conn, record: opened.append(conn))

        def read(_: int) -> int:
            with api.client(token) as http:
                return http.get("/v1/sessions?limit=1").status_code

        bursts = []
        with ThreadPoolExecutor(max_workers=24) as threads:
            for _ in range(3):
                before = len(opened)
                codes = list(threads.map(read, range(48)))
                assert set(codes) == {200}
                bursts.append(len(opened) - before)
        assert pool.size() == kept  # the client's 4 before api_db_pool_size
        assert sum(bursts) <= kept, bursts  # opened at most once each, then kept
        assert pool.checkedin() == len(opened) - pool.checkedout()
        assert bursts[1:] == [0, 0], bursts  # later bursts opened and closed 3-5 each
