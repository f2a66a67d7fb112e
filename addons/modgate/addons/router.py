"""Tell module-proxy requests from all other traffic, and parse them; part of modgate's
addons (`all_addons()`).

A request is for a module proxy when its host, port and path prefix are those of a
proxy in the rules, or when it arrives on the GOPROXY endpoint (reverse mode), which
serves the first proxy's chain. Its parsed `ModRequest` and upstream chain go into
`flow.metadata`; a malformed one is answered here, with the reason, and goes no further.
Everything else is left alone.
"""

from __future__ import annotations

from urllib.parse import unquote

from mitmproxy import http
from mitmproxy.proxy import mode_specs

from modgate.addons import plain
from modgate.addons.settings import Settings
from modgate.config import Proxy
from modgate.errors import ProtocolError
from modgate.goproxy import parse_request


class Router:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or self.settings.runtime is None:
            return
        matched = self._match(flow)
        if matched is None:
            return
        proxy, relative = matched
        flow.metadata["modgate.proxy"] = proxy.url
        flow.metadata["modgate.url"] = flow.request.pretty_url
        if flow.request.method != "GET":
            flow.response = plain(
                405, f"modgate: {flow.request.method} is not part of the module proxy protocol"
            )
            return
        try:
            req = parse_request(relative)
        except ProtocolError as e:
            flow.response = plain(e.status, f"modgate: {e}")
            return
        flow.metadata["modgate.request"] = req
        flow.metadata["modgate.chain"] = proxy.chain

    def _match(self, flow: http.HTTPFlow) -> tuple[Proxy, str] | None:
        assert self.settings.runtime is not None
        proxies = self.settings.runtime.proxies
        path = unquote(flow.request.path.split("?", 1)[0])
        if isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode):
            return proxies[0], path.lstrip("/")
        for proxy in proxies:
            relative = proxy.relative(flow.request.host, flow.request.port, path)
            if relative is not None:
                return proxy, relative
        return None
