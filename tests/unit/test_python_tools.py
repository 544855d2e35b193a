"""@vigil.tool: schemas from type hints, descriptions from docstrings, validation, context."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import Field

import vigil
from tests.support import py_tools
from vigil.activities.tools.docstrings import parse_docstring
from vigil.activities.tools.loader import ToolLoadError, load_python_tools
from vigil.activities.tools.python import ToolArgumentsInvalid, ToolContext
from vigil.activities.tools.runner import render_result


def test_the_schema_comes_from_type_hints_and_the_docstring() -> None:
    d = py_tools.word_count.describe()
    assert d.kind == "python" and d.name == "word_count" and d.effects == "none"
    assert d.description == "Count the words and lines of a text."
    assert d.parameters == {
        "type": "object",
        "properties": {
            "text": {"type": "string", "description": "The text to count."},
            "min_length": {
                "type": "integer",
                "default": 1,
                "description": "Words shorter than this are not counted.",
            },
        },
        "required": ["text"],
        "additionalProperties": False,
    }


def test_the_context_parameter_is_not_an_argument() -> None:
    d = py_tools.flaky.describe()
    assert set(d.parameters["properties"]) == {"journal", "failures"}
    assert py_tools.flaky.context_parameter == "ctx"
    assert d.max_attempts == 3


def test_options_reach_the_descriptor() -> None:
    @vigil.tool(name="gpu-render", effects="external", timeout_seconds=30, task_queue="gpu")
    async def render(scene: Literal["a", "b"], frames: Annotated[int, Field(ge=1)] = 1) -> str:
        """Render a scene."""
        return scene * frames

    d = render.describe()
    assert (d.name, d.effects, d.timeout_seconds, d.task_queue) == (
        "gpu-render",
        "external",
        30,
        "gpu",
    )
    assert d.parameters["properties"]["scene"] == {"enum": ["a", "b"], "type": "string"}
    assert d.parameters["properties"]["frames"]["minimum"] == 1


async def test_a_tool_stays_callable_as_a_function() -> None:
    assert await py_tools.word_count("a bb ccc", min_length=2) == py_tools.Count(words=2, lines=1)


def test_bad_arguments_get_a_short_reason() -> None:
    with pytest.raises(ToolArgumentsInvalid) as info:
        py_tools.word_count.validate({"text": 3, "extra": True})
    message = str(info.value)
    assert message.startswith("invalid arguments for word_count: ")
    assert "text: Input should be a valid string" in message
    assert "extra: Extra inputs are not permitted" in message


async def test_invoke_validates_coerces_and_injects_the_context() -> None:
    @vigil.tool
    async def where(times: int, ctx: vigil.ToolContext) -> str:
        """Say where the call runs."""
        ctx.heartbeat("outside a worker: a no-op")
        return f"{ctx.session_id}/{ctx.step}/{ctx.idempotency_key}" * times

    ctx = ToolContext(
        session_id="s", agent_id="a", step=4, tool="where", call_id="c1", idempotency_key="k"
    )
    assert await where.invoke({"times": "2"}, ctx) == "s/4/ks/4/k"
    with pytest.raises(ToolArgumentsInvalid, match="times: Field required"):
        await where.invoke({}, ctx)


async def test_any_parameter_name_works() -> None:
    @vigil.tool
    async def query(sql: str, schema: str = "public", json: bool = False) -> str:
        """Parameters named like pydantic's own attributes (warnings are errors here)."""
        return f"{schema}:{sql}:{json}"

    assert set(query.describe().parameters["properties"]) == {"sql", "schema", "json"}
    ctx = ToolContext(
        session_id="s", agent_id="a", step=1, tool="query", call_id="c", idempotency_key="k"
    )
    assert await query.invoke({"sql": "select 1", "schema": "ops"}, ctx) == "ops:select 1:False"
    with pytest.raises(ToolArgumentsInvalid, match="schema: Input should be a valid string"):
        query.validate({"sql": "x", "schema": 3})


def test_mistakes_are_refused_when_decorating() -> None:
    with pytest.raises(TypeError, match="needs an async function"):

        @vigil.tool
        def sync(x: int) -> int:  # type: ignore[arg-type]
            return x

    with pytest.raises(TypeError, match="parameter x needs a type hint"):

        @vigil.tool
        async def untyped(x) -> int:  # type: ignore[no-untyped-def]
            return 1

    with pytest.raises(ValueError, match="a tool name is letters"):

        @vigil.tool(name="server.tool")
        async def dotted() -> None:
            return None

    with pytest.raises(ValueError, match="effects is none, internal or external"):

        @vigil.tool(effects="sometimes")  # type: ignore[call-overload]
        async def vague() -> None:
            return None


@pytest.mark.parametrize(
    "doc",
    [
        """Do it.

        Args:
            path (str): Where to look.
                Relative to the project.
            depth: How deep.

        Returns:
            Nothing useful.
        """,
        """Do it.

        :param path: Where to look.
            Relative to the project.
        :param int depth: How deep.
        :returns: Nothing useful.
        """,
    ],
)
def test_docstring_styles(doc: str) -> None:
    summary, params = parse_docstring(doc)
    assert summary == "Do it."
    assert params == {"path": "Where to look. Relative to the project.", "depth": "How deep."}


def test_results_become_text_and_data() -> None:
    assert render_result("plain").text == "plain"
    assert render_result(None).text == "done"
    counted = render_result(py_tools.Count(words=1, lines=2))
    assert counted.text == '{"words": 1, "lines": 2}'
    assert counted.data == {"words": 1, "lines": 2}
    assert render_result([1, 2]).data is None


def test_loading_modules_and_attributes() -> None:
    tools = load_python_tools(["tests.support.py_tools"], entry_points=False)
    assert {"word_count", "flaky", "sleepy", "explode", "save_note", "whoami"} <= set(tools)
    one = load_python_tools(["tests.support.py_tools:whoami"], entry_points=False)
    assert list(one) == ["whoami"]
    with pytest.raises(ToolLoadError, match=r"cannot import tools module 'no_such_pkg\.tools'"):
        load_python_tools(["no_such_pkg.tools"], entry_points=False)
    with pytest.raises(ToolLoadError, match=r"holds no @vigil\.tool functions"):
        load_python_tools(["tests.support"], entry_points=False)


def test_loading_an_entry_point(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = tmp_path / "acme_tools-1.0.dist-info"  # type: ignore[operator]
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-tools\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[vigil.tools]\nacme = tests.support.py_tools\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "word_count" in load_python_tools([], entry_points=True)
    assert load_python_tools([], entry_points=False) == {}
