"""Record every request that passes through modgate in the trace database and log one
line as each finishes; part of modgate's addons (`all_addons()`, or
`mitmdump -s addons/modgate_addons.py`). Read the traces with `modgate trace`.

It runs after the other modgate addons and only reads what they left in
`flow.metadata` ("modgate.request", "modgate.cache", "modgate.upstream", "modgate.hash",
"modgate.rule", ...). In the `response` hook, before the response goes on to the client,
the record is appended to the writer's journal (one small write: a request the client has
seen answered survives modgate being killed); the SQLite writes happen on
`TraceWriter`'s thread. Tunnels to hosts modgate does not intercept are recorded when
they close, with their timing but without byte counts.

The live lines ("[client] kind module@version status cache ms") go to the log together,
at most LIVE_DELAY after their request finished: a logging call for each request cost a
cached hit about a twentieth of its CPU (scripts/bench, issue 6).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import connection, ctx, exceptions, http
from mitmproxy import log as mitmlog
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import layer, layers, mode_specs

from modgate import peers
from modgate.addons import plain
from modgate.addons.vcs import BYTES_OUT, VCS
from modgate.blobs import Handoff
from modgate.config import parse_duration
from modgate.goproxy import ModRequest
from modgate.trace.escape import terminal
from modgate.trace.record import OTHER, TUNNEL, Record
from modgate.trace.report import live_line
from modgate.trace.store import TraceError, default_db
from modgate.trace.writer import TraceWriter
from modgate.vcs import VcsRequest

log = logging.getLogger("modgate")
# The live view: one INFO line per finished request. `modgate run` leaves the root logger
# at WARNING (mitmproxy's own tools set DEBUG), so this logger says INFO itself; the
# terminal's verbosity (`--quiet`: warn) still decides what is shown.
live = logging.getLogger("modgate.trace")
LIVE_DELAY = 0.02  # seconds a live line may wait to go out with the ones after it

OPTIONS = {
    "modgate_trace", "modgate_trace_db", "modgate_trace_retention", "modgate_trace_gap",
    "modgate_trace_required", "modgate_cache_dir",
}  # fmt: skip


@dataclass
class _Tunnel:
    connect: http.HTTPFlow
    passthrough: bool = False


Observer = Callable[[Record, dict[str, Any], bytes | None], None]
"""Told of every finished request's record, its flow's metadata and the body to hash (see
`record_of`), on the event loop: the audit log (addons/audit.py) and metrics watch here,
the one place where both front ends' requests (mitmproxy's and the lean endpoint's) are
known served or refused. It must be quick and must not raise."""


class Tracer:
    def __init__(self, observers: Sequence[Observer] = ()) -> None:
        self.observers = tuple(observers)
        self.writer: TraceWriter | None = None
        self._config: tuple[Path, float, float | None] | None = None
        self._tunnels: dict[str, _Tunnel] = {}
        self._live: list[str] = []  # lines waiting to be logged together
        self._origins: dict[str, str] = {}  # client connection id: Record.origin
        self._lookups = peers.Lookups()
        self._lookups_of: dict[str, Future[str]] = {}  # client connection id: not found yet
        self._required = False  # modgate_trace_required
        self._shown: bool | None = None  # whether the terminal shows live lines

    def load(self, loader: Loader) -> None:
        if live.level == logging.NOTSET and live.getEffectiveLevel() > logging.INFO:
            live.setLevel(logging.INFO)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, mitmlog.LegacyLogEvents):
                handler.addFilter(_not_live)
            handler.addFilter(_terminal_safe)
        loader.add_option(
            "modgate_trace", bool, True, "Record every request in the trace database."
        )
        loader.add_option(
            "modgate_trace_db", str, "",
            "Trace database file; default: trace.db beside modgate_cache_dir.",
        )  # fmt: skip
        loader.add_option(
            "modgate_trace_retention", str, "30d",
            "How long trace records are kept, e.g. 7d or 12h; 0 keeps them for ever.",
        )  # fmt: skip
        loader.add_option(
            "modgate_trace_gap", str, "10s",
            "A client's requests further apart than this start a new trace session.",
        )  # fmt: skip
        loader.add_option(
            "modgate_trace_required", bool, False,
            "Refuse module requests with 503 while the trace cannot be written (audit).",
        )  # fmt: skip

    def configure(self, updated: set[str]) -> None:
        if updated & OPTIONS:
            self._reopen()
        # Read once here, not per request: an option's lookup costs a cached hit ~2 us.
        if "modgate_trace_required" in updated:
            self._required = bool(ctx.options.modgate_trace_required)
        if "termlog_verbosity" in updated or self._shown is None:
            self._shown = _live_shown()

    def _reopen(self) -> None:
        if not ctx.options.modgate_trace:
            self._close()
            return
        try:
            gap = parse_duration(ctx.options.modgate_trace_gap)
            retention_text = ctx.options.modgate_trace_retention.strip()
            retention = None if retention_text in ("0", "") else parse_duration(retention_text)
        except ValueError as e:
            raise exceptions.OptionsError(f"modgate_trace: {e}") from e
        path = Path(ctx.options.modgate_trace_db or default_db(ctx.options.modgate_cache_dir))
        config = (path.expanduser(), gap, retention)
        if config == self._config and self.writer is not None:
            return
        writer = TraceWriter(config[0], gap=gap, retention=retention)
        try:
            writer.start()
        except TraceError as e:
            raise exceptions.OptionsError(str(e)) from e
        self._close()
        self.writer, self._config = writer, config
        live.info("modgate: tracing to %s", config[0])

    def running(self) -> None:
        if self.writer is None and self._config is None and ctx.options.modgate_trace:
            self._reopen()  # loaded with add(), and no option was ever set

    def done(self) -> None:
        self._show_now()
        self._close()

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.stop()
        self.writer, self._config = None, None

    # --- HTTP requests ---------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or "modgate.request" not in flow.metadata:
            return
        if self.refusing():
            assert self.writer is not None
            reason = f"cannot record the trace: {self.writer.stats.last_error or 'writer stopped'}"
            flow.metadata["modgate.error"] = reason
            flow.response = plain(503, f"modgate: {reason}")

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def _finish(self, flow: http.HTTPFlow) -> None:
        writer = self.writer
        if (
            (writer is None and not self.observers)
            or flow.request.method == "CONNECT"
            or "modgate.traced" in flow.metadata
        ):
            return
        handoff: Handoff | None = flow.metadata.get("modgate.handoff")
        if handoff is not None and handoff.transfer is None:
            handoff.then(lambda: self._finish(flow))  # the body is still on its way
            return
        flow.metadata["modgate.traced"] = True
        origin, later = self._origin(flow.client_conn)
        record, body = record_of(flow, origin)
        self.submit(record, flow.metadata, body, later)

    def submit(
        self, record: Record, meta: dict[str, Any], body: bytes | None, later: Future[str] | None
    ) -> None:
        """Record a finished request: observers, the live line, the journal and the
        writer's queue. Also the GOPROXY endpoint's fast path (addons/fasthit.py), which
        answers with no flow, before its answer goes out."""
        self._observe(record, meta, body)
        if self.writer is not None:
            self._show(record)
            self.writer.submit(record, body, origin=later)

    def refusing(self) -> bool:
        """Whether module requests are refused for now (`modgate_trace_required` and the
        trace cannot be written): see `requestheaders`."""
        return self._required and self.writer is not None and not self.writer.healthy

    def origin_of(self, client: connection.Client) -> tuple[str, Future[str] | None]:
        """The origin of `client`'s records, or "" and the lookup that will tell it."""
        return self._origin(client)

    def _observe(self, record: Record, meta: dict[str, Any], body: bytes | None) -> None:
        for observe in self.observers:
            try:
                observe(record, meta, body)
            except Exception:  # one observer's bug must not lose the trace
                log.exception("modgate: %s failed on %s", observe, record.target)

    # --- who asked: the origin of a connection's records (trace/sessions.py) ---------------

    async def client_connected(self, client: connection.Client) -> None:
        """A client on this machine: the go command at the other end (peers.py), looked
        up once per connection, off the event loop, before its first request (the lookup
        needs the connection still open). When that takes longer than ORIGIN_WAIT (a
        loaded machine), the requests go on and their records wait for it on the
        writer's thread instead."""
        if self.writer is None or not client.peername or not client.sockname:
            return
        peer, sock = client.peername, client.sockname
        found = self._lookups.start((_ip(peer), int(peer[1])), (_ip(sock), int(sock[1])))
        self._lookups_of[client.id] = found

        def learnt(found: Future[str]) -> None:  # on the event loop (Lookups)
            if self._lookups_of.pop(client.id, None) is found and found.result():
                self._origins.setdefault(client.id, found.result())

        found.add_done_callback(learnt)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(found)), ORIGIN_WAIT)

    def _origin(self, client: connection.Client) -> tuple[str, Future[str] | None]:
        """The origin of `client`'s records, or "" and the lookup that will tell it."""
        origin = self._origins.get(client.id)
        if origin is not None:
            return origin, None
        return "", self._lookups_of.get(client.id)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """`modgate env --session NAME`: go sends NAME as the proxy URL's user."""
        name = _session_tag(flow.request.headers.get("Proxy-Authorization", ""))
        if name and self.writer is not None:
            self._origins[flow.client_conn.id] = f"tag {name}"

    # --- tunnels modgate passes through ----------------------------------------------------

    def http_connected(self, flow: http.HTTPFlow) -> None:
        if self.writer is not None:
            self._tunnels[flow.client_conn.id] = _Tunnel(flow)

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        tunnel = self._tunnels.get(nextlayer.context.client.id)
        if tunnel is None or tunnel.passthrough or nextlayer.layer is None:
            return
        if isinstance(nextlayer.layer, layers.TCPLayer):
            tunnel.passthrough = True  # not intercepted: bytes go through untouched
        else:
            del self._tunnels[nextlayer.context.client.id]  # intercepted: requests recorded

    def client_disconnected(self, client: connection.Client) -> None:
        tunnel = self._tunnels.pop(client.id, None)
        origin, later = self._origin(client)
        self._origins.pop(client.id, None)
        self._lookups_of.pop(client.id, None)
        if tunnel is None or not tunnel.passthrough or self.writer is None:
            return
        self._record_tunnel(self.writer, tunnel_record(tunnel.connect, client, origin), later)

    def http_connect_error(self, flow: http.HTTPFlow) -> None:
        """A CONNECT answered with an error: refused by a rule, or the host unreachable."""
        if self.writer is not None or self.observers:
            origin, later = self._origin(flow.client_conn)
            record = tunnel_record(flow, flow.client_conn, origin)
            self._observe(record, flow.metadata, None)
            if self.writer is not None:
                self._record_tunnel(self.writer, record, later)

    def _record_tunnel(
        self, writer: TraceWriter, record: Record, origin: Future[str] | None = None
    ) -> None:
        self._show(record)
        writer.submit(record, origin=origin)

    def record_connection(self, record: Record) -> None:
        """A connection decided before any request in it (transparent.py)."""
        self._observe(record, {}, None)
        if self.writer is not None:
            self._record_tunnel(self.writer, record)

    # --- the live view ---------------------------------------------------------------------

    def _show(self, record: Record) -> None:
        """Queue `record`'s live line; the first of a batch schedules the batch."""
        if self._shown is None:
            self._shown = _live_shown()
        if not self._shown:
            return
        self._live.append(f"[{_address(record.client, record.client_port)}] {live_line(record)}")
        if len(self._live) > 1:
            return
        try:
            asyncio.get_running_loop().call_later(LIVE_DELAY, self._show_now)
        except RuntimeError:  # no event loop here (a test, a thread): no batch either
            self._show_now()

    def _show_now(self) -> None:
        lines, self._live = self._live, []
        if lines:
            live.info("\n".join(lines))


