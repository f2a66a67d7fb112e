"""`trace ls`, `trace show` and the live line, as text and JSON."""

from __future__ import annotations

import re

import pytest

from modgate.trace.report import live_line, ls_text, ms, show_json, show_text, size
from traceworld import download, rec, summary


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.0, "0.0"), (0.00123, "1.2"), (0.00996, "10"), (0.0104, "10"), (1.5, "1500")],
)
def test_ms(seconds: float | None, text: str) -> None:
    assert ms(seconds) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, "-"), (0, "0B"), (1023, "1023B"), (1536, "1.5KiB"), (5 << 20, "5.0MiB"), (3 << 40, "3072.0GiB")],
)  # fmt: skip
def test_size(n: int | None, text: str) -> None:
    assert size(n) == text


@pytest.mark.parametrize(
    ("record", "line"),
    [
        (rec(kind="zip", cache="hit", took=0.0031), "zip example.com/m@v1.0.0 200 hit 3.1ms"),
        (rec(kind="list", version="", took=0.2), "list example.com/m 200 miss 200ms"),
        (rec(kind="zip", status=502, cache="", error="no upstream answered: reset"),
         "zip example.com/m@v1.0.0 502 - 10ms error: no upstream answered: reset"),
        (rec(kind="zip", status=403, rule_verdict="deny", rule_reason="license GPL-3.0"),
         "zip example.com/m@v1.0.0 403 miss 10ms refused: license GPL-3.0"),
        (rec(kind="tunnel", host="sum.example", port=443, status=200, cache="", took=1.0),
         "tunnel sum.example:443 200 - 1000ms"),
    ],
)  # fmt: skip
def test_the_live_line_says_kind_what_status_outcome_and_time(record: object, line: str) -> None:
    assert live_line(record) == line  # type: ignore[arg-type]


def test_show_lists_requests_in_order_with_a_summary() -> None:
    records = [
        *download(),
        rec(1.0, took=2.0, kind="zip", module="example.com/slow", cache="miss"),
        rec(1.1, kind="zip", module="example.com/bad", status=403, cache="",
            rule_verdict="deny", rule="modules[3]", rule_reason="blocked by policy"),
        rec(1.2, kind="zip", module="example.com/down", status=502, cache="",
            error="no upstream answered: connection refused"),
    ]  # fmt: skip
    text = show_text(summary(records, label="ci"), records)
    rows = [line for line in text.splitlines() if re.match(r"\s*\d+\s+\+", line)]
    assert len(rows) == len(records)
    assert rows[0].split()[4:6] == ["list", "example.com/a"]
    assert rows[3].split()[4:6] == ["zip", "example.com/a@v1.2.0"]
    assert text.startswith('session 1 "ci" · client 127.0.0.1 · ')
    assert "kinds:    info 2, list 2, mod 2, sumdb-lookup 2, zip 5" in text
    assert "cache:    miss 11" in text
    assert "slowest:  example.com/slow@v1.0.0 (zip) 2000ms" in text
    assert "refused:  example.com/bad@v1.0.0 (zip): blocked by policy" in text
    assert "error:    example.com/down@v1.0.0 (zip) 502: no upstream answered" in text
    assert max(map(len, text.splitlines()[2:-5])) < 160


def test_show_json_has_every_field_of_every_record() -> None:
    records = download()
    doc = show_json(summary(records), records)
    assert doc["session"]["requests"] == len(records)
    assert [r["kind"] for r in doc["requests"]][:5] == [
        "list", "info", "mod", "zip", "sumdb-lookup",
    ]  # fmt: skip
    assert doc["requests"][0]["attempts"] == ["https://mirror.example: 200"]
    assert doc["requests"][0]["refused"] is False


def test_ls_is_one_line_per_session() -> None:
    records = download()
    text = ls_text([summary(records, hits=5, cached=10), summary(records, id=2, label="x")])
    lines = text.splitlines()
    assert lines[0].split() == [
        "ID", "STARTED", "CLIENT", "LABEL", "REQS", "MODULES", "BYTES", "HITS", "DURATION",
        "REFUSED", "ERRORS",
    ]  # fmt: skip
    # ID, date and time, client, label, then the counts
    assert lines[1].split()[4:] == ["-", "10", "2", "0B", "50%", "0.2s", "0", "0"]
    assert lines[2].split()[4:6] == ["x", "10"]
    assert ls_text([]) == "no sessions recorded yet\n"


SECURITY = (
    "SECURITY: example.com/m@v1.0.0: upstream sent h1:AAA=, but checksum database says h1:BBB="
)


def hash_refused() -> object:
    """A zip the rules allowed (the default rule) whose hash modgate refused."""
    return rec(kind="zip", status=502, cache="", rule_verdict="allow", rule="default",
               hash_verdict="refused", error=SECURITY)  # fmt: skip


def test_a_hash_refusal_is_shown_as_the_hash_verdict_not_the_rule_that_allowed_it() -> None:
    r = hash_refused()
    line = live_line(r)  # type: ignore[arg-type]
    assert line.endswith(f"refused: hash: {SECURITY}")
    text = show_text(summary([r]), [r])  # type: ignore[list-item]
    assert "default" not in text
    assert f"refused:  example.com/m@v1.0.0 (zip): hash: {SECURITY}" in text
    row = next(line for line in text.splitlines() if re.match(r"\s*1\s+\+", line))
    assert "refused: hash: SECURITY: example.com/m@v1.0.0" in row


def test_ls_and_show_write_out_what_the_terminal_would_act_on() -> None:
    hostile = "\x1b]0;pwned\x07"
    records = [
        rec(kind="other", module="", version="", path=f"/{hostile}/@v/list", status=400),
        rec(0.1, kind="list", version="", status=502, cache="", error=f"500 {hostile}"),
    ]
    s = summary(records, label=hostile)
    for text in (ls_text([s]), show_text(s, records)):
        assert "\x1b" not in text and "\x07" not in text
        assert "\\x1b]0;pwned\\x07" in text
    assert "\x1b" not in live_line(records[0]) + live_line(records[1])
