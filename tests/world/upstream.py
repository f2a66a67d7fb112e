"""A real module proxy on 127.0.0.1 for tests, which counts requests and misbehaves on cue.

It serves a `World` (or a directory in the proxy layout) over HTTP/1.1 following
the GOPROXY protocol of the Go modules reference: `$base/$module/@v/list`,
`…/@v/$version.info`, `.mod`, `.zip` and `$base/$module/@latest`, paths and versions
`!`-escaped; anything else is a 404 with a text/plain body, as real proxies answer.

    with Upstream(world) as up:
        up.fault("*.zip", status=500, times=1)     # the next zip request fails
        run_go(["mod", "download", ...], go_env(tmp_path, up.url), tmp_path)
        assert up.count("*/@v/*.zip") == ...

Given a `TestSumdb`, it also proxies that checksum database as the "Checksum database"
section lets a proxy do: `$base/sumdb/<name>/supported` answers 200 and
`$base/sumdb/<name>/{latest,lookup/…,tile/…}` are the database's own answers, so a test
can make the database reachable only through the proxy (as it is on many networks).
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import re
import socket
import ssl
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from .modules import World
from .sumdb import TestSumdb, _HTTPError

CONTENT_TYPES: Mapping[str, str] = {
    "list": "text/plain; charset=UTF-8",
    "mod": "text/plain; charset=UTF-8",
    "info": "application/json",
    "latest": "application/json",
    "zip": "application/zip",
    "error": "text/plain; charset=UTF-8",
}
"""Content-Type per kind of answer, as real module proxies send them."""

_CHUNK = 1 << 18


@dataclass(frozen=True)
class Resource:
    """An answer to a protocol request.

    `kind` is "list", "info", "mod", "zip" or "latest"; `body` is in memory or a file
    to stream.
    """

    kind: str
    body: bytes | Path


@dataclass(frozen=True)
class Fault:
    """How to misbehave on one request; the fields combine.

    `delay` seconds pass before the status line; `reset` then drops the connection
    with a TCP reset and no answer; `status` replaces the answer with that status and
    a text/plain `body`; `throttle` sends the body at that many bytes per second;
    `truncate` announces the full Content-Length but sends only that many body bytes
    before closing; `redirect` answers `status` (302 by default) with that Location,
    "{path}" in it replaced by the request's path.
    """

    status: int | None = None
    body: str | None = None
    reset: bool = False
    delay: float = 0.0
    throttle: int | None = None
    truncate: int | None = None
    redirect: str | None = None


class FaultRule:
    """A fault applied to requests whose path matches, `times` times or forever (None).

    A str pattern is an fnmatch pattern over the whole request path ("*" crosses
    "/"); a compiled regex is searched in it. `hits` counts requests it applied to.
    """

    def __init__(self, pattern: str | re.Pattern[str], fault: Fault, times: int | None) -> None:
        self.pattern = pattern
        self.fault = fault
        self.remaining = times
        self.hits = 0

    def __repr__(self) -> str:
        return f"FaultRule({self.pattern!r}, {self.fault}, remaining={self.remaining})"

    def matches(self, path: str) -> bool:
        """Whether the rule applies to `path` (and has uses left)."""
        if self.remaining is not None and self.remaining <= 0:
            return False
        if isinstance(self.pattern, re.Pattern):
            return self.pattern.search(path) is not None
        return fnmatch.fnmatchcase(path, self.pattern)


class Upstream:
    """A GOPROXY-protocol server in a background thread, on a port kept across restarts.

    `source` is a World (served live: versions added later appear) or a directory in
    the proxy layout. `base` is a path prefix such as "/go"; `delay` seconds pass
    before every answer; `content_types` overrides entries of CONTENT_TYPES.
    """

    def __init__(
        self,
        source: World | Path | str,
        *,
        base: str = "",
        port: int = 0,
        delay: float = 0.0,
        content_types: Mapping[str, str] | None = None,
        sumdb: TestSumdb | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.sumdb = sumdb
        self.tls = tls  # serve HTTPS with this context (its certificate names 127.0.0.1)
        self.source = source if isinstance(source, World) else Path(source)
        self.base = "/" + base.strip("/") if base.strip("/") else ""
        self.port = port
        self.delay = delay
        self.content_types = {**CONTENT_TYPES, **(content_types or {})}
        self._counts: Counter[str] = Counter()
        self._first: dict[str, float] = {}  # path -> when it was first asked for (time.time)
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The GOPROXY URL: http://127.0.0.1:PORT[base]."""
        if not self.port:
            raise RuntimeError("the upstream has not been started")
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{self.base}"

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._server is not None

    def start(self) -> Upstream:
        """Listen (on the same port as before, after a stop) and serve in a thread."""
        if self._server is not None:
            return self
        self._server = _Server(("127.0.0.1", self.port), self)
        self.port = self._server.server_address[1]
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection, as a crashed server would."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        server.drop_connections()
        thread.join()

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()

    def fault(
        self,
        pattern: str | re.Pattern[str],
        *,
        times: int | None = None,
        status: int | None = None,
        body: str | None = None,
        reset: bool = False,
        delay: float = 0.0,
        throttle: int | None = None,
        truncate: int | None = None,
        redirect: str | None = None,
    ) -> FaultRule:
        """Misbehave on requests matching `pattern` (see Fault, FaultRule); first rule wins."""
        fault = Fault(status, body, reset, delay, throttle, truncate, redirect)
        if fault == Fault():
            raise ValueError(
                "a fault must do something: status, reset, delay, throttle, truncate, redirect"
            )
        rule = FaultRule(pattern, fault, times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_faults(self) -> None:
        """Forget every fault rule."""
        with self._lock:
            self._rules.clear()

    def count(self, pattern: str) -> int:
        """Requests whose path matches `pattern` (fnmatch; a plain path matches itself)."""
        with self._lock:
            return sum(n for path, n in self._counts.items() if fnmatch.fnmatchcase(path, pattern))

    def counts(self) -> dict[str, int]:
        """Requests per path, as received (base included)."""
        with self._lock:
            return dict(self._counts)

    def first_asked(self) -> dict[str, float]:
        """When each path was first asked for (time.time()), as received."""
        with self._lock:
            return dict(self._first)

    def reset_counts(self) -> None:
        """Forget the request counts."""
        with self._lock:
            self._counts.clear()
            self._first.clear()

    def resolve(self, path: str) -> Resource | None:
        """The answer to a GOPROXY request path (with base), or None for a 404."""
        if self.base:
            if not path.startswith(self.base + "/"):
                return None
            path = path[len(self.base) :]
        if isinstance(self.source, World):
            return _resolve_world(self.source, path)
        return _resolve_tree(self.source, path)

    def _take(self, path: str) -> Fault | None:
        """Count the request and consume the first fault rule that matches it."""
        with self._lock:
            self._counts[path] += 1
            self._first.setdefault(path, time.time())
            for rule in self._rules:
                if rule.matches(path):
                    rule.hits += 1
                    rule.remaining = None if rule.remaining is None else rule.remaining - 1
                    return rule.fault
        return None

    def _answer(self, handler: _Handler) -> None:
        """Serve one request, applying the global delay and any fault."""
        path = unquote(urlsplit(handler.path).path)
        fault = self._take(path) or Fault()
        time.sleep(self.delay + fault.delay)
        if fault.reset:
            handler.reset()
            return
        if fault.redirect is not None:
            handler.redirect(fault.status or 302, fault.redirect.replace("{path}", path))
            return
        if fault.status is not None:
            text = fault.body if fault.body is not None else f"injected fault: {fault.status}"
            handler.send(fault.status, self.content_types["error"], text.encode(), fault)
            return
        if self.sumdb is not None and path.startswith(f"{self.base}/sumdb/{self.sumdb.name}/"):
            self._answer_sumdb(handler, path.removeprefix(f"{self.base}/sumdb/{self.sumdb.name}"))
            return
        resource = self.resolve(path)
        if resource is None:
            body = f"not found: {path}".encode()
            handler.send(404, self.content_types["error"], body, fault)
            return
        handler.send(200, self.content_types[resource.kind], resource.body, fault)

    def _answer_sumdb(self, handler: _Handler, path: str) -> None:
        """`path` below `sumdb/<name>`: "/supported", or the database's own answer."""
        assert self.sumdb is not None
        if path == "/supported":
            handler.send(200, self.content_types["error"], b"", Fault())
            return
        try:
            content_type, body = self.sumdb.respond(path)
        except _HTTPError as e:
            handler.send(e.status, self.content_types["error"], f"{e}\n".encode(), Fault())
            return
        handler.send(200, content_type, body, Fault())


def _resolve_world(world: World, path: str) -> Resource | None:
    """Answer from a World: list, info, mod, zip or latest, per the GOPROXY protocol."""
    request = _parse(path)
    if request is None:
        return None
    module, kind, version = request
    try:
        if kind == "list":
            if not world.versions(module):
                return None
            return Resource("list", "".join(f"{v}\n" for v in world.list_versions(module)).encode())
        if kind == "latest":
            return Resource("latest", world.latest(module).info)
        mv = world.get(module, version)
    except KeyError:
        return None
    if kind == "zip":
        return Resource("zip", world.zip_path(mv))
    return Resource(kind, mv.info if kind == "info" else mv.gomod)


def _resolve_tree(root: Path, path: str) -> Resource | None:
    """Answer from a directory in the proxy layout (as `World.write_proxy_tree` makes)."""
    request = _parse(path)
    parts = path.strip("/").split("/")
    if request is None or path.endswith("/") or any(p in ("", ".", "..") for p in parts):
        return None
    file = root.joinpath(*parts)
    return Resource(request[1], file) if file.is_file() else None


def _parse(path: str) -> tuple[str, str, str] | None:
    """Split "/$module/@v/$version.$ext" or "/$module/@latest" into (module, kind, version).

    Paths and versions are `!`-unescaped; malformed requests give None.
    """
    escaped, sep, rest = path.lstrip("/").partition("/@v/")
    if not sep:
        escaped, sep, rest = path.lstrip("/").rpartition("/@latest")
        return (_unescape(escaped), "latest", "") if sep and not rest and escaped else None
    module = _unescape(escaped)
    if rest == "list":
        return (module, "list", "") if module else None
    stem, dot, ext = rest.rpartition(".")
    version = _unescape(stem)
    if not (module and version and dot and ext in ("info", "mod", "zip")) or "/" in stem:
        return None
    return module, ext, version


def _unescape(text: str) -> str:
    """Undo the "!x" case encoding; "" for text no client would send."""
    if re.search(r"[A-Z]|![^a-z]|!$", text):
        return ""
    return re.sub(r"!([a-z])", lambda m: m.group(1).upper(), text)


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that knows its connections, so stop() can cut them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], upstream: Upstream) -> None:
        self.upstream = upstream
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the host name up (getfqdn): slow without DNS.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Shut down every connection still open (keep-alive or mid-answer)."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hang up; report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Hands each request to the Upstream; knows how to answer, throttle, cut and reset."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server

    def do_GET(self) -> None:
        self.server.upstream._answer(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read counts, not logs."""

    def send(self, status: int, content_type: str, body: bytes | Path, fault: Fault) -> None:
        """Send a full answer, or the part of it the fault allows."""
        length = body.stat().st_size if isinstance(body, Path) else len(body)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        limit = length if fault.truncate is None else min(fault.truncate, length)
        try:
            self._send_body(body, limit, fault.throttle)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return
        if limit < length:
            self.close_connection = True

    def _send_body(self, body: bytes | Path, limit: int, throttle: int | None) -> None:
        chunk = max(1, throttle // 10) if throttle else _CHUNK
        if isinstance(body, bytes):
            self._write(memoryview(body)[:limit], chunk, throttle)
            return
        with body.open("rb") as stream:
            while limit > 0 and (block := stream.read(min(_CHUNK, limit))):
                self._write(memoryview(block), chunk, throttle)
                limit -= len(block)

    def _write(self, data: memoryview, chunk: int, throttle: int | None) -> None:
        for start in range(0, len(data), chunk):
            piece = data[start : start + chunk]
            if throttle:
                time.sleep(len(piece) / throttle)  # before: the last piece arrives late too
            self.wfile.write(piece)

    def redirect(self, status: int, location: str) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def reset(self) -> None:
        """Drop the connection with a TCP RST, sending nothing.

        A zero linger time makes close() send RST; the socket closes for real only
        once its file objects are closed too. A blank writer then takes the flush
        and close the handler still does after this.
        """
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.rfile.close()
        self.wfile.close()
        self.connection.close()
        self.wfile = io.BytesIO()
