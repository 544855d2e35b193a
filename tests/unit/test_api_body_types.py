"""Every number and boolean field of every JSON request body of the API is strict: a bool
where a number is expected, a string where a number or a bool is expected, or a number
where a bool is expected is refused (the API's 422), never coerced (``true`` taken as a
1-second budget, ``"yes"`` as a paused schedule). An integer is still a float's value.

The bodies are found from the routes themselves (and the agent definition body, which its
route reads by hand), so a field added later is held to the same rule."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from vigil.workers.api.agents import ApplyRequest
from vigil.workers.api.app import routers


def _body_models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = [ApplyRequest]
    for router in routers():
        for route in router.routes:
            if not isinstance(route, APIRoute):
                continue
            for param in route.dependant.body_params:
                found.extend(_models_in(param.field_info.annotation))
    return list(dict.fromkeys(found))


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in get_args(annotation):
        yield from _models_in(arg)


def _kinds(annotation: Any) -> set[str]:
    """``number`` / ``bool`` for the scalar types a field's annotation takes directly (its
    Optional, Union and Annotated unwrapped)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _kinds(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return set().union(*(_kinds(arg) for arg in get_args(annotation)))
    if annotation is bool:
        return {"bool"}
    if annotation in (int, float):
        return {"number"}
    return set()


def _fields(model: type[BaseModel], at: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """(path, kind) of every number and bool field, nested models' too."""
    for name, info in model.model_fields.items():
        path = (*at, info.alias or name)
        for kind in sorted(_kinds(info.annotation)):
            yield path, kind
        for nested in _models_in(info.annotation):
            yield from _fields(nested, path)


def _cases() -> list[Any]:
    return [
        pytest.param(model, path, kind, id=f"{model.__name__}.{'.'.join(path)}")
        for model in _body_models()
        for path, kind in _fields(model)
    ]


def _nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body: Any = value
    for name in reversed(path):
        body = {name: body}
    assert isinstance(body, dict)
    return body


def _errors_at(top: type[BaseModel], path: tuple[str, ...], value: Any) -> list[str]:
    """The errors validation gives at ``path`` for ``value`` there (as FastAPI validates a
    body: the Python value ``json.loads`` made); other fields' errors are not looked at."""
    try:
        top.model_validate(_nest(path, value))
    except ValidationError as exc:
        return [e["type"] for e in exc.errors() if tuple(map(str, e["loc"]))[: len(path)] == path]
    return []


def test_the_bodies_are_found() -> None:
    names = {m.__name__ for m in _body_models()}
    assert {"StartRequest", "KeyedMessageRequest", "MemoryCreate", "ScheduleCreate"} <= names
    paths = {(m.__name__, path) for m in _body_models() for path, _ in _fields(m)}
    assert ("StartRequest", ("budget", "max_seconds")) in paths
    assert ("KeyedMessageRequest", ("budget", "max_cost_usd")) in paths
    assert ("ScheduleCreate", ("paused",)) in paths


@pytest.mark.parametrize(("model", "path", "kind"), _cases())
def test_a_number_or_bool_field_takes_only_its_own_json_type(
    model: type[BaseModel], path: tuple[str, ...], kind: str
) -> None:
    if kind == "number":
        wrong: list[Any] = [True, False, "1", "0.5", "true", [1], {"n": 1}]
        right: Any = 1  # an integer: fine for a float field as for an int one
    else:
        wrong = [1, 0, 1.0, "yes", "true", "1", "", [True]]
        right = True
    for value in wrong:
        assert _errors_at(model, path, value), (path, value)
    assert _errors_at(model, path, right) == [], (path, right)
