"""Text from outside (a client's path, an upstream's error body) made safe for each
place a trace is shown. Every writer of a sink goes through its helper here:

    terminal(s)  the live log, `modgate trace ls/show`: printable, one line
    mermaid(s)   Mermaid sequence text: no directive, statement or markup syntax
    markup(s)    SVG and HTML (the waterfall): entities, and no character XML forbids

JSON outputs (`--json`, HAR, SBOM, flow files) keep the text as it was: JSON escapes
it, and a machine reading a trace must see what was really asked for.
"""

from __future__ import annotations

import html
import re


def _visible(c: str) -> str:
    """A character a terminal would act on, written out as Python writes it."""
    n = ord(c)
    if c == "\\":
        return "\\\\"
    if n < 0x100:
        return f"\\x{n:02x}"
    return f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def terminal(s: str) -> str:
    """`s` with every character that is not printable written as an escape (`\\x1b`,
    `\\u202e`, and `\\\\` for a backslash, so the escapes are unambiguous).

    "Printable" is Python's `str.isprintable`: no C0 or C1 control (so no ESC sequence,
    no newline), no format character (bidi overrides), no line or paragraph separator,
    no surrogate. Most text needs nothing, and is checked at C speed: the live line
    runs this for every request."""
    if s.isprintable() and "\\" not in s:
        return s
    return "".join(c if c.isprintable() and c != "\\" else _visible(c) for c in s)


# Characters Mermaid takes as they are in a message, a note or a participant's alias.
# Everything else becomes an entity code (`#60;`), which Mermaid shows as the character
# and never parses: `%%` (directives, comments), `;` and newlines (statements), `#`
# (entities), `<>&"` (the labels are HTML), `>` (arrows), `{}` and `%` (directives).
_MERMAID_UNSAFE = re.compile(r"[^A-Za-z0-9 ._/@:()\[\]!?*=~',^|$+-]")


def mermaid(s: str) -> str:
    """`s` as text in a Mermaid sequence diagram: shown as it reads, interpreted never."""
    return _MERMAID_UNSAFE.sub(lambda m: f"#{ord(m.group())};", terminal(s))


def markup(s: str) -> str:
    """`s` as SVG or HTML text or attribute value: `terminal` first, since XML forbids
    most control characters even as references, then HTML's entities."""
    return html.escape(terminal(s), quote=True)
