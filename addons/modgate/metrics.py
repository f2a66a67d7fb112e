"""Prometheus metrics and health checks, and the small HTTP server that shows them
(`modgate run --metrics-listen HOST:PORT`). No mitmproxy here: addons/metrics.py feeds
it from the pipeline.

    GET /metrics   Prometheus' text format (prometheus-client)
    GET /healthz   200 {"status": "alive"}: the process answers
    GET /readyz    200 or 503 {"ready": bool, "checks": {name: {"ok", "detail"}}}: every
                   registered check (`Readiness.register`: store writable, rules loaded,
                   checksum database; a later backend adds its own)

Several workers (`modgate run --workers N`): prometheus-client's multi-process mode.
Each worker's values live in mmap'd files in PROMETHEUS_MULTIPROC_DIR (the supervisor
makes it private to this modgate, empties it at start and removes a dead worker's live
gauges: workers.py), and whichever worker a scrape reaches adds them all up. Counters
of a worker that died stay in the sums, as counters must.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_mp

from modgate.trace.record import FROM_CACHE, FROM_UPSTREAM, REFUSED_HASHES, Record

log = logging.getLogger("modgate")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
TEAM = "modgate.team"
FAST = "modgate.fast"  # answered by the fast path (addons/fasthit.py): which front end
OUTCOMES = {"hit": "hit", "miss": "miss", "refreshed": "miss", "stale": "stale",
            "negative": "negative"}  # fmt: skip
# Upstream fetches: a cached hit is never here; a module zip over a slow link can take
# a minute.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """The metrics of one process, and their exposition (all processes' in multi-process
    mode)."""

    def __init__(self) -> None:
        # A registry of its own: two in one process (tests) must not collide in the
        # default one. In multi-process mode the values are in files; this registry only
        # holds them for single-process exposition.
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "modgate_requests", "Requests finished, by kind, cache outcome (or refused) and team.",
            ["kind", "outcome", "team"], registry=r,
        )  # fmt: skip
        self.fast_answers = Counter(
            "modgate_fast_answers",
            "Cached hits answered again from memory without the pipeline's stages "
            "(fasthit.py), by front end (endpoint, proxy); counted in modgate_requests too.",
            ["front"], registry=r,
        )  # fmt: skip
        self.upstream_latency = Histogram(
            "modgate_upstream_latency_seconds",
            "One fetch from an upstream (a proxy or checksum database), to its last byte.",
            ["upstream"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.bytes = Counter(
            "modgate_served_bytes", "Body bytes sent to clients, by where they came from.",
            ["source"], registry=r,
        )  # fmt: skip
        self.verification_failures = Counter(
            "modgate_verification_failures",
            "Artifacts refused because their hash did not check out, by cause and source.",
            ["cause", "source"], registry=r,
        )  # fmt: skip
        self.rule_refusals = Counter(
            "modgate_rule_refusals", "Requests refused by a rule, by rule.", ["rule"],
            registry=r,
        )  # fmt: skip
        self.singleflight_waits = Counter(
            "modgate_singleflight_waits",
            "Requests that waited for another's fetch of the same thing: in this process "
            "(flight) or another worker's (process).",
            ["where"], registry=r,
        )  # fmt: skip
        self.cache_bytes = Gauge(
            "modgate_cache_size_bytes", "Bytes the cache holds.", registry=r,
            multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self.cache_entries = Gauge(
            "modgate_cache_entries", "Entries the cache holds.", registry=r,
            multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self.write_lag = Gauge(
            "modgate_write_lag_seconds",
            "How long the last records waited to be written, by log (trace, audit); the "
            "worst worker's.",
            ["log"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.write_failures = Counter(
            "modgate_write_failures", "Batches the trace or audit writer could not write.",
            ["log"], registry=r,
        )  # fmt: skip
        self.write_backlog = Gauge(
            "modgate_write_waiting",
            "Records waiting to be written after failures, by log (all workers).",
            ["log"], registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        # A replica's shared parts (issue 17): counts kept by the tier and the cluster
        # locks themselves, set here at each refresh; summed over workers (livesum).
        self.object_store = Gauge(
            "modgate_object_store_operations",
            "Object-store reads and writes of this replica, and objects refused as read "
            "(failed their check), by op.",
            ["op"], registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.cluster_locks = Gauge(
            "modgate_cluster_lock_events",
            "Cross-replica single-flight: locks taken on this machine because Redis was "
            "away (fallback), and locks taken over from a replica that stopped (takeover).",
            ["event"], registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self._failures_seen: dict[str, int] = {}

    def replicas(self, tier: object, locks: object) -> None:
        """Copy the shared tier's and the cluster locks' own counts (absent parts: none)."""
        for op in ("gets", "puts", "refused"):
            if isinstance(n := getattr(tier, op, None), int):
                self.object_store.labels(op.rstrip("s")).set(n)
        for event in ("fallbacks", "takeovers"):
            if isinstance(n := getattr(locks, event, None), int):
                self.cluster_locks.labels(event.rstrip("s")).set(n)

    def observe(self, record: Record, meta: Mapping[str, Any], body: bytes | None) -> None:
        """A finished request (the Tracer's observer): ~10 us of label lookups and adds."""
        team = str(meta.get(TEAM, "") or "")
        if record.refused:
            outcome = "refused"
        else:
            outcome = OUTCOMES.get(record.cache) or (
                "error" if record.status == 0 or record.status >= 500 else "none"
            )
        self.requests.labels(record.kind, outcome, team).inc()
        if front := meta.get(FAST):
            self.fast_answers.labels(front).inc()
        if record.bytes_out:
            if record.cache in FROM_CACHE:
                self.bytes.labels("cache").inc(record.bytes_out)
            elif record.cache in FROM_UPSTREAM:
                self.bytes.labels("upstream").inc(record.bytes_out)
        if record.rule_verdict == "deny":
            self.rule_refusals.labels(record.rule or "?").inc()
        elif record.hash_verdict in REFUSED_HASHES:
            self.verification_failures.labels(record.hash_verdict, record.hash_source).inc()

    def fetched(self, upstream: str, seconds: float) -> None:
        self.upstream_latency.labels(upstream).observe(seconds)

    def waited(self, where: str) -> None:
        self.singleflight_waits.labels(where).inc()

    def writer(self, name: str, lag: float, failures: int, waiting: int) -> None:
        """A writer's state (trace, audit): `failures` is its running total."""
        self.write_lag.labels(name).set(lag)
        seen = self._failures_seen.get(name, 0)
        if failures > seen:
            self.write_failures.labels(name).inc(failures - seen)
        self._failures_seen[name] = failures
        self.write_backlog.labels(name).set(waiting)

    def exposition(self) -> bytes:
        """The text a scrape gets: every worker's values in multi-process mode (reads
        their files: call it off the event loop)."""
        if multiprocess():
            registry = CollectorRegistry()
            prom_mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


# --- readiness --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


CheckFn = Callable[[], Check | Awaitable[Check]]
CHECK_TIMEOUT = 5.0


class Readiness:
    """The checks /readyz runs, each by name. A later component (a Redis or S3 backend)
    adds its own with `register`."""

    def __init__(self) -> None:
        self.checks: dict[str, CheckFn] = {}

    def register(self, name: str, check: CheckFn) -> None:
        self.checks[name] = check

    async def run(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        results = await asyncio.gather(*(self._one(c) for c in self.checks.values()))
        detail = {n: {"ok": r.ok, "detail": r.detail}
                  for n, r in zip(self.checks, results, strict=True)}  # fmt: skip
        return all(r.ok for r in results), detail

    @staticmethod
    async def _one(check: CheckFn) -> Check:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, CHECK_TIMEOUT)
            assert isinstance(result, Check)
            return result
        except TimeoutError:
            return Check(False, f"no answer within {CHECK_TIMEOUT:.0f}s")
        except Exception as e:  # a check that fails is a check that says no
            return Check(False, f"{type(e).__name__}: {e}")


# --- the HTTP server ------------------------------------------------------------------------


MAX_HEAD = 8192


class MetricsServer:
    """/metrics, /healthz and /readyz over HTTP/1.1, one request per connection. Plain
    asyncio: Prometheus asks once every few seconds; the scrape's work (reading every
    worker's files) runs on a thread."""

    def __init__(self, metrics: Metrics, readiness: Readiness) -> None:
        self.metrics, self.readiness = metrics, readiness
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_HEAD)
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, path = _request_line(head)
            status, ctype, body = await self.answer(method, path)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ValueError, ConnectionError):  # fmt: skip
            status, ctype, body = 400, "text/plain", b"bad request\n"
        except Exception as e:  # never a traceback to a scraper; one to the log
            log.exception("modgate: metrics: %s", e)
            status, ctype, body = 500, "text/plain", b"internal error\n"
        try:
            writer.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s"
                % (status, _REASONS.get(status, b"OK"), ctype.encode(), len(body), body)
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"GET only\n"
        path = path.split("?", 1)[0]
        if path == "/metrics":
            return 200, CONTENT_TYPE, await asyncio.to_thread(self.metrics.exposition)
        if path == "/healthz":
            return 200, "application/json", b'{"status":"alive"}\n'
        if path == "/readyz":
            ready, checks = await self.readiness.run()
            body = json.dumps({"ready": ready, "checks": checks}, indent=1).encode() + b"\n"
            return (200 if ready else 503), "application/json", body
        return 404, "text/plain", b"not found: /metrics, /healthz, /readyz\n"


_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            500: b"Internal Server Error", 503: b"Service Unavailable"}  # fmt: skip


def _request_line(head: bytes) -> tuple[str, str]:
    line = head.split(b"\r\n", 1)[0].decode("ascii")
    method, path, version = line.split(" ")
    if not version.startswith("HTTP/1.") or not path.startswith("/"):
        raise ValueError(line)
    return method, path


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or PORT (loopback) -> (host, port); ValueError if not."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"{text!r}: port {number} out of range")
    return host, number


def mark_dead(pid: int) -> None:
    """A worker is gone: its live gauges leave the sums (workers.py calls it)."""
    if multiprocess():
        prom_mp.mark_process_dead(pid)  # type: ignore[no-untyped-call]
