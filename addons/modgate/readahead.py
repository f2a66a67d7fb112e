"""Which `.info` answers a go client is about to ask for, one at a time.

`go mod download`, `go mod tidy` and a `go build` with an empty module cache read the
go.mod of every version in the module graph (two at a time on a 2-core machine), then
ask for the `.info` of each module of the build list *one after another*, then for the
zips. On a cold cache each of those
`.info` requests waits a round trip to the upstream plus modgate's own time, in series:
about a fifth of a cold `go mod download` (issue 6). Minimal version selection picks,
for each module, the highest version in the graph, so the `.info` requests to come are,
nearly always, those of the highest version of each module whose go.mod the client has
just read. `ReadAhead` remembers those per client; when the client asks for its first
`.info`, it hands them over once (sorted by module path, the order go walks its build
list) for the cache to fetch in parallel while the client walks through them.

A client that never asks for an `.info` gets nothing read ahead. A guess that was wrong
(a module replaced or pruned away) costs one small upstream request, cached.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from modgate import semver
from modgate.config import Chain


@dataclass
class _Client:
    seen: float
    # (chain, module) -> the highest version whose go.mod this client was served
    highest: dict[tuple[Chain, str], str] = field(default_factory=dict)


class ReadAhead:
    """Per client (its address): the highest version of each module whose go.mod it got.

    Bounded: at most `max_clients` clients (least recently seen dropped) and `max_modules`
    modules each; a client silent for `ttl` seconds starts afresh.
    """

    def __init__(
        self,
        *,
        ttl: float = 300.0,
        max_clients: int = 256,
        max_modules: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl, self.clock = ttl, clock
        self.max_clients, self.max_modules = max_clients, max_modules
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def served_mod(self, client: str, chain: Chain, module: str, version: str) -> None:
        """`client` was served the go.mod of module@version (through `chain`)."""
        now = self.clock()
        known = self._clients.get(client)
        if known is None or now - known.seen > self.ttl:
            known = self._clients[client] = _Client(now)
        known.seen = now
        self._clients.move_to_end(client)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        key = (chain, module)
        held = known.highest.get(key)
        if held is None:
            if len(known.highest) < self.max_modules:
                known.highest[key] = version
        elif semver.compare(version, held) > 0:
            known.highest[key] = version

    def due(self, client: str, asking: str) -> list[tuple[Chain, str, str]]:
        """`client` asks for the `.info` of module `asking`: the (chain, module, version)
        to read ahead, sorted by module path, each handed out once. Empty when nothing
        is remembered (or no longer: older than `ttl`)."""
        known = self._clients.pop(client, None)
        if known is None or self.clock() - known.seen > self.ttl:
            return []
        return sorted(
            ((chain, module, version) for (chain, module), version in known.highest.items()
             if module != asking),
            key=lambda due: due[1],
        )  # fmt: skip
