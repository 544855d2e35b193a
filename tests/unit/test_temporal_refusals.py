"""Temporal's refusals told by whose fault they are: the request's (a plain VigilError,
the API's 400), or Temporal's (TemporalRefused: the API's 503 ``unavailable``, the CLI's
exit 3). Every refusal was the request's: an expired Temporal key said "400", and a
client never tried again."""

from __future__ import annotations

import pytest
from temporalio.service import RPCError, RPCStatusCode

from vigil.workers.api.errors import UNAVAILABLE, vigil_status
from vigil.workers.client import TemporalRefused, VigilError
from vigil.workers.client_errors import temporal_refusal


@pytest.mark.parametrize(
    "status",
    [
        RPCStatusCode.PERMISSION_DENIED,
        RPCStatusCode.UNAUTHENTICATED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.INTERNAL,
        RPCStatusCode.UNKNOWN,
    ],
)
def test_a_refusal_that_is_temporals_own_is_told_as_temporal_not_serving(
    status: RPCStatusCode,
) -> None:
    error = temporal_refusal(RPCError("the key has expired", status, b""))
    assert isinstance(error, TemporalRefused) and error.exit_code == 3
    assert str(error) == f"Temporal refused: the key has expired ({status.name.lower()})"
    assert vigil_status(error) == (503, UNAVAILABLE)


@pytest.mark.parametrize(
    "status",
    [
        RPCStatusCode.INVALID_ARGUMENT,
        RPCStatusCode.FAILED_PRECONDITION,
        RPCStatusCode.ALREADY_EXISTS,
        RPCStatusCode.OUT_OF_RANGE,
    ],
)
def test_a_refusal_of_the_request_itself_stays_the_callers(status: RPCStatusCode) -> None:
    error = temporal_refusal(RPCError("input too large", status, b""), "Temporal refused it")
    assert type(error) is VigilError and error.exit_code == 1
    assert str(error) == "Temporal refused it: input too large"
    assert vigil_status(error)[0] == 400
