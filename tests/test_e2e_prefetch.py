"""`modgate prefetch` for real: a main module's whole build list fetched through a running
modgate (its rules, its checks); then the upstream and the checksum database stop, and
fresh go clients with empty module caches download and verify everything offline. Also
standalone on a cache directory, and with a module the rules refuse."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from world.gate import Gate, modgate_command
from world.gocmd import go_env, run_go
from world.modules import MainModule, World, write_main_module
from world.sumdb import TestSumdb
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

WORLD_MODULES = 10
HOST = "proxy.modgate.test"


@pytest.fixture
def app(world: World, tmp_path: Path) -> MainModule:
    """A main module with its go.sum, tidied straight from the world's files."""
    app = write_main_module(world, tmp_path / "app")
    tree = world.write_proxy_tree(tmp_path / "tree")
    run_go(["mod", "tidy"], go_env(tmp_path / "tidy", f"file://{tree}"), app.dir)
    return app


@pytest.fixture
def db(world: World) -> Iterator[TestSumdb]:
    with TestSumdb().add_world(world) as db:
        yield db


def rules(upstream: Upstream, db: TestSumdb, extra: str = "") -> str:
    return (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\n"
        f"checksum:\n  databases:\n    - key: {db.verifier_key}\n      upstream: {db.url}\n{extra}"
    )


def prefetch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(modgate_command("prefetch", *args), env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def offline_build(gate: Gate, db: TestSumdb, app: MainModule, home: Path) -> None:
    """A fresh client (empty module cache, go.sum checked against the database through
    modgate) downloads the whole build list, with nothing upstream."""
    env = gate.client_env(go_env(home, f"https://{HOST}", GOSUMDB=db.verifier_key))
    run_go(["mod", "download", "all"], env, app.dir)
    run_go(["build", "./..."], env, app.dir)


def test_prefetch_then_build_offline(
    app: MainModule, world: World, db: TestSumdb, tmp_path: Path
) -> None:
    with Upstream(world) as upstream, Gate(tmp_path / "gate", rules(upstream, db)) as gate:
        env = go_env(tmp_path / "p", "off", GOSUMDB=db.verifier_key)
        done = prefetch(str(app.dir / "go.mod"), "--goproxy", gate.goproxy_url, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert " fetched," in done.stdout and "0 refused, 0 failed" in done.stdout
        again = prefetch(str(app.dir), "--goproxy", gate.goproxy_url, env=env)
        assert again.returncode == 0 and " 0 fetched," in again.stdout, again.stdout
        upstream.stop()
        db.stop()
        offline_build(gate, db, app, tmp_path / "offline")


def test_standalone_on_a_cache_dir_then_a_modgate_serves_it_offline(
    app: MainModule, world: World, db: TestSumdb, tmp_path: Path
) -> None:
    cache = tmp_path / "home" / "cache"
    with Upstream(world) as upstream:
        text = rules(upstream, db)
        (tmp_path / "rules.yaml").write_text(text)
        env = go_env(tmp_path / "p", "off", GOSUMDB=db.verifier_key)
        done = prefetch(str(app.dir / "go.sum"), "--cache-dir", str(cache), "--rules",
                        str(tmp_path / "rules.yaml"), env=env)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        upstream.stop()
        db.stop()
        with Gate(tmp_path / "gate", text, cache_dir=cache) as gate:
            offline_build(gate, db, app, tmp_path / "offline")


def test_a_refused_module_is_reported_with_the_rule(
    app: MainModule, world: World, db: TestSumdb, tmp_path: Path
) -> None:
    first = app.requires[0][0]
    refuse = f"modules:\n  - deny: {first}\n    reason: not this one\n  - allow: '**'\n"
    with Upstream(world) as upstream, Gate(tmp_path / "gate", rules(upstream, db, refuse)) as gate:
        lines = "".join(f"{m}@{v}\n" for m, v in app.requires)
        done = subprocess.run(modgate_command("prefetch", "-", "--goproxy", gate.goproxy_url),
                              input=lines, env=go_env(tmp_path / "p", "off"), capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode == 1
        assert f"refused {first}@" in done.stdout and "not this one" in done.stdout
