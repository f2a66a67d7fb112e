"""A full spool disk under a real `modgate run`: reported as a full disk (503, naming the
directory), not blamed on the upstream, and nothing of the download is kept."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from world.disks import tiny_disk
from world.gate import Gate
from world.modules import ModuleVersion, World
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
MODULE = "example.modgate.test/m"


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    # Under a megabyte: read whole before it is answered, so its error is what go sees.
    with World([ModuleVersion(MODULE, "v1.0.0", payload_bytes=600_000)]) as w:
        yield w


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read(), r.headers.get("X-Modgate-Cache", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), ""


def test_a_full_spool_disk_is_a_503_naming_it_and_nothing_is_kept(
    world: World, tmp_path: Path
) -> None:
    zip_path = f"/{MODULE}/@v/v1.0.0.zip"
    with Upstream(world) as upstream:
        rules = (
            f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\n"
            f"checksum:\n  private: {MODULE}\n"
        )
        cache = tmp_path / "gate" / "cache"
        with tiny_disk(cache / "spool", "256k") as spool, Gate(tmp_path / "gate", rules) as gate:
            status, body, _ = get(gate.goproxy_url + zip_path)
            assert status == 503, body
            text = body.decode()
            assert text.startswith(f"modgate: {MODULE}@v1.0.0 (zip): "), text
            assert f"the disk of {spool} is full" in text
            assert "no upstream answered" not in text
            assert list(spool.iterdir()) == []  # the partial download is gone
            assert upstream.count(zip_path) == 1
            # The small answers still fit: only what does not fit fails.
            status, _, _ = get(f"{gate.goproxy_url}/{MODULE}/@v/v1.0.0.mod")
            assert status == 200
        # With room again (same cache, the spool on the real disk): fetched afresh,
        # because nothing of the failed download was stored.
        with Gate(tmp_path / "gate", rules) as gate:
            status, body, outcome = get(gate.goproxy_url + zip_path)
            assert (status, outcome) == (200, "miss")
            assert body == world.zip_path(world.get(MODULE, "v1.0.0")).read_bytes()
            assert upstream.count(zip_path) == 2