def _not_live(record: logging.LogRecord) -> bool:
    """Keeps the live lines out of mitmproxy's deprecated `add_log` events. Each would
    cost the event loop a wake-up and a hook call on every addon, which no built-in addon
    answers, about as much as the rest of a cached hit's trace (scripts/bench, issue 6).
    The terminal and mitmweb's event log have handlers of their own and still show them."""
    return record.name != live.name


def _terminal_safe(record: logging.LogRecord) -> bool:
    """modgate's log lines quote what clients and upstreams sent (a path, an upstream's
    error body, served stale): each line is written out for the terminal, as the live
    lines already are, so no escape sequence reaches it. Once per record, whichever
    handler sees it first."""
    if (
        record.name.startswith("modgate")
        and record.name != live.name
        and not getattr(record, "modgate_escaped", False)
    ):
        message = record.getMessage()
        record.msg = "\n".join(terminal(line) for line in message.split("\n"))
        record.args = None
        record.modgate_escaped = True
    return True


_VERBOSITY = {"debug": logging.DEBUG, "info": logging.INFO, "alert": 25, "warn": logging.WARNING,
              "error": logging.ERROR}  # fmt: skip


def _live_shown() -> bool:
    """Whether the terminal shows INFO lines (not `--quiet`). A log line costs the event
    loop far more than the record (mitmproxy also turns each into an add_log event), so
    none is made for nobody."""
    try:
        verbosity = ctx.options.termlog_verbosity
    except AttributeError:  # no terminal log in this master: the event log may show it
        return True
    return _VERBOSITY.get(verbosity, logging.INFO) <= logging.INFO


