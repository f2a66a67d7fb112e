"""The test world: fixtures the real go command accepts, and an upstream that misbehaves on cue."""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import subprocess
import time
import tracemalloc
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from modgate.dirhash import check_zip, hash_zip
from world import (
    CONTENT_TYPES,
    MAJOR_V2,
    UPPER,
    GoCommandError,
    ModuleVersion,
    Upstream,
    World,
    escape,
    go_env,
    graph,
    graph_roots,
    is_pseudo,
    json_objects,
    proxy_path,
    run_go,
    semver_key,
    write_main_module,
)
from world.modules import PayloadReader


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with graph(workdir=tmp_path_factory.mktemp("world")) as built:
        yield built


@pytest.fixture(scope="module")
def upstream(world: World) -> Iterator[Upstream]:
    """A well-behaved upstream shared by the go-command tests (no faults set here)."""
    with Upstream(world) as server:
        yield server


@pytest.fixture
def fresh(world: World) -> Iterator[Upstream]:
    """An upstream of its own, for tests that inject faults or restart it."""
    with Upstream(world) as server:
        yield server


def get(url: str, path: str, timeout: float = 5) -> tuple[http.client.HTTPResponse, bytes]:
    """GET `path` under the base of `url` with a plain http.client."""
    host, _, base = url.removeprefix("http://").partition("/")
    with closing(http.client.HTTPConnection(host, timeout=timeout)) as conn:
        conn.request("GET", f"/{base}{path}" if base else path)
        response = conn.getresponse()
        return response, response.read()


# --- the graph ----------------------------------------------------------------------------


def test_graph_is_realistic(world: World) -> None:
    modules = world.modules()
    assert len(modules) == 24 and all(m.startswith("example.modgate.test/") for m in modules)
    assert UPPER in modules and MAJOR_V2 in modules
    assert sum(2 <= len(world.list_versions(m)) <= 4 for m in modules) >= 10
    requirers = [mv for mv in world if mv.requires]
    assert len(requirers) > 30
    assert all(world.get(path, version) for mv in requirers for path, version in mv.requires)
    # Newer releases require newer releases, so MVS has several go.mod files to read.
    assert sum(len({mv.requires for mv in world.versions(m)}) > 1 for m in modules) >= 5
    assert any(is_pseudo(mv.version) for mv in world)
    assert any("-rc." in mv.version for mv in world)


def test_graph_is_deterministic(tmp_path: Path) -> None:
    with graph(workdir=tmp_path / "a") as one, graph(workdir=tmp_path / "b") as two:
        assert one.gosum_lines() == two.gosum_lines()
        for mv_one, mv_two in list(zip(one, two, strict=True))[:6]:
            assert one.zip_path(mv_one).read_bytes() == two.zip_path(mv_two).read_bytes()


def test_module_version_parts() -> None:
    mv = ModuleVersion(
        "example.modgate.test/x",
        "v1.2.0",
        requires=[("example.modgate.test/y", "v0.1.0")],
        files={"x.go": "package x\n", "data/blob.bin": b"\x00\xff"},
    )
    assert mv.gomod == (
        b"module example.modgate.test/x\n\ngo 1.21\n\n"
        b"require (\n\texample.modgate.test/y v0.1.0\n)\n"
    )
    assert json.loads(mv.info) == {"Version": "v1.2.0", "Time": "2024-01-02T03:04:05Z"}
    with zipfile.ZipFile(io.BytesIO(mv.zip_bytes())) as archive:
        assert archive.namelist() == [
            "example.modgate.test/x@v1.2.0/data/blob.bin",
            "example.modgate.test/x@v1.2.0/go.mod",
            "example.modgate.test/x@v1.2.0/x.go",
        ]
        assert archive.read("example.modgate.test/x@v1.2.0/go.mod") == mv.gomod
    assert mv.zip_bytes() == mv.zip_bytes()
    assert hash_zip(io.BytesIO(mv.zip_bytes())) == mv.zip_hash
    assert mv.gosum_lines()[1].startswith("example.modgate.test/x v1.2.0/go.mod h1:")


