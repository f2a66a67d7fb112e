"""Verify before passing, end to end: the real go command through a real modgate, with a
checksum database (signed with a test key) that go itself also trusts.

Tampered artifacts and a misbehaving database are refused by modgate with the cause in
the one line go prints after "server response:", nothing is cached (the same request
succeeds once the upstream behaves), and it holds when the client's own checks are off.
"""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from world.gate import Gate, free_port, modgate_command
from world.gocmd import go_env, run_go
from world.modules import BULK, UPPER, MainModule, World, graph, proxy_path, write_main_module
from world.sumdb import Fault, TestSumdb
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
DB = "sumdb.modgate.test"
TARGET = f"{UPPER}@v1.2.1"


WORLD_MODULES = 6  # the shared `world` fixture (conftest.py), this small


@pytest.fixture
def sumdb(world: World) -> Iterator[TestSumdb]:
    db = TestSumdb(DB)
    for mv in world:
        db.add(mv.path, mv.version, mv.zip_hash, mv.gomod_hash)
    with db:
        yield db


@pytest.fixture
def tree(world: World, tmp_path: Path) -> Path:
    """The world as files, so a test can tamper with one and put it back."""
    return world.write_proxy_tree(tmp_path / "tree")


def rules(upstream: Upstream, db: TestSumdb, checksum: str = "") -> str:
    return (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\n"
        f"checksum:\n  databases:\n    - key: {db.verifier_key}\n      upstream: {db.url}\n"
        + checksum
    )


def client(
    gate: Gate, home: Path, db: TestSumdb, mode: str = "proxy", checks: bool = True
) -> dict[str, str]:
    """go with its own checksum checks on (GOSUMDB is the test database, reached through
    modgate's /sumdb/ path), or with every client-side check off."""
    if checks:
        env = go_env(home, f"https://{HOST}", GOSUMDB=db.verifier_key)
    else:
        env = go_env(home, f"https://{HOST}", GOSUMDB="off", GONOSUMDB="*", GOINSECURE="*")
    return gate.client_env(env, mode)


def download(
    env: dict[str, str], cwd: Path, target: str = TARGET
) -> subprocess.CompletedProcess[str]:
    return run_go(["mod", "download", "-json", target], env, cwd, check=False)


@pytest.mark.parametrize("mode", ["proxy", "goproxy"])
def test_cold_download_is_verified_then_served_with_upstream_and_database_gone(
    world: World, sumdb: TestSumdb, tmp_path: Path, mode: str
) -> None:
    app: MainModule = write_main_module(world, tmp_path / "app")
    with Upstream(world) as upstream, Gate(tmp_path / "gate", rules(upstream, sumdb)) as gate:
        run_go(["mod", "tidy"], client(gate, tmp_path / "cold", sumdb, mode), app.dir)
        sums = set((app.dir / "go.sum").read_text().splitlines())
        assert sums <= set(world.gosum_lines())
        zip_url = f"{gate.goproxy_url}/{proxy_path(UPPER, 'v1.2.1', '.zip')}"
        with urllib.request.urlopen(zip_url) as r:
            assert r.headers["X-Modgate-Hash"] == (
                f"{world.get(UPPER, 'v1.2.1').zip_hash} verified by checksum database {DB}"
            )
        assert sum(n for p, n in sumdb.counts.items() if "/lookup/" in p) > 0

        upstream.stop()
        sumdb.stop()
        (app.dir / "go.sum").unlink()
        offline = client(gate, tmp_path / "offline", sumdb, mode)  # a fresh client sumdb cache too
        run_go(["mod", "tidy"], offline, app.dir)
        assert set((app.dir / "go.sum").read_text().splitlines()) == sums


@pytest.mark.parametrize("mode", ["proxy", "goproxy"])
def test_a_new_upstream_chain_finds_every_verified_module_the_old_one_stored(
    world: World, sumdb: TestSumdb, tmp_path: Path, mode: str
) -> None:
    """A mirror added in front of the upstream (rules.yaml `upstream:` changed) keeps the
    cache: offline, a fresh client gets the whole graph from it (issue 13)."""
    app: MainModule = write_main_module(world, tmp_path / "app")
    pristine = (app.dir / "go.mod").read_bytes()
    with Upstream(world) as upstream:
        with Gate(tmp_path / "gate", rules(upstream, sumdb)) as gate:
            run_go(["mod", "tidy"], client(gate, tmp_path / "cold", sumdb, mode), app.dir)
        sums = (app.dir / "go.sum").read_text()
        mirror = f"http://127.0.0.1:{free_port()}"  # nothing listens: a mirror that is down
        changed = rules(upstream, sumdb).replace(
            f"upstream: {upstream.url}\n", f'upstream: "{mirror}|{upstream.url}"\n', 1
        )
    sumdb.stop()
    (app.dir / "go.mod").write_bytes(pristine)
    (app.dir / "go.sum").unlink()
    with Gate(tmp_path / "gate", changed) as gate:
        assert f"{mirror}|" in gate.rules.read_text()
        offline = client(gate, tmp_path / "offline", sumdb, mode)
        run_go(["mod", "tidy"], offline, app.dir)
        assert (app.dir / "go.sum").read_text() == sums
        assert run_go(["run", "."], offline, app.dir).stderr == app.expected_output
        gate.wait_for(" zip ")
        assert " miss " not in gate.output()


