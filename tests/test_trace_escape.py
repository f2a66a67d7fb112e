"""Escaping for each sink a trace is shown in: what a hostile path or upstream error
text becomes in a terminal, in Mermaid, in SVG and HTML."""

from __future__ import annotations

import re
import unicodedata
import xml.etree.ElementTree as ET

import pytest

from modgate.trace.escape import markup, mermaid, terminal

try:
    from hypothesis import given
    from hypothesis import strategies as st
except ImportError:  # the property tests need hypothesis; the tables below do not
    given = None  # type: ignore[assignment]

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m %%{init: {'theme':'dark'}}%% <script>a(\"1\")</script>;#\n\u202e"
# Mermaid: characters it reads as they are, and entity codes (`#60;`), nothing else.
MERMAID_TEXT = re.compile(r"(?:[A-Za-z0-9 ._/@:()\[\]!?*=~',^|$+-]|#\d+;)*")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("example.com/m@v1.0.0", "example.com/m@v1.0.0"),
        ("/\x1b]0;pwned\x07/@v/list", "/\\x1b]0;pwned\\x07/@v/list"),
        ("a\nb\r\tc", "a\\x0ab\\x0d\\x09c"),
        ("\x9b31m", "\\x9b31m"),  # C1: the one-byte CSI
        ("abc\u202edef", "abc\\u202edef"),  # a bidi override turns the rest around
        ("a\\x1b", "a\\\\x1b"),  # a backslash is escaped too: the escapes are unambiguous
        ("Ünïcode ok", "Ünïcode ok"),
    ],
)
def test_terminal_writes_every_control_out(text: str, shown: str) -> None:
    assert terminal(text) == shown


def test_mermaid_keeps_module_paths_readable_and_encodes_its_own_syntax() -> None:
    assert mermaid("GET example.com/m@v1.2.3+incompatible (zip)") == (
        "GET example.com/m@v1.2.3+incompatible (zip)"
    )
    assert mermaid("%%{init}%%") == "#37;#37;#123;init#125;#37;#37;"
    assert mermaid("<script>") == "#60;script#62;"
    assert mermaid("a;b#c\nd") == "a#59;b#35;c#92;x0ad"  # one line: the newline as \x0a
    assert MERMAID_TEXT.fullmatch(mermaid(HOSTILE))


def test_markup_is_well_formed_xml_text_and_attribute() -> None:
    escaped = markup(HOSTILE)
    assert "<" not in escaped and '"' not in escaped
    doc = ET.fromstring(f'<svg a="{escaped}"><text>{escaped}</text></svg>')  # parses
    assert doc.find("text") is not None and doc.find("text").text == terminal(HOSTILE)  # type: ignore[union-attr]
    assert doc.get("a") == terminal(HOSTILE)


def _no_control(s: str) -> bool:
    return all(unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in s)


if given is not None:

    @given(st.text())
    def test_no_terminal_output_holds_a_control_character(text: str) -> None:
        shown = terminal(text)
        assert shown.isprintable() and _no_control(shown)
        assert shown == text or "\\" in shown  # only what was written out changed

    @given(st.text())
    def test_no_mermaid_output_holds_a_directive_or_syntax(text: str) -> None:
        shown = mermaid(text)
        assert MERMAID_TEXT.fullmatch(shown)
        assert "%%" not in shown and "\n" not in shown and "<" not in shown

    @given(st.text())
    def test_markup_output_always_parses_as_xml(text: str) -> None:
        escaped = markup(text)
        doc = ET.fromstring(f'<t a="{escaped}">{escaped}</t>')
        assert doc.text == (terminal(text) or None) and doc.get("a") == terminal(text)
