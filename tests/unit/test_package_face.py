"""vigil has one public face: every module imports the spine as ``vigil.*``.

A bare ``import schema`` would load a second copy of a module (or another distribution's
``schema`` package) next to ``vigil.schema``; checked by reading the source.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPINE = {"workflows", "activities", "workers", "schema"}
SOURCES = [ROOT / d for d in (*SPINE, "tests", "bench")]


def _bare_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found += [
            f"{path.name}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in SPINE
        ]
    return found


def test_checker_sees_a_bare_import(tmp_path: Path) -> None:
    bad = tmp_path / "probe.py"
    bad.write_text("from schema.payloads import Budget\nimport workers.cli\nimport vigil.schema\n")
    assert len(_bare_imports(bad)) == 2


def test_no_module_imports_the_spine_bare() -> None:
    problems = [v for d in SOURCES for p in sorted(d.rglob("*.py")) for v in _bare_imports(p)]
    assert problems == []


def test_the_face_exports_lazily() -> None:
    import vigil

    assert "VigilClient" in dir(vigil)
    assert vigil.StartSessionInput.__module__ == "vigil.schema.payloads"


def _imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def test_activities_never_import_the_workers() -> None:
    """The worker builds clients from settings and hands them in; the dependency never
    points back from activities/ to workers/ (settings, logging, factories)."""
    upward = [
        f"{p.relative_to(ROOT)} imports {m}"
        for p in sorted((ROOT / "activities").rglob("*.py"))
        for m in _imports_of(p)
        if m == "vigil.workers" or m.startswith("vigil.workers.")
    ]
    assert upward == []


def test_schema_imports_nothing_of_ours_but_schema() -> None:
    # Alembic's env.py is a program (it reads the database URL from settings), not data.
    outward = [
        f"{p.relative_to(ROOT)} imports {m}"
        for p in sorted((ROOT / "schema").rglob("*.py"))
        if "migrations" not in p.parts
        for m in _imports_of(p)
        if m.startswith("vigil.") and not m.startswith("vigil.schema")
    ]
    assert outward == []
