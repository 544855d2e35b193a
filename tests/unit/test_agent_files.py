"""Agent files: valid TOML and YAML load the same spec; every error names the file, the
line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.activities.agents.files import AgentFileError, load, parse
from vigil.activities.agents.runtime import render_prompt
from vigil.schema.agents import APPLYING, AgentRuntime, AgentSpec

TOML = """\
name = "researcher"
description = "Reads the web, carefully."
system_prompt = "You are {agent}. Goal: {goal}. Tone: {tone}."

[variables]
tone = "dry"

[model]
connection = "default"
temperature = 0.2

[[tools]]
name = "http_fetch"
approve_when = [{ argument = "url", host_not_in = ["example.com"] }]

[[tools]]
name = "write_artifact"
approval = "never"

[budget]
max_steps = 12
"""

YAML = """\
name: researcher
description: Reads the web, carefully.
system_prompt: "You are {agent}. Goal: {goal}. Tone: {tone}."
variables:
  tone: dry
model:
  connection: default
  temperature: 0.2
tools:
  - name: http_fetch
    approve_when:
      - argument: url
        host_not_in: [example.com]
  - name: write_artifact
    approval: never
budget:
  max_steps: 12
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(AgentFileError) as caught:
        load(path)
    return str(caught.value).splitlines()


def test_toml_and_yaml_give_the_same_spec_and_hash(tmp_path: Path) -> None:
    a = load(_write(tmp_path, "a.toml", TOML))
    b = load(_write(tmp_path, "b.yaml", YAML))
    assert a.spec == b.spec
    assert a.content_hash == b.content_hash
    assert [t.name for t in a.tools] == ["http_fetch", "write_artifact", "finish"]
    fetch = a.tools[0]
    assert fetch.effects == "external" and fetch.approve_when[0].host_not_in == ["example.com"]


def test_formatting_does_not_change_the_hash(tmp_path: Path) -> None:
    spaced = TOML.replace(" = ", "   =   ") + "\n# a comment\n"
    assert load(_write(tmp_path, "a.toml", TOML)).content_hash == (
        load(_write(tmp_path, "b.toml", spaced)).content_hash
    )


def test_toml_errors_name_line_and_field(tmp_path: Path) -> None:
    bad = TOML.replace('approval = "never"', 'approval = "sometimes"').replace(
        "temperature = 0.2", "temperature = 7\ntopp = 1"
    )
    path = _write(tmp_path, "bad.toml", bad)
    lines = _problems(path)
    lines_by_field = {line.split(": ")[1]: line for line in lines}
    assert lines_by_field["model.temperature"].startswith(f"{path}:10: model.temperature: ")
    assert "less than or equal to 2" in lines_by_field["model.temperature"]
    assert lines_by_field["model.topp"] == f"{path}:11: model.topp: unknown field"
    assert lines_by_field["tools[1].approval"].startswith(f"{path}:19: tools[1].approval: ")


def test_yaml_errors_name_line_and_field(tmp_path: Path) -> None:
    bad = YAML.replace("approval: never", "approval: sometimes").replace(
        "  max_steps: 12", "  max_steps: many"
    )
    path = _write(tmp_path, "bad.yaml", bad)
    lines = _problems(path)
    assert any(ln.startswith(f"{path}:15: tools[1].approval: ") for ln in lines), lines
    assert any(ln.startswith(f"{path}:17: budget.max_steps: ") for ln in lines), lines


