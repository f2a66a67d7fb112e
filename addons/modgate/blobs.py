"""A loopback HTTP/1.1 server that streams large stored bodies from disk to mitmproxy.

mitmproxy holds a response an addon builds wholly in memory, and streams only bodies it
receives from a server. So for a large cached body the addon points the flow here,
with a single-use token, and marks the response for streaming: a 500 MiB zip then
crosses the proxy in small chunks (`loop.sendfile`, zero-copy where the OS allows).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass
from typing import BinaryIO

# An offer not collected within this time (its flow died) is dropped and its file closed.
OFFER_TTL = 120.0


@dataclass
class _Offer:
    file: BinaryIO
    size: int
    headers: dict[str, str]
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

    def offer(self, file: BinaryIO, size: int, headers: dict[str, str]) -> str:
        """Register a body for one GET; returns the path to request. Takes over `file`."""
        self._expire()
        token = secrets.token_urlsafe(18)
        self._offers[token] = _Offer(file, size, headers, time.monotonic() + OFFER_TTL)
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
            await writer.drain()
            offer.file.seek(0)
            loop = asyncio.get_running_loop()
            await loop.sendfile(writer.transport, offer.file, 0, offer.size)
        finally:
            offer.file.close()
        return True
