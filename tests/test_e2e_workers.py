"""`modgate run --workers N`, end to end: real go clients against a supervisor and its
workers sharing one port, one store, one single-flight, one trace and one rules file."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from world.gate import Gate, free_port, modgate_command
from world.gocmd import go_env, run_go
from world.modules import MainModule, ModuleVersion, World, write_main_module
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
PRIVATE = "example.modgate.test"
BIG = f"{PRIVATE}/big"
BIG_ZIP = f"/{BIG}/@v/v1.0.0.zip"
CLIENTS = 24


def rules(upstream: str, policy: str = "") -> str:
    return (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream!r}\n"
        f"checksum:\n  private: {PRIVATE}\n{policy}"
    )


def get(url: str, timeout: float = 60) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def trace_db(gate: Gate) -> sqlite3.Connection:
    return sqlite3.connect(gate.cache_dir.parent / "trace.db")


def test_clients_spread_over_workers_make_one_fetch_per_artifact_and_one_trace(
    world: World, tmp_path: Path
) -> None:
    app = write_main_module(world, tmp_path / "app")
    with (
        Upstream(world, delay=0.05) as upstream,  # widens the window for duplicate fetches
        Gate(tmp_path / "gate", rules(upstream.url), workers=2) as gate,
    ):
        assert len(gate.worker_pids()) == 2
        assert gate.output().count("modgate: proxy on") == 1  # the banner, once
        apps = [
            MainModule(_copy(app.dir, tmp_path / f"app{i}"), app.path, app.requires, "")
            for i in range(CLIENTS)
        ]
        envs = [
            gate.client_env(go_env(tmp_path / f"c{i}", f"https://{HOST}"),
                            "proxy" if i % 2 else "goproxy")
            for i in range(CLIENTS)
        ]  # fmt: skip
        with ThreadPoolExecutor(CLIENTS) as pool:
            done = list(pool.map(
                lambda i: run_go(["mod", "tidy"], envs[i], apps[i].dir, check=False),
                range(CLIENTS),
            ))  # fmt: skip
        failed = [d.stderr for d in done if d.returncode != 0]
        assert not failed, failed[0]
        sums = {(a.dir / "go.sum").read_text() for a in apps}
        assert len(sums) == 1 and sums.pop()
        # Each worker asks once at start whether the upstream proxies the checksum
        # database (dbroute.py); every answer a client asked for is fetched once.
        seen = {p: n for p, n in upstream.counts().items() if not p.endswith("/supported")}
        assert seen and max(seen.values()) == 1, {p: n for p, n in seen.items() if n > 1}

        # Known requests on new connections (spread by the kernel): every one is traced.
        paths = [f"/{PRIVATE}/gone{i}/@v/list" for i in range(120)]
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda p: get(gate.goproxy_url + p)[0], paths))
        assert set(statuses) == {404}
    with trace_db(gate) as db:  # after the stop: every writer has committed
        listed = db.execute(
            "SELECT count(DISTINCT path) FROM requests WHERE path LIKE ?", (f"/{PRIVATE}/gone%",)
        ).fetchone()[0]
        sessions = db.execute("SELECT count(*) FROM sessions WHERE label IS NULL").fetchone()[0]
        # Per process: how many sessions its requests went into (spread over two workers).
        split = db.execute(
            "SELECT origin, count(DISTINCT session) FROM requests GROUP BY origin"
        ).fetchall()
        writers = db.execute("SELECT key FROM meta WHERE key LIKE 'journal_seq%' AND value > 0")
        assert listed == len(paths)
        # One session per go command (and one for this test's own requests), each whole
        # though its requests were spread over two workers (trace/sessions.py).
        assert [(o, n) for o, n in split if not o or n != 1] == []  # each go command: one
        assert sessions == CLIENTS + 1
        assert len(writers.fetchall()) == 2  # both workers traced requests


def _copy(src: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(src, dest)
    return dest


@pytest.fixture
def big_world() -> Iterator[World]:
    with World([ModuleVersion(BIG, "v1.0.0", payload_bytes=24_000_000)]) as w:
        yield w


def _lock_holder(gate: Gate) -> int | None:
    """The pid holding a key lock (keylock.py) in the gate's cache, from /proc/locks."""
    inodes = {p.stat().st_ino for p in (gate.cache_dir / "locks").iterdir()}
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        # 1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF
        if len(fields) >= 6 and fields[1] == "FLOCK" and int(fields[5].split(":")[-1]) in inodes:
            return int(fields[4])
    return None


