"""modgate.gateway with a shared tier: replicas (gateways with their own local stores)
behind one real S3 bucket (SeaweedFS), a real fetcher and a real upstream."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from modgate.config import CacheSettings, Chain, Hop, S3Settings
from modgate.gateway import Gateway, Outcome, artifact_key
from modgate.goproxy import ModRequest, parse_request
from modgate.objectstore import META, Credentials, S3Tier, object_name
from modgate.store import DiskStore
from modgate.upstream import HttpFetcher
from modgate.verify import IntegrityError, Verdict
from world.modules import ModuleVersion, World
from world.servers import ACCESS_KEY, SECRET_KEY, S3Server
from world.upstream import Upstream

pytestmark = pytest.mark.slow

MODULE = "example.modgate.test/m"
ZIP = f"{MODULE}/@v/v1.0.0.zip"
MOD = f"{MODULE}/@v/v1.0.0.mod"
LIST = f"{MODULE}/@v/list"


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Pinned:
    """A Validator holding the true SHA-256 of each answer, as a checksum database or a
    pin would: anything else is refused."""

    def __init__(self, world: World) -> None:
        self.want = {
            ZIP: hashlib.sha256(world.zip_path(world.get(MODULE, "v1.0.0")).read_bytes()),
            MOD: hashlib.sha256(world.get(MODULE, "v1.0.0").gomod),
        }

    async def validate(self, req: ModRequest, body: Path) -> Verdict | None:
        if req.path not in self.want:
            return None  # lists: nothing to check
        got = hashlib.sha256(body.read_bytes()).hexdigest()
        if got != self.want[req.path].hexdigest():
            raise IntegrityError(f"{req.path}: hash mismatch")
        return Verdict(f"h1:{got}", "verified", "pin")

    def prefetch(self, req: object) -> None:
        pass

    async def idle(self) -> None:
        pass


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def world() -> Iterator[World]:
    with World([ModuleVersion(MODULE, "v1.0.0", payload_bytes=3_000_000)]) as w:
        yield w


def replica_serve(
    s3: S3Server, upstream: Upstream, home: Path, world: World, clock: Clock, *paths: str,
    prefix: str = "g/",
) -> list[tuple[Outcome, bytes]]:  # fmt: skip
    """Serve `paths` one after another through a replica whose local store is `home`."""

    async def go() -> list[tuple[Outcome, bytes]]:
        store = DiskStore(home / "cache", 1 << 30)
        fetcher = HttpFetcher(timeout=5)
        tier = S3Tier(
            S3Settings(endpoint=s3.endpoint, bucket=s3.bucket, prefix=prefix, part_size=5 << 20),
            Credentials(ACCESS_KEY, SECRET_KEY, "test"),
        )
        gateway = Gateway(store, fetcher, home / "spool", CacheSettings(ttl=60), clock, tier=tier)
        gateway.validator = Pinned(world)
        chain = Chain((Hop(upstream.url),))
        out = []
        try:
            for p in paths:
                served = await gateway.serve(chain, parse_request(p))
                if served.landed is not None:  # a large zip served while it downloads
                    await served.landed
                out.append((served.outcome, served.body.read()))
                served.body.close()
            await gateway.drain(timeout=30)
            return out
        finally:
            await fetcher.close()
            await tier.close()
            store.close()

    return asyncio.run(go())


def test_what_one_replica_fetched_another_serves_from_the_bucket(
    s3: S3Server, world: World, tmp_path: Path
) -> None:
    clock = Clock()
    with Upstream(world) as upstream:
        a = replica_serve(s3, upstream, tmp_path / "a", world, clock, MOD, ZIP, LIST, prefix="1/")
        upstream.stop()
        b = replica_serve(s3, upstream, tmp_path / "b", world, clock, MOD, ZIP, LIST, prefix="1/")
    assert [body for _, body in a] == [body for _, body in b]
    assert b[1][1] == world.zip_path(world.get(MODULE, "v1.0.0")).read_bytes()
    assert sum(upstream.counts().values()) == 3


def test_a_list_from_the_bucket_lives_its_ttl_then_is_fetched_again(
    s3: S3Server, world: World, tmp_path: Path
) -> None:
    clock = Clock()
    with Upstream(world) as upstream:
        replica_serve(s3, upstream, tmp_path / "a", world, clock, LIST, prefix="2/")
        replica_serve(s3, upstream, tmp_path / "b", world, clock, LIST, prefix="2/")
        assert upstream.count(f"/{LIST}") == 1
        clock.now += 61
        replica_serve(s3, upstream, tmp_path / "c", world, clock, LIST, prefix="2/")
        assert upstream.count(f"/{LIST}") == 2


@pytest.mark.parametrize(
    ("prefix", "h1"),
    [("3/", None), ("3b/", ""), ("3c/", "h1:not-the-one")],
    ids=["entry-rewritten", "h1-blanked", "h1-changed"],
)
def test_a_zip_tampered_with_in_the_bucket_is_refused_and_fetched_again(
    s3: S3Server, world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    prefix: str, h1: str | None,
) -> None:  # fmt: skip
    """Whoever can write the bucket can rewrite a body and its entry consistently: the
    replica reading it checks it again as it checks an upstream's answer, whatever the
    entry says of its own hash (blanking it must not skip the check)."""
    clock = Clock()
    want = world.zip_path(world.get(MODULE, "v1.0.0")).read_bytes()
    with Upstream(world) as upstream:
        replica_serve(s3, upstream, tmp_path / "a", world, clock, ZIP, prefix=prefix)
        client = s3.client()
        name = object_name(prefix, artifact_key(parse_request(ZIP)) or "")
        meta = client.head_object(Bucket=s3.bucket, Key=name)["Metadata"]
        entry = json.loads(base64.urlsafe_b64decode(meta[META]))
        evil = want[:1000] + bytes([want[1000] ^ 1]) + want[1001:]
        assert evil != want
        entry.update(sha256=hashlib.sha256(evil).hexdigest(), size=len(evil))
        if h1 is not None:
            entry.update(h1=h1)
        client.put_object(
            Bucket=s3.bucket, Key=name, Body=evil,
            Metadata={META: base64.urlsafe_b64encode(json.dumps(entry).encode()).decode()},
        )  # fmt: skip
        with caplog.at_level(logging.ERROR, "modgate"):
            [(outcome, body)] = replica_serve(
                s3, upstream, tmp_path / "b", world, clock, ZIP, prefix=prefix
            )
        assert (len(body), outcome) == (len(want), Outcome.MISS)
        assert body != evil, "the tampered body was served"
        assert body == want
        assert upstream.count(f"/{ZIP}") == 2  # fetched again, from the upstream
        assert "object store's" in caplog.text and "refused" in caplog.text
        # and the good copy replaced the bad one in the bucket
        assert client.get_object(Bucket=s3.bucket, Key=name)["Body"].read() == want