# --- flows to records ------------------------------------------------------------------


def record_of(flow: http.HTTPFlow, origin: str = "") -> tuple[Record, bytes | None]:
    """The trace record of a finished flow, and the body to hash when it is a .mod or .zip
    that no verifier hashed (the writer hashes it, off the event loop)."""
    meta = flow.metadata
    req, resp = flow.request, flow.response
    mod: ModRequest | None = meta.get("modgate.request")
    vcs: VcsRequest | None = meta.get(VCS)
    scheme, host, port, path = _asked(flow)
    hashed: dict[str, Any] = meta.get("modgate.hash") or {}
    ruled: dict[str, Any] = meta.get("modgate.rule") or {}
    status = resp.status_code if resp is not None else 0
    error = meta.get("modgate.error") or (flow.error.msg if flow.error else "")
    end = (resp.timestamp_end if resp is not None else None) or time.time()
    bytes_out = meta[BYTES_OUT] if BYTES_OUT in meta else _body_size(flow)
    handoff: Handoff | None = meta.get("modgate.handoff")
    if handoff is not None and handoff.transfer is not None:
        # Redirected to the BlobServer: the record is of the body the client got there.
        status, end, bytes_out = 200, handoff.transfer.ended, handoff.transfer.sent
    record = Record(
        start=req.timestamp_start,
        end=end,
        ttfb=resp.timestamp_start - req.timestamp_start if resp and resp.timestamp_start else None,
        client=_ip(flow.client_conn.peername),
        client_port=flow.client_conn.peername[1] if flow.client_conn.peername else 0,
        method=req.method,
        scheme=scheme,
        host=host,
        port=port,
        path=path,
        kind=mod.kind.value if mod else vcs.kind if vcs else OTHER,
        module=mod.module if mod else vcs.module if vcs else "",
        version=mod.version if mod else "",
        status=status,
        bytes_in=_request_size(req),
        bytes_out=bytes_out,
        cache=str(meta.get("modgate.cache", "")),
        upstream=str(meta.get("modgate.upstream", "")),
        attempts=tuple(str(a) for a in meta.get("modgate.attempts", ())),
        hash_verdict=str(hashed.get("verdict", "")),
        hash_source=str(hashed.get("source", "")),
        h1=str(hashed.get("h1", "")),
        rule_verdict=str(ruled.get("verdict", "")),
        rule=str(ruled.get("rule", "")),
        rule_reason=str(ruled.get("reason", "")),
        error=" ".join(str(error).split()),
        origin=origin,
        identity=str(meta.get("modgate.identity", "")),
        team=str(meta.get("modgate.team", "")),
    )
    body = None
    if mod and status == 200 and not record.h1 and record.kind in ("mod", "zip") and resp:
        # None when the body never passed through mitmproxy (streamed, or redirected).
        # The body as served, decoded: a .mod may have gone out gzipped (cache.py).
        body = None if handoff is not None else resp.get_content(strict=False)
    return record, body


