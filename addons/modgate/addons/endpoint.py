"""Serve the GOPROXY endpoint with modgate's lean server (modgate/endpoint.py) through
the modgate pipeline; `modgate run` adds it with the endpoint's socket, bound already.

It only starts and stops the server: every decision is the pipeline's stages'.
"""

from __future__ import annotations

import socket

from mitmproxy import ctx

from modgate.endpoint import EndpointServer


class Endpoint:
    name = "modgate_endpoint"  # what ctx.master.addons.get() finds it by

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.server: EndpointServer | None = None

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    async def running(self) -> None:
        from modgate.addons.settings import Settings

        pipeline = ctx.master.addons.get("modgate")
        proxyauth, block = ctx.master.addons.get("proxyauth"), ctx.master.addons.get("block")
        self.server = EndpointServer(
            pipeline, pipeline.stage(Settings).blobs,
            proxyauth=proxyauth.requestheaders if proxyauth else None,
            block=block.client_connected if block else None,
        )  # fmt: skip
        await self.server.start(self.sock)

    async def done(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
        self.sock.close()
