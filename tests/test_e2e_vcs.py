"""go's `direct` fetches through modgate: a real git server (git http-backend over TLS)
for a private module, the real go command with GOPRIVATE, HTTPS_PROXY and modgate's CA.
The host is listed under hosts.vcs: each discovery, ref listing and fetch is traced with
its module and bytes, and a module the rules refuse never reaches the git server, however
its path is spelled."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from world.gate import Gate
from world.gitserver import GitServer
from world.gocmd import go_env
from world.resolve import resolving

pytestmark = pytest.mark.e2e

GIT = "git.modgate.test"


@dataclass
class Setup:
    gate: Gate
    git: GitServer
    lib: str
    secret: str

    def go(self, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
        env = self.gate.client_env(go_env(home, "direct", GOPRIVATE=GIT))
        env |= {"GIT_SSL_CAINFO": str(self.gate.bundle), "https_proxy": env["HTTPS_PROXY"],
                "GIT_TERMINAL_PROMPT": "0"}  # fmt: skip
        home.mkdir(parents=True, exist_ok=True)
        return subprocess.run(["go", *args], env=env, cwd=home, capture_output=True, text=True,
                              timeout=180)  # fmt: skip

    def traced(self, module: str, kinds: set[str]) -> list[sqlite3.Row]:
        return self.gate.traced(
            "module = ?", (module,), lambda rows: {r["kind"] for r in rows} >= kinds
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("vcs")
    git = GitServer(work, GIT)
    lib, secret = git.add("corp/lib"), git.add("corp/secret")
    rules = (
        "proxies:\n  - url: https://proxy.modgate.test\n    upstream: http://127.0.0.1:9\n"
        "checksum:\n  databases: []\n"
        f"hosts:\n  vcs: [{GIT}]\n  default: deny\n"
        f"modules:\n  - deny: {secret}\n    reason: not for this team\n  - allow: '**'\n"
    )
    gate = Gate(work / "gate", rules)
    gate.env = {"PYTHONPATH": str(resolving(work / "site", {GIT: ("127.0.0.1", git.port)}))}
    gate.extra_args = ["--set", f"ssl_verify_upstream_trusted_ca={git.cert}"]
    try:
        with gate:
            yield Setup(gate, git, lib, secret)
    finally:
        git.close()


def test_a_direct_fetch_is_traced_as_discovery_refs_and_fetch(setup: Setup, tmp_path: Path) -> None:
    done = setup.go(tmp_path, "mod", "download", "-json", f"{setup.lib}@v1.0.0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Error" not in json.loads(done.stdout)
    kinds = {"discovery", "vcs-refs", "vcs-fetch"}
    rows = setup.traced(setup.lib, kinds)
    assert {r["kind"] for r in rows} >= kinds, [dict(r) for r in rows]
    fetches = [r for r in rows if r["kind"] == "vcs-fetch"]
    assert all(r["status"] == 200 for r in fetches)
    assert sum(r["bytes_out"] or 0 for r in fetches) > 0  # the pack, counted as it streamed
    assert setup.git.asked("git-upload-pack") > 0


@pytest.mark.parametrize("spelling", ["corp/secret", "CORP/Secret"])
def test_a_refused_module_never_reaches_the_git_server(
    setup: Setup, tmp_path: Path, spelling: str
) -> None:
    module = f"{GIT}/{spelling}"
    done = setup.go(tmp_path, "mod", "download", "-json", f"{module}@v1.0.0")
    assert done.returncode != 0
    assert f"modgate: refused {module}" in done.stdout + done.stderr
    assert setup.git.asked(spelling.split("/")[1]) == 0
    rows = setup.traced(module, {"discovery"})
    assert rows and rows[-1]["rule_verdict"] == "deny"


def test_git_itself_is_refused_a_refused_repository(setup: Setup, tmp_path: Path) -> None:
    # Not through go: git asked straight for the repository, in two spellings of its path.
    env = setup.gate.client_env(go_env(tmp_path, "direct"))
    env |= {"GIT_SSL_CAINFO": str(setup.gate.bundle), "https_proxy": env["HTTPS_PROXY"],
            "GIT_TERMINAL_PROMPT": "0"}  # fmt: skip
    for path in ("corp/secret.git", "corp//./secret.git", "corp/lib/../secret.git"):
        done = subprocess.run(["git", "ls-remote", f"https://{GIT}/{path}"], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode != 0, path
        assert " 40" in done.stderr, done.stderr  # 400 or 403 from modgate
    assert setup.git.asked("secret") == 0
