"""Names and ids are checked whole: Python's ``$`` also matches before a last line feed,
so ``re.match`` with ``^...$`` took ``"ops\\n"`` as a name (a session id so taken was
started, and its export's header then broke the HTTP answer)."""

from __future__ import annotations

import re

import pytest

from vigil.activities.credentials import check_name
from vigil.activities.hooks.templates import TemplateError, placeholders
from vigil.activities.tools.python import tool
from vigil.schema.agents import NAME_PATTERN
from vigil.workers.settings import KEY_ID


def test_a_credential_name_ending_in_a_line_feed_is_refused() -> None:
    assert check_name("github-token") is None
    assert "bad credential name" in (check_name("github-token\n") or "")


def test_a_tool_name_ending_in_a_line_feed_is_refused() -> None:
    async def fetch() -> str:
        return ""

    with pytest.raises(ValueError, match="a tool name is"):
        tool(name="fetch\n")(fetch)


def test_other_names_are_matched_whole() -> None:
    assert re.fullmatch(NAME_PATTERN, "ops") and not re.fullmatch(NAME_PATTERN, "ops\n")
    assert KEY_ID.fullmatch("k1") and not KEY_ID.fullmatch("k1\n")
    assert placeholders("{issue.title}") == ["issue.title"]
    with pytest.raises(TemplateError, match="bad placeholder"):
        placeholders("{issue.title\n}")
