"""Trace records for tests: `rec(...)` makes one with sensible defaults, `session(...)`
a small download as `go` would make it, and `filled(db, ...)` stores records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modgate.trace.record import Record
from modgate.trace.store import SessionSummary, TraceDB
from modgate.trace.writer import TraceWriter

T0 = 1_700_000_000.0
PROXY = "proxy.modgate.test"
UPSTREAM = "https://mirror.example"


def rec(start: float = 0.0, took: float = 0.010, **fields: Any) -> Record:
    """A record starting `start` seconds after T0 that took `took` seconds."""
    kind = fields.get("kind", "mod")
    module, version = fields.get("module", "example.com/m"), fields.get("version", "v1.0.0")
    values: dict[str, Any] = {
        "start": T0 + start,
        "end": T0 + start + took,
        "ttfb": took / 2,
        "client": "127.0.0.1",
        "client_port": 50000,
        "method": "GET",
        "scheme": "https",
        "host": PROXY,
        "port": 443,
        "path": f"/{module}/@v/{version}.{kind}",
        "kind": kind,
        "module": module,
        "version": version,
        "status": 200,
        "bytes_in": 120,
        "bytes_out": 1000,
        "cache": "miss",
        "upstream": UPSTREAM,
        "attempts": (f"{UPSTREAM}: 200",),
    }
    values.update(fields)
    return Record(**values)


def download(start: float = 0.0, cache: str = "miss", **fields: Any) -> list[Record]:
    """What `go mod download` of two modules asks for: list, info, mod and zip, and a
    checksum-database lookup."""
    out = []
    t = start
    for module, version in (("example.com/a", "v1.2.0"), ("example.com/B", "v0.3.1")):
        for kind in ("list", "info", "mod", "zip", "sumdb-lookup"):
            v = "" if kind == "list" else version
            out.append(rec(t, kind=kind, module=module, version=v, cache=cache, **fields))
            t += 0.02
    return out


def filled(path: Path, records: Sequence[Record], gap: float = 10.0) -> TraceDB:
    """A database holding `records`, placed in sessions by the writer as modgate does."""
    writer = TraceWriter(path, gap=gap)
    writer.start()
    for r in sorted(records, key=lambda r: r.end):
        writer.submit(r)
    writer.stop()
    return TraceDB(path, create=False)


def summary(records: Sequence[Record], **fields: Any) -> SessionSummary:
    values: dict[str, Any] = {
        "id": 1, "client": "127.0.0.1", "label": "", "started": T0,
        "first": min((r.start for r in records), default=None),
        "last": max((r.end for r in records), default=None),
        "requests": len(records), "versions": 2, "bytes_out": 0, "hits": 0, "cached": 0,
        "refused": 0, "errors": 0,
    }  # fmt: skip
    values.update(fields)
    return SessionSummary(**values)
