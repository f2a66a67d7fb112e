"""A loopback HTTP/1.1 server that streams large stored bodies from disk to mitmproxy.

mitmproxy holds a response an addon builds wholly in memory, and streams only bodies it
receives from a server. So for a large cached body the addon points the flow here,
with a single-use token, and marks the response for streaming: a 500 MiB zip then
crosses the proxy in chunks, never whole in memory.

The body's SHA-256 is computed as it is sent and the last chunk is held back until it
is known: a file altered on disk since it was stored never reaches the client whole
(the transfer is cut short, which go reports as an error), and `on_damage` is called
so the entry is dropped and fetched again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

log = logging.getLogger(__name__)
CHUNK = 1 << 20

# An offer not collected within this time (its flow died) is dropped and its file closed.
OFFER_TTL = 120.0


@dataclass
class _Offer:
    file: BinaryIO
    size: int
    sha256: str
    headers: dict[str, str]
    on_damage: Callable[[], None]
    deadline: float


class BlobServer:
    def __init__(self) -> None:
        self._offers: dict[str, _Offer] = {}
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for token in list(self._offers):
            self.withdraw(token)

    def offer(
        self,
        file: BinaryIO,
        size: int,
        sha256: str,
        headers: dict[str, str],
        on_damage: Callable[[], None],
    ) -> str:
        """Register a body for one GET; returns the path to request. Takes over `file`."""
        self._expire()
        token = secrets.token_urlsafe(18)
        deadline = time.monotonic() + OFFER_TTL
        self._offers[token] = _Offer(file, size, sha256, headers, on_damage, deadline)
        return f"/blob/{token}"

    def withdraw(self, path_or_token: str) -> None:
        offer = self._offers.pop(path_or_token.removeprefix("/blob/"), None)
        if offer is not None:
            offer.file.close()

    def _expire(self) -> None:
        now = time.monotonic()
        for token in [t for t, o in self._offers.items() if o.deadline < now]:
            self.withdraw(token)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, _, rest = request_line.partition(" ")
        path = rest.rpartition(" ")[0]
        offer = self._offers.pop(path.removeprefix("/blob/"), None)
        if method != "GET" or offer is None:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return True
        try:
            fields = {**offer.headers, "Content-Length": str(offer.size)}
            header = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
            writer.write(f"HTTP/1.1 200 OK\r\n{header}\r\n".encode("latin-1"))
            return await self._send_checked(offer, writer)
        finally:
            offer.file.close()

    async def _send_checked(self, offer: _Offer, writer: asyncio.StreamWriter) -> bool:
        """Send the body, holding back its last chunk until its SHA-256 is known. Chunks
        are read and hashed in a worker thread: the event loop that forwards them to the
        client through mitmproxy is the bottleneck of a warm download (scripts/bench)."""
        digest, sent = hashlib.sha256(), 0

        def read() -> bytes:
            chunk = offer.file.read(CHUNK)
            digest.update(chunk)
            return chunk

        offer.file.seek(0)
        held = await asyncio.to_thread(read)
        while held:
            following = await asyncio.to_thread(read)
            if not following:
                break
            writer.write(held)
            sent += len(held)
            await writer.drain()
            held = following
        if sent + len(held) != offer.size or digest.hexdigest() != offer.sha256:
            log.error("modgate: a stored body changed on disk since it was stored: dropped")
            offer.on_damage()
            return False  # closes the connection: the client sees a short transfer
        writer.write(held)
        await writer.drain()
        return True
