"""The waterfall: one bar per request, grouped by module, coloured by outcome; the same
drawing as SVG, PNG and HTML."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
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
    d = layout(summary(records()), records(), grouped=False)
    render(summary(records()), records(), tmp_path / "w.png", grouped=False)
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
    assert len(embedded(page)["records"]) == len(records())
    with pytest.raises(ValueError, match=r"w.jpg: write a .svg, .png or .html file"):
        render(summary(records()), records(), tmp_path / "w.jpg")


def test_a_huge_session_is_cut_short_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waterfall, "MAX_ROWS", 3)
    d = layout(summary(records()), records())
    notes = [s.text for s in d.shapes if isinstance(s, Text)]
    assert "showing the first 3 of 13 requests" in notes
    with Image.open(io.BytesIO(waterfall.png(d))) as image:
        assert image.size == (d.width, d.height)


def many(modules: int = 150, per_module: int = 7) -> list:  # type: ignore[type-arg]
    """A big session: `modules` modules, each asked for list, info, mod, zip, ..."""
    kinds = ["list", "info", "mod", "zip", "sumdb-lookup", "mod", "info"]
    return [
        rec(m * 0.01 + k * 0.001, kind=kinds[k % len(kinds)], module=f"example.com/m{m}", id=m * 100 + k)
        for m in range(modules) for k in range(per_module)
    ]  # fmt: skip


def test_by_default_a_module_is_one_row_so_a_big_session_stays_readable() -> None:
    big = many()
    grouped, full = layout(summary(big), big), layout(summary(big), big, grouped=False)
    assert grouped.height < 3_200 < 18_000 < full.height
    bars = [s for s in grouped.shapes if isinstance(s, Rect) and s.title and s.opacity == 1.0]
    assert len(bars) == len(big)
    first_row = {b.y for b in bars if b.title.startswith("example.com/m0@")}
    assert len(first_row) == 1  # every request of a module on its row


def embedded(page: str) -> dict:  # type: ignore[type-arg]
    m = re.search(r'<script id="waterfall-data" type="application/json">(.*?)</script>', page, re.S)
    assert m is not None
    assert "<" not in m.group(1)
    return json.loads(m.group(1))


def test_the_page_cannot_be_ended_early_by_what_a_record_holds(tmp_path: Path) -> None:
    odd = [rec(0, module="example.com/</script><script>alert(1)</script>")]
    render(summary(odd), odd, tmp_path / "w.html")
    page = (tmp_path / "w.html").read_text()
    assert "<script>alert(1)" not in page
    assert embedded(page)["records"][0]["g"] == "example.com/</script><script>alert(1)</script>"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
def test_the_page_script_filters_zooms_and_switches_views(tmp_path: Path) -> None:
    big = many(modules=40)
    render(summary(big), big, tmp_path / "w.html")
    data = embedded((tmp_path / "w.html").read_text())
    script = Path(waterfall.__file__).with_name("waterfall.js")
    probe = tmp_path / "probe.js"
    probe.write_text(
        f"const WF = require({str(script)!r});\n"
        f"const data = {json.dumps(data)};\n"
        "const base = {module: '', hiddenKinds: new Set(), hiddenOutcomes: new Set(), from: null, to: null};\n"
        "const out = {};\n"
        "out.grouped = WF.render(data, {...base, grouped: true});\n"
        "out.full = WF.render(data, {...base, grouped: false});\n"
        "out.zips = WF.render(data, {...base, grouped: false, hiddenKinds: new Set(['list','info','mod','sumdb-lookup'])});\n"
        "out.one = WF.render(data, {...base, grouped: true, module: 'M7'});\n"
        "const z = WF.zoom(out.grouped, out.grouped.x0 + 10, 0.1);\n"
        "out.zoomed = WF.render(data, {...base, grouped: true, ...z});\n"
        "for (const k in out) delete out[k].svg;\n"
        "console.log(JSON.stringify(out));\n"
    )
    done = subprocess.run(["node", str(probe)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["grouped"]["rows"] == 40 and out["grouped"]["bars"] == len(big)
    assert out["full"]["rows"] == 40 + len(big)
    assert out["zips"]["shown"] == 40  # one zip per module
    assert out["one"]["rows"] == 1  # example.com/m7, matched case-insensitively
    assert out["zoomed"]["to"] - out["zoomed"]["from"] < out["grouped"]["span"] / 5
    assert 0 < out["zoomed"]["bars"] < len(big)  # only what falls in the zoomed window


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
def test_the_page_builds_its_controls_and_zooms_in_a_browser_like_setting(tmp_path: Path) -> None:
    render(summary(records()), records(), tmp_path / "w.html")
    dom = Path(__file__).with_name("waterfall_dom.js")
    done = subprocess.run(["node", str(dom), str(tmp_path / "w.html")], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"drawn": True, "zoomed": True, "controls": 7}
