"""modgate.gateway with a real store, a real HTTP fetcher and a real upstream; time is
a controllable clock so TTLs are tested without sleeping."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modgate.config import CacheSettings, Chain, Hop
from modgate.errors import UpstreamError
from modgate.gateway import Gateway, Outcome, Served, artifact_key, cache_key
from modgate.goproxy import parse_request
from modgate.store import DiskStore, Entry, Hit, Miss
from modgate.upstream import HttpFetcher
from modgate.verify import IntegrityError, Verdict
from world.modules import ModuleVersion, World
from world.upstream import Upstream

MODULE = "example.modgate.test/m"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world() -> Iterator[World]:
    with World([ModuleVersion(MODULE, "v1.0.0"), ModuleVersion(MODULE, "v1.1.0")]) as w:
        yield w


@pytest.fixture
def upstream(world: World) -> Iterator[Upstream]:
    with Upstream(world) as up:
        yield up


def serve_all(upstream: Upstream, tmp_path: Path, clock: Clock, *paths: str,
              chain: Chain | None = None, validator: Any = None,
              seen: list[tuple[str, Any]] | None = None) -> list[Served]:  # fmt: skip
    """Serve `paths` concurrently through one gateway; bodies are read and closed."""

    async def go() -> list[Served]:
        store = DiskStore(tmp_path / "cache", 1 << 30)
        fetcher = HttpFetcher(timeout=5)
        gateway = Gateway(
            store, fetcher, tmp_path / "spool", CacheSettings(ttl=60, negative_ttl=10), clock
        )
        gateway.validator = validator
        if seen is not None:  # what metrics are told
            gateway.on_wait = lambda where: seen.append(("wait", where))
            fetcher.timed = lambda url, seconds: seen.append((url, seconds))
        try:
            the_chain = chain or Chain((Hop(upstream.url),))
            served = await asyncio.gather(
                *(gateway.serve(the_chain, parse_request(p)) for p in paths)
            )
            for s in served:
                s.body.close()
            await gateway.drain(timeout=5)  # small answers are served before they are stored
            return list(served)
        finally:
            await fetcher.close()
            store.close()

    return asyncio.run(go())


def outcomes(served: list[Served]) -> list[str]:
    return [s.outcome.value for s in served]


def test_immutable_answers_are_fetched_once_and_kept_forever(
    upstream: Upstream, tmp_path: Path
) -> None:
    clock = Clock()
    path = f"{MODULE}/@v/v1.0.0.zip"
    assert outcomes(serve_all(upstream, tmp_path, clock, path)) == ["miss"]
    clock.now += 10 * 365 * 86400
    upstream.stop()
    assert outcomes(serve_all(upstream, tmp_path, clock, path)) == ["hit"]


def test_concurrent_requests_share_one_fetch(upstream: Upstream, tmp_path: Path) -> None:
    upstream.fault("*", delay=0.2)
    path = f"{MODULE}/@v/v1.1.0.mod"
    served = serve_all(upstream, tmp_path, Clock(), *[path] * 50)
    assert outcomes(served) == ["miss"] * 50
    assert upstream.count(f"/{path}") == 1


def test_waits_on_another_s_fetch_and_upstream_times_are_told(
    upstream: Upstream, tmp_path: Path
) -> None:
    upstream.fault("*", delay=0.2)
    seen: list[tuple[str, Any]] = []
    serve_all(upstream, tmp_path, Clock(), *[f"{MODULE}/@v/v1.1.0.mod"] * 10, seen=seen)
    assert seen.count(("wait", "flight")) == 9  # one fetched, nine waited for it
    [(url, seconds)] = [x for x in seen if x[0] != "wait"]
    assert url == upstream.url and seconds >= 0.2


def test_mutable_answers_expire_and_are_served_stale_when_the_upstream_fails(
    upstream: Upstream, tmp_path: Path
) -> None:
    clock = Clock()
    path = f"{MODULE}/@v/list"
    assert outcomes(serve_all(upstream, tmp_path, clock, path)) == ["miss"]
    clock.now += 59
    assert outcomes(serve_all(upstream, tmp_path, clock, path)) == ["hit"]
    clock.now += 1
    assert outcomes(serve_all(upstream, tmp_path, clock, path)) == ["refreshed"]
    clock.now += 61
    upstream.fault("*", status=503)
    [stale] = serve_all(upstream, tmp_path, clock, path)
    assert stale.outcome is Outcome.STALE
    assert "503" in stale.stale_reason
    assert upstream.count(f"/{path}") == 3


def test_not_found_is_remembered_for_the_negative_ttl(upstream: Upstream, tmp_path: Path) -> None:
    clock = Clock()
    path = f"{MODULE}/@v/v9.9.9.info"
    [first] = serve_all(upstream, tmp_path, clock, path)
    assert (first.outcome, first.entry.status) == (Outcome.MISS, 404)
    assert outcomes(serve_all(upstream, tmp_path, clock, path)) == ["negative"]
    clock.now += 10
    assert outcomes(serve_all(upstream, tmp_path, clock, path)) == ["refreshed"]
    assert upstream.count(f"/{path}") == 2


def test_no_answer_and_nothing_stored_is_an_upstream_error(
    upstream: Upstream, tmp_path: Path
) -> None:
    upstream.fault("*", reset=True)
    with pytest.raises(
        UpstreamError, match=rf"{MODULE}@v1.0.0 \(mod\): no upstream answered: http://127"
    ):
        serve_all(upstream, tmp_path, Clock(), f"{MODULE}/@v/v1.0.0.mod")
    upstream.clear_faults()
    assert outcomes(serve_all(upstream, tmp_path, Clock(), f"{MODULE}/@v/v1.0.0.mod")) == ["miss"]


def test_a_garbled_answer_is_refused_and_not_stored(upstream: Upstream, tmp_path: Path) -> None:
    upstream.fault("*.info", status=200, body='{"Version": "not-a-version"}', times=1)
    with pytest.raises(UpstreamError, match="answer has no valid Version field"):
        serve_all(upstream, tmp_path, Clock(), f"{MODULE}/@v/v1.0.0.info")
    assert outcomes(serve_all(upstream, tmp_path, Clock(), f"{MODULE}/@v/v1.0.0.info")) == ["miss"]


def test_the_answering_upstream_is_recorded(upstream: Upstream, tmp_path: Path) -> None:
    with Upstream(World()) as empty:
        chain = Chain((Hop(empty.url), Hop(upstream.url)))
        [served] = serve_all(upstream, tmp_path, Clock(), f"{MODULE}/@v/v1.0.0.mod", chain=chain)
    assert served.entry.upstream == upstream.url
    assert [a.status for a in served.attempts] == [404, 200]


class Vouch:
    """A Validator that passes every answer with the given verdict status."""

    def __init__(self, status: str) -> None:
        self.status = status

    async def validate(self, req: object, body: Path) -> Verdict:
        return Verdict("h1:test", self.status, "test")

    def prefetch(self, req: object) -> None:
        pass

    async def idle(self) -> None:
        pass


def test_a_verified_answer_is_kept_whichever_chain_served_it(
    upstream: Upstream, tmp_path: Path
) -> None:
    """A mirror added in front, or a route pointed elsewhere, finds every canonical .info,
    and every .mod and .zip verified, it already has (issue 13: the cache keyed by what
    it holds)."""
    clock = Clock()
    paths = [f"{MODULE}/@v/v1.0.0.{ext}" for ext in ("info", "mod", "zip")]
    verified = Vouch("verified")
    assert (
        outcomes(serve_all(upstream, tmp_path, clock, *paths, validator=verified)) == ["miss"] * 3
    )
    with Upstream(World()) as mirror:
        other = Chain((Hop(mirror.url, any_error=True), Hop(upstream.url)))
        upstream.stop()
        served = serve_all(upstream, tmp_path, clock, *paths, chain=other, validator=verified)
        assert outcomes(served) == ["hit"] * 3
        assert mirror.counts() == {}


def test_a_first_seen_private_artifact_stays_with_the_chain_that_served_it(
    upstream: Upstream, tmp_path: Path
) -> None:
    """Nothing vouches for a private module's first answer but the ledger: another chain's
    copy is fetched and held to it (and refused if it differs), never served from the
    first chain's."""
    clock = Clock()
    paths = [f"{MODULE}/@v/v1.0.0.mod", f"{MODULE}/@v/v1.0.0.zip"]
    first_seen = Vouch("unverified")
    assert outcomes(serve_all(upstream, tmp_path, clock, *paths, validator=first_seen)) == [
        "miss",
        "miss",
    ]
    with Upstream(upstream.source) as other_upstream:
        other = Chain((Hop(other_upstream.url),))
        served = serve_all(upstream, tmp_path, clock, *paths, chain=other, validator=first_seen)
        assert outcomes(served) == ["miss", "miss"]
        assert sum(other_upstream.counts().values()) == 2


