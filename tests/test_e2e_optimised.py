"""`modgate run` runs under `python -O` (mitmproxy then skips its per-message type
checks), unless MODGATE_PYTHON_CHECKS=1; and it serves go the same either way."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from world.gate import Gate
from world.gocmd import find_go, go_env
from world.modules import World, write_main_module
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"


@pytest.mark.parametrize("checks", ["", "1"], ids=["default", "MODGATE_PYTHON_CHECKS=1"])
def test_modgate_run_is_optimised_unless_asked_not_to_be(
    world: World, tmp_path: Path, checks: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODGATE_PYTHON_CHECKS", checks)
    app = write_main_module(world, tmp_path / "app")
    with Upstream(world) as upstream:
        rules = f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\n"
        with Gate(
            tmp_path / "gate", rules + "checksum:\n  private: example.modgate.test\n"
        ) as gate:
            assert gate.proc is not None
            command = Path(f"/proc/{gate.proc.pid}/cmdline").read_bytes().split(b"\0")
            assert (b"-O" in command) is (checks == ""), command
            env = gate.client_env(go_env(tmp_path / "go", f"https://{HOST}"))
            done = subprocess.run([find_go(), "mod", "tidy"], env=env, cwd=app.dir,
                                  capture_output=True, text=True, timeout=120)  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert upstream.count("*.zip") > 0
