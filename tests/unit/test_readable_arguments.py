"""What a person deciding an approval reads of a call's arguments: the model's JSON with
its letters as written (a model's ASCII escapes made them unreadable), while characters
that hide or reorder text (controls, bidi and zero-width marks) stay escaped."""

from __future__ import annotations

import json

from vigil.schema.payloads import readable_arguments


def test_letters_are_shown_as_written() -> None:
    raw = json.dumps({"recipients": ["chef@münchen.de"], "text": "мой пароль"})
    assert "\\u" in raw  # as a model (or json.dumps) escapes them
    shown = readable_arguments(raw)
    assert "chef@münchen.de" in shown and "мой пароль" in shown
    assert json.loads(shown) == json.loads(raw)


def test_characters_that_disguise_text_stay_escaped() -> None:
    raw = json.dumps(
        {"url": "https://evil.test/\u202egnp.exe", "z": "a\u200bb\x07", "p": "\U000f0001"}
    )
    shown = readable_arguments(raw)
    assert "\u202e" not in shown and "\u200b" not in shown and "\x07" not in shown
    assert "\\u202e" in shown and json.loads(shown) == json.loads(raw)


def test_text_that_is_no_json_object_is_left_as_it_came() -> None:
    for raw in ("{not json", "", "[1, 2]", '"a string"'):
        assert readable_arguments(raw) == raw


def test_a_model_calls_preview_is_the_readable_one() -> None:
    from vigil.activities.session import SessionActivities

    raw = json.dumps({"content": "мой пароль"})
    (ref,) = SessionActivities._refs([{"id": "c1", "name": "remember", "arguments": raw}], [])
    assert "мой пароль" in ref.arguments_preview


def test_a_word_mixing_latin_with_look_alike_letters_stays_escaped() -> None:
    """Shown as written, `https://\\u0430pple.com` (a Cyrillic a) reads as apple.com."""
    raw = json.dumps({"url": "https://\u0430pple.com/login", "note": "мой пароль", "x": "e\u0301"})
    shown = readable_arguments(raw)
    assert "\\u0430pple" in shown and "\u0430pple" not in shown
    assert "мой пароль" in shown  # a word of one script is shown as written
    assert "\\u0301" in shown  # a combining mark is escaped
    assert json.loads(shown) == json.loads(raw)
    for invisible in ("\u3164", "\u2800", "\u115f", "\uffa0"):
        assert invisible not in readable_arguments(json.dumps({"t": f"a{invisible}b"}))