def test_a_not_found_and_a_mutable_answer_stay_with_their_chain(
    upstream: Upstream, tmp_path: Path
) -> None:
    """A private mirror's 404 must not hide what the public proxy has, and each upstream
    has its own list of versions."""
    clock = Clock()
    with Upstream(World()) as empty:
        private = Chain((Hop(empty.url),))
        gone = f"{MODULE}/@v/v1.0.0.mod"
        listed = f"{MODULE}/@v/list"
        [missing, none] = serve_all(upstream, tmp_path, clock, gone, listed, chain=private)
        assert (missing.entry.status, none.entry.status) == (404, 404)
        [found, versions] = serve_all(upstream, tmp_path, clock, gone, listed)
        assert (found.outcome, found.entry.status) == (Outcome.MISS, 200)
        assert (versions.outcome, versions.entry.status) == (Outcome.MISS, 200)
        # ... and the 404 of the private chain is still its own, for its negative TTL.
        assert outcomes(serve_all(upstream, tmp_path, clock, listed, chain=private)) == ["negative"]


def test_an_answer_stored_under_its_chain_before_artifact_keys_is_still_served(
    upstream: Upstream, tmp_path: Path
) -> None:
    """A cache written by an earlier modgate (every answer under its chain) keeps working."""
    clock = Clock()
    path = f"{MODULE}/@v/v1.0.0.mod"
    chain = Chain((Hop(upstream.url),))
    req = parse_request(path)
    store = DiskStore(tmp_path / "cache", 1 << 30)
    body = tmp_path / "old.mod"
    body.write_bytes(b"module example.modgate.test/m\n")
    digest = hashlib.sha256(body.read_bytes()).hexdigest()
    store.put(Entry(key=cache_key(chain, req), status=200, content_type=req.content_type,
                    size=body.stat().st_size, sha256=digest, stored_at=clock.now,
                    expires_at=None, upstream=upstream.url), body)  # fmt: skip
    store.close()
    upstream.stop()
    [served] = serve_all(upstream, tmp_path, clock, path)
    assert served.outcome is Outcome.HIT
    assert served.entry.key == cache_key(chain, req) != artifact_key(req)


