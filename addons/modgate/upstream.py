"""Fetching from upstream module proxies: a chain walked with GOPROXY semantics, each
answer spooled to a file on disk while its SHA-256 is computed.

"Environment variables", GOPROXY: after a `,` the next proxy is tried only when this
one answered 404 or 410; after a `|`, on any error (a 5xx, a reset, a timeout, ...).
A body that stops short of its Content-Length, exceeds the protocol's size limits
or is not well-formed (`goproxy.check_body`) counts as an error, so it is never cached.

"GOPROXY protocol": a proxy may redirect. Redirects are followed by hand, as the go
command's net/http client follows them (at most 10), and only where a `RedirectCheck`
allows: the rules' host allowlist, and never back into modgate itself, which would wait
on its own fetch until it timed out. A refused one counts as an error of its hop.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import ipaddress
import os
import secrets
import socket
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp
from yarl import URL

from modgate import __version__
from modgate.config import Chain, Hop
from modgate.errors import CacheError, ConfigError, ProtocolError, UpstreamError
from modgate.goproxy import MAX_GOMOD, Kind, ModRequest, check_body
from modgate.growing import GrowingFile

# golang.org/x/mod/zip: MaxZipFile bounds the uncompressed size; a compressed zip that
# is larger cannot be valid either. Everything else the protocol serves is small.
MAX_ZIP = 500 << 20
CHUNK = 256 << 10
MAX_OTHER = MAX_GOMOD
# A zip at least this large (by its Content-Length) is handed on while it downloads
# (`on_body`); smaller answers are read whole first. The same size as the store's
# in-memory answers: below it a client gets a refusal's reason as an error body.
STREAM_MIN = 1 << 20

# net/http's Client stops after 10 redirects (defaultCheckRedirect), and so does go.
MAX_REDIRECTS = 10
REDIRECTS = frozenset({301, 302, 303, 307, 308})

# Every request modgate sends upstream names this process in its Via header (RFC 9110
# section 7.6.3: how proxies find loops). One that arrives back carrying it went round
# in a circle by a route no address check sees (an upstream, or a redirect, that leads
# back through a load balancer or another name for this machine): it is refused at once
# (`came_back`), where it would otherwise wait on its own fetch until that timed out.
VIA = f"1.1 modgate-{secrets.token_hex(6)}"

RedirectCheck = Callable[[URL], Awaitable[str]]
"""Why a redirect to this http(s) URL may not be followed, or "" when it may. Decided by
whoever knows the rules and modgate's own addresses (the Settings addon)."""

OnBody = Callable[[GrowingFile], None]
"""Called when a large zip starts arriving; the fetcher writes it, the gateway settles it."""


@dataclass(frozen=True)
class Attempt:
    """One hop tried: the status it answered, or the error that stopped it."""

    url: str
    status: int = 0
    error: str = ""

    def __str__(self) -> str:
        return f"{self.url}: {self.error or self.status}"


@dataclass(frozen=True)
class Fetched:
    """A final answer from a chain: 200, or 404/410 from its last hop. The caller owns
    (and removes) `body`."""

    status: int
    body: Path
    size: int
    sha256: str
    upstream: str
    attempts: tuple[Attempt, ...]


class Fetcher(Protocol):
    async def fetch(
        self, chain: Chain, req: ModRequest, spool: Path, on_body: OnBody | None = None
    ) -> Fetched: ...

    async def close(self) -> None: ...


def upstream_context(extra: Path | None = None) -> ssl.SSLContext:
    """What modgate trusts upstream: the system's CA store, plus SSL_CERT_FILE if set (not
    instead of it, as OpenSSL's default would have it), plus `extra` (`upstream_ca`: a
    TLS-inspecting firewall's CA, an internal mirror's)."""
    import os

    from modgate.cabundle import SYSTEM_BUNDLES

    context = ssl.create_default_context()
    for bundle in SYSTEM_BUNDLES:
        if os.path.isfile(bundle):
            context.load_verify_locations(bundle)
            break
    files = [os.environ.get("SSL_CERT_FILE", ""), str(extra or "")]
    for name in filter(None, files):
        try:
            context.load_verify_locations(name)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(
                f"upstream CA bundle {name}: cannot be read as PEM certificates: {e}"
            ) from e
    return context


