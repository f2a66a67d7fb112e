"""What `modgate run` writes is private to its user, and a start that fails writes
nothing outside the --confdir it was given."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from world.gate import Gate, modgate_command

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
RULES = f"proxies:\n  - url: https://{HOST}\n    upstream: http://127.0.0.1:9\n"


def loose(path: Path) -> str:
    """'' when only its owner may read it, else its mode."""
    mode = stat.S_IMODE(path.stat().st_mode)
    return "" if mode & 0o077 == 0 else f"{path}: {mode:o}"


def test_the_cache_trace_and_ca_are_created_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GOSUMDB", "off")  # no `go env` to ask
    monkeypatch.setenv("MODGATE_HOME", "")
    with Gate(tmp_path / "gate", RULES) as gate:
        gate.wait_for("tracing to")
        made = [gate.confdir, gate.cache_dir, gate.cache_dir / "artifacts",
                gate.cache_dir / "artifacts" / "cache.db", gate.cache_dir / "spool",
                gate.cache_dir / "state", gate.cache_dir.parent / "trace.db", gate.bundle,
                gate.confdir / "mitmproxy-ca.pem", gate.confdir / "mitmproxy-ca-cert.pem"]  # fmt: skip
        assert [p for p in made if not p.exists()] == []
        everything = [*made, *gate.confdir.rglob("*"), *gate.cache_dir.rglob("*")]
        assert [loose(p) for p in everything if loose(p)] == []
    assert not (tmp_path / "home" / ".modgate").exists()


def run_failing(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(exist_ok=True)
    cwd.mkdir(exist_ok=True)
    (cwd / "rules.yaml").write_text(RULES)  # what a rollback to the defaults would load
    env = {k: v for k, v in os.environ.items() if k != "MODGATE_HOME"}
    return subprocess.run(
        modgate_command("run", "--goproxy-port", "-1", "--confdir", str(tmp_path / "conf"),
                        *args),
        env={**env, "HOME": str(home), "GOSUMDB": "off"}, cwd=cwd,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_start_that_fails_on_its_cache_dir_says_so_and_leaves_home_alone(
    tmp_path: Path,
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    done = run_failing(tmp_path, "--listen-port", "0", "--cache-dir", str(blocked / "cache"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"modgate: cache directory {blocked / 'cache' / 'artifacts'} cannot be used" in (
        done.stderr
    )
    assert not (tmp_path / "home" / ".modgate").exists()


def test_a_start_that_fails_on_a_port_in_use_leaves_home_alone(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = run_failing(tmp_path, "--listen-port", str(taken.getsockname()[1]))
    assert done.returncode != 0
    assert "address already in use" in done.stdout + done.stderr
    assert not (tmp_path / "home" / ".modgate").exists()
