"""The real Redis and S3 servers of tests/world/servers.py start, serve and leave nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

from world.servers import RedisServer, S3Server


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_redis_serves_restarts_on_its_port_and_leaves_no_process(tmp_path: Path) -> None:
    import redis

    with RedisServer(tmp_path) as server:
        r = redis.Redis.from_url(server.url)
        assert r.ping()
        assert server.proc is not None
        pid = server.proc.pid
        server.stop()
        assert _gone(pid)
        server.start()
        assert redis.Redis.from_url(server.url).ping()
    assert server.proc is None


def test_s3_needs_its_credentials_stores_objects_and_stops_cleanly(tmp_path: Path) -> None:
    import botocore.exceptions
    import pytest

    started = time.monotonic()
    with S3Server(tmp_path) as server:
        assert time.monotonic() - started < 20
        client = server.client()
        client.put_object(Bucket=server.bucket, Key="a", Body=b"hello")
        assert client.get_object(Bucket=server.bucket, Key="a")["Body"].read() == b"hello"
        assert server.objects() == ["a"]
        wrong = server.client()
        wrong._request_signer._credentials.secret_key = "wrong"  # noqa: SLF001
        with pytest.raises(
            botocore.exceptions.ClientError, match="SignatureDoesNotMatch|AccessDenied"
        ):
            wrong.get_object(Bucket=server.bucket, Key="a")
        assert server.proc is not None
        pid = server.proc.pid
    assert _gone(pid)
