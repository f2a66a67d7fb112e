"""Exports through mitmproxy's own writers: HAR 1.2 and flow files that load back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.io import FlowReader, read_flows_from_paths

from modgate.trace.flows import har, to_flow, write_flows, write_har
from traceworld import download, rec, summary


def records() -> list:  # type: ignore[type-arg]
    return [
        *download(),
        rec(1.0, kind="zip", module="example.com/x", status=502, cache="", error="reset"),
        rec(1.1, kind="zip", module="example.com/y", status=0, cache="", bytes_out=None,
            error="client disconnected"),
        rec(1.2, kind="tunnel", module="", version="", host="git.example", port=443, cache="",
            bytes_out=None, scheme="tcp", method="CONNECT", path=""),
    ]  # fmt: skip


def test_a_record_becomes_a_flow_with_its_timing_and_modgates_view() -> None:
    r = rec(kind="zip", cache="hit", ttfb=0.004, took=0.010)
    f = to_flow(r)
    assert f.request.url == "https://proxy.modgate.test/example.com/m/@v/v1.0.0.zip"
    assert f.response is not None and f.response.status_code == 200
    assert f.response.headers["X-Modgate-Cache"] == "hit"
    assert f.response.headers["Content-Type"] == "application/zip"
    assert f.response.timestamp_start - f.request.timestamp_start == pytest.approx(0.004, abs=1e-6)
    assert f.response.timestamp_end == r.end
    assert f.metadata["modgate.trace"]["cache"] == "hit"
    assert f.comment == "zip · hit · 10 ms"


def test_the_har_has_one_entry_per_request_and_loads_back_in_mitmproxy(tmp_path: Path) -> None:
    rs = records()
    write_har(summary(rs), rs, tmp_path / "s.har")
    doc = json.loads((tmp_path / "s.har").read_text())
    log = doc["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "modgate"
    assert [p["id"] for p in log["pages"]] == ["session-1"]
    entries = log["entries"]
    assert len(entries) == len(rs)
    assert all(e["pageref"] == "session-1" for e in entries)
    for e in entries:  # the fields HAR 1.2 requires of every entry
        assert {"startedDateTime", "time", "request", "response", "cache", "timings"} <= set(e)
        assert {"size", "mimeType"} <= set(e["response"]["content"])
        assert e["time"] >= 0
    assert entries[0]["response"]["bodySize"] == 1000
    assert entries[0]["timings"]["wait"] == pytest.approx(5.0, abs=0.01)  # time to first byte
    assert entries[0]["timings"]["receive"] == pytest.approx(5.0, abs=0.01)
    assert entries[-2]["response"]["status"] == 0
    assert entries[-2]["response"]["_error"] == "client disconnected"
    assert entries[-1]["request"]["method"] == "CONNECT"
    flows = read_flows_from_paths([str(tmp_path / "s.har")])
    assert len(flows) == len(rs)
    assert all(isinstance(f, http.HTTPFlow) for f in flows)
    assert (
        har(summary(rs, label="x"), rs)["log"]["pages"][0]["title"] == "modgate trace session 1 'x'"
    )


def test_the_flow_file_loads_back_with_mitmproxys_reader(tmp_path: Path) -> None:
    rs = records()
    assert write_flows(rs, tmp_path / "s.flows") == len(rs)
    with (tmp_path / "s.flows").open("rb") as f:
        flows = list(FlowReader(f).stream())
    assert [f.metadata["modgate.trace"]["kind"] for f in flows] == [r.kind for r in rs]
    assert flows[-3].error is not None and flows[-3].error.msg == "reset"  # type: ignore[attr-defined]
    assert flows[-2].response is None  # type: ignore[attr-defined]
    assert flows[-1].request.method == "CONNECT"  # type: ignore[attr-defined]
    assert flows[-1].request.host == "git.example"  # type: ignore[attr-defined]


def test_a_hash_refusal_exports_its_hash_verdict_not_the_allowing_rule() -> None:
    security = "SECURITY: example.com/m@v1.0.0: upstream sent h1:AAA=, but go.sum says h1:BBB="
    r = rec(kind="zip", status=502, cache="", rule_verdict="allow", rule="default",
            hash_verdict="refused", error=security)  # fmt: skip
    f = to_flow(r)
    assert f.comment == f"zip · 10 ms · refused: hash: {security}"
    assert f.metadata["modgate.trace"]["hash_verdict"] == "refused"
