"""Work where go works: a checksum database reached only through the module proxy.

On many networks (corporate ones, mirrors, air gaps, the machines this was written on)
the database's own host is unreachable and go verifies through
`<GOPROXY>/sumdb/<name>/…` (cmd/go/internal/modfetch/sumdb.go, initBase). modgate's
default setup, with no `checksum.databases`, must find the database the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import urllib.request
from pathlib import Path

import pytest

from world.gate import Gate, modgate_command
from world.gocmd import find_go, go_env, run_go
from world.modules import UPPER, World, proxy_path
from world.sumdb import TestSumdb
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"


WORLD_MODULES = 6  # the shared `world` fixture (conftest.py), this small


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
            gate.wait_for(f"sumdb-supported /sumdb/{name}/supported 200")  # traced as itself
            with urllib.request.urlopen(
                f"{gate.goproxy_url}/{proxy_path(UPPER, 'v1.2.1', '.zip')}"
            ) as r:
                assert r.headers["X-Modgate-Hash"] == (
                    f"{world.get(UPPER, 'v1.2.1').zip_hash} verified by checksum database {name}"
                )
        assert upstream.count(f"/sumdb/{name}/lookup/*") > 0
        assert upstream.count(f"/sumdb/{name}/supported") >= 1


# --- the live registry ----------------------------------------------------------------

LIVE_MODULE = "golang.org/x/text"
LIVE_VERSION = "v0.14.0"


def machine_go_env() -> tuple[str, str, str] | None:
    """(GOPROXY, its first proxy, GOSUMDB) of this machine's go, when that proxy answers."""
    out = subprocess.run(
        [find_go(), "env", "GOPROXY", "GOSUMDB"], capture_output=True, text=True, timeout=30
    )
    goproxy, _, gosumdb = out.stdout.strip().partition("\n")
    first = next((u for u in goproxy.replace("|", ",").split(",") if u.startswith("https://")), "")
    if not first or gosumdb in ("", "off"):
        return None
    try:
        with urllib.request.urlopen(f"{first}/{LIVE_MODULE}/@v/list", timeout=5) as r:
            return (goproxy, first, gosumdb) if r.status == 200 else None
    except OSError:
        return None


