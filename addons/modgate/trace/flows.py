"""Trace records as mitmproxy flows, written with mitmproxy's own writers: a HAR 1.2
file (`mitmproxy.addons.savehar`) for browser devtools, and a mitmproxy flow file
(`mitmproxy.io.FlowWriter`) that `mitmweb` and `mitmdump -nr` open.

The trace keeps no bodies and no headers, so each flow carries the request line, the
status, the timing and modgate's own view of it: `X-Modgate-Cache` as modgate sent it,
the whole record in `flow.metadata["modgate.trace"]` (HAR: `_modgate`) and the body
size in the HAR's size fields. A passed-through tunnel is a CONNECT flow.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mitmproxy import connection, flow, http, io

from modgate import __version__
from modgate.goproxy import CONTENT_TYPES, Kind
from modgate.trace.record import TUNNEL, Record
from modgate.trace.report import ms
from modgate.trace.store import SessionSummary

_KINDS = {k.value for k in Kind}


def to_flow(r: Record) -> http.HTTPFlow:
    client = connection.Client(
        peername=(r.client or "0.0.0.0", r.client_port),
        sockname=("0.0.0.0", 0),
        timestamp_start=r.start,
        timestamp_end=r.end,
    )
    server = connection.Server(address=(r.host, r.port))
    f = http.HTTPFlow(client, server)
    f.request = _request(r)
    first_byte = r.start + r.ttfb if r.ttfb is not None else r.end
    if r.status:
        headers = {"X-Modgate-Cache": r.cache} if r.cache else {}
        if r.status != 200:
            headers["Content-Type"] = "text/plain; charset=utf-8"
        elif r.kind in _KINDS:
            headers["Content-Type"] = CONTENT_TYPES[Kind(r.kind)]
        f.response = http.Response.make(r.status, b"", headers)
        f.response.timestamp_start, f.response.timestamp_end = first_byte, r.end
    if r.error and (not r.status or r.status >= 500):
        f.error = flow.Error(r.error, r.end)
    f.metadata["modgate.trace"] = r.to_json()
    f.comment = _comment(r)
    f.live = False
    return f


def _request(r: Record) -> http.Request:
    if r.kind == TUNNEL:
        req = http.Request(
            r.host, r.port, b"CONNECT", b"", f"{r.host}:{r.port}".encode(), b"",
            b"HTTP/1.1", http.Headers(), b"", None, r.start, r.start,
        )  # fmt: skip
        return req
    req = http.Request.make(r.method or "GET", r.url)
    req.timestamp_start = req.timestamp_end = r.start
    return req


def _comment(r: Record) -> str:
    parts = [r.kind, r.cache or "", f"{ms(r.duration)} ms"]
    if r.refused:
        parts.append(f"refused: {r.refusal}")
    elif r.error:
        parts.append(r.error)
    return " · ".join(p for p in parts if p)


def write_flows(records: Sequence[Record], path: Path) -> int:
    with path.open("wb") as out:
        writer = io.FlowWriter(out)  # type: ignore[no-untyped-call]
        for r in records:
            writer.add(to_flow(r))
    return len(records)


def har(session: SessionSummary, records: Sequence[Record]) -> dict[str, Any]:
    """HAR 1.2 from mitmproxy's SaveHar, one entry per record in one page (the session),
    with the body sizes and modgate's record filled in."""
    with warnings.catch_warnings():
        # Importing mitmproxy.addons imports ldap3, which warns about pyasn1 names.
        warnings.simplefilter("ignore", DeprecationWarning)
        from mitmproxy.addons.savehar import SaveHar

    doc: dict[str, Any] = SaveHar().make_har([to_flow(r) for r in records])
    page = f"session-{session.id}"
    started = records[0].start if records else session.started
    log = doc["log"]
    log["creator"] = {"name": "modgate", "version": __version__, "comment": "mitmproxy savehar"}
    title = f"modgate trace session {session.id}"
    if session.label:
        title += f" {session.label!r}"
    log["pages"] = [{
        "startedDateTime": datetime.fromtimestamp(started, UTC).isoformat(),
        "id": page,
        "title": title,
        "pageTimings": {},
    }]  # fmt: skip
    for entry, r in zip(log["entries"], records, strict=True):
        entry["pageref"] = page
        response = entry["response"]
        response["content"].setdefault("mimeType", "")  # HAR 1.2 requires it; no answer
        response["content"].setdefault("size", 0)
        if r.bytes_out is not None:
            response["content"]["size"] = r.bytes_out
            response["bodySize"] = r.bytes_out
            response["_transferSize"] = r.bytes_out
        entry["_modgate"] = r.to_json()
    return doc


def write_har(session: SessionSummary, records: Sequence[Record], path: Path) -> int:
    path.write_text(json.dumps(har(session, records), indent=2) + "\n")
    return len(records)
