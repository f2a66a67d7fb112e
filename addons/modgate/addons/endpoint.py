"""Serve the GOPROXY endpoint with modgate's lean server (modgate/endpoint.py) through
the modgate pipeline; `modgate run` adds it with the endpoint's socket, bound already.

It only starts and stops the server: every decision is the pipeline's stages'.
With teams in rules.yaml (modgate/teams.py) it serves HTTPS, with a certificate for
127.0.0.1 and localhost (and the address it listens on) from modgate's CA: go sends
`.netrc` and GOAUTH credentials over TLS only. Decided at start: teams added later by a
reload leave a plain endpoint, whose requests then all get 401 (go sends no credentials).
"""

from __future__ import annotations

import socket
import ssl

from mitmproxy import ctx

from modgate.endpoint import EndpointServer


class Endpoint:
    name = "modgate_endpoint"  # what ctx.master.addons.get() finds it by

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.server: EndpointServer | None = None
        self.tls: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    async def running(self) -> None:
        from modgate.addons.fasthit import FastHitGate
        from modgate.addons.settings import Settings, loopback_tls

        pipeline = ctx.master.addons.get("modgate")
        runtime = pipeline.stage(Settings).runtime
        if runtime is not None and runtime.config.teams is not None:
            self.tls = loopback_tls(self.sock.getsockname()[0])
            if self.tls is None:
                raise RuntimeError("the GOPROXY endpoint needs modgate's CA to serve TLS")
        proxyauth, block = ctx.master.addons.get("proxyauth"), ctx.master.addons.get("block")
        try:
            fast = pipeline.stage(FastHitGate)
        except LookupError:
            fast = None
        self.server = EndpointServer(
            pipeline, pipeline.stage(Settings).blobs,
            proxyauth=proxyauth.requestheaders if proxyauth else None,
            block=block.client_connected if block else None, fast=fast,
        )  # fmt: skip
        await self.server.start(self.sock, self.tls)

    async def done(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
        self.sock.close()
