"""Local capture, for real (root): `modgate run --mode local` takes the traffic of a
program by name, with no proxy settings and no routing change, and gates it as in proxy
mode. The go binary is captured under a name of its own (`mg-go`), so the go commands
of anything else on the machine are left alone while this runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modgate import localcapture
from world.gate import Gate
from world.gocmd import find_go, go_env
from world.modules import World, graph_roots
from world.sumdb import TestSumdb
from world.upstream import Upstream

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or os.geteuid() != 0,
        reason="local capture needs Linux and root (eBPF, a TUN device)",
    ),  # fmt: skip
]

WORLD_MODULES = 6
PROXY = "proxy.modgate.test"
NAME = "mg-go"


@pytest.fixture(scope="module")
def gate(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gate, TestSumdb, Upstream]]:
    work = tmp_path_factory.mktemp("local")
    with TestSumdb().add_world(world) as db, Upstream(world) as upstream:
        rules = (
            f"proxies:\n  - url: https://{PROXY}\n    upstream: {upstream.url}\n"
            f"checksum:\n  databases:\n    - key: {db.verifier_key}\n      upstream: {db.url}\n"
            "hosts:\n  default: deny\n"
        )
        gate = Gate(work / "gate", rules)
        gate.extra_args = ["--mode", "local", "--capture", NAME]
        with gate:
            yield gate, db, upstream


def captured_go(
    tmp_path: Path, db: TestSumdb, bundle: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """go under the captured name, resolving the made-up host from its own hosts file
    (a private mount namespace), with no proxy variables: only the CA."""
    tools = tmp_path / "bin"
    tools.mkdir(parents=True, exist_ok=True)
    (tools / NAME).symlink_to(find_go())
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n127.0.0.1 {PROXY}\n")
    env = go_env(tmp_path, f"https://{PROXY}", GOSUMDB=db.verifier_key, SSL_CERT_FILE=str(bundle))
    script = f'mount --bind {hosts} /etc/hosts && exec {tools / NAME} "$@"'
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)  # fmt: skip


def test_a_captured_program_downloads_through_the_gate_with_no_proxy_settings(
    gate: tuple[Gate, TestSumdb, Upstream], world: World, tmp_path: Path
) -> None:
    g, db, upstream = gate
    done = captured_go(
        tmp_path, db, g.bundle, "mod", "download", "-json", f"{graph_roots(world)[0]}@latest"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Error" not in json.loads(done.stdout)
    assert upstream.count("*.zip") > 0, "modgate fetched nothing: the program was not captured"
    g.wait_for(f"{graph_roots(world)[0]}")


def test_other_programs_are_not_captured(
    gate: tuple[Gate, TestSumdb, Upstream], tmp_path: Path
) -> None:
    # The same request from a program of another name goes straight to 127.0.0.1:443,
    # where nothing listens: refused by the kernel, not answered by modgate.
    code = "import socket; socket.create_connection(('127.0.0.1', 443), timeout=5)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "ConnectionRefusedError" in done.stderr


def test_the_probe_fails_where_nothing_captures_its_program(tmp_path: Path) -> None:
    why = localcapture.probe(tmp_path, timeout=2, name="mgprobe-none")
    assert "not captured" in why and "ConnectionRefusedError" in why