def in_namespace_of(
    pid: int, env: dict[str, str], args: list[str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "--", find_go(), *args],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def offline_wrapper() -> list[str]:
    """A command line that runs the rest in a network namespace with loopback only."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("nsenter")):
        pytest.skip("needs root, unshare and nsenter for a network namespace")
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']


@pytest.mark.live
def test_no_rules_file_verifies_a_public_module_where_go_does_then_serves_it_offline(
    tmp_path: Path,
) -> None:
    found = machine_go_env()
    if found is None:
        pytest.skip("the registry of `go env GOPROXY` is not reachable from here")
    goproxy, first, gosumdb = found
    wrapper = offline_wrapper()
    name = gosumdb.split()[0].split("+")[0]
    target = f"{LIVE_MODULE}@{LIVE_VERSION}"

    # Online: modgate with no rules file, the machine's GOPROXY and GOSUMDB.
    with Gate(tmp_path / "gate", None) as gate:
        assert (
            f"verifies with checksum database {name} through {first}/sumdb/{name}" in gate.output()
        )
        env = gate.client_env(go_env(tmp_path / "online", goproxy, GOSUMDB=gosumdb))
        done = run_go(["mod", "download", "-json", target], env, tmp_path)
        online = json.loads(done.stdout)
        assert online["Sum"].startswith("h1:")
        zip_url = f"{gate.goproxy_url}/{proxy_path(LIVE_MODULE, LIVE_VERSION, '.zip')}"
        with urllib.request.urlopen(zip_url) as r:
            assert (
                r.headers["X-Modgate-Hash"]
                == f"{online['Sum']} verified by checksum database {name}"
            )

    # Offline: the same modgate and cache in a network namespace with no way out; a
    # fresh client (module cache and checksum database state) in the same namespace.
    gate = Gate(tmp_path / "gate", None)
    gate.wrapper = wrapper
    with gate:
        assert gate.proc is not None
        assert "the way that worked last time" in gate.output()
        env = gate.client_env(go_env(tmp_path / "offline", goproxy, GOSUMDB=gosumdb))
        done = in_namespace_of(gate.proc.pid, env, ["mod", "download", "-json", target])
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["Sum"] == online["Sum"]
        # and nothing gets out: the registry is not reachable from there
        probe = in_namespace_of(
            gate.proc.pid,
            {**env, "HTTPS_PROXY": ""},
            ["mod", "download", "-json", "golang.org/x/mod@v0.14.0"],
        )
        assert probe.returncode != 0


@pytest.mark.live
def test_prefetch_a_real_project_then_build_it_offline(tmp_path: Path) -> None:
    """`modgate prefetch` of a real project's build list from the live registry, standalone
    on a cache directory; then a modgate on that cache in a network namespace with no way
    out, and a fresh client there downloads and verifies the whole build list."""
    found = machine_go_env()
    if found is None:
        pytest.skip("the registry of `go env GOPROXY` is not reachable from here")
    goproxy, _, gosumdb = found
    wrapper = offline_wrapper()
    # The project: golang.org/x/text's own go.mod and go.sum, from its module zip.
    fetch_env = go_env(tmp_path / "fetch", goproxy, GOSUMDB=gosumdb)
    done = run_go(
        ["mod", "download", "-json", f"{LIVE_MODULE}@{LIVE_VERSION}"], fetch_env, tmp_path
    )
    source = Path(json.loads(done.stdout)["Dir"])
    project = tmp_path / "project"
    project.mkdir()
    for name in ("go.mod", "go.sum"):
        (project / name).write_bytes((source / name).read_bytes())
    cache = tmp_path / "gate" / "cache"
    prefetched = subprocess.run(
        modgate_command("prefetch", str(project), "--cache-dir", str(cache), "--rules", ""),
        env={**go_env(tmp_path / "p", goproxy, GOSUMDB=gosumdb), "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert prefetched.returncode == 0, prefetched.stdout + prefetched.stderr
    assert " 0 refused, 0 failed" in prefetched.stdout, prefetched.stdout
    gate = Gate(tmp_path / "gate", None, cache_dir=cache)
    gate.wrapper = wrapper
    with gate:
        assert gate.proc is not None
        env = gate.client_env(go_env(tmp_path / "offline", goproxy, GOSUMDB=gosumdb))
        offline = subprocess.run(
            ["nsenter", "-t", str(gate.proc.pid), "-n", find_go(), "mod", "download", "all"],
            env=env, cwd=project, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert offline.returncode == 0, offline.stdout + offline.stderr


LIVE_TOOLCHAIN = "go1.27.3"  # the newer Go this machine's registry serves (env/packages)


@pytest.mark.live
def test_a_real_toolchain_switch_through_modgate_then_offline(tmp_path: Path) -> None:
    """GOTOOLCHAIN=go1.27.3 from the live registry (about 76 MB): through modgate with no
    rules file, verified against the checksum database through the proxy, then served
    to a fresh client in a network namespace with no way out."""
    found = machine_go_env()
    if found is None:
        pytest.skip("the registry of `go env GOPROXY` is not reachable from here")
    goproxy, _, gosumdb = found
    wrapper = offline_wrapper()
    with Gate(tmp_path / "gate", None) as gate:
        env = gate.client_env(go_env(tmp_path / "online", goproxy, GOSUMDB=gosumdb,
                                     GOTOOLCHAIN=LIVE_TOOLCHAIN))  # fmt: skip
        done = run_go(["version"], env, tmp_path, timeout=600)
        assert LIVE_TOOLCHAIN in done.stdout, done.stdout + done.stderr
    gate = Gate(tmp_path / "gate", None)
    gate.wrapper = wrapper
    with gate:
        assert gate.proc is not None
        env = gate.client_env(go_env(tmp_path / "offline", goproxy, GOSUMDB=gosumdb,
                                     GOTOOLCHAIN=LIVE_TOOLCHAIN))  # fmt: skip
        offline = in_namespace_of(gate.proc.pid, env, ["version"])
        assert offline.returncode == 0 and LIVE_TOOLCHAIN in offline.stdout, offline.stderr
    db = sqlite3.connect(tmp_path / "gate" / "trace.db")
    try:
        verdicts = db.execute("SELECT hash_verdict FROM requests WHERE kind = 'zip' AND module = "
                              "'golang.org/toolchain'").fetchall()  # fmt: skip
    finally:
        db.close()
    assert verdicts and all(v == ("verified",) for v in verdicts), verdicts
