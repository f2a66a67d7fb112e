"""Read ahead the `.info` answers and the module graph's go.mod files a go client is about
to ask for (`modgate.readahead`); part of modgate's addons (`all_addons()`: after
RulesGate, before CacheGate).

- Each go.mod served (200) hands its requirements to `GraphReadAhead`, which fetches
  their go.mod files (and so their checksum-database records) through the gateway.

- Each go.mod served (200) is remembered against the client's address.
- The client's next `.info` request hands over the highest version of each module it
  read the go.mod of; up to `WORKERS` at a time, they are fetched and stored through
  the gateway (single flight: a request that arrives meanwhile joins the fetch) while
  go walks through them one at a time. Cached ones cost a lookup.
- Only modules the rules let through now; never checksum-database traffic.
- `cache: {readahead: false}` in rules.yaml turns it off.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import sqlite3
import zlib
from collections import deque
from collections.abc import Mapping
from typing import Any

from mitmproxy import http

from modgate.addons.settings import Runtime, Settings
from modgate.config import Chain
from modgate.errors import ModgateError
from modgate.gateway import Gateway
from modgate.goproxy import Kind, ModRequest, escape, parse_request
from modgate.readahead import GraphReadAhead, ReadAhead, Route, ZipReadAhead, allowed_route
from modgate.rules import Deny, Mode

log = logging.getLogger("modgate")

WORKERS = 8  # upstream requests at a time for one client's read-ahead


class ReadAheadGate:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.memory = ReadAhead()
        self.graph: GraphReadAhead | None = None  # made for the runtime's gateway
        self._graph_gateway: Gateway | None = None
        self.zips: ZipReadAhead | None = None  # made for the runtime's gateway
        self._zips_gateway: Gateway | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def response(self, flow: http.HTTPFlow) -> None:
        req: ModRequest | None = flow.metadata.get("modgate.request")
        chain: Chain | None = flow.metadata.get("modgate.chain")
        runtime = self.settings.runtime
        if req is None or chain is None or req.kind is not Kind.MOD or not self._on():
            return
        if flow.response is None or flow.response.status_code != 200 or runtime is None:
            return
        # None when streamed from a file: not read ahead
        encoding = flow.response.headers.get("Content-Encoding", "")
        self.mod_served(_client(flow), flow.metadata, flow.response.raw_content, encoding)

    def mod_served(
        self, client: str, meta: Mapping[str, Any], gomod: bytes | None, encoding: str = ""
    ) -> None:
        """A go.mod was served (200) to `client`, with these flow.metadata: also the GOPROXY
        endpoint's fast path (addons/fasthit.py), which has no flow. `gomod` is the body as
        sent, in its Content-Encoding: CacheGate gzips a go.mod of GZIP_MIN bytes or more
        for a client that accepts it, and go always does."""
        req: ModRequest = meta["modgate.request"]
        chain: Chain = meta["modgate.chain"]
        runtime = self.settings.runtime
        if runtime is None or not self._on():
            return
        self.memory.served_mod(client, chain, req.module, req.version)
        if gomod is not None and "modgate.cache" in meta:  # answered by the gateway
            graph = self._graph(runtime)
            if graph.expanded(req.module, req.version):
                return
            gomod = _decoded(gomod, encoding)
            if gomod is None:
                return
            graph.served_mod(req.module, req.version, gomod, _router(runtime, meta, chain), client)

    def request(self, flow: http.HTTPFlow) -> None:
        req: ModRequest | None = flow.metadata.get("modgate.request")
        if req is not None and req.kind is Kind.MOD:
            self.mod_asked(_client(flow), req)
        if req is None or req.kind is not Kind.INFO or flow.response or flow.error:
            return
        self.info_asked(_client(flow), req, flow.metadata)

    def mod_asked(self, client: str, req: ModRequest) -> None:
        """`client` asks for a go.mod: a guess of the graph read-ahead it confirms earns
        the client more (modgate/readahead.py); also the fast path's."""
        if self.graph is not None:
            self.graph.asked(client, req.module, req.version)

    def info_asked(self, client: str, req: ModRequest, meta: Mapping[str, Any]) -> None:
        """`client` asks for an .info (allowed), with these flow.metadata: also the fast
        path's (addons/fasthit.py)."""
        runtime = self.settings.runtime
        if runtime is None or not self._on():
            return
        chain: Chain | None = meta.get("modgate.chain")
        if chain is not None and runtime.config.cache.readahead_zips:
            try:
                self._zip_ahead(runtime, chain, req, meta.get("modgate.team") or None)
            except Exception as e:  # a bug: the .info's own answer is not the read-ahead's
                log.error("modgate: read-ahead of the zip of %s failed", req, exc_info=e)
        # What is stored already costs no task: a warm build pays a lookup per module.
        wanted = self.memory.due(client, req.module)
        due = [(chain, info) for chain, module, version in wanted
               if not runtime.gateway.has(chain, info := _info(module, version))]  # fmt: skip
        if due:
            task = asyncio.create_task(self._read(runtime, deque(due)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _zip_ahead(self, runtime: Runtime, chain: Chain, req: ModRequest, team: str | None) -> None:
        """Fetch the zip of an .info asked for (modgate/readahead.py ZipReadAhead), when
        the rules would let this client have it now: allowed outright (one that depends
        on retractions, which need the latest go.mod read, is left to the client's own
        request). go downloads a module's .info just before its zip (modfetch.Download
        keeps both), so this names to the upstream nothing the client will not ask."""
        if not req.immutable:
            return
        rules = runtime.config.rules
        if rules.needs_retractions(req.module, team):
            return
        if isinstance(rules.decide(req.module, req.version, (), team), Deny):
            return
        if self.zips is None or self._zips_gateway is not runtime.gateway:
            self.zips = ZipReadAhead(runtime.gateway.prefetch, runtime.gateway.has)
            self._zips_gateway = runtime.gateway
        self.zips.asked(chain, req.module, req.version)

    def _graph(self, runtime: Runtime) -> GraphReadAhead:
        """The graph read-ahead of the gateway in force (a reload may make a new one)."""
        if self.graph is None or self._graph_gateway is not runtime.gateway:
            self.graph = GraphReadAhead(runtime.gateway.fetch_body, runtime.gateway.has)
            self._graph_gateway = runtime.gateway
        return self.graph

    async def done(self) -> None:
        if self.graph is not None:
            await self.graph.close()
        if self.zips is not None:
            await self.zips.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on(self) -> bool:
        runtime = self.settings.runtime
        return runtime is not None and runtime.config.cache.readahead

    async def _read(self, runtime: Runtime, due: deque[tuple[Chain, ModRequest]]) -> None:
        total = len(due)
        fetched = await asyncio.gather(
            *(self._worker(runtime, due) for _ in range(min(WORKERS, total)))
        )
        if sum(fetched):
            log.info("modgate: read ahead %d of %d .info answers", sum(fetched), total)

    async def _worker(self, runtime: Runtime, due: deque[tuple[Chain, ModRequest]]) -> int:
        fetched = 0
        rules = runtime.config.rules
        while due:
            chain, info = due.popleft()
            if isinstance(rules.decide_path(info.module), Deny) and rules.mode is Mode.ENFORCE:
                continue
            try:
                fetched += await runtime.gateway.prefetch(chain, info)
            except (ModgateError, OSError, sqlite3.Error) as e:  # the store failed us:
                log.debug("modgate: read-ahead of %s: %s", info, e)  # go's request meets it
        return fetched


def _info(module: str, version: str) -> ModRequest:
    return parse_request(f"{escape(module)}/@v/{escape(version)}.info")  # as RulesGate does


def _router(runtime: Runtime, meta: Mapping[str, Any], chain: Chain) -> Route:
    """Where the read-ahead may ask for a requirement (see `readahead.allowed_route`):
    through the proxy the client asked, unless a route says otherwise."""
    url = meta.get("modgate.proxy")
    base = next((p.chain for p in runtime.proxies if p.url == url), chain)
    return allowed_route(runtime.config.rules, runtime.config.checksum.private, base)


def _decoded(body: bytes, encoding: str) -> bytes | None:
    """A go.mod as it was before CacheGate encoded it; None for an encoding it never uses."""
    match encoding.strip().lower():
        case "" | "identity":
            return body
        case "gzip":  # modgate's own compression of a checked go.mod (CacheGate)
            try:
                return gzip.decompress(body)
            except (OSError, EOFError, zlib.error):
                return None
        case _:
            return None


def _client(flow: http.HTTPFlow) -> str:
    peer = flow.client_conn.peername
    return peer[0] if peer else ""
