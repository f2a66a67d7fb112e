"""Trace sessions that match what a person did: each go command on modgate's machine is
a session of its own, back to back in one shell or at once in two (known by its process
id); `modgate env --session NAME` makes every command of a shell one session."""

from __future__ import annotations

import shlex
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from world.gate import Gate, modgate_command
from world.gocmd import find_go, go_env
from world.modules import World
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

WORLD_MODULES = 8
HOST = "proxy.modgate.test"


@pytest.fixture
def gate(world: World, tmp_path: Path) -> Iterator[Gate]:
    rules = (f"proxies:\n  - url: https://{HOST}\n    upstream: {{}}\n"
             "checksum:\n  databases: []\n  private: '*'\n")  # fmt: skip
    with (
        Upstream(world, delay=0.02) as upstream,
        Gate(tmp_path / "g", rules.format(upstream.url)) as g,
    ):
        yield g


def targets(world: World, n: int) -> list[str]:
    modules = sorted({mv.path for mv in world})[:n]
    return [f"{m}@{world.latest(m).version}" for m in modules]


def sessions(gate: Gate, expect: int) -> list[tuple[str, int]]:
    """(client, requests) of each session, once `expect` of them hold requests."""
    deadline = time.monotonic() + 20
    while True:
        db = sqlite3.connect(gate.cache_dir.parent / "trace.db")
        try:
            rows = db.execute("SELECT s.client, count(r.id) FROM sessions s JOIN requests r ON "
                              "r.session = s.id GROUP BY s.id ORDER BY s.id").fetchall()  # fmt: skip
        except sqlite3.OperationalError:
            rows = []
        finally:
            db.close()
        if len(rows) >= expect or time.monotonic() > deadline:
            return [(str(c), int(n)) for c, n in rows]
        time.sleep(0.2)


def shell(gate: Gate, home: Path, script: str, session: str = "", endpoint: bool = False
          ) -> subprocess.Popen[str]:  # fmt: skip
    port = str(urlsplit(gate.proxy_url).port)
    env_cmd = shlex.join(modgate_command("env", "--confdir", str(gate.confdir), "--listen-port",
                                         port, *(["--session", session] if session else [])))  # fmt: skip
    if endpoint:
        env_cmd = f"echo export GOPROXY={shlex.quote(gate.goproxy_url)}"
    env = go_env(home, f"https://{HOST}", GONOSUMDB="*", GOFLAGS="-modcacherw")
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["bash", "-c", f'set -e; eval "$({env_cmd})"; {script}'], env=env,
                            cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def download(*targets: str) -> str:
    return f"{shlex.quote(find_go())} mod download {' '.join(map(shlex.quote, targets))}"


def finish(*shells: subprocess.Popen[str]) -> None:
    for sh in shells:
        out, err = sh.communicate(timeout=180)
        assert sh.returncode == 0, out + err


def test_back_to_back_go_commands_are_two_sessions(
    gate: Gate, world: World, tmp_path: Path
) -> None:
    a, b = targets(world, 2)
    finish(shell(gate, tmp_path / "s", f"{download(a)} && {download(b)}"))
    found = sessions(gate, 2)
    assert len(found) == 2, found
    assert all(" go[" in client for client, _ in found), found  # each its own go command


def test_two_go_commands_at_once_from_two_shells_are_two_sessions(
    gate: Gate, world: World, tmp_path: Path
) -> None:
    a, b = targets(world, 2)
    finish(shell(gate, tmp_path / "one", download(a)), shell(gate, tmp_path / "two", download(b)))
    found = sessions(gate, 2)
    assert len(found) == 2, found


def test_a_tagged_shell_is_one_session_whatever_it_runs(
    gate: Gate, world: World, tmp_path: Path
) -> None:
    a, b, c = targets(world, 3)
    script = f"{download(a)} && sleep 1 && {download(b)} && {download(c)}"
    finish(shell(gate, tmp_path / "t", script, session="release build"))
    found = sessions(gate, 1)
    assert [client for client, _ in found] == ["127.0.0.1 tag release build"], found
