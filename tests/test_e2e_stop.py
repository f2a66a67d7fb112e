"""Stopping `modgate run`: SIGINT and SIGTERM end it cleanly, with every request it
answered committed to the trace, also when it was started in the background (a shell
hands such a process SIGINT ignored)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import urllib.request
from pathlib import Path

import pytest

from world.gate import Gate
from world.modules import UPPER, World
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_modgate_cleanly_even_started_in_the_background(
    world: World, tmp_path: Path, sig: signal.Signals
) -> None:
    with Upstream(world) as upstream:
        gate = Gate(tmp_path / "gate", f"proxies:\n  - url: https://{HOST}\n"
                                       f"    upstream: {upstream.url}\n")  # fmt: skip
        gate.ignore_sigint = True
        with gate:
            url = f"{gate.goproxy_url}/{UPPER.replace('Upper/Case', '!upper/!case')}/@v/list"
            with urllib.request.urlopen(url) as r:
                assert r.status == 200
            assert gate.proc is not None
            proc = gate.proc
            proc.send_signal(sig)
            try:
                code = proc.wait(10)
            except subprocess.TimeoutExpired:
                pytest.fail(f"modgate did not stop on {sig.name}:\n{gate.output()}")
    assert code == 0, gate.output()
    with sqlite3.connect(tmp_path / "gate" / "trace.db") as db:
        [(kind, status)] = db.execute("SELECT kind, status FROM requests").fetchall()
    assert (kind, status) == ("list", 200)
    assert (tmp_path / "gate" / "trace.db.pending").read_bytes() == b""  # all committed