def test_default_package_imports_what_it_requires() -> None:
    mv = ModuleVersion("example.modgate.test/a/v3", "v3.0.0", requires=[(UPPER, "v1.0.0")])
    code = mv.files["a.go"].decode()
    assert "package a\n" in code and f'd0 "{UPPER}"' in code and "d0.Hello()" in code


def test_payload_streams_deterministically(tmp_path: Path) -> None:
    size = (5 << 20) + 7
    whole = PayloadReader("seed", size).read()
    pieces = io.BufferedReader(PayloadReader("seed", size), 4099)
    assert len(whole) == size and b"".join(iter(lambda: pieces.read(77777), b"")) == whole
    assert len(zlib.compress(whole[: 1 << 20], 9)) > 1 << 20  # incompressible
    mv = ModuleVersion("example.modgate.test/big", "v1.0.0", payload_bytes=size)
    mv.write_zip(tmp_path / "big.zip")
    assert hash_zip(tmp_path / "big.zip") == mv.zip_hash
    found = check_zip(tmp_path / "big.zip", mv.path, mv.version)
    assert found.size == size + len(mv.gomod) + sum(len(data) for data in mv.files.values())


def test_large_module_is_built_and_served_in_bounded_memory(tmp_path: Path) -> None:
    mv = ModuleVersion("example.modgate.test/big", "v1.0.0", payload_bytes=48 << 20)
    tracemalloc.start()
    try:
        with World([mv], workdir=tmp_path) as big, Upstream(big) as server:
            assert mv.zip_hash.startswith("h1:")
            conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=10)
            conn.request("GET", f"/{proxy_path(mv.path, mv.version, '.zip')}")
            response, received = conn.getresponse(), tmp_path / "received.zip"
            with closing(conn), received.open("wb") as out:
                while block := response.read(1 << 20):
                    out.write(block)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert received.stat().st_size > 48 << 20 and hash_zip(received) == mv.zip_hash
    assert peak < 8 << 20, f"peak {peak} bytes"


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("example.modgate.test/Upper/Case", "example.modgate.test/!upper/!case"),
        ("v1.0.0-RC", "v1.0.0-!r!c"),
    ],
)
def test_escape(text: str, escaped: str) -> None:
    assert escape(text) == escaped


def test_versions_sort_list_and_latest() -> None:
    ordered = ["v0.9.0", "v1.0.0-alpha", "v1.0.0-alpha.1", "v1.0.0-alpha.beta", "v1.0.0-beta.2"]
    ordered += ["v1.0.0-beta.11", "v1.0.0-rc.1", "v1.0.0", "v1.0.1-0.20240102030405-0123456789ab"]
    ordered += ["v1.2.0", "v1.10.0", "v2.0.0+incompatible"]
    assert sorted(reversed(ordered), key=semver_key) == ordered
    assert [v for v in ordered if is_pseudo(v)] == ["v1.0.1-0.20240102030405-0123456789ab"]
    world = World(ModuleVersion("example.modgate.test/s", v) for v in ordered[:-1])
    assert world.list_versions("example.modgate.test/s") == [
        v for v in ordered[:-1] if not is_pseudo(v)
    ]
    assert world.latest("example.modgate.test/s").version == "v1.10.0"
    only_pre = World([ModuleVersion("example.modgate.test/p", v) for v in ordered[1:3]])
    assert only_pre.latest("example.modgate.test/p").version == "v1.0.0-alpha.1"
    with pytest.raises(ValueError, match="not a semantic version"):
        ModuleVersion("example.modgate.test/s", "1.0.0")


