"""Tell module-proxy requests from all other traffic, and parse them; part of modgate's
addons (`all_addons()`).

A request is for a module proxy when its host, port and path prefix are those of a
proxy in the rules, or when it arrives on the GOPROXY endpoint (modgate's own server,
endpoint.py, or a reverse mode of mitmdump's), which serves the first proxy's chain. It
is for a checksum database when it names one modgate knows, directly
(`https://<db>/lookup/...`) or through a proxy (`<proxy>/sumdb/<db>/...`): either way
it goes to that database's own URL. Its parsed `ModRequest` and upstream chain
go into `flow.metadata`; a malformed one is answered here, with the reason, and goes no
further. Everything else is left alone.
"""

from __future__ import annotations

import functools
from urllib.parse import unquote

from mitmproxy import http
from mitmproxy.proxy import mode_specs

from modgate.addons import plain
from modgate.addons.settings import Settings
from modgate.config import Chain, Endpoint, SumdbConfig, normal_host
from modgate.errors import ProtocolError
from modgate.goproxy import Kind, parse_request

# A build asks for the same paths again and again (every client, every build): parse each
# once. ModRequest is frozen; malformed paths raise and are not kept.
_parse = functools.lru_cache(maxsize=4096)(parse_request)


class Router:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        if self.settings.runtime is None:
            flow.response = plain(503, "modgate: not configured yet; not served")
            return
        matched = self._match(flow)
        if matched is None:
            if self.gated(flow):
                # A gated host, but no proxy's path: `//go/…`, `/GO/…`, `/go;x/…` may reach
                # the same origin path and must not pass unruled and unchecked.
                flow.metadata["modgate.url"] = flow.request.url
                flow.response = plain(
                    403,
                    f"modgate: refused {flow.request.method} {flow.request.url}: not a request "
                    "of a module proxy or checksum database modgate gates on this host",
                )
            return
        endpoint, chain, relative = matched
        flow.metadata["modgate.proxy"] = endpoint.url
        # The URL the request was routed by (its host and port, as `_match` reads them).
        # Not pretty_url: parsing the Host header again cost 15 us a request.
        flow.metadata["modgate.url"] = flow.request.url
        if flow.request.method != "GET":
            flow.response = plain(
                405, f"modgate: {flow.request.method} is not part of the module proxy protocol"
            )
            return
        try:
            req = _parse(relative, self._names(relative))
        except ProtocolError as e:
            flow.response = plain(e.status, f"modgate: {e}")
            return
        if req.sumdb:
            db = self._database(req.sumdb)
            if db is None:
                # Nothing modgate could check it against: "not here", so go asks the
                # database itself (`supported`) or reports the 404 (lookups, tiles).
                flow.response = plain(
                    404, f"modgate: checksum database {req.sumdb!r} is not one modgate "
                    "verifies (checksum.databases in rules.yaml); not served",
                )  # fmt: skip
                return
            if req.kind is Kind.SUMDB_SUPPORTED:
                # "Checksum database": 200 tells go to send every lookup and tile here.
                flow.metadata["modgate.request"] = req  # traced as what it is
                flow.response = http.Response.make(200, b"", {"Content-Type": "text/plain"})
                return
            chain = db.chain
        else:  # rules.yaml `routes`: a module path pattern's own upstreams
            chain = self.settings.runtime.config.rules.route(req.module) or chain
        flow.metadata["modgate.request"] = req
        flow.metadata["modgate.chain"] = chain

    def gated(self, flow: http.HTTPFlow) -> bool:
        """Whether modgate owns `flow`: it must leave with an answer modgate made. The
        GOPROXY endpoint, and any request to the host and port of a module proxy or
        checksum database modgate gates (however the host is spelled), whatever its path."""
        runtime = self.settings.runtime
        if runtime is None or "modgate.proxy" in flow.metadata:
            return True
        if isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode):
            return True
        host, port = normal_host(flow.request.host), flow.request.port
        return (host, port) in runtime.gated

    def _names(self, relative: str) -> tuple[str, ...]:
        """The database names a `sumdb/<name>/...` path is split by (a name may hold `/`)."""
        if not relative.startswith("sumdb/"):
            return ()
        assert self.settings.runtime is not None
        return tuple(db.name for db in self.settings.runtime.databases)

    def _database(self, name: str) -> SumdbConfig | None:
        # A method, not a property: mitmproxy reads every addon attribute at add().
        assert self.settings.runtime is not None
        return next((db for db in self.settings.runtime.databases if db.name == name), None)

    def _match(self, flow: http.HTTPFlow) -> tuple[Endpoint, Chain, str] | None:
        assert self.settings.runtime is not None
        runtime = self.settings.runtime
        path = unquote(flow.request.path.split("?", 1)[0])
        if isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode):
            return runtime.proxies[0], runtime.proxies[0].chain, path.lstrip("/")
        host, port = flow.request.host, flow.request.port
        for proxy in runtime.proxies:
            relative = proxy.relative(host, port, path)
            if relative is not None:
                return proxy, proxy.chain, relative
        for db in runtime.databases:
            relative = db.relative(host, port, path)
            if relative is not None:
                return db, db.chain, f"sumdb/{db.name}/{relative}"
        return None
