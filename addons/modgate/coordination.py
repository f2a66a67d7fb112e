"""Single-flight across replicas: one Redis lock per cache key, so replicas sharing a
bucket (objectstore.py) fetch each answer from upstream once between them.

    acquire   a Lua script: if nobody holds the key, take the next fencing token
              (INCR, per key, never reused) and SET the lock to it with a TTL
    renew     every ttl/3 while held: PEXPIRE, only if the lock still holds our token
    valid()   before publishing: does the lock still hold our token? A holder that
              stalled past its TTL lost it to another replica, which publishes instead
    release   DEL, only if the lock still holds our token

A replica killed mid-download (kill -9) stops renewing; its lock expires after
`lock_ttl` and a waiting replica takes it (with a higher token).

When Redis cannot be reached the replica says so once (log, `status()`), falls back to
local single-flight (the flock KeyLocks its workers share), and tries Redis again
RETRY_AFTER seconds later: it recovers by itself and says that too. Fencing then rests
on what is published: verified bytes under a key naming them, the same whoever writes.

Each replica also says which rules it runs (`announce_rules`); one that runs other rules
than the rest is logged and reported by `status()` ("rules differ across replicas").

`SharedHeads` keeps, beside the locks, the newest checksum-database tree head any
replica verified, so a fork is detected across replicas (verify.Checker merges it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modgate.config import RedisSettings
from modgate.errors import ConfigError
from modgate.keylock import KeyLocks, Lease

log = logging.getLogger("modgate")

PREFIX = "modgate:"
RETRY_AFTER = 2.0  # seconds of local single-flight before Redis is tried again
POLL_FIRST, POLL_MAX = 0.005, 0.1  # seconds between attempts at a held lock, doubling
RULES_EVERY = 10.0  # seconds between a replica's reports of the rules it runs

# KEYS: lock, fence counter; ARGV: ttl ms. The new token, or 0 when the lock is held.
ACQUIRE = """
if redis.call('exists', KEYS[1]) == 1 then return 0 end
local token = redis.call('incr', KEYS[2])
redis.call('set', KEYS[1], token, 'px', ARGV[1])
return token
"""
# KEYS: lock; ARGV: token, ttl ms. 1 when renewed, 0 when the lock is someone else's.
RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def password(settings: RedisSettings, environ: dict[str, str] | None = None) -> str | None:
    """Redis's password: `password_file`, else MODGATE_REDIS_PASSWORD, else none."""
    if settings.password_file is not None:
        try:
            return settings.password_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"coordination.redis.password_file {settings.password_file}: cannot read it: {e}"
            ) from None
    return (os.environ if environ is None else environ).get("MODGATE_REDIS_PASSWORD") or None


