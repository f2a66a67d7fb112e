"""What a `modgate run` killed with SIGKILL mid-download leaves in its cache: counted by
`modgate cache verify`, removed when modgate starts again."""

from __future__ import annotations

import contextlib
import http.client
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from world.gate import Gate, modgate_command
from world.modules import ModuleVersion, World
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
MODULE = "example.modgate.test/big"


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with World([ModuleVersion(MODULE, "v1.0.0", payload_bytes=24 << 20)]) as w:
        yield w


def spooled(gate: Gate) -> list[Path]:
    return sorted((gate.cache_dir / "spool").glob("fetch-*"))


def verify(gate: Gate) -> str:
    done = subprocess.run(
        modgate_command("cache", "verify", "--cache-dir", str(gate.cache_dir)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _rules(upstream: Upstream) -> str:
    return (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\n"
        f"checksum:\n  private: {MODULE}\n"
    )


def test_a_killed_download_is_counted_by_verify_and_removed_at_the_next_start(
    world: World, tmp_path: Path
) -> None:
    with Upstream(world) as upstream:
        upstream.fault("*.zip", throttle=4 << 20)  # six seconds for the whole zip
        rules = _rules(upstream)
        gate = Gate(tmp_path / "gate", rules).start()
        try:
            url = f"{gate.goproxy_url}/{MODULE}/@v/v1.0.0.zip"

            def download() -> None:
                with (
                    contextlib.suppress(OSError, http.client.HTTPException),
                    urllib.request.urlopen(url, timeout=30) as r,
                ):
                    r.read()

            client = threading.Thread(target=download, daemon=True)
            client.start()
            deadline = time.monotonic() + 20
            while not any(p.stat().st_size > 1 << 20 for p in spooled(gate)):
                assert time.monotonic() < deadline, "the download never started"
                time.sleep(0.05)
            assert gate.proc is not None
            gate.proc.kill()  # SIGKILL: no clean-up runs
            gate.proc.wait(10)
            gate.proc = None
            client.join(30)
            [left] = spooled(gate)
            size = left.stat().st_size
            assert 1 << 20 < size < 24 << 20

            report = verify(gate)
            assert f"leftovers: 1 file ({size / (1 << 20):.1f} MiB) left by interrupted runs" in (
                report
            )
            assert left.exists()  # counted, not removed without --remove

            upstream.clear_faults()
            gate.start()
            assert spooled(gate) == []
            assert (
                f"removed 1 file ({size / (1 << 20):.1f} MiB) left in {gate.cache_dir} "
                "by an interrupted run" in gate.output()
            )
            again = verify(gate)
            assert "left by interrupted runs" not in again
            assert "leftovers: a modgate uses this cache" in again  # so it spares new files
        finally:
            gate.stop()


def test_a_second_modgate_on_the_same_cache_spares_the_first_ones_download(
    world: World, tmp_path: Path
) -> None:
    with Upstream(world) as upstream:
        upstream.fault("*.zip", throttle=6 << 20)  # four seconds for the whole zip
        rules = _rules(upstream)
        cache = tmp_path / "cache"
        with Gate(tmp_path / "first", rules, cache_dir=cache) as first:
            url = f"{first.goproxy_url}/{MODULE}/@v/v1.0.0.zip"
            got: list[bytes] = []
            client = threading.Thread(
                target=lambda: got.append(urllib.request.urlopen(url, timeout=60).read()),
                daemon=True,
            )
            client.start()
            deadline = time.monotonic() + 20
            while not any(p.stat().st_size > 1 << 20 for p in spooled(first)):
                assert time.monotonic() < deadline, "the download never started"
                time.sleep(0.05)
            [downloading] = spooled(first)
            with Gate(tmp_path / "second", rules, cache_dir=cache) as second:
                assert downloading.exists()
                assert "by an interrupted run" not in second.output()
            client.join(60)
            assert got == [world.zip_path(world.get(MODULE, "v1.0.0")).read_bytes()]
