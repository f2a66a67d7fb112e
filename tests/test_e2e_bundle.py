"""Air-gap bundles, end to end: a connected modgate's cache (filled by the real go
command) → `modgate cache export` → `modgate cache import` on the other side, where the
upstream and the checksum database are unreachable → a modgate there serves a fresh go
client, which verifies everything. A bundle with one altered byte, a truncated one and
one signed by another key are refused whole, and the target cache is left as it was."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modgate.bundle import MANIFEST, Manifest
from modgate.trace.store import default_db
from world.gate import Gate, modgate_command
from world.gocmd import go_env, run_go
from world.modules import MainModule, World, write_main_module
from world.sumdb import TestSumdb
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

WORLD_MODULES = 8
HOST = "proxy.modgate.test"


@dataclass
class Exported:
    bundle: Path
    key: Path
    app: MainModule
    db_key: str
    rules: str  # the air-gapped side's: same proxy and database, upstreams unreachable
    cache_dir: Path  # the connected side's, to export again with a selection
    confdir: Path


def rules_for(upstream_url: str, db: TestSumdb, db_url: str) -> str:
    return (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream_url}\n"
        f"checksum:\n  databases:\n    - key: {db.verifier_key}\n      upstream: {db_url}\n"
    )


@pytest.fixture(scope="module")
def exported(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    work = tmp_path_factory.mktemp("bundle")
    app = write_main_module(world, work / "app")
    with TestSumdb().add_world(world) as db, Upstream(world) as upstream:
        with Gate(work / "connected", rules_for(upstream.url, db, db.url)) as gate:
            env = gate.client_env(go_env(work / "c", f"https://{HOST}", GOSUMDB=db.verifier_key))
            run_go(["mod", "tidy"], env, app.dir)
            run_go(["mod", "download", "all"], env, app.dir)
        bundle = work / "out.bundle"
        done = subprocess.run(
            modgate_command("cache", "export", str(bundle), "--cache-dir", str(gate.cache_dir),
                            "--confdir", str(gate.confdir)),
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        dead = "http://127.0.0.1:9"  # nothing listens: the other side of the gap
        yield Exported(bundle, gate.confdir / "bundle-signing.pub", app, db.verifier_key,
                       rules_for(dead, db, dead), gate.cache_dir, gate.confdir)  # fmt: skip


def export(exported: Exported, dest: Path, *selection: str) -> set[str]:
    """Export the connected cache again with `selection`: the module versions it carries."""
    done = subprocess.run(
        modgate_command("cache", "export", str(dest), "--cache-dir", str(exported.cache_dir),
                        "--confdir", str(exported.confdir), *selection),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with tarfile.open(dest) as tar:
        member = tar.extractfile(MANIFEST)
        assert member is not None
        return set(Manifest.loads(member.read()).versions)


def import_(bundle: Path, key: Path, cache: Path, rules: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        modgate_command("cache", "import", str(bundle), "--trust", str(key), "--cache-dir",
                        str(cache), "--rules", str(rules)),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_import_on_the_other_side_then_go_verifies_everything_offline(
    exported: Exported, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(exported.rules)
    cache = tmp_path / "airgap" / "cache"
    done = import_(exported.bundle, exported.key, cache, rules)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every one checked" in done.stdout
    with Gate(tmp_path / "airgap", exported.rules, cache_dir=cache) as gate:
        env = gate.client_env(
            go_env(tmp_path / "fresh", f"https://{HOST}", GOSUMDB=exported.db_key)
        )
        run_go(["mod", "download", "all"], env, exported.app.dir)
        run_go(["build", "./..."], env, exported.app.dir)


def _rewrite(src: Path, dest: Path, change: str) -> None:
    """A copy of the bundle with one thing wrong."""
    with tarfile.open(src) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    if change == "truncate":
        dest.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
        return
    with tarfile.open(dest, "w") as out:
        for member, data in members:
            if change == "flip" and member.name.endswith(".zip"):
                data = data[:-30] + bytes([data[-30] ^ 1]) + data[-29:]
                change = "done"
            if change == "manifest" and member.name == "manifest.json":
                manifest = json.loads(data)
                manifest["created"] += 1
                data = json.dumps(manifest).encode()
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))


@pytest.mark.parametrize(
    ("change", "reason"),
    [("flip", "not the ones the manifest signed"), ("truncate", "cut short"),
     ("manifest", "signature does not match"), ("other-key", "signature does not match")],
)  # fmt: skip
def test_a_bad_bundle_is_refused_whole(
    exported: Exported, tmp_path: Path, change: str, reason: str
) -> None:
    bad = tmp_path / "bad.bundle"
    key = exported.key
    if change == "other-key":
        bad = exported.bundle
        other = tmp_path / "other"
        subprocess.run(modgate_command("cache", "export", str(tmp_path / "x.bundle"), "--modules",
                                       "nothing.example/*", "--cache-dir", str(tmp_path / "none"),
                                       "--confdir", str(other)),
                       capture_output=True, timeout=60)  # fmt: skip
        from modgate.bundle import public_pem, signing_key

        key = other / "key.pub"
        key.write_bytes(public_pem(signing_key(other)))
    else:
        _rewrite(exported.bundle, bad, change)
    rules = tmp_path / "rules.yaml"
    rules.write_text(exported.rules)
    cache = tmp_path / "airgap" / "cache"
    done = import_(bad, key, cache, rules)
    assert done.returncode == 2, done.stdout + done.stderr
    assert reason in done.stderr, done.stderr
    assert not (cache / "artifacts").exists() or not list((cache / "artifacts").glob("*/*"))


def test_a_zip_the_database_disowns_is_refused_even_when_signed(
    exported: Exported, world: World, tmp_path: Path
) -> None:
    """The exporter's key vouches for the bytes it sent, not for the modules: the
    importer's own checksum database does. Re-sign an altered zip with the real key."""
    import base64
    import hashlib

    from modgate.bundle import MANIFEST, SIGNATURE, signing_key

    key = signing_key(exported.key.parent)
    with tarfile.open(exported.bundle) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    files = {m.name: d for m, d in members}
    manifest = json.loads(files[MANIFEST])
    name = next(n for n in files if n.endswith(".zip"))
    # A well-formed zip of the same module, with one file's code changed.
    with zipfile.ZipFile(io.BytesIO(files[name])) as original, io.BytesIO() as out:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as altered:
            for info in original.infolist():
                body = original.read(info)
                if info.filename.endswith(".go"):
                    body += b"\nfunc Backdoor() {}\n"
                altered.writestr(info, body)
        files[name] = out.getvalue()
    manifest["files"][name]["sha256"] = hashlib.sha256(files[name]).hexdigest()
    files[MANIFEST] = json.dumps(manifest, indent=1, sort_keys=True).encode()
    files[SIGNATURE] = base64.b64encode(key.sign(files[MANIFEST])) + b"\n"
    bad = tmp_path / "resigned.bundle"
    with tarfile.open(bad, "w") as out:
        for member, _ in members:
            member.size = len(files[member.name])
            out.addfile(member, io.BytesIO(files[member.name]))
    rules = tmp_path / "rules.yaml"
    rules.write_text(exported.rules)
    done = import_(bad, exported.key, tmp_path / "airgap" / "cache", rules)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refused whole, nothing imported" in done.stderr
    assert "SECURITY" in done.stderr and "says h1:" in done.stderr, done.stderr


def test_an_export_carries_only_what_its_selection_names(
    exported: Exported, tmp_path: Path
) -> None:
    everything = export(exported, tmp_path / "all.bundle")
    assert len(everything) > 3
    one = sorted(everything)[0].partition("@")[0]
    assert export(exported, tmp_path / "one.bundle", "--modules", one) == {
        v for v in everything if v.partition("@")[0] == one
    }
    # Against the first bundle, a weekly transfer carries nothing when nothing is new.
    assert export(exported, tmp_path / "inc.bundle", "--against", str(exported.bundle)) == set()
    assert export(exported, tmp_path / "later.bundle", "--since", "2999-01-01") == set()
    # A traced session: exactly the versions the trace says it asked for.
    with sqlite3.connect(default_db(exported.cache_dir)) as conn:
        rows = conn.execute(
            "SELECT session, module || '@' || version FROM requests "
            "WHERE module != '' AND version != '' AND session IS NOT NULL"
        ).fetchall()
    session = min(s for s, _ in rows)
    asked = {mv for s, mv in rows if s == session}
    picked = export(exported, tmp_path / "session.bundle", "--session", str(session))
    assert picked and picked == asked & everything
