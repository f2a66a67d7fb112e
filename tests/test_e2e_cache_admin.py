"""`modgate cache ls/stats/evict/prune` on a cache a running modgate fills and serves:
what it lists is what go downloaded; an evicted version is fetched and checked again at
its next request (also the small answers the running modgate held in memory); prune
removes least recently used module answers and keeps the checksum-database material."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from world.gate import Gate, modgate_command
from world.gocmd import go_env, run_go
from world.modules import BULK, World, escape, graph_roots
from world.sumdb import TestSumdb
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

WORLD_MODULES = 8
WORLD_PAYLOAD = 8 << 20  # and BULK, a zip large enough to stream
HOST = "proxy.modgate.test"


@pytest.fixture
def running(world: World, tmp_path: Path) -> Iterator[tuple[Gate, Upstream, TestSumdb]]:
    with TestSumdb().add_world(world) as db, Upstream(world) as upstream:
        rules = (
            f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\n"
            f"checksum:\n  databases:\n    - key: {db.verifier_key}\n      upstream: {db.url}\n"
        )
        with Gate(tmp_path / "gate", rules) as gate:
            yield gate, upstream, db


def download(gate: Gate, db: TestSumdb, home: Path, target: str) -> dict[str, str]:
    env = gate.client_env(go_env(home, f"https://{HOST}", GOSUMDB=db.verifier_key))
    home.mkdir(parents=True, exist_ok=True)
    done = run_go(["mod", "download", "-json", target], env, home)
    info: dict[str, str] = json.loads(done.stdout)
    return info


def cache(gate: Gate, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(modgate_command("cache", *args, "--cache-dir", str(gate.cache_dir)),
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_ls_and_stats_show_what_go_downloaded(
    running: tuple[Gate, Upstream, TestSumdb], world: World, tmp_path: Path
) -> None:
    gate, _, db = running
    info = download(gate, db, tmp_path / "c", f"{graph_roots(world)[0]}@latest")
    listed = cache(gate, "ls", info["Path"], "--json")
    assert listed.returncode == 0, listed.stderr
    items = [json.loads(line) for line in listed.stdout.splitlines()]
    kinds = {i["kind"] for i in items if i["version"] == info["Version"]}
    assert kinds >= {"info", "mod", "zip"}
    zip_item = next(i for i in items if i["kind"] == "zip" and i["version"] == info["Version"])
    assert zip_item["size"] == Path(info["Zip"]).stat().st_size
    stats = json.loads(cache(gate, "stats", "--json").stdout)
    assert stats["by_kind"]["zip"][0] >= 1 and stats["by_kind"]["sumdb-lookup"][0] >= 1
    assert stats["hit_ratio"] is not None
    text = cache(gate, "stats").stdout
    assert "largest modules:" in text and info["Path"] in text


def test_an_evicted_version_is_fetched_and_checked_again(
    running: tuple[Gate, Upstream, TestSumdb], world: World, tmp_path: Path
) -> None:
    gate, upstream, db = running
    target = f"{graph_roots(world)[0]}@latest"
    info = download(gate, db, tmp_path / "a", target)
    download(gate, db, tmp_path / "b", target)  # served from the cache (and held in memory)
    mod = f"{info['Path']}/@v/{info['Version']}.mod"
    before = upstream.count(f"*{info['Version']}.mod")
    evicted = cache(gate, "evict", f"{info['Path']}@{info['Version']}")
    assert evicted.returncode == 0 and "evicted" in evicted.stdout, evicted.stderr
    listed = cache(gate, "ls", f"{info['Path']}@{info['Version']}", "--json").stdout
    assert listed == ""
    time.sleep(1.2)  # the running modgate looks at the eviction stamp once a second
    download(gate, db, tmp_path / "c", f"{info['Path']}@{info['Version']}")
    assert upstream.count(f"*{info['Version']}.mod") > before, f"{mod} not fetched again"
    assert cache(gate, "evict", "example.modgate.test/nothing@v1.0.0").returncode == 1


def test_prune_removes_module_answers_least_recently_used_first_and_keeps_proofs(
    running: tuple[Gate, Upstream, TestSumdb], world: World, tmp_path: Path
) -> None:
    gate, _, db = running
    download(gate, db, tmp_path / "a", f"{graph_roots(world)[0]}@latest")
    stats = json.loads(cache(gate, "stats", "--json").stdout)
    proofs = sum(n for kind, (n, _) in stats["by_kind"].items() if kind.startswith("sumdb"))
    dry = cache(gate, "prune", "--max-size", "0", "--dry-run")
    assert dry.returncode == 0 and "would remove" in dry.stdout
    assert json.loads(cache(gate, "stats", "--json").stdout)["entries"] == stats["entries"]
    pruned = cache(gate, "prune", "--max-size", "0")
    assert pruned.returncode == 0, pruned.stderr
    after = json.loads(cache(gate, "stats", "--json").stdout)
    assert set(after["by_kind"]) <= {"sumdb-lookup", "sumdb-tile", "sumdb-latest"}
    assert sum(n for n, _ in after["by_kind"].values()) == proofs
    nothing = cache(gate, "prune")
    assert nothing.returncode == 2 and "--max-size" in nothing.stderr


def test_a_zip_being_served_is_served_whole_while_prune_removes_it(
    running: tuple[Gate, Upstream, TestSumdb], world: World, tmp_path: Path
) -> None:
    """The open file outlives its name: a client reading a stored zip slowly gets every
    byte of it, checked, though `prune` removed the entry meanwhile."""
    import hashlib
    import ssl
    import urllib.request

    gate, upstream, db = running
    bulk = world.get(BULK, "v1.0.0")
    download(gate, db, tmp_path / "prime", f"{BULK}@v1.0.0")
    want = hashlib.sha256(world.zip_path(bulk).read_bytes()).hexdigest()
    context = ssl.create_default_context(cafile=gate.bundle)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"https": gate.proxy_url}),
                                         urllib.request.HTTPSHandler(context=context))  # fmt: skip
    url = f"https://{HOST}/{escape(BULK)}/@v/v1.0.0.zip"
    digest, got = hashlib.sha256(), 0
    with opener.open(url, timeout=60) as answer:
        assert answer.headers["X-Modgate-Cache"] == "hit"
        chunk = answer.read(1 << 16)
        digest.update(chunk)
        got += len(chunk)
        pruned = cache(gate, "prune", "--max-size", "0")
        assert pruned.returncode == 0, pruned.stderr
        left = [json.loads(line) for line in cache(gate, "ls", BULK, "--json").stdout.splitlines()]
        assert {i["kind"] for i in left} == {"sumdb-lookup"}  # the zip is gone; its proof stays
        while chunk := answer.read(1 << 16):
            digest.update(chunk)
            got += len(chunk)
            time.sleep(0.001)
    assert digest.hexdigest() == want and got == world.zip_path(bulk).stat().st_size
    upstream.stop()  # and no orphan left: the next request is a miss, not a broken hit
    verify = cache(gate, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
