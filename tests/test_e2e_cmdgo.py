"""cmd/go's own proxy fixtures, through modgate: what go downloads, modgate lets through
byte for byte; what go refuses, modgate refuses too.

The fixtures ($GOROOT/src/cmd/go/testdata/mod, ~250 module versions, a few broken on
purpose) are served as cmd/go's proxy_test.go serves them, with their checksum
database (`localhost.localdev/sumdb`, cmd/go's test key) reachable only through the
proxy's /sumdb/ path. modgate runs with no `checksum.databases`: it finds the database
through the proxy (GOSUMDB via `modgate_gosumdb`), as go does. One go command per run
downloads every version.
"""

from __future__ import annotations

import platform
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from world.cmdgo import CmdGoFixtures, download_result, files_of
from world.gate import Gate, modgate_command
from world.gocmd import go_env, json_objects, run_go
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"


# What go says of a fixture broken on purpose, and what modgate says refusing it first.
REASONS = (
    ("verifying module: checksum mismatch", "SECURITY: "),  # the database's hash
    ("malformed file path", "malformed file path"),
    ("case-insensitive file name collision", "case-insensitive file name collision"),
    ("has unexpected file", "is outside"),  # a zip entry outside module@version/
)


def same_reason(want: str, got: str) -> bool:
    """Whether modgate refused for go's reason (or a stricter one): a reason of REASONS,
    or go's own words, when modgate served the version and go refused it itself."""
    for go_says, modgate_says in REASONS:
        if go_says in want:
            return modgate_says in got
    return bool(got) and _first_line(want) == _first_line(got)


def _first_line(error: str) -> str:
    line = error.splitlines()[0] if error else ""
    line = re.sub(r"https?://[^/\s]+", "<proxy>", line)
    return re.sub(r"\S*/pkg/mod/", "<modcache>/", line)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> CmdGoFixtures:
    try:
        return CmdGoFixtures.load(tmp_path_factory.mktemp("cmdgo") / "tree")
    except (OSError, subprocess.CalledProcessError, KeyError) as e:
        pytest.skip(f"cmd/go's source (testdata/mod, proxy_test.go) is not here: {e}")


@pytest.fixture(scope="module")
def upstream(fixtures: CmdGoFixtures) -> Iterator[Upstream]:
    with Upstream(fixtures.tree, sumdb=fixtures.sumdb) as up:
        yield up


def download_all(fixtures: CmdGoFixtures, env: dict[str, str], cwd: Path) -> list[dict[str, Any]]:
    """`go mod download -json` of every fixture version at once: one object each, in
    order (keyed by position: a fixture's .info may name another version)."""
    cwd.mkdir(parents=True, exist_ok=True)
    done = run_go(
        ["mod", "download", "-json", *(f.target for f in fixtures.fixtures)],
        env, cwd, check=False, timeout=300,
    )  # fmt: skip
    results = json_objects(done.stdout)
    assert len(results) == len(fixtures.fixtures), done.stderr
    return results