# --- large zips, served while they download --------------------------------------------

BIG = "example.modgate.test/big"


class Refuse:
    """A Validator that refuses every answer (as a hash mismatch would)."""

    async def validate(self, req: object, body: Path) -> None:
        raise IntegrityError(f"{req}: SECURITY ERROR: h1 mismatch (test)")

    def prefetch(self, req: object) -> None:
        pass


def stream_one(
    upstream: Upstream, tmp_path: Path, clock: Clock, path: str, validator: object = None,
    then: int = 0,
) -> tuple[Served, bytes, BaseException | None, list[str]]:  # fmt: skip
    """Serve `path` once and read its body as it grows, until the download landed; then
    serve it `then` more times. Returns the first answer, what the body file held when
    it landed, how it landed, and the later outcomes (or error texts)."""

    async def go() -> tuple[Served, bytes, BaseException | None, list[str]]:
        store = DiskStore(tmp_path / "cache", 1 << 30)
        fetcher = HttpFetcher(timeout=5)
        gateway = Gateway(
            store, fetcher, tmp_path / "spool", CacheSettings(ttl=60, negative_ttl=10), clock
        )
        gateway.validator = validator  # type: ignore[assignment]
        chain = Chain((Hop(upstream.url),))
        try:
            served = await gateway.serve(chain, parse_request(path))
            assert served.growing is not None and served.landed is not None
            assert not served.landed.done()  # answered before the download ended
            landed: BaseException | None = None
            try:
                await served.landed
            except (IntegrityError, UpstreamError) as e:
                landed = e
            assert served.body.file is not None
            data = served.body.file.read()
            served.body.close()
            later = []
            for _ in range(then):
                try:
                    again = await gateway.serve(chain, parse_request(path))
                    again.body.close()
                    later.append(again.outcome.value)
                except (IntegrityError, UpstreamError) as e:
                    later.append(str(e))
            return served, data, landed, later
        finally:
            await fetcher.close()
            store.close()

    return asyncio.run(go())


