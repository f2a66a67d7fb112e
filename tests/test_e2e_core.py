"""The core promise, end to end: the real go command downloads through a real modgate
process, gets byte-identical modules, and keeps working when the upstream is gone.

Each scenario runs twice: with go using modgate as its HTTPS proxy (the upstream
known to go under a made-up host name that modgate maps), and with go pointed at
modgate's plain GOPROXY endpoint.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from world.gate import Gate
from world.gocmd import go_env, run_go
from world.modules import (
    BULK,
    UPPER,
    MainModule,
    World,
    graph,
    proxy_path,
    write_main_module,
)
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
PRIVATE = "example.modgate.test"


def rules(chain: str, ttl: str = "10m") -> str:
    # The fixture modules are in no checksum database: private, as GONOSUMDB would say.
    return (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {chain!r}\ncache:\n  ttl: {ttl}\n"
        f"checksum:\n  private: {PRIVATE}\n"
    )


@pytest.fixture
def upstream(world: World) -> Iterator[Upstream]:
    with Upstream(world) as up:
        yield up


@pytest.fixture
def app(world: World, tmp_path: Path) -> MainModule:
    return write_main_module(world, tmp_path / "app")


@pytest.fixture(params=["proxy", "goproxy"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client(gate: Gate, home: Path, mode: str) -> dict[str, str]:
    """A go environment with a fresh module cache that reaches HOST through modgate."""
    return gate.client_env(go_env(home, f"https://{HOST}"), mode)


def gosum(app: MainModule) -> set[str]:
    return set((app.dir / "go.sum").read_text().splitlines())


def copy_app(app: MainModule, dest: Path) -> MainModule:
    shutil.copytree(app.dir, dest)
    return MainModule(dest, app.path, app.requires, app.expected_output)


def test_cold_download_then_offline_from_the_cache(
    world: World, upstream: Upstream, app: MainModule, tmp_path: Path, mode: str
) -> None:
    with Gate(tmp_path / "gate", rules(upstream.url)) as gate:
        env = client(gate, tmp_path / "cold", mode)
        pristine = copy_app(app, tmp_path / "pristine")
        run_go(["mod", "tidy"], env, app.dir)
        run_go(["list", "-m", "-versions", UPPER], env, app.dir)
        sums = gosum(app)
        assert sums and sums <= set(world.gosum_lines())  # byte-identical to the fixtures
        assert len([s for s in sums if "/go.mod " not in s]) >= 20  # zips of the whole graph
        seen = upstream.counts()
        assert seen and max(seen.values()) == 1, f"repeated upstream fetches: {seen}"
        # tidy also fetches zips of versions MVS then moves past; each was fetched once
        assert upstream.count("*.zip") >= len([s for s in sums if "/go.mod " not in s])

        upstream.stop()
        shutil.copy(pristine.dir / "go.mod", app.dir / "go.mod")
        (app.dir / "go.sum").unlink()
        offline = client(gate, tmp_path / "offline", mode)
        run_go(["mod", "tidy"], offline, app.dir)
        assert gosum(app) == sums
        built = run_go(["run", "."], offline, app.dir)
        assert built.stderr == app.expected_output
        versions = run_go(["list", "-m", "-versions", UPPER], offline, app.dir)
        assert versions.stdout.split() == [UPPER, *world.list_versions(UPPER)]


def test_sixteen_clients_at_once_make_one_fetch_per_artifact(
    world: World, app: MainModule, tmp_path: Path
) -> None:
    # A little latency widens the window in which the clients ask for the same thing.
    with (
        Upstream(world, delay=0.05) as upstream,
        Gate(tmp_path / "gate", rules(upstream.url)) as gate,
    ):
        apps = [copy_app(app, tmp_path / f"app{i}") for i in range(16)]
        envs = [
            client(gate, tmp_path / f"c{i}", "proxy" if i % 2 else "goproxy") for i in range(16)
        ]
        with ThreadPoolExecutor(16) as pool:
            done = list(
                pool.map(
                    lambda i: run_go(["mod", "tidy"], envs[i], apps[i].dir, check=False), range(16)
                )
            )
        failed = [d.stderr for d in done if d.returncode != 0]
        assert not failed, failed[0]
        assert all(gosum(a) == gosum(apps[0]) for a in apps)
        seen = upstream.counts()
        assert max(seen.values()) == 1, {p: n for p, n in seen.items() if n > 1}


@pytest.mark.parametrize(
    ("separator", "status", "falls_through"),
    [(",", 404, True), (",", 410, True), (",", 500, False), ("|", 500, True), ("|", 404, True),
     (",", 403, False), ("|", 403, True)],
)  # fmt: skip
def test_chain_falls_through_as_goproxy_does(
    world: World, app: MainModule, tmp_path: Path, mode: str, separator: str, status: int,
    falls_through: bool,
) -> None:  # fmt: skip
    with Upstream(World()) as first, Upstream(world) as second:
        first.fault("*", status=status, body=f"first upstream says {status}")
        with Gate(tmp_path / "gate", rules(f"{first.url}{separator}{second.url}")) as gate:
            done = run_go(["mod", "tidy"], client(gate, tmp_path / "c", mode), app.dir, check=False)
    if falls_through:
        assert done.returncode == 0, done.stderr
        assert second.count("*.zip") > 0
    else:
        assert done.returncode != 0
        assert "502 Bad Gateway" in done.stderr
        assert "server response: modgate: " in done.stderr
        assert f"{status} first upstream says {status}" in done.stderr
        assert second.counts() == {}


def test_a_truncated_zip_is_never_cached(
    world: World, upstream: Upstream, app: MainModule, tmp_path: Path, mode: str
) -> None:
    target = f"*/{UPPER.lower().replace('upper/case', '!upper/!case')}/@v/*.zip"
    upstream.fault(target, truncate=200, times=1)
    with Gate(tmp_path / "gate", rules(upstream.url)) as gate:
        first = run_go(["mod", "tidy"], client(gate, tmp_path / "c1", mode), app.dir, check=False)
        assert first.returncode != 0
        assert "502 Bad Gateway" in first.stderr
        assert (
            f"server response: modgate: {UPPER}@v1.2.1 (zip): no upstream answered" in first.stderr
        )
        assert "without sending complete message body (received 200 bytes" in first.stderr
        assert upstream.count(target) == 1
        run_go(["mod", "tidy"], client(gate, tmp_path / "c2", mode), app.dir)
        assert gosum(app) <= set(world.gosum_lines())
        assert upstream.count(target) == 2  # fetched again: the broken answer was not kept


def test_mutable_answers_are_served_stale_when_the_upstream_fails(
    world: World, upstream: Upstream, app: MainModule, tmp_path: Path
) -> None:
    with Gate(tmp_path / "gate", rules(upstream.url, ttl="0s")) as gate:
        url = f"{gate.goproxy_url}/{UPPER.replace('Upper/Case', '!upper/!case')}/@v/list"
        with urllib.request.urlopen(url) as r:
            assert r.headers["X-Modgate-Cache"] == "miss"
            fresh = r.read()
        # Past its TTL of 0s, once stored (a request meanwhile shares the first fetch).
        assert _cache_outcome_once_stored(url) == "refreshed"
        outside = tmp_path / "no-module"
        outside.mkdir()
        env = client(gate, tmp_path / "c", "goproxy")
        run_go(["list", "-m", "-versions", UPPER], env, outside)  # once while the upstream is up
        upstream.stop()
        with urllib.request.urlopen(url) as r:
            assert r.headers["X-Modgate-Cache"] == "stale"
            assert "Response is Stale" in r.headers["Warning"]
            assert r.read() == fresh
        versions = run_go(["list", "-m", "-versions", UPPER], env, outside)
        assert versions.stdout.split() == [UPPER, *world.list_versions(UPPER)]
        assert "serving stale" in gate.output()


@pytest.mark.parametrize("redirect", [True, False], ids=["redirected", "through-mitmproxy"])
def test_a_large_zip_streams_from_the_cache_byte_identical(
    tmp_path: Path, mode: str, redirect: bool
) -> None:
    """Cold (sent while it downloads) and warm (from the cache), to a client on this
    machine redirected to the loopback file server, or through mitmproxy as any other
    client gets it. The GOPROXY endpoint sends it itself, redirect or not."""
    with graph(n_modules=6, workdir=tmp_path / "world", payload_bytes=24 << 20) as big:
        bulk = big.get(BULK, "v1.0.0")
        with Upstream(big) as upstream, Gate(tmp_path / "gate", rules(upstream.url)) as gate:
            if not redirect:
                gate.extra_args += ["--set", "modgate_redirect_local=false"]
                gate.stop()
                gate.start()
            for run in ("cold", "warm"):
                env = client(gate, tmp_path / run, mode)
                done = run_go(["mod", "download", "-json", bulk.id], env, tmp_path)
                assert json.loads(done.stdout)["Sum"] == bulk.zip_hash, run
            assert upstream.count("*.zip") == 1
            url = f"{gate.goproxy_url}/{proxy_path(BULK, 'v1.0.0', '.zip')}"
            with urllib.request.urlopen(url) as r:  # as any HTTP client on this machine
                assert "/blob/" not in r.geturl(), r.geturl()
                assert r.read() == big.zip_path(bulk).read_bytes()


def test_a_large_cached_zip_altered_on_disk_never_reaches_the_client_whole(tmp_path: Path) -> None:
    with graph(n_modules=6, workdir=tmp_path / "world", payload_bytes=3 << 20) as big:
        bulk = big.get(BULK, "v1.0.0")
        with Upstream(big) as upstream, Gate(tmp_path / "gate", rules(upstream.url)) as gate:
            env = client(gate, tmp_path / "c1", "goproxy")
            run_go(["mod", "download", "-json", bulk.id], env, tmp_path)
            stored = gate.cache_dir / "artifacts" / _stored_file(gate, "%bulk/@v/v1.0.0.zip")
            with stored.open("r+b") as f:  # same size, one byte different
                f.seek(stored.stat().st_size // 2)
                byte = f.read(1)
                f.seek(-1, 1)
                f.write(bytes([byte[0] ^ 0xFF]))
            cut = run_go(
                ["mod", "download", "-json", bulk.id],
                client(gate, tmp_path / "c2", "goproxy"),
                tmp_path,
                check=False,
            )
            assert cut.returncode != 0
            assert "changed on disk" in gate.output()
            healed = run_go(
                ["mod", "download", "-json", bulk.id],
                client(gate, tmp_path / "c3", "goproxy"),
                tmp_path,
            )
            assert json.loads(healed.stdout)["Sum"] == bulk.zip_hash
            assert upstream.count("*bulk/@v/v1.0.0.zip") == 2


def _cache_outcome_once_stored(url: str) -> str:
    """X-Modgate-Cache of `url` once the previous answer has been stored: the answer
    goes out while it is being stored, and a request meanwhile joins that fetch."""
    deadline = time.monotonic() + 5
    while True:
        with urllib.request.urlopen(url) as r:
            outcome = r.headers["X-Modgate-Cache"]
        if outcome != "miss" or time.monotonic() > deadline:
            return str(outcome)
        time.sleep(0.05)


def _stored_file(gate: Gate, key_like: str) -> str:
    """The cache file of an entry. A zip sent while it downloads reaches the client
    before the copy into the cache is committed, so wait for it a little."""
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(gate.cache_dir / "artifacts" / "cache.db") as db:
            row = db.execute("SELECT filename FROM Cache WHERE key LIKE ?", (key_like,)).fetchone()
        if row is not None:
            return str(row[0])
        assert time.monotonic() < deadline, f"{key_like} was never stored"
        time.sleep(0.05)


def test_path_prefixes_on_both_sides(world: World, app: MainModule, tmp_path: Path) -> None:
    # Clients use https://proxy.modgate.test/go; the mirror serves below /mirror.
    with Upstream(world, base="/mirror") as upstream:
        text = rules(upstream.url).replace(f"url: https://{HOST}", f"url: https://{HOST}/go")
        with Gate(tmp_path / "gate", text) as gate:
            env = gate.client_env(go_env(tmp_path / "c", f"https://{HOST}/go"))
            run_go(["mod", "tidy"], env, app.dir)
            assert upstream.count("/mirror/*.zip") > 0
            outside = urllib.request.Request(f"{gate.goproxy_url}/not-a-module")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(outside)
            assert refused.value.code == 404
            assert refused.value.read() == b"modgate: not a module proxy path: /not-a-module\n"