def test_proxy_tree_layout_works_as_file_goproxy(world: World, tmp_path: Path) -> None:
    tree = world.write_proxy_tree(tmp_path / "proxy")
    upper = tree / escape(UPPER)
    assert (upper / "@v" / "list").read_text() == "".join(
        f"{v}\n" for v in world.list_versions(UPPER)
    )
    assert json.loads((upper / "@latest").read_bytes())["Version"] == world.latest(UPPER).version
    done = run_go(
        ["mod", "download", "-json", f"{UPPER}@latest"], go_env(tmp_path, tree.as_uri()), tmp_path
    )
    (report,) = json_objects(done.stdout)
    assert report["Sum"] == world.latest(UPPER).zip_hash


# --- the real go command against the upstream ---------------------------------------------


def test_go_downloads_every_version(world: World, upstream: Upstream, tmp_path: Path) -> None:
    upstream.reset_counts()
    ids = [mv.id for mv in world]
    done = run_go(["mod", "download", "-json", *ids], go_env(tmp_path, upstream.url), tmp_path)
    reports = {f"{r['Path']}@{r['Version']}": r for r in json_objects(done.stdout)}
    assert sorted(reports) == sorted(ids)
    for mv in world:
        assert (reports[mv.id]["Sum"], reports[mv.id]["GoModSum"]) == (mv.zip_hash, mv.gomod_hash)
    assert upstream.count("*.zip") == len(world)
    assert upstream.count(f"/{escape(UPPER)}/@v/*.zip") == len(world.versions(UPPER))


def test_go_builds_main_module(world: World, upstream: Upstream, tmp_path: Path) -> None:
    upstream.reset_counts()
    env = go_env(tmp_path, upstream.url)
    main = write_main_module(world, tmp_path / "app")
    run_go(["build", "-o", "app", "."], env, main.dir)
    ran = subprocess.run([main.dir / "app"], capture_output=True, text=True, timeout=30)
    gosum = (main.dir / "go.sum").read_text().splitlines()
    assert set(gosum) <= set(world.gosum_lines())
    listed = run_go(["list", "-m", "all"], env, main.dir).stdout.split("\n")
    built = {line.replace(" ", "@") for line in listed[1:] if line}
    assert {
        line.split()[0] + "@" + line.split()[1] for line in gosum if "/go.mod" not in line
    } == built
    assert len(built) == len(world.modules())  # the roots reach every module
    mods = Counter(path.partition("/@v/")[0] for path in upstream.counts() if path.endswith(".mod"))
    assert max(mods.values()) >= 2  # MVS read several go.mod files of one module
    assert ran.returncode == 0 and ran.stderr == main.expected_output


def test_go_lists_versions_of_uppercase_module(
    world: World, upstream: Upstream, tmp_path: Path
) -> None:
    env = go_env(tmp_path, upstream.url)
    for module in (UPPER, graph_roots(world)[0], world.modules()[3], world.modules()[4]):
        done = run_go(["list", "-m", "-versions", module], env, tmp_path)
        assert done.stdout.split() == [module, *world.list_versions(module)]


def test_go_shows_the_text_of_an_injected_refusal(fresh: Upstream, tmp_path: Path) -> None:
    fresh.fault(f"*/{escape(UPPER)}/@v/list", status=403, body="refused by the test world")
    done = run_go(
        ["list", "-m", "-versions", UPPER], go_env(tmp_path, fresh.url), tmp_path, check=False
    )
    assert done.returncode != 0 and "refused by the test world" in done.stderr


# --- the upstream as a plain HTTP server --------------------------------------------------


def test_serves_protocol_with_real_content_types(world: World, fresh: Upstream) -> None:
    mv = world.latest(UPPER)
    cases = {
        f"/{escape(UPPER)}/@v/list": (
            "list",
            "".join(f"{v}\n" for v in world.list_versions(UPPER)).encode(),
        ),
        f"/{proxy_path(UPPER, mv.version, '.info')}": ("info", mv.info),
        f"/{proxy_path(UPPER, mv.version, '.mod')}": ("mod", mv.gomod),
        f"/{proxy_path(UPPER, mv.version, '.zip')}": ("zip", mv.zip_bytes()),
        f"/{escape(UPPER)}/@latest": ("latest", mv.info),
    }
    for path, (kind, body) in cases.items():
        response, got = get(fresh.url, path)
        assert (response.status, response.headers["Content-Type"], got) == (
            200,
            CONTENT_TYPES[kind],
            body,
        )
        assert response.headers["Content-Length"] == str(len(body))


