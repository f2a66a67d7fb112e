"""modgate.keylock: one holder per key across processes, waiters that read the store
again, and a holder that dies releasing its key."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modgate.config import CacheSettings, Chain, Hop
from modgate.gateway import Gateway
from modgate.goproxy import parse_request
from modgate.keylock import KeyLocks
from modgate.store import DiskStore
from modgate.upstream import HttpFetcher
from world.modules import ModuleVersion, World
from world.upstream import Upstream

MODULE = "example.modgate.test/m"


def test_a_key_has_one_holder_at_a_time_and_others_wait_for_it(tmp_path: Path) -> None:
    locks = KeyLocks(tmp_path / "locks")
    events: list[str] = []

    async def hold(name: str, key: str, seconds: float) -> bool:
        async with locks.held(key) as waited:
            events.append(f"{name} in")
            await asyncio.sleep(seconds)
            events.append(f"{name} out")
        return waited

    async def main() -> list[bool]:
        first = asyncio.ensure_future(hold("a", "k", 0.2))
        await asyncio.sleep(0.05)
        return list(await asyncio.gather(first, hold("b", "k", 0.0), hold("c", "other", 0.0)))

    assert asyncio.run(main()) == [False, True, False]
    assert events.index("b in") > events.index("a out")  # b waited for a
    assert events.index("c in") < events.index("a out")  # another key did not
    assert list((tmp_path / "locks").iterdir()) == []  # removed by each last holder


def test_a_holder_that_dies_releases_its_key(tmp_path: Path) -> None:
    locks = KeyLocks(tmp_path / "locks")
    path = locks.path("k")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"

        async def take() -> tuple[bool, float]:
            began = time.monotonic()
            async with locks.held("k") as waited:
                return waited, time.monotonic() - began

        async def main() -> tuple[bool, float]:
            taking = asyncio.ensure_future(take())
            await asyncio.sleep(0.3)
            assert not taking.done()  # the live holder keeps it
            os.kill(holder.pid, signal.SIGKILL)  # its lock goes with it, in the kernel
            return await asyncio.wait_for(taking, 10)

        waited, took = asyncio.run(main())
        assert waited and took >= 0.3
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with World([ModuleVersion(MODULE, "v1.0.0")]) as w, Upstream(w) as up:
        yield up


def test_gateways_sharing_a_store_fetch_a_key_once(upstream: Upstream, tmp_path: Path) -> None:
    """Two gateways, as two worker processes have: their own flights, one store, one
    lock directory. (flock locks open files, not processes: two descriptors of one
    process exclude each other as two processes do.)"""
    upstream.fault("*", delay=0.3)
    path = f"{MODULE}/@v/v1.0.0.zip"

    async def main() -> list[str]:
        fetcher = HttpFetcher(timeout=5)
        gateways, stores = [], []
        for _ in range(3):
            store = DiskStore(tmp_path / "cache", 1 << 30)
            stores.append(store)
            gateways.append(Gateway(
                store, fetcher, tmp_path / "spool", CacheSettings(ttl=60, negative_ttl=10),
                locks=KeyLocks(tmp_path / "locks"),
            ))  # fmt: skip
        chain = Chain((Hop(upstream.url),))
        try:
            served = await asyncio.gather(
                *(g.serve(chain, parse_request(path)) for g in gateways for _ in range(4))
            )
            bodies = []
            for s in served:
                assert s.body.file is not None or s.body.data is not None
                data = s.body.data if s.body.data is not None else s.body.file.read()  # type: ignore[union-attr]
                bodies.append(hashlib_hex(data))
                s.body.close()
            for g in gateways:
                await g.drain(timeout=5)
            return bodies
        finally:
            await fetcher.close()
            for store in stores:
                store.close()

    bodies = asyncio.run(main())
    assert len(set(bodies)) == 1 and len(bodies) == 12
    assert upstream.count(f"/{path}") == 1


def hashlib_hex(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
