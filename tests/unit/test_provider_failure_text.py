"""How a model provider's failure reads where people see it (a retry note, a failed
session): the HTTP status when the provider answered, nothing in its place when it did
not (a stray ``-`` stood there: ``transient failure -: connection failed``)."""

from __future__ import annotations

from vigil.activities.models.base import ProviderError
from vigil.activities.session import _provider_failure


def test_a_failure_with_a_status_names_it() -> None:
    failed = _provider_failure(ProviderError("Internal Server Error", retryable=True, status=500))
    assert failed.message == "model provider transient failure 500: Internal Server Error"
    refused = _provider_failure(ProviderError("bad key", retryable=False, status=401), "backup")
    assert refused.message == "model provider refused the request 401: bad key (connection backup)"


def test_a_failure_without_an_answer_has_no_status_in_its_place() -> None:
    failed = _provider_failure(
        ProviderError("connection failed (ClientConnectorError)", retryable=True)
    )
    assert (
        failed.message
        == "model provider transient failure: connection failed (ClientConnectorError)"
    )
