"""The API server's PostgreSQL pool: ``api_db_pool_size`` connections stay open for its
requests (a client's 4 did before: a burst of starts opened and closed connections past
them). How a pool keeps its size through a burst: test_worker_db_pool.py."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.pool import QueuePool

from tests.support.api import running_api
from vigil.workers.settings import Settings
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration


def test_the_api_keeps_its_pool_of_connections(settings: Settings) -> None:
    kept = 7
    with running_api(settings.model_copy(update={"api_db_pool_size": kept})) as api:
        token = api.token(Scope.ADMIN)

        def read(_: int) -> int:
            with api.client(token) as http:
                return http.get("/v1/sessions?limit=1").status_code

        with ThreadPoolExecutor(max_workers=24) as threads:
            codes = list(threads.map(read, range(48)))
        assert set(codes) == {200}
        assert api.app is not None
        pool = api.app.state.client.engine.sync_engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.size() == kept  # the client's 4 before