def where(url: str) -> str:
    """The URL without user or password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


class RedisLease(Lease):
    def __init__(self, locks: ClusterLocks, name: str, token: int, waited: bool) -> None:
        self.locks, self.name, self.token, self.waited = locks, name, token, waited
        self.lost = False

    async def valid(self) -> bool:
        """False only when Redis says another holder has the lock now; True when it
        cannot be asked (see the module docstring)."""
        if self.lost:
            return False
        try:
            held = await self.locks.client().get(self.name)
        except Exception as e:
            self.locks.down(e)
            return True
        self.lost = held is None or int(held) != self.token
        return not self.lost


class ClusterLocks:
    """Locks (keylock.Locks) in Redis, with `fallback` (this machine's) while it is away."""

    def __init__(self, settings: RedisSettings, fallback: KeyLocks, password: str | None) -> None:
        self.settings, self.fallback, self._password = settings, fallback, password
        self.where = where(settings.url)
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._down_since = 0.0
        self._retry_at = 0.0
        self.reason = ""  # why Redis is not used now; "" when it is
        self._probe: asyncio.Task[None] | None = None
        self.fallbacks = self.takeovers = 0
        # Rules drift: each process says which rules it runs; all of them compared.
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.drift = ""  # "" while every live replica runs the same rules
        self._rules: str | None = None
        self._beating: asyncio.Task[None] | None = None
        self._beat_now = asyncio.Event()

    def __repr__(self) -> str:
        return f"ClusterLocks({self.where})"

    def client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._client = redis.asyncio.Redis.from_url(
                self.settings.url, password=self._password, socket_connect_timeout=1.0,
                socket_timeout=2.0, retry=Retry(NoBackoff(), 0), decode_responses=True,
            )  # fmt: skip
            self._loop = loop
        return self._client

    def announce_rules(self, digest: str) -> None:
        """The rules this process runs now (the SHA-256 of its rules file): told to the
        other replicas at once and every RULES_EVERY seconds, and compared with theirs
        (`drift`, in `status()`). A replica that missed an edit is seen within seconds."""
        self._rules = digest
        self._beat_now.set()
        if self._beating is None or self._beating.done():
            with contextlib.suppress(RuntimeError):  # no loop yet: `open` starts it
                self._beating = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            self._beat_now.clear()
            if self._rules is not None and not self.reason:
                try:
                    await self._compare_rules(self._rules)
                except Exception as e:
                    self.down(e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), RULES_EVERY)

    async def _compare_rules(self, mine: str) -> None:
        client = self.client()
        await client.set(f"{PREFIX}rules:{self.replica}", mine, ex=int(RULES_EVERY * 3))
        keys = [key async for key in client.scan_iter(f"{PREFIX}rules:*", count=1000)]
        running = [v for v in await client.mget(keys) if v] if keys else []
        others = sorted({v for v in running if v != mine})
        drift = ""
        if others:
            differ = sum(v != mine for v in running)
            drift = (
                f"rules differ across replicas: {differ} of {len(running)} processes run "
                f"rules {', '.join(o[:12] for o in others)}, this one {mine[:12]}"
            )
        if drift != self.drift:
            log.warning("modgate: %s", drift or "rules agree again across replicas")
        self.drift = drift

    async def open(self) -> None:
        """Connect now, at start: an unreachable Redis is said at once (and probed until it
        answers), and the first miss pays no connection."""
        try:
            await self.client().ping()
        except Exception as e:
            self.down(e)
        if self._rules is not None and (self._beating is None or self._beating.done()):
            self._beating = asyncio.get_running_loop().create_task(self._beat())

    def status(self) -> str:
        """ "ok", or why single-flight is local only (for /readyz)."""
        if not self.reason:
            return f"ok; {self.drift}" if self.drift else "ok"
        since = time.strftime("%H:%M:%S", time.localtime(self._down_since))
        return f"degraded since {since}: {self.reason}; single-flight is local to this replica"

    def down(self, e: BaseException) -> None:
        reason = f"redis at {self.where} unreachable: {' '.join(str(e).split())[:200]}"
        if not self.reason:
            self._down_since = time.time()
            log.warning("modgate: %s; falling back to local single-flight", reason)
        self.reason = reason
        self._retry_at = time.monotonic() + RETRY_AFTER
        if self._probe is None or self._probe.done():
            with contextlib.suppress(RuntimeError):  # no loop: the next lock tries again
                self._probe = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        """Ask Redis every RETRY_AFTER seconds until it answers: a replica that takes no
        lock for a while (all hits) still sees it come back, and says so."""
        while self.reason:
            await asyncio.sleep(RETRY_AFTER)
            try:
                await self.client().ping()
            except Exception as e:
                self.reason = f"redis at {self.where} unreachable: {' '.join(str(e).split())[:200]}"
                continue
            self._retry_at = 0.0
            self._up()

    def _up(self) -> None:
        if self.reason:
            log.warning(
                "modgate: redis at %s is reachable again after %.0fs: cluster single-flight "
                "resumed", self.where, time.time() - self._down_since,
            )  # fmt: skip
            self.reason = ""

    @contextlib.asynccontextmanager
    async def held(self, key: str) -> AsyncIterator[object]:
        """Hold `key`'s cluster lock for the block; yields its RedisLease. While Redis is
        away, this machine's lock instead (yields what KeyLocks yields)."""
        lease = None
        if time.monotonic() >= self._retry_at:
            try:
                lease = await self._acquire(key)
            except Exception as e:  # redis-py's errors, OSError, timeouts: all "away"
                self.down(e)
        if lease is None:
            self.fallbacks += 1
            async with self.fallback.held(key) as waited:
                yield waited
            return
        renewing = asyncio.ensure_future(self._renew(lease))
        try:
            yield lease
        finally:
            renewing.cancel()
            with contextlib.suppress(Exception):
                await self.client().eval(RELEASE, 1, lease.name, str(lease.token))

    async def _acquire(self, key: str) -> RedisLease:
        digest = hashlib.sha256(key.encode()).hexdigest()
        name, fence = f"{PREFIX}lock:{digest}", f"{PREFIX}fence:{digest}"
        ttl_ms = str(int(self.settings.lock_ttl * 1000))
        wait, waited = POLL_FIRST, False
        while True:
            token = int(await self.client().eval(ACQUIRE, 2, name, fence, ttl_ms))
            self._up()
            if token:
                if waited and token > 1:
                    self.takeovers += 1
                return RedisLease(self, name, token, waited)
            waited = True
            await asyncio.sleep(wait)
            wait = min(wait * 2, POLL_MAX)

    async def _renew(self, lease: RedisLease) -> None:
        ttl_ms = str(int(self.settings.lock_ttl * 1000))
        while True:
            await asyncio.sleep(self.settings.lock_ttl / 3)
            try:
                renewed = await self.client().eval(RENEW, 1, lease.name, str(lease.token), ttl_ms)
            except Exception as e:
                self.down(e)
                continue
            if not renewed:
                lease.lost = True
                log.warning(
                    "modgate: the cluster lock %s (token %d) expired while held: another "
                    "replica may fetch it too", lease.name, lease.token,
                )  # fmt: skip
                return

    async def close(self) -> None:
        for task in (self._probe, self._beating):
            if task is not None:
                task.cancel()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()