def test_a_worker_killed_mid_download_leaves_the_cache_whole_and_the_others_serving(
    big_world: World, tmp_path: Path
) -> None:
    want = big_world.zip_path(big_world.get(BIG, "v1.0.0")).read_bytes()
    with (
        Upstream(big_world) as upstream,
        Gate(tmp_path / "gate", rules(upstream.url), workers=2) as gate,
    ):
        upstream.fault(BIG_ZIP, throttle=4_000_000, times=1)  # ~6 s: time to kill its fetcher
        results: list[tuple[int, bytes] | Exception] = []

        def fetch() -> None:
            try:
                results.append(get(gate.goproxy_url + BIG_ZIP, timeout=120))
            except Exception as e:  # the connection of the killed worker breaks
                results.append(e)

        clients = [threading.Thread(target=fetch) for _ in range(8)]
        for t in clients:
            t.start()
        deadline = time.monotonic() + 30
        while (holder := _lock_holder(gate)) is None or upstream.count(BIG_ZIP) == 0:
            assert time.monotonic() < deadline, "the zip's download never started"
            time.sleep(0.05)
        assert holder in gate.worker_pids()
        time.sleep(0.5)
        os.kill(holder, signal.SIGKILL)
        for t in clients:
            t.join(120)
        whole = [r for r in results if isinstance(r, tuple) and r == (200, want)]
        broken = [r for r in results if not (isinstance(r, tuple) and r == (200, want))]
        # Every client got the whole zip or a broken transfer, never a wrong body served
        # as good; the survivor's clients waited for its lock, then fetched it themselves.
        assert all(not isinstance(r, tuple) or r[0] != 200 or r[1] == want for r in results)
        assert len(whole) + len(broken) == 8
        assert upstream.count(BIG_ZIP) <= 2

        gate.wait_for(f"(pid {holder}) was killed by SIGKILL; starting it again in 1s")
        gate.wait_for("is serving again", timeout=60)
        assert holder not in gate.worker_pids() and len(gate.worker_pids()) == 2
        for _ in range(6):  # new connections, both workers: served whole, from the cache
            assert get(gate.goproxy_url + BIG_ZIP) == (200, want)
        assert upstream.count(BIG_ZIP) <= 2
    verify = subprocess.run(
        modgate_command("cache", "verify", "--cache-dir", str(gate.cache_dir)),
        capture_output=True, text=True,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_port_in_use_is_refused_once_and_a_second_modgate_cannot_join(
    world: World, tmp_path: Path
) -> None:
    port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        started = subprocess.run(
            modgate_command("run", "--workers", "2", "--listen-port", str(port),
                            "--goproxy-port", "-1", "--confdir", str(tmp_path / "c1"),
                            "--rules", ""),
            capture_output=True, text=True, timeout=60, env={**os.environ, "GOSUMDB": "off"},
        )  # fmt: skip
    assert started.returncode == 2
    error = f"modgate: cannot listen on 127.0.0.1:{port}: address already in use"
    assert (started.stdout + started.stderr).count(error) == 1, started.stderr
    assert not (tmp_path / "c1").exists()  # refused before any worker started

    with Upstream(world) as upstream, Gate(tmp_path / "g1", rules(upstream.url), workers=2) as g1:
        taken = g1.proxy_url.rpartition(":")[2]
        second = Gate(tmp_path / "g2", rules(upstream.url), workers=2)
        second.extra_args = ["--listen-port", taken]
        with pytest.raises(RuntimeError, match=f"another modgate with several workers listens "
                           f"on port {taken}"):  # fmt: skip
            second.start()
        assert second.proc is not None and second.proc.returncode == 2


def test_a_rules_reload_under_load_is_applied_by_every_worker(world: World, tmp_path: Path) -> None:
    lib = f"/{PRIVATE}/alpha/@v/list"
    deny = f"modules:\n  - deny: {PRIVATE}/alpha\n    reason: withdrawn\n"
    with Upstream(world) as upstream, Gate(tmp_path / "g", rules(upstream.url), workers=2) as gate:
        statuses: list[int] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                statuses.append(get(gate.goproxy_url + lib)[0])

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(1)
            assert statuses and set(statuses) == {200}
            gate.rules.write_text(rules(upstream.url, deny))
            deadline = time.monotonic() + 30
            while gate.output().count(f"modgate: reloaded {gate.rules}") < 2:
                assert time.monotonic() < deadline, gate.output()
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join()
        after = [get(gate.goproxy_url + lib) for _ in range(40)]  # new connections: both
        assert {s for s, _ in after} == {403}
        assert all(b"withdrawn" in body for _, body in after)
        pids, supervisor = gate.worker_pids(), gate.proc
    # Stopped by SIGINT: the supervisor told its workers, waited for them, exited 0.
    assert supervisor is not None and supervisor.returncode == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_workers_stop_when_their_supervisor_is_killed(world: World, tmp_path: Path) -> None:
    """Orphans would keep serving the port with nobody to restart or stop them."""
    with Upstream(world) as upstream, Gate(tmp_path / "g", rules(upstream.url), workers=2) as gate:
        pids = gate.worker_pids()
        assert gate.proc is not None
        gate.proc.kill()
        gate.proc.wait()
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in pids):
            assert time.monotonic() < deadline, "workers outlived their supervisor"
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