@pytest.fixture
def big(tmp_path: Path) -> Iterator[tuple[World, Upstream]]:
    with World([ModuleVersion(BIG, "v1.0.0", payload_bytes=3 << 20)]) as w, Upstream(w) as up:
        up.fault("*.zip", throttle=4 << 20)  # about 0.8 s for the whole zip
        yield w, up


def test_a_large_zip_is_answered_while_it_downloads_and_then_kept(
    big: tuple[World, Upstream], tmp_path: Path
) -> None:
    world, upstream = big
    path = f"{BIG}/@v/v1.0.0.zip"
    served, data, landed, later = stream_one(upstream, tmp_path, Clock(), path, then=1)
    assert landed is None
    assert served.outcome is Outcome.MISS and served.entry.size == len(data)
    assert served.growing is not None and served.growing.entry is not None
    assert served.growing.entry.sha256 == hashlib.sha256(data).hexdigest()
    assert data == world.zip_path(world.get(BIG, "v1.0.0")).read_bytes()
    assert later == ["hit"]
    assert upstream.count(f"/{path}") == 1


def test_a_large_zip_cut_short_upstream_cuts_its_readers_and_is_fetched_again(
    big: tuple[World, Upstream], tmp_path: Path
) -> None:
    _, upstream = big
    path = f"{BIG}/@v/v1.0.0.zip"
    upstream.clear_faults()
    upstream.fault("*.zip", throttle=4 << 20, truncate=2 << 20, times=1)
    served, data, landed, later = stream_one(upstream, tmp_path, Clock(), path, then=1)
    assert isinstance(landed, UpstreamError)
    assert served.growing is not None and served.growing.error is not None
    assert "without sending complete message body" in served.growing.error
    assert len(data) == 2 << 20  # what arrived; its reader never gets the end
    # A download that broke off is not remembered as a refusal: fetched again, and kept.
    assert later == ["miss"]
    assert upstream.count(f"/{path}") == 2


def test_a_large_zip_that_fails_its_check_is_refused_to_the_next_requests_for_a_while(
    big: tuple[World, Upstream], tmp_path: Path
) -> None:
    _, upstream = big
    path = f"{BIG}/@v/v1.0.0.zip"
    clock = Clock()
    served, _, landed, later = stream_one(upstream, tmp_path, clock, path, Refuse(), then=1)
    assert isinstance(landed, IntegrityError)
    assert served.growing is not None and served.growing.error is not None
    assert "h1 mismatch (test)" in served.growing.error
    # Its readers were cut short with no reason to show: the next request gets it.
    assert later == [str(landed)]
    assert upstream.count(f"/{path}") == 1


