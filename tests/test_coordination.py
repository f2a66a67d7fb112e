"""modgate.coordination against a real redis-server on loopback: one holder per key across
"replicas", fencing tokens, takeover after a holder dies, fallback while Redis is away
and recovery once it is back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from modgate.config import RedisSettings
from modgate.coordination import ClusterLocks, RedisLease, password, status, where
from modgate.keylock import KeyLocks
from world.servers import RedisServer

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


def replica(server: RedisServer, tmp_path: Path, name: str, ttl: float = 3.0) -> ClusterLocks:
    """One replica's locks: its own lock directory (another machine), one Redis."""
    return ClusterLocks(RedisSettings(server.url, lock_ttl=ttl), KeyLocks(tmp_path / name), None)


def test_one_holder_per_key_across_replicas_with_rising_tokens(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    replicas = [replica(redis_server, tmp_path, f"r{i}") for i in range(3)]
    inside, most, tokens = 0, 0, []

    async def take(locks: ClusterLocks) -> None:
        nonlocal inside, most
        async with locks.held("v2 example.modgate.test/m/@v/v1.0.0.zip") as lease:
            assert isinstance(lease, RedisLease) and await lease.valid()
            tokens.append(lease.token)
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.02)
            inside -= 1

    async def go() -> None:
        await asyncio.gather(*(take(replicas[i % 3]) for i in range(12)))
        for r in replicas:
            await r.close()

    asyncio.run(go())
    assert most == 1
    assert sorted(tokens) == tokens == list(range(1, 13))  # granted in order, never reused
    assert all(r.status() == "ok" for r in replicas)


def test_a_dead_holders_lock_expires_and_its_lease_can_no_longer_publish(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    a, b = replica(redis_server, tmp_path, "a", ttl=1.0), replica(redis_server, tmp_path, "b", 1.0)

    async def go() -> tuple[RedisLease, RedisLease, float]:
        # a takes the lock and "dies": its renewal stops (as with kill -9), its block never ends.
        held = a.held("k")
        lease_a = await held.__aenter__()
        assert isinstance(lease_a, RedisLease)
        for task in asyncio.all_tasks():
            if "_renew" in repr(task.get_coro()):
                task.cancel()
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with b.held("k") as lease_b:
            assert isinstance(lease_b, RedisLease)
            took = loop.time() - started
            return lease_a, lease_b, took

    lease_a, lease_b, took = asyncio.run(go())
    assert 0.5 < took < 3.0  # after the TTL, not before
    assert lease_b.token > lease_a.token

    async def check() -> bool:
        return await lease_a.valid()

    assert not asyncio.run(check())  # fenced: the stalled holder must not publish
    assert b.takeovers == 1


def test_a_held_lock_is_renewed_past_its_ttl(redis_server: RedisServer, tmp_path: Path) -> None:
    a, b = replica(redis_server, tmp_path, "a", ttl=1.0), replica(redis_server, tmp_path, "b", 1.0)
    order: list[str] = []

    async def slow_holder() -> None:
        async with a.held("k") as lease:
            order.append("a in")
            await asyncio.sleep(2.5)  # a long download: 2.5 TTLs
            assert isinstance(lease, RedisLease) and await lease.valid()
            order.append("a out")

    async def waiter() -> None:
        await asyncio.sleep(0.1)
        async with b.held("k"):
            order.append("b in")

    async def go() -> None:
        await asyncio.gather(slow_holder(), waiter())

    asyncio.run(go())
    assert order == ["a in", "a out", "b in"]


def test_redis_away_falls_back_to_local_single_flight_says_so_and_recovers(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    locks = replica(redis_server, tmp_path, "r")

    async def once() -> object:
        async with locks.held("k") as held:
            return held

    caplog.set_level(logging.WARNING, "modgate")
    assert isinstance(asyncio.run(once()), RedisLease)
    redis_server.stop()
    seen: list[str] = []

    async def away_and_back() -> None:  # one event loop, as in modgate
        async with locks.held("k") as held:
            assert held is False  # this machine's flock: yields whether it waited
        seen.append(locks.status())
        redis_server.start()
        for _ in range(60):  # no lock is taken meanwhile: the probe finds it back
            if locks.status() == "ok":
                break
            await asyncio.sleep(0.1)
        await locks.close()

    asyncio.run(away_and_back())
    assert seen[0].startswith("degraded since") and where(redis_server.url) in seen[0]
    assert "single-flight is local to this replica" in seen[0]
    assert "falling back to local single-flight" in caplog.text
    assert locks.status() == "ok" and status(locks, None) == {"coordination": "ok"}
    assert "reachable again" in caplog.text
    assert isinstance(asyncio.run(once()), RedisLease)
    assert locks.fallbacks == 1


def test_two_fallback_holders_on_one_machine_still_take_turns(tmp_path: Path) -> None:
    from world.gate import free_port

    settings = RedisSettings(f"redis://127.0.0.1:{free_port()}/0")
    a = ClusterLocks(settings, KeyLocks(tmp_path / "locks"), None)
    b = ClusterLocks(settings, KeyLocks(tmp_path / "locks"), None)  # another worker
    inside, most = 0, 0

    async def take(locks: ClusterLocks) -> None:
        nonlocal inside, most
        async with locks.held("k"):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.02)
            inside -= 1

    async def go() -> None:
        await asyncio.gather(*(take((a, b)[i % 2]) for i in range(6)))

    asyncio.run(go())
    assert most == 1 and a.status().startswith("degraded")


def test_the_password_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    s = RedisSettings("redis://r.test:6379/0")
    assert password(s, {}) is None
    assert password(s, {"MODGATE_REDIS_PASSWORD": "pw"}) == "pw"
    file = tmp_path / "pw"
    file.write_text("fromfile\n")
    assert password(RedisSettings(s.url, password_file=file), {}) == "fromfile"
    assert where("redis://user:secret@r.test:6380/2") == "redis://r.test:6380/2"


def test_replicas_running_different_rules_are_told_and_told_again_when_they_agree(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = replica(redis_server, tmp_path, "a"), replica(redis_server, tmp_path, "b")
    b.replica = "host-b:1"  # another machine (in this test, the same process)
    seen: list[tuple[str, str]] = []

    async def settle(*told: tuple[ClusterLocks, str]) -> None:
        for locks, digest in told:
            locks.announce_rules(digest)
            await asyncio.sleep(0.3)

    async def go() -> None:
        await settle((a, "a" * 64), (b, "b" * 64), (a, "a" * 64))
        seen.append((a.status(), b.status()))
        await settle((b, "a" * 64), (a, "a" * 64))
        seen.append((a.status(), b.status()))
        await a.close()
        await b.close()

    caplog.set_level(logging.WARNING, "modgate")
    asyncio.run(go())
    (a1, b1), (a2, b2) = seen
    assert (
        a1
        == "ok; rules differ across replicas: 1 of 2 processes run rules bbbbbbbbbbbb, this one aaaaaaaaaaaa"
    )
    assert b1.startswith("ok; rules differ across replicas: 1 of 2")
    assert (a2, b2) == ("ok", "ok")
    assert "rules agree again across replicas" in caplog.text
