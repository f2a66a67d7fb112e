"""Several replicas, one cache (issue 17), end to end: `modgate run` processes, each with
its own local cache, sharing one S3 bucket (SeaweedFS) and one Redis, with real go
commands spread over them. The upstream must see one fetch per artifact across all."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from world.gate import Gate
from world.gocmd import go_env, run_go
from world.modules import MainModule, ModuleVersion, World, write_main_module
from world.servers import ACCESS_KEY, SECRET_KEY, RedisServer, S3Server
from world.upstream import Upstream

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOST = "proxy.modgate.test"
PRIVATE = "example.modgate.test"
BIG = f"{PRIVATE}/big"
BIG_ZIP = f"/{BIG}/@v/v1.0.0.zip"


def rules(upstream: str, s3: S3Server, redis: RedisServer, lock_ttl: str = "3s") -> str:
    return (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream!r}\n"
        f"checksum:\n  private: {PRIVATE}\n"
        f"store:\n  s3:\n    endpoint: {s3.endpoint}\n    bucket: {s3.bucket}\n"
        f"    part_size: 5MiB\n    timeout: 5s\n"
        f"coordination:\n  redis:\n    url: {redis.url}\n    lock_ttl: {lock_ttl}\n"
    )


@dataclass
class Cluster:
    upstream: Upstream
    s3: S3Server
    redis: RedisServer
    replicas: list[Gate]

    def client(self, i: int, home: Path) -> dict[str, str]:
        """A go environment with a fresh module cache on replica i % n (as a proxy or at
        its GOPROXY endpoint, alternately)."""
        gate = self.replicas[i % len(self.replicas)]
        return gate.client_env(go_env(home, f"https://{HOST}"), ("proxy", "goproxy")[i % 2])

    def logs(self) -> str:
        return "\n".join(g.output() for g in self.replicas)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[S3Server, RedisServer]]:
    with S3Server(tmp_path / "s3") as s3, RedisServer(tmp_path / "redis") as redis:
        yield s3, redis  # type: ignore[misc]


def cluster(
    stack: ExitStack, world: World, tmp_path: Path, servers: tuple[S3Server, RedisServer],
    n: int = 3, delay: float = 0.05, lock_ttl: str = "3s", workers: int = 1,
) -> Cluster:  # fmt: skip
    """n replicas; the first with `workers` worker processes."""
    s3, redis = servers
    # The delay widens the window in which replicas would fetch the same answer twice.
    upstream = stack.enter_context(Upstream(world, delay=delay))
    replicas = []
    for i in range(n):
        gate = Gate(
            tmp_path / f"replica{i}", rules(upstream.url, s3, redis, lock_ttl),
            workers=workers if i == 0 else 1,
        )  # fmt: skip
        gate.env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        replicas.append(stack.enter_context(gate))
    return Cluster(upstream, s3, redis, replicas)


def apps(app: MainModule, tmp_path: Path, name: str, n: int) -> list[MainModule]:
    out = []
    for i in range(n):
        dest = tmp_path / f"{name}{i}"
        shutil.copytree(app.dir, dest)
        out.append(MainModule(dest, app.path, app.requires, app.expected_output))
    return out


def tidy_all(c: Cluster, tmp_path: Path, app: MainModule, name: str, n: int) -> set[str]:
    """`go mod tidy` in n fresh clients spread over the replicas, at once; every go.sum."""
    copies = apps(app, tmp_path, name, n)
    envs = [c.client(i, tmp_path / f"{name}-home{i}") for i in range(n)]
    with ThreadPoolExecutor(n) as pool:
        done = list(pool.map(
            lambda i: run_go(["mod", "tidy"], envs[i], copies[i].dir, check=False, timeout=240),
            range(n),
        ))  # fmt: skip
    failed = [d.stderr for d in done if d.returncode != 0]
    assert not failed, f"{len(failed)} of {n} go commands failed; first:\n{failed[0]}"
    return {(a.dir / "go.sum").read_text() for a in copies}


def fetched_once(upstream: Upstream) -> dict[str, int]:
    """Upstream paths fetched more than once (each replica asks `/supported` at start)."""
    seen = {p: n for p, n in upstream.counts().items() if not p.endswith("/supported")}
    assert seen, "the upstream saw nothing"
    return {p: n for p, n in seen.items() if n > 1}


def get(url: str, timeout: float = 120) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_three_replicas_cold_warm_offline_fetch_each_artifact_once(
    world: World, tmp_path: Path, servers: tuple[S3Server, RedisServer]
) -> None:
    app = write_main_module(world, tmp_path / "app")
    with ExitStack() as stack:
        c = cluster(stack, world, tmp_path, servers, n=4)
        spare, c.replicas = c.replicas[3], c.replicas[:3]  # empty until the offline round
        cold = tidy_all(c, tmp_path, app, "cold", 3)
        assert len(cold) == 1 and cold.pop()
        assert fetched_once(c.upstream) == {}
        fetched = sum(c.upstream.counts().values())
        assert c.s3.objects()  # published

        warm = tidy_all(c, tmp_path, app, "warm", 6)
        assert len(warm) == 1
        assert sum(c.upstream.counts().values()) == fetched  # nothing new upstream

        c.upstream.stop()
        c.replicas = [*c.replicas, spare]  # a replica that never saw these modules
        offline = tidy_all(c, tmp_path, app, "offline", 4)
        assert offline == warm
        assert "falling back to local single-flight" not in c.logs()


def test_32_clients_over_3_replicas_one_with_2_workers_cold_fetch_each_artifact_once(
    world: World, tmp_path: Path, servers: tuple[S3Server, RedisServer]
) -> None:
    app = write_main_module(world, tmp_path / "app")
    with ExitStack() as stack:
        c = cluster(stack, world, tmp_path, servers, workers=2)  # 4 processes in all
        sums = tidy_all(c, tmp_path, app, "c", 32)
        assert len(sums) == 1
        assert fetched_once(c.upstream) == {}


@pytest.fixture
def big_world() -> Iterator[World]:
    with World([ModuleVersion(BIG, "v1.0.0", payload_bytes=24_000_000)]) as w:
        yield w


def test_a_replica_killed_mid_download_leaves_the_others_serving_and_nothing_partial(
    big_world: World, tmp_path: Path, servers: tuple[S3Server, RedisServer]
) -> None:
    want = big_world.zip_path(big_world.get(BIG, "v1.0.0")).read_bytes()
    with ExitStack() as stack:
        c = cluster(stack, big_world, tmp_path, servers, delay=0, lock_ttl="2s")
        c.upstream.fault(BIG_ZIP, throttle=4_000_000, times=1)  # ~6 s: time to kill it
        first, *others = c.replicas
        results: list[tuple[int, bytes] | Exception] = []

        def fetch(gate: Gate) -> None:
            try:
                results.append(get(gate.goproxy_url + BIG_ZIP))
            except Exception as e:  # the killed replica's connection breaks
                results.append(e)

        victim = threading.Thread(target=fetch, args=(first,))
        victim.start()
        deadline = time.monotonic() + 30
        while c.upstream.count(BIG_ZIP) == 0:
            assert time.monotonic() < deadline, "the zip's download never started"
            time.sleep(0.05)
        waiting = [threading.Thread(target=fetch, args=(g,)) for g in others for _ in range(2)]
        for t in waiting:
            t.start()
        time.sleep(1.0)
        assert first.proc is not None
        os.kill(first.proc.pid, signal.SIGKILL)  # mid download, holding the cluster lock
        for t in [victim, *waiting]:
            t.join(120)
        served = [r for r in results if isinstance(r, tuple)]
        assert served.count((200, want)) == len(waiting)  # every survivor's client, whole
        assert all(r[0] != 200 or r[1] == want for r in served)  # never a wrong body
        assert c.upstream.count(BIG_ZIP) == 2  # the dead one's, and its successor's
        assert "cluster single-flight" not in c.logs()  # Redis never went away
        # Nothing partial in the bucket: every object whole, no upload left open.
        client = c.s3.client()
        assert client.list_multipart_uploads(Bucket=c.s3.bucket).get("Uploads", []) == []
        sizes = [o["Size"] for o in client.list_objects_v2(Bucket=c.s3.bucket)["Contents"]]
        assert len(want) in sizes
        for gate in others:
            assert get(gate.goproxy_url + BIG_ZIP) == (200, want)
        assert c.upstream.count(BIG_ZIP) == 2


def test_redis_stopped_and_restarted_mid_run_is_invisible_to_go(
    world: World, tmp_path: Path, servers: tuple[S3Server, RedisServer]
) -> None:
    app = write_main_module(world, tmp_path / "app")
    with ExitStack() as stack:
        c = cluster(stack, world, tmp_path, servers, delay=0.1)
        stopper = threading.Timer(1.0, c.redis.stop)
        stopper.start()
        tidy_all(c, tmp_path, app, "during", 6)  # Redis goes away while they run
        stopper.join()
        for gate in c.replicas:
            gate.wait_for("falling back to local single-flight")
        c.redis.start()
        time.sleep(2.5)  # RETRY_AFTER: then the next lock tries Redis again
        app2 = write_main_module(world, tmp_path / "app2")  # same graph, fresh clients
        tidy_all(c, tmp_path, app2, "after", 3)
        assert "cluster single-flight resumed" in c.logs()


def test_an_unreachable_object_store_leaves_the_local_tier_serving_and_fails_clearly(
    world: World, tmp_path: Path, servers: tuple[S3Server, RedisServer]
) -> None:
    app = write_main_module(world, tmp_path / "app")
    with ExitStack() as stack:
        c = cluster(stack, world, tmp_path, servers, n=3)
        warm, later, fresh = c.replicas
        c.replicas = [warm]
        tidy_all(c, tmp_path, app, "cold", 1)
        c.s3.stop()
        c.replicas = [later]  # the bucket down, the upstream up: fetched and kept locally
        tidy_all(c, tmp_path, app, "nobucket", 1)
        later.wait_for("kept in this replica's cache only")
        c.upstream.stop()
        c.replicas = [warm, later]
        tidy_all(c, tmp_path, app, "local", 4)  # each from its own cache
        c.replicas = [fresh]
        copy = apps(app, tmp_path, "nothing", 1)[0]
        done = run_go(["mod", "tidy"], c.client(0, tmp_path / "nothing-home"), copy.dir,
                      check=False)  # fmt: skip
        assert done.returncode != 0
        assert "object store" in done.stderr and c.s3.endpoint in done.stderr, done.stderr
        logs = warm.output() + later.output() + fresh.output()
        assert "object store" in logs
    for where in (warm.home, later.home, fresh.home):  # logs, traces: no secret anywhere
        for f in where.rglob("*"):
            if f.is_file() and f.stat().st_size < 50_000_000:
                assert SECRET_KEY.encode() not in f.read_bytes(), f
        db = where / "trace.db"
        if db.exists():
            dump = "\n".join(sqlite3.connect(db).iterdump())
            assert SECRET_KEY not in dump


def test_a_fork_one_replica_never_saw_is_caught_through_the_shared_tree_head(
    tmp_path: Path, servers: tuple[S3Server, RedisServer]
) -> None:
    """Replica A verifies a download against the database's tree. The database then
    rewrites its history and grows on: replica B, which never saw the old tree, would
    find the new one consistent in itself; the head A shared in Redis shows the fork."""
    from world.modules import UPPER, graph
    from world.sumdb import TestSumdb

    s3, redis = servers
    with (
        graph(n_modules=6, workdir=tmp_path / "world") as world,
        TestSumdb("sumdb.modgate.test") as db,
        Upstream(world) as upstream,
    ):
        db.add_world(world)
        text = (
            f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\n"
            f"checksum:\n  databases:\n    - key: {db.verifier_key}\n      upstream: {db.url}\n"
            + rules(upstream.url, s3, redis).split("checksum:\n  private: example.modgate.test\n")[
                1
            ]
        )
        with ExitStack() as stack:
            a, b = (stack.enter_context(_replica(tmp_path / n, text)) for n in ("a", "b"))
            env = {"GOSUMDB": "off", "GONOSUMDB": "*", "GOINSECURE": "*"}
            first = run_go(
                ["mod", "download", "-json", f"{UPPER}@v1.2.1"],
                a.client_env(go_env(tmp_path / "ca", f"https://{HOST}", **env)), tmp_path,
                check=False,
            )  # fmt: skip
            assert first.returncode == 0, first.stderr
            db.fork(db.size - 1)
            db.grow(3)
            module = next(m for m in world.modules() if m != UPPER)
            other = f"{module}@{world.list_versions(module)[-1]}"
            forked = run_go(
                ["mod", "download", "-json", other],
                b.client_env(go_env(tmp_path / "cb", f"https://{HOST}", **env)), tmp_path,
                check=False,
            )  # fmt: skip
        assert forked.returncode != 0
        assert "SECURITY ERROR: checksum database" in forked.stdout + forked.stderr
        assert "another replica verified" in b.output()


def _replica(home: Path, text: str) -> Gate:
    gate = Gate(home, text)
    gate.env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    return gate


def test_a_replica_whose_rules_differ_is_reported_by_every_replica(
    world: World, tmp_path: Path, servers: tuple[S3Server, RedisServer]
) -> None:
    with ExitStack() as stack:
        c = cluster(stack, world, tmp_path, servers, n=2)
        a, b = c.replicas
        same = b.rules.read_text()
        b.rules.write_text(
            same + "modules:\n  - deny: example.modgate.test/zzz\n    reason: blocked here\n"
        )
        b.wait_for("rules differ across replicas: 1 of 2 processes run rules")
        a.wait_for("rules differ across replicas: 1 of 2 processes run rules", timeout=25)
        a.rules.write_text(b.rules.read_text())  # the edit reaches the other replica too
        a.wait_for("rules agree again across replicas")
        b.wait_for("rules agree again across replicas", timeout=25)
