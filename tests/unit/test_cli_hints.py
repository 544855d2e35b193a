"""The commands in the CLI's hints are written as the CLI was started: `uv run vigil`
under `uv run` (which sets UV), else `vigil`; prose that says vigil stays as it is."""

from __future__ import annotations

import pytest

from vigil.workers.cli.common import as_invoked, command_prefix


def test_plain_vigil_without_uv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UV", raising=False)
    assert command_prefix() == "vigil"
    assert as_invoked("run `vigil stack up`") == "run `vigil stack up`"


@pytest.mark.parametrize(
    ("said", "shown"),
    [
        ("run `vigil stack up` first", "run `uv run vigil stack up` first"),
        (
            "start one with `vigil worker --task-queue q`",
            "start one with `uv run vigil worker --task-queue q`",
        ),
        (
            "no tokens (create one: vigil token create)",
            "no tokens (create one: uv run vigil token create)",
        ),
        ("(vigil trigger create NAME ...)", "(uv run vigil trigger create NAME ...)"),
        ("vigil memory reindex --agent a", "uv run vigil memory reindex --agent a"),
        # Already written in full, prose, and words that are no command stay.
        ("run `uv run vigil stack up`", "run `uv run vigil stack up`"),
        ("let vigil start its own", "let vigil start its own"),
        ("not a vigil session archive", "not a vigil session archive"),
        ("`vigil nonsense`", "`vigil nonsense`"),
    ],
)
def test_uv_run_vigil_under_uv(monkeypatch: pytest.MonkeyPatch, said: str, shown: str) -> None:
    monkeypatch.setenv("UV", "/usr/local/bin/uv")
    assert command_prefix() == "uv run vigil"
    assert as_invoked(said) == shown
