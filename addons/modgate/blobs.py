"""A loopback HTTP/1.1 file server for large bodies: stored zips, and zips still
downloading (growing.py).

mitmproxy holds a response an addon builds wholly in memory, and streams only bodies it
receives from a server; and its event loop moves bytes at a fraction of what the disk
and the loopback interface can. So a large body is offered here under a single-use
token, and either
  - the flow is pointed here and mitmproxy streams it on (any client), or
  - a client on this machine is redirected here and fetches it itself, over plain HTTP
    or, when it asked over TLS, over TLS with a certificate for 127.0.0.1 from
    modgate's CA (the client already trusts it).
Each transfer runs on its own thread: reading, hashing and sending release the GIL,
so transfers do not queue behind the proxy's event loop.

The body's SHA-256 is computed as it is sent and the last piece is held back until it
is known: a stored file altered on disk, or a download that fails its checks, never
reaches the client whole (the transfer is cut short, which go reports as an error).
"""

from __future__ import annotations

import hashlib
import http.server
import logging
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from modgate.growing import GrowingFile

log = logging.getLogger(__name__)
CHUNK = 1 << 20

# An offer not collected within this time (its flow died, its client went away) is
# dropped and its file closed.
OFFER_TTL = 120.0
# A download that makes no progress for this long is given up by its readers (the
# fetcher's own timeouts normally end it first).
STALL = 120.0


@dataclass
class Transfer:
    """How the GET of one offer went; passed to the offer's `on_done`."""

    sent: int = 0  # body bytes that went out
    error: str = ""  # why it stopped short; "" when the whole body went out
    ended: float = 0.0  # time.time() when it ended


class Handoff:
    """A request answered with a redirect to the BlobServer: its body's transfer, to
    come. Its owner calls `ended` on the event loop."""

    def __init__(self) -> None:
        self.transfer: Transfer | None = None
        self._then: list[Callable[[], None]] = []

    def then(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the transfer has ended."""
        if self.transfer is not None:
            callback()
        else:
            self._then.append(callback)

    def ended(self, transfer: Transfer) -> None:
        self.transfer = transfer
        callbacks, self._then = self._then, []
        for callback in callbacks:
            callback()


@dataclass
class _Offer:
    file: BinaryIO
    size: int
    sha256: str  # "" while `growing` has not settled
    headers: dict[str, str]
    growing: GrowingFile | None
    on_damage: Callable[[], None]
    on_done: Callable[[Transfer], None]
    deadline: float


def _nothing(*_: object) -> None:
    pass


class BlobServer:
    def __init__(self) -> None:
        self._offers: dict[str, _Offer] = {}
        self._lock = threading.Lock()
        self._servers: list[_Server] = []
        self.port = 0  # plain HTTP
        self.tls_port = 0  # TLS, once started with a context

    def start(self, tls: ssl.SSLContext | None = None) -> None:
        """Listen on 127.0.0.1: a plain HTTP port and, given `tls`, a TLS port."""
        plain = self._listen(None)
        self.port = plain.server_address[1]
        if tls is not None:
            self.tls_port = self._listen(tls).server_address[1]

    def _listen(self, tls: ssl.SSLContext | None) -> _Server:
        server = _Server(self, tls)
        threading.Thread(target=server.serve_forever, name="modgate-blobs", daemon=True).start()
        self._servers.append(server)
        return server

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()
        self.port = self.tls_port = 0
        with self._lock:
            tokens = list(self._offers)
        for token in tokens:
            self.withdraw(token)

    def offer(
        self,
        file: BinaryIO,
        size: int,
        sha256: str,
        headers: dict[str, str],
        *,
        growing: GrowingFile | None = None,
        on_damage: Callable[[], None] = _nothing,
        on_done: Callable[[Transfer], None] = _nothing,
    ) -> str:
        """Register a body for one GET; returns the path to request. Takes over `file`.
        `on_damage` runs when a stored body no longer matches `sha256`; `on_done` when
        the GET ends, either way. Both run on the transfer's thread."""
        self._expire()
        token = secrets.token_urlsafe(18)
        deadline = time.monotonic() + OFFER_TTL
        with self._lock:
            self._offers[token] = _Offer(
                file, size, sha256, headers, growing, on_damage, on_done, deadline
            )
        return f"/blob/{token}"

    def withdraw(self, path_or_token: str) -> None:
        offer = self._take(path_or_token)
        if offer is not None:
            offer.file.close()
            offer.on_done(Transfer(error="never collected", ended=time.time()))

    def _take(self, path_or_token: str) -> _Offer | None:
        with self._lock:
            return self._offers.pop(path_or_token.removeprefix("/blob/"), None)

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            expired = [t for t, o in self._offers.items() if o.deadline < now]
        for token in expired:
            self.withdraw(token)

    def send(self, offer: _Offer, sock: socket.socket) -> Transfer:
        """Send the body, holding back the last piece read until its SHA-256 is known to
        match; a growing body is read as it arrives."""
        digest, pos, sent, held = hashlib.sha256(), 0, 0, b""
        growing, expected = offer.growing, offer.sha256
        idle_since = time.monotonic()
        while True:
            chunk = offer.file.read(CHUNK)
            if chunk:
                pos += len(chunk)
                digest.update(chunk)
                if held:
                    sock.sendall(held)
                    sent += len(held)
                held, idle_since = chunk, time.monotonic()
                continue
            if growing is None:
                break
            written, settled, error = growing.wait(pos, timeout=1.0)
            if error is not None:
                return Transfer(sent, f"not served: {error}", time.time())
            if written > pos:
                continue
            if settled is not None:
                expected = settled
                break
            if time.monotonic() - idle_since > STALL:
                return Transfer(sent, f"the download stalled for {STALL:.0f}s", time.time())
        if pos != offer.size or digest.hexdigest() != expected:
            if growing is None:
                log.error("modgate: a stored body changed on disk since it was stored: dropped")
                offer.on_damage()
                return Transfer(sent, "stored body changed on disk: dropped", time.time())
            return Transfer(sent, "downloaded body changed while it was read", time.time())
        sock.sendall(held)
        return Transfer(sent + len(held), "", time.time())


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, blobs: BlobServer, tls: ssl.SSLContext | None) -> None:
        self.blobs, self.tls = blobs, tls
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.tls is not None:  # the handshake runs on the handler's thread
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("modgate: blob transfer to %s failed", client_address, exc_info=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else the last write waits for a delayed ACK
    server: _Server

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.settimeout(30)
            self.connection.do_handshake()
            self.connection.settimeout(None)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        offer = self.server.blobs._take(self.path)
        if offer is None:
            self.send_error(404, "no such blob (each is served once, within minutes)")
            return
        transfer = Transfer(error="client went away", ended=time.time())
        try:
            self.send_response(200)
            for name, value in offer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(offer.size))
            self.end_headers()
            transfer = self.server.blobs.send(offer, self.connection)
        except OSError as e:
            transfer = Transfer(transfer.sent, f"client went away: {e}", time.time())
        finally:
            offer.file.close()
            if transfer.error:
                self.close_connection = True  # the client sees a short transfer
            try:
                offer.on_done(transfer)
            except Exception:  # a bug in the callback must not take the server thread down
                log.exception("modgate: reporting a blob transfer failed")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass
