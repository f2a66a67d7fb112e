"""An upstream whose certificate comes from a private CA (a TLS-inspecting firewall, an
internal mirror): refused until modgate is given that CA with --upstream-ca, then served
verified; a file that holds no certificate is refused at start, naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from world.certs import private_ca
from world.gate import Gate
from world.gocmd import go_env, run_go
from world.modules import World, graph_roots
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

WORLD_MODULES = 6
HOST = "proxy.modgate.test"


def rules(upstream: Upstream) -> str:
    return (f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\n"
            f"checksum:\n  databases: []\n  private: '*'\n")  # fmt: skip


def test_a_private_ca_upstream_needs_upstream_ca(world: World, tmp_path: Path) -> None:
    ca_file, server = private_ca(tmp_path)
    target = f"{graph_roots(world)[0]}@latest"
    with Upstream(world, tls=server) as upstream:
        assert upstream.url.startswith("https://127.0.0.1:")
        with Gate(tmp_path / "without", rules(upstream)) as gate:
            env = gate.client_env(go_env(tmp_path / "a", f"https://{HOST}", GONOSUMDB="*"))
            failed = run_go(["mod", "download", "-json", target], env, tmp_path, check=False)
            assert failed.returncode != 0
            assert "certificate" in failed.stdout.lower(), failed.stdout
        gate = Gate(tmp_path / "with", rules(upstream))
        gate.extra_args = ["--upstream-ca", str(ca_file)]
        with gate:
            env = gate.client_env(go_env(tmp_path / "b", f"https://{HOST}", GONOSUMDB="*"))
            done = run_go(["mod", "download", "-json", target], env, tmp_path)
            assert "Error" not in json.loads(done.stdout)


def test_a_bundle_that_is_not_one_is_refused_at_start(world: World, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with Upstream(world) as upstream:
        gate = Gate(tmp_path / "g", rules(upstream))
        gate.extra_args = ["--upstream-ca", str(junk)]
        with pytest.raises(RuntimeError, match=r"modgate exited 2") as caught:
            gate.start()
    assert str(junk) in str(caught.value)
