"""Which answers a go client is about to ask for: `.info` (`ReadAhead`) and the go.mod
files of the module graph (`GraphReadAhead`, below).

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

import asyncio
import logging
import sqlite3
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from modgate import semver
from modgate.config import Chain
from modgate.errors import ModgateError, ProtocolError
from modgate.gomod import GoModError, parse_gomod
from modgate.goproxy import ModRequest, escape, parse_request
from modgate.patterns import match_prefix_patterns
from modgate.rules import Deny, Mode, Rules

log = logging.getLogger(__name__)


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


# --- the module graph ------------------------------------------------------------------

# Upstream fetches at a time for the graph read-ahead, for the whole process. go itself
# loads go.mod files GOMAXPROCS at a time (modload readModGraph's par.Queue), and each
# read ahead costs a .mod, its checksum-database lookup and a few tiles: 8 keeps a few
# dozen upstream requests in flight, well inside the fetcher's connection pool, while
# several levels of a graph arrive in the time go reads two go.mod files.
GRAPH_READERS = 8
# Levels below a go.mod served to a client, followed only through go.mod files go
# itself follows: those of unpruned modules (below), as go does.
GRAPH_DEPTH = 3
GRAPH_QUEUE = 4096  # requirements waiting: past it, new guesses are dropped
# Guesses from a pruned go.mod (see GraphReadAhead) per client: this many free, then
# this many more for each one the client went on to ask for. On the live registry
# (viper, a tidy go 1.17+ main) 3 of 26 such guesses were asked for, and the 23 others,
# each a .mod, its lookup and its tiles, doubled the time of every cold .mod go waited
# for (median ~65 ms, ~35 ms without them); where versions line up most are right.
GUESSES_FREE = 8
GUESSES_PER_HIT = 4
CLIENTS_MAX = 256  # clients whose guesses are counted (the least recent dropped)
EXPANDED_MAX = 65_536  # go.mod files whose requirements were read ahead, remembered
# "Module graph pruning": a go.mod at go 1.17 or higher lists every module its packages
# need, and go does not load the requirements of its requirements; below 1.17 (or with
# no go line) go loads the whole graph beneath it.
PRUNED_FROM = (1, 17)

Route = Callable[[str], "Chain | None"]
"""The chain a module's requests go through, or None when the read-ahead must not ask for
it (the rules refuse it, or it is private)."""

FetchBody = Callable[[Chain, ModRequest], Awaitable[tuple[int, bytes]]]


def allowed_route(rules: Rules, private: str, base: Chain) -> Route:
    """The Route of a client's request through the proxy of chain `base`: the chain its
    own request would take (rules.yaml `routes`, else `base`); None for a module the rules
    refuse (enforced: RulesGate's `decide_path`, as for any go.mod), and for a private one
    (`checksum.private`): go may fetch that directly (GOPRIVATE), and its path must not be
    named to an upstream it never asked."""

    def route(module: str) -> Chain | None:
        if private and match_prefix_patterns(private, module):
            return None
        if rules.mode is Mode.ENFORCE and isinstance(rules.decide_path(module), Deny):
            return None
        return rules.route(module) or base

    return route


@dataclass
class _Guesses:
    """One client's guesses from pruned go.mod files: made, and asked for since."""

    made: int = 0
    hits: int = 0
    pending: set[tuple[str, str]] = field(default_factory=set)

    def allowed(self) -> bool:
        return self.made < GUESSES_FREE + GUESSES_PER_HIT * self.hits


@dataclass(frozen=True)
class _Due:
    chain: Chain
    req: ModRequest
    depth: int = 0
    route: Route | None = None


class _Readers:
    """Up to `readers` tasks working through what is due (`_read` each), started as it
    comes (`_start`); the read-aheads below are two of these."""

    def __init__(self, readers: int) -> None:
        self.readers = readers
        self._due: deque[_Due] = deque()
        self._workers: set[asyncio.Task[None]] = set()

    def _start(self) -> None:
        while self._due and len(self._workers) < self.readers:
            task = asyncio.ensure_future(self._work())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def idle(self) -> None:
        """Wait until nothing is due or being fetched."""
        while self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)

    async def close(self) -> None:
        self._due.clear()
        for task in list(self._workers):
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def _work(self) -> None:
        while self._due:
            due = self._due.popleft()
            try:
                await self._read(due)
            except (ModgateError, OSError, sqlite3.Error) as e:
                log.debug("read-ahead of %s: %s", due.req, e)  # go's own request meets it
            except Exception as e:  # a bug: say so, and keep reading ahead the rest
                log.error("read-ahead of %s failed", due.req, exc_info=e)

    async def _read(self, due: _Due) -> None:
        raise NotImplementedError


