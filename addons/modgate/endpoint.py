"""The GOPROXY endpoint (`GOPROXY=http://127.0.0.1:8081`): a lean HTTP/1.1 server on
asyncio and httptools, in the process and on the event loop of the mitmproxy master.

It is an adapter, not a second gate. Each request becomes an `HTTPFlow` (mitmproxy's
request/answer value: no proxy machinery, no connection to anywhere) and goes through
the very stages the HTTPS proxy's flows go through, the `Pipeline` (routing, rules,
read-ahead, cache, trace), hook by hook in mitmproxy's order: `requestheaders`,
`request`, `responseheaders`, `response` (or `error`). What the stages answer is written
back. mitmproxy's reverse mode did the same through its proxy layers, at several times
the CPU per cached hit (issue 13). Who may use it is mitmproxy's to say: its `block`
addon sees every connection, its `proxyauth` addon every request.

**Fail closed.** The pipeline answers a gated flow whose stage raised with modgate's 502
(pipeline.py); this server adds its own rule around it: a request leaves with the
answer the stages made or with `502 modgate: internal error: …; not served`, never
with nothing, and a flow the stages killed is answered with that 502. A body that
started to go out and cannot be finished (a large body found damaged, a download that
failed its checks) is cut: the connection closes short of its Content-Length.

**Cached small hits** skip the flow and the stages: a GET the stages answered before
with a fresh immutable hit is answered again by FastHitGate (addons/fasthit.py) while the
rules, teams and stored entry are the same, after it authenticated the request and
journalled its trace record; anything else goes through the stages.

**Large bodies** (CacheGate offers them to the BlobServer: a stored file, or a zip still
downloading) are sent by this server itself, through `BlobServer.send`, which holds back
the last piece until the body's SHA-256 is known to match: no redirect, no second
connection. The send runs on a thread of its own pool (reading, hashing), handing each
piece to the event loop and waiting while the client is slower (flow control).

HTTP/1.1 as a server owes it: keep-alive (HTTP/1.0 only when asked), pipelined requests
answered in order (reading pauses past PIPELINE_MAX waiting), request size limits
(431/413), HEAD (the head of what GET would send), a malformed request answered 400 with
a one-line reason go prints, and timeouts: a request must arrive whole within
REQUEST_TIMEOUT of its first byte (slowloris), an idle connection closes after
IDLE_TIMEOUT, a client that stops reading is dropped after SEND_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import http as stdhttp
import inspect
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httptools
from mitmproxy import connection, flow, http
from mitmproxy.proxy import mode_specs

from modgate.addons import plain
from modgate.blobs import BlobServer, Transfer

if TYPE_CHECKING:
    from modgate.addons.fasthit import FastHitGate

log = logging.getLogger("modgate")

# The flow's target, as reverse mode had it: never contacted (the stages answer every
# request of the endpoint), and a name that cannot resolve.
TARGET_HOST = "goproxy.modgate.invalid"
MAX_HEAD = 64 * 1024  # request line and headers
MAX_HEADERS = 100
MAX_BODY = 64 * 1024  # the protocol's requests have none; a POST still gets its 405
PIPELINE_MAX = 16  # requests read ahead of their answers before reading pauses
REQUEST_TIMEOUT = 10.0  # first byte to last of one request
IDLE_TIMEOUT = 120.0  # between requests (go keeps idle connections 90 s)
SEND_TIMEOUT = 120.0  # a client that takes no bytes for this long is dropped
SWEEP_EVERY = 1.0
LINGER = 2.0  # after refusing a request: its remaining bytes are read and dropped this long
TRANSFERS = 16  # large bodies sent at once; more wait for a thread
BLOB = "modgate.blob"  # CacheGate offered the body to the BlobServer (pipeline.BLOB)
FRONT = "modgate.front"  # set on the endpoint's flows; CacheGate never redirects them
# Body bytes the endpoint sent itself (a large body's transfer), for the trace: the key
# the Tracer reads for streamed bodies (addons/vcs.py's BYTES_OUT).
SENT = "modgate.bytes_out"

_REASONS = {s.value: s.phrase.encode() for s in stdhttp.HTTPStatus}
_SKIPPED = frozenset({b"content-length", b"connection", b"transfer-encoding", b"keep-alive"})
_HOOKS = ("requestheaders", "request", "responseheaders", "response", "error")


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """The endpoint's listening socket, bound before anything starts, so a port in use
    stops `modgate run` with the address in the message."""
    try:
        return socket.create_server((host, port), backlog=1024, reuse_port=reuse_port)
    except OSError as e:
        raise OSError(e.errno, f"GOPROXY endpoint {host}:{port}: {e.strerror or e}") from e


@dataclass
class _Request:
    method: bytes
    path: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool
    start: float
    head: bool


Hook = Callable[[http.HTTPFlow], Any]


class EndpointServer:
    """Serves the endpoint on a bound socket through `pipeline`'s hooks."""

    def __init__(
        self,
        pipeline: object,
        blobs: BlobServer,
        *,
        proxyauth: Hook | None = None,
        block: Callable[[connection.Client], None] | None = None,
        fast: FastHitGate | None = None,
    ) -> None:
        self.blobs = blobs
        self.proxyauth, self.block = proxyauth, block
        # Cached small hits the stages answered before (addons/fasthit.py).
        self.fast = fast
        self.hooks: dict[str, tuple[Hook, bool] | None] = {}
        for name in _HOOKS:
            hook = getattr(pipeline, name, None)
            self.hooks[name] = (hook, inspect.iscoroutinefunction(hook)) if hook else None
        # Connection hooks (the Tracer learns which go command is at the other end).
        self.connected: Callable[[connection.Client], Any] | None = getattr(
            pipeline, "client_connected", None
        )
        self.disconnected: Callable[[connection.Client], Any] | None = getattr(
            pipeline, "client_disconnected", None
        )
        self.connections: set[_Connection] = set()
        self.mode: mode_specs.ProxyMode = mode_specs.ProxyMode.parse("regular")
        self.port = 0
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.pool: ThreadPoolExecutor | None = None

    async def start(self, sock: socket.socket, tls: ssl.SSLContext | None = None) -> None:
        """Serve on `sock`; over TLS with `tls` (with teams: go sends credentials over TLS
        only)."""
        host, self.port = sock.getsockname()[:2]
        # Reverse mode's spec: the stages know the endpoint's flows by it (Router, Tracer).
        self.mode = mode_specs.ProxyMode.parse(f"reverse:http://{TARGET_HOST}@{self.port}")
        self.pool = ThreadPoolExecutor(TRANSFERS, thread_name_prefix="modgate-endpoint")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), sock=sock, ssl=tls)
        self._sweeper = loop.create_task(self._sweep())

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for conn in list(self.connections):
            conn.close()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        self._server = self._sweeper = self.pool = None

    async def _sweep(self) -> None:
        """Close connections past their deadline (idle, slow request, client not reading)."""
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.deadline and now > conn.deadline:
                    conn.expired()

    async def call(self, name: str, f: http.HTTPFlow) -> None:
        hook = self.hooks[name]
        if hook is None:
            return
        if hook[1]:
            await hook[0](f)
        else:
            hook[0](f)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests as they arrive, answers them in order."""

    def __init__(self, server: EndpointServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: connection.Client | None = None
        self.queue: deque[_Request] = deque()
        self.busy = False
        self.closed = False
        self.reading = True
        self.deadline = 0.0  # monotonic; 0: none (serving)
        self.refusal: tuple[int, str] | None = None  # the request cannot be taken: why
        self.closing = False  # refused: lingering until the client is done sending
        self._writable: asyncio.Future[None] | None = None
        self._url: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._start = 0.0
        self._in_request = False
        self.ready: asyncio.Future[Any] | None = None  # the client_connected hook, running

    # --- the connection --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        here = transport.get_extra_info("sockname") or ("", 0)
        self.client = connection.Client(
            peername=(peer[0], peer[1]), sockname=(here[0], here[1]),
            state=connection.ConnectionState.OPEN, proxy_mode=self.server.mode,
            timestamp_start=time.time(),
        )  # fmt: skip
        if self.server.block is not None:
            self.server.block(self.client)
            if self.client.error:
                transport.abort()
                self.closed = True
                return
        self.server.connections.add(self)
        self.deadline = time.monotonic() + IDLE_TIMEOUT
        if self.server.connected is not None:
            result = self.server.connected(self.client)
            if inspect.isawaitable(result):
                self.ready = asyncio.ensure_future(result)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.client is not None:
            self.client.timestamp_end = time.time()
            if self.server.disconnected is not None:
                try:
                    self.server.disconnected(self.client)
                except Exception:
                    log.exception("modgate: endpoint: client_disconnected failed")
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(ConnectionResetError("the client went away"))

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()
        self.deadline = time.monotonic() + SEND_TIMEOUT

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None
        self.deadline = 0.0 if self.busy else time.monotonic() + IDLE_TIMEOUT

    async def writable(self) -> None:
        """Wait while the client has not taken what was written (flow control)."""
        if self.closed:
            raise ConnectionResetError("the client went away")
        if self._writable is not None:
            await self._writable

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def expired(self) -> None:
        """The sweeper found this connection past its deadline."""
        if self._in_request and not self.busy and not self.closing:
            self.refusal = (408, "not received whole in time")
            self._refuse_bad()
        else:
            if self.transport is not None:
                self.transport.abort()
            self.closed = True

    def data_received(self, data: bytes) -> None:
        if self.closed or self.refusal is not None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.refusal = self.refusal or (400, "upgrade is not part of the module proxy protocol")
        except httptools.HttpParserError as e:
            self.refusal = self.refusal or (400, f"malformed HTTP request ({_why(e)})")
        if self.queue and not self.busy:
            self._serve_soon()  # what arrived whole before a bad request is answered first
        elif self.refusal is not None and not self.busy:
            self._refuse_bad()

    def _refuse_bad(self) -> None:
        assert self.refusal is not None
        status, why = self.refusal
        self._refuse(status, f"modgate: bad request: {why}; not served")

    # --- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size = [], [], [], 0
        self._start, self._in_request = time.time(), True
        if not self.busy:
            self.deadline = time.monotonic() + REQUEST_TIMEOUT

    def on_url(self, url: bytes) -> None:
        self._grow(len(url))
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow(len(name) + len(value) + 4)
        if len(self._headers) >= MAX_HEADERS:
            self.refusal = (431, f"more than {MAX_HEADERS} header fields")
            raise ValueError("too many header fields")
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_HEAD + MAX_BODY:
            self.refusal = (413, f"request body over {MAX_BODY} bytes")
            raise ValueError("request body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        self._in_request = False
        self.queue.append(_Request(
            method=method, path=b"".join(self._url),
            version=f"HTTP/{self.parser.get_http_version()}".encode(),
            headers=self._headers, body=b"".join(self._body),
            keep_alive=self.parser.should_keep_alive(), start=self._start, head=method == b"HEAD",
        ))  # fmt: skip
        if len(self.queue) >= PIPELINE_MAX and self.reading and self.transport is not None:
            self.reading = False
            self.transport.pause_reading()

    def _grow(self, n: int) -> None:
        self._size += n
        if self._size > MAX_HEAD:
            self.refusal = (431, f"request line and header fields over {MAX_HEAD} bytes")
            raise ValueError("request head too large")

    # --- answering -----------------------------------------------------------------------

    def _serve_soon(self) -> None:
        self.busy, self.deadline = True, 0.0
        # Eager: a cached hit runs to its answer here and now, with no task scheduled.
        task = asyncio.Task(self._serve(), loop=asyncio.get_running_loop(), eager_start=True)
        if not task.done():
            _running.add(task)
            task.add_done_callback(_running.discard)

    async def _serve(self) -> None:
        try:
            if self.ready is not None and not self.ready.done():
                # Who is at the other end, known before its first request is traced.
                with contextlib.suppress(Exception):
                    await self.ready
            while self.queue and not self.closed and not self.closing:
                req = self.queue.popleft()
                if not self.reading and len(self.queue) < PIPELINE_MAX // 2:
                    self.reading = True
                    assert self.transport is not None
                    self.transport.resume_reading()
                await self._exchange(req)
                if not req.keep_alive:
                    self.close()
                elif self._writable is not None:
                    await self.writable()
        except ConnectionError:
            self.close()
        finally:
            self.busy = False
            if self.refusal is not None and not self.closed:
                self._refuse_bad()
            if not self.closed and self._writable is None:
                timeout = REQUEST_TIMEOUT if self._in_request else IDLE_TIMEOUT
                self.deadline = time.monotonic() + timeout

    async def _exchange(self, req: _Request) -> None:
        """One request through the stages; fail closed whatever happens in them."""
        if self.server.fast is not None and req.method == b"GET" and self._fast(req):
            return
        f = self._flow(req)
        sent = False
        try:
            sent = await self._answer(f, req)
        except Exception as e:
            where = f"the GOPROXY endpoint ({type(e).__name__}: {e})"
            log.error("modgate: internal error in %s", where, exc_info=e)
            if sent or self._started:
                self._cut()
            else:
                await self._fail(f, req, f"internal error: {where} failed; not served")

    _started = False  # the head of the current answer went out

    def _fast(self, req: _Request) -> bool:
        """Answer a cached small hit the stages answered before, recorded already
        (addons/fasthit.py); False: the stages' to answer."""
        assert self.server.fast is not None and self.client is not None
        try:
            answer = self.server.fast.endpoint(
                self.client, req.path, req.headers, req.start, len(req.body)
            )
        except Exception as e:  # the stages answer it, and fail closed if they must
            log.error("modgate: internal error in the endpoint's fast path: %s", e, exc_info=e)
            return False
        if answer is None:
            return False
        head = answer.heads.get(req.keep_alive)
        if head is None:
            head = answer.heads[req.keep_alive] = self._head(
                answer.status, answer.reason.decode(), answer.fields, len(answer.body),
                req.keep_alive,
            )  # fmt: skip
        if self.transport is not None and not self.closed:
            self.transport.write(head + answer.body)
        return True

    async def _answer(self, f: http.HTTPFlow, req: _Request) -> bool:
        server = self.server
        self._started = False
        if server.proxyauth is not None:
            server.proxyauth(f)
        # Every hook, as mitmproxy calls them: a stage returns early on an answered flow.
        await server.call("requestheaders", f)
        if f.error is None:
            await server.call("request", f)
        if f.error is not None:
            return await self._killed(f, req)
        if f.response is None:
            if BLOB in f.metadata:
                await self._transfer(f, req)
                return True
            await self._fail(f, req, "internal error: no stage answered this request; not served")
            return False
        f.response.timestamp_start = time.time()
        await server.call("responseheaders", f)
        if f.error is None:
            await server.call("response", f)  # traced here: before the answer goes out
        if f.error is not None:
            return await self._killed(f, req)
        self._write(f.response, req)
        return True

    def _flow(self, req: _Request) -> http.HTTPFlow:
        assert self.client is not None
        request = http.Request(
            TARGET_HOST, 80, req.method, b"http", b"", req.path, req.version,
            http.Headers(req.headers), req.body, None, req.start, time.time(),
        )  # fmt: skip
        f = http.HTTPFlow(self.client, _NOWHERE, live=True)
        f.request = request
        f.metadata[FRONT] = "endpoint"
        return f

    def _write(self, response: http.Response, req: _Request) -> None:
        body = response.raw_content or b""
        head = self._head(response.status_code, response.reason, response.headers.fields,
                          len(body), req.keep_alive)  # fmt: skip
        if self.transport is not None and not self.closed:
            self.transport.write(head if req.head else head + body)
        response.timestamp_end = time.time()

    def _head(self, status: int, reason: str, fields: Any, length: int, keep_alive: bool) -> bytes:
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason.encode() or _REASONS.get(status, b""))]
        lines += [b"%s: %s\r\n" % (k, v) for k, v in fields if k.lower() not in _SKIPPED]
        lines.append(b"Content-Length: %d\r\n" % length)
        if not keep_alive:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    async def _killed(self, f: http.HTTPFlow, req: _Request) -> bool:
        """A stage killed the flow (pipeline.internal_error on a body to come): the
        client gets modgate's 502 with the reason, and the trace records it."""
        why = f.metadata.get("modgate.error") or "internal error: the answer was withdrawn"
        await self._fail(f, req, why if "not served" in why else f"{why}; not served")
        return False

    async def _fail(self, f: http.HTTPFlow, req: _Request, message: str) -> None:
        """Answer with modgate's 502 and close: whatever the stages left is not sent."""
        f.metadata.setdefault("modgate.error", message)
        f.response = answer = plain(502, f"modgate: {message}")
        req.keep_alive = False
        if f.error is None:
            f.error = flow.Error(message)
        try:  # recorded, if the trace still can
            await self.server.call("error", f)
        except Exception as e:
            log.error("modgate: recording a refused request failed: %s", e, exc_info=e)
        self._write(answer, req)

    def _refuse(self, status: int, message: str) -> None:
        """A request the server itself cannot take (malformed, too large, too slow)."""
        response = plain(status, message)
        head = self._head(status, "", response.headers.fields, len(response.raw_content or b""),
                          keep_alive=False)  # fmt: skip
        transport = self.transport
        if transport is None or self.closed:
            return
        transport.write(head + (response.raw_content or b""))
        # Closing now, with the rest of the request unread, would make the kernel reset
        # the connection, and the client lose the answer: say we are done sending, drop
        # what still arrives (data_received), and close at its end or after LINGER.
        self.refusal, self.deadline, self.closing = self.refusal or (status, message), 0.0, True
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER, self.close)
        else:
            self.close()

    def _cut(self) -> None:
        """Stop an answer part way: the client sees a transfer shorter than announced."""
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    # --- large bodies ----------------------------------------------------------------------

    async def _transfer(self, f: http.HTTPFlow, req: _Request) -> None:
        """Send the body CacheGate offered to the BlobServer, as the BlobServer would
        (`BlobServer.send`: its end held back until its hash is known to match)."""
        server = self.server
        offer = server.blobs.take(f.metadata[BLOB])
        if offer is None:
            await self._fail(f, req, "internal error: the body to send was withdrawn; not served")
            return
        transfer = Transfer(error="not sent", ended=time.time())
        try:
            headers = http.Headers([(k.encode(), v.encode()) for k, v in offer.headers.items()])
            headers["Content-Length"] = str(offer.size)
            f.response = http.Response(b"HTTP/1.1", 200, b"OK", headers, None, None,
                                       time.time(), None)  # fmt: skip
            await server.call("responseheaders", f)
            if f.error is not None:
                await self._killed(f, req)
                why = str(f.metadata.get("modgate.error", "withdrawn"))
                transfer = Transfer(error=why, ended=time.time())
                return
            assert self.transport is not None
            self.transport.write(self._head(200, "OK", headers.fields, offer.size, req.keep_alive))
            self._started = True
            if req.head:
                transfer = Transfer(error="", ended=time.time())
            else:
                loop = asyncio.get_running_loop()
                writer = _LoopWriter(self, loop)
                transfer = await loop.run_in_executor(server.pool, writer.send, server.blobs, offer)
        finally:
            offer.file.close()
            offer.on_done(transfer)  # CacheGate: what was served goes into the flow
        await asyncio.sleep(0)  # let that callback (call_soon_threadsafe) run first
        f.response.timestamp_end = time.time()
        f.metadata[SENT] = transfer.sent  # the trace's bytes out, whole or cut short
        if transfer.error:
            self._cut()
            f.error = flow.Error(transfer.error)
            await server.call("error", f)
        else:
            await server.call("response", f)
            if f.error is not None:  # too late to take back: the body is out, cut after it
                self._cut()


class _LoopWriter:
    """What `BlobServer.send` writes to from a pool thread (`sendall`): each piece goes
    to the connection on the event loop, once the client has taken the last ones."""

    def __init__(self, conn: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.conn, self.loop, self.sent = conn, loop, 0

    def send(self, blobs: BlobServer, offer: Any) -> Transfer:
        try:
            return blobs.send(offer, self)  # type: ignore[arg-type]
        except OSError as e:
            return Transfer(self.sent, f"client went away: {e}", time.time())

    def sendall(self, data: bytes) -> None:
        asyncio.run_coroutine_threadsafe(self._write(data), self.loop).result(SEND_TIMEOUT)
        self.sent += len(data)

    async def _write(self, data: bytes) -> None:
        await self.conn.writable()
        if self.conn.closed or self.conn.transport is None:
            raise ConnectionResetError("the client went away")
        self.conn.transport.write(data)


_NOWHERE = connection.Server(address=None)
_running: set[asyncio.Task[None]] = set()


def _why(e: Exception) -> str:
    text = str(e.__context__ or e) if isinstance(e, httptools.HttpParserCallbackError) else str(e)
    return " ".join(text.split())[:200] or type(e).__name__
