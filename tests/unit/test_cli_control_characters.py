"""Text from the record (a goal, a message, a reason, a tool's output) never reaches the
operator's terminal as control characters: the CLI shows C0 and C1 controls and bidi
overrides as visible, harmless characters, on a terminal and in a pipe, while its own
colours still work and ``--json`` stays exact JSON."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from rich.text import Text

from vigil.schema.printable import visible, visible_json
from vigil.workers.cli import follow, render
from vigil.workers.cli.common import SafeConsole, out, plain, table

HOSTILE = (
    "esc \x1b]0;PWNED\x07 title \x1b[31mred nul\x00 c1\x9b2J bidi\u202eevil\u2066x\u2069"
    " del\x7f cr\rback bs\x08 lone\ud800"
)
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def harmful(text: str, *, newlines: bool = True) -> list[str]:
    """The characters of ``text`` a terminal could act on (newline and tab are fine in
    multi-line content)."""
    allowed = "\n\t" if newlines else ""
    return [
        ch
        for ch in text
        if ch not in allowed
        and (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in BIDI or 0xD800 <= ord(ch) <= 0xDFFF)
    ]


def terminal() -> tuple[SafeConsole, io.StringIO]:
    """A console like the CLI's, writing to a colour terminal."""
    buffer = io.StringIO()
    console = SafeConsole(
        file=buffer, force_terminal=True, color_system="standard", width=200, highlight=False
    )
    return console, buffer


def without_styles(text: str) -> str:
    """Rendered output with the console's own SGR sequences (ESC [ ... m) taken out."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


# --- the rule ------------------------------------------------------------------------


def test_the_rule_shows_controls_as_pictures_and_keeps_newline_and_tab() -> None:
    shown = visible(HOSTILE + "\nnext\tcol")
    assert harmful(shown) == []
    assert "esc ␛]0;PWNED␇ title ␛[31mred nul␀ c1\ufffd2J bidi\ufffdevil\ufffdx\ufffd" in shown
    assert "del␡ cr␍back bs␈ lone\ufffd" in shown
    assert shown.endswith("\nnext\tcol")
    assert visible("a\nb\tc", keep="") == "a␊b␉c"
    assert visible("plain text, ünïcødé ✓ and emoji 🙂") == "plain text, ünïcødé ✓ and emoji 🙂"


any_text = st.lists(st.one_of(st.characters(), st.integers(0, 0x10FFFF).map(chr)), max_size=40).map(
    "".join
)


@given(any_text)
def test_the_rule_never_leaves_a_harmful_character_and_keeps_the_length(text: str) -> None:
    shown = visible(text, keep="")
    assert harmful(shown, newlines=False) == []
    assert len(shown) == len(text)  # one for one: styled spans and widths stay in place


@given(st.recursive(st.none() | st.integers() | any_text, st.lists, max_leaves=10))
def test_json_keeps_its_value_with_harmful_characters_escaped(value: Any) -> None:
    document = json.dumps(value, ensure_ascii=False)
    safe = visible_json(document)
    assert json.loads(safe) == value
    assert harmful(safe, newlines=False) == []


def test_markdown_export_uses_the_same_rule() -> None:
    from vigil.activities.record.reads import event_markdown
    from vigil.activities.record.store import StoredEvent

    moment = datetime(2025, 1, 1, tzinfo=UTC)
    event = StoredEvent(
        key="e1",
        kind="session_paused",
        step=1,
        actor="ana\x1b[2J",
        reason=HOSTILE,
        payload={},
        created_at=moment,
    )
    markdown = event_markdown(event)
    assert "by **ana␛[2J**" in markdown
    assert harmful(markdown.replace("\r", "")) == []  # Markdown keeps the text's line ends


# --- the CLI's output ----------------------------------------------------------------


def message(content: str) -> SimpleNamespace:
    return SimpleNamespace(
        seq=3,
        role="tool",
        name="http\x1b[2Jfetch",
        content=content,
        tool_calls=[{"name": "run\x9b", "arguments": '{"a": "\x1b]0;x\x07"}'}],
        tool_call_id="c1",
        step=1,
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
    )


def paused(reason: str) -> dict[str, Any]:
    return {
        "kind": "session_paused",
        "step": 2,
        "actor": "ana",
        "reason": reason,
        "payload": {},
        "created_at": "2025-01-01T00:00:00+00:00",
    }


def test_follow_shows_a_pause_reason_and_a_message_harmlessly_in_a_pipe() -> None:
    with out.capture() as captured:
        follow.print_event(paused("r\x1b[2Jclear"), as_json=False)
        render.print_message(message(HOSTILE + "\nsecond line"), as_json=False)
        follow.print_approval(
            "s1", {"payload": {"tool": "t\x1b[5m", "arguments": HOSTILE}}, None, False
        )
    shown = captured.get()
    assert "paused by ana: r␛[2Jclear" in shown
    assert "esc ␛]0;PWNED␇ title ␛[31mred nul␀" in shown
    assert "\nsecond line" in shown  # a message's own lines stay lines
    assert "t␛[5m(" in shown
    assert harmful(shown) == []


def test_an_event_line_stays_one_line() -> None:
    with out.capture() as captured:
        follow.print_event(paused("lunch\n— resumed by admin"), as_json=False)
    assert captured.get().count("\n") == 1
    assert "lunch␊— resumed by admin" in captured.get()


def test_on_a_terminal_the_data_is_harmless_and_the_colours_stay() -> None:
    console, buffer = terminal()
    console.print(f"[bold red]error:[/] {HOSTILE}")
    console.print(HOSTILE, markup=False)
    console.print(Text(HOSTILE, style="green"))
    console.print(table(("id", "goal"), [("s1", HOSTILE)]))
    shown = buffer.getvalue()
    assert "\x1b[1;31merror:" in shown  # vigil's own style, as an escape sequence
    assert "\x1b[32m" in shown
    assert "PWNED\x07" not in shown and "\x1b]" not in shown and "\x1b[31mred" not in shown
    assert harmful(without_styles(shown)) == []
    # Each shown; a Text made elsewhere has lost BEL, BS and CR (rich drops them) but
    # shows the rest.
    assert without_styles(shown).count("esc ␛]0;PWNED␇ title ␛[31mred") == 3
    assert "esc ␛]0;PWNED title ␛[31mred nul␀ c1\ufffd2J" in without_styles(shown)


def test_json_output_is_exact_and_harmless() -> None:
    for console, buffer in (terminal(), (SafeConsole(file=io.StringIO()), None)):
        sink = buffer if buffer is not None else console.file
        assert isinstance(sink, io.StringIO)
        console.print_json(json.dumps({"goal": HOSTILE, "n": [1, "é✓"]}), indent=None)
        rendered = without_styles(sink.getvalue())
        assert json.loads(rendered) == {"goal": HOSTILE, "n": [1, "é✓"]}
        assert harmful(rendered) == []
        assert "é✓" in rendered  # other text stays as it is


def test_table_cells_are_measured_as_shown() -> None:
    cells = plain("a\x1b[2Jb")
    assert cells[0].plain == "a␛[2Jb"
    assert cells[0].cell_len == 6


def test_a_crlf_line_end_stays_where_newlines_do() -> None:
    """CRLF text (an HTTP body, a file from Windows) showed ␍ at every line end; a CR on
    its own, which could overwrite what the line shows, is still replaced."""
    assert visible("one\r\ntwo\r\n") == "one\r\ntwo\r\n"
    assert visible("fake\rreal\r\n") == "fake\u240dreal\r\n"
    assert visible("one\r\ntwo", keep="") == "one\u240d\u240atwo"
