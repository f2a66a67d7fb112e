"""modgate inside mitmproxy's own tools, as the README shows it for watching flows:
`mitmdump -s addons/modgate_addons.py`, driven with the real go command."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from world.gate import free_port
from world.gocmd import find_go, go_env
from world.modules import World, write_main_module
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
HOST = "proxy.modgate.test"


def start_mitmdump(home: Path, rules: Path, port: int) -> subprocess.Popen[bytes]:
    mitmdump = Path(sys.executable).parent / "mitmdump"
    log = home / "mitmdump.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(mitmdump), "--listen-host", "127.0.0.1", "-p", str(port),
             "-s", str(REPO / "addons" / "modgate_addons.py"),
             "--set", f"confdir={home / 'conf'}", "--set", "connection_strategy=lazy",
             "--set", f"modgate_rules={rules}", "--set", f"modgate_cache_dir={home / 'cache'}"],
            stdout=out, stderr=subprocess.STDOUT, cwd=home,
            env={k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")},
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while "proxy listening at" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"mitmdump did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return proc


def test_mitmdump_with_modgates_script_caches_verifies_and_traces(
    world: World, tmp_path: Path
) -> None:
    app = write_main_module(world, tmp_path / "app")
    home = tmp_path / "mitmdump"
    home.mkdir()
    rules = home / "rules.yaml"
    port = free_port()
    with Upstream(world) as upstream:
        rules.write_text(f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\n"
                         "checksum:\n  private: example.modgate.test\n")  # fmt: skip
        proc = start_mitmdump(home, rules, port)
        try:

            def tidy(tag: str) -> None:
                env = {**go_env(tmp_path / tag, f"https://{HOST}"),
                       "HTTPS_PROXY": f"http://127.0.0.1:{port}",
                       "SSL_CERT_FILE": str(home / "conf" / "mitmproxy-ca-cert.pem")}  # fmt: skip
                done = subprocess.run([find_go(), "mod", "tidy"], env=env, cwd=app.dir,
                                      capture_output=True, text=True, timeout=120)  # fmt: skip
                assert done.returncode == 0, done.stderr

            tidy("cold")
            zips = upstream.count("*.zip")
            assert zips > 0
            tidy("warm")  # a fresh module cache: every answer from modgate's store
            assert upstream.count("*.zip") == zips
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    with sqlite3.connect(home / "trace.db") as db:
        rows = db.execute("SELECT path, cache FROM requests WHERE kind = 'zip'").fetchall()
    misses = [path for path, cache in rows if cache == "miss"]
    hits = {path for path, cache in rows if cache == "hit"}
    assert len(misses) == len(set(misses)) == zips
    assert hits and hits <= set(misses)  # the warm run (a tidier go.mod) needs fewer
    log = (home / "mitmdump.log").read_text(errors="replace")
    assert "] zip example.modgate.test/" in log  # the live lines
    assert "Addon error" not in log and "Traceback" not in log, log