class HttpFetcher:
    """A Fetcher over HTTP(S) with one connection pool for all upstreams.

    aiohttp rather than httpx: every cache miss pays the client's own cost, on the event
    loop that also serves hits, and aiohttp's (C-accelerated) request took 0.37 ms where
    httpx's took 1.47 ms against the same loopback server (issue 6)."""

    def __init__(
        self,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        redirects: RedirectCheck | None = None,
    ) -> None:
        """`redirects` None follows redirects to any http(s) URL (still at most
        MAX_REDIRECTS)."""
        self.upstream_ca: Path | None = None  # CAs trusted besides the system's (set_ca)
        self._timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None  # made on the loop it runs on
        self._context: tuple[Path | None, ssl.SSLContext] | None = None  # (its extra CAs, it)
        self.redirects = redirects
        # Told how long each fetch from an upstream took (its URL, seconds): metrics.
        self.timed: Callable[[str, float], None] | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    # Sized for a cold graph at full tilt: the read-aheads (8 .info, 8 go.mod
                    # files, each with its lookup and a proof's tiles fetched at once, up to
                    # ~6 per proof) plus the clients' own requests; past it, requests wait
                    # for a connection rather than fail. Idle connections are kept 30 s (the
                    # default 15 s can close them between a build's phases): a new TLS
                    # connection costs two round trips before the first byte.
                    limit=96,
                    keepalive_timeout=30,
                    ssl=self._ssl_context(),
                ),
                timeout=self._timeout,
                # modgate's own environment may point HTTPS_PROXY at modgate: never follow.
                trust_env=False,
                headers={"User-Agent": f"modgate/{__version__}", "Via": VIA},
            )
        return self._session

    def _ssl_context(self) -> ssl.SSLContext:
        if self._context is None or self._context[0] != self.upstream_ca:
            self._context = (self.upstream_ca, upstream_context(self.upstream_ca))
        return self._context[1]

    async def warm(self) -> None:
        """Make the TLS context of upstream connections now, in a worker thread: loading
        the CA store takes ~120 ms here, which the first cache miss of every process
        otherwise waited for on the event loop, with every request behind it."""
        extra = self.upstream_ca
        if self._context is None or self._context[0] != extra:
            made = await asyncio.to_thread(upstream_context, extra)
            if self.upstream_ca == extra:
                self._context = (extra, made)

    async def set_ca(self, upstream_ca: Path | None) -> None:
        """Trust `upstream_ca` too, for connections opened from now on."""
        if upstream_ca != self.upstream_ca:
            upstream_context(upstream_ca)  # raises here, on a bad file, not on a fetch
            self.upstream_ca = upstream_ca
            await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(
        self, chain: Chain, req: ModRequest, spool: Path, on_body: OnBody | None = None
    ) -> Fetched:
        attempts: list[Attempt] = []
        for i, hop in enumerate(chain.hops):
            last = i == len(chain.hops) - 1
            began = time.monotonic()
            try:
                status, body, size, digest = await self._get(
                    hop, req, spool, chain.database, on_body
                )
            except (aiohttp.ClientError, TimeoutError, ProtocolError, OSError) as e:
                self._timed(hop.url, began)
                attempts.append(Attempt(hop.url, error=_describe(e)))
                if hop.any_error and not last:
                    continue
                raise UpstreamError(_summary(req, attempts)) from e
            self._timed(hop.url, began)
            if status == 200 or (status in (404, 410) and last):
                return Fetched(
                    status, body, size, digest, hop.url, (*attempts, Attempt(hop.url, status))
                )
            attempts.append(Attempt(hop.url, status, error=_first_line(body, status)))
            body.unlink(missing_ok=True)
            if status in (404, 410) or (hop.any_error and not last):
                continue
            raise UpstreamError(_summary(req, attempts))
        raise AssertionError("a chain has at least one hop")

    def _timed(self, upstream: str, began: float) -> None:
        if self.timed is not None:
            self.timed(upstream, time.monotonic() - began)

    async def _get(
        self, hop: Hop, req: ModRequest, spool: Path, database: bool, on_body: OnBody | None
    ) -> tuple[int, Path, int, str]:
        limit = MAX_ZIP if req.kind is Kind.ZIP else MAX_OTHER
        # A database's own URL serves what a proxy serves below sumdb/<name>/.
        wanted = req.sumdb_path if database else req.path
        try:
            fd, name = tempfile.mkstemp(dir=spool, prefix="fetch-")
        except OSError as e:
            raise _spool_error(req, spool, e) from e
        path = Path(name)
        growing: GrowingFile | None = None
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                async with await self._open(URL(f"{hop.url}/{wanted}")) as r:
                    if on_body is not None and (length := _streamable(req, r)):
                        growing = GrowingFile(path, length, hop.url)
                        on_body(growing)
                    h, size = hashlib.sha256(), 0
                    try:
                        async for chunk in r.content.iter_chunked(CHUNK):
                            size += len(chunk)
                            if size > limit:
                                raise ProtocolError(f"{req}: answer is over {limit} bytes")
                            h.update(chunk)
                            _write_all(out.fileno(), chunk, req, spool)
                            if growing is not None:
                                growing.wrote(size)
                    except aiohttp.ClientPayloadError as e:  # short of its Content-Length
                        raise ProtocolError(_short(r, size)) from e
            if r.status == 200:
                check_body(req, path)
            return r.status, path, size, h.hexdigest()
        except BaseException as e:
            if growing is not None:
                growing.fail(_describe(e))
            path.unlink(missing_ok=True)
            raise

    async def _open(self, url: URL) -> aiohttp.ClientResponse:
        """GET `url`, following redirects the `redirects` check allows, at most
        MAX_REDIRECTS of them; a refused one raises ProtocolError naming its Location."""
        for hops in range(MAX_REDIRECTS + 1):
            r = await self._client().get(url, allow_redirects=False)
            location = r.headers.get("Location")
            if r.status not in REDIRECTS or location is None:
                return r
            r.release()
            if hops == MAX_REDIRECTS:
                raise ProtocolError(
                    f"stopped after {MAX_REDIRECTS} redirects, the last to {location}"
                )
            try:
                target = r.url.join(URL(location))
            except ValueError as e:
                raise ProtocolError(f"redirect to {location!r}: not a URL ({e})") from e
            why = "not an http(s) URL" if target.scheme not in ("http", "https") else ""
            if not why and self.redirects is not None:
                why = await self.redirects(target)
            if why:
                raise ProtocolError(f"redirect to {location} refused: {why}")
            url = target
        raise AssertionError("the loop returns or raises")