def _rezip(path: Path, change: Callable[[dict[str, bytes]], None]) -> bytes:
    """The zip at `path` with its members changed by `change`; returns the original."""
    original = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(original)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    change(members)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    path.write_bytes(out.getvalue())
    return original


def _flip_byte(members: dict[str, bytes]) -> None:
    name = next(n for n in members if n.endswith(".go"))
    data = bytearray(members[name])
    data[-2] ^= 0x20
    members[name] = bytes(data)


def _extra_file(members: dict[str, bytes]) -> None:
    members[f"{TARGET}/extra.go"] = b"package case\n"


def _outside(members: dict[str, bytes]) -> None:
    members["example.modgate.test/other@v1.0.0/x.go"] = b"package x\n"


ZIP = proxy_path(UPPER, "v1.2.1", ".zip")
MOD = proxy_path(UPPER, "v1.2.1", ".mod")
SECURITY_ZIP = f"SECURITY: {TARGET}: upstream sent h1:"
SECURITY_MOD = f"SECURITY: {TARGET}/go.mod: upstream sent h1:"


@pytest.mark.parametrize("checks", [True, False], ids=["client-checks-on", "client-checks-off"])
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("zip-byte-changed", f"{SECURITY_ZIP}"),
        ("zip-extra-file", f"{SECURITY_ZIP}"),
        (
            "zip-file-outside-prefix",
            "zip entry 'example.modgate.test/other@v1.0.0/x.go' is outside",
        ),
        ("mod-changed", f"{SECURITY_MOD}"),
        ("truncated-zip", "without sending complete message body"),
    ],
)
def test_tampered_artifacts_are_refused_and_not_cached(
    world: World,
    sumdb: TestSumdb,
    tree: Path,
    tmp_path: Path,
    case: str,
    expected: str,
    checks: bool,
) -> None:
    with Upstream(tree) as upstream, Gate(tmp_path / "gate", rules(upstream, sumdb)) as gate:
        zip_file, mod_file = tree / ZIP, tree / MOD
        good_zip, good_mod = zip_file.read_bytes(), mod_file.read_bytes()
        match case:
            case "zip-byte-changed":
                _rezip(zip_file, _flip_byte)
            case "zip-extra-file":
                _rezip(zip_file, _extra_file)
            case "zip-file-outside-prefix":
                _rezip(zip_file, _outside)
            case "mod-changed":
                mod_file.write_bytes(good_mod + b"// tampered\n")
            case "truncated-zip":
                upstream.fault(f"/{ZIP}", truncate=100)
        refused = download(client(gate, tmp_path / "c1", sumdb, checks=checks), tmp_path)
        assert refused.returncode != 0
        assert "502 Bad Gateway" in refused.stdout + refused.stderr
        assert expected in refused.stdout + refused.stderr
        first = upstream.counts()

        zip_file.write_bytes(good_zip)
        mod_file.write_bytes(good_mod)
        upstream.clear_faults()
        healed = download(client(gate, tmp_path / "c2", sumdb, checks=checks), tmp_path)
        assert healed.returncode == 0, healed.stdout + healed.stderr
        # What was refused had not been kept: it was fetched again.
        refetched = f"/{MOD}" if case == "mod-changed" else f"/{ZIP}"
        assert upstream.counts()[refetched] == first[refetched] + 1
    assert "SECURITY" in gate.output() or case in ("zip-file-outside-prefix", "truncated-zip")


@pytest.mark.parametrize("checks", [True, False], ids=["client-checks-on", "client-checks-off"])
@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.WRONG_RECORD, "checksum missing from sumdb response"),
        (Fault.TAMPERED_RECORD, f"checksum database {DB}: {TARGET}:"),
        (Fault.BAD_SIGNATURE, "invalid signature for key"),
        (Fault.UNKNOWN_KEY, "note has no verifiable signatures"),
        (Fault.BAD_TILES, f"checksum database {DB}: {TARGET}:"),
    ],
)
def test_a_misbehaving_database_is_caught(
    world: World, sumdb: TestSumdb, tmp_path: Path, fault: Fault, expected: str, checks: bool
) -> None:
    with Upstream(world) as upstream, Gate(tmp_path / "gate", rules(upstream, sumdb)) as gate:
        sumdb.fault = fault
        refused = download(client(gate, tmp_path / "c1", sumdb, checks=checks), tmp_path)
        assert refused.returncode != 0
        assert expected in refused.stdout + refused.stderr, refused.stdout + refused.stderr
        sumdb.fault = Fault.NONE
        healed = download(client(gate, tmp_path / "c2", sumdb, checks=checks), tmp_path)
        assert healed.returncode == 0, healed.stdout + healed.stderr


