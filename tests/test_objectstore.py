"""modgate.objectstore against a real S3-compatible server (SeaweedFS on loopback):
streamed in and out, checked on the way back, credentials kept out of every message."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from modgate.config import S3Settings, parse_config
from modgate.errors import ConfigError, ObjectStoreError
from modgate.objectstore import META, Credentials, S3Tier, credentials, object_name
from modgate.store import Entry
from world.servers import ACCESS_KEY, SECRET_KEY, S3Server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        yield server


def settings(s3: S3Server, **kw: object) -> S3Settings:
    return S3Settings(endpoint=s3.endpoint, bucket=s3.bucket, prefix="t/", **kw)  # type: ignore[arg-type]


def tier(s3: S3Server, **kw: object) -> S3Tier:
    return S3Tier(settings(s3, **kw), Credentials(ACCESS_KEY, SECRET_KEY, "test"))


def body_file(path: Path, size: int) -> tuple[Path, Entry]:
    data = os.urandom(size)
    path.write_bytes(data)
    entry = Entry(
        key=f"v2 example.modgate.test/m/@v/{path.name}", status=200,
        content_type="application/zip", size=size, sha256=hashlib.sha256(data).hexdigest(),
        stored_at=1.0, expires_at=None, upstream="https://up.test", h1="h1:x=",
        verdict="verified", checked_by="sumdb",
    )  # fmt: skip
    return path, entry


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


@pytest.mark.parametrize("size", [0, 1000, 12 * 1024 * 1024 + 17])
def test_an_answer_goes_in_and_comes_back_whole_with_its_entry(
    s3: S3Server, tmp_path: Path, size: int
) -> None:
    path, entry = body_file(tmp_path / f"v{size}.zip", size)
    spool = tmp_path / "spool"
    spool.mkdir()

    async def go() -> tuple[Entry, Path] | None:
        t = tier(s3, part_size=5 << 20)
        try:
            await t.put(entry, path)
            return await t.get(entry.key, spool)
        finally:
            await t.close()

    got = run(go())
    assert got is not None
    assert got[0] == entry and got[1].read_bytes() == path.read_bytes()
    assert object_name("t/", entry.key) in s3.objects()


def test_large_bodies_stream_with_memory_bounded_by_a_part(s3: S3Server, tmp_path: Path) -> None:
    size, part = 80 << 20, 5 << 20
    path, entry = body_file(tmp_path / "big.zip", size)
    spool = tmp_path / "spool"
    spool.mkdir()

    async def go() -> tuple[int, int]:
        t = tier(s3, part_size=part)
        try:
            tracemalloc.start()
            await t.put(entry, path)
            up = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            got = await t.get(entry.key, spool)
            down = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert got is not None and got[1].stat().st_size == size
            return up, down
        finally:
            await t.close()

    up, down = run(go())
    assert up < 7 * part, up  # a part and botocore's copies of it (checksums), not the body
    assert down < 4 * part, down


def test_a_body_changed_in_the_bucket_is_refused(s3: S3Server, tmp_path: Path) -> None:
    path, entry = body_file(tmp_path / "v1.zip", 5000)
    spool = tmp_path / "spool"
    spool.mkdir()
    name = object_name("t/", entry.key)

    async def put_then_get() -> tuple[Entry, Path] | None:
        t = tier(s3)
        try:
            await t.put(entry, path)
            # An attacker with write access swaps the body, keeping the entry beside it.
            head = s3.client().head_object(Bucket=s3.bucket, Key=name)
            s3.client().put_object(
                Bucket=s3.bucket, Key=name, Body=b"evil" + path.read_bytes()[4:],
                Metadata=head["Metadata"],
            )  # fmt: skip
            return await t.get(entry.key, spool)
        finally:
            await t.close()

    assert run(put_then_get()) is None
    assert list(spool.iterdir()) == []  # nothing of it kept


def test_an_object_filed_under_another_key_is_refused(s3: S3Server, tmp_path: Path) -> None:
    path, entry = body_file(tmp_path / "v2.zip", 100)
    spool = tmp_path / "spool"
    spool.mkdir()
    # The whole entry forged consistently, but for another key: an object copied across.
    forged = replace(entry, key="v2 example.modgate.test/other/@v/v1.0.0.zip")
    meta = {META: base64.urlsafe_b64encode(json.dumps(forged.__dict__).encode()).decode()}
    s3.client().put_object(
        Bucket=s3.bucket, Key=object_name("t/", entry.key), Body=path.read_bytes(), Metadata=meta
    )

    async def go() -> tuple[Entry, Path] | None:
        t = tier(s3)
        try:
            return await t.get(entry.key, spool)
        finally:
            await t.close()

    assert run(go()) is None


def test_a_missing_key_is_none(s3: S3Server, tmp_path: Path) -> None:
    async def go() -> tuple[Entry, Path] | None:
        t = tier(s3)
        try:
            return await t.get("v2 never/stored", tmp_path)
        finally:
            await t.close()

    assert run(go()) is None


def test_wrong_credentials_fail_clearly_and_never_show_the_secret(
    s3: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    t = S3Tier(settings(s3), Credentials(ACCESS_KEY, "not-the-secret-5d2e", "test"))

    async def go() -> None:
        try:
            await t.get("v2 x", tmp_path)
        finally:
            await t.close()

    with caplog.at_level(logging.WARNING), pytest.raises(ObjectStoreError) as e:
        run(go())
    assert s3.endpoint in str(e.value) and "SignatureDoesNotMatch" in str(e.value)
    assert "not-the-secret-5d2e" not in str(e.value) + caplog.text + repr(t)
    assert t.status().startswith("degraded")


def test_an_unreachable_store_fails_fast_and_says_where(tmp_path: Path) -> None:
    from world.gate import free_port

    t = S3Tier(
        S3Settings(endpoint=f"http://127.0.0.1:{free_port()}", bucket="b", timeout=2),
        Credentials(ACCESS_KEY, SECRET_KEY, "test"),
    )

    async def go() -> None:
        try:
            await t.get("v2 x", tmp_path)
        finally:
            await t.close()

    with pytest.raises(ObjectStoreError, match=r"object store http://127\.0\.0\.1:\d+/b/.*get"):
        run(go())
    with pytest.raises(ObjectStoreError, match="retrying soon"):  # no new wait for a while
        run(go())


def test_credentials_come_from_the_environment_or_a_file_never_rules_yaml(tmp_path: Path) -> None:
    s = S3Settings(endpoint="http://s3.test", bucket="b")
    creds = credentials(s, {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "sekrit"})
    assert (creds.access_key, creds.secret_key) == ("AK", "sekrit")
    assert "sekrit" not in repr(creds) and "sekrit" not in str(creds)
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        credentials(s, {})
    file = tmp_path / "credentials"
    file.write_text("[ci]\naws_access_key_id = AK2\naws_secret_access_key = fromfile\n")
    creds = credentials(replace(s, credentials_file=file, profile="ci"), {})
    assert (creds.access_key, creds.secret_key) == ("AK2", "fromfile")
    with pytest.raises(ConfigError, match=r"no \[default\] profile") as e:
        credentials(replace(s, credentials_file=file), {})
    assert "fromfile" not in str(e.value)
    with pytest.raises(ConfigError, match="credentials do not belong in rules.yaml"):
        parse_config("store:\n  s3:\n    endpoint: http://AK:sekrit@s3.test\n    bucket: b\n")
    with pytest.raises(ConfigError, match="password does not belong in rules.yaml"):
        parse_config("coordination:\n  redis:\n    url: redis://:pw@r.test:6379/0\n")


def test_rules_yaml_store_and_coordination_are_read_with_their_defaults(tmp_path: Path) -> None:
    config = parse_config(
        "store:\n  s3:\n    endpoint: http://s3.test:9000\n    bucket: go\n"
        "    credentials_file: creds\n    part_size: 8MiB\n"
        "coordination:\n  redis:\n    url: redis://r.test:6379/1\n    lock_ttl: 5s\n",
        str(tmp_path / "rules.yaml"),
    )
    assert config.s3 == S3Settings(
        endpoint="http://s3.test:9000", bucket="go", credentials_file=tmp_path / "creds",
        part_size=8 << 20,
    )  # fmt: skip
    assert config.redis is not None and config.redis.lock_ttl == 5.0
    with pytest.raises(ConfigError, match=r"rules.yaml:5: store.s3.part_size: .*minimum part"):
        parse_config(
            "store:\n  s3:\n    endpoint: http://s3.test\n    bucket: b\n    part_size: 1MB\n"
        )
    with pytest.raises(ConfigError, match="missing field 'bucket'"):
        parse_config("store:\n  s3:\n    endpoint: http://s3.test\n")
