"""Read-ahead of `.info` answers, driven with the real go command: a cold `go mod download`
or `go build` finds the `.info` answers it asks for one at a time already fetched (or on
their way), and the upstream is asked for each once, none that go did not want."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import unquote

import pytest

from modgate.addons.cache import GZIP_MIN
from world.faults import FaultInjector
from world.gate import Gate
from world.gocmd import go_env, run_go
from world.modules import (
    DOMAIN,
    MainModule,
    ModuleVersion,
    World,
    graph,
    graph_roots,
    proxy_path,
    write_main_module,
)
from world.sumdb import TestSumdb
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
        zips_by_go = asked(gate.home / "trace.db", "zip")
        upstream_first = upstream.first_asked()
        counts = upstream.counts()

    assert len(by_go) >= 20  # the build list of the fixture graph
    assert max(counts.values()) == 1, f"repeated upstream fetches: {counts}"
    fetched = {path for path in counts if path.endswith(".info")}
    # Before go asked: only a read-ahead can have fetched it.
    early = sorted(path for path in by_go if upstream_first[path] < by_go[path])
    # `go mod download` asks for the .info of its whole build list, then for the zips two
    # at a time: each is fetched ahead. `go build` asks for a module's zip first: that
    # .info finds it on its way. Either way, no zip go does not ask for.
    zips = {path for path in counts if path.endswith(".zip")}
    assert zips == set(zips_by_go), "fetched a zip go never asked for, or missed one"
    early_zips = sorted(path for path in zips_by_go if upstream_first[path] < zips_by_go[path])
    if readahead:
        assert fetched == set(by_go), "read ahead an .info go never asked for, or missed one"
        assert len(early) >= len(by_go) // 2, f"fetched ahead of go: {early}"
        if command == "mod download":
            assert len(early_zips) >= len(zips_by_go) // 2, f"zips fetched ahead: {early_zips}"
        assert "read ahead" in gate.output()
    else:
        assert fetched == set(by_go)
        assert early == [] and early_zips == []
        assert "read ahead" not in gate.output()


# --- the module graph -------------------------------------------------------------------

HOLDER = f"{DOMAIN}/aaholder"  # sorts first: go asks for its go.mod early
DENIED = f"{DOMAIN}/denied"  # required by HOLDER's go.mod, refused by the rules
UNUSED = f"{DOMAIN}/unused"  # required by HOLDER's go.mod, never loaded by go (pruned)
VICTIM = f"{DOMAIN}/zzvictim"  # required by HOLDER and by the app; sorts last
WRONG_HASH = "h1:" + "A" * 43 + "="


def graph_world(tmp_path: Path, big: bool = False) -> World:
    """The fixture graph, and HOLDER, whose go.mod requires three modules its code does
    not import: go (graph pruning, go 1.21) loads the go.mod of VICTIM only, as the app
    requires it too. `big`: HOLDER's go.mod carries comments past GZIP_MIN bytes, so it
    goes to go gzipped (go always accepts gzip), as most real go.mod files do."""
    w = graph(24, workdir=tmp_path / "world")
    package = {"holder.go": 'package aaholder\n\nfunc Hello() string { return "holder" }\n'}
    if big:
        lines = "".join(f"\t{p} {v}\n" for p, v in ((DENIED, "v1.0.0"), (UNUSED, "v1.0.0"),
                                                     (VICTIM, "v1.0.0")))  # fmt: skip
        notes = "".join(f"// note {i}: a go.mod of the size real ones have\n" for i in range(20))
        package["go.mod"] = f"module {HOLDER}\n\n{notes}\ngo 1.21\n\nrequire (\n{lines})\n"
        assert len(package["go.mod"]) > GZIP_MIN
    w.add(
        ModuleVersion(HOLDER, "v1.0.0", files=package,
                      requires=[(DENIED, "v1.0.0"), (UNUSED, "v1.0.0"), (VICTIM, "v1.0.0")]),
        ModuleVersion(DENIED, "v1.0.0"), ModuleVersion(UNUSED, "v1.0.0"),
        ModuleVersion(VICTIM, "v1.0.0"),
    )  # fmt: skip
    return w


def graph_database(w: World, wrong_mod: str = "") -> TestSumdb:
    """A database of every version of `w`; `wrong_mod` ("module@version") is recorded
    with another go.mod hash than the one the upstream serves."""
    db = TestSumdb()
    for mv in w:
        mod_h1 = WRONG_HASH if mv.id == wrong_mod else mv.gomod_hash
        db.add(mv.path, mv.version, mv.zip_hash, mod_h1)
    return db


def graph_rules(upstream: str, readahead: bool) -> str:
    return (
        f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream!r}\n"
        f"cache:\n  readahead: {str(readahead).lower()}\n"
        f"modules:\n  - deny: {DENIED}\n    reason: not here\n"
    )


def graph_app(w: World, upstream: Upstream, tmp_path: Path) -> MainModule:
    app = write_main_module(w, tmp_path / "app", imports=[*graph_roots(w), HOLDER, VICTIM])
    run_go(["mod", "tidy"], go_env(tmp_path / "tidy", upstream.url), app.dir)
    upstream.reset_counts()
    return app


def graph_gate(tmp_path: Path, upstream: Upstream, db: TestSumdb, readahead: bool) -> Gate:
    gate = Gate(tmp_path / "gate", graph_rules(upstream.url, readahead))
    gate.extra_args = ["--set", f"modgate_gosumdb={db.verifier_key}"]
    return gate


def verdicts(trace_db: Path) -> dict[str, str]:
    """path -> hash verdict of every .mod and .zip go was served."""
    db = sqlite3.connect(trace_db)
    try:
        rows = db.execute(
            "SELECT path, hash_verdict FROM requests WHERE kind IN ('mod', 'zip') AND status = 200"
        ).fetchall()
    finally:
        db.close()
    return {unquote(path): verdict for path, verdict in rows}


@pytest.mark.parametrize(("mode", "readahead", "big"), [
    ("proxy", True, False), ("goproxy", True, False), ("proxy", False, False),
    # A go.mod sent gzipped is read ahead too (it was not: its gzipped bytes were parsed).
    ("proxy", True, True), ("goproxy", True, True),
])  # fmt: skip
def test_a_cold_download_finds_the_module_graph_read_ahead(
    tmp_path: Path, mode: str, readahead: bool, big: bool
) -> None:
    with graph_world(tmp_path, big) as w:
        db = graph_database(w)
        with Upstream(w, sumdb=db, delay=0.02) as upstream:
            app = graph_app(w, upstream, tmp_path)
            (app.dir / "go.sum").unlink()  # go asks for every lookup too
            with graph_gate(tmp_path, upstream, db, readahead) as gate:
                env = go_env(tmp_path / "c", f"https://{HOST}", GOSUMDB=db.verifier_key)
                run_go(["mod", "download"], gate.client_env(env, mode), app.dir)
            by_go = asked(gate.home / "trace.db", "mod")
            served = verdicts(gate.home / "trace.db")
            upstream_first = upstream.first_asked()
            counts = upstream.counts()

    assert len(by_go) >= 20
    mods = {path: n for path, n in counts.items() if path.endswith(".mod")}
    assert max(mods.values()) == 1, f"a go.mod fetched twice: {mods}"
    assert not [path for path in counts if DENIED in path], "fetched a module the rules refuse"
    assert set(served.values()) == {"verified"}, served
    early = sorted(path for path in by_go if upstream_first[path] < by_go[path])
    unused = "/" + proxy_path(UNUSED, "v1.0.0", ".mod")
    if readahead:
        # VICTIM's go.mod was on its way long before go, two at a time, reached it.
        assert "/" + proxy_path(VICTIM, "v1.0.0", ".mod") in early
        assert len(early) >= 5, f"fetched ahead of go: {early}"
        assert unused in mods and unused not in by_go  # a guess go never needed: one fetch
    else:
        assert early == []
        assert unused not in mods


def test_a_failed_read_ahead_is_not_kept_and_go_gets_the_error(tmp_path: Path) -> None:
    victim = "/" + proxy_path(VICTIM, "v1.0.0", ".mod")
    with graph_world(tmp_path) as w:
        db = graph_database(w, wrong_mod=f"{VICTIM}@v1.0.0")
        with Upstream(w, sumdb=db, delay=0.02) as upstream:
            app = graph_app(w, upstream, tmp_path)
            (app.dir / "go.sum").unlink()
            upstream.fault(victim, status=500, body="upstream on fire", times=1)
            with graph_gate(tmp_path, upstream, db, True) as gate:
                env = gate.client_env(
                    go_env(tmp_path / "c", f"https://{HOST}", GOSUMDB=db.verifier_key)
                )
                # The read-ahead met the 500 first (HOLDER's go.mod sorts first, VICTIM's
                # last); that was not kept, so go's own request fetched the go.mod again,
                # which fails its check against the database: refused, and said why.
                done = run_go(["mod", "download"], env, app.dir, check=False)
                assert done.returncode != 0
                assert "SECURITY" in done.stderr and "not served" in done.stderr, done.stderr
                assert "upstream on fire" not in done.stderr
                assert upstream.count(victim) >= 2
                # Nothing was kept: asked again, it is fetched and refused again.
                again = run_go(["mod", "download"], env, app.dir, check=False)
                assert "SECURITY" in again.stderr
                assert upstream.count(victim) >= 3


def test_the_database_record_is_asked_for_with_the_info(tmp_path: Path) -> None:
    """go asks for a version's .info before its .mod and .zip: the lookup they are checked
    against starts then, not after their bodies arrive."""
    with graph_world(tmp_path) as w:
        db = graph_database(w)
        with Upstream(w, sumdb=db, delay=0.05) as upstream:
            with graph_gate(tmp_path, upstream, db, readahead=False) as gate:
                # go's own lookups (GOSUMDB) would come early too: these are modgate's.
                env = go_env(tmp_path / "c", f"https://{HOST}", GOSUMDB="off")
                run_go(["mod", "download", "-json", f"{VICTIM}@v1.0.0"],
                       gate.client_env(env), tmp_path)  # fmt: skip
            first = upstream.first_asked()
    lookup = next(path for path in first if "/lookup/" in path)
    info = first["/" + proxy_path(VICTIM, "v1.0.0", ".info")]
    # Asked while the .info was on its way (the upstream takes 50 ms to answer), where
    # the .mod, asked after it, would be later.
    assert first[lookup] - info < 0.04, sorted(first.items(), key=lambda kv: kv[1])


# --- the zips ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["proxy", "goproxy"])
def test_a_zip_the_rules_refuse_is_never_fetched_ahead(
    world: World, tmp_path: Path, mode: str
) -> None:
    """A version rule refuses a module's zip but not its .info ("metadata is refused
    only with the whole module"): go asks for the .info, and the read-ahead must not
    fetch the zip the client would be refused."""
    refused_module = f"{DOMAIN}/alpha"  # in the app's build list
    policy = (
        f'modules:\n  - deny: {refused_module}\n    versions: ">=0.0.0"\n'
        "    reason: no alpha here\n"
    )
    with Upstream(world) as upstream:
        app = tidied_app(world, upstream, tmp_path)
        with Gate(tmp_path / "gate", rules(upstream.url, True) + policy) as gate:
            env = gate.client_env(go_env(tmp_path / "c", f"https://{HOST}"), mode)
            done = run_go(["mod", "download"], env, app.dir, check=False)
            asked_info = asked(gate.home / "trace.db", "info")
        counts = upstream.counts()
    assert done.returncode != 0 and refused_module in done.stderr
    assert any(refused_module.replace(DOMAIN, "") in p for p in asked_info)  # go asked it
    assert not [p for p in counts if p.endswith(".zip") and "/alpha/" in p], counts
    assert [p for p in counts if p.endswith(".zip")], "the other zips were fetched"


def test_readahead_zips_false_fetches_no_zip_before_go_asks(world: World, tmp_path: Path) -> None:
    with Upstream(world) as upstream:
        app = tidied_app(world, upstream, tmp_path)
        config = rules(upstream.url, True).replace(
            "  readahead: true\n", "  readahead: true\n  readahead_zips: false\n"
        )
        with Gate(tmp_path / "gate", config) as gate:
            env = gate.client_env(go_env(tmp_path / "c", f"https://{HOST}"), "goproxy")
            run_go(["mod", "download"], env, app.dir)
            zips_by_go = asked(gate.home / "trace.db", "zip")
        first = upstream.first_asked()
    assert zips_by_go and all(first[p] >= zips_by_go[p] for p in zips_by_go)


@pytest.mark.parametrize("mode", ["proxy", "goproxy"])
def test_a_fault_in_the_zip_read_ahead_leaves_each_zip_to_go(
    world: World, tmp_path: Path, mode: str
) -> None:
    """A bug in the read-ahead must not change what go gets: every .info still answered
    by the stages, every zip fetched when go asks, the error logged."""
    faults = FaultInjector(tmp_path / "faults")
    faults.arm("ReadAheadGate._zip_ahead")
    with Upstream(world) as upstream:
        app = tidied_app(world, upstream, tmp_path)
        gate = Gate(tmp_path / "gate", rules(upstream.url, True))
        gate.env = faults.env
        with gate:
            env = gate.client_env(go_env(tmp_path / "c", f"https://{HOST}"), mode)
            run_go(["mod", "download"], env, app.dir)
            zips_by_go = asked(gate.home / "trace.db", "zip")
        first = upstream.first_asked()
    assert zips_by_go and all(first[p] >= zips_by_go[p] for p in zips_by_go)
    assert "injected fault in ReadAheadGate._zip_ahead" in gate.output()
    assert "read-ahead of the zip of" in gate.output()
