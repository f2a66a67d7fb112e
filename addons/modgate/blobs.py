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
Transfers run on a bounded pool of threads (reading, hashing and sending release the
GIL, so they do not queue behind the proxy's event loop). A connection takes a thread
only once its request has started to arrive: one thread watches every connection until
then (a selector), and closes those idle for `idle_timeout`. Each connection serves one
request and closes: every body is a single-use link, fetched once.

An offer not collected within `offer_ttl` is refused from that moment, and withdrawn by
the watching thread (its file closed, its `on_done` told) without waiting for a request.

The body's SHA-256 is computed as it is sent and the last piece is held back until it
is known: a stored file altered on disk, or a download that fails its checks, never
reaches the client whole (the transfer is cut short, which go reports as an error).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import logging
import secrets
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from modgate.growing import GrowingFile

log = logging.getLogger(__name__)
CHUNK = 1 << 20

# An offer not collected within this time (its flow died, its client went away) is
# dropped and its file closed.
OFFER_TTL = 120.0
# A connection that has not sent its whole request (or finished its TLS handshake)
# within this time is closed.
IDLE_TIMEOUT = 30.0
# Transfers at once; more wait (their request read) until a thread is free.
WORKERS = 16
# Connections waiting for their request; past this, the oldest are closed.
MAX_WAITING = 1024
# A client that takes longer than this to accept one CHUNK is given up.
SEND_TIMEOUT = 120.0
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
    def __init__(
        self,
        *,
        offer_ttl: float = OFFER_TTL,
        idle_timeout: float = IDLE_TIMEOUT,
        workers: int = WORKERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.offer_ttl, self.idle_timeout, self.clock = offer_ttl, idle_timeout, clock
        self._workers = workers
        self._offers: dict[str, _Offer] = {}
        self._lock = threading.Lock()
        self._listeners: dict[socket.socket, ssl.SSLContext | None] = {}
        self._waiting: dict[socket.socket, float] = {}  # accepted, no request yet: deadline
        self._selector: selectors.BaseSelector | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.port = 0  # plain HTTP
        self.tls_port = 0  # TLS, once started with a context

    def start(self, tls: ssl.SSLContext | None = None) -> None:
        """Listen on 127.0.0.1: a plain HTTP port and, given `tls`, a TLS port."""
        self._selector = selectors.DefaultSelector()
        self._wake = socket.socketpair()
        self._wake[0].setblocking(False)
        self._selector.register(self._wake[0], selectors.EVENT_READ)
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="modgate-blobs")
        self._stopping = False
        self.port = self._listen(None)
        if tls is not None:
            self.tls_port = self._listen(tls)
        self._thread = threading.Thread(target=self._watch, name="modgate-blobs", daemon=True)
        self._thread.start()

    def _listen(self, tls: ssl.SSLContext | None) -> int:
        assert self._selector is not None
        sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        sock.setblocking(False)
        self._listeners[sock] = tls
        self._selector.register(sock, selectors.EVENT_READ)
        return int(sock.getsockname()[1])

    def stop(self) -> None:
        if self._thread is not None and self._wake is not None:
            self._stopping = True
            self._wake[1].send(b"x")
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for sock in [*self._listeners, *self._waiting, *(self._wake or ())]:
            sock.close()
        if self._selector is not None:
            self._selector.close()
        self._listeners.clear()
        self._waiting.clear()
        self._selector = self._wake = self._pool = self._thread = None
        self.port = self.tls_port = 0
        with self._lock:
            tokens = list(self._offers)
        for token in tokens:
            self.withdraw(token)

    def _watch(self) -> None:
        """The watching thread: accepts connections, hands each to the pool once its
        request starts to arrive, closes idle ones, and withdraws expired offers."""
        while not self._stopping:
            try:
                self._turn()
            except Exception:  # a bug here must not leave every link unserved
                log.exception("modgate: the blob server's watching thread failed")
                time.sleep(0.25)

    def _turn(self) -> None:
        assert self._selector is not None
        for key, _ in self._selector.select(timeout=0.25):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock in self._listeners:
                self._accept(sock)
            elif sock in self._waiting:
                self._selector.unregister(sock)
                deadline = self._waiting.pop(sock)
                self._hand_on(sock, deadline)
        self._close_idle()
        self._expire()

    def _accept(self, listener: socket.socket) -> None:
        assert self._selector is not None
        for _ in range(64):  # then let the others have a turn
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                log.debug("modgate: blob server accept failed", exc_info=True)
                return
            tls = self._listeners[listener]
            if tls is not None:  # the handshake runs on the pool's thread
                sock = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            sock.setblocking(False)
            self._waiting[sock] = time.monotonic() + self.idle_timeout
            self._selector.register(sock, selectors.EVENT_READ)
            while len(self._waiting) > MAX_WAITING:
                self._drop(next(iter(self._waiting)))

    def _hand_on(self, sock: socket.socket, deadline: float) -> None:
        assert self._pool is not None
        try:
            self._pool.submit(self._serve, sock, deadline)
        except RuntimeError:  # shutting down
            sock.close()

    def _serve(self, sock: socket.socket, deadline: float) -> None:
        """On a pool thread: the handshake and the request within the idle deadline,
        then the transfer."""
        try:
            sock.setblocking(True)
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            _Handler(sock, sock.getpeername(), cast(Any, self))
        except Exception:
            log.debug("modgate: blob transfer failed", exc_info=True)
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def _close_idle(self) -> None:
        now = time.monotonic()
        for sock, deadline in list(self._waiting.items()):
            if deadline > now:
                break  # in order of acceptance, so of deadline
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        assert self._selector is not None
        del self._waiting[sock]
        self._selector.unregister(sock)
        sock.close()

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
        token = secrets.token_urlsafe(18)
        deadline = self.clock() + self.offer_ttl
        with self._lock:
            self._offers[token] = _Offer(
                file, size, sha256, headers, growing, on_damage, on_done, deadline
            )
        return f"/blob/{token}"

    def withdraw(self, path_or_token: str) -> None:
        with self._lock:
            offer = self._offers.pop(path_or_token.removeprefix("/blob/"), None)
        if offer is not None:
            offer.file.close()
            offer.on_done(Transfer(error="never collected", ended=time.time()))

    def take(self, path_or_token: str) -> _Offer | None:
        """The offer, for its one GET (here, or the GOPROXY endpoint sending it itself);
        None when there is none or it has expired."""
        token = path_or_token.removeprefix("/blob/")
        with self._lock:
            offer = self._offers.get(token)
            if offer is None or self.clock() >= offer.deadline:
                offer = None
            else:
                del self._offers[token]
        if offer is None:
            self._expire()  # an expired one goes now, not at the next sweep
        return offer

    def _expire(self) -> None:
        now = self.clock()
        with self._lock:
            expired = [t for t, o in self._offers.items() if o.deadline <= now]
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


class _Handler(http.server.BaseHTTPRequestHandler):
    """One request on a connection the BlobServer accepted; its socket's timeout is what
    is left of the idle deadline (StreamRequestHandler.timeout None leaves it)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else the last write waits for a delayed ACK
    server: BlobServer  # type: ignore[assignment]

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        offer = self.server.take(self.path)
        if offer is None:
            self.send_error(404, "no such blob (each is served once, within minutes)")
            return
        transfer = Transfer(error="client went away", ended=time.time())
        try:
            self.connection.settimeout(SEND_TIMEOUT)
            self.send_response(200)
            for name, value in offer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(offer.size))
            self.send_header("Connection", "close")
            self.end_headers()
            transfer = self.server.send(offer, self.connection)
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
