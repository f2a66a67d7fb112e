"""modgate.upstream: the HTTP fetcher against real upstreams on 127.0.0.1: redirects it
follows and those it refuses, and what it does when the spool disk fails."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from modgate.config import CacheSettings, Chain, Hop
from modgate.errors import CacheError, UpstreamError
from modgate.gateway import Gateway, Outcome, Served
from modgate.goproxy import parse_request
from modgate.store import DiskStore
from modgate.upstream import MAX_REDIRECTS, VIA, Fetched, HttpFetcher, RedirectCheck, came_back
from world.modules import ModuleVersion, World
from world.upstream import Upstream

MODULE = "example.modgate.test/m"
MOD = f"{MODULE}/@v/v1.0.0.mod"


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with World([ModuleVersion(MODULE, "v1.0.0")]) as w:
        yield w


@pytest.fixture
def first(world: World) -> Iterator[Upstream]:
    with Upstream(world) as up:
        yield up


@pytest.fixture
def second(world: World) -> Iterator[Upstream]:
    with Upstream(world) as up:
        yield up


async def _anywhere(url: URL) -> str:
    return ""


def fetch(up: Upstream, path: str, spool: Path, check: RedirectCheck = _anywhere) -> Fetched:
    async def go() -> Fetched:
        fetcher = HttpFetcher(timeout=5, redirects=check)
        try:
            return await fetcher.fetch(Chain((Hop(up.url),)), parse_request(path), spool)
        finally:
            await fetcher.close()

    spool.mkdir(exist_ok=True)
    return asyncio.run(go())


def refusing(host: str, why: str) -> Callable[[URL], Awaitable[str]]:
    async def check(url: URL) -> str:
        return why if url.host == host else ""

    return check


def test_a_redirect_to_an_allowed_host_is_followed(
    world: World, first: Upstream, second: Upstream, tmp_path: Path
) -> None:
    first.fault(f"/{MOD}", redirect=f"{second.url}{{path}}")
    fetched = fetch(first, MOD, tmp_path / "spool")
    assert fetched.status == 200
    assert fetched.body.read_bytes() == world.get(MODULE, "v1.0.0").gomod
    assert (first.count(f"/{MOD}"), second.count(f"/{MOD}")) == (1, 1)


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("http://denied.example:81{path}", "the rules say no"),
        ("file:///etc/passwd", "not an http(s) URL"),
        ("ftp://mirror.example/x", "not an http(s) URL"),
    ],
)
def test_a_refused_redirect_is_an_upstream_error_naming_the_hop_and_location(
    first: Upstream, tmp_path: Path, location: str, why: str
) -> None:
    first.fault("*", redirect=location)
    started = time.monotonic()
    with pytest.raises(UpstreamError) as refused:
        fetch(first, MOD, tmp_path / "spool", refusing("denied.example", "the rules say no"))
    assert time.monotonic() - started < 3
    message = str(refused.value)
    assert f"no upstream answered: {first.url}: redirect to " in message
    assert location.replace("{path}", f"/{MOD}") in message
    assert why in message
    assert list((tmp_path / "spool").iterdir()) == []


def test_a_redirect_loop_stops_after_as_many_redirects_as_go_follows(
    first: Upstream, tmp_path: Path
) -> None:
    first.fault("*", redirect=f"{first.url}{{path}}")
    started = time.monotonic()
    with pytest.raises(UpstreamError, match=f"stopped after {MAX_REDIRECTS} redirects"):
        fetch(first, MOD, tmp_path / "spool")
    assert time.monotonic() - started < 3
    assert first.count(f"/{MOD}") == MAX_REDIRECTS + 1


def spool_writes(monkeypatch: pytest.MonkeyPatch, most: int, fail_after: int | None) -> list[int]:
    """Make writes to spool files take at most `most` bytes each, and fail with ENOSPC
    once `fail_after` bytes are written (a disk filling up); other writes are untouched.
    Returns the sizes of the writes made."""
    real, made = os.write, []

    def write(fd: int, data: Any) -> int:
        if "/spool/fetch-" not in os.readlink(f"/proc/self/fd/{fd}"):
            return real(fd, data)
        room = len(data) if fail_after is None else fail_after - sum(made)
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        made.append(real(fd, bytes(data[: min(most, room)])))
        return made[-1]

    monkeypatch.setattr(os, "write", write)
    return made


BIG = f"{MODULE}/@v/v1.1.0.zip"


@pytest.fixture(scope="module")
def big(world: World) -> ModuleVersion:
    mv = ModuleVersion(MODULE, "v1.1.0", payload_bytes=300_000)
    world.add(mv)
    return mv


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_short_spool_writes_are_completed(
    world: World, big: ModuleVersion, first: Upstream, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    made = spool_writes(monkeypatch, most=1000, fail_after=None)
    fetched = fetch(first, BIG, tmp_path / "spool")
    data = world.zip_path(big).read_bytes()
    assert fetched.body.read_bytes() == data
    assert (fetched.size, fetched.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert len(made) > len(data) // 1000  # every write was short, and each was finished


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_a_full_spool_disk_is_a_cache_error_naming_it_and_nothing_is_stored(
    big: ModuleVersion, first: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool_writes(monkeypatch, most=64 << 10, fail_after=100_000)
    store = DiskStore(tmp_path / "cache", 1 << 30)

    async def go() -> None:
        fetcher = HttpFetcher(timeout=5)
        gateway = Gateway(store, fetcher, tmp_path / "spool", CacheSettings())
        try:
            await gateway.serve(Chain((Hop(first.url),)), parse_request(BIG))
        finally:
            await fetcher.close()

    try:
        with pytest.raises(CacheError) as full:
            asyncio.run(go())
        assert not isinstance(full.value, UpstreamError)
        assert f"the disk of {tmp_path / 'spool'} is full (No space left on device)" in str(
            full.value
        )
        assert list((tmp_path / "spool").iterdir()) == []
        assert len(store) == 0
    finally:
        store.close()


@pytest.mark.parametrize(
    ("via", "looped"),
    [
        ([], False),
        ([VIA], True),
        (["1.1 corp-lb, " + VIA], True),
        (["1.0 fred", VIA + " (modgate)"], True),
        (["1.1 modgate-000000000000"], False),  # another modgate: a chain, not a loop
        (["1.1 " + VIA.split()[1] + "0"], False),
    ],
)
def test_a_request_this_process_sent_is_known_by_its_via(via: list[str], looped: bool) -> None:
    assert came_back(via) is looped


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_a_full_spool_disk_while_refreshing_serves_what_is_stored(
    first: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad input loses nothing already cached: a list past its TTL is served stale when
    the refresh finds no room on disk, as when no upstream answers."""
    now = [1000.0]
    store = DiskStore(tmp_path / "cache", 1 << 30)
    path = parse_request(f"{MODULE}/@v/list")

    async def serve() -> Served:
        fetcher = HttpFetcher(timeout=5)
        gateway = Gateway(store, fetcher, tmp_path / "spool", CacheSettings(ttl=60),
                          lambda: now[0])  # fmt: skip
        try:
            served = await gateway.serve(Chain((Hop(first.url),)), path)
            served.body.close()
            await gateway.drain(timeout=5)  # a small answer is served before it is stored
            return served
        finally:
            await fetcher.close()

    try:
        assert asyncio.run(serve()).outcome is Outcome.MISS
        now[0] += 61
        spool_writes(monkeypatch, most=1 << 20, fail_after=0)
        stale = asyncio.run(serve())
        assert stale.outcome is Outcome.STALE
        assert "is full" in stale.stale_reason
    finally:
        store.close()
