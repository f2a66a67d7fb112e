"""Offline means every order: a go client verifies offline, in any order and from any
state of its own, everything modgate cached while online.

Each lookup answer carries the tree head the database had signed when modgate fetched
it, and the database grows between lookups. go proves each head against the newest one
it has seen (client.go mergeLatest, checkTrees) and each record in its newest tree
(checkRecord), reading tiles of that tree: which tiles depends on the order of its
lookups and on the tree kept in its GOPATH/pkg/sumdb. So modgate must keep, while
online, the tiles for every pair of heads it served and every record in every larger
head, not only the tiles some client happened to ask for.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from world.gate import Gate
from world.gocmd import go_env, run_go
from world.modules import ModuleVersion, World
from world.sumdb import TestSumdb
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
DB = "sumdb.modgate.test"
# The log grows by SPACING records before each of the world's versions is logged, and
# by GROWTH records before each lookup it answers; an answer carries a head up to LAG
# records older than the newest. Every head then has tiles of its own at levels 0 and 1.
SPACING = 300
GROWTH = 700
LAG = 7000


WORLD_MODULES = 6  # the shared `world` fixture (conftest.py), this small


def rules(upstream: Upstream, db: TestSumdb) -> str:
    return (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\n"
        f"checksum:\n  databases:\n    - key: {db.verifier_key}\n      upstream: {db.url}\n"
    )


def download(gate: Gate, db: TestSumdb, client: Path, versions: list[ModuleVersion]) -> None:
    """One `go mod download` per version, in order, by one client: its GOPATH (so its
    latest tree and its tile cache) is kept from one to the next."""
    env = gate.client_env(go_env(client, f"https://{HOST}", GOSUMDB=db.verifier_key))
    for mv in versions:
        done = run_go(["mod", "download", "-json", mv.id], env, client.parent, check=False)
        assert done.returncode == 0, f"{client.name}: {mv.id}:\n{done.stdout}{done.stderr}"


def test_fresh_clients_verify_offline_in_any_order(world: World, tmp_path: Path) -> None:
    # (Not the world's v1 pseudo-version of a /v2 module: go refuses its zip anyway.)
    versions = sorted((mv for mv in world if "/v2@v1." not in mv.id), key=lambda mv: mv.id)
    db = TestSumdb(DB)
    for mv in versions:
        db.grow(SPACING)
        db.add(mv.path, mv.version, mv.zip_hash, mv.gomod_hash)
    db.grow_per_lookup, db.lag = GROWTH, LAG
    with db, Upstream(world) as upstream, Gate(tmp_path / "gate", rules(upstream, db)) as gate:
        # Online: three clients fetch a third each, in different orders, while the
        # database grows, between lookups and between clients; modgate restarts once.
        thirds = [versions[0::3], versions[1::3][::-1], versions[2::3]]
        for i, part in enumerate(thirds):
            download(gate, db, tmp_path / f"online{i}", part)
            db.grow(97)
            if i == 1:
                gate.stop()
                gate.start()
        lookups = [n for path, n in db.counts.items() if path.startswith("/lookup/")]
        assert lookups == [1] * len(versions)  # each once: every answer has its own tree

        upstream.stop()
        db.stop()
        online_log = len(gate.output())  # (the log of this start)
        shuffled = random.Random(12).sample(versions, len(versions))
        orders = {"forward": versions, "reverse": versions[::-1], "shuffled": shuffled}
        for name, order in orders.items():
            download(gate, db, tmp_path / f"offline-{name}", order)
        for mv in versions:  # each head alone, as the only tree a client knows
            download(gate, db, tmp_path / f"offline-{mv.path.rsplit('/')[-1]}-{mv.version}", [mv])
        # A client that kept its latest tree and its tiles from an online run.
        download(gate, db, tmp_path / "online0", versions[::-1])
        gate.stop()  # its log is complete
    # Not even a partial tile go would have replaced with a prefix of the full one.
    offline = gate.output()[online_log:].splitlines()
    assert any("sumdb-tile" in line and " hit " in line for line in offline)
    missed = [line for line in offline if " 502 " in line]
    assert not missed, "\n".join(missed)
