"""Text answers go out gzipped to a client that accepts it, zips never; go decodes them
itself (so every other e2e test, through both client modes, downloads gzipped lists)."""

from __future__ import annotations

import gzip
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from world.gate import Gate
from world.gocmd import go_env, run_go
from world.modules import ModuleVersion, World
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
MANY = "example.modgate.test/many"


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[tuple[Gate, World]]:
    world = World()
    for minor in range(120):  # a version list of over a kilobyte
        world.add(ModuleVersion(MANY, f"v1.{minor}.0"))
    rules = (f"proxies:\n  - url: https://{HOST}\n    upstream: {{}}\n"
             "checksum:\n  databases: []\n  private: '*'\n")  # fmt: skip
    with Upstream(world) as upstream, Gate(tmp_path / "g", rules.format(upstream.url)) as g:
        yield g, world


def get(url: str, encoding: str | None) -> tuple[dict[str, str], bytes]:
    headers = {"Accept-Encoding": encoding} if encoding is not None else {}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url, headers=headers), timeout=30) as r:
        return dict(r.headers), r.read()


@pytest.mark.parametrize("encoding", ["gzip", "br, gzip;q=0.8", None, "gzip;q=0", "identity"])
def test_a_version_list_is_gzipped_only_when_asked(
    gate: tuple[Gate, World], encoding: str | None
) -> None:
    g, world = gate
    want = "".join(f"{v}\n" for v in world.list_versions(MANY)).encode()
    headers, body = get(f"{g.goproxy_url}/{MANY}/@v/list", encoding)
    if encoding in ("gzip", "br, gzip;q=0.8"):
        assert (
            headers.get("Content-Encoding") == "gzip" and headers.get("Vary") == "Accept-Encoding"
        )
        assert gzip.decompress(body) == want and len(body) < len(want)
    else:
        assert "Content-Encoding" not in headers and body == want


def test_a_zip_is_never_gzipped(gate: tuple[Gate, World]) -> None:
    g, world = gate
    headers, body = get(f"{g.goproxy_url}/{MANY}/@v/v1.0.0.zip", "gzip")
    assert "Content-Encoding" not in headers
    assert body == world.zip_path(world.get(MANY, "v1.0.0")).read_bytes()


def test_go_reads_gzipped_answers_through_both_modes(
    gate: tuple[Gate, World], tmp_path: Path
) -> None:
    g, _ = gate
    for mode in ("proxy", "goproxy"):
        env = g.client_env(go_env(tmp_path / mode, f"https://{HOST}", GONOSUMDB="*"), mode)
        done = run_go(["list", "-m", "-versions", "-json", MANY], env, tmp_path)
        assert len(json.loads(done.stdout)["Versions"]) == 120
