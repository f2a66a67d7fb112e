"""The waterfall: a session's requests on a timeline, like a browser's network panel.

One bar per request, from its start to its end, the wait for the first byte drawn
lighter than the transfer; coloured by outcome (cache hit, miss, stale, ... refused,
error); grouped by module in the order the modules were first asked for. By default a
module is one row, its requests segments on it (a 1,000-request session stays a page
tall); `grouped=False` gives every request its own row under its module's heading.
The HTML file is interactive with no build step and nothing fetched: the same
picture, then zoom (wheel), pan (drag), filters by kind, outcome and module, and the
choice of view, drawn by a small script from the records embedded in the page.

`layout` turns records into a `Drawing` (rectangles, lines and text at pixel
positions) with no I/O; `svg`, `png` and `html` render the same drawing, so the three
files show the same picture. PNG uses Pillow, with DejaVu Sans Mono where the system
has it and Pillow's own font otherwise.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from modgate.trace.escape import markup, terminal
from modgate.trace.record import TUNNEL, Record
from modgate.trace.report import ms, size, when
from modgate.trace.store import SessionSummary

if TYPE_CHECKING:
    from PIL import ImageFont

MAX_ROWS = 2000
ROW = 18
FONT = 12
CHAR = 7.3  # width of one character of a 12 px monospace font
TIMELINE = 880
PAD = 16

COLOURS = {
    "hit": "#2e9d4b",
    "negative": "#8d99a6",
    "miss": "#2f6fde",
    "refreshed": "#0f9b9b",
    "stale": "#d99a00",
    "refused": "#9b1c1c",
    "error": "#e03c3c",
    "tunnel": "#8c6bc8",
    "other": "#7a7a7a",
}
INK, MUTED, GRID, BACKGROUND = "#1d2430", "#5c6675", "#e3e7ed", "#ffffff"


def outcome(r: Record) -> str:
    """The colour key of a record."""
    if r.refused:
        return "refused"
    if r.error or r.status == 0 or r.status >= 500:
        return "error"
    if r.cache:
        return r.cache
    return "tunnel" if r.kind == TUNNEL else "other"


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str
    title: str = ""
    opacity: float = 1.0


@dataclass(frozen=True)
class Text:
    x: float
    y: float  # baseline
    text: str
    fill: str = INK
    anchor: str = "start"  # start | middle | end
    bold: bool = False


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    stroke: str = GRID


@dataclass
class Drawing:
    width: int
    height: int
    title: str
    shapes: list[Rect | Text | Line] = field(default_factory=list)


def group_of(r: Record) -> str:
    if r.module:
        return r.module
    if r.kind.startswith("sumdb"):
        return "checksum database"
    return "tunnels" if r.kind == TUNNEL else "other requests"


def row_label(r: Record) -> str:
    """Under its module's heading: the kind and version; else what was asked for."""
    what = r.version if r.module else r.target
    if len(what) > 40:
        what = "…" + what[-39:]
    return f"  {r.kind} {what}".rstrip()


