"""Work where go works: a checksum database reached only through the module proxy.

On many networks (corporate ones, mirrors, air gaps, the machines this was written on)
the database's own host is unreachable and go verifies through
`<GOPROXY>/sumdb/<name>/…` (cmd/go/internal/modfetch/sumdb.go, initBase). modgate's
default setup, with no `checksum.databases`, must find the database the same way.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from world.gate import Gate
from world.gocmd import go_env, run_go
from world.modules import UPPER, World, graph, proxy_path
from world.sumdb import TestSumdb
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = graph(n_modules=6, workdir=tmp_path_factory.mktemp("world"))
    yield w
    w.close()


def database(world: World, name: str) -> TestSumdb:
    """A database of the world, never started: only the proxy serves it."""
    db = TestSumdb(name)
    for mv in world:
        db.add(mv.path, mv.version, mv.zip_hash, mv.gomod_hash)
    return db


@pytest.mark.parametrize(
    "name",
    [
        "sumdb.modgate.test",
        # cmd/go's own test database has a path in its name (testdata/mod, proxy_test.go)
        "localhost.localdev/sumdb",
    ],
)
@pytest.mark.parametrize("mode", ["proxy", "goproxy"])
def test_default_database_is_found_through_the_gated_proxy(
    world: World, tmp_path: Path, mode: str, name: str
) -> None:
    db = database(world, name)
    target = f"{UPPER}@v1.2.1"
    with Upstream(world, sumdb=db) as upstream:
        # No checksum section: the database is GOSUMDB's (the option stands in for the
        # environment), whose own host does not resolve; only the upstream serves it.
        gate = Gate(
            tmp_path / "gate", f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\n"
        )
        gate.extra_args = ["--set", f"modgate_gosumdb={db.verifier_key}"]
        with gate:
            via = f"{upstream.url}/sumdb/{name}"
            assert f"verifies with checksum database {name} through {via}" in gate.output()
            env = gate.client_env(
                go_env(tmp_path / "c", f"https://{HOST}", GOSUMDB=db.verifier_key), mode
            )
            done = run_go(["mod", "download", "-json", target], env, tmp_path)
            assert json.loads(done.stdout)["Sum"] == world.get(UPPER, "v1.2.1").zip_hash
            with urllib.request.urlopen(
                f"{gate.goproxy_url}/{proxy_path(UPPER, 'v1.2.1', '.zip')}"
            ) as r:
                assert r.headers["X-Modgate-Hash"] == (
                    f"{world.get(UPPER, 'v1.2.1').zip_hash} verified by checksum database {name}"
                )
        assert upstream.count(f"/sumdb/{name}/lookup/*") > 0
        assert upstream.count(f"/sumdb/{name}/supported") >= 1