@pytest.mark.parametrize(
    ("field", "toml_line", "value", "line"),
    [
        ("model.batch_ms", "temperature = 0.2", "batch_ms = true", 11),
        ("model.temperature", "temperature = 0.2", 'temperature = "0.2"', 10),
        ("model.max_tokens", "temperature = 0.2", "max_tokens = 500.0", 11),
        ("budget.max_steps", "max_steps = 12", "max_steps = true", 21),
        ("budget.max_cost_usd", "max_steps = 12", 'max_cost_usd = "5"', 22),
    ],
)
def test_a_number_given_as_true_or_text_is_an_error(
    tmp_path: Path, field: str, toml_line: str, value: str, line: int
) -> None:
    """Was read as 1 or as the number in the text: ``batch_ms = true`` gave batches of 1 ms,
    ``max_steps = true`` a session of one step."""
    replaced = (
        value if toml_line.split(" =")[0] == value.split(" =")[0] else f"{toml_line}\n{value}"
    )
    path = _write(tmp_path, "typed.toml", TOML.replace(toml_line, replaced))
    lines = _problems(path)
    assert any(ln.startswith(f"{path}:{line}: {field}: ") for ln in lines), lines


def test_syntax_errors_name_the_line(tmp_path: Path) -> None:
    toml = _write(tmp_path, "broken.toml", 'name = "x"\n[model\nconnection = "a"\n')
    assert _problems(toml)[0].startswith(f"{toml}:2: not valid TOML")
    yml = _write(tmp_path, "broken.yaml", "name: x\nmodel:\n  connection: [a\n")
    assert _problems(yml)[0].startswith(f"{yml}:")
    assert "not valid YAML" in _problems(yml)[0]


def test_checks_beyond_the_schema(tmp_path: Path) -> None:
    bad = TOML.replace("Tone: {tone}", "Tone: {mood}").replace(
        'host_not_in = ["example.com"]', 'matches = "(unclosed"'
    )
    path = _write(tmp_path, "semantic.toml", bad)
    placeholder, regex = _problems(path)
    assert placeholder.startswith(f"{path}:3: system_prompt: placeholder {{mood}}")
    assert regex.startswith(
        f"{path}:14: tools[0].approve_when[0].matches: not a regular expression"
    )


@pytest.mark.parametrize(
    "placeholder", ["{goal:d}", "{goal:>400000000}", "{goal!r}", "{goal:{agent.__class__}}"]
)
def test_a_placeholder_with_a_format_spec_or_conversion_is_refused(
    tmp_path: Path, placeholder: str
) -> None:
    """Applied, ``{goal:d}`` failed every start (a 500 over the API, a traceback in the
    CLI; keyed messages and schedules waited without end), and ``{goal:>400000000}``
    built a 400 MB prompt per start."""
    path = _write(tmp_path, "spec.toml", f'name = "x"\nsystem_prompt = "Do {placeholder}"\n')
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:2: system_prompt: placeholder {placeholder}: use plain"), (
        problem
    )


def test_a_stored_prompt_with_a_format_spec_renders_its_value_alone() -> None:
    """A version stored before the check: the spec is not applied (nor the conversion),
    and a name without a value stays as written."""
    spec = AgentSpec.model_construct(
        name="x", system_prompt="{goal:>400000000}|{goal!r}|{agent:d}|{nope:x}|{{lit}}",
        variables={},
    )  # fmt: skip
    assert render_prompt(spec, "g") == "g|g|x|{nope:x}|{lit}"


def test_an_approval_pattern_that_needs_backtracking_is_refused(tmp_path: Path) -> None:
    """Patterns are matched in linear time: one with lookahead or a backreference cannot
    be, and is refused at its line rather than left to Python's backtracking matcher."""
    bad = TOML.replace('host_not_in = ["example.com"]', 'matches = "(?=secret)s"')
    path = _write(tmp_path, "lookahead.toml", bad)
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:14: tools[0].approve_when[0].matches: "), problem
    assert "in linear time, with RE2" in problem, problem


def test_unknown_tool_names_its_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "tool.toml", TOML.replace('name = "write_artifact"', 'name = "teleport"')
    )
    (line,) = _problems(path)
    assert line.startswith(f"{path}:17: tools[1].name: unknown tool 'teleport'"), line


def test_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(AgentFileError, match="one mapping of fields"):
        parse("- a\n- b\n", tmp_path / "list.yaml", "yaml")