def _tick_step(span_ms: float) -> float:
    """A round step giving 5 to 10 ticks over the span (1, 2 or 5 times a power of 10)."""
    raw = max(span_ms, 1.0) / 8
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def layout(session: SessionSummary, records: Sequence[Record], grouped: bool = True) -> Drawing:
    shown = list(records[:MAX_ROWS])
    groups: dict[str, list[Record]] = {}
    for r in sorted(shown, key=lambda r: (r.start, r.id)):
        groups.setdefault(group_of(r), []).append(r)
    labels = list(groups) if grouped else [*groups, *(row_label(r) for r in shown)]
    label_w = min(440, max(160, int(max(map(len, labels), default=10) * CHAR) + 12))
    t0 = min((r.start for r in shown), default=0.0)
    span = max((r.end - t0 for r in shown), default=0.0) or 0.001
    scale = TIMELINE / span
    x0 = PAD + label_w
    top = PAD + 2 * ROW + 10  # title, then the axis labels
    rows = len(groups) if grouped else len(groups) + len(shown)
    legend_y = top + rows * ROW + 14
    note = (
        f"showing the first {MAX_ROWS} of {len(records)} requests"
        if len(records) > MAX_ROWS
        else ""
    )
    height = legend_y + ROW + (ROW if note else 0) + PAD
    width = x0 + TIMELINE + 120 + PAD
    label = f' "{session.label}"' if session.label else ""
    title = (
        f"modgate trace · session {session.id}{label} · {when(t0 or session.started)} · "
        f"{len(records)} requests · {span:.2f}s"
    )
    d = Drawing(int(width), int(height), title)
    d.shapes.append(Text(PAD, PAD + FONT, title, bold=True))

    step = _tick_step(span * 1000)
    tick = 0.0
    while tick <= span * 1000 + 1e-9:
        x = x0 + tick / 1000 * scale
        d.shapes.append(Line(x, top - 4, x, top + rows * ROW))
        d.shapes.append(Text(x, top - 8, _tick_label(tick, step), MUTED, "middle"))
        tick += step

    y = top
    for i, (name, members) in enumerate(groups.items()):
        if not grouped or i % 2 == 0:
            d.shapes.append(Rect(PAD, y, width - 2 * PAD, ROW, "#f1f4f8"))
        d.shapes.append(Text(PAD + 4, y + ROW - 5, name, bold=True))
        if grouped:
            for r in members:
                _bar(d, r, x0 + (r.start - t0) * scale, y, scale, label=False)
            end = max(r.end for r in members)
            took = ms(end - min(r.start for r in members))
            text = f"{len(members)} req · {took} ms"
            d.shapes.append(Text(x0 + (end - t0) * scale + 5, y + ROW - 5, text, MUTED))
            y += ROW
            continue
        y += ROW
        for r in members:
            d.shapes.append(Text(PAD + 4, y + ROW - 5, row_label(r), MUTED))
            _bar(d, r, x0 + (r.start - t0) * scale, y, scale)
            y += ROW
    d.shapes.append(Line(x0, top, x0, top + rows * ROW, MUTED))

    x = PAD
    for key, colour in COLOURS.items():
        d.shapes.append(Rect(x, legend_y, 12, 12, colour))
        d.shapes.append(Text(x + 16, legend_y + 11, key, MUTED))
        x += 16 + len(key) * CHAR + 18
    d.shapes.append(Text(x, legend_y + 11, "(lighter: waiting for the first byte)", MUTED))
    if note:
        d.shapes.append(Text(PAD, legend_y + ROW + 12, note, MUTED))
    return d


def _bar(d: Drawing, r: Record, x: float, y: float, scale: float, label: bool = True) -> None:
    colour = COLOURS[outcome(r)]
    width = max(2.0, r.duration * scale)
    wait = min(width, (r.ttfb or 0.0) * scale)
    tip = _tip(r)
    if wait >= 1:
        d.shapes.append(Rect(x, y + 4, wait, ROW - 8, colour, tip, opacity=0.45))
    d.shapes.append(Rect(x + wait, y + 4, max(width - wait, 2.0), ROW - 8, colour, tip))
    if label:
        text = f"{ms(r.duration)} ms {r.cache or outcome(r)}"
        d.shapes.append(Text(x + width + 5, y + ROW - 5, text, MUTED))


def _tick_label(tick_ms: float, step: float) -> str:
    if step >= 1000:
        return f"{tick_ms / 1000:g}s"
    return f"{tick_ms:g}ms"


# --- renderers -------------------------------------------------------------------------


