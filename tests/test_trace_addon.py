"""The Tracer addon: what it reads off a flow, when the record is on disk, tunnels, options."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import exceptions, http
from mitmproxy import log as mitmlog
from mitmproxy.proxy import layer, layers
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from modgate.addons.trace import LIVE_DELAY, Tracer, record_of
from modgate.goproxy import parse_request
from modgate.trace import journal
from modgate.trace.store import TraceDB, default_db

PROXY = "https://proxy.modgate.test"


@pytest.fixture
def tracer(tmp_path: Path) -> Iterator[tuple[Tracer, taddons.context]]:
    t = Tracer()
    with taddons.context(t) as tctx:
        tctx.options.add_option("modgate_cache_dir", str, str(tmp_path / "cache"), "")
        tctx.configure(t, modgate_cache_dir=str(tmp_path / "cache"))
        yield t, tctx
        t.done()


def module_flow(path: str = "example.com/!upper/@v/v1.0.0.zip", **meta: object) -> http.HTTPFlow:
    f = tflow.tflow(resp=True)
    f.request.scheme, f.request.host, f.request.port = "https", "proxy.modgate.test", 443
    f.request.path = f"/{path}"
    f.metadata.update({
        "modgate.request": parse_request(path),
        "modgate.proxy": PROXY,
        "modgate.url": f"{PROXY}/{path}",
        **meta,
    })  # fmt: skip
    assert f.response is not None
    f.response.content = b"PK zip bytes"
    f.response.timestamp_start = f.request.timestamp_start + 0.002
    f.response.timestamp_end = f.request.timestamp_start + 0.005
    return f


def rows(tmp_path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(tmp_path / "trace.db") as conn:
        return conn.execute("SELECT kind, module, version, cache, status FROM requests").fetchall()


def test_the_database_sits_beside_the_cache_directory(tmp_path: Path) -> None:
    assert default_db(str(tmp_path / "home" / "cache")) == tmp_path / "home" / "trace.db"


def test_a_module_request_is_recorded_with_what_the_other_addons_decided() -> None:
    f = module_flow(**{
        "modgate.cache": "miss",
        "modgate.upstream": "https://a.example",
        "modgate.attempts": ["https://b.example: 404", "https://a.example: 200"],
        "modgate.hash": {"verdict": "verified", "source": "sumdb", "h1": "h1:x="},
        "modgate.rule": {"verdict": "audit-deny", "rule": "modules[3]", "reason": "too new"},
    })  # fmt: skip
    r, body = record_of(f)
    assert (r.kind, r.module, r.version) == ("zip", "example.com/Upper", "v1.0.0")
    assert (r.scheme, r.host, r.port, r.path) == ("https", "proxy.modgate.test", 443, "/example.com/!upper/@v/v1.0.0.zip")  # fmt: skip  # noqa: E501
    assert (r.client, r.client_port, r.method, r.status) == ("127.0.0.1", 22, "GET", 200)
    assert r.ttfb == pytest.approx(0.002, abs=1e-6)
    assert r.duration == pytest.approx(0.005, abs=1e-6)
    assert (r.cache, r.upstream, r.attempts) == ("miss", "https://a.example", ("https://b.example: 404", "https://a.example: 200"))  # fmt: skip  # noqa: E501
    assert (r.hash_verdict, r.hash_source, r.h1) == ("verified", "sumdb", "h1:x=")
    assert (r.rule_verdict, r.rule, r.rule_reason) == ("audit-deny", "modules[3]", "too new")
    assert r.bytes_out == len(b"PK zip bytes") and r.bytes_in and r.bytes_in > 20
    assert body is None  # hashed by the verifier already


def test_a_body_streamed_from_the_blob_server_is_recorded_as_the_client_asked_for_it() -> None:
    f = module_flow(**{"modgate.blob": "/blob/token", "modgate.cache": "hit"})
    f.request.scheme, f.request.host, f.request.port = "http", "127.0.0.1", 40000
    f.request.path = "/blob/token"
    assert f.response is not None
    f.response.headers["Content-Length"] = "123456789"
    f.response.stream = True
    f.response.data.content = None  # streamed: mitmproxy keeps no body
    r, body = record_of(f)
    assert (r.host, r.port, r.path) == ("proxy.modgate.test", 443, "/example.com/!upper/@v/v1.0.0.zip")  # fmt: skip  # noqa: E501
    assert r.bytes_out == 123456789 and body is None


def test_on_the_goproxy_endpoint_a_request_is_recorded_under_the_proxy_it_is_for() -> None:
    f = module_flow("example.com/a/@v/list")
    f.client_conn.proxy_mode = ProxyMode.parse("reverse:http://goproxy.modgate.invalid@8081")
    f.metadata["modgate.url"] = "http://goproxy.modgate.invalid/example.com/a/@v/list"
    r, _ = record_of(f)
    assert r.url == "https://proxy.modgate.test/example.com/a/@v/list"


def test_a_zip_nobody_hashed_is_handed_to_the_writer_to_hash() -> None:
    _, body = record_of(module_flow())
    assert body == b"PK zip bytes"
    f = tflow.tflow(resp=True)  # not a module request: nothing to hash
    r, body = record_of(f)
    assert (r.kind, r.host, body) == ("other", "address", None)


def test_a_failed_flow_is_recorded_with_its_error() -> None:
    f = tflow.tflow(err=True)
    r, _ = record_of(f)
    assert (r.status, r.error, r.bytes_out) == (0, "error", None)


def test_the_record_is_journaled_before_the_response_goes_on(
    tracer: tuple[Tracer, taddons.context], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    t, _ = tracer
    caplog.set_level(logging.INFO)
    f = module_flow(**{"modgate.cache": "hit"})
    blocker = sqlite3.connect(tmp_path / "trace.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the writer cannot commit for now
    t.response(f)
    [(_, journaled)] = journal.read(tmp_path / "trace.db.pending")
    assert (journaled.kind, journaled.module, journaled.cache) == ("zip", "example.com/Upper", "hit")  # fmt: skip  # noqa: E501
    blocker.execute("COMMIT")
    t.error(f)  # a flow is recorded once
    assert t.writer is not None
    t.writer.stop()
    assert rows(tmp_path) == [("zip", "example.com/Upper", "v1.0.0", "hit", 200)]
    assert journal.read(tmp_path / "trace.db.pending") == []  # all committed: emptied
    [line] = [r for r in caplog.records if "example.com/Upper@v1.0.0" in r.getMessage()]
    assert line.getMessage() == "[127.0.0.1:22] zip example.com/Upper@v1.0.0 200 hit 5.0ms"
    assert line.levelno == logging.INFO  # so `modgate run --quiet` (warn) hides it


def test_the_live_line_is_shown_but_not_made_an_add_log_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    events: list[str] = []

    class AddLog:  # an addon on mitmproxy's deprecated add_log hook
        def add_log(self, entry: mitmlog.LogEntry) -> None:
            events.append(entry.msg)

    t = Tracer()
    # In the test itself: mitmproxy's log handlers ignore records from other test phases.
    with taddons.context(t, AddLog()) as tctx:
        tctx.options.add_option("modgate_cache_dir", str, str(tmp_path / "cache"), "")
        tctx.configure(t, modgate_cache_dir=str(tmp_path / "cache"))
        t.response(module_flow())
        logging.getLogger("modgate").info("modgate: another line")
        tctx.master.event_loop.run_until_complete(asyncio.sleep(0.01))  # deliver add_log
        t.done()
    assert "zip example.com/Upper@v1.0.0 200" in caplog.text  # handlers still get it
    assert any("another line" in e for e in events)
    assert not any("example.com/Upper@v1.0.0" in e for e in events)


def test_live_lines_go_out_together_soon_after_their_requests(
    tracer: tuple[Tracer, taddons.context], caplog: pytest.LogCaptureFixture
) -> None:
    t, _ = tracer
    caplog.set_level(logging.INFO)

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "modgate.trace"]

    async def main() -> None:
        t.response(module_flow("example.com/a/@v/v1.0.0.mod"))
        t.response(module_flow("example.com/b/@v/v1.0.0.mod"))
        assert lines() == []  # not yet: one logging call for the batch
        await asyncio.sleep(LIVE_DELAY * 3)
        t.response(module_flow("example.com/c/@v/v1.0.0.mod"))

    asyncio.run(main())
    assert lines() == [
        "[127.0.0.1:22] mod example.com/a@v1.0.0 200 - 5.0ms\n"
        "[127.0.0.1:22] mod example.com/b@v1.0.0 200 - 5.0ms"
    ]
    t.done()  # stopping writes what is still waiting
    assert lines()[1:] == ["[127.0.0.1:22] mod example.com/c@v1.0.0 200 - 5.0ms"]


def test_quiet_means_no_live_line(
    tracer: tuple[Tracer, taddons.context], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    t, tctx = tracer
    caplog.set_level(logging.INFO)
    tctx.options.add_option("termlog_verbosity", str, "warn", "")  # `modgate run --quiet`
    t.response(module_flow())
    assert t.writer is not None
    t.writer.stop()
    assert rows(tmp_path) and "example.com/Upper@v1.0.0" not in caplog.text


def test_options_are_checked_and_tracing_can_be_turned_off(
    tracer: tuple[Tracer, taddons.context], tmp_path: Path
) -> None:
    t, tctx = tracer
    with pytest.raises(exceptions.OptionsError, match="'soon' is not a duration"):
        tctx.configure(t, modgate_trace_retention="soon")
    tctx.configure(t, modgate_trace_db=str(tmp_path / "elsewhere.db"))
    assert t.writer is not None and t.writer.path == tmp_path / "elsewhere.db"
    tctx.configure(t, modgate_trace=False)
    assert t.writer is None


def test_when_the_trace_is_required_and_cannot_be_written_requests_are_refused(
    tracer: tuple[Tracer, taddons.context],
) -> None:
    t, tctx = tracer
    f = module_flow()
    f.response = None
    t.requestheaders(f)
    assert f.response is None  # not required: served either way
    tctx.configure(t, modgate_trace_required=True)
    t.requestheaders(f)
    assert f.response is None  # required, and the writer is fine
    assert t.writer is not None
    t.writer.stop()
    t.requestheaders(f)
    assert f.response is not None and f.response.status_code == 503
    assert b"cannot record the trace" in (f.response.content or b"")


def test_a_tunnel_modgate_passes_through_is_recorded_when_it_closes(
    tracer: tuple[Tracer, taddons.context], tmp_path: Path
) -> None:
    t, tctx = tracer
    connect = tflow.tflow(req=tflow.treq(method=b"CONNECT", host="sum.example", port=443))
    connect.server_conn.timestamp_tcp_setup = connect.request.timestamp_start + 0.01
    t.http_connected(connect)
    context = Context(connect.client_conn, tctx.options)
    nl = layer.NextLayer(context)
    t.next_layer(nl)  # not decided yet
    nl.layer = layers.TCPLayer(context, ignore=True)
    t.next_layer(nl)
    t.client_disconnected(connect.client_conn)
    assert t.writer is not None
    t.writer.stop()  # writes what is queued
    db = TraceDB(tmp_path / "trace.db", create=False)
    [r] = db.records(db.last_session())
    assert (r.kind, r.method, r.host, r.port, r.status) == ("tunnel", "CONNECT", "sum.example", 443, 200)  # fmt: skip  # noqa: E501
    assert r.ttfb == pytest.approx(0.01, abs=1e-6)

    intercepted = tflow.tflow(req=tflow.treq(method=b"CONNECT", host=PROXY[8:], port=443))
    t.http_connected(intercepted)
    nl = layer.NextLayer(Context(intercepted.client_conn, tctx.options))
    nl.layer = layers.ServerTLSLayer(nl.context)
    t.next_layer(nl)  # intercepted: its requests are recorded one by one instead
    t.client_disconnected(intercepted.client_conn)
    assert db.count() == 1


def test_a_refused_connect_is_recorded_with_the_rule_that_refused_it(
    tracer: tuple[Tracer, taddons.context], tmp_path: Path
) -> None:
    t, _ = tracer
    f = tflow.tflow(req=tflow.treq(method=b"CONNECT", host="vcs.example", port=443))
    f.response = http.Response.make(403, b"modgate: refused host vcs.example:443")
    f.metadata["modgate.rule"] = {"verdict": "deny", "rule": "hosts.default", "reason": "no"}
    t.http_connect_error(f)
    assert t.writer is not None
    t.writer.stop()  # writes what is queued
    db = TraceDB(tmp_path / "trace.db", create=False)
    [r] = db.records(db.last_session())
    assert (r.kind, r.host, r.status, r.rule, r.rule_reason, r.refused) == (
        "tunnel", "vcs.example", 403, "hosts.default", "no", True,
    )  # fmt: skip


def test_modgate_log_lines_reach_the_terminal_escaped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A warning quoting an upstream's error body (served stale, a refusal) cannot drive
    the terminal; the live lines, escaped already, are not escaped twice."""
    caplog.set_level(logging.INFO)
    t = Tracer()
    # In the test itself: the log handlers of this test phase are the ones filtered.
    with taddons.context(t) as tctx:
        tctx.options.add_option("modgate_cache_dir", str, str(tmp_path / "cache"), "")
        tctx.configure(t, modgate_cache_dir=str(tmp_path / "cache"))
        hostile = "\x1b]0;pwned\x07\nx"
        logging.getLogger("modgate.gateway").warning("serving stale m: 500 %s", hostile)
        t.response(module_flow("example.com/m/@v/v1.0.0.mod", **{"modgate.error": hostile}))
        t.done()
    messages = [r.getMessage() for r in caplog.records]
    assert "serving stale m: 500 \\x1b]0;pwned\\x07\nx" in messages
    assert any(m.endswith(" error: \\x1b]0;pwned\\x07 x") for m in messages), messages
    assert not any("\x1b" in m for m in messages)
