"""Read ahead the `.info` answers a go client is about to ask for (`modgate.readahead`);
part of modgate's addons (`all_addons()`: after RulesGate, before CacheGate).

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
import logging
import sqlite3
from collections import deque

from mitmproxy import http

from modgate.addons.settings import Runtime, Settings
from modgate.config import Chain
from modgate.errors import ModgateError
from modgate.goproxy import Kind, ModRequest, escape, parse_request
from modgate.readahead import ReadAhead
from modgate.rules import Deny, Mode

log = logging.getLogger("modgate")

WORKERS = 8  # upstream requests at a time for one client's read-ahead


class ReadAheadGate:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.memory = ReadAhead()
        self._tasks: set[asyncio.Task[None]] = set()

    def response(self, flow: http.HTTPFlow) -> None:
        req: ModRequest | None = flow.metadata.get("modgate.request")
        chain: Chain | None = flow.metadata.get("modgate.chain")
        if req is None or chain is None or req.kind is not Kind.MOD or not self._on():
            return
        if flow.response is not None and flow.response.status_code == 200:
            self.memory.served_mod(_client(flow), chain, req.module, req.version)

    def request(self, flow: http.HTTPFlow) -> None:
        req: ModRequest | None = flow.metadata.get("modgate.request")
        runtime = self.settings.runtime
        if req is None or req.kind is not Kind.INFO or flow.response or flow.error:
            return
        if runtime is None or not self._on():
            return
        # What is stored already costs no task: a warm build pays a lookup per module.
        wanted = self.memory.due(_client(flow), req.module)
        due = [(chain, info) for chain, module, version in wanted
               if not runtime.gateway.has(chain, info := _info(module, version))]  # fmt: skip
        if due:
            task = asyncio.create_task(self._read(runtime, deque(due)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def done(self) -> None:
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


def _client(flow: http.HTTPFlow) -> str:
    peer = flow.client_conn.peername
    return peer[0] if peer else ""