# KEYS: the database's hash; ARGV: size, note. Kept only when larger than the one there.
PUT_HEAD = """
local size = tonumber(redis.call('hget', KEYS[1], 'size') or '-1')
if tonumber(ARGV[1]) > size then
  redis.call('hset', KEYS[1], 'size', ARGV[1], 'note', ARGV[2])
  return 1
end
return 0
"""


class SharedHeads:
    """verify.Heads in Redis, beside the locks: the newest tree head each checksum
    database has shown any replica. Skipped (each replica keeps its own) while Redis is
    away: a head is only ever merged after its signature and consistency are checked."""

    def __init__(self, locks: ClusterLocks) -> None:
        self.locks = locks

    async def get(self, name: str) -> bytes:
        if self.locks.reason:
            return b""
        try:
            note = await self.locks.client().hget(f"{PREFIX}sumdb:{name}", "note")
        except Exception as e:
            self.locks.down(e)
            return b""
        return note.encode() if isinstance(note, str) else b""

    async def put(self, name: str, note: bytes, size: int) -> None:
        if self.locks.reason:
            return
        try:
            await self.locks.client().eval(
                PUT_HEAD, 1, f"{PREFIX}sumdb:{name}", str(size), note.decode()
            )
        except Exception as e:
            self.locks.down(e)


def open_locks(settings: RedisSettings, lock_dir: Path) -> ClusterLocks:
    return ClusterLocks(settings, KeyLocks(lock_dir), password(settings))


def status(locks: object, tier: object) -> dict[str, str]:
    """What a replica's readiness check reports of its shared parts: "ok", or why it is
    degraded (single-flight local only; object store failing). Parts not configured
    are left out."""
    out = {}
    if isinstance(locks, ClusterLocks):
        out["coordination"] = locks.status()
    tier_status = getattr(tier, "status", None)
    if callable(tier_status):
        out["object_store"] = str(tier_status())
    return out