def tunnel_record(connect: http.HTTPFlow, client: connection.Client, origin: str = "") -> Record:
    """A CONNECT tunnel: passed through untouched until `client` closed, or refused."""
    server = connect.server_conn
    start = connect.request.timestamp_start
    connected = server.timestamp_tcp_setup
    ruled: dict[str, Any] = connect.metadata.get("modgate.rule") or {}
    answer = connect.response
    if answer is not None and not 200 <= answer.status_code < 300:  # refused, unreachable
        status, end = answer.status_code, time.time()
        error = "" if ruled.get("verdict") == "deny" else answer.reason
    else:
        status, end = (200 if connected else 502), client.timestamp_end or time.time()
        error = server.error or ""
    return Record(
        start=start,
        end=end,
        ttfb=connected - start if connected else None,
        client=_ip(client.peername),
        client_port=client.peername[1] if client.peername else 0,
        method="CONNECT",
        scheme="tcp",
        host=connect.request.host,
        port=connect.request.port,
        path="",
        kind=TUNNEL,
        status=status,
        rule_verdict=str(ruled.get("verdict", "")),
        rule=str(ruled.get("rule", "")),
        rule_reason=str(ruled.get("reason", "")),
        error=" ".join(error.split()),
        origin=origin,
        identity=str(connect.metadata.get("modgate.identity", "")),
        team=str(connect.metadata.get("modgate.team", "")),
    )


