"""modgate's options, rules and shared resources (store, fetcher, gateway); load with the
other modgate addons: `mitmdump -s addons/modgate_addons.py --set modgate_rules=rules.yaml`.

Other addons read `Settings.runtime`; nothing else opens files or sockets at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import re
import shutil
import socket
import sqlite3
import ssl
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import mode_specs
from yarl import URL

from modgate import dbroute, leftovers
from modgate.blobs import BlobServer
from modgate.cabundle import system_bundle
from modgate.config import (
    Config,
    Hop,
    Proxy,
    SumdbConfig,
    load_config,
    normal_host,
    parse_gosumdb,
    proxies_from_goproxy,
)
from modgate.coordination import ClusterLocks, SharedHeads
from modgate.coordination import password as redis_password
from modgate.errors import CacheError, ModgateError
from modgate.gateway import Gateway
from modgate.home import default_home
from modgate.keylock import KeyLocks, Locks
from modgate.objectstore import S3Tier
from modgate.objectstore import credentials as s3_credentials
from modgate.rules import Deny
from modgate.rulesfile import check, digest
from modgate.store import DiskStore
from modgate.upstream import HttpFetcher, is_this_machine, upstream_context
from modgate.verify import Checker, Pins

log = logging.getLogger("modgate")

OPTIONS = (
    "modgate_rules",
    "modgate_cache_dir",
    "modgate_goproxy",
    "modgate_gosumdb",
    "modgate_intercept_all",
    "modgate_ignore_teams",
)


@dataclass
class Runtime:
    config: Config
    proxies: tuple[Proxy, ...]
    databases: tuple[SumdbConfig, ...]
    store: DiskStore
    gateway: Gateway
    checker: Checker

    @functools.cached_property
    def gated(self) -> frozenset[tuple[str, int]]:
        """(host, port) of every module proxy and checksum database modgate answers for."""
        return frozenset((e.host, e.port) for e in (*self.proxies, *self.databases))


class Settings:
    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self._lock: leftovers.CacheLock | None = None
        self.blobs = BlobServer()
        self.fetcher = HttpFetcher(redirects=self.check_redirect)
        self._routes: dict[tuple[SumdbConfig, tuple[Hop, ...]], dbroute.Found] = {}

    def load(self, loader: Loader) -> None:
        loader.add_option("modgate_rules", str, "rules.yaml", "modgate rules file; '' for none.")
        loader.add_option(
            "modgate_cache_dir", str, str(default_home() / "cache"), "modgate cache directory."
        )
        loader.add_option(
            "modgate_goproxy", str, "",
            "The proxies to gate when the rules file names none; default: `go env GOPROXY`.",
        )  # fmt: skip
        loader.add_option(
            "modgate_gosumdb", str, "",
            "The checksum database when the rules file names none; default: `go env GOSUMDB`.",
        )  # fmt: skip
        loader.add_option(
            "modgate_upstream_ca", str, "",
            "A PEM bundle of CAs to trust upstream besides the system's (and SSL_CERT_FILE's): "
            "a TLS-inspecting firewall's, an internal mirror's.",
        )  # fmt: skip
        loader.add_option(
            "modgate_ignore_teams", bool, False,
            "Ignore rules.yaml's teams and owners: no authentication. For modgate's own "
            "helper processes (prefetch --cache-dir, cache import), on a loopback port of "
            "their own; never on a shared modgate.",
        )  # fmt: skip
        loader.add_option(
            "modgate_intercept_all", bool, False,
            "Intercept TLS to every host, not only module proxies (to watch all traffic).",
        )  # fmt: skip

    def configure(self, updated: set[str]) -> None:
        if "modgate_upstream_ca" in updated:
            self._upstream_ca(ctx.options.modgate_upstream_ca)
        if updated & set(OPTIONS):
            try:
                self.reload()
            except ModgateError as e:
                raise exceptions.OptionsError(str(e)) from e
        if updated & {"mode", *OPTIONS} and self.runtime is not None:
            self._limit_interception()

    def reload(self, config: Config | None = None) -> None:
        """Apply the rules file (`config`, when the watcher has read it already), all or
        nothing: everything is built and checked first, and if applying it fails what was
        in force is restored. On any error raise ModgateError and keep what is in force,
        so a broken edit never takes a running modgate down."""
        if config is None:
            path = ctx.options.modgate_rules
            config = load_config(Path(path)) if path else Config()
        if ctx.options.modgate_ignore_teams and config.teams is not None:
            log.warning("modgate: %s: teams and owners ignored (modgate_ignore_teams): "
                        "nobody is asked to authenticate", config.source)  # fmt: skip
            config = replace(config, teams=None, rules=replace(config.rules, owners=()))
        cache_dir = Path(ctx.options.modgate_cache_dir).expanduser()
        try:
            proxies = config.proxies
            if proxies is None:
                proxies = proxies_from_goproxy(ctx.options.modgate_goproxy or goenv("GOPROXY"))
            databases = config.checksum.databases
            if databases is None:
                gosumdb = ctx.options.modgate_gosumdb or goenv("GOSUMDB")
                db = parse_gosumdb(gosumdb)
                databases = (self._default_route(db, gosumdb, proxies, cache_dir),) if db else ()
        except ValueError as e:
            raise ModgateError(f"{config.source}: {e}") from e
        if not proxies:
            raise ModgateError(
                f"{config.source}: proxies: no module proxy to gate; list them in the "
                "rules file or set GOPROXY"
            )
        pins = check(config)
        old = self.runtime
        # The same cache directory: in-flight requests keep its store and gateway.
        kept = old if old is not None and old.store.directory == cache_dir / "artifacts" else None
        # Build everything first; what was built is closed again if a step fails.
        with contextlib.ExitStack() as undo:
            if kept is not None:
                store, gateway = kept.store, kept.gateway
                checker = _open_checker(config, pins, databases, cache_dir, gateway)
                undo.callback(checker.close)
                _resize(store, config, kept.config)
                if (config.s3, config.redis) != (kept.config.s3, kept.config.redis):
                    log.warning(
                        "modgate: %s: store and coordination changes take effect when "
                        "modgate restarts; the running ones stay", config.source,
                    )  # fmt: skip
                    config = replace(config, s3=kept.config.s3, redis=kept.config.redis)
            else:
                store = DiskStore(cache_dir / "artifacts", config.cache.size_limit)
                undo.callback(store.close)
                locks, tier = _replicas(config, cache_dir)
                gateway = Gateway(
                    store, self.fetcher, cache_dir / "spool", config.cache,
                    locks=locks, tier=tier,
                )  # fmt: skip
                checker = _open_checker(config, pins, databases, cache_dir, gateway)
                undo.callback(checker.close)
                lock = self._claim(cache_dir, store)
            undo.pop_all()
        # Then swap it in, and close what it replaces.
        gateway.settings, gateway.validator = config.cache, checker
        if kept is not None:
            kept.checker.close()
        else:
            self._close_resources()
            self._lock = lock
        self.runtime = Runtime(config, proxies, databases, store, gateway, checker)
        log.info("modgate: gating %s", ", ".join(p.url for p in proxies))
        if isinstance(gateway.locks, ClusterLocks):
            gateway.locks.announce_rules((digest(config.source) or b"").hex())

    def apply(self, config: Config) -> None:
        """Apply a rules file the watcher read (RulesGate), as setting the option again does."""
        self.reload(config)
        try:
            self._limit_interception()
        except Exception as e:  # mitmproxy refused allow_hosts (an addon's configure)
            raise ModgateError(
                f"{config.source}: TLS interception could not be limited to the hosts the "
                f"rules gate: {e}"
            ) from e

    def _default_route(
        self, db: SumdbConfig, gosumdb: str, proxies: tuple[Proxy, ...], cache_dir: Path
    ) -> SumdbConfig:
        """The default database (GOSUMDB), reached as go would reach it: through the
        first gated proxy that serves it, else directly (dbroute). A settled answer is
        kept, so a reload of an unchanged setup asks nobody."""
        if not dbroute.proxied(gosumdb):
            return db
        key = (db, dbroute.candidates(proxies))
        found = self._routes.get(key)
        if found is None:
            found = dbroute.find_route(db, proxies, cache_dir / "state")
            if found.settled:
                self._routes[key] = found
        log.info(
            "modgate: checksum database %s through %s (%s)",
            db.name, found.db.chain, found.why,
        )  # fmt: skip
        return found.db

    def _claim(self, cache_dir: Path, store: DiskStore) -> leftovers.CacheLock:
        """Lock the cache directory for as long as it is used, and remove what an
        interrupted run left there (leftovers.py: all of it when no other modgate uses it)."""
        try:
            lock = leftovers.CacheLock(cache_dir)
        except OSError as e:
            raise CacheError(f"cannot lock the cache directory {cache_dir}: {e}") from e
        alone = lock.alone()
        try:
            removed = leftovers.remove(leftovers.find(cache_dir, store.files(), alone))
        finally:
            lock.share()
        if removed.files:
            log.warning("modgate: removed %s left in %s by an interrupted run", removed, cache_dir)
        return lock

    def _upstream_ca(self, text: str) -> None:
        """Trust `text`'s CAs upstream: in modgate's own fetches, and in the connections
        mitmproxy makes for what it forwards (version-control hosts), unless told
        otherwise there (ssl_verify_upstream_trusted_ca)."""
        path = Path(text).expanduser() if text else None
        try:
            upstream_context(path)
        except ModgateError as e:
            raise exceptions.OptionsError(f"modgate_upstream_ca: {e}") from e
        self.fetcher.upstream_ca = path
        with contextlib.suppress(RuntimeError):  # no loop yet: nothing opened yet
            asyncio.get_running_loop().create_task(self.fetcher.close())
        if path is not None and not ctx.options.ssl_verify_upstream_trusted_ca:
            # mitmproxy trusts that file alone: the system's CAs go in with the extra ones.
            confdir = Path(ctx.options.confdir).expanduser()
            both = confdir / "upstream-ca.pem"
            try:
                system = system_bundle(confdir).read_bytes().rstrip(b"\n") + b"\n"
                both.write_bytes(system + path.read_bytes())
            except OSError as e:
                raise exceptions.OptionsError(f"modgate_upstream_ca: {e}") from e
            ctx.options.update(ssl_verify_upstream_trusted_ca=str(both))

    def _limit_interception(self) -> None:
        """Intercept TLS only to module proxies (and the GOPROXY endpoint's reverse target):
        every other host is tunnelled untouched, certificate and all."""
        assert self.runtime is not None
        if ctx.options.modgate_intercept_all:
            return
        hosts = list(self.runtime.gated)
        for spec in ctx.options.mode:
            mode = mode_specs.ProxyMode.parse(spec)
            if isinstance(mode, mode_specs.ReverseMode):
                hosts.append((mode.address[0], mode.address[1]))
        # `host.` is the same host (matched case-insensitively by mitmproxy).
        patterns = {f"^{re.escape(h)}\\.?:{port}$" for h, port in hosts}
        # Version-control hosts too: go's direct fetches there are traced and ruled (vcs.py).
        if (hostrules := self.runtime.config.rules.hosts) is not None:
            patterns |= {glob_regex(rule.host, rule.port) for rule in hostrules.vcs}
        allow = sorted(patterns)
        if ctx.options.allow_hosts != allow:
            ctx.options.update(allow_hosts=allow)

    async def check_redirect(self, url: URL) -> str:
        """Why the fetcher may not follow an upstream's redirect to `url` ("" if it may):
        modgate's own listening ports on this machine, which would wait on the very fetch
        that follows them, or a host the rules refuse (the configured upstreams and the
        gated hosts always pass)."""
        host, port = normal_host(url.host or ""), url.port or 0
        if port in self._own_ports() and await is_this_machine(host):
            return f"that is modgate itself (port {port})"
        if (runtime := self.runtime) is not None:
            chains = [p.chain for p in runtime.proxies] + [d.chain for d in runtime.databases]
            chains += [r.chain for r in runtime.config.rules.routes]
            trusted = set(runtime.gated)
            for hop in (hop for chain in chains for hop in chain.hops):
                parts = urlsplit(hop.url)
                trusted.add(
                    (normal_host(parts.hostname or ""), parts.port or _default_port(parts.scheme))
                )
            decision = runtime.config.rules.decide_host(host, port, trusted)
            if isinstance(decision, Deny):
                return f"rule {decision.rule.label}: {decision.reason}"
        return ""

    def _own_ports(self) -> set[int]:
        ports = {self.blobs.port, self.blobs.tls_port} - {0}
        proxyserver = ctx.master.addons.get("proxyserver")
        for server in getattr(proxyserver, "servers", ()):
            ports.update(int(addr[1]) for addr in server.listen_addrs)
        if (endpoint := ctx.master.addons.get("modgate_endpoint")) is not None:
            ports.add(endpoint.port)
        return ports

    async def running(self) -> None:
        if self.runtime is None:  # loaded with add(), and no option was ever set
            self.reload()
            self._limit_interception()
        self.blobs.start(loopback_tls())
        try:
            await self.fetcher.warm()
        except ModgateError as e:  # a bad upstream_ca: said again at the first fetch
            log.error("modgate: %s", e)
        if self.runtime is not None:
            gateway = self.runtime.gateway
            for shared in (gateway.tier, gateway.locks):
                if isinstance(shared, S3Tier | ClusterLocks):
                    await shared.open()  # set up at start, not at the first miss; said if down

    async def done(self) -> None:
        if self.runtime is not None:
            gateway = self.runtime.gateway
            await gateway.drain(timeout=10)
            for shared in (gateway.tier, gateway.locks):
                if isinstance(shared, S3Tier | ClusterLocks):
                    await shared.close()
        self.blobs.stop()
        await self.fetcher.close()
        self._close_resources()

    def _close_resources(self) -> None:
        if self.runtime is not None:
            self.runtime.store.close()
            self.runtime.checker.close()
            self.runtime = None
        if self._lock is not None:  # after the store: nothing of ours is in flight
            self._lock.close()
            self._lock = None


def _replicas(config: Config, cache_dir: Path) -> tuple[Locks, S3Tier | None]:
    """Single-flight and the shared tier of a replica (issue 17): Redis locks when
    `coordination.redis` is set (this machine's flock ones otherwise, and while Redis is
    away), and the S3 bucket of `store.s3` behind the local cache."""
    local = KeyLocks(cache_dir / "locks")
    locks: Locks = local
    if config.redis is not None:
        locks = ClusterLocks(config.redis, local, redis_password(config.redis))
        log.info("modgate: single-flight across replicas through redis at %s", locks.where)
    tier = None
    if config.s3 is not None:
        tier = S3Tier(config.s3, s3_credentials(config.s3))
        log.info("modgate: shared object store %s", tier.where)
    return locks, tier


def _open_checker(
    config: Config, pins: Pins, databases: tuple[SumdbConfig, ...], cache_dir: Path,
    gateway: Gateway,
) -> Checker:  # fmt: skip
    state = cache_dir / "state"
    try:
        checker = Checker(config.checksum, pins, databases, state, gateway)
        if isinstance(gateway.locks, ClusterLocks):
            checker.heads = SharedHeads(gateway.locks)
        return checker
    except (OSError, sqlite3.Error) as e:
        raise CacheError(
            f"{config.source}: cannot open modgate's state in {state}: {e}; the cache "
            "directory must be writable"
        ) from e


def _resize(store: DiskStore, config: Config, in_force: Config) -> None:
    """Set the new cache size limit; on failure (a full disk) put the old one back."""
    try:
        store.resize(config.cache.size_limit)
    except Exception as e:  # OSError, sqlite3.Error: what diskcache's SQLite update raises
        with contextlib.suppress(Exception):
            store.resize(in_force.cache.size_limit)
        raise CacheError(
            f"{config.source}: cache.size_limit: cannot resize the cache in {store.directory} "
            f"to {config.cache.size_limit} bytes: {e}"
        ) from e


def _own_addresses() -> set[str]:
    """This machine's addresses other machines may know it by: its host name's, and the
    source address of its routes out (found with a UDP connect, which sends nothing)."""
    found: set[str] = set()
    with contextlib.suppress(OSError):
        for *_, sockaddr in socket.getaddrinfo(socket.gethostname(), None):
            found.add(str(sockaddr[0]))
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))
            found.add(str(s.getsockname()[0]))
    return {a.split("%")[0] for a in found}


def loopback_tls(address: str = "") -> ssl.SSLContext | None:
    """A TLS server context for 127.0.0.1 (and `address`, an IP address listened on) with
    a certificate from modgate's CA (mitmproxy's, in the confdir), which clients of the
    HTTPS proxy already trust; None when mitmproxy has no certificate store."""
    tlsconfig = ctx.master.addons.get("tlsconfig")
    certstore = getattr(tlsconfig, "certstore", None)
    if certstore is None:
        return None
    ips = {"127.0.0.1", "::1", *([address] if address else [])}
    names = {"localhost"}
    if address in ("0.0.0.0", "::"):  # everywhere: clients name some address of the host
        ips -= {address}
        ips |= _own_addresses()
        names |= {n for n in (socket.gethostname(), socket.getfqdn()) if n}
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in sorted(ips)]
    sans += [x509.DNSName(n) for n in sorted(names)]
    entry = certstore.get_cert("127.0.0.1", sans)
    key = entry.privatekey.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_alpn_protocols(["http/1.1"])
    # load_cert_chain reads files only: a private temporary one, removed at once.
    with tempfile.NamedTemporaryFile(prefix="modgate-loopback-", suffix=".pem") as pem:
        pem.write(entry.cert.to_pem() + key)
        pem.flush()
        context.load_cert_chain(pem.name)
    return context


def glob_regex(glob: str, port: int | None) -> str:
    """A `hosts` glob (`*` any run of characters but `/`, `?` one, `[...]` a class, as
    path.Match) as a regex over mitmproxy's "host:port"."""
    out = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if c == "*":
            out.append("[^/:]*")
        elif c == "?":
            out.append("[^/:]")
        elif c == "[" and (end := glob.find("]", i + 2)) != -1:
            body = glob[i + 1 : end]
            negate = body.startswith("^")
            body = re.sub(r"([\\\]\[])", r"\\\1", body.removeprefix("^"))
            out.append(f"[{'^' if negate else ''}{body}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return f"^{''.join(out)}\\.?:{port if port is not None else '[0-9]+'}$"


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


@functools.cache
def goenv(name: str) -> str:
    """A go setting (GOPROXY, GOSUMDB) as the go command on this machine resolves it:
    environment, go.env, built-in default. Asked once per process: a rules reload runs on
    the event loop and must not start `go env` each time."""
    if os.environ.get(name):
        return os.environ[name]
    go = shutil.which("go")
    if go is None:
        section = "proxies" if name == "GOPROXY" else "checksum.databases"
        raise ModgateError(
            f"the rules file does not set {section}, {name} is unset and there is no go "
            f"command to ask; set {section} in rules.yaml"
        )
    out = subprocess.run([go, "env", name], capture_output=True, text=True, check=False)
    return out.stdout.strip()


addons = [Settings()]
