"""Query parameters a route does not declare are refused (422), never ignored.

A misspelt ``?limt=5`` or ``?afterseq=3`` read as absent answers with the defaults (the
first page, every row) and nothing says why; refused, it names what was not understood and
what the route takes. What a route takes is read from its FastAPI dependant (its own query
parameters and those of its dependencies), so a route declares its parameters once, as it
always has. One dependency of the whole app does this for every route; on a route that
checks a token the refusal waits for the token check (``gate``), so a caller it refuses
hears 401 or 403 first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel

from vigil.workers.api.errors import INVALID, ApiError

C = TypeVar("C", bound=Callable[..., Any])

CLIENTS_ADD = frozenset({"_", "lastEventId"})
"""Parameters clients add on their own, taken on every route and ignored: a cache-buster
(``_``) and the last event id an EventSource polyfill sends when it reconnects."""

MAX_NAME_CHARS = 100
"""An unknown name is quoted up to this length (the rest is elided)."""


def declared_query(dependant: Dependant) -> list[str]:
    """The query parameters a route takes, by the names a caller sends, in the order the
    route and its dependencies declare them."""
    names: dict[str, None] = {}
    pending = [dependant]
    while pending:
        current = pending.pop(0)
        for field in current.query_params:
            model = field.field_info.annotation
            if isinstance(model, type) and issubclass(model, BaseModel):
                # A query parameter model: its fields are the parameters.
                names.update(dict.fromkeys(f.alias or n for n, f in model.model_fields.items()))
            else:
                names[field.alias] = None
        pending.extend(current.dependencies)
    return list(names)


_GATE = "_vigil_admits_callers"


def gate(fn: C) -> C:
    """Mark ``fn`` as a dependency that admits or refuses the caller (the token check): on
    a route that has one, an unknown parameter is refused only once it has admitted the
    caller (``refuse_deferred``), so a caller it refuses hears 401 or 403, not what the
    route takes."""
    setattr(fn, _GATE, True)
    return fn


def _gated(dependant: Dependant) -> bool:
    pending = [dependant]
    while pending:
        current = pending.pop(0)
        if getattr(current.call, _GATE, False):
            return True
        pending.extend(current.dependencies)
    return False


_DECLARED: dict[int, tuple[APIRoute, tuple[str, ...], bool]] = {}
"""Each route's ``declared_query`` and whether it has a gate, read once (by the route's id;
the route is kept with it, so the id is never another's)."""


def _route_query(route: APIRoute) -> tuple[tuple[str, ...], bool]:
    found = _DECLARED.get(id(route))
    if found is None or found[0] is not route:
        dependant = route.dependant
        found = (route, tuple(declared_query(dependant)), _gated(dependant))
        _DECLARED[id(route)] = found
    return found[1], found[2]


_DEFERRED = "vigil_unknown_query"


def refuse_deferred(request: Request) -> None:
    """Raise the refusal of unknown parameters held back until a gate admitted the caller."""
    refusal = getattr(request.state, _DEFERRED, None)
    if refusal is not None:
        raise refusal


def _quoted(name: str) -> str:
    return repr(name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS] + "...")


def refuse_unknown_query(
    *, free: Collection[Callable[..., Any]] = ()
) -> Callable[[Request], Awaitable[None]]:
    """A dependency answering 422 (``invalid_request``) to a query parameter the matched
    route does not declare. ``free`` holds the endpoints of routes that take any query
    string."""

    async def strict_query(request: Request) -> None:
        route = request.scope.get("route")
        if not isinstance(route, APIRoute) or route.endpoint in free:
            return
        declared, gated = _route_query(route)
        unknown = [
            k
            for k in dict.fromkeys(request.query_params.keys())
            if k not in declared and k not in CLIENTS_ADD
        ]
        if not unknown:
            return
        plural = "s" if len(unknown) > 1 else ""
        takes = (
            f"it takes {', '.join(map(repr, declared))}"
            if declared
            else "it takes no query parameters"
        )
        refusal = ApiError(
            422,
            INVALID,
            f"unknown query parameter{plural} {', '.join(map(_quoted, unknown))}: {takes}",
            details=[
                {
                    "loc": ["query", name],
                    "msg": "not a parameter of this route",
                    "type": "extra_forbidden",
                }
                for name in unknown
            ],
        )
        if gated:
            setattr(request.state, _DEFERRED, refusal)
            return
        raise refusal

    return strict_query