class SlowStore(DiskStore):
    """A store whose copies wait for `release`."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.release = threading.Event()

    def put(self, entry: Entry, body: Path) -> None:
        assert self.release.wait(10)
        super().put(entry, body)


def test_a_small_miss_is_answered_once_checked_while_it_is_stored(
    world: World, upstream: Upstream, tmp_path: Path
) -> None:
    """The copy into the store (a disk write and a commit) is not on the client's path;
    requests that come meanwhile share the answer, and nothing is fetched twice."""

    async def go() -> None:
        store = SlowStore(tmp_path / "cache", 1 << 30)
        fetcher = HttpFetcher(timeout=5)
        gateway = Gateway(store, fetcher, tmp_path / "spool", CacheSettings(), Clock())
        chain, req = Chain((Hop(upstream.url),)), parse_request(f"{MODULE}/@v/v1.0.0.mod")
        try:
            first = await asyncio.wait_for(gateway.serve(chain, req), 5)
            again = await asyncio.wait_for(gateway.serve(chain, req), 5)  # joins the flight
            assert first.outcome is again.outcome is Outcome.MISS
            assert first.body.data == again.body.data == world.get(MODULE, "v1.0.0").gomod
            assert isinstance(store.lookup(first.entry.key, 0), Miss)  # not stored yet
            drained = asyncio.ensure_future(gateway.drain(timeout=5))  # as on shutdown
            await asyncio.sleep(0.2)
            assert not drained.done()  # waits for the copy
            store.release.set()
            await drained
            assert isinstance(store.lookup(first.entry.key, 0), Hit)
            assert upstream.count(f"/{req.path}") == 1
        finally:
            store.release.set()
            await fetcher.close()
            store.close()

    asyncio.run(go())


def test_forgetting_an_answer_still_being_stored_drops_it_once_stored(
    upstream: Upstream, tmp_path: Path
) -> None:
    """A checksum-database tile found bad is forgotten while its copy may still be on its
    way into the store: it must not land there afterwards."""

    async def go() -> None:
        store = SlowStore(tmp_path / "cache", 1 << 30)
        fetcher = HttpFetcher(timeout=5)
        gateway = Gateway(store, fetcher, tmp_path / "spool", CacheSettings(), Clock())
        chain, req = Chain((Hop(upstream.url),)), parse_request(f"{MODULE}/@v/v1.1.0.mod")
        try:
            served = await asyncio.wait_for(gateway.serve(chain, req), 5)
            gateway.forget(chain, req)
            store.release.set()
            await gateway.drain(timeout=5)
            await asyncio.sleep(0)  # the flight's done callbacks
            assert isinstance(store.lookup(served.entry.key, 0), Miss)
        finally:
            store.release.set()
            await fetcher.close()
            store.close()

    asyncio.run(go())


def test_a_gzip_encoded_answer_is_decoded_and_kept(tmp_path: Path) -> None:
    """Some mirrors compress their answers; a small one grows when gzipped, so its
    Content-Length is more than the decoded body holds, and that is not a short read."""
    gomod = b"module example.modgate.test/z\n"
    packed = gzip.compress(gomod)
    assert len(packed) > len(gomod)

    class Gzipping(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(packed)))
            self.end_headers()
            self.wfile.write(packed)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gzipping)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    async def go() -> Served:
        store = DiskStore(tmp_path / "cache", 1 << 30)
        fetcher = HttpFetcher(timeout=5)
        gateway = Gateway(store, fetcher, tmp_path / "spool", CacheSettings(), Clock())
        try:
            chain = Chain((Hop(f"http://127.0.0.1:{server.server_address[1]}"),))
            return await gateway.serve(chain, parse_request("example.modgate.test/z/@v/v1.0.0.mod"))
        finally:
            await fetcher.close()
            store.close()

    try:
        served = asyncio.run(go())
    finally:
        server.shutdown()
    assert served.body.data == gomod


def test_prefetch_stores_for_a_later_request_that_joins_or_hits_and_swallows_failure(
    upstream: Upstream, tmp_path: Path
) -> None:
    chain = Chain((Hop(upstream.url),))
    info, mod = parse_request(f"{MODULE}/@v/v1.0.0.info"), parse_request(f"{MODULE}/@v/v1.1.0.mod")

    async def go() -> None:
        store = DiskStore(tmp_path / "cache", 1 << 30)
        fetcher = HttpFetcher(timeout=5)
        gateway = Gateway(store, fetcher, tmp_path / "spool", CacheSettings(), Clock())
        try:
            upstream.fault("*.info", delay=0.2, times=1)
            ahead = asyncio.create_task(gateway.prefetch(chain, info))
            await asyncio.sleep(0.05)
            joined = await gateway.serve(chain, info)  # arrives while it is fetched
            joined.body.close()
            assert await ahead is True
            assert upstream.count(f"/{info.path}") == 1
            assert await gateway.prefetch(chain, info) is False  # stored: nothing to do
            hit = await gateway.serve(chain, info)
            hit.body.close()
            assert hit.outcome is Outcome.HIT and upstream.count(f"/{info.path}") == 1

            upstream.fault("*.mod", reset=True)
            assert await gateway.prefetch(chain, mod) is True  # failed, quietly
            assert isinstance(store.lookup(f"v1 {chain} {mod.path}", 0), Miss)
            upstream.clear_faults()
            fresh = await gateway.serve(chain, mod)  # the client's own request fetches it
            fresh.body.close()
            assert fresh.outcome is Outcome.MISS
            assert upstream.count(f"/{mod.path}") >= 2
        finally:
            await fetcher.close()
            store.close()

    asyncio.run(go())