def _asked(flow: http.HTTPFlow) -> tuple[str, str, int, str]:
    """Scheme, host, port and path as the client asked: the flow may have been re-pointed
    at the blob server, and on the GOPROXY endpoint the client asked modgate itself for
    the first proxy's tree, which is recorded under that proxy's URL."""
    meta, req = flow.metadata, flow.request
    url = meta.get("modgate.url")
    if (
        url
        and "modgate.proxy" in meta
        and isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode)
    ):
        url = meta["modgate.proxy"].rstrip("/") + urlsplit(url).path
    if not url:
        return req.scheme, req.pretty_host, req.port, req.path
    return _split(url)


ORIGIN_WAIT = 2.0  # seconds a new connection waits at most to learn its go command


@functools.lru_cache(maxsize=4096)  # hits ask for the same URLs again and again
def _split(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname or "", parts.port or default, path


def _session_tag(authorization: str) -> str:
    """The user of a Basic Proxy-Authorization (`modgate env --session NAME`), or ""."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        user = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[0]
    except (ValueError, UnicodeDecodeError):
        return ""
    return terminal(" ".join(user.split()))[:80]


def _ip(peername: tuple[str, int] | None) -> str:
    if not peername:
        return ""
    return peername[0].removeprefix("::ffff:")


def _address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _request_size(req: http.Request) -> int:
    line = len(req.method) + len(req.path) + 12
    head = sum(len(k) + len(v) + 4 for k, v in req.headers.fields)
    return line + head + 2 + len(req.raw_content or b"")


def _body_size(flow: http.HTTPFlow) -> int | None:
    resp = flow.response
    if resp is None:
        return None
    if resp.raw_content is not None:
        return len(resp.raw_content)
    if flow.error is not None:
        return None  # a streamed body cut short: how much went out is not known
    try:
        return int(resp.headers.get("Content-Length", ""))
    except ValueError:
        return None
