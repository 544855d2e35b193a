"""workflows/ does no I/O: checked by reading the source, without importing it."""

from __future__ import annotations

import ast
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
FORBIDDEN_MODULES = {
    "httpx",
    "sqlalchemy",
    "asyncpg",
    "minio",
    "structlog",
    "time",
    "random",
    "uuid",
    "socket",
    "subprocess",
    "requests",
    "os",
    "activities",
    "workers",
}
FORBIDDEN_CALLS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("date", "today"),
    ("datetime", "today"),
}


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"{path.name}:{node.lineno} imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{path.name}:{node.lineno} imports from {node.module}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if (name, node.func.attr) in FORBIDDEN_CALLS:
                found.append(f"{path.name}:{node.lineno} calls {name}.{node.func.attr}()")
        elif isinstance(node, ast.Name) and node.id == "open":
            found.append(f"{path.name}:{node.lineno} uses open()")
    return found


def test_workflow_sources_exist() -> None:
    assert list(WORKFLOWS.glob("*.py")), "no workflow modules found"


def test_no_io_in_workflows() -> None:
    problems = [v for path in sorted(WORKFLOWS.rglob("*.py")) for v in _violations(path)]
    assert problems == []


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import httpx\nfrom datetime import datetime\nx = datetime.now()\nimport random\n"
    )
    assert len(_violations(bad)) == 3