def svg(d: Drawing) -> str:
    esc = markup
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{d.width}" height="{d.height}" '
        f'viewBox="0 0 {d.width} {d.height}" font-family="DejaVu Sans Mono, Menlo, Consolas, '
        f'monospace" font-size="{FONT}">',
        f"<title>{esc(d.title)}</title>",
        f'<rect width="100%" height="100%" fill="{BACKGROUND}"/>',
    ]
    for s in d.shapes:
        match s:
            case Rect():
                attrs = (
                    f'x="{s.x:.1f}" y="{s.y:.1f}" width="{s.w:.1f}" height="{s.h:.1f}" '
                    f'fill="{s.fill}"'
                )
                if s.opacity != 1.0:
                    attrs += f' fill-opacity="{s.opacity}"'
                if s.title:
                    out.append(f"<rect {attrs}><title>{esc(s.title)}</title></rect>")
                else:
                    out.append(f"<rect {attrs}/>")
            case Line():
                out.append(
                    f'<line x1="{s.x1:.1f}" y1="{s.y1:.1f}" x2="{s.x2:.1f}" y2="{s.y2:.1f}" '
                    f'stroke="{s.stroke}"/>'
                )
            case Text():
                weight = ' font-weight="bold"' if s.bold else ""
                out.append(
                    f'<text x="{s.x:.1f}" y="{s.y:.1f}" fill="{s.fill}" text-anchor="{s.anchor}"'
                    f"{weight}>{esc(s.text)}</text>"
                )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def png(d: Drawing) -> bytes:
    from PIL import Image, ImageDraw

    regular, bold = _fonts()
    image = Image.new("RGB", (d.width, d.height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for s in d.shapes:
        match s:
            case Rect():
                fill = _blend(s.fill, s.opacity)
                draw.rectangle([s.x, s.y, s.x + s.w - 1, s.y + s.h - 1], fill=fill)
            case Line():
                draw.line([(s.x1, s.y1), (s.x2, s.y2)], fill=s.stroke)
            case Text():
                font = bold if s.bold else regular
                anchor = {"start": "ls", "middle": "ms", "end": "rs"}[s.anchor]
                draw.text((s.x, s.y), terminal(s.text), fill=s.fill, font=font, anchor=anchor)
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


_SYSTEM_FONTS = Path("/usr/share/fonts/truetype/dejavu")


def _fonts() -> tuple[ImageFont.FreeTypeFont, ImageFont.FreeTypeFont]:
    from PIL import ImageFont

    regular, bold = _SYSTEM_FONTS / "DejaVuSansMono.ttf", _SYSTEM_FONTS / "DejaVuSansMono-Bold.ttf"
    if regular.exists() and bold.exists():
        return ImageFont.truetype(str(regular), FONT), ImageFont.truetype(str(bold), FONT)
    font = ImageFont.load_default(size=FONT)
    assert isinstance(font, ImageFont.FreeTypeFont)  # Pillow >= 10.1 with FreeType
    return font, font


def _blend(colour: str, opacity: float) -> str:
    """`colour` at `opacity` over the white background, as SVG's fill-opacity shows it."""
    if opacity >= 1.0:
        return colour
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    mixed = [round(c * opacity + 255 * (1 - opacity)) for c in rgb]
    return "#" + "".join(f"{c:02x}" for c in mixed)


def html(d: Drawing, records: Sequence[Record] = ()) -> str:
    """The picture, made interactive by the script in waterfall.js over `records`."""
    data = [
        {"g": group_of(r), "l": row_label(r).strip(), "k": r.kind, "o": outcome(r),
         "s": r.start, "e": r.end, "w": r.ttfb or 0.0, "t": _tip(r)}
        for r in sorted(records[:MAX_ROWS], key=lambda r: (r.start, r.id))
    ]  # fmt: skip
    # Inside a <script> element no "<" at all: nothing in a record can end it early.
    payload = json.dumps({"title": d.title, "colours": COLOURS, "records": data})
    payload = payload.replace("<", "\\u003c")
    script = (Path(__file__).with_name("waterfall.js")).read_text(encoding="utf-8")
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>{markup(d.title)}</title>"
        "<style>body{margin:0;background:#fff;font:12px DejaVu Sans Mono,Menlo,Consolas,"
        "monospace;color:#1d2430} #controls{padding:8px 16px;display:flex;flex-wrap:wrap;"
        "gap:6px 16px;align-items:center;border-bottom:1px solid #e3e7ed} #controls label"
        "{white-space:nowrap} #chart{overflow:auto} svg rect:hover{stroke:#1d2430}</style>"
        "</head><body>\n"
        '<div id="controls"></div>\n'
        f'<div id="chart">{svg(d)}</div>\n'
        f'<script id="waterfall-data" type="application/json">{payload}</script>\n'
        f"<script>\n{script}</script>\n</body></html>\n"
    )


def _tip(r: Record) -> str:
    return (
        f"{r.target} ({r.kind}) {r.status or '-'} {r.cache or outcome(r)} · {ms(r.duration)} ms"
        f" (first byte {ms(r.ttfb)} ms) · {size(r.bytes_out)}"
        + (f" · {r.refusal or r.error}" if r.error or r.refused else "")
    )


SUFFIXES = (".svg", ".png", ".html", ".htm")


def render(
    session: SessionSummary, records: Sequence[Record], path: Path, grouped: bool = True
) -> None:
    """Write the waterfall in the format the file name says: .svg, .png or .html."""
    drawing = layout(session, records, grouped)
    suffix = path.suffix.lower()
    if suffix == ".svg":
        path.write_text(svg(drawing))
    elif suffix == ".png":
        path.write_bytes(png(drawing))
    elif suffix in (".html", ".htm"):
        path.write_text(html(drawing, records))
    else:
        raise ValueError(f"{path.name}: write a .svg, .png or .html file")
