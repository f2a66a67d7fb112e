"""Which way to reach a checksum database: through a module proxy, or at its own URL.

Follows cmd/go/internal/modfetch/sumdb.go (dbClient.initBase) and the design it cites,
"Proxying a checksum database" (golang.org/design/25530-sumdb), which the Go modules
reference summarises under "Checksum database":

    for each proxy in GOPROXY order: GET <proxy>/sumdb/<name>/supported
      200                  -> use <proxy>/sumdb/<name>, never the database directly
      404 or 410           -> try the next proxy
      any other failure    -> the next proxy after a `|`; after a `,` the database is
                              unavailable (go fails every lookup)
    no proxy left          -> the database's own URL, https://<name>

modgate's proxies are the upstream hops of the proxies it gates (what it fetches from,
as go fetches from GOPROXY). `decide` is the pure decision over probe answers;
`find_route` asks the hops (`probe`) and, where no hop can say, falls back on the way
that worked last time (kept in the state directory), so a modgate restarted offline
reads the same cached lookups and tiles as before. A GOSUMDB with its own URL
("<key> <url>") bypasses proxies in go, and is not routed here.
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from modgate import __version__
from modgate.config import SUMDB_ALIASES, Hop, Proxy, SumdbConfig

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 5.0


# --- what a hop answered to <hop>/sumdb/<name>/supported -----------------------------


@dataclass(frozen=True)
class Supported:
    """200: this hop proxies the database."""


@dataclass(frozen=True)
class NotHere:
    """404 or 410: ask the next one."""

    status: int


@dataclass(frozen=True)
class Failed:
    """Anything else: another status, or no answer."""

    reason: str


Probe = Supported | NotHere | Failed


# --- the decision ----------------------------------------------------------------------


@dataclass(frozen=True)
class ThroughProxy:
    """Reach the database at `<hop>/sumdb/<name>`."""

    base: str


@dataclass(frozen=True)
class Direct:
    """No proxy serves it: reach the database at its own URL."""


@dataclass(frozen=True)
class Unavailable:
    """A hop failed where go would not try the next one: go cannot reach the database."""

    hop: str
    reason: str


Route = ThroughProxy | Direct | Unavailable


def candidates(proxies: Iterable[Proxy]) -> tuple[Hop, ...]:
    """The hops to ask, in order: each gated proxy's upstream chain, once each."""
    seen: dict[str, Hop] = {}
    for proxy in proxies:
        for hop in proxy.chain.hops:
            seen.setdefault(hop.url, hop)
    return tuple(seen.values())


def decide(name: str, hops: Sequence[Hop], ask: Callable[[Hop], Probe]) -> Route:
    """initBase's walk over `hops`, asking each (lazily, in order) until one decides."""
    for i, hop in enumerate(hops):
        match ask(hop):
            case Supported():
                return ThroughProxy(f"{hop.url}/sumdb/{name}")
            case NotHere():
                continue
            case Failed(reason):
                if hop.any_error and i < len(hops) - 1:
                    continue
                return Unavailable(hop.url, reason)
    return Direct()


def routed(db: SumdbConfig, route: Route) -> SumdbConfig:
    """`db` fetched the way `route` says. Unavailable is where go gives up; modgate, which
    runs for long, tries the hop that failed, then the database itself on any error or
    404 (a proxy back up that does not serve it), until the next start or reload asks
    again: every answer is proven against the signed log, wherever it came from."""
    match route:
        case ThroughProxy(base):
            return replace(db, upstream=base, fallback=False)
        case Direct():
            return replace(db, upstream="", fallback=False)
        case Unavailable(hop):
            return replace(db, upstream=f"{hop}/sumdb/{db.name}", fallback=True)


# --- I/O: the probe and the memory of the last route ------------------------------------


def probe(hop: Hop, name: str, timeout: float = PROBE_TIMEOUT) -> Probe:
    """GET <hop>/sumdb/<name>/supported, bounded by `timeout`. No environment proxy:
    modgate's own environment may point HTTPS_PROXY at modgate."""
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPSHandler(context=ssl.create_default_context()),
    )
    request = urllib.request.Request(
        f"{hop.url}/sumdb/{name}/supported", headers={"User-Agent": f"modgate/{__version__}"}
    )
    try:
        with opener.open(request, timeout=timeout) as r:
            return Supported() if r.status == 200 else Failed(f"{r.status}")
    except urllib.error.HTTPError as e:
        return NotHere(e.code) if e.code in (404, 410) else Failed(f"{e.code} {e.reason}")
    except (OSError, ValueError) as e:  # URLError, timeouts, resets, TLS errors
        return Failed(str(getattr(e, "reason", e)) or type(e).__name__)


def proxied(gosumdb: str) -> bool:
    """Whether go looks for a GOSUMDB value's database through its proxies: not when the
    value names a URL of its own (dbDial: "bypassing both the default URL derivation and
    any proxies"), as the alias sum.golang.google.cn does."""
    text = SUMDB_ALIASES.get(gosumdb.strip(), gosumdb.strip())
    return len(text.split()) == 1


@dataclass(frozen=True)
class Found:
    """A database with its route decided; `why` says how, `settled` whether a hop said so
    (rather than none answering)."""

    db: SumdbConfig
    why: str
    settled: bool


def find_route(
    db: SumdbConfig,
    proxies: Iterable[Proxy],
    state_dir: Path,
    ask: Callable[[Hop, str], Probe] = probe,
) -> Found:
    """`db` with its route decided by asking the gated proxies' hops."""
    hops = candidates(proxies)
    route = decide(db.name, hops, lambda hop: ask(hop, db.name))
    memory = state_dir / "sumdb" / "routes.json"
    key = f"{db.key} via {' '.join(hop.url for hop in hops)}"
    match route:
        case Unavailable(hop, reason):
            last = _read(memory).get(key)
            if isinstance(last, str):
                why = f"{hop} did not answer ({reason}): the way that worked last time"
                return Found(replace(db, upstream=last, fallback=False), why, settled=False)
            why = f"{hop} did not answer ({reason}); asked again at reload"
            return Found(routed(db, route), why, settled=False)
        case ThroughProxy():
            why = "the gated proxy serves it"
        case Direct():
            why = "no gated proxy serves it"
    db = routed(db, route)
    _remember(memory, key, db.upstream)
    return Found(db, why, settled=True)


def _read(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(path: Path, key: str, upstream: str) -> None:
    data = _read(path)
    if data.get(key) == upstream:
        return
    data[key] = upstream
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        log.warning("modgate: cannot remember how checksum databases are reached: %s", e)
