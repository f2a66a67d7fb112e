"""modgate.upstream: the HTTP fetcher against real upstreams on 127.0.0.1: redirects it
follows and those it refuses, and what it does when the spool disk fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from yarl import URL

from modgate.config import Chain, Hop
from modgate.errors import UpstreamError
from modgate.goproxy import parse_request
from modgate.upstream import MAX_REDIRECTS, Fetched, HttpFetcher, RedirectCheck
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