def test_a_forked_database_is_refused_even_after_a_restart(
    world: World, sumdb: TestSumdb, tmp_path: Path
) -> None:
    with Upstream(world) as upstream:
        gate = Gate(tmp_path / "gate", rules(upstream, sumdb))
        with gate:
            first = download(client(gate, tmp_path / "c1", sumdb, checks=False), tmp_path)
            assert first.returncode == 0, first.stderr
        # The database rewrites history; modgate remembers the tree it verified.
        sumdb.fork(sumdb.size - 1)
        with gate:
            module = next(m for m in world.modules() if m != UPPER)
            other = f"{module}@{world.list_versions(module)[-1]}"
            forked = download(client(gate, tmp_path / "c2", sumdb, checks=False), tmp_path, other)
        assert forked.returncode != 0
        assert "SECURITY ERROR: checksum database" in forked.stdout + forked.stderr


def test_pins_from_a_go_sum_file_catch_a_private_module_mismatch(
    world: World, sumdb: TestSumdb, tree: Path, tmp_path: Path
) -> None:
    gosum = tmp_path / "pinned.sum"
    gosum.write_text("\n".join(world.get(UPPER, "v1.2.1").gosum_lines()) + "\n")
    private = f"  private: {UPPER}\n  go_sum: [{gosum}]\n"
    with (
        Upstream(tree) as upstream,
        Gate(tmp_path / "gate", rules(upstream, sumdb, private)) as gate,
    ):
        good = download(client(gate, tmp_path / "c0", sumdb, checks=False), tmp_path)
        assert good.returncode == 0, good.stderr
        zip_url = f"{gate.goproxy_url}/{ZIP}"
        with urllib.request.urlopen(zip_url) as r:
            assert r.headers["X-Modgate-Hash"].endswith(f"verified by {gosum}:1")
        assert sumdb.counts == {}  # private: the database was never asked

        other = f"{UPPER}@v1.2.0"
        pin = world.get(UPPER, "v1.2.0").gosum_lines()
        gosum.write_text(
            gosum.read_text() + pin[0].replace(pin[0].split()[-1], "h1:" + "A" * 43 + "=") + "\n"
        )
        gate.stop()
        with gate:
            refused = download(client(gate, tmp_path / "c1", sumdb, checks=False), tmp_path, other)
        assert refused.returncode != 0
        assert f"but {gosum}:3 says h1:AAAA" in refused.stdout + refused.stderr


@pytest.mark.parametrize("mode", ["proxy", "goproxy"])
def test_a_large_zip_failing_its_check_while_it_streams_never_arrives_whole(
    tmp_path: Path, mode: str
) -> None:
    """A zip over 1 MiB goes to the client while modgate downloads it; its end is held
    back until the hash is checked. A tampered one is cut short (go gets no zip), and the
    next request is told why."""
    with graph(n_modules=6, workdir=tmp_path / "world", payload_bytes=3 << 20) as big:
        bulk = big.get(BULK, "v1.0.0")
        tree = big.write_proxy_tree(tmp_path / "tree")
        zip_file = tree / proxy_path(BULK, "v1.0.0", ".zip")
        good = _rezip(
            zip_file, lambda members: members.update({f"{bulk.id}/extra.go": b"package bulk\n"})
        )
        db = TestSumdb(DB)
        for mv in big:
            db.add(mv.path, mv.version, mv.zip_hash, mv.gomod_hash)
        with db, Upstream(tree) as upstream, Gate(tmp_path / "gate", rules(upstream, db)) as gate:
            upstream.fault("*.zip", throttle=8 << 20)  # bytes reach the client before the check
            cut = download(client(gate, tmp_path / "c1", db, mode), tmp_path, bulk.id)
            assert cut.returncode != 0
            refusal = f"SECURITY: {bulk.id}: upstream sent h1:"
            gate.wait_for(refusal)
            [record] = [r for r in _trace(gate) if r["kind"] == "zip"]
            assert 0 < record["bytes_out"] < zip_file.stat().st_size  # streamed, end held back
            assert refusal in record["error"]
            assert record["hash_verdict"] == "refused"  # its hash, not a broken download

            told = download(client(gate, tmp_path / "c2", db, mode), tmp_path, bulk.id)
            assert told.returncode != 0
            assert "server response: modgate: " in told.stdout
            assert refusal in told.stdout
            assert upstream.count("*.zip") == 1  # refused from memory, not fetched again
            assert not list((tmp_path / "c1").rglob("bulk@v1.0.0/payload.bin"))

            zip_file.write_bytes(good)
            gate.stop()  # a restart forgets the refusal (it lasts negative_ttl otherwise)
            gate.start()
            healed = download(client(gate, tmp_path / "c3", db, mode), tmp_path, bulk.id)
            assert healed.returncode == 0, healed.stderr
            assert json.loads(healed.stdout)["Sum"] == bulk.zip_hash