def _alias_bomb(levels: int) -> str:
    """A few hundred bytes whose aliases stand for 9**levels values."""
    lines = ["name: bomb", 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for n in range(1, levels + 1):
        prev = f"*a{n - 1}"
        lines.append(f"a{n}: &a{n} [{', '.join([prev] * 9)}]")
    return "\n".join(lines) + "\n"


def test_yaml_aliases_that_expand_past_the_limit_are_refused(tmp_path: Path) -> None:
    """A 400-byte file whose aliases stand for 9**9 values held the API for minutes while
    it was expanded and validated; it is refused at once, naming the line."""
    path = _write(tmp_path, "bomb.yaml", _alias_bomb(9))
    lines = _problems(path)
    # The line of the key whose value takes the file past the limit (a5: 9**5 values
    # and more), not the document's first line.
    assert lines == [
        f"{path}:7: the file expands to more than 100,000 values through its aliases"
    ], lines
    # A few aliases, as a file sharing a list between keys uses them, are fine.
    shared = YAML.replace(
        "        host_not_in: [example.com]", "        host_not_in: &hosts [a.com]"
    )
    shared = shared.replace(
        "    approval: never",
        "    approval: never\n    approve_when:\n"
        "      - argument: url\n        host_not_in: *hosts",
    )
    agent = load(_write(tmp_path, "shared.yaml", shared))
    assert agent.spec.tools[1].approve_when[0].host_not_in == ["a.com"]


def test_a_yaml_key_given_twice_is_an_error_at_its_line(tmp_path: Path) -> None:
    """`name: a` then `name: b` applied agent b without a word: the second key is refused
    at its line, as TOML refuses it."""
    path = _write(tmp_path, "twice.yaml", "name: first\ndescription: d\nname: second\n")
    lines = _problems(path)
    assert lines == [f"{path}:3: duplicate key 'name' (first at line 1)"], lines


def test_yaml_numbers_in_exponent_form_are_numbers(tmp_path: Path) -> None:
    """YAML 1.1 (PyYAML's) reads ``1e3`` and ``5e-1``, which have no dot, as text: with an
    agent file's strict numbers they were refused as "not a valid number"."""
    text = YAML.replace("  temperature: 0.2", "  temperature: 5e-1\n  max_tokens: 1000")
    text += "approval_timeout_seconds: 1e3\n"
    spec = load(_write(tmp_path, "exp.yaml", text)).spec
    assert (spec.model.temperature, spec.approval_timeout_seconds) == (0.5, 1000.0)


@pytest.mark.parametrize(
    ("field", "toml_line", "value", "line"),
    [
        ("model.model", "temperature = 0.2", 'model = "gpt\\u0000x"', 11),
        (
            "description",
            'description = "Reads the web, carefully."',
            'description = "a\\u0000b"',
            2,
        ),
        ("tools[0].approve_when[0].host_not_in", '["example.com"]', '["ex\\u0000.com"]', 14),
    ],
)
def test_an_escaped_nul_in_a_one_line_field_is_an_error(
    tmp_path: Path, field: str, toml_line: str, value: str, line: int
) -> None:
    """Was applied: a model name no provider takes, a description a listing shows as ␀."""
    replaced = (
        value
        if toml_line.split(" =")[0] == value.split(" =")[0] or toml_line.startswith("[")
        else f"{toml_line}\n{value}"
    )
    path = _write(tmp_path, "nul.toml", TOML.replace(toml_line, replaced))
    lines = _problems(path)
    assert any(
        ln.startswith(f"{path}:{line}: {field}: ") and "must not contain NUL" in ln for ln in lines
    ), lines


def test_an_mcp_command_with_nul_is_an_error_and_prose_may_hold_it(tmp_path: Path) -> None:
    server = '\n[[mcp_servers]]\nname = "m"\ncommand = ["py\\u0000thon", "a.py"]\n'
    lines = _problems(_write(tmp_path, "mcp.toml", TOML + server))
    assert any("mcp_servers[0].command: " in ln and "NUL" in ln for ln in lines), lines
    prose = TOML.replace("Tone: {tone}.", "Tone: {tone}.\\u0000").replace('"dry"', '"d\\u0000ry"')
    spec = load(_write(tmp_path, "prose.toml", prose)).spec
    assert spec.system_prompt is not None and spec.system_prompt.endswith("\x00")
    assert spec.variables["tone"] == "d\x00ry"


def test_a_version_applied_before_the_checks_still_reads_and_runs() -> None:
    """Every stored version is read back through the spec, and a session's runtime holds
    its model and memory settings: one applied with a NUL or a shared namespace before the
    checks existed must not become a definition no session can read (or replay)."""
    data = {
        "name": "older",
        "description": "a\x00b",
        "model": {"model": "m\x00"},
        "memory": {"read": ["ops"], "write": "ops"},
    }
    with pytest.raises(ValueError, match="must not contain NUL"):
        AgentSpec.model_validate(data, context=APPLYING)
    assert AgentSpec.model_validate(data).description == "a\x00b"
    runtime = AgentRuntime.model_validate(
        {"agent_id": "older", "model": data["model"], "memory": data["memory"]}
    )
    assert runtime.model.model == "m\x00" and runtime.memory.read == ["ops"]


@pytest.mark.parametrize(
    ("line", "field"), [('read = ["ops"]', "read"), ('write = "ops"', "write")]
)
def test_shared_memory_namespaces_are_refused_not_ignored(
    tmp_path: Path, line: str, field: str
) -> None:
    """Declared and applied, but no part of vigil read them: an agent given another's
    namespace went on reading and writing only its own memories."""
    path = _write(tmp_path, "shared.toml", TOML + f"\n[memory]\n{line}\n")
    lines = _problems(path)
    assert any(f"memory.{field}: shared memory namespaces are not supported" in ln for ln in lines)
    assert AgentSpec.model_validate({"name": "older", "memory": {"read": ["ops"]}}).memory.read


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("yaml", "name: deep\nx: " + "[" * 1000 + "]" * 1000 + "\n"),
        ("toml", 'name = "deep"\nx = ' + "[" * 1000 + "]" * 1000 + "\n"),
        ("yaml", "name: deep\nx: " + "[" * 100 + "]" * 100 + "\n"),
    ],
    ids=["yaml-1000", "toml-1000", "yaml-100"],
)
def test_a_file_nested_too_deeply_is_an_error(tmp_path: Path, kind: str, text: str) -> None:
    """A value nested a thousand levels deep crashed the parser (RecursionError: a 500 from
    the API, a traceback from the CLI); one nested past what a definition may hold is
    refused as JSON arguments are, before its fields are checked."""
    with pytest.raises(AgentFileError, match="nests deeper than 64 levels"):
        parse(text, tmp_path / f"deep.{kind}", kind)


def test_a_misspelt_field_or_tool_names_the_one_meant(tmp_path: Path) -> None:
    """`system_promt: unknown field` and `unknown tool 'write_artifcat'` left the reader to
    find the right spelling in the docs."""
    bad = TOML.replace("temperature = 0.2", "temperature = 0.2\ntemprature = 5\nmax_stepz = 5")
    path = _write(tmp_path, "typo.toml", bad)
    lines = {line.split(": ")[1]: line for line in _problems(path)}
    assert lines["model.temprature"].endswith("unknown field (did you mean 'temperature'?)")
    # Matched against [model]'s own fields: max_steps is the budget's, not the model's.
    assert lines["model.max_stepz"].endswith("unknown field"), lines
    path = _write(
        tmp_path, "tool.toml", TOML.replace('name = "write_artifact"', 'name = "write_artifcat"')
    )
    (line,) = _problems(path)
    assert "unknown tool 'write_artifcat' (did you mean 'write_artifact'?): " in line, line
    far = _write(tmp_path, "far.toml", TOML.replace('name = "write_artifact"', 'name = "teleport"'))
    (line,) = _problems(far)
    assert "did you mean" not in line, line