def came_back(via: Iterable[str]) -> bool:
    """Whether a request's Via headers show this process sent it (see VIA)."""
    mine = VIA.split(" ", 1)[1]
    return any(mine in hop.split() for value in via for hop in value.split(","))


def _write_all(fd: int, data: bytes, req: ModRequest, spool: Path) -> None:
    """Write all of `data`: a write may take less than it was given (a disk filling up
    takes what fits, then fails)."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError as e:
            raise _spool_error(req, spool, e) from e
        view = view[written:]


def _spool_error(req: ModRequest, spool: Path, e: OSError) -> CacheError:
    """A spool write that failed: this machine's problem, never the upstream's."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return CacheError(
            f"{req}: the disk of {spool} is full ({e.strerror}): not served; free space "
            "there, or give modgate a cache directory with room (--cache-dir)"
        )
    return CacheError(f"{req}: cannot write to {spool}: {e.strerror or e}: not served")


async def is_this_machine(host: str) -> bool:
    """Whether `host` names this machine: a loopback or unspecified address, or one bound
    to a local interface (which only a local address can be). A name that does not
    resolve is not: connecting to it fails anyway."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, _, _, _, address in infos:
        ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_loopback or ip.is_unspecified or _bindable(family, str(address[0])):
            return True
    return False


def _bindable(family: int, address: str) -> bool:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


def _streamable(req: ModRequest, r: aiohttp.ClientResponse) -> int:
    """The announced length of a 200 zip worth handing on while it downloads, else 0."""
    if r.status != 200 or req.kind is not Kind.ZIP:
        return 0
    if r.headers.get("Content-Encoding", "identity") != "identity":
        return 0  # the length is of the encoded body, not of what a reader gets
    try:
        length = int(r.headers.get("Content-Length", ""))
    except ValueError:
        return 0  # no length to promise the client: read it whole first
    return length if STREAM_MIN <= length <= MAX_ZIP else 0


def _short(r: aiohttp.ClientResponse, received: int) -> str:
    expected = f", expected {r.content_length}" if r.content_length is not None else ""
    return (
        "peer closed connection without sending complete message body "
        f"(received {received} bytes{expected})"
    )


def _describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, TimeoutError | asyncio.TimeoutError):
        return f"timed out ({text})" if str(e) else "timed out"
    return text


def _first_line(body: Path, status: int) -> str:
    with body.open("rb") as f:
        line = f.read(300).decode("utf-8", "replace").strip().split("\n", 1)[0]
    return f"{status} {line}".strip()


def _summary(req: ModRequest, attempts: list[Attempt]) -> str:
    return f"{req}: no upstream answered: " + "; ".join(str(a) for a in attempts)