@pytest.fixture(scope="module")
def direct(
    fixtures: CmdGoFixtures, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    """Plain go against the plain fixture proxy: the reference."""
    home = tmp_path_factory.mktemp("direct")
    env = go_env(home, upstream.url, GOSUMDB=fixtures.verifier_key)
    results = download_all(fixtures, env, home / "work")
    ok = [obj for obj in results if not obj.get("Error")]
    # Most download; a handful are broken on purpose (bad sums, bad zips, future go).
    assert len(ok) > 200 and len(ok) < len(results)
    return results


@pytest.mark.parametrize("mode", ["proxy", "goproxy"])
def test_cmd_go_fixtures_through_modgate(
    fixtures: CmdGoFixtures,
    upstream: Upstream,
    direct: list[dict[str, Any]],
    tmp_path: Path,
    mode: str,
) -> None:
    gate = Gate(
        tmp_path / "gate", f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\n"
    )
    gate.extra_args = ["--quiet", "--set", f"modgate_gosumdb={fixtures.verifier_key}"]
    with gate:
        env = gate.client_env(
            go_env(tmp_path, f"https://{HOST}", GOSUMDB=fixtures.verifier_key), mode
        )
        gated = download_all(fixtures, env, tmp_path / "work")

    differences = []
    for fixture, want, got in zip(fixtures.fixtures, direct, gated, strict=True):
        target = fixture.target
        want_error, got_error = download_result(want)[1], download_result(got)[1]
        if not want_error:
            if got_error:
                differences.append(f"{target}: go downloads it, through modgate: {got_error}")
            elif files_of(got) != files_of(want):
                differences.append(f"{target}: different bytes through modgate")
        elif not same_reason(want_error, got_error):
            differences.append(
                f"{target}: go refuses it: {want_error}\nthrough modgate: {got_error or 'served'}"
            )
    assert not differences, "\n".join(differences)


@pytest.mark.parametrize("mode", ["proxy", "goproxy"])
def test_a_toolchain_switch_goes_through_modgate_verified_then_works_offline(
    fixtures: CmdGoFixtures, tmp_path: Path, mode: str
) -> None:
    """GOTOOLCHAIN=go1.999testmod: go downloads golang.org/toolchain@v0.0.1-go1.999testmod.
    linux-amd64 (cmd/go's own fixture), checks it against the checksum database, and runs
    its bin/go. Through modgate, verified; then again with the upstream gone."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("cmd/go's toolchain fixtures are for linux-amd64")
    with Upstream(fixtures.tree, sumdb=fixtures.sumdb) as upstream:
        gate = Gate(
            tmp_path / "gate", f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\n"
        )
        gate.extra_args = ["--quiet", "--set", f"modgate_gosumdb={fixtures.verifier_key}"]
        with gate:
            for run, home in enumerate((tmp_path / "online", tmp_path / "offline")):
                if run:
                    upstream.stop()
                env = gate.client_env(go_env(home, f"https://{HOST}", GOSUMDB=fixtures.verifier_key,
                                             GOTOOLCHAIN="go1.999testmod"), mode)  # fmt: skip
                home.mkdir(parents=True, exist_ok=True)
                done = run_go(["version"], env, home, check=False)
                assert "go1.999testmod here!" in done.stdout, done.stdout + done.stderr
        db = sqlite3.connect(gate.cache_dir.parent / "trace.db")  # committed at shutdown
        try:
            rows = db.execute(
                "SELECT hash_verdict, cache FROM requests WHERE kind = 'zip' AND module = ?",
                ("golang.org/toolchain",),
            ).fetchall()
        finally:
            db.close()
    assert ("verified", "miss") in rows and ("verified", "hit") in rows, rows


def test_prefetch_toolchain_fetches_what_a_go_mod_switches_to_then_it_runs_offline(
    fixtures: CmdGoFixtures, tmp_path: Path
) -> None:
    """`modgate prefetch --toolchain`: a go.mod whose toolchain line names go1.999testmod
    (cmd/go's fixture); prefetched through modgate, then the upstream stops and go, left
    to switch on its own (GOTOOLCHAIN=auto), finds the toolchain in modgate's cache."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("cmd/go's toolchain fixtures are for linux-amd64")
    app = tmp_path / "app"
    app.mkdir()
    (app / "go.mod").write_text("module example.com/app\n\ngo 1.21\n\ntoolchain go1.999testmod\n")
    with Upstream(fixtures.tree, sumdb=fixtures.sumdb) as upstream:
        gate = Gate(
            tmp_path / "gate", f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\n"
        )
        gate.extra_args = ["--quiet", "--set", f"modgate_gosumdb={fixtures.verifier_key}"]
        with gate:
            env = go_env(tmp_path / "p", "off", GOSUMDB=fixtures.verifier_key)
            done = subprocess.run(
                modgate_command("prefetch", str(app / "go.mod"), "--toolchain",
                                "--goproxy", gate.goproxy_url),
                env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            assert "0 refused, 0 failed" in done.stdout, done.stdout
            upstream.stop()
            home = tmp_path / "offline"
            home.mkdir()
            env = gate.client_env(go_env(home, f"https://{HOST}", GOSUMDB=fixtures.verifier_key,
                                         GOTOOLCHAIN="auto"))  # fmt: skip
            switched = run_go(["version"], env, app, check=False)
    assert "go1.999testmod here!" in switched.stdout, switched.stdout + switched.stderr
