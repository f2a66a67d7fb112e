"""The waterfall: one bar per request, grouped by module, coloured by outcome; the same
drawing as SVG, PNG and HTML."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from modgate.trace import waterfall
from modgate.trace.waterfall import COLOURS, Rect, Text, layout, outcome, render
from traceworld import download, rec, summary


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"cache": "hit"}, "hit"),
        ({"cache": "stale"}, "stale"),
        ({"cache": "", "kind": "tunnel"}, "tunnel"),
        ({"cache": "", "kind": "other"}, "other"),
        ({"status": 502, "cache": ""}, "error"),
        ({"status": 0, "cache": "", "error": "client hung up"}, "error"),
        ({"rule_verdict": "deny", "status": 403}, "refused"),
        ({"hash_verdict": "mismatch", "status": 502}, "refused"),
    ],
)
def test_outcome_picks_the_colour(fields: dict[str, object], key: str) -> None:
    assert outcome(rec(**fields)) == key  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("span_ms", "step"), [(0.5, 0.2), (9, 2), (80, 10), (1900, 500), (12_000, 2000)]
)
def test_ticks_are_round_and_few(span_ms: float, step: float) -> None:
    assert waterfall._tick_step(span_ms) == pytest.approx(step)


def records() -> list:  # type: ignore[type-arg]
    return [
        *download(),
        rec(0.05, took=0.5, kind="zip", module="example.com/big", cache="miss"),
        rec(0.3, kind="sumdb-tile", module="", version="", cache="hit"),
        rec(0.4, kind="zip", module="example.com/<odd>", status=403, rule_verdict="deny"),
    ]


def test_layout_groups_requests_by_module_in_the_order_they_were_first_asked_for() -> None:
    d = layout(summary(records(), label="ci"), records())
    bold = [s.text for s in d.shapes if isinstance(s, Text) and s.bold]
    assert bold[0].startswith('modgate trace · session 1 "ci" · ')
    assert bold[1:] == [
        "example.com/a", "example.com/big", "example.com/B", "checksum database",
        "example.com/<odd>",
    ]  # fmt: skip
    bars = [s for s in d.shapes if isinstance(s, Rect) and s.title and s.opacity == 1.0]
    assert len(bars) == len(records())
    big = next(b for b in bars if b.title.startswith("example.com/big@"))
    assert big.fill == COLOURS["miss"]
    assert big.x + big.w == pytest.approx(waterfall.PAD + _label_w(d) + waterfall.TIMELINE, abs=1)


def _label_w(d: waterfall.Drawing) -> float:
    return d.width - waterfall.TIMELINE - 120 - 2 * waterfall.PAD


def test_the_svg_is_well_formed_and_names_every_module(tmp_path: Path) -> None:
    render(summary(records()), records(), tmp_path / "w.svg")
    text = (tmp_path / "w.svg").read_text()
    root = ET.fromstring(text)
    names = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"example.com/a", "example.com/B", "example.com/<odd>"} <= names
    assert "example.com/&lt;odd&gt;" in text


def test_the_png_shows_the_same_bars_in_their_colours(tmp_path: Path) -> None:
    d = layout(summary(records()), records())
    render(summary(records()), records(), tmp_path / "w.png")
    with Image.open(tmp_path / "w.png") as image:
        assert image.size == (d.width, d.height)
        rgb = image.convert("RGB")
        for bar in [s for s in d.shapes if isinstance(s, Rect) and s.title and s.w > 4]:
            pixel = rgb.getpixel((int(bar.x + bar.w / 2), int(bar.y + bar.h / 2)))
            red, green, blue = pixel  # type: ignore[misc]
            assert f"#{red:02x}{green:02x}{blue:02x}" == waterfall._blend(bar.fill, bar.opacity)


def test_html_wraps_the_svg_and_other_formats_are_refused(tmp_path: Path) -> None:
    render(summary(records()), records(), tmp_path / "w.html")
    page = (tmp_path / "w.html").read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page and "<title>" in page
    with pytest.raises(ValueError, match=r"w.jpg: write a .svg, .png or .html file"):
        render(summary(records()), records(), tmp_path / "w.jpg")


def test_a_huge_session_is_cut_short_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waterfall, "MAX_ROWS", 3)
    d = layout(summary(records()), records())
    notes = [s.text for s in d.shapes if isinstance(s, Text)]
    assert "showing the first 3 of 13 requests" in notes
    with Image.open(io.BytesIO(waterfall.png(d))) as image:
        assert image.size == (d.width, d.height)