@pytest.mark.parametrize(
    "path",
    [
        "/example.modgate.test/nope/@v/list",
        f"/{UPPER}/@v/list",  # not escaped: no client sends this
        f"/{escape(UPPER)}/@v/v9.9.9.info",
        f"/{escape(UPPER)}/@v/v1.0.0.txt",
        f"/{escape(UPPER)}/@v/",
        "/",
        "/sumdb/sum.golang.test/supported",
    ],
)
def test_unknown_paths_are_404_text_plain(fresh: Upstream, path: str) -> None:
    response, body = get(fresh.url, path)
    assert (response.status, response.headers["Content-Type"]) == (404, "text/plain; charset=UTF-8")
    assert body.startswith(b"not found: ")


def test_serves_a_directory_tree_under_a_base_path(world: World, tmp_path: Path) -> None:
    tree = world.write_proxy_tree(tmp_path / "proxy")
    with Upstream(tree, base="/go/") as server:
        assert server.url.endswith("/go")
        response, body = get(server.url, f"/{escape(UPPER)}/@v/list")
        assert (response.status, response.headers["Content-Type"]) == (200, CONTENT_TYPES["list"])
        assert body.decode().split() == world.list_versions(UPPER)
        outside, _ = get(server.url.removesuffix("/go"), f"/{escape(UPPER)}/@v/list")
        assert outside.status == 404
        escaping, _ = get(server.url, "/../proxy/x/@v/list")
        assert escaping.status == 404


def test_world_is_served_live(fresh: Upstream, world: World) -> None:
    module = "example.modgate.test/late"
    assert get(fresh.url, f"/{module}/@v/list")[0].status == 404
    with World([ModuleVersion(module, "v0.1.0")]) as late:
        fresh.source = late
        assert get(fresh.url, f"/{module}/@v/list")[1] == b"v0.1.0\n"
        late.add(ModuleVersion(module, "v0.2.0"))
        assert get(fresh.url, f"/{module}/@v/list")[1] == b"v0.1.0\nv0.2.0\n"
    fresh.source = world


def test_counts_requests_per_path(fresh: Upstream) -> None:
    path = f"/{escape(UPPER)}/@v/list"
    for _ in range(3):
        get(fresh.url, path)
    get(fresh.url, "/x/@v/list")
    assert fresh.count(path) == 3 and fresh.count("*/@v/list") == 4 and fresh.count("/nope") == 0
    assert fresh.counts() == {path: 3, "/x/@v/list": 1}
    fresh.reset_counts()
    assert fresh.counts() == {}


@pytest.mark.parametrize("status", [403, 404, 410, 500])
def test_fault_status_for_n_times(fresh: Upstream, status: int) -> None:
    path = f"/{escape(UPPER)}/@v/list"
    rule = fresh.fault("*/@v/list", status=status, body=f"nope {status}", times=2)
    for _ in range(2):
        response, body = get(fresh.url, path)
        assert (response.status, body) == (status, f"nope {status}".encode())
        assert response.headers["Content-Type"] == "text/plain; charset=UTF-8"
    assert get(fresh.url, path)[0].status == 200
    assert (rule.hits, rule.remaining) == (2, 0)


def test_fault_regex_forever_and_first_rule_wins(fresh: Upstream, world: World) -> None:
    zip_path = f"/{proxy_path(UPPER, 'v1.0.0', '.zip')}"
    fresh.fault(re.compile(r"\.zip$"), status=500)
    fresh.fault("*", status=418)
    for _ in range(3):
        assert get(fresh.url, zip_path)[0].status == 500
    assert get(fresh.url, f"/{escape(UPPER)}/@v/list")[0].status == 418
    fresh.clear_faults()
    assert get(fresh.url, zip_path)[0].status == 200
    with pytest.raises(ValueError, match="must do something"):
        fresh.fault("*")


