"""Read-ahead of `.info` answers, driven with the real go command: a cold `go mod download`
or `go build` finds the `.info` answers it asks for one at a time already fetched (or on
their way), and the upstream is asked for each once, none that go did not want."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import unquote

import pytest

from world.gate import Gate
from world.gocmd import go_env, run_go
from world.modules import MainModule, World, write_main_module
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"


def rules(upstream: str, readahead: bool) -> str:
    return (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream!r}\n"
        f"cache:\n  readahead: {str(readahead).lower()}\n"
        "checksum:\n  private: example.modgate.test\n"  # the fixtures are in no database
    )


def asked(trace_db: Path, kind: str) -> dict[str, float]:
    """path -> when go asked for it, from modgate's trace (read after modgate stopped)."""
    db = sqlite3.connect(trace_db)
    try:
        rows = db.execute("SELECT path, start FROM requests WHERE kind = ?", (kind,)).fetchall()
    finally:
        db.close()
    return {unquote(path): start for path, start in rows}  # as the upstream logs them


def tidied_app(world: World, upstream: Upstream, tmp_path: Path) -> MainModule:
    """A main module whose go.mod lists its whole build list, as a project's does; tidied
    straight from the upstream (go fetches loopback URLs itself), which then forgets it."""
    app = write_main_module(world, tmp_path / "app")
    run_go(["mod", "tidy"], go_env(tmp_path / "tidy", upstream.url), app.dir)
    upstream.reset_counts()
    return app


@pytest.mark.parametrize(
    ("command", "mode", "readahead"),
    [("mod download", "proxy", True), ("mod download", "goproxy", True),
     ("build", "proxy", True), ("mod download", "proxy", False)],
)  # fmt: skip
def test_a_cold_build_finds_info_answers_fetched_ahead(
    world: World, tmp_path: Path, command: str, mode: str, readahead: bool
) -> None:
    with Upstream(world) as upstream:
        app = tidied_app(world, upstream, tmp_path)
        with Gate(tmp_path / "gate", rules(upstream.url, readahead)) as gate:
            # GOFLAGS as a project has them: go.mod is read, never updated.
            env = go_env(tmp_path / "c", f"https://{HOST}", GOFLAGS="-modcacherw")
            args = (
                ["build", "-o", str(tmp_path / "app.bin"), "."]
                if command == "build"
                else ["mod", "download"]
            )
            run_go(args, gate.client_env(env, mode), app.dir)
        by_go = asked(gate.home / "trace.db", "info")
        upstream_first = upstream.first_asked()
        counts = upstream.counts()

    assert len(by_go) >= 20  # the build list of the fixture graph
    assert max(counts.values()) == 1, f"repeated upstream fetches: {counts}"
    fetched = {path for path in counts if path.endswith(".info")}
    # Before go asked: only a read-ahead can have fetched it.
    early = sorted(path for path in by_go if upstream_first[path] < by_go[path])
    if readahead:
        assert fetched == set(by_go), "read ahead an .info go never asked for, or missed one"
        assert len(early) >= len(by_go) // 2, f"fetched ahead of go: {early}"
        assert "read ahead" in gate.output()
    else:
        assert fetched == set(by_go)
        assert early == []
        assert "read ahead" not in gate.output()
