"""A replica's /readyz and /metrics tell its shared parts' state (issue 15 §4 with issue 17): Redis
and the object store "ok"; Redis stopped, go still served and /readyz still ready but
saying single-flight is local; Redis back, "ok" again by itself."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from test_e2e_replicas import get, rules
from world.gate import Gate, free_port
from world.gocmd import go_env, run_go
from world.modules import World, graph_roots
from world.servers import ACCESS_KEY, SECRET_KEY, RedisServer, S3Server
from world.upstream import Upstream

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOST = "proxy.modgate.test"
WORLD_MODULES = 6


def ready(base: str) -> tuple[bool, str]:
    """The replicas check of /readyz. (The whole answer may be 503 here: these rules
    name no checksum database modgate can reach, and that check says so.)"""
    status, body = get(f"{base}/readyz", timeout=30)
    answer: dict[str, Any] = json.loads(body)
    assert (status == 200) == answer["ready"], answer
    check: dict[str, Any] = answer["checks"]["replicas"]
    return check["ok"], check["detail"]


def scraped(base: str) -> dict[tuple[str, str], float]:
    """(metric name, its one label's value) -> value, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    _, body = get(f"{base}/metrics", timeout=30)
    return {
        (s.name, next(iter(s.labels.values()), "")): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def eventually(base: str, key: tuple[str, str], least: float = 1) -> float:
    """A metric once a refresh (every 5 s) has brought it to at least `least`."""
    deadline = time.monotonic() + 30
    while (value := scraped(base).get(key, 0)) < least:
        assert time.monotonic() < deadline, (key, scraped(base))
        time.sleep(0.5)
    return value


def download(gate: Gate, home: Path, target: str) -> None:
    home.mkdir(parents=True)
    run_go(["mod", "download", "-json", target], gate.client_env(go_env(home, f"https://{HOST}")),
           home)  # fmt: skip


def test_readyz_reports_redis_away_and_back(world: World, tmp_path: Path) -> None:
    targets = [f"{m}@latest" for m in graph_roots(world)]
    with (
        S3Server(tmp_path / "s3") as s3,
        RedisServer(tmp_path / "redis") as redis,
        Upstream(world) as upstream,
    ):
        gate = Gate(tmp_path / "replica", rules(upstream.url, s3, redis))
        gate.env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        port = free_port()
        gate.extra_args = ["--metrics-listen", f"127.0.0.1:{port}"]
        base = f"http://127.0.0.1:{port}"
        with gate:
            download(gate, tmp_path / "a", targets[0])
            assert ready(base) == (True, "coordination: ok; object_store: ok")
            eventually(base, ("modgate_object_store_operations", "put"))
            assert scraped(base).get(("modgate_cluster_lock_events", "fallback"), 0) == 0
            redis.stop()
            download(gate, tmp_path / "b", targets[1])  # served: local single-flight
            ok, detail = ready(base)
            assert ok and "coordination: degraded since" in detail, detail
            assert "single-flight is local to this replica" in detail
            eventually(base, ("modgate_cluster_lock_events", "fallback"))
            redis.start()
            deadline = time.monotonic() + 60
            while "coordination: ok" not in ready(base)[1]:
                assert time.monotonic() < deadline, ready(base)
                download(gate, tmp_path / f"c{time.monotonic()}", targets[-1])
                time.sleep(0.5)
