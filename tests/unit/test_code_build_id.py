"""An unversioned worker's build id: a digest of the code sessions replay on, cheap to make."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vigil import __version__
from vigil.workers.temporal import code_build_id


@pytest.fixture
def package(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "pkg_build_id_probe"
    (root / "inner").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "inner" / "__init__.py").write_text("")
    (root / "inner" / "flow.py").write_text("STEP = 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield root.name, root
    finally:
        sys.path.remove(str(tmp_path))
        code_build_id.cache_clear()


def test_the_build_id_follows_the_code(package: tuple[str, Path]) -> None:
    name, root = package
    first = code_build_id((name,))
    assert first.startswith(f"vigil-{__version__}-")
    code_build_id.cache_clear()
    assert code_build_id((name,)) == first  # the same code, the same id
    (root / "inner" / "flow.py").write_text("STEP = 2\n")
    code_build_id.cache_clear()
    assert code_build_id((name,)) != first  # a changed workflow file, another build


def test_vigils_own_code_makes_one_id() -> None:
    assert code_build_id() == code_build_id()
    assert code_build_id() != code_build_id(("vigil.workflows",))


def test_not_a_package_is_refused() -> None:
    with pytest.raises(ValueError, match="not a package"):
        code_build_id(("vigil.workers.temporal",))