class GraphReadAhead(_Readers):
    """Fetch the go.mod of each requirement of a go.mod served to a client, before go
    asks for it ("Minimal version selection": loading the module graph reads the go.mod
    of every requirement of every module loaded).

    `fetch` serves a request through the gateway (single-flight with the client's own
    request, checked by the Validator before it is stored: its checksum-database record
    is fetched alongside); `has` says whether it is stored already. A guess that was
    wrong (a version MVS then passes over) costs one small cached request; a failure
    is left for the client's own request to meet and report. Go's rules for a
    dependency's go.mod hold: its `replace` and `exclude` directives are ignored (they
    apply in the main module only), so every `require` line counts.

    "Module graph pruning": go loads the requirements of an unpruned go.mod (below
    go 1.17) always, but those of a pruned one only where an unpruned module is above
    it; under a go 1.17+ main module it loads just the go.mod files its own go.mod
    lists, at the versions it lists, which a requirement elsewhere names only by
    chance. So the requirements of a pruned go.mod served to a client are guesses,
    read ahead while they pay: `_Guesses`, per client.
    """

    def __init__(
        self,
        fetch: FetchBody,
        has: Callable[[Chain, ModRequest], bool],
        *,
        readers: int = GRAPH_READERS,
        depth: int = GRAPH_DEPTH,
    ) -> None:
        super().__init__(readers)
        self.fetch, self.has, self.depth = fetch, has, depth
        self._expanded: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._queued: set[tuple[Chain, ModRequest]] = set()
        self._guesses: OrderedDict[str, _Guesses] = OrderedDict()  # by client
        self.fetched = 0  # .mod answers read ahead, for the log

    def served_mod(
        self, module: str, version: str, gomod: bytes, route: Route, client: str = ""
    ) -> None:
        """`client` was served the go.mod of module@version (200, checked): read ahead the
        go.mod of each of its requirements that `route` lets through (those of a pruned
        go.mod while its guesses pay, see the class docstring)."""
        guesses = None
        if not _unpruned(gomod):
            guesses = self._guesses.pop(client, None) or _Guesses()
            self._guesses[client] = guesses  # the most recent last
            while len(self._guesses) > CLIENTS_MAX:
                self._guesses.popitem(last=False)
        self._expand(module, version, gomod, route, 1, guesses)

    def expanded(self, module: str, version: str) -> bool:
        """Whether the requirements of module@version's go.mod were read ahead already:
        serving it again reads nothing more (a warm build's every go.mod), so its body
        need not even be parsed."""
        return (module, version) in self._expanded

    def asked(self, client: str, module: str, version: str) -> None:
        """`client` asked for the go.mod of module@version: a guess that paid, if it was
        one."""
        guesses = self._guesses.get(client)
        if guesses is not None and (module, version) in guesses.pending:
            guesses.pending.discard((module, version))
            guesses.hits += 1

    async def close(self) -> None:
        self._queued.clear()
        await super().close()

    def _expand(
        self, module: str, version: str, gomod: bytes, route: Route, depth: int,
        guesses: _Guesses | None = None,
    ) -> None:  # fmt: skip
        """Queue the requirements of module@version's go.mod; `guesses`: they are guesses
        (a pruned go.mod served to a client), each made only while that client's pay."""
        key = (module, version)
        if key in self._expanded or (guesses is not None and not guesses.allowed()):
            return  # (not expanded: when it is served again, its guesses may be made)
        self._expanded[key] = None
        if len(self._expanded) > EXPANDED_MAX:
            self._expanded.popitem(last=False)
        try:
            requires = parse_gomod(gomod.decode("utf-8")).requires
        except (GoModError, UnicodeDecodeError):
            return  # go refuses it too, and says why
        for r in requires:
            if r.module == module or len(self._due) >= GRAPH_QUEUE:
                continue
            chain = route(r.module)
            if chain is None:
                continue
            try:
                req = parse_request(f"{escape(r.module)}/@v/{escape(r.version)}.mod")
            except ProtocolError:
                continue  # not a path go would ask for either
            # Stored (or refused for now): nothing to fetch, and its own requirements are
            # read ahead when a client is served it.
            if (chain, req) not in self._queued and not self.has(chain, req):
                if guesses is not None:
                    if not guesses.allowed():
                        break
                    guesses.made += 1
                    if len(guesses.pending) < GRAPH_QUEUE:
                        guesses.pending.add((r.module, r.version))
                self._queued.add((chain, req))
                self._due.append(_Due(chain, req, depth, route))
        self._start()

    async def _read(self, due: _Due) -> None:
        try:
            status, data = await self.fetch(due.chain, due.req)
        finally:
            self._queued.discard((due.chain, due.req))
        self.fetched += 1
        if status == 200 and due.depth < self.depth and _unpruned(data):
            assert due.route is not None
            self._expand(due.req.module, due.req.version, data, due.route, due.depth + 1)