def _trace(gate: Gate) -> list[dict[str, Any]]:
    """The records of the latest trace session, once the writer has them."""
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run(
            modgate_command("trace", "show", "last", "--json", "--db", str(gate.home / "trace.db")),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        records = json.loads(out.stdout)["requests"] if out.returncode == 0 else []
        if any(r["kind"] == "zip" for r in records) or time.monotonic() > deadline:
            return list(records)
        time.sleep(0.2)


def test_a_cached_artifact_altered_on_disk_is_healed(
    world: World, sumdb: TestSumdb, tmp_path: Path
) -> None:
    with Upstream(world) as upstream, Gate(tmp_path / "gate", rules(upstream, sumdb)) as gate:
        assert download(client(gate, tmp_path / "c1", sumdb), tmp_path).returncode == 0
        with sqlite3.connect(gate.cache_dir / "artifacts" / "cache.db") as db:
            changed = db.execute(
                "UPDATE Cache SET value = CAST(CAST(? AS BLOB) || substr(value, 2) AS BLOB) WHERE key LIKE ?",
                (b"X", f"% {ZIP}"),
            ).rowcount
        assert changed == 1
        healed = download(client(gate, tmp_path / "c2", sumdb), tmp_path)
        assert healed.returncode == 0, healed.stderr
        assert upstream.count(f"/{ZIP}") == 2
        assert "damaged or missing on disk" in gate.output()


def test_cache_verify_finds_a_corrupted_entry(tmp_path: Path) -> None:
    with graph(workdir=tmp_path / "world") as big, TestSumdb(DB) as sumdb:
        for mv in big:
            sumdb.add(mv.path, mv.version, mv.zip_hash, mv.gomod_hash)
        app = write_main_module(big, tmp_path / "app")
        with Upstream(big) as upstream, Gate(tmp_path / "gate", rules(upstream, sumdb)) as gate:
            env = client(gate, tmp_path / "c", sumdb)
            run_go(["mod", "tidy"], env, app.dir)
            run_go(["mod", "download", *(mv.id for mv in big)], env, tmp_path)
    verify = [*modgate_command("cache", "verify", "--cache-dir", str(gate.cache_dir))]
    clean = subprocess.run(verify, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    checked = int(clean.stdout.split("checked ")[1].split()[0])
    assert checked >= 100, clean.stdout
    with sqlite3.connect(gate.cache_dir / "artifacts" / "cache.db") as db:
        db.execute(
            "UPDATE Cache SET value = CAST(CAST(? AS BLOB) || substr(value, 2) AS BLOB) WHERE key LIKE ?",
            (b"X", f"% {ZIP}"),
        )
    bad = subprocess.run(verify, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert ZIP in bad.stdout and "1 bad" in bad.stdout
    removed = subprocess.run([*verify, "--remove"], capture_output=True, text=True, timeout=120)
    assert removed.returncode == 1 and "removed 1" in removed.stdout
    again = subprocess.run(verify, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout


def test_a_client_reaching_the_database_at_its_own_url_is_served_from_the_cache(
    world: World, sumdb: TestSumdb, tmp_path: Path
) -> None:
    # GOSUMDB="<key> https://sumdb.modgate.test": go goes straight to the database's URL
    # (through HTTPS_PROXY), which modgate intercepts and serves from its upstream.
    direct = (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {{up}}\n"
        f"checksum:\n  databases:\n    - key: {sumdb.verifier_key}\n"
        f"      url: https://{DB}\n      upstream: {sumdb.url}\n"
    )
    with (
        Upstream(world) as upstream,
        Gate(tmp_path / "gate", direct.format(up=upstream.url)) as gate,
    ):
        gosumdb = f"{sumdb.verifier_key} https://{DB}"
        env = gate.client_env(go_env(tmp_path / "c1", f"https://{HOST}", GOSUMDB=gosumdb))
        assert download(env, tmp_path).returncode == 0
        asked = dict(sumdb.counts)
        assert any("/lookup/" in p for p in asked)
        upstream.stop()
        sumdb.stop()
        env = gate.client_env(go_env(tmp_path / "c2", f"https://{HOST}", GOSUMDB=gosumdb))
        offline = download(env, tmp_path)
        assert offline.returncode == 0, offline.stdout + offline.stderr
