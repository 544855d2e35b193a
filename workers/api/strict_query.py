"""Query parameters a route does not declare are refused (422), never ignored; so is one
it declares given more than once (unless it takes a list).

A misspelt ``?limt=5`` or ``?afterseq=3`` read as absent answers with the defaults (the
first page, every row) and nothing says why; refused, it names what was not understood and
what the route takes. What a route takes is read from its FastAPI dependant (its own query
parameters and those of its dependencies), so a route declares its parameters once, as it
always has. One dependency of the whole app does this for every route; on a route that
checks a token the refusal waits for the token check (``gate``), so a caller it refuses
hears 401 or 403 first.
"""

from __future__ import annotations

import types
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar, Union, get_args, get_origin

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


def _takes_many(annotation: Any) -> bool:
    """Whether a parameter of this type takes several values (``?tag=a&tag=b``)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_takes_many(a) for a in get_args(annotation))
    return (origin or annotation) in (list, tuple, set, frozenset)


def _query_names(dependant: Dependant) -> dict[str, bool]:
    """Each query parameter a route takes, by the name a caller sends, in the order the
    route and its dependencies declare them: whether it takes several values."""
    names: dict[str, bool] = {}
    pending = [dependant]
    while pending:
        current = pending.pop(0)
        for field in current.query_params:
            model = field.field_info.annotation
            if isinstance(model, type) and issubclass(model, BaseModel):
                # A query parameter model: its fields are the parameters.
                names.update(
                    {f.alias or n: _takes_many(f.annotation) for n, f in model.model_fields.items()}
                )
            else:
                names[field.alias] = _takes_many(model)
        pending.extend(current.dependencies)
    return names


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


_DECLARED: dict[int, tuple[APIRoute, dict[str, bool], bool]] = {}
"""Each route's query parameters (``_query_names``) and whether it has a gate, read once
(by the route's id; the route is kept with it, so the id is never another's)."""


def _route_query(route: APIRoute) -> tuple[dict[str, bool], bool]:
    found = _DECLARED.get(id(route))
    if found is None or found[0] is not route:
        dependant = route.dependant
        found = (route, _query_names(dependant), _gated(dependant))
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
    route does not declare, or to one it declares given more than once (the route would
    read only one of the values, the last). ``free`` holds the endpoints of routes that
    take any query string."""

    async def strict_query(request: Request) -> None:
        route = request.scope.get("route")
        if not isinstance(route, APIRoute) or route.endpoint in free:
            return
        declared, gated = _route_query(route)
        sent = Counter(k for k, _ in request.query_params.multi_items())
        unknown = [k for k in sent if k not in declared and k not in CLIENTS_ADD]
        repeated = [k for k, n in sent.items() if n > 1 and k in declared and not declared[k]]
        if not unknown and not repeated:
            return
        said: list[str] = []
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            takes = (
                f"it takes {', '.join(map(repr, declared))}"
                if declared
                else "it takes no query parameters"
            )
            said.append(
                f"unknown query parameter{plural} {', '.join(map(_quoted, unknown))}: {takes}"
            )
        said += [
            f"query parameter {_quoted(name)} given {sent[name]} times: it takes one value"
            for name in repeated
        ]
        refusal = ApiError(
            422,
            INVALID,
            "; ".join(said),
            details=[
                {
                    "loc": ["query", name],
                    "msg": "not a parameter of this route",
                    "type": "extra_forbidden",
                }
                for name in unknown
            ]
            + [
                {
                    "loc": ["query", name],
                    "msg": f"given {sent[name]} times; takes one value",
                    "type": "repeated",
                }
                for name in repeated
            ],
        )
        if gated:
            setattr(request.state, _DEFERRED, refusal)
            return
        raise refusal

    return strict_query
