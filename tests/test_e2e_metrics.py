"""Metrics and health end to end: a real `go mod download` through a real `modgate run
--metrics-listen`, /metrics scraped and parsed with prometheus-client's own parser, and
its numbers checked against the trace database's records of the same requests."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from world.gate import Gate, free_port
from world.gocmd import go_env, run_go
from world.modules import World, graph_roots
from world.sumdb import TestSumdb
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
DENIED = "example.modgate.test/denied"
# The outcome label of a trace record, as the issue defines it.
OUTCOME = {"hit": "hit", "miss": "miss", "refreshed": "miss", "stale": "stale",
           "negative": "negative"}  # fmt: skip


def rules(upstream: str, db_key: str, db_url: str) -> str:
    return (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream}\n"
        f"checksum:\n  databases:\n    - key: {db_key}\n      upstream: {db_url}\n"
        f"modules:\n  - deny: {DENIED}\n    name: denied\n    reason: not here\n"
    )


@pytest.fixture
def sumdb(world: World) -> Iterator[TestSumdb]:
    with TestSumdb().add_world(world) as db:
        yield db


def start(gate: Gate, workers: int = 1) -> str:
    port = free_port()
    gate.workers = workers
    gate.extra_args = ["--metrics-listen", f"127.0.0.1:{port}"]
    gate.start()
    return f"http://127.0.0.1:{port}"


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = get(f"{base}/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def records(gate: Gate) -> list[sqlite3.Row]:
    """Every request record, once the writer has caught up (two reads alike)."""
    last: list[sqlite3.Row] = []
    for _ in range(50):
        rows = gate.traced("kind != 'tunnel'", (), lambda rows: True)
        if rows and len(rows) == len(last):
            return rows
        last = rows
        time.sleep(0.3)
    return last


def download(gate: Gate, db: TestSumdb, world: World, home: Path) -> None:
    env = gate.client_env(go_env(home, f"https://{HOST}", GOSUMDB=db.verifier_key))
    home.mkdir(parents=True, exist_ok=True)
    run_go(["mod", "download", "-json", f"{graph_roots(world)[0]}@latest"], env, home)


def check_against_trace(samples: dict[Any, float], rows: list[sqlite3.Row]) -> None:
    expected: Counter[tuple[str, str]] = Counter()
    for r in rows:
        if r["refused"]:
            outcome = "refused"
        else:
            outcome = OUTCOME.get(r["cache"]) or (
                "error" if not r["status"] or r["status"] >= 500 else "none"
            )
        expected[(r["kind"], outcome)] += 1
    scraped = {
        (dict(labels)["kind"], dict(labels)["outcome"]): v
        for (name, labels), v in samples.items()
        if name == "modgate_requests_total" and dict(labels)["kind"] != "tunnel"
    }
    assert {k: v for k, v in scraped.items() if v} == {k: float(n) for k, n in expected.items()}
    cached = sum(r["bytes_out"] or 0 for r in rows if r["cache"] in ("hit", "negative", "stale"))
    fetched = sum(r["bytes_out"] or 0 for r in rows if r["cache"] in ("miss", "refreshed"))
    assert value(samples, "modgate_served_bytes_total", source="cache") == cached
    assert value(samples, "modgate_served_bytes_total", source="upstream") == fetched
    denied = sum(1 for r in rows if r["rule_verdict"] == "deny")
    assert denied >= 1
    assert value(samples, "modgate_rule_refusals_total", rule="modules[0]") == denied


def test_metrics_match_the_trace_after_a_real_go_mod_download(
    world: World, sumdb: TestSumdb, tmp_path: Path
) -> None:
    with Upstream(world) as upstream:
        gate = Gate(tmp_path / "gate", rules(upstream.url, sumdb.verifier_key, sumdb.url))
        base = start(gate)
        try:
            download(gate, sumdb, world, tmp_path / "cold")
            download(gate, sumdb, world, tmp_path / "warm")  # hits now
            status, _ = get(f"{gate.goproxy_url}/{DENIED}/@v/list")
            assert status == 403
            rows = records(gate)
            samples = scrape(base)
            check_against_trace(samples, rows)
            assert any(r["cache"] == "hit" for r in rows) and any(
                r["cache"] == "miss" for r in rows
            )
            misses = sum(1 for r in rows if r["cache"] == "miss" and r["upstream"] == upstream.url)
            assert (
                value(samples, "modgate_upstream_latency_seconds_count", upstream=upstream.url)
                >= misses
            )
            # The cache gauges are read every few seconds.
            deadline = time.monotonic() + 15
            while value(samples, "modgate_cache_entries") == 0 and time.monotonic() < deadline:
                time.sleep(0.5)
                samples = scrape(base)
            assert value(samples, "modgate_cache_entries") > 0
            assert value(samples, "modgate_cache_size_bytes") > 0
            assert value(samples, "modgate_write_lag_seconds", log="trace") >= 0

            assert get(f"{base}/healthz") == (200, b'{"status":"alive"}\n')
            status, body = get(f"{base}/readyz")
            ready = json.loads(body)
            assert status == 200 and ready["ready"], ready
            assert set(ready["checks"]) >= {"store", "rules", "checksum", "trace", "audit"}
            assert "tree head cached" in ready["checks"]["checksum"]["detail"]
            assert get(f"{base}/nope")[0] == 404
        finally:
            gate.stop()


def test_readyz_says_no_while_the_checksum_database_is_out_of_reach(
    world: World, sumdb: TestSumdb, tmp_path: Path
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with Upstream(world) as upstream:
        gate = Gate(tmp_path / "gate", rules(upstream.url, sumdb.verifier_key, nowhere))
        base = start(gate)
        try:
            assert get(f"{base}/healthz")[0] == 200  # alive, yet not ready
            status, body = get(f"{base}/readyz")
            ready = json.loads(body)
            assert status == 503 and not ready["ready"]
            assert ready["checks"]["checksum"]["ok"] is False
            assert "unreachable" in ready["checks"]["checksum"]["detail"]
            assert ready["checks"]["store"]["ok"] and ready["checks"]["rules"]["ok"]
        finally:
            gate.stop()


def test_workers_add_up_and_a_dead_worker_s_counts_stay(
    world: World, sumdb: TestSumdb, tmp_path: Path
) -> None:
    with Upstream(world) as upstream:
        gate = Gate(tmp_path / "gate", rules(upstream.url, sumdb.verifier_key, sumdb.url))
        base = start(gate, workers=2)
        try:
            download(gate, sumdb, world, tmp_path / "cold")
            for _ in range(4):  # spread across both workers (a connection each)
                assert get(f"{gate.goproxy_url}/{DENIED}/@v/list")[0] == 403
            rows = records(gate)
            samples = scrape(base)
            check_against_trace(samples, rows)
            total = sum(v for (name, _), v in samples.items() if name == "modgate_requests_total")
            victim = gate.worker_pids()[0]
            os.kill(victim, signal.SIGKILL)
            gate.wait_for("is serving again")
            after = scrape(base)
            assert (
                sum(v for (name, _), v in after.items() if name == "modgate_requests_total")
                == total
            )
        finally:
            gate.stop()
    multiproc = gate.confdir / "metrics"
    assert multiproc.is_dir() and oct(multiproc.stat().st_mode & 0o777) == "0o700"
