"""Trigger templates: {field.path} filled from the JSON body; a missing field is an error
naming it, never an empty string."""

from __future__ import annotations

import pytest

from vigil.activities.hooks.templates import TemplateError, placeholders, render

BODY = {"issue": {"number": 7, "title": "Crash", "labels": ["bug", "p1"]}, "ok": True}


def test_fields_lists_and_json_values_fill_in() -> None:
    assert render("#{issue.number}: {issue.title}", BODY) == "#7: Crash"
    assert render("{issue.labels.1} {ok}", BODY) == "p1 true"
    assert render("{issue.labels}", BODY) == '["bug", "p1"]'
    assert render("{{literal}} {issue.title}", BODY) == "{literal} Crash"


def test_a_missing_field_names_every_path() -> None:
    with pytest.raises(TemplateError, match=r"'issue\.body', 'nope'"):
        render("{issue.body} {nope} {issue.title}", BODY)
    with pytest.raises(TemplateError):
        render("{issue.labels.9}", BODY)


@pytest.mark.parametrize("bad", ["{", "}", "{a b}", "{}", "{a..b}"])
def test_malformed_templates_are_refused(bad: str) -> None:
    with pytest.raises(TemplateError):
        placeholders(bad)