def _unpruned(gomod: bytes) -> bool:
    """Whether go loads the requirements of this go.mod's requirements too."""
    try:
        go = parse_gomod(gomod.decode("utf-8")).go
    except (GoModError, UnicodeDecodeError):
        return False
    parts = go.split(".")
    try:
        return (int(parts[0]), int(parts[1])) < PRUNED_FROM
    except (IndexError, ValueError):
        return True  # no go line: go treats it as go 1.16, unpruned


# --- the zips ---------------------------------------------------------------------------

# Zips fetched ahead at a time, for the whole process. `go mod download` asks for the
# `.info` of every module of its build list in one burst, then downloads their zips
# GOMAXPROCS at a time (modcmd/download.go), in the same order: two at a time on a
# 2-core machine, each waiting a round trip to the upstream and its transfer. Fetched
# ahead, several at once, they are verified and stored (or being sent while they
# download) when go asks. Few: each is a connection's worth of bandwidth, and its bytes
# in flight. On the cold 150-module run (scripts/bench, 20 ms upstream) 4 readers made
# the download 1.3x faster than none but took the HTTPS proxy's peak RSS from 98-99 to
# 102-103 MiB (issue 13's bound is 100); 2 readers: 1.1x faster, 99.5 MiB.
ZIP_READERS = 2
ZIP_QUEUE = 4096  # zips waiting: past it, new ones are dropped
ZIPS_REMEMBERED = 65_536  # zips considered once, remembered (the least recent dropped)

Prefetch = Callable[[Chain, ModRequest], Awaitable[bool]]


class ZipReadAhead(_Readers):
    """Fetch the zip of each module version a client asked the `.info` of (`asked`),
    in the order asked, `readers` at a time, once each.

    `prefetch` fetches and stores one through the gateway (single-flight with the
    client's own request, verified before it is stored; Gateway.prefetch), `has` says
    whether it is stored already. A failure is left for the client's own request to
    meet and report. Which zips may be fetched (the rules, private modules) is the
    caller's to decide before `asked`.
    """

    def __init__(
        self,
        prefetch: Prefetch,
        has: Callable[[Chain, ModRequest], bool],
        *,
        readers: int = ZIP_READERS,
    ) -> None:
        super().__init__(readers)
        self.prefetch, self.has = prefetch, has
        self._seen: OrderedDict[tuple[Chain, str, str], None] = OrderedDict()
        self.fetched = 0  # zips fetched ahead, for the log

    def asked(self, chain: Chain, module: str, version: str) -> None:
        """A client asked for the `.info` of module@version through `chain` (on every
        cached .info hit too: what was handed out once costs one set lookup)."""
        key = (chain, module, version)
        if key in self._seen or len(self._due) >= ZIP_QUEUE:
            return
        self._seen[key] = None  # stored or not, considered once
        if len(self._seen) > ZIPS_REMEMBERED:
            self._seen.popitem(last=False)
        try:
            req = parse_request(f"{escape(module)}/@v/{escape(version)}.zip")
        except ProtocolError:
            return  # not a path go would ask for either
        if self.has(chain, req):
            return
        self._due.append(_Due(chain, req))
        self._start()

    async def _read(self, due: _Due) -> None:
        fetched = await self.prefetch(due.chain, due.req)
        self.fetched += fetched  # (not `+= await`: that reads it before the await)