def test_fault_reset_drops_connection(fresh: Upstream) -> None:
    fresh.fault("*.info", reset=True, times=1)
    info = f"/{proxy_path(UPPER, 'v1.0.0', '.info')}"
    with pytest.raises(ConnectionError):
        get(fresh.url, info)
    assert get(fresh.url, info)[0].status == 200


def test_fault_truncate_sends_less_than_content_length(fresh: Upstream, world: World) -> None:
    fresh.fault("*.zip", truncate=100)
    mv = world.get(UPPER, "v1.0.0")
    host = fresh.url.removeprefix("http://")
    with closing(http.client.HTTPConnection(host, timeout=5)) as conn:
        conn.request("GET", f"/{proxy_path(UPPER, mv.version, '.zip')}")
        response = conn.getresponse()
        assert response.headers["Content-Length"] == str(len(mv.zip_bytes()))
        with pytest.raises(http.client.IncompleteRead) as caught:
            response.read()
    assert len(caught.value.partial) == 100 < len(mv.zip_bytes())


def test_fault_slow_headers_and_throttled_body(fresh: Upstream) -> None:
    info = f"/{proxy_path(UPPER, 'v1.0.0', '.info')}"
    fresh.fault("*.info", delay=0.3, times=1)
    started = time.monotonic()
    assert get(fresh.url, info)[0].status == 200
    assert time.monotonic() - started >= 0.3
    fresh.fault("*.zip", throttle=20_000)
    started = time.monotonic()
    _, body = get(fresh.url, f"/{proxy_path(UPPER, 'v1.0.0', '.zip')}")
    assert time.monotonic() - started >= len(body) / 20_000 * 0.9 > 0.02


def test_global_delay(fresh: Upstream) -> None:
    fresh.delay = 0.2
    started = time.monotonic()
    get(fresh.url, "/nope")
    assert time.monotonic() - started >= 0.2


def test_restart_keeps_port_and_stop_cuts_connections(fresh: Upstream) -> None:
    port, url = fresh.port, fresh.url
    host = url.removeprefix("http://")
    with closing(http.client.HTTPConnection(host, timeout=5)) as kept:
        kept.request("GET", "/nope")
        kept.getresponse().read()
        fresh.stop()
        assert not fresh.running
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            kept.request("GET", "/nope")
            kept.getresponse()
    fresh.restart()
    assert fresh.port == port and fresh.url == url
    assert get(url, "/nope")[0].status == 404


def test_go_env_and_run_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("GOFLAGS", "-insecure")
    env = go_env(tmp_path, "http://127.0.0.1:1", GONOSUMDB="example.modgate.test")
    assert "HTTPS_PROXY" not in env and env["GOFLAGS"] == "-mod=mod -modcacherw"
    assert (env["GOSUMDB"], env["GOTOOLCHAIN"], env["GONOSUMDB"]) == (
        "off",
        "local",
        "example.modgate.test",
    )
    assert env["GOMODCACHE"].startswith(str(tmp_path))
    assert go_env(tmp_path, "off", GOSUMDB="sum.example.test")["GOSUMDB"] == "sum.example.test"
    assert run_go(["env", "GOPROXY"], env, tmp_path).stdout.strip() == "http://127.0.0.1:1"
    with pytest.raises(GoCommandError, match="(?s)exited 1.*--- stderr\n.*127.0.0.1:1"):
        run_go(["mod", "download", "example.modgate.test/x@v1.0.0"], env, tmp_path)
    assert (
        run_go(
            ["mod", "download", "example.modgate.test/x@v1.0.0"], env, tmp_path, check=False
        ).returncode
        == 1
    )
