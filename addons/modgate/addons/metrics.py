"""Serve Prometheus metrics, /healthz and /readyz (modgate/metrics.py) on their own
address (`modgate run --metrics-listen HOST:PORT`, the modgate_metrics_listen option);
part of modgate's addons (`all_addons()`). Off unless an address is given.

It decides nothing about a request. The Tracer tells it of every finished request
(`observe`), the fetcher of every upstream fetch's time, the gateway of every wait on
another's fetch; every REFRESH seconds it reads the cache's size and the trace and
audit writers' state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions

from modgate.metrics import Check, Metrics, MetricsServer, Readiness, parse_listen
from modgate.trace.record import Record

if TYPE_CHECKING:
    from modgate.addons.audit import Auditor
    from modgate.addons.settings import Settings
    from modgate.addons.trace import Tracer

log = logging.getLogger("modgate")
REFRESH = 5.0  # seconds between reads of the cache size and the writers' state
CONNECT_TIMEOUT = 3.0


class MetricsGate:
    name = "modgate_metrics"

    def __init__(self, settings: Settings, tracer: Tracer, auditor: Auditor) -> None:
        self.settings, self.tracer, self.auditor = settings, tracer, auditor
        self.metrics = Metrics()
        self.readiness = Readiness()
        self.server: MetricsServer | None = None
        self.address: tuple[str, int] | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._on = False
        for name, check in (("store", self._store), ("rules", self._rules),
                            ("checksum", self._checksum), ("trace", self._trace),
                            ("audit", self._audit), ("replicas", self._replicas)):  # fmt: skip
            self.readiness.register(name, check)

    def load(self, loader: Any) -> None:
        loader.add_option(
            "modgate_metrics_listen", str, "",
            "Serve /metrics, /healthz and /readyz at HOST:PORT; '' for none.",
        )  # fmt: skip

    def configure(self, updated: set[str]) -> None:
        if "modgate_metrics_listen" in updated:
            text = ctx.options.modgate_metrics_listen.strip()
            try:
                self._listen = parse_listen(text) if text else None
            except ValueError as e:
                raise exceptions.OptionsError(f"modgate_metrics_listen: {e}") from e

    async def running(self) -> None:
        listen = getattr(self, "_listen", None)
        if listen is None or self.server is not None:
            return
        self.server = MetricsServer(self.metrics, self.readiness)
        try:
            self.address = await self.server.start(*listen)
        except OSError as e:
            self.server = None
            log.error("modgate: metrics: cannot listen on %s:%d: %s", *listen, e.strerror or e)
            ctx.master.shutdown()  # asked for and not there: an unwatched gate is no gate
            return
        self._on = True
        self.settings.fetcher.timed = self.metrics.fetched
        self._refresh = asyncio.get_running_loop().create_task(self._refreshing())
        host, port = self.address
        log.info("modgate: metrics on http://%s/metrics (/healthz, /readyz)",
                 f"[{host}]:{port}" if ":" in host else f"{host}:{port}")  # fmt: skip

    async def done(self) -> None:
        self._on = False
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
            self._refresh = None
        if self.server is not None:
            await self.server.stop()
            self.server = None

    def observe(self, record: Record, meta: Mapping[str, Any], body: bytes | None) -> None:
        if self._on:
            self.metrics.observe(record, meta, body)

    async def _refreshing(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as e:  # the next round may do better; the gate goes on
                log.warning("modgate: metrics: refresh failed: %s", e)
            await asyncio.sleep(REFRESH)

    async def refresh(self) -> None:
        runtime = self.settings.runtime
        if runtime is not None:
            runtime.gateway.on_wait = self.metrics.waited
            store = runtime.store
            size, entries = await asyncio.to_thread(lambda: (store.volume(), len(store)))
            self.metrics.cache_bytes.set(size)
            self.metrics.cache_entries.set(entries)
            self.metrics.replicas(runtime.gateway.tier, runtime.gateway.locks)
        if (trace := self.tracer.writer) is not None:
            s = trace.stats
            self.metrics.writer("trace", s.lag, s.failures, trace.waiting)
        if (audit := self.auditor.writer) is not None:
            a = audit.stats
            self.metrics.writer("audit", a.lag, a.failures, audit.waiting)

    # --- readiness -------------------------------------------------------------------------

    async def _store(self) -> Check:
        runtime = self.settings.runtime
        if runtime is None:
            return Check(False, "no store open (the rules did not load)")
        directory = runtime.store.directory

        def probe() -> None:
            fd, name = tempfile.mkstemp(dir=directory, prefix=".readyz-")
            os.close(fd)
            os.unlink(name)

        try:
            await asyncio.to_thread(probe)
        except OSError as e:
            return Check(False, f"{directory}: not writable: {e.strerror or e}")
        return Check(True, f"{directory}: writable")

    def _replicas(self) -> Check:
        """The shared parts of a replica (issue 17): Redis single-flight and the object
        store. Degraded is still ready: the replica serves from its own cache and locks,
        and taking every replica out when Redis or the bucket is away would stop all."""
        from modgate.coordination import status

        runtime = self.settings.runtime
        parts = status(runtime.gateway.locks, runtime.gateway.tier) if runtime else {}
        if not parts:
            return Check(True, "one machine: no shared object store or coordination")
        return Check(True, "; ".join(f"{name}: {state}" for name, state in parts.items()))

    def _rules(self) -> Check:
        runtime = self.settings.runtime
        if runtime is None:
            return Check(False, "no rules in force")
        return Check(True, f"{runtime.config.source}: {len(runtime.config.rules.modules)} "
                     "module rules")  # fmt: skip

    async def _checksum(self) -> Check:
        """Each checksum database: a verified tree head kept on disk (so modgate checks
        offline), or its upstream answering a TCP connection now."""
        runtime = self.settings.runtime
        if runtime is None:
            return Check(False, "no rules in force")
        if not runtime.databases:
            return Check(True, "no checksum database (pins, go.sum and first-seen hashes)")
        notes, ok = [], True
        for db in runtime.databases:
            latest = runtime.checker._latest_file(db.name)  # noqa: SLF001
            if latest.is_file():
                notes.append(f"{db.name}: tree head cached")
                continue
            url = db.chain.hops[0].url
            if await _reachable(url):
                notes.append(f"{db.name}: {url} reachable")
            else:
                ok = False
                notes.append(f"{db.name}: no cached tree head and {url} unreachable")
        return Check(ok, "; ".join(notes))

    def _trace(self) -> Check:
        writer = self.tracer.writer
        if writer is None:
            return Check(True, "trace off")
        if writer.healthy:
            return Check(True, f"{writer.path}: writing")
        return Check(False, writer.stats.last_error or "the trace writer stopped")

    def _audit(self) -> Check:
        writer = self.auditor.writer
        if writer is None:
            return Check(True, "audit log off")
        if writer.healthy:
            return Check(True, f"{writer.path}: writing (entry {writer.stats.last_seq})")
        return Check(False, writer.stats.last_error or "the audit writer stopped")


async def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, w = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, port), CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError):
        return False
    w.close()
    return True
