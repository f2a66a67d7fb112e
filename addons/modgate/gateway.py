"""Answer one proxy request from the store or the upstream chain, with no mitmproxy in
sight: the addons translate flows into `Gateway.serve` calls and its `Served` back.

    fresh entry          -> served from the store (hit / negative)
    stale entry or none  -> one fetch per key at a time (single-flight), checked by the
                            Validator (hashes, checksum database), stored, served; a
                            small answer is served once checked, while it is stored
    fetch failed         -> the stale entry if there is one, else UpstreamError (or
                            CacheError: no room on disk)
    check failed         -> IntegrityError: nothing stored, nothing served
    large zip missing    -> served while it downloads (`Served.growing`): the reader
                            holds back its end until the checks pass (growing.py); if
                            they fail, its clients were cut short with no reason to
                            show, so the refusal is kept `negative_ttl` seconds and
                            answered to the next requests (go prints it)

"GOPROXY protocol": a canonical version's .info/.mod/.zip never change, so they are
kept forever; `list`, `@latest` and version queries change, so they live `ttl`
seconds; 404/410 answers live `negative_ttl` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from modgate.config import CacheSettings, Chain
from modgate.errors import CacheError, ModgateError, ObjectStoreError, UpstreamError
from modgate.goproxy import Kind, ModRequest
from modgate.growing import GrowingFile
from modgate.keylock import Lease, Locks
from modgate.store import MEMORY_MAX, Body, Entry, Hit, Lookup, Miss, Stale, Store, Tier
from modgate.upstream import Attempt, Fetched, Fetcher

log = logging.getLogger(__name__)


VERIFIED = "verified"  # a Verdict's status when a pin or the checksum database vouched


class Verdict(Protocol):
    @property
    def h1(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def source(self) -> str: ...


class Validator(Protocol):
    async def validate(self, req: ModRequest, body: Path) -> Verdict | None:
        """Raise (IntegrityError) unless `body`, a 200 answer to `req`, may be stored."""
        ...

    def prefetch(self, req: ModRequest) -> None:
        """Start fetching what checking `req` will need while its body downloads."""
        ...

    async def idle(self) -> None:
        """Wait for work a check left running after its answer (tiles kept offline)."""
        ...


class Outcome(enum.Enum):
    HIT = "hit"  # fresh from the store
    NEGATIVE = "negative"  # a stored 404/410, still fresh
    MISS = "miss"  # not stored: fetched now
    REFRESHED = "refreshed"  # stored but past its TTL: fetched again
    STALE = "stale"  # past its TTL and the upstream failed: served anyway


Landed = asyncio.Future[tuple[Entry, tuple[Attempt, ...]]]
Checked = asyncio.Future[tuple[Entry, tuple[Attempt, ...], bytes]]


@dataclass(frozen=True)
class Served:
    """What to answer. The receiver closes `body`.

    A large zip served while it downloads has `growing` set: `body` is a handle on the
    partial file, `entry` holds only what is known up front (no hashes yet), and
    `landed` completes with the stored entry, or with the error that stopped it."""

    entry: Entry
    body: Body
    outcome: Outcome
    attempts: tuple[Attempt, ...] = ()
    stale_reason: str = ""
    growing: GrowingFile | None = None
    landed: Landed | None = None


@dataclass
class _Flight:
    """One fetch in progress, shared by every request for its key."""

    task: Landed = field(init=False)
    # A small answer that passed its checks, ready before it is stored: the requests
    # waiting for it need not wait for the copy into the store too.
    checked: Checked = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    growing: GrowingFile | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def body_started(self, growing: GrowingFile) -> None:
        self.growing = growing
        self.started.set()


def cache_key(chain: Chain, req: ModRequest) -> str:
    """Where `chain`'s own answers are kept: 404/410 (a private mirror's 404 must not hide
    a module the public proxy has), mutable answers (`list`, `@latest`, queries: each
    upstream has its own view of them), and answers stored before artifact keys."""
    return f"v1 {chain} {req.path}"


def artifact_key(req: ModRequest) -> str | None:
    """Where an immutable 200 answer is kept, whichever chain served it: a canonical
    version's .info, a .mod or .zip whose hash was verified (checksum database, pin), a
    checksum database's lookups and tiles (proven in its log) ("GOPROXY protocol",
    "Checksum database": they never change). Adding a mirror or changing a route keeps
    them."""
    return f"v2 {req.path}" if req.immutable else None


class Gateway:
    def __init__(
        self,
        store: Store,
        fetcher: Fetcher,
        spool: Path,
        settings: CacheSettings,
        clock: Callable[[], float] = time.time,
        locks: Locks | None = None,
        tier: Tier | None = None,
    ) -> None:
        """`locks`: where processes sharing `store` (or `tier`) take turns fetching a key
        (keylock.py, coordination.py); None when this is the store's only user. `tier`:
        a store shared by replicas behind the local one (objectstore.py)."""
        self.store, self.fetcher, self.spool = store, fetcher, spool
        self.locks, self.tier = locks, tier
        self.settings, self.clock = settings, clock
        self.validator: Validator | None = None
        self._flights: dict[str, _Flight] = {}
        self._refused: dict[str, tuple[float, ModgateError]] = {}  # key: (until, why)
        # Told of each request that waits for another's fetch: "flight" (this process),
        # "process" (another worker's, keylock.py): metrics.
        self.on_wait: Callable[[str], None] | None = None
        spool.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def serve(self, chain: Chain, req: ModRequest) -> Served:
        key = cache_key(chain, req)
        looked = self._lookup(key, req)
        if isinstance(looked, Hit):
            body = self.store.open(looked.entry)
            if body is not None:
                hit = Outcome.HIT if looked.entry.status == 200 else Outcome.NEGATIVE
                return Served(looked.entry, body, hit)
            log.warning("cached %s was damaged or missing on disk: fetching it again", req)
            looked = Miss()
        if refused := self._refused.get(key):
            if self.clock() < refused[0]:
                raise refused[1]
            del self._refused[key]
        flight = self._flight(key, chain, req)
        fetched = Outcome.REFRESHED if isinstance(looked, Stale) else Outcome.MISS
        try:
            if req.kind is Kind.ZIP and (streamed := await self._streamed(key, req, flight)):
                return streamed
            # Not cancelled with this request: a client that hangs up does not waste the
            # fetch for the others.
            await asyncio.wait((flight.task, flight.checked), return_when=asyncio.FIRST_COMPLETED)
            if flight.checked.done() and not flight.checked.cancelled():
                entry, attempts, data = flight.checked.result()
                return Served(entry, Body(data=data), fetched, attempts)
            entry, attempts = flight.task.result()
        except (UpstreamError, CacheError) as e:  # no answer, or no room on disk for it
            if isinstance(looked, Stale) and (body := self.store.open(looked.entry)):
                log.warning("serving stale %s: %s", req, e)
                return Served(looked.entry, body, Outcome.STALE, stale_reason=str(e))
            raise
        body = self.store.open(entry)
        if body is None:
            raise CacheError(f"{req}: stored answer vanished from the cache before it was read")
        return Served(entry, body, fetched, attempts)

    def _lookup(self, key: str, req: ModRequest) -> Lookup:
        """The stored answer: an immutable one under its artifact key, else the chain's own
        under `key` (see cache_key)."""
        now = self.clock()
        if (shared := artifact_key(req)) is not None:
            looked = self.store.lookup(shared, now)
            if isinstance(looked, Hit):
                return looked
        return self.store.lookup(key, now)

    def has(self, chain: Chain, req: ModRequest) -> bool:
        """Whether `req` is stored and fresh, or refused for now: nothing to fetch."""
        return self._has(cache_key(chain, req), req)

    def _has(self, key: str, req: ModRequest) -> bool:
        refused = self._refused.get(key)
        if refused is not None and self.clock() < refused[0]:
            return True
        return isinstance(self._lookup(key, req), Hit)

    async def prefetch(self, chain: Chain, req: ModRequest) -> bool:
        """Fetch and store `req` for a client expected to ask for it soon, unless it is
        stored and fresh, or refused. Nobody waits for this answer: a failure is left for
        the client's own request to meet (and report). True when it fetched."""
        key = cache_key(chain, req)
        if self._has(key, req):
            return False
        flight = self._flight(key, chain, req)
        await asyncio.wait((flight.task,))
        return True

    def _flight(self, key: str, chain: Chain, req: ModRequest) -> _Flight:
        """Single-flight: concurrent requests for one key share one upstream fetch."""
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = _Flight()
            flight.task = asyncio.ensure_future(self._one_process(key, chain, req, flight))
            flight.task.add_done_callback(lambda f: self._landed(key, f))
        elif self.on_wait is not None:
            self.on_wait("flight")
        return flight

    def _landed(self, key: str, task: Landed) -> None:
        flight = self._flights.pop(key, None)
        if flight is not None and not flight.checked.done():
            flight.checked.cancel()  # it failed, or was too large to hold: see the task
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every waiter has gone

    async def _streamed(self, key: str, req: ModRequest, flight: _Flight) -> Served | None:
        """The zip as it downloads, once its body starts and when it is large enough to be
        worth it (the fetcher decides); None when it landed first or never grew."""
        started = asyncio.ensure_future(flight.started.wait())
        try:
            await asyncio.wait(
                (flight.task, flight.checked, started), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            started.cancel()
        growing = flight.growing
        if growing is None or flight.task.done() or growing.error is not None:
            return None
        try:
            file = growing.open()  # before the spool file can be removed
        except OSError:
            return None
        entry = Entry(
            key=key, status=200, content_type=req.content_type, size=growing.size, sha256="",
            stored_at=self.clock(), expires_at=None, upstream=growing.source,
        )  # fmt: skip
        return Served(entry, Body(file=file), Outcome.MISS, growing=growing, landed=flight.task)

    async def _one_process(
        self, key: str, chain: Chain, req: ModRequest, flight: _Flight
    ) -> tuple[Entry, tuple[Attempt, ...]]:
        """Single-flight across the processes sharing the store: fetch once this key's
        lock is ours, unless another process stored the answer meanwhile."""
        if self.locks is None:
            return await self._fill(key, chain, req, flight, None)
        async with self.locks.held(key) as held:
            # A flock yields whether it waited; a cluster lock its lease, which knows.
            lease = held if isinstance(held, Lease) else None
            waited = lease.waited if lease is not None else held is True
            if waited and self.on_wait is not None:
                self.on_wait("process" if lease is None else "cluster")
            if isinstance(looked := self._lookup(key, req), Hit):
                return looked.entry, ()
            return await self._fill(key, chain, req, flight, lease)

    async def _fill(
        self, key: str, chain: Chain, req: ModRequest, flight: _Flight, lease: Lease | None
    ) -> tuple[Entry, tuple[Attempt, ...]]:
        """The shared tier's answer, checked again and kept locally; else the upstream's,
        published to the tier. When both fail, the error says so of both."""
        tier_error = None
        if self.tier is not None:
            try:
                if (entry := await self._from_tier(key, req)) is not None:
                    return entry, ()
            except ObjectStoreError as e:
                tier_error = e
        try:
            return await self._fetch_and_store(key, chain, req, flight, lease)
        except UpstreamError as e:
            if tier_error is not None:
                raise UpstreamError(f"{e}; and {tier_error}") from e
            raise

    async def _from_tier(self, key: str, req: ModRequest) -> Entry | None:
        """A fresh answer from the shared tier, stored locally; None when it has none.
        A .mod or .zip is checked again as an upstream's would be (checksum database,
        pins), not trusted for the hash the bucket holds beside it: whoever can write
        the bucket can write both."""
        assert self.tier is not None
        for k in filter(None, (artifact_key(req), key)):
            got = await self.tier.get(k, self.spool)
            if got is None:
                continue
            entry, body = got
            try:
                if not entry.fresh(self.clock()):
                    continue
                if entry.status == 200 and self.validator is not None:
                    # Whatever the entry says of itself: a blank h1 must not skip the check
                    # (a lookup is checked too: its signature and proof, as an upstream's).
                    verdict = await self.validator.validate(req, body)
                    if req.kind in (Kind.ZIP, Kind.MOD) and (
                        verdict is None or verdict.h1 != entry.h1
                    ):
                        raise ModgateError(f"its hash is not {entry.h1 or 'recorded'}")
                await asyncio.to_thread(self.store.put, entry, body)
                return entry
            except (ModgateError, ValueError) as e:
                if isinstance(e, UpstreamError | CacheError):
                    raise  # could not check it now: not a verdict on the object
                log.error("modgate: the object store's %s is refused (%s): fetching it", req, e)
            finally:
                body.unlink(missing_ok=True)
        return None

    async def _publish(self, entry: Entry, body: Path, lease: Lease | None) -> None:
        """Put a stored answer in the shared tier, unless this replica's lock was taken
        over meanwhile (fencing: the new holder publishes). A tier that fails is logged;
        the answer stays served from the local tier."""
        assert self.tier is not None
        if lease is not None and not await lease.valid():
            log.warning(
                "modgate: lost the cluster lock of %s (token %d superseded): its new holder "
                "publishes it, not this replica", entry.key, lease.token,
            )  # fmt: skip
            return
        try:
            await self.tier.put(entry, body)
        except ObjectStoreError as e:
            log.error("modgate: %s; kept in this replica's cache only", e)

    async def _fetch_and_store(
        self, key: str, chain: Chain, req: ModRequest, flight: _Flight, lease: Lease | None = None
    ) -> tuple[Entry, tuple[Attempt, ...]]:
        if self.validator is not None:
            self.validator.prefetch(req)  # overlaps the checksum lookup with the download
        fetched = await self.fetcher.fetch(chain, req, self.spool, flight.body_started)
        growing = flight.growing if flight.growing and flight.growing.path == fetched.body else None
        try:
            entry = await self._checked(key, req, fetched)
            if growing is not None:
                growing.settle(entry)  # readers finish now, not after the copy
            elif fetched.size <= MEMORY_MAX:
                data = fetched.body.read_bytes()
                if hashlib.sha256(data).hexdigest() == fetched.sha256:  # as it was checked
                    flight.checked.set_result((entry, fetched.attempts, data))
            await asyncio.to_thread(self.store.put, entry, fetched.body)
            if self.tier is not None:
                await self._publish(entry, fetched.body, lease)
        except BaseException as e:
            if growing is not None and growing.entry is None:
                # A check failed: the same bytes would fail again. (A download that broke
                # off, or found no room on disk, is fetched afresh by the next request.)
                check = e if isinstance(e, ModgateError) else None
                if isinstance(check, UpstreamError | CacheError):
                    check = None
                growing.fail(str(e) or type(e).__name__, refused=check is not None)
                if check is not None:
                    self._refused[key] = (self.clock() + self.settings.negative_ttl, check)
            raise
        finally:
            fetched.body.unlink(missing_ok=True)
        return entry, fetched.attempts

    async def _checked(self, key: str, req: ModRequest, fetched: Fetched) -> Entry:
        """The entry to store for `fetched`, once the Validator passed it."""
        verdict = None
        if fetched.status == 200 and self.validator is not None:
            verdict = await self.validator.validate(req, fetched.body)
        now = self.clock()
        # A .mod or .zip nothing vouches for (a private module's first-seen hash) stays
        # with its chain: another upstream's copy is fetched and held to the ledger, and a
        # mismatch refused, rather than one chain's answer served for another's.
        vouched = req.kind not in (Kind.MOD, Kind.ZIP) or (verdict and verdict.status == VERIFIED)
        shared = artifact_key(req) if fetched.status == 200 and vouched else None
        return Entry(
            key=shared or key,
            status=fetched.status,
            content_type=req.content_type if fetched.status == 200 else "text/plain; charset=utf-8",
            size=fetched.size,
            sha256=fetched.sha256,
            stored_at=now,
            expires_at=self._expiry(req, fetched.status, now),
            upstream=fetched.upstream,
            h1=verdict.h1 if verdict else "",
            verdict=verdict.status if verdict else "",
            checked_by=verdict.source if verdict else "",
        )

    async def drain(self, timeout: float) -> None:
        """Wait (at most `timeout` seconds) for fetches in flight to be stored: answers
        already sent while they were being stored would otherwise be lost on shutdown."""
        if self.validator is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.validator.idle(), timeout)
        tasks = [flight.task for flight in self._flights.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def fetch_body(self, chain: Chain, req: ModRequest) -> tuple[int, bytes]:
        """Serve `req` and read the whole body: for small answers modgate itself needs
        (checksum-database lookups and tiles)."""
        served = await self.serve(chain, req)
        try:
            return served.entry.status, served.body.read()
        finally:
            served.body.close()

    def forget(self, chain: Chain, req: ModRequest) -> None:
        """Drop a stored answer found bad, and the one being stored now if it is in flight
        (its waiters were answered before it was stored)."""
        key = cache_key(chain, req)
        keys = [key, *filter(None, [artifact_key(req)])]

        def delete(*_: object) -> None:
            for k in keys:
                self.store.delete(k)

        delete()
        if (flight := self._flights.get(key)) is not None:
            flight.task.add_done_callback(delete)

    def _expiry(self, req: ModRequest, status: int, now: float) -> float | None:
        if status != 200:
            return now + self.settings.negative_ttl
        return None if req.immutable else now + self.settings.ttl
